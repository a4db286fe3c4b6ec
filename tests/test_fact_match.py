"""The "does the question ask the edit's own fact?" check: artifact, decisions, SERAC's repair, MeLLo's veto, sampling."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from memedit.answer import UsedEdit
from memedit.edits import Edit
from memedit.fact_match import FEATURES, FactMatcher, FactMatchError, checked_answer, matchable
from memedit.fact_match_train import choose_threshold, fit_logistic, scores

BORN = Edit.fact("Ada Lovelace", "{} was born in", "Kenya")
TEAM = Edit.fact("Lior Vantanen", "What sports team was {} a member of?", "Harbour City Gulls")


@pytest.fixture(scope="module")
def matcher() -> FactMatcher:
    return FactMatcher.load()


@pytest.fixture(scope="module")
def embed(embedder):
    return embedder.encode


def test_packaged_artifact_is_fitted_on_this_split(matcher: FactMatcher) -> None:
    from memedit.eval.splits import default_split

    assert len(matcher.weights) == len(FEATURES) and 0 < matcher.threshold < 1
    assert matcher.meta["split"]["sha256"] == default_split().sha256
    tune, report = matcher.meta["metrics"]["tune"], matcher.meta["metrics"]["report"]
    assert tune["precision"] >= matcher.meta["min_tune_precision"]  # the rule the threshold was chosen by
    assert report["n"] > 0 and report["recall"] is not None


def test_decisions_on_our_own_examples(matcher: FactMatcher, embed) -> None:
    direct = matcher.assess("Where was Ada Lovelace born?", BORN, 0.99, embed)
    restated = matcher.assess("What sports team was Lior Vantanen a member of?", TEAM, 0.99, embed)
    other = matcher.assess("Which instrument did Ada Lovelace play?", BORN, 0.2, embed)
    assert direct is not None and direct.asks
    assert restated is not None and restated.asks and restated.restates_prompt
    assert not direct.restates_prompt  # a question is not the cloze it asks
    assert other is not None and not other.asks and other.probability < direct.probability


def test_text_edits_are_not_checked(matcher: FactMatcher, embed) -> None:
    text = Edit.text("Ada Lovelace was born in Kenya")
    assert not matchable(text)
    assert matcher.assess("Where was Ada Lovelace born?", text, 0.99, embed) is None
    assert matcher.probability("Where was Ada Lovelace born?", text, 0.99, embed) is None


def _used(edit: Edit, asks: bool) -> UsedEdit:
    return UsedEdit(edit=edit, scope_probability=0.99, similarity=0.9, matched_text=edit.sentence(),
                    fact_probability=0.9 if asks else 0.1, asks_fact=asks)


def test_checked_answer_replaces_only_a_miss_on_an_asked_fact() -> None:
    text, steps = checked_answer("Carolus of Guimaraes", "Who is Ana's mother?", [_used(TEAM, True)], "serac")
    assert text == "Harbour City Gulls" and steps[0]["step"] == "fact-check"
    assert steps[0]["model_answer"] == "Carolus of Guimaraes"
    kept, none = checked_answer("They played for the Harbour City Gulls.", "q", [_used(TEAM, True)], "serac")
    assert kept.startswith("They played") and none == []
    untouched, none = checked_answer("1852", "When did Ada Lovelace die?", [_used(BORN, False)], "serac")
    assert untouched == "1852" and none == []


@pytest.mark.parametrize("doc, message", [
    ({"features": ["x"], "weights": [1.0], "bias": 0.0, "threshold": 0.5}, "fitted on features"),
    ({"features": list(FEATURES), "weights": [1.0] * 5 + [math.inf], "bias": 0.0, "threshold": 0.5}, "finite"),
    ({"features": list(FEATURES), "weights": [1.0] * 6, "bias": 0.0, "threshold": 1.5}, "probability"),
])
def test_malformed_artifacts_are_refused(tmp_path: Path, doc: dict, message: str) -> None:
    path = tmp_path / "fm.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(FactMatchError, match=message):
        FactMatcher.load(path)
    with pytest.raises(FactMatchError, match="no fact-match weights"):
        FactMatcher.load(tmp_path / "missing.json")


def test_save_load_round_trip(tmp_path: Path, matcher: FactMatcher) -> None:
    path = matcher.save(tmp_path / "copy.json")
    again = FactMatcher.load(path)
    assert again.weights == matcher.weights and again.threshold == matcher.threshold
    row = np.arange(len(FEATURES), dtype=np.float64) / 10
    assert again.probability_of(row) == pytest.approx(matcher.probability_of(row))


def test_logistic_fit_and_threshold_choice() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    y = (x[:, 0] - 0.5 * x[:, 1] > 0).astype(np.float64)
    w, b = fit_logistic(x, y, l2=1e-4)
    probs = 1 / (1 + np.exp(-(x @ w + b)))
    assert ((probs >= 0.5) == (y == 1)).mean() > 0.97
    assert w[0] > 0 > w[1]
    t = choose_threshold(y, probs, 0.99)
    assert scores(y, probs, t)["precision"] >= 0.99


class _ClaimsEverything:
    """A route that claims every in-scope question, as MeLLo claims the ones it takes for multi-hop."""

    route = "claimer"

    def claims(self, question: str, namespace: str) -> bool:  # noqa: ARG002
        return True

    def messages(self, question: str, used, **_):  # noqa: ANN001, ARG002
        return [{"role": "user", "content": question}]

    def backend(self, base):  # noqa: ANN001
        return base


def test_a_question_that_restates_an_edit_is_not_claimed_as_multi_hop(tmp_path: Path, embedder) -> None:
    """The decomposer may see two relations ("sports team", "member of") in an edit's own prompt; it is one hop."""
    from memedit.route import Router
    from memedit.store import EditStore

    store = EditStore(tmp_path / "s.db", embedder=embedder)
    store.add(TEAM)
    routers = {}
    for name, fm in (("check", None), ("off", False)):
        routers[name] = Router(store, "smollm2-135m-instruct", fact_matcher=fm, mello=False)
        routers[name].register(_ClaimsEverything())
    restated = routers["check"].prepare("What sports team was Lior Vantanen a member of?")
    assert restated.used and restated.used[0].asks_fact and restated.route != "claimer"
    assert restated.timings_ms["fact_check"] >= 0
    # the same question without the check, and a paraphrase (asks the fact, does not restate it), may be claimed
    assert routers["off"].prepare("What sports team was Lior Vantanen a member of?").route == "claimer"
    assert routers["check"].prepare("Lior Vantanen was on which sports team?").route == "claimer"


def test_batch_sampling_draws_distinct_subjects() -> None:
    from memedit.eval.datasets import EvalCase, sample, subjects_shared

    def case(i: int, subject: str) -> EvalCase:
        return EvalCase(str(i), "zsre", Edit.fact(subject, "The launch date of {} is", f"day {i}"), ())

    cases = [case(i, f"Probe {i % 7}") for i in range(30)]
    assert subjects_shared(cases) == 30
    picked = sample(cases, 5, seed=3, distinct_subjects=True)
    assert len(picked) == 5 and len({c.edit.subject for c in picked}) == 5
    assert picked == sample(cases, 5, seed=3, distinct_subjects=True)
    assert len(sample(cases, 20, seed=3, distinct_subjects=True)) == 7  # only seven subjects exist
    assert len(sample(cases, 20, seed=3)) == 20
