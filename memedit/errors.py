"""Exceptions memedit raises at its boundaries.

Every error a user can cause is a subclass of :class:`MemeditError`, so callers
can catch one type; the message always says what was wrong and what to do.
"""
from __future__ import annotations

import numbers


class MemeditError(Exception):
    """Base class of every error memedit raises on purpose."""


class ValidationError(MemeditError, ValueError):
    """Input was rejected at the boundary; nothing was written."""


class NotFoundError(MemeditError, LookupError):
    """An edit, namespace or model that was asked for does not exist."""


class ConflictError(MemeditError):
    """The operation conflicts with the current state (e.g. approving a forgotten edit)."""


class StoreError(MemeditError):
    """The store could not complete an operation (locked too long, corrupt, incompatible)."""


class ModelNotAvailableError(MemeditError):
    """A named model is not installed locally; the message names the package to install."""


class BackendError(MemeditError, RuntimeError):
    """A language model failed while answering; the original error is the ``__cause__``. Nothing was recorded."""


class UnsupportedOperationError(MemeditError, NotImplementedError):
    """The backend cannot do this (e.g. a chat API that exposes no token log-probabilities)."""


#: the largest integer SQLite (and PostgreSQL's bigint, and FAISS's int64 ids) can hold
MAX_SQL_INT = 2**63 - 1


def check_id(value: object, what: str = "an edit id") -> int:
    """``value`` as an id: an integer in 1..2^63-1 (a SQLite integer), else :class:`ValidationError`.

    >>> check_id(7)
    7
    >>> check_id(2**63)
    Traceback (most recent call last):
    memedit.errors.ValidationError: an edit id must be a positive integer below 2^63 (1..9223372036854775807), got 9223372036854775808
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # numpy integers are Integral too
        raise ValidationError(f"{what} must be an integer, got {value!r}")
    value = int(value)
    if not 1 <= value <= MAX_SQL_INT:
        raise ValidationError(f"{what} must be a positive integer below 2^63 (1..{MAX_SQL_INT}), got {value}")
    return value


def as_store_error(exc: BaseException, where: object = None) -> StoreError | None:
    """What a SQLite or file-system error means for a store, as one clear line (None for any other error).

    >>> import sqlite3
    >>> str(as_store_error(sqlite3.DatabaseError("database disk image is malformed"), "x.db"))
    'store x.db is damaged (database disk image is malformed); restore it from a backup'
    """
    import sqlite3

    if isinstance(exc, StoreError):
        return exc
    name = f"store {where}" if where is not None else "the store"
    if isinstance(exc, sqlite3.Error):
        text = str(exc)
        low = text.lower()
        if "could not decode" in low:  # the raw bytes are not worth printing
            return StoreError(f"{name} is damaged (a stored text is not UTF-8); restore it from a backup")
        if "malformed" in low or "corrupt" in low:
            return StoreError(f"{name} is damaged ({text}); restore it from a backup")
        if "not a database" in low:
            return StoreError(f"{name} is not a SQLite database, or is damaged ({text})")
        if "readonly" in low or "read-only" in low:
            return StoreError(f"{name} is read-only ({text}); check the file's and its folder's permissions")
        if "unable to open" in low:
            return StoreError(f"cannot open {name} ({text}); check that its folder exists and is writable")
        if "full" in low:
            return StoreError(f"{name} is full ({text}): the disk, or the store's id range")
        return StoreError(f"{name}: {text}")
    if isinstance(exc, OSError):
        path = exc.filename if exc.filename is not None else where
        reason = exc.strerror or type(exc).__name__
        return StoreError(f"{reason}: {path}" if path is not None else f"{reason} ({exc})")
    return None
