"""The JSON API under ``/api`` (OpenAPI schema at ``/openapi.json``, docs at ``/docs``).

>>> from fastapi.testclient import TestClient                                    # doctest: +SKIP
>>> client = TestClient(create_app(store, tokens=tokens))                         # doctest: +SKIP
>>> client.get("/api/edits", params={"namespace": "default"},
...            headers={"Authorization": f"Bearer {secret}"}).json()["total"]    # doctest: +SKIP
3

Every endpoint names its namespace (a query parameter, or the edit's own for
``/api/edits/{id}``) and checks the caller's token covers it; an edit in a
namespace the caller cannot read answers 404, exactly like a missing one, so
ids do not reveal other tenants' edits. State changes need a token with
``write``. Errors are ``{"error": message, "type": name}`` with 400/401/403/
404/409/413/422/429/503 (each operation's list is in the schema:
:mod:`memedit.web.contract`); an edit the safety check refuses
(:mod:`memedit.safety`) is a 422 with ``type`` ``RefusedEditError`` and the
``rule`` and ``reason`` too. Body size and an API write's token are checked
before the body is read (:mod:`memedit.web.guard`).
"""
from __future__ import annotations

import hmac
import io
from typing import Any, Literal, Optional

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from ..edits import STATUSES, Edit
from ..errors import MAX_SQL_INT, NotFoundError, ValidationError
from ..policy import RateLimitedError
from ..safety import RefusedEditError
from ..store.chain import canonical_json, event_hash
from .auth import Principal
from .contract import ADD, COMMON, NDJSON, WRITE
from .query import MAX_PAGE, EditFilter, iter_matching, list_page

router = APIRouter(prefix="/api", responses=COMMON)
MAX_BULK = 1000  # each forget rewrites the index file and checkpoints the WAL
#: an edit id in a path: a SQLite integer (larger ones are a 422, never a 500)
EDIT_ID = PathParam(ge=1, le=MAX_SQL_INT, description="The edit's id (1 .. 2^63-1).")


class AuthError(Exception):
    """401 (no or bad credentials) or 403 (credentials without the permission)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ---- request bodies -------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EditIn(_Body):
    """A new edit: a free-text ``statement``, or a fact (``subject``, ``prompt`` with ``{}``, ``target_new``)."""

    namespace: str = "default"
    statement: Optional[str] = None
    subject: Optional[str] = None
    prompt: Optional[str] = None
    target_new: Optional[str] = None
    target_true: Optional[str] = None
    paraphrases: list[str] = Field(default_factory=list)
    author: Optional[str] = None
    source: Optional[str] = None
    status: Optional[Literal["pending", "active"]] = None
    channel: Literal["api", "chat"] = "api"

    def to_edit(self, namespace: str | None = None, default_author: str | None = None) -> Edit:
        ns = namespace or self.namespace
        author = self.author if self.author is not None else default_author
        if any(v is not None for v in (self.subject, self.prompt, self.target_new)):
            return Edit.fact(self.subject, self.prompt, self.target_new, target_true=self.target_true,  # type: ignore[arg-type]
                             paraphrases=self.paraphrases, statement=self.statement, namespace=ns,
                             author=author, source=self.source)
        if self.statement is None:
            raise ValidationError("give a statement, or subject, prompt and target_new")
        if self.paraphrases or self.target_true is not None:
            raise ValidationError("paraphrases and target_true belong to fact edits (subject, prompt, target_new)")
        return Edit.text(self.statement, namespace=ns, author=author, source=self.source)


class RejectIn(_Body):
    reason: Optional[str] = None


class ForgetIn(_Body):
    """Forgetting is confirmed by repeating the edit's id."""

    confirm: int
    reason: Optional[str] = None


class SupersedeIn(_Body):
    edit: EditIn


class BulkForgetIn(_Body):
    """Forget every edit matching the filter. ``dry_run`` reports the matches; the real run needs ``confirm_count``."""

    namespace: str
    status: list[Literal["pending", "active", "superseded", "rejected"]] = Field(default_factory=list)
    author: Optional[str] = None
    source: Optional[str] = None
    committed: Optional[bool] = None
    min_uses: Optional[int] = Field(default=None, ge=0, le=MAX_SQL_INT)
    since: Optional[str] = None
    until: Optional[str] = None
    text: Optional[str] = None
    dry_run: bool = False
    confirm_count: Optional[int] = None
    reason: Optional[str] = None


# ---- helpers ----------------------------------------------------------------------
def _state(request: Request) -> Any:
    return request.app.state.memedit


