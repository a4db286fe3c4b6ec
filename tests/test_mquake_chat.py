"""The chat phrasings that `memedit eval mquake --through chat` types: ours, at least three per relation, read back."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from memedit.corrections import detect_correction
from memedit.eval.mquake_chat import phrasings, typed_message
from memedit.triples import read_triple

MQUAKE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mquake"


def _norm(t: str) -> str:
    return re.sub(r"\s+", " ", t.replace("[X]", "{s}").replace("{}", "{s}").replace("__", "").strip().lower()).rstrip(".")


def test_at_least_three_phrasings_per_relation_and_a_stable_choice() -> None:
    ph = phrasings()
    assert len(ph) >= 25 and all(len(v) >= 3 for v in ph.values())
    a = typed_message("7", "P27", "Ada Lovelace", "Kenya", "{} x")
    assert a == typed_message("7", "P27", "Ada Lovelace", "Kenya", "{} x") and "Kenya" in a


@pytest.mark.skipif(not (MQUAKE / "cloze-templates.json").is_file(), reason="needs ../shared/data/mquake")
def test_phrasings_are_not_the_benchmark_templates() -> None:
    templates = set()
    for name in ("cloze-templates.json", "question-templates.json"):
        templates |= {_norm(t) for t in json.loads((MQUAKE / name).read_text()).values()}
    for rel, forms in phrasings().items():
        for f in forms:
            body = _norm(re.sub(r"^(actually|no|fyi|correction)[,:]\s*", "", f, flags=re.I).replace(" {o}", ""))
            assert body not in templates, (rel, f)


def test_most_typed_edits_are_read_as_their_relation() -> None:
    """Each relation's phrasings, typed about a made-up subject, come back as a correction read as that relation."""
    ph = phrasings()
    total = right = 0
    for rel, forms in ph.items():
        for f in forms:
            c = detect_correction(f.format(s="Mira Okafor", o="Zenith Halvorsen"))
            total += 1
            t = read_triple(c.statement) if c is not None else None
            right += t is not None and t.relation == rel
    assert right / total >= 0.6, (right, total)
