"""MeLLo on the edit memory: the relation catalogue, decomposition, hop resolution, the router, MQuAKE scoring.

Real parts throughout: the packaged MiniLM embedder and relation catalogue, real SQLite/FAISS stores, the
packaged scope classifier, and SmolLM2 for the model hops. Where a test needs a model whose answers are
known in advance (the prompt loop, hops an edit does not cover), it uses langchain-core's
FakeListChatModel, a real chat model class that replies from a script.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from memedit.edits import Edit
from memedit.errors import ValidationError
from memedit.methods.mello import MeLLo, format_trace
from memedit.methods.multihop import Decomposer, HopResolver, clean_answer, fold, tokenize
from memedit.methods.relations import Catalogue
from memedit.models.backends import LangChainLM
from memedit.store import EditStore




@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load()


@pytest.fixture(scope="module")
def decomposer(catalogue: Catalogue) -> Decomposer:
    return Decomposer(catalogue)


@pytest.fixture
def store(tmp_path: Path):
    with EditStore(tmp_path / "mello.db") as s:
        yield s


def _chat(*responses: str) -> LangChainLM:
    return LangChainLM(FakeListChatModel(responses=list(responses)))


def _state(store: EditStore) -> tuple:
    """What must not change when a question is refused: every edit's status and the event log."""
    return ([(e.id, e.status if hasattr(e, "status") else None) for e in store.list(limit=1000)],
            len(store.events(limit=100_000)))


# --------------------------------------------------------------------------- the catalogue


def test_catalogue_is_well_formed(catalogue: Catalogue) -> None:
    assert len(catalogue) >= 40
    for r in catalogue.relations:
        assert r.id.startswith("P") and r.phrases and r.examples, r.id
        assert r.question == r.questions[0] and r.cloze == r.clozes[0], r.id
        assert all(f.count("{}") == 1 for f in (*r.questions, *r.clozes)), r.id
    assert catalogue["P36"].cloze_for("France") == "The seat of government of France is"
    assert catalogue["P36"].question_for("France") == "Which city is France's capital?"
    with pytest.raises(ValidationError):
        catalogue["P999999"]


def test_catalogue_matches_phrases_and_templates_with_the_real_embedder(catalogue: Catalogue) -> None:
    got = [r.id for r, _ in catalogue.match(["is a citizen of", "head of state", "was born in", "who founded"])]
    assert got == ["P27", "P35", "P19", "P112"]
    assert catalogue.relation_of_template("{} is a citizen of")[0].id == "P27"
    assert catalogue.relation_of_template("The capital of {} is")[0].id == "P36"
    assert catalogue.relation_of_template("{} was founded by")[0].id == "P112"
    assert catalogue.relation_of_template("The official language of {} is")[0].id == "P37"


def test_a_bad_catalogue_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "rel.json"
    bad.write_text(json.dumps({"relations": [{"id": "P1", "label": "x", "type": "t", "phrases": ["x"],
                                              "question": "no placeholder", "cloze": "{} x", "examples": []}]}))
    with pytest.raises(ValidationError, match="exactly one"):
        Catalogue.load(bad)


# --------------------------------------------------------------------------- decomposition (hand-written questions)


