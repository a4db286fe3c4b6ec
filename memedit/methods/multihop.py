"""Multi-hop decomposition that does not depend on a large model's reasoning.

>>> from memedit.methods.multihop import decompose
>>> d = decompose("Who is the head of state of the country that Ellie Kemper is a citizen of?")  # doctest: +SKIP
>>> d.entity, [m.relation.id for m in d.relations]                                             # doctest: +SKIP
('Ellie Kemper', ['P27', 'P35'])

A small model (SmolLM2-135M, Gemma-3-270m) cannot split a free-text question
into sub-questions by few-shot prompting. This module does it without the
model:

1. **Head entity**: the longest span of the question that is a known entity
   (a stored fact edit's subject, or one the caller names), else the longest
   run of capitalised words (with inner connectors such as "of", "de"),
   excluding question words.
2. **Relations**: every word n-gram outside the entity is embedded with the
   packaged MiniLM and compared with the relation phrases of the catalogue
   (:mod:`memedit.methods.relations`); the best non-overlapping spans above a
   threshold are the question's relations. A bare object-type noun in front
   of a relative word ("the *country* where ...") names the previous hop's
   answer, not a relation, and is skipped.
3. **Order**: possessives right after the entity ("*X*'s spouse's
   employer") first; then relations between the last relative word and the
   entity ("the capital of *X*"), nearest first; then those after the entity
   ("*X* was born in"), nearest first; then the outer ones before the
   relative word, nearest first.

:class:`HopResolver` then answers the chain hop by hop: a stored fact edit
whose subject is the current entity and whose prompt expresses the same
relation answers the hop (the store first); otherwise the model completes the
relation's cloze form after a few real examples (greedy, short). The model's
tentative answer is checked against the structured edit: when they differ
the edit wins and the trace says the tentative answer was contradicted.
"""
from __future__ import annotations

import logging
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from ..errors import ValidationError
from .relations import Catalogue, Relation

if TYPE_CHECKING:  # pragma: no cover
    from ..edits import Edit
    from ..models.backends import Backend
    from ..store import EditStore

log = logging.getLogger(__name__)

#: relation spans need at least this phrase similarity
RELATION_THRESHOLD = 0.7
#: ... and a generic relation (see :class:`~memedit.methods.relations.Relation`) this much
GENERIC_THRESHOLD = 0.9
#: an edit prompt must express the hop's relation at least this surely to answer it
EDIT_RELATION_THRESHOLD = 0.5
MAX_SPAN_WORDS = 5
DEFAULT_MAX_HOPS = 4

_TOKEN = re.compile(r"[\w][\w\-\.&]*(?<![\.])|'s\b|’s\b", re.UNICODE)
QUESTION_WORDS = {"who", "what", "which", "where", "when", "whose", "whom", "how", "why", "in", "on", "at", "is",
                  "are", "was", "were", "does", "do", "did", "can", "name", "tell", "the", "a", "an", "to", "from",
                  "of", "for", "by", "with", "and", "or"}
RELATIVE_WORDS = {"where", "that", "which", "whose", "whom", "who"}
CONNECTORS = {"of", "the", "de", "del", "della", "di", "da", "du", "des", "la", "le", "les", "von", "van", "der",
              "den", "y", "and", "&", "for", "on", "upon", "al", "bin", "el"}
STOP = {"is", "are", "was", "were", "the", "a", "an", "of", "in", "on", "at", "to", "by", "with", "that", "which",
        "where", "who", "whom", "whose", "what", "does", "do", "did", "has", "have", "had", "be", "been", "it", "its",
        "this", "as", "from", "for", "and", "or", "name", "'s", "’s", "current", "currently", "there", "how", "?"}


def fold(text: str) -> str:
    """A comparison key for entity names: NFKC, case-folded, leading article and punctuation dropped.

    >>> fold("The United States.")
    'united states'
    """
    t = unicodedata.normalize("NFKC", text).casefold().strip()
    t = re.sub(r"[\"“”‘’'`.,;:!?()\[\]]", " ", t)
    t = re.sub(r"\s+", " ", t).strip()
    t = re.sub(r"^(the|a|an) ", "", t)
    return t


@dataclass
class Token:
    text: str
    start: int
    end: int


