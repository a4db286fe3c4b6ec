"""Strict answer matching, shared by every evaluator.

>>> from memedit.eval.scoring import answer_matches
>>> answer_matches("The capital is Paris.", ["Paris"])
True
>>> answer_matches("Parisian food", ["Paris"])                 # not on word boundaries
False
>>> answer_matches("It is in the United States.", ["United States of America"], aliases=["US", "the United States"])
True
>>> answer_matches("Trust us, it is big.", ["United States of America"], aliases=["US"])   # short alias inside
False
>>> answer_matches("US", ["United States of America"], aliases=["US"])                     # short alias, whole answer
True

An answer matches when, after folding both sides (casefold, accents removed,
every run of punctuation and spaces made one space):

* a **target** appears in it on word boundaries (any length: it is the
  answer the data asks for), or
* an **alias** of at least :data:`MIN_ALIAS_CHARS` letters and digits appears
  in it on word boundaries, or
* a shorter alias ("it", "en", "US") *is* the whole answer.

``anchored=True`` asks for the match at the very start of the answer (a cloze
continuation that must begin with the object).
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable

MIN_ALIAS_CHARS = 4
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def fold(text: str) -> str:
    """Casefolded, accent-free words joined by single spaces ("Grabar-Kitarović!" -> "grabar kitarovic")."""
    decomposed = unicodedata.normalize("NFKD", str(text))
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _NON_WORD.sub(" ", plain.casefold()).strip()


def _letters(folded: str) -> int:
    return len(folded.replace(" ", ""))


def _on_boundaries(needle: str, haystack: str, anchored: bool) -> bool:
    padded = f" {haystack} "
    return padded.startswith(f" {needle} ") if anchored else f" {needle} " in padded


def answer_matches(answer: str, targets: Iterable[str], aliases: Iterable[str] = (), *,
                   anchored: bool = False) -> bool:
    """Whether ``answer`` gives one of ``targets`` (or an acceptable alias); see the module docstring."""
    a = fold(answer)
    if not a:
        return False
    for t in targets:
        f = fold(t) if t else ""
        if f and _on_boundaries(f, a, anchored):
            return True
    for al in aliases:
        f = fold(al) if al else ""
        if not f:
            continue
        if _letters(f) >= MIN_ALIAS_CHARS:
            if _on_boundaries(f, a, anchored):
                return True
        elif a == f:
            return True
    return False


def names_match(answer: str, names: Iterable[str], *, anchored: bool = False) -> bool:
    """``answer_matches`` for a list whose first entry is the target and the rest its aliases (MQuAKE's shape)."""
    names = [n for n in names if n]
    return answer_matches(answer, names[:1], names[1:], anchored=anchored) if names else False
