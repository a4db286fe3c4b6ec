"""IKE: in-context knowledge editing (Zheng et al., 2023, "Can We Edit Factual Knowledge by In-Context Learning?").

>>> from memedit.methods.ike import IKE
>>> ike = IKE(k=4)
>>> msgs = ike.build("Who is Hung-yi Lee?", ["The most handsome person in the world is Hung-yi Lee"])
>>> [m["role"] for m in msgs]
['system', 'user', 'assistant', 'user', 'assistant', 'user', 'assistant', 'user', 'assistant', 'user']
>>> print(msgs[-1]["content"])
New fact: "The most handsome person in the world is Hung-yi Lee"
Question: Who is Hung-yi Lee?

The base model answers with the edit in its context, after ``k``
demonstrations that show it the behaviours the paper asks for:

* **copy**: the fact's own prompt -> the new object;
* **update**: a paraphrase -> the new object; and **reverse**, a question
  from the object's side ("Who is X?") -> a sentence restating the fact;
* **retain**: an out-of-scope prompt next to a fact -> its real answer, so a
  question the scope classifier let through by mistake keeps its answer.

Demonstrations come from a hand-written pool
(``memedit/resources/ike-demonstrations.json``: deliberately counterfactual
facts over some 48 relations, each with a cloze prompt, a question, an
out-of-scope prompt and often a reverse question; nothing from a benchmark).
Each candidate demonstration (an entry as copy, update or reverse) is scored
by how similar its fact is to the edit *plus* how similar its prompt is to the
question, so a reverse question draws reverse examples and a cloze prompt
draws cloze examples. The best ``k - retain`` go in (one per entry, best
last, nearest the question), preceded by ``retain`` out-of-scope examples.
The paper uses 32 demonstrations for GPT-J; a 135M model follows a short
prompt better, so the default is 4.

Demonstrations never leak into answers. Without a filter, "Who is the CEO of
Acme?" next to the edit "The CEO of Acme is Jane Roe." drew the demonstration
"The CEO of Acme Corporation is Priya Raman." and the small model answered
"Priya Raman". The rule, applied to every demonstration (retain ones too):

* an entry's **key terms** (:meth:`PoolEntry.key_terms`) are the words of its
  ``subject``, ``answer``, ``retain_subject`` and ``retain_answer`` (both
  entities of its fact and of its retain example) that are not
  :data:`STOPWORDS` and are either names (a capital or a digit, 2+ characters:
  "Acme", "Roe", "VIII") or content words (4+ characters: "violin", "lion");
* the **protected words** are all words of the question and of every in-scope
  edit shown (its statement or sentence, ``subject``, ``target_new``,
  ``target_true``);
* words are compared whole, case, punctuation and accents folded
  (:func:`fold_words`); an entry sharing any key term with the protected words
  is never shown (:meth:`DemonstrationPool.excluded`), so "Acme" in the
  question withholds the "Acme Corporation" entry. The next best clean entries
  take its place; when too few are left the prompt has fewer demonstrations.

The filter stops entity leaks, not every copy: a small model also repeats the
answer of a demonstration of the *same relation* about another subject. The
pool softens that by showing the relation users correct most (the CEO of a
company) with three companies and three different answers, so no one answer
reads as the relation's; :func:`demonstration_leak` counts what remains.

:meth:`IKE.prompt` returns the demonstrations it showed with the messages; the
router records them as the first step of the trace
(``{"step": "ike-demonstrations", "demonstrations": [...], "answers": [...]}``
in ``Prepared.trace`` and ``Answer.trace``; :func:`shown_answers` reads them)
so an evaluation can count answers that repeat a shown demonstration's answer
instead of the edit's (:func:`demonstration_leak`).
"""
from __future__ import annotations

import json
import logging
import re
import threading
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from ..errors import ValidationError
from .prompting import edit_statement, facts_block, question_line

if TYPE_CHECKING:  # pragma: no cover
    from ..answer import UsedEdit
    from ..embeddings import Embedder

log = logging.getLogger(__name__)

POOL_PATH = Path(__file__).resolve().parent.parent / "resources" / "ike-demonstrations.json"
IN_SCOPE_KINDS = ("copy", "update", "reverse")
KINDS = (*IN_SCOPE_KINDS, "retain")

IKE_SYSTEM = (
    "You answer questions and complete sentences in a few words. When a new fact is given, treat it as true "
    "and answer questions about it with it, even if it contradicts what you know. Questions about other things "
    "you answer from your own knowledge."
)


