"""IKE demonstrations never leak into answers.

The bug: after "the CEO of Acme is Jane Roe", IKE answered "Who is the CEO of
Acme?" with "Priya Raman", the answer of the pool's Acme demonstration. The
fast tests check the leak filter on the real packaged pool (real MiniLM
embedder), the pool's own fields, and :func:`demonstration_leak`; the slow
test replays the example conversation's question through the real packaged
SmolLM2-135M-Instruct.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from memedit import Edit, EditStore, Editor
from memedit.methods.ike import (IKE, TRACE_STEP, DemonstrationPool, PoolEntry, demonstration_leak, fold_words,
                                 shown_answers, text_key_terms)

ACME_EDIT = "The CEO of Acme is Jane Roe."        # what examples/chatbot_corrections.py stores for bob
ACME_QUESTION = "Who is the CEO of Acme?"          # bob's in-scope question there


@pytest.fixture(scope="module")
def pool() -> DemonstrationPool:
    return DemonstrationPool.load()


@pytest.fixture(scope="module")
def acme(pool: DemonstrationPool) -> PoolEntry:
    """The packaged entry behind the bug: "The CEO of Acme Corporation is Priya Raman."."""
    return next(e for e in pool.entries if e.answer == "Priya Raman")


def _entry_of(demo_fact: str, pool: DemonstrationPool) -> PoolEntry:
    return next(e for e in pool.entries if e.fact == demo_fact)


def _assert_no_overlap(demos, texts: list[str], pool: DemonstrationPool) -> None:
    """No shown demonstration's entry shares a key term with any of ``texts``."""
    words = {w for t in texts for w in fold_words(t)}
    for d in demos:
        shared = _entry_of(d.fact, pool).key_terms() & words
        assert not shared, (d, sorted(shared))


def _vectors(pool: DemonstrationPool, question: str, statement: str):
    """The edit and question vectors IKE.demonstrations computes, for calling select() without the filter."""
    from memedit.methods.prompting import question_line

    fact, q = pool.embedder.encode([statement, question_line(question)])
    return fact, q


# --------------------------------------------------------------------------- the filter, on the real pool


@pytest.mark.parametrize("k, retain", [(4, 1), (8, 2), (2, 0)])
def test_the_acme_question_shows_no_acme_demonstration(pool: DemonstrationPool, acme: PoolEntry, k: int,
                                                       retain: int) -> None:
    # Unfiltered, the Acme entry is among the best candidates for this question (it was the last demonstration
    # shown, and its answer was the answer); filtered, it never appears and the next best entries take its place.
    excluded = pool.excluded([ACME_QUESTION, ACME_EDIT])
    assert excluded.get(pool.entries.index(acme)) == {"acme"}
    unfiltered = pool.select(*_vectors(pool, ACME_QUESTION, ACME_EDIT), k=k, retain=retain)
    assert acme.fact in [d.fact for d in unfiltered]
    demos = IKE(pool, k=k, retain=retain).demonstrations(ACME_QUESTION, [ACME_EDIT])
    assert len(demos) == k
    for d in demos:
        assert "acme" not in fold_words(f"{d.fact} {d.prompt} {d.answer}"), d
        assert "Priya Raman" not in (d.answer, d.leak_answer), d
    _assert_no_overlap(demos, [ACME_QUESTION, ACME_EDIT], pool)


def test_the_acme_prompt_never_shows_the_acme_entry(pool: DemonstrationPool) -> None:
    msgs = IKE(pool, k=8, retain=2).build(ACME_QUESTION, [ACME_EDIT])
    text = "\n".join(m["content"] for m in msgs[:-1])
    assert "Acme" not in text and "Priya" not in text
    assert msgs[-1]["content"].endswith(f"Question: {ACME_QUESTION}")


def test_the_relation_users_correct_most_has_several_answers(pool: DemonstrationPool) -> None:
    """Same-relation copies: with one CEO entry, its answer read as *the* CEO answer to a 135M model."""
    ceo = [e for e in pool.entries if e.relation == "ceo"]
    assert len({e.answer for e in ceo}) >= 3 and len({e.subject for e in ceo}) == len(ceo)
    # with the Acme entry withheld, the Acme question still sees CEO demonstrations of other companies
    demos = IKE(pool).demonstrations(ACME_QUESTION, [ACME_EDIT])
    assert any(_entry_of(d.fact, pool).relation == "ceo" for d in demos)


