"""Weight editors (ROME, MEMIT, EMMET), statistics, hooks, causal tracing and the arch table.

Mechanics run on tiny randomly initialised models of each supported family
(llama, gemma3 text, gpt2, qwen2; 4 layers, hidden 64) with a word-level
tokenizer built in memory: no files, no network, a few seconds each.
The honest tests on the packaged SmolLM2 are in test_weight_methods_slow.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from memedit.errors import MemeditError, ValidationError
from memedit.methods import emmet, memit, rome
from memedit.methods.deltas import LowRankDelta, apply_deltas, temporarily_applied
from memedit.methods.hooks import StopForward, Trace, TraceDict, get_module
from memedit.methods.memit import MemitHParams, memit_solve
from memedit.methods.emmet import EmmetHParams, emmet_solve
from memedit.methods.rome import RomeHParams
from memedit.methods.rome.batch import CachedBatch
from memedit.methods.rome.keys import compute_keys
from memedit.methods.rome.prompts import as_request, kl_row, rewrite_row, target_ids
from memedit.methods.stats import (
    SecondMoment, StatsMismatchError, compute_second_moments, layer_fingerprints, second_moment, second_moments,
)
from memedit.models.arch import UnknownArchitectureError, arch_for, arch_for_type, supported_types

torch.set_num_threads(1)

FAMILIES = ("llama", "gemma3_text", "gpt2", "qwen2")

SENTENCES = [
    "The capital of France is Paris .",
    "The capital of Italy is Rome .",
    "The capital of Spain is Madrid .",
    "Alice Smith speaks the language French .",
    "Bob Jones speaks the language German .",
    "The mother tongue of Alice Smith is French .",
    "The mother tongue of Bob Jones is German .",
    "Carol Wu works in the city of Berlin .",
    "Dan Brown plays the sport football .",
    "Eve Stone plays the sport tennis .",
    "The Eiffel Tower is located in the city of Paris .",
    "Toyota is a company from Japan .",
    "Honda is a company from Japan .",
    "Apple is a company from California .",
    "In the morning the weather was cold and the river was quiet .",
    "A long time ago people lived in small villages near the sea .",
]
EXTRA = "Where people speak language of Tokyo English Spanish Lyon Manila city twin what ? it , a an and or".split()


def build_tokenizer():
    """A word-level tokenizer over the test sentences (fast, with offsets)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    for s in SENTENCES:
        for w in s.split():
            if w not in words:
                words.append(w)
    for w in EXTRA:
        if w not in words:
            words.append(w)
    vocab = {w: i for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]",
                                   bos_token="[BOS]")


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def make_model(family: str, vocab: int, seed: int = 0):
    from transformers import (
        Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
        Qwen2Config, Qwen2ForCausalLM,
    )

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, bos_token_id=2, eos_token_id=3, pad_token_id=0, initializer_range=0.15)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                             num_attention_heads=4, num_key_value_heads=2, **common))
    elif family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                             num_attention_heads=4, num_key_value_heads=2, **common))
    elif family == "gemma3_text":
        model = Gemma3ForCausalLM(Gemma3TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                                   num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                                   sliding_window=8, **common))
    elif family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=4, n_head=4, n_positions=128, **common))
    else:  # pragma: no cover
        raise ValueError(family)
    return model.eval()


@pytest.fixture(scope="module")
def models(tok):
    return {f: make_model(f, len(tok)) for f in FAMILIES}


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_identical(model, saved):
    now = model.state_dict()
    assert saved.keys() == now.keys()
    for k, v in saved.items():
        assert torch.equal(v, now[k]), f"{k} changed"


@pytest.fixture(scope="module")
def stats_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("stats-cache")


def tiny_stats(model, tok, layers, cache_dir):
    return second_moments(model, tok, layers, texts=SENTENCES * 8, n_tokens=1500, seq_len=24, cache_dir=cache_dir,
                          progress=False)


FACT = {"prompt": "The mother tongue of Alice Smith is", "subject": "Alice Smith", "target_new": "German",
        "ground_truth": "French"}
FACTS = [
    FACT,
    {"prompt": "Bob Jones plays the sport", "subject": "Bob Jones", "target_new": "tennis"},
    {"prompt": "Toyota is a company from", "subject": "Toyota", "target_new": "California"},
]
FAST = dict(n_prefixes=2, prefix_tokens=4, max_steps=25, lr=0.5, stop_prob=0.95, measure=True)


