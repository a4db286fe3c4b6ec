"""The chat gates on the packaged SmolLM2-135M-Instruct (run with --runslow; about 4 minutes on one core).

Issue 19: ROME commits that passed the cloze gates left the chatbot misspelling
the subject ("Danielle Darrieks") or answering the question without the new
target. Each such commit must now be refused with the gate that caught it, the
weights must stay as they were, and the edit must keep answering through the
memory.
"""
from __future__ import annotations

import pytest
import torch

from memedit import Edit, EditStore, Editor
from memedit.methods.rome import RomeHParams

pytestmark = pytest.mark.slow
STATS_TOKENS = 30_000


@pytest.fixture(scope="module")
def editor(tmp_path_factory, embedder):
    store = EditStore(tmp_path_factory.mktemp("chat-gates") / "s.db", embedder=embedder)
    ed = Editor(model="smollm2-135m-instruct", store=store, policy="ike")
    yield ed
    ed.close()


def _refused(ed: Editor, edit: Edit) -> tuple[dict, int]:
    added = ed.store.add(edit)
    model = ed.weights.ledger.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # the cloze-only edit (chat_forms=0) of before issue 19: the commits it writes are the bad ones the gates must
    # catch (with the default chat forms, the Darrieux edit keeps the name and commits)
    hp = RomeHParams.for_model(model, preset="sequential", stats_tokens=STATS_TOKENS, chat_forms=0)
    report = ed.commit([added.id], method="rome", hparams=hp)
    assert not report.ok and report.commit_ids == [], report.to_dict()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters()), "a refused commit changes nothing"
    assert not ed.store.get(added.id).committed
    return report.refused[0], added.id


def _gate(refusal: dict, name: str) -> dict:
    return next(g for g in refusal["gates"] if g["name"] == name)


def test_a_commit_that_mangles_the_subject_is_refused_and_the_edit_answers_from_memory(editor):
    edit = Edit.fact("Danielle Darrieux", "The mother tongue of {} is", "English", target_true="French")
    refusal, edit_id = _refused(editor, edit)
    assert "subject_name" in refusal["failed"], refusal["failed"]
    assert "subject_name" in refusal["reason"] and "Danielle Darrieux" in refusal["reason"]
    lost = _gate(refusal, "subject_name")["detail"]["failed"]
    assert any("Danielle Darrieux" in row["before"] and "Danielle Darrieux" not in row["after"] for row in lost)
    # the cloze gates were satisfied: only asking as a user asks shows the damage
    assert all(_gate(refusal, g)["passed"] for g in ("efficacy", "perplexity", "neighborhood"))
    answer = editor.ask("What is the mother tongue of Danielle Darrieux?")
    assert answer.route == "ike" and edit_id in [u.edit.id for u in answer.used]


def test_a_commit_whose_chat_answer_misses_the_target_is_refused(editor):
    edit = Edit.fact("Logatec", "{} is located in the country of", "Canada")
    refusal, _ = _refused(editor, edit)
    assert "chat_efficacy" in refusal["failed"], refusal["failed"]
    row = _gate(refusal, "chat_efficacy")["detail"]["failed"][0]
    assert "Logatec" in row["question"] and "canada" not in row["answer"].casefold()
    assert _gate(refusal, "efficacy")["passed"], "the cloze prompt alone prefers the new target"
