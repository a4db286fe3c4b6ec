"""Validation and normalisation of the Edit record at the boundary, and that a rejected edit writes nothing."""
from __future__ import annotations

import sqlite3
import unicodedata
from dataclasses import replace

import pytest

from memedit.edits import (
    MAX_AUTHOR,
    MAX_PARAPHRASES,
    MAX_PROMPT,
    MAX_SOURCE,
    MAX_STATEMENT,
    MAX_SUBJECT,
    MAX_TARGET,
    Edit,
    relation_key,
    validate_namespace,
)
from memedit.errors import ValidationError
from memedit.store import EditStore

SUBJ, PROMPT, NEW = "the US", "The current president of {} is", "Trump"




def fact(**overrides):
    """Edit.fact with sensible defaults, any argument overridable."""
    args = {"subject": SUBJ, "prompt": PROMPT, "target_new": NEW}
    args.update(overrides)
    return Edit.fact(args.pop("subject"), args.pop("prompt"), args.pop("target_new"), **args)


# ---- empty / whitespace -------------------------------------------------------

@pytest.mark.parametrize("blank", ["", " ", "\t", " \n\t ", "\u3000"])
@pytest.mark.parametrize("field", ["subject", "prompt", "target_new"])
def test_fact_required_fields_reject_empty_and_whitespace(field, blank):
    with pytest.raises(ValidationError, match=field):
        fact(**{field: blank})


@pytest.mark.parametrize("blank", ["", "   ", "\n\n", " \t\r\n "])
def test_text_statement_rejects_empty_and_whitespace(blank):
    with pytest.raises(ValidationError, match="statement"):
        Edit.text(blank)


def test_text_statement_none_is_required():
    with pytest.raises(ValidationError, match="statement is required"):
        Edit.text(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["target_true", "statement", "author", "source"])
def test_optional_fields_blank_become_none(field):
    e = fact(**{field: "   "})
    assert getattr(e, field) is None


def test_blank_paraphrase_is_rejected_with_its_index():
    with pytest.raises(ValidationError, match=r"paraphrases\[1\]"):
        fact(paraphrases=["Who leads {}?", "   "])


def test_subject_missing():
    with pytest.raises(ValidationError, match="needs a subject"):
        fact(subject=None)
    with pytest.raises(ValidationError, match="needs a subject"):
        Edit.from_dict({"kind": "fact", "prompt": PROMPT, "target_new": NEW})


def test_prompt_and_target_missing():
    with pytest.raises(ValidationError, match="prompt is required"):
        fact(prompt=None)
    with pytest.raises(ValidationError, match="target_new is required"):
        fact(target_new=None)


# ---- templates ----------------------------------------------------------------

@pytest.mark.parametrize(
    "prompt",
    [
        "The current president of the US is",       # no {}
        "The president of {} and {} is",            # two {}
        "The president of {0} is",                  # positional field
        "The president of {subject} is",            # named field
        "The president of {} is }",                 # stray closing brace
        "The president of { {} is",                 # stray opening brace
        "The president of {{}} is",                 # escaped braces
        "The president of } {} { is",
        "{",
        "}",
    ],
)
def test_prompt_template_must_hold_exactly_one_hole(prompt):
    with pytest.raises(ValidationError, match="prompt"):
        fact(prompt=prompt)


@pytest.mark.parametrize("para", ["Who leads {} and {}?", "Who leads {0}?", "Who leads {x}?", "Who } leads {}?"])
def test_paraphrase_templates_are_checked(para):
    with pytest.raises(ValidationError, match=r"paraphrases\[0\]"):
        fact(paraphrases=[para])


def test_paraphrases_may_be_plain_sentences_or_templates():
    e = fact(paraphrases=["Who leads {} right now?", "The head of state of America is"])
    assert e.paraphrases == ("Who leads {} right now?", "The head of state of America is")


@pytest.mark.parametrize("prompt", ["{} is led by", "The president of {}", "Who is the president of {}?"])
def test_hole_anywhere_is_fine(prompt):
    assert fact(prompt=prompt).prompt == prompt