def caller(request: Request) -> Principal | None:
    """The principal behind the request: a Bearer token, else a browser session (CSRF-checked for writes)."""
    st = _state(request)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AuthError(401, "the Authorization header must be 'Bearer <token>'")
        who = st.tokens.authenticate(secret.strip())
        if who is None:
            raise AuthError(401, "unknown or revoked token")
        return who
    session = st.sessions.get(request.cookies.get("memedit_session"))
    if session is None:
        return None
    if not st.tokens.has(session.principal.name):
        st.sessions.end(request.cookies.get("memedit_session"))
        raise AuthError(401, "the token behind this session was revoked; sign in again")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        sent = request.headers.get("x-csrf-token") or ""
        if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            raise AuthError(403, "missing or wrong X-CSRF-Token header for a session request")
    return session.principal


def need_read(request: Request, namespace: str) -> Principal | None:
    st = _state(request)
    who = caller(request)
    if who is None:
        if namespace in st.public_read:
            return None
        raise AuthError(401, "a token is required (Authorization: Bearer <token>)")
    if not who.can_read(namespace) and namespace not in st.public_read:
        raise AuthError(403, f"this token may not read namespace {namespace!r}")
    return who


def need_write(request: Request, namespace: str) -> Principal:
    who = caller(request)
    if who is None:
        raise AuthError(401, "a token is required to change anything (Authorization: Bearer <token>)")
    if not who.can_write(namespace):
        raise AuthError(403, f"this token may not change namespace {namespace!r}")
    return who


def _edit_for(request: Request, edit_id: int, write: bool = False) -> tuple[Edit, Principal | None]:
    """The edit, after checking access to its namespace; 404 if missing *or* not readable (no id probing)."""
    st = _state(request)
    who = caller(request)
    if who is None and not st.public_read:
        raise AuthError(401, "a token is required (Authorization: Bearer <token>)")
    with st.lock:
        edit = st.store.get(edit_id)
    readable = (who is not None and who.can_read(edit.namespace)) or edit.namespace in st.public_read
    if not readable:
        if who is None:
            raise AuthError(401, "a token is required (Authorization: Bearer <token>)")
        raise NotFoundError(f"no edit with id {edit_id}")
    if write:
        return edit, need_write(request, edit.namespace)
    return edit, who


def refused_response(exc: RefusedEditError) -> JSONResponse:
    """422 for an edit the safety check refused: the usual ``{error, type}`` plus the ``rule`` that refused it."""
    return JSONResponse({"error": str(exc), "type": type(exc).__name__, "rule": exc.verdict.rule,
                         "reason": exc.verdict.reason}, status_code=422)


def edit_json(e: Edit) -> dict[str, Any]:
    d = e.to_dict()
    d["sentence"] = e.sentence() if e.status != "forgotten" else None
    return d


def history_json(store: Any, edit_id: int) -> list[dict[str, Any]]:
    """Events with ``hash_ok``: each event's hash recomputed from its fields and its predecessor's hash."""
    out = []
    for ev in store.history(edit_id):
        digest = event_hash(ev.prev_hash, ev.seq, ev.ts, ev.namespace, ev.edit_id, ev.kind, ev.actor,
                            canonical_json(ev.payload))
        out.append({**ev.to_dict(), "hash_ok": digest == ev.hash})
    return out


def _filter(namespace: str, status: list[str] | None, author: str | None, source: str | None,
            committed: bool | None, min_uses: int | None, since: str | None, until: str | None,
            text: str | None) -> EditFilter:
    return EditFilter(namespace=namespace, status=tuple(status or ()), author=author or None,
                      source=source or None, committed=committed, min_uses=min_uses, since=since or None,
                      until=until or None, text=text or None)


# ---- reading ------------------------------------------------------------------------
@router.get("/me", summary="Who the caller is and what it may do")
def me(request: Request) -> dict[str, Any]:
    who = caller(request)
    if who is None:
        raise AuthError(401, "no token or session")
    return who.to_dict()


@router.get("/namespaces", summary="Namespaces the caller may read, with live-edit counts")
def namespaces(request: Request) -> list[dict[str, Any]]:
    st = _state(request)
    who = caller(request)
    with st.lock:
        rows = st.store.namespaces()
    return [r for r in rows if (who is not None and who.can_read(r["name"])) or r["name"] in st.public_read]