# --------------------------------------------------------------------------- arch table


@pytest.mark.parametrize("family", FAMILIES)
def test_arch_table_paths_resolve(models, family):
    model = models[family]
    arch = arch_for(model)
    assert arch.model_type == family
    n = arch.n_layers(model.config)
    assert n == 4 and arch.hidden_size(model.config) == 64
    params = dict(model.named_parameters())
    for layer in (0, n - 1):
        for place in ("layer", "mlp", "mlp_down", "attn"):
            get_module(model, arch.path(place, layer))
        assert arch.weight_name(layer) in params
        w = arch.weight(model, layer)
        inner = w.shape[0] if arch.weight_transposed else w.shape[1]
        assert w.shape[1 if arch.weight_transposed else 0] == 64 and inner > 64
        if arch.mlp_post_norm:
            get_module(model, arch.path("mlp_post_norm", layer))
    for place in ("embed", "final_norm", "lm_head"):
        get_module(model, arch.path(place))
    d = arch.default_layers(model.config)
    assert 0 <= d["rome"] < n and all(0 <= x < n for x in d["memit"])
    assert arch.weight_transposed == (family == "gpt2")


def test_arch_unknown_type_is_a_clear_error():
    with pytest.raises(UnknownArchitectureError) as exc:
        arch_for_type("mamba")
    msg = str(exc.value)
    assert "llama" in msg and "gpt2" in msg and "register_arch" in msg
    assert isinstance(exc.value, MemeditError)
    assert set(FAMILIES) <= set(supported_types())


def test_arch_selected_by_model_type_not_name(models):
    model = models["llama"]
    model.config.name_or_path = "gpt2-looking-name"
    assert arch_for(model).model_type == "llama"


# --------------------------------------------------------------------------- hooks


def test_trace_retains_and_edits(models):
    model = models["llama"]
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad(), Trace(model, "model.layers.1.mlp.down_proj", retain_input=True) as t:
        base = model(input_ids=ids).logits
    assert t.input.shape == (1, 3, 128) and t.output.shape == (1, 3, 64)
    with torch.no_grad(), Trace(model, "model.layers.1", edit_output=lambda o, n: o * 0):
        edited = model(input_ids=ids).logits
    assert not torch.allclose(base, edited)


def test_hooks_removed_even_on_exceptions(models):
    model = models["llama"]

    def count():
        return sum(len(m._forward_hooks) for m in model.modules())

    before = count()
    with pytest.raises(RuntimeError):
        with TraceDict(model, ["model.layers.0", "model.layers.1.mlp"]):
            assert count() == before + 2
            raise RuntimeError("boom")
    assert count() == before
    with pytest.raises(ValidationError):
        TraceDict(model, ["model.layers.0", "no.such.module"])
    assert count() == before
    # stop=True ends the forward early; the StopForward never escapes
    with torch.no_grad(), TraceDict(model, ["model.layers.0", "model.layers.1"], stop=True) as td:
        model(input_ids=torch.tensor([[5, 6]]))
        pytest.fail("the forward pass should have stopped")  # pragma: no cover
    assert td["model.layers.1"].output is not None
    assert count() == before
    assert issubclass(StopForward, Exception)


# --------------------------------------------------------------------------- deltas


def test_apply_deltas_and_revert(models):
    model = models["gpt2"]
    saved = state(model)
    name = arch_for(model).weight_name(2)
    d = LowRankDelta(name, U=torch.randn(256, 2), V=torch.randn(64, 2))
    assert d.dense().shape == dict(model.named_parameters())[name].shape
    apply_deltas(model, [d])
    assert not torch.equal(model.get_parameter(name), saved[name])
    apply_deltas(model, [d], sign=-1)
    assert torch.allclose(model.get_parameter(name), saved[name], atol=1e-5)
    apply_deltas(model, [d], sign=-1)  # leave exact state for other tests
    with torch.no_grad():
        model.get_parameter(name).copy_(saved[name])
    bad = LowRankDelta(name, U=torch.full((256, 1), float("nan")), V=torch.ones(64, 1))
    with pytest.raises(ValidationError):
        apply_deltas(model, [bad])
    with pytest.raises(ValidationError):
        apply_deltas(model, [LowRankDelta(name, U=torch.ones(3, 1), V=torch.ones(64, 1))])
    assert_identical(model, saved)
    with temporarily_applied(model, [d]):
        assert not torch.equal(model.get_parameter(name), saved[name])
    assert_identical(model, saved)
    assert d.norm() == pytest.approx(float(d.dense().norm()), rel=1e-4)