# ---- lengths ------------------------------------------------------------------

@pytest.mark.parametrize(
    "field,limit",
    [
        ("subject", MAX_SUBJECT),
        ("target_new", MAX_TARGET),
        ("target_true", MAX_TARGET),
        ("statement", MAX_STATEMENT),
        ("author", MAX_AUTHOR),
        ("source", MAX_SOURCE),
    ],
)
def test_length_limits_of_plain_fields(field, limit):
    ok = fact(**{field: "x" * limit})
    assert len(getattr(ok, field)) == limit
    with pytest.raises(ValidationError, match=rf"{field} is too long \({limit + 1} characters; at most {limit}\)"):
        fact(**{field: "x" * (limit + 1)})


def test_length_is_measured_after_trimming():
    assert len(fact(subject="  " + "x" * MAX_SUBJECT + "  ").subject) == MAX_SUBJECT


def test_prompt_length_limit():
    base = "{} " + "x" * (MAX_PROMPT - 3)
    assert len(fact(prompt=base).prompt) == MAX_PROMPT
    with pytest.raises(ValidationError, match="prompt is too long"):
        fact(prompt=base + "x")


def test_paraphrase_length_and_count_limits():
    long_para = "{} " + "y" * (MAX_PROMPT - 2)
    with pytest.raises(ValidationError, match=r"paraphrases\[0\] is too long"):
        fact(paraphrases=[long_para])
    many = [f"Paraphrase number {i} about {{}}" for i in range(MAX_PARAPHRASES)]
    assert len(fact(paraphrases=many).paraphrases) == MAX_PARAPHRASES
    with pytest.raises(ValidationError, match="too many paraphrases"):
        fact(paraphrases=many + ["one more about {}"])


def test_text_statement_length_limit():
    assert len(Edit.text("s" * MAX_STATEMENT).statement) == MAX_STATEMENT
    with pytest.raises(ValidationError, match="statement is too long"):
        Edit.text("s" * (MAX_STATEMENT + 1))


# ---- control characters and newlines ---------------------------------------------

CONTROL = ["\x00", "\x1b", "\u202e", "\u2066", "\x7f", "\x85", "\u2028", "\x0b", "\x0c"]
SINGLE_LINE_FIELDS = ["subject", "prompt", "target_new", "target_true", "author", "paraphrase"]


def _with_field(field, value):
    if field == "paraphrase":
        return fact(paraphrases=[value])
    if field == "prompt":
        return fact(prompt=value + " {}")
    return fact(**{field: value})


