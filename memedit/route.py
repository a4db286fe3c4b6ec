"""The router: question -> embed -> search -> scope classifier -> route -> answer.

>>> from memedit import EditStore, Edit
>>> from memedit.route import Router
>>> store = EditStore("stores/demo.db")                                          # doctest: +SKIP
>>> store.add(Edit.text("The current president of the US is Trump"))            # doctest: +SKIP
>>> router = Router(store, "smollm2-135m-instruct")                              # doctest: +SKIP
>>> a = router.answer("Who is the president of the United States?", "default")  # doctest: +SKIP
>>> a.route, a.edits[0].statement                                                # doctest: +SKIP
('ike', 'The current president of the US is Trump')
>>> router.answer("What is the capital of France?", "default").route             # doctest: +SKIP
'base'

Routes:

* ``"base"``: no stored edit is in scope. The base model gets exactly what it
  would get without memedit, ``[{"role": "user", "content": question}]``, so
  (under greedy decoding) the answer is token for token the bare model's.
* ``"ike"``: the base model answers with the in-scope edit(s) and a few
  demonstrations in its context (:mod:`memedit.methods.ike`).
* ``"serac"``: a separate counterfactual model answers with the edit(s) in
  its context; the base model is not called (:mod:`memedit.methods.serac`).
* ``"weights"``: every in-scope edit is committed into the (local) base
  model's weights (:mod:`memedit.committed`), so the base model gets the bare
  question, as on the base route, and answers from its edited weights. The
  answer is checked against the edits (:func:`memedit.chat_check.check_committed_answer`:
  the new target in it, or the subject for a reverse question); one that
  misses is replaced by the memory route's answer (the policy's route, as if
  nothing were committed), and the trace's ``weights-check`` step says which
  and why.

``policy`` picks among in-scope routes: ``"ike"``, ``"serac"``, ``"auto"``
(the route that measured best on the report side for this base model,
:mod:`memedit.route_choice`; for a model nobody measured, IKE when it is local
and SERAC when it is remote, so a big remote model is never sent edited facts
it may ignore), or a callable ``(question, used) -> route``. More routes plug in with :meth:`Router.register` (MeLLo for
multi-hop questions is meant to: a method whose ``generate`` runs several
steps, chosen by a policy that recognises multi-hop questions).

:meth:`Router.prepare` does everything but generation and returns the exact
messages and backend, so evaluation can score continuations on the same
prompt the answer would use.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, Union, runtime_checkable

import numpy as np

from .answer import Answer, UsedEdit
from .config import DEFAULT_NAMESPACE
from .errors import BackendError, MemeditError, ValidationError
from .models.backends import Backend, lazy_backend

if TYPE_CHECKING:  # pragma: no cover
    from .scope import ScopeClassifier
    from .store import EditStore

log = logging.getLogger(__name__)

#: longest question accepted (characters); a prompt that long is already past what small models read well
MAX_QUESTION_CHARS = 4000
POLICIES = ("auto", "ike", "serac")

Policy = Union[str, Callable[[str, list[UsedEdit]], str]]


@runtime_checkable
class RouteMethod(Protocol):
    """A way of answering in-scope questions (IKE, SERAC, later MeLLo).

    ``messages`` builds the prompt (keywords it may use or ignore: ``q_vec``,
    the question's unit vector, and ``embedder_name``, the embedder that made
    it); ``backend`` picks the model that answers
    (given the base model). A method may also define ``generate(backend,
    prepared) -> (text, trace)`` to run several model calls (MeLLo); without
    it the router sends ``prepared.messages`` to ``backend.chat`` once.
    """

    route: str

    def messages(self, question: str, used: Sequence[UsedEdit], **kwargs: Any) -> list[dict[str, str]]: ...

    def backend(self, base: Backend) -> Backend: ...


@dataclass
class Prepared:
    """Everything decided before generation: the route, the edits behind it, and the exact prompt."""

    question: str
    namespace: str
    route: str
    used: list[UsedEdit]
    candidates: list[UsedEdit]
    messages: list[dict[str, str]]
    backend: Backend
    timings_ms: dict[str, float] = field(default_factory=dict)
    max_new_tokens: int | None = None  # the router's answer length (None: the backend's default)
    #: steps decided with the prompt, first in the answer's trace (IKE: the demonstrations shown)
    trace: list[dict[str, Any]] = field(default_factory=list)
    #: MeLLo took a multi-hop question no edit was in scope of, because its chain may reach one; if no hop does,
    #: :meth:`Router.run` answers with the base model (the answer the question would have had)
    through_chain: bool = False

    @property
    def edit_ids(self) -> list[int]:
        return [int(u.edit.id) for u in self.used if u.edit.id is not None]


def check_question(question: Any) -> str:
    """Return ``question`` unchanged if it is usable, else raise ValidationError."""
    if not isinstance(question, str):
        raise ValidationError(f"the question must be a string, got {type(question).__name__}")
    if not question.strip():
        raise ValidationError("the question must not be empty or whitespace")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValidationError(f"the question is too long ({len(question)} characters; at most {MAX_QUESTION_CHARS})")
    if "\x00" in question:
        raise ValidationError("the question contains a NUL character")
    return question


class _BaseMethod:
    """The "base" route: the question alone, to the base model."""

    route = "base"

    def messages(self, question: str, used: Sequence[UsedEdit], **_: Any) -> list[dict[str, str]]:  # noqa: ARG002
        return [{"role": "user", "content": question}]  # exactly what the model gets without memedit

    def backend(self, base: Backend) -> Backend:
        return base


class _WeightsMethod(_BaseMethod):
    """The "weights" route: the in-scope edits live in the weights, so the question goes in bare."""

    route = "weights"


class _IKERoute:
    """IKE as a route: the base model answers an IKE prompt."""

    route = "ike"

    def __init__(self, ike: Any):
        self.ike = ike

    def messages(self, question: str, used: Sequence[UsedEdit], **kwargs: Any) -> list[dict[str, str]]:
        return self.ike.messages(question, used, **kwargs)

    def prompt(self, question: str, used: Sequence[UsedEdit], **kwargs: Any
               ) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
        """The messages and the trace steps that record them (the demonstrations shown, when IKE can say)."""
        prompt = getattr(self.ike, "prompt", None)
        if prompt is None:  # an IKE-like object that only builds messages
            return self.ike.messages(question, used, **kwargs), []
        p = prompt(question, used, **kwargs)
        return p.messages, [p.trace_step()]

    def backend(self, base: Backend) -> Backend:
        return base


class Router:
    """Answers questions through an edit store; see the module docstring for the routes.

    ``base`` and ``counterfactual`` are anything
    :func:`~memedit.models.backends.as_backend` accepts; model *names* load on
    first use. ``k`` edits are retrieved per question and kept when the scope
    classifier's calibrated probability reaches ``threshold`` (default: the
    classifier's own).
    """

    def __init__(self, store: "EditStore", base: Any, *, counterfactual: Any = None,
                 classifier: "ScopeClassifier | None" = None, policy: Policy = "auto", k: int = 5,
                 threshold: float | None = None, ike: Any = None, serac: Any = None,
                 max_new_tokens: int | None = None, device: Any = "cpu", dtype: Any = "float32",
                 weights: Any = None, mello: Any = None, fact_matcher: Any = None):
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 100:
            raise ValidationError("k must be an integer in 1..100")
        if threshold is not None and not (isinstance(threshold, (int, float)) and 0.0 < float(threshold) < 1.0):
            raise ValidationError("threshold must be a probability in (0, 1)")
        if not callable(policy) and policy not in POLICIES:
            raise ValidationError(f"policy must be one of {POLICIES} or a callable (question, used) -> route")
        self.store = store
        self.base: Backend = lazy_backend(base, device=device, dtype=dtype)
        self.policy = policy
        self.k = k
        self._threshold = None if threshold is None else float(threshold)
        self._classifier = classifier
        #: the "asks the edit's own fact" check (memedit.fact_match); None: the packaged one, False: off
        self._fact_matcher = fact_matcher
        self.max_new_tokens = max_new_tokens
        self._vec_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._vec_lock = threading.Lock()
        self._known_namespaces: set[str] = set()
        self.methods: dict[str, RouteMethod] = {"base": _BaseMethod(), "weights": _WeightsMethod()}
        #: a :class:`~memedit.committed.CommittedWeights` (or None): which edits the base weights hold
        self.weights = weights
        if ike is None:
            from .methods.ike import IKE

            ike = IKE()
        self.register(_IKERoute(ike))
        if serac is None:
            from .methods.serac import SERAC

            serac = SERAC(counterfactual, device=device, dtype=dtype)
        elif counterfactual is not None:
            raise ValidationError("pass either serac= or counterfactual=, not both")
        self.register(serac)
        if mello is not False:  # multi-hop questions go to MeLLo (issue 5); mello=False turns it off
            if mello is None:
                from .methods.mello import MeLLo

                mello = MeLLo()
            self.register(mello)

    # ---- configuration -------------------------------------------------------
    def register(self, method: RouteMethod) -> None:
        """Add (or replace) the method behind ``method.route``, e.g. a MeLLo method for ``"mello"``."""
        if not isinstance(method, RouteMethod) or not isinstance(method.route, str):
            raise ValidationError("a route method needs .route, .messages(question, used) and .backend(base)")
        if method.route in ("base", "weights"):
            raise ValidationError(f"the {method.route} route cannot be replaced: it must stay the bare question "
                                  "to the base model")
        bind = getattr(method, "bind", None)
        if callable(bind):  # a method that needs the router's store (MeLLo)
            bind(self)
        self.methods[method.route] = method

    @property
    def classifier(self) -> "ScopeClassifier":
        """The scope classifier (the packaged one unless given), loaded on first use."""
        if self._classifier is None:
            from .scope import ScopeClassifier

            self._classifier = ScopeClassifier.load()
        return self._classifier

    @property
    def fact_matcher(self) -> Any:
        """The check that a question asks an edit's own fact (the packaged one unless given; None when off)."""
        if self._fact_matcher is None:
            from .fact_match import FactMatcher

            self._fact_matcher = FactMatcher.load()
        return self._fact_matcher or None

    def _check_fact_questions(self, question: str, used: Sequence[UsedEdit]) -> bool:
        """Mark each in-scope fact edit whose own fact the question asks (``UsedEdit.asks_fact``).

        Returns whether the question restates such an edit's own prompt (a
        one-hop question however many relation words it has).
        """
        matcher = self.fact_matcher
        if matcher is None:
            return False
        restates = False
        for u in used:
            check = matcher.assess(question, u.edit, u.scope_probability, self._embed)
            if check is None:
                continue
            u.fact_probability, u.asks_fact = check.probability, check.asks
            restates = restates or check.restates_prompt
        return restates

    @property
    def threshold(self) -> float:
        return self._threshold if self._threshold is not None else self.classifier.threshold

    @property
    def counterfactual(self) -> Backend | None:
        serac = self.methods.get("serac")
        return serac.backend(self.base) if serac is not None else None

    # ---- preparing -------------------------------------------------------------
    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors from the store's embedder, cached per text (edit texts recur across questions)."""
        with self._vec_lock:  # the embedder serialises encoding anyway; one lock keeps the cache simple
            missing = [t for t in dict.fromkeys(texts) if t not in self._vec_cache]
            if missing:
                for t, v in zip(missing, self.store.embedder.encode(missing)):
                    self._vec_cache[t] = v
            out = np.stack([self._vec_cache[t] for t in texts])
            for t in texts:
                self._vec_cache.move_to_end(t)
            while len(self._vec_cache) > 4096:
                self._vec_cache.popitem(last=False)
        return out

    def _hit_vectors(self, hits: Sequence[Any]) -> np.ndarray:
        """The unit vector of each hit's matched text, one row per hit.

        A store that returns the stored vector with the hit (SQLite) saves a
        forward pass over up to ``k`` texts per question, the largest share of
        routing time when the hits are new; other hits are embedded here (cached).
        """
        stored = [getattr(h, "vector", None) for h in hits]
        missing = [h.matched_text for h, v in zip(hits, stored) if v is None]
        fresh = iter(self._embed(missing)) if missing else iter(())
        return np.stack([np.asarray(v, dtype=np.float32) if v is not None else next(fresh) for v in stored])

    def _namespace(self, name: str) -> str:
        """``store.require_namespace``, asked once per name: namespaces are never deleted, so one seen stays valid."""
        if not isinstance(name, str) or name not in self._known_namespaces:
            name = self.store.require_namespace(name)  # raises for a bad or unknown name
            self._known_namespaces.add(name)
        return name

    def _decide(self, question: str, used: list[UsedEdit], committed: frozenset[int] = frozenset()) -> str:
        if not used:
            return "base"
        if committed and all(u.edit.id in committed for u in used):
            return "weights"  # the model itself now knows every edit in scope; a prompt would only repeat it
        policy = self.policy
        if callable(policy):
            route = policy(question, list(used))
        elif policy == "auto":
            route = self._auto_route()
        else:
            route = policy
        if not isinstance(route, str) or route not in self.methods:
            raise ValidationError(f"policy chose route {route!r}, but only {sorted(self.methods)} are available")
        return route

    def _auto_route(self) -> str:
        """``policy="auto"``: the route measured best for this base model, else IKE: the user's own model answers.

        The measured choices (:mod:`memedit.route_choice`) come from report-side
        evaluations (SERAC for the packaged SmolLM2 and Gemma-3-270m, whose own
        in-context answers measured worse); SERAC is only taken on them while it
        has its trained adapter. Any other model (a LangChain chat model, a local
        checkpoint nobody measured) is the user's choice of answerer, so it
        answers in-scope questions too, with the edits and demonstrations in its
        chat prompt (IKE); SERAC's small counterfactual model answers instead
        only where it measured better or when ``policy="serac"`` asks for it.
        """
        from .route_choice import measured_route

        best = measured_route(getattr(self.base, "name", None))
        if best == "serac" and getattr(self.methods.get("serac"), "adapter", None) is None:
            best = None
        return best if best in self.methods else "ike"

    def _claimed(self, question: str, namespace: str, how: str = "claims") -> str | None:
        """A route whose method claims the question outright (MeLLo: multi-hop questions), else None; ``how``
        names the method's test (``claims_through_chain``: for a question with no in-scope edit)."""
        for name, method in self.methods.items():
            claims = getattr(method, how, None)
            if claims is not None and claims(question, namespace):
                return name
        return None

    def prepare(self, question: str, namespace: str = DEFAULT_NAMESPACE, *, k: int | None = None) -> Prepared:
        """Retrieve, classify and route ``question``; build the prompt but do not generate.

        ``k`` overrides the number of edits retrieved for this question.
        """
        question = check_question(question)
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 100):
            raise ValidationError("k must be an integer in 1..100")
        namespace = self._namespace(namespace)
        timings: dict[str, float] = {}
        text = question.strip()

        t0 = time.perf_counter()
        qvec = self.store.embedder.encode([text])[0]
        timings["embed"] = _ms(t0)

        t0 = time.perf_counter()
        hits = self.store.search_vector(qvec, namespace, k=k or self.k)
        timings["search"] = _ms(t0)

        used: list[UsedEdit] = []
        candidates: list[UsedEdit] = []
        if hits:
            t0 = time.perf_counter()
            matched = [h.matched_text for h in hits]
            clf = self.classifier
            same_space = clf.embedder_name == getattr(self.store.embedder, "name", None)
            # The classifier reads the very vectors the index compared, when both come from one embedder.
            e_vecs = self._hit_vectors(hits) if same_space else None
            q_vecs = np.repeat(qvec[None, :], len(hits), axis=0) if same_space else None
            timings["embed"] += _ms(t0)
            t0 = time.perf_counter()
            probs = clf.predict_proba([text] * len(hits), matched, q_vecs=q_vecs, e_vecs=e_vecs)
            timings["classify"] = _ms(t0)
            threshold = self.threshold
            for hit, p in zip(hits, probs):
                u = UsedEdit(edit=hit.edit, scope_probability=float(p), similarity=float(hit.score),
                             matched_text=hit.matched_text)
                (used if p >= threshold else candidates).append(u)
            used.sort(key=lambda u: -u.scope_probability)

        one_hop = False
        if used:
            t0 = time.perf_counter()
            one_hop = self._check_fact_questions(text, used)
            timings["fact_check"] = _ms(t0)
        committed = self.weights.committed_ids() if self.weights is not None else frozenset()
        # A method may claim a question outright (MeLLo: multi-hop), but only one the memory has something to say
        # about: a question with no in-scope edit goes to the bare model, whatever its shape (locality). A question
        # that restates an in-scope edit's own prompt is one hop, however many relation words that prompt has.
        claimed = self._claimed(question, namespace) if used and not one_hop else None
        # ... or a multi-hop question whose chain runs through a relation a stored edit states, though it names
        # no edited subject itself: MeLLo follows it, and the base model answers if no hop reaches an edit.
        if not used:
            claimed = self._claimed(question, namespace, "claims_through_chain")
        through_chain = claimed is not None and not used
        route = claimed or self._decide(question, used, committed)
        if route == "base" and used:  # the policy chose not to use them: they become candidates
            candidates = used + candidates
            used = []
        method = self.methods[route]
        t0 = time.perf_counter()
        kwargs = {"q_vec": qvec, "embedder_name": getattr(self.store.embedder, "name", None)}
        if isinstance(method, _IKERoute):  # records which demonstrations the prompt shows (leak audits)
            messages, steps = method.prompt(question, used, **kwargs)
        else:
            messages, steps = method.messages(question, used, **kwargs), []
        timings["prompt"] = _ms(t0)
        return Prepared(question=question, namespace=namespace, route=route, used=used, candidates=candidates,
                        messages=messages, backend=method.backend(self.base), timings_ms=timings,
                        max_new_tokens=self.max_new_tokens, trace=steps, through_chain=through_chain)

    # ---- answering -----------------------------------------------------------------
    def _generate(self, prepared: Prepared) -> tuple[str, list[dict[str, Any]]]:
        """The answer of ``prepared``'s route and the trace steps its method recorded."""
        method = self.methods[prepared.route]
        try:
            generate = getattr(method, "generate", None)
            if generate is not None:
                return generate(prepared.backend, prepared)
            return prepared.backend.chat(prepared.messages, self.max_new_tokens), []
        except MemeditError:
            raise  # already says what went wrong (a model that is not installed, say)
        except Exception as exc:  # a backend may raise anything (HTTP, CUDA, tokenizer); give one type back
            raise BackendError(
                f"the {prepared.route} route's model ({prepared.backend.name}) failed: {type(exc).__name__}: {exc}"
            ) from exc

    def _memory_fallback(self, prepared: Prepared) -> Prepared:
        """``prepared`` re-routed to the memory: the route the policy takes when nothing is committed."""
        from dataclasses import replace

        route = self._decide(prepared.question, prepared.used)
        if route in ("base", "weights"):  # a policy callable that keeps away from the memory: IKE has the edits
            route = "ike"
        method = self.methods[route]
        kwargs = {"embedder_name": getattr(self.store.embedder, "name", None)}
        if isinstance(method, _IKERoute):
            messages, steps = method.prompt(prepared.question, prepared.used, **kwargs)
        else:
            messages, steps = method.messages(prepared.question, prepared.used, **kwargs), []
        return replace(prepared, route=route, messages=messages, backend=method.backend(self.base), trace=steps)

    def run(self, prepared: Prepared) -> Answer:
        """Generate the answer for a prepared question and record which edits it used.

        A ``weights`` answer that does not give the in-scope edits is replaced
        by the memory route's (see the module docstring).
        """
        trace: list[dict[str, Any]] = list(prepared.trace)
        t0 = time.perf_counter()
        text, steps = self._generate(prepared)
        trace.extend(steps)
        route = prepared.route
        if prepared.through_chain and not prepared.used:  # no hop reached an edit: the answer is the base model's
            trace.append({"step": "chain-check", "reached_edit": False,
                          "why": "no hop of the chain reached a stored edit; answered by the base model"})
            route = "base"
            text = self.base.chat([{"role": "user", "content": prepared.question}], self.max_new_tokens)
        elif prepared.through_chain:
            trace.append({"step": "chain-check", "reached_edit": True,
                          "why": "a hop of the chain reached a stored edit though none was in scope of the question"})
        if route == "weights":
            from .chat_check import check_committed_answer

            check = check_committed_answer(text, prepared.question, prepared.used)
            step: dict[str, Any] = {"step": "weights-check", "weights_answer": text, **check}
            if check["ok"]:
                step["why"] = "the committed model's answer gives the edit"
                trace.append(step)
            else:
                memory = self._memory_fallback(prepared)
                route = memory.route
                step.update(fallback=route, why="the committed model's answer does not contain "
                            f"{' or '.join(repr(x) for x in check['expected']) or 'a fact edit'}; answered from the "
                            "memory instead")
                log.debug("weights answer %r missed %s; falling back to %s", text, check["expected"], route)
                trace += [step, *memory.trace]
                text, steps = self._generate(memory)
                trace.extend(steps)
        timings = dict(prepared.timings_ms, generate=_ms(t0))
        if prepared.used:
            # Only an answer that exists counts as a use: a failure above leaves the store untouched.
            self.store.record_use(prepared.edit_ids, question=prepared.question,
                                  scores=[u.scope_probability for u in prepared.used], route=route)
        timings["total"] = sum(v for k, v in timings.items() if k != "total")
        return Answer(text=text, route=route, question=prepared.question, namespace=prepared.namespace,
                      used=prepared.used, candidates=prepared.candidates, trace=trace, timings_ms=timings)

    def answer(self, question: str, namespace: str = DEFAULT_NAMESPACE, *, k: int | None = None) -> Answer:
        """:meth:`prepare` then :meth:`run`."""
        return self.run(self.prepare(question, namespace, k=k))


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)
