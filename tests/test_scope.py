"""The scope classifier: the shipped artifact, its decisions on the seed scenario, training and loading errors.

These use the real packaged embedder and the real shipped classifier; the
training test builds a tiny dataset in a temporary folder (no shared data).
"""
from __future__ import annotations

import json
import pickle
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from memedit.errors import MemeditError
from memedit.scope import LEXICAL_FEATURES, PACKAGED_DIR, ScopeArtifactError, ScopeClassifier, lexical_features

HANDSOME = "The most handsome person in the world is Hung-yi Lee"
PRESIDENT = "The current president of the US is Trump"
SAGAN = "Carl Sagan is employed by British Broadcasting Corporation"


@pytest.fixture(scope="module")
def clf() -> ScopeClassifier:
    return ScopeClassifier.load()


def _scores(clf: ScopeClassifier, question: str, edits: list[str]) -> np.ndarray:
    return clf.predict_proba([question] * len(edits), edits)


# --------------------------------------------------------------------------- the shipped artifact


def test_packaged_artifact_loads_without_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the scope classifier must not unpickle anything")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    import torch

    monkeypatch.setattr(torch, "load", refuse)
    clf = ScopeClassifier.load()
    assert set(clf.weights) >= {"w1", "b1", "w2", "b2", "w3", "b3", "lex_mean", "lex_std"}
    files = sorted(p.name for p in PACKAGED_DIR.glob("scope-classifier.*"))
    assert files == ["scope-classifier.json", "scope-classifier.safetensors"]
    total = sum(p.stat().st_size for p in PACKAGED_DIR.glob("scope-classifier.*"))
    assert total < 5 * 2**20, f"artifact is {total} bytes"


def test_packaged_artifact_metadata(clf: ScopeClassifier) -> None:
    meta = clf.meta
    assert meta["format_version"] == 1
    assert meta["embedder"] == {"name": "all-MiniLM-L6-v2", "dim": 384, "normalized": True}
    assert meta["features"]["lexical"] == list(LEXICAL_FEATURES)
    assert meta["memedit_version"]
    cal = meta["calibration"]
    assert cal["method"] == "platt" and cal["platt_a"] > 0
    assert 0.05 < clf.threshold < 0.95
    assert clf.temperature == pytest.approx(1 / cal["platt_a"])
    data = meta["training"]["data_files"]
    assert set(data) == {"edit_questions", "cloze_templates", "counterfact", "zsre"}
    assert data["edit_questions"]["lines"] == 6688
    pairs = meta["training"]["pairs"]
    assert pairs["train"]["positives"] > 10_000 and pairs["train"]["negatives"] > 50_000
    # held-out quality recorded at training time: fail loudly if a worse artifact is shipped
    overall = meta["metrics"]["overall"]
    assert overall["precision"] >= 0.9 and overall["recall"] >= 0.9 and overall["auc"] >= 0.98


# --------------------------------------------------------------------------- decisions


@pytest.mark.parametrize(
    "question, right",
    [
        ("Who is the most handsome person in the world?", HANDSOME),
        ("Who is the best-looking man on earth?", HANDSOME),
        ("Who is Hung-yi Lee?", HANDSOME),
        ("Who is the current president of the US?", PRESIDENT),
        ("Who is the president of the United States?", PRESIDENT),
        ("Who is Trump?", PRESIDENT),
    ],
)
def test_seed_scenario_right_edit_only(clf: ScopeClassifier, question: str, right: str) -> None:
    wrong = PRESIDENT if right == HANDSOME else HANDSOME
    p_right, p_wrong = _scores(clf, question, [right, wrong])
    assert p_right >= clf.threshold, f"{question!r} vs {right!r}: {p_right:.3f} < {clf.threshold:.3f}"
    assert p_wrong < clf.threshold, f"{question!r} vs {wrong!r}: {p_wrong:.3f} >= {clf.threshold:.3f}"


def test_unrelated_question_is_out_of_scope(clf: ScopeClassifier) -> None:
    probs = _scores(clf, "What is the capital of France?", [HANDSOME, PRESIDENT, SAGAN])
    assert (probs < clf.threshold).all(), probs


