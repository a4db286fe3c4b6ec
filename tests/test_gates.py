"""Safety gates: the cached path (measurements of unchanged weights reused) gives the uncached verdicts exactly.

Real gates on a tiny randomly initialised Llama with the word-level tokenizer of
test_weight_methods; the deltas are real ROME updates.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_weight_methods import FAST, SENTENCES, build_tokenizer, make_model, tiny_stats

from memedit import Edit
from memedit.gates import GateCache, GateConfig, run_gates, weights_digests
from memedit.methods import rome
from memedit.methods.deltas import LowRankDelta, apply_deltas
from memedit.methods.rome import RomeHParams

torch.set_num_threads(1)
GATES = GateConfig(min_efficacy=1.0, max_perplexity_ratio=1.5, min_neighborhood_kept=0.5, max_relative_norm=2.0,
                   heldout_texts=SENTENCES[:8], probes=[s.rsplit(" ", 2)[0] for s in SENTENCES])
EDITS = [
    replace(Edit.fact("Alice Smith", "The mother tongue of {} is", "German", target_true="French"), id=1),
    replace(Edit.fact("Bob Jones", "{} plays the sport", "tennis"), id=2),  # no target_true: old answer is greedy
]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def deltas(tok, tmp_path_factory):
    """Real ROME deltas for EDITS, computed one after the other as a ledger would."""
    model = make_model("llama", len(tok))
    stats = tiny_stats(model, tok, [1], tmp_path_factory.mktemp("stats"))[1]
    hp = RomeHParams(layer=1, **FAST)
    out = []
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    for e in EDITS:
        res = rome.apply(model, tok, e, hp, stats=stats)
        apply_deltas(model, res.deltas)
        out.append(res.deltas)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(saved[n])
    return out


def _verdicts(results):
    return [g.to_dict() for g in results]


def test_cached_gates_give_the_uncached_verdicts_commit_after_commit(tok, deltas):
    cached_model, plain_model = make_model("llama", len(tok)), make_model("llama", len(tok))
    cache = GateCache()
    asked_chat = []
    for edit, ds in zip(EDITS, deltas):
        plain = run_gates(plain_model, tok, [edit], ds, GATES, cache=None)
        first = run_gates(cached_model, tok, [edit], ds, GATES, cache=cache)
        again = run_gates(cached_model, tok, [edit], ds, GATES, cache=cache)  # everything "before" is cached now
        assert _verdicts(first) == _verdicts(plain) == _verdicts(again)
        names = [g.name for g in plain]
        assert names[:5] == ["finite", "norm", "efficacy", "perplexity", "neighborhood"]
        # the chat gates are asked only of a commit every cloze gate let through
        chat = ["chat_efficacy", "chat_paraphrase", "chat_reverse", "subject_name", "chat_unrelated"]
        assert names[5:] == (chat if all(g.passed for g in plain[:5]) else [])
        asked_chat.append(bool(names[5:]))
        apply_deltas(cached_model, ds)  # the commit lands, as the ledger does it
        apply_deltas(plain_model, ds)
    # miss on the base weights only: the second commit's "before" is the first commit's "after"
    assert (cache.misses, cache.hits) == (1, 3)
    assert any(asked_chat), "the chat gates must have been compared cached and uncached at least once"


def test_cache_notices_any_change_of_the_weights(tok, deltas):
    model = make_model("llama", len(tok))
    cache = GateCache()
    run_gates(model, tok, EDITS[:1], deltas[0], GATES, cache=cache)
    with torch.no_grad():  # through .data: no autograd version bump, so only the bytes can tell
        model.model.layers[3].mlp.up_proj.weight.data[0, 0] += 1e-3
    changed = run_gates(model, tok, EDITS[:1], deltas[0], GATES, cache=cache)
    assert (cache.misses, cache.hits) == (2, 0)
    assert _verdicts(changed) == _verdicts(run_gates(model, tok, EDITS[:1], deltas[0], GATES, cache=None))
    other = GateConfig(**{**GATES.__dict__, "probes": ["The capital of Spain is"]})
    run_gates(model, tok, EDITS[:1], deltas[0], other, cache=cache)  # other probes: other measurements
    assert cache.misses == 3


def test_failing_gates_and_digests(tok, deltas):
    model = make_model("llama", len(tok))
    before = weights_digests(model)
    # a rank-one delta big enough to wreck the model fails the perplexity gate, cached or not
    p = model.model.layers[1].mlp.down_proj.weight
    big = [LowRankDelta("model.layers.1.mlp.down_proj.weight", torch.ones(p.shape[0]) * 0.5, torch.ones(p.shape[1]))]
    loose = GateConfig(**{**GATES.__dict__, "max_relative_norm": 100.0})
    cache = GateCache()
    runs = [run_gates(model, tok, EDITS[:1], big, loose, cache=c) for c in (None, cache, cache)]
    assert _verdicts(runs[0]) == _verdicts(runs[1]) == _verdicts(runs[2])
    assert not all(g.passed for g in runs[0])
    assert weights_digests(model) == before, "the gates must leave the weights bit-identical"