# --------------------------------------------------------------------------- statistics


def test_stats_cache_hit_miss_and_no_pickle(models, tok, tmp_path, monkeypatch):
    model = models["llama"]
    calls = []
    real = compute_second_moments

    def counting(*args, **kwargs):
        calls.append(kwargs.get("n_tokens"))
        return real(*args, **kwargs)

    import memedit.methods.stats as stats_mod

    monkeypatch.setattr(stats_mod, "compute_second_moments", counting)
    kw = dict(texts=SENTENCES * 8, n_tokens=800, seq_len=24, cache_dir=tmp_path, progress=False)
    a = second_moments(model, tok, [1, 2], **kw)
    assert len(calls) == 1 and sorted(a) == [1, 2]
    assert a[1].mom2.shape == (128, 128) and a[1].n_samples > 0
    assert torch.allclose(a[1].mom2, a[1].mom2.T, atol=1e-5)
    b = second_moments(model, tok, [1, 2], **kw)  # hit
    assert len(calls) == 1 and torch.equal(a[2].mom2, b[2].mom2)
    second_moments(model, tok, [1], **{**kw, "n_tokens": 600})  # other sample size: miss
    assert len(calls) == 2
    second_moments(model, tok, [1], **{**kw, "texts": SENTENCES[:5] * 8})  # other text: miss
    assert len(calls) == 3
    files = sorted(tmp_path.joinpath("stats").glob("*.safetensors"))
    assert len(files) == 4
    for f in files:  # safetensors: 8-byte header length then a JSON header; never a pickle
        raw = f.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        assert header["__metadata__"]["format"] == "memedit-mom2-v1"
        assert not raw.startswith(b"\x80") and b"PK\x03\x04" not in raw[:4]
    # no pickle anywhere in the weight-editing code
    root = Path(stats_mod.__file__).parent
    for src in [*root.glob("rome/*.py"), *(root / n for n in ("stats.py", "memit.py", "emmet.py", "trace.py",
                                                             "hooks.py", "deltas.py", "weights_cli.py"))]:
        text = src.read_text()
        assert "import pickle" not in text and "torch.load(" not in text, src


def test_stats_from_another_model_are_refused(models, tok, tmp_path):
    llama, qwen = models["llama"], models["qwen2"]
    sm = second_moment(llama, tok, 1, texts=SENTENCES * 4, n_tokens=400, seq_len=24, cache_dir=tmp_path,
                       progress=False)
    path = sm.save(tmp_path / "l1.safetensors")
    assert SecondMoment.load(path, model=llama).n_samples == sm.n_samples
    with pytest.raises(StatsMismatchError):
        SecondMoment.load(path, model=qwen)  # same shapes, other weights
    with pytest.raises(StatsMismatchError):
        SecondMoment.load(path, layer=2)
    gpt2_stats = SecondMoment(layer=1, mom2=torch.eye(256), n_samples=1)
    saved = state(llama)
    with pytest.raises(StatsMismatchError):
        rome.apply(llama, tok, FACT, RomeHParams(layer=1, **FAST), stats=gpt2_stats)
    assert_identical(llama, saved)


def test_fingerprint_ignores_the_edited_matrix_only(models):
    model = models["llama"]
    fp = layer_fingerprints(model, [1, 2])
    name = arch_for(model).weight_name(1)
    with temporarily_applied(model, [LowRankDelta(name, torch.ones(64), torch.ones(128))]):
        fp2 = layer_fingerprints(model, [1, 2])
    assert fp2[1] == fp[1]  # a ROME edit at layer 1 keeps layer 1's statistics valid
    assert fp2[2] != fp[2]  # but it changes the keys of layer 2


# --------------------------------------------------------------------------- prompts / batching


