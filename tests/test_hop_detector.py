"""The multi-hop detector the router uses (MeLLo.claims): the packaged artifact, on real questions and a real store."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from memedit import Edit, EditStore
from memedit.methods.hop_detector import HopDetector, HopDetectorError, masked, packaged_detector
from memedit.methods.mello import MeLLo

# Single-hop questions that ask exactly an edit's fact (shapes that evaluations saw MeLLo claim wrongly)
SINGLE = [
    "What sports team was Petteri Nummelin a member of?",
    "What programming language was used to write GNOME Chess?",
    "What language is IRIB Amoozesh written?",
    "Who had the role of director in The Last Days?",
    "To which fictional work does Esther Bloom belong in?",
    "Kim Philby was born in",
    "What is the capital of France?",
    "Which country is Ellie Kemper a citizen of?",
]
MULTI = [
    "Who leads the nation where Ellie Kemper holds citizenship?",
    "Where was the person who wrote Tetris born?",
    "Who is the head of state of the country where Ellie Kemper holds a citizenship?",
    "What is the name of the head of state of the country that Ellie Kemper is a citizen of?",
    "Which language is official in the homeland of Ellie Kemper's husband?",
]


def test_packaged_artifact_records_its_training() -> None:
    det = packaged_detector()
    meta = det.meta
    assert meta["training"]["side"] == "tune" and len(meta["split"]["sha256"]) == 64
    assert len(meta["training"]["data_sha256"]) == 64 and 0.0 < det.threshold < 1.0


@pytest.mark.parametrize("question", SINGLE)
def test_single_hop_questions_are_not_multi_hop(question: str) -> None:
    assert not packaged_detector().is_multi_hop(question), question


@pytest.mark.parametrize("question", MULTI)
def test_freely_phrased_multi_hop_questions_are(question: str) -> None:
    assert packaged_detector().is_multi_hop(question), question


def test_masking_uses_the_stored_subject() -> None:
    assert masked("Which city was cricket created in?", ["cricket"]) == "Which city was X created in?"


def test_a_damaged_artifact_is_refused(tmp_path: Path) -> None:
    src = HopDetector.artifact_paths()
    for p in src:
        shutil.copy(p, tmp_path / p.name)
    meta = json.loads((tmp_path / src[0].name).read_text())
    meta["struct_features"] = meta["struct_features"][:-1]
    (tmp_path / src[0].name).write_text(json.dumps(meta))
    with pytest.raises(HopDetectorError):
        HopDetector.load(tmp_path)


def test_mello_claims_by_meaning_on_a_real_store(tmp_path: Path) -> None:
    store = EditStore(tmp_path / "s.db")
    store.add(Edit.fact("Petteri Nummelin", "{} plays for", "Kalev"))
    store.add(Edit.fact("Ellie Kemper", "{} is a citizen of", "Croatia"))
    mello = MeLLo(store)
    assert not mello.claims("What sports team was Petteri Nummelin a member of?", "default")
    assert mello.claims("Who leads the nation where Ellie Kemper holds citizenship?", "default")
    old = MeLLo(store, hop_detector=None)  # the relation-count rule reads the first as two hops
    assert old.claims("What sports team was Petteri Nummelin a member of?", "default")
    store.close()


def test_mello_does_not_claim_what_its_loop_cannot_start(tmp_path, embedder) -> None:
    """A question the detector reads as multi-hop but in which the structured loop finds no chain of relations would
    get "I cannot answer this" (or a one-hop guess) from MeLLo; it is left to the single-hop routes."""
    from memedit.edits import Edit
    from memedit.methods.mello import MeLLo
    from memedit.store import EditStore

    store = EditStore(tmp_path / "s.db", embedder=embedder)
    store.add(Edit.fact("Vesna Harrow", "The final year of {} is", "1912"))
    store.add(Edit.fact("Tomas Rindell", "The country of citizenship of {} is", "Estonia"))
    store.add(Edit.fact("Estonia", "The head of state of {} is", "Mart Ilves"))
    mello = MeLLo()
    mello.store = store
    names = mello.facts().names("default")
    odd = "What is the final year of Vesna Harrow?"
    assert mello.hop_detector().is_multi_hop(odd, names)  # the detector's mistake this guards against
    assert not mello.decompose(odd, "default").relations
    assert not mello.claims(odd, "default")
    assert mello.claims("Who is the head of state of the country Tomas Rindell is a citizen of?", "default")