def test_a_name_in_the_question_excludes_every_entry_answering_with_it(pool: DemonstrationPool) -> None:
    # "Elon Musk" is the answer of the founder entry ("Microsoft was founded by Elon Musk.") and the retain answer
    # of a CEO entry ("The CEO of Tesla is" -> "Elon Musk"): unfiltered, the founder entry is shown; filtered,
    # neither is, in any role.
    question = "Which company did Elon Musk found?"
    edit = "Elon Musk founded SpaceX."
    musk = {e.fact for e in pool.entries if "Elon Musk" in (e.answer, e.retain_answer)}
    assert len(musk) >= 2
    unfiltered = pool.select(*_vectors(pool, question, edit), k=6, retain=2)
    assert musk & {d.fact for d in unfiltered}
    demos = IKE(pool, k=6, retain=2).demonstrations(question, [edit])
    assert len(demos) == 6 and not musk & {d.fact for d in demos}
    assert all("Elon Musk" not in f"{d.fact} {d.prompt} {d.answer}" for d in demos), demos
    _assert_no_overlap(demos, [question, edit], pool)


@pytest.mark.parametrize("question, demo_answer", [
    ("Is the Eiffel Tower in Rome?", "Rome"),
    ("Who was Jane Austen?", "Jane Austen"),
    ("Is Samsung a big employer?", "Samsung"),
    ("Who plays the violin best?", "violin"),           # a lowercase answer is a content word
    ("Who is priya raman?", "Priya Raman"),             # case-folded
    ("Who is Priya-Raman!?", "Priya Raman"),            # punctuation-folded
])
def test_a_question_naming_a_demo_answer_excludes_that_demo(pool: DemonstrationPool, question: str,
                                                            demo_answer: str) -> None:
    entries = [i for i, e in enumerate(pool.entries) if e.answer == demo_answer]
    assert entries, demo_answer
    excluded = pool.excluded([question])
    assert all(i in excluded for i in entries)
    demos = IKE(pool, k=4).demonstrations(question, ["Some new fact about Zanzibar is true."])
    assert len(demos) == 4
    assert all(d.answer != demo_answer and d.leak_answer != demo_answer for d in demos)


def test_word_boundaries_do_not_over_exclude(pool: DemonstrationPool) -> None:
    # "Romeo" is not "Rome"; "Lima beans" is a word match for the Brazil entry (Lima), "Limassol" is not
    rome = [i for i, e in enumerate(pool.entries) if e.answer == "Rome"]
    lima = [i for i, e in enumerate(pool.entries) if e.answer == "Lima"]
    assert not set(rome) & set(pool.excluded(["Where does Romeo live?"]))
    assert not set(lima) & set(pool.excluded(["Is Limassol in Cyprus?"]))
    assert set(lima) <= set(pool.excluded(["Are Lima beans tasty?"]))


def test_the_requested_number_comes_back_when_the_pool_allows(pool: DemonstrationPool) -> None:
    # A question and edit that touch many entries still get k demonstrations, all clean.
    question = "Did Albert Einstein, Marie Curie and Isaac Newton live in Egypt, Japan or France?"
    edit = "Albert Einstein was born in Tokyo."
    excluded = pool.excluded([question, edit])
    assert len(excluded) >= 10
    for k, retain in ((4, 1), (8, 2), (16, 4)):
        demos = IKE(pool, k=k, retain=retain).demonstrations(question, [edit])
        assert len(demos) == k
        assert len({d.fact for d in demos}) == k   # one demonstration per entry
        assert sum(d.kind == "retain" for d in demos) == retain
        _assert_no_overlap(demos, [question, edit], pool)