@pytest.mark.parametrize("question, entity, chain", [
    ("Who is the head of state of the country that Angela Merkel is a citizen of?", "Angela Merkel", ["P27", "P35"]),
    ("What is the official language of the country of citizenship of Roger Federer?", "Roger Federer",
     ["P27", "P37"]),
    ("Who is the spouse of the founder of Microsoft?", "Microsoft", ["P112", "P26"]),
    ("What is the religion of the head of government of India?", "India", ["P6", "P140"]),
    ("Which university did the creator of Mickey Mouse attend?", "Mickey Mouse", ["P170", "P69"]),
    ("In which city was the author of Hamlet born?", "Hamlet", ["P50", "P19"]),
    ("What languages does the author of Dracula speak, write, or sign?", "Dracula", ["P50", "P1412"]),
    ("Who is the CEO of the company that developed Windows?", "Windows", ["P178", "P169"]),
    ("Who is the employer of Angela Merkel's spouse?", "Angela Merkel", ["P26", "P108"]),
    ("What is the country of origin of the sport played by Roger Federer?", "Roger Federer", ["P641", "P495"]),
    # a clause without a relative word, a preposition before one, the type noun as the only hop of its clause
    ("What is the capital of the country Angela Merkel is a citizen of?", "Angela Merkel", ["P27", "P36"]),
    ("What is the currency of the country in which Angela Merkel holds citizenship?", "Angela Merkel",
     ["P27", "P38"]),
    ("Which continent is the country in which the Eiffel Tower is located part of?", "Eiffel Tower",
     ["P17", "P30"]),
    # the clause's hop must yield the type named for it: "belongs" read as citizenship, not ownership
    ("What is the capital of the country to which Roger Federer belongs?", "Roger Federer", ["P27", "P36"]),
    # two relations' words side by side are two hops, not one coordinated relation
    ("Where was Angela Merkel's spouse born?", "Angela Merkel", ["P26", "P19"]),
    # relations beyond MQuAKE's (catalogue v2 additions)
    ("What did the author of Hamlet die of?", "Hamlet", ["P50", "P509"]),
    ("In which war did the spouse of Angela Merkel fight?", "Angela Merkel", ["P26", "P607"]),
    ("What was the date of death of the father of Ada Lovelace?", "Ada Lovelace", ["P22", "P570"]),
    # an upper-case title before "of" is a relation, not part of the name
    ("Where was the CEO of Acme Corporation born?", "Acme Corporation", ["P169", "P19"]),
])
def test_decomposition_of_two_hop_questions(decomposer: Decomposer, question: str, entity: str,
                                            chain: list[str]) -> None:
    d = decomposer.decompose(question)
    assert d.entity == entity
    assert [m.relation.id for m in d.relations] == chain
    assert d.is_multi_hop


def test_three_hops_and_single_hops(decomposer: Decomposer) -> None:
    d = decomposer.decompose("What is the capital of the country where the founder of Amazon was born?")
    assert [m.relation.id for m in d.relations] == ["P112", "P19", "P36"]
    for q in ("What is the capital of France?", "Who founded Microsoft?", "Who is the president of the United States?"):
        assert not decomposer.decompose(q).is_multi_hop, q
        assert not decomposer.may_be_multi_hop(q), q          # the router's cheap pre-check, no embedding
    assert decomposer.may_be_multi_hop("Who is the spouse of the founder of Microsoft?")


def test_known_entities_win_and_no_entity_is_reported(decomposer: Decomposer) -> None:
    d = decomposer.decompose("who founded the company that makes the widget zeta?", ["widget zeta"])
    assert d.entity == "widget zeta" and d.entity_source == "known"
    d = decomposer.decompose("who is the spouse of the founder of the company?")
    assert d.entity is None and not d.is_multi_hop


def test_small_helpers() -> None:
    assert [t.text for t in tokenize("Who is Ellie Kemper's spouse?")] == ["Who", "is", "Ellie", "Kemper", "'s",
                                                                          "spouse"]
    assert fold("The United States.") == "united states"
    assert clean_answer("Paris.\nThe capital of Spain is Madrid.") == "Paris"
    assert clean_answer(" Nairobi, Kenya") == "Nairobi"


# --------------------------------------------------------------------------- hop resolution against a real store


def test_edits_answer_hops_and_the_model_answers_the_rest(store: EditStore) -> None:
    e1 = store.add(Edit.fact("Angela Merkel", "{} is a citizen of", "Kenya", target_true="Germany"))
    store.add(Edit.fact("Paris", "{} is the capital of", "France"))  # a distractor
    mello = MeLLo(store, _chat("Samia Suluhu"))  # the model is asked only the uncovered hop
    a = mello.answer("Who is the head of state of the country that Angela Merkel is a citizen of?")
    hops = [s for s in a.trace if s["step"] == "hop"]
    assert [h["subquestion"] for h in hops] == ["Which country is Angela Merkel a national of?",
                                                "Who is Kenya's head of state?"]
    assert hops[0]["source"] == "edit" and hops[0]["edit_id"] == e1.id and hops[0]["answer"] == "Kenya"
    assert hops[1]["source"] == "model" and hops[1]["tentative_answer"] == "Samia Suluhu"
    assert a.text == "Samia Suluhu" and [u.edit.id for u in a.used] == [e1.id]
    assert store.usage(e1.id)[0]["route"] == "mello"            # the use is recorded, with the question
    assert "edit #1 answers it -> Kenya" in format_trace(a.trace)