def tokenize(question: str) -> list[Token]:
    """Words with their character offsets; a possessive ``'s`` is its own token."""
    toks = []
    for m in re.finditer(r"[^\s?!,;:\"“”()]+", question):
        word, start = m.group(), m.start()
        word_stripped = word.rstrip(".")
        for suffix in ("'s", "’s"):
            if word_stripped.endswith(suffix) and len(word_stripped) > 2:
                toks.append(Token(word_stripped[:-2], start, start + len(word_stripped) - 2))
                toks.append(Token(suffix, start + len(word_stripped) - 2, start + len(word_stripped)))
                break
        else:
            if word_stripped:
                toks.append(Token(word_stripped, start, start + len(word_stripped)))
    return toks


@dataclass
class RelationMention:
    """A relation found in the question, with the span that said it."""

    relation: Relation
    text: str
    span: tuple[int, int]          # token indices [start, end)
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"relation": self.relation.id, "label": self.relation.label, "text": self.text,
                "span": list(self.span), "score": round(self.score, 4)}


@dataclass
class Decomposition:
    """The head entity and the relation chain of a question, first hop first."""

    question: str
    entity: str | None
    entity_source: str | None          # "known" | "capitalised" | None
    entity_span: tuple[int, int] | None
    relations: list[RelationMention] = field(default_factory=list)

    @property
    def is_multi_hop(self) -> bool:
        """A question whose answer depends on another entity's attribute: an entity and two or more relations."""
        return self.entity is not None and len(self.relations) >= 2

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "entity": self.entity, "entity_source": self.entity_source,
                "relations": [m.to_dict() for m in self.relations]}


