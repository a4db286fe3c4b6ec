"""What every request meets before a handler reads it: a body size limit, and the token check for API writes.

>>> from memedit.web.app import create_app
>>> app = create_app(store, tokens=tokens, max_body_bytes=1_000_000)      # doctest: +SKIP

:class:`RequestGuard` is plain ASGI middleware, so it acts before FastAPI
parses anything:

* a body over ``max_body_bytes`` is answered 413 from its ``Content-Length``
  alone, unread; a body sent without a length (chunked) is read only up to
  the limit, then refused the same way;
* a state-changing request to ``/api`` or ``/v1`` must carry a valid token (or a
  session with its CSRF header) before its body is read at all, so an
  anonymous client cannot make the server read, buffer or parse anything
  (a 200 MB anonymous POST costs a header check).

Both answers use the API's error model, ``{"error": message, "type": name}``, or
OpenAI's under ``/v1`` (:mod:`memedit.web.openai_api`).
"""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse

from .api import AuthError, caller

log = logging.getLogger(__name__)

#: the default request body limit, in bytes (``memedit serve --max-body-bytes``)
MAX_BODY_BYTES = 1_000_000
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS"})

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def openai_path(path: str) -> bool:
    """Paths answered in OpenAI's error shape (:mod:`memedit.web.openai_api`)."""
    return path == "/v1" or path.startswith("/v1/")


def error_response(path: str, status: int, message: str, type_: str,
                   headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """An error in the API's model, or in OpenAI's under ``/v1`` (its type in OpenAI's words)."""
    if openai_path(path):
        kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                413: "invalid_request_error", 429: "rate_limit_error"}.get(status)
        kind = kind or ("server_error" if status >= 500 else "invalid_request_error")
        body = {"error": {"message": message, "type": kind, "param": None, "code": type_}}
        return JSONResponse(body, status_code=status, headers=headers)
    return JSONResponse({"error": message, "type": type_, **extra}, status_code=status, headers=headers)


def auth_response(exc: AuthError, path: str = "") -> JSONResponse:
    """The API's answer to an :class:`~memedit.web.api.AuthError` (401 says how to authenticate)."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return error_response(path, exc.status, str(exc), "AuthError", headers)


def too_large(limit: int, path: str = "") -> JSONResponse:
    return error_response(path, 413, f"the request body is larger than the server's limit of {limit} bytes",
                          "PayloadTooLarge", {"Connection": "close"})


class RequestGuard:
    """ASGI middleware: 413 for bodies over ``max_body_bytes``, 401/403 for API writes without valid credentials."""

    def __init__(self, app: Any, max_body_bytes: int = MAX_BODY_BYTES):
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
            raise ValueError("max_body_bytes must be a positive integer")
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _BODYLESS:
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        path = scope["path"]
        if length is not None and length > self.limit:
            await too_large(self.limit, path)(scope, receive, send)
            return
        if path.startswith("/api/") or openai_path(path):
            try:
                if caller(Request(scope)) is None:
                    raise AuthError(401, "a token is required to change anything (Authorization: Bearer <token>)")
            except AuthError as exc:
                await auth_response(exc, path)(scope, receive, send)
                return
        if length is None:  # no length given: read up to the limit, then hand the body on
            messages = await self._read_capped(receive)
            if messages is None:
                await too_large(self.limit, path)(scope, receive, send)
                return
            receive = _replay(messages, receive)
        await self.app(scope, receive, send)

    async def _read_capped(self, receive: Receive) -> list[Message] | None:
        """The body's messages, or None once more than the limit arrived (the rest is never read)."""
        messages, total = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            total += len(message.get("body", b""))
            if total > self.limit:
                return None
            if not message.get("more_body"):
                return messages


def _content_length(scope: Message) -> int | None:
    """The declared body length; a malformed one counts as too large (it cannot be trusted)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else 2**63
    return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
