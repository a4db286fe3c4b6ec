"""The store interface against real SQLite files + FAISS and a real PostgreSQL + pgvector, with MiniLM.

Adding, reading, filtering, supersession, the approve/reject lifecycle, the
hash-chained audit log (and that tampering is detected), JSON-lines
export/import, and search. Tests taking the ``store`` or ``new_store``
fixture run on both backends; the FAISS-file test is SQLite-only.
"""
from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest

from memedit.edits import Edit
from memedit.errors import ConflictError, NotFoundError, ValidationError
from memedit.store import EditStore
from memedit.store.open import open_store

PRES = "The current president of {} is"




@pytest.fixture(params=["sqlite", "postgres"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def new_store(backend, tmp_path, request):
    """``target(name)``: a store path (SQLite) or URL (PostgreSQL) of this test's backend; same name, same store."""
    made: dict[str, Path | str] = {}

    def target(name: str = "store") -> Path | str:
        if name not in made:
            made[name] = tmp_path / f"{name}.db" if backend == "sqlite" else request.getfixturevalue("pg_url")()
        return made[name]

    return target


@pytest.fixture
def store(new_store, embedder):
    with open_store(new_store(), embedder=embedder) as s:
        yield s


def target_of(store):
    return store.path if isinstance(store, EditStore) else store.url


def raw(target, sql: str, params=()) -> list[tuple]:
    """Run SQL (``?`` placeholders) on the store's database behind its back; returns the rows, if any."""
    if not isinstance(target, str):
        con = sqlite3.connect(target)
        try:
            rows = con.execute(sql, params).fetchall()
            con.commit()
            return rows
        finally:
            con.close()
    import psycopg

    with psycopg.connect(target, autocommit=True) as con:
        cur = con.execute(sql.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


def raw_counts(target) -> dict[str, int]:
    return {t: raw(target, f"SELECT count(*) FROM {t}")[0][0] for t in ("edits", "events", "vectors", "namespaces")}


def tamper(target, sql: str, params=()) -> None:
    raw(target, sql, params)


# ---- add / get / list / count ----------------------------------------------------

def test_add_and_get_roundtrip(store):
    e = store.add(Edit.fact("the US", PRES, "Trump", target_true="Biden", paraphrases=["Who leads {}?"],
                            statement="Trump is president.", author="alice", source="chat #4"))
    assert isinstance(e.id, int) and e.uid and e.status == "active"
    assert e.created_at and e.updated_at and e.supersedes is None
    got = store.get(e.id)
    assert got == e
    assert (got.subject, got.prompt, got.target_new, got.target_true) == ("the US", PRES, "Trump", "Biden")
    assert got.paraphrases == ("Who leads {}?",)
    assert (got.author, got.source, got.statement) == ("alice", "chat #4", "Trump is president.")
    t = store.add(Edit.text("The CEO of Acme is Jane Roe now.", namespace="acme"))
    assert t.id > e.id and store.get(t.id).namespace == "acme"
    assert store.verify().ok


def test_list_filters_source_committed_uses_and_dates(store):
    a = store.add(Edit.text("The office opens at 9.", source="Chat 42 (web)", author="alice"))
    b = store.add(Edit.text("The office closes at 6.", source="import of CRM", author="bob"))
    c = store.add(Edit.fact("Acme Corp", "The CEO of {} is", "Jane Roe", source="chat 7"))
    store.record_use([a.id, c.id])
    store.record_use([c.id])
    store.mark_committed([c.id], commit_id=1)

    def listed(**kw):
        got = [e.id for e in store.list("default", **kw)]
        assert store.count("default", **kw) == len(got)
        return got

    assert listed(source="chat") == [c.id, a.id]           # a case-insensitive substring
    assert listed(source="100%") == []                     # literal, not a wildcard
    assert listed(committed=True) == [c.id] and listed(committed=False) == [b.id, a.id]
    assert listed(min_uses=1) == [c.id, a.id] and listed(min_uses=2) == [c.id]
    created = store.get(b.id).created_at
    assert listed(since=created) == [c.id, b.id]           # inclusive
    assert listed(until=created) == [a.id]                 # exclusive
    assert listed(since="2000-01-01", until="2999-01-01", min_uses=1, source="chat") == [c.id, a.id]
    assert listed(since="2999-01-01") == []
    for bad in (dict(since="yesterday"), dict(min_uses=-1), dict(committed="yes"), dict(source=3)):
        with pytest.raises(ValidationError):
            store.list("default", **bad)


def test_list_count_filters(store):
    rows = [
        Edit.text("The discount is 100% today.", author="alice"),
        Edit.text("The discount is 1000 today.", author="bob"),
        Edit.text("The setting file_name is config.", author="alice"),
        Edit.text("The setting filexname is other.", author="carol"),
        Edit.fact("Acme Corp", "The CEO of {} is", "Jane Roe", paraphrases=["Who runs {} under_score?"],
                  author="bob"),
        Edit.text("The discount is 100% in acme.", namespace="acme", author="alice"),
    ]
    ids = [e.id for e in store.add_many(rows)]
    pending = store.add(Edit.text("A pending note about 100% things.", author="dave"), status="pending")

    def listed(*args, **kw):
        got = [e.id for e in store.list(*args, **kw)]
        assert store.count(*args, **kw) == len(got)
        return got

    # newest first, every namespace when none is given
    assert listed() == [pending.id, *reversed(ids)]
    assert listed("default") == [pending.id, *reversed(ids[:5])]
    assert listed("acme") == [ids[5]]
    assert listed("default", status="pending") == [pending.id]
    assert listed("default", status=["pending", "active"]) == [pending.id, *reversed(ids[:5])]
    assert listed(None, author="alice") == [ids[5], ids[2], ids[0]]
    # % and _ are literal characters, not LIKE wildcards
    assert listed("default", text="100%") == [pending.id, ids[0]]
    assert listed("default", text="0%") == [pending.id, ids[0]]
    assert listed(None, text="100%") == [pending.id, ids[5], ids[0]]
    assert listed("default", text="e_n") == [ids[2]]
    assert listed("default", text="under_score") == [ids[4]]          # found inside a paraphrase
    assert listed("default", text="%") == [pending.id, ids[0]]
    assert listed("default", text="_") == [ids[4], ids[2]]
    assert listed("default", text="jane roe") == [ids[4]]             # target_new, case-insensitive
    assert listed("default", text="acme corp") == [ids[4]]            # subject
    assert listed("default", text="nothing like this") == []
    assert listed("default", text="\\") == []
    # paging
    assert [e.id for e in store.list(None, limit=2)] == [pending.id, ids[5]]
    assert [e.id for e in store.list(None, limit=2, offset=2)] == [ids[4], ids[3]]
    with pytest.raises(ValidationError):
        store.list(limit=0)
    with pytest.raises(ValidationError):
        store.list(offset=-1)
    with pytest.raises(ValidationError, match="unknown status"):
        store.list(status="deleted")


def test_unknown_and_malformed_namespaces(store):
    store.add(Edit.text("Something in default."))
    for call in (lambda: store.list("nope"), lambda: store.count("nope"), lambda: store.search("hi", "nope"),
                 lambda: store.export_jsonl(io.StringIO(), "nope"), lambda: store.require_namespace("nope")):
        with pytest.raises(NotFoundError, match="namespace 'nope' does not exist"):
            call()
    with pytest.raises(ValidationError):
        store.list("Not Valid")
    with pytest.raises(ValidationError):
        store.search("hi", "../etc")
    store.create_namespace("empty-one")
    assert store.list("empty-one") == [] and store.search("hi", "empty-one") == []
    with pytest.raises(ConflictError):
        store.create_namespace("empty-one", exist_ok=False)
    assert {n["name"]: n["live"] for n in store.namespaces()} == {"default": 1, "empty-one": 0}


# ---- supersession ------------------------------------------------------------------

def test_same_subject_and_relation_supersedes_case_and_space_insensitively(store):
    old = store.add(Edit.fact("the US", PRES, "Biden"))
    new = store.add(Edit.fact("  THE   us ", "the current  President of {} is ", "Trump"))
    assert new.supersedes == old.id and new.status == "active"
    old_now = store.get(old.id)
    assert old_now.status == "superseded" and old_now.superseded_by == new.id
    assert [ev.kind for ev in store.history(old.id)] == ["add", "supersede"]
    # a different relation or subject does not supersede
    other_rel = store.add(Edit.fact("the US", "The capital of {} is", "Washington"))
    other_subj = store.add(Edit.fact("France", PRES, "Macron"))
    assert store.get(new.id).status == "active"
    assert other_rel.supersedes is None and other_subj.supersedes is None
    assert {e.id for e in store.list(status="active")} == {new.id, other_rel.id, other_subj.id}


def test_other_namespace_does_not_supersede(store):
    a = store.add(Edit.fact("the US", PRES, "Biden"))
    b = store.add(Edit.fact("the US", PRES, "Trump", namespace="tenant-b"))
    assert b.supersedes is None
    assert store.get(a.id).status == "active" and store.get(b.id).status == "active"
    assert [h.edit.id for h in store.search("Who is the US president?", "default")] == [a.id]
    assert [h.edit.id for h in store.search("Who is the US president?", "tenant-b")] == [b.id]


def test_pending_supersedes_only_on_approve(store):
    old = store.add(Edit.fact("the US", PRES, "Biden"))
    p = store.add(Edit.fact("the US", PRES, "Trump"), status="pending")
    assert p.status == "pending"
    assert store.get(old.id).status == "active"
    assert [h.edit.id for h in store.search("Who is the US president?")] == [old.id]
    assert [h.edit.id for h in store.search("Who is the US president?", statuses=("pending",))] == [p.id]
    approved = store.approve(p.id, actor="reviewer")
    assert approved.status == "active" and approved.supersedes == old.id
    assert store.get(old.id).status == "superseded" and store.get(old.id).superseded_by == p.id
    assert [h.edit.id for h in store.search("Who is the US president?")] == [p.id]
    assert [ev.kind for ev in store.history(p.id)] == ["add", "approve"]
    assert store.history(p.id)[1].actor == "reviewer"


def test_rejected_pending_supersedes_nothing(store):
    old = store.add(Edit.fact("the US", PRES, "Biden"))
    p = store.add(Edit.fact("the US", PRES, "Trump"), status="pending")
    assert store.reject(p.id, reason="not sourced").status == "rejected"
    assert store.get(old.id).status == "active"
    assert store.search("Who is the US president?", statuses=("rejected",))[0].edit.id == p.id
    assert [h.edit.id for h in store.search("Who is the US president?")] == [old.id]


def test_explicit_supersede_of_text_edits(store):
    t1 = store.add(Edit.text("The CEO of Acme is Jane Roe.", namespace="acme"))
    same = store.add(Edit.text("The CEO of Acme is Jane Roe.", namespace="acme"))
    assert same.supersedes is None and store.get(t1.id).status == "active"  # text edits have no key
    t2 = store.supersede(t1.id, Edit.text("The CEO of Acme is John Doe."), actor="ops")  # namespace comes from t1
    assert t2.namespace == "acme" and t2.supersedes == t1.id and t2.status == "active"
    assert store.get(t1.id).status == "superseded" and store.get(t1.id).superseded_by == t2.id
    assert store.get(same.id).status == "active"
    hits = store.search("Who is the CEO of Acme?", "acme", k=5)
    assert t1.id not in [h.edit.id for h in hits] and t2.id in [h.edit.id for h in hits]
    sup = store.search("Who is the CEO of Acme?", "acme", statuses=("superseded",))
    assert [h.edit.id for h in sup] == [t1.id]
    with pytest.raises(ConflictError):
        store.supersede(t1.id, Edit.text("again"))
    with pytest.raises(NotFoundError):
        store.supersede(9999, Edit.text("again"))
    assert store.verify().ok


def test_superseded_hidden_from_default_search(store):
    old = store.add(Edit.fact("Acme Corp", "The CEO of {} is", "Jane Roe"))
    new = store.add(Edit.fact("Acme Corp", "The CEO of {} is", "John Doe"))
    assert [h.edit.id for h in store.search("Who runs Acme Corp?", k=10)] == [new.id]
    assert [h.edit.id for h in store.search("Who runs Acme Corp?", statuses=("superseded",))] == [old.id]
    both = store.search("Who runs Acme Corp?", statuses=("active", "superseded"), k=10)
    assert {h.edit.id for h in both} == {old.id, new.id}


# ---- lifecycle errors --------------------------------------------------------------

def test_state_errors_and_unknown_ids(store):
    active = store.add(Edit.text("An active edit."))
    pending = store.add(Edit.text("A pending edit."), status="pending")
    with pytest.raises(ConflictError, match="only pending"):
        store.approve(active.id)
    with pytest.raises(ConflictError, match="only pending"):
        store.reject(active.id)
    store.reject(pending.id)
    with pytest.raises(ConflictError):
        store.approve(pending.id)
    with pytest.raises(ConflictError):
        store.reject(pending.id)
    store.forget(active.id)
    with pytest.raises(ConflictError, match="already forgotten"):
        store.forget(active.id)
    with pytest.raises(ConflictError):
        store.approve(active.id)
    with pytest.raises(ConflictError):
        store.supersede(active.id, Edit.text("x"))
    for call in (store.get, store.approve, store.reject, store.forget, store.history):
        with pytest.raises(NotFoundError, match="no edit with id 424242"):
            call(424242)
    for bad in ("1", 1.0, True, None):
        with pytest.raises(ValidationError):
            store.get(bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        store.search("   ")
    with pytest.raises(ValidationError):
        store.search("x", k=0)


def test_history_order_and_kinds(store):
    base = store.add(Edit.fact("the US", PRES, "Biden"), actor="importer")
    p = store.add(Edit.fact("the US", PRES, "Trump", author="alice"), status="pending")
    store.approve(p.id, actor="bob")
    store.record_use([p.id], question="Who is president?", scores=[0.9], route="ike")
    store.forget(p.id, actor="carol", reason="gdpr")
    hist = store.history(p.id)
    assert [e.kind for e in hist] == ["add", "approve", "use", "forget"]
    # the actor is who wrote; the author is content and stays out of the (unerasable) log
    assert [e.actor for e in hist] == [None, "bob", None, "carol"]
    assert "alice" not in json.dumps([e.to_dict() for e in store.events()])
    seqs = [e.seq for e in hist]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert hist[0].payload["status"] == "pending" and "content_hash" in hist[0].payload
    assert hist[-1].payload.get("reason_given") is True and "gdpr" not in json.dumps(hist[-1].payload)
    assert all(e.edit_id == p.id and e.namespace == "default" for e in hist)
    base_hist = store.history(base.id)
    assert [e.kind for e in base_hist] == ["add", "supersede"] and base_hist[0].actor == "importer"
    assert base_hist[1].payload == {"by": p.id}
    # the whole log chains from the genesis hash
    events = store.events()
    assert events[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:]))
    assert store.verify().ok


# ---- verify and tampering -------------------------------------------------------------

def _populated(path, embedder):
    with open_store(path, embedder=embedder) as s:
        a = s.add(Edit.fact("the US", PRES, "Biden"))
        b = s.add(Edit.fact("the US", PRES, "Trump", paraphrases=["Who leads {}?"]))
        c = s.add(Edit.text("The CEO of Acme is Jane Roe.", namespace="acme"), status="pending")
        d = s.add(Edit.text("Something to forget."))
        s.forget(d.id)
        rep = s.verify()
        assert rep.ok, rep.problems
        assert rep.events == len(s.events()) and rep.edits == 4
        return {"a": a.id, "b": b.id, "c": c.id, "d": d.id, "events": rep.events}


def _verify(path, embedder):
    with open_store(path, embedder=embedder) as s:
        return s.verify()


def test_verify_detects_altered_event_payload(new_store, embedder):
    path = new_store("t")
    info = _populated(path, embedder)
    seq = 3
    tamper(path, "UPDATE events SET payload = ? WHERE seq = ?", ('{"action":"create","forged":true}', seq))
    rep = _verify(path, embedder)
    assert not rep.ok
    assert any(p.startswith(f"event {seq}:") and "altered" in p for p in rep.problems), rep.problems
    assert rep.events == info["events"]


def test_verify_detects_altered_event_even_if_its_hash_is_recomputed(new_store, embedder):
    from memedit.store.chain import event_hash

    path = new_store("t")
    _populated(path, embedder)
    row = raw(path, "SELECT seq, ts, namespace, edit_id, kind, actor, prev_hash FROM events WHERE seq = 2")[0]
    forged = '{"action":"create"}'
    new_hash = event_hash(row[6], row[0], row[1], row[2], row[3], row[4], "mallory", forged)
    raw(path, "UPDATE events SET actor = 'mallory', payload = ?, hash = ? WHERE seq = 2", (forged, new_hash))
    rep = _verify(path, embedder)
    assert not rep.ok
    assert any(p.startswith("event 3:") and "prev_hash" in p for p in rep.problems), rep.problems


def test_verify_detects_deleted_newest_event(new_store, embedder):
    path = new_store("t")
    info = _populated(path, embedder)
    tamper(path, "DELETE FROM events WHERE seq = (SELECT max(seq) FROM events)")
    rep = _verify(path, embedder)
    assert not rep.ok
    assert rep.events == info["events"] - 1
    assert any("newest events were removed" in p for p in rep.problems), rep.problems


def test_verify_detects_deleted_middle_event(new_store, embedder):
    path = new_store("t")
    _populated(path, embedder)
    tamper(path, "DELETE FROM events WHERE seq = 4")
    rep = _verify(path, embedder)
    assert not rep.ok
    assert any(p.startswith("event 5:") for p in rep.problems), rep.problems


def test_verify_detects_altered_edit_content(new_store, embedder):
    path = new_store("t")
    info = _populated(path, embedder)
    tamper(path, "UPDATE edits SET target_new = 'Obama' WHERE id = ?", (info["b"],))
    rep = _verify(path, embedder)
    assert not rep.ok
    assert any(p == f"edit {info['b']}: content was altered after it was stored" for p in rep.problems), rep.problems


def test_verify_detects_content_left_in_a_forgotten_edit(new_store, embedder):
    path = new_store("t")
    info = _populated(path, embedder)
    tamper(path, "UPDATE edits SET statement = 'Something to forget.' WHERE id = ?", (info["d"],))
    rep = _verify(path, embedder)
    assert not rep.ok
    assert any(p.startswith(f"edit {info['d']}:") and "forgotten" in p for p in rep.problems), rep.problems


# ---- export / import -------------------------------------------------------------------

def _rich_store(s: EditStore) -> dict[str, int]:
    old = s.add(Edit.fact("the US", PRES, "Biden", author="alice"))
    new = s.add(Edit.fact("the US", PRES, "Trump", target_true="Biden", paraphrases=["Who leads {}?"],
                          statement="Trump leads the US.", source="chat\nline 2", author="bob"))
    pend = s.add(Edit.fact("the US", PRES, "Obama"), status="pending")
    rej = s.add(Edit.text("A rejected idea."), status="pending")
    s.reject(rej.id)
    gone = s.add(Edit.text("A secret that must be forgotten.", namespace="acme"))
    kept = s.add(Edit.text("Caf\u00e9 \u2014 the CEO of Acme is Jane Roe \U0001F600.", namespace="acme"))
    s.record_use([new.id], question="who?", scores=[0.8], route="ike")
    s.forget(gone.id)
    return {"old": old.id, "new": new.id, "pend": pend.id, "rej": rej.id, "gone": gone.id, "kept": kept.id}


def test_export_import_export_is_byte_identical(tmp_path, new_store, embedder):
    with open_store(new_store("a"), embedder=embedder) as a:
        ids = _rich_store(a)
        first = tmp_path / "first.jsonl"
        assert a.export_jsonl(first) == 6
    text = first.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert json.loads(lines[0]) == {"format": "memedit-edits", "version": 1}
    records = [json.loads(line) for line in lines[1:]]
    assert [r["id"] for r in records] == sorted(ids.values())
    tomb = next(r for r in records if r["id"] == ids["gone"])
    assert tomb["status"] == "forgotten" and tomb["statement"] is None and "secret" not in text
    assert next(r for r in records if r["id"] == ids["old"])["superseded_by"] == ids["new"]
    assert next(r for r in records if r["id"] == ids["pend"])["status"] == "pending"

    with open_store(new_store("b"), embedder=embedder) as b:
        result = b.import_jsonl(first, actor="migrator")
        assert result == {"imported": 6, "skipped": 0, "remapped": False}
        buf = io.StringIO()
        b.export_jsonl(buf)
        assert buf.getvalue() == text
        rep = b.verify()
        assert rep.ok, rep.problems
        assert b.check_index()["consistent"]
        assert [h.edit.id for h in b.search("Who leads the US?", k=5)] == [ids["new"]]
        assert [h.edit.id for h in b.search("Who is the CEO of Acme?", "acme", k=5)] == [ids["kept"]]
        assert {n["name"] for n in b.namespaces()} == {"default", "acme"}
        assert all(ev.kind == "import" and ev.actor == "migrator" for ev in b.events() if ev.edit_id)
        # a namespace-filtered export holds only that namespace
        only = io.StringIO()
        assert b.export_jsonl(only, "acme") == 2

    # importing the same file again: refused, nothing written
    with open_store(new_store("b"), embedder=embedder) as b:
        before = raw_counts(target_of(b))
        with pytest.raises(ValidationError, match="already exist"):
            b.import_jsonl(first)
        assert raw_counts(target_of(b)) == before
        assert b.import_jsonl(first, skip_existing=True) == {"imported": 0, "skipped": 6, "remapped": False}
        assert raw_counts(target_of(b)) == before
        assert b.verify().ok


def test_import_into_non_empty_store_remaps_ids_and_links(new_store, embedder):
    with open_store(new_store("a"), embedder=embedder) as a:
        ids = _rich_store(a)
        src = io.StringIO()
        a.export_jsonl(src)
    by_old = {r["id"]: r for r in map(json.loads, src.getvalue().splitlines()[1:])}

    with open_store(new_store("c"), embedder=embedder) as c:
        mine = c.add_many([Edit.text(f"Unrelated local edit {i}.") for i in range(3)])
        result = c.import_jsonl(io.StringIO(src.getvalue()))
        assert result["imported"] == 6 and result["remapped"] is True
        by_uid = {e.uid: e for e in c.list(None, limit=100)}
        assert len(by_uid) == 9
        new_id = {old: by_uid[r["uid"]].id for old, r in by_old.items()}
        assert set(new_id.values()).isdisjoint(e.id for e in mine)
        old_e, new_e, pend_e = (by_uid[by_old[ids[k]]["uid"]] for k in ("old", "new", "pend"))
        assert old_e.status == "superseded" and old_e.superseded_by == new_e.id
        assert new_e.supersedes == old_e.id
        assert pend_e.supersedes == new_id[by_old[ids["pend"]]["supersedes"]]
        assert pend_e.status == "pending"
        for e in mine:
            assert c.get(e.id).status == "active" and c.get(e.id).supersedes is None
        rep = c.verify()
        assert rep.ok, rep.problems
        assert c.check_index()["consistent"]
        assert c.search("Who leads the US?", k=1)[0].edit.id == new_e.id


@pytest.mark.parametrize(
    "line,needle",
    [
        ('{"statement": "ok"', "not valid JSON"),
        ('{"subject": "x", "prompt": "no hole", "target_new": "y"}', "prompt"),
        ('{"statement": "ok", "colour": "red"}', "unknown edit field"),
        ('["a", "list"]', "JSON object"),
        ('{"statement": "ok", "id": -4}', "positive integer"),
        ('{"status": "forgotten", "statement": "still here"}', "must not carry content"),
        ('{"statement": "ok", "namespace": "Bad NS"}', "namespace"),
        ('{"statement": "bad \\u0000 nul"}', "control character"),
    ],
)
def test_malformed_line_names_the_line_and_writes_nothing(new_store, embedder, line, needle):
    good = [json.dumps({"statement": f"Fine statement {i}."}) for i in range(4)]
    body = "\n".join(['{"format":"memedit-edits","version":1}', good[0], good[1], line, good[2], good[3]]) + "\n"
    with open_store(new_store("m"), embedder=embedder) as s:
        s.add(Edit.text("Already here."))
        before = raw_counts(target_of(s))
        with pytest.raises(ValidationError, match=rf"line 4: .*{needle}"):
            s.import_jsonl(io.StringIO(body))
        assert raw_counts(target_of(s)) == before
        assert s.verify().ok


def test_import_rejects_unknown_version_and_missing_file(store, tmp_path):
    with pytest.raises(ValidationError, match="line 1: unsupported export version"):
        store.import_jsonl(io.StringIO('{"format":"memedit-edits","version":99}\n{"statement":"x"}\n'))
    with pytest.raises(ValidationError, match="no such file"):
        store.import_jsonl(tmp_path / "missing.jsonl")
    assert store.count() == 0


# ---- search -----------------------------------------------------------------------------

DISTRACTORS = [
    Edit.text("The CEO of Acme Corp is Jane Roe now."),
    Edit.fact("France", "The capital of {} is", "Lyon"),
    Edit.text("The most handsome person in the world is Hung-yi Lee."),
    Edit.fact("Lionel Messi", "{} plays football for", "Real Madrid"),
    Edit.fact("Canada", "The prime minister of {} is", "Mark Carney"),
]


def test_search_matched_text_from_paraphrase_and_object_side(store):
    store.add_many(DISTRACTORS)
    pres = store.add(Edit.fact("the US", PRES, "Trump", paraphrases=["The person who leads {} right now is"]))
    hits = store.search("the person who leads the US right now", k=3)
    assert hits[0].edit.id == pres.id
    assert hits[0].matched_text == "The person who leads the US right now is Trump"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    hits = store.search("Who is the US president?", k=3)
    assert hits[0].edit.id == pres.id and hits[0].matched_text == "The current president of the US is Trump"
    # object side: the answer names the subject of the question
    hits = store.search("Who is Trump?", k=3)
    assert hits[0].edit.id == pres.id
    assert hits[0].score > hits[1].score + 0.2
    assert hits[0].to_dict()["edit"]["id"] == pres.id
    # min_score filters, k limits
    assert len(store.search("Who is Trump?", k=2)) == 2
    assert [h.edit.id for h in store.search("Who is Trump?", k=5, min_score=0.5)] == [pres.id]


def test_search_never_crosses_namespaces_and_forget_removes(store):
    a = store.add(Edit.text("The CEO of Acme Corp is Jane Roe now.", namespace="tenant-a"))
    b = store.add(Edit.text("The CEO of Acme Corp is Jane Roe now.", namespace="tenant-b"))
    store.add(Edit.text("Bananas are yellow."))
    assert [h.edit.id for h in store.search("Who runs Acme?", "tenant-a", k=10)] == [a.id]
    assert [h.edit.id for h in store.search("Who runs Acme?", "tenant-b", k=10)] == [b.id]
    assert all(h.edit.namespace == "default" for h in store.search("Who runs Acme?", k=10))
    store.forget(a.id)
    assert store.search("Who runs Acme?", "tenant-a", k=10) == []
    assert store.search("Who runs Acme?", "tenant-a", statuses=("forgotten",), k=10) == []
    assert [h.edit.id for h in store.search("Who runs Acme?", "tenant-b", k=10)] == [b.id]
    row = raw(target_of(store), "SELECT statement, salt, status FROM edits WHERE id = ?", (a.id,))[0]
    nvec = raw(target_of(store), "SELECT count(*) FROM vectors WHERE edit_id = ?", (a.id,))[0][0]
    assert tuple(row) == (None, None, "forgotten") and nvec == 0
    assert store.check_index()["consistent"]
    tomb = store.get(a.id)
    assert tomb.status == "forgotten" and tomb.statement is None


def test_index_survives_reopen_and_rebuild(tmp_path, embedder):  # SQLite only: the FAISS file
    path = tmp_path / "r.db"
    with EditStore(path, embedder=embedder) as s:
        e = s.add(Edit.fact("the US", PRES, "Trump"))
        s.add_many(DISTRACTORS[:2])
        assert s.search("Who is the US president?", k=1)[0].edit.id == e.id  # loads the index
    assert path.with_suffix(".faiss").exists()  # written on close
    with EditStore(path, embedder=embedder) as s:
        assert s.search("Who is the US president?", k=1)[0].edit.id == e.id
        assert not s.index_rebuilt
        assert s.rebuild_index() == 3
        assert s.search("Who is the US president?", k=1)[0].edit.id == e.id
    # a corrupted index file is detected by checksum and rebuilt from SQLite
    path.with_suffix(".faiss").write_bytes(b"garbage")
    with EditStore(path, embedder=embedder) as s:
        assert s.search("Who is the US president?", k=1)[0].edit.id == e.id
        assert s.index_rebuilt


# ---- gaps found by these tests, now fixed ----------------------------------------------------------

@pytest.mark.parametrize("sql", ["UPDATE edits SET namespace = 'tenant-b' WHERE id = ?",
                                 "UPDATE edits SET status = 'active' WHERE id = ?"])
def test_verify_detects_namespace_or_status_changed_outside_the_log(new_store, embedder, sql):
    path = new_store("t")
    with open_store(path, embedder=embedder) as s:
        s.create_namespace("tenant-b")
        e = s.add(Edit.text("A rejected secret of tenant A.", namespace="tenant-a"), status="pending")
        s.reject(e.id)
    tamper(path, sql, (e.id,))  # moves the edit to another tenant / resurrects a rejected edit
    assert not _verify(path, embedder).ok


def test_supersedes_names_the_active_predecessor(store):
    active = store.add(Edit.fact("the US", PRES, "Biden"))
    pending = store.add(Edit.fact("the US", PRES, "Obama"), status="pending")
    new = store.add(Edit.fact("the US", PRES, "Trump"))
    assert store.get(active.id).superseded_by == new.id and store.get(pending.id).superseded_by == new.id
    assert new.supersedes == active.id


def test_search_rejects_unencodable_query(store):
    store.add(Edit.text("Something."))
    with pytest.raises(ValidationError):
        store.search("who \udcff is")


def test_forget_leaves_no_rejection_reason_in_the_log(store):
    e = store.add(Edit.text("Alice's phone number is 555-0100."), status="pending")
    store.reject(e.id, reason="Alice's phone number is 555-0100 is private")
    store.forget(e.id)
    assert "555-0100" not in json.dumps([ev.to_dict() for ev in store.events()])


def test_forget_erases_rejection_reasons_kept_as_notes(store):
    e = store.add(Edit.text("Bob's locker code is 4242."), status="pending")
    store.reject(e.id, reason="Bob's locker code 4242 is private", actor="mod")
    assert [n["text"] for n in store.notes(e.id)] == ["Bob's locker code 4242 is private"]
    assert "4242" not in json.dumps([ev.to_dict() for ev in store.events()])
    store.forget(e.id)
    assert store.notes(e.id) == []
    assert store.verify().ok


def test_merge_import_supersedes_the_stores_own_active_edit(new_store, embedder):
    with open_store(new_store("a"), embedder=embedder) as a:
        a.add(Edit.fact("the US", PRES, "Trump"))
        exported = io.StringIO()
        a.export_jsonl(exported)
    with open_store(new_store("b"), embedder=embedder) as b:
        old = b.add(Edit.fact("the US", PRES, "Biden"))
        other = b.add(Edit.fact("France", "The capital of {} is", "Lyon"))
        result = b.import_jsonl(io.StringIO(exported.getvalue()))
        assert result["remapped"]
        active = b.list("default", status="active")
        assert sorted(e.target_new for e in active) == ["Lyon", "Trump"]
        assert b.get(old.id).status == "superseded" and b.get(other.id).status == "active"
        assert b.verify().ok


@pytest.mark.parametrize("bad", ["\u200e", "\u200f", "\u061c", "\ufeff"])
def test_invisible_direction_marks_are_refused(bad):
    with pytest.raises(ValidationError, match="control character"):
        Edit.text(f"The CEO of Acme is{bad} Jane Roe.")


def test_tab_refused_in_single_line_fields_but_allowed_in_statements():
    with pytest.raises(ValidationError):
        Edit.fact("the\tUS", PRES, "Trump")
    assert "\t" in Edit.text("Columns:\tA\tB").statement


@pytest.mark.parametrize("field,value", [("committed", "yes"), ("usage_count", -3), ("usage_count", True),
                                         ("id", 0), ("supersedes", "2"), ("created_at", 5)])
def test_bookkeeping_fields_are_type_checked(field, value):
    with pytest.raises(ValidationError, match=field):
        Edit.from_dict({"statement": "Fine.", field: value})