class Decomposer:
    """Splits questions into (entity, relation chain) with the catalogue and the embedder.

    ``threshold`` is the least phrase similarity a relation span needs.
    Results are cached per (question, known entities) for the router, which
    asks the same question twice (detect, then answer).
    """

    def __init__(self, catalogue: Catalogue | None = None, *, threshold: float = RELATION_THRESHOLD,
                 max_span_words: int = MAX_SPAN_WORDS):
        self.catalogue = catalogue or Catalogue.load()
        self.threshold = float(threshold)
        self.max_span_words = int(max_span_words)
        self._type_nouns = {r.type for r in self.catalogue.relations} | {"person", "man", "woman", "place",
                                                                       "company", "organisation", "state", "nation",
                                                                       "town", "team", "group", "band", "one"}
        self._vec_cache: dict[str, np.ndarray] = {}
        self._cache: dict[tuple[str, frozenset[str]], Decomposition] = {}
        self._lock = threading.Lock()

    # ---- entity -------------------------------------------------------------
    def find_entity(self, question: str, toks: list[Token], known: Iterable[str] = ()) -> tuple[str, str, tuple[int, int]] | None:
        """(entity text, source, token span) or None."""
        q_fold = question.casefold()
        found: list[tuple[int, int, str, str, tuple[int, int]]] = []   # (length, known?, text, source, span)
        for name in known:
            n = name.strip()
            if len(n) < 2:
                continue
            for m in re.finditer(r"(?<!\w)" + re.escape(n.casefold()) + r"(?!\w)", q_fold):
                span = _char_to_tokens(toks, m.start(), m.end())
                if span is not None:
                    found.append((m.end() - m.start(), 1, question[m.start():m.end()], "known", span))
        # runs of capitalised words, inner connectors allowed
        i = 0
        while i < len(toks):
            if _is_cap(toks[i].text) and not (i == 0 and toks[i].text.casefold() in QUESTION_WORDS):
                j = i + 1
                while j < len(toks):
                    if _is_cap(toks[j].text):
                        j += 1
                    elif toks[j].text.casefold() in CONNECTORS and j + 1 < len(toks) and _is_cap(toks[j + 1].text):
                        j += 2
                    else:
                        break
                text = question[toks[i].start:toks[j - 1].end]
                found.append((len(text), 0, text, "capitalised", (i, j)))
                i = j
            else:
                i += 1
        if not found:
            return None
        _, _, text, source, span = max(found, key=lambda f: (f[0], f[1], -f[4][0]))
        return text, source, span

    # ---- relations ------------------------------------------------------------
    def _embed(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._vec_cache]
        if missing:
            for t, v in zip(missing, self.catalogue.embedder.encode(missing)):
                self._vec_cache[t] = v
            if len(self._vec_cache) > 50_000:
                self._vec_cache.clear()
                return self.catalogue.embedder.encode(texts)
        return np.stack([self._vec_cache[t] for t in texts])

    def find_relations(self, toks: list[Token], entity_span: tuple[int, int] | None) -> list[RelationMention]:
        """Non-overlapping relation spans, best first (not yet ordered as hops)."""
        blocked = set(range(*entity_span)) if entity_span else set()
        cands: list[tuple[int, int, str]] = []
        for i in range(len(toks)):
            for j in range(i + 1, min(len(toks), i + self.max_span_words) + 1):
                if any(k in blocked for k in range(i, j)):
                    break
                words = [t.text for t in toks[i:j]]
                low = [w.casefold() for w in words]
                if any(w in RELATIVE_WORDS for w in low[1:]) or (i > 0 and low[0] in RELATIVE_WORDS):
                    break  # a relative word ends a relation phrase ("the country | that ...")
                if all(w in STOP for w in low) or low[0] in {"'s", "’s"}:
                    continue
                content = [w for w in low if w not in STOP]
                # "the country where ...": a type noun right before a relative word names the previous answer
                if j < len(toks) and toks[j].text.casefold() in RELATIVE_WORDS and content \
                        and all(w in self._type_nouns for w in content):
                    continue
                if len(content) == 1 and content[0] in self._type_nouns and j == len(toks):
                    continue
                cands.append((i, j, " ".join(words)))
        if not cands:
            return []
        scores = self.catalogue.scores(self._embed([c[2] for c in cands]))
        best = scores.argmax(axis=1)
        # rounded, so float noise between equal matches never beats the longer span
        ranked = sorted(((round(float(scores[n, best[n]]), 3), n) for n in range(len(cands))),
                        key=lambda t: (-t[0], -(cands[t[1]][1] - cands[t[1]][0])))
        chosen: list[RelationMention] = []
        taken: set[int] = set()
        seen_rel: set[str] = set()
        for s, n in ranked:
            if s < self.threshold:
                break
            i, j, text = cands[n]
            rel = self.catalogue.relations[int(best[n])]
            if any(k in taken for k in range(i, j)) or rel.id in seen_rel:
                continue
            if rel.generic and s < GENERIC_THRESHOLD:
                continue
            chosen.append(RelationMention(rel, text, (i, j), s))
            taken.update(range(i, j))
            seen_rel.add(rel.id)
        # "speak, write, or sign": coordinated words are one relation; keep the best-scoring of the group
        chosen = self._uncoordinate(chosen, toks)
        # "In which city was X born": a bare type noun is the answer type of another relation, not a hop
        implied = {m.relation.type for m in chosen if not self._bare_type(m)}
        return [m for m in chosen if not (self._bare_type(m) and self._bare_type(m) in implied)]

    @staticmethod
    def _uncoordinate(chosen: list[RelationMention], toks: list[Token]) -> list[RelationMention]:
        kept: list[RelationMention] = []
        for m in chosen:  # best first
            joined = False
            for k in kept:
                lo, hi = (k.span[1], m.span[0]) if k.span[1] <= m.span[0] else (m.span[1], k.span[0])
                gap = [t.text.casefold() for t in toks[lo:hi]]
                coord = {"or", "and", "and/or", "/"}
                if hi >= lo and (not gap or (gap[-1] in coord and len(gap) <= 3)):  # "a, b, or c"
                    joined = True
                    break
            if not joined:
                kept.append(m)
        return kept

    def _bare_type(self, m: RelationMention) -> str | None:
        content = [w for w in m.text.casefold().split() if w not in STOP and w not in QUESTION_WORDS]
        return content[0] if len(content) == 1 and content[0] in self._type_nouns else None

    @staticmethod
    def order(mentions: list[RelationMention], toks: list[Token], entity_span: tuple[int, int]) -> list[RelationMention]:
        """Hop order (see the module docstring): inner left, then right, then outer left; nearest first."""
        es, ee = entity_span
        rel_pos = max((k for k in range(1, es) if toks[k].text.casefold() in RELATIVE_WORDS), default=-1)
        # "X's spouse's employer": possessives bind tightest; a chain of them follows the entity
        poss_end = ee
        while poss_end < len(toks) and toks[poss_end].text in ("'s", "’s"):
            nxt = next((m for m in mentions if m.span[0] > poss_end and all(
                t.text.casefold() in STOP for t in toks[poss_end + 1:m.span[0]])), None)
            if nxt is None:
                break
            poss_end = nxt.span[1]
        possessive, inner, right, outer = [], [], [], []
        for m in mentions:
            s, e = m.span
            if ee <= s and e <= poss_end:
                possessive.append((s - ee, m))
            elif s >= ee:
                right.append((s - ee, m))
            elif s > rel_pos:
                inner.append((es - e, m))
            else:
                outer.append((es - e, m))
        return [m for group in (possessive, inner, right, outer) for _, m in sorted(group, key=lambda t: t[0])]

    def may_be_multi_hop(self, question: str, known_entities: Iterable[str] = ()) -> bool:
        """A cheap test before :meth:`decompose` (no embedding): an entity, and two or more content words beside it.

        Two relations need two content words ("capital" + "citizen"); "What is
        the capital of France?" has one, so the router's detector skips the
        n-gram embedding for most single-hop questions.
        """
        toks = tokenize(question)
        ent = self.find_entity(question, toks, known_entities)
        if ent is None:
            return False
        s, e = ent[2]
        content = [t for k, t in enumerate(toks) if not s <= k < e
                   and t.text.casefold() not in STOP and t.text.casefold() not in QUESTION_WORDS]
        return len(content) >= 2

    def decompose(self, question: str, known_entities: Iterable[str] = ()) -> Decomposition:
        """The question's head entity and relation chain (first hop first)."""
        if not isinstance(question, str) or not question.strip():
            raise ValidationError("the question must be a non-empty string")
        known = frozenset(k for k in known_entities if isinstance(k, str) and k.strip())
        key = (question, known)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        toks = tokenize(question)
        ent = self.find_entity(question, toks, known)
        if ent is None:
            d = Decomposition(question, None, None, None, self.find_relations(toks, None))
        else:
            text, source, span = ent
            mentions = self.find_relations(toks, span)
            d = Decomposition(question, text, source, span, self.order(mentions, toks, span))
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = d
        return d


