"""The edit memory: SQLite source of truth plus a derived FAISS index."""
from .chain import Event
from .sqlite import EditStore, SearchHit, VerifyReport

__all__ = ["EditStore", "Event", "SearchHit", "VerifyReport"]