def test_requests_and_bad_input(tok):
    r = as_request(FACT)
    assert r.template == "The mother tongue of {} is" and r.target_true == "French"
    from memedit.edits import Edit

    e = Edit.fact("Alice Smith", "The mother tongue of {} is", "German", target_true="French")
    assert as_request(e).prompt() == "The mother tongue of Alice Smith is"
    with pytest.raises(ValidationError, match="does not occur"):
        as_request({"prompt": "The capital of France is", "subject": "Spain", "target_new": "Rome"})
    with pytest.raises(ValidationError):
        as_request(Edit.text("Alice speaks German now."))

    class Empty:
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": []}

    with pytest.raises(ValidationError, match="tokenises to nothing"):
        target_ids(Empty(), "The capital is", "???")


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_batch_matches_full_forward(models, tok, family):
    model = models[family]
    arch = arch_for(model)
    reqs = [as_request(f) for f in FACTS]
    rows = [rewrite_row(tok, i, ctx, r) for i, r in enumerate(reqs) for ctx in ("", "Toyota is a company . ")]
    rows += [kl_row(tok, i, "{} is a", r) for i, r in enumerate(reqs)]
    for use_cache in (True, False):
        batch = CachedBatch(model, arch, rows, pad_id=tok.pad_token_id, use_cache=use_cache)
        assert batch.use_cache == use_cache and batch.subject_col == (0 if use_cache else batch.P)
        with torch.no_grad():
            logits, scored = batch.logits()
            sub, _ = batch.logits([1, 4, 6])
        for j, (i, c, _) in enumerate(scored):
            r = rows[i]
            seq = torch.tensor([r.prefix + r.suffix])
            with torch.no_grad():
                ref = model(input_ids=seq).logits[0, len(r.prefix) + c]
            assert torch.allclose(logits[j], ref, atol=1e-4), (family, use_cache, i, c)
        assert sub.shape[0] == sum(len(rows[i].targets) for i in (1, 4, 6))


def test_keys_one_pass_average(models, tok):
    model = models["llama"]
    req = as_request(FACT)
    contexts = ("", "Toyota is a company . ")
    k = compute_keys(model, tok, [req, as_request(FACTS[1])], 1, contexts)
    assert k.shape == (2, 128)
    name = arch_for(model).path("mlp_down", 1)
    single = []
    for ctx in contexts:
        text = ctx + req.prompt()
        ids = tok(text)["input_ids"]
        last = ids.index(tok.convert_tokens_to_ids("Smith"))
        with torch.no_grad(), Trace(model, name, retain_input=True) as t:
            model(input_ids=torch.tensor([ids]))
        single.append(t.input[0, last])
    assert torch.allclose(k[0], torch.stack(single).mean(0), atol=1e-5)


# --------------------------------------------------------------------------- ROME


@pytest.mark.parametrize("family", FAMILIES)
def test_rome_delta_shapes_identity_and_effect(models, tok, stats_cache, family):
    model = models[family]
    arch = arch_for(model)
    stats = tiny_stats(model, tok, [1], stats_cache)[1]
    saved = state(model)
    res = rome.apply(model, tok, FACT, RomeHParams(layer=1, **FAST), stats=stats)
    assert_identical(model, saved)  # pure: the model is left bit-identical
    assert res.method == "rome" and res.layers == [1] and len(res.deltas) == 1
    d = res.deltas[0]
    assert d.param == arch.weight_name(1) and d.rank == 1
    assert d.shape == tuple(model.get_parameter(d.param).shape)
    s = res.stats
    assert s["logprob_new_after"] > s["logprob_new_before"] + 0.4
    assert s["prob_train_after"] > 1.5 * s["prob_train_before"]
    assert {"keys", "values", "update", "total"} <= set(s["seconds"])
    # the caller applies it; the effect is the measured one; reverting restores within float tolerance
    from memedit.methods.rome.measure import target_logprobs

    apply_deltas(model, res.deltas)
    lp = target_logprobs(model, tok, [as_request(FACT).prompt()], ["German"])[0]
    assert lp == pytest.approx(s["logprob_new_after"], abs=1e-3)
    apply_deltas(model, res.deltas, sign=-1)
    for k, v in saved.items():
        assert torch.allclose(model.state_dict()[k], v, atol=1e-5)
    with torch.no_grad():
        model.get_parameter(d.param).copy_(saved[d.param])


def test_rome_rank_one_identity_holds(models, tok, stats_cache):
    """(W + Delta) k* = v*: the update stores exactly the optimised value for the averaged key."""
    from memedit.methods.rome.update import rank_one_update

    model = models["llama"]
    stats = tiny_stats(model, tok, [1], stats_cache)[1]
    W = arch_for(model).weight(model, 1).detach()
    k = torch.randn(128)
    v = torch.randn(64)
    u, c = rank_one_update(W, k, v, stats)
    assert torch.allclose((W.double() + u @ c.T) @ k.double(), v.double(), atol=1e-6)


