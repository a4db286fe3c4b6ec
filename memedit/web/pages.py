"""Server-rendered pages under ``/ui`` (Jinja2, autoescaped); their buttons call the JSON API.

    GET  /ui/login                 sign in with a token (sets the session and CSRF cookies)
    GET  /ui/edits?namespace=...   the list with filters, text or semantic search, pagination
    GET  /ui/edits/{id}            an edit: provenance, history (hashes checked), uses, forget with confirmation
    GET  /ui/queue?namespace=...   pending edits to approve or reject (contradiction flags shown)
    GET  /ui/health?namespace=...  counts, index consistency, audit chain

Every page needs a session whose token covers the namespace shown; a page for
an edit the session cannot read answers 404. The script (``/ui/static/app.js``,
no inline scripts: the pages send a strict Content-Security-Policy) sends the
CSRF cookie's value in ``X-CSRF-Token`` with every change.
"""
from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..edits import STATUSES
from ..errors import MAX_SQL_INT, MemeditError, NotFoundError, ValidationError
from .api import EDIT_ID, AuthError, _filter, edit_json, history_json
from .auth import Principal
from .query import MAX_PAGE, list_page

HERE = Path(__file__).resolve().parent
router = APIRouter(prefix="/ui", include_in_schema=False)
_env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)


def _state(request: Request) -> Any:
    return request.app.state.memedit


def _session(request: Request) -> tuple[Principal | None, str | None]:
    s = _state(request).sessions.get(request.cookies.get("memedit_session"))
    return (s.principal, s.csrf) if s else (None, None)


def _render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    who, _ = _session(request)
    html = _env.get_template(name).render(who=who, statuses=STATUSES, **ctx)
    return HTMLResponse(html, status_code=status)


def _login_redirect(request: Request) -> RedirectResponse:
    nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/ui/login?" + urlencode({"next": nxt}), status_code=303)


def _readable(request: Request) -> list[str]:
    st = _state(request)
    who, _ = _session(request)
    with st.lock:
        names = [r["name"] for r in st.store.namespaces()]
    return [n for n in names if (who is not None and who.can_read(n)) or n in st.public_read]


def _check_ns(request: Request, namespace: str) -> Response | None:
    """None when the session may read ``namespace``; else a redirect to sign in or a 403 page."""
    st = _state(request)
    who, _ = _session(request)
    if namespace in st.public_read:
        return None
    if who is None:
        return _login_redirect(request)
    if not who.can_read(namespace):
        return _render(request, "error.html", status=403, message=f"This token may not read namespace {namespace!r}.")
    return None


@router.get("/static/app.js")
def script() -> FileResponse:
    return FileResponse(HERE / "static" / "app.js", media_type="text/javascript")


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/ui/edits", error: Optional[str] = None) -> HTMLResponse:
    return _render(request, "login.html", next=_safe_next(next), error=error)


def _same_origin(request: Request) -> bool:
    """A form post from another site (login CSRF) carries a foreign Origin header; browsers always send one."""
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"


@router.post("/login")
def login(request: Request, token: str = Form(...), next: str = Form("/ui/edits")) -> Response:
    st = _state(request)
    if not _same_origin(request):
        raise AuthError(403, "sign-in from another site refused")
    who = st.tokens.authenticate(token.strip())
    if who is None:
        return _render(request, "login.html", status=401, next=_safe_next(next), error="Unknown or revoked token.")
    sid, csrf = st.sessions.start(who)
    resp = RedirectResponse(_safe_next(next), status_code=303)
    common = dict(samesite="strict", secure=st.secure_cookies, path="/", max_age=int(st.sessions.ttl_s))
    resp.set_cookie("memedit_session", sid, httponly=True, **common)  # type: ignore[arg-type]
    resp.set_cookie("memedit_csrf", csrf, httponly=False, **common)  # type: ignore[arg-type]
    return resp


@router.post("/logout")
def logout(request: Request, csrf: str = Form("")) -> Response:
    st = _state(request)
    _, expected = _session(request)
    if expected is None or not hmac.compare_digest(csrf.encode(), expected.encode()):
        raise AuthError(403, "bad CSRF token")
    st.sessions.end(request.cookies.get("memedit_session"))
    resp = RedirectResponse("/ui/login", status_code=303)
    resp.delete_cookie("memedit_session", path="/")
    resp.delete_cookie("memedit_csrf", path="/")
    return resp


def _safe_next(value: str) -> str:
    """Only same-site paths under /ui (no open redirect)."""
    return value if value.startswith("/ui/") and not value.startswith("//") and "\\" not in value else "/ui/edits"


@router.get("", include_in_schema=False)
@router.get("/", include_in_schema=False)
def home() -> RedirectResponse:
    return RedirectResponse("/ui/edits", status_code=303)


