"""Intermediate entities written differently from the stored subject ("Bach" for "Johann Sebastian Bach").

A model's answer for one hop is the next hop's subject; it is often a short form of the name an edit was
stored under. A real SQLite/FAISS store and the packaged catalogue; the model is langchain-core's
FakeListChatModel (a real chat model class replying from a script), so the model's hop answers are known.
"""
from __future__ import annotations


import pytest

from memedit.edits import Edit
from memedit.methods.mello import MeLLo
from memedit.methods.multihop import HopResolver, alias_keys
from memedit.methods.relations import Catalogue
from memedit.store import EditStore


import test_mello  # noqa: E402

store = test_mello.store   # one store fixture and fake-chat helper for both files
_chat = test_mello._chat


@pytest.mark.parametrize("name, expected", [
    ("United States of America", {"usa", "united states", "america"}),
    ("Johann Sebastian Bach", {"jsb", "johann", "bach"}),
    ("Republic of Croatia", {"croatia", "rc"}),
    ("Prince (musician)", {"prince"}),
    ("Paris", set()),
])
def test_alias_keys(name: str, expected: set[str]) -> None:
    assert alias_keys(name) == expected


def test_a_short_form_of_a_stored_subject_finds_its_edit(store: EditStore) -> None:
    cat = Catalogue.load()
    e = store.add(Edit.fact("Johann Sebastian Bach", "{} is a citizen of", "Kenya"))
    store.add(Edit.fact("Commodore International", "{} was founded by", "Ada Lovelace"))
    resolver = HopResolver(store, _chat("Germany", "Jack Tramiel"), catalogue=cat)
    hop = resolver.resolve(1, "Bach", cat["P27"], "default")
    assert (hop.answer, hop.source, hop.edit_id) == ("Kenya", "edit", e.id)
    assert any("'Johann Sebastian Bach'" in n for n in hop.notes)
    assert resolver.resolve(1, "Commodore", cat["P112"], "default").answer == "Ada Lovelace"
    # another relation of the same name is not an alias match: the model answers
    assert resolver.resolve(1, "Bach", cat["P26"], "default").source == "model"
    # without aliases, the short form misses the edit
    plain = HopResolver(store, _chat("Germany"), catalogue=cat, aliases=False)
    assert plain.resolve(1, "Bach", cat["P27"], "default").source == "model"


def test_an_ambiguous_short_form_is_not_guessed(store: EditStore) -> None:
    cat = Catalogue.load()
    store.add(Edit.fact("Johann Sebastian Bach", "{} is a citizen of", "Kenya"))
    store.add(Edit.fact("Carl Philipp Emanuel Bach", "{} is a citizen of", "Peru"))
    hop = HopResolver(store, _chat("Germany"), catalogue=cat).resolve(1, "Bach", cat["P27"], "default")
    assert (hop.answer, hop.source) == ("Germany", "model")
    # the exact name still wins over any alias
    hop = HopResolver(store, _chat("x"), catalogue=cat).resolve(1, "Johann Sebastian Bach", cat["P27"], "default")
    assert hop.answer == "Kenya" and not hop.notes


def test_a_model_hop_reaches_an_edit_stored_under_the_full_name(store: EditStore) -> None:
    e = store.add(Edit.fact("United States of America", "The capital of {} is", "Nairobi"))
    mello = MeLLo(store, _chat("the USA"))                 # hop 1 (no edit): the model says "the USA"
    a = mello.answer("What is the capital of the country that Ellie Kemper is a citizen of?")
    hops = [s for s in a.trace if s["step"] == "hop"]
    assert [h["answer"] for h in hops] == ["the USA", "Nairobi"] and hops[1]["edit_id"] == e.id
    assert a.text == "Nairobi" and [u.edit.id for u in a.used] == [e.id]
    # once forgotten, the edit is not reached by any form of the name
    store.forget(e.id)
    mello = MeLLo(store, _chat("the USA", "Washington, D.C."))
    assert MeLLo(store, _chat("x")).facts().lookup_alias("default", "USA", Catalogue.load()["P36"]) == (None, [])
    assert mello.answer("What is the capital of the country that Ellie Kemper is a citizen of?").used == []
