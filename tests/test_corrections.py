"""Chat messages that are corrections become edits; look-alikes that are not stay conversation."""
from __future__ import annotations

import doctest

import pytest

import memedit.corrections as corrections
from memedit.corrections import Correction, detect_correction, is_command, normalise_statement, parse_command
from memedit.edits import Edit
from memedit.errors import ValidationError


def test_doctests() -> None:
    result = doctest.testmod(corrections, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


# ---------------------------------------------------------------- natural phrasings that ARE corrections

@pytest.mark.parametrize(("message", "statement", "trigger"), [
    ("Actually, the CEO of Acme is Jane Roe now.", "The CEO of Acme is Jane Roe.", "actually"),
    ("actually the CEO of Acme is Jane Roe", "The CEO of Acme is Jane Roe.", "actually"),
    ("Well, actually, the CEO of Acme is Jane Roe.", "The CEO of Acme is Jane Roe.", "actually"),
    ("No, the CEO of Acme is Jane Roe now.", "The CEO of Acme is Jane Roe.", "no"),
    ("Nope. The CEO of Acme is Jane Roe.", "The CEO of Acme is Jane Roe.", "no"),
    ("No actually the CEO of Acme is Jane Roe", "The CEO of Acme is Jane Roe.", "actually"),
    ("Correction: the CEO of Acme is Jane Roe.", "The CEO of Acme is Jane Roe.", "correction"),
    ("correction - the CEO of Acme is Jane Roe", "The CEO of Acme is Jane Roe.", "correction"),
    ("That's wrong, the CEO of Acme is Jane Roe.", "The CEO of Acme is Jane Roe.", "wrong"),
    ("That\u2019s wrong \u2014 the CEO of Acme is Jane Roe.", "The CEO of Acme is Jane Roe.", "wrong"),
    ("That is incorrect. The CEO of Acme is Jane Roe.", "The CEO of Acme is Jane Roe.", "wrong"),
    ("No, that's not right: the CEO of Acme is Jane Roe.", "The CEO of Acme is Jane Roe.", "wrong"),
    ("You're wrong, the CEO of Acme is Jane Roe now!", "The CEO of Acme is Jane Roe.", "wrong"),
    ("Wrong! The CEO of Acme is Jane Roe.", "The CEO of Acme is Jane Roe.", "wrong"),
    ("That's outdated, the CEO of Acme is Jane Roe now.", "The CEO of Acme is Jane Roe.", "wrong"),
    ("FYI the CEO of Acme is Jane Roe now", "The CEO of Acme is Jane Roe.", "fyi"),
    ("FYI: the CEO of Acme is Jane Roe now.", "The CEO of Acme is Jane Roe.", "fyi"),
    ("Just so you know, the CEO of Acme is Jane Roe.", "The CEO of Acme is Jane Roe.", "fyi"),
    ("For the record, the CEO of Acme is Jane Roe.", "The CEO of Acme is Jane Roe.", "fyi"),
    ("Please note that the CEO of Acme is Jane Roe.", "The CEO of Acme is Jane Roe.", "fyi"),
    ("Update: the CEO of Acme is Jane Roe.", "The CEO of Acme is Jane Roe.", "fyi"),
    ("Remember that the CEO of Acme is Jane Roe.", "The CEO of Acme is Jane Roe.", "fyi"),
    ("The CEO of Acme is now Jane Roe.", "The CEO of Acme is Jane Roe.", "is-now"),
    ("the CEO of Acme is now Jane Roe", "The CEO of Acme is Jane Roe.", "is-now"),
    ("Jane Roe is now the CEO of Acme.", "Jane Roe is the CEO of Acme.", "is-now"),
    ("The CEO of Acme is actually Jane Roe.", "The CEO of Acme is Jane Roe.", "is-actually"),
    ("Actually, Messi plays for Inter Miami now.", "Messi plays for Inter Miami.", "actually"),
    ("Actually, Will Smith is the mayor of Springfield.", "Will Smith is the mayor of Springfield.", "actually"),
    ("No, Dr. Smith is the head of surgery now.", "Dr. Smith is the head of surgery.", "no"),
    ("Actually, the president of the U.S. is Trump.", "The president of the U.S. is Trump.", "actually"),
    ("Actually, the person in charge of Acme is Jane Roe.", "The person in charge of Acme is Jane Roe.", "actually"),
])
def test_natural_corrections(message: str, statement: str, trigger: str) -> None:
    c = detect_correction(message)
    assert isinstance(c, Correction), message
    assert c.statement == statement
    assert c.trigger == trigger
    assert 0.5 <= c.confidence < 1.0
    assert c.edit.sentence().rstrip(".") == statement.rstrip(".")
    assert c.edit.source == message.strip()   # provenance: what the user actually typed


@pytest.mark.parametrize("message", [
    # questions, even with a correction lead
    "Actually, who is the CEO of Acme?",
    "Actually, who is the CEO of Acme",
    "No, what is the capital of France?",
    "Actually, is Jane Roe the CEO of Acme?",
    "Is the CEO of Acme Jane Roe now?",
    "The CEO of Acme is Jane Roe now?",
    "Actually, the CEO of Acme is Jane Roe, right?",
    "Actually the CEO of Acme is Jane Roe, isn't it?",
    "What is the capital of France?",
    "Who is Hung-yi Lee?",
    "Is it true that the CEO of Acme is now Jane Roe?",
    "Actually, can you tell me who the CEO of Acme is",
    "Who is now the CEO of Acme",
    # hedges and reported speech
    "Actually, I think the CEO of Acme is Jane Roe.",
    "I think the CEO of Acme is now Jane Roe.",
    "Maybe the CEO of Acme is Jane Roe now.",
    "No, the CEO of Acme is probably Jane Roe.",
    "Actually, the CEO of Acme might be Jane Roe now.",
    "I'm not sure the CEO of Acme is Jane Roe.",
    "The CEO of Acme is now Jane Roe, I believe.",
    "I heard the CEO of Acme is now Jane Roe.",
    "Apparently the CEO of Acme is now Jane Roe.",
    "Someone told me the CEO of Acme is now Jane Roe.",
    "Actually, if the CEO of Acme is Jane Roe, who is the CFO.",
    "What if the CEO of Acme is now Jane Roe.",
    "Actually, let's say the CEO of Acme is Jane Roe.",
    # negations without a new value
    "Actually, the CEO of Acme is not Jane Roe.",
    "No, the CEO of Acme isn't Jane Roe.",
    "Pluto is no longer a planet now.",
    # requests and commands
    "Tell me who the CEO of Acme is now.",
    "Please explain why the CEO of Acme is now Jane Roe.",
    "Let me know if the CEO of Acme is Jane Roe now.",
    "/forget 3",
    "/corrections",
    "/correctness is a word",
    # conversation, thanks, refusals
    "No, thanks.",
    "No.",
    "Nope",
    "No, I don't think so.",
    "Actually, never mind.",
    "Actually, that is interesting.",
    "That's wrong.",
    "That's wrong!",
    "Actually no.",
    "Thanks, that is helpful.",
    "Hello there",
    "",
    "   ",
    # statements that need the conversation to resolve, or are not about changed facts
    "Actually, it's Paris.",
    "That's wrong, it's Jane Roe.",
    "Actually, the answer is Paris.",
    "No, the correct answer is Canberra.",
    "Actually, the person is Jane Roe.",
    "No, he is the CEO now.",
    "Actually, I am the CEO of Acme now.",
    "Actually, you are the CEO now.",
    "The weather is nice today.",
    "The CEO of Acme is Jane Roe.",
    "Nobody is now the CEO of Acme.",
    "No one is now in charge.",
    # several claims at once
    "Actually, the CEO of Acme is Jane Roe. The CFO is John Doe.",
])
def test_not_corrections(message: str) -> None:
    assert detect_correction(message) is None, message


def test_fact_edit_when_the_sentence_splits_cleanly() -> None:
    c = detect_correction("No, the current president of the US is Trump now.")
    assert c is not None and c.edit.kind == "fact"
    assert (c.edit.subject, c.edit.prompt, c.edit.target_new) == ("the US", "The current president of {} is", "Trump")
    assert c.edit.statement == "The current president of the US is Trump."
    assert c.edit.sentence() == "The current president of the US is Trump"


def test_fact_edit_in_relation_and_possessive() -> None:
    c = detect_correction("Actually, the most handsome person in the world is Hung-yi Lee.")
    assert c is not None
    assert (c.edit.subject, c.edit.prompt, c.edit.target_new) == (
        "the world", "The most handsome person in {} is", "Hung-yi Lee")
    p = detect_correction("Actually, Acme's CEO is Jane Roe.")
    assert p is not None and (p.edit.subject, p.edit.prompt, p.edit.target_new) == ("Acme", "{}'s CEO is", "Jane Roe")


def test_old_value_becomes_target_true() -> None:
    c = detect_correction("Correction: the capital of Australia is Canberra, not Sydney.")
    assert c is not None
    assert c.statement == "The capital of Australia is Canberra."
    assert (c.edit.target_new, c.edit.target_true) == ("Canberra", "Sydney")
    d = detect_correction("Actually, the capital of Australia is Canberra rather than Sydney.")
    assert d is not None and d.edit.target_true == "Sydney"


@pytest.mark.parametrize("message", [
    "Jane Roe is now the CEO of Acme.",                          # no "The R of S is O" shape
    "Actually, Messi plays for Inter Miami now.",                # no copula
    "No, the answer to the question of life and the universe is 42 and it was always 42 is it.",
])
def test_free_text_when_the_split_is_not_clean(message: str) -> None:
    c = detect_correction(message)
    if c is not None:
        assert c.edit.kind == "text"


def test_structured_false_forces_free_text() -> None:
    c = detect_correction("Actually, the CEO of Acme is Jane Roe now.", structured=False)
    assert c is not None and c.edit.kind == "text" and c.edit.statement == "The CEO of Acme is Jane Roe."


def test_namespace_author_and_source_are_passed() -> None:
    c = detect_correction("Actually, the CEO of Acme is Jane Roe now.", namespace="users/u42", author="u42",
                          source="chat")
    assert c is not None
    assert (c.edit.namespace, c.edit.author, c.edit.source) == ("users/u42", "u42", "chat")
    with pytest.raises(ValidationError):
        detect_correction("Actually, the CEO of Acme is Jane Roe now.", namespace="Bad Namespace")


def test_min_confidence() -> None:
    assert detect_correction("The CEO of Acme is now Jane Roe.", min_confidence=0.8) is None
    assert detect_correction("Correction: the CEO of Acme is Jane Roe.", min_confidence=0.9) is not None


def test_confidence_order() -> None:
    scores = {m: detect_correction(m).confidence for m in (  # type: ignore[union-attr]
        "/correct The CEO of Acme is Jane Roe.", "Correction: the CEO of Acme is Jane Roe.",
        "Actually, the CEO of Acme is Jane Roe.", "The CEO of Acme is now Jane Roe.")}
    assert list(scores.values()) == sorted(scores.values(), reverse=True)


def test_non_string_is_rejected() -> None:
    with pytest.raises(ValidationError):
        detect_correction(42)  # type: ignore[arg-type]


def test_over_long_natural_correction_is_ignored_not_raised() -> None:
    message = "Actually, the CEO of Acme is " + "very " * 500 + "Jane Roe."
    assert detect_correction(message) is None


def test_control_characters_are_not_stored() -> None:
    assert detect_correction("Actually, the CEO of Acme is Jane\x07 Roe.") is None
    with pytest.raises(ValidationError):
        detect_correction("/correct the CEO of Acme is Jane\x07 Roe")


# ---------------------------------------------------------------- the explicit command

def test_command_free_text() -> None:
    c = detect_correction("/correct The Eiffel Tower is in Rome now")
    assert c is not None and c.is_command and c.confidence == 1.0
    assert c.statement == "The Eiffel Tower is in Rome."
    assert c.edit.kind == "text"


def test_command_keeps_hedged_or_odd_statements_verbatim() -> None:
    # the user said exactly what to store: no hedge or question filtering on a command
    c = detect_correction("/correct maybe the sky is green")
    assert c is not None and c.statement == "Maybe the sky is green."


def test_command_makes_a_fact_edit_from_a_clean_sentence() -> None:
    c = detect_correction("/correct The current president of the US is Trump")
    assert c is not None and c.edit.kind == "fact" and c.edit.subject == "the US"


def test_command_structured() -> None:
    c = parse_command("/correct the world | The most handsome person in {} is | Hung-yi Lee")
    assert c.edit.kind == "fact"
    assert c.edit.subject == "the world"
    assert c.statement == "The most handsome person in the world is Hung-yi Lee."
    c4 = parse_command("/correct Australia | The capital of {} is | Canberra | Sydney")
    assert (c4.edit.target_new, c4.edit.target_true) == ("Canberra", "Sydney")


def test_command_is_case_insensitive_and_multiline_safe() -> None:
    c = detect_correction("/CORRECT   the CEO of Acme\n is Jane Roe")
    assert c is not None and c.statement == "The CEO of Acme is Jane Roe."


@pytest.mark.parametrize("message", [
    "/correct",
    "/correct   ",
    "/correct a | b",                                 # too few parts
    "/correct a | b | c | d | e",                     # too many
    "/correct Acme | The CEO of Acme is | Jane Roe",  # no {}
    "/correct Acme | The CEO of {} is | ",             # empty target
    "/correct Acme | The CEO of {} is | Jane | Jane",  # new == old
])
def test_bad_commands_raise(message: str) -> None:
    with pytest.raises(ValidationError):
        detect_correction(message)


def test_is_command() -> None:
    assert is_command("/correct x is y")
    assert is_command("  /correct")
    assert not is_command("/corrections")
    assert not is_command("Actually, x is y.")
    with pytest.raises(ValidationError):
        parse_command("Actually, the CEO of Acme is Jane Roe.")


def test_normalise_statement() -> None:
    assert normalise_statement("the CEO of Acme is now Jane Roe!") == "The CEO of Acme is Jane Roe."
    assert normalise_statement("The CEO of Acme is Jane Roe nowadays.") == "The CEO of Acme is Jane Roe."
    assert normalise_statement("The CEO of Acme is actually Jane Roe") == "The CEO of Acme is Jane Roe."
    assert normalise_statement("Snow is white.") == "Snow is white."   # 'now' only as a whole word


def test_edit_is_a_valid_edit_ready_to_store() -> None:
    c = detect_correction("Actually, the CEO of Acme is Jane Roe now.")
    assert c is not None
    assert isinstance(c.edit, Edit) and c.edit.id is None
    assert c.edit == c.edit.validated()
    assert c.to_dict()["edit"]["target_new"] == "Jane Roe"
