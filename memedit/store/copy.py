"""Copy a whole store between backends (SQLite <-> PostgreSQL), history and weight ledger included.

>>> from memedit.store import copy_store
>>> copy_store("stores/default.db", "postgresql://memedit@db/memedit")          # doctest: +SKIP
{'source': 'stores/default.db', 'destination': 'postgresql://memedit@db/memedit', 'exported': 3, ...}

The edits travel through the JSON-lines export (:mod:`memedit.store.transfer`,
re-embedded in the destination), so ``export`` of both stores is
byte-identical afterwards. With ``history=True`` (the default) the same
destination transaction then adopts what the export leaves out:

* the hash-chained event log, verbatim (the destination's ``verify`` checks the
  source's chain, head and count), with each edit's salt and content hash;
* namespaces with their review policies, usage records and notes;
* the weight-commit ledger: its rows (same ids) and every commit's deltas, so
  a model attached to the destination replays the same weights.

Either all of it lands or none of it: the destination must be empty.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConflictError, StoreError
from .open import describe, open_store

_EVENT_COLUMNS = ("seq", "ts", "namespace", "edit_id", "kind", "actor", "payload", "prev_hash", "hash")
_USAGE_COLUMNS = ("id", "edit_id", "ts", "question", "score", "route")
_NOTE_COLUMNS = ("id", "edit_id", "ts", "kind", "actor", "text")
_COMMIT_COLUMNS = ("id", "ts", "method", "model", "base_hash", "edit_ids", "params", "file", "file_sha256", "status",
                   "gates", "stats", "memedit_version")
_LEDGER_META = ("ledger_gen",)
_SERIAL_TABLES = ("usage", "notes", "commits")  # PostgreSQL: move their sequences past the copied ids


def copy_store(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, embedder: Any = None,
               actor: str | None = None, progress: bool = False, history: bool = True) -> dict[str, Any]:
    """Copy every edit of store ``src`` into the empty store ``dst``, ids kept; with ``history`` the rest too.

    ``history=False`` copies the edits only: the destination starts its own
    event log with one ``import`` event per edit, and has no weight ledger
    (committed edits are then marked uncommitted, since no deltas came along).
    """
    with open_store(src, embedder=embedder, create=False) as s, tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "edits.jsonl"
        exported = s.export_jsonl(dump)
        with open_store(dst, embedder=embedder) as d:
            if d.count():
                raise ConflictError(f"the destination {describe(dst)} already holds {d.count()} edits; copy into an "
                                    "empty store (or use 'memedit import' to merge)")
            copied: dict[str, int] = {}
            with d._write():  # the import joins this transaction: all of it lands, or nothing
                result = d.import_jsonl(dump, actor=actor, progress=progress)
                if result["remapped"]:
                    raise StoreError("internal: a copy into an empty store changed edit ids")
                if history:
                    copied = _adopt_history(s, d)
                else:
                    d._conn.execute("UPDATE edits SET committed = 0 WHERE committed != 0")
    return {"source": describe(src), "destination": describe(dst), "exported": exported, **result,
            "history": history, **copied}


def _rows(store: Any, table: str, columns: tuple[str, ...], order: str) -> list[dict[str, Any]]:
    return list(store.db.query(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}"))


def _insert(store: Any, table: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    sql = f"INSERT INTO {table}({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    for r in rows:
        store._conn.execute(sql, [r[c] for c in columns])


def _adopt_history(s: Any, d: Any) -> dict[str, int]:
    """Inside ``d``'s write transaction, right after the import: make ``d``'s log, usage, notes and ledger ``s``'s."""
    for ns in s.db.query("SELECT name, created_at, policy FROM namespaces"):
        if list(d.db.query("SELECT name FROM namespaces WHERE name = ?", [ns["name"]])):
            d._conn.execute("UPDATE namespaces SET created_at = ?, policy = ? WHERE name = ?",
                            (ns["created_at"], ns["policy"], ns["name"]))
        else:
            d._conn.execute("INSERT INTO namespaces(name, created_at, policy) VALUES (?, ?, ?)",
                            (ns["name"], ns["created_at"], ns["policy"]))
    for e in s.db.query("SELECT id, salt, content_hash FROM edits ORDER BY id"):
        salt = None if e["salt"] is None else bytes(e["salt"])
        d._conn.execute("UPDATE edits SET salt = ?, content_hash = ? WHERE id = ?", (salt, e["content_hash"], e["id"]))

    events = _rows(s, "events", _EVENT_COLUMNS, "seq")
    d._conn.execute("DELETE FROM events")  # the import's own events; the source's log replaces them
    _insert(d, "events", _EVENT_COLUMNS, events)
    for key in ("head_hash", "event_count", *_LEDGER_META):
        value = s._meta(key)
        if value is not None:
            d._set_meta(key, value)

    usage = _rows(s, "usage", _USAGE_COLUMNS, "id")
    _insert(d, "usage", _USAGE_COLUMNS, usage)
    notes = _rows(s, "notes", _NOTE_COLUMNS, "id")
    _insert(d, "notes", _NOTE_COLUMNS, notes)
    commits = _rows(s, "commits", _COMMIT_COLUMNS, "id")
    _insert(d, "commits", _COMMIT_COLUMNS, commits)
    blobs = 0
    for c in commits:
        if c["file"]:
            data = s.delta_blobs.get(c["file"])
            if hashlib.sha256(data).hexdigest() != c["file_sha256"]:  # never spread damaged deltas to another store
                raise StoreError(f"deltas of commit {c['id']} are damaged (checksum mismatch) in "
                                 f"{s.delta_blobs.where}; nothing was copied")
            d.delta_blobs.put(c["file"], data)
            blobs += 1
    if not _is_sqlite(d):
        for table in _SERIAL_TABLES:
            d._exec(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table})) "
                    f"WHERE EXISTS (SELECT 1 FROM {table})")
    return {"events": len(events), "usage": len(usage), "notes": len(notes), "commits": len(commits),
            "delta_blobs": blobs}


def _is_sqlite(store: Any) -> bool:
    from .sqlite import EditStore

    return isinstance(store, EditStore)
