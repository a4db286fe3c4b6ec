"""Multi-hop decomposition that does not depend on a large model's reasoning.

>>> from memedit.methods.multihop import decompose
>>> d = decompose("Who is the head of state of the country that Ada Lovelace holds citizenship of?")  # doctest: +SKIP
>>> d.entity, [m.relation.id for m in d.relations]                                                   # doctest: +SKIP
('Ada Lovelace', ['P27', 'P35'])

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

import itertools
import logging
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from ..errors import NotFoundError, ValidationError
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
        self._cache: dict[tuple[str, Any], Decomposition] = {}
        self._lock = threading.Lock()

    # ---- entity -------------------------------------------------------------
    def find_entity(self, question: str, toks: list[Token],
                    known: Iterable[str] | SubjectNames = ()) -> tuple[str, str, tuple[int, int]] | None:
        """(entity text, source, token span) or None.

        ``known`` is either a :class:`SubjectNames` (looked up by the
        question's spans: cost independent of how many names it holds) or
        any iterable of names (scanned one by one).
        """
        q_fold = question.casefold()
        found: list[tuple[int, int, str, str, tuple[int, int]]] = []   # (length, known?, text, source, span)
        names = known if isinstance(known, SubjectNames) else None
        for start, end in (names.occurrences(q_fold) if names is not None else _scan_occurrences(q_fold, known)):
            span = _char_to_tokens(toks, start, end)
            if span is not None:
                found.append((end - start, 1, question[start:end], "known", span))
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
                # "the CEO of Lego": an upper-case title before "of" is a relation, the name starts after it
                k = i + 2 if (j - i >= 3 and toks[i].text.isupper() and toks[i].text.isalpha()
                              and toks[i + 1].text.casefold() == "of") else i
                text = question[toks[k].start:toks[j - 1].end]
                found.append((len(text), 0, text, "capitalised", (k, j)))
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
                # "the country where ...", "the country in which ...": a type noun right before a relative
                # clause names the previous answer, not a relation
                if _opens_clause(toks, j) and content and all(w in self._type_nouns for w in content):
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
                # no word between: coordinated only if punctuation separates them ("speak, write"), not when one
                # relation's word runs straight into the next's ("X's spouse born", "the father ... died")
                punctuated = 0 < lo < len(toks) and toks[lo].start - toks[lo - 1].end > 1
                if hi >= lo and ((not gap and punctuated) or (gap and gap[-1] in coord and len(gap) <= 3)):
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
        # "the country Angela Merkel is a citizen of": a clause without a relative word starts at the entity
        if es >= 1 and toks[es - 1].text.casefold() in TYPE_WORDS and es - 1 > rel_pos:
            rel_pos = es - 1
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

    def _fit_declared_type(self, mentions: list[RelationMention], toks: list[Token],
                           entity_span: tuple[int, int]) -> list[RelationMention]:
        """Make the clause's last hop yield the type the question names for it.

        In "the head of state of the *country* to which X belongs", the hop
        read from the clause must yield a country. When the relation read from
        its words yields a different kind of thing (an organisation for
        "belongs"), the best relation of the named type for the same words is
        taken instead, if it matches at least :data:`TYPE_FIT_THRESHOLD`.
        Related kinds of place (a city where a country was asked) are left
        alone: "the country where X was born" goes through the birthplace.
        """
        declared = _declared_type(toks, entity_span)
        if declared is None:
            return mentions
        es = entity_span[0]
        rel_pos = next((k for k in range(es - 1, -1, -1) if toks[k].text.casefold() in RELATIVE_WORDS
                        or (k == es - 1 and toks[k].text.casefold() in TYPE_WORDS)), -1)
        inside = [n for n, m in enumerate(mentions) if m.span[0] > rel_pos]
        if not inside:
            # "the continent of the country in which X is located": no relation words inside the clause,
            # so the type noun itself is the hop when it names a relation outright ("country": P17)
            noun = next((k for k in range(rel_pos, -1, -1) if toks[k].text.casefold() in TYPE_WORDS), None)
            if noun is None or not mentions:
                return mentions
            row = self.catalogue.scores(self._embed([toks[noun].text]))[0]
            j = int(row.argmax())
            rel = self.catalogue.relations[j]
            if row[j] < GENERIC_THRESHOLD or rel.type != declared or rel.id in {x.relation.id for x in mentions}:
                return mentions
            return [RelationMention(rel, toks[noun].text, (noun, noun + 1), float(row[j])), *mentions]
        n = inside[-1]
        m = mentions[n]
        if _kind(m.relation.type) == _kind(declared):
            return mentions
        row = self.catalogue.scores(self._embed([m.text]))[0]
        fits = [j for j, r in enumerate(self.catalogue.relations)
                if r.type == declared and r.id not in {x.relation.id for x in mentions}]
        if not fits:
            return mentions
        j = max(fits, key=lambda j: row[j])
        if row[j] < TYPE_FIT_THRESHOLD:
            return mentions
        out = list(mentions)
        out[n] = RelationMention(self.catalogue.relations[j], m.text, m.span, float(row[j]))
        return out

    def may_be_multi_hop(self, question: str, known_entities: Iterable[str] | SubjectNames = ()) -> bool:
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

    def decompose(self, question: str, known_entities: Iterable[str] | SubjectNames = ()) -> Decomposition:
        """The question's head entity and relation chain (first hop first).

        ``known_entities``: names preferred as the head entity; a
        :class:`SubjectNames` (what :class:`FactIndex` keeps per namespace) is
        looked up without a pass over its names and keys the cache by its stamp.
        """
        if not isinstance(question, str) or not question.strip():
            raise ValidationError("the question must be a non-empty string")
        known: SubjectNames | frozenset[str]
        if isinstance(known_entities, SubjectNames):
            known = known_entities
            cache_id: Any = ("names", known.stamp)  # read before the lookup: a later change gets a new stamp
        else:
            known = frozenset(k for k in known_entities if isinstance(k, str) and k.strip())
            cache_id = known
        key = (question, cache_id)
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
            mentions = self.order(self.find_relations(toks, span), toks, span)
            d = Decomposition(question, text, source, span, self._fit_declared_type(mentions, toks, span))
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


_STAMPS = itertools.count(1)


def _is_word_char(c: str) -> bool:
    # what the regular expression ``\w`` matches in a str pattern
    return c.isalnum() or c == "_"


def name_key(name: str) -> str | None:
    """The key a known name is matched by (case-folded, stripped), or None for names under two characters."""
    n = name.strip()
    return n.casefold() if len(n) >= 2 else None


def _scan_occurrences(q_fold: str, names: Iterable[str]) -> list[tuple[int, int]]:
    """Every known name's occurrences in ``q_fold`` (one regular expression per name: the reference lookup)."""
    out = []
    for name in names:
        if not isinstance(name, str):
            continue
        key = name_key(name)
        if key is None:
            continue
        out += [(m.start(), m.end()) for m in re.finditer(r"(?<!\w)" + re.escape(key) + r"(?!\w)", q_fold)]
    return out


class SubjectNames:
    r"""Known entity names, found in a question by dictionary lookups of its word-bounded spans.

    >>> names = SubjectNames(["Ada Lovelace", "Kenya"])
    >>> names.occurrences("who is the head of state of the country ada lovelace holds citizenship of?")
    [(40, 52)]

    Matches what one ``(?<!\w)name(?!\w)`` regular expression per name
    finds in the case-folded question (same spans; per name, occurrences
    do not overlap), but the cost depends on the question's length and the
    number of distinct name lengths, not on how many names are held. Names
    are reference-counted, so two edits with one subject need two removals.
    ``stamp`` changes with every change (the decomposer's cache key).
    """

    def __init__(self, names: Iterable[str] = ()):
        self._count: dict[str, int] = {}
        self._lengths: dict[int, int] = {}
        self.stamp = next(_STAMPS)
        for n in names:
            self.add(n)

    def __len__(self) -> int:
        return len(self._count)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name_key(name) in self._count

    def add(self, name: str) -> None:
        key = name_key(name)
        if key is None:
            return
        c = self._count.get(key, 0)
        self._count[key] = c + 1
        if c == 0:
            self._lengths[len(key)] = self._lengths.get(len(key), 0) + 1
        self.stamp = next(_STAMPS)

    def discard(self, name: str) -> None:
        key = name_key(name)
        c = self._count.get(key or "", 0)
        if c == 0:
            return
        if c > 1:
            self._count[key] = c - 1  # type: ignore[index]
        else:
            del self._count[key]  # type: ignore[arg-type]
            n = self._lengths[len(key)] - 1  # type: ignore[arg-type]
            if n:
                self._lengths[len(key)] = n  # type: ignore[arg-type]
            else:
                del self._lengths[len(key)]  # type: ignore[arg-type]
        self.stamp = next(_STAMPS)

    def occurrences(self, q_fold: str) -> list[tuple[int, int]]:
        """(start, end) of every held name in the case-folded ``q_fold``, at word boundaries, by start."""
        if not self._count:
            return []
        n = len(q_fold)
        # where ``(?<!\w)`` and ``(?!\w)`` hold
        starts = [i for i in range(n) if i == 0 or not _is_word_char(q_fold[i - 1])]
        ends = [j for j in range(1, n + 1) if j == n or not _is_word_char(q_fold[j])]
        lengths = self._lengths
        last_end: dict[str, int] = {}
        out = []
        for i in starts:
            for j in ends:
                if j <= i or (j - i) not in lengths:
                    continue
                key = q_fold[i:j]
                if key in self._count and i >= last_end.get(key, 0):  # re.finditer never overlaps one name
                    out.append((i, j))
                    last_end[key] = j
        return out


#: the least phrase similarity of a relation chosen because the question names the type it yields
TYPE_FIT_THRESHOLD = 0.4
#: nouns that name the kind of a hop's answer, mapped to the catalogue's object types
TYPE_WORDS = {"country": "country", "nation": "country", "state": "country", "city": "city", "town": "city",
              "person": "person", "man": "person", "woman": "person", "company": "organization",
              "organization": "organization", "organisation": "organization", "university": "university",
              "team": "team", "club": "team", "party": "party", "continent": "continent", "language": "language",
              "religion": "religion", "sport": "sport", "region": "region", "place": "place"}
#: kinds of object: relations that yield related kinds are not swapped for one another
KINDS = {"city": "place", "country": "place", "region": "place", "place": "place", "continent": "place",
         "organization": "organization", "team": "organization", "university": "organization",
         "party": "organization"}
PREPOSITIONS = {"to", "in", "of", "for", "from", "with", "by", "at", "on", "under", "into"}


def _kind(object_type: str) -> str:
    return KINDS.get(object_type, object_type)


def _opens_clause(toks: list[Token], j: int) -> bool:
    """Token ``j`` starts a relative clause: a relative word, or a preposition and one ("to which")."""
    if j >= len(toks):
        return False
    w = toks[j].text.casefold()
    return w in RELATIVE_WORDS or (w in PREPOSITIONS and j + 1 < len(toks)
                                   and toks[j + 1].text.casefold() in RELATIVE_WORDS)


def _declared_type(toks: list[Token], entity_span: tuple[int, int]) -> str | None:
    """The object type a question names for the hop of the clause holding the entity, if it names one.

    "the *country* that X ...", "the *country* to which X ...", "the *country* X is a citizen of".
    """
    es = entity_span[0]
    if es >= 1 and toks[es - 1].text.casefold() in TYPE_WORDS:
        return TYPE_WORDS[toks[es - 1].text.casefold()]
    for k in range(es - 1, 0, -1):
        w = toks[k].text.casefold()
        if w in RELATIVE_WORDS:
            prev = k - 1
            if prev >= 1 and toks[prev].text.casefold() in PREPOSITIONS:
                prev -= 1
            return TYPE_WORDS.get(toks[prev].text.casefold())
    return None


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


#: words that name a kind of state or organisation rather than the entity ("Republic of Croatia", "Apple Inc.")
DESIGNATORS = {"republic", "kingdom", "state", "states", "federation", "commonwealth", "empire", "principality",
               "grand", "duchy", "people's", "democratic", "federal", "socialist", "islamic", "united", "inc",
               "ltd", "llc", "plc", "co", "corp", "corporation", "company", "group", "gmbh", "ag", "sa", "fc", "f c"}


def alias_keys(name: str) -> set[str]:
    """Other short forms an entity name is often written in, folded (the name's own :func:`fold` excluded).

    >>> sorted(alias_keys("United States of America"))
    ['america', 'united states', 'usa']
    >>> sorted(alias_keys("Johann Sebastian Bach"))
    ['bach', 'johann', 'jsb']
    >>> sorted(alias_keys("Prince (musician)"))
    ['prince']

    General ways names are shortened: a parenthetical qualifier dropped, the
    initials of a name of several capitalised words, its first or last word
    (a surname; a company's name without "International"), the words before
    an inner "of", and the name without designators such as "Republic of"
    or "Inc.". Only used when the
    exact name finds no edit, and only when it leads to a single subject.
    """
    out: set[str] = set()
    base = re.sub(r"\s*\([^)]*\)\s*", " ", name).strip()
    if base and base != name.strip():
        out.add(fold(base))
    words = [w for w in re.split(r"[\s,]+", base) if w]
    if len(words) >= 2:
        caps = [w for w in words if w[:1].isupper()]
        if len(caps) >= 2:
            out.add("".join(w[0] for w in caps).casefold())
        for w in (words[0], words[-1]):
            f = fold(w)
            if len(f) >= 3 and f not in STOP and f not in CONNECTORS and f not in DESIGNATORS:
                out.add(f)
        head = next((i for i, w in enumerate(words) if w.casefold() in ("of", "de", "du", "des", "del")), 0)
        if head >= 2:                                                    # "United States" of America
            out.add(fold(" ".join(words[:head])))
        core = [w for w in words if fold(w) not in DESIGNATORS and fold(w) not in CONNECTORS]
        if core and len(core) < len(words):
            out.add(fold(" ".join(core)))
    out.discard(fold(name))
    out.discard("")
    return out


@dataclass
class _Facts:
    """One namespace's live fact edits: by folded subject, by id, by alias, and the subjects' :class:`SubjectNames`."""

    by_subject: dict[str, list[Edit]] = field(default_factory=dict)
    by_id: dict[int, Edit] = field(default_factory=dict)
    names: SubjectNames = field(default_factory=SubjectNames)
    by_alias: dict[str, dict[str, int]] = field(default_factory=dict)   # alias key -> folded subject -> edits
    version: int = 0   # bumped on every change, so what is derived from the table knows when to recompute

    def put(self, e: Edit) -> None:
        self.drop(int(e.id))  # type: ignore[arg-type]
        self.version += 1
        key = fold(e.subject or "")
        self.by_subject.setdefault(key, []).append(e)
        self.by_id[int(e.id)] = e  # type: ignore[arg-type]
        self.names.add(e.subject or "")
        for a in alias_keys(e.subject or ""):
            subj = self.by_alias.setdefault(a, {})
            subj[key] = subj.get(key, 0) + 1

    def drop(self, edit_id: int) -> None:
        old = self.by_id.pop(edit_id, None)
        if old is None:
            return
        self.version += 1
        key = fold(old.subject or "")
        rest = [x for x in self.by_subject.get(key, []) if x.id != edit_id]
        if rest:
            self.by_subject[key] = rest
        else:
            self.by_subject.pop(key, None)
        self.names.discard(old.subject or "")
        for a in alias_keys(old.subject or ""):
            subj = self.by_alias.get(a, {})
            if subj.get(key, 0) > 1:
                subj[key] -= 1
            else:
                subj.pop(key, None)
                if not subj:
                    self.by_alias.pop(a, None)

    def alias_subjects(self, name: str) -> set[str]:
        """Folded stored subjects that ``name`` may be another form of (either is a short form of the other)."""
        keys = alias_keys(name)
        out = set(self.by_alias.get(fold(name), {}))                   # "Bach" -> "Johann Sebastian Bach"
        for k in keys:
            if k in self.by_subject:                                   # "Republic of Croatia" -> "Croatia"
                out.add(k)
            out.update(self.by_alias.get(k, {}))                       # "USA" ~ "U.S.A." style shared forms
        out.discard(fold(name))
        return out


def _is_live_fact(e: Edit) -> bool:
    return e.kind == "fact" and bool(e.subject) and e.status == "active" and e.id is not None


class FactIndex:
    """The namespaces' live fact edits by folded subject, kept in step with the store's event log.

    A namespace's table is built from the store once, on first use; after
    that each call reads only the events appended since the last one (one
    indexed query, usually empty) and re-reads just the edits they name, so
    a question's cost does not grow with the number of stored edits. A
    forgotten, superseded or rejected edit leaves the table at the first
    call after its event. Stores without an event log fall back to
    rebuilding a namespace's table whenever its newest id or count changes.
    """

    #: more changed edits than this since the last call: rebuild the tables instead of re-reading each edit
    REBUILD_AFTER = 256
    _PAGE = 1000

    def __init__(self, store: EditStore, catalogue: Catalogue):
        self.store = store
        self.catalogue = catalogue
        self._by_ns: dict[str, _Facts] = {}
        self._versions: dict[str, tuple[Any, ...]] = {}   # fallback only
        self._seq: int | None = None                       # the last event seen
        self._lock = threading.RLock()
        self._has_events = callable(getattr(store, "events", None))
        self._relations: dict[str, tuple[_Facts, int, frozenset[str]]] = {}   # namespace -> (table, version, ids)

    # ---- keeping up with the store ---------------------------------------------------
    def _new_events(self, since: int) -> tuple[int, set[int], bool]:
        """(last seq, ids of edits changed after ``since``, too many to re-read one by one)."""
        changed: set[int] = set()
        many = False
        while True:
            page = self.store.events(since=since, limit=self._PAGE)
            for ev in page:
                since = max(since, int(ev.seq))
                # a use does not change what an edit says or whether it is live
                if ev.edit_id is not None and ev.kind != "use" and not many:
                    changed.add(int(ev.edit_id))
                    many = len(changed) > self.REBUILD_AFTER
            if len(page) < self._PAGE:
                return since, changed, many

    def _sync(self) -> None:
        """Apply the store's changes since the last call (the caller holds the lock)."""
        if self._seq is None:
            # first use: skip to the end of the log; tables are built from the store's current state on demand
            self._seq = self._new_events(0)[0]
            self._by_ns.clear()
            return
        seq, changed, many = self._new_events(self._seq)
        self._seq = seq
        if many:
            self._by_ns.clear()  # rebuilt on demand, once
            return
        if not changed or not self._by_ns:
            return
        for edit_id in sorted(changed):
            try:
                e = self.store.get(edit_id)
            except NotFoundError:
                e = None
            for ns, facts in self._by_ns.items():
                if e is not None and e.namespace == ns and _is_live_fact(e):
                    facts.put(e)
                else:
                    facts.drop(edit_id)

    def _load(self, namespace: str) -> _Facts:
        n = self.store.count(namespace, status="active")
        edits = self.store.list(namespace, status="active", limit=max(1, min(100_000, n))) if n else []
        facts = _Facts()
        for e in edits:
            if _is_live_fact(e):
                facts.put(e)
        return facts

    def _facts(self, namespace: str) -> _Facts:
        with self._lock:
            if self._has_events:
                self._sync()
                facts = self._by_ns.get(namespace)
                if facts is None:
                    facts = self._by_ns[namespace] = self._load(namespace)
                return facts
            newest = self.store.list(namespace, status="active", limit=1)
            version = (newest[0].id if newest else None, self.store.count(namespace, status="active"))
            if self._versions.get(namespace) != version or namespace not in self._by_ns:
                self._by_ns[namespace] = self._load(namespace)
                self._versions[namespace] = version
            return self._by_ns[namespace]

    # ---- reading ----------------------------------------------------------------------
    def subjects(self, namespace: str) -> dict[str, list[Edit]]:
        """Live fact edits by folded subject (the live table: do not modify)."""
        return self._facts(namespace).by_subject

    def names(self, namespace: str) -> SubjectNames:
        """The live fact edits' subjects, for :meth:`Decomposer.decompose` (the live object: do not modify)."""
        return self._facts(namespace).names

    def relations(self, namespace: str) -> frozenset[str]:
        """The catalogue relation ids some live fact edit of ``namespace`` states (cached with the namespace's facts).

        The router asks this before letting MeLLo take a multi-hop question no edit is in scope of: a chain can only
        reach an edit through one of these relations.
        """
        with self._lock:  # the table changes in place when the store does: read it whole, under the lock
            facts = self._facts(namespace)
            cached = self._relations.get(namespace)
            if cached is not None and cached[0] is facts and cached[1] == facts.version:
                return cached[2]
            found = {self._relation_id(e) for edits in facts.by_subject.values() for e in edits}
            out = frozenset(r for r in found if r is not None)
            self._relations[namespace] = (facts, facts.version, out)
            return out

    def _relation_id(self, e: Edit) -> str | None:
        found = self._relation_of(e)
        return found[0] if found is not None else None

    def _relation_of(self, e: Edit) -> tuple[str, float] | None:
        """(relation id, how sure) a fact edit states: a statement typed in chat carries its reading
        (memedit.triples); otherwise its prompt is matched, above :data:`EDIT_RELATION_THRESHOLD`."""
        reading = e.meta.get("triple") if isinstance(e.meta, dict) else None
        if isinstance(reading, dict) and isinstance(reading.get("relation"), str):
            return reading["relation"], float(reading.get("score", 1.0))
        rel, score = self.catalogue.relation_of_template(e.prompt or "")
        return (rel.id, score) if score >= EDIT_RELATION_THRESHOLD else None

    def _about(self, edits: Iterable[Edit], relation: Relation) -> list[tuple[Edit, float]]:
        out = []
        for e in edits:
            found = self._relation_of(e)
            if found is not None and found[0] == relation.id:
                out.append((e, found[1]))
        out.sort(key=lambda t: -(t[0].id or 0))
        return out

    def lookup(self, namespace: str, subject: str, relation: Relation) -> list[tuple[Edit, float]]:
        """Live fact edits about ``subject`` whose prompt expresses ``relation``, newest first."""
        return self._about(self.subjects(namespace).get(fold(subject), []), relation)

    def lookup_alias(self, namespace: str, subject: str,
                     relation: Relation) -> tuple[str | None, list[tuple[Edit, float]]]:
        """(stored subject, its edits) when ``subject`` finds none itself but is another form of exactly one
        stored subject with edits for ``relation`` ("Bach" for "Johann Sebastian Bach"); else (None, [])."""
        facts = self._facts(namespace)
        found: dict[str, list[tuple[Edit, float]]] = {}
        for key in facts.alias_subjects(subject):
            about = self._about(facts.by_subject.get(key, []), relation)
            if about:
                found[key] = about
        if len(found) != 1:
            return None, []  # none, or ambiguous: never guess between two entities
        about = next(iter(found.values()))
        return about[0][0].subject, about


class HopResolver:
    """Answers one hop at a time: a structured edit first, else the model's single-hop cloze answer.

    ``backend`` answers hops no edit covers; ``fewshot`` real examples of
    the relation precede the cloze; model answers are cached per (relation,
    subject). ``always_tentative`` asks the model even when an edit answers
    the hop, so the trace shows the contradiction check (costs a call).
    ``aliases``: when no edit has the hop's subject as written, an edit whose
    subject is another form of the name (:func:`alias_keys`; exactly one such
    subject) answers, and the trace says so.
    """

    def __init__(self, store: EditStore, backend: Backend, *, catalogue: Catalogue | None = None,
                 fewshot: int = 3, max_new_tokens: int = 12, k: int = 3, always_tentative: bool = False,
                 facts: FactIndex | None = None, aliases: bool = True):
        self.store = store
        self.backend = backend
        self.aliases = aliases
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
        if not structured and self.aliases:
            alias, structured = self.facts.lookup_alias(namespace, subject, relation)
            if alias is not None:
                hop.notes.append(f"{subject!r} read as the stored subject {alias!r} (another form of the name)")
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


def complete_lines(backend: Backend, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
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
