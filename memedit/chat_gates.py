"""The commit gates that judge what users get: chat answers of the committed model.

>>> from memedit.chat_gates import answers, chat_gate_results, chat_questions
>>> plan = chat_questions(edits)                                                 # doctest: +SKIP
>>> before = answers(lm, plan.before_prompts() + plan.unrelated_prompts())      # doctest: +SKIP
>>> with temporarily_applied(model, deltas):                                    # doctest: +SKIP
...     after = answers(lm, plan.after_prompts() + plan.unrelated_prompts())
>>> [(g.name, g.passed) for g in chat_gate_results(plan, before, after, GateConfig())]   # doctest: +SKIP

The cloze gates (:mod:`memedit.gates`) compare probabilities on the edit's
own prompt; a user asks a question in the chat format instead, and the router
sends it bare (``[{"role": "user", "content": question}]`` through the chat
template, greedy) to the committed model. These gates ask exactly that, with
the committed deltas applied temporarily:

* **chat_efficacy**: each edit's direct question (:func:`memedit.chat_check.edit_questions`)
  is answered with the new target;
* **chat_paraphrase**: so are its paraphrase questions (fraction);
* **chat_reverse**: a reverse question ("Who is <new target>?") names the subject (fraction; measured, and
  required only as far as ``GateConfig.min_chat_reverse`` asks);
* **subject_name**: every name probe ("Tell me about X.") whose answer wrote the subject's name before
  the commit still writes it, and no answer to the edit's questions misspells the name (a commit that
  turns "Logatec" into "Logitech" is refused; a terse "Canada." that leaves the name out is not);
* **chat_unrelated**: the fixed probe set (``memedit/resources/chat-probes.json``, versioned) and the
  neighbours of each edit (the catalogue's real examples of the edit's relation, about other subjects)
  keep their answers: of those answered right before the commit, the fraction still answered right.

Answers are judged with the rule the router uses (:func:`memedit.chat_check.answer_gives`).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Sequence

from .chat_check import answer_gives, edit_questions, name_checks, relation_of
from .eval.scoring import answer_matches

if TYPE_CHECKING:  # pragma: no cover
    from .edits import Edit
    from .gates import GateConfig, GateResult

log = logging.getLogger(__name__)


def chat_probes(path: str | None = None) -> list[dict[str, Any]]:
    """The unrelated probe set: ``[{"question": ..., "answers": [expected, *aliases]}]`` (packaged by default)."""
    if path is None:
        text = resources.files("memedit").joinpath("resources", "chat-probes.json").read_text(encoding="utf-8")
    else:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    return list(json.loads(text)["probes"])


@dataclass
class ChatPlan:
    """Which chat prompts a commit's gates ask, and what each must (keep) answer(ing)."""

    edits: list["Edit"]
    questions: dict[int, Any] = field(default_factory=dict)        # edit index -> EditQuestions
    unrelated: list[tuple[str, list[str]]] = field(default_factory=list)  # (question, [expected, *aliases])

    def before_prompts(self) -> list[str]:
        """The edit prompts asked before the commit too: the name probes (their answers must keep the name)."""
        return list(dict.fromkeys(p for q in self.questions.values() for p in q.names))

    def after_prompts(self) -> list[str]:
        """The edit prompts asked with the commit applied: every edit question and name probe."""
        out = []
        for q in self.questions.values():
            out += [*q.all(), *q.names]
        return list(dict.fromkeys(out))

    def unrelated_prompts(self) -> list[str]:
        """The unrelated questions (probe set and neighbours), asked before and after."""
        return [q for q, _ in self.unrelated]


def chat_questions(edits: Sequence["Edit"], probes: Sequence[dict[str, Any]] | None = None) -> ChatPlan:
    """The chat prompts for gating ``edits``: their questions, the probe set and the subjects' neighbours."""
    plan = ChatPlan(list(edits))
    subjects = {(e.subject or "").casefold() for e in edits}
    for i, e in enumerate(edits):
        plan.questions[i] = edit_questions(e)
        rel = relation_of(e)
        if rel is not None:  # neighbours: the relation's real examples about other subjects
            plan.unrelated += [(rel.question_for(s), [o]) for s, o in rel.examples if s.casefold() not in subjects]
    plan.unrelated += [(p["question"], list(p["answers"])) for p in (probes if probes is not None else chat_probes())]
    plan.unrelated = list({q: (q, a) for q, a in plan.unrelated}.values())
    return plan


def answers(lm: Any, prompts: Sequence[str], memo: dict[str, str] | None = None) -> dict[str, str]:
    """Greedy chat answers of ``lm`` (a :class:`~memedit.models.backends.LocalLM`) to each prompt, as a user asks.

    ``memo`` holds answers already computed on these weights with these
    settings (keyed by prompt); new ones are added to it.
    """
    memo = memo if memo is not None else {}
    missing = [p for p in dict.fromkeys(prompts) if p not in memo]
    if missing:
        for p, a in zip(missing, lm.chat_batch([[{"role": "user", "content": p}] for p in missing])):
            memo[p] = a
    return {p: memo[p] for p in prompts}


def _fraction(oks: Sequence[bool]) -> float:
    return sum(oks) / len(oks) if oks else 1.0


def chat_gate_results(plan: ChatPlan, before: dict[str, str], after: dict[str, str],
                      cfg: "GateConfig") -> list["GateResult"]:
    """The five chat gates from the answers before and after the commit (see the module docstring)."""
    from .gates import GateResult

    direct, para, rev, names = [], [], [], []
    for i, e in enumerate(plan.edits):
        q = plan.questions[i]
        direct.append({"edit": e.id, "question": q.direct, "answer": after[q.direct],
                       "ok": answer_gives(after[q.direct], q.direct, e)})
        para += [{"edit": e.id, "question": p, "answer": after[p], "ok": answer_gives(after[p], p, e)}
                 for p in q.paraphrases]
        if q.reverse:
            rev.append({"edit": e.id, "question": q.reverse, "answer": after[q.reverse],
                        "ok": answer_gives(after[q.reverse], q.reverse, e)})
        names += [{"edit": e.id, "subject": e.subject, **row} for row in name_checks(q, e.subject or "", before, after)]
    kept, counted = [], []
    for question, expected in plan.unrelated:
        if not answer_matches(before[question], expected[:1], expected[1:]):
            continue  # wrong before the commit: nothing to keep
        ok = answer_matches(after[question], expected[:1], expected[1:])
        counted.append(ok)
        if not ok:
            kept.append({"question": question, "before": before[question], "after": after[question]})
    out = []
    for name, rows, threshold in (("chat_efficacy", direct, cfg.min_chat_efficacy),
                                  ("chat_paraphrase", para, cfg.min_chat_paraphrase),
                                  ("chat_reverse", rev, cfg.min_chat_reverse),
                                  ("subject_name", names, cfg.min_subject_kept)):
        value = _fraction([r["ok"] for r in rows])
        failed = [r for r in rows if not r["ok"]]
        out.append(GateResult(name, value >= threshold, value, threshold, {"asked": len(rows), "failed": failed}))
    value = _fraction(counted)
    out.append(GateResult("chat_unrelated", value >= cfg.min_chat_unrelated_kept, value, cfg.min_chat_unrelated_kept,
                          {"asked": len(plan.unrelated), "counted": len(counted), "changed": kept}))
    return out
