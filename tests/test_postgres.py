"""The PostgreSQL store shared by several replica processes, against a real server (pgserver: PostgreSQL + pgvector).

Replicas are separate processes (``tests/store_worker.py`` with a URL) using
the real packaged embedder: concurrent writers and readers lose nothing,
racing corrections of one fact end with exactly one active, no search that
starts after a forget committed returns the forgotten edit, a replica killed
with SIGKILL loses nothing it acknowledged, and writers ride through a server
restart. Plus the copy between backends (exact round trip), the CLI and the
Editor on a URL, and search in a small namespace inside a bigger store.
"""
from __future__ import annotations

import io
import json
import random
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from memedit import Edit, EditStore
from memedit.errors import StoreError
from memedit.store import PgEditStore, copy_store, open_store

from workers import check_acked, finish as _finish, read_acks as _read_acks, spawn as _spawn, wait_ready as _wait_ready
PRES = "The current president of {} is"




@pytest.fixture
def url(pg_url) -> str:
    return pg_url()


def _check_store(url: str, embedder, added: dict[int, str], forgot: set[int], unacked_forgets: int = 0) -> None:
    """Invariants: chain intact and linear, no partial edit, every acknowledged change present."""
    import psycopg

    with psycopg.connect(url) as raw:
        one = lambda sql: raw.execute(sql).fetchone()[0]  # noqa: E731
        assert one("SELECT count(*) FROM edits e WHERE status != 'forgotten' AND NOT EXISTS "
                   "(SELECT 1 FROM vectors v WHERE v.edit_id = e.id)") == 0
        assert one("SELECT count(*) FROM vectors v WHERE NOT EXISTS (SELECT 1 FROM edits e WHERE e.id = v.edit_id "
                   "AND e.status != 'forgotten')") == 0
        assert one("SELECT count(*) FROM edits e WHERE NOT EXISTS (SELECT 1 FROM events v WHERE v.edit_id = e.id "
                   "AND v.kind IN ('add', 'import'))") == 0
        n, lo, hi = raw.execute("SELECT count(*), min(seq), max(seq) FROM events").fetchone()
        assert (lo, hi) == (1, n), "the event log is not one gap-free sequence"
    with PgEditStore(url, embedder=embedder) as store:
        report = store.verify()
        assert report.ok, report.problems
        assert store.check_index()["consistent"]
        check_acked(store, added, forgot, unacked_forgets)


# ---- replicas -------------------------------------------------------------------------------------

def test_replicas_write_and_read_concurrently(url, tmp_path, embedder):
    PgEditStore(url, embedder=embedder).close()  # schema first, so the workers race on edits, not on set-up
    acks = [tmp_path / f"acks{i}.txt" for i in range(2)]
    writers = [_spawn("writer", url, str(a), f"w{i}", "15") for i, a in enumerate(acks)]
    readers = [_spawn("reader", url, "6")]
    for p in writers + readers:
        _wait_ready(p)
    for p in writers + readers:
        out, err = _finish(p)
        assert p.returncode == 0, err
        assert '"done": true' in out
    added, forgot = _read_acks(acks)
    assert len(added) == 28  # the seeded steps of w0 and w1 add 13 + 15 edits (batches of 3, some forgets)
    _check_store(url, embedder, added, forgot)


def _check_one_active(url: str, embedder, first_id: int, ids: list[int]) -> None:
    with PgEditStore(url, embedder=embedder) as store:
        edits = [store.get(i) for i in [first_id, *ids]]
        active = [e for e in edits if e.status == "active"]
        assert len(active) == 1, [(e.id, e.status) for e in edits]
        assert sorted(e.status for e in edits).count("superseded") == len(ids)
        # the one left active is the last correction to commit; each superseded edit names its successor
        add_seq = {ev.edit_id: ev.seq for ev in store.events(limit=10_000) if ev.kind == "add"}
        assert active[0].id == max(add_seq, key=add_seq.get)
        for e in edits:
            kinds = [ev.kind for ev in store.history(e.id)]
            assert kinds[0] == "add" and (e.status == "active" or kinds[-1] == "supersede")
        assert [h.edit.id for h in store.search("Who is the CEO of Acme Corp?", k=5)] == [active[0].id]
        assert store.verify().ok


