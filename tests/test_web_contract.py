"""The HTTP contract (issue 14): the OpenAPI schema declares bearer auth and every status an operation answers
with, and every error body, whatever produced it, is the documented ``{"error", "type"}``."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'memedit[web]')")

from fastapi.testclient import TestClient  # noqa: E402

from memedit import Edit, EditStore  # noqa: E402
from memedit.policy import NamespacePolicy, Policy  # noqa: E402
from memedit.web.app import create_app  # noqa: E402
from memedit.web.auth import TokenFile  # noqa: E402

BASE = {400, 401, 403, 404, 413, 422, 503}


@pytest.fixture()
def api(tmp_path, embedder):
    store = EditStore(tmp_path / "s.db", embedder=embedder)
    tokens, admin = TokenFile.open(tmp_path / "s.tokens.json")
    reader = tokens.create("reader", namespaces=["acme"])
    e = store.add(Edit.text("The CEO of Acme is Jane Roe.", namespace="acme"))
    policy = Policy(store, default=NamespacePolicy(max_edits=1, window_s=600))
    c = TestClient(create_app(store, tokens=tokens, policy=policy, max_body_bytes=2000), raise_server_exceptions=False)
    yield {"c": c, "admin": admin, "reader": reader, "id": e.id, "schema": c.get("/openapi.json").json()}
    store.close()


def H(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_the_schema_declares_bearer_auth_on_every_operation(api):
    schema = api["schema"]
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": schema["components"]["securitySchemes"]["bearerAuth"][
            "description"]}
    ops = [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()]
    assert len(ops) == 17  # 15 under /api, and the OpenAI-compatible /v1/models and /v1/chat/completions
    for path, method, op in ops:
        assert {"bearerAuth": []} in op["security"], (path, method)
        assert ({} in op["security"]) == (path == "/api/namespaces"), (path, method)  # no public namespaces here


def test_every_operation_documents_its_error_statuses_with_the_error_model(api):
    schema = api["schema"]
    assert set(schema["components"]["schemas"]["ErrorOut"]["required"]) == {"error", "type"}
    for path, item in schema["paths"].items():
        for method, op in item.items():
            codes = {int(c) for c in op["responses"] if c != "default"}
            if path.startswith("/v1/"):  # OpenAI's contract: its error object, every status an OpenAI client knows
                assert {400, 401, 403, 404, 413, 422, 429, 503} <= codes, (path, method, sorted(codes))
                for code in codes - {200}:
                    ref = op["responses"][str(code)]["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/OpenAIErrorOut"), (path, method, code)
                continue
            want = BASE | ({409} if method == "post" else set()) | ({429} if path == "/api/edits" and method == "post"
                                                                      else set())
            assert want <= codes, (path, method, sorted(codes))
            for code in want:
                ref = op["responses"][str(code)]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorOut"), (path, method, code)
    export = schema["paths"]["/api/export"]["get"]["responses"]["200"]["content"]
    assert list(export) == ["application/x-ndjson"]


def test_what_the_api_answers_is_what_the_schema_says(api):
    """Each call's status is one its operation documents, and each error body is the error model."""
    c, i = api["c"], api["id"]
    schema = api["schema"]
    calls = [
        ("GET", "/api/edits?namespace=acme", None, {}), ("GET", "/api/edits?namespace=acme", None, H(api["reader"])),
        ("GET", "/api/edits?namespace=nope", None, H(api["admin"])), ("GET", "/api/edits?namespace=BAD NS", None, H(api["admin"])),
        ("GET", "/api/edits?namespace=globex", None, H(api["reader"])), ("GET", f"/api/edits/{i}", None, H("me_x")),
        ("GET", "/api/edits/999", None, H(api["admin"])), ("GET", f"/api/edits/{2**63}", None, H(api["admin"])),
        ("POST", f"/api/edits/{i}/approve", None, H(api["admin"])),           # not pending: 409
        ("POST", f"/api/edits/{i}/approve", None, H(api["reader"])),          # read-only token: 403
        ("POST", "/api/edits", {"namespace": "acme", "statement": "The CFO of Acme is Bo Li."}, H(api["admin"])),
        ("POST", "/api/edits", {"namespace": "acme", "statement": "The CTO of Acme is Al Wu."}, H(api["admin"])),
        ("POST", "/api/edits", {"namespace": "acme", "statement": "x" * 3000}, H(api["admin"])),
        ("POST", "/api/edits", b"{broken", H(api["admin"])), ("POST", "/api/edits", {"bogus": 1}, H(api["admin"])),
        ("GET", "/api/search?namespace=acme", None, H(api["admin"])),         # q missing
        ("GET", "/api/export?namespace=acme", None, H(api["admin"])), ("GET", "/api/export", None, H(api["reader"])),
    ]
    seen = set()
    for method, url, body, headers in calls:
        kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
        r = c.request(method, url, headers={**headers, "Content-Type": "application/json"}, **kwargs)
        path = url.split("?")[0]
        template = next(p for p in schema["paths"] if _matches(p, path))
        documented = {int(k) for k in schema["paths"][template][method.lower()]["responses"]}
        assert r.status_code in documented, (method, url, r.status_code, r.text)
        if r.status_code >= 400:
            body = r.json()
            assert isinstance(body["error"], str) and isinstance(body["type"], str) and body["error"], body
        seen.add(r.status_code)
    assert {200, 201, 401, 403, 404, 409, 413, 422, 429} <= seen, seen


def _matches(template: str, path: str) -> bool:
    a, b = template.strip("/").split("/"), path.strip("/").split("/")
    return len(a) == len(b) and all(x == y or x.startswith("{") for x, y in zip(a, b))


def test_unknown_routes_and_methods_answer_with_the_error_model(api):
    c = api["c"]
    for r, code in ((c.get("/api/nothing-here"), 404), (c.delete(f"/api/edits/{api['id']}", headers=H(api["admin"])), 405)):
        assert r.status_code == code and set(r.json()) == {"error", "type"}, r.text