def test_contradiction_check_with_tentative_answers(store: EditStore) -> None:
    store.add(Edit.fact("Microsoft", "{} was founded by", "Ada Lovelace"))
    store.add(Edit.fact("Ada Lovelace", "{} is married to", "Alan Turing"))
    mello = MeLLo(store, _chat("Bill Gates", "Alan Turing"), always_tentative=True)
    a = mello.answer("Who is the spouse of the founder of Microsoft?")
    hops = [s for s in a.trace if s["step"] == "hop"]
    assert [(h["tentative_answer"], h["answer"], h["contradiction"]) for h in hops] == [
        ("Bill Gates", "Ada Lovelace", True), ("Alan Turing", "Alan Turing", False)]
    assert a.text == "Alan Turing"


def test_bad_input_is_answered_clearly_and_changes_nothing(store: EditStore) -> None:
    store.add(Edit.fact("Angela Merkel", "{} is a citizen of", "Kenya"))
    before = _state(store)
    mello = MeLLo(store, _chat("x"), max_hops=2, mode="structured")
    t0 = time.perf_counter()
    a = mello.answer("who is the spouse of the founder of the company?")             # no entity
    assert a.text.startswith("I cannot answer this") and a.used == []
    assert any(s.get("reason") == "no entity found in the question" for s in a.trace)
    with pytest.raises(ValidationError, match="3 hops; the limit is 2"):           # more hops than the limit
        mello.answer("What is the capital of the country where the founder of Amazon was born?")
    assert time.perf_counter() - t0 < 30
    assert _state(store) == before


def test_cycles_and_conflicting_edits_are_bounded_and_reported(store: EditStore, catalogue: Catalogue) -> None:
    store.add(Edit.fact("Alice Ames", "{} is married to", "Bob Brown"))
    store.add(Edit.fact("Bob Brown", "{} is married to", "Alice Ames"))
    old = store.add(Edit.fact("Carol Cole", "{} is a citizen of", "Peru"))
    new = store.add(Edit.fact("Carol Cole", "{} holds the citizenship of", "Chile"))  # another template: no supersession
    before = _state(store)
    resolver = HopResolver(store, _chat("unused"), catalogue=catalogue)
    hops = resolver.resolve_chain("Alice Ames", [catalogue["P26"]] * 3, "default", max_hops=4)
    assert [h.answer for h in hops] == ["Bob Brown", "Alice Ames", "Bob Brown"]
    assert any("cycle" in n for n in hops[1].notes)
    with pytest.raises(ValidationError, match="limit"):
        resolver.resolve_chain("Alice Ames", [catalogue["P26"]] * 5, "default", max_hops=4)
    hop = resolver.resolve(0, "Carol Cole", catalogue["P27"], "default")
    assert hop.answer == "Chile" and hop.edit_id == new.id and old.id != new.id
    assert any("conflicting edits" in n for n in hop.notes)
    assert _state(store) == before


def test_prompt_loop_for_capable_models(store: EditStore) -> None:
    e = store.add(Edit.fact("Angela Merkel", "{} is a citizen of", "Kenya"))
    script = [
        "Subquestion: What is the country of citizenship of Angela Merkel?\nGenerated answer: Germany.",
        "Retrieved fact contradicts the generated answer.\nIntermediate answer: Kenya",
        "Subquestion: Who is the head of state of Kenya?\nGenerated answer: William Ruto.",
        "Retrieved fact does not contradict the generated answer.\nIntermediate answer: William Ruto",
        "Final answer: William Ruto",
    ]
    mello = MeLLo(store, _chat(*script), mode="prompt")
    a = mello.answer("Who is the head of state of the country that Angela Merkel is a citizen of?")
    hops = [s for s in a.trace if s["step"] == "hop"]
    assert a.text == "William Ruto"
    assert [(h["tentative_answer"], h["answer"], h["contradiction"]) for h in hops] == [
        ("Germany.", "Kenya", True), ("William Ruto.", "William Ruto", False)]
    assert [u.edit.id for u in a.used] == [e.id]


# --------------------------------------------------------------------------- the router


def test_router_sends_multi_hop_questions_to_mello(store: EditStore) -> None:
    from memedit.route import Router

    store.add(Edit.fact("Angela Merkel", "{} is a citizen of", "Kenya"))
    router = Router(store, FakeListChatModel(responses=["Samia Suluhu"]), policy="ike")
    a = router.answer("Who is the head of state of the country that Angela Merkel is a citizen of?")
    assert a.route == "mello" and a.text == "Samia Suluhu" and a.used
    assert router.prepare("What is the capital of France?").route == "base"
    off = Router(store, FakeListChatModel(responses=["x"]), mello=False)
    assert "mello" not in off.methods


