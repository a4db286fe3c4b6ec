"""Open a store by name: a path is a SQLite store, a ``postgresql://`` URL a PostgreSQL one.

>>> from memedit.store.open import open_store
>>> with open_store("stores/default.db") as store:                              # doctest: +SKIP
...     store.count()
0
>>> open_store("postgresql://memedit@db:5432/memedit")                          # doctest: +SKIP
PgEditStore('postgresql://memedit@db:5432/memedit')

:func:`copy_store` copies every edit (tombstones, statuses, links, usage
counts and ids included) from one store to another empty one, in either
direction, through the JSON-lines export, so exporting both gives the same
bytes.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Union

from ..config import default_store_path
from ..errors import ConflictError
from .postgres import PgEditStore, is_postgres_url
from .sqlite import EditStore

AnyStore = Union[EditStore, PgEditStore]


def default_store_target() -> str | Path:
    """``$MEMEDIT_STORE`` as given (a URL stays a URL), else the default SQLite path."""
    env = os.environ.get("MEMEDIT_STORE")
    if env and is_postgres_url(env):
        return env
    return default_store_path()


def open_store(target: str | os.PathLike[str] | None = None, *, embedder: Any = None, create: bool = True,
               **kwargs: Any) -> AnyStore:
    """An :class:`EditStore` for a path, a :class:`PgEditStore` for ``postgresql://...`` (None: the default)."""
    if target is None:
        target = default_store_target()
    if is_postgres_url(str(target)) and not isinstance(target, Path):
        return PgEditStore(str(target), embedder=embedder, create=create, **kwargs)
    return EditStore(target, embedder=embedder, create=create, **kwargs)


def describe(target: str | os.PathLike[str]) -> str:
    """The target for messages (a URL without its password)."""
    from .postgres import redact

    return redact(str(target)) if is_postgres_url(str(target)) else str(target)


def copy_store(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, embedder: Any = None,
               actor: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Copy every edit of store ``src`` into the empty store ``dst`` (SQLite <-> PostgreSQL), ids kept.

    The copy goes through the JSON-lines export (re-embedding the texts in
    ``dst``), so ``export`` of both stores is byte-identical afterwards. The
    destination must hold no edits, or ids could not be kept.
    """
    with open_store(src, embedder=embedder, create=False) as s, tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "edits.jsonl"
        exported = s.export_jsonl(dump)
        with open_store(dst, embedder=embedder) as d:
            if d.count():
                raise ConflictError(f"the destination {describe(dst)} already holds {d.count()} edits; copy into an "
                                    "empty store (or use 'memedit import' to merge)")
            result = d.import_jsonl(dump, actor=actor, progress=progress)
    return {"source": describe(src), "destination": describe(dst), "exported": exported, **result}