def test_rome_norm_constraint_is_a_ridge_on_c(models, tok, stats_cache):
    """ENCORE's norm penalty in ROME's closed form: C + rho I; the new fact is still stored exactly."""
    from memedit.methods.rome.update import rank_one_update

    model = models["llama"]
    stats = tiny_stats(model, tok, [1], stats_cache)[1]
    W = arch_for(model).weight(model, 1).detach()
    torch.manual_seed(2)
    k, v = torch.randn(128), torch.randn(64)
    rho = 0.5
    direct = torch.linalg.solve(stats.regularised(damping=rho), k.double())
    assert torch.allclose(stats.solve(k, damping=rho), direct, rtol=1e-8, atol=1e-10)
    assert torch.allclose(stats.regularised(damping=rho) - stats.regularised(damping=0.0),
                          rho * stats.mom2.double().diagonal().mean() * torch.eye(128, dtype=torch.float64))
    plain = rank_one_update(W, k, v, stats)
    ridged = rank_one_update(W, k, v, stats, damping=rho)
    for u, c in (plain, ridged):
        assert torch.allclose((W.double() + u @ c.T) @ k.double(), v.double(), atol=1e-6)
    assert float((ridged[0] @ ridged[1].T).norm()) < float((plain[0] @ plain[1].T).norm())  # the penalty shrinks it
    # a huge ridge leaves only the key's own direction (ROME without C)
    u, c = rank_one_update(W, k, v, stats, damping=1e9)
    assert torch.allclose(c[:, 0] / c.norm(), k.double() / k.norm(), atol=1e-6)
    assert torch.equal(rank_one_update(W, k, v, stats, damping=None)[1], plain[1])


@pytest.mark.parametrize("family", ["gemma3_text", "llama"])
def test_rome_post_norm_rescale(models, tok, stats_cache, family):
    """With an RMSNorm after the MLP (Gemma), v* is scaled back to |W k*|: the normalised output the
    optimisation found is unchanged and the update is smaller. Families without that norm are unaffected."""
    model = models[family]
    arch = arch_for(model)
    stats = tiny_stats(model, tok, [1], stats_cache)[1]
    on = rome.apply(model, tok, FACT, RomeHParams(layer=1, **FAST), stats=stats)
    off = rome.apply(model, tok, FACT, RomeHParams(layer=1, **FAST, post_norm_rescale=False), stats=stats)
    if arch.mlp_post_norm is None:
        assert torch.equal(on.deltas[0].dense(), off.deltas[0].dense())
        return
    k = compute_keys(model, tok, [as_request(FACT)], 1, on.stats["contexts"])[0]
    W = arch.weight(model, 1).detach().float()
    v_on = (W + on.deltas[0].dense()) @ k
    v_off = (W + off.deltas[0].dense()) @ k
    assert float(v_on.norm()) == pytest.approx(float((W @ k).norm()), rel=1e-3)  # back to the unedited length
    assert float(v_off.norm()) > 1.2 * float(v_on.norm())  # the optimisation had inflated it
    norm = get_module(model, arch.path("mlp_post_norm", 1))
    with torch.no_grad():
        assert torch.allclose(norm(v_on[None]), norm(v_off[None]), atol=1e-3)  # the same normalised output
    assert on.deltas[0].norm() < off.deltas[0].norm()
    # the bare prompt's key is not the averaged one, so its effect differs a little, but the edit still works
    assert on.stats["logprob_new_after"] > on.stats["logprob_new_before"] + 0.4


def test_rome_most_probable_early_stopping(models, tok, stats_cache):
    """MPES stops once the target is the top token in every prompt, however low its probability still is."""
    model = models["llama"]
    stats = tiny_stats(model, tok, [1], stats_cache)[1]
    prompt = as_request(FACT).prompt()
    with torch.no_grad():
        top = int(model(torch.tensor([tok(prompt)["input_ids"]])).logits[0, -1].argmax())
    fact = {**FACT, "target_new": tok.decode([top]).strip()}  # what the model already says (bare prompt only)
    hp = dict(FAST, prefixes=())
    by_prob = rome.apply(model, tok, fact, RomeHParams(layer=1, **hp), stats=stats)
    mpes = rome.apply(model, tok, fact, RomeHParams(layer=1, **hp, stop_rule="most_probable"), stats=stats)
    assert mpes.stats["prob_train_before"] < FAST["stop_prob"]
    assert mpes.stats["steps"] == 0 and by_prob.stats["steps"] > 0
    with pytest.raises(ValidationError):
        RomeHParams(layer=1, stop_rule="sometime").validate()


