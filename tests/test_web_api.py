"""The HTTP API over a real SQLite store and the real embedder: every endpoint, auth, bad payloads, isolation."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'memedit[web]')")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from memedit import Edit, EditStore  # noqa: E402
from memedit.policy import NamespacePolicy, Policy  # noqa: E402
from memedit.web.app import create_app  # noqa: E402
from memedit.web.auth import TokenFile  # noqa: E402

PRES = ("The current president of {} is", "the US")


@pytest.fixture()
def env(tmp_path, embedder):
    """A store with a few edits in three namespaces, tokens of several kinds, and a client."""
    store = EditStore(tmp_path / "s.db", embedder=embedder)
    tokens, admin = TokenFile.open(tmp_path / "s.tokens.json")
    secrets = {
        "admin": admin,
        "acme_rw": tokens.create("acme-rw", namespaces=["acme/*"], write=True),
        "acme_ro": tokens.create("acme-ro", namespaces=["acme/*"], write=False),
        "u1_rw": tokens.create("u1-rw", namespaces=["acme/u1"], write=True),
        "globex": tokens.create("globex", namespaces=["globex"], write=True),
    }
    e = {
        "pres": store.add(Edit.fact(PRES[1], PRES[0], "Trump", author="alice", source="chat: it's Trump now",
                                    namespace="acme/u1")),
        "ceo": store.add(Edit.text("The CEO of Acme is Jane Roe.", author="bob", namespace="acme/u1"), status="pending"),
        "u2": store.add(Edit.text("The office moved to Lyon.", author="carol", namespace="acme/u2")),
        "glx": store.add(Edit.text("Globex sells hammocks.", author="dave", namespace="globex")),
    }
    policy = Policy(store, default=NamespacePolicy(chat_status="pending", max_edits=3, window_s=60))
    client = TestClient(create_app(store, tokens=tokens, policy=policy))
    yield {"store": store, "tokens": tokens, "s": secrets, "e": e, "c": client}
    store.close()


def H(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def snapshot(store: EditStore) -> list[dict]:
    """Everything an API call could change: every edit row and the event count."""
    return [e.to_dict() for e in store.list(limit=1000)] + [{"events": len(store.events(limit=100000))}]


# ---- authentication -------------------------------------------------------------------
def test_no_token_no_access(env):
    c, e = env["c"], env["e"]
    before = snapshot(env["store"])
    for method, url, body in [("GET", "/api/edits?namespace=acme/u1", None), ("GET", f"/api/edits/{e['pres'].id}", None),
                              ("GET", "/api/search?q=x&namespace=acme/u1", None), ("GET", "/api/me", None),
                              ("POST", f"/api/edits/{e['ceo'].id}/approve", None),
                              ("POST", f"/api/edits/{e['pres'].id}/forget", {"confirm": e["pres"].id}),
                              ("POST", "/api/edits", {"namespace": "acme/u1", "statement": "x is y"}),
                              ("GET", "/api/export?namespace=acme/u1", None), ("GET", "/api/health?namespace=acme/u1", None)]:
        r = c.request(method, url, json=body)
        assert r.status_code == 401, (url, r.text)
        assert r.json()["type"] == "AuthError"
    assert c.get("/api/namespaces").json() == []
    assert snapshot(env["store"]) == before


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer ", "Basic abc", "token", "Bearer me_" + "x" * 300])
def test_bad_credentials(env, header):
    r = env["c"].post(f"/api/edits/{env['e']['ceo'].id}/approve", headers={"Authorization": header})
    assert r.status_code == 401
    assert env["store"].get(env["e"]["ceo"].id).status == "pending"


def test_read_only_token_cannot_change(env):
    c, e, s = env["c"], env["e"], env["s"]
    before = snapshot(env["store"])
    assert c.get("/api/edits", params={"namespace": "acme/u1"}, headers=H(s["acme_ro"])).status_code == 200
    for url, body in [(f"/api/edits/{e['ceo'].id}/approve", None), (f"/api/edits/{e['ceo'].id}/reject", {}),
                      (f"/api/edits/{e['pres'].id}/forget", {"confirm": e["pres"].id}),
                      (f"/api/edits/{e['pres'].id}/supersede", {"edit": {"subject": "the US", "prompt": PRES[0], "target_new": "X"}}),
                      ("/api/edits", {"namespace": "acme/u1", "statement": "Water is dry."}),
                      ("/api/forget-by-filter", {"namespace": "acme/u1", "dry_run": True})]:
        r = c.post(url, json=body, headers=H(s["acme_ro"]))
        assert r.status_code == 403, (url, r.text)
    assert snapshot(env["store"]) == before


def test_other_namespace_is_invisible(env):
    c, e, s = env["c"], env["e"], env["s"]
    before = snapshot(env["store"])
    g = H(s["globex"])
    assert c.get("/api/edits", params={"namespace": "acme/u1"}, headers=g).status_code == 403
    assert c.get("/api/search", params={"namespace": "acme/u1", "q": "president"}, headers=g).status_code == 403
    for url in (f"/api/edits/{e['pres'].id}", f"/api/edits/{e['pres'].id}/history", f"/api/edits/{e['pres'].id}/usage"):
        r = c.get(url, headers=g)
        assert r.status_code == 404 and r.json()["error"] == f"no edit with id {e['pres'].id}"
    # an id in another namespace reads exactly like a missing id
    assert c.get("/api/edits/99999", headers=g).json()["error"] == "no edit with id 99999"
    assert c.post(f"/api/edits/{e['ceo'].id}/approve", headers=g).status_code == 404
    assert c.post(f"/api/edits/{e['pres'].id}/forget", json={"confirm": e["pres"].id}, headers=g).status_code == 404
    assert c.post("/api/edits", json={"namespace": "acme/u1", "statement": "a b"}, headers=g).status_code == 403
    assert c.get("/api/export", params={"namespace": "acme/u1"}, headers=g).status_code == 403
    assert c.get("/api/export", headers=g).status_code == 403  # everything: '*' tokens only
    assert [n["name"] for n in c.get("/api/namespaces", headers=g).json()] == ["globex"]
    # 'acme/u1' only: not its sibling
    assert c.get("/api/edits", params={"namespace": "acme/u2"}, headers=H(s["u1_rw"])).status_code == 403
    assert snapshot(env["store"]) == before


def test_revoked_token_and_me(env, tmp_path):
    c, s = env["c"], env["s"]
    assert c.get("/api/me", headers=H(s["acme_ro"])).json() == {"name": "acme-ro", "namespaces": ["acme/*"],
                                                                 "write": False, "admin": False}
    other, _ = TokenFile.open(env["tokens"].path)  # another process (memedit tokens revoke) edits the file
    other.revoke("acme-ro")
    assert c.get("/api/me", headers=H(s["acme_ro"])).status_code == 401
    assert c.get("/api/me", headers=H(s["admin"])).json()["admin"] is True


# ---- listing and search ---------------------------------------------------------------
def test_list_filters_and_pages(env):
    c, e, store = env["c"], env["e"], env["store"]
    a = H(env["s"]["admin"])
    store.record_use([e["pres"].id], question="Who leads the US?", scores=[0.93], route="ike")
    store.mark_committed([e["pres"].id], commit_id=1)

    def ids(**params):
        r = c.get("/api/edits", params={"namespace": "acme/u1", **params}, headers=a)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["edits"]], r.json()["total"]

    assert ids() == ([e["ceo"].id, e["pres"].id], 2)
    assert ids(status="pending") == ([e["ceo"].id], 1)
    assert ids(status=["pending", "active"])[1] == 2
    assert ids(author="alice") == ([e["pres"].id], 1)
    assert ids(source="TRUMP") == ([e["pres"].id], 1)
    assert ids(committed="true") == ([e["pres"].id], 1)
    assert ids(committed="false") == ([e["ceo"].id], 1)
    assert ids(min_uses=1) == ([e["pres"].id], 1)
    assert ids(q="Jane") == ([e["ceo"].id], 1)
    assert ids(since="2000-01-01") [1] == 2 and ids(until="2000-01-01") == ([], 0)
    assert ids(since=e["ceo"].created_at) == ([e["ceo"].id], 1)
    assert ids(limit=1) == ([e["ceo"].id], 2) and ids(limit=1, offset=1) == ([e["pres"].id], 2)
    assert ids(limit=1, offset=5) == ([], 2)
    row = c.get("/api/edits", params={"namespace": "acme/u1", "author": "alice"}, headers=a).json()["edits"][0]
    assert row["sentence"] == "The current president of the US is Trump" and row["usage_count"] == 1
    for bad in ({"status": "nope"}, {"since": "yesterday"}, {"limit": 0}, {"limit": 501}, {"offset": -1},
                {"min_uses": -1}, {"namespace": "Bad NS"}, {"committed": "maybe"}):
        r = c.get("/api/edits", params={"namespace": "acme/u1", **bad}, headers=a)
        assert r.status_code in (403, 422), (bad, r.text)
        assert "error" in r.json()
    assert c.get("/api/edits", params={"namespace": "acme/nope"}, headers=a).status_code == 404


def test_semantic_search(env):
    c, e = env["c"], env["e"]
    a = H(env["s"]["acme_rw"])
    hits = c.get("/api/search", params={"namespace": "acme/u1", "q": "Who is the US president?"}, headers=a).json()
    assert hits[0]["edit"]["id"] == e["pres"].id and hits[0]["score"] > 0.5
    assert all(h["edit"]["namespace"] == "acme/u1" for h in hits)
    pend = c.get("/api/search", params={"namespace": "acme/u1", "q": "Who runs Acme?", "status": "pending"}, headers=a).json()
    assert [h["edit"]["id"] for h in pend] == [e["ceo"].id]
    for bad in ({"k": 0}, {"k": 101}, {"status": "forgotten"}, {"q": ""}, {"q": "x" * 5000}):
        r = c.get("/api/search", params={"namespace": "acme/u1", "q": "x", **bad}, headers=a)
        assert r.status_code == 422, (bad, r.text)
    assert c.get("/api/search", params={"namespace": "acme/u1"}, headers=a).status_code == 422  # q missing


def test_edit_detail_history_usage(env):
    c, e, store = env["c"], env["e"], env["store"]
    a = H(env["s"]["acme_ro"])
    store.record_use([e["pres"].id], question="Who is the US president?", scores=[0.88], route="ike")
    d = c.get(f"/api/edits/{e['pres'].id}", headers=a).json()
    assert d["edit"]["author"] == "alice" and d["edit"]["source"] == "chat: it's Trump now"
    assert d["chain_ok"] and [h["kind"] for h in d["history"]] == ["add", "use"]
    assert all(h["hash_ok"] for h in d["history"])
    assert d["usage"][0]["question"] == "Who is the US president?" and d["usage"][0]["score"] == pytest.approx(0.88)
    assert d["approved"] is True and d["committed"] is False
    assert c.get(f"/api/edits/{e['pres'].id}/history", headers=a).json() == d["history"]
    assert c.get(f"/api/edits/{e['pres'].id}/usage", headers=a).json() == d["usage"]
    assert c.get("/api/edits/abc", headers=a).status_code == 422
    # a tampered event shows up as a hash mismatch
    store._conn.execute("UPDATE events SET actor = 'mallory' WHERE edit_id = ? AND kind = 'use'", (e["pres"].id,))
    d = c.get(f"/api/edits/{e['pres'].id}", headers=a).json()
    assert d["chain_ok"] is False and [h["hash_ok"] for h in d["history"]] == [True, False]


# ---- changing -----------------------------------------------------------------------
def test_add_through_policy(env):
    c, store = env["c"], env["store"]
    w = H(env["s"]["acme_rw"])
    r = c.post("/api/edits", json={"namespace": "acme/u1", "statement": "The sky over Acme is green."}, headers=w)
    assert r.status_code == 201 and r.json()["status"] == "active" and r.json()["author"] == "acme-rw"
    assert r.json()["meta"] == {"origin": "api"}
    r = c.post("/api/edits", json={"namespace": "acme/u1", "statement": "Acme has 5 staff.", "channel": "chat",
                                   "author": "user-9"}, headers=w)
    assert r.status_code == 201 and r.json()["status"] == "pending"
    r = c.post("/api/edits", json={"namespace": "acme/u1", "statement": "Acme has 6 staff.", "channel": "chat",
                                   "status": "active"}, headers=w)
    assert r.status_code == 422 and "requires review" in r.json()["error"]
    # contradiction with the approved president edit: stored pending and flagged, the approved one untouched
    r = c.post("/api/edits", json={"namespace": "acme/u1", "subject": "the US", "prompt": PRES[0], "target_new": "Biden"},
               headers=w)
    assert r.status_code == 201
    assert r.json()["status"] == "pending" and r.json()["meta"]["flag"] == "contradicts"
    assert r.json()["meta"]["conflicts_with"] == [env["e"]["pres"].id]
    assert store.get(env["e"]["pres"].id).status == "active"


def test_rate_limit_per_token_whatever_author_the_body_names(env):
    c, store = env["c"], env["store"]
    w = H(env["s"]["acme_rw"])
    for i in range(3):
        assert c.post("/api/edits", json={"namespace": "acme/u2", "statement": f"Fact number {i} holds.",
                                          "author": f"author-{i}"}, headers=w).status_code == 201
    n = store.count("acme/u2")
    r = c.post("/api/edits", json={"namespace": "acme/u2", "statement": "One more.", "author": "brand-new"}, headers=w)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and "acme-rw" in r.json()["error"]
    assert store.count("acme/u2") == n
    # another token, and the same token in another namespace, are not limited
    other = H(env["s"]["admin"])
    assert c.post("/api/edits", json={"namespace": "acme/u2", "statement": "Fine.", "author": "ok"},
                  headers=other).status_code == 201
    assert c.post("/api/edits", json={"namespace": "acme/u1", "statement": "Fine too.", "author": "x"},
                  headers=w).status_code == 201


@pytest.mark.parametrize("body", [
    {"namespace": "acme/u1"},                                                     # nothing to store
    {"namespace": "acme/u1", "statement": "x", "bogus": 1},                       # unknown field
    {"namespace": "acme/u1", "statement": "a\x00b"},                              # control character
    {"namespace": "acme/u1", "statement": "   "},                                 # empty
    {"namespace": "acme/u1", "statement": "x" * 2001},                            # too long
    {"namespace": "acme/u1", "subject": "the US", "prompt": "no hole", "target_new": "X"},
    {"namespace": "acme/u1", "subject": "the US", "prompt": PRES[0]},            # no target
    {"namespace": "acme/u1", "statement": "x", "paraphrases": ["a {}"]},          # paraphrases on free text
    {"namespace": "acme/u1", "statement": "x", "status": "forgotten"},
    {"namespace": "acme/u1", "statement": 5},
    {"namespace": "acme/u1", "statement": "ok", "channel": "email"},
    "not an object",
])
def test_bad_payload_changes_nothing(env, body):
    before = snapshot(env["store"])
    r = env["c"].post("/api/edits", json=body, headers=H(env["s"]["acme_rw"]))
    assert r.status_code == 422, r.text
    assert r.json()["error"]
    assert snapshot(env["store"]) == before


def test_bad_namespace_is_refused(env):
    before = snapshot(env["store"])
    r = env["c"].post("/api/edits", json={"namespace": "../etc", "statement": "x y"}, headers=H(env["s"]["admin"]))
    assert r.status_code == 422 and "namespace" in r.json()["error"]
    assert snapshot(env["store"]) == before


def test_approve_reject(env):
    c, e, store = env["c"], env["e"], env["store"]
    w = H(env["s"]["u1_rw"])
    r = c.post(f"/api/edits/{e['ceo'].id}/approve", headers=w)
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert [h.kind for h in store.history(e["ceo"].id)][-1] == "approve"
    assert [h.actor for h in store.history(e["ceo"].id)][-1] == "u1-rw"
    before = snapshot(store)
    assert c.post(f"/api/edits/{e['ceo'].id}/approve", headers=w).status_code == 409
    assert c.post(f"/api/edits/{e['ceo'].id}/reject", json={}, headers=w).status_code == 409
    assert c.post("/api/edits/424242/approve", headers=w).status_code == 404
    assert snapshot(store) == before
    p = store.add(Edit.text("Acme was founded in 1850.", namespace="acme/u1"), status="pending")
    assert c.post(f"/api/edits/{p.id}/reject", json={"reason": "no source", "x": 1}, headers=w).status_code == 422
    r = c.post(f"/api/edits/{p.id}/reject", json={"reason": "no source"}, headers=w)
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    assert c.get(f"/api/edits/{p.id}", headers=w).json()["notes"][0]["text"] == "no source"


def test_supersede(env):
    c, e, store = env["c"], env["e"], env["store"]
    w = H(env["s"]["acme_rw"])
    r = c.post(f"/api/edits/{e['pres'].id}/supersede",
               json={"edit": {"subject": "the US", "prompt": PRES[0], "target_new": "Biden", "namespace": "globex"}},
               headers=w)
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["namespace"] == "acme/u1" and new["supersedes"] == e["pres"].id  # stays in the old edit's namespace
    assert store.get(e["pres"].id).status == "superseded"
    before = snapshot(store)
    assert c.post(f"/api/edits/{e['pres'].id}/supersede", json={"edit": {"statement": "x y"}}, headers=w).status_code == 409
    assert c.post(f"/api/edits/{new['id']}/supersede", json={"edit": {}}, headers=w).status_code == 422
    assert c.post(f"/api/edits/{new['id']}/supersede", json={}, headers=w).status_code == 422
    assert snapshot(store) == before


def test_forget_needs_confirmation_and_erases(env):
    c, e, store = env["c"], env["e"], env["store"]
    w = H(env["s"]["acme_rw"])
    pid = e["pres"].id
    before = snapshot(store)
    for body in ({}, {"confirm": pid + 1}, {"confirm": "yes"}):
        assert c.post(f"/api/edits/{pid}/forget", json=body, headers=w).status_code == 422
    assert snapshot(store) == before
    r = c.post(f"/api/edits/{pid}/forget", json={"confirm": pid, "reason": "user asked"}, headers=w)
    assert r.status_code == 200 and r.json()["forgotten"] is True
    assert c.post(f"/api/edits/{pid}/forget", json={"confirm": pid}, headers=w).status_code == 409
    listed = c.get("/api/edits", params={"namespace": "acme/u1", "status": "active"}, headers=w).json()
    assert pid not in [x["id"] for x in listed["edits"]]
    hits = c.get("/api/search", params={"namespace": "acme/u1", "q": "Who is the US president?"}, headers=w).json()
    assert pid not in [h["edit"]["id"] for h in hits]
    d = c.get(f"/api/edits/{pid}", headers=w).json()
    assert d["edit"]["status"] == "forgotten" and d["edit"]["sentence"] is None and d["edit"]["author"] is None
    assert d["chain_ok"]


def test_forget_by_filter(env):
    c, store = env["c"], env["store"]
    w = H(env["s"]["acme_rw"])
    for i in range(3):
        store.add(Edit.text(f"Spam fact {i} is true.", author="spam", namespace="acme/u2"))
    store.add(Edit.text("Spam elsewhere.", author="spam", namespace="globex"))
    r = c.post("/api/forget-by-filter", json={"namespace": "acme/u2", "author": "spam", "dry_run": True}, headers=w)
    assert r.status_code == 200 and r.json()["count"] == 3
    before = snapshot(store)
    for confirm in (None, 2, 4):
        r = c.post("/api/forget-by-filter", json={"namespace": "acme/u2", "author": "spam", "confirm_count": confirm}, headers=w)
        assert r.status_code == 422 and "confirm_count=3" in r.json()["error"]
    assert snapshot(store) == before
    r = c.post("/api/forget-by-filter", json={"namespace": "acme/u2", "author": "spam", "confirm_count": 3}, headers=w)
    assert r.status_code == 200 and r.json()["count"] == 3
    assert store.count("acme/u2", author="spam") == 0  # forgetting erases the author too
    assert store.count("acme/u2", status="forgotten") == 3
    assert store.count("globex", status="active") == 2  # another namespace untouched
    assert store.count("acme/u2", status="active") == 1
    bad = c.post("/api/forget-by-filter", json={"namespace": "acme/u2", "status": ["forgotten"], "dry_run": True}, headers=w)
    assert bad.status_code == 422


def test_export(env):
    c = env["c"]
    r = c.get("/api/export", params={"namespace": "acme/u1"}, headers=H(env["s"]["acme_ro"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert lines[0]["format"] == "memedit-edits"
    assert {x["namespace"] for x in lines[1:]} == {"acme/u1"} and len(lines) == 3
    everything = c.get("/api/export", headers=H(env["s"]["admin"]))
    assert everything.status_code == 200 and len(everything.text.splitlines()) == 5


def test_health(env):
    c = env["c"]
    h = c.get("/api/health", params={"namespace": "acme/u1"}, headers=H(env["s"]["acme_ro"])).json()
    assert h["ok"] and h["counts"]["active"] == 1 and h["counts"]["pending"] == 1 and h["index"]["consistent"]
    assert "verify" not in h  # whole-store audit names other tenants' edits: '*' tokens only
    h = c.get("/api/health", params={"namespace": "acme/u1"}, headers=H(env["s"]["admin"])).json()
    assert h["verify"]["ok"] and h["verify"]["events"] > 4


def test_openapi_documents_every_endpoint(env):
    paths = env["c"].get("/openapi.json").json()["paths"]
    for p in ("/api/edits", "/api/edits/{edit_id}", "/api/edits/{edit_id}/history", "/api/edits/{edit_id}/usage",
              "/api/edits/{edit_id}/approve", "/api/edits/{edit_id}/reject", "/api/edits/{edit_id}/supersede",
              "/api/edits/{edit_id}/forget", "/api/forget-by-filter", "/api/search", "/api/export", "/api/health",
              "/api/namespaces", "/api/me"):
        assert p in paths, p
    assert not any(p.startswith("/ui") for p in paths)


# ---- browser sessions, CSRF and pages ----------------------------------------------------
def _login(c, secret):
    return c.post("/ui/login", data={"token": secret, "next": "/ui/edits?namespace=acme/u1"}, follow_redirects=False)


def test_session_csrf_and_pages(env):
    c, e, store = env["c"], env["e"], env["store"]
    assert c.get("/ui/edits?namespace=acme/u1", follow_redirects=False).status_code == 303  # to the sign-in page
    assert _login(c, "me_wrong").status_code == 401
    r = _login(c, env["s"]["acme_rw"])
    assert r.status_code == 303 and r.headers["location"] == "/ui/edits?namespace=acme/u1"
    assert "httponly" in r.headers.get_list("set-cookie")[0].lower()
    assert "samesite=strict" in r.headers.get_list("set-cookie")[0].lower()
    before = snapshot(store)
    # the session cookie alone cannot change anything: the CSRF header must match
    assert c.post(f"/api/edits/{e['ceo'].id}/approve").status_code == 403
    assert c.post(f"/api/edits/{e['ceo'].id}/approve", headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert snapshot(store) == before
    r = c.post(f"/api/edits/{e['ceo'].id}/approve", headers={"X-CSRF-Token": c.cookies["memedit_csrf"]})
    assert r.status_code == 200 and r.json()["status"] == "active"
    page = c.get("/ui/edits", params={"namespace": "acme/u1"})
    assert page.status_code == 200 and "The CEO of Acme is Jane Roe." in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert c.get("/ui/edits", params={"namespace": "acme/u1", "q": "president", "mode": "semantic"}).status_code == 200
    detail = c.get(f"/ui/edits/{e['pres'].id}")
    assert detail.status_code == 200 and "hashes verified" in detail.text and "alice" in detail.text
    assert c.get(f"/ui/edits/{e['glx'].id}").status_code == 404  # another tenant's edit
    assert c.get("/ui/edits", params={"namespace": "globex"}).status_code == 403
    assert c.get("/ui/queue", params={"namespace": "acme/u1"}).status_code == 200
    assert c.get("/ui/health", params={"namespace": "acme/u1"}).status_code == 200
    assert c.get("/ui/static/app.js").status_code == 200
    assert c.post("/ui/logout", data={"csrf": "bad"}).status_code == 403
    assert c.post("/ui/logout", data={"csrf": c.cookies["memedit_csrf"]}, follow_redirects=False).status_code == 303
    assert c.get("/ui/edits?namespace=acme/u1", follow_redirects=False).status_code == 303


def test_pages_escape_edit_text(env):
    c, store = env["c"], env["store"]
    x = store.add(Edit.text('<script>alert("x")</script> is <b>bold</b>', namespace="acme/u1", author="<img src=x>"))
    _login(c, env["s"]["admin"])
    for url in ("/ui/edits?namespace=acme/u1", f"/ui/edits/{x.id}"):
        html = c.get(url).text
        assert "<script>alert" not in html and "&lt;script&gt;alert" in html
        assert "<img src=x>" not in html


def test_login_next_is_not_an_open_redirect(env):
    c = env["c"]
    r = c.post("/ui/login", data={"token": env["s"]["admin"]}, headers={"Origin": "https://evil.example"},
               follow_redirects=False)
    assert r.status_code == 403 and "memedit_session" not in r.cookies  # login CSRF
    for nxt in ("https://evil.example/", "//evil.example/ui/", "/ui/\\evil"):
        r = c.post("/ui/login", data={"token": env["s"]["admin"], "next": nxt}, follow_redirects=False)
        assert r.headers["location"] == "/ui/edits"


def test_revoked_token_ends_session(env):
    c = env["c"]
    _login(c, env["s"]["acme_ro"])
    assert c.get("/api/me").status_code == 200
    env["tokens"].revoke("acme-ro")
    assert c.get("/api/me").status_code == 401


# ---- the CLI for tokens ----------------------------------------------------------------
def test_tokens_cli(tmp_path):
    from typer.testing import CliRunner

    from memedit.cli import app

    runner = CliRunner()
    store = str(tmp_path / "c.db")
    r = runner.invoke(app, ["tokens", "add", "alice", "-n", "acme/*", "--write", "--store", store, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["token"].startswith("me_") and "admin_token" not in out  # exactly the token asked for
    tf, _ = TokenFile.open(tmp_path / "c.tokens.json")
    assert tf.authenticate(out["token"]).can_write("acme/u1")
    assert out["token"] not in (tmp_path / "c.tokens.json").read_text()  # only hashes are stored
    r = runner.invoke(app, ["tokens", "list", "--store", store, "--json"])
    assert [t["name"] for t in json.loads(r.output)] == ["alice"]
    assert runner.invoke(app, ["tokens", "add", "bad name", "-n", "x", "--store", store]).exit_code == 2
    assert runner.invoke(app, ["tokens", "add", "bob", "-n", "Bad/NS", "--store", store]).exit_code == 2
    assert runner.invoke(app, ["tokens", "revoke", "alice", "--store", store]).exit_code == 0
    assert runner.invoke(app, ["tokens", "revoke", "alice", "--store", store]).exit_code == 3
    assert TokenFile.open(tmp_path / "c.tokens.json")[0].authenticate(out["token"]) is None


# ---- isolation, property-based ---------------------------------------------------------------
NAMESPACES = ["a", "a/x", "a/y", "ab", "b", "b/x"]
TOKEN_SCOPES = [(["a/*"], True), (["a"], True), (["a/x"], False), (["ab"], True), (["b/*", "a/y"], True),
                (["b/x"], False), (["*"], False)]
OPS = ["list", "get", "history", "usage", "search", "export", "health", "add", "approve", "reject", "forget",
       "bulk_dry", "supersede"]


@pytest.fixture(scope="module")
def iso(tmp_path_factory, embedder):
    path = tmp_path_factory.mktemp("iso")
    store = EditStore(path / "s.db", embedder=embedder)
    ids = {}
    for ns in NAMESPACES:
        ids[ns] = [store.add(Edit.text(f"In {ns} the password is swordfish-{ns}.", namespace=ns, author=ns)).id,
                   store.add(Edit.text(f"In {ns} the colour is teal-{ns}.", namespace=ns), status="pending").id]
    tokens, _ = TokenFile.open(path / "t.json", create_admin=False)
    secrets = [tokens.create(f"t{i}", namespaces=scopes, write=w) for i, (scopes, w) in enumerate(TOKEN_SCOPES)]
    client = TestClient(create_app(store, tokens=tokens, policy=NamespacePolicy(max_edits=0)))
    yield store, ids, secrets, client
    store.close()


def _covers(scopes: list[str], ns: str) -> bool:
    return any(s == "*" or s == ns or (s.endswith("/*") and (ns == s[:-2] or ns.startswith(s[:-2] + "/"))) for s in scopes)


SCOPE_PATTERNS = NAMESPACES + [n + "/*" for n in NAMESPACES] + ["*"]
_made = iter(range(10**6))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tok=st.one_of(st.integers(0, len(TOKEN_SCOPES) - 1),
                     st.tuples(st.lists(st.sampled_from(SCOPE_PATTERNS), min_size=1, max_size=3, unique=True),
                               st.booleans())),
       ns=st.sampled_from(NAMESPACES), op=st.sampled_from(OPS), which=st.integers(0, 1))
def test_no_cross_namespace_read_or_write(iso, tok, ns, op, which):
    """Fixed tokens and freshly made ones with random scopes: an operation succeeds only where the scope allows."""
    store, ids, secrets, c = iso
    if isinstance(tok, int):
        (scopes, write), secret = TOKEN_SCOPES[tok], secrets[tok]
    else:
        scopes, write = tok
        secret = c.app.state.memedit.tokens.create(f"gen{next(_made)}", namespaces=scopes, write=write)
    can_read, can_write = _covers(scopes, ns), _covers(scopes, ns) and write
    h = H(secret)
    eid = ids[ns][which]
    before = [e.to_dict() for e in store.list(ns, limit=1000)]
    others = {n: [e.to_dict() for e in store.list(n, limit=1000)] for n in NAMESPACES if n != ns}
    if op == "list":
        r = c.get("/api/edits", params={"namespace": ns, "status": list(("pending", "active", "superseded", "rejected", "forgotten"))}, headers=h)
    elif op in ("get", "history", "usage"):
        r = c.get(f"/api/edits/{eid}" + ("" if op == "get" else f"/{op}"), headers=h)
    elif op == "search":
        r = c.get("/api/search", params={"namespace": ns, "q": "what is the password?", "status": ["active", "pending"]}, headers=h)
    elif op == "export":
        r = c.get("/api/export", params={"namespace": ns}, headers=h)
    elif op == "health":
        r = c.get("/api/health", params={"namespace": ns}, headers=h)
    elif op == "add":
        r = c.post("/api/edits", json={"namespace": ns, "statement": f"Added to {ns}.", "status": "pending"}, headers=h)
    elif op in ("approve", "reject"):
        r = c.post(f"/api/edits/{eid}/{op}", json={} if op == "reject" else None, headers=h)
    elif op == "forget":
        r = c.post(f"/api/edits/{eid}/forget", json={"confirm": eid}, headers=h)
    elif op == "supersede":
        r = c.post(f"/api/edits/{eid}/supersede", json={"edit": {"statement": f"Replaced in {ns}."}}, headers=h)
    else:
        r = c.post("/api/forget-by-filter", json={"namespace": ns, "dry_run": True}, headers=h)
    writes = op in ("add", "approve", "reject", "forget", "supersede", "bulk_dry")
    allowed = can_write if writes else can_read
    if allowed:
        assert r.status_code in (200, 201, 409), (op, ns, scopes, r.text)  # 409: e.g. approving an active edit
    else:
        assert r.status_code in (403, 404), (op, ns, scopes, r.status_code, r.text)
        assert [e.to_dict() for e in store.list(ns, limit=1000)] == before
        assert "swordfish" not in r.text and "teal" not in r.text
    # nothing ever leaks from, or changes in, another namespace
    for n, rows in others.items():
        assert [e.to_dict() for e in store.list(n, limit=1000)] == rows, (op, ns, n)
        if not _covers(scopes, n):
            assert f"swordfish-{n}." not in r.text and f"teal-{n}." not in r.text


def test_replicas_of_a_postgresql_store_share_its_tokens(pg_url, embedder):
    """Tokens live in the database: a token made through one replica works on another; a revoke ends both."""
    from typer.testing import CliRunner

    from memedit.cli import app as cli
    from memedit.store import open_store
    from memedit.web.auth import TokenTable

    url = pg_url()
    runner = CliRunner()
    secrets = {}
    for name, scope in (("admin", "*"), ("globex-reader", "globex")):
        res = runner.invoke(cli, ["tokens", "add", name, "-n", scope, "--store", url, "--json"])
        assert res.exit_code == 0, res.output
        secrets[name] = json.loads(res.output)["token"]
    reader, admin = secrets["globex-reader"], secrets["admin"]
    with open_store(url, embedder=embedder) as one, open_store(url, embedder=embedder) as two:
        e = one.add(Edit.text("Globex sells hammocks.", namespace="globex"))
        one.add(Edit.text("Initech sells staplers.", namespace="initech"))
        c1, c2 = TestClient(create_app(one)), TestClient(create_app(two))  # each finds the tokens in the database
        for c in (c1, c2):
            r = c.get("/api/edits", params={"namespace": "globex"}, headers=H(reader))
            assert r.status_code == 200 and [x["id"] for x in r.json()["edits"]] == [e.id], r.text
            assert c.get("/api/edits", params={"namespace": "initech"}, headers=H(reader)).status_code == 403
            assert c.get("/api/edits", params={"namespace": "initech"}, headers=H(admin)).status_code == 200
        assert TokenTable.open_in(two)[1] is None, "the admin token is created once, not per replica"
        res = runner.invoke(cli, ["tokens", "revoke", "globex-reader", "--store", url, "--json"])
        assert res.exit_code == 0, res.output
        for c in (c1, c2):  # the very next request on every replica is refused
            assert c.get("/api/edits", params={"namespace": "globex"}, headers=H(reader)).status_code == 401
    res = runner.invoke(cli, ["tokens", "list", "--store", url, "--json"])
    assert res.exit_code == 0 and [t["name"] for t in json.loads(res.output)] == ["admin"]
    res = runner.invoke(cli, ["tokens", "revoke", "nobody", "--store", url, "--json"])
    assert res.exit_code == 3 and "no token named" in res.output
    with open_store(url, embedder=embedder) as s:  # secrets never stored: only their hashes
        stored = [r["sha256"] for r in s.db.query("SELECT sha256 FROM api_tokens")]
        assert reader not in str(stored) and admin not in str(stored) and len(stored) == 1
