"""Chat forms of a weight edit (issue 19): the edit's questions as the router sends them join ROME's rows.

A tiny random Llama and the word-level tokenizer of test_weight_methods, given
a small chat template: mechanics only (which rows and keys, that ROME and
MEMIT run with them and leave the model untouched). Whether chat forms help
is measured on SmolLM2 (docs/BENCHMARKS.md).
"""
from __future__ import annotations

import pytest
import torch
from test_weight_methods import FAST, build_tokenizer, make_model, tiny_stats

from memedit import Edit
from memedit.errors import ValidationError
from memedit.methods import memit, rome
from memedit.methods.memit import MemitHParams
from memedit.methods.rome import RomeHParams, as_request
from memedit.methods.rome.keys import compute_keys
from memedit.methods.rome.prompts import with_chat_forms
from memedit.methods.rome.values import build_rows

torch.set_num_threads(1)
TEMPLATE = ("{% for m in messages %}[BOS] {{ m['role'] }} : {{ m['content'] }} [EOS] {% endfor %}"
            "{% if add_generation_prompt %}[BOS] assistant : {% endif %}")
EDIT = Edit.fact("Alice Smith", "The mother tongue of {} is", "German", target_true="French")


@pytest.fixture(scope="module")
def chat_tok():
    tok = build_tokenizer()
    tok.chat_template = TEMPLATE
    return tok


def test_chat_forms_render_the_questions_with_the_subject_in_place(chat_tok):
    req = with_chat_forms(chat_tok, as_request(EDIT), 2)
    assert len(req.forms) == 2
    for template, target in req.forms:
        assert template.startswith("[BOS] user : ") and template.endswith("[BOS] assistant : ")
        assert template.count("{}") == 1 and "?" in template
        assert target == EDIT.sentence(), "the default target restates the subject's name, then the new object"
    assert with_chat_forms(chat_tok, as_request(EDIT), 1, "object").forms[0][1] == "German"
    assert with_chat_forms(build_tokenizer(), as_request(EDIT), 2).forms == (), "no chat template: nothing to add"
    assert with_chat_forms(chat_tok, as_request(EDIT), 0).forms == ()
    with pytest.raises(ValidationError):
        RomeHParams(layer=1, chat_target="poem").validate()


def test_forms_add_rewrite_rows_and_key_rows(chat_tok):
    plain, chat = as_request(EDIT), with_chat_forms(chat_tok, as_request(EDIT), 2)
    contexts = ("", "The day began . ")
    rows = build_rows(chat_tok, [chat], contexts, ("{} is a",))
    assert [r.kind for r in rows].count("rewrite") == len(contexts) + 2
    model = make_model("llama", len(chat_tok))
    k_plain = compute_keys(model, chat_tok, [plain], 1, contexts)
    k_chat = compute_keys(model, chat_tok, [chat], 1, contexts)
    assert not torch.allclose(k_plain, k_chat), "the key is averaged over the chat forms too"


def test_rome_and_memit_run_with_chat_forms_and_leave_the_model_alone(chat_tok, tmp_path):
    model = make_model("llama", len(chat_tok))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = tiny_stats(model, chat_tok, [1, 2], tmp_path)
    res = rome.apply(model, chat_tok, EDIT, RomeHParams(layer=1, chat_forms=2, **FAST), stats=stats[1])
    assert res.deltas and res.deltas[0].is_finite() and res.stats["hparams"]["chat_forms"] == 2
    hp = MemitHParams.for_model(model, layers=(1, 2), chat_forms=1, **{k: v for k, v in FAST.items() if k != "measure"})
    res = memit.apply(model, chat_tok, [EDIT], hp, stats=stats)
    assert all(d.is_finite() for d in res.deltas)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_protected_keys_keep_their_outputs_while_the_edit_key_gets_its_value():
    from memedit.methods.rome.update import rank_one_update

    torch.manual_seed(0)
    W, k, v = torch.randn(5, 8), torch.randn(8), torch.randn(5)
    protected = torch.randn(2, 8)
    A = torch.randn(8, 8)
    stats = type("Stats", (), {"solve": lambda self, x, damping=None: torch.linalg.solve(
        (A @ A.T + torch.eye(8)).double(), x.double())})()
    u, c = rank_one_update(W, k, v, stats, protected=protected)
    new = W.double() + u @ c.T
    assert torch.allclose(new @ k.double(), v.double(), atol=1e-8)
    assert torch.allclose(new @ protected.double().T, W.double() @ protected.double().T, atol=1e-8)
    u0, c0 = rank_one_update(W, k, v, stats)
    assert not torch.allclose(u0 @ c0.T @ protected.double().T, torch.zeros(5, 2, dtype=torch.float64), atol=1e-6)


def test_rome_can_protect_the_subjects_earlier_tokens(chat_tok, tmp_path):
    from memedit.methods.hooks import get_parameter
    from memedit.methods.rome.keys import subject_prefix_keys

    model = make_model("llama", len(chat_tok))
    req = with_chat_forms(chat_tok, as_request(EDIT), 1)
    prefix = subject_prefix_keys(model, chat_tok, req, 1)
    assert prefix.shape[0] == 1, "'Alice Smith' is two words: one earlier token"
    assert subject_prefix_keys(model, chat_tok, as_request(Edit.fact("Paris", "{} is in", "Spain")), 1) is None
    stats = tiny_stats(model, chat_tok, [1], tmp_path)
    res = rome.apply(model, chat_tok, req, RomeHParams(layer=1, protect_subject=True, **FAST), stats=stats[1])
    d = res.deltas[0]
    W = get_parameter(model, d.param)
    delta = (d.U.double() @ d.V.double().T).reshape(W.shape)
    # Llama's down projection is (hidden, intermediate) and reads the key: the earlier token's output stays put
    assert delta.shape[1] == prefix.shape[1]
    assert (delta @ prefix[0].double()).abs().max() < 1e-6 * delta.abs().max() * prefix[0].abs().sum()
    assert delta.abs().max() > 0
