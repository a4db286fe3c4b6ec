"""The PostgreSQL store's schema, as ordered migrations recorded in the database.

>>> from memedit.store.pg_schema import MIGRATIONS
>>> [v for v, _, _ in MIGRATIONS]
[1, 2, 3, 4]

The same tables and columns as the SQLite store (:mod:`memedit.store.schema`),
with the same meaning, so rows convert to edits the same way and an export
of either is byte-identical. Differences: ``vectors.vec`` is a pgvector
``vector`` column (its dimension is fixed, and its HNSW cosine index built,
when the first embedder is recorded: :func:`fix_dimension`); ``vectors``
also carries the edit's namespace and status (kept equal to the edit's by a
trigger) so that search filters on them inside the index scan. Migrations
run in the caller's transaction, which holds the store's write lock, so two
replicas opening a fresh database at once apply each migration once.
"""
from __future__ import annotations

from typing import Any

from ..edits import utcnow
from ..errors import StoreError

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial: edits, vectors (pgvector), events, namespaces, usage, meta",
        """
        CREATE TABLE namespaces (
            name TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            policy TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE edits (
            id BIGSERIAL PRIMARY KEY,   -- a sequence never goes back, so ids are never reused
            uid TEXT NOT NULL UNIQUE,
            namespace TEXT NOT NULL REFERENCES namespaces(name),
            kind TEXT NOT NULL CHECK (kind IN ('fact', 'text')),
            status TEXT NOT NULL CHECK (status IN ('pending', 'active', 'superseded', 'rejected', 'forgotten')),
            subject TEXT, subject_key TEXT, prompt TEXT, relation_key TEXT,
            target_new TEXT, target_true TEXT, paraphrases TEXT, statement TEXT,
            author TEXT, source TEXT, meta TEXT,
            supersedes BIGINT, superseded_by BIGINT,
            usage_count BIGINT NOT NULL DEFAULT 0,
            last_used_at TEXT,
            committed INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            salt BYTEA,
            gen BIGINT NOT NULL
        );
        CREATE INDEX edits_ns_status ON edits(namespace, status);
        CREATE INDEX edits_key ON edits(namespace, subject_key, relation_key);
        CREATE INDEX edits_gen ON edits(gen);
        CREATE TABLE vectors (
            edit_id BIGINT NOT NULL REFERENCES edits(id),
            k INTEGER NOT NULL,
            namespace TEXT NOT NULL,    -- copies of the edit's, so search filters inside the index scan
            status TEXT NOT NULL,
            vec vector NOT NULL,
            PRIMARY KEY (edit_id, k)
        );
        CREATE INDEX vectors_ns_status ON vectors(namespace, status);
        CREATE FUNCTION memedit_status_to_vectors() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE vectors SET status = NEW.status, namespace = NEW.namespace WHERE edit_id = NEW.id;
            RETURN NEW;
        END $$;
        CREATE TRIGGER edits_status_to_vectors AFTER UPDATE OF status, namespace ON edits
            FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.namespace IS DISTINCT FROM NEW.namespace)
            EXECUTE FUNCTION memedit_status_to_vectors();
        CREATE TABLE events (
            seq BIGINT PRIMARY KEY,
            ts TEXT NOT NULL,
            namespace TEXT,
            edit_id BIGINT,
            kind TEXT NOT NULL,
            actor TEXT,
            payload TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX events_edit ON events(edit_id);
        CREATE TABLE usage (
            id BIGSERIAL PRIMARY KEY,
            edit_id BIGINT NOT NULL REFERENCES edits(id),
            ts TEXT NOT NULL,
            question TEXT,
            score DOUBLE PRECISION,
            route TEXT
        );
        CREATE INDEX usage_edit ON usage(edit_id);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        """,
    ),
    (
        2,
        "weight commits ledger",
        """
        CREATE TABLE commits (
            id BIGSERIAL PRIMARY KEY,
            ts TEXT NOT NULL,
            method TEXT NOT NULL,
            model TEXT NOT NULL,
            base_hash TEXT NOT NULL,
            edit_ids TEXT NOT NULL,
            params TEXT NOT NULL,
            file TEXT,
            file_sha256 TEXT,
            status TEXT NOT NULL CHECK (status IN ('applied', 'reverted', 'dropped')),
            gates TEXT NOT NULL DEFAULT '{}',
            stats TEXT NOT NULL DEFAULT '{}',
            memedit_version TEXT NOT NULL
        );
        CREATE INDEX commits_status ON commits(status);
        """,
    ),
    (
        3,
        "notes: free text about an edit (e.g. a rejection reason), kept out of the log so forget can erase it",
        """
        CREATE TABLE notes (
            id BIGSERIAL PRIMARY KEY,
            edit_id BIGINT NOT NULL REFERENCES edits(id),
            ts TEXT NOT NULL,
            kind TEXT NOT NULL,
            actor TEXT,
            text TEXT NOT NULL
        );
        CREATE INDEX notes_edit ON notes(edit_id);
        """,
    ),
    (
        4,
        "edits by namespace in id order: the audit list pages newest first through a namespace without a sort",
        """
        CREATE INDEX edits_ns_id ON edits(namespace, id);
        """,
    ),
    (
        5,
        "weight-commit deltas inside the database, so every replica can replay the ledger",
        """
        CREATE TABLE commit_blobs (
            name TEXT PRIMARY KEY,
            size BIGINT NOT NULL,
            data BYTEA NOT NULL
        );
        """,
    ),
    (
        6,
        "API tokens for the audit page and API, shared by every replica (hashed secrets only)",
        """
        CREATE TABLE api_tokens (
            name TEXT PRIMARY KEY,
            sha256 TEXT NOT NULL,
            namespaces TEXT NOT NULL,
            write BOOLEAN NOT NULL,
            created_at TEXT NOT NULL
        );
        """,
    ),
    (
        7,
        "vectors.sha256: each stored vector's hash, recorded when written, so verify catches damage",
        """
        ALTER TABLE vectors ADD COLUMN sha256 TEXT;
        """,
    ),
]


