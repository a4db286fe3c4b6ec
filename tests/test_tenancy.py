"""Tenancy as a property: random operations over a few namespaces never leak across them.

A hypothesis state machine adds, supersedes, forgets, approves, rejects and
searches edits in 4 namespaces (plus ``default``), with texts from a small
vocabulary so near-duplicates across namespaces are the rule, and subjects /
prompts in varying case and spacing so supersession keys must be normalised.
A plain dict models which edits exist, where, and in which status; after every
step the store must agree with it, and every search / list must stay inside
its namespace and return exactly the model's edits of the asked statuses.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from memedit.edits import Edit
from memedit.errors import ConflictError, NotFoundError
from memedit.store import EditStore

NAMESPACES = ["alpha", "beta", "gamma/team-1", "delta"]
ALL_NS = NAMESPACES + ["default"]
SUBJECTS = ["Acme Corp", "the US", "France"]
RELATIONS = ["The CEO of {} is", "The capital of {} is", "The leader of {} is"]
TARGETS = ["Jane Roe", "John Doe", "Paris", "Lyon"]
TEXTS = ["The CEO of Acme Corp is Jane Roe.", "The CEO of Acme Corp is John Doe.", "Bananas are yellow.",
         "The office is closed today."]
QUERIES = ["Who is the CEO of Acme Corp?", "What is the capital of France?", "Who leads the US?",
           "Are bananas yellow?", "Is the office open?"]
STATUS_SETS = [("active",), ("pending",), ("superseded",), ("rejected",), ("forgotten",), ("active", "pending")]
LIVE = ("active", "pending")

subjects = st.sampled_from(SUBJECTS).flatmap(
    lambda s: st.sampled_from([s, s.upper(), s.lower(), f"  {s}  ", s.replace(" ", "   ")]))
prompts = st.sampled_from(RELATIONS).flatmap(
    lambda p: st.sampled_from([p, p.upper(), p + " ", p.replace(" ", "  "), p + "?"]))
facts = st.tuples(st.just("fact"), subjects, prompts, st.sampled_from(TARGETS))
texts = st.tuples(st.just("text"), st.sampled_from(TEXTS))
specs = st.one_of(facts, texts)


def _norm(s: str) -> str:
    return " ".join(s.casefold().split())


def key_of(spec) -> tuple[str, str] | None:
    """The model's own idea of 'same subject + relation' (independent of memedit.edits)."""
    if spec[0] != "fact":
        return None
    return _norm(spec[1]), _norm(spec[2]).rstrip(" ?.!:")


def build(spec, ns: str) -> Edit:
    if spec[0] == "fact":
        return Edit.fact(spec[1], spec[2], spec[3], namespace=ns)
    return Edit.text(spec[1], namespace=ns)


