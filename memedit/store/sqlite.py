"""EditStore: the source of truth (SQLite) and its FAISS index.

>>> from memedit import Edit, EditStore
>>> with EditStore("/tmp/demo.db") as store:                          # doctest: +SKIP
...     e = store.add(Edit.fact("the US", "The current president of {} is", "Trump"))
...     [hit.edit.id for hit in store.search("Who is the US president?")] == [e.id]
True

Durability follows SQLite's own advice: WAL journal, ``synchronous=FULL``, a
busy timeout, every write in one ``BEGIN IMMEDIATE`` transaction (retried a
bounded number of times) that writes the edit, its vectors and its event
together, so an acknowledged edit survives a crash and a half-written edit
cannot exist. The FAISS file is derived: checked against the database on open
and rebuilt from the stored vectors on any mismatch.
"""
from __future__ import annotations

import fcntl
import logging
import os
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from ..config import DEFAULT_NAMESPACE
from ..edits import LIVE_STATUSES, Edit, clean_text, utcnow, validate_namespace
from ..errors import ConflictError, NotFoundError, StoreError, as_store_error, check_id
from .chain import GENESIS, Event, canonical_json, event_hash
from .common import CONTENT_COLUMNS as _CONTENT_COLUMNS
from .common import MAX_QUERY, TEXT_COLUMNS, SearchHit, VerifyReport, check_k, check_list_window, checked_new_edit
from .common import chunks as _chunks
from .common import edit_from_row as _edit_from_row
from .common import extra_filters, like_pattern, new_edit_row, verify_rows
from .common import progress as _progress
from .common import statuses as _statuses
from . import vectors as vector_hashes
from .deltas import DeltaFiles, drop_commits_with
from .rows import Rows
from .files import check_store_files, check_store_header, foreign_tables, leftovers, sweep_leftovers
from .schema import apply_migrations

if TYPE_CHECKING:
    from .index import VectorIndex

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
WRITE_RETRIES = 8


