"""What every store backend shares: result records, row <-> Edit conversion, validation, audit checks.

>>> from memedit.store.common import statuses
>>> statuses(["active", "pending"])
('active', 'pending')

The SQLite store (:mod:`memedit.store.sqlite`) and the PostgreSQL store
(:mod:`memedit.store.postgres`) keep the same columns with the same meaning,
so one row from either converts to an :class:`~memedit.edits.Edit` the same
way, a new edit is checked and turned into a row the same way, and
``verify`` applies the same checks to the events and edits it read.
"""
from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Sequence

from ..edits import STATUSES, Edit, subject_key, utcnow
from ..errors import MAX_SQL_INT, ValidationError
from .chain import GENESIS, canonical_json, check_chain, content_hash

MAX_QUERY = 4000
CONTENT_COLUMNS = ("subject", "subject_key", "prompt", "relation_key", "target_new", "target_true",
                   "paraphrases", "statement", "author", "source", "meta", "salt")
STATUS_AFTER = {"approve": "active", "reject": "rejected", "supersede": "superseded", "forget": "forgotten"}


@dataclass(frozen=True)
class SearchHit:
    """One search result: the edit, its best cosine score and the stored text that matched."""

    edit: Edit
    score: float
    matched_text: str
    #: the stored unit vector of ``matched_text`` where the store has it at hand (the router's scope
    #: classifier reads it instead of embedding the text again); not part of equality or to_dict
    vector: Any = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"edit": self.edit.to_dict(), "score": self.score, "matched_text": self.matched_text}


@dataclass(frozen=True)
class VerifyReport:
    """What a store's ``verify`` found; ``ok`` only when every check passed."""

    ok: bool
    events: int
    edits: int
    problems: list[str]
    head_hash: str
    #: edits with a stored vector that differs from the hash recorded when it was written (``verify --repair``)
    damaged_vectors: list[int] = field(default_factory=list)
    #: leftover temporary files removed from beside the store (a writer crashed while saving the index)
    removed_leftovers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def edit_from_row(row: dict[str, Any]) -> Edit:
    """An :class:`Edit` from one ``edits`` row (either backend)."""
    return Edit(
        kind=row["kind"], statement=row["statement"], subject=row["subject"], prompt=row["prompt"],
        target_new=row["target_new"], target_true=row["target_true"],
        paraphrases=tuple(json.loads(row["paraphrases"])) if row["paraphrases"] else (),
        namespace=row["namespace"], author=row["author"], source=row["source"], id=row["id"], uid=row["uid"],
        status=row["status"], supersedes=row["supersedes"], superseded_by=row["superseded_by"],
        usage_count=row["usage_count"], last_used_at=row["last_used_at"], committed=bool(row["committed"]),
        created_at=row["created_at"], updated_at=row["updated_at"],
        meta=json.loads(row["meta"]) if row["meta"] else {},
    )


def checked_new_edit(edit: Edit, status: str | None) -> Edit:
    """Validate an edit about to be added and reset its bookkeeping fields (the store assigns them)."""
    if not isinstance(edit, Edit):
        raise ValidationError(f"expected an Edit, got {type(edit).__name__}; build one with Edit.fact or Edit.text")
    edit = edit.validated()
    status = status or edit.status or "active"
    if status not in ("active", "pending"):
        raise ValidationError(f"a new edit starts 'active' or 'pending', not {status!r}")
    return replace(edit, status=status, id=None, supersedes=None, superseded_by=None, usage_count=0,
                   last_used_at=None, committed=False)


