"""Issue 14's HTTP defects: ids beyond SQLite's integers, rate limits keyed by the body's author, bodies read
(and parsed) before the token check and without a size limit. A real store, the real embedder, a real server
where reading the body or not is the point."""
from __future__ import annotations

import socket
import time

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'memedit[web]')")

from fastapi.testclient import TestClient  # noqa: E402
from web_server import serving  # noqa: E402

from memedit import Edit, EditStore  # noqa: E402
from memedit.policy import NamespacePolicy, Policy  # noqa: E402
from memedit.web.app import create_app  # noqa: E402
from memedit.web.auth import TokenFile  # noqa: E402

LIMIT = 4000


@pytest.fixture()
def web(tmp_path, embedder):
    store = EditStore(tmp_path / "s.db", embedder=embedder)
    tokens, admin = TokenFile.open(tmp_path / "s.tokens.json")
    writer = tokens.create("writer", namespaces=["acme/*"], write=True)
    edit = store.add(Edit.text("The CEO of Acme is Jane Roe.", namespace="acme"), status="pending")
    policy = Policy(store, default=NamespacePolicy(max_edits=3, window_s=600))
    app = create_app(store, tokens=tokens, policy=policy, max_body_bytes=LIMIT)
    yield {"app": app, "store": store, "admin": admin, "writer": writer, "id": edit.id,
           "c": TestClient(app, raise_server_exceptions=False)}
    store.close()


def H(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _error(r, status: int, type_name: str | None = None) -> dict:
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
    body = r.json()
    assert body["error"] and (type_name is None or body["type"] == type_name), body
    return body


# ---- 4. ids ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [2**63, 10**30, 0])
def test_ids_outside_sqlite_integers_are_422_never_500(web, bad):
    c, h = web["c"], H(web["admin"])
    for method, url, body in [("GET", f"/api/edits/{bad}", None), ("GET", f"/api/edits/{bad}/history", None),
                              ("GET", f"/api/edits/{bad}/usage", None), ("POST", f"/api/edits/{bad}/approve", None),
                              ("POST", f"/api/edits/{bad}/reject", {}),
                              ("POST", f"/api/edits/{bad}/forget", {"confirm": bad}),
                              ("POST", f"/api/edits/{bad}/supersede", {"edit": {"statement": "The CEO of Acme is X."}})]:
        _error(c.request(method, url, json=body, headers=h), 422, "ValidationError")
    for url in (f"/api/edits?namespace=acme&offset={10**20}", f"/api/edits?namespace=acme&min_uses={10**20}"):
        _error(c.get(url, headers=h), 422, "ValidationError")
    r = c.post("/api/forget-by-filter", json={"namespace": "acme", "min_uses": 10**20, "dry_run": True}, headers=h)
    _error(r, 422, "ValidationError")
    c.post("/ui/login", data={"token": web["admin"]}, follow_redirects=False)
    assert c.get(f"/ui/edits/{bad}").status_code == 422
    assert c.get(f"/ui/edits?namespace=acme&offset={10**20}").status_code == 422
    assert web["store"].verify().ok


# ---- 6. rate limits -----------------------------------------------------------------------------------------
def test_a_new_author_per_request_does_not_escape_the_rate_limit(web):
    c, h = web["c"], H(web["writer"])
    for i in range(3):
        r = c.post("/api/edits", json={"namespace": "acme", "statement": f"The CFO of Unit{i} is Ann Lee.",
                                       "author": f"sock-puppet-{i}"}, headers=h)
        assert r.status_code == 201, r.text
    r = c.post("/api/edits", json={"namespace": "acme", "statement": "The CFO of Unit9 is Ann Lee.",
                                   "author": "sock-puppet-9"}, headers=h)
    assert "writer" in _error(r, 429, "RateLimitedError")["error"] and int(r.headers["Retry-After"]) >= 1
    assert web["store"].count("acme") == 4


def test_browser_sessions_are_limited_per_token_and_address(web):
    app = web["app"]
    one = TestClient(app, client=("10.0.0.1", 5000))
    assert one.post("/ui/login", data={"token": web["writer"]}, follow_redirects=False).status_code == 303
    two = TestClient(app, client=("10.0.0.2", 5000), cookies=dict(one.cookies))  # the same session, elsewhere
    csrf = {"X-CSRF-Token": one.cookies["memedit_csrf"]}

    def add(client: TestClient, i: int) -> int:
        return client.post("/api/edits", json={"namespace": "acme", "statement": f"The CTO of Team{i} is Bo Li.",
                                               "author": f"a{i}"}, headers=csrf).status_code

    assert [add(one, i) for i in range(4)] == [201, 201, 201, 429]
    assert add(two, 5) == 201


# ---- 7. body size and the token before the body --------------------------------------------------------------
def test_bodies_over_the_limit_get_413(web):
    c, h = web["c"], H(web["writer"])
    big = {"namespace": "acme", "statement": "x" * LIMIT}
    _error(c.post("/api/edits", json=big, headers=h), 413, "PayloadTooLarge")
    _error(c.post("/api/edits", json=big), 413, "PayloadTooLarge")  # with or without a token

    def chunks():  # no Content-Length: the guard counts what arrives
        for _ in range(10):
            yield b"x" * 1000

    _error(c.post("/api/edits", content=chunks(), headers={**h, "Content-Type": "application/json"}), 413)
    _error(c.post("/ui/login", content=b"token=" + b"x" * LIMIT,
                  headers={"Content-Type": "application/x-www-form-urlencoded"}), 413)
    ok = c.post("/api/edits", json={"namespace": "acme", "statement": "The COO of Acme is Raj Patel."}, headers=h)
    assert ok.status_code == 201, ok.text
    assert web["store"].count("acme") == 2


def test_the_token_is_checked_before_the_body_is_parsed(web):
    c = web["c"]
    for headers in ({}, H("me_not-a-token"), {"Authorization": "Basic abc"}):
        r = c.post("/api/edits", content=b"{not json", headers={**headers, "Content-Type": "application/json"})
        _error(r, 401, "AuthError")
        assert r.headers["WWW-Authenticate"] == "Bearer"
    c.post("/ui/login", data={"token": web["writer"]}, follow_redirects=False)  # a session without its CSRF header
    _error(c.post(f"/api/edits/{web['id']}/reject", content=b"{not json",
                  headers={"Content-Type": "application/json"}), 403, "AuthError")
    r = c.post("/api/edits", content=b"{not json", headers={**H(web["writer"]), "Content-Type": "application/json"})
    _error(r, 422)  # with a valid token, the body is parsed and refused as before


@pytest.fixture()
def server(web):
    """The app on a real uvicorn server on a free local port."""
    with serving(web["app"]) as port:
        yield port


def _raw_post(port: int, headers: str, timeout: float = 5.0) -> bytes:
    """Send a request's head only (no body) and return what the server answers within ``timeout``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"POST /api/edits HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
        try:
            return sock.recv(65536)
        except socket.timeout:
            return b""


def test_a_huge_anonymous_body_is_refused_from_its_headers_alone(server):
    start = time.monotonic()
    answer = _raw_post(server, "Content-Type: application/json\r\nContent-Length: 200000000\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    small = _raw_post(server, "Content-Type: application/json\r\nContent-Length: 1000\r\n")  # under the limit
    assert small.startswith(b"HTTP/1.1 401"), small[:200]  # the token first: the 1000 bytes are never awaited
    assert time.monotonic() - start < 4
