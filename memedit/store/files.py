"""The files a SQLite store is made of, checked before SQLite touches them, and leftovers swept.

>>> from pathlib import Path
>>> from memedit.store.files import check_store_files, check_store_header
>>> check_store_files(Path("/tmp/new-store.db"), Path("/tmp/new-store.faiss"))   # doctest: +SKIP
>>> check_store_header(Path("/tmp/new-store.db"))                                 # doctest: +SKIP

A store is ``x.db`` (SQLite) with ``x.faiss`` (the derived index) beside it.
:func:`check_store_files` and :func:`check_store_header` refuse, with a
:class:`~memedit.errors.StoreError` that says what the file is, everything
SQLite would otherwise take for a new empty database or fail on with a
traceback: a directory, a parent path that is a file, a zero-byte file, a
file that is not SQLite. :func:`foreign_tables`
recognises another program's SQLite database before any table is created in
it. :func:`sweep_leftovers` removes the temporary index files
(``.x.faiss.tmp-PID``) a writer killed while saving leaves behind: they hold
vectors, possibly of edits forgotten since, so they must not outlive a crash.
"""
from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from ..errors import StoreError

log = logging.getLogger(__name__)

#: the first 16 bytes of every SQLite 3 database file
SQLITE_HEADER = b"SQLite format 3\x00"
#: tables that mark a SQLite file as a memedit store (any one of them)
OWN_TABLES = frozenset({"migrations", "meta"})


def check_store_files(path: Path, index_path: Path) -> None:
    """Refuse paths that are not (or cannot become) a store, before SQLite opens or creates anything."""
    parent = path.parent
    for up in (parent, *parent.parents):
        if up.exists():
            if not up.is_dir():
                raise StoreError(f"cannot use store {path}: {up} is a file, not a folder")
            break
    if path.is_dir():
        raise StoreError(f"cannot use store {path}: it is a folder, not a store file")
    if index_path.is_dir():
        raise StoreError(f"cannot use store {path}: its index path {index_path} is a folder; move it away")


def check_store_header(path: Path) -> None:
    """Refuse an existing file that is empty or not SQLite (a missing one is a store to create)."""
    if not path.exists():
        return
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"cannot read store {path}: {exc.strerror or exc}") from None
    if not head:
        raise StoreError(f"{path} is an empty file (0 bytes), not a memedit store; "
                         "remove it to start a new store, or restore the store from a backup")
    if head != SQLITE_HEADER:
        raise StoreError(f"{path} is not a SQLite database (it does not start with the SQLite header), "
                         "so not a memedit store")


def foreign_tables(conn: sqlite3.Connection) -> list[str]:
    """The tables of a SQLite database that is not a memedit store (empty for a store or a blank database)."""
    names = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    if not names or OWN_TABLES & set(names):
        return []
    return names


def leftovers(index_path: Path) -> list[Path]:
    """Temporary index files (``.x.faiss.tmp-PID``) beside ``index_path``."""
    folder = index_path.parent
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f".{index_path.name}.tmp-*"))


def sweep_leftovers(index_path: Path) -> list[Path]:
    """Remove the temporary index files beside ``index_path``; returns those removed.

    The caller holds the index file lock, so no save is in progress and every
    temporary file found is one a crashed writer left.
    """
    removed = []
    for tmp in leftovers(index_path):
        try:
            tmp.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot remove the leftover index file {tmp}: {exc.strerror or exc}") from None
        removed.append(tmp)
    if removed:
        log.warning("removed %d leftover temporary index file(s) beside %s (a writer crashed while saving)",
                    len(removed), index_path)
    return removed
