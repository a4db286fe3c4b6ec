"""Honest tests of the weight editors on the packaged SmolLM2-135M-Instruct (run with --runslow).

A ROME edit and a MEMIT batch must change what the model *says* (greedy
decoding) on the edit prompt and on a paraphrase, while a prompt about a
neighbouring subject keeps its answer; and the model object is untouched
until the caller applies the deltas.
"""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow

STATS_TOKENS = 30_000


@pytest.fixture(scope="module")
def smol():
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    from memedit.models.registry import load_causal_lm

    return load_causal_lm("smollm2-135m-instruct", reuse=False)


def says(model, tok, prompt: str, target: str) -> bool:
    from memedit.methods.rome.measure import greedy_continuations

    out = greedy_continuations(model, tok, [prompt], max_new_tokens=4)[0]
    return out.strip().lower().startswith(target.lower())


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_rome_changes_what_smollm2_says(smol):
    from memedit.edits import Edit
    from memedit.methods import rome
    from memedit.methods.deltas import apply_deltas, restore, snapshot
    from memedit.methods.rome import RomeHParams

    model, tok = smol
    edit = Edit.fact("Danielle Darrieux", "The mother tongue of {} is", "English", target_true="French")
    neighbour = "The mother tongue of Blaise Pascal is"
    paraphrase = "Danielle Darrieux's mother tongue is"
    assert says(model, tok, neighbour, "French")
    before = weights(model)
    res = rome.apply(model, tok, edit, RomeHParams.for_model(model, stats_tokens=STATS_TOKENS))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert res.stats["logprob_new_after"] > res.stats["logprob_true_after"]
    saved = snapshot(model, [d.param for d in res.deltas])
    apply_deltas(model, res.deltas)
    try:
        assert says(model, tok, edit.filled_prompt(), "English")
        assert says(model, tok, paraphrase, "English")
        assert says(model, tok, neighbour, "French")
    finally:
        restore(model, saved)


def test_memit_batch_changes_what_smollm2_says(smol):
    from memedit.methods import memit
    from memedit.methods.deltas import apply_deltas, restore, snapshot
    from memedit.methods.memit import MemitHParams

    model, tok = smol
    edits = [
        {"prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
         "target_new": "English", "ground_truth": "French", "para": "Danielle Darrieux's mother tongue is"},
        {"prompt": "Kyoto University is located in the country of", "subject": "Kyoto University",
         "target_new": "Brazil", "ground_truth": "Japan", "para": "Kyoto University can be found in the country of"},
        {"prompt": "Windows XP, a product manufactured by", "subject": "Windows XP", "target_new": "Apple",
         "ground_truth": "Microsoft", "para": "Windows XP is a product made by"},
        {"prompt": "Darmstadt is located in the country of", "subject": "Darmstadt", "target_new": "Italy",
         "ground_truth": "Germany", "para": "Darmstadt is a city in the country of"},
        {"prompt": "The official language of Lugano is", "subject": "Lugano", "target_new": "Swedish",
         "ground_truth": "Italian", "para": "In Lugano, the official language is"},
    ]
    # Neighbours share the relation and the true object with an edited fact. (A neighbour sharing the
    # subject's *last token*, "Tokyo University" next to the edited "Kyoto University", does flip to
    # the new object: locate-then-edit methods key on that token - a known limit, see issue 4 notes.)
    neighbours = [("The mother tongue of Blaise Pascal is", "French"), ("Osaka is located in the country of", "Japan"),
                  ("Frankfurt is located in the country of", "Germany"),
                  ("Windows Vista, a product manufactured by", "Microsoft"),
                  ("The official language of Milan is", "Italian")]
    for prompt, answer in neighbours:
        assert says(model, tok, prompt, answer)
    before = weights(model)
    res = memit.apply(model, tok, edits, MemitHParams.for_model(model, stats_tokens=STATS_TOKENS))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert len(res.deltas) == len(res.layers) and all(d.rank == len(edits) for d in res.deltas)
    saved = snapshot(model, [d.param for d in res.deltas])
    apply_deltas(model, res.deltas)
    try:
        said = [says(model, tok, e["prompt"], e["target_new"]) for e in edits]
        para = [says(model, tok, e["para"], e["target_new"]) for e in edits]
        kept = [says(model, tok, p, a) for p, a in neighbours]
        assert sum(said) >= 4, said
        assert sum(para) >= 4, para
        assert all(kept), kept
    finally:
        restore(model, saved)


def test_memit_and_emmet_batches_work_on_gemma():
    """Gemma-3 normalises the MLP output: MEMIT/EMMET must reach the residual through that norm.

    The first version mapped the wanted change by dividing by the norm's gains (near zero in places) and wrote
    almost nothing useful: on the first 30 CounterFact records ES was 16.7 (MEMIT) / 46.7 (EMMET).
    """
    from memedit.eval.weights import load_counterfact, score_records
    from memedit.methods import emmet, memit
    from memedit.methods.deltas import apply_deltas, restore, snapshot
    from memedit.methods.emmet import EmmetHParams
    from memedit.methods.memit import MemitHParams
    from memedit.models.registry import KNOWN_MODELS, load_causal_lm
    from memedit.scope_train import default_data_dir

    if not KNOWN_MODELS["gemma3-270m"].installed():
        pytest.fail(f"gemma not installed (bash scripts/setup.sh test installs it): "
                    f"{KNOWN_MODELS['gemma3-270m'].pip_command}", pytrace=False)
    data = default_data_dir() / "counterfact" / "counterfact-dev.jsonl"
    if not data.is_file():
        pytest.skip(f"no CounterFact data at {data}")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    model, tok = load_causal_lm("gemma3-270m", reuse=False)
    recs = load_counterfact(data, n=8)
    before = score_records(model, tok, recs, generate=False)
    assert sum(r["efficacy"] for r in before) <= 3  # the unedited model mostly prefers the true object
    hp = dict(stats_tokens=STATS_TOKENS)
    for mod, params in ((memit, MemitHParams.for_model(model, **hp)), (emmet, EmmetHParams.for_model(model, **hp))):
        res = mod.apply(model, tok, recs, params)
        saved = snapshot(model, [d.param for d in res.deltas])
        apply_deltas(model, res.deltas)
        try:
            after = score_records(model, tok, recs, generate=False)
        finally:
            restore(model, saved)
        name = mod.__name__
        assert sum(r["efficacy"] for r in after) >= 7, (name, after)
        assert sum(r["paraphrase"] for r in after) >= 5, (name, after)
        kept = sum(r["neighborhood"] for r in after)
        assert kept >= sum(r["neighborhood"] for r in before) - 1, (name, before, after)
