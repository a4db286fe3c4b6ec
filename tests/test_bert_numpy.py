"""The NumPy BERT encoder gives sentence-transformers' vectors, and declines the layouts it does not reproduce.

Real parts: the packaged MiniLM (its own files, through both backends) on texts from ``../shared/data`` when it is
there and a built-in set otherwise; copies of the model directory with one file changed for the layouts to decline.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from memedit.bert_numpy import NumpySentenceEncoder, _gelu
from memedit.embeddings import Embedder, packaged_embedder_path
from memedit.errors import ModelNotAvailableError
from memedit.scope_train import default_data_dir

EDGE_CASES = ["", "   padded   ", "x", "?", "Ünïcödé façade — 東京 is where? 🚀", "1999 or 2000",
              "Where does Carl Sagan work? " * 80]  # longer than the model's 256 tokens: truncated alike
BUILTIN = ["The CEO of Acme is Jane Roe.", "Who runs Acme?", "What is the capital of Australia?",
           "Lionel Messi plays for Inter Miami", "How many legs does a spider have?", "The author of Paradiso is"]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    path = default_data_dir() / "zsre" / "zsre-dev.jsonl"
    rows = []
    if path.exists():
        with open(path, encoding="utf-8") as fh:
            rows = [json.loads(line) for _, line in zip(range(150), fh)]
    return BUILTIN + [t for r in rows for t in (r["prompt"], r["rephrase_prompt"])] + EDGE_CASES


@pytest.fixture(scope="module")
def st_embedder() -> Embedder:
    return Embedder.shared(backend="sentence-transformers")


def test_the_packaged_embedder_runs_on_numpy_by_default(embedder) -> None:
    assert embedder.backend == "numpy" and embedder.dim == 384


def test_vectors_match_sentence_transformers(embedder, st_embedder, texts) -> None:
    ours, theirs = embedder.encode(texts), st_embedder.encode(texts)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    diff = np.abs(ours - theirs).max()
    assert diff < 2e-6, f"largest component difference {diff}"
    assert float((ours * theirs).sum(1).min()) > 1 - 1e-6
    # one text at a time (the router's path) gives the batch's vectors too
    for i in (0, 1, len(texts) - 1, len(texts) - 7):
        assert np.abs(embedder.encode([texts[i]])[0] - theirs[i]).max() < 2e-6, texts[i]


def test_search_rankings_are_those_of_sentence_transformers(embedder, st_embedder, texts) -> None:
    half = len(texts) // 2
    rank = lambda v: np.argsort(-(v[:half] @ v[half:].T), axis=1, kind="stable")[:, :5]  # noqa: E731
    ours, theirs = rank(embedder.encode(texts)), rank(st_embedder.encode(texts))
    # only a tie closer than float noise could reorder a pair; none exists among real texts, so all rows agree
    assert (ours == theirs).all(1).mean() == 1.0


def test_gelu_is_the_exact_erf_form() -> None:
    xs = np.linspace(-8, 8, 4001, dtype=np.float32)
    want = np.array([0.5 * x * (1 + math.erf(x / math.sqrt(2))) for x in xs.astype(float)])
    got = _gelu(xs.copy())
    assert got.dtype == np.float32 and np.abs(got - want).max() < 1e-6
    assert np.abs(want - 0.5 * xs * (1 + np.tanh(0.7978845608 * (xs + 0.044715 * xs ** 3)))).max() > 1e-4  # not tanh


def _copy_model(tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(packaged_embedder_path(), dst)
    return dst


@pytest.mark.parametrize("file,change", [
    ("1_Pooling/config.json", {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}),
    ("config.json", {"hidden_act": "gelu_new"}),
    ("config.json", {"position_embedding_type": "relative_key"}),
    ("config.json", {"model_type": "roberta"}),
    ("sentence_bert_config.json", {"do_lower_case": True}),
    ("config_sentence_transformers.json", {"prompts": {"query": "query: "}, "default_prompt_name": "query"}),
])
def test_layouts_it_does_not_reproduce_are_declined(tmp_path, file, change) -> None:
    root = _copy_model(tmp_path)
    path = root / file
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    assert NumpySentenceEncoder.load(root) is None
    with pytest.raises(ModelNotAvailableError, match="numpy backend"):
        Embedder(str(root), backend="numpy")


def test_weights_under_other_names_are_declined(tmp_path) -> None:
    from safetensors.numpy import load_file, save_file

    root = _copy_model(tmp_path)
    weights = load_file(str(root / "model.safetensors"))
    weights["embeddings.LayerNorm.gamma"] = weights.pop("embeddings.LayerNorm.weight")  # an older checkpoint's name
    save_file(weights, str(root / "model.safetensors"))
    assert NumpySentenceEncoder.load(root) is None


def test_a_declined_layout_falls_back_to_sentence_transformers(tmp_path, embedder) -> None:
    root = _copy_model(tmp_path)
    (root / "modules.json").write_text(json.dumps(json.loads((root / "modules.json").read_text())[:2]))  # no Normalize
    emb = Embedder(str(root))
    assert emb.backend == "sentence-transformers"
    # encode normalises whatever the model returns, so this is still the packaged model's vector
    assert np.abs(emb.encode(["Who runs Acme?"]) - embedder.encode(["Who runs Acme?"])).max() < 2e-6


def test_bad_backend_and_device_choices(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown embedder backend"):
        Embedder(backend="onnx")
    with pytest.raises(ModelNotAvailableError, match="numpy backend"):
        Embedder(device="meta", backend="numpy")  # NumPy runs on the CPU only


def test_the_environment_chooses_the_backend(monkeypatch) -> None:
    monkeypatch.setenv("MEMEDIT_EMBEDDER_BACKEND", "sentence-transformers")
    assert Embedder.shared().backend == "sentence-transformers"
    assert Embedder.shared(backend="numpy").backend == "numpy"  # an explicit choice wins
    monkeypatch.setenv("MEMEDIT_EMBEDDER_BACKEND", "gpu-please")
    with pytest.raises(ValueError, match="MEMEDIT_EMBEDDER_BACKEND"):
        Embedder()
