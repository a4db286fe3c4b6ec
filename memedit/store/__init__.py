"""The edit memory: SQLite source of truth plus a derived FAISS index, or PostgreSQL + pgvector.

``open_store(target)`` picks the backend: a path is SQLite, a ``postgresql://`` URL PostgreSQL.
"""
from .chain import Event
from .common import SearchHit, VerifyReport
from .copy import copy_store
from .open import open_store
from .postgres import PgEditStore
from .sqlite import EditStore

__all__ = ["EditStore", "Event", "PgEditStore", "SearchHit", "VerifyReport", "copy_store", "open_store"]
