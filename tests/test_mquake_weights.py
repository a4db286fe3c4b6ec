"""MQuAKE's weight-editing baselines (ROME sequential, MEMIT batch) on a tiny random Llama: mechanics only.

A random model's answers mean nothing; what is checked is that the case's edits really reach the weights while
the questions are asked, that the weights come back bit for bit, that the report has the baselines' rows, and
that a backend without weights is refused.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from test_weight_methods import FAST, SENTENCES

from memedit.errors import ValidationError
from memedit.eval.mquake import MQuAKEEvaluator, load_mquake
from memedit.eval.mquake_weights import WeightBaseline
from memedit.methods.rome.measure import target_logprobs
from memedit.models.backends import LangChainLM, LocalLM
from memedit.models.registry import resolve_model

torch.set_num_threads(1)
HP = {k: v for k, v in FAST.items() if k != "measure"}
# MEMIT as tests/test_weight_methods.py runs it on the tiny model (a looser clamp, a small lambda)
MEMIT_HP = dict(HP, layers=(1, 2), mom2_update_weight=100.0, clamp_norm_factor=4.0, weight_decay=1e-3)
OPTIONS = dict(stats_tokens=1500, stats_options=dict(texts=SENTENCES * 8, seq_len=24, progress=False))


def _record() -> dict:
    hop = lambda q, c, a: {"question": q, "cloze": c, "answer": a, "answer_alias": []}  # noqa: E731
    return {
        "case_id": 3,
        "requested_rewrite": [
            {"prompt": "{} speaks the language", "relation_id": "P1412", "subject": "Bob Jones",
             "target_new": {"str": "French", "id": "Q1"}, "target_true": {"str": "German", "id": "Q2"},
             "question": "Bob Jones speaks the language"},
            {"prompt": "{} plays the sport", "relation_id": "P641", "subject": "Dan Brown",
             "target_new": {"str": "tennis", "id": "Q3"}, "target_true": {"str": "football", "id": "Q4"},
             "question": "Dan Brown plays the sport"}],
        "questions": ["What city of Bob Jones ?"] * 3,
        "answer": "Berlin", "answer_alias": [], "new_answer": "Paris", "new_answer_alias": [],
        "single_hops": [hop("q1", "Bob Jones speaks the language", "German"),
                        hop("q2", "The capital of Germany is", "Berlin")],
        "new_single_hops": [hop("q3", "Bob Jones speaks the language", "French"),
                            hop("q4", "The capital of France is", "Paris")],
        "orig": {"triples": [["Q5", "P1412", "Q2"], ["Q2", "P36", "Q6"]],
                 "triples_labeled": [["Bob Jones", "language", "German"], ["Germany", "capital", "Berlin"]],
                 "new_triples": [["Q5", "P1412", "Q1"], ["Q1", "P36", "Q7"]],
                 "new_triples_labeled": [["Bob Jones", "language", "French"], ["France", "capital", "Paris"]],
                 "edit_triples": [["Q5", "P1412", "Q1"], ["Q8", "P641", "Q3"]]},
    }


@pytest.fixture(scope="module")
def backend() -> LocalLM:
    """A tiny random Llama with the packaged SmolLM2's tokenizer (MeLLo's known-facts check needs a real one)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                         initializer_range=0.15, pad_token_id=tok.pad_token_id,
                                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id))
    return LocalLM(model.eval(), tok, max_new_tokens=4)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    path = Path(tmp_path_factory.mktemp("mq")) / "mq.jsonl"
    path.write_text(json.dumps(_record()) + "\n", encoding="utf-8")
    (c,) = load_mquake(path)
    return c


@pytest.mark.parametrize("method", ["rome", "memit"])
def test_edits_reach_the_weights_only_inside_the_block(backend: LocalLM, case, method: str) -> None:
    model, tok = backend.model, backend.tokenizer
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    hp = dict(HP, layer=1) if method == "rome" else MEMIT_HP
    base = WeightBaseline(backend, method, hparams=hp, **OPTIONS)
    prompts = [e.prompt.replace("{}", e.subject) for e in case.edits]
    targets = [e.target_new for e in case.edits]
    before = target_logprobs(model, tok, prompts, targets)
    with base.applied(case.edits) as info:
        during = target_logprobs(model, tok, prompts, targets)
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, saved[k])]
    assert info["edits"] == 2 and info["seconds"] > 0
    assert changed and all(k in base.names for k in changed)
    # both edits took (unedited, the log-probabilities would be exactly equal; MEMIT's clamped residual moves a
    # random tiny model less than ROME does)
    assert all(d > b + 0.2 for d, b in zip(during, before)), (before, during)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items()), "weights must come back exactly"
    with pytest.raises(ValidationError, match="no edits"):
        with base.applied([]):
            pass


def test_the_evaluation_reports_the_weight_baselines(backend: LocalLM, case) -> None:
    saved = {k: v.clone() for k, v in backend.model.state_dict().items()}
    ev = MQuAKEEvaluator(backend, methods=("base", "rome", "memit"), weight_options=dict(OPTIONS))
    ev._weights = {"rome": WeightBaseline(backend, "rome", hparams=dict(HP, layer=1), **OPTIONS),
                   "memit": WeightBaseline(backend, "memit", hparams=MEMIT_HP, **OPTIONS)}
    rep = ev.evaluate([case], mode="single")
    (res,) = rep["results"]
    for m in ("rome", "memit"):
        assert len(res["answers"][m]) == 3 and len(res["edit_wise"][m]) == 2
        assert rep["summary"]["all"][m]["n"] == 1 and rep["summary"]["all"][m]["n_edits"] == 2
    assert all(torch.equal(v, saved[k]) for k, v in backend.model.state_dict().items())
    # batch mode is MeLLo's alone (the weight baselines edit one case at a time)
    assert ev.evaluate([case], mode="batch")["methods"] == []
    # a random model knows none of the case's single hops: the known subset skips the case and counts it
    assert res["known"] is False
    known_only = ev.evaluate([case], mode="single", subset="known")
    assert known_only["cases"] == 0 and known_only["outside_subset"] == 1 and not known_only["stopped_early"]
    with pytest.raises(ValidationError, match="subset must be one of"):
        ev.evaluate([case], subset="famous")


def test_a_backend_without_weights_is_refused() -> None:
    with pytest.raises(ValidationError, match="local transformers model"):
        WeightBaseline(LangChainLM(FakeListChatModel(responses=["x"])), "rome")
    with pytest.raises(ValidationError, match="must be one of"):
        WeightBaseline(LangChainLM(FakeListChatModel(responses=["x"])), "ft")
