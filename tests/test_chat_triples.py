"""Facts typed in chat as (subject, relation, object): read, kept with the edit, superseded, used by MeLLo's hops.

Real parts: the packaged MiniLM and relation catalogue, a real SQLite store, the chat policy; MeLLo's hop is
answered from the store (no model call is needed when an edit answers it).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from memedit import Edit, EditStore
from memedit.chat import capture, chat_policy
from memedit.methods.mello import MeLLo
from memedit.policy import NamespacePolicy, Policy
from memedit.triples import read_triple, structured


@pytest.fixture()
def store(tmp_path: Path):
    s = EditStore(tmp_path / "chat.db")
    yield s
    s.close()


@pytest.mark.parametrize("statement, subject, relation, obj", [
    ("Ellie Kemper is a citizen of Croatia.", "Ellie Kemper", "P27", "Croatia"),
    ("Messi plays for Inter Miami", "Messi", "P54", "Inter Miami"),
    ("Bank of Montreal is headquartered in Toronto.", "Bank of Montreal", "P159", "Toronto"),
    ("The CEO of Acme is Jane Roe.", "Acme", "P169", "Jane Roe"),
    ("Danielle Darrieux speaks English", "Danielle Darrieux", "P1412", "English"),
    # the relation runs on past its first "of": the name is what follows the last preposition before it
    ("The head of government of Mali is Ada Lovelace.", "Mali", "P6", "Ada Lovelace"),
    ("The head of state of the Republic of Kenya is Ada Lovelace.", "the Republic of Kenya", "P35", "Ada Lovelace"),
    ("The head of government of the United Kingdom is Ada Lovelace.", "the United Kingdom", "P6", "Ada Lovelace"),
])
def test_statements_read_as_triples(statement: str, subject: str, relation: str, obj: str) -> None:
    t = read_triple(statement)
    assert t is not None and (t.subject, t.relation, t.object) == (subject, relation, obj)


@pytest.mark.parametrize("statement", ["The weather is nice.", "Jupiter has 95 moons.", "Who is the CEO of Acme?",
                                       "Tom Hanks follows the news closely."])
def test_statements_without_a_catalogue_relation_stay_free_text(statement: str) -> None:
    assert read_triple(statement) is None
    assert structured(Edit.text(statement.replace("?", "."))).kind == "text"


@pytest.mark.parametrize("message, subject, relation", [
    ("FYI, Ada Lovelace carries a passport of Kenya.", "Ada Lovelace", "P27"),
    ("Actually, the head of government of Mali is Ada Lovelace.", "Mali", "P6"),
])
def test_corrections_in_other_verbs_are_captured_and_read(message: str, subject: str, relation: str) -> None:
    from memedit.corrections import detect_correction

    found = detect_correction(message)
    assert found is not None, message
    t = read_triple(found.statement)
    assert t is not None and (t.subject, t.relation) == (subject, relation)


def test_a_chat_fact_is_kept_with_its_reading_and_superseded_in_other_words(store: EditStore) -> None:
    policy = chat_policy(store)
    first = capture("Actually, Ellie Kemper is a citizen of Croatia.", policy=policy, namespace="default")
    assert first.outcome == "stored" and first.edit is not None
    e1 = first.edit
    assert (e1.kind, e1.subject, e1.prompt, e1.target_new) == ("fact", "Ellie Kemper", "{} is a citizen of", "Croatia")
    assert e1.meta["triple"]["relation"] == "P27" and e1.statement == "Ellie Kemper is a citizen of Croatia."
    assert store.get(e1.id).meta["triple"]["object"] == "Croatia"     # stored with the edit, under its content hash
    second = capture("No, Ellie Kemper holds citizenship in Japan now.", policy=policy, namespace="default")
    assert second.edit is not None and second.edit.supersedes == e1.id
    assert store.get(e1.id).status == "superseded" and store.get(second.edit.id).status == "active"
    other = capture("FYI, Ellie Kemper was born in Zagreb.", policy=policy, namespace="default")
    assert other.edit is not None and other.edit.supersedes is None and store.get(second.edit.id).status == "active"


def test_free_text_from_the_api_door_is_read_too(store: EditStore) -> None:
    policy = Policy(store, default=NamespacePolicy(max_edits=0))
    e = policy.submit(Edit.text("Tetris was developed by Nintendo."), channel="api")
    assert e.kind == "fact" and e.meta["triple"]["subject"] == "Tetris"


def test_mello_answers_a_hop_with_a_chat_fact(store: EditStore) -> None:
    policy = chat_policy(store)
    capture("Actually, Ellie Kemper is a citizen of Croatia.", policy=policy, namespace="default")
    capture("No, Ellie Kemper holds citizenship in Japan now.", policy=policy, namespace="default")
    mello = MeLLo(store)
    q = "Who leads the nation where Ellie Kemper holds citizenship?"
    assert mello.claims(q, "default")
    hop = mello.resolver(None).resolve(0, "Ellie Kemper", mello.decomposer.catalogue["P27"], "default")  # type: ignore[arg-type]
    assert hop.answer == "Japan" and hop.source == "edit"