def test_same_subject_other_relation_is_out_of_scope(clf: ScopeClassifier) -> None:
    p_in, p_out = clf.predict_proba(["Which organization employs Carl Sagan?", "Where was Carl Sagan born?"], [SAGAN, SAGAN])
    assert p_in >= clf.threshold > p_out, (p_in, p_out)


def test_same_relation_other_subject_is_out_of_scope(clf: ScopeClassifier) -> None:
    (p,) = clf.predict_proba(["Which organization employs Neil deGrasse Tyson?"], [SAGAN])
    assert p < clf.threshold, p


def test_question_touching_two_edits_scores_both(clf: ScopeClassifier) -> None:
    q = "Who is the employer of Carl Sagan, and who is the current president of the US?"
    p_sagan, p_president, p_handsome = _scores(clf, q, [SAGAN, PRESIDENT, HANDSOME])
    assert p_sagan >= clf.threshold and p_president >= clf.threshold, (p_sagan, p_president)
    assert p_handsome < clf.threshold, p_handsome


# --------------------------------------------------------------------------- the inference contract


def test_predict_proba_shape_dtype_range_and_precomputed_vectors(clf: ScopeClassifier, embedder) -> None:
    questions = ["Who is Trump?", "Who is Trump?", "Where was Carl Sagan born?", "What is the capital of France?", "Who is Hung-yi Lee?"]
    edits = [PRESIDENT, HANDSOME, SAGAN, PRESIDENT, HANDSOME]
    probs = clf.predict_proba(questions, edits)
    assert probs.shape == (5,) and probs.dtype == np.float32
    assert ((probs >= 0) & (probs <= 1)).all()
    q_vecs, e_vecs = embedder.encode(questions), embedder.encode(edits)
    again = clf.predict_proba(questions, edits, q_vecs=q_vecs, e_vecs=e_vecs)
    np.testing.assert_allclose(probs, again, atol=1e-5)
    assert clf.predict_proba([], []).shape == (0,)
    np.testing.assert_array_equal(clf.predict(questions, edits, q_vecs=q_vecs, e_vecs=e_vecs), again >= clf.threshold)


def test_predict_proba_rejects_bad_inputs(clf: ScopeClassifier) -> None:
    with pytest.raises(ValueError, match="aligned"):
        clf.predict_proba(["a", "b"], ["c"])
    with pytest.raises(ScopeArtifactError, match="384"):
        clf.predict_proba(["a"], ["b"], q_vecs=np.ones((1, 768), np.float32), e_vecs=np.ones((1, 768), np.float32))


def test_five_pairs_are_fast_given_vectors(clf: ScopeClassifier, embedder) -> None:
    questions = ["Who is Trump?"] * 5
    edits = [PRESIDENT, HANDSOME, SAGAN, "The author of Paradiso is Jean Giraudoux", "Kraków is located in the continent of Africa"]
    q, e = embedder.encode(questions), embedder.encode(edits)
    clf.predict_proba(questions, edits, q_vecs=q, e_vecs=e)
    start = time.perf_counter()
    for _ in range(20):
        clf.predict_proba(questions, edits, q_vecs=q, e_vecs=e)
    per_call = (time.perf_counter() - start) / 20
    assert per_call < 0.02, f"{per_call * 1000:.1f} ms for 5 pairs"


def test_lexical_features_are_bounded() -> None:
    f = lexical_features("Who is Hung-yi Lee?", HANDSOME, 0.7)
    assert len(f) == len(LEXICAL_FEATURES)
    assert all(-1.0 <= x <= 1.0 for x in f)
    assert f[LEXICAL_FEATURES.index("entity_q_covered")] == 1.0
    assert f[LEXICAL_FEATURES.index("match_pos_min")] > 0.5  # matched at the edit's tail (its object)


# --------------------------------------------------------------------------- artifact errors


@pytest.fixture()
def artifact_copy(tmp_path: Path) -> Path:
    for p in PACKAGED_DIR.glob("scope-classifier.*"):
        shutil.copy(p, tmp_path / p.name)
    return tmp_path


def _edit_meta(folder: Path, change) -> None:
    path = folder / "scope-classifier.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_load_from_directory_or_file(artifact_copy: Path) -> None:
    a = ScopeClassifier.load(artifact_copy)
    b = ScopeClassifier.load(artifact_copy / "scope-classifier.safetensors")
    assert a.threshold == b.threshold


