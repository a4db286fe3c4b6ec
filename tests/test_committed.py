"""Edits committed into the weights through the Editor: choosing them, the "weights" route, and undo.

A tiny randomly initialised Llama with the word-level tokenizer of
test_weight_methods (real ROME, real SQLite store and ledger, real FAISS, the
real packaged embedder and scope classifier). Routing is checked with
``prepare``, which needs no generation.
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from test_commit import ROME, TINY_GATES
from test_weight_methods import build_tokenizer, make_model, tiny_stats
from typer.testing import CliRunner

from memedit import Edit, EditStore, Editor
from memedit.cli import app
from memedit.committed import commit_candidates
from memedit.errors import UnsupportedOperationError, ValidationError

torch.set_num_threads(1)
Q_ALICE = "What is the mother tongue of Alice Smith?"
Q_BOB = "Which sport does Bob Jones play?"


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def stats(tok, tmp_path_factory):
    return tiny_stats(make_model("llama", len(tok)), tok, [1], tmp_path_factory.mktemp("stats"))


@pytest.fixture
def store(tmp_path, embedder):
    s = EditStore(tmp_path / "s.db", embedder=embedder)
    yield s
    s.close()


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _equal(model, saved) -> bool:
    return all(torch.equal(p, saved[n]) for n, p in model.named_parameters())


def _two_facts(store):
    a = store.add(Edit.fact("Alice Smith", "The mother tongue of {} is", "German", target_true="French"))
    b = store.add(Edit.fact("Bob Jones", "{} plays the sport", "tennis", target_true="football"))
    return a, b


def test_candidates_are_active_uncommitted_fact_edits_used_enough(store):
    a, b = _two_facts(store)
    text = store.add(Edit.text("The office closes at 6 pm on Fridays."))
    pending = store.add(Edit.fact("Carol King", "{} was born in", "Oslo"), status="pending")
    for _ in range(3):
        store.record_use([a.id, text.id, pending.id])
    store.record_use([b.id])
    assert [e.id for e in commit_candidates(store, "default", min_uses=2)] == [a.id]
    assert [e.id for e in commit_candidates(store, "default", min_uses=1)] == [a.id, b.id]  # most used first
    assert commit_candidates(store, "default", min_uses=4) == []
    # chat corrections (meta origin "chat") need a reviewer's approval before they may reach the weights
    unreviewed = store.add(replace(Edit.fact("Dan Brown", "{} plays the sport", "golf"), meta={"origin": "chat"}))
    reviewed = store.add(replace(Edit.fact("Eve Stone", "{} plays the sport", "chess"), meta={"origin": "chat"}),
                         status="pending")
    store.approve(reviewed.id)
    for _ in range(3):
        store.record_use([unreviewed.id, reviewed.id])
    ids = [e.id for e in commit_candidates(store, "default", min_uses=3)]
    assert reviewed.id in ids and unreviewed.id not in ids
    with pytest.raises(ValidationError):
        commit_candidates(store, "default", min_uses=-1)


def test_no_commits_means_no_model_load(store):
    a, _ = _two_facts(store)
    store.record_use([a.id])
    ed = Editor(model="smollm2-135m-instruct", store=store, policy="ike")
    assert ed.prepare(Q_ALICE).route == "ike"
    assert ed.commit(min_uses=1, dry_run=True).candidates == [a.id]
    assert not ed.base.loaded, "routing and a dry run must not load the model while the store has no commits"


def test_committed_edits_answer_from_the_weights_and_forget_undoes_them(store, tok, stats):
    a, b = _two_facts(store)
    store.record_use([a.id])
    store.record_use([a.id])
    model = make_model("llama", len(tok))
    base = _params(model)
    ed = Editor(model=(model, tok), store=store, gates=TINY_GATES)
    assert ed.prepare(Q_ALICE).route == "ike"

    report = ed.commit(min_uses=2, method="rome", hparams=ROME, stats=stats[1])
    assert report.ok, report.refused
    assert report.committed_edits == [a.id] and store.get(a.id).committed and not store.get(b.id).committed
    assert not _equal(model, base)
    prepared = ed.prepare(Q_ALICE)
    assert prepared.route == "weights" and prepared.edit_ids == [a.id]
    assert prepared.messages == [{"role": "user", "content": Q_ALICE}], "the weights route sends the bare question"
    assert ed.prepare(Q_BOB).route == "ike", "an uncommitted edit still answers through the prompt"
    edited = _params(model)

    # Another Editor on the same store loads its (fresh, unedited) model as base + ledger.
    model2 = make_model("llama", len(tok))
    ed2 = Editor(model=(model2, tok), store=store, gates=TINY_GATES)
    assert ed2.prepare(Q_ALICE).route == "weights"
    assert _equal(model2, edited)

    ed2.forget(a.id)
    assert _equal(model2, base), "forgetting a committed edit restores the base weights bit for bit"
    assert ed.prepare(Q_ALICE).route == "base"  # the first editor catches up before its next answer
    assert _equal(model, base)


def test_a_remote_base_model_cannot_take_commits(store):
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    a, _ = _two_facts(store)
    ed = Editor(model=FakeListChatModel(responses=["ok"]), store=store)
    with pytest.raises(UnsupportedOperationError, match="not a local transformers model"):
        ed.commit([a.id], method="rome")
    assert not store.get(a.id).committed


def test_cli_commit_dry_run_ledger_list_and_bad_ids(tmp_path, embedder):
    path = tmp_path / "cli.db"
    with EditStore(path, embedder=embedder) as s:
        a, _ = _two_facts(s)
        s.record_use([a.id])
    runner = CliRunner()
    out = runner.invoke(app, ["commit", "--store", str(path), "--min-uses", "1", "--dry-run", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["candidates"] == [a.id]
    out = runner.invoke(app, ["ledger", "list", "--store", str(path), "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout) == []
    out = runner.invoke(app, ["commit", "--store", str(path), "--ids", "x,y", "--json"])
    assert out.exit_code == 2 and "comma-separated" in json.loads(out.stdout)["error"]
    out = runner.invoke(app, ["commit", "--store", str(path), "--method", "nope", "--json"])
    assert out.exit_code == 2
    with EditStore(path, embedder=embedder) as s:
        assert not s.get(a.id).committed


def test_a_committed_answer_that_misses_the_edit_falls_back_to_the_memory(store, tok, stats):
    """The weights route is taken only when the committed model answers with the edit (issue 19).

    The tiny random model has the edit in its weights (the cloze gates pass) but
    its chat answer does not contain "German": the router answers through the
    memory (IKE) and the trace says why.
    """
    a, _ = _two_facts(store)
    ed = Editor(model=(make_model("llama", len(tok)), tok), store=store, gates=TINY_GATES, policy="ike")
    assert ed.commit([a.id], method="rome", hparams=ROME, stats=stats[1]).ok
    assert ed.prepare(Q_ALICE).route == "weights"
    answer = ed.ask(Q_ALICE)
    check = next(s for s in answer.trace if s["step"] == "weights-check")
    assert not check["ok"] and "german" not in check["weights_answer"].casefold()
    assert check["expected"] == ["German"] and check["fallback"] == "ike"
    assert answer.route == "ike", "a weights answer that misses the edit is replaced by the memory route's"
    assert any(s["step"] == "ike-demonstrations" for s in answer.trace)
    assert store.get(a.id).usage_count == 1


def test_eval_runs_the_commit_then_ask_path(store, tok, stats):
    """``evaluate(commit=...)`` writes each case's edit before asking (issue 19): the committed edit is tried on
    the weights route, answers from the memory where the committed answer misses it, and locality is judged
    against the unedited model's answers, taken before any commit."""
    from memedit.eval import evaluate
    from memedit.eval.datasets import EvalCase, Probe

    model = make_model("llama", len(tok))
    base = _params(model)
    ed = Editor(model=(model, tok), store=store, gates=TINY_GATES, policy="ike")
    unedited = {q: ed.base.chat([{"role": "user", "content": q}], ed.router.max_new_tokens)
                for q in ("Which sport does Bob Jones play?", "What is the mother tongue of Carol King?")}
    cases = [
        EvalCase("a", "counterfact", Edit.fact("Alice Smith", "The mother tongue of {} is", "German",
                                               target_true="French"),
                 (Probe("reliability", Q_ALICE, ("German",)), Probe("locality", Q_BOB, ("football",)))),
        EvalCase("c", "counterfact", Edit.fact("Carol King", "{} plays the sport", "tennis", target_true="golf"),
                 (Probe("reliability", "Which sport does Carol King play?", ("tennis",)),
                  Probe("locality", "What is the mother tongue of Carol King?", ("French",)))),
    ]
    calls: list[list[int]] = []

    def commit(editor, ids):
        calls.append(list(ids))
        return editor.commit(ids, method="rome", hparams=ROME, stats=stats[1])

    report = evaluate(ed, cases, mode="single", commit=commit)
    assert len(calls) == 2 and all(len(c) == 1 for c in calls), "single mode: one commit per case, in sequence"
    tally = report.config["commits"]
    assert tally["edits"] == 2 and tally["committed"] + tally["refused"] == 2 and tally["committed"] >= 1
    assert not _equal(model, base), "the commits were written into the weights"
    in_scope = [r for r in report.results if r.kind == "reliability"]
    # every committed edit was tried on the weights route; the trace's check sent misses back to the memory
    assert {r.route for r in in_scope} <= {"weights", "ike"} and all(r.own_edit_used for r in in_scope)
    for r in report.results:
        if r.kind == "locality":
            assert r.base_answer == unedited[r.question], "judged against the unedited model"