#: step name of the trace entry that records the demonstrations an IKE prompt showed
TRACE_STEP = "ike-demonstrations"

#: Words that are never key terms: function words (capitalised ones start many names: "The Beatles") and
#: question words. Deliberately short: every other word of a subject or an answer counts.
STOPWORDS = frozenset("""
a an and are as at be been being by did does for from had has have how in into is it its of on or over than that
the their then there these this those to was were what when where which who whom whose why will with about also
more most many much very
""".split())

_WORD = re.compile(r"[^\W_]+")
_ARTICLES = frozenset({"the", "a", "an"})


def _unaccent(text: str) -> str:
    """``text`` without combining accents, so "Márquez" and "Marquez" fold to the same word."""
    return "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))


def fold_words(text: str) -> list[str]:
    """The case- and punctuation-folded words of ``text`` (accents dropped; hyphens and apostrophes split).

    >>> fold_words("Hung-yi Lee's CEO, Márquez!")
    ['hung', 'yi', 'lee', 's', 'ceo', 'marquez']
    """
    return [w.casefold() for w in _WORD.findall(_unaccent(text or ""))]


def text_key_terms(text: str | None) -> set[str]:
    """The key terms of one text: its folded words that are not :data:`STOPWORDS` and are either

    * a **name** word: written with a capital or a digit, two characters or more ("Acme", "Roe", "VIII", "64"); or
    * a **content** word: four characters or more ("violin", "lion", "iphone").

    >>> sorted(text_key_terms("The CEO of Acme Corporation"))
    ['acme', 'ceo', 'corporation']
    >>> sorted(text_key_terms("the tallest building in the world"))
    ['building', 'tallest', 'world']
    """
    out: set[str] = set()
    for raw in _WORD.findall(_unaccent(text or "")):
        word = raw.casefold()
        if word in STOPWORDS:
            continue
        name = raw[0].isupper() or any(ch.isdigit() for ch in raw)
        if len(word) >= 4 or (name and len(word) >= 2):
            out.add(word)
    return out


@dataclass(frozen=True)
class Demonstration:
    """One worked example: a new fact, a prompt, and the answer the model should give.

    ``leak_answer`` is the short answer a model would repeat if this
    demonstration leaked into its own answer: ``answer`` itself, except for a
    reverse demonstration whose answer is a sentence restating the fact, where
    it is the fact's object (the sentence "Priya Raman is the CEO of ..." leaks
    as "Priya Raman").
    """

    kind: str      # copy | update | reverse | retain
    fact: str
    prompt: str
    answer: str
    leak_answer: str = ""

    def __post_init__(self) -> None:
        if not self.leak_answer:  # a demonstration built without one leaks as its own answer
            object.__setattr__(self, "leak_answer", self.answer)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class PoolEntry:
    """One hand-written counterfactual fact with its in-scope and out-of-scope probes.

    ``subject`` is what the fact is about ("Acme Corporation"; for a
    superlative, the description without a generic scope: "the richest
    person"), ``retain_subject`` what the retain prompt is about. A pool
    without them is filtered on every word of ``fact`` and ``retain_prompt``
    instead (safe, but it excludes more).
    """

    relation: str
    fact: str
    prompt: str
    question: str
    answer: str
    retain_prompt: str
    retain_answer: str
    reverse_question: str | None = None
    reverse_answer: str | None = None
    subject: str | None = None
    retain_subject: str | None = None

    def demonstration(self, kind: str) -> Demonstration | None:
        """This entry as a demonstration of ``kind``; None for ``reverse`` when the entry has none."""
        if kind == "copy":
            return Demonstration("copy", self.fact, self.prompt, self.answer, self.answer)
        if kind == "update":
            return Demonstration("update", self.fact, self.question, self.answer, self.answer)
        if kind == "reverse":
            if self.reverse_question and self.reverse_answer:
                # A restating sentence leaks through the object it names; a short reverse answer is itself the leak.
                leak = self.answer if _contains(self.reverse_answer, self.answer) else self.reverse_answer
                return Demonstration("reverse", self.fact, self.reverse_question, self.reverse_answer, leak)
            return None
        if kind == "retain":
            return Demonstration("retain", self.fact, self.retain_prompt, self.retain_answer, self.retain_answer)
        raise ValidationError(f"demonstration kind must be one of {KINDS}, got {kind!r}")

    def key_terms(self) -> frozenset[str]:
        """The words that must not appear in a question or edit this entry is shown next to.

        The :func:`text_key_terms` of the entry's subject, answer, retain
        subject and retain answer, i.e. both entities of its fact and of its
        retain example. ``reverse_answer`` is not read: it is the subject, or a
        sentence restating subject, relation and answer, whose only other words
        are the relation's ("president", "tallest"), which would exclude the
        demonstrations that teach a relation exactly when they help most (a
        test checks the packaged pool keeps to this).
        """
        terms = text_key_terms(self.answer) | text_key_terms(self.retain_answer)
        terms |= text_key_terms(self.subject if self.subject is not None else self.fact)
        terms |= text_key_terms(self.retain_subject if self.retain_subject is not None else self.retain_prompt)
        return frozenset(terms)


