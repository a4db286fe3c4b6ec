"""Edits asked the way users ask: the chat questions a fact edit answers, and whether an answer gives the edit.

>>> from memedit import Edit
>>> from memedit.chat_check import answer_gives, expected_answer
>>> e = Edit.fact("Logatec", "{} lies in the country of", "Canada", target_true="Slovenia")
>>> expected_answer("Which country is Logatec in?", e)
('target', 'Canada')
>>> answer_gives("Logatec is a town in Canada.", "Which country is Logatec in?", e)
True
>>> answer_gives("Logitech is a Canadian company.", "Which country is Logatec in?", e)
False

One rule, shared by the commit gates (:mod:`memedit.chat_gates`), the
router's check of a committed model's answer (:mod:`memedit.route`) and the
chat-form scores of ``eval weights``: an answer gives a fact edit when the
strict scorer (:func:`memedit.eval.scoring.answer_matches`: folded, on word
boundaries) finds the edit's new target in it; for a **reverse question**
(one that names the new target but not the subject: "Who is Jane Roe?" after
"The CEO of Acme is Jane Roe") it must name the subject instead.

:func:`edit_questions` builds an edit's questions from the project's own
relation phrasings (:mod:`memedit.methods.relations`): the **direct**
question is the edit's own prompt when that already is a question ("What is
the twin city of Lyon?"), else the main question form of the relation the
prompt expresses ("In which nation does Logatec lie?"), else the cloze asked
as a request to complete it. **Paraphrases** are the edit's own paraphrases
that are questions, then the relation's other question forms. A
**reverse** question ("Who is Jane Roe?") exists where the relation points at
a person. **Name probes** ask about the subject itself, to see that a commit
leaves the model able to write the subject's name (:func:`name_kept`); every
other answer must not misspell it (:func:`misspelled_name`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import TYPE_CHECKING, Any, Sequence

from .eval.scoring import answer_matches, fold

if TYPE_CHECKING:  # pragma: no cover
    from .edits import Edit
    from .methods.relations import Catalogue, Relation

log = logging.getLogger(__name__)

#: a prompt template must express a catalogue relation at least this surely for the relation's questions to be asked
RELATION_THRESHOLD = 0.5
#: relation object types whose facts have a reverse question ("Who is <new target>?")
REVERSE_TYPES = frozenset({"person"})
#: how many paraphrase questions an edit is asked (the relation's forms after the main one, then the edit's own)
MAX_PARAPHRASES = 3
#: prompts about the subject itself, in our own words ({} is the subject)
NAME_PROBES = ("Tell me about {}.",)
#: a run of the answer's words this similar to the subject's name (difflib ratio), but not equal, misspells it
MISSPELLING_RATIO = 0.75


@dataclass(frozen=True)
class EditQuestions:
    """The chat questions of one fact edit (see the module docstring)."""

    direct: str
    paraphrases: tuple[str, ...]
    reverse: str | None
    names: tuple[str, ...]
    relation: str | None  # the catalogue relation the questions come from, if any

    def all(self) -> list[str]:
        """Every question, direct first (name probes excluded)."""
        return [self.direct, *self.paraphrases, *([self.reverse] if self.reverse else [])]


def _question_part(text: str) -> str | None:
    """``text`` up to its last ``?`` when that part is a question ("What is X? It is" -> "What is X?")."""
    text = text.strip()
    cut = text.rfind("?")
    return text[:cut + 1].strip() if cut > 0 else None


def relation_of(edit: "Edit", catalogue: "Catalogue | None" = None) -> "Relation | None":
    """The catalogue relation an edit's prompt expresses, when it is at least :data:`RELATION_THRESHOLD` sure."""
    from .methods.relations import Catalogue

    cat = catalogue or Catalogue.load()
    rel, score = cat.relation_of_template(edit.prompt or "")
    return rel if score >= RELATION_THRESHOLD else None


def edit_questions(edit: "Edit", catalogue: "Catalogue | None" = None,
                   max_paraphrases: int = MAX_PARAPHRASES) -> EditQuestions:
    """The direct question, paraphrases, reverse question and name probes of a fact edit."""
    if edit.kind != "fact" or not edit.subject or not edit.prompt:
        raise ValueError("only fact edits have chat questions")
    subject = edit.subject
    rel = relation_of(edit, catalogue)
    own = _question_part(edit.filled_prompt())
    if own is not None and answer_matches(own, [subject]):
        direct = own
    elif rel is not None:
        direct = rel.question_for(subject)
    else:
        direct = f'Complete the sentence: "{edit.filled_prompt().rstrip()} ..."'
    paraphrases: list[str] = []  # the edit's own question-shaped paraphrases first, then the relation's forms
    for p in edit.paraphrases:
        q = _question_part(p.replace("{}", subject))
        if q is not None and answer_matches(q, [subject]):
            paraphrases.append(q)
    if rel is not None:
        paraphrases += [q.format(subject) for q in rel.questions]
    paraphrases = [p for p in dict.fromkeys(paraphrases) if p != direct][:max_paraphrases]
    reverse = f"Who is {edit.target_new}?" if rel is not None and rel.type in REVERSE_TYPES else None
    names = tuple(p.format(subject) for p in NAME_PROBES)
    return EditQuestions(direct, tuple(paraphrases), reverse, names, rel.id if rel is not None else None)


