"""PgEditStore: the edit memory on PostgreSQL + pgvector, shared by many replicas.

>>> from memedit import Edit
>>> from memedit.store.postgres import PgEditStore
>>> with PgEditStore("postgresql://memedit@db/memedit") as store:          # doctest: +SKIP
...     e = store.add(Edit.fact("the US", "The current president of {} is", "Trump"))
...     [hit.edit.id for hit in store.search("Who is the US president?")] == [e.id]
True

Same interface and semantics as :class:`memedit.store.EditStore`, so
``open_store("postgresql://...")`` is the only change above the store.

Concurrency is the database's. Every write is one transaction that first
takes one transaction-scoped advisory lock (``pg_advisory_xact_lock``):
the hash-chained event log is a total order anyway, so writers from any
number of replicas are serialized and each sees every earlier commit. Two
replicas correcting the same fact at once therefore end with exactly one
active edit, the other superseded, both in history. Reads take no lock.

Vector search runs inside PostgreSQL, one SQL statement per search: an HNSW
cosine index (``vector_cosine_ops``) with the namespace and status filter in
the same query (both kept on the ``vectors`` rows), joined to the edit rows.
When the filtered index scan yields fewer than ``k`` edits although the
namespace has more, the search is repeated exactly (no index), so a small
tenant in a big store still gets its nearest edits.

**Forget guarantee.** ``forget`` deletes the edit's vectors and content and
marks it forgotten in one transaction. A search is one statement run on its
own snapshot, and it reads the status and vectors in that statement, so any
search *started* after the forget's COMMIT returned, on any replica
connected to this primary, never returns the forgotten edit. (A search
already running when the forget commits may still return it, as with any
read that began first. Replicas reading from a streaming standby instead of
the primary need ``synchronous_commit = remote_apply`` for the same
guarantee.) The old row versions are then vacuumed; PostgreSQL gives no
byte-level erasure of free page space, WAL or backups: see docs/POSTGRES.md.

**Lost connections.** A write whose connection breaks before COMMIT was sent
is retried on a new connection (nothing of it landed); one that breaks
during COMMIT raises :class:`StoreError` saying the outcome is unknown.
Reads retry. Reconnection waits up to ``reconnect_s`` (a server restart).

**Weight commits.** The ledger rows live in ``commits`` and each commit's
deltas in a ``commit_blobs`` row written in the same transaction, so every
replica that sees a commit can replay it, and forgetting an edit deletes its
commits' deltas in the forget's own transaction (:mod:`memedit.store.deltas`).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from ..config import DEFAULT_NAMESPACE
from ..edits import LIVE_STATUSES, Edit, clean_text, utcnow, validate_namespace
from ..errors import ConflictError, NotFoundError, StoreError, ValidationError, check_id
from .chain import GENESIS, Event, canonical_json, event_hash
from .common import (CONTENT_COLUMNS, MAX_QUERY, TEXT_COLUMNS, SearchHit, VerifyReport, check_k, check_list_window,
                     checked_new_edit, edit_from_row, extra_filters, like_pattern, new_edit_row, progress, statuses, verify_rows)
from . import vectors as vector_hashes
from .deltas import PgDeltaBlobs, drop_commits_with
from .pg_schema import apply_migrations, fix_dimension, has_schema
from .target import URL_PREFIXES, is_postgres_url, redact  # noqa: F401 - this module's names since issue 7

log = logging.getLogger(__name__)

T = TypeVar("T")
WRITE_LOCK = 0x6D656D65646974  # "memedit": the one advisory lock every write transaction takes first
RECONNECT_S = 30.0


class _Lost(Exception):
    """The connection broke before COMMIT was sent: nothing landed, the transaction may be retried."""


class PgEditStore:
    """A durable, audited store of edits on PostgreSQL with pgvector search.

    ``url``: ``postgresql://user:password@host:port/dbname`` (any libpq
    connection string). The database must allow ``CREATE EXTENSION vector``
    the first time (or have it already). The embedder loads lazily.
    """

    backend = "postgres"

    def __init__(self, url: str, *, embedder: Any = None, create: bool = True, reconnect_s: float = RECONNECT_S,
                 vacuum_on_forget: bool = True):
        try:
            import psycopg  # noqa: F401
            import pgvector.psycopg  # noqa: F401
        except ImportError as exc:
            raise StoreError("the PostgreSQL store needs psycopg and pgvector: pip install 'memedit[postgres]'") from exc
        if not is_postgres_url(url):
            raise ValidationError(f"a PostgreSQL store is named by a postgresql:// URL, not {url!r}")
        self.url = url
        self.path = None  # no file: the SQLite store's path has no counterpart here
        self.reconnect_s = reconnect_s
        self.vacuum_on_forget = vacuum_on_forget
        self.index_rebuilt = False
        self._lock = threading.RLock()
        self._embedder = embedder
        self._conn_: Any = None
        self._in_tx = False
        self._ef_search = 0
        self._known_namespaces: set[str] = set()
        self._closed = False
        self.db = _QmarkDB(self)
        self._conn = _QmarkConn(self)
        conn = self._connect(register=False)
        if not create and not has_schema(conn):
            self.close()
            raise NotFoundError(f"no memedit store in {redact(url)}")

        def init() -> None:
            conn = self._c()
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            if 7 in apply_migrations(conn):  # hashes for the vectors stored before they had one
                rows = conn.execute("SELECT edit_id, k, vec::real[] AS v, NULL AS sha256 FROM vectors").fetchall()
                with conn.cursor() as cur:
                    cur.executemany("UPDATE vectors SET sha256 = %s WHERE edit_id = %s AND k = %s",
                                    [(vector_hashes.vector_digest(e, k, b), e, k)
                                     for e, k, b, _ in vector_hashes.float_rows(rows)])
            if self._meta("generation") is None:
                self._set_meta("generation", "0")
                self._set_meta("created_at", utcnow())
            if not self._row("SELECT 1 FROM namespaces WHERE name = %s", [DEFAULT_NAMESPACE]):
                self._insert_namespace(DEFAULT_NAMESPACE, None)

        self._tx(init)
        self._register()

    # ---- connections ------------------------------------------------------------
    def _connect(self, register: bool = True) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        if self._closed:
            raise StoreError("the store is closed")
        deadline = time.monotonic() + self.reconnect_s
        delay = 0.05
        while True:
            try:
                self._conn_ = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, connect_timeout=10)
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline or _permanent(exc):
                    raise StoreError(f"cannot connect to {redact(self.url)}: {str(exc).strip()}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        self._ef_search = 0
        if register:
            self._register()
        return self._conn_

    def _register(self) -> None:
        from pgvector.psycopg import register_vector

        register_vector(self._conn_)

    def _c(self) -> Any:
        """The live connection (reconnecting outside a transaction if it broke)."""
        conn = self._conn_
        if conn is None or conn.closed or conn.broken:
            if self._in_tx:
                raise _Lost()
            conn = self._connect()
        return conn

    def _drop_connection(self) -> None:
        conn, self._conn_ = self._conn_, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is already broken; closing is only tidying up
                pass

    def _is_lost(self) -> bool:
        conn = self._conn_
        return conn is None or conn.closed or conn.broken

    # ---- lifecycle ----------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn_ is not None:
                self._conn_.close()
                self._conn_ = None

    def __enter__(self) -> PgEditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PgEditStore({redact(self.url)!r})"

    @property
    def embedder(self) -> Any:
        if self._embedder is None or isinstance(self._embedder, str):
            from ..embeddings import DEFAULT_EMBEDDER, Embedder

            self._embedder = Embedder.shared(self._embedder or self._meta("embedder") or DEFAULT_EMBEDDER)
        return self._embedder

    @property
    def delta_blobs(self) -> PgDeltaBlobs:
        """The weight-commit deltas, as ``commit_blobs`` rows every replica reads."""
        return PgDeltaBlobs(self)

    # ---- transactions -----------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, as the SQLite store's ``_write`` (used by the transfer and ledger code)."""
        try:
            with self._write_raw():
                yield
        except _Lost:
            raise StoreError(f"lost the connection to {redact(self.url)} before commit; nothing was written, "
                             "try again") from None

    @contextmanager
    def _write_raw(self) -> Iterator[None]:
        """One transaction holding the store's write lock; raises :class:`_Lost` if the link broke before COMMIT."""
        import psycopg

        with self._lock:
            if self._in_tx:  # nested: part of the caller's transaction
                yield
                return
            conn = self._c()
            self._in_tx = True
            try:
                try:
                    conn.execute("BEGIN")
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK])
                    yield
                except BaseException as exc:
                    if self._is_lost():
                        raise _Lost() from exc
                    try:
                        conn.execute("ROLLBACK")
                    except psycopg.Error:
                        pass
                    if isinstance(exc, psycopg.Error):
                        raise StoreError(f"store {redact(self.url)}: {str(exc).strip()}") from exc
                    raise
                try:
                    conn.execute("COMMIT")
                except psycopg.Error as exc:
                    if self._is_lost():
                        raise StoreError("the connection to the database was lost while committing; the change may "
                                         "or may not have landed (check with get/list before retrying)") from exc
                    raise StoreError(f"could not commit to {redact(self.url)}: {str(exc).strip()}") from exc
            finally:
                self._in_tx = False

    def _tx(self, body: Callable[[], T]) -> T:
        """Run ``body`` in one write transaction, again on a new connection if the link broke before COMMIT."""
        deadline = time.monotonic() + self.reconnect_s
        while True:
            try:
                with self._write_raw():
                    return body()
            except _Lost:
                if self._in_tx or time.monotonic() > deadline:
                    raise StoreError(f"lost the connection to {redact(self.url)} and could not get it back") from None
                log.warning("connection to %s lost before commit; retrying the transaction", redact(self.url))
                time.sleep(0.2)
                with self._lock:
                    self._drop_connection()  # _c() reconnects

    def _read(self, fn: Callable[[Any], T]) -> T:
        """Run a read on the connection, retried on a new one if the link broke (reads are idempotent)."""
        import psycopg

        deadline = time.monotonic() + self.reconnect_s
        while True:
            with self._lock:
                try:
                    return fn(self._c())
                except psycopg.OperationalError as exc:
                    if self._in_tx or not self._is_lost():
                        if self._in_tx and self._is_lost():
                            raise _Lost() from exc
                        raise StoreError(f"store {redact(self.url)}: {str(exc).strip()}") from exc
                    if time.monotonic() > deadline:
                        raise StoreError(f"lost the connection to {redact(self.url)}: {str(exc).strip()}") from exc
                    self._drop_connection()
            time.sleep(0.2)

    def _select(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        return self._read(lambda c: c.execute(sql, params).fetchall())

    def _row(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self._select(sql, params)
        return rows[0] if rows else None

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if not self._in_tx:
            raise StoreError("internal: a write outside a transaction")
        return self._read(lambda c: c.execute(sql, params))

    def _meta(self, key: str) -> str | None:
        row = self._row("SELECT value FROM meta WHERE key = %s", [key])
        return row["value"] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._exec("INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
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
        # one round trip: the event and the recorded chain head/count
        self._exec("WITH ev AS (INSERT INTO events(seq, ts, namespace, edit_id, kind, actor, payload, prev_hash, hash) "
                   "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)) "
                   "INSERT INTO meta(key, value) VALUES ('head_hash', %s), ('event_count', %s) "
                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                   (seq, ts, namespace, edit_id, kind, actor, body, prev, digest, digest, str(seq)))
        return Event(seq, ts, namespace, edit_id, kind, actor, payload or {}, prev, digest)

    # ---- namespaces ---------------------------------------------------------------
    def _insert_namespace(self, name: str, actor: str | None) -> None:
        self._exec("INSERT INTO namespaces(name, created_at) VALUES (%s, %s)", (name, utcnow()))
        self._append_event("namespace", namespace=name, actor=actor, payload={"action": "create"})

    def create_namespace(self, name: str, *, actor: str | None = None, exist_ok: bool = True) -> str:
        """Create a namespace (tenant or user). Adding an edit creates its namespace too."""
        validate_namespace(name)

        def body() -> None:
            if self._row("SELECT 1 FROM namespaces WHERE name = %s", [name]):
                if not exist_ok:
                    raise ConflictError(f"namespace {name!r} already exists")
                return
            self._insert_namespace(name, actor)

        self._tx(body)
        return name

    def namespaces(self) -> list[dict[str, Any]]:
        """Every namespace with its number of live edits."""
        return self._select(
            "SELECT n.name, n.created_at, "
            "(SELECT count(*) FROM edits e WHERE e.namespace = n.name AND e.status IN ('active','pending')) AS live "
            "FROM namespaces n ORDER BY n.name COLLATE \"C\"")

    def require_namespace(self, name: str) -> str:
        """Return ``name`` if it exists, else raise NotFoundError (a typo must not read as 'no edits')."""
        validate_namespace(name)
        if not self._row("SELECT 1 FROM namespaces WHERE name = %s", [name]):
            known = ", ".join(r["name"] for r in self._select(
                "SELECT name FROM namespaces ORDER BY name COLLATE \"C\" LIMIT 20"))
            raise NotFoundError(f"namespace {name!r} does not exist (known: {known})")
        return name

    def _require_namespace_cached(self, name: str) -> None:
        if name not in self._known_namespaces:  # namespaces are never deleted
            self.require_namespace(name)
            self._known_namespaces.add(name)

    # ---- adding -------------------------------------------------------------------
    def add(self, edit: Edit, *, status: str | None = None, actor: str | None = None) -> Edit:
        """Store one validated edit; returns the stored edit (with id)."""
        return self.add_many([edit], status=status, actor=actor)[0]

    def add_many(self, edits: Iterable[Edit], *, status: str | None = None, actor: str | None = None,
                 batch_size: int = 256, progress: bool = False) -> list[Edit]:
        """Store many edits; each batch is one transaction (see :meth:`EditStore.add_many`)."""
        items = [self._checked(e, status) for e in edits]
        stored: list[Edit] = []
        bar = _bar(len(items), "adding edits", progress)
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            texts = [e.search_texts() for e in batch]
            vecs = self.embedder.encode([t for ts in texts for t in ts])
            self._check_embedder()

            def body(batch: list[Edit] = batch, texts: list[list[str]] = texts, vecs: np.ndarray = vecs) -> list[Edit]:
                gen = self._next_gen()
                out, offset = [], 0
                for edit, ts in zip(batch, texts):
                    out.append(self._insert(edit, vecs[offset:offset + len(ts)], gen, actor, "add"))
                    offset += len(ts)
                return out

            stored += self._tx(body)
            bar.update(len(batch))
        bar.close()
        return stored

    def _checked(self, edit: Edit, status: str | None) -> Edit:
        return checked_new_edit(edit, status)

    def _check_embedder(self) -> None:
        name, dim = self._meta("embedder"), self._meta("dim")
        if name is None:
            def body() -> None:
                if self._meta("embedder") is None:  # another replica may have recorded it meanwhile
                    self._set_meta("embedder", self.embedder.name)
                    self._set_meta("dim", str(self.embedder.dim))
                    fix_dimension(self._c(), int(self.embedder.dim))

            self._tx(body)
            name, dim = self._meta("embedder"), self._meta("dim")
        if name != self.embedder.name or int(dim or 0) != self.embedder.dim:
            raise StoreError(
                f"this store's vectors were made with embedder {name!r} (dim {dim}); "
                f"it was opened with {self.embedder.name!r} (dim {self.embedder.dim}). Open it with the same embedder."
            )

    def _insert(self, edit: Edit, vecs: np.ndarray, gen: int, actor: str | None, event_kind: str,
                keep: dict[str, Any] | None = None) -> Edit:
        """Insert one edit row, its vectors and its event; the caller holds the write transaction."""
        ns = edit.namespace
        if not self._row("SELECT 1 FROM namespaces WHERE name = %s", [ns]):
            self._insert_namespace(ns, actor)
        row = new_edit_row(edit, gen, keep)
        cols = ", ".join(row)
        stored = self._exec(f"INSERT INTO edits({cols}) VALUES ({', '.join(['%s'] * len(row))}) RETURNING *",
                            list(row.values())).fetchone()
        edit_id = int(stored["id"])
        if "id" in row:  # an import kept its id: move the sequence past it so later ids never collide
            self._exec("SELECT setval(pg_get_serial_sequence('edits', 'id'), greatest(%s, "
                       "(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM edits_id_seq)))", [edit_id])
        self._insert_vectors(edit_id, vecs, ns, edit.status)
        self._append_event(event_kind, namespace=ns, edit_id=edit_id, actor=actor,
                           payload={"uid": row["uid"], "content_hash": row["content_hash"], "status": edit.status})
        changed = False
        if event_kind == "add" and edit.status == "active":
            changed = self._supersede_same_key(edit_id, gen, actor, key=stored)
        elif event_kind == "add" and edit.status == "pending" and edit.kind == "fact":
            old = self._live_same_key(edit_id, statuses=("active",), key=stored)
            if old:
                self._exec("UPDATE edits SET supersedes = %s WHERE id = %s", (old[0], edit_id))
                changed = True
        return self._get(edit_id) if changed else edit_from_row(stored)

    def _insert_vectors(self, edit_id: int, vecs: np.ndarray, namespace: str, status: str) -> None:
        """Store an edit's vectors with their hashes (of the float32 bytes pgvector keeps exactly)."""
        rows = [(e, k, namespace, status, np.frombuffer(blob, dtype=np.float32), digest)
                for e, k, blob, digest in vector_hashes.vector_rows(edit_id, vecs)]
        sql = "INSERT INTO vectors(edit_id, k, namespace, status, vec, sha256) VALUES (%s, %s, %s, %s, %s, %s)"
        if len(rows) == 1:
            self._exec(sql, rows[0])
        elif rows:
            with self._c().cursor() as cur:
                cur.executemany(sql, rows)

    def _live_same_key(self, edit_id: int, statuses: Sequence[str] = LIVE_STATUSES,
                       key: dict[str, Any] | None = None) -> list[int]:
        return [r["id"] for r in self._same_key_rows(edit_id, statuses, key)]

    def _same_key_rows(self, edit_id: int, statuses: Sequence[str], key: dict[str, Any] | None) -> list[dict[str, Any]]:
        row = key or self._row("SELECT namespace, subject_key, relation_key, kind FROM edits WHERE id = %s", [edit_id])
        if not row or row["kind"] != "fact":
            return []
        return self._select(
            "SELECT id, status FROM edits WHERE namespace = %s AND subject_key = %s AND relation_key = %s AND id != %s "
            "AND status = ANY(%s) ORDER BY id DESC",
            [row["namespace"], row["subject_key"], row["relation_key"], edit_id, list(statuses)])

    def _supersede_same_key(self, new_id: int, gen: int, actor: str | None, key: dict[str, Any] | None = None) -> bool:
        olds = self._same_key_rows(new_id, LIVE_STATUSES, key)  # pending ones are obsolete too
        active = [r["id"] for r in olds if r["status"] == "active"]
        for r in olds:
            self._mark_superseded(r["id"], new_id, gen, actor)
        if olds:  # the link names the answer being replaced: the active predecessor if there was one
            self._exec("UPDATE edits SET supersedes = %s WHERE id = %s", ((active or [olds[0]["id"]])[0], new_id))
        return bool(olds)

    def _mark_superseded(self, old_id: int, new_id: int, gen: int, actor: str | None) -> None:
        ns = self._exec("UPDATE edits SET status = 'superseded', superseded_by = %s, updated_at = %s, gen = %s "
                        "WHERE id = %s RETURNING namespace", (new_id, utcnow(), gen, old_id)).fetchone()["namespace"]
        self._append_event("supersede", namespace=ns, edit_id=old_id, actor=actor, payload={"by": new_id})

    def _sync_index(self) -> None:
        """Nothing to sync: the index lives in the database (kept for code shared with the SQLite store)."""

    # ---- lifecycle of an edit ---------------------------------------------------------
    def approve(self, edit_id: int, *, actor: str | None = None) -> Edit:
        """Make a pending edit active; it then supersedes live edits of the same subject and relation."""
        def body() -> None:
            edit = self._get(edit_id)
            if edit.status != "pending":
                raise ConflictError(f"edit {edit_id} is {edit.status}, only pending edits can be approved")
            gen = self._next_gen()
            self._exec("UPDATE edits SET status = 'active', updated_at = %s, gen = %s WHERE id = %s",
                       (utcnow(), gen, edit_id))
            self._append_event("approve", namespace=edit.namespace, edit_id=edit_id, actor=actor)
            self._supersede_same_key(edit_id, gen, actor)

        self._tx(body)
        return self.get(edit_id)

    def reject(self, edit_id: int, *, actor: str | None = None, reason: str | None = None) -> Edit:
        """Refuse a pending edit; it stays in history but never answers."""
        def body() -> None:
            edit = self._get(edit_id)
            if edit.status != "pending":
                raise ConflictError(f"edit {edit_id} is {edit.status}, only pending edits can be rejected")
            gen = self._next_gen()
            self._exec("UPDATE edits SET status = 'rejected', updated_at = %s, gen = %s WHERE id = %s",
                       (utcnow(), gen, edit_id))
            self._append_event("reject", namespace=edit.namespace, edit_id=edit_id, actor=actor,
                               payload={"reason_given": True} if reason else {})
            if reason:
                self._exec("INSERT INTO notes(edit_id, ts, kind, actor, text) VALUES (%s,%s,%s,%s,%s)",
                           (edit_id, utcnow(), "reject", actor, clean_text(reason, "reason", MAX_QUERY, multiline=True)))

        self._tx(body)
        return self.get(edit_id)

    def supersede(self, old_id: int, new: Edit, *, actor: str | None = None) -> Edit:
        """Replace edit ``old_id`` with ``new`` (same namespace); the old one stays in history."""
        old = self.get(old_id)
        if old.status not in LIVE_STATUSES:
            raise ConflictError(f"edit {old_id} is {old.status}; only pending or active edits can be superseded")
        new = self._checked(replace(new, namespace=old.namespace), "active")
        vecs = self.embedder.encode(new.search_texts())
        self._check_embedder()

        def body() -> Edit:
            if self._get(old_id).status not in LIVE_STATUSES:  # re-check under the lock
                raise ConflictError(f"edit {old_id} changed while superseding; try again")
            gen = self._next_gen()
            stored = self._insert(new, vecs, gen, actor, "add")
            if self._get(old_id).status in LIVE_STATUSES:
                self._mark_superseded(old_id, stored.id, gen, actor)  # type: ignore[arg-type]
            self._exec("UPDATE edits SET supersedes = %s WHERE id = %s", (old_id, stored.id))
            return stored

        stored = self._tx(body)
        return self.get(stored.id)  # type: ignore[arg-type]

    def forget(self, edit_id: int, *, actor: str | None = None, reason: str | None = None) -> dict[str, Any]:
        """Erase an edit: content, vectors, usage and notes leave the database in one transaction.

        Once this returns, no search started afterwards on any replica can
        return the edit (see the module docstring). The row stays as a
        tombstone so the event chain still verifies. Old row versions are
        then vacuumed (``checkpoint_complete`` says whether that ran).
        """
        def body() -> list[int]:
            edit = self._get(edit_id)
            if edit.status == "forgotten":
                raise ConflictError(f"edit {edit_id} is already forgotten")
            gen = self._next_gen()
            sets = ", ".join(f"{c} = NULL" for c in CONTENT_COLUMNS)
            tomb = self._exec(f"UPDATE edits SET {sets}, status = 'forgotten', updated_at = %s, gen = %s WHERE id = %s "
                              "RETURNING content_hash", (utcnow(), gen, edit_id)).fetchone()["content_hash"]
            self._exec("DELETE FROM vectors WHERE edit_id = %s", (edit_id,))
            self._exec("DELETE FROM usage WHERE edit_id = %s", (edit_id,))
            self._exec("DELETE FROM notes WHERE edit_id = %s", (edit_id,))
            self._append_event("forget", namespace=edit.namespace, edit_id=edit_id, actor=actor,
                               payload={"tombstone": tomb, **({"reason_given": True} if reason else {})})
            dropped, blobs = drop_commits_with(self, edit_id, actor)
            self.delta_blobs.erase(blobs)  # in the same transaction: no replica sees a dropped commit's deltas
            return dropped

        dropped = self._tx(body)
        vacuumed = self.checkpoint() if self.vacuum_on_forget else False
        return {"id": edit_id, "forgotten": True, "checkpoint_complete": vacuumed, "index_saved": True,
                "commits_dropped": dropped}

    def checkpoint(self) -> bool:
        """VACUUM the tables forget touches, so dead row versions leave the table pages; True when it ran."""
        import psycopg

        try:
            self._read(lambda c: c.execute("VACUUM edits, vectors, usage, notes, commits, commit_blobs"))
            return True
        except (psycopg.Error, StoreError) as exc:
            log.warning("VACUUM after forget did not run: %s", exc)
            return False

    def record_use(self, edit_ids: Sequence[int], *, question: str | None = None,
                   scores: Sequence[float] | None = None, route: str | None = None) -> None:
        """Count that these edits answered a question."""
        if not edit_ids:
            return
        scores = list(scores) if scores is not None else [None] * len(edit_ids)  # type: ignore[list-item]
        now = utcnow()

        def body() -> None:
            for edit_id, score in zip(edit_ids, scores):
                edit = self._get(edit_id)
                self._exec("UPDATE edits SET usage_count = usage_count + 1, last_used_at = %s WHERE id = %s",
                           (now, edit_id))
                self._exec("INSERT INTO usage(edit_id, ts, question, score, route) VALUES (%s,%s,%s,%s,%s)",
                           (edit_id, now, question, score, route))
                self._append_event("use", namespace=edit.namespace, edit_id=edit_id,
                                   payload={"route": route} if route else {})

        self._tx(body)

    def mark_committed(self, edit_ids: Sequence[int], commit_id: int, *, committed: bool = True,
                       actor: str | None = None, kind: str | None = None) -> None:
        """Record that these edits now live in (or left) the weights."""
        def body() -> None:
            for edit_id in edit_ids:
                edit = self._get(edit_id)
                self._exec("UPDATE edits SET committed = %s, updated_at = %s WHERE id = %s",
                           (int(committed), utcnow(), edit_id))
                self._append_event(kind or ("commit" if committed else "revert"), namespace=edit.namespace,
                                   edit_id=edit_id, actor=actor, payload={"commit": commit_id})

        self._tx(body)

    # ---- reading --------------------------------------------------------------------
    def _get(self, edit_id: int) -> Edit:
        row = self._row("SELECT * FROM edits WHERE id = %s", [check_id(edit_id)])
        if row is None:
            raise NotFoundError(f"no edit with id {edit_id}")
        return edit_from_row(row)

    def get(self, edit_id: int) -> Edit:
        """The edit with this id (forgotten edits come back as content-less tombstones)."""
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
        rows = self._select(f"SELECT * FROM edits {where} ORDER BY id DESC LIMIT %s OFFSET %s", [*params, limit, offset])
        return [edit_from_row(r) for r in rows]

    def count(self, namespace: str | None = None, *, status: str | Sequence[str] | None = None,
              author: str | None = None, text: str | None = None, **filters: Any) -> int:
        where, params = self._filters(namespace, status, author, text, **filters)
        return int(self._row(f"SELECT count(*) AS n FROM edits {where}", params)["n"])  # type: ignore[index]

    def _filters(self, namespace: str | None, status: str | Sequence[str] | None, author: str | None,
                 text: str | None, *, source: str | None = None, committed: bool | None = None,
                 min_uses: int | None = None, since: str | None = None,
                 until: str | None = None) -> tuple[str, list[Any]]:
        clauses, params = extra_filters("%s", source=source, committed=committed, min_uses=min_uses, since=since,
                                        until=until, ilike="ILIKE")
        if namespace is not None:
            clauses.append("namespace = %s")
            params.append(self.require_namespace(namespace))
        wanted = statuses(status)
        if wanted:
            clauses.append("status = ANY(%s)")
            params.append(list(wanted))
        if author is not None:
            clauses.append("author = %s")
            params.append(author)
        if text:
            # ILIKE: SQLite's LIKE, which the other store uses, ignores case too
            clauses.append("(" + " OR ".join(f"{c} ILIKE %s ESCAPE '\\'" for c in TEXT_COLUMNS) + ")")
            params.extend([like_pattern(text)] * len(TEXT_COLUMNS))
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    def history(self, edit_id: int) -> list[Event]:
        """Every event about this edit, oldest first."""
        self.get(edit_id)
        return [Event.from_row(r) for r in self._select("SELECT * FROM events WHERE edit_id = %s ORDER BY seq", [edit_id])]

    def events(self, namespace: str | None = None, *, since: int = 0, limit: int = 1000) -> list[Event]:
        where = "WHERE seq > %s" + (" AND namespace = %s" if namespace else "")
        params: list[Any] = [since] + ([namespace] if namespace else [])
        return [Event.from_row(r) for r in self._select(f"SELECT * FROM events {where} ORDER BY seq LIMIT %s",
                                                        [*params, limit])]

    def notes(self, edit_id: int) -> list[dict[str, Any]]:
        """Free-text notes about an edit (rejection reasons), oldest first; erased by forget."""
        return self._select("SELECT ts, kind, actor, text FROM notes WHERE edit_id = %s ORDER BY id", [edit_id])

    def usage(self, edit_id: int, limit: int = 50) -> list[dict[str, Any]]:
        """Recent questions that were answered through this edit."""
        return self._select("SELECT ts, question, score, route FROM usage WHERE edit_id = %s ORDER BY id DESC LIMIT %s",
                            [edit_id, limit])

    # ---- search -------------------------------------------------------------------------
    def search(self, query: str, namespace: str = DEFAULT_NAMESPACE, *, k: int = 5,
               statuses: Sequence[str] = ("active",), min_score: float | None = None) -> list[SearchHit]:
        """Edits in ``namespace`` nearest to ``query`` by cosine similarity, best first."""
        query = clean_text(query, "query", MAX_QUERY, multiline=True)  # type: ignore[assignment]
        qvec = self.embedder.encode([query])[0]
        return self.search_vector(qvec, namespace, k=k, statuses=statuses, min_score=min_score)

    def search_vector(self, qvec: np.ndarray, namespace: str = DEFAULT_NAMESPACE, *, k: int = 5,
                      statuses: Sequence[str] = ("active",), min_score: float | None = None) -> list[SearchHit]:
        """Like :meth:`search` for an already-embedded query (unit vector): one SQL statement."""
        check_k(k)
        wanted = _statuses_or_active(statuses)
        qvec = np.asarray(qvec, dtype=np.float32).reshape(-1)
        self._require_namespace_cached(namespace)
        fetch = max(k * 4, k + 8)
        rows = self._read(lambda c: self._search_rows(c, qvec, namespace, wanted, k, fetch, exact=False))
        if len(rows) < k:
            # The filtered index scan may stop short (HNSW hands back at most ef_search candidates before the
            # namespace/status filter): when the namespace holds more edits, search it exactly.
            more = self._row("SELECT count(DISTINCT edit_id) AS n FROM vectors WHERE namespace = %s AND status = ANY(%s)",
                             [namespace, list(wanted)])
            if more and more["n"] > len(rows):
                rows = self._read(lambda c: self._search_rows(c, qvec, namespace, wanted, k, None, exact=True))
        hits = []
        for row in rows:
            score = 1.0 - float(row.pop("hit_d"))
            which = int(row.pop("hit_k"))
            if min_score is not None and score < min_score:
                continue
            edit = edit_from_row(row)
            texts = edit.search_texts()
            hits.append(SearchHit(edit, score, texts[which] if which < len(texts) else (texts[0] if texts else "")))
        return hits

    def _search_rows(self, conn: Any, qvec: np.ndarray, namespace: str, wanted: tuple[str, ...], k: int,
                     fetch: int | None, exact: bool) -> list[dict[str, Any]]:
        if not exact and fetch and fetch > self._ef_search:
            ef = max(40, fetch)
            conn.execute(f"SET hnsw.ef_search = {int(ef)}")
            self._ef_search = ef
        # `+ 0` hides the distance from the planner's index matching: an exact scan of the filtered rows.
        order = "(vec <=> %(q)s) + 0" if exact else "vec <=> %(q)s"
        limit = "LIMIT %(fetch)s" if fetch else ""
        sql = (
            "WITH c AS (SELECT edit_id, k, vec <=> %(q)s AS d FROM vectors "
            f"WHERE namespace = %(ns)s AND status = ANY(%(st)s) ORDER BY {order} {limit}), "
            "b AS (SELECT DISTINCT ON (edit_id) edit_id, k, d FROM c ORDER BY edit_id, d) "
            "SELECT e.*, b.k AS hit_k, b.d AS hit_d FROM b JOIN edits e ON e.id = b.edit_id "
            "WHERE e.namespace = %(ns)s AND e.status = ANY(%(st)s) ORDER BY b.d, e.id LIMIT %(k)s"
        )
        return conn.execute(sql, {"q": qvec, "ns": namespace, "st": list(wanted), "fetch": fetch, "k": k}).fetchall()

    # ---- the index (inside PostgreSQL) -----------------------------------------------------
    def flush(self) -> None:
        """Nothing to persist outside the database (kept for interface parity)."""

    def rebuild_index(self) -> int:
        """REINDEX the HNSW index; returns the number of vectors."""
        if self._meta("dim") is not None:
            self._read(lambda c: c.execute("REINDEX INDEX vectors_hnsw"))
        self.index_rebuilt = True
        return int(self._row("SELECT count(*) AS n FROM vectors")["n"])  # type: ignore[index]

    def check_index(self) -> dict[str, Any]:
        """Vectors whose namespace/status copies disagree with their edit make the index inconsistent."""
        n = int(self._row("SELECT count(*) AS n FROM vectors")["n"])  # type: ignore[index]
        bad = int(self._row("SELECT count(*) AS n FROM vectors v JOIN edits e ON e.id = v.edit_id "  # type: ignore[index]
                            "WHERE v.namespace != e.namespace OR v.status != e.status OR e.status = 'forgotten'")["n"])
        return {"vectors_in_db": n, "vectors_in_index": n, "consistent": bad == 0, "generation": self._meta("generation"),
                "embedder": self._meta("embedder"), "dim": self._meta("dim")}

    # ---- audit -------------------------------------------------------------------------------
    def verify(self) -> VerifyReport:
        """Recompute the event hash chain and every live edit's content hash (one consistent snapshot)."""
        def read(conn: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str], tuple]:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                events = conn.execute("SELECT * FROM events ORDER BY seq").fetchall()
                edits = conn.execute("SELECT * FROM edits ORDER BY id").fetchall()
                meta = {r["key"]: r["value"] for r in conn.execute(
                    "SELECT key, value FROM meta WHERE key IN ('head_hash', 'event_count', 'dim')").fetchall()}
                live = {e["id"] for e in edits if e["status"] != "forgotten"}
                with conn.cursor(name="memedit_verify_vectors") as cur:  # streamed: the table may be large
                    cur.execute("SELECT edit_id, k, vec::real[] AS v, sha256 FROM vectors ORDER BY edit_id, k")
                    vectors = vector_hashes.check_vectors(vector_hashes.float_rows(cur), live,
                                                          int(meta["dim"]) if meta.get("dim") else None)
            return events, edits, meta, vectors

        events, edits, meta, (vec_problems, damaged) = self._read(read)
        report = verify_rows(events, edits, meta.get("head_hash"), meta.get("event_count"))
        problems = report.problems + vec_problems
        return replace(report, ok=not problems, problems=problems, damaged_vectors=damaged)

    def repair_vectors(self, edit_ids: Sequence[int] | None = None, *, actor: str | None = None) -> list[int]:
        """Re-embed the vectors of ``edit_ids`` (default: those :meth:`verify` finds damaged); returns the ids repaired."""
        ids = list(self.verify().damaged_vectors if edit_ids is None else [check_id(i) for i in edit_ids])
        if ids:
            vector_hashes.reembed(self, ids, actor=actor)
        return ids

    # ---- transfer --------------------------------------------------------------------------------
    def export_jsonl(self, out: Any, namespace: str | None = None) -> int:
        """Write edits (tombstones included) as JSON lines; see :mod:`memedit.store.transfer`."""
        from .transfer import export_jsonl

        return export_jsonl(self, out, namespace)  # type: ignore[arg-type]

    def import_jsonl(self, source: Any, *, actor: str | None = None, skip_existing: bool = False,
                     progress: bool = False) -> dict[str, Any]:
        """Read edits written by :meth:`export_jsonl`, all or nothing; see :mod:`memedit.store.transfer`."""
        from .transfer import import_jsonl

        return import_jsonl(self, source, actor=actor, skip_existing=skip_existing, progress=progress)  # type: ignore[arg-type]


def _permanent(exc: Exception) -> bool:
    """Connection errors that waiting will not fix (a missing database or role, bad credentials)."""
    text = str(exc).lower()
    return any(m in text for m in ("does not exist", "authentication failed", "password", "no pg_hba.conf entry",
                                    "invalid connection option", "invalid dsn", "invalid uri"))


def _statuses_or_active(values: Sequence[str]) -> tuple[str, ...]:
    return statuses(values) or ("active",)


def _bar(total: int, desc: str, enabled: bool) -> Any:
    return progress(total, desc, enabled)


# ---- the qmark shims: code written against the SQLite store (transfer, the commit ledger) ----------
_QMARK = re.compile(r"\?")
_RETURNS_ID = ("edits", "commits", "usage", "notes")


def _to_pyformat(sql: str) -> str:
    return _QMARK.sub("%s", sql.replace("%", "%%"))


class _Cursor:
    def __init__(self, cur: Any, lastrowid: int | None):
        self._cur, self.lastrowid = cur, lastrowid

    def fetchone(self) -> Any:
        row = self._cur.fetchone()
        return None if row is None else tuple(row.values())

    def fetchall(self) -> list[Any]:
        return [tuple(r.values()) for r in self._cur.fetchall()]


class _QmarkConn:
    """``store._conn.execute(sql_with_?, params)`` as the SQLite store offers it, inside ``store._write()``."""

    def __init__(self, store: PgEditStore):
        self._store = store

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        text = _to_pyformat(sql)
        m = re.match(r"\s*INSERT\s+INTO\s+(\w+)", text, re.I)
        returning = bool(m and m.group(1).lower() in _RETURNS_ID and "RETURNING" not in text.upper())
        if returning:
            text += " RETURNING id"
        args = list(params)
        if self._store._in_tx:
            cur = self._store._exec(text, args)
        else:
            cur = self._store._read(lambda c: c.execute(text, args))
        lastrowid = cur.fetchone()["id"] if returning else None
        return _Cursor(cur, lastrowid)


class _QmarkDB:
    """``store.db.query(sql_with_?, params)`` yielding dict rows, as sqlite-utils does."""

    def __init__(self, store: PgEditStore):
        self._store = store

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        return iter(self._store._select(_to_pyformat(sql), list(params)))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        return self._store._conn.execute(sql, params)
