"""The audit web page and HTTP API over an edit store (needs the ``web`` extra: FastAPI, uvicorn, Jinja2).

>>> from memedit.web import create_app          # doctest: +SKIP
>>> app = create_app(store)                     # doctest: +SKIP

See :mod:`memedit.web.app` (the app factory), :mod:`memedit.web.api` (JSON
endpoints), :mod:`memedit.web.pages` (HTML), :mod:`memedit.web.auth` (tokens,
sessions, CSRF) and ``docs/WEB.md``.
"""
from __future__ import annotations

from typing import Any


def create_app(*args: Any, **kwargs: Any) -> Any:
    """:func:`memedit.web.app.create_app`, imported on use (FastAPI is an optional dependency)."""
    from .app import create_app as _create

    return _create(*args, **kwargs)


__all__ = ["create_app"]
