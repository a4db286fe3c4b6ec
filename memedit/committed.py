"""Edits that live in the weights: choosing them, committing them, answering from them.

>>> from memedit import Editor
>>> ed = Editor(store="stores/default.db")                                  # doctest: +SKIP
>>> report = ed.commit(min_uses=3, method="memit")   # gated; refused batches leave the weights alone  # doctest: +SKIP
>>> ed.ask("The mother tongue of Danielle Darrieux is").route               # doctest: +SKIP
'weights'

:class:`CommittedWeights` binds a store's commit ledger (:mod:`memedit.commit`)
to the base model of a router. It attaches the ledger lazily: a store with no
commits never loads the model or hashes its weights. Once attached, every
question first brings the live model up to date with the ledger (one cheap
metadata read when nothing changed), so a commit, revert or forget made by
another process reaches this one before its next answer.

A committed edit's question goes to the weights route, and its answer is
checked against the edit (:func:`memedit.chat_check.check_committed_answer`);
an answer that misses is replaced by the memory route's. The commit gates
(:mod:`memedit.gates`, :mod:`memedit.chat_gates`) already asked the committed
model each edit's chat questions before the commit landed.

Weights are shared by every namespace a model serves: committing an edit of
one namespace changes what the model says to all of them. Commit only edits
that everyone using the model should see (an approved, shared namespace).
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .edits import Edit
from .errors import UnsupportedOperationError, ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from .commit import CommitLedger, CommitReport
    from .gates import GateConfig
    from .models.backends import Backend
    from .store import EditStore

log = logging.getLogger(__name__)


def commit_candidates(store: "EditStore", namespace: str, *, min_uses: int = 1, limit: int = 10_000) -> list[Edit]:
    """Approved, active, uncommitted fact edits of ``namespace`` used at least ``min_uses`` times, most used first.

    "Approved" is :meth:`memedit.policy.Policy.is_approved`: a chat user's
    correction must have been approved by a reviewer before it may reach the
    weights, even if the namespace lets it answer at once.
    """
    from .policy import Policy

    if isinstance(min_uses, bool) or not isinstance(min_uses, int) or min_uses < 0:
        raise ValidationError("min_uses must be a non-negative integer")
    edits = store.list(namespace, status="active", limit=limit)
    chosen = [e for e in edits if e.kind == "fact" and not e.committed and e.usage_count >= min_uses]
    chosen = Policy(store).committable(chosen)
    return sorted(chosen, key=lambda e: (-e.usage_count, e.id or 0))


class CommittedWeights:
    """The base model's weights kept equal to base + the store's applied ledger.

    ``backend`` is the router's base backend; it must be a local transformers
    model (a remote model's weights cannot be edited). It is resolved, and the
    model loaded, only when the store has commits or :meth:`commit` is called.
    """

    def __init__(self, store: "EditStore", backend: "Backend", *, gates: "GateConfig | None" = None):
        self.store = store
        self.backend = backend
        self.gates = gates
        self._ledger: "CommitLedger | None" = None
        self._lock = threading.RLock()
        self._ids_gen: str | None = None
        self._ids: frozenset[int] = frozenset()

    def _local(self) -> Any:
        """The resolved :class:`~memedit.models.backends.LocalLM` (loading it if needed)."""
        backend = self.backend
        resolved = backend.get() if hasattr(backend, "get") else backend
        if not (getattr(resolved, "is_local", False) and hasattr(resolved, "model") and hasattr(resolved, "tokenizer")):
            raise UnsupportedOperationError(
                f"the base model {getattr(backend, 'name', backend)!r} is not a local transformers model; "
                "only a local model's weights can take commits (its edits keep answering through the memory)")
        return resolved

    @property
    def ledger(self) -> "CommitLedger":
        """The ledger bound to the live model; attaching it applies the store's applied commits."""
        with self._lock:
            if self._ledger is None:
                from .commit import CommitLedger

                lm = self._local()
                self._ledger = CommitLedger(self.store, lm.model, lm.tokenizer, model_name=lm.name, gates=self.gates)
            return self._ledger

    @property
    def attached(self) -> bool:
        return self._ledger is not None

    def store_has_commits(self) -> bool:
        """Whether the store's ledger has ever held a commit (one indexed read; no model needed)."""
        return self.store._meta("ledger_gen") is not None

    def committed_ids(self) -> frozenset[int]:
        """Ids of the edits the live weights now hold (syncing the model with the ledger first).

        Empty, without loading anything, while the store has no commits; empty too
        when the base model is remote (its edits keep answering through the memory).
        """
        if self._ledger is None and not self.store_has_commits():
            return frozenset()
        try:
            ledger = self.ledger
        except UnsupportedOperationError:
            return frozenset()
        with self._lock:
            ledger.sync()
            gen = self.store._meta("ledger_gen")
            if gen != self._ids_gen:
                self._ids = frozenset(i for row in ledger.commits("applied") for i in row["edit_ids"])
                self._ids_gen = gen
            return self._ids

    def commit(self, edits: Sequence[Edit | int], *, method: str = "memit", hparams: Any = None, stats: Any = None,
               gates: "GateConfig | None" = None, actor: str | None = None,
               on_progress: Callable[[int, int], None] | None = None) -> "CommitReport":
        """Commit ``edits`` (see :meth:`memedit.commit.CommitLedger.commit`); the router then answers them from the weights."""
        with self._lock:
            report = self.ledger.commit(list(edits), method=method, hparams=hparams, stats=stats, gates=gates,
                                        actor=actor, on_progress=on_progress)
            self._ids_gen = None
            return report

    def revert(self, commit_id: int, *, actor: str | None = None) -> None:
        with self._lock:
            self.ledger.revert(commit_id, actor=actor)
            self._ids_gen = None

    def redo(self, commit_id: int, *, actor: str | None = None) -> None:
        with self._lock:
            self.ledger.redo(commit_id, actor=actor)
            self._ids_gen = None