def test_rome_presets(models):
    """``single`` is the family default; ``sequential`` (what commits use) changes only its three settings."""
    from memedit.methods.rome.hparams import ROME_PRESETS

    model = models["llama"]
    single = RomeHParams.for_model(model)
    seq = RomeHParams.for_model(model, preset="sequential")
    assert RomeHParams.for_model(model, preset="single") == single
    assert ((seq.stop_rule, seq.norm_constraint, seq.chat_forms) == ("most_probable", 2.0, 2)
            == tuple(ROME_PRESETS["sequential"].values()))
    assert seq.with_(stop_rule=single.stop_rule, norm_constraint=single.norm_constraint,
                     chat_forms=single.chat_forms) == single
    assert RomeHParams.for_model(model, preset="sequential", norm_constraint=0.5).norm_constraint == 0.5
    with pytest.raises(ValidationError, match="unknown ROME preset"):
        RomeHParams.for_model(model, preset="careful")


def test_rome_bad_input_leaves_weights(models, tok, stats_cache):
    model = models["llama"]
    saved = state(model)
    stats = tiny_stats(model, tok, [1], stats_cache)[1]
    with pytest.raises(ValidationError):
        rome.apply(model, tok, {"prompt": "The capital of France is", "subject": "Spain", "target_new": "Rome"},
                   RomeHParams(layer=1), stats=stats)
    with pytest.raises(ValidationError):
        rome.apply(model, tok, FACT, RomeHParams(layer=9), stats=stats)
    with pytest.raises(ValidationError):
        rome.apply(model, tok, FACT, RomeHParams(layer=1, lr=-1.0), stats=stats)
    assert_identical(model, saved)


# --------------------------------------------------------------------------- MEMIT / EMMET


def test_closed_forms():
    torch.manual_seed(0)
    K = torch.randn(4, 16, dtype=torch.float64)
    R = torch.randn(4, 8, dtype=torch.float64)
    A = torch.randn(16, 16, dtype=torch.float64)
    stats = SecondMoment(layer=0, mom2=(A @ A.T / 16 + torch.eye(16)).float(), n_samples=100, damping=0.0)
    U, V = emmet_solve(K, R, stats, EmmetHParams(layers=(0,), emmet_lambda=0.0))
    assert torch.allclose((U @ V.T) @ K.T, R.T, atol=1e-8)  # equality constraint
    U1, V1 = emmet_solve(K[:1], R[:1], stats, EmmetHParams(layers=(0,), emmet_lambda=0.0))
    from memedit.methods.rome.update import rank_one_update

    u, c = rank_one_update(torch.zeros(8, 16), K[0], R[0], stats)
    assert torch.allclose(U1 @ V1.T, u @ c.T, atol=1e-8)  # one edit: EMMET is ROME
    Um, Vm = memit_solve(K, R, stats, MemitHParams(layers=(0,), mom2_update_weight=1.0))
    fit = (Um @ Vm.T) @ K.T
    assert not torch.allclose(fit, R.T, atol=1e-3)  # least squares with lambda > 0: not exact
    Um0, Vm0 = memit_solve(K, R, stats, MemitHParams(layers=(0,), mom2_update_weight=0.0))
    assert torch.allclose((Um0 @ Vm0.T) @ K.T, R.T, atol=1e-6)


@pytest.mark.parametrize("family,method", [("llama", "memit"), ("gpt2", "memit"), ("gemma3_text", "emmet"),
                                            ("qwen2", "emmet")])
def test_batch_editors(models, tok, stats_cache, family, method):
    model = models[family]
    arch = arch_for(model)
    stats = tiny_stats(model, tok, [1, 2], stats_cache)
    saved = state(model)
    mod = memit if method == "memit" else emmet
    cls = MemitHParams if method == "memit" else EmmetHParams
    extra = {"mom2_update_weight": 100.0} if method == "memit" else {"emmet_lambda": 0.0}
    hp = cls(layers=(1, 2), clamp_norm_factor=4.0, weight_decay=1e-3, **FAST, **extra)
    res = mod.apply(model, tok, FACTS, hp, stats=stats)
    assert_identical(model, saved)
    assert res.method == method and res.layers == [1, 2]
    assert [d.param for d in res.deltas] == [arch.weight_name(1), arch.weight_name(2)]
    for d in res.deltas:
        assert d.shape == tuple(model.get_parameter(d.param).shape) and d.rank == len(FACTS)
    before = res.stats["logprob_new_before"]
    after = res.stats["logprob_new_after"]
    assert sum(a > b + 0.5 for a, b in zip(after, before)) >= 2, (before, after)
    if method == "emmet":  # the equality constraint holds at every layer
        assert max(x["fit_error"] for x in res.stats["layers"]) < 1e-3, res.stats["layers"]


