"""The one tune / report split: deterministic, subject-disjoint in every file, MQuAKE grouped by chain.

The shared data files are read where they are (``../shared/data``); a test that
cannot find them fails, since the split's promises are about those files.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from memedit.errors import ValidationError
from memedit.eval.splits import (
    DEFAULT_RULE, DataSplit, SplitRule, default_data_dir, default_split, mquake_groups, normalise_key,
    read_jsonl_records, side_of_key,
)

DATA = default_data_dir()


def _need(rel: str) -> Path:
    p = DATA / rel
    assert p.is_file(), f"the shared evaluation data is missing: {p} (set MEMEDIT_DATA_DIR)"
    return p


def test_rule_is_the_documented_sha256() -> None:
    key = normalise_key("The United States")
    assert key == "united states" and normalise_key("the") == "the"
    frac = int(hashlib.sha256(f"memedit-split-v1\x1f{key}".encode()).hexdigest()[:16], 16) / 2 ** 64
    assert DEFAULT_RULE.fraction_of(key) == frac
    assert DEFAULT_RULE.side_of_key(key) == ("report" if frac < 0.3 else "tune")
    assert side_of_key("United  States!") == side_of_key("the united states")


def test_sides_are_deterministic_and_about_the_fraction() -> None:
    keys = [f"subject number {i}" for i in range(5000)]
    first = [DEFAULT_RULE.side_of_key(k) for k in keys]
    assert first == [SplitRule().side_of_key(k) for k in keys]
    share = first.count("report") / len(first)
    assert 0.27 < share < 0.33
    other = [SplitRule(name="another-split").side_of_key(k) for k in keys]
    assert other != first
    with pytest.raises(ValidationError):
        SplitRule(report_fraction=1.0)
    with pytest.raises(ValidationError):
        DataSplit().select([1, 2], ["tune", "report"], "heldout")


@pytest.mark.parametrize("rel", ["counterfact/counterfact-dev.jsonl", "zsre/zsre-dev.jsonl"])
def test_fact_files_split_by_subject_about_70_30(rel: str) -> None:
    split = default_split()
    recs = read_jsonl_records(_need(rel))
    sides = [split.side_of_subject(r["subject"]) for r in recs]
    by_subject: dict[str, set[str]] = {}
    for r, s in zip(recs, sides):
        by_subject.setdefault(normalise_key(r["subject"]), set()).add(s)
    assert all(len(v) == 1 for v in by_subject.values())           # one subject, one side
    share = sides.count("report") / len(sides)
    assert 0.22 < share < 0.38, share


def test_mquake_groups_keep_chains_together_and_agree_with_other_files() -> None:
    path = _need("mquake/mquake-cf-dev.jsonl")
    recs = read_jsonl_records(path)
    split = default_split()
    sides = split.mquake_sides(recs)
    assert 0.15 < sides.count("report") / len(sides) < 0.45
    # every edited subject, and every non-hub chain subject, is on one side only
    where: dict[str, set[str]] = {}
    chain_cases = Counter(normalise_key(t[0]) for r in recs
                          for t in {tuple(x) for x in r["orig"]["triples_labeled"] + r["orig"]["new_triples_labeled"]})
    edited = {normalise_key(rw["subject"]) for r in recs for rw in r["requested_rewrite"]}
    for r, s in zip(recs, sides):
        subjects = {normalise_key(rw["subject"]) for rw in r["requested_rewrite"]}
        subjects |= {normalise_key(t[0]) for t in r["orig"]["triples_labeled"] + r["orig"]["new_triples_labeled"]
                     if normalise_key(t[0]) in edited or chain_cases[normalise_key(t[0])] <= DEFAULT_RULE.hub_cases}
        for subj in subjects:
            where.setdefault(subj, set()).add(s)
            assert split.side_of_subject(subj) == s    # the same side in CounterFact, zsRE and the scope data
    assert all(len(v) == 1 for v in where.values())
    # the shared file reproduces itself: sides from its own groups equal the overrides it defines
    again = DataSplit.for_data_dir(DATA)
    assert again.sha256 == split.sha256 and again.mquake_sides(recs) == sides


def test_mquake_grouping_joins_cases_through_an_edited_subject() -> None:
    def case(subject: str, hop: str) -> dict:
        return {"requested_rewrite": [{"subject": subject}],
                "orig": {"triples_labeled": [[subject, "r", hop], [hop, "r2", "z"]], "new_triples_labeled": []}}
    # case 0 edits "Alpha"; case 1 passes through Alpha as a hop: joined. Case 2 shares nothing.
    recs = [case("Alpha", "Beta"), case("Gamma", "Alpha"), case("Delta", "Epsilon")]
    keys, subject_keys = mquake_groups(recs, hub_cases=5)
    assert keys[0] == keys[1] != keys[2]
    assert subject_keys["alpha"] == subject_keys["gamma"] == keys[0]
    # a hub (more than hub_cases chains, edited nowhere) does not join groups
    hubbed = [case(f"Person {i}", "Hubland") for i in range(4)]
    keys, _ = mquake_groups(hubbed, hub_cases=2)
    assert len(set(keys)) == 4


def test_split_record_names_its_definition() -> None:
    rec = default_split().record()
    assert rec["sha256"] == hashlib.sha256(json.dumps(rec["definition"], sort_keys=True).encode()).hexdigest()
    assert rec["definition"]["rule"]["report_fraction"] == 0.3
    assert rec["definition"]["mquake_file_sha256"] == hashlib.sha256(_need("mquake/mquake-cf-dev.jsonl")
                                                                      .read_bytes()).hexdigest()


def test_the_shipped_scope_classifier_trained_on_the_tune_side_only() -> None:
    from memedit.scope import ScopeClassifier

    meta = ScopeClassifier.load().meta
    split = meta["training"]["split"]
    assert split["sha256"] == default_split().sha256, "the packaged classifier was trained on another split"
    assert split["test_is"] == "report side"
