"""MeLLo: multi-hop questions answered over the edit memory (Zhong et al., 2023, "MQuAKE").

>>> from memedit import EditStore, Edit
>>> from memedit.methods.mello import MeLLo
>>> store = EditStore("stores/demo.db")                                              # doctest: +SKIP
>>> store.add(Edit.fact("Ada Lovelace", "{} holds citizenship of", "Kenya"))       # doctest: +SKIP
>>> mello = MeLLo(store, "smollm2-135m-instruct")                                    # doctest: +SKIP
>>> a = mello.answer("Who is the head of state of the country Ada Lovelace holds citizenship of?")  # doctest: +SKIP
>>> [(h["subquestion"], h["answer"], h["source"]) for h in a.trace if h["step"] == "hop"]  # doctest: +SKIP
[('Which country is Ada Lovelace a national of?', 'Kenya', 'edit'),
 ("Who is Kenya's head of state?", 'William Ruto', 'model')]

Two ways of running the paper's loop (sub-question, tentative answer,
retrieved edit, contradiction check, next hop; at most ``max_hops``):

* ``"structured"`` (small local models): the question is decomposed without
  the model (:mod:`memedit.methods.multihop`: head entity + relation chain
  from a general Wikidata relation catalogue); each hop is answered by a
  stored fact edit with the same subject and relation, else by the model's
  single-hop cloze answer; the contradiction check compares the model's
  tentative answer with the structured edit.
* ``"prompt"`` (capable models, e.g. any LangChain chat model): the paper's
  few-shot prompt; the model writes ``Subquestion:`` and ``Generated
  answer:``, memedit retrieves the nearest edit for the sub-question
  (namespace-filtered) and appends ``Retrieved fact:``, the model says
  whether it contradicts and writes the ``Intermediate answer:``, until it
  writes ``Final answer:``.

``"auto"`` (default) uses the structured loop when the question decomposes
into an entity and two or more relations, and otherwise the prompt loop for
remote models; a local model with an undecomposable question gets a clear
"cannot decompose" answer in the trace.

As a router method (``route = "mello"``) it *claims* multi-hop questions
(:meth:`claims`) before the scope decision, since the edits a multi-hop
question needs are often about an entity the question never names. It claims
only in namespaces holding at least one live fact edit (otherwise nothing
stored can change the answer and the bare model answers, as on the base route).
"""
from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any, Sequence

from ..answer import Answer, UsedEdit
from ..config import DEFAULT_NAMESPACE
from ..errors import ValidationError
from ..models.backends import Backend, lazy_backend
from .hop_detector import HopDetector, HopDetectorError, packaged_detector
from .multihop import DEFAULT_MAX_HOPS, Decomposer, Decomposition, FactIndex, HopResolver, default_decomposer
from .prompting import quote_fact
from .relations import Catalogue

if TYPE_CHECKING:  # pragma: no cover
    from ..store import EditStore

log = logging.getLogger(__name__)

MODES = ("auto", "structured", "prompt")
# A sentence break: terminal punctuation after a lowercase letter or digit ("U.S. President" does not break),
# then a capital; or a line break. A dependency chain lives inside the asking sentence.
_SENTENCE_BREAK = re.compile(r"(?<=[a-z0-9][.!?])\s+(?=[A-Z\"'])|\n+")


def asking_sentence(question: str) -> str:
    """The last sentence of ``question``: the one that asks (earlier ones are context).

    >>> asking_sentence("In 1995 the band played in Montreux. George Smith works in the field of")
    'George Smith works in the field of'
    >>> asking_sentence("Who is the U.S. President's wife?")
    "Who is the U.S. President's wife?"
    """
    parts = [p.strip() for p in _SENTENCE_BREAK.split(question.strip()) if p and p.strip()]
    return parts[-1] if parts else question

