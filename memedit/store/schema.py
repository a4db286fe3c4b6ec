"""The store's schema, as ordered migrations recorded in the database itself.

Each migration runs once, inside the transaction that records it in the
``migrations`` table, so a crash mid-migration leaves the old schema intact.
Add new migrations at the end; never edit a released one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..edits import utcnow

if TYPE_CHECKING:
    from .rows import Rows

SCHEMA_VERSION_KEY = "schema_version"

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial: edits, vectors, events, namespaces, usage, meta",
        """
        CREATE TABLE namespaces (
            name TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            policy TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE edits (
            id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: it is also the FAISS id
            uid TEXT NOT NULL UNIQUE,
            namespace TEXT NOT NULL REFERENCES namespaces(name),
            kind TEXT NOT NULL CHECK (kind IN ('fact', 'text')),
            status TEXT NOT NULL CHECK (status IN ('pending', 'active', 'superseded', 'rejected', 'forgotten')),
            subject TEXT, subject_key TEXT, prompt TEXT, relation_key TEXT,
            target_new TEXT, target_true TEXT, paraphrases TEXT, statement TEXT,
            author TEXT, source TEXT, meta TEXT,
            supersedes INTEGER, superseded_by INTEGER,
            usage_count INTEGER NOT NULL DEFAULT 0,
            last_used_at TEXT,
            committed INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            content_hash TEXT NOT NULL,   -- HMAC of the content under salt; the salt is erased on forget
            salt BLOB,
            gen INTEGER NOT NULL          -- index generation of the last change to this edit's vectors/status
        );
        CREATE INDEX edits_ns_status ON edits(namespace, status);
        CREATE INDEX edits_key ON edits(namespace, subject_key, relation_key);
        CREATE INDEX edits_gen ON edits(gen);
        CREATE TABLE vectors (
            edit_id INTEGER NOT NULL REFERENCES edits(id),
            k INTEGER NOT NULL,
            vec BLOB NOT NULL,
            PRIMARY KEY (edit_id, k)
        ) WITHOUT ROWID;
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            namespace TEXT,
            edit_id INTEGER,
            kind TEXT NOT NULL,
            actor TEXT,
            payload TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX events_edit ON events(edit_id);
        CREATE TABLE usage (
            id INTEGER PRIMARY KEY,
            edit_id INTEGER NOT NULL REFERENCES edits(id),
            ts TEXT NOT NULL,
            question TEXT,
            score REAL,
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
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts TEXT NOT NULL,
            method TEXT NOT NULL,
            model TEXT NOT NULL,
            base_hash TEXT NOT NULL,      -- sha256 of the unedited weights the deltas apply to
            edit_ids TEXT NOT NULL,       -- JSON list
            params TEXT NOT NULL,         -- JSON list of parameter names touched
            file TEXT,                    -- delta file (safetensors) beside the store; NULL once erased
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
            id INTEGER PRIMARY KEY,
            edit_id INTEGER NOT NULL REFERENCES edits(id),
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
        "vectors.sha256: each stored vector's hash, recorded when written, so verify catches damage",
        """
        ALTER TABLE vectors ADD COLUMN sha256 TEXT;
        """,
    ),
]


def apply_migrations(db: "Rows") -> list[int]:
    """Apply pending migrations; the caller holds a write transaction. Returns versions applied."""
    if "migrations" not in db.table_names():
        db.execute("CREATE TABLE migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    done = {row["version"] for row in db.query("SELECT version FROM migrations")}
    known = {v for v, _, _ in MIGRATIONS}
    newer = sorted(done - known)
    if newer:
        from ..errors import StoreError

        raise StoreError(
            f"this store was written by a newer memedit (schema versions {newer}); upgrade memedit to open it"
        )
    applied = []
    for version, name, sql in MIGRATIONS:
        if version in done:
            continue
        for statement in _statements(sql):
            db.execute(statement)
        db.table("migrations").insert({"version": version, "name": name, "applied_at": utcnow()})
        applied.append(version)
    return applied


def _statements(script: str) -> list[str]:
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