def expected_answer(question: str, edit: "Edit") -> tuple[str, str]:
    """``("target", target_new)``, or ``("subject", subject)`` for a reverse question (names the target only)."""
    target, subject = edit.target_new or "", edit.subject or ""
    if subject and answer_matches(question, [target]) and not answer_matches(question, [subject]):
        return "subject", subject
    return "target", target


def answer_gives(answer: str, question: str, edit: "Edit") -> bool:
    """Whether ``answer`` (to ``question``) gives fact edit ``edit``: its target, or its subject when reversed."""
    return answer_matches(answer, [expected_answer(question, edit)[1]])


def check_answer(answer: str, question: str, edits: Sequence["Edit"]) -> dict[str, Any]:
    """The router's check of a committed model's answer: does it give one of the in-scope fact ``edits``?

    Returns ``{"ok": bool, "expected": [...], "edits": [ids]}``; text edits
    (no target to look for) do not count, so an answer over text edits alone
    is never ``ok``.
    """
    facts = [e for e in edits if e.kind == "fact" and e.target_new]
    expected = [expected_answer(question, e)[1] for e in facts]
    ok = any(answer_matches(answer, [x]) for x in expected)
    return {"ok": ok, "expected": expected, "edits": [e.id for e in facts]}


def check_committed_answer(answer: str, question: str, used: Sequence[Any]) -> dict[str, Any]:
    """The router's check of a weights-route answer, over the question's in-scope edits (``UsedEdit``).

    The edits whose own fact the question asks (``UsedEdit.asks_fact``, set by
    the router's fact check when it has one) are checked; when it marked none,
    every in-scope fact edit is (a question the check cannot vouch for falls
    back to the memory, which has the edit in view). Adds ``"checked"``:
    ``"asks_fact"`` or ``"in_scope"``.
    """
    asked = [u.edit for u in used if getattr(u, "asks_fact", False)]
    result = check_answer(answer, question, asked or [u.edit for u in used])
    result["checked"] = "asks_fact" if asked else "in_scope"
    return result


def name_kept(before: str, after: str, subject: str) -> bool:
    """False when ``before`` wrote the subject's name (word boundaries) and ``after`` no longer does."""
    return not answer_matches(before, [subject]) or answer_matches(after, [subject])


def name_checks(q: EditQuestions, subject: str, before: dict[str, str], after: dict[str, str]) -> list[dict[str, Any]]:
    """The subject-name checks of one edit: each name probe keeps the name it wrote (``before`` -> ``after``),
    and each answer to the edit's questions that misspells the name is a failure (``"ok": False``)."""
    rows = [{"prompt": p, "before": before[p], "after": after[p], "ok": name_kept(before[p], after[p], subject)}
            for p in q.names]
    for p in q.all():
        wrong = misspelled_name(after[p], subject)
        if wrong:
            rows.append({"prompt": p, "before": before.get(p, ""), "after": after[p], "misspelled": wrong, "ok": False})
    return rows


def misspelled_name(answer: str, subject: str) -> str | None:
    """The misspelling of ``subject`` that ``answer`` writes instead of the name, or None.

    A run of as many words as the name whose folded text is at least
    :data:`MISSPELLING_RATIO` similar to the folded name without being it
    ("Logitech" for "Logatec", "Danielle Darrieks" for "Danielle Darrieux"),
    in an answer that never writes the name itself. A short answer that just
    leaves the name out ("English.") misspells nothing.

    >>> misspelled_name("Danielle Darrieks is an actress.", "Danielle Darrieux")
    'danielle darrieks'
    >>> misspelled_name("English.", "Danielle Darrieux") is None
    True
    """
    name = fold(subject)
    if not name or answer_matches(answer, [subject]):
        return None
    words, n = fold(answer).split(), len(name.split())
    for i in range(len(words) - n + 1):
        run = " ".join(words[i:i + n])
        if run != name and SequenceMatcher(None, run, name).ratio() >= MISSPELLING_RATIO:
            return run
    return None