def has_schema(conn: Any) -> bool:
    """Whether this database already holds a memedit store."""
    return conn.execute("SELECT to_regclass('migrations') IS NOT NULL AS present").fetchone()["present"]


def apply_migrations(conn: Any) -> list[int]:
    """Apply pending migrations on ``conn`` (a psycopg connection inside the caller's write transaction)."""
    conn.execute("CREATE TABLE IF NOT EXISTS migrations "
                 "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    done = {r["version"] for r in conn.execute("SELECT version FROM migrations").fetchall()}
    known = {v for v, _, _ in MIGRATIONS}
    newer = sorted(done - known)
    if newer:
        raise StoreError(f"this store was written by a newer memedit (schema versions {newer}); upgrade memedit to open it")
    applied = []
    for version, name, sql in MIGRATIONS:
        if version in done:
            continue
        conn.execute(_strip_comments(sql))
        conn.execute("INSERT INTO migrations(version, name, applied_at) VALUES (%s, %s, %s)", (version, name, utcnow()))
        applied.append(version)
    return applied


def fix_dimension(conn: Any, dim: int) -> None:
    """Give ``vectors.vec`` its dimension and build the HNSW cosine index (first embedder recorded)."""
    if not isinstance(dim, int) or not 0 < dim <= 2000:
        raise StoreError(f"pgvector's HNSW index takes 1..2000 dimensions, the embedder has {dim}")
    conn.execute(f"ALTER TABLE vectors ALTER COLUMN vec TYPE vector({dim})")
    conn.execute("CREATE INDEX IF NOT EXISTS vectors_hnsw ON vectors USING hnsw (vec vector_cosine_ops)")


def _strip_comments(script: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in script.splitlines())
