"""`memedit eval weights` mechanics on a tiny random Llama (real ROME/MEMIT/EMMET, real statistics code).

The scores of a random model mean nothing; what is checked is that every scenario runs, the report has the
right shape, the weights come back bit-identical, and bad input is refused.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_weight_methods import FAST, SENTENCES, build_tokenizer, make_model

from memedit.errors import ValidationError
from memedit.eval.weights import SCENARIOS, evaluate_weight_edits, load_counterfact, plot, render

torch.set_num_threads(1)
RECORDS = [
    {"case_id": 1, "prompt": "The mother tongue of Alice Smith is", "subject": "Alice Smith", "target_new": "German",
     "ground_truth": "French", "rephrase_prompt": "Alice Smith speaks the language",
     "locality_prompt": "The capital of France is", "locality_ground_truth": "Paris"},
    {"case_id": 2, "prompt": "{} plays the sport", "subject": "Dan Brown", "target_new": "tennis",
     "ground_truth": "football", "rephrase_prompt": "Dan Brown plays the sport",
     "locality_prompt": "Eve Stone plays the sport", "locality_ground_truth": "tennis"},
]


def _write(path: Path, recs) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_every_scenario_runs_and_restores_the_weights(tmp_path):
    tok = build_tokenizer()
    model = make_model("llama", len(tok))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    recs = load_counterfact(_write(tmp_path / "cf.jsonl", RECORDS))
    assert recs[1]["prompt"] == "Dan Brown plays the sport"  # a "{}" template is filled with the subject
    hp = {k: v for k, v in FAST.items() if k != "measure"}
    report = evaluate_weight_edits(model, tok, recs, scenarios=SCENARIOS, rome_hparams=dict(hp, layer=1),
                                   batch_hparams=dict(hp, layers=(1, 2)), progress=False,
                                   # in-vocabulary text: the default corpus is prose the word-level tokenizer cannot read
                                   stats_options=dict(texts=SENTENCES * 8, n_tokens=1500, seq_len=24, progress=False))
    assert set(report["scenarios"]) == set(SCENARIOS)
    for name, r in report["scenarios"].items():
        assert set(r["scores"]) == {"efficacy", "paraphrase", "neighborhood", "gen_efficacy", "gen_paraphrase"}
        assert len(r["per_record"]) == 2 and all(0 <= v <= 100 for v in r["scores"].values())
        if name != "rome":
            assert "perplexity_change_pct" in r
    # MEMIT's target values serve EMMET too (equal value hyperparameters)
    assert report["scenarios"]["emmet"]["values_shared"] and not report["scenarios"]["memit"]["values_shared"]
    # the sequential scenario writes with the settings a ROME commit uses (the caller's overrides on top)
    seq = report["scenarios"]["rome-sequential"]["hparams"]
    assert (seq["stop_rule"], seq["norm_constraint"], seq["layer"], seq["lr"]) == ("most_probable", 2.0, 1, 0.5)
    # ROME alone on each record must make its edit win (the tiny model can learn two facts)
    assert report["scenarios"]["rome"]["scores"]["efficacy"] == 100.0
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters()), "weights must come back exactly"
    text = render(report)
    assert text.splitlines()[0].split()[:4] == ["scenario", "ES", "PS", "NS"] and "rome-sequential" in text
    plot(report, tmp_path / "w.png")
    assert (tmp_path / "w.png").stat().st_size > 1000
    json.dumps(report)


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="no such data file"):
        load_counterfact(tmp_path / "missing.jsonl")
    with pytest.raises(ValidationError, match="missing"):
        load_counterfact(_write(tmp_path / "bad.jsonl", [{"prompt": "x", "subject": "x"}]))
    tok = build_tokenizer()
    with pytest.raises(ValidationError, match="unknown scenario"):
        evaluate_weight_edits(make_model("llama", len(tok)), tok, RECORDS, scenarios=["nope"])
    with pytest.raises(ValidationError, match="no records"):
        evaluate_weight_edits(make_model("llama", len(tok)), tok, [], scenarios=["rome"])


def test_chat_scores_sit_beside_the_cloze_scores(tmp_path):
    """``chat=True`` asks every record's questions in chat form (tiny model: shape and bookkeeping only)."""
    tok = build_tokenizer()
    model = make_model("llama", len(tok))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    recs = load_counterfact(_write(tmp_path / "cf.jsonl", RECORDS))
    hp = {k: v for k, v in FAST.items() if k != "measure"}
    report = evaluate_weight_edits(model, tok, recs, scenarios=["rome", "memit"], rome_hparams=dict(hp, layer=1),
                                   batch_hparams=dict(hp, layers=(1, 2)), progress=False, chat=True,
                                   stats_options=dict(texts=SENTENCES * 8, n_tokens=1500, seq_len=24, progress=False))
    chat = {"chat_efficacy", "chat_paraphrase", "subject_kept"}
    assert chat <= set(report["unedited"]["scores"])
    assert report["unedited"]["scores"]["subject_kept"] == 100.0, "the unedited model keeps every name it writes"
    assert set(report["scenarios"]["rome"]["scores"]) == {"efficacy", "paraphrase", "neighborhood", "gen_efficacy",
                                                          "gen_paraphrase", *chat}
    memit = report["scenarios"]["memit"]["scores"]
    assert "chat_unrelated" in memit and (memit["chat_unrelated"] is None or 0 <= memit["chat_unrelated"] <= 100)
    row = report["scenarios"]["memit"]["per_record"][0]
    assert row["chat_answers"] and all(isinstance(a, str) for a in row["chat_answers"].values())
    assert any(q.endswith("?") and "Alice Smith" in q for q in row["chat_answers"])
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert render(report).splitlines()[0].split()[-4:] == ["chatES", "chatPS", "name", "unrel"]
    json.dumps(report)
