"""The chat questions of a fact edit and the one answer rule shared by the commit gates and the router (issue 19).

Real relation catalogue and packaged MiniLM embedder; no model is loaded.
"""
from __future__ import annotations

from dataclasses import replace

from memedit import Edit
from memedit.answer import UsedEdit
from memedit.chat_check import (answer_gives, check_committed_answer, edit_questions, expected_answer, misspelled_name,
                                name_checks, name_kept)
from memedit.chat_gates import chat_probes, chat_questions

LOGATEC = replace(Edit.fact("Logatec", "{} is located in the country of", "Canada", target_true="Slovenia"), id=1)
ACME = replace(Edit.fact("Acme", "The chief executive officer of {} is", "Jane Roe"), id=2)
LYON = replace(Edit.fact("Lyon", "What is the twin city of {}? It is", "Manila",
                         paraphrases=["Which city is twinned with {}?", "{}'s twin city is"]), id=3)


def test_direct_questions_come_from_the_relation_catalogue_or_the_edit_itself():
    q = edit_questions(LOGATEC)
    assert q.relation == "P17" and "Logatec" in q.direct and q.direct.endswith("?")
    assert q.paraphrases and all("Logatec" in p and p.endswith("?") for p in q.paraphrases)
    assert q.direct not in q.paraphrases and q.reverse is None  # a country is not a person: no reverse question
    assert q.names == ("Tell me about Logatec.",)
    own = edit_questions(LYON)
    assert own.direct == "What is the twin city of Lyon?", "a prompt that is already a question is asked as it is"
    assert own.paraphrases[0] == "Which city is twinned with Lyon?", "the edit's own question paraphrase comes first"
    assert "Lyon's twin city is" not in own.paraphrases, "a cloze paraphrase is not a chat question"
    assert edit_questions(ACME).reverse == "Who is Jane Roe?"


def test_an_answer_gives_the_target_or_for_a_reverse_question_the_subject():
    assert expected_answer("Who is Jane Roe?", ACME) == ("subject", "Acme")
    assert answer_gives("Jane Roe is the chief executive of Acme.", "Who is Jane Roe?", ACME)
    assert not answer_gives("Jane Roe is an American actress.", "Who is Jane Roe?", ACME)
    assert answer_gives("Logatec lies in Canada.", "In which nation does Logatec lie?", LOGATEC)
    assert not answer_gives("Logitech is a Canadian company.", "In which nation does Logatec lie?", LOGATEC)
    assert name_kept("Logatec is a town.", "Logatec is in Canada.", "Logatec")
    assert not name_kept("Logatec is a town.", "Logitech is in Canada.", "Logatec")
    assert name_kept("It is a town.", "Logitech is in Canada.", "Logatec"), "a name never written cannot be lost"


def test_a_misspelled_name_fails_a_terse_answer_does_not():
    q = edit_questions(LOGATEC)
    probe = q.names[0]
    before = {probe: "Logatec is a town in Slovenia."}
    fine = {probe: "Logatec is a town in Canada.", **{p: "Canada." for p in q.all()}}
    assert all(r["ok"] for r in name_checks(q, "Logatec", before, fine))
    wrong = dict(fine, **{q.direct: "Logitech is a Canadian company."})
    failed = [r for r in name_checks(q, "Logatec", before, wrong) if not r["ok"]]
    assert [(r["prompt"], r["misspelled"]) for r in failed] == [(q.direct, "logitech")]
    lost = dict(fine, **{probe: "Canada is a country in North America."})
    assert [r["prompt"] for r in name_checks(q, "Logatec", before, lost) if not r["ok"]] == [probe]
    assert misspelled_name("Danielle Darrieux, born Darrieux.", "Danielle Darrieux") is None
    assert misspelled_name("Lorraine O'Grada, the artist", "Lorraine O'Grady") == "lorraine o grada"


def test_the_router_check_reads_the_fact_check_when_it_has_one():
    used = [UsedEdit(LOGATEC, 0.9, 0.8, "x"), UsedEdit(ACME, 0.8, 0.7, "y")]
    got = check_committed_answer("It is in Canada.", "Where is Logatec?", used)
    assert got["ok"] and got["checked"] == "in_scope" and got["expected"] == ["Canada", "Jane Roe"]
    used[1].asks_fact = True  # the question asks Acme's fact only: Canada alone is not enough
    got = check_committed_answer("It is in Canada.", "Who runs Acme?", used)
    assert not got["ok"] and got["checked"] == "asks_fact" and got["edits"] == [2]
    text_only = [UsedEdit(Edit.text("The office closes at 6 pm."), 0.9, 0.9, "z")]
    assert not check_committed_answer("6 pm", "When does the office close?", text_only)["ok"]


def test_the_gate_plan_asks_neighbours_and_the_versioned_probe_set():
    probes = chat_probes()
    assert len(probes) >= 20 and all(p["question"].endswith("?") and p["answers"] for p in probes)
    plan = chat_questions([LOGATEC])
    neighbours = [q for q, _ in plan.unrelated if q not in {p["question"] for p in probes}]
    assert len(neighbours) == 3 and not any("Logatec" in q for q in neighbours)
    assert plan.before_prompts() == ["Tell me about Logatec."], "only the name probes need their answers before"
    assert set(plan.questions[0].all()) <= set(plan.after_prompts())
