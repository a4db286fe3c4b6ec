"""The indexed subject lookup behind MeLLo's multi-hop detector, and its tracking of the store.

``SubjectNames`` (dictionary lookups of a question's word-bounded spans) must find exactly what the
straightforward scan (one regular expression per stored subject) finds, and ``FactIndex`` must follow
the store's adds, supersessions and forgets, including ones made through another handle on the same
file, without rebuilding its tables per question. Real SQLite/FAISS stores and the packaged embedder.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memedit.edits import Edit
from memedit.methods.mello import MeLLo
from memedit.methods.multihop import (
    Decomposer,
    FactIndex,
    SubjectNames,
    _scan_occurrences,
    name_key,
    tokenize,
)
from memedit.methods.relations import Catalogue
from memedit.store import EditStore

# Real entity names of the kinds that make string matching hard: dots, slashes, hyphens, accents, a
# German sharp s (case-folds to "ss", changing the length), names inside longer names, one-letter names.
SUBJECTS = [
    "Ellie Kemper", "United States of America", "U.S.", "USA", "AC/DC", "Beyoncé", "Jay-Z", "New York",
    "New York City", "City", "Straße des 17. Juni", "Ludwig van Beethoven", "van", "The Beatles", "Beatles",
    "iPhone", "eBay", "Paris", "Paris Hilton", "Hilton", "Côte d'Ivoire", "Toni Morrison", "x", "  Kenya  ",
    "Nairobi", "Leonardo da Vinci", "Vinci", "Prince", "Prince (musician)", "Mary-Kate Olsen", "Olsen",
    "José Mourinho", "Mourinho", "1984", "Bosnia and Herzegovina", "Ñuñoa", "ISTANBUL", "Istanbul",
]
QUESTIONS = [
    "Who is the head of state of the country that Ellie Kemper is a citizen of?",
    "What is the capital of the United States of America, the U.S., or the USA?",
    "Which record label signed AC/DC and who founded it?",
    "Who is Beyoncé married to, Jay-Z's spouse?",
    "In which borough of New York City is the Straße des 17. Juni? STRASSE DES 17. JUNI!",
    "Was Ludwig van Beethoven born in the city where van Gogh lived?",
    "Who founded the company that makes the iPhone and owns eBay?",
    "Where was Paris Hilton born, in Paris or in the Hilton?",
    "What is the official language of Côte d'Ivoire?",
    "Who wrote the novel 1984, the one Toni Morrison admired?",
    "What is the capital of Bosnia and Herzegovina where Mourinho coached José Mourinho's team?",
    "Where is Ñuñoa, near istanbul or ISTANBUL?",
    "Which sport does Mary-Kate Olsen play and who coaches Olsen?",
    "Prince (musician) or Prince: who was born in Minneapolis?",
    "x x x: is x a letter?",
    "Who is the spouse of the founder of Microsoft?",
    "Vinci, Leonardo da Vinci and da Vinci: which city?",
    "city City CITY New York new york city",
]


@pytest.fixture(scope="module")
def decomposer() -> Decomposer:
    return Decomposer(Catalogue.load())


def _store_with(path: Path, subjects: list[str], namespace: str = "idx") -> EditStore:
    store = EditStore(path)
    store.create_namespace(namespace)
    store.add_many([Edit.fact(s.strip(), "{} is a citizen of", "Kenya", namespace=namespace) for s in subjects])
    return store


def test_indexed_lookup_finds_what_the_scan_finds_on_real_stored_edits(tmp_path: Path,
                                                                        decomposer: Decomposer) -> None:
    store = _store_with(tmp_path / "idx.db", SUBJECTS)
    facts = FactIndex(store, decomposer.catalogue)
    names = facts.names("idx")
    stored = {e.subject for e in store.list("idx", status="active", limit=1000)}  # what the scan used to read
    # ("ISTANBUL" superseded "Istanbul": the store keys subjects case-insensitively)
    assert len(stored) >= len(SUBJECTS) - 2
    assert all(s in names for s in stored if len(s) >= 2) and "x" in stored and "x" not in names  # too short
    assert len(names) == len({name_key(s) for s in stored} - {None})
    compared = 0
    for q in QUESTIONS:
        q_fold = q.casefold()
        assert names.occurrences(q_fold) == sorted(set(_scan_occurrences(q_fold, stored))), q
        toks = tokenize(q)
        assert decomposer.find_entity(q, toks, names) == decomposer.find_entity(q, toks, stored), q
        assert decomposer.may_be_multi_hop(q, names) == decomposer.may_be_multi_hop(q, stored), q
        compared += bool(names.occurrences(q_fold))
    assert compared >= 15  # the questions do exercise the lookup
    # the full decomposition through MeLLo (index) equals the one with the plain set of subjects
    mello = MeLLo(store)
    for q in QUESTIONS[:4]:
        assert mello.decompose(q, "idx").to_dict() == decomposer.decompose(q, stored).to_dict()
    store.close()


_ALPHABET = st.sampled_from(list("abAB .-'/ßİ1"))


@settings(max_examples=300, deadline=None)
@given(names=st.lists(st.text(_ALPHABET, min_size=0, max_size=6), max_size=8),
       question=st.text(_ALPHABET, max_size=40))
def test_indexed_lookup_equals_the_scan_on_any_text(names: list[str], question: str) -> None:
    q_fold = question.casefold()
    # (the scan repeats a span for names that fold alike, "Paris" and "paris"; the index holds the name once)
    assert SubjectNames(names).occurrences(q_fold) == sorted(set(_scan_occurrences(q_fold, names)))


def test_names_are_counted_and_removed() -> None:
    names = SubjectNames(["Paris", "paris", "Rome"])
    stamp = names.stamp
    names.discard("Paris")
    assert "PARIS" in names and names.stamp != stamp       # "paris" still held by the second name
    names.discard("paris")
    names.discard("Madrid")                                # not held: nothing happens
    assert "Paris" not in names and len(names) == 1
    assert names.occurrences("paris or rome") == [(9, 13)]


def test_added_superseded_and_forgotten_edits_are_reflected(tmp_path: Path, decomposer: Decomposer) -> None:
    path = tmp_path / "live.db"
    store = _store_with(path, ["Ellie Kemper", "Toni Morrison"])
    mello = MeLLo(store)
    facts = mello.facts()
    p27 = decomposer.catalogue["P27"]
    q = "What is the capital of the country that Ada Lovelace is a citizen of?"
    assert mello.decompose(q, "idx").entity_source == "capitalised"
    table = facts._by_ns["idx"]

    # a new edit is seen at once, and the table is updated in place rather than rebuilt
    ada = store.add(Edit.fact("Ada Lovelace", "{} is a citizen of", "Kenya", namespace="idx"))
    assert mello.decompose(q, "idx").entity_source == "known" and mello.claims(q, "idx")
    assert [e.id for e, _ in facts.lookup("idx", "ada lovelace", p27)] == [ada.id]
    assert facts._by_ns["idx"] is table

    # a newer edit of the same subject and relation supersedes it: only the new one answers
    newer = store.add(Edit.fact("Ada Lovelace", "{} is a citizen of", "Peru", namespace="idx"))
    assert [e.id for e, _ in facts.lookup("idx", "Ada Lovelace", p27)] == [newer.id]

    # forgetting it (through another handle on the same file, as another process would) removes it everywhere
    with EditStore(path) as other:
        other.forget(newer.id)
    assert facts.lookup("idx", "Ada Lovelace", p27) == []
    assert "Ada Lovelace" not in facts.names("idx")
    assert all(e.id != newer.id for es in facts.subjects("idx").values() for e in es)
    assert mello.decompose(q, "idx").entity_source == "capitalised"
    # Kemper's edit is untouched, and a pending edit is not used until approved
    assert len(facts.lookup("idx", "Ellie Kemper", p27)) == 1
    pending = store.add(Edit.fact("Grace Hopper", "{} is a citizen of", "Chile", namespace="idx"), status="pending")
    assert facts.lookup("idx", "Grace Hopper", p27) == []
    store.approve(pending.id)
    assert [e.id for e, _ in facts.lookup("idx", "Grace Hopper", p27)] == [pending.id]
    assert facts._by_ns["idx"] is table
    store.close()


def test_a_bulk_change_rebuilds_once_and_other_namespaces_stay_apart(tmp_path: Path,
                                                                      decomposer: Decomposer) -> None:
    store = _store_with(tmp_path / "bulk.db", ["Ellie Kemper"])
    facts = FactIndex(store, decomposer.catalogue)
    p27 = decomposer.catalogue["P27"]
    assert len(facts.names("idx")) == 1
    store.create_namespace("other")
    store.add(Edit.fact("Ellie Kemper", "{} is a citizen of", "Peru", namespace="other"))
    many = [Edit.fact(f"Person {i} Example", "{} is a citizen of", "Chile", namespace="idx")
            for i in range(FactIndex.REBUILD_AFTER + 10)]
    store.add_many(many)
    assert len(facts.names("idx")) == len(many) + 1
    assert [e.target_new for e, _ in facts.lookup("idx", "Ellie Kemper", p27)] == ["Kenya"]
    assert [e.target_new for e, _ in facts.lookup("other", "Ellie Kemper", p27)] == ["Peru"]
    store.close()
