"""Open a store by name: a path is a SQLite store, a ``postgresql://`` URL a PostgreSQL one.

>>> from memedit.store.open import open_store
>>> with open_store("stores/default.db") as store:                              # doctest: +SKIP
...     store.count()
0
>>> open_store("postgresql://memedit@db:5432/memedit")                          # doctest: +SKIP
PgEditStore('postgresql://memedit@db:5432/memedit')

:func:`memedit.store.copy.copy_store` copies a whole store to an empty one,
in either direction.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from ..config import default_store_path
from .target import is_postgres_url, redact

if TYPE_CHECKING:
    from .postgres import PgEditStore
    from .sqlite import EditStore

AnyStore = Union["EditStore", "PgEditStore"]


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
        from .postgres import PgEditStore

        return PgEditStore(str(target), embedder=embedder, create=create, **kwargs)
    from .sqlite import EditStore  # each backend is imported when first opened

    return EditStore(target, embedder=embedder, create=create, **kwargs)


def describe(target: str | os.PathLike[str]) -> str:
    """The target for messages (a URL without its password)."""
    return redact(str(target)) if is_postgres_url(str(target)) else str(target)