@pytest.mark.parametrize("ch", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
@pytest.mark.parametrize("field", SINGLE_LINE_FIELDS)
def test_control_characters_rejected_in_single_line_fields(field, ch):
    with pytest.raises(ValidationError, match=r"control character \(U\+"):
        _with_field(field, f"bad{ch}value")


@pytest.mark.parametrize("nl", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("field", SINGLE_LINE_FIELDS)
def test_newlines_rejected_in_single_line_fields(field, nl):
    with pytest.raises(ValidationError):
        _with_field(field, f"first{nl}second")


@pytest.mark.parametrize("ch", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
@pytest.mark.parametrize("make", ["text", "fact_statement", "source"])
def test_control_characters_rejected_in_multiline_fields(make, ch):
    value = f"bad{ch}value"
    with pytest.raises(ValidationError, match="control character"):
        if make == "text":
            Edit.text(value)
        elif make == "fact_statement":
            fact(statement=value)
        else:
            Edit.text("ok", source=value)


def test_newlines_and_tabs_allowed_in_statement_and_source():
    e = Edit.text("Line one.\nLine two.\r\nLine\tthree.", source="chat:\nuser said so")
    assert e.statement == "Line one.\nLine two.\r\nLine\tthree."
    assert e.source == "chat:\nuser said so"
    assert fact(statement="A\nB").statement == "A\nB"


@pytest.mark.parametrize("bad", ["\ud800", "x\udcffy"])
def test_lone_surrogates_rejected(bad):
    # A lone surrogate reaches Python from undecodable argv bytes or JSON '\ud800'; it cannot be
    # encoded as UTF-8 for SQLite or the tokenizer, so it must be refused at the boundary.
    with pytest.raises(ValidationError):
        Edit.text(f"statement {bad}")
    with pytest.raises(ValidationError):
        fact(subject=f"subj {bad}")


# ---- wrong types -----------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs,msg",
    [
        ({"subject": 42}, "subject must be a string, got int"),
        ({"prompt": ["{}"]}, "prompt must be a string, got list"),
        ({"target_new": 3.5}, "target_new must be a string, got float"),
        ({"target_true": b"bytes"}, "target_true must be a string, got bytes"),
        ({"statement": {"a": 1}}, "statement must be a string, got dict"),
        ({"author": 7}, "author must be a string, got int"),
        ({"paraphrases": "Who leads {}?"}, "not a single string"),
        ({"paraphrases": [1, 2]}, r"paraphrases\[0\] must be a string, got int"),
        ({"paraphrases": 5}, "paraphrases must be a list of strings"),
        ({"namespace": 3}, "namespace must be a string, got int"),
        ({"namespace": None}, "namespace must be a string, got NoneType"),
    ],
)
def test_wrong_types_rejected(kwargs, msg):
    with pytest.raises(ValidationError, match=msg):
        fact(**kwargs)


def test_wrong_types_in_text_edit():
    with pytest.raises(ValidationError, match="statement must be a string, got dict"):
        Edit.text({"x": 1})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="statement must be a string, got int"):
        Edit.text(12)  # type: ignore[arg-type]


def test_from_dict_wrong_types():
    with pytest.raises(ValidationError, match="subject must be a string, got int"):
        Edit.from_dict({"kind": "fact", "subject": 1, "prompt": PROMPT, "target_new": NEW})
    with pytest.raises(ValidationError, match="not a single string"):
        Edit.from_dict({"subject": SUBJ, "prompt": PROMPT, "target_new": NEW, "paraphrases": "Who leads {}?"})
    with pytest.raises(ValidationError, match="statement must be a string, got dict"):
        Edit.from_dict({"statement": {"text": "x"}})
    with pytest.raises(ValidationError, match="meta must be a JSON object"):
        Edit.from_dict({"statement": "x", "meta": ["a"]})
    for not_a_dict in (["statement"], "statement", 3, None):
        with pytest.raises(ValidationError, match="must be a JSON object"):
            Edit.from_dict(not_a_dict)  # type: ignore[arg-type]


def test_validated_catches_directly_constructed_garbage():
    with pytest.raises(ValidationError, match="paraphrases must be a list"):
        Edit(kind="fact", subject=SUBJ, prompt=PROMPT, target_new=NEW, paraphrases=["a list, not a tuple"]).validated()  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="kind must be one of"):
        Edit(kind="belief", statement="x").validated()
    with pytest.raises(ValidationError, match="status must be one of"):
        Edit(kind="text", statement="x", status="deleted").validated()


# ---- namespaces --------------------------------------------------------------------

@pytest.mark.parametrize(
    "ns",
    ["", "UPPER", "Default", "a b", "../x", "./x", "x" * 65, "a//b", "a/", "/a", "-a", "a-", ".a", "a.",
     "a/b/c/d/e", "default\n", "\ndefault", "def\x00ault", "ümlaut", "a\\b", "a:b"],
)
def test_invalid_namespaces(ns):
    with pytest.raises(ValidationError, match="namespace"):
        validate_namespace(ns)
    with pytest.raises(ValidationError, match="namespace"):
        Edit.text("x", namespace=ns)


@pytest.mark.parametrize("ns", ["default", "a", "0", "x" * 64, "acme/user-42", "a.b_c-d", "a/b/c/d", "t1/" + "y" * 64])
def test_valid_namespaces(ns):
    assert validate_namespace(ns) == ns
    assert Edit.text("x", namespace=ns).namespace == ns


# ---- target_new == target_true, unknown keys, kinds --------------------------------------

