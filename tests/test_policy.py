"""The per-namespace policy: review, sharing, sliding-window rate limits and contradiction flags (real store)."""
from __future__ import annotations

import pytest

from memedit import Edit, EditStore
from memedit.errors import ConflictError, ValidationError
from memedit.policy import NamespacePolicy, Policy, RateLimitedError, SlidingWindow

PRES = "The current president of {} is"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def store(tmp_path, embedder):
    s = EditStore(tmp_path / "p.db", embedder=embedder)
    yield s
    s.close()


def test_sliding_window():
    clock = Clock()
    w = SlidingWindow(clock)
    for _ in range(3):
        assert w.check("a", 3, 60) == 0.0
        w.record("a")
        clock.t += 10
    assert w.check("a", 3, 60) == pytest.approx(30.0)  # the oldest (t=1000) leaves at 1060; now 1030
    assert w.check("b", 3, 60) == 0.0 and w.check("a", 0, 60) == 0.0  # other keys; 0 disables
    clock.t += 30.001
    assert w.check("a", 3, 60) == 0.0


def test_rules_and_validation():
    p = Policy(store=None, default=NamespacePolicy(chat_status="active"),
               namespaces={"acme": NamespacePolicy(chat_status="pending")})
    assert p.rules("acme/u1/x").chat_status == "pending" and p.rules("acmex").chat_status == "active"
    assert p.status_for("acme/u1") == "pending" and p.status_for("acme/u1", "api") == "active"
    for bad in ({"chat_status": "forgotten"}, {"max_edits": -1}, {"window_s": 0}, {"nope": 1}):
        with pytest.raises(ValidationError):
            NamespacePolicy.from_dict(bad)


def test_chat_edits_wait_for_review_and_only_approved_ones_travel(store):
    p = Policy(store, default=NamespacePolicy(chat_status="pending"))
    e = p.submit(Edit.text("The CEO of Acme is Jane Roe.", author="u1", namespace="acme/u1"), channel="chat")
    assert e.status == "pending" and e.meta["origin"] == "chat" and not p.is_approved(e)
    with pytest.raises(ConflictError):
        p.share(e.id, "acme")
    assert p.committable([e]) == []
    store.approve(e.id, actor="reviewer")
    assert p.is_approved(e.id)
    shared = p.share(e.id, "acme", actor="reviewer")
    assert shared.namespace == "acme" and shared.meta["shared_from"] == e.id and shared.status == "active"
    # a chat edit stored active under an 'active' policy is live but not approved
    q = Policy(store, default=NamespacePolicy(chat_status="active"))
    live = q.submit(Edit.text("Acme sells anvils.", author="u2", namespace="acme/u2"), channel="chat")
    assert live.status == "active" and not q.is_approved(live) and q.committable([live]) == []
    with pytest.raises(ValidationError):  # a chat edit cannot ask to skip review
        p.submit(Edit.text("x is y", namespace="acme/u1"), channel="chat", status="active")


def test_rate_limit_stores_nothing(store):
    clock = Clock()
    p = Policy(store, default=NamespacePolicy(max_edits=2, window_s=100), clock=clock)
    for i in range(2):
        p.submit(Edit.text(f"Fact {i} holds.", author="spam"))
    n = store.count()
    with pytest.raises(RateLimitedError) as err:
        p.submit(Edit.text("Fact 3 holds.", author="spam"))
    assert err.value.retry_after == pytest.approx(100.0) and store.count() == n
    p.submit(Edit.text("Someone else.", author="ham"))
    clock.t += 100.5
    p.submit(Edit.text("Fact 3 holds.", author="spam"))
    assert store.count() == n + 2


def test_contradiction_is_flagged_not_silently_superseded(store):
    p = Policy(store)
    old = p.submit(Edit.fact("the US", PRES, "Biden", author="a"))
    assert old.status == "active"
    same = p.contradictions(Edit.fact("The  US", PRES + " ", "biden"))  # same fact, other spelling: no conflict
    assert same == []
    new = p.submit(Edit.fact("the US", PRES, "Trump", author="b"))
    assert new.status == "pending" and new.meta["flag"] == "contradicts" and new.meta["conflicts_with"] == [old.id]
    assert store.get(old.id).status == "active"
    store.approve(new.id)  # a reviewer accepts it: now it supersedes
    assert store.get(old.id).status == "superseded" and p.is_approved(new.id)
    # other relations, other namespaces and text edits do not conflict
    assert p.submit(Edit.fact("the US", "The capital of {} is", "Paris")).status == "active"
    assert p.submit(Edit.fact("the US", PRES, "Obama", namespace="other")).status == "active"
    off = Policy(store, default=NamespacePolicy(check_contradictions=False))
    assert off.submit(Edit.fact("the US", PRES, "Obama")).status == "active"


def test_policy_file(tmp_path):
    f = tmp_path / "policy.json"
    f.write_text('{"default": {"max_edits": 5}, "namespaces": {"acme": {"chat_status": "active", "window_s": 60}}}')
    p = Policy.from_file(None, f)
    assert p.rules("acme/u1").chat_status == "active" and p.rules("acme/u1").window_s == 60
    assert p.rules("other").max_edits == 5 and p.rules("other").chat_status == "pending"
    for bad in ('{"defaults": {}}', '{"namespaces": {"Bad NS": {}}}', '{"namespaces": {"a": {"chat_status": "x"}}}', "{"):
        f.write_text(bad)
        with pytest.raises(ValidationError):
            Policy.from_file(None, f)
