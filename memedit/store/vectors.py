"""The stored vectors of a SQLite store: a hash for each, recorded when written, checked by ``verify``.

>>> from memedit.store.vectors import vector_digest
>>> len(vector_digest(7, 0, b"\\x00" * 16))
64

The FAISS index is rebuilt from the ``vectors`` table, so a vector damaged in
the database would silently change search results at the next rebuild. Each
row's ``sha256`` covers the edit id, the vector's position and its bytes, so
a damaged, truncated or swapped vector is caught by :func:`check_vectors`;
``EditStore.repair_vectors`` re-embeds the edits it names from their text.
"""
from __future__ import annotations

import hashlib
import logging
import sqlite3
import struct
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

if TYPE_CHECKING:
    from .postgres import PgEditStore
    from .sqlite import EditStore

log = logging.getLogger(__name__)


def vector_digest(edit_id: int, k: int, blob: bytes) -> str:
    """The hash recorded beside a stored vector: sha256 over its edit id, position and bytes."""
    return hashlib.sha256(struct.pack("<qq", int(edit_id), int(k)) + bytes(blob)).hexdigest()


def vector_rows(edit_id: int, vecs: np.ndarray) -> list[tuple[int, int, bytes, str]]:
    """``(edit_id, k, blob, sha256)`` rows for an edit's vectors, ready for ``INSERT INTO vectors``."""
    rows = []
    for k, v in enumerate(vecs):
        blob = np.ascontiguousarray(v, dtype=np.float32).tobytes()
        rows.append((int(edit_id), k, blob, vector_digest(edit_id, k, blob)))
    return rows


INSERT_SQL = "INSERT INTO vectors(edit_id, k, vec, sha256) VALUES (?, ?, ?, ?)"


def float_rows(rows: Iterable[dict]) -> Iterator[tuple[int, int, bytes, str | None]]:
    """``(edit_id, k, vec, sha256)`` from PostgreSQL rows whose ``v`` is the vector as a float4 array."""
    for r in rows:
        yield r["edit_id"], r["k"], np.asarray(r["v"], dtype=np.float32).tobytes(), r["sha256"]


def backfill(conn: sqlite3.Connection) -> int:
    """Record hashes for vectors written before hashes were (run once, by the migration that adds them)."""
    rows = conn.execute("SELECT edit_id, k, vec FROM vectors WHERE sha256 IS NULL").fetchall()
    conn.executemany("UPDATE vectors SET sha256 = ? WHERE edit_id = ? AND k = ?",
                     [(vector_digest(e, k, v), e, k) for e, k, v in rows])
    if rows:
        log.info("recorded hashes for %d stored vectors", len(rows))
    return len(rows)


def check_vectors(rows: Iterable[tuple[int, int, bytes, bytes | str | None]], live: set[int],
                  dim: int | None) -> tuple[list[str], list[int]]:
    """Check every stored vector against its hash and size, and that each live edit has vectors.

    ``rows``: ``(edit_id, k, vec, sha256)`` (the hash as text or as its ASCII
    bytes, so a damaged one need not decode); ``live``: ids of the edits that
    are not forgotten. Returns (problems, ids of edits whose vectors a
    re-embedding repairs).
    """
    problems: list[str] = []
    damaged: set[int] = set()
    seen: set[int] = set()
    size = 4 * dim if dim else None
    for edit_id, k, blob, digest in rows:
        seen.add(edit_id)
        if edit_id not in live:
            problems.append(f"edit {edit_id}: a vector is stored for an edit that is forgotten or missing")
        elif digest is None:
            problems.append(f"edit {edit_id}: vector {k} has no recorded hash; 'memedit verify --repair' re-embeds it")
            damaged.add(edit_id)
        elif (vector_digest(edit_id, k, blob).encode() != (digest.encode() if isinstance(digest, str) else digest)
              or (size is not None and len(blob) != size)):
            problems.append(f"edit {edit_id}: vector {k} is damaged (it differs from the hash recorded when it "
                            "was written); 'memedit verify --repair' re-embeds it")
            damaged.add(edit_id)
    for edit_id in sorted(live - seen):
        problems.append(f"edit {edit_id}: no vectors stored; 'memedit verify --repair' re-embeds it")
        damaged.add(edit_id)
    return problems, sorted(damaged)


def reembed(store: "EditStore | PgEditStore", edit_ids: list[int], *, actor: str | None = None) -> None:
    """Replace the stored vectors of these live edits with fresh embeddings of their texts, in one transaction.

    Each repaired edit gets a ``repair`` event, and a new generation so every
    process's index drops the old vectors and takes the new ones.
    """
    edits = [store.get(i) for i in edit_ids]
    gone = [e.id for e in edits if e.status == "forgotten"]
    if gone:
        from ..errors import ConflictError

        raise ConflictError(f"edit {gone[0]} is forgotten: it has no text to embed again")
    texts = [e.search_texts() for e in edits]
    vecs = store.embedder.encode([t for ts in texts for t in ts])
    store._check_embedder()
    with store._write():
        gen = store._next_gen()
        offset = 0
        for edit, ts in zip(edits, texts):
            store._conn.execute("DELETE FROM vectors WHERE edit_id = ?", (edit.id,))
            store._insert_vectors(int(edit.id), vecs[offset:offset + len(ts)], edit.namespace, edit.status)  # type: ignore[arg-type]
            store._conn.execute("UPDATE edits SET gen = ? WHERE id = ?", (gen, edit.id))
            store._append_event("repair", namespace=edit.namespace, edit_id=edit.id, actor=actor,
                                payload={"vectors": len(ts)})
            offset += len(ts)
    log.warning("re-embedded the vectors of %d edit(s): %s", len(edits), edit_ids)
    if hasattr(store, "_sync_index"):  # SQLite's in-memory FAISS index; pgvector's index is the table itself
        store._sync_index()