@router.get("/edits", response_class=HTMLResponse)
def edits_page(request: Request, namespace: str = "default", status: Optional[list[str]] = Query(None),
               author: Optional[str] = None, source: Optional[str] = None, committed: Optional[str] = None,
               min_uses: Optional[str] = None, since: Optional[str] = None, until: Optional[str] = None,
               q: Optional[str] = None, mode: str = "text", limit: int = Query(50, ge=1, le=MAX_PAGE),
               offset: int = Query(0, ge=0, le=MAX_SQL_INT)) -> Response:
    denied = _check_ns(request, namespace)
    if denied is not None:
        return denied
    st = _state(request)
    params = {"namespace": namespace, "status": status or [], "author": author or "", "source": source or "",
              "committed": committed or "", "min_uses": min_uses or "", "since": since or "", "until": until or "",
              "q": q or "", "mode": mode, "limit": limit}
    error, rows, total, scores = None, [], 0, None
    try:
        if q and mode == "semantic":
            with st.lock:
                hits = st.store.search(q, namespace, k=min(limit, 100), statuses=tuple(status or ("active", "pending")))
            rows, scores, total = [edit_json(h.edit) for h in hits], [h.score for h in hits], len(hits)
        else:
            f = _filter(namespace, status, author, source, {"yes": True, "no": False}.get(committed or ""),
                        int(min_uses) if (min_uses or "").strip() else None, since, until, q)
            with st.lock:
                page = list_page(st.store, f, limit=limit, offset=offset)
            rows, total = [edit_json(e) for e in page["edits"]], page["total"]
    except (MemeditError, ValueError) as exc:
        error = str(exc)
    base = {k: v for k, v in params.items() if v not in ("", [], None)}
    prev_url = "/ui/edits?" + urlencode({**base, "offset": max(0, offset - limit)}, doseq=True) if offset > 0 else None
    next_url = ("/ui/edits?" + urlencode({**base, "offset": offset + limit}, doseq=True)
                if scores is None and offset + limit < total else None)
    return _render(request, "edits.html", namespace=namespace, namespaces=_readable(request), rows=rows,
                   total=total, offset=offset, scores=scores, params=params, error=error, prev_url=prev_url,
                   next_url=next_url, export_url="/api/export?" + urlencode({"namespace": namespace}))


@router.get("/edits/{edit_id}", response_class=HTMLResponse)
def edit_page(request: Request, edit_id: int = EDIT_ID) -> Response:
    st = _state(request)
    who, _ = _session(request)
    if who is None and not st.public_read:
        return _login_redirect(request)
    try:
        with st.lock:
            edit = st.store.get(edit_id)
        if not ((who is not None and who.can_read(edit.namespace)) or edit.namespace in st.public_read):
            raise NotFoundError(f"no edit with id {edit_id}")
        with st.lock:
            history = history_json(st.store, edit_id)
            usage = st.store.usage(edit_id, limit=50)
            notes = st.store.notes(edit_id)
            approved = st.policy.is_approved(edit)
    except (NotFoundError, ValidationError) as exc:
        return _render(request, "error.html", status=404 if isinstance(exc, NotFoundError) else 422, message=str(exc))
    can_write = who is not None and who.can_write(edit.namespace)
    return _render(request, "edit.html", e=edit_json(edit), history=history,
                   chain_ok=all(h["hash_ok"] for h in history), usage=usage, notes=notes, approved=approved,
                   can_write=can_write, namespace=edit.namespace)


@router.get("/queue", response_class=HTMLResponse)
def queue_page(request: Request, namespace: str = "default",
               offset: int = Query(0, ge=0, le=MAX_SQL_INT)) -> Response:
    denied = _check_ns(request, namespace)
    if denied is not None:
        return denied
    st = _state(request)
    who, _ = _session(request)
    f = _filter(namespace, ["pending"], None, None, None, None, None, None, None)
    with st.lock:
        page = list_page(st.store, f, limit=50, offset=offset)
    return _render(request, "queue.html", namespace=namespace, namespaces=_readable(request),
                   rows=[edit_json(e) for e in page["edits"]], total=page["total"],
                   can_write=who is not None and who.can_write(namespace))


@router.get("/health", response_class=HTMLResponse)
def health_page(request: Request, namespace: str = "default") -> Response:
    denied = _check_ns(request, namespace)
    if denied is not None:
        return denied
    st = _state(request)
    who, _ = _session(request)
    with st.lock:
        counts = {s: st.store.count(namespace, status=s) for s in STATUSES}
        index = st.store.check_index() if st.store.count() else {"consistent": True}
        report = st.store.verify().to_dict() if who is not None and who.is_admin else None
    return _render(request, "health.html", namespace=namespace, namespaces=_readable(request), counts=counts,
                   index=index, report=report)