#: The paper's MeLLo format, with two hand-written demonstrations (facts chosen for the example, not from a benchmark).
MELLO_PROMPT = """Answer the question step by step. Write one "Subquestion:" and its "Generated answer:" at a time. \
After a "Retrieved fact:" line, say whether it contradicts the generated answer, then write the "Intermediate answer:". \
When you know the answer, write "Final answer:".

Question: What is the capital of the country where the Eiffel Tower is located?
Subquestion: Which country is the Eiffel Tower located in?
Generated answer: The Eiffel Tower is located in France.
Retrieved fact: "The Eiffel Tower is located in the country of Italy"
Retrieved fact contradicts the generated answer.
Intermediate answer: Italy
Subquestion: What is the capital of Italy?
Generated answer: The capital of Italy is Rome.
Retrieved fact: "The capital of Kenya is Nairobi"
Retrieved fact does not contradict the generated answer.
Intermediate answer: Rome
Final answer: Rome

Question: Who is the spouse of the founder of Microsoft?
Subquestion: Who founded Microsoft?
Generated answer: Microsoft was founded by Bill Gates.
Retrieved fact: "Amazon was founded by Jeff Bezos"
Retrieved fact does not contradict the generated answer.
Intermediate answer: Bill Gates
Subquestion: Who is Bill Gates married to?
Generated answer: Bill Gates is married to Melinda French Gates.
Retrieved fact: "Bill Gates is married to Ada Lovelace"
Retrieved fact contradicts the generated answer.
Intermediate answer: Ada Lovelace
Final answer: Ada Lovelace
"""


