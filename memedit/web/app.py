"""The audit web app: ``create_app(store, tokens=...)`` returns a FastAPI app serving the page and the API.

>>> from memedit import EditStore
>>> from memedit.web.app import create_app
>>> from memedit.web.auth import open_tokens
>>> store = EditStore("stores/default.db")                                    # doctest: +SKIP
>>> tokens, admin_secret = open_tokens(store)    # x.tokens.json beside SQLite; a table on PostgreSQL  # doctest: +SKIP
>>> app = create_app(store, tokens=tokens)                                    # doctest: +SKIP
>>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8765)            # doctest: +SKIP

``memedit serve`` does exactly this (and prints the admin token the first
time). The store is shared by the app's worker threads under one lock: SQLite
has one connection per store object, and the index is in memory.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import ConflictError, MemeditError, NotFoundError, StoreError, ValidationError, as_store_error
from ..policy import NamespacePolicy, Policy, RateLimitedError, SlidingWindow
from .api import AuthError
from .api import router as api_router
from .auth import Sessions, TokenFile, open_tokens
from .contract import install_docs, install_openapi
from .guard import MAX_BODY_BYTES, RequestGuard, auth_response, error_response
from .openai_api import ChatService, OpenAIError
from .openai_api import router as openai_router
from .pages import router as pages_router

log = logging.getLogger(__name__)


@dataclass
class AppState:
    """What every request handler reaches through ``request.app.state.memedit``."""

    store: Any
    tokens: TokenFile
    policy: Policy
    sessions: Sessions = field(default_factory=Sessions)
    public_read: frozenset[str] = frozenset()
    lock: Any = field(default_factory=threading.RLock)
    secure_cookies: bool = False
    #: new edits per token (and per browser address) in each namespace's window (see ``api.add_edit``)
    rate: SlidingWindow = field(default_factory=SlidingWindow)
    #: the model answering ``/v1/chat/completions`` (None: the endpoint answers 503)
    chat: ChatService | None = None


def create_app(store: Any, tokens: TokenFile | None = None, *, policy: Policy | NamespacePolicy | None = None,
               public_read: Iterable[str] = (), secure_cookies: bool = False,
               max_body_bytes: int = MAX_BODY_BYTES, chat: ChatService | None = None) -> FastAPI:
    """The app over ``store``.

    ``tokens``: the tokens (default: :func:`~memedit.web.auth.open_tokens`,
    the file beside a SQLite store or a PostgreSQL store's table, created with
    an admin token that is logged once). ``policy``: a :class:`Policy` or the
    default :class:`NamespacePolicy` for every namespace. ``public_read``:
    namespaces anyone may read without a token (default none).
    ``secure_cookies``: mark cookies Secure (serve behind HTTPS).
    ``max_body_bytes``: larger request bodies get 413 unread
    (:mod:`memedit.web.guard`, which also checks an API write's token
    before its body is read). ``chat``: the model behind the OpenAI-compatible
    ``/v1/chat/completions`` (:mod:`memedit.web.openai_api`); without it that
    endpoint answers 503.
    """
    if tokens is None:
        tokens, secret = open_tokens(store)
        if secret:
            log.warning("created admin token (shown once): %s", secret)
    if policy is None or isinstance(policy, NamespacePolicy):
        policy = Policy(store, default=policy or NamespacePolicy())
    app = FastAPI(title="memedit audit", version=__version__, docs_url=None, redoc_url=None,
                  description="Audit, approve and forget the edits in a memedit store.")
    app.state.memedit = AppState(store=store, tokens=tokens, policy=policy, public_read=frozenset(public_read),
                                 secure_cookies=secure_cookies, chat=chat)
    app.include_router(api_router)
    app.include_router(openai_router)
    app.include_router(pages_router)
    install_openapi(app, public_read=bool(app.state.memedit.public_read))
    install_docs(app)  # Swagger UI from a package: /docs works offline
    _install_errors(app)
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes)  # added first: the headers below cover its answers

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.url.path.startswith("/ui"):
            response.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
        return response

    return app


_STATUS = ((RateLimitedError, 429), (ValidationError, 422), (NotFoundError, 404), (ConflictError, 409),
           (StoreError, 503))


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError) -> JSONResponse:
        return auth_response(exc, request.url.path)

    @app.exception_handler(OpenAIError)
    async def _openai(request: Request, exc: OpenAIError) -> JSONResponse:
        body = {"error": {"message": str(exc), "type": exc.type, "param": exc.param, "code": exc.code}}
        return JSONResponse(body, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # an unknown path, a wrong method, a body FastAPI could not read: the same error model as the rest
        return error_response(request.url.path, exc.status_code, str(exc.detail), "HTTPError",
                              getattr(exc, "headers", None))

    @app.exception_handler(sqlite3.Error)
    async def _database(request: Request, exc: sqlite3.Error) -> JSONResponse:
        log.error("store error on %s %s: %s", request.method, request.url.path, exc)
        return error_response(request.url.path, 503, str(as_store_error(exc)), "StoreError")

    @app.exception_handler(MemeditError)
    async def _memedit(request: Request, exc: MemeditError) -> JSONResponse:
        status = next((code for t, code in _STATUS if isinstance(exc, t)), 400)
        headers = {"Retry-After": str(max(1, int(exc.retry_after)))} if isinstance(exc, RateLimitedError) else None
        return error_response(request.url.path, status, str(exc), type(exc).__name__, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return error_response(request.url.path, 422, f"bad request: {problems}", "ValidationError",
                              detail=jsonable_encoder(exc.errors()))