_default: Decomposer | None = None
_default_lock = threading.Lock()


def default_decomposer() -> Decomposer:
    global _default
    with _default_lock:
        if _default is None:
            _default = Decomposer()
        return _default


def decompose(question: str, known_entities: Iterable[str] = ()) -> Decomposition:
    """:meth:`Decomposer.decompose` with the packaged catalogue."""
    return default_decomposer().decompose(question, known_entities)


def _is_cap(word: str) -> bool:
    # "Paris", "1984", and camel-cased names such as "iPhone" or "eBay"
    return bool(word) and (word[0].isupper() or word[0].isdigit()
                           or (word[0].islower() and any(c.isupper() for c in word[1:])))


def _char_to_tokens(toks: list[Token], start: int, end: int) -> tuple[int, int] | None:
    idx = [k for k, t in enumerate(toks) if t.start >= start and t.end <= end]
    return (idx[0], idx[-1] + 1) if idx else None


# --------------------------------------------------------------------------- hop resolution


@dataclass
class Hop:
    """One step of the chain, as the trace shows it."""

    index: int
    subject: str
    relation: str
    relation_label: str
    subquestion: str
    tentative: str | None = None
    answer: str = ""
    source: str = ""                   # "edit" | "model"
    edit_id: int | None = None
    contradiction: bool | None = None  # did the edit contradict the tentative answer (None: not checked)
    retrieved: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"step": "hop", "index": self.index, "subject": self.subject, "relation": self.relation,
                "relation_label": self.relation_label, "subquestion": self.subquestion,
                "tentative_answer": self.tentative, "answer": self.answer, "source": self.source,
                "edit_id": self.edit_id, "contradiction": self.contradiction, "retrieved": self.retrieved,
                "notes": self.notes}


