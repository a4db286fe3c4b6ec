"""The HTTP API's contract as the OpenAPI schema states it: bearer auth, every error status, one error model.

>>> from fastapi.testclient import TestClient                                        # doctest: +SKIP
>>> schema = TestClient(create_app(store, tokens=tokens)).get("/openapi.json").json()  # doctest: +SKIP
>>> schema["components"]["securitySchemes"]["bearerAuth"]["scheme"]                   # doctest: +SKIP
'bearer'

Every error the API returns is ``{"error": message, "type": name}`` (a
refused edit adds ``rule`` and ``reason``; a malformed request ``detail``),
and each operation lists the statuses it can answer with, so tools such as
schemathesis and the Swagger page's Authorize button know the API.
:func:`install_docs` serves Swagger UI at ``/docs`` from the
``swagger-ui-bundle`` package, so the page works offline (no CDN).
"""
from __future__ import annotations

from typing import Any, Optional

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, PlainTextResponse
from pydantic import BaseModel

SCHEME = "bearerAuth"


class ErrorOut(BaseModel):
    """The body of every error answer."""

    error: str
    type: str
    rule: Optional[str] = None
    reason: Optional[str] = None
    detail: Optional[list[Any]] = None


def error_responses(model: type[BaseModel] = ErrorOut, **codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses ``{status: {model, description}}`` from ``s404="why"`` keywords, with ``model`` as the body."""
    return {int(code[1:]): {"model": model, "description": text} for code, text in codes.items()}


#: statuses any API operation may answer with
COMMON = error_responses(
    s400="the request was refused (a memedit error without a more specific status)",
    s401="no token, or an unknown or revoked one (WWW-Authenticate: Bearer)",
    s403="the token may not read or change this namespace, or a session request lacks its CSRF header",
    s404="no such edit or namespace (an edit in a namespace the token cannot read answers 404 too)",
    s413="the request body is over the server's limit (memedit serve --max-body-bytes); it was not read",
    s422="a malformed request: a field, a parameter or the JSON body itself",
    s503="the store could not complete the operation (busy, damaged or unreachable); nothing changed",
)
#: statuses of the operations that change state, in addition to :data:`COMMON`
WRITE = error_responses(s409="the edit's state does not allow it (e.g. approving an edit that is not pending)")
#: statuses of adding an edit, in addition to :data:`COMMON` and :data:`WRITE`
ADD = error_responses(s429="too many new edits from this token (and browser address) in the namespace's window; "
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


DOCS_ASSETS = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs``, its scripts and styles served by the app from ``swagger-ui-bundle`` (no CDN)."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # the web extra brings it; without it, say so instead of a blank page
        swagger_ui_path = None
    if swagger_ui_path is not None:
        from starlette.staticfiles import StaticFiles

        app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if swagger_ui_path is None:
            return PlainTextResponse("the API page needs the swagger-ui-bundle package (pip install 'memedit[web]'); "
                                     "the schema is at /openapi.json", status_code=503)  # type: ignore[return-value]
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")