def test_nearest_point_a_post_norm_mlp_can_reach():
    """MEMIT on post-norm families (Gemma): the normalised MLP output can only move over {g * n : |n|^2 = d}.

    The mapping must find the reachable output nearest the wanted one, also where gains are ~0 (Gemma-3-270m's
    post-MLP norms have gains from 0 to ~700; dividing by them, as the first version did, sent the
    down-projection target along the near-zero gains and MEMIT wrote almost nothing useful).
    """
    from memedit.methods.memit import nearest_on_gain_ellipsoid

    gen = torch.Generator().manual_seed(0)
    d = 32
    g = torch.rand(d, generator=gen, dtype=torch.float64) * 10
    g[:3] = torch.tensor([0.0, 1e-4, 1e-2], dtype=torch.float64)
    t = torch.randn(6, d, generator=gen, dtype=torch.float64) * 8
    n = nearest_on_gain_ellipsoid(g, t)
    assert torch.allclose((n ** 2).sum(-1), torch.full((6,), float(d), dtype=torch.float64), rtol=1e-6)
    best = (g * n - t).norm(dim=-1)
    rand = torch.randn(6, 4000, d, generator=gen, dtype=torch.float64)
    rand = rand / rand.norm(dim=-1, keepdim=True) * d ** 0.5
    assert (best[:, None] <= (g * rand - t[:, None]).norm(dim=-1) + 1e-9).all()  # no random point is nearer
    naive = t / g.clamp(min=1e-6)
    naive = naive / naive.norm(dim=-1, keepdim=True) * d ** 0.5
    assert (best < (g * naive - t).norm(dim=-1)).all()
    # with a reachable target the optimum is the target itself
    n0 = rand[:, 0]
    # (to 1e-5 of outputs ~10: the bisection stops within 1e-12 of the scale, seen at the 1e-4 gain)
    assert torch.allclose(g * nearest_on_gain_ellipsoid(g, g * n0), g * n0, atol=1e-5)


def test_through_post_norm_reaches_a_reachable_output(models, tok):
    """On the tiny Gemma with random norm gains: asking for another reachable normalised output gets it exactly."""
    from memedit.methods.memit import through_post_norm

    model = models["gemma3_text"]
    arch = arch_for(model)
    norm = get_module(model, arch.path("mlp_post_norm", 1))
    down = get_module(model, arch.path("mlp_down", 1))
    saved = norm.weight.detach().clone()
    try:
        with torch.no_grad():
            norm.weight.copy_(torch.randn(saved.shape, generator=torch.Generator().manual_seed(1)) * 2)
            K = torch.randn(3, down.weight.shape[1], generator=torch.Generator().manual_seed(2))
            m = K @ down.weight.T
            y = norm(m)
            y_wanted = norm(torch.randn(m.shape, generator=torch.Generator().manual_seed(3)))
            dm = through_post_norm(model, arch, 1, K, y_wanted - y)
            assert torch.allclose(norm(m + dm), y_wanted, atol=1e-3 * float(y_wanted.abs().max()))
            assert torch.allclose((m + dm).norm(dim=-1), m.norm(dim=-1), rtol=1e-4)  # keeps the output's length
            # an unreachable change: what is written is no farther from it than any of 2,000 random outputs
            R = torch.randn(y.shape, generator=torch.Generator().manual_seed(4)) * 3 * y.norm(dim=-1, keepdim=True)
            got = (norm(m + through_post_norm(model, arch, 1, K, R)) - (y + R)).norm(dim=-1)
            rand = norm(torch.randn(3, 2000, m.shape[-1], generator=torch.Generator().manual_seed(5)))
            assert (got[:, None] <= (rand - (y + R)[:, None]).norm(dim=-1) * (1 + 1e-4)).all()
    finally:
        with torch.no_grad():
            norm.weight.copy_(saved)