def test_router_leaves_multi_hop_questions_alone_without_fact_edits(store: EditStore) -> None:
    from memedit.route import Router

    router = Router(store, FakeListChatModel(responses=["x"]))
    assert router.prepare("Who is the spouse of the founder of Microsoft?").route == "base"
    # with fact edits stored, a multi-hop question that none of them is in scope of stays with the bare model
    store.add(Edit.fact("Angela Merkel", "{} is a citizen of", "Kenya"))
    prepared = router.prepare("Who is the spouse of the founder of Microsoft?")
    assert prepared.route == "base" and prepared.messages == [{"role": "user", "content":
                                                               "Who is the spouse of the founder of Microsoft?"}]


# --------------------------------------------------------------------------- MQuAKE scoring (a synthetic record)


def _record() -> dict:
    hop = lambda q, c, a, al=(): {"question": q, "cloze": c, "answer": a, "answer_alias": list(al)}
    return {
        "case_id": 7,
        "requested_rewrite": [{"prompt": "{} is a citizen of", "relation_id": "P27", "subject": "Angela Merkel",
                               "target_new": {"str": "Kenya", "id": "Q1"}, "target_true": {"str": "Germany", "id": "Q2"},
                               "question": "What is the country of citizenship of Angela Merkel?"}],
        "questions": ["Who is the head of state of the country that Angela Merkel is a citizen of?"] * 3,
        "answer": "Frank-Walter Steinmeier", "answer_alias": [], "new_answer": "William Ruto",
        "new_answer_alias": ["Ruto"],
        "single_hops": [hop("q1", "Angela Merkel is a citizen of", "Germany"),
                        hop("q2", "The name of the current head of state in Germany is", "Frank-Walter Steinmeier")],
        "new_single_hops": [hop("What is the country of citizenship of Angela Merkel?", "c", "Kenya", ["KE"]),
                            hop("q4", "The name of the current head of state in Kenya is", "William Ruto")],
        "orig": {"triples": [["Q3", "P27", "Q2"], ["Q2", "P35", "Q4"]],
                 "triples_labeled": [["Angela Merkel", "country of citizenship", "Germany"],
                                     ["Germany", "head of state", "Frank-Walter Steinmeier"]],
                 "new_triples": [["Q3", "P27", "Q1"], ["Q1", "P35", "Q5"]],
                 "new_triples_labeled": [["Angela Merkel", "country of citizenship", "Kenya"],
                                         ["Kenya", "head of state", "William Ruto"]],
                 "edit_triples": [["Q3", "P27", "Q1"]]},
    }


def test_mquake_loader_and_evaluation(tmp_path: Path) -> None:
    from memedit.eval.mquake import MQuAKEEvaluator, hit, load_mquake

    path = tmp_path / "mq.jsonl"
    path.write_text(json.dumps(_record()) + "\n", encoding="utf-8")
    (case,) = load_mquake(path)
    assert case.edits[0].sentence() == "Angela Merkel is a citizen of Kenya"
    assert case.relations == ("P27", "P35") and case.edited_hops == (0,)
    assert case.edit_questions[0][1] == ("Kenya", "KE")
    assert hit("It is William Ruto.", case.new_answers) and not hit("Uhuru Kenyatta", case.new_answers)
    # known check: Germany, Steinmeier (right), then the new unedited hop (right); MeLLo's hop; IKE's answers
    backend = _chat("Germany", "Frank-Walter Steinmeier", "William Ruto", "William Ruto", "Uhuru Kenyatta")
    ev = MQuAKEEvaluator(backend, methods=("mello", "ike"))
    rep = ev.evaluate([case], mode="single")
    s = rep["summary"]
    assert s["all"]["cases"] == 1 and s["known"]["cases"] == 1 and s["known_new"]["cases"] == 1
    assert s["known_needed"]["cases"] == 1 and rep["results"][0]["known_needed"] is True
    assert s["all"]["mello"]["multi_hop"] == 1.0 and s["all"]["mello"]["edit_wise"] == 1.0
    assert s["all"]["mello"]["hop_accuracy"] == 1.0 and s["all"]["mello"]["relation_chain_right"] == 1.0
    assert s["all"]["ike"]["multi_hop"] == 0.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"case_id": 1}\n', encoding="utf-8")
    with pytest.raises(ValidationError, match="bad.jsonl:1"):
        load_mquake(bad)


