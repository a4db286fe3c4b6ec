"""The commit ledger: gated, persisted, reversible weight commits, bit-identical on revert and forget.

Mechanics on a tiny randomly initialised Llama with the word-level tokenizer
of test_weight_methods (real ROME/MEMIT, real SQLite store, real FAISS index,
real packaged embedder).
"""
from __future__ import annotations

import pytest
import torch
from test_weight_methods import FAST, SENTENCES, build_tokenizer, make_model, tiny_stats

from memedit import Edit, EditStore
from memedit.commit import CommitLedger, weights_hash
from memedit.errors import ConflictError, StoreError, ValidationError
from memedit.gates import GateConfig
from memedit.methods.memit import MemitHParams
from memedit.methods.rome import RomeHParams

torch.set_num_threads(1)
#: gates measured on in-vocabulary text; thresholds as a product would set them for a real model
TINY_GATES = GateConfig(chat=False, min_efficacy=1.0, max_perplexity_ratio=1.5, min_neighborhood_kept=0.5,
                        max_relative_norm=2.0, heldout_texts=SENTENCES[:8], probes=[s.rsplit(" ", 2)[0] for s in SENTENCES])


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def stats(tok, tmp_path_factory):
    return tiny_stats(make_model("llama", len(tok)), tok, [1, 2], tmp_path_factory.mktemp("stats"))


@pytest.fixture
def setup(tmp_path, embedder, tok):
    store = EditStore(tmp_path / "s.db", embedder=embedder)
    model = make_model("llama", len(tok))
    edits = [
        store.add(Edit.fact("Alice Smith", "The mother tongue of {} is", "German", target_true="French")),
        store.add(Edit.fact("Bob Jones", "{} plays the sport", "tennis", target_true="football")),
    ]
    yield store, model, edits
    store.close()


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _equal(model, saved) -> bool:
    return all(torch.equal(p, saved[n]) for n, p in model.named_parameters())


ROME = RomeHParams(layer=1, **FAST)


def test_rome_commits_revert_and_forget_are_bit_identical(setup, tok, stats):
    store, model, (a, b) = setup
    base = _params(model)
    ledger = CommitLedger(store, model, tok, model_name="tiny-llama", gates=TINY_GATES)
    report = ledger.commit([a, b], method="rome", hparams=ROME, stats=stats[1])
    assert report.ok, report.refused
    assert len(report.commit_ids) == 2 and store.get(a.id).committed and store.get(b.id).committed
    assert not _equal(model, base)
    assert ledger.model_state_matches_ledger()
    c1, c2 = report.commit_ids

    # Reference: a fresh base model with only commit 2's stored deltas applied.
    reference = make_model("llama", len(tok))
    from memedit.methods.deltas import apply_deltas

    apply_deltas(reference, ledger._load_deltas(ledger._row(c2)))
    only_second = _params(reference)

    ledger.revert(c1)
    assert _equal(model, only_second), "revert must equal never having applied the commit"
    assert not store.get(a.id).committed and [e.kind for e in store.history(a.id)][-1] == "revert"
    ledger.redo(c1)
    assert ledger.model_state_matches_ledger() and store.get(a.id).committed

    # Forgetting through the store (no model involved) drops commit 1 and erases its file...
    delta_file = store.ledger_dir / ledger._row(c1)["file"]
    assert delta_file.exists()
    result = store.forget(a.id)
    assert result["commits_dropped"] == [c1] and not delta_file.exists()
    # ...and the live ledger catches up: weights == base + commit 2, bit for bit.
    assert ledger.sync()
    assert _equal(model, only_second)
    ledger.revert(c2)
    assert _equal(model, base)
    assert store.verify().ok


def test_a_failed_gate_leaves_weights_untouched(setup, tok, stats):
    store, model, (a, _) = setup
    base = _params(model)
    strict = GateConfig(max_relative_norm=1e-9, heldout_texts=SENTENCES[:4], probes=["The capital of France is"])
    ledger = CommitLedger(store, model, tok, model_name="tiny-llama", gates=strict)
    report = ledger.commit([a], method="rome", hparams=ROME, stats=stats[1])
    assert not report.ok and report.refused[0]["failed"] == ["norm"]
    assert report.refused[0]["reason"].startswith("norm ") and "needs <= 1e-09" in report.refused[0]["reason"]
    assert report.commit_ids == [] and ledger.commits() == []
    assert _equal(model, base) and not store.get(a.id).committed
    assert list(store.ledger_dir.glob("*.safetensors")) == []