class EditStore:
    """A durable, audited store of edits with a namespace-filtered vector index.

    ``path`` is the SQLite file; the index lives beside it (``x.db`` ->
    ``x.faiss``). The embedder loads lazily, on the first add or search.
    """

    def __init__(self, path: str | os.PathLike[str], *, embedder: Any = None, create: bool = True):
        self.path = Path(path)
        self.index_path = self.path.with_suffix(".faiss")
        check_store_files(self.path, self.index_path)
        if not create and not self.path.exists():
            raise NotFoundError(f"no store at {self.path}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise as_store_error(exc, self.path) from None  # type: ignore[misc]
        self._lock = threading.RLock()
        self._embedder = embedder
        self._index: VectorIndex | None = None
        self._index_gen = -1
        self._selector_cache: dict[tuple[str, tuple[str, ...]], tuple[int, Any]] = {}
        self._known_namespaces: set[str] = set()
        self.index_rebuilt = False
        self._embedder_checked = False
        #: leftover temporary index files this object removed (reported by :meth:`verify`)
        self.removed_leftovers: list[str] = []
        self._conn = None  # type: ignore[assignment]
        try:
            # A store being created is a zero-byte file until its first page is written: the creator holds the
            # index file lock until then, so a zero-byte file found under that lock is really empty.
            with self._index_lock() if _fresh(self.path) else nullcontext():
                check_store_header(self.path)
                self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                             timeout=BUSY_TIMEOUT_MS / 1000)
                self._prepare()
        except BaseException as exc:
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise as_store_error(exc, self.path) from None  # type: ignore[misc]
            raise
        if leftovers(self.index_path):
            try:
                with self._index_lock():
                    self._sweep()
            except OSError as exc:  # a read-only folder: the files stay, and verify reports them
                log.warning("cannot remove leftover index files beside %s: %s", self.path, exc)

    def _prepare(self) -> None:
        """Refuse another program's database, then set the connection up and bring the schema up to date."""
        foreign = foreign_tables(self._conn)
        if foreign:
            shown = ", ".join(foreign[:8]) + (", ..." if len(foreign) > 8 else "")
            raise StoreError(f"{self.path} is a SQLite database of another program (tables: {shown}), "
                             "not a memedit store; nothing was changed")
        self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._set_wal()
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA secure_delete=ON")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self.db = Rows(self._conn)
        with self._write():
            if 5 in apply_migrations(self.db):
                vector_hashes.backfill(self._conn)
            if self._meta("generation") is None:
                self._set_meta("generation", "0")
                self._set_meta("created_at", utcnow())
            if not self._row("SELECT 1 FROM namespaces WHERE name = ?", [DEFAULT_NAMESPACE]):
                self._insert_namespace(DEFAULT_NAMESPACE, None)

    def _set_wal(self) -> None:
        # Switching to WAL needs a moment without other connections mid-write; retry briefly.
        for attempt in range(WRITE_RETRIES):
            try:
                mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() == "wal":
                    return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise StoreError(f"cannot open store {self.path}: {exc}") from exc
            time.sleep(0.05 * (attempt + 1))
        raise StoreError(f"could not switch {self.path} to WAL mode (is it on a network filesystem?)")

    # ---- lifecycle ----------------------------------------------------
    def close(self) -> None:
        """Persist the index if it changed, then close the database."""
        with self._lock:
            if self._conn is None:
                return
            try:
                if self._index is not None:
                    self._save_index_if_stale()
            finally:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> "EditStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def embedder(self) -> Any:
        if self._embedder is None or isinstance(self._embedder, str):
            from ..embeddings import DEFAULT_EMBEDDER, Embedder

            self._embedder = Embedder.shared(self._embedder or self._meta("embedder") or DEFAULT_EMBEDDER)
        return self._embedder

    # ---- transactions ---------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE`` transaction, retried while another writer holds the lock.

        Nested inside this thread's own open transaction it joins it (the lock
        is reentrant and no other thread can be inside), so several steps, such
        as an import and the copy of a store's history, commit or fail together.
        """
        with self._lock:
            if self._conn is None:
                raise StoreError("the store is closed")
            if self._conn.in_transaction:
                yield
                return
            for attempt in range(WRITE_RETRIES):
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if not _is_busy(exc):
                        raise as_store_error(exc, self.path) from exc  # type: ignore[misc]
                    if attempt == WRITE_RETRIES - 1:
                        raise StoreError(f"store {self.path} is busy: {exc}; try again") from exc
                    time.sleep(min(0.05 * 2**attempt, 1.0) * (0.5 + secrets.randbelow(100) / 100))
            try:
                yield
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise as_store_error(exc, self.path) from exc  # type: ignore[misc]
                raise
            self._commit()

    def _commit(self) -> None:
        for attempt in range(WRITE_RETRIES):
            try:
                self._conn.execute("COMMIT")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or attempt == WRITE_RETRIES - 1:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise StoreError(f"could not commit to {self.path}: {as_store_error(exc)}") from exc
                time.sleep(0.05 * (attempt + 1))

    def _row(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        return next(self.db.query(sql, list(params)), None)

    def _meta(self, key: str) -> str | None:
        row = self._row("SELECT value FROM meta WHERE key = ?", [key])
        return row["value"] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                           (key, value))

    def _next_gen(self) -> int:
        gen = int(self._meta("generation") or 0) + 1
        self._set_meta("generation", str(gen))
        return gen

    def _append_event(self, kind: str, *, namespace: str | None = None, edit_id: int | None = None,
                      actor: str | None = None, payload: dict[str, Any] | None = None) -> Event:
        last = self._row("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
        seq = (last["seq"] + 1) if last else 1
        prev = last["hash"] if last else GENESIS
        ts = utcnow()
        body = canonical_json(payload or {})
        digest = event_hash(prev, seq, ts, namespace, edit_id, kind, actor, body)
        self._conn.execute(
            "INSERT INTO events(seq, ts, namespace, edit_id, kind, actor, payload, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?)",
            (seq, ts, namespace, edit_id, kind, actor, body, prev, digest),
        )
        self._set_meta("head_hash", digest)
        self._set_meta("event_count", str(seq))
        return Event(seq, ts, namespace, edit_id, kind, actor, payload or {}, prev, digest)

    # ---- namespaces -------------------------------------------------------
    def _insert_namespace(self, name: str, actor: str | None) -> None:
        self._conn.execute("INSERT INTO namespaces(name, created_at) VALUES (?, ?)", (name, utcnow()))
        self._append_event("namespace", namespace=name, actor=actor, payload={"action": "create"})

    def create_namespace(self, name: str, *, actor: str | None = None, exist_ok: bool = True) -> str:
        """Create a namespace (tenant or user). Adding an edit creates its namespace too."""
        validate_namespace(name)
        with self._write():
            if self._row("SELECT 1 FROM namespaces WHERE name = ?", [name]):
                if not exist_ok:
                    raise ConflictError(f"namespace {name!r} already exists")
                return name
            self._insert_namespace(name, actor)
        return name

    def namespaces(self) -> list[dict[str, Any]]:
        """Every namespace with its number of live edits."""
        return list(self.db.query(
            "SELECT n.name, n.created_at, "
            "(SELECT count(*) FROM edits e WHERE e.namespace = n.name AND e.status IN ('active','pending')) AS live "
            "FROM namespaces n ORDER BY n.name"
        ))

    def require_namespace(self, name: str) -> str:
        """Return ``name`` if it exists, else raise NotFoundError (a typo must not read as 'no edits')."""
        validate_namespace(name)
        if not self._row("SELECT 1 FROM namespaces WHERE name = ?", [name]):
            known = ", ".join(r["name"] for r in self.db.query("SELECT name FROM namespaces ORDER BY name LIMIT 20"))
            raise NotFoundError(f"namespace {name!r} does not exist (known: {known})")
        return name

    # ---- adding ---------------------------------------------------------
    def add(self, edit: Edit, *, status: str | None = None, actor: str | None = None) -> Edit:
        """Store one validated edit and index it; returns the stored edit (with id)."""
        return self.add_many([edit], status=status, actor=actor)[0]

    def add_many(self, edits: Iterable[Edit], *, status: str | None = None, actor: str | None = None,
                 batch_size: int = 256, progress: bool = False) -> list[Edit]:
        """Store many edits; each batch is one transaction, so a batch lands whole or not at all.

        Status ``active`` (default) supersedes any live edit with the same
        subject and relation in the namespace; ``pending`` waits for
        :meth:`approve` before it supersedes anything.
        """
        items = [self._checked(e, status) for e in edits]
        stored: list[Edit] = []
        bar = _progress(len(items), "adding edits", progress)
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            texts = [e.search_texts() for e in batch]
            flat = [t for ts in texts for t in ts]
            vecs = self.embedder.encode(flat)
            self._check_embedder()
            with self._write():
                gen = self._next_gen()
                offset = 0
                for edit, ts in zip(batch, texts):
                    stored.append(self._insert(edit, vecs[offset:offset + len(ts)], gen, actor, "add"))
                    offset += len(ts)
            self._sync_index()
            bar.update(len(batch))
        bar.close()
        return stored

    def _checked(self, edit: Edit, status: str | None) -> Edit:
        return checked_new_edit(edit, status)

    def _check_embedder(self) -> None:
        """Refuse an embedder other than the one this store's vectors were made with (record it on first use)."""
        name, dim = self._meta("embedder"), self._meta("dim")
        if name is None:
            with self._write():
                self._set_meta("embedder", self.embedder.name)
                self._set_meta("dim", str(self.embedder.dim))
        elif name != self.embedder.name or int(dim or 0) != self.embedder.dim:
            raise StoreError(
                f"this store's vectors were made with embedder {name!r} (dim {dim}); "
                f"it was opened with {self.embedder.name!r} (dim {self.embedder.dim}). Open it with the same embedder."
            )
        self._embedder_checked = True

    def _insert(self, edit: Edit, vecs: np.ndarray, gen: int, actor: str | None, event_kind: str,
                keep: dict[str, Any] | None = None) -> Edit:
        """Insert one edit row, its vectors and its event; the caller holds the write transaction."""
        ns = edit.namespace
        if not self._row("SELECT 1 FROM namespaces WHERE name = ?", [ns]):
            self._insert_namespace(ns, actor)
        row = new_edit_row(edit, gen, keep)
        digest = row["content_hash"]
        cols = ", ".join(row)
        cur = self._conn.execute(f"INSERT INTO edits({cols}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
        edit_id = int(cur.lastrowid)
        self._insert_vectors(edit_id, vecs, ns, edit.status)
        # The actor is who performed the write; the edit's author is content and must stay out of the
        # append-only log, or forgetting could not erase it.
        self._append_event(event_kind, namespace=ns, edit_id=edit_id, actor=actor,
                           payload={"uid": row["uid"], "content_hash": digest, "status": edit.status})
        if event_kind == "add" and edit.status == "active":
            self._supersede_same_key(edit_id, gen, actor)
        elif event_kind == "add" and edit.status == "pending" and edit.kind == "fact":
            old = self._live_same_key(edit_id, statuses=("active",))
            if old:
                self._conn.execute("UPDATE edits SET supersedes = ? WHERE id = ?", (old[0], edit_id))
        return self._get(edit_id)

    def _insert_vectors(self, edit_id: int, vecs: np.ndarray, namespace: str, status: str) -> None:
        """Store an edit's vectors with their hashes; the caller holds the write transaction."""
        self._conn.executemany(vector_hashes.INSERT_SQL, vector_hashes.vector_rows(edit_id, vecs))

    def _live_same_key(self, edit_id: int, statuses: Sequence[str] = LIVE_STATUSES) -> list[int]:
        row = self._row("SELECT namespace, subject_key, relation_key, kind FROM edits WHERE id = ?", [edit_id])
        if not row or row["kind"] != "fact":
            return []
        marks = ",".join("?" * len(statuses))
        return [r["id"] for r in self.db.query(
            f"SELECT id FROM edits WHERE namespace = ? AND subject_key = ? AND relation_key = ? AND id != ? "
            f"AND status IN ({marks}) ORDER BY id DESC",
            [row["namespace"], row["subject_key"], row["relation_key"], edit_id, *statuses],
        )]

    def _supersede_same_key(self, new_id: int, gen: int, actor: str | None) -> None:
        active = self._live_same_key(new_id, statuses=("active",))
        olds = self._live_same_key(new_id)  # pending ones are obsolete too
        for old_id in olds:
            self._mark_superseded(old_id, new_id, gen, actor)
        if olds:  # the link names the answer being replaced: the active predecessor if there was one
            self._conn.execute("UPDATE edits SET supersedes = ? WHERE id = ?", ((active or olds)[0], new_id))

    def _mark_superseded(self, old_id: int, new_id: int, gen: int, actor: str | None) -> None:
        self._conn.execute("UPDATE edits SET status = 'superseded', superseded_by = ?, updated_at = ?, gen = ? WHERE id = ?",
                           (new_id, utcnow(), gen, old_id))
        ns = self._row("SELECT namespace FROM edits WHERE id = ?", [old_id])["namespace"]
        self._append_event("supersede", namespace=ns, edit_id=old_id, actor=actor, payload={"by": new_id})

    # ---- lifecycle of an edit -------------------------------------------
    def approve(self, edit_id: int, *, actor: str | None = None) -> Edit:
        """Make a pending edit active; it then supersedes live edits of the same subject and relation."""
        with self._write():
            edit = self._get(edit_id)
            if edit.status != "pending":
                raise ConflictError(f"edit {edit_id} is {edit.status}, only pending edits can be approved")
            gen = self._next_gen()
            self._conn.execute("UPDATE edits SET status = 'active', updated_at = ?, gen = ? WHERE id = ?",
                               (utcnow(), gen, edit_id))
            self._append_event("approve", namespace=edit.namespace, edit_id=edit_id, actor=actor)
            self._supersede_same_key(edit_id, gen, actor)
        self._sync_index()
        return self.get(edit_id)

    def reject(self, edit_id: int, *, actor: str | None = None, reason: str | None = None) -> Edit:
        """Refuse a pending edit; it stays in history but never answers."""
        with self._write():
            edit = self._get(edit_id)
            if edit.status != "pending":
                raise ConflictError(f"edit {edit_id} is {edit.status}, only pending edits can be rejected")
            gen = self._next_gen()
            self._conn.execute("UPDATE edits SET status = 'rejected', updated_at = ?, gen = ? WHERE id = ?",
                               (utcnow(), gen, edit_id))
            # The reason is free text and may quote the edit: it goes to `notes`, which forget erases.
            self._append_event("reject", namespace=edit.namespace, edit_id=edit_id, actor=actor,
                               payload={"reason_given": True} if reason else {})
            if reason:
                self._conn.execute("INSERT INTO notes(edit_id, ts, kind, actor, text) VALUES (?,?,?,?,?)",
                                   (edit_id, utcnow(), "reject", actor, clean_text(reason, "reason", MAX_QUERY, multiline=True)))
        self._sync_index()
        return self.get(edit_id)

    def supersede(self, old_id: int, new: Edit, *, actor: str | None = None) -> Edit:
        """Replace edit ``old_id`` with ``new`` (same namespace); the old one stays in history."""
        old = self.get(old_id)
        if old.status not in LIVE_STATUSES:
            raise ConflictError(f"edit {old_id} is {old.status}; only pending or active edits can be superseded")
        new = self._checked(replace(new, namespace=old.namespace), "active")
        vecs = self.embedder.encode(new.search_texts())
        self._check_embedder()
        with self._write():
            if self._get(old_id).status not in LIVE_STATUSES:  # re-check inside the lock
                raise ConflictError(f"edit {old_id} changed while superseding; try again")
            gen = self._next_gen()
            stored = self._insert(new, vecs, gen, actor, "add")
            if self._get(old_id).status in LIVE_STATUSES:
                self._mark_superseded(old_id, stored.id, gen, actor)  # type: ignore[arg-type]
            self._conn.execute("UPDATE edits SET supersedes = ? WHERE id = ?", (old_id, stored.id))
        self._sync_index()
        return self.get(stored.id)  # type: ignore[arg-type]

    def forget(self, edit_id: int, *, actor: str | None = None, reason: str | None = None) -> dict[str, Any]:
        """Erase an edit: content, vectors and usage leave the database, its WAL and the index.

        The row stays as a tombstone (id, namespace, status ``forgotten``,
        salted content hash) so the event chain still verifies. Returns a
        report saying whether the WAL checkpoint completed (it cannot while
        another process holds an old read snapshot; the erasure then completes
        at that store's next checkpoint).
        """
        with self._write():
            edit = self._get(edit_id)
            if edit.status == "forgotten":
                raise ConflictError(f"edit {edit_id} is already forgotten")
            gen = self._next_gen()
            sets = ", ".join(f"{c} = NULL" for c in _CONTENT_COLUMNS)
            self._conn.execute(f"UPDATE edits SET {sets}, status = 'forgotten', updated_at = ?, gen = ? WHERE id = ?",
                               (utcnow(), gen, edit_id))
            self._conn.execute("DELETE FROM vectors WHERE edit_id = ?", (edit_id,))
            self._conn.execute("DELETE FROM usage WHERE edit_id = ?", (edit_id,))
            self._conn.execute("DELETE FROM notes WHERE edit_id = ?", (edit_id,))
            tomb = self._row("SELECT content_hash FROM edits WHERE id = ?", [edit_id])["content_hash"]
            self._append_event("forget", namespace=edit.namespace, edit_id=edit_id, actor=actor,
                               payload={"tombstone": tomb, **({"reason_given": True} if reason else {})})
            dropped, delta_blobs = drop_commits_with(self, edit_id, actor)
        with self._lock:
            self._ensure_index()  # the vector must leave the index file too, even if it was never loaded here
            self._save_index(force=True)
        self.delta_blobs.erase(delta_blobs)  # the deltas encode the edit: erase them once the drop has committed
        checkpoint = self.checkpoint()
        return {"id": edit_id, "forgotten": True, "checkpoint_complete": checkpoint, "index_saved": True,
                "commits_dropped": dropped}

    @property
    def ledger_dir(self) -> Path:
        """Where weight-commit delta files live: ``x.db`` -> ``x.ledger/``."""
        return self.path.with_suffix(".ledger")

    @property
    def delta_blobs(self) -> DeltaFiles:
        """The weight-commit deltas: one safetensors file per commit in :attr:`ledger_dir`."""
        return DeltaFiles(self.ledger_dir)

    def checkpoint(self) -> bool:
        """Copy the WAL into the database and truncate it; True when it fully completed."""
        with self._lock:
            for attempt in range(WRITE_RETRIES):
                busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    return True
                time.sleep(0.05 * (attempt + 1))
        log.warning("WAL checkpoint of %s did not complete: another connection holds a snapshot", self.path)
        return False

    def record_use(self, edit_ids: Sequence[int], *, question: str | None = None,
                   scores: Sequence[float] | None = None, route: str | None = None) -> None:
        """Count that these edits answered a question (usage drives commits to the weights later)."""
        if not edit_ids:
            return
        scores = list(scores) if scores is not None else [None] * len(edit_ids)  # type: ignore[list-item]
        now = utcnow()
        with self._write():
            for edit_id, score in zip(edit_ids, scores):
                edit = self._get(edit_id)
                self._conn.execute("UPDATE edits SET usage_count = usage_count + 1, last_used_at = ? WHERE id = ?",
                                   (now, edit_id))
                self._conn.execute("INSERT INTO usage(edit_id, ts, question, score, route) VALUES (?,?,?,?,?)",
                                   (edit_id, now, question, score, route))
                self._append_event("use", namespace=edit.namespace, edit_id=edit_id,
                                   payload={"route": route} if route else {})

    def mark_committed(self, edit_ids: Sequence[int], commit_id: int, *, committed: bool = True,
                       actor: str | None = None, kind: str | None = None) -> None:
        """Record that these edits now live in (or left) the weights; used by the commit ledger."""
        with self._write():
            for edit_id in edit_ids:
                edit = self._get(edit_id)
                self._conn.execute("UPDATE edits SET committed = ?, updated_at = ? WHERE id = ?",
                                   (int(committed), utcnow(), edit_id))
                self._append_event(kind or ("commit" if committed else "revert"), namespace=edit.namespace,
                                   edit_id=edit_id, actor=actor, payload={"commit": commit_id})

    # ---- reading ------------------------------------------------------------
    def _get(self, edit_id: int) -> Edit:
        row = self._row("SELECT * FROM edits WHERE id = ?", [check_id(edit_id)])
        if row is None:
            raise NotFoundError(f"no edit with id {edit_id}")
        return _edit_from_row(row)

    def get(self, edit_id: int) -> Edit:
        """The edit with this id (forgotten edits come back as content-less tombstones)."""
        with self._lock:
            return self._get(edit_id)

    def list(self, namespace: str | None = None, *, status: str | Sequence[str] | None = None,
             author: str | None = None, text: str | None = None, limit: int = 100, offset: int = 0,
             **filters: Any) -> list[Edit]:
        """Edits, newest first, filtered by namespace, status, author and a substring of their text.

        ``filters``: ``source``, ``committed``, ``min_uses``, ``since``, ``until``
        (see :func:`memedit.store.common.extra_filters`).
        """
        where, params = self._filters(namespace, status, author, text, **filters)
        check_list_window(limit, offset)
        rows = self.db.query(f"SELECT * FROM edits {where} ORDER BY id DESC LIMIT ? OFFSET ?", [*params, limit, offset])
        return [_edit_from_row(r) for r in rows]

    def count(self, namespace: str | None = None, *, status: str | Sequence[str] | None = None,
              author: str | None = None, text: str | None = None, **filters: Any) -> int:
        where, params = self._filters(namespace, status, author, text, **filters)
        return int(self._row(f"SELECT count(*) AS n FROM edits {where}", params)["n"])

    def _filters(self, namespace: str | None, status: str | Sequence[str] | None, author: str | None,
                 text: str | None, *, source: str | None = None, committed: bool | None = None,
                 min_uses: int | None = None, since: str | None = None,
                 until: str | None = None) -> tuple[str, list[Any]]:
        clauses, params = extra_filters("?", source=source, committed=committed, min_uses=min_uses, since=since,
                                        until=until, ilike="LIKE")
        if namespace is not None:
            clauses.append("namespace = ?")
            params.append(self.require_namespace(namespace))
        statuses = _statuses(status)
        if statuses:
            clauses.append(f"status IN ({','.join('?' * len(statuses))})")
            params.extend(statuses)
        if author is not None:
            clauses.append("author = ?")
            params.append(author)
        if text:
            like = like_pattern(text)
            clauses.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in TEXT_COLUMNS) + ")")
            params.extend([like] * 5)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    def history(self, edit_id: int) -> list[Event]:
        """Every event about this edit, oldest first."""
        self.get(edit_id)
        return [Event.from_row(r) for r in self.db.query("SELECT * FROM events WHERE edit_id = ? ORDER BY seq", [edit_id])]

    def events(self, namespace: str | None = None, *, since: int = 0, limit: int = 1000) -> list[Event]:
        where = "WHERE seq > ?" + (" AND namespace = ?" if namespace else "")
        params: list[Any] = [since] + ([namespace] if namespace else [])
        return [Event.from_row(r) for r in self.db.query(f"SELECT * FROM events {where} ORDER BY seq LIMIT ?", [*params, limit])]

    def notes(self, edit_id: int) -> list[dict[str, Any]]:
        """Free-text notes about an edit (rejection reasons), oldest first; erased by forget."""
        return list(self.db.query("SELECT ts, kind, actor, text FROM notes WHERE edit_id = ? ORDER BY id", [edit_id]))

    def usage(self, edit_id: int, limit: int = 50) -> list[dict[str, Any]]:
        """Recent questions that were answered through this edit."""
        return list(self.db.query("SELECT ts, question, score, route FROM usage WHERE edit_id = ? ORDER BY id DESC LIMIT ?",
                                  [edit_id, limit]))

    # ---- search ---------------------------------------------------------------
    def search(self, query: str, namespace: str = DEFAULT_NAMESPACE, *, k: int = 5,
               statuses: Sequence[str] = ("active",), min_score: float | None = None) -> list[SearchHit]:
        """Edits in ``namespace`` nearest to ``query`` by cosine similarity, best first."""
        query = clean_text(query, "query", MAX_QUERY, multiline=True)  # type: ignore[assignment]
        qvec = self.embedder.encode([query])[0]
        if not self._embedder_checked:
            self._check_embedder()
        return self.search_vector(qvec, namespace, k=k, statuses=statuses, min_score=min_score)

    def search_vector(self, qvec: np.ndarray, namespace: str = DEFAULT_NAMESPACE, *, k: int = 5,
                      statuses: Sequence[str] = ("active",), min_score: float | None = None) -> list[SearchHit]:
        """Like :meth:`search` for an already-embedded query (unit vector)."""
        check_k(k)
        statuses = _statuses(statuses) or ("active",)
        qvec = np.asarray(qvec, dtype=np.float32).reshape(-1)
        with self._lock:
            self._require_namespace_cached(namespace)
            self._ensure_index()
            params = self._search_params(namespace, statuses)
            pairs = self._index.search(qvec, k, params)[0]  # type: ignore[union-attr]
            if min_score is not None:
                pairs = [(i, sc) for i, sc in pairs if sc >= min_score]
            if not pairs:
                return []
            # One query for the rows and one for their vectors, not one per hit: this is the hot path.
            ids = [i for i, _ in pairs]
            marks = ",".join("?" * len(ids))
            rows = {r["id"]: r for r in self._select(f"SELECT * FROM edits WHERE id IN ({marks})", ids)}
            vecs: dict[int, list[bytes]] = {}
            for edit_id, vec in self._conn.execute(
                    f"SELECT edit_id, vec FROM vectors WHERE edit_id IN ({marks}) ORDER BY edit_id, k", ids):
                vecs.setdefault(edit_id, []).append(vec)
        hits = []
        for edit_id, score in pairs:
            row = rows.get(edit_id)
            if row is None or row["namespace"] != namespace or row["status"] not in statuses:
                continue  # the row changed after the last sync; never serve it
            edit = _edit_from_row(row)
            texts = edit.search_texts()
            blobs = vecs.get(edit_id, [])
            vec = None  # the matched text's stored vector, when rows and texts line up
            if len(blobs) == len(texts) > 1:
                mat = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1)
                best = int(np.argmax(mat @ qvec))
                matched, vec = texts[best], mat[best]
            else:
                matched = texts[0] if texts else ""
                if len(blobs) == len(texts) == 1:
                    vec = np.frombuffer(blobs[0], dtype=np.float32)
            hits.append(SearchHit(edit, float(score), matched, vec))
        return hits

    def _select(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts, read at once."""
        return list(self.db.query(sql, list(params)))

    def _require_namespace_cached(self, name: str) -> None:
        # Namespaces are never deleted, so a name seen once stays valid.
        if name not in self._known_namespaces:
            self.require_namespace(name)
            self._known_namespaces.add(name)

    def _search_params(self, namespace: str, statuses: tuple[str, ...]) -> Any:
        """The FAISS selector for (namespace, statuses), cached per index generation.

        Returns None (no selector) when the allowed ids are exactly the index's
        ids, the common single-tenant case, so the search runs unfiltered.
        """
        key = (namespace, statuses)
        cached = self._selector_cache.get(key)
        if cached and cached[0] == self._index_gen:
            return cached[1]
        marks = ",".join("?" * len(statuses))
        allowed = np.fromiter((r[0] for r in self._conn.execute(
            f"SELECT id FROM edits WHERE namespace = ? AND status IN ({marks}) AND EXISTS "
            f"(SELECT 1 FROM vectors v WHERE v.edit_id = edits.id)", [namespace, *statuses])), dtype=np.int64)
        n_indexed = self._conn.execute("SELECT count(DISTINCT edit_id) FROM vectors").fetchone()[0]
        params = None if len(allowed) == n_indexed else self._index.selector(allowed)  # type: ignore[union-attr]
        self._selector_cache[key] = (self._index_gen, params)
        return params

    # ---- the index: open, sync, save, rebuild -----------------------------------
    def _ensure_index(self) -> None:
        """Load (or rebuild) the index on first use, then catch up with writes from any process."""
        if self._index is None:
            self._open_index()
        self._sync_index()

    def _open_index(self) -> None:
        # A store that recorded its embedder needs none to load its index (list, verify, forget stay fast);
        # an embedder already at hand is checked against the recorded one. FAISS loads here, on first use.
        from .index import VectorIndex

        dim = int(self._meta("dim") or self.embedder.dim)
        if self._embedder is not None and not isinstance(self._embedder, str):
            self._check_embedder()
        recorded_sha, recorded_gen = self._meta("index_sha256"), self._meta("index_gen")
        reason = None
        if not self.index_path.exists():
            reason = "no index file"
        elif recorded_sha is None or recorded_gen is None:
            reason = "no index checksum recorded"
        else:
            try:
                self._index = VectorIndex.load(self.index_path, dim, recorded_sha)
                self._index_gen = int(recorded_gen)
                self._sync_index()
                if not self._index_matches_db():
                    reason = "index ids do not match the database"
            except ValueError as exc:
                reason = str(exc)
        if reason:
            # A missing file is the normal first use; a present but wrong one is worth a warning.
            level = logging.WARNING if self.index_path.exists() else logging.INFO
            log.log(level, "rebuilding the vector index of %s: %s", self.path, reason)
            self.rebuild_index()

    def _index_matches_db(self) -> bool:
        db_ids = np.fromiter((r[0] for r in self._conn.execute("SELECT edit_id FROM vectors ORDER BY edit_id")),
                             dtype=np.int64)
        return self._index is not None and np.array_equal(self._index.ids(), db_ids)

    def rebuild_index(self) -> int:
        """Rebuild the FAISS index from the vectors kept in SQLite; returns the number of vectors."""
        from .index import VectorIndex

        with self._lock:
            dim = int(self._meta("dim") or self.embedder.dim)
            self._conn.execute("BEGIN")  # one consistent snapshot of vectors and generation
            try:
                gen = int(self._meta("generation") or 0)
                rows = self._conn.execute("SELECT edit_id, vec FROM vectors ORDER BY edit_id, k").fetchall()
            finally:
                self._conn.execute("COMMIT")
            index = VectorIndex(dim)
            if rows:
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
                index.add(ids, vecs)
            self._index, self._index_gen = index, gen
            self._selector_cache.clear()
            self.index_rebuilt = True
            self._save_index(force=True)
            return index.ntotal

    def _sync_index(self) -> None:
        """Apply every change committed since this process's index generation (from any process)."""
        with self._lock:
            if self._index is None:
                return
            gen = int(self._meta("generation") or 0)
            if gen == self._index_gen:
                return
            self._conn.execute("BEGIN")
            try:
                gen = int(self._meta("generation") or 0)
                changed = [r[0] for r in self._conn.execute("SELECT id FROM edits WHERE gen > ?", [self._index_gen])]
                rows = []
                for chunk in _chunks(changed, 900):
                    marks = ",".join("?" * len(chunk))
                    rows += self._conn.execute(
                        f"SELECT edit_id, vec FROM vectors WHERE edit_id IN ({marks}) ORDER BY edit_id, k", chunk).fetchall()
            finally:
                self._conn.execute("COMMIT")
            self._index.remove(np.array(changed, dtype=np.int64))
            if rows:
                dim = self._index.dim
                self._index.add(np.array([r[0] for r in rows], dtype=np.int64),
                                np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim))
            self._index_gen = gen
            self._selector_cache.clear()

    def _save_index_if_stale(self) -> None:
        if self._index is not None and str(self._index_gen) != self._meta("index_gen"):
            self._save_index()

    @contextmanager
    def _index_lock(self) -> Iterator[None]:
        """This thread's lock and the index file lock, which keeps savers in every process apart."""
        with self._lock, open(self.path.with_suffix(".faiss.lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _sweep(self) -> None:
        """Remove temporary index files a crashed writer left; the caller holds :meth:`_index_lock`."""
        self.removed_leftovers += [str(p) for p in sweep_leftovers(self.index_path)]

    def _save_index(self, force: bool = False) -> None:
        """Write the index file and record its checksum, under the index file lock."""
        with self._index_lock():
            if self._index is None:
                return
            self._sweep()  # no save is in progress: a temporary file now is a crash's leftover
            self._sync_index()
            recorded = self._meta("index_gen")
            if not force and recorded is not None and int(recorded) >= self._index_gen:
                return  # another process already saved this generation or a newer one
            digest = self._index.save(self.index_path)
            with self._write():
                self._set_meta("index_sha256", digest)
                self._set_meta("index_gen", str(self._index_gen))

    def flush(self) -> None:
        """Persist the index file now (it is otherwise written on close and after forget)."""
        with self._lock:
            self._ensure_index()
            self._save_index_if_stale()

    def check_index(self) -> dict[str, Any]:
        """Compare the index with the database without changing either."""
        with self._lock:
            self._ensure_index()
            return {"vectors_in_db": self.db.table("vectors").count, "vectors_in_index": self._index.ntotal,  # type: ignore[union-attr]
                    "consistent": self._index_matches_db(), "generation": self._index_gen,
                    "embedder": self._meta("embedder"), "dim": self._meta("dim")}

    # ---- audit ----------------------------------------------------------------
    def verify(self) -> VerifyReport:
        """Recompute the event hash chain, every live edit's content hash and every stored vector's hash.

        Leftover temporary index files are removed and listed in the report's
        ``removed_leftovers`` (with any this object removed when it opened).
        """
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                pages = [f"database file: {r[0]}" for r in self._conn.execute("PRAGMA integrity_check(20)")]
                pages = [] if pages == ["database file: ok"] else pages
                try:
                    rows = list(self.db.query("SELECT * FROM events ORDER BY seq"))
                    edits = list(self.db.query("SELECT * FROM edits"))
                    head, count, dim = self._meta("head_hash"), self._meta("event_count"), self._meta("dim")
                    live = {e["id"] for e in edits if e["status"] != "forgotten"}
                    vec_problems, damaged = vector_hashes.check_vectors(self._conn.execute(
                        "SELECT edit_id, k, vec, CAST(sha256 AS BLOB) FROM vectors ORDER BY edit_id, k"), live,
                        int(dim) if dim else None)
                except sqlite3.DatabaseError:
                    if not pages:
                        raise
                    return VerifyReport(ok=False, events=0, edits=0, problems=pages, head_hash="")
            finally:
                self._conn.execute("COMMIT")
            if leftovers(self.index_path):
                with self._index_lock():
                    self._sweep()
        report = verify_rows(rows, edits, head, count)
        problems = pages + report.problems + vec_problems
        return replace(report, ok=not problems, problems=problems, damaged_vectors=damaged,
                       removed_leftovers=list(self.removed_leftovers))

    def repair_vectors(self, edit_ids: Sequence[int] | None = None, *, actor: str | None = None) -> list[int]:
        """Re-embed the vectors of ``edit_ids`` (default: those :meth:`verify` finds damaged); returns the ids repaired."""
        ids = list(self.verify().damaged_vectors if edit_ids is None else [check_id(i) for i in edit_ids])
        if ids:
            vector_hashes.reembed(self, ids, actor=actor)
        return ids

    # ---- transfer -------------------------------------------------------------
    def export_jsonl(self, out: Any, namespace: str | None = None) -> int:
        """Write edits (tombstones included) as JSON lines; see :mod:`memedit.store.transfer`."""
        from .transfer import export_jsonl

        return export_jsonl(self, out, namespace)

    def import_jsonl(self, source: Any, *, actor: str | None = None, skip_existing: bool = False,
                     progress: bool = False) -> dict[str, Any]:
        """Read edits written by :meth:`export_jsonl`, all or nothing; see :mod:`memedit.store.transfer`."""
        from .transfer import import_jsonl

        return import_jsonl(self, source, actor=actor, skip_existing=skip_existing, progress=progress)


def _fresh(path: Path) -> bool:
    """Whether ``path`` is a store to create, or may be one another process is creating right now.

    A creator takes the index file lock (creating the lock file) before SQLite creates the database file, so
    a zero-byte database without a lock file beside it is no store in the making: it is refused at once.
    """
    try:
        return path.stat().st_size == 0 and path.with_suffix(".faiss.lock").exists()
    except FileNotFoundError:
        return True


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text
