"""What every question through memedit returns: the text and why.

>>> from memedit.answer import Answer
>>> a = Answer(text="Paris", route="base", question="What is the capital of France?", namespace="default")
>>> a.to_dict()["route"]
'base'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .edits import Edit

ROUTES = ("base", "ike", "serac", "mello", "weights")


@dataclass
class UsedEdit:
    """An edit that was in scope of the question, with the scores that put it there."""

    edit: Edit
    scope_probability: float   # calibrated P(in scope) from the scope classifier
    similarity: float          # cosine similarity from the vector search
    matched_text: str          # the stored text that matched best
    #: P(the question asks this edit's own fact), from :mod:`memedit.fact_match` (None: not a fact edit, or not checked)
    fact_probability: float | None = None
    asks_fact: bool = False    # the check's decision: the answer must contain this edit's new object

    def to_dict(self) -> dict[str, Any]:
        return {"edit": self.edit.to_dict(), "scope_probability": self.scope_probability,
                "similarity": self.similarity, "matched_text": self.matched_text,
                "fact_probability": self.fact_probability, "asks_fact": self.asks_fact}


@dataclass
class Answer:
    """The answer text, the route that produced it, and the edits (with scores) it used.

    ``trace`` holds route-specific steps (MeLLo's sub-questions, say) so a user
    can see why an answer came out as it did; ``candidates`` the retrieved
    edits the scope classifier rejected, for auditing the decision.
    """

    text: str
    route: str
    question: str
    namespace: str
    used: list[UsedEdit] = field(default_factory=list)
    candidates: list[UsedEdit] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def edits(self) -> list[Edit]:
        return [u.edit for u in self.used]

    @property
    def hops(self) -> list[dict[str, Any]]:
        """MeLLo's hop steps from ``trace`` (sub-question, tentative answer, retrieved edits, decision); [] otherwise."""
        return [s for s in self.trace if s.get("step") == "hop"]

    @property
    def scores(self) -> list[float]:
        return [u.scope_probability for u in self.used]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "route": self.route, "question": self.question, "namespace": self.namespace,
                "used": [u.to_dict() for u in self.used], "candidates": [c.to_dict() for c in self.candidates],
                "trace": self.trace, "timings_ms": self.timings_ms}
