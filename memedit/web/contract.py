"""The HTTP API's contract as the OpenAPI schema states it: bearer auth, every error status, one error model.

>>> from fastapi.testclient import TestClient                                        # doctest: +SKIP
>>> schema = TestClient(create_app(store, tokens=tokens)).get("/openapi.json").json()  # doctest: +SKIP
>>> schema["components"]["securitySchemes"]["bearerAuth"]["scheme"]                   # doctest: +SKIP
'bearer'

Every error the API returns is ``{"error": message, "type": name}`` (a
refused edit adds ``rule`` and ``reason``; a malformed request ``detail``),
and each operation lists the statuses it can answer with, so tools such as
schemathesis and the Swagger page's Authorize button know the API.
"""
from __future__ import annotations

from typing import Any, Optional

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

SCHEME = "bearerAuth"


class ErrorOut(BaseModel):
    """The body of every error answer."""

    error: str
    type: str
    rule: Optional[str] = None
    reason: Optional[str] = None
    detail: Optional[list[Any]] = None


def _errors(**codes: str) -> dict[int | str, dict[str, Any]]:
    return {int(code[1:]): {"model": ErrorOut, "description": text} for code, text in codes.items()}


#: statuses any API operation may answer with
COMMON = _errors(
    s400="the request was refused (a memedit error without a more specific status)",
    s401="no token, or an unknown or revoked one (WWW-Authenticate: Bearer)",
    s403="the token may not read or change this namespace, or a session request lacks its CSRF header",
    s404="no such edit or namespace (an edit in a namespace the token cannot read answers 404 too)",
    s413="the request body is over the server's limit (memedit serve --max-body-bytes); it was not read",
    s422="a malformed request: a field, a parameter or the JSON body itself",
    s503="the store could not complete the operation (busy, damaged or unreachable); nothing changed",
)
#: statuses of the operations that change state, in addition to :data:`COMMON`
WRITE = _errors(s409="the edit's state does not allow it (e.g. approving an edit that is not pending)")
#: statuses of adding an edit, in addition to :data:`COMMON` and :data:`WRITE`
ADD = _errors(s429="too many new edits from this token (and browser address) in the namespace's window; "
                   "see Retry-After")
#: the export's body: JSON lines, not JSON
NDJSON = {200: {"description": "one JSON object per line: a header, then one edit per line",
                "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}}


def install_openapi(app: FastAPI, *, public_read: bool) -> None:
    """Make ``app.openapi()`` declare bearer auth: required for changes, optional for reads where some
    namespaces are public (and for ``/api/namespaces``, which lists what the caller may see)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = {SCHEME: {
            "type": "http", "scheme": "bearer",
            "description": "A token from 'memedit tokens add' (or the admin token 'memedit serve' printed)."}}
        for path, operations in schema.get("paths", {}).items():
            for method, op in operations.items():
                optional = method == "get" and (public_read or path == "/api/namespaces")
                op["security"] = [{SCHEME: []}, {}] if optional else [{SCHEME: []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
