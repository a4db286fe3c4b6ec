"""The facade users meet first.

>>> from memedit import Editor
>>> ed = Editor(store="stores/default.db")                                   # doctest: +SKIP
>>> e = ed.edit("The most handsome person in the world is Hung-yi Lee")      # doctest: +SKIP
>>> ed.search("Who is the best-looking man?")[0].edit.id == e.id             # doctest: +SKIP
True
>>> a = ed.ask("Who is the most handsome person in the world?")             # doctest: +SKIP
>>> a.route, a.edits[0].id == e.id, "Hung-yi Lee" in a.text                  # doctest: +SKIP
('ike', True, True)
>>> ed.ask("What is the capital of France?").route                           # doctest: +SKIP
'base'
>>> ed.forget(e.id)                                                          # doctest: +SKIP

``model`` is the base model: a registered name (default, the packaged
SmolLM2-135M-Instruct), a local model directory, a ``(model, tokenizer)``
pair, any langchain-core ``BaseChatModel``, or a memedit backend. Named models
load on the first question, so an Editor that only stores edits never loads
one. Answering goes through :class:`~memedit.route.Router`. :meth:`Editor.commit`
writes frequently used edits into a local base model's weights through the
store's gated ledger (:mod:`memedit.committed`); the router then answers them
from the weights, and an Editor opened later on the same store loads the model
as base + ledger.
"""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Iterable

from .answer import Answer
from .config import DEFAULT_NAMESPACE
from .edits import Edit
from .store import EditStore, Event, SearchHit

if TYPE_CHECKING:  # pragma: no cover
    from .commit import CommitReport
    from .gates import GateConfig
    from .models.backends import Backend
    from .route import Policy, Prepared, Router
    from .scope import ScopeClassifier

DEFAULT_MODEL = "smollm2-135m-instruct"