def test_shared_targets_give_the_same_updates(models, tok, stats_cache):
    """MEMIT and EMMET with equal value hyperparameters can share step 1; the deltas are the same as unshared."""
    model = models["llama"]
    stats = tiny_stats(model, tok, [1, 2], stats_cache)
    saved = state(model)
    hp_m = MemitHParams(layers=(1, 2), mom2_update_weight=100.0, **FAST)
    hp_e = EmmetHParams(layers=(1, 2), mom2_update_weight=100.0, emmet_lambda=0.0, **FAST)
    assert memit.same_values(hp_m, hp_e) and not memit.same_values(hp_m, hp_m.with_(lr=0.3))
    targets = memit.compute_targets(model, tok, FACTS, hp_m)
    assert targets.z.shape[0] == len(FACTS) and targets.layer == 2
    assert_identical(model, saved)
    for mod, hp in ((memit, hp_m), (emmet, hp_e)):
        plain = mod.apply(model, tok, FACTS, hp, stats=stats)
        shared = mod.apply(model, tok, FACTS, hp, stats=stats, targets=targets)
        for a, b in zip(plain.deltas, shared.deltas):
            assert torch.allclose(a.dense(), b.dense(), atol=1e-5)
        assert shared.stats["steps"] == plain.stats["steps"]
    with pytest.raises(ValidationError, match="targets are for"):
        memit.apply(model, tok, FACTS[:1], hp_m, stats=stats, targets=targets)
    assert_identical(model, saved)


def test_batch_editor_validation(models, tok, stats_cache):
    model = models["llama"]
    with pytest.raises(ValidationError):
        memit.apply(model, tok, [], MemitHParams(layers=(1, 2)))
    with pytest.raises(ValidationError):
        MemitHParams(layers=(2, 1)).validate()
    with pytest.raises(ValidationError):
        memit.apply(model, tok, FACTS, MemitHParams(layers=(1, 7)))


# --------------------------------------------------------------------------- causal tracing


def test_causal_trace_and_plot(models, tok, tmp_path):
    from memedit.methods.trace import average_layer_effects, causal_trace, plot_trace

    model = models["llama"]
    saved = state(model)
    r = causal_trace(model, tok, "The mother tongue of Alice Smith is", "Alice Smith", kind="hidden", samples=3,
                     batch_size=32)
    assert r.scores.shape == (len(r.tokens), 4)
    assert r.subject_range == (4, 6) and 0 <= r.low <= 1 and 0 <= r.high <= 1
    # restoring the whole residual stream at the last layer and last token gives back the clean prediction
    assert r.scores[-1, -1] == pytest.approx(r.high, abs=1e-5)
    assert all(r.scores[t, layer] == r.low for t in range(4) for layer in range(4))  # before the subject: skipped
    m = causal_trace(model, tok, "The mother tongue of Alice Smith is", "Alice Smith", kind="mlp", window=2,
                     samples=2, tokens="subject_last")
    assert len(average_layer_effects([r, m])) == 4
    png = plot_trace(r, tmp_path / "t.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_identical(model, saved)
    with pytest.raises(ValidationError):
        causal_trace(model, tok, "The capital of France is", "Spain")


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, models, tok):
    path = tmp_path_factory.mktemp("tiny-llama")
    models["llama"].save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_cli_stats_and_trace(tiny_dir, tmp_path):
    from typer.testing import CliRunner

    from memedit.methods.weights_cli import app

    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(SENTENCES * 6))
    runner = CliRunner()
    res = runner.invoke(app, ["stats", "--model", str(tiny_dir), "--layers", "1,2", "--tokens", "300", "--seq-len",
                              "16", "--text", str(text), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [x["layer"] for x in data["layers"]] == [1, 2] and data["layers"][0]["dim"] == 128
    png = tmp_path / "trace.png"
    res = runner.invoke(app, ["trace", "The mother tongue of Alice Smith is", "--subject", "Alice Smith",
                              "--model", str(tiny_dir), "--samples", "2", "--out", str(png), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["png"] == str(png) and png.is_file() and len(data["layer_effects_subject_last"]) == 4
    res = runner.invoke(app, ["trace", "The capital of France is", "--subject", "Spain", "--model", str(tiny_dir)])
    assert res.exit_code == 2 and "does not occur" in res.output
    res = runner.invoke(app, ["stats", "--model", str(tiny_dir), "--layers", "9", "--json"])
    assert res.exit_code == 2 and "outside" in json.loads(res.stdout)["error"]
