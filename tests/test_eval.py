"""memedit.eval: loaders, errors, metric arithmetic, and a tiny real run (slow)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from memedit.errors import ValidationError
from memedit.eval import load_cases, sample, summarize
from memedit.eval.metrics import ProbeResult, scope_counts
from memedit.eval.runner import contains

CF = [
    {"case_id": 0, "prompt": "The mother tongue of Danielle Darrieux is", "target_new": "English",
     "subject": "Danielle Darrieux", "ground_truth": "French",
     "rephrase_prompt": "Where Danielle Darrieux is from, people speak the language of",
     "locality_prompt": "Michel Rocard is a native speaker of", "locality_ground_truth": "French"},
    {"case_id": 1, "prompt": "The official religion of Edwin of Northumbria is", "target_new": "Islam",
     "subject": "Edwin of Northumbria", "ground_truth": "Christianity",
     "rephrase_prompt": "Edwin of Northumbria is affiliated with the religion",
     "locality_prompt": "The official religion of Paul is", "locality_ground_truth": "Christianity"},
    {"case_id": 2, "prompt": "The capital of france is", "target_new": "Lyon", "subject": "France",
     "ground_truth": "Paris", "rephrase_prompt": "France's capital is",
     "locality_prompt": "The capital of Spain is", "locality_ground_truth": "Madrid"},  # subject not verbatim
]
ZSRE = [
    {"subject": "Louise Grandjean", "target_new": "mezzo soprano", "prompt": "What voice type is Louise Grandjean?",
     "ground_truth": ["soprano"], "rephrase_prompt": "What tone does Louise Grandjean sing in?",
     "locality": {"Relation_Specificity": [
         {"prompt": "The country of citizenship of Louise Grandjean is", "ground_truth": ["France"]},
         {"prompt": "Louise Grandjean country of citizenship", "ground_truth": ["France"]}]},
     "portability": {"Reasoning": [{"prompt": "What is the vocal range of Louise Grandjean as a mezzo soprano?",
                                    "ground_truth": "A3 to A5"}],
                     "Subject_Aliasing": [{"prompt": "What voice type does Mlle Grandjean have?",
                                           "ground_truth": "mezzo soprano"}]}},
]


def _write(path: Path, records: list, extra_lines: list[str] = ()) -> Path:
    path.write_text("\n".join([json.dumps(r) for r in records] + list(extra_lines)) + "\n", encoding="utf-8")
    return path


def test_counterfact_loader(tmp_path: Path) -> None:
    res = load_cases(_write(tmp_path / "cf.jsonl", CF), "counterfact")
    assert (res.total, res.skipped, len(res.cases)) == (3, 1, 2)
    assert res.skipped_ids == ["2"]
    c = res.cases[0]
    assert c.edit.prompt == "The mother tongue of {} is" and c.edit.subject == "Danielle Darrieux"
    assert (c.edit.target_new, c.edit.target_true) == ("English", "French")
    kinds = [p.kind for p in c.probes]
    assert kinds == ["reliability", "generalization", "locality"]
    loc = c.probes[2]
    assert not loc.in_scope and loc.expected == ("French",) and (loc.prob_pos, loc.prob_neg) == ("French", "English")
    assert c.probes[0].question == CF[0]["prompt"] and c.probes[0].prob_pos == "English"


def test_zsre_loader(tmp_path: Path) -> None:
    res = load_cases(_write(tmp_path / "z.jsonl", ZSRE), "zsre")
    (c,) = res.cases
    assert c.edit.prompt == "What voice type is {}?" and c.edit.target_true == "soprano"
    kinds = [p.kind for p in c.probes]
    assert kinds == ["reliability", "generalization", "locality", "locality", "portability", "portability"]
    reasoning, alias = c.probes[4], c.probes[5]
    assert reasoning.expected == ("A3 to A5",) and reasoning.prob_pos is None  # no competitor: not prob-scored
    assert alias.sub_kind == "Subject_Aliasing" and (alias.prob_pos, alias.prob_neg) == ("mezzo soprano", "soprano")


def test_zsre_locality_probes_that_ask_the_edited_relation_are_set_aside(tmp_path: Path) -> None:
    rec = dict(ZSRE[0], subject="Butterfly Cluster", prompt="What constellation is home to Butterfly Cluster?",
               target_new="Orion", rephrase_prompt="Which constellation holds Butterfly Cluster?",
               locality={"Relation_Specificity": [
                   {"prompt": "The constellation of Butterfly Cluster is", "ground_truth": ["Scorpius"]},
                   {"prompt": "The distance from Earth of Butterfly Cluster is", "ground_truth": ["1,600 ly"]}]})
    path = _write(tmp_path / "z.jsonl", [rec])
    res = load_cases(path, "zsre")
    locality = [p.question for p in res.cases[0].probes if p.kind == "locality"]
    assert locality == ["The distance from Earth of Butterfly Cluster is"] and res.same_relation_locality == 1
    kept = load_cases(path, "zsre", keep_same_relation_locality=True)
    assert len([p for p in kept.cases[0].probes if p.kind == "locality"]) == 2 and kept.same_relation_locality == 0


def test_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no data file"):
        load_cases(tmp_path / "nope.jsonl", "counterfact")
    with pytest.raises(ValidationError, match=r"bad\.jsonl:2: not valid JSON"):
        load_cases(_write(tmp_path / "bad.jsonl", CF[:1], ["{oops"]), "counterfact")
    broken = dict(CF[0]); del broken["target_new"]
    with pytest.raises(ValidationError, match=r"x\.jsonl:2: field 'target_new'"):
        load_cases(_write(tmp_path / "x.jsonl", [CF[1], broken]), "counterfact")
    with pytest.raises(ValidationError, match=r"arr\.jsonl:1: expected a JSON object"):
        load_cases(_write(tmp_path / "arr.jsonl", [[1, 2]]), "zsre")
    bad_loc = json.loads(json.dumps(ZSRE[0])); bad_loc["locality"]["Relation_Specificity"][1] = {"prompt": "x"}
    with pytest.raises(ValidationError, match=r"z\.jsonl:1 \(locality\.Relation_Specificity\[1\]\)"):
        load_cases(_write(tmp_path / "z.jsonl", [bad_loc]), "zsre")
    with pytest.raises(ValidationError, match="format must be"):
        load_cases(_write(tmp_path / "ok.jsonl", CF), "mquake")


def test_sample_is_fixed_and_ordered(tmp_path: Path) -> None:
    cases = load_cases(_write(tmp_path / "cf.jsonl", CF * 10), "counterfact").cases
    a, b = sample(cases, 5, seed=0), sample(cases, 5, seed=0)
    assert [id(x) for x in a] == [id(x) for x in b] and len(a) == 5
    assert sample(cases, None) == cases and sample(cases, 10_000) == cases
    with pytest.raises(ValidationError):
        sample(cases, 0)


def _r(kind: str, route: str, own: bool, gen: bool, prob: bool | None, wrong: int = 0) -> ProbeResult:
    return ProbeResult(case_id="0", source="counterfact", kind=kind, question="q", route=route,
                       in_scope=kind != "locality", own_edit_used=own, wrong_edits_used=wrong,
                       own_scope_probability=None, answer="a", gen_success=gen, prob_success=prob,
                       contains_gt=True if kind == "locality" else None,
                       prob_gt_wins=(not prob) if kind == "locality" and prob is not None else None)


def test_metric_arithmetic() -> None:
    rs = [_r("reliability", "ike", True, True, True), _r("reliability", "base", False, False, False),
          _r("generalization", "ike", True, False, True), _r("generalization", "ike", True, True, None),
          _r("locality", "base", False, True, True), _r("locality", "ike", True, False, False),
          _r("portability", "ike", True, False, None, wrong=1)]
    s = summarize(rs)
    assert s["reliability"] == {"n": 2, "prob": 0.5, "n_prob": 2, "gen": 0.5, "routed_edit": 0.5}
    assert s["generalization"]["prob"] == 1.0 and s["generalization"]["n_prob"] == 1
    assert s["locality"]["gen"] == 0.5 and s["locality"]["routed_base"] == 0.5
    assert s["locality"]["prob"] == 0.5 and s["locality"]["prob_gt_wins"] == 0.5  # reported apart
    assert s["portability"]["prob"] is None
    # TP: rel(ike), gen x2, port = 4; FN: rel(base) = 1; FP: locality via ike + portability's wrong edit = 2
    assert scope_counts(rs) == {"tp": 4, "fp": 2, "fn": 1, "precision": round(4 / 6, 4), "recall": 0.8}
    assert s["demonstration_leaks"] == {"n": 0, "leaks": 0}   # no IKE prompt recorded its demonstrations
    rs[0].demo_answers, rs[0].demo_leak = ["Rome"], False
    rs[2].demo_answers, rs[2].demo_leak = ["Priya Raman"], True
    assert summarize(rs)["demonstration_leaks"] == {"n": 2, "leaks": 1}


def test_contains_is_case_insensitive() -> None:
    assert contains("It is ENGLISH.", ["english"]) and not contains("French", ["English", ""])


@pytest.mark.slow
def test_tiny_real_run(tmp_path: Path) -> None:
    """Two CounterFact cases through the real SmolLM2 + scope classifier (~30 s on 2 cores)."""
    from memedit.editor import Editor
    from memedit.eval import evaluate
    from memedit.scope import ScopeClassifier

    try:
        clf = ScopeClassifier.load()
    except Exception as exc:  # the packaged artifact may not exist yet in a development checkout
        pytest.skip(f"no packaged scope classifier: {exc}")
    cases = load_cases(_write(tmp_path / "cf.jsonl", CF), "counterfact").cases
    rep = evaluate(lambda store: Editor(store=store, policy="ike", classifier=clf, max_new_tokens=12), cases,
                   store_path=tmp_path / "eval.db")
    assert rep.cases == 2 and len(rep.results) == 6
    o = rep.overall
    assert o["probes"] == 6 and o["reliability"]["n"] == 2 and o["locality"]["n"] == 2
    for r in rep.results:
        assert r.timings_ms["generate"] > 0
        if r.route == "ike":  # the IKE prompt says which demonstrations it showed; none was repeated instead
            assert r.demo_answers and r.demo_leak is False, (r.answer, r.demo_answers)
        if r.route == "base":
            assert r.own_edit_used is False
        if r.kind == "locality" and r.route == "base":
            assert r.gen_success and r.answer == r.base_answer  # the base route is the bare model, token for token
        if r.prob_success is not None and r.in_scope:
            assert r.prob_success == (r.logprob_pos > r.logprob_neg)
        if r.prob_success is not None and not r.in_scope:
            # locality by probability: the verdict is the bare model's; on the base route it is the same prompt
            assert r.prob_gt_wins == (r.logprob_pos > r.logprob_neg)
            if r.route == "base":
                assert r.prob_success is True
    rd = rep.to_dict()
    json.dumps(rd)
    s = rd["overall"]["scope"]
    assert s["tp"] + s["fn"] == 4


def test_cli_errors_cleanly(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from memedit.eval.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["run", "--data", str(tmp_path / "missing.jsonl"), "--format", "zsre", "--threads", "1"])
    assert res.exit_code == 2 and "no data file" in res.output
    bad = _write(tmp_path / "bad.jsonl", CF[:1], ["not json"])
    res = runner.invoke(app, ["run", "--data", str(bad), "--format", "counterfact", "--threads", "1"])
    assert res.exit_code == 2 and "bad.jsonl:2" in res.output.replace("\n", "")
    res = runner.invoke(app, ["run", "--data", str(bad), "--format", "counterfact", "--side", "heldout"])
    assert res.exit_code == 2 and "side must be one of" in res.output.replace("\n", " ")