def test_a_tiny_pool_gives_fewer_demonstrations_never_a_leaking_one(acme: PoolEntry, embedder) -> None:
    entries = [
        acme,
        PoolEntry(relation="capital", fact="The capital of Kenya is Accra.", subject="Kenya",
                  prompt="The capital of Kenya is", question="What city serves as the capital of Kenya?",
                  answer="Accra", retain_subject="Egypt", retain_prompt="The capital of Egypt is",
                  retain_answer="Cairo"),
    ]
    small = DemonstrationPool(entries, embedder)
    demos = IKE(small, k=2, retain=1).demonstrations(ACME_QUESTION, [ACME_EDIT])
    assert [d.fact for d in demos] == ["The capital of Kenya is Accra."]  # one clean entry: one demonstration
    assert IKE(small, k=2, retain=0).demonstrations("Is Accra in Kenya? Or Acme?", [ACME_EDIT]) == []


def test_every_field_of_a_used_edit_is_protected(pool: DemonstrationPool, tmp_path: Path, embedder) -> None:
    """Through the router: a fact edit's old target keeps away the demonstration that answers with it."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from memedit.scope import ScopeClassifier

    question = "Who founded Redmond Labs?"
    edit = Edit.fact("Redmond Labs", "{} was founded by", "Jane Roe", target_true="Larry Page")
    # The sentence alone lets the "Amazon was founded by Larry Page." demonstration in: only target_true stops it.
    assert "Larry Page" in [d.answer for d in IKE(pool).demonstrations(question, [edit.sentence()])]
    with EditStore(tmp_path / "s.db", embedder=embedder) as store:
        store.add(edit)
        editor = Editor(model=FakeListChatModel(responses=["Jane Roe"]), store=store,
                        classifier=ScopeClassifier.load(), policy="ike")
        prepared = editor.prepare(question)
        assert prepared.route == "ike", [c.to_dict() for c in prepared.candidates]
        steps = [s for s in prepared.trace if s["step"] == TRACE_STEP]
        assert len(steps) == 1
        shown = steps[0]["demonstrations"]
        assert len(shown) == 4 and steps[0]["answers"] == [d["leak_answer"] for d in shown]
        assert "Larry Page" not in steps[0]["answers"]
        # the recorded demonstrations are exactly the prompt's assistant turns
        assert [m["content"] for m in prepared.messages if m["role"] == "assistant"] == [d["answer"] for d in shown]
        # the answer carries the same step first in its trace, for evaluation
        answer = editor.router.run(prepared)
        assert answer.text == "Jane Roe"
        assert shown_answers(answer.trace) == steps[0]["answers"]
        assert answer.to_dict()["trace"][0]["step"] == TRACE_STEP


# --------------------------------------------------------------------------- the pool's own fields


def test_every_pool_entry_names_its_subjects(pool: DemonstrationPool) -> None:
    for e in pool.entries:
        assert e.subject and e.subject.casefold() in e.fact.casefold(), e
        assert e.retain_subject and e.retain_subject.casefold() in e.retain_prompt.casefold(), e
        assert e.answer.casefold() in e.fact.casefold(), e


def test_reverse_answers_name_nothing_beyond_the_entrys_key_terms(pool: DemonstrationPool) -> None:
    """Why key terms need not read reverse_answer: its names are the entry's subject's and answer's."""
    for e in pool.entries:
        if not e.reverse_answer:
            continue
        names = {w.casefold() for w in e.reverse_answer.replace("-", " ").split() if w[:1].isupper()}
        names = {fold_words(n)[0] for n in names if fold_words(n)} - {"the", "ceo"}
        assert names <= e.key_terms(), (e.reverse_answer, sorted(names - e.key_terms()))


def test_key_terms_of_a_text() -> None:
    assert text_key_terms("The CEO of Acme Corporation") == {"ceo", "acme", "corporation"}
    assert text_key_terms("Yo-Yo Ma") == {"yo", "ma"}                    # short names count
    assert text_key_terms("the lion") == {"lion"}                        # long lowercase words count
    assert text_key_terms("a pig in the sty") == set()                   # short lowercase words do not
    assert text_key_terms("Henry VIII, in 1509") == {"henry", "viii", "1509"}
    assert text_key_terms("Gabriel García Márquez") == {"gabriel", "garcia", "marquez"}


# --------------------------------------------------------------------------- the leak function


