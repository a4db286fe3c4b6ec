"""A stated fact as (subject, relation, object): what a chat correction or a free-text edit says, structured.

>>> from memedit.triples import read_triple
>>> t = read_triple("Ada Lovelace holds citizenship in Kenya.")         # doctest: +SKIP
>>> t.subject, t.relation, t.object, t.template                         # doctest: +SKIP
('Ada Lovelace', 'P27', 'Kenya', '{} holds citizenship in')

Two sentence shapes are read:

* a name, a verb phrase, an object: "Ada Lovelace holds citizenship in Kenya",
  "Tetris was developed by Nintendo", "Messi plays for Inter Miami" (the
  subject is the leading run of capitalised words; the object starts at the
  first capitalised word or number after the verb, else it is the shortest
  tail the relation reads best without);
* "The <relation> of <subject> is <object>" / "<Subject>'s <relation> is
  <object>" (:func:`memedit.corrections.split_fact`).

The words between subject and object, as a template (``"{} holds citizenship
in"``), are read as a relation of the catalogue
(:meth:`memedit.methods.relations.Catalogue.relation_of_template`); below
:data:`TRIPLE_THRESHOLD` the statement stays free text. :func:`structured`
turns a free-text edit into a fact edit (the user's words are its prompt and
statement) and records the reading in ``meta["triple"]``, which the edit's
history shows; :class:`~memedit.methods.multihop.FactIndex` answers MeLLo's
hops with it, and :meth:`memedit.policy.Policy.submit` supersedes an earlier
edit of the same subject and catalogue relation with it. The thresholds were
set by hand on statements of our own (``tests/test_chat_triples.py``): 0.6
read "X holds Croatian citizenship" and "Jupiter has 95 moons" as relations.

"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .edits import Edit
from .errors import ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from .methods.relations import Catalogue

log = logging.getLogger(__name__)

#: a verb phrase must read as a catalogue relation at least this surely
TRIPLE_THRESHOLD = 0.75
#: ... and a bare one-word verb ("holds", "has", "follows"), which many relations share, this surely
ONE_WORD_THRESHOLD = 0.95
#: ``meta`` key of the reading
META_KEY = "triple"
_MAX_WORDS = 30
_CONNECT = {"of", "de", "del", "da", "di", "du", "des", "von", "van", "der", "den", "la", "le", "y", "and", "&", "the",
            "al", "bin", "el", "on", "upon"}
_FUNCTION = {"of", "in", "for", "by", "to", "at", "on", "from", "with", "as", "a", "an", "the", "is", "was", "are",
             "were", "has", "have", "had", "been", "being", "be", "into", "under", "its", "his", "her", "their"}


@dataclass(frozen=True)
class Triple:
    """One reading of a statement: who, which catalogue relation (and the words that said it), what."""

    subject: str
    relation: str        # catalogue id, e.g. "P27"
    label: str           # the relation's label, e.g. "country of citizenship"
    object: str
    template: str        # the user's words with {} for the subject, e.g. "{} holds citizenship in"
    score: float

    def to_meta(self) -> dict[str, Any]:
        return {"subject": self.subject, "relation": self.relation, "label": self.label, "object": self.object,
                "template": self.template, "score": round(self.score, 4)}


def _catalogue(catalogue: "Catalogue | None") -> "Catalogue":
    from .methods.relations import Catalogue

    return catalogue or Catalogue.load()


def _is_cap(word: str) -> bool:
    return bool(word) and (word[0].isupper() or word[0].isdigit())


def _subject_end(words: list[str]) -> int:
    """Tokens of the leading name: capitalised words, inner connectors allowed ("Bank of Montreal", "The Beatles")."""
    if not words or not _is_cap(words[0]):
        return 0
    if words[0] in ("The", "A", "An") and (len(words) < 2 or not _is_cap(words[1])):
        return 0  # "The capital of France is ...": no name first
    i = 1
    while i < len(words):
        if _is_cap(words[i]):
            i += 1
        elif words[i].casefold() in _CONNECT and i + 1 < len(words) and _is_cap(words[i + 1]):
            i += 2
        else:
            break
    return i


def read_triple(statement: str, catalogue: "Catalogue | None" = None, *,
                threshold: float = TRIPLE_THRESHOLD) -> Triple | None:
    """The (subject, relation, object) a one-sentence statement states, or None when it reads as none."""
    from .corrections import split_fact

    text = re.sub(r"\s+", " ", statement or "").strip().rstrip(".!").strip()
    if not text or "?" in text or "{" in text or "}" in text or len(text.split()) > _MAX_WORDS:
        return None
    cat = _catalogue(catalogue)
    candidates: list[tuple[str, str, str]] = []          # (subject, template, object)
    fact = split_fact(text)
    if fact is not None:
        candidates.append(fact)
    words = text.split(" ")
    end = _subject_end(words)
    if end and end < len(words) - 1:
        subject = " ".join(words[:end])
        caps = [j for j in range(end + 1, len(words)) if _is_cap(words[j])]
        starts = caps[:1] or [j for j in range(end + 1, len(words)) if words[j].casefold() not in _FUNCTION]
        for j in starts[:3]:
            verb = " ".join(words[end:j])
            if len(verb.split()) <= 8:
                candidates.append((subject, "{} " + verb, " ".join(words[j:])))
    best: Triple | None = None
    for subject, template, obj in candidates:
        obj = obj.strip(" ,;:\"'")
        if not obj or len(obj.split()) > 10 or not subject.strip():
            continue
        rel, score = cat.relation_of_template(template)
        need = max(threshold, ONE_WORD_THRESHOLD) if len(template.replace("{}", "").split()) == 1 else threshold
        if score >= need and (best is None or score > best.score + 1e-6):
            best = Triple(subject.strip(), rel.id, rel.label, obj, template, float(score))
    return best


def structured(edit: Edit, catalogue: "Catalogue | None" = None) -> Edit:
    """``edit`` with its statement read as a triple: a free-text edit becomes a fact edit, a fact edit gets the
    reading of its prompt; an edit that reads as no catalogue relation is returned unchanged.

    The user's words stay: the statement, and the verb phrase as the prompt template.
    """
    if META_KEY in edit.meta:
        return edit
    try:
        if edit.kind == "text":
            triple = read_triple(edit.statement or "", catalogue)
            if triple is None:
                return edit
            return replace(edit, kind="fact", subject=triple.subject, prompt=triple.template,
                           target_new=triple.object, meta={**edit.meta, META_KEY: triple.to_meta()}).validated()
        if edit.kind == "fact" and edit.prompt and edit.subject:
            rel, score = _catalogue(catalogue).relation_of_template(edit.prompt)
            if score < TRIPLE_THRESHOLD:
                return edit
            t = Triple(edit.subject, rel.id, rel.label, edit.target_new or "", edit.prompt, float(score))
            return replace(edit, meta={**edit.meta, META_KEY: t.to_meta()})
    except ValidationError as exc:  # the reading does not make a valid fact edit: keep what the user gave
        log.debug("no structured reading (%s)", exc)
    return edit


def relation_of(edit: Edit, catalogue: "Catalogue | None" = None) -> str | None:
    """The catalogue relation id of a fact edit: its recorded reading, else its prompt's (above the threshold)."""
    if edit.kind != "fact" or not edit.prompt:
        return None
    recorded = (edit.meta.get(META_KEY) or {}).get("relation") if isinstance(edit.meta, dict) else None
    if isinstance(recorded, str):
        return recorded
    rel, score = _catalogue(catalogue).relation_of_template(edit.prompt)
    return rel.id if score >= TRIPLE_THRESHOLD else None