class FactIndex:
    """The namespace's live fact edits by folded subject, rebuilt when the namespace changes."""

    def __init__(self, store: "EditStore", catalogue: Catalogue):
        self.store = store
        self.catalogue = catalogue
        self._by_ns: dict[str, tuple[tuple[Any, ...], dict[str, list["Edit"]]]] = {}
        self._lock = threading.Lock()

    def _version(self, namespace: str) -> tuple[Any, ...]:
        newest = self.store.list(namespace, status="active", limit=1)
        return (newest[0].id if newest else None, self.store.count(namespace, status="active"))

    def subjects(self, namespace: str) -> dict[str, list["Edit"]]:
        version = self._version(namespace)
        with self._lock:
            cached = self._by_ns.get(namespace)
            if cached is not None and cached[0] == version:
                return cached[1]
        table: dict[str, list["Edit"]] = {}
        n = version[1]
        edits = self.store.list(namespace, status="active", limit=max(1, min(100_000, n))) if n else []
        for e in edits:
            if e.kind == "fact" and e.subject:
                table.setdefault(fold(e.subject), []).append(e)
        with self._lock:
            self._by_ns[namespace] = (version, table)
        return table

    def lookup(self, namespace: str, subject: str, relation: Relation) -> list[tuple["Edit", float]]:
        """Live fact edits about ``subject`` whose prompt expresses ``relation``, newest first."""
        out = []
        for e in self.subjects(namespace).get(fold(subject), []):
            rel, score = self.catalogue.relation_of_template(e.prompt or "")
            if rel.id == relation.id and score >= EDIT_RELATION_THRESHOLD:
                out.append((e, score))
        out.sort(key=lambda t: -(t[0].id or 0))
        return out


class HopResolver:
    """Answers one hop at a time: a structured edit first, else the model's single-hop cloze answer.

    ``backend`` answers hops no edit covers; ``fewshot`` real examples of
    the relation precede the cloze; model answers are cached per (relation,
    subject). ``always_tentative`` asks the model even when an edit answers
    the hop, so the trace shows the contradiction check (costs a call).
    """

    def __init__(self, store: "EditStore", backend: "Backend", *, catalogue: Catalogue | None = None,
                 fewshot: int = 3, max_new_tokens: int = 12, k: int = 3, always_tentative: bool = False,
                 facts: FactIndex | None = None):
        self.store = store
        self.backend = backend
        self.catalogue = catalogue or Catalogue.load()
        self.fewshot = fewshot
        self.max_new_tokens = max_new_tokens
        self.k = k
        self.always_tentative = always_tentative
        self.facts = facts or FactIndex(store, self.catalogue)
        self._answers: dict[tuple[str, str, str], str] = {}

    # ---- the model's single-hop answer ------------------------------------------
    def cloze_prompt(self, relation: Relation, subject: str) -> str:
        shots = [f"{relation.cloze_for(s)} {o}." for s, o in relation.examples[: self.fewshot] if fold(s) != fold(subject)]
        return "\n".join([*shots, relation.cloze_for(subject)])

    def model_answer(self, relation: Relation, subject: str, *, cloze: str | None = None) -> str:
        """The model's short answer to ``relation(subject)`` (``cloze`` overrides the catalogue's form)."""
        return self.model_answers([(relation, subject, cloze)])[0]

    def model_answers(self, items: Sequence[tuple[Relation, str, str | None]]) -> list[str]:
        """:meth:`model_answer` for several (relation, subject, cloze) at once; a local model answers in one batch."""
        keys = [(rel.id, fold(subj), cloze or "") for rel, subj, cloze in items]
        todo = [i for i, k in enumerate(keys) if k not in self._answers]
        todo = [i for n, i in enumerate(todo) if keys[i] not in {keys[j] for j in todo[:n]}]
        if todo:
            if getattr(self.backend, "is_local", False):
                prompts = []
                for i in todo:
                    rel, subj, cloze = items[i]
                    prompt = self.cloze_prompt(rel, subj)
                    if cloze:
                        prompt = prompt.rsplit("\n", 1)[0] + "\n" + cloze if "\n" in prompt else cloze
                    prompts.append(prompt)
                raws = complete_lines(self.backend, prompts, self.max_new_tokens)
            else:
                raws = [self.backend.chat([{"role": "user", "content":
                                            f"{items[i][0].question_for(items[i][1])} Answer with the name only."}],
                                          self.max_new_tokens) for i in todo]
            if len(self._answers) > 20_000:
                self._answers.clear()
            for i, raw in zip(todo, raws):
                self._answers[keys[i]] = clean_answer(raw)
        return [self._answers[k] for k in keys]

    # ---- one hop --------------------------------------------------------------------
    def resolve(self, index: int, subject: str, relation: Relation, namespace: str) -> Hop:
        hop = Hop(index, subject, relation.id, relation.label, relation.question_for(subject))
        # retrieval for the trace (what the vector search sees for this subquestion)
        try:
            hits = self.store.search(hop.subquestion, namespace, k=self.k)
        except ValidationError:
            hits = []
        structured = self.facts.lookup(namespace, subject, relation)
        structured_ids = {int(e.id) for e, _ in structured if e.id is not None}
        for h in hits:
            e = h.edit
            if e.id in structured_ids:
                decision = "same subject and relation"
            elif e.kind != "fact":
                decision = "free-text edit: not a structured fact, not used"
            elif fold(e.subject or "") != fold(subject):
                decision = "different subject"
            else:
                decision = "different relation"
            hop.retrieved.append({"edit_id": e.id, "statement": e.sentence(), "similarity": round(h.score, 4),
                                  "decision": decision})
        for e, _ in structured:
            if not any(r["edit_id"] == e.id for r in hop.retrieved):
                hop.retrieved.append({"edit_id": e.id, "statement": e.sentence(), "similarity": None,
                                      "decision": "same subject and relation (found by subject)"})
        if structured:
            edit = structured[0][0]
            targets = {fold(e.target_new or "") for e, _ in structured}
            if len(targets) > 1:
                hop.notes.append(f"conflicting edits {[e.id for e, _ in structured]} for this subject and relation; "
                                 f"took the newest, #{edit.id}")
            if self.always_tentative:
                hop.tentative = self.model_answer(relation, subject)
                hop.contradiction = not same_answer(hop.tentative, edit.target_new or "")
            hop.answer, hop.source, hop.edit_id = edit.target_new or "", "edit", edit.id
        else:
            hop.tentative = self.model_answer(relation, subject)
            hop.contradiction = False
            hop.answer, hop.source = hop.tentative, "model"
        return hop

    def resolve_chain(self, entity: str, relations: Sequence[Relation], namespace: str, *,
                      max_hops: int = DEFAULT_MAX_HOPS) -> list[Hop]:
        """Every hop from ``entity`` along ``relations``; refuses chains longer than ``max_hops``."""
        if len(relations) > max_hops:
            raise ValidationError(f"the question needs {len(relations)} hops; the limit is {max_hops}")
        hops: list[Hop] = []
        seen = {fold(entity)}
        subject = entity
        for i, rel in enumerate(relations):
            hop = self.resolve(i, subject, rel, namespace)
            hops.append(hop)
            if not hop.answer:
                hop.notes.append("no answer for this hop; the chain stops here")
                break
            if fold(hop.answer) in seen:
                hop.notes.append(f"cycle: {hop.answer!r} was already an entity of this chain")
            seen.add(fold(hop.answer))
            subject = hop.answer
        return hops