# --------------------------------------------------------------------------- with SmolLM2


def test_two_hop_answer_changes_with_smollm2(store: EditStore) -> None:
    from memedit.models.backends import LocalLM

    lm = LocalLM.from_name("smollm2-135m-instruct")
    mello = MeLLo(store, lm)
    q = "What is the capital of the country that Angela Merkel is a citizen of?"
    before = mello.answer(q)
    assert "Berlin" in before.text and before.used == []
    e = store.add(Edit.fact("Angela Merkel", "{} is a citizen of", "Kenya", target_true="Germany"))
    after = mello.answer(q)
    assert "Nairobi" in after.text and [u.edit.id for u in after.used] == [e.id]


def test_ask_trace_on_the_command_line(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from memedit.chat_cli import ask_command

    app = typer.Typer()
    app.command("ask")(ask_command)
    app.command("noop")(lambda: None)  # two commands, so "ask" is a subcommand as in memedit's CLI
    db = tmp_path / "ask.db"
    with EditStore(db) as s:
        e = s.add(Edit.fact("Angela Merkel", "{} is a citizen of", "Kenya"))
    q = "What is the capital of the country that Angela Merkel is a citizen of?"
    r = CliRunner().invoke(app, ["ask", q, "--store", str(db), "--trace"])
    assert r.exit_code == 0, r.output
    assert "route: mello" in r.stdout
    assert "hop 1: Which country is Angela Merkel a national of?" in r.stdout
    assert f"edit #{e.id} answers it -> Kenya" in r.stdout
    r = CliRunner().invoke(app, ["ask", q, "--store", str(db), "--json"])
    data = json.loads(r.stdout)
    assert data["route"] == "mello" and [s["answer"] for s in data["trace"] if s["step"] == "hop"][0] == "Kenya"


def test_context_sentences_do_not_make_a_single_hop_question_multi_hop(store: EditStore) -> None:
    """CounterFact paraphrases open with an unrelated sentence; only the asking sentence decides the route."""
    from memedit.methods.mello import MeLLo, asking_sentence

    store.add(Edit.fact("Angela Merkel", "{} is a citizen of", "Kenya"))
    mello = MeLLo(store, FakeListChatModel(responses=["x"]))
    q = "The head of state of the country where the Louvre is located gave a speech. Angela Merkel is a citizen of"
    assert asking_sentence(q) == "Angela Merkel is a citizen of"
    assert mello.decompose(q, "default").is_multi_hop, "the whole text reads as multi-hop: the test must be able to fail"
    assert not mello.claims(q, "default")
    assert mello.claims("Who is the head of state of the country that Angela Merkel is a citizen of?", "default")
    two = "Some context first.\nWho is the head of state of the country that Angela Merkel is a citizen of?"
    assert mello.claims(two, "default"), "a multi-hop asking sentence after context is still multi-hop"


def test_a_chain_that_reaches_an_edit_is_followed_though_no_edit_is_in_scope(store: EditStore) -> None:
    """Issue 20: a multi-hop question naming an entity nothing was stored about, whose second hop is an edited
    fact, goes to MeLLo; when the chain reaches no edit the answer is exactly the base model's (locality)."""
    from memedit.models.backends import LocalLM
    from memedit.route import Router

    lm = LocalLM.from_name("smollm2-135m-instruct")
    e = store.add(Edit.fact("United Kingdom", "The head of government of {} is", "Rudolf Michl"))
    router = Router(store, lm, policy="auto")
    q = "Who is the head of government of the country where Stephen Baxter holds citizenship?"
    prepared = router.prepare(q)
    assert prepared.used == [] and prepared.route == "mello" and prepared.through_chain
    a = router.run(prepared)
    assert a.route == "mello" and "Rudolf Michl" in a.text and [u.edit.id for u in a.used] == [e.id]
    assert next(s for s in a.trace if s["step"] == "chain-check")["reached_edit"]
    # a chain through the same relation that reaches another country: no edit, the base model's own answer
    other = "Who leads the government of the country Angela Merkel is a citizen of?"
    b = router.answer(other)
    assert b.route == "base" and b.used == [] and not next(s for s in b.trace if s["step"] == "chain-check")["reached_edit"]
    assert b.text == lm.chat([{"role": "user", "content": other}], router.max_new_tokens)
    # no relation of the chain is stated by a stored edit: not claimed at all
    assert not router.prepare("Who is the head of state of the country where Stephen Baxter holds citizenship?").through_chain
