"""The edit memory: SQLite source of truth plus a derived FAISS index, or PostgreSQL + pgvector.

``open_store(target)`` picks the backend: a path is SQLite, a ``postgresql://`` URL PostgreSQL.
Each name below is imported on first use, so reading a store loads only its own backend.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {"EditStore": ".sqlite", "Event": ".chain", "PgEditStore": ".postgres", "SearchHit": ".common",
          "VerifyReport": ".common", "copy_store": ".copy", "open_store": ".open"}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value