def test_racing_corrections_of_one_fact_end_with_exactly_one_active(url, embedder):
    """Eight replicas (each its own connection: a separate database session) correct one fact at the same moment."""
    with PgEditStore(url, embedder=embedder) as store:
        first = store.add(Edit.fact("Acme Corp", "The CEO of {} is", "Jane Roe"))
    replicas = [PgEditStore(url, embedder=embedder) for _ in range(8)]
    barrier = threading.Barrier(len(replicas))
    ids: list[int] = []

    def correct(i: int) -> None:
        edit = Edit.fact("Acme Corp", "The CEO of {} is", f"Person {i}")
        barrier.wait()
        ids.append(replicas[i].add(edit).id)  # type: ignore[arg-type]

    threads = [threading.Thread(target=correct, args=(i,)) for i in range(len(replicas))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for r in replicas:
        r.close()
    assert len(ids) == len(replicas)
    _check_one_active(url, embedder, first.id, ids)


@pytest.mark.slow
def test_racing_corrections_from_replica_processes(url, tmp_path, embedder):
    with PgEditStore(url, embedder=embedder) as store:
        first = store.add(Edit.fact("Acme Corp", "The CEO of {} is", "Jane Roe"))
    go = tmp_path / "go"
    racers = [_spawn("racer", url, f"Person {i}", str(go)) for i in range(4)]
    for p in racers:
        _wait_ready(p)
    go.touch()
    ids = []
    for p in racers:
        out, err = _finish(p)
        assert p.returncode == 0, err
        ids.append(next(json.loads(line)["id"] for line in out.splitlines() if '"done"' in line))
    _check_one_active(url, embedder, first.id, ids)


def _forget_while_watched(url: str, embedder, start_watchers) -> list[dict]:
    """Forget six secrets one by one while replicas search for them; returns every search's (start time, ids)."""
    with PgEditStore(url, embedder=embedder) as store:
        secrets_ = store.add_many([Edit.text(f"The secret code of vault {i} is {1000 + i}.") for i in range(6)])
        store.add(Edit.text("Bananas are yellow."))
        finish = start_watchers()
        time.sleep(0.5)
        forgotten_at: dict[int, float] = {}
        for e in secrets_:
            store.forget(e.id)
            forgotten_at[e.id] = time.monotonic()  # after COMMIT returned (CLOCK_MONOTONIC is system-wide)
            time.sleep(0.3)
        records = finish()
    seen_before = set()
    for rec in records:
        for edit_id, t in forgotten_at.items():
            if rec["t0"] > t:
                assert edit_id not in rec["ids"], f"a search started {rec['t0'] - t:.4f}s after edit " \
                                                  f"{edit_id} was forgotten still returned it"
            elif edit_id in rec["ids"]:
                seen_before.add(edit_id)
    assert len(records) > 20
    assert seen_before == set(forgotten_at), "the replicas should have seen each secret before it was forgotten"
    return records


def test_no_replica_answers_from_an_edit_once_its_forget_committed(url, embedder):
    """Two replicas (own connections) search nonstop while a third forgets; start times are taken before each search."""
    records: list[dict] = []
    stop = threading.Event()

    def start():
        replicas = [PgEditStore(url, embedder=embedder) for _ in range(2)]
        qvec = embedder.encode(["What is the secret code of the vault?"])[0]

        def watch(r: PgEditStore) -> None:
            while not stop.is_set():
                t0 = time.monotonic()
                records.append({"t0": t0, "ids": [h.edit.id for h in r.search_vector(qvec, k=50)]})

        threads = [threading.Thread(target=watch, args=(r,)) for r in replicas]
        for t in threads:
            t.start()

        def finish():
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(60)
            for r in replicas:
                r.close()
            return records

        return finish

    _forget_while_watched(url, embedder, start)


@pytest.mark.slow
def test_no_replica_process_answers_from_a_forgotten_edit(url, tmp_path, embedder):
    outs = [tmp_path / f"watch{i}.jsonl" for i in range(2)]

    def start():
        watchers = [_spawn("watcher", url, "5", str(o)) for o in outs]
        for p in watchers:
            _wait_ready(p)

        def finish():
            for p in watchers:
                _, err = _finish(p)
                assert p.returncode == 0, err
            return [json.loads(line) for o in outs for line in o.read_text().splitlines()]

        return finish

    _forget_while_watched(url, embedder, start)


def _kill_cycles(url: str, tmp_path: Path, embedder, cycles: int) -> None:
    PgEditStore(url, embedder=embedder).close()
    ack = tmp_path / "acks.txt"
    rng = random.Random(7)
    for cycle in range(cycles):
        proc = _spawn("writer", url, str(ack), f"k{cycle}")
        _wait_ready(proc)
        time.sleep(rng.uniform(0.3, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        added, forgot = _read_acks([ack])
        # the killed replica's open transaction was rolled back and its write lock released: others go on writing
        with PgEditStore(url, embedder=embedder) as other:
            other.add(Edit.text(f"Written after kill {cycle}."))
        _check_store(url, embedder, added, forgot, unacked_forgets=cycle + 1)
    assert len(_read_acks([ack])[0]) > cycles


def test_replica_killed_mid_transaction_loses_nothing_acknowledged(url, tmp_path, embedder):
    _kill_cycles(url, tmp_path, embedder, cycles=2)


@pytest.mark.slow
def test_replica_killed_many_times(url, tmp_path, embedder):
    _kill_cycles(url, tmp_path, embedder, cycles=8)


def test_writers_ride_through_a_server_restart(tmp_path, embedder, pg_server):  # pg_server: PostgreSQL is here
    import pgserver
    from pgserver._commands import pg_ctl
    from pgserver.utils import PostmasterInfo

    base = Path(tempfile.mkdtemp(prefix="memedit-pg-restart-"))  # outside pytest's root: see conftest.pg_server
    try:
        server = pgserver.get_server(base / "data", cleanup_mode="stop")
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"could not start a second PostgreSQL server: {exc}", pytrace=False)
    try:
        url = server.get_uri()
        PgEditStore(url, embedder=embedder).close()
        acks = [tmp_path / f"acks{i}.txt" for i in range(1)]
        # enough work that the writer is still writing when the server goes down, even on a quiet machine
        writers = [_spawn("writer", url, str(a), f"r{i}", "300") for i, a in enumerate(acks)]
        reader = _spawn("reader", url, "8")
        for p in [*writers, reader]:
            _wait_ready(p)
        deadline = time.time() + 60
        while not _read_acks(acks)[0] and time.time() < deadline:  # restart once writing is under way
            time.sleep(0.05)
        added_before, _ = _read_acks(acks)
        assert added_before, "the writer acknowledged nothing before the restart"
        pg_ctl(["-w", "-m", "fast", "-l", str(server.log), "restart"], pgdata=server.pgdata, user=server.system_user)
        server._postmaster_info = PostmasterInfo.read_from_pgdata(server.pgdata)  # so cleanup stops the new one
        for p in [*writers, reader]:
            out, err = _finish(p)
            assert p.returncode == 0, err
            assert '"done": true' in out
        added, forgot = _read_acks(acks)
        assert len(added) > len(added_before), "the writers should have gone on writing after the restart"
        _check_store(url, embedder, added, forgot)
    finally:
        from conftest import stop_pg_server

        stop_pg_server(server)
        shutil.rmtree(base, ignore_errors=True)


# ---- migration and the layers above the store ---------------------------------------------------------

def _rich(s) -> None:
    s.add(Edit.fact("the US", PRES, "Biden", author="alice"))
    new = s.add(Edit.fact("the US", PRES, "Trump", target_true="Biden", paraphrases=["Who leads {}?"],
                          statement="Trump leads the US.", source="chat\nline 2", author="bob"))
    s.add(Edit.fact("the US", PRES, "Obama"), status="pending")
    rej = s.add(Edit.text("A rejected idea."), status="pending")
    s.reject(rej.id, reason="unsourced")
    gone = s.add(Edit.text("A secret that must be forgotten.", namespace="acme"))
    s.add(Edit.text("Caf\u00e9 \u2014 the CEO of Acme is Jane Roe \U0001F600.", namespace="acme"))
    s.record_use([new.id], question="who?", scores=[0.8], route="ike")
    s.forget(gone.id)


def _export(target, embedder) -> str:
    with open_store(target, embedder=embedder, create=False) as s:
        buf = io.StringIO()
        s.export_jsonl(buf)
        assert s.verify().ok
        return buf.getvalue()


def _audit(target, embedder) -> dict:
    """Everything copy-store promises beyond the export: log, usage, notes, ledger rows and delta bytes."""
    with open_store(target, embedder=embedder, create=False) as s:
        q = lambda sql: [tuple(r.values()) for r in s.db.query(sql)]  # noqa: E731
        commits = q("SELECT id, status, file, file_sha256, edit_ids, base_hash FROM commits ORDER BY id")
        return {"events": q("SELECT seq, ts, namespace, edit_id, kind, actor, payload, prev_hash, hash FROM events "
                            "ORDER BY seq"),
                "usage": q("SELECT id, edit_id, ts, question, score, route FROM usage ORDER BY id"),
                "notes": q("SELECT id, edit_id, ts, kind, actor, text FROM notes ORDER BY id"),
                "namespaces": q("SELECT name, created_at, policy FROM namespaces ORDER BY name"),
                "commits": commits, "blobs": [s.delta_blobs.get(c[2]) for c in commits if c[2]],
                "head": s._meta("head_hash"), "ledger_gen": s._meta("ledger_gen")}


def _commit_one(store, tmp_path):
    """A real ROME commit on a tiny Llama into ``store``'s ledger; returns (tokenizer, edited weights)."""
    import torch
    from test_commit import ROME, TINY_GATES
    from test_weight_methods import build_tokenizer, make_model, tiny_stats

    from memedit.commit import CommitLedger

    torch.set_num_threads(1)
    tok = build_tokenizer()
    stats = tiny_stats(make_model("llama", len(tok)), tok, [1], tmp_path / "stats")
    a = store.add(Edit.fact("Alice Smith", "The mother tongue of {} is", "German", target_true="French"))
    model = make_model("llama", len(tok))
    report = CommitLedger(store, model, tok, model_name="tiny", gates=TINY_GATES).commit([a], method="rome",
                                                                                       hparams=ROME, stats=stats[1])
    assert report.ok, report.refused
    return tok, {n: p.detach().clone() for n, p in model.named_parameters()}


def test_copy_store_sqlite_to_postgres_and_back_is_exact(url, tmp_path, embedder):
    """Edits, the hash-chained log, usage, notes and the weight ledger (rows and delta bytes) survive both ways."""
    import torch
    from test_weight_methods import make_model
    from typer.testing import CliRunner

    from memedit.cli import app
    from memedit.commit import CommitLedger

    src = tmp_path / "src.db"
    with EditStore(src, embedder=embedder) as s:
        _rich(s)
        tok, edited = _commit_one(s, tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["copy-store", str(src), url, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["imported"] == 7 and out["commits"] == 1 and out["delta_blobs"] == 1 and out["events"] > 7
    back = tmp_path / "back.db"
    copy_store(url, back, embedder=embedder, actor="migrator")
    first, on_pg, again = _export(src, embedder), _export(url, embedder), _export(back, embedder)
    assert first == on_pg == again
    assert first.count("\n") == 8
    assert _audit(src, embedder) == _audit(url, embedder) == _audit(back, embedder)
    with open_store(url, embedder=embedder) as pg, open_store(back, embedder=embedder) as sq:
        assert isinstance(pg, PgEditStore) and isinstance(sq, EditStore)
        for s in (pg, sq):
            assert [h.edit.target_new for h in s.search("Who leads the US?", k=3)][:1] == ["Trump"]
            # a fresh model attached to the copy replays the same weights, bit for bit
            model = make_model("llama", len(tok))
            CommitLedger(s, model, tok, model_name="tiny")
            assert all(torch.equal(p, edited[n]) for n, p in model.named_parameters())
        # the id sequences moved past the copied ids: new rows do not collide
        newest = max(e.id for e in pg.list(None))
        fresh = pg.add(Edit.text("After the copy."))
        assert fresh.id > newest
        pg.record_use([fresh.id], question="again?")
        assert pg.verify().ok
    # copying into a store that already has edits is refused (exit 4: conflict), nothing written
    result = runner.invoke(app, ["copy-store", str(src), url, "--json"])
    assert result.exit_code == 4 and "already holds" in result.output


def test_copy_store_is_all_or_nothing_and_edits_only_on_request(url, tmp_path, embedder):
    src = tmp_path / "src.db"
    with EditStore(src, embedder=embedder) as s:
        _rich(s)
        _commit_one(s, tmp_path)
        name = next(s.db.query("SELECT file FROM commits"))["file"]
    (s.ledger_dir / name).write_bytes(b"")  # a lost delta file: the copy must fail and leave the destination empty
    dst = tmp_path / "dst.db"
    with pytest.raises(StoreError, match="missing|damaged|checksum"):
        copy_store(src, dst, embedder=embedder)
    with EditStore(dst, embedder=embedder) as d:
        assert d.count(None) == 0 and not list(d.db.query("SELECT * FROM events WHERE edit_id IS NOT NULL"))
    # --no-history: the edits alone, a log of their import, and no edit claiming to live in weights it has no deltas for
    result = copy_store(src, url, embedder=embedder, history=False)
    assert result["imported"] == 7 and result["history"] is False
    with PgEditStore(url, embedder=embedder) as pg:
        assert pg.verify().ok
        assert not any(e.committed for e in pg.list(None))
        assert {ev.kind for e in pg.list(None) for ev in pg.history(e.id)} == {"import"}


def test_cli_and_editor_work_on_a_url(url, embedder):
    from typer.testing import CliRunner

    from memedit.cli import app
    from memedit.editor import Editor

    runner = CliRunner()
    res = runner.invoke(app, ["add", "The CEO of Acme is Jane Roe now.", "--store", url, "--json"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["search", "Who runs Acme?", "--store", url, "--json"])
    assert res.exit_code == 0 and "Jane Roe" in res.output
    res = runner.invoke(app, ["verify", "--store", url, "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["ok"] is True
    res = runner.invoke(app, ["list", "--store", url.replace("/t_", "/missing_"), "--json"])
    assert res.exit_code == 5 and "cannot connect" in res.output  # a clear store error, not a traceback
    ed = Editor(store=url, model="smollm2-135m-instruct")  # the model loads only on the first question
    try:
        assert isinstance(ed.store, PgEditStore)
        e = ed.edit(subject="the US", prompt=PRES, target_new="Trump")
        assert ed.search("Who is the US president?", k=1)[0].edit.id == e.id
    finally:
        ed.close()


def test_weight_commits_live_in_the_database_for_every_replica(url):
    """Replica 1 commits ROME deltas; replica 2 (own store connection, own fresh model) replays them bit for bit;
    a forget through replica 2 erases the deltas in its transaction and both models return to the base weights."""
    import psycopg
    import torch
    from test_commit import ROME, TINY_GATES
    from test_weight_methods import build_tokenizer, make_model, tiny_stats

    from memedit.editor import Editor

    torch.set_num_threads(1)
    tok = build_tokenizer()
    stats = tiny_stats(make_model("llama", len(tok)), tok, [1], Path(tempfile.mkdtemp()))
    params = lambda m: {n: p.detach().clone() for n, p in m.named_parameters()}  # noqa: E731
    equal = lambda m, saved: all(torch.equal(p, saved[n]) for n, p in m.named_parameters())  # noqa: E731
    q = "What is the mother tongue of Alice Smith?"

    model1 = make_model("llama", len(tok))
    base = params(model1)
    ed1 = Editor(model=(model1, tok), store=url, gates=TINY_GATES)
    a = ed1.edit(subject="Alice Smith", prompt="The mother tongue of {} is", target_new="German", target_true="French")
    ed1.store.record_use([a.id])
    report = ed1.commit(min_uses=1, method="rome", hparams=ROME, stats=stats[1])
    assert report.ok and report.committed_edits == [a.id], report.refused
    assert not equal(model1, base)
    edited = params(model1)
    with psycopg.connect(url) as raw:
        (name, n, size), = raw.execute("SELECT c.file, count(*), max(b.size) FROM commits c "
                                       "JOIN commit_blobs b ON b.name = c.file GROUP BY c.file").fetchall()
        assert n == 1 and size > 0

    model2 = make_model("llama", len(tok))
    ed2 = Editor(model=(model2, tok), store=url, gates=TINY_GATES)
    try:
        assert ed2.prepare(q).route == "weights"
        assert equal(model2, edited), "replica 2 must hold exactly base + the ledger committed by replica 1"

        with psycopg.connect(url) as raw:  # a damaged blob is refused, never half-applied
            raw.execute("UPDATE commit_blobs SET data = overlay(data placing '\\x00' from 200 for 1)")
        ed3 = Editor(model=(make_model("llama", len(tok)), tok), store=url)
        with pytest.raises(StoreError, match="checksum"):
            ed3.prepare(q)
        ed3.close()

        ed2.forget(a.id)
        assert equal(model2, base), "forgetting a committed edit restores the base weights bit for bit"
        with psycopg.connect(url) as raw:
            assert raw.execute("SELECT count(*) FROM commit_blobs").fetchone()[0] == 0
            assert raw.execute("SELECT status, file FROM commits").fetchall() == [("dropped", None)]
        assert ed1.prepare(q).route == "base"  # replica 1 catches up from the database before its next answer
        assert equal(model1, base)
    finally:
        ed1.close()
        ed2.close()


def test_small_namespace_inside_a_bigger_store_still_finds_its_edits(url, embedder):
    with PgEditStore(url, embedder=embedder) as store:
        store.add_many([Edit.text(f"Fact number {i} about the weather in city {i}.") for i in range(120)])
        mine = store.add_many([Edit.text("The CEO of Acme is Jane Roe.", namespace="small"),
                               Edit.text("Acme sells anvils.", namespace="small")])
        hits = store.search("Who runs Acme?", "small", k=5)
        assert [h.edit.id for h in hits][:1] == [mine[0].id] and len(hits) == 2
        # HNSW (approximate) in the big namespace agrees with an exact scan on the best edit
        q = store.embedder.encode(["the weather in city 17"])[0]
        hnsw = store.search_vector(q, k=3)
        exact = store._read(lambda c: store._search_rows(c, np.asarray(q, np.float32), "default", ("active",), 3,
                                                         None, exact=True))
        assert hnsw[0].edit.id == exact[0]["id"]
        assert abs(hnsw[0].score - (1 - exact[0]["hit_d"])) < 1e-5


def test_open_store_picks_the_backend_and_hides_passwords(tmp_path, embedder):
    from memedit.errors import StoreError, ValidationError
    from memedit.store.postgres import redact

    for target in (tmp_path / "a.db", str(tmp_path / "b.db")):
        with open_store(target, embedder=embedder) as s:
            assert isinstance(s, EditStore)
    assert redact("postgresql://bob:s3cret@db:5432/x") == "postgresql://bob:***@db:5432/x"
    with pytest.raises(ValidationError, match="postgresql:// URL"):
        PgEditStore("mysql://db/x")
    with pytest.raises(StoreError) as info:  # a refused connection names the server, never the password
        PgEditStore("postgresql://bob:s3cret@127.0.0.1:1/x", reconnect_s=0.5)
    assert "s3cret" not in str(info.value) and "127.0.0.1" in str(info.value)


def test_evaluation_runs_unchanged_on_a_postgresql_store(url, tmp_path):
    """`memedit eval`'s library API on a URL: the case's edit goes to the database and its probes route through it."""
    from test_eval import CF, _write

    from memedit.editor import Editor
    from memedit.eval import evaluate, load_cases

    cases = load_cases(_write(tmp_path / "cf.jsonl", CF[:1]), "counterfact").cases
    rep = evaluate(lambda store: Editor(store=store, policy="ike", max_new_tokens=8), cases, store_path=url)
    assert rep.cases == 1 and rep.overall["reliability"]["n"] == 1 and rep.overall["locality"]["n"] == 1
    with PgEditStore(url) as store:
        stored = store.list(None)
        assert [e.subject for e in stored] == [cases[0].edit.subject]
        assert store.usage(stored[0].id), "answering the case's probes counted the edit's use in the database"
    for r in rep.results:
        assert (r.route != "base") == r.own_edit_used
