"""The relation catalogue is written from relation definitions, not copied from MQuAKE.

MQuAKE's template files (``question-templates.json``, ``cloze-templates.json``)
and its few-shot file (``rel-prompts.json``) are read here only to *check* the
catalogue: no catalogue phrasing may equal a benchmark template or be a near
copy of one, no few-shot example may be one of the benchmark's, and the
catalogue's matcher must still read the benchmark's templates as the right
relations (that is, the hand-written phrasings generalise).

The benchmark files live in ``../shared/data/mquake`` beside the project's
folder (``$MEMEDIT_DATA_DIR/mquake`` when that is set). Without them these
tests fail with a message saying so: a check that cannot see what it checks
against must not pass.
"""
from __future__ import annotations

import json
import os
import re
from difflib import SequenceMatcher
from pathlib import Path

import pytest

from memedit.methods.multihop import fold
from memedit.methods.relations import Catalogue, Relation

#: token-level or character-level similarity at or above this is a near copy
NEAR_COPY = 0.9
#: the least share of the benchmark's templates the matcher must read as the right relation (a regression floor,
#: well below what the catalogue reaches; `python benchmarks/relation_coverage.py` prints the figures)
COVERAGE_FLOOR = 0.75

#: ``$MEMEDIT_DATA_DIR/mquake``, else ``../shared/data/mquake`` from the project's root
MQUAKE_DIR = Path(os.environ.get("MEMEDIT_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data") \
    / "mquake"

_PLACEHOLDER = re.compile(r"\[x\]|\{\}|_{2,}")
_TOKEN = re.compile(r"\{\}|'s|[^\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    """Case-folded, placeholders (``[X]``, ``{}``, ``__``) unified as ``{}``, whitespace collapsed, trailing
    punctuation and a trailing placeholder dropped ("[X] is a citizen of __" -> "{} is a citizen of").

    A cloze template ends with the object's blank and ours end before the object; dropping any trailing
    placeholder does the same to both sides of a comparison, so it never hides a difference.
    """
    t = _PLACEHOLDER.sub(" {} ", text.casefold())
    t = re.sub(r"\s+", " ", t).strip()
    while True:
        stripped = re.sub(r"(\s*[.?!,;:])+$", "", t).strip()
        stripped = re.sub(r"\s*\{\}$", "", stripped).strip() if stripped != "{}" else stripped
        if stripped == t:
            return t
        t = stripped


def without_placeholders(norm: str) -> str:
    """A normalised text with its placeholders removed ("{} is a citizen of" -> "is a citizen of")."""
    return re.sub(r"\s+", " ", norm.replace("{}", " ")).strip()


def tokens(norm: str) -> list[str]:
    return _TOKEN.findall(norm)


def copy_reason(phrasing: str, template: str) -> str | None:
    """Why ``phrasing`` counts as a copy of the benchmark ``template``, or None.

    Compared with and without placeholders (a relation phrase has none):
    equality, token-level SequenceMatcher ratio >= 0.9, and character-level
    ratio >= 0.9 (which catches a copy with a typo fixed, "univeristy" ->
    "university", that changes a whole token).
    """
    a, b = normalise(phrasing), normalise(template)
    for x, y, how in ((a, b, "with placeholders"), (without_placeholders(a), without_placeholders(b), "without")):
        if not x or not y:
            continue
        if x == y:
            return f"equal after normalisation ({how}): {x!r}"
        tok = SequenceMatcher(None, tokens(x), tokens(y), autojunk=False).ratio()
        if tok >= NEAR_COPY:
            return f"token similarity {tok:.2f} ({how}): {x!r} ~ {y!r}"
        char = SequenceMatcher(None, x, y, autojunk=False).ratio()
        if char >= NEAR_COPY:
            return f"character similarity {char:.2f} ({how}): {x!r} ~ {y!r}"
    return None


def phrasings(r: Relation) -> list[str]:
    """Every string of the relation that says the relation: label excepted (Wikidata's own name for it)."""
    return [*r.phrases, *r.questions, *r.clozes, *([r.description] if r.description else [])]


@pytest.fixture(scope="module")
def mquake() -> dict[str, object]:
    folder = MQUAKE_DIR.expanduser()
    names = ("question-templates.json", "cloze-templates.json", "rel-prompts.json")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        pytest.fail(f"the MQuAKE template files {missing} are not in {folder}: this check compares the relation "
                    f"catalogue with them and cannot run without them (put the shared data at ../shared/data or "
                    f"set MEMEDIT_DATA_DIR)")
    return {n: json.loads((folder / n).read_text(encoding="utf-8")) for n in names}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load()


def _templates(mquake: dict[str, object]) -> list[tuple[str, str, str]]:
    """(file, relation id, template) for every benchmark template."""
    out = []
    for name in ("question-templates.json", "cloze-templates.json"):
        doc = mquake[name]
        assert isinstance(doc, dict) and len(doc) >= 40, f"{name} is not MQuAKE's relation -> template table"
        out += [(name, rid, t) for rid, t in doc.items()]
    return out


# --------------------------------------------------------------------------- the checks themselves


def test_the_normalisation_and_the_copy_check_do_what_they_say() -> None:
    assert normalise("[X] is a citizen of __") == normalise("{} is a citizen of") == "{} is a citizen of"
    assert normalise("  Which   country is [X] located in? ") == "which country is {} located in"
    assert copy_reason("{} is a citizen of", "[X] is a citizen of __")
    assert copy_reason("citizen of", "[X] is a citizen of __") is None                 # a short phrase is not a copy
    assert copy_reason("is a citizen of", "[X] is a citizen of __")                    # ... the whole template is
    assert copy_reason("The university where {} was educated is", "The univeristy where [X] was educated is __")
    assert copy_reason("Which country does {} hold citizenship of?", "What is the country of citizenship of [X]?") \
        is None


# --------------------------------------------------------------------------- the catalogue against the benchmark


def test_every_relation_says_itself_several_ways(catalogue: Catalogue) -> None:
    for r in catalogue.relations:
        assert r.description, r.id
        assert len(r.phrases) >= 3 and len(r.questions) >= 2 and len(r.clozes) >= 2, r.id
        assert len(r.examples) >= 2, r.id
        assert not any(c.rstrip().endswith(("?", ".")) for c in r.clozes), f"{r.id}: a cloze ends before its object"


def test_no_catalogue_phrasing_is_a_benchmark_template_or_a_near_copy(catalogue: Catalogue,
                                                                      mquake: dict[str, object]) -> None:
    templates = _templates(mquake)
    copies = []
    for r in catalogue.relations:
        for p in phrasings(r):
            for name, rid, t in templates:
                why = copy_reason(p, t)
                if why:
                    copies.append(f"{r.id} {p!r} vs {name} {rid} {t!r}: {why}")
    assert not copies, f"{len(copies)} catalogue phrasings copy MQuAKE templates:\n" + "\n".join(copies)


def test_no_fewshot_example_is_one_of_the_benchmarks(catalogue: Catalogue, mquake: dict[str, object]) -> None:
    prompts = mquake["rel-prompts.json"]
    assert isinstance(prompts, dict) and prompts, "rel-prompts.json is not MQuAKE's relation -> few-shot table"
    qa = []
    for text in prompts.values():
        for line in str(text).splitlines():
            m = re.match(r"\s*Q:\s*(.*?)\s*A:\s*(.*?)\s*$", line)
            if m:
                qa.append((fold(m.group(1)), fold(m.group(2))))
    assert len(qa) > 100, "rel-prompts.json holds no 'Q: ... A: ...' lines"
    taken = [f"{r.id} {s!r} -> {o!r}" for r in catalogue.relations for s, o in r.examples
             if any(fold(o) == a and re.search(rf"(?<!\w){re.escape(fold(s))}(?!\w)", q) for q, a in qa)]
    assert not taken, "few-shot examples that are MQuAKE's:\n" + "\n".join(taken)


def test_the_matcher_reads_the_benchmark_templates_as_their_relations(catalogue: Catalogue,
                                                                       mquake: dict[str, object]) -> None:
    """Coverage: the catalogue has every MQuAKE relation, and reads most of the benchmark's templates right.

    The templates are unseen text for the catalogue, so this measures how well
    the hand-written phrasings generalise; P131 and P276 share their templates
    word for word and "The [X] is __" (P1308) says nothing, so 44 of 44 is not
    reachable.
    """
    templates = _templates(mquake)
    ids = {rid for _, rid, _ in templates}
    missing = sorted(ids - {r.id for r in catalogue.relations})
    assert not missing, f"MQuAKE relations the catalogue lacks: {missing}"
    right = {name: 0 for name in ("question-templates.json", "cloze-templates.json")}
    wrong = []
    for name, rid, t in templates:
        got, score = catalogue.relation_of_template(as_edit_template(t))
        if got.id == rid:
            right[name] += 1
        else:
            wrong.append(f"{name} {rid} {t!r} -> {got.id} ({score:.2f})")
    for name, n in right.items():
        total = sum(1 for f, _, _ in templates if f == name)
        assert n >= COVERAGE_FLOOR * total, f"{name}: {n} of {total} read right\n" + "\n".join(wrong)


def as_edit_template(template: str) -> str:
    """A benchmark template as an edit's prompt: ``[X]`` -> ``{}``, the object blank ``__`` dropped."""
    return re.sub(r"\s*_{2,}\s*$", "", template.replace("[X]", "{}")).strip()


def test_the_check_fails_on_a_copied_catalogue(tmp_path: Path, mquake: dict[str, object]) -> None:
    """The copy check can fail: a catalogue whose P27 cloze is the benchmark's is caught."""
    copied = {"relations": [{"id": "P27", "label": "country of citizenship", "type": "country",
                             "phrases": ["nationality"], "questions": ["Which passport does {} hold?"],
                             "clozes": [as_edit_template(mquake["cloze-templates.json"]["P27"])],
                             "examples": [["Frida Kahlo", "Mexico"]]}]}
    path = tmp_path / "copied.json"
    path.write_text(json.dumps(copied), encoding="utf-8")
    cat = Catalogue.load(path)
    hits = [t for _, _, t in _templates(mquake) for p in phrasings(cat["P27"]) if copy_reason(p, t)]
    assert hits == [mquake["cloze-templates.json"]["P27"]]


class _CountingEmbedder:
    """The real packaged embedder, counting the texts it is asked to encode."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.encoded = inner, inner.name, 0

    def encode(self, texts, show_progress: bool = False):
        self.encoded += len(texts)
        return self.inner.encode(texts)


def test_catalogue_vectors_are_cached_between_processes(tmp_path: Path, embedder, monkeypatch) -> None:
    monkeypatch.setenv("MEMEDIT_CACHE_DIR", str(tmp_path / "cache"))
    first = _CountingEmbedder(embedder)
    a = Catalogue.load(embedder=first)
    rel, score = a.relation_of_template("{} is a citizen of")
    assert first.encoded > 100  # the phrases and forms were embedded once
    files = sorted((tmp_path / "cache" / "catalogue-vectors").glob("*.safetensors"))
    assert len(files) == 2 and not list(files[0].parent.glob(".*tmp*"))
    second = _CountingEmbedder(embedder)
    b = Catalogue.load(embedder=second)
    assert b.relation_of_template("{} is a citizen of") == (b[rel.id], pytest.approx(score, abs=1e-6))
    assert second.encoded == 1  # only the template itself: the catalogue came from the cache
    assert (b._vectors()[0] == a._vectors()[0]).all()
    # a damaged cache file is a cache miss, re-embedded and rewritten
    for f in files:
        f.write_bytes(b"not safetensors")
    third = _CountingEmbedder(embedder)
    c = Catalogue.load(embedder=third)
    assert c.relation_of_template("{} is a citizen of")[0].id == rel.id and third.encoded > 100
    assert all(f.stat().st_size > 1000 for f in files)
