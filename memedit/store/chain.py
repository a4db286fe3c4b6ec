"""The append-only, hash-chained event log and content hashing.

Each event's hash covers its own fields and the previous event's hash, so
altering, reordering or deleting an event breaks every hash after it;
``verify`` recomputes the chain. Event payloads never hold edit content, only
a salted hash of it: forgetting erases the salt with the content, leaving a
tombstone that cannot be used to confirm a guess of what was said.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
EVENT_KINDS = (
    "namespace", "add", "import", "approve", "reject", "supersede", "use", "forget", "commit", "revert",
)


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace, UTF-8 kept) for hashing and export."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(content: dict[str, Any], salt: bytes) -> str:
    """HMAC-SHA256 of an edit's canonical content under its per-edit salt."""
    return hmac.new(salt, canonical_json(content).encode("utf-8"), hashlib.sha256).hexdigest()


def event_hash(prev_hash: str, seq: int, ts: str, namespace: str | None, edit_id: int | None,
               kind: str, actor: str | None, payload: str) -> str:
    body = canonical_json([seq, ts, namespace, edit_id, kind, actor, payload])
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Event:
    """One row of the audit log."""

    seq: int
    ts: str
    namespace: str | None
    edit_id: int | None
    kind: str
    actor: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Event":
        return cls(
            seq=row["seq"], ts=row["ts"], namespace=row["namespace"], edit_id=row["edit_id"], kind=row["kind"],
            actor=row["actor"], payload=json.loads(row["payload"]), prev_hash=row["prev_hash"], hash=row["hash"],
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_chain(rows: list[dict[str, Any]]) -> list[str]:
    """Problems found walking ``rows`` (ordered by seq) from the genesis hash; empty when intact."""
    problems: list[str] = []
    prev = GENESIS
    expected_seq = 1
    for row in rows:
        if row["seq"] != expected_seq:
            problems.append(f"event {row['seq']}: expected sequence number {expected_seq} (an event is missing)")
        if row["prev_hash"] != prev:
            problems.append(f"event {row['seq']}: prev_hash does not match the previous event's hash")
        digest = event_hash(row["prev_hash"], row["seq"], row["ts"], row["namespace"], row["edit_id"],
                            row["kind"], row["actor"], row["payload"])
        if digest != row["hash"]:
            problems.append(f"event {row['seq']}: hash mismatch (the event was altered)")
        prev = row["hash"]
        expected_seq = row["seq"] + 1
    return problems