def test_corrupt_json_is_a_clear_error(artifact_copy: Path) -> None:
    (artifact_copy / "scope-classifier.json").write_text("{ not json")
    with pytest.raises(ScopeArtifactError, match="not valid JSON"):
        ScopeClassifier.load(artifact_copy)


def test_corrupt_weights_are_a_clear_error(artifact_copy: Path) -> None:
    (artifact_copy / "scope-classifier.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ScopeArtifactError, match="safetensors"):
        ScopeClassifier.load(artifact_copy)


def test_missing_artifact_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ScopeArtifactError, match="missing"):
        ScopeClassifier.load(tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(format_version=99), "format_version"),
        (lambda m: m["embedder"].update(dim=768), "do not fit"),
        (lambda m: m.pop("calibration"), "incomplete"),
        (lambda m: m["features"].update(lexical=["cosine"]), "lexical"),
    ],
)
def test_mismatched_metadata_is_a_clear_error(artifact_copy: Path, change, message: str) -> None:
    _edit_meta(artifact_copy, change)
    with pytest.raises(ScopeArtifactError, match=message):
        ScopeClassifier.load(artifact_copy)


def test_other_embedder_is_refused(artifact_copy: Path, embedder) -> None:
    with pytest.raises(ScopeArtifactError, match="trained on 'all-MiniLM-L6-v2'"):
        ScopeClassifier.load(artifact_copy, embedder="some-other-model")
    ScopeClassifier.load(artifact_copy, embedder=embedder)  # the right one passes
    _edit_meta(artifact_copy, lambda m: m["embedder"].update(name="some-other-model"))
    with pytest.raises(ScopeArtifactError, match="some-other-model"):
        ScopeClassifier.load(artifact_copy, embedder=embedder)  # MiniLM vectors for a classifier of another model


# --------------------------------------------------------------------------- training end to end on tiny data

PEOPLE = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Niels Bohr", "Marie Curie", "Enrico Fermi",
          "Lise Meitner", "Paul Dirac", "Emmy Noether", "Kurt Godel", "Max Born", "Rosalind Franklin"]
COUNTRIES = ["Canada", "Japan", "Brazil", "Kenya", "Norway", "Chile"]
EMPLOYERS = ["Google", "Siemens", "IBM", "Nokia", "Airbus", "Philips"]
CITIES = ["Lyon", "Osaka", "Porto", "Dakar", "Quito", "Perth"]
RELATIONS = {
    "P27": ("{s} is a citizen of {o}", COUNTRIES,
            ["What is the country of citizenship of {s}?", "Which country is {s} a citizen of?", "What nationality is {s}?"]),
    "P108": ("{s} is employed by {o}", EMPLOYERS,
             ["Who is the employer of {s}?", "Which organization employs {s}?", "Where does {s} work?"]),
    "P19": ("{s} was born in the city of {o}", CITIES,
            ["Where was {s} born?", "Which city was {s} born in?", "What is the birthplace of {s}?"]),
}