class TenancyMachine(RuleBasedStateMachine):
    embedder = None  # set by the test from the session fixture

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="memedit-tenancy-"))
        self.store = EditStore(self.dir / "t.db", embedder=self.embedder)
        self.model: dict[int, dict] = {}
        self.namespaces = {"default"}

    def teardown(self) -> None:
        try:
            self.store.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- model helpers ------------------------------------------------------------
    def _insert(self, edit_id: int, ns: str, spec, status: str) -> None:
        assert edit_id not in self.model
        self.model[edit_id] = {"ns": ns, "key": key_of(spec), "status": status}
        self.namespaces.add(ns)

    def _supersede_same_key(self, new_id: int) -> None:
        new = self.model[new_id]
        if new["key"] is None:
            return
        for eid, m in self.model.items():
            if eid != new_id and m["ns"] == new["ns"] and m["key"] == new["key"] and m["status"] in LIVE:
                m["status"] = "superseded"

    def _ids_in(self, ns: str, statuses=None) -> set[int]:
        return {eid for eid, m in self.model.items()
                if m["ns"] == ns and (statuses is None or m["status"] in statuses)}

    # ---- rules ----------------------------------------------------------------------
    @rule(spec=specs, ns=st.sampled_from(ALL_NS), pending=st.booleans())
    def add(self, spec, ns, pending):
        stored = self.store.add(build(spec, ns), status="pending" if pending else "active")
        assert stored.namespace == ns
        self._insert(stored.id, ns, spec, stored.status)
        if not pending:
            self._supersede_same_key(stored.id)

    @rule(batch=st.lists(st.tuples(specs, st.sampled_from(ALL_NS)), min_size=2, max_size=4))
    def add_many(self, batch):
        stored = self.store.add_many([build(spec, ns) for spec, ns in batch])
        assert [e.namespace for e in stored] == [ns for _, ns in batch]
        for e, (spec, ns) in zip(stored, batch):
            self._insert(e.id, ns, spec, "active")
            self._supersede_same_key(e.id)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), spec=specs, claimed_ns=st.sampled_from(ALL_NS))
    def supersede(self, data, spec, claimed_ns):
        old_id = data.draw(st.sampled_from(sorted(self.model)), label="old_id")
        old = self.model[old_id]
        if old["status"] not in LIVE:
            with pytest.raises(ConflictError):
                self.store.supersede(old_id, build(spec, claimed_ns))
            return
        new = self.store.supersede(old_id, build(spec, claimed_ns))
        assert new.namespace == old["ns"], "supersede must keep the old edit's namespace"
        assert new.supersedes == old_id and new.status == "active"
        self._insert(new.id, old["ns"], spec, "active")
        self._supersede_same_key(new.id)
        if old["status"] in LIVE:
            old["status"] = "superseded"

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def forget(self, data):
        eid = data.draw(st.sampled_from(sorted(self.model)), label="forget_id")
        if self.model[eid]["status"] == "forgotten":
            with pytest.raises(ConflictError):
                self.store.forget(eid)
            return
        assert self.store.forget(eid)["forgotten"] is True
        self.model[eid]["status"] = "forgotten"

    @precondition(lambda self: self.model)
    @rule(data=st.data(), approve=st.booleans())
    def review(self, data, approve):
        pending = sorted(eid for eid, m in self.model.items() if m["status"] == "pending")
        eid = data.draw(st.sampled_from(pending or sorted(self.model)), label="review_id")
        action = self.store.approve if approve else self.store.reject
        if self.model[eid]["status"] != "pending":
            with pytest.raises(ConflictError):
                action(eid)
            return
        assert action(eid).status == ("active" if approve else "rejected")
        self.model[eid]["status"] = "active" if approve else "rejected"
        if approve:
            self._supersede_same_key(eid)

    @rule(q=st.sampled_from(QUERIES), ns=st.sampled_from(ALL_NS), statuses=st.sampled_from(STATUS_SETS))
    def search(self, q, ns, statuses):
        if ns not in self.namespaces:
            with pytest.raises(NotFoundError):
                self.store.search(q, ns)
            return
        # k is larger than any namespace here, so exact search must return exactly the allowed set
        default = self.store.search(q, ns, k=200)
        assert all(h.edit.namespace == ns for h in default), "search crossed a namespace"
        assert all(h.edit.status == "active" for h in default), "default search returned a non-active edit"
        assert {h.edit.id for h in default} == self._ids_in(ns, ("active",))
        hits = self.store.search(q, ns, k=200, statuses=statuses)
        assert all(h.edit.namespace == ns and h.edit.status in statuses for h in hits)
        expected = self._ids_in(ns, statuses) - self._ids_in(ns, ("forgotten",))  # forgotten has no vectors
        assert {h.edit.id for h in hits} == expected
        assert len(hits) == len({h.edit.id for h in hits}), "an edit came back twice"
        assert self.store.check_index()["consistent"], "the FAISS index drifted from the stored vectors"
        if default:
            top = self.store.search(q, ns, k=1)
            assert len(top) == 1 and top[0].edit.id == default[0].edit.id

    @rule(ns=st.sampled_from(ALL_NS))
    def list_namespace(self, ns):
        if ns not in self.namespaces:
            with pytest.raises(NotFoundError):
                self.store.list(ns)
            return
        listed = self.store.list(ns, limit=100_000)
        assert all(e.namespace == ns for e in listed), "list crossed a namespace"
        assert {e.id for e in listed} == self._ids_in(ns)
        live = self.store.list(ns, status=list(LIVE), limit=100_000)
        assert {e.id for e in live} == self._ids_in(ns, LIVE)
        assert self.store.count(ns) == len(listed)

    @rule()
    def reopen(self):
        self.store.close()
        self.store = EditStore(self.dir / "t.db", embedder=self.embedder)

    # ---- invariants -------------------------------------------------------------------
    @invariant()
    def store_agrees_with_model(self):
        everything = {e.id: e for e in self.store.list(None, limit=100_000)}
        assert set(everything) == set(self.model)
        for eid, m in self.model.items():
            e = everything[eid]
            assert (e.namespace, e.status) == (m["ns"], m["status"]), (eid, e, m)
            if e.status == "forgotten":
                assert e.statement is None and e.subject is None and e.target_new is None
        assert {n["name"] for n in self.store.namespaces()} == self.namespaces
        live = {n["name"]: n["live"] for n in self.store.namespaces()}
        for ns in self.namespaces:
            assert live[ns] == len(self._ids_in(ns, LIVE))

    @invariant()
    def one_active_edit_per_fact_and_namespace(self):
        seen = set()
        for e in self.store.list(None, status="active", limit=100_000):
            if e.kind != "fact":
                continue
            key = (e.namespace, _norm(e.subject), re.sub(r"\s+", " ", e.prompt.casefold()).strip().rstrip(" ?.!:"))
            assert key not in seen, f"two active edits for {key}"
            seen.add(key)




def test_tenancy_state_machine(embedder):
    TenancyMachine.embedder = embedder
    run_state_machine_as_test(
        TenancyMachine,
        settings=settings(max_examples=20, stateful_step_count=30, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]),
    )
