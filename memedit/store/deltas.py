"""Where a store keeps the weight-commit deltas: files beside SQLite, rows inside PostgreSQL.

>>> import tempfile, pathlib
>>> files = DeltaFiles(pathlib.Path(tempfile.mkdtemp()) / "x.ledger")
>>> files.put("commit-1.safetensors", b"...")
>>> files.get("commit-1.safetensors")
b'...'

The commit ledger (:mod:`memedit.commit`) serialises each commit's low-rank
factors to safetensors bytes and hands them to ``store.delta_blobs``; the
ledger row in the store's ``commits`` table names the blob and its sha256.

* :class:`DeltaFiles` (SQLite store): one file per commit in ``x.ledger/``
  beside ``x.db``, written to a temporary name, fsynced and renamed, before the
  row that names it commits; a crash in between leaves an orphan file that a
  later ledger removes.
* :class:`PgDeltaBlobs` (PostgreSQL store): a ``commit_blobs`` row written in
  the same transaction as the ledger row, so every replica sees a commit's
  deltas exactly when it sees the commit, and there are no orphans.

:func:`drop_commits_with` is the part of ``forget`` both stores share: it
drops every commit holding the forgotten edit and names the blobs to erase.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from ..errors import StoreError

if TYPE_CHECKING:
    from .postgres import PgEditStore

log = logging.getLogger(__name__)
ORPHAN_AGE_S = 3600  # a younger unnamed file may belong to another process that is mid-commit


class DeltaBlobs(Protocol):
    """What the commit ledger needs from a store to keep deltas."""

    where: str

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes: ...

    def erase(self, names: Iterable[str]) -> None: ...

    def remove_orphans(self, named: set[str]) -> None: ...


class DeltaFiles:
    """Delta blobs as files in one directory (the SQLite store's ``x.ledger/``)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.where = str(directory)

    def _path(self, name: str) -> Path:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise StoreError(f"bad delta blob name {name!r}")
        return self.directory / name

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("." + name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def get(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"delta file {name} is missing from {self.directory}") from None

    def erase(self, names: Iterable[str]) -> None:
        for name in names:
            self._path(name).unlink(missing_ok=True)

    def remove_orphans(self, named: set[str]) -> None:
        """Delete files no ledger row names (a crash between writing a file and recording it)."""
        if not self.directory.is_dir():
            return
        cutoff = time.time() - ORPHAN_AGE_S
        for f in self.directory.glob("*.safetensors"):
            if f.name not in named and f.stat().st_mtime < cutoff:
                log.info("removing orphan delta file %s", f)
                f.unlink(missing_ok=True)
        for f in self.directory.glob(".*.tmp"):
            if f.stat().st_mtime < cutoff:
                f.unlink(missing_ok=True)


class PgDeltaBlobs:
    """Delta blobs as ``commit_blobs`` rows; ``put`` and ``erase`` join the caller's write transaction."""

    def __init__(self, store: "PgEditStore"):
        self.store = store
        self.where = "the commit_blobs table"

    def put(self, name: str, data: bytes) -> None:
        with self.store._write():
            self.store._exec("INSERT INTO commit_blobs(name, size, data) VALUES (%s, %s, %s)", (name, len(data), data))

    def get(self, name: str) -> bytes:
        row = self.store._row("SELECT data FROM commit_blobs WHERE name = %s", [name])
        if row is None:
            raise StoreError(f"delta blob {name} is missing from the commit_blobs table")
        return bytes(row["data"])

    def erase(self, names: Iterable[str]) -> None:
        names = list(names)
        if names:
            with self.store._write():
                self.store._exec("DELETE FROM commit_blobs WHERE name = ANY(%s)", (names,))

    def remove_orphans(self, named: set[str]) -> None:
        """Nothing to do: a blob and the ledger row naming it commit together."""


def drop_commits_with(store: Any, edit_id: int, actor: str | None) -> tuple[list[int], list[str]]:
    """Inside ``store``'s write transaction: drop every weight commit holding ``edit_id``.

    Returns the dropped commit ids and the names of their delta blobs, which
    the caller erases (a file once the transaction has committed; a database
    row within it). The other edits of a dropped batch go back to uncommitted
    (a later commit recomputes them); any model replaying the ledger
    afterwards is bit-identical to one that never had the dropped commits.
    """
    dropped: list[int] = []
    blobs: list[str] = []
    for row in list(store.db.query("SELECT id, edit_ids, file FROM commits WHERE status != 'dropped'")):
        ids = json.loads(row["edit_ids"])
        if edit_id not in ids:
            continue
        store._conn.execute("UPDATE commits SET status = 'dropped', file = NULL, file_sha256 = NULL WHERE id = ?",
                            (row["id"],))
        dropped.append(row["id"])
        if row["file"]:
            blobs.append(row["file"])
        for other in ids:
            if other == edit_id:
                continue
            other_edit = store._get(other)
            store._conn.execute("UPDATE edits SET committed = 0 WHERE id = ?", (other,))
            store._append_event("revert", namespace=other_edit.namespace, edit_id=other, actor=actor,
                                payload={"commit": row["id"], "why": "dropped with a forgotten edit"})
    if dropped:
        store._set_meta("ledger_gen", str(int(store._meta("ledger_gen") or 0) + 1))
    return dropped, blobs