class MeLLo:
    """The MeLLo route: multi-hop answers over the edit memory, with every step in ``Answer.trace``.

    ``store`` may be left out when the router registers the method (it binds
    its own store). ``backend`` is the model that answers hops (default: the
    router's base model).
    """

    route = "mello"

    def __init__(self, store: "EditStore | None" = None, backend: Any = None, *, mode: str = "auto",
                 max_hops: int = DEFAULT_MAX_HOPS, catalogue: Catalogue | None = None,
                 decomposer: Decomposer | None = None, always_tentative: bool = False, fewshot: int = 3,
                 hop_tokens: int = 12, k: int = 3, detect: bool = True, aliases: bool = True, device: Any = "cpu",
                 dtype: Any = "float32", hop_detector: "HopDetector | str | None" = "packaged"):
        if mode not in MODES:
            raise ValidationError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(max_hops, int) or isinstance(max_hops, bool) or not 1 <= max_hops <= 10:
            raise ValidationError("max_hops must be an integer in 1..10")
        self.store = store
        self.backend_ = None if backend is None else lazy_backend(backend, device=device, dtype=dtype)
        self.mode = mode
        self.max_hops = max_hops
        self.catalogue = catalogue
        self._decomposer = decomposer
        self.always_tentative = always_tentative
        self.fewshot = fewshot
        self.hop_tokens = hop_tokens
        self.k = k
        self.detect = detect
        self.aliases = aliases
        if not (hop_detector is None or hop_detector == "packaged" or isinstance(hop_detector, HopDetector)):
            raise ValidationError("hop_detector must be 'packaged', a HopDetector, or None (count relations)")
        self._hop_detector = hop_detector
        self._resolvers: dict[int, HopResolver] = {}
        self._facts: FactIndex | None = None

    # ---- wiring ------------------------------------------------------------------
    def bind(self, router: Any) -> None:
        """Called by :meth:`Router.register`: use the router's store (and its base model unless one was given)."""
        if self.store is None:
            self.store = router.store

    @property
    def decomposer(self) -> Decomposer:
        if self._decomposer is None:
            self._decomposer = default_decomposer() if self.catalogue is None else Decomposer(self.catalogue)
        return self._decomposer

    def _require_store(self) -> "EditStore":
        if self.store is None:
            raise ValidationError("MeLLo needs an edit store: pass store= or register it on a Router")
        return self.store

    def facts(self) -> FactIndex:
        if self._facts is None:
            self._facts = FactIndex(self._require_store(), self.decomposer.catalogue)
        return self._facts

    def resolver(self, backend: Backend) -> HopResolver:
        r = self._resolvers.get(id(backend))
        if r is None:
            r = HopResolver(self._require_store(), backend, catalogue=self.decomposer.catalogue,
                            fewshot=self.fewshot, max_new_tokens=self.hop_tokens, k=self.k,
                            always_tentative=self.always_tentative, facts=self.facts(), aliases=self.aliases)
            self._resolvers[id(backend)] = r
        return r

    def decompose(self, question: str, namespace: str = DEFAULT_NAMESPACE) -> Decomposition:
        """The question's head entity (stored subjects preferred) and relation chain."""
        if self.store is None:
            return self.decomposer.decompose(question)
        # the namespace's subjects as an index, kept up to date incrementally: no pass over them per question
        return self.decomposer.decompose(question, self.facts().names(namespace))

    # ---- router protocol ------------------------------------------------------------
    def hop_detector(self) -> HopDetector | None:
        """The detector :meth:`claims` asks (None: the relation-count rule of the first version)."""
        if self._hop_detector == "packaged":
            try:
                self._hop_detector = packaged_detector()
            except HopDetectorError as exc:
                log.warning("no hop detector (%s); multi-hop questions are detected by counting relations", exc)
                self._hop_detector = None
        return self._hop_detector  # type: ignore[return-value]

    def claims(self, question: str, namespace: str) -> bool:
        """The multi-hop detector: does the question ask about an entity it reaches through another fact?

        Read from the question's meaning by :class:`~memedit.methods.hop_detector.HopDetector` (the
        namespace's stored subjects are the entities it masks), not from how many catalogue relations its
        words match; with ``hop_detector=None``, an entity plus two or more relations.
        """
        if not self.detect or self.store is None:
            return False
        try:
            # Without a stored fact in the namespace nothing can change the answer: leave it to the base model.
            names = self.facts().names(namespace)
            if not names:
                return False
            # Context sentences before the question (a quoted passage, a preamble) must not join the chain: a
            # question is multi-hop only if the sentence that asks it is.
            asking = asking_sentence(question)
            if not self.decomposer.may_be_multi_hop(asking, names):
                return False  # no embedding needed: fewer than two content words beside the entity
            detector = self.hop_detector()
            if detector is not None:
                return detector.is_multi_hop(asking, names) and self._can_start(question, namespace)
            if asking != question and not self.decompose(asking, namespace).is_multi_hop:
                return False
            return self.decompose(question, namespace).is_multi_hop
        # detection must never break answering: on any failure the question goes the usual way
        except Exception as exc:  # noqa: BLE001
            log.warning("multi-hop detection failed (%s: %s); routing as single-hop", type(exc).__name__, exc)
            return False

    def _can_start(self, question: str, namespace: str) -> bool:
        """Whether the loop this MeLLo would run can follow a chain: the model-written loop always can; the
        structured one needs an entity and two relations it knows (:attr:`Decomposition.is_multi_hop`).

        With no relation it could only say "I cannot answer this"; with one it would answer a single hop through a
        generic question about a relation it may have picked wrongly, where the single-hop routes answer from the
        in-scope edit itself (CounterFact's "To get to work every day, X has to" after "X works in London": MeLLo
        read *occupation* and said "artist", SERAC says "London"). Either way the question is better left to them.
        """
        if self.mode == "prompt":
            return True
        return self.decompose(question, namespace).is_multi_hop

    def claims_through_chain(self, question: str, namespace: str) -> bool:
        """A multi-hop question no edit is in scope of, whose chain may still reach one: it names an entity
        nothing was stored about ("the country where Stephen Baxter holds citizenship"), but one of its relations
        is one a stored fact edit states (that country's head of government). The router then lets MeLLo follow
        the chain, and answers with the base model if no hop reached an edit (:attr:`Prepared.through_chain`).

        Only the structured loop can say which relations a chain has; the model-written loop claims nothing here.
        """
        if self.mode == "prompt" or not self.claims(question, namespace):
            return False
        try:
            stated = self.facts().relations(namespace)
            return any(m.relation.id in stated for m in self.decompose(question, namespace).relations)
        except Exception as exc:  # noqa: BLE001 - as in claims(): detection never breaks answering
            log.warning("chain check failed (%s: %s); routing as usual", type(exc).__name__, exc)
            return False

    def messages(self, question: str, used: Sequence[UsedEdit], **_: Any) -> list[dict[str, str]]:  # noqa: ARG002
        """MeLLo makes several calls (see :meth:`generate`); this is the question as the first call sees it."""
        return [{"role": "user", "content": question}]

    def backend(self, base: Backend) -> Backend:
        return self.backend_ or base

    def generate(self, backend: Backend, prepared: Any) -> tuple[str, list[dict[str, Any]]]:
        """Run the loop for a prepared question; edits that answered hops are added to ``prepared.used``."""
        text, trace, used = self.run_loop(prepared.question, prepared.namespace, backend)
        have = {u.edit.id for u in prepared.used}
        prepared.used.extend(u for u in used if u.edit.id not in have)
        return text, trace

    # ---- answering ---------------------------------------------------------------------
    def answer(self, question: str, namespace: str = DEFAULT_NAMESPACE, *, record_use: bool = True) -> Answer:
        """Answer ``question`` with MeLLo directly (no router); records which edits answered hops."""
        from ..route import check_question

        store = self._require_store()
        question = check_question(question)
        namespace = store.require_namespace(namespace)
        if self.backend_ is None:
            raise ValidationError("MeLLo.answer needs a backend: pass backend= (or use it through a Router)")
        t0 = time.perf_counter()
        text, trace, used = self.run_loop(question, namespace, self.backend_)
        ms = round((time.perf_counter() - t0) * 1000, 3)
        if record_use and used:
            store.record_use([int(u.edit.id) for u in used if u.edit.id is not None], question=question,
                             scores=[u.scope_probability for u in used], route=self.route)
        return Answer(text=text, route=self.route, question=question, namespace=namespace, used=used, trace=trace,
                      timings_ms={"generate": ms, "total": ms})

    def run_loop(self, question: str, namespace: str, backend: Backend) -> tuple[str, list[dict[str, Any]], list[UsedEdit]]:
        """(answer text, trace, edits used) for ``question``; see the module docstring for the modes."""
        mode = self.mode
        d = self.decompose(question, namespace) if mode != "prompt" else None
        if mode == "auto":
            if d is not None and d.entity is not None and d.relations:
                mode = "structured"
            elif not getattr(backend, "is_local", True):
                mode = "prompt"
            else:
                mode = "structured"
        if mode == "prompt":
            return self._prompt_loop(question, namespace, backend)
        return self._structured(d or self.decompose(question, namespace), namespace, backend)

    def _structured(self, d: Decomposition, namespace: str,
                    backend: Backend) -> tuple[str, list[dict[str, Any]], list[UsedEdit]]:
        trace: list[dict[str, Any]] = [dict(step="decompose", mode="structured", **d.to_dict())]
        if d.entity is None:
            trace.append({"step": "stop", "reason": "no entity found in the question"})
            return "I cannot answer this: I found no entity in the question to start from.", trace, []
        if not d.relations:
            trace.append({"step": "stop", "reason": "no known relation found in the question"})
            return f"I cannot answer this: I found no relation of {d.entity} in the question.", trace, []
        if len(d.relations) > self.max_hops:
            raise ValidationError(f"the question needs {len(d.relations)} hops; the limit is {self.max_hops}")
        hops = self.resolver(backend).resolve_chain(d.entity, [m.relation for m in d.relations], namespace,
                                                    max_hops=self.max_hops)
        trace.extend(h.to_dict() for h in hops)
        used: list[UsedEdit] = []
        for h in hops:
            if h.edit_id is not None and not any(u.edit.id == h.edit_id for u in used):
                sim = next((r["similarity"] for r in h.retrieved if r["edit_id"] == h.edit_id), None)
                used.append(UsedEdit(edit=self._require_store().get(h.edit_id), scope_probability=1.0,
                                     similarity=float(sim) if sim is not None else 0.0, matched_text=h.subquestion))
        final = hops[-1].answer if hops and hops[-1].answer else "I do not know."
        trace.append({"step": "final", "answer": final})
        return final, trace, used

    # ---- the paper's prompt loop (capable models) ---------------------------------------
    def _prompt_loop(self, question: str, namespace: str,
                     backend: Backend) -> tuple[str, list[dict[str, Any]], list[UsedEdit]]:
        store = self._require_store()
        transcript = f"{MELLO_PROMPT}\nQuestion: {question.strip()}\n"
        trace: list[dict[str, Any]] = [{"step": "decompose", "mode": "prompt", "question": question}]
        used: list[UsedEdit] = []
        for i in range(self.max_hops + 1):
            reply = backend.chat([{"role": "user", "content": transcript}], 96)
            final = _field(reply, "Final answer")
            sub = _field(reply, "Subquestion")
            if final is not None and (sub is None or reply.find("Final answer") < reply.find("Subquestion")):
                trace.append({"step": "final", "answer": final})
                return final, trace, used
            if sub is None or i == self.max_hops:
                reason = "the model wrote no subquestion" if sub is None else f"more than {self.max_hops} hops"
                trace.append({"step": "stop", "reason": reason, "reply": reply[:500]})
                return f"I cannot answer this: {reason}.", trace, used
            gen = _field(reply, "Generated answer") or ""
            hits = store.search(sub, namespace, k=1)
            hop: dict[str, Any] = {"step": "hop", "index": i, "subquestion": sub, "tentative_answer": gen,
                                   "retrieved": [], "source": "model"}
            transcript += f"Subquestion: {sub}\nGenerated answer: {gen}\n"
            if hits:
                h = hits[0]
                fact = h.edit.sentence()
                hop["retrieved"].append({"edit_id": h.edit.id, "statement": fact, "similarity": round(h.score, 4)})
                transcript += f"Retrieved fact: {quote_fact(fact)}\n"
                check = backend.chat([{"role": "user", "content": transcript}], 48)
                contradicts = "does not contradict" not in check.casefold() and "contradict" in check.casefold()
                inter = _field(check, "Intermediate answer") or (h.edit.target_new if contradicts else None) or gen
                hop.update(contradiction=contradicts, answer=inter, edit_id=h.edit.id if contradicts else None,
                           source="edit" if contradicts else "model")
                if contradicts and not any(u.edit.id == h.edit.id for u in used):
                    used.append(UsedEdit(edit=h.edit, scope_probability=1.0, similarity=float(h.score),
                                         matched_text=h.matched_text))
                verdict = "contradicts" if contradicts else "does not contradict"
                transcript += f"Retrieved fact {verdict} the generated answer.\nIntermediate answer: {inter}\n"
            else:
                hop.update(contradiction=False, answer=gen)
                transcript += f"Intermediate answer: {gen}\n"
            trace.append(hop)
        return "I do not know.", trace, used  # pragma: no cover - the loop returns above


