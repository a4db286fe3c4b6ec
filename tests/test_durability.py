"""Crash, concurrency, corruption and erasure: the store's promises under stress.

Real SQLite files, real FAISS, the real packaged embedder, real processes
killed with SIGKILL.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from memedit import Edit, EditStore

from workers import check_acked, finish as _finish, read_acks as _read_acks, spawn as _spawn, wait_ready as _wait_ready


def _check_consistent(path: Path, embedder) -> EditStore:
    """The invariants after any crash; returns the reopened store (caller closes it)."""
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # No partial edit: every live edit has vectors and an add/import event, and no orphan vectors.
        assert raw.execute(
            "SELECT count(*) FROM edits e WHERE status != 'forgotten' AND NOT EXISTS "
            "(SELECT 1 FROM vectors v WHERE v.edit_id = e.id)").fetchone()[0] == 0
        assert raw.execute(
            "SELECT count(*) FROM edits e WHERE NOT EXISTS (SELECT 1 FROM events v WHERE v.edit_id = e.id "
            "AND v.kind IN ('add', 'import'))").fetchone()[0] == 0
        assert raw.execute(
            "SELECT count(*) FROM vectors v WHERE NOT EXISTS (SELECT 1 FROM edits e WHERE e.id = v.edit_id "
            "AND e.status != 'forgotten')").fetchone()[0] == 0
    store = EditStore(path, embedder=embedder)
    report = store.verify()
    assert report.ok, report.problems
    store.search("favourite colour", k=3)  # opens (and if needed rebuilds) the index
    assert store.check_index()["consistent"]
    return store


def _crash_cycles(tmp_path: Path, embedder, cycles: int) -> None:
    path, ackfile = tmp_path / "crash.db", tmp_path / "acks.txt"
    rng = random.Random(1234)
    for cycle in range(cycles):
        proc = _spawn("writer", str(path), str(ackfile), f"c{cycle}")
        _wait_ready(proc)
        time.sleep(rng.uniform(0.05, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        added, forgot = _read_acks(ackfile)
        store = _check_consistent(path, embedder)
        check_acked(store, added, forgot, allowed_unacked_forgets=cycle + 1)
        store.close()
    assert len(_read_acks(ackfile)[0]) > cycles, "the writer should have acknowledged many edits"


def test_sigkill_at_random_points_loses_nothing_acknowledged(tmp_path: Path, embedder) -> None:
    _crash_cycles(tmp_path, embedder, cycles=8)


@pytest.mark.slow
def test_sigkill_many_cycles(tmp_path: Path, embedder) -> None:
    _crash_cycles(tmp_path, embedder, cycles=40)


def test_concurrent_writers_and_readers(tmp_path: Path, embedder) -> None:
    path = tmp_path / "conc.db"
    EditStore(path, embedder=embedder).close()
    writers = [_spawn("writer", str(path), str(tmp_path / f"acks{i}.txt"), f"w{i}", "12") for i in range(3)]
    readers = [_spawn("reader", str(path), "8") for _ in range(2)]
    for p in writers + readers:
        _wait_ready(p)
    for p in writers + readers:
        out, err = _finish(p)
        assert p.returncode == 0, err
        assert "locked" not in err.lower()
        assert json.loads(out.strip().splitlines()[-1])["done"]
    added: dict[int, str] = {}
    forgot: set[int] = set()
    for i in range(3):
        a, f = _read_acks(tmp_path / f"acks{i}.txt")
        assert not set(a) & set(added), "two writers were given the same id"
        added.update(a)
        forgot |= f
    store = _check_consistent(path, embedder)
    check_acked(store, added, forgot, allowed_unacked_forgets=0)
    assert len(added) == 34  # the seeded steps of w0, w1 and w2 add 12 + 13 + 9 edits
    store.close()


def test_racing_supersedes_leave_exactly_one_active(tmp_path: Path, embedder) -> None:
    path = tmp_path / "race.db"
    EditStore(path, embedder=embedder).close()
    racers = [_spawn("racer", str(path), f"Person {i}") for i in range(4)]
    for p in racers:
        _wait_ready(p)
    Path(str(path) + ".go").touch()
    ids = []
    for p in racers:
        out, err = _finish(p, timeout=120)
        assert p.returncode == 0, err
        ids.append(json.loads(out.strip().splitlines()[-1])["id"])
    with EditStore(path, embedder=embedder) as store:
        edits = [store.get(i) for i in ids]
        assert sorted(e.status for e in edits) == ["active", "superseded", "superseded", "superseded"]
        active = next(e for e in edits if e.status == "active")
        assert active.id == max(ids), "the last committed correction wins"
        for e in edits:
            assert [ev.kind for ev in store.history(e.id)][0] == "add"
        assert store.verify().ok


# ---- corruption of the derived index ----------------------------------------

@pytest.fixture()
def indexed_store(tmp_path: Path, embedder):
    path = tmp_path / "idx.db"
    with EditStore(path, embedder=embedder) as store:
        store.add_many([
            Edit.fact("the US", "The current president of {} is", "Trump"),
            Edit.fact("France", "The capital of {} is", "Lyon"),
            Edit.text("The CEO of Acme is Jane Roe now."),
        ])
        expected = [(h.edit.id, round(h.score, 5)) for h in store.search("Who leads the US?", k=3)]
    return path, expected


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage", "foreign"])
def test_damaged_index_is_rebuilt_never_wrong(indexed_store, damage: str, tmp_path: Path, embedder) -> None:
    path, expected = indexed_store
    index_file = path.with_suffix(".faiss")
    data = index_file.read_bytes()
    if damage == "truncate":
        index_file.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        pos = len(data) - 100  # inside the vectors: a silent wrong match if it were served
        index_file.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:])
    elif damage == "empty":
        index_file.write_bytes(b"")
    elif damage == "garbage":
        index_file.write_bytes(os.urandom(len(data)))
    else:  # a valid index file from another store with other ids and vectors
        with EditStore(tmp_path / "other.db", embedder=embedder) as other:
            other.add(Edit.text("Something else entirely."))
            other.search("x")
        index_file.write_bytes((tmp_path / "other.faiss").read_bytes())
    with EditStore(path, embedder=embedder) as store:
        got = [(h.edit.id, round(h.score, 5)) for h in store.search("Who leads the US?", k=3)]
        assert store.index_rebuilt
        assert got == expected
        assert store.check_index()["consistent"]


def test_index_with_wrong_ids_but_recorded_checksum_is_rebuilt(indexed_store, embedder) -> None:
    """Even if the checksum were forged, an id set that differs from the database forces a rebuild."""
    import faiss

    path, expected = indexed_store
    index = faiss.read_index(str(path.with_suffix(".faiss")))
    index.remove_ids(np.array([1], dtype=np.int64))
    faiss.write_index(index, str(path.with_suffix(".faiss")))
    import hashlib

    digest = hashlib.sha256(path.with_suffix(".faiss").read_bytes()).hexdigest()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE meta SET value = ? WHERE key = 'index_sha256'", (digest,))
    with EditStore(path, embedder=embedder) as store:
        got = [(h.edit.id, round(h.score, 5)) for h in store.search("Who leads the US?", k=3)]
        assert store.index_rebuilt and got == expected


def test_stale_index_file_catches_up_incrementally(tmp_path: Path, embedder) -> None:
    path = tmp_path / "stale.db"
    with EditStore(path, embedder=embedder) as a:
        first = a.add(Edit.text("The tallest building in Metropolis is the Daily Planet."))
        a.flush()
    # A second process adds and forgets without ever saving the index file.
    b = EditStore(path, embedder=embedder)
    second = b.add(Edit.text("The mayor of Metropolis is Lex Luthor."))
    b.forget(first.id)
    b._conn.close()  # simulate the process dying without close()
    with EditStore(path, embedder=embedder) as c:
        hits = c.search("Who is the mayor of Metropolis?", k=5)
        assert [h.edit.id for h in hits] == [second.id]
        assert c.check_index()["consistent"]


def test_embedder_mismatch_is_a_clear_error(tmp_path: Path, embedder) -> None:
    from memedit.errors import StoreError

    path = tmp_path / "emb.db"
    with EditStore(path, embedder=embedder) as s:
        s.add(Edit.text("Some fact."))
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE meta SET value = 'another-model' WHERE key = 'embedder'")
    with EditStore(path, embedder=embedder) as s:
        with pytest.raises(StoreError, match="another-model"):
            s.search("fact")


# ---- erasure ------------------------------------------------------------------

CANARY = "Zqxv-Canary-8812"


def _raw_bytes(path: Path) -> bytes:
    out = b""
    for suffix in ("", "-wal", "-shm"):
        f = Path(str(path) + suffix)
        if f.exists():
            out += f.read_bytes()
    return out


def test_forget_erases_content_from_db_wal_and_index(tmp_path: Path, embedder) -> None:
    path = tmp_path / "erase.db"
    store = EditStore(path, embedder=embedder)
    keep = store.add(Edit.text("Keeper-Phrase-4471 is the name of the lighthouse."))
    gone = store.add(Edit.fact(f"{CANARY} Industries", "The CEO of {} is", f"Dr {CANARY}",
                               paraphrases=["The boss of {} is"], author=f"user-{CANARY}",
                               source=f"chat: the CEO of {CANARY} Industries is Dr {CANARY}"))
    store.record_use([gone.id], question=f"Who runs {CANARY} Industries?", scores=[0.9], route="ike")
    store.search(f"{CANARY} Industries boss", k=2)
    store.flush()
    assert CANARY.encode() in _raw_bytes(path) or CANARY.lower().encode() in _raw_bytes(path)
    n_vectors = store.check_index()["vectors_in_index"]

    report = store.forget(gone.id, actor="dpo")
    assert report["checkpoint_complete"]
    raw = _raw_bytes(path)
    for needle in (CANARY, CANARY.lower(), CANARY.upper()):
        assert needle.encode() not in raw, f"{needle} still in the database files"
    assert b"Keeper-Phrase-4471" in raw, "the test must be reading the right files"
    assert store.check_index()["vectors_in_index"] == n_vectors - 2
    assert gone.id not in {h.edit.id for h in store.search(f"{CANARY} Industries boss", k=5)}
    tomb = store.get(gone.id)
    assert tomb.status == "forgotten" and tomb.subject is None and tomb.author is None
    kinds = [e.kind for e in store.history(gone.id)]
    assert kinds == ["add", "use", "forget"]
    assert all(CANARY not in json.dumps(e.payload) for e in store.history(gone.id))
    assert store.verify().ok
    store.close()
    # The saved index file holds no vector of the forgotten edit.
    import faiss

    saved = faiss.read_index(str(path.with_suffix(".faiss")))  # keep a reference: id_map dies with it
    ids = faiss.vector_to_array(saved.id_map)
    assert gone.id not in set(ids.tolist()) and keep.id in set(ids.tolist())


def test_forget_while_a_reader_holds_a_snapshot_completes_later(tmp_path: Path, embedder) -> None:
    path = tmp_path / "erase2.db"
    store = EditStore(path, embedder=embedder)
    gone = store.add(Edit.text(f"The secret code is {CANARY}."))
    reader = sqlite3.connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM edits").fetchone()  # holds a read snapshot
    report = store.forget(gone.id)
    assert report["checkpoint_complete"] is False
    reader.execute("COMMIT")
    reader.close()
    assert store.checkpoint() is True
    assert CANARY.encode() not in _raw_bytes(path)
    store.close()