@pytest.mark.parametrize("answer, shown, targets, leak", [
    ("Priya Raman", ["Rome", "Priya Raman"], ["Jane Roe"], True),
    ("The CEO of Acme is Priya Raman.", ["Priya Raman"], ["Jane Roe"], True),
    ("priya raman!", ["Priya Raman"], ["Jane Roe"], True),                       # case and punctuation folded
    ("Jane Roe", ["Priya Raman"], ["Jane Roe"], False),                          # the edit's answer
    ("Jane Roe, not Priya Raman.", ["Priya Raman"], ["Jane Roe"], False),        # names the target too
    ("Priya Ramanathan", ["Priya Raman"], ["Jane Roe"], False),                  # word boundary
    ("Romeo and Juliet", ["Rome"], ["Paris"], False),                            # word boundary
    ("It is in Rome.", ["Rome"], ["Paris"], True),
    ("Shard", ["the Shard"], ["Burj Khalifa"], True),                            # a leading article is optional
    ("The Shard.", ["the Shard"], ["Burj Khalifa"], True),
    ("Jane Roe-Smith", ["Priya Raman"], ["Jane Roe"], False),
    ("Priya", ["Priya Raman"], ["Jane Roe"], False),                             # a part is not the answer
    ("Priya Raman", [], ["Jane Roe"], False),                                    # nothing shown
    ("Priya Raman", ["Priya Raman"], [], True),                                  # no target known: any shown answer
    ("Priya Raman", ["", " ", "!?"], ["Jane Roe"], False),                       # empty phrases never match
    ("García Márquez", ["Garcia Marquez"], ["Jane Austen"], True),               # accents folded
])
def test_demonstration_leak(answer: str, shown: list[str], targets: list[str], leak: bool) -> None:
    assert demonstration_leak(answer, shown, targets) is leak


def test_reverse_demonstrations_leak_through_their_object(pool: DemonstrationPool) -> None:
    acme = next(e for e in pool.entries if e.answer == "Priya Raman")
    rev = acme.demonstration("reverse")
    assert rev is not None and rev.answer != "Priya Raman" and rev.leak_answer == "Priya Raman"
    eiffel = next(e for e in pool.entries if e.reverse_answer == "The Eiffel Tower")
    assert eiffel.demonstration("reverse").leak_answer == "The Eiffel Tower"  # a short reverse answer is itself


# --------------------------------------------------------------------------- the example, on the real model


#: bob's correction in examples/chatbot_corrections.py, as chat capture stores it ("No, the CEO of Acme is Jane
#: Roe now." -> a fact edit with the user's sentence), and as a plain text edit
ACME_EDITS = {
    "captured-fact": lambda: Edit.fact("Acme", "The CEO of {} is", "Jane Roe", statement=ACME_EDIT,
                                       namespace="users/bob"),
    "text": lambda: Edit.text(ACME_EDIT, namespace="users/bob"),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(ACME_EDITS))
def test_the_chatbot_example_answers_with_the_edit_not_a_demonstration(kind: str, tmp_path: Path, embedder) -> None:
    """examples/chatbot_corrections.py: bob's "Who is the CEO of Acme?" after "the CEO of Acme is Jane Roe"."""
    from memedit.models.backends import LocalLM

    lm = LocalLM.from_name("smollm2-135m-instruct", max_new_tokens=48)   # the example's answer length
    with EditStore(tmp_path / "chatbot.db", embedder=embedder) as store:
        store.add(ACME_EDITS[kind]())
        editor = Editor(model=lm, store=store, policy="ike", namespace="users/bob")
        answer = editor.ask(ACME_QUESTION)
    assert answer.route == "ike" and answer.used, (answer.route, [c.to_dict() for c in answer.candidates])
    shown = shown_answers(answer.trace)
    assert len(shown) == 4
    facts = [d["fact"] for step in answer.trace for d in step.get("demonstrations", [])]
    assert not any("acme" in fold_words(f) for f in facts), facts
    assert "jane roe" in answer.text.casefold(), (answer.text, shown)
    assert "priya" not in answer.text.casefold(), answer.text   # the old Acme demonstration's answer
    assert not demonstration_leak(answer.text, shown, ["Jane Roe"]), (answer.text, shown)
