"""Listing edits with the audit page's filters, one page at a time, over the store's public API.

>>> from memedit.web.query import EditFilter, list_page
>>> page = list_page(store, EditFilter(namespace="default", status=("pending",)), limit=50)  # doctest: +SKIP
>>> page["total"], len(page["edits"])                                                     # doctest: +SKIP
(3, 3)

``status``, ``author`` and ``text`` go straight to ``store.list`` /
``store.count``, **one status at a time**, and the per-status streams (each
newest first) are merged: the SQLite store indexes ``(namespace, status)``,
so a one-status query walks that index in id order and stops after the page,
while a query over several statuses sorts the whole namespace first (about 2
s at 100k edits). A page at offset ``o`` reads at most ``o + limit`` rows per
status, so the first pages cost milliseconds at any size; past ``MERGE_DEPTH``
rows one multi-status query is cheaper (the store sorts once), so deep pages
grow linearly with the namespace (an index on ``(namespace, id)`` or keyset
pagination in ``store.list`` would make them cheap too).
``source``, ``committed``, ``min_uses`` and the date range are passed down
when the store's ``list`` accepts them; otherwise the rows the SQL filters
leave are scanned in chunks, status by status (see docs/WEB.md).
"""
from __future__ import annotations

import heapq
import inspect
import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

from ..edits import STATUSES, Edit
from ..errors import ValidationError

SCAN_CHUNK = 2000
MAX_PAGE = 500
MAX_DEPTH = 100_000  # store.list's own limit
MERGE_DEPTH = 5_000
_EXTRA = ("source", "committed", "min_uses", "since", "until")


@dataclass(frozen=True)
class EditFilter:
    """The list filters; None means 'any'."""

    namespace: str
    status: tuple[str, ...] = ()
    author: str | None = None
    source: str | None = None          # substring of the edit's source
    committed: bool | None = None
    min_uses: int | None = None
    since: str | None = None           # ISO date/time, inclusive, on created_at
    until: str | None = None           # ISO date/time, exclusive
    text: str | None = None

    def __post_init__(self) -> None:
        bad = [s for s in self.status if s not in STATUSES]
        if bad:
            raise ValidationError(f"status must be among {STATUSES}, got {bad}")
        if self.min_uses is not None and self.min_uses < 0:
            raise ValidationError("min_uses must be >= 0")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                try:
                    datetime.fromisoformat(value)
                except ValueError:
                    raise ValidationError(f"{name} must be an ISO date or date-time (e.g. 2026-11-21), got {value!r}") from None

    @property
    def needs_scan(self) -> bool:
        return any(getattr(self, k) is not None for k in _EXTRA)

    def matches(self, e: Edit) -> bool:
        """The filters SQL did not apply."""
        if self.source is not None and self.source.casefold() not in (e.source or "").casefold():
            return False
        if self.committed is not None and bool(e.committed) != self.committed:
            return False
        if self.min_uses is not None and e.usage_count < self.min_uses:
            return False
        created = e.created_at or ""
        if self.since is not None and created < _iso_floor(self.since):
            return False
        if self.until is not None and created >= _iso_floor(self.until):
            return False
        return True


def _iso_floor(value: str) -> str:
    """An ISO bound comparable with stored UTC timestamps (a bare date means midnight UTC)."""
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is not None:
        from datetime import timezone

        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt.isoformat(timespec="microseconds")


def _accepts_extra(store: Any) -> bool:
    try:
        params = inspect.signature(store.list).parameters
    except (TypeError, ValueError):
        return False
    return all(k in params for k in _EXTRA)


def _sql_args(f: EditFilter) -> dict[str, Any]:
    return {"author": f.author, "text": f.text}


def _statuses(f: EditFilter) -> tuple[str, ...]:
    return f.status or STATUSES


def list_page(store: Any, f: EditFilter, *, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """``{"total", "limit", "offset", "edits"}`` for one page of edits matching ``f``, newest first."""
    if not (isinstance(limit, int) and 0 < limit <= MAX_PAGE) or not (isinstance(offset, int) and offset >= 0):
        raise ValidationError(f"limit must be in 1..{MAX_PAGE} and offset >= 0")
    args = _sql_args(f)
    if not f.needs_scan or _accepts_extra(store):
        if f.needs_scan:
            args.update({k: getattr(f, k) for k in _EXTRA})
        counts = {s: store.count(f.namespace, status=s, **args) for s in _statuses(f)}
        total = sum(counts.values())
        want = offset + limit
        if want > MAX_DEPTH:
            raise ValidationError(f"offset + limit is at most {MAX_DEPTH}; narrow the filters to reach older edits")
        if want > MERGE_DEPTH:  # deep page: one query (the store sorts once) beats reading want rows per status
            statuses = [s for s, n in counts.items() if n]
            edits = store.list(f.namespace, status=statuses, **args, limit=limit, offset=offset) if (
                statuses and offset < total) else []
            return {"total": total, "limit": limit, "offset": offset, "edits": edits, "scanned": False}
        streams = [store.list(f.namespace, status=s, **args, limit=min(want, n), offset=0)
                   for s, n in counts.items() if n and offset < total]
        merged = heapq.merge(*streams, key=lambda e: -int(e.id))
        edits = list(itertools.islice(merged, offset, want))
        return {"total": total, "limit": limit, "offset": offset, "edits": edits, "scanned": False}
    matches = sorted(iter_matching(store, f), key=lambda e: -int(e.id))
    return {"total": len(matches), "limit": limit, "offset": offset, "edits": matches[offset:offset + limit],
            "scanned": True}


def iter_matching(store: Any, f: EditFilter) -> Iterator[Edit]:
    """Every edit matching ``f``, status by status (newest first within a status), read in chunks."""
    args = _sql_args(f)
    if f.needs_scan and _accepts_extra(store):
        args.update({k: getattr(f, k) for k in _EXTRA})
    for status in _statuses(f):
        offset = 0
        while True:
            chunk = store.list(f.namespace, status=status, **args, limit=SCAN_CHUNK, offset=offset)
            for e in chunk:
                if f.matches(e):
                    yield e
            if len(chunk) < SCAN_CHUNK:
                break
            offset += SCAN_CHUNK