def complete_lines(backend: "Backend", prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Greedy continuations of raw ``prompts``, each stopping at its first newline (one left-padded batch).

    Uses the backend's transformers model directly when it has one (a
    :class:`~memedit.models.backends.LocalLM`), so a one-line answer costs a
    few tokens rather than ``max_new_tokens``; otherwise ``backend.complete``.
    """
    model, tok = getattr(backend, "model", None), getattr(backend, "tokenizer", None)
    if model is None or tok is None or not hasattr(backend, "prompt_ids"):
        return [backend.complete(p, max_new_tokens) for p in prompts]
    import torch
    from transformers import GenerationConfig

    ids = [backend.prompt_ids(p) for p in prompts]
    width = max(len(i) for i in ids)
    pad = backend.pad_token_id
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, stop_strings=["\n"],
                           eos_token_id=backend.stop_token_ids or None, pad_token_id=pad)
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), generation_config=cfg,
                             tokenizer=tok)
    return [tok.decode(row[width:].tolist(), skip_special_tokens=True) for row in out]


def clean_answer(raw: str) -> str:
    """The first line of a model's reply, cut at the first sentence end, without a trailing article."""
    text = (raw or "").strip().split("\n", 1)[0]
    text = re.split(r"(?<=[^A-Z])\.(?:\s|$)|[,;(]| - ", text, maxsplit=1)[0]
    text = re.sub(r"^(is|was|are|the answer is)\s+", "", text.strip(), flags=re.I)
    return text.strip(" .\"'")


def same_answer(a: str, b: str) -> bool:
    """Loose equality of two entity names (folded; one contains the other)."""
    fa, fb = fold(a), fold(b)
    return bool(fa) and bool(fb) and (fa == fb or fa in fb or fb in fa)