def new_edit_row(edit: Edit, gen: int, keep: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``edits`` row for a new edit: a fresh salt, its content HMAC, bookkeeping from ``keep`` (import)."""
    now = utcnow()
    keep = keep or {}
    salt = secrets.token_bytes(16)
    digest = content_hash(edit.content(), salt)
    row = {
        "uid": keep.get("uid") or uuid.uuid4().hex, "namespace": edit.namespace, "kind": edit.kind,
        "status": edit.status, "subject": edit.subject,
        "subject_key": subject_key(edit.subject) if edit.subject else None,
        "prompt": edit.prompt, "relation_key": edit.relation, "target_new": edit.target_new,
        "target_true": edit.target_true, "paraphrases": json.dumps(list(edit.paraphrases), ensure_ascii=False),
        "statement": edit.statement, "author": edit.author, "source": edit.source,
        "meta": canonical_json(edit.meta), "usage_count": keep.get("usage_count", 0),
        "last_used_at": keep.get("last_used_at"), "committed": int(bool(keep.get("committed", False))),
        "created_at": keep.get("created_at") or now, "updated_at": keep.get("updated_at") or now,
        "content_hash": digest, "salt": salt, "gen": gen,
        "supersedes": keep.get("supersedes"), "superseded_by": keep.get("superseded_by"),
    }
    if "id" in keep:
        row["id"] = keep["id"]
    return row


def verify_rows(events: list[dict[str, Any]], edits: list[dict[str, Any]], head: str | None,
                count: str | int | None) -> VerifyReport:
    """Check the event chain, the recorded head, and every edit against its history and content hash.

    ``events`` ordered by seq and ``edits`` must come from one consistent snapshot.
    """
    problems = check_chain(events)
    last = events[-1]["hash"] if events else GENESIS
    if (head or GENESIS) != last or int(count or 0) != len(events):
        problems.append("the newest events were removed (chain head or count differs from the recorded head)")
    first_hash: dict[int, str] = {}
    derived: dict[int, dict[str, Any]] = {}  # what the log says each edit's state must be
    for r in events:
        edit_id = r["edit_id"]
        if edit_id is None:
            continue
        payload = json.loads(r["payload"])
        if r["kind"] in ("add", "import") and edit_id not in first_hash:
            first_hash[edit_id] = payload.get("content_hash")
            derived[edit_id] = {"status": payload.get("status"), "namespace": r["namespace"], "committed": False}
        elif edit_id in derived:
            state = derived[edit_id]
            state["status"] = STATUS_AFTER.get(r["kind"], state["status"])
            if r["kind"] in ("commit", "revert"):
                state["committed"] = r["kind"] == "commit"
    for row in edits:
        if first_hash.get(row["id"]) != row["content_hash"]:
            problems.append(f"edit {row['id']}: content hash differs from the one in its add event")
        state = derived.get(row["id"])
        if state and (state["status"], state["namespace"]) != (row["status"], row["namespace"]):
            problems.append(f"edit {row['id']}: status/namespace ({row['status']}, {row['namespace']}) differ from "
                            f"its history ({state['status']}, {state['namespace']})")
        if state and row["status"] != "forgotten" and state["committed"] != bool(row["committed"]):
            problems.append(f"edit {row['id']}: committed flag differs from its commit/revert events")
        if row["status"] == "forgotten":
            if any(row[c] is not None for c in CONTENT_COLUMNS):
                problems.append(f"edit {row['id']}: forgotten but content remains")
            continue
        edit = edit_from_row(row)
        if content_hash(edit.content(), bytes(row["salt"] or b"")) != row["content_hash"]:
            problems.append(f"edit {row['id']}: content was altered after it was stored")
    return VerifyReport(ok=not problems, events=len(events), edits=len(edits), problems=problems, head_hash=last)


def statuses(status: str | Sequence[str] | None) -> tuple[str, ...]:
    """A status filter as a tuple, refusing unknown statuses."""
    if status is None:
        return ()
    values = (status,) if isinstance(status, str) else tuple(status)
    bad = [s for s in values if s not in STATUSES]
    if bad:
        raise ValidationError(f"unknown status {bad[0]!r}; use one of {STATUSES}")
    return values


def like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` literally anywhere (``%``, ``_`` and ``\\`` escaped with ``\\``)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


TEXT_COLUMNS = ("subject", "prompt", "target_new", "statement", "paraphrases")


def check_list_window(limit: int, offset: int) -> None:
    if not (0 < limit <= 100_000) or not 0 <= offset <= MAX_SQL_INT:
        raise ValidationError(f"limit must be in 1..100000 and offset in 0..{MAX_SQL_INT}")


def check_k(k: Any) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not 0 < k <= 1000:
        raise ValidationError("k must be an integer in 1..1000")


def chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class _NoBar:
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


def progress(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar when ``enabled``, else a do-nothing stand-in."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="edit")


def iso_bound(value: Any, name: str) -> str:
    """An ISO date or date-time as a bound comparable with stored ``created_at`` (UTC, microseconds).

    >>> iso_bound("2026-11-21", "since")
    '2026-11-21T00:00:00.000000+00:00'
    """
    from datetime import datetime, timezone

    if not isinstance(value, str):
        raise ValidationError(f"{name} must be an ISO date or date-time string, got {type(value).__name__}")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{name} must be an ISO date or date-time (e.g. 2026-11-21), got {value!r}") from None
    dt = dt.astimezone(timezone.utc) if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)
    return dt.isoformat(timespec="microseconds")


def extra_filters(ph: str, *, source: str | None = None, committed: bool | None = None,
                  min_uses: int | None = None, since: str | None = None, until: str | None = None,
                  ilike: str = "LIKE") -> tuple[list[str], list[Any]]:
    """SQL clauses (with placeholder ``ph``) for the list filters both stores share.

    ``source``: case-insensitive substring; ``committed``: in the weights or not;
    ``min_uses``: used at least this often; ``since`` (inclusive) / ``until``
    (exclusive): ISO dates or date-times on ``created_at``.
    """
    clauses: list[str] = []
    params: list[Any] = []
    if source is not None:
        if not isinstance(source, str):
            raise ValidationError("source must be a string")
        clauses.append(f"source {ilike} {ph} ESCAPE '\\'")
        params.append(like_pattern(source))
    if committed is not None:
        if not isinstance(committed, bool):
            raise ValidationError("committed must be true or false")
        clauses.append(f"committed = {ph}")
        params.append(int(committed))
    if min_uses is not None:
        if isinstance(min_uses, bool) or not isinstance(min_uses, int) or not 0 <= min_uses <= MAX_SQL_INT:
            raise ValidationError(f"min_uses must be an integer in 0..{MAX_SQL_INT}")
        clauses.append(f"usage_count >= {ph}")
        params.append(min_uses)
    if since is not None:
        clauses.append(f"created_at >= {ph}")
        params.append(iso_bound(since, "since"))
    if until is not None:
        clauses.append(f"created_at < {ph}")
        params.append(iso_bound(until, "until"))
    return clauses, params