@pytest.mark.parametrize("true", ["Trump", "trump", "  TRUMP  ", "Trump\u00a0"])
def test_target_new_equal_to_target_true_rejected(true):
    with pytest.raises(ValidationError, match="target_new equals target_true"):
        fact(target_true=true)


def test_from_dict_unknown_keys_named():
    with pytest.raises(ValidationError, match="unknown edit field\\(s\\): colour, extra"):
        Edit.from_dict({"statement": "x", "extra": 1, "colour": "red"})


def test_from_dict_infers_kind_and_roundtrips():
    t = Edit.from_dict({"statement": "The CEO of Acme is Jane Roe now."})
    assert t.kind == "text"
    f = Edit.from_dict({"subject": SUBJ, "prompt": PROMPT, "target_new": NEW, "paraphrases": ["Who leads {}?"]})
    assert f.kind == "fact" and f.paraphrases == ("Who leads {}?",)
    assert Edit.from_dict(f.to_dict()) == f
    assert Edit.from_dict(t.to_dict()) == t


def test_text_edit_rejects_fact_fields():
    with pytest.raises(ValidationError, match="no subject"):
        Edit.from_dict({"kind": "text", "statement": "x", "subject": "y"})
    with pytest.raises(ValidationError, match="no paraphrases"):
        Edit.from_dict({"kind": "text", "statement": "x", "paraphrases": ["p"]})
    with pytest.raises(ValidationError, match="kind must be one of"):
        Edit.from_dict({"kind": "opinion", "statement": "x"})


# ---- normalisation --------------------------------------------------------------------

def test_nfc_and_trimming():
    decomposed = "Cafe\u0301 de Flore"
    e = fact(subject=f"  {decomposed}\t", target_new=" Jos\u0065\u0301 ", author=" alice ",
             prompt="  The owner of {} is  ", statement="  Cafe\u0301 news.  ")
    assert e.subject == "Caf\u00e9 de Flore"
    assert unicodedata.is_normalized("NFC", e.subject)
    assert e.target_new == "Jos\u00e9"
    assert e.author == "alice"
    assert e.prompt == "The owner of {} is"
    assert e.statement == "Caf\u00e9 news."
    assert Edit.text("  Cafe\u0301\n").statement == "Caf\u00e9"


def test_paraphrases_trimmed_normalised_and_deduplicated_in_order():
    e = fact(paraphrases=["Who leads {}?", "  Who leads {}?  ", "Cafe\u0301 of {}", "Caf\u00e9 of {}", "Another {}"])
    assert e.paraphrases == ("Who leads {}?", "Caf\u00e9 of {}", "Another {}")


def test_validated_is_idempotent():
    e = fact(paraphrases=["Who leads {}?"], target_true="Biden", statement="Trump is president.")
    assert e.validated() == e


def test_relation_key_normalises_case_space_and_trailing_punctuation():
    assert relation_key("The  CAPITAL of {} is ") == "the capital of {} is"
    assert relation_key("Who leads {}?") == relation_key("who  leads {} ?")
    assert fact(prompt="The Current  President of {} is:").relation == fact().relation
    assert Edit.text("x").relation is None


# ---- sentence() and search_texts() ------------------------------------------------------

def test_sentence_and_search_texts_of_a_fact():
    e = fact(target_true="Biden", paraphrases=["The person who leads {} right now is", "Who runs {}?",
                                                 "The head of state of America is"])
    assert e.filled_prompt() == "The current president of the US is"
    assert e.sentence() == "The current president of the US is Trump"
    assert e.search_texts() == [
        "The current president of the US is Trump",
        "The person who leads the US right now is Trump",
        "Who runs the US? Trump",
        "The head of state of America is Trump",
    ]
    assert "Biden" not in " ".join(e.search_texts())


def test_search_texts_include_statement_and_deduplicate():
    e = fact(statement="Trump is the US president now.", paraphrases=[PROMPT, "The current president of {} is "])
    # the paraphrase equal to the prompt fills to the canonical sentence and is dropped
    assert e.search_texts() == ["The current president of the US is Trump", "Trump is the US president now."]


