"""What a store target names, told apart without importing either backend.

>>> from memedit.store.target import is_postgres_url, redact
>>> is_postgres_url("postgresql://memedit:secret@db/memedit"), is_postgres_url("stores/default.db")
(True, False)
>>> redact("postgresql://memedit:secret@db/memedit")
'postgresql://memedit:***@db/memedit'
"""
from __future__ import annotations

import re
from typing import Any

URL_PREFIXES = ("postgresql://", "postgres://")


def is_postgres_url(target: Any) -> bool:
    """Whether ``target`` is a PostgreSQL URL (anything else names a SQLite file)."""
    return isinstance(target, str) and target.startswith(URL_PREFIXES)


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)