class DemonstrationPool:
    """The demonstration pool and its embeddings (computed once per process, on first retrieval).

    >>> pool = DemonstrationPool.load()
    >>> len(pool) >= 60
    True
    """

    _shared: dict[str, "DemonstrationPool"] = {}
    _shared_lock = threading.Lock()

    def __init__(self, entries: Sequence[PoolEntry], embedder: "Embedder | str | None" = None):
        if not entries:
            raise ValidationError("a demonstration pool needs at least one entry")
        self.entries = list(entries)
        self.keys = [e.key_terms() for e in self.entries]  # per entry, see PoolEntry.key_terms
        self._embedder = embedder
        self._vecs: dict[str, np.ndarray] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def load(cls, path: str | Path | None = None, embedder: "Embedder | str | None" = None) -> "DemonstrationPool":
        """Read a pool file (default: the packaged one, shared per process)."""
        if path is None and embedder is None:
            with cls._shared_lock:
                if "default" not in cls._shared:
                    cls._shared["default"] = cls(_read_pool(POOL_PATH))
                return cls._shared["default"]
        return cls(_read_pool(Path(path or POOL_PATH)), embedder)

    @property
    def embedder(self) -> "Embedder":
        from ..embeddings import Embedder

        if self._embedder is None or isinstance(self._embedder, str):
            self._embedder = Embedder.shared(*(() if self._embedder is None else (self._embedder,)))
        return self._embedder

    def vectors(self) -> dict[str, np.ndarray]:
        """Unit vectors per entry: ``"fact"`` and the prompt of each in-scope kind (zeros where absent)."""
        if self._vecs is None:
            with self._lock:
                if self._vecs is None:
                    texts: dict[str, list[str]] = {"fact": [e.fact for e in self.entries]}
                    for kind in IN_SCOPE_KINDS:
                        texts[kind] = [d.prompt if (d := e.demonstration(kind)) else "" for e in self.entries]
                    flat = [t for ts in texts.values() for t in ts if t]
                    enc = iter(self.embedder.encode(flat))
                    dim = self.embedder.dim
                    self._vecs = {name: np.stack([next(enc) if t else np.zeros(dim, np.float32) for t in ts])
                                  for name, ts in texts.items()}
        return self._vecs

    def excluded(self, texts: Iterable[str]) -> dict[int, frozenset[str]]:
        """The entries that must not be shown next to ``texts`` (question, edits), each with the terms it shares.

        An entry is excluded when one of its :meth:`PoolEntry.key_terms` is a
        word of any text (:func:`fold_words`: case, punctuation and accents
        folded, whole words only).

        >>> pool = DemonstrationPool.load()
        >>> [pool.entries[i].fact for i in pool.excluded(["Who is the CEO of Acme?"])]
        ['The CEO of Acme Corporation is Priya Raman.']
        """
        words = {w for t in texts for w in fold_words(t)}
        out: dict[int, frozenset[str]] = {}
        for i, keys in enumerate(self.keys):
            shared = keys & words
            if shared:
                out[i] = frozenset(shared)
        return out

    def select(self, fact_vec: np.ndarray, question_vec: np.ndarray, *, k: int, retain: int = 1,
               kinds: Sequence[str] = IN_SCOPE_KINDS, avoid: Iterable[str] = ()) -> list[Demonstration]:
        """``k`` demonstrations in prompt order: ``retain`` out-of-scope ones first, then the best in-scope last.

        In-scope candidates (entry, kind) score ``sim(edit, entry fact) +
        sim(question, demo prompt)``; each entry is used at most once. Retain
        examples come from the entries whose facts are nearest the edit.
        Entries :meth:`excluded` by ``avoid`` (the question and the edits'
        texts) are never used, in any role: the next best ones take their
        place, and when too few are left the prompt has fewer demonstrations,
        never a leaking one.
        """
        vecs = self.vectors()
        fact_sim = vecs["fact"] @ np.asarray(fact_vec, np.float32)
        q = np.asarray(question_vec, np.float32)
        banned = self.excluded(avoid)
        if banned:
            log.debug("IKE demonstrations withheld (shared terms): %s",
                      {self.entries[i].fact: sorted(t) for i, t in banned.items()})
        scored = []
        for kind in kinds:
            sims = fact_sim + vecs[kind] @ q
            for i, s in enumerate(sims):
                if i not in banned and self.entries[i].demonstration(kind) is not None:
                    scored.append((float(s), i, kind))
        scored.sort(key=lambda t: -t[0])
        n_in = max(0, k - retain)
        chosen: list[tuple[float, int, str]] = []
        used_entries: set[int] = set(banned)  # a withheld entry counts as used, so no role picks it up
        for s, i, kind in scored:
            if len(chosen) == n_in:
                break
            if i not in used_entries:
                chosen.append((s, i, kind))
                used_entries.add(i)
        retained = []
        for i in np.argsort(-fact_sim, kind="stable"):
            if len(retained) >= min(retain, k):
                break
            if int(i) not in used_entries:
                retained.append(self.entries[int(i)].demonstration("retain"))
                used_entries.add(int(i))
        in_scope = [self.entries[i].demonstration(kind) for _, i, kind in reversed(chosen)]  # best last
        out = [d for d in [*retained, *in_scope] if d is not None]
        if len(out) < k:
            log.warning("only %d of %d IKE demonstrations pass the leak filter (%d of %d pool entries withheld)",
                        len(out), k, len(banned), len(self.entries))
        return out