def test_question_prompt_sentence():
    e = fact(prompt="Who is the president of {}?")
    assert e.sentence() == "Who is the president of the US? Trump"


def test_text_edit_views():
    e = Edit.text("The CEO of Acme is Jane Roe now.")
    assert e.sentence() == "The CEO of Acme is Jane Roe now."
    assert e.search_texts() == ["The CEO of Acme is Jane Roe now."]
    with pytest.raises(ValueError):
        e.filled_prompt()


def test_content_is_user_supplied_fields_only():
    e = fact(author="al", source="chat")
    c = e.content()
    assert set(c) == {"kind", "statement", "subject", "prompt", "target_new", "target_true", "paraphrases",
                      "author", "source", "meta"}
    assert c["subject"] == SUBJ and c["paraphrases"] == []


# ---- an invalid edit writes nothing ---------------------------------------------------------

def _counts(path):
    con = sqlite3.connect(path)
    try:
        return tuple(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                     for t in ("edits", "events", "vectors", "namespaces"))
    finally:
        con.close()


@pytest.fixture
def store(tmp_path, embedder):
    with EditStore(tmp_path / "s.db", embedder=embedder) as s:
        s.add(Edit.text("A good edit that is already there."))
        yield s


BAD_EDITS = [
    pytest.param(Edit(kind="text", statement="   "), id="blank-statement"),
    pytest.param(Edit(kind="text", statement="bad\x00nul"), id="nul"),
    pytest.param(Edit(kind="fact", subject=None, prompt=PROMPT, target_new=NEW), id="no-subject"),
    pytest.param(Edit(kind="fact", subject=SUBJ, prompt="no hole", target_new=NEW), id="no-hole"),
    pytest.param(Edit(kind="fact", subject=SUBJ, prompt=PROMPT, target_new=NEW, target_true="trump"), id="same-target"),
    pytest.param(Edit(kind="text", statement="ok", namespace="Bad NS"), id="bad-namespace"),
    pytest.param(replace(Edit.text("ok"), statement="x" * (MAX_STATEMENT + 1)), id="too-long"),
    pytest.param({"statement": "a dict, not an Edit"}, id="not-an-edit"),
]


@pytest.mark.parametrize("bad", BAD_EDITS)
def test_add_invalid_writes_nothing(store, bad):
    before = _counts(store.path)
    with pytest.raises(ValidationError):
        store.add(bad)
    assert _counts(store.path) == before
    assert store.count() == 1 and len(store.events()) == before[1]
    assert store.verify().ok


@pytest.mark.parametrize("bad", BAD_EDITS)
def test_add_many_with_one_bad_edit_in_the_middle_stores_none(store, bad):
    before = _counts(store.path)
    good = [Edit.text(f"Good correction number {i}.", namespace="fresh-ns") for i in range(4)]
    with pytest.raises(ValidationError):
        store.add_many(good[:2] + [bad] + good[2:])
    assert _counts(store.path) == before
    assert [n["name"] for n in store.namespaces()] == ["default"]  # the batch's namespace was not created
    assert store.verify().ok


def test_add_many_bad_edit_in_a_later_batch_stores_none(store):
    before = _counts(store.path)
    good = [Edit.text(f"Correction {i}.") for i in range(5)]
    with pytest.raises(ValidationError):
        store.add_many(good + [Edit(kind="text", statement="")], batch_size=2)
    assert _counts(store.path) == before


@pytest.mark.parametrize("status", ["superseded", "rejected", "forgotten", "bogus"])
def test_add_with_a_non_initial_status_writes_nothing(store, status):
    before = _counts(store.path)
    with pytest.raises(ValidationError):
        store.add(Edit.text("A fine statement."), status=status)
    assert _counts(store.path) == before


def test_add_stores_the_normalised_edit(store):
    stored = store.add(fact(subject="  Cafe\u0301  ", paraphrases=["Who leads {}?", " Who leads {}? "]))
    again = store.get(stored.id)
    assert again.subject == "Caf\u00e9" and again.paraphrases == ("Who leads {}?",)
    assert store.verify().ok