class Editor:
    """Corrections in, answers out. Owns (or borrows) an :class:`EditStore`."""

    def __init__(self, model: Any = DEFAULT_MODEL, store: EditStore | str | os.PathLike[str] | None = None, *,
                 namespace: str = DEFAULT_NAMESPACE, author: str | None = None, policy: "Policy" = "auto",
                 counterfactual: Any = None, classifier: "ScopeClassifier | None" = None, k: int = 5,
                 threshold: float | None = None, max_new_tokens: int | None = None, device: Any = "cpu",
                 dtype: Any = "float32", gates: "GateConfig | None" = None):
        from .models.backends import lazy_backend
        from .route import POLICIES

        if not callable(policy) and policy not in POLICIES:
            from .errors import ValidationError

            raise ValidationError(f"policy must be one of {POLICIES} or a callable (question, used) -> route")
        from .store import PgEditStore, open_store

        self._owns_store = not isinstance(store, (EditStore, PgEditStore))
        # A path opens SQLite, a postgresql:// URL PostgreSQL, None the default store.
        self.store = store if not self._owns_store else open_store(store)  # type: ignore[assignment]
        self.namespace = namespace
        self.author = author
        # Coerced now (a bad model argument fails here, not at the first question); a name loads lazily.
        self.base: "Backend" = lazy_backend(model if model is not None else DEFAULT_MODEL, device=device, dtype=dtype)
        from .committed import CommittedWeights

        self.weights = CommittedWeights(self.store, self.base, gates=gates)
        self._router_args = dict(counterfactual=counterfactual, classifier=classifier, policy=policy, k=k,
                                 threshold=threshold, max_new_tokens=max_new_tokens, device=device, dtype=dtype,
                                 weights=self.weights)
        self._router: "Router | None" = None
        self._router_lock = threading.Lock()

    @property
    def router(self) -> "Router":
        """The router answering questions (built on first use; it loads models only when they answer)."""
        if self._router is None:
            from .route import Router

            with self._router_lock:
                if self._router is None:
                    self._router = Router(self.store, self.base, **self._router_args)  # type: ignore[arg-type]
        return self._router

    def ask(self, question: str, namespace: str | None = None, *, k: int | None = None) -> Answer:
        """Answer ``question`` consistently with the stored edits of ``namespace``.

        Returns an :class:`~memedit.answer.Answer` with the route taken
        (``"base"`` when no edit is in scope), the edits used and their scores.
        """
        return self.router.answer(question, self.namespace if namespace is None else namespace, k=k)

    def prepare(self, question: str, namespace: str | None = None, *, k: int | None = None) -> "Prepared":
        """The routing decision and exact prompt for ``question``, without generating (see :meth:`Router.prepare`)."""
        return self.router.prepare(question, self.namespace if namespace is None else namespace, k=k)

    def edit(self, statement: str | None = None, *, subject: str | None = None, prompt: str | None = None,
             target_new: str | None = None, target_true: str | None = None, paraphrases: Iterable[str] = (),
             namespace: str | None = None, author: str | None = None, source: str | None = None,
             status: str = "active", meta: dict[str, Any] | None = None) -> Edit:
        """Store a correction: free text (``statement``) or a fact (``subject``, ``prompt``, ``target_new``).

        ``meta``: extra JSON data kept with the edit (e.g. ``{"origin": "chat"}``,
        which :mod:`memedit.policy` reads to require review before commits).
        The same safety check as every other way in (:mod:`memedit.safety`):
        instructions, prompt markup, answers for every question, vague
        statements and opinions raise :class:`~memedit.safety.RefusedEditError`
        (nothing stored); encoded or look-alike text is stored ``pending`` with
        the reason in its ``meta``.
        """
        ns = namespace or self.namespace
        who = author or self.author
        if prompt is not None or subject is not None or target_new is not None:
            edit = Edit.fact(subject, prompt, target_new, target_true=target_true,  # type: ignore[arg-type]
                             paraphrases=paraphrases, statement=statement, namespace=ns, author=who, source=source)
        else:
            edit = Edit.text(statement, namespace=ns, author=who, source=source)  # type: ignore[arg-type]
        from dataclasses import replace

        from .policy import HELD_FLAG
        from .safety import HOLD, REFUSE, RefusedEditError, assess_edit

        verdict = assess_edit(edit)
        if verdict.action == REFUSE:
            raise RefusedEditError(verdict)
        extra = dict(meta or {})
        if verdict.action == HOLD:
            status = "pending"
            extra.update(flag=HELD_FLAG, hold_rule=verdict.rule, hold_reason=verdict.reason)
        if extra:
            edit = replace(edit, meta=extra).validated()
        return self.store.add(edit, status=status)

    def commit(self, edit_ids: Iterable[int] | None = None, *, min_uses: int = 1, namespace: str | None = None,
               method: str = "memit", gates: "GateConfig | None" = None, hparams: Any = None, stats: Any = None,
               actor: str | None = None, dry_run: bool = False) -> "CommitReport":
        """Write edits into the base model's weights, gated and reversible.

        Without ``edit_ids``: the active, uncommitted fact edits of ``namespace``
        used at least ``min_uses`` times (:func:`memedit.committed.commit_candidates`),
        in one MEMIT or EMMET batch, or one ROME commit per edit. ``dry_run``
        returns the report of what would be committed, loading nothing.
        ``hparams`` and ``stats`` (second-moment statistics) default to the
        model family's table entry and the statistics cache. Weights serve every
        namespace: commit only edits everyone should see.
        """
        from .commit import METHODS, CommitReport
        from .committed import commit_candidates
        from .errors import ValidationError

        if method not in METHODS:
            raise ValidationError(f"unknown method {method!r}; use one of {METHODS}")
        if edit_ids is None:
            chosen = [int(e.id) for e in commit_candidates(self.store, namespace or self.namespace,  # type: ignore[arg-type]
                                                             min_uses=min_uses)]
        else:
            chosen = [int(i) for i in edit_ids]
        if dry_run or not chosen:
            return CommitReport(method, committed_edits=[], candidates=chosen)
        return self.weights.commit(chosen, method=method, hparams=hparams, stats=stats, gates=gates,
                                   actor=actor or self.author)

    def search(self, query: str, *, namespace: str | None = None, k: int = 5) -> list[SearchHit]:
        return self.store.search(query, namespace or self.namespace, k=k)

    def history(self, edit_id: int) -> list[Event]:
        return self.store.history(edit_id)

    def forget(self, edit_id: int, *, actor: str | None = None) -> dict[str, Any]:
        """Erase an edit from the store and the index; a commit holding it leaves the weights now."""
        result = self.store.forget(edit_id, actor=actor or self.author)
        if self.weights.attached:
            self.weights.committed_ids()  # replays the remaining ledger on the base weights
        return result

    def close(self) -> None:
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> "Editor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