@router.get("/edits", summary="List edits (newest first) with filters and pagination")
def list_edits(request: Request, namespace: str = "default",
               status: Optional[list[str]] = Query(None, description=f"any of {STATUSES}"),
               author: Optional[str] = None, source: Optional[str] = Query(None, description="substring"),
               committed: Optional[bool] = None, min_uses: Optional[int] = Query(None, ge=0, le=MAX_SQL_INT),
               since: Optional[str] = None, until: Optional[str] = None,
               q: Optional[str] = Query(None, description="substring of the edit's text"),
               limit: int = Query(50, ge=1, le=MAX_PAGE),
               offset: int = Query(0, ge=0, le=MAX_SQL_INT)) -> dict[str, Any]:
    need_read(request, namespace)
    st = _state(request)
    f = _filter(namespace, status, author, source, committed, min_uses, since, until, q)
    with st.lock:
        page = list_page(st.store, f, limit=limit, offset=offset)
    return {**page, "edits": [edit_json(e) for e in page["edits"]]}


@router.get("/search", summary="Semantic search: edits nearest to a question")
def search(request: Request, q: str, namespace: str = "default", k: int = Query(10, ge=1, le=100),
           status: Optional[list[str]] = Query(None, description="statuses searched (default active)")) -> list[dict[str, Any]]:
    need_read(request, namespace)
    st = _state(request)
    statuses = tuple(status or ("active",))
    bad = [s for s in statuses if s not in ("active", "pending")]
    if bad:
        raise ValidationError(f"search covers 'active' and 'pending' edits only, got {bad}")
    with st.lock:
        hits = st.store.search(q, namespace, k=k, statuses=statuses)
    return [{"edit": edit_json(h.edit), "score": h.score, "matched_text": h.matched_text} for h in hits]


@router.get("/edits/{edit_id}", summary="One edit with its history, uses and approval state")
def get_edit(request: Request, edit_id: int = EDIT_ID) -> dict[str, Any]:
    st = _state(request)
    edit, _ = _edit_for(request, edit_id)
    with st.lock:
        history = history_json(st.store, edit_id)
        usage = st.store.usage(edit_id, limit=50)
        notes = st.store.notes(edit_id)
        approved = st.policy.is_approved(edit)
    return {"edit": edit_json(edit), "history": history, "chain_ok": all(h["hash_ok"] for h in history),
            "usage": usage, "notes": notes, "approved": approved, "committed": edit.committed}


@router.get("/edits/{edit_id}/history", summary="The edit's events, oldest first, each hash checked")
def get_history(request: Request, edit_id: int = EDIT_ID) -> list[dict[str, Any]]:
    st = _state(request)
    _edit_for(request, edit_id)
    with st.lock:
        return history_json(st.store, edit_id)


@router.get("/edits/{edit_id}/usage", summary="Recent questions routed through the edit, with scores")
def get_usage(request: Request, edit_id: int = EDIT_ID, limit: int = Query(50, ge=1, le=1000)) -> list[dict[str, Any]]:
    st = _state(request)
    _edit_for(request, edit_id)
    with st.lock:
        return st.store.usage(edit_id, limit=limit)


@router.get("/export", response_class=Response, responses=NDJSON, summary="Export a namespace (or, for an all-namespace token, everything) as JSON lines")
def export(request: Request, namespace: Optional[str] = None) -> Response:
    st = _state(request)
    if namespace is None:
        who = caller(request)
        if who is None or not who.is_admin:
            raise AuthError(403 if who else 401, "exporting every namespace needs a token for '*'; name a namespace")
    else:
        need_read(request, namespace)
    buf = io.StringIO()
    with st.lock:
        st.store.export_jsonl(buf, namespace)
    name = (namespace or "all").replace("/", "_")
    return Response(buf.getvalue(), media_type="application/x-ndjson",
                    headers={"Content-Disposition": f'attachment; filename="memedit-{name}.jsonl"'})


@router.get("/health", summary="Store health: counts, index consistency and (for '*' tokens) the audit chain")
def health(request: Request, namespace: str = "default") -> dict[str, Any]:
    st = _state(request)
    who = need_read(request, namespace)
    with st.lock:
        counts = {s: st.store.count(namespace, status=s) for s in STATUSES}
        index = st.store.check_index() if st.store.count() else {"consistent": True}
        out: dict[str, Any] = {"namespace": namespace, "counts": counts, "index": index}
        if who is not None and who.is_admin:  # verify reports edit ids of every namespace
            report = st.store.verify()
            out["verify"] = report.to_dict()
    out["ok"] = bool(index.get("consistent")) and out.get("verify", {}).get("ok", True)
    return out


