"""Strict answer matching: word boundaries, folding, short aliases only as the whole answer."""
from __future__ import annotations

import pytest

from memedit.eval.mquake import hit
from memedit.eval.runner import contains
from memedit.eval.scoring import MIN_ALIAS_CHARS, answer_matches, fold, names_match

US = ["United States of America", "US", "USA", "the States", "America", "U.S."]


@pytest.mark.parametrize("answer, ok", [
    ("The United States of America.", True),
    ("It is in America", True),                  # a long alias on word boundaries
    ("US", True),                                # a short alias that is the whole answer
    ("us.", True),                               # ... folded
    ("U.S.", True),                              # "U.S." folds to "u s": short, and the whole answer
    ("Trust us, it is big.", False),             # short alias inside another answer: no
    ("It is in the US.", False),                 # short alias inside a sentence: no (strict)
    ("Americana music", False),                  # not on a word boundary
    ("USA", True),                               # a 3-letter alias that is the whole answer
    ("Made in the USA", False),                  # ... but not inside a sentence
])
def test_mquake_style_aliases(answer: str, ok: bool) -> None:
    assert names_match(answer, US) is ok
    assert hit(answer, US) is ok


def test_two_letter_aliases_do_not_match_inside_words_or_sentences() -> None:
    names = ["English", "en", "it"]
    assert not names_match("I think it is French", names)      # "it" is a word here, but short: whole answer only
    assert not names_match("Spoken in many countries", names)  # "en" inside words
    assert names_match("en", names) and names_match("English, mostly", names)
    assert MIN_ALIAS_CHARS == 4


def test_targets_match_on_word_boundaries_whatever_their_length() -> None:
    assert answer_matches("He plays the piano.", ["piano"])
    assert not answer_matches("He plays the pianola.", ["piano"])
    assert not answer_matches("Parisian", ["Paris"])
    assert answer_matches("It's Grabar-Kitarovic!", ["Grabar-Kitarović"])   # accents and punctuation folded
    assert answer_matches("KOLINDA GRABAR KITAROVIĆ", ["Kolinda Grabar-Kitarović"])
    assert not answer_matches("", ["x"]) and not answer_matches("anything", [""])
    assert contains("The answer is Jane Roe.", ["Jane Roe"]) and not contains("Jane Roeland", ["Jane Roe"])


def test_anchored_matches_only_at_the_start() -> None:
    assert answer_matches(" English, and", ["English"], anchored=True)
    assert not answer_matches("Englishman", ["English"], anchored=True)
    assert not answer_matches("not English", ["English"], anchored=True)


def test_fold() -> None:
    assert fold("  Grabar-Kitarović!! ") == "grabar kitarovic"
    assert fold("U.S.A.") == "u s a"