def _field(text: str, name: str) -> str | None:
    m = re.search(rf"{re.escape(name)}:\s*(.+)", text or "")
    return m.group(1).strip() if m else None


def format_trace(trace: Sequence[dict[str, Any]]) -> str:
    """The trace as indented lines for a terminal.

    >>> print(format_trace([{"step": "ike-demonstrations", "demonstrations": [
    ...     {"kind": "update", "fact": "The capital of Australia is Perth.", "answer": "Perth"}]}]))
    IKE prompt with 1 demonstration(s)
      update: 'The capital of Australia is Perth.' -> 'Perth'
    >>> print(format_trace([{"step": "hop", "index": 0, "subquestion": "Who founded X?", "tentative_answer": "A",
    ...                      "answer": "B", "source": "edit", "edit_id": 3, "contradiction": True, "retrieved": []}]))
    hop 1: Who founded X?
      tentative answer: A
      edit #3 contradicts it -> B
    >>> print(format_trace([{"step": "chain-check", "reached_edit": False, "why": "no hop reached a stored edit"}]))
    chain-check: no hop reached a stored edit
    """
    lines = []
    for step in trace:
        kind = step.get("step")
        if kind == "decompose":
            rels = ", ".join(f"{r['relation']} ({r['label']}: {r['text']!r})" for r in step.get("relations", []))
            if step.get("mode") == "structured":
                lines.append(f"decomposed: entity {step.get('entity')!r}; relations {rels or 'none'}")
            else:
                lines.append("decomposing with the model (MeLLo prompt)")
        elif kind == "hop":
            lines.append(f"hop {step['index'] + 1}: {step['subquestion']}")
            if step.get("tentative_answer") is not None:
                lines.append(f"  tentative answer: {step['tentative_answer']}")
            for r in step.get("retrieved", [])[:3]:
                sim = "" if r.get("similarity") is None else f" ({r['similarity']:.2f})"
                dec = f": {r['decision']}" if r.get("decision") else ""
                lines.append(f"  retrieved #{r['edit_id']}{sim} {r['statement']!r}{dec}")
            if step.get("source") == "edit":
                verdict = {True: "contradicts it", False: "agrees", None: "answers it"}[step.get("contradiction")]
                lines.append(f"  edit #{step['edit_id']} {verdict} -> {step['answer']}")
            else:
                lines.append(f"  no edit applies -> {step.get('answer')}")
            for n in step.get("notes", []):
                lines.append(f"  note: {n}")
        elif kind == "stop":
            lines.append(f"stopped: {step['reason']}")
        elif kind == "final":
            lines.append(f"final answer: {step['answer']}")
        elif kind == "ike-demonstrations":
            shown = step.get("demonstrations", [])
            lines.append(f"IKE prompt with {len(shown)} demonstration(s)")
            for d in shown:
                lines.append(f"  {d.get('kind')}: {d.get('fact')!r} -> {d.get('answer')!r}")
        elif kind == "serac-echo":
            lines.append(f"SERAC's adapter echoed the question ({step.get('adapter_answer')!r}); asked again prompted")
        elif step.get("why"):  # the router's own checks (weights-check, chain-check) say why in one line
            lines.append(f"{kind}: {step['why']}")
    return "\n".join(lines)
