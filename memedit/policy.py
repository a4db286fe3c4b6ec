"""Per-namespace policy against bad corrections: review, sharing, rate limits, contradictions.

>>> from memedit import Edit, EditStore
>>> from memedit.policy import Policy, NamespacePolicy
>>> store = EditStore("/tmp/policy-demo.db")                                       # doctest: +SKIP
>>> policy = Policy(store, default=NamespacePolicy(chat_status="pending", max_edits=20, window_s=3600))  # doctest: +SKIP
>>> e = policy.submit(Edit.text("The CEO of Acme is Jane Roe.", author="u1"), channel="chat")  # doctest: +SKIP
>>> e.status                                                                       # doctest: +SKIP
'pending'

Built on the store's public API only (``add``, ``list``, ``history``), so it
works over any store with the :class:`~memedit.store.EditStore` interface.

* **Review.** A correction from a chat user starts ``pending`` or ``active``
  (``NamespacePolicy.chat_status``); edits through the API start
  ``api_status``. :meth:`Policy.is_approved` is true only for an active edit
  that did not come from a chat user unreviewed, or that was approved (an
  ``approve`` event in its history). Only approved edits may be shared beyond
  their author's namespace (:meth:`Policy.share`) or committed to the weights
  (:meth:`Policy.committable`).
* **Rate limits.** At most ``max_edits`` new edits per author (per namespace)
  in a sliding window of ``window_s`` seconds; more raise
  :class:`RateLimitedError` and nothing is stored.
* **Configuration.** :meth:`Policy.from_file` reads ``{"default": {...},
  "namespaces": {"acme": {...}}}`` (``memedit serve --policy-file``); a
  namespace without its own entry uses its nearest configured parent's.
* **Contradictions.** A new fact edit whose subject and relation match an
  approved active edit of the namespace but whose target differs is stored
  ``pending`` with a flag in its ``meta`` (``{"flag": "contradicts",
  "conflicts_with": [ids]}``) instead of silently superseding the approved
  one; a reviewer approves it (it then supersedes) or rejects it.
* **Safety (one door).** Every new edit, from chat, LangChain, ``memedit
  add`` or the HTTP API, passes :func:`memedit.safety.assess_edit` here
  (:meth:`submit`, and :meth:`supersede` for replacements). A refusal
  (instructions to the assistant, prompt markup, an answer for every
  question, a namespace the submitter does not own, a statement with no
  concrete subject, a mere opinion) raises
  :class:`~memedit.safety.RefusedEditError` (a ValidationError naming the
  rule and the reason) and stores nothing. A hold (encoded text, look-alike
  or invisible characters) stores the edit ``pending`` with ``meta =
  {"flag": "held", "hold_rule": rule, "hold_reason": reason}``; ``meta`` is
  part of the content hash sealed in the edit's ``add`` event, so the reason
  an auditor reads is the one recorded when it was stored.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from .edits import Edit, relation_key, subject_key
from .errors import ConflictError, ValidationError
from .safety import HOLD, REFUSE, RefusedEditError, Verdict, assess_edit
from .triples import META_KEY as TRIPLE_KEY
from .triples import relation_of, structured

log = logging.getLogger(__name__)

CHANNELS = ("chat", "api", "cli", "import")
NEW_STATUSES = ("pending", "active")
#: ``meta`` key recording where an edit came from (``chat`` edits need review before sharing/committing)
ORIGIN_KEY = "origin"
#: ``meta["flag"]`` of an edit the safety check held for review (its rule and reason in ``hold_rule``/``hold_reason``)
HELD_FLAG = "held"


class RateLimitedError(ConflictError):
    """An author made too many edits in the policy's window; nothing was stored. ``retry_after`` is in seconds."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class NamespacePolicy:
    """The rules of one namespace (or the default for all)."""

    chat_status: str = "pending"     # new corrections from chat users
    api_status: str = "active"       # new edits through the API / CLI by a token holder
    max_edits: int = 30              # per author in the window; 0 disables the limit
    window_s: float = 3600.0
    check_contradictions: bool = True

    def __post_init__(self) -> None:
        for name in ("chat_status", "api_status"):
            if getattr(self, name) not in NEW_STATUSES:
                raise ValidationError(f"{name} must be one of {NEW_STATUSES}, got {getattr(self, name)!r}")
        if not isinstance(self.max_edits, int) or isinstance(self.max_edits, bool) or self.max_edits < 0:
            raise ValidationError("max_edits must be a non-negative integer (0: no limit)")
        if not isinstance(self.window_s, (int, float)) or not 0 < float(self.window_s) <= 86400 * 31:
            raise ValidationError("window_s must be a number of seconds in (0, 31 days]")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NamespacePolicy":
        if not isinstance(data, dict):
            raise ValidationError("a namespace policy must be a JSON object")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValidationError(f"unknown policy field(s): {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class SlidingWindow:
    """Timestamps of recent events per key; ``hit`` refuses once ``limit`` fall inside ``window_s``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._events: dict[Any, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: Any, limit: int, window_s: float, n: int = 1) -> float:
        """Seconds to wait before ``n`` more events fit (0.0: they fit now). Records nothing."""
        if limit <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            q = self._events.setdefault(key, deque())
            while q and q[0] <= now - window_s:
                q.popleft()
            if len(q) + n <= limit:
                return 0.0
            if n > limit:
                return float(window_s)
            # the (len+n-limit)-th oldest must expire first
            return max(0.0, q[len(q) + n - limit - 1] + window_s - now)

    def record(self, key: Any, n: int = 1) -> None:
        with self._lock:
            now = self._clock()
            self._events.setdefault(key, deque()).extend([now] * n)


@dataclass
class Policy:
    """Applies :class:`NamespacePolicy` rules when edits are submitted; see the module docstring."""

    store: Any
    default: NamespacePolicy = field(default_factory=NamespacePolicy)
    namespaces: dict[str, NamespacePolicy] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._window = SlidingWindow(self.clock)
        self._lock = threading.Lock()

    @classmethod
    def from_dict(cls, store: Any, doc: dict[str, Any], **kwargs: Any) -> "Policy":
        """``{"default": {...}, "namespaces": {"acme": {...}}}`` (each a :class:`NamespacePolicy`'s fields)."""
        if not isinstance(doc, dict) or set(doc) - {"default", "namespaces"}:
            raise ValidationError('a policy file is {"default": {...}, "namespaces": {"name": {...}}}')
        from .edits import validate_namespace

        per_ns = doc.get("namespaces") or {}
        if not isinstance(per_ns, dict):
            raise ValidationError('"namespaces" must map namespace names to policies')
        return cls(store, default=NamespacePolicy.from_dict(doc.get("default") or {}),
                   namespaces={validate_namespace(k): NamespacePolicy.from_dict(v) for k, v in per_ns.items()}, **kwargs)

    @classmethod
    def from_file(cls, store: Any, path: str | os.PathLike[str], **kwargs: Any) -> "Policy":
        """Read :meth:`from_dict`'s document from a JSON file."""
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValidationError(f"cannot read policy file {path}: {exc}") from exc
        return cls.from_dict(store, doc, **kwargs)

    def rules(self, namespace: str) -> NamespacePolicy:
        """The rules for ``namespace``: its own, else the nearest parent's (``acme`` for ``acme/u1``), else the default."""
        parts = namespace.split("/")
        for i in range(len(parts), 0, -1):
            rules = self.namespaces.get("/".join(parts[:i]))
            if rules is not None:
                return rules
        return self.default

    def status_for(self, namespace: str, channel: str = "chat") -> str:
        """The status a new edit from ``channel`` starts with in ``namespace`` (for chat front ends)."""
        rules = self.rules(namespace)
        return rules.chat_status if channel == "chat" else rules.api_status

    # ---- submitting -----------------------------------------------------------
    def submit(self, edit: Edit, *, channel: str = "api", actor: str | None = None,
               status: str | None = None, owns: Callable[[str], bool] | None = None) -> Edit:
        """Validate, safety-check, rate-limit and contradiction-check ``edit``, then store it; returns the stored edit.

        ``status`` (``pending``/``active``) may only make an edit stricter
        than the policy: a chat correction under a ``pending`` policy cannot
        ask to be ``active``. ``owns(namespace)`` says which namespaces the
        submitter may change (a chat user: their own; an API token: its
        scopes); an edit outside them is refused. Raises
        :class:`~memedit.safety.RefusedEditError` (nothing stored) when the
        safety check refuses; a held edit is stored ``pending`` and flagged.
        """
        if channel not in CHANNELS:
            raise ValidationError(f"channel must be one of {CHANNELS}, got {channel!r}")
        if not isinstance(edit, Edit):
            raise ValidationError("expected an Edit")
        edit = edit.validated()
        rules = self.rules(edit.namespace)
        start = rules.chat_status if channel == "chat" else rules.api_status
        if status is not None:
            if status not in NEW_STATUSES:
                raise ValidationError(f"a new edit starts 'active' or 'pending', not {status!r}")
            if start == "pending" and status == "active":
                raise ValidationError(f"namespace {edit.namespace!r} requires review: {channel} edits start pending")
            start = status
        verdict = self.assess(edit, channel=channel, owns=owns)
        # A statement that states a relation of a subject is kept as (subject, relation, object) too: MeLLo
        # answers hops with it, and a later statement of the same subject and relation supersedes it. Free text
        # from any door; fact edits from chat (an API's structured edit says what it means already). Read after
        # the safety check (which judges what the user wrote), and never for an edit held for review.
        if verdict.action != HOLD and (edit.kind == "text" or channel == "chat"):
            edit = structured(edit)
        meta = dict(edit.meta)
        meta[ORIGIN_KEY] = channel
        if verdict.action == HOLD:
            start = "pending"
            meta.update(flag=HELD_FLAG, hold_rule=verdict.rule, hold_reason=verdict.reason)
        conflicts = self.contradictions(edit) if rules.check_contradictions else []
        if conflicts:
            start = "pending"
            meta.update(conflicts_with=conflicts)
            meta.setdefault("flag", "contradicts")
        key = (edit.namespace, edit.author or actor or "")
        with self._lock:  # check and record under one lock so racing submits cannot both slip in
            wait = self._window.check(key, rules.max_edits, rules.window_s)
            if wait > 0:
                raise RateLimitedError(
                    f"author {key[1] or '(anonymous)'!r} made {rules.max_edits} edits in {edit.namespace!r} within "
                    f"{rules.window_s:g} s; try again in {wait:.0f} s", retry_after=wait)
            earlier = self.same_relation(edit) if start == "active" and not conflicts else []
            if earlier:  # the same subject and relation said in other words: the store's key would not match
                stored = self.store.supersede(earlier[0], replace(edit, meta=meta), actor=actor)
            else:
                stored = self.store.add(replace(edit, meta=meta), status=start, actor=actor)
            self._window.record(key)
        if verdict.action == HOLD:
            log.info("held edit %s in %s for review (%s): %s", stored.id, stored.namespace, verdict.rule,
                     verdict.reason)
        return stored

    def assess(self, edit: Edit, *, channel: str = "api", owns: Callable[[str], bool] | None = None) -> Verdict:
        """The safety verdict on ``edit`` (see :mod:`memedit.safety`); raises RefusedEditError on a refusal.

        Returns the accept or hold verdict otherwise, so callers that store by
        other means (a replacement) apply the same rule.
        """
        verdict = assess_edit(edit, owns=owns)
        if verdict.action == REFUSE:
            # the reason, not the text: the text may be an attack, and logs are read by people and tools
            log.info("refused a %s edit for %s (%s)", channel, edit.namespace, verdict.rule)
            raise RefusedEditError(verdict)
        return verdict

    def supersede(self, old_id: int, new: Edit, *, actor: str | None = None,
                  owns: Callable[[str], bool] | None = None) -> Edit:
        """Replace edit ``old_id`` with ``new`` (in the old edit's namespace), after :meth:`submit`'s safety check.

        A replacement takes effect at once, so one the check would hold for
        review is refused with ConflictError: add it as a new edit instead,
        where it waits, flagged, for a reviewer.
        """
        if not isinstance(new, Edit):
            raise ValidationError("expected an Edit")
        old = self.store.get(old_id)
        new = replace(new, namespace=old.namespace).validated()
        verdict = self.assess(new, channel="api", owns=owns)
        if verdict.action == HOLD:
            raise ConflictError(f"this replacement needs review ({verdict.rule}: {verdict.reason}); submit it as a "
                                f"new edit, where it is stored pending for a reviewer")
        return self.store.supersede(old_id, new, actor=actor)

    def contradictions(self, edit: Edit) -> list[int]:
        """Ids of approved active edits with the same subject and relation as ``edit`` but another target.

        The same relation: the same prompt template, or the same catalogue relation when ``edit`` carries a
        reading (:mod:`memedit.triples`).
        """
        target = (edit.target_new or "").casefold().strip()
        return [int(o.id) for o in self._about_same(edit, ("active",))  # type: ignore[arg-type]
                if (o.target_new or "").casefold().strip() != target and self.is_approved(o)]

    def same_relation(self, edit: Edit) -> list[int]:
        """Live edits (newest first) that state ``edit``'s subject and catalogue relation in other words: what
        it supersedes beyond the store's own rule (equal prompt templates)."""
        if not edit.meta.get(TRIPLE_KEY):
            return []
        rel = relation_key(edit.prompt or "")
        return sorted((int(o.id) for o in self._about_same(edit, ("active", "pending"))  # type: ignore[arg-type]
                       if relation_key(o.prompt or "") != rel), reverse=True)

    def _about_same(self, edit: Edit, statuses: tuple[str, ...]) -> list[Edit]:
        if edit.kind != "fact" or not edit.subject or not edit.prompt:
            return []
        subj, rel = subject_key(edit.subject), relation_key(edit.prompt)
        reading = edit.meta.get(TRIPLE_KEY) or {}
        out = []
        for other in self._same_subject(edit.namespace, edit.subject, statuses):
            if other.kind != "fact" or not other.subject or not other.prompt or subject_key(other.subject) != subj:
                continue
            if relation_key(other.prompt) == rel or (reading and relation_of(other) == reading.get("relation")):
                out.append(other)
        return out

    def _same_subject(self, namespace: str, subject: str, statuses: tuple[str, ...] = ("active",)) -> Iterable[Edit]:
        try:
            return self.store.list(namespace, status=statuses if len(statuses) > 1 else statuses[0], text=subject,
                                   limit=1000)
        except Exception as exc:  # a namespace that does not exist yet has nothing to contradict
            from .errors import NotFoundError

            if isinstance(exc, NotFoundError):
                return []
            raise

    # ---- review state ---------------------------------------------------------
    def is_approved(self, edit: Edit | int) -> bool:
        """True for an active edit that was approved, or that did not need review (not an unreviewed chat edit)."""
        if not isinstance(edit, Edit):
            edit = self.store.get(edit)
        if edit.status != "active":
            return False
        if edit.meta.get(ORIGIN_KEY) != "chat" and not edit.meta.get("flag"):
            return True
        return any(ev.kind == "approve" for ev in self.store.history(edit.id))

    def committable(self, edits: Iterable[Edit]) -> list[Edit]:
        """The subset of ``edits`` that may be committed to the weights (approved ones only)."""
        return [e for e in edits if self.is_approved(e)]

    def share(self, edit_id: int, namespace: str, *, actor: str | None = None) -> Edit:
        """Copy an approved edit into another namespace (provenance kept in ``meta.shared_from``)."""
        edit = self.store.get(edit_id)
        if namespace == edit.namespace:
            raise ValidationError("an edit is already in its own namespace")
        if not self.is_approved(edit):
            raise ConflictError(f"edit {edit_id} is not approved; only approved edits are shared beyond "
                                f"{edit.namespace!r}")
        copy = replace(edit, namespace=namespace, meta={**edit.meta, "shared_from": edit.id, ORIGIN_KEY: "api"},
                       id=None, uid=None)
        return self.store.add(copy, status="active", actor=actor)