def _read_pool(path: Path) -> list[PoolEntry]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return [PoolEntry(**row) for row in doc["demonstrations"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValidationError(f"{path} is not a valid demonstration pool: {exc}") from exc


class IKE:
    """Builds IKE prompts (chat messages) for a question and its in-scope edit(s).

    ``k`` demonstrations (0: none), ``retain`` of them out-of-scope examples,
    the in-scope ones drawn from ``kinds``. The route using this answers with
    the *base* model.
    """

    route = "ike"

    def __init__(self, pool: DemonstrationPool | None = None, *, k: int = 4, retain: int = 1,
                 system: str = IKE_SYSTEM, kinds: Sequence[str] = IN_SCOPE_KINDS):
        if not isinstance(k, int) or not 0 <= k <= 32:
            raise ValidationError("k (IKE demonstrations) must be an integer in 0..32")
        if not isinstance(retain, int) or not 0 <= retain <= k:
            raise ValidationError("retain must be an integer in 0..k")
        if not kinds or any(kd not in IN_SCOPE_KINDS for kd in kinds):
            raise ValidationError(f"demonstration kinds must be from {IN_SCOPE_KINDS}, got {list(kinds)}")
        self.pool = pool
        self.k = k
        self.retain = retain
        self.system = system
        self.kinds = tuple(kinds)

    def _pool(self) -> DemonstrationPool:
        if self.pool is None:
            self.pool = DemonstrationPool.load()
        return self.pool

    def demonstrations(self, question: str, statements: Sequence[str], *, q_vec: np.ndarray | None = None,
                       avoid: Sequence[str] = ()) -> list[Demonstration]:
        """The demonstrations for this question and these edit statements, in prompt order.

        None shares a key term with the question, the statements or ``avoid``
        (more texts of the edits: subjects, targets); see :meth:`DemonstrationPool.excluded`.
        """
        if self.k == 0:
            return []
        pool = self._pool()
        texts = list(statements) + ([] if q_vec is not None else [question_line(question)])
        vecs = pool.embedder.encode(texts)
        fact = vecs[:len(statements)].mean(axis=0)
        fact /= max(float(np.linalg.norm(fact)), 1e-8)
        qv = q_vec if q_vec is not None else vecs[-1]
        return pool.select(fact, qv, k=self.k, retain=self.retain, kinds=self.kinds,
                           avoid=[question, *statements, *avoid])

    def compose(self, question: str, statements: Sequence[str], *, q_vec: np.ndarray | None = None,
                avoid: Sequence[str] = ()) -> "IKEPrompt":
        """The chat messages and the demonstrations they show (see :meth:`build`)."""
        if not statements:
            raise ValidationError("IKE needs at least one in-scope edit")
        demos = self.demonstrations(question, statements, q_vec=q_vec, avoid=avoid)
        msgs = [{"role": "system", "content": self.system}]
        for d in demos:
            msgs.append({"role": "user", "content": _turn([d.fact], d.prompt)})
            msgs.append({"role": "assistant", "content": d.answer})
        msgs.append({"role": "user", "content": _turn(statements, question)})
        return IKEPrompt(messages=msgs, demonstrations=demos)

    def build(self, question: str, statements: Sequence[str], *,
              q_vec: np.ndarray | None = None) -> list[dict[str, str]]:
        """Chat messages: the system line, a user/assistant pair per demonstration, then the edit(s) and question."""
        return self.compose(question, statements, q_vec=q_vec).messages

    def prompt(self, question: str, used: Sequence["UsedEdit"], *, q_vec: np.ndarray | None = None,
               embedder_name: str | None = None, **_: Any) -> "IKEPrompt":
        """The prompt for a question and the router's in-scope edits (all of them, best first), with its demonstrations.

        ``q_vec`` (the question's vector, already computed by the router) is
        reused when ``embedder_name`` says it comes from the pool's embedder.
        Every edit's subject and old and new targets join the texts no
        demonstration may share a key term with.
        """
        if q_vec is not None and embedder_name != self._pool().embedder.name:
            q_vec = None
        avoid = [t for u in used for t in (u.edit.subject, u.edit.target_new, u.edit.target_true, u.edit.statement)
                 if t]
        return self.compose(question, [edit_statement(u.edit) for u in used], q_vec=q_vec, avoid=avoid)

    def messages(self, question: str, used: Sequence["UsedEdit"], *, q_vec: np.ndarray | None = None,
                 embedder_name: str | None = None, **_: Any) -> list[dict[str, str]]:
        """The messages of :meth:`prompt`."""
        return self.prompt(question, used, q_vec=q_vec, embedder_name=embedder_name).messages


@dataclass(frozen=True)
class IKEPrompt:
    """An IKE prompt: the chat messages and the demonstrations shown in them (in prompt order)."""

    messages: list[dict[str, str]]
    demonstrations: list[Demonstration]

    def trace_step(self) -> dict[str, Any]:
        """The ``"ike-demonstrations"`` trace step: each demonstration, and ``answers``, their leak answers in order.

        >>> IKEPrompt([], [Demonstration("copy", "Rome is in Spain.", "Rome is in", "Spain")]).trace_step()["answers"]
        ['Spain']
        """
        return {"step": TRACE_STEP, "demonstrations": [d.to_dict() for d in self.demonstrations],
                "answers": [d.leak_answer for d in self.demonstrations]}


def shown_answers(trace: Iterable[dict[str, Any]]) -> list[str]:
    """The answers of the demonstrations an answer's (or prepared prompt's) trace says were shown; [] if none.

    >>> shown_answers([{"step": "ike-demonstrations", "answers": ["Rome", "Priya Raman"]}, {"step": "hop"}])
    ['Rome', 'Priya Raman']
    """
    return [a for step in trace if step.get("step") == TRACE_STEP for a in step.get("answers", [])]


def _phrase(text: str) -> list[str]:
    """The folded words of an answer phrase, without a leading article ("the Shard" matches "Shard")."""
    words = fold_words(text)
    while len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    return words


def _contains(text: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as whole words (folded as :func:`fold_words`); never if it has none."""
    needle = _phrase(phrase)
    if not needle:
        return False
    hay = fold_words(text)
    n = len(needle)
    return any(hay[i:i + n] == needle for i in range(len(hay) - n + 1))


def demonstration_leak(answer_text: str, shown_demo_answers: Sequence[str], edit_targets: Sequence[str]) -> bool:
    """Whether an answer repeats a shown demonstration's answer instead of the edit's.

    True when ``answer_text`` contains one of ``shown_demo_answers`` and none
    of ``edit_targets`` (the in-scope edits' new objects), both as whole
    words, case, punctuation and accents folded, a leading article dropped.
    An answer that names the target as well is not counted (it may list
    both). With no targets (a free-text edit), any shown answer counts.

    >>> demonstration_leak("Priya Raman", ["Rome", "Priya Raman"], ["Jane Roe"])
    True
    >>> demonstration_leak("Jane Roe, not Priya Raman.", ["Priya Raman"], ["Jane Roe"])
    False
    >>> demonstration_leak("Romeo", ["Rome"], ["Jane Roe"])
    False
    """
    if not any(_contains(answer_text, a) for a in shown_demo_answers):
        return False
    return not any(_contains(answer_text, t) for t in edit_targets)


def _turn(statements: Sequence[str], prompt: str) -> str:
    return f"{facts_block(statements)}\nQuestion: {question_line(prompt)}"