# ---- changing ------------------------------------------------------------------------
@router.post("/edits", status_code=201, responses={**WRITE, **ADD}, summary="Add an edit through the namespace's policy")
def add_edit(request: Request, body: EditIn) -> dict[str, Any]:
    st = _state(request)
    who = need_write(request, body.namespace)
    edit = body.to_edit(default_author=who.name)
    rules = st.policy.rules(body.namespace)
    key = (body.namespace, *rate_key(request, who))
    try:
        with st.lock:
            # Counted per token (and browser address), never by the author the body names: a client could
            # name a new author each time. The policy's own per-author limit applies too.
            wait = st.rate.check(key, rules.max_edits, rules.window_s)
            if wait > 0:
                raise RateLimitedError(f"token {who.name!r} made {rules.max_edits} edits in {body.namespace!r} "
                                       f"within {rules.window_s:g} s; try again in {wait:.0f} s", retry_after=wait)
            # the one door (memedit.policy): safety check, review, rate limit, contradictions; owns = the token's scopes
            stored = st.policy.submit(edit, channel=body.channel, actor=who.name, status=body.status,
                                      owns=who.can_write)
            st.rate.record(key)
    except RefusedEditError as exc:
        return refused_response(exc)  # type: ignore[return-value]
    return edit_json(stored)


def rate_key(request: Request, who: Principal) -> tuple[str, ...]:
    """Whom a new edit counts against: its token; for a browser session, the token and the client's address."""
    if request.headers.get("authorization") is not None:
        return ("token", who.name)
    return ("session", who.name, request.client.host if request.client else "")


@router.post("/edits/{edit_id}/approve", responses=WRITE, summary="Approve a pending edit")
def approve(request: Request, edit_id: int = EDIT_ID) -> dict[str, Any]:
    st = _state(request)
    _, who = _edit_for(request, edit_id, write=True)
    with st.lock:
        return edit_json(st.store.approve(edit_id, actor=who.name))  # type: ignore[union-attr]


@router.post("/edits/{edit_id}/reject", responses=WRITE, summary="Reject a pending edit (optional reason)")
def reject(request: Request, body: RejectIn, edit_id: int = EDIT_ID) -> dict[str, Any]:
    st = _state(request)
    _, who = _edit_for(request, edit_id, write=True)
    with st.lock:
        return edit_json(st.store.reject(edit_id, actor=who.name, reason=body.reason))  # type: ignore[union-attr]


@router.post("/edits/{edit_id}/supersede", responses=WRITE, status_code=201, summary="Replace an edit with a new one")
def supersede(request: Request, body: SupersedeIn, edit_id: int = EDIT_ID) -> dict[str, Any]:
    st = _state(request)
    old, who = _edit_for(request, edit_id, write=True)
    new = body.edit.to_edit(namespace=old.namespace, default_author=who.name)  # type: ignore[union-attr]
    try:
        with st.lock:  # the same safety check as a new edit; one it would hold is a 409 (add it instead)
            replaced = st.policy.supersede(edit_id, new, actor=who.name, owns=who.can_write)  # type: ignore[union-attr]
        return edit_json(replaced)
    except RefusedEditError as exc:
        return refused_response(exc)  # type: ignore[return-value]


@router.post("/edits/{edit_id}/forget", responses=WRITE, summary="Erase an edit (store, index, weights); confirm with its id")
def forget(request: Request, body: ForgetIn, edit_id: int = EDIT_ID) -> dict[str, Any]:
    st = _state(request)
    _, who = _edit_for(request, edit_id, write=True)
    if body.confirm != edit_id:
        raise ValidationError(f"to forget edit {edit_id}, send confirm={edit_id}")
    with st.lock:
        return st.store.forget(edit_id, actor=who.name, reason=body.reason)  # type: ignore[union-attr]


@router.post("/forget-by-filter", responses=WRITE, summary="Forget every edit matching a filter (dry run first, then confirm the count)")
def forget_by_filter(request: Request, body: BulkForgetIn) -> dict[str, Any]:
    st = _state(request)
    who = need_write(request, body.namespace)
    f = _filter(body.namespace, list(body.status) or ["pending", "active", "superseded", "rejected"], body.author,
                body.source, body.committed, body.min_uses, body.since, body.until, body.text)
    with st.lock:
        ids = [int(e.id) for e in iter_matching(st.store, f)]  # type: ignore[arg-type]
        if len(ids) > MAX_BULK:
            raise ValidationError(f"{len(ids)} edits match; at most {MAX_BULK} per request: narrow the filter or repeat")
        if body.dry_run:
            return {"dry_run": True, "count": len(ids), "ids": ids}
        if body.confirm_count != len(ids):
            raise ValidationError(f"{len(ids)} edits match; send confirm_count={len(ids)} to forget them "
                                  "(run with dry_run first)")
        reports = [st.store.forget(i, actor=who.name, reason=body.reason) for i in ids]
    return {"dry_run": False, "count": len(ids), "ids": ids,
            "checkpoint_complete": all(r["checkpoint_complete"] for r in reports)}