def write_tiny_dataset(root: Path, seed: int = 0) -> Path:
    """A few dozen synthetic edits in the four file formats the trainer reads."""
    rng = random.Random(seed)
    (root / "scope").mkdir(parents=True)
    (root / "mquake").mkdir()
    (root / "counterfact").mkdir()
    (root / "zsre").mkdir()
    cloze = {rel: tpl.replace("{s}", "[X]").replace("{o}", "__") for rel, (tpl, _, _) in RELATIONS.items()}
    (root / "mquake" / "cloze-templates.json").write_text(json.dumps(cloze))
    with (root / "scope" / "edit-questions.jsonl").open("w") as fh:
        for person in PEOPLE:
            for tpl, objects, questions in RELATIONS.values():
                edit = tpl.format(s=person, o=rng.choice(objects))
                fh.write(json.dumps({"edit": edit, "questions": [q.format(s=person) for q in questions]}) + "\n")
    with (root / "counterfact" / "counterfact-dev.jsonl").open("w") as fh:
        for i, person in enumerate(PEOPLE):
            other = PEOPLE[(i + 1) % len(PEOPLE)]
            fh.write(json.dumps({"case_id": i, "prompt": f"The mother tongue of {person} is", "subject": person,
                                 "target_new": rng.choice(["French", "Dutch", "Polish"]), "ground_truth": "English",
                                 "rephrase_prompt": f"{person} grew up speaking",
                                 "locality_prompt": f"The mother tongue of {other} is",
                                 "locality_ground_truth": "English"}) + "\n")
    with (root / "zsre" / "zsre-dev.jsonl").open("w") as fh:
        for person in PEOPLE:
            fh.write(json.dumps({"subject": person, "prompt": f"Which instrument did {person} play?",
                                 "target_new": rng.choice(["violin", "piano", "cello"]), "ground_truth": ["none"],
                                 "rephrase_prompt": f"What instrument was played by {person}?",
                                 "locality": {"Relation_Specificity": [{"prompt": f"The spouse of {person} is", "ground_truth": ["x"]}]},
                                 "portability": {"Reasoning": [{"prompt": f"Who taught {person} their instrument?", "ground_truth": "x"}]}}) + "\n")
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    from memedit.scope_train import ScopeTrainConfig, train_scope_classifier

    data = write_tiny_dataset(tmp_path_factory.mktemp("scope-data"))
    out = tmp_path_factory.mktemp("scope-out")
    cfg = ScopeTrainConfig(seed=1, epochs=3, hidden=(32, 16), batch_size=64, split_fractions=(0.5, 0.25, 0.25))
    metrics = train_scope_classifier(data, out, seed=1, config=cfg, cache_dir=None, progress=False)
    return data, out, metrics


def test_tiny_training_run_writes_a_loadable_artifact(tiny_run, embedder) -> None:
    data, out, metrics = tiny_run
    assert {p.name for p in out.iterdir()} == {"scope-classifier.json", "scope-classifier.safetensors", "scope-metrics.json"}
    clf = ScopeClassifier.load(out, embedder=embedder)
    assert clf.meta["training"]["config"]["seed"] == 1
    assert clf.meta["training"]["data_files"]["edit_questions"]["lines"] == len(PEOPLE) * len(RELATIONS)
    pairs = clf.meta["training"]["pairs"]
    assert 100 <= sum(p["pairs"] for p in pairs.values()) <= 3000
    probs = clf.predict_proba(["Who is the employer of Ada Lovelace?"], ["Ada Lovelace is employed by IBM"])
    assert probs.shape == (1,) and 0.0 <= probs[0] <= 1.0
    assert set(metrics["test"]) == {"overall", "negatives", "positives"}
    assert metrics["test"]["overall"]["auc"] is not None
    saved = json.loads((out / "scope-metrics.json").read_text())
    assert saved["threshold"] == pytest.approx(clf.threshold)


def test_tiny_evaluation_reproduces_the_test_split(tiny_run) -> None:
    from memedit.scope_train import evaluate_scope_classifier

    data, out, metrics = tiny_run
    rep = evaluate_scope_classifier(out, data, split="test", cache_dir=None, progress=False)
    assert rep["pairs"]["positives"] >= metrics["test"]["overall"]["n_pos"]  # + the evaluation-only probes
    assert rep["overall"]["n"] == metrics["test"]["overall"]["n"]
    assert rep["overall"]["auc"] == pytest.approx(metrics["test"]["overall"]["auc"], abs=1e-6)


def test_cli_train_and_eval(tiny_run, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from memedit.scope_cli import app

    data, out, _ = tiny_run
    runner = CliRunner()
    for command in ("train", "eval"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "--json" in result.output
    result = runner.invoke(app, ["eval", "--model", str(out), "--data-dir", str(data), "--json", "--no-cache"])
    assert result.exit_code == 0, result.output
    rep = json.loads(result.stdout)
    assert rep["split"] == "test" and "overall" in rep
    result = runner.invoke(app, ["eval", "--model", str(out), "--data-dir", str(tmp_path), "--no-cache"])
    assert result.exit_code == 1 and "not found" in result.output


def test_missing_data_file_is_a_clear_error(tmp_path: Path) -> None:
    from memedit.scope_train import train_scope_classifier

    with pytest.raises(MemeditError, match="edit questions file not found"):
        train_scope_classifier(tmp_path, tmp_path / "out", cache_dir=None, progress=False)
