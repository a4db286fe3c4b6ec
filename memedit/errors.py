"""Exceptions memedit raises at its boundaries.

Every error a user can cause is a subclass of :class:`MemeditError`, so callers
can catch one type; the message always says what was wrong and what to do.
"""
from __future__ import annotations


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