def test_memit_batch_persists_and_replays_on_a_fresh_model(setup, tok, stats, tmp_path, embedder):
    store, model, edits = setup
    ledger = CommitLedger(store, model, tok, model_name="tiny-llama", gates=TINY_GATES)
    # Enough optimisation steps that every edit of the batch really flips (the efficacy gate demands it).
    hp = MemitHParams(layers=(1, 2), clamp_norm_factor=4.0, weight_decay=1e-3, mom2_update_weight=100.0,
                      **{**FAST, "max_steps": 100, "stop_prob": 0.99})
    # On this random 4-layer model MEMIT flips one of the two facts, not both: the strict gate says so...
    refused = ledger.commit(edits, method="memit", hparams=hp, stats=stats)
    assert refused.refused and refused.refused[0]["failed"] == ["efficacy"] and ledger.commits() == []
    # ...and a gate set to what this toy model can do lets the batch land, to test persistence and replay.
    from dataclasses import replace

    report = ledger.commit(edits, method="memit", hparams=hp, stats=stats, gates=replace(TINY_GATES, min_efficacy=0.5))
    assert report.ok, report.refused
    edited = _params(model)
    # A saved edited model is base + ledger: a fresh base model attached to the same store replays it exactly.
    fresh = make_model("llama", len(tok))
    again = CommitLedger(store, fresh, tok, model_name="tiny-llama")
    assert _equal(fresh, edited) and again.model_state_matches_ledger()
    # Forgetting one edit of the batch drops the whole batch commit; the other edit goes back to uncommitted.
    store.forget(edits[0].id)
    again.sync()
    assert _equal(fresh, _params(make_model("llama", len(tok))))
    assert not store.get(edits[1].id).committed
    assert store.verify().ok


def test_ledger_refuses_other_base_weights_and_bad_requests(setup, tok, stats):
    store, model, (a, b) = setup
    ledger = CommitLedger(store, model, tok, model_name="tiny-llama", gates=TINY_GATES)
    ledger.commit([a], method="rome", hparams=ROME, stats=stats[1])
    with pytest.raises(StoreError, match="other base weights"):
        CommitLedger(store, make_model("llama", len(tok), seed=1), tok, model_name="tiny-llama")
    with pytest.raises(ConflictError):
        ledger.commit([a], method="rome", hparams=ROME, stats=stats[1])
    with pytest.raises(ValidationError):
        ledger.commit([b], method="nonsense")
    text = store.add(Edit.text("Free text cannot go into the weights."))
    with pytest.raises(ValidationError, match="active fact"):
        ledger.commit([text], method="rome")
    assert weights_hash(model) != ledger.base_hash  # the live model carries the commit


def test_damaged_delta_file_is_a_clear_error(setup, tok, stats):
    store, model, (a, _) = setup
    ledger = CommitLedger(store, model, tok, model_name="tiny-llama", gates=TINY_GATES)
    cid = ledger.commit([a], method="rome", hparams=ROME, stats=stats[1]).commit_ids[0]
    path = store.ledger_dir / ledger._row(cid)["file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged"):
        ledger.sync(force=True)


def test_rome_commits_use_the_sequential_preset_and_the_ledger_says_so(setup, tok, stats, tmp_path):
    """Commits pile up on one set of weights: without explicit hparams a ROME commit is made with the
    ``sequential`` preset, and its ledger row records the settings used (an explicit choice is kept)."""
    from dataclasses import asdict

    from memedit.commit import _run_method

    store, model, (a, _) = setup
    layer = RomeHParams.for_model(model).layer  # the tiny Llama's table layer
    saved = _params(model)
    res = _run_method("rome", model, tok, [a], None, tiny_stats(model, tok, [layer], tmp_path)[layer])
    assert _equal(model, saved)
    assert res.stats["hparams"] == asdict(RomeHParams.for_model(model, preset="sequential"))
    assert (res.stats["hparams"]["stop_rule"], res.stats["hparams"]["norm_constraint"]) == ("most_probable", 2.0)
    ledger = CommitLedger(store, model, tok, model_name="tiny-llama", gates=TINY_GATES)
    assert ledger.commit([a], method="rome", hparams=ROME, stats=stats[1]).ok
    row = ledger.commits()[-1]
    assert row["stats"]["hparams"]["stop_rule"] == ROME.stop_rule == "prob" and row["stats"]["hparams"]["layer"] == 1


def test_a_bfloat16_model_commits_and_reverts_bit_exactly(setup, tok, stats):
    """Deltas are kept in float32 and added to a bfloat16 model with one rounding; replaying the ledger on the
    base weights gives the same bits as the live model, and reverting everything gives the base back exactly."""
    from memedit.methods.deltas import apply_deltas

    store, model, (a, b) = setup
    model = model.to(torch.bfloat16)
    base = _params(model)
    ledger = CommitLedger(store, model, tok, model_name="tiny-llama-bf16", gates=TINY_GATES)
    report = ledger.commit([a, b], method="rome", hparams=ROME, stats=stats[1])
    assert report.ok, report.refused
    c1, c2 = report.commit_ids
    assert all(p.dtype == torch.bfloat16 for p in model.parameters()) and not _equal(model, base)
    deltas = {c: ledger._load_deltas(ledger._row(c)) for c in (c1, c2)}
    assert all(d.U.dtype == d.V.dtype == torch.float32 for ds in deltas.values() for d in ds)

    replayed = make_model("llama", len(tok)).to(torch.bfloat16)   # the base, rebuilt, with the ledger replayed
    apply_deltas(replayed, deltas[c1])
    apply_deltas(replayed, deltas[c2])
    assert _equal(model, _params(replayed))

    only_second = make_model("llama", len(tok)).to(torch.bfloat16)
    apply_deltas(only_second, deltas[c2])
    ledger.revert(c1)
    assert _equal(model, _params(only_second)), "revert must equal never having applied the commit"
    ledger.revert(c2)
    assert _equal(model, base)
