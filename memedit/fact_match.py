"""Does a question ask an edit's own fact? A small, tuned check the answer routes lean on.

>>> from memedit.edits import Edit
>>> from memedit.fact_match import FactMatcher
>>> fm = FactMatcher.load()                                   # the packaged weights
>>> edit = Edit.fact("Ada Lovelace", "Ada Lovelace was born in {}", "Kenya")
>>> embed = lambda texts: __import__("memedit.embeddings", fromlist=["Embedder"]).Embedder().encode(texts)
>>> p = fm.probability("Where was Ada Lovelace born?", edit, 0.99, embed)   # doctest: +SKIP
>>> fm.asks(p)                                                              # doctest: +SKIP
True

The scope classifier says whether a question *touches* an edit; that includes
questions whose answer is not the edit's new object (a question about another
entity that depends on it, a reverse question). This check says whether the
question asks *the edited fact itself* (the same relation of the same subject,
or of a name for it), so that the answer must contain the edit's new object.
The router uses it twice:

* a question that restates an in-scope edit's own prompt (cosine >= 0.97 and
  the check says it asks the fact) is one hop, so MeLLo does not claim it
  (:meth:`memedit.route.Router.prepare`); a looser rule would stop real
  multi-hop questions ("the capital of the country where X was born" asks the
  birthplace edit's relation too);
* a SERAC answer to such a question that does not contain the new object is
  replaced by the object, and the trace says so (:func:`checked_answer`): the
  counterfactual model copies the object for nearly every in-scope question,
  so this only repairs a garbled copy (a long name or a date). IKE's answers
  are not checked: the base model answers other questions about the subject
  from its own knowledge, and a wrong "asks the fact" would overwrite them.

It is a logistic regression over six features of the (question, fact edit)
pair: the cosine of the question and the edit's filled prompt, the cosine of
the two with the subject masked (the relation each asks), whether the
question names the subject, whether it names the new object (a reverse
question), the scope classifier's probability, and a product of the first two.
It is fitted on the *tune* side of the project's split only
(:mod:`memedit.fact_match_train`); the weights, threshold and the split's
hash live in ``resources/fact-match.json`` (no pickle).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .errors import MemeditError

if TYPE_CHECKING:  # pragma: no cover
    from .edits import Edit

log = logging.getLogger(__name__)

FEATURES: tuple[str, ...] = ("question_vs_prompt", "relation_vs_relation", "subject_named", "object_named",
                             "scope_probability", "prompt_x_relation")
PACKAGED = Path(__file__).resolve().parent / "resources" / "fact-match.json"
#: cosine of question and filled prompt above which the question restates the prompt (a near-verbatim repeat;
#: paraphrases of zsRE's questions sit at 0.87-0.99, questions that add a hop lower)
RESTATES_PROMPT = 0.97
#: what stands for the subject when the relation alone is compared ("Where was X born?")
SUBJECT_MASK = "X"

Embed = Callable[[Sequence[str]], np.ndarray]


class FactMatchError(MemeditError, ValueError):
    """A fact-match artifact is missing or malformed."""


def matchable(edit: "Edit") -> bool:
    """Only fact edits with a subject, a prompt and a new object can be asked "their own fact"."""
    return edit.kind == "fact" and bool(edit.subject and edit.prompt and edit.target_new)


def pair_texts(question: str, edit: "Edit") -> tuple[str, str, str, str]:
    """The four texts the features compare: question, filled prompt, and both with the subject masked."""
    from .scope_train import mask_name

    subject = edit.subject or ""
    return (question, edit.filled_prompt(), mask_name(question, subject, SUBJECT_MASK),
            (edit.prompt or "").replace("{}", SUBJECT_MASK))


def features(question: str, edit: "Edit", scope_probability: float, vectors: np.ndarray) -> np.ndarray:
    """The feature row for one pair; ``vectors`` are the unit vectors of :func:`pair_texts`, in order."""
    from .eval.scoring import answer_matches

    q, prompt, q_rel, prompt_rel = (np.asarray(v, dtype=np.float64) for v in vectors)
    masked_question = pair_texts(question, edit)[2]
    cos_prompt, cos_rel = float(q @ prompt), float(q_rel @ prompt_rel)
    return np.array([cos_prompt, cos_rel, float(masked_question != question),
                     float(answer_matches(question, [edit.target_new or ""])), float(scope_probability),
                     cos_prompt * cos_rel])


@dataclass(frozen=True)
class FactMatcher:
    """Logistic regression over :data:`FEATURES`; ``threshold`` (chosen on the tune side) decides."""

    weights: tuple[float, ...]
    bias: float
    threshold: float
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "FactMatcher":
        """The packaged matcher, or one written by :func:`memedit.fact_match_train.train` at ``path``."""
        return _load(str(path or PACKAGED))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = dict(self.meta, features=list(FEATURES), weights=list(self.weights), bias=self.bias,
                   threshold=self.threshold)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    def probability_of(self, row: np.ndarray) -> float:
        z = float(np.dot(np.asarray(self.weights), row)) + self.bias
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def probability(self, question: str, edit: "Edit", scope_probability: float, embed: Embed) -> float | None:
        """P(``question`` asks ``edit``'s own fact); None for an edit that is not a fact with an object."""
        if not matchable(edit):
            return None
        vecs = embed(list(pair_texts(question, edit)))
        return self.probability_of(features(question, edit, scope_probability, vecs))

    def asks(self, probability: float | None) -> bool:
        return probability is not None and probability >= self.threshold

    def assess(self, question: str, edit: "Edit", scope_probability: float, embed: Embed) -> "FactCheck | None":
        """The probability, the decision, and whether ``question`` restates the edit's own prompt."""
        if not matchable(edit):
            return None
        row = features(question, edit, scope_probability, embed(list(pair_texts(question, edit))))
        p = self.probability_of(row)
        asks = self.asks(p)
        return FactCheck(p, asks, asks and row[0] >= RESTATES_PROMPT)


@dataclass(frozen=True)
class FactCheck:
    probability: float
    asks: bool
    #: the question is (nearly) the edit's own prompt: one hop, whatever relation words it has
    restates_prompt: bool


@lru_cache(maxsize=4)
def _load(path: str) -> FactMatcher:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FactMatchError(f"no fact-match weights at {path}; train them with `memedit scope train-fact-match`") from exc
    except (OSError, ValueError) as exc:
        raise FactMatchError(f"cannot read the fact-match weights at {path}: {exc}") from exc
    if doc.get("features") != list(FEATURES):
        raise FactMatchError(f"{path} was fitted on features {doc.get('features')}, this memedit computes {list(FEATURES)}")
    weights = doc.get("weights")
    if not (isinstance(weights, list) and len(weights) == len(FEATURES)
            and all(isinstance(w, (int, float)) and math.isfinite(w) for w in weights)):
        raise FactMatchError(f"{path}: 'weights' must be {len(FEATURES)} finite numbers")
    bias, threshold = doc.get("bias"), doc.get("threshold")
    if not isinstance(bias, (int, float)) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise FactMatchError(f"{path}: 'bias' must be a number and 'threshold' a probability in (0, 1)")
    meta = {k: v for k, v in doc.items() if k not in ("features", "weights", "bias", "threshold")}
    return FactMatcher(tuple(float(w) for w in weights), float(bias), float(threshold), meta)


def checked_answer(text: str, question: str, used: Sequence[Any], route: str) -> tuple[str, list[dict[str, Any]]]:
    """``text``, or the in-scope edit's new object when the question asks that edit's fact and ``text`` misses it.

    ``used`` are the question's in-scope edits (:class:`~memedit.answer.UsedEdit`,
    with ``asks_fact`` set by the router). Only the first edit that the question
    asks is checked; the trace step records the replaced answer.
    """
    from .eval.scoring import answer_matches

    for u in used:
        if not getattr(u, "asks_fact", False):
            continue
        target = u.edit.target_new or ""
        if answer_matches(text, [target]):
            return text, []
        log.debug("%s answered %r to a question that asks edit %s's fact; answering %r", route, text, u.edit.id, target)
        return target, [{"step": "fact-check", "route": route, "edit_id": u.edit.id, "model_answer": text,
                         "answer": target, "fact_probability": u.fact_probability,
                         "why": "the question asks this edit's own fact and the model's answer did not contain "
                                "the new object"}]
    return text, []
