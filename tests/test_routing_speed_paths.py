"""The router's fast paths give the answers of the straightforward computation.

``Router.prepare`` embeds the question once (through :class:`memedit.embeddings.Embedder`'s
one-text path, which skips ``SentenceTransformer.encode``'s bookkeeping and, for the packaged
BERT encoder, transformers' per-module machinery) and hands the scope classifier the vectors the
store already holds for the retrieved edits instead of embedding their texts again. These tests
compare that with the plain computation (``SentenceTransformer.encode`` for every text, the
classifier on freshly embedded edit texts) on real edits and questions: the scope-classifier data
and CounterFact from ``../shared/data`` when it is there, a built-in handful otherwise. Real parts
throughout: the packaged MiniLM embedder and scope classifier, a SQLite/FAISS store;
langchain-core's FakeListChatModel stands in as the base model, which ``prepare`` never calls.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from memedit.edits import Edit
from memedit.embeddings import Embedder, _LeanBert
from memedit.errors import NotFoundError
from memedit.fact_match import pair_texts
from memedit.route import Router
from memedit.scope import ScopeClassifier
from memedit.scope_train import default_data_dir
from memedit.store import EditStore, SearchHit

N_SCOPE_EDITS = 120  # edit-questions.jsonl rows stored (text edits)
N_FACTS = 40  # CounterFact rows stored (fact edits with a paraphrase: several vectors per edit)

BUILTIN_EDITS = [
    "The current president of the US is Trump",
    "Carl Sagan is employed by British Broadcasting Corporation",
    "The author of Paradiso is Jean Giraudoux",
    "The capital of Australia is Sydney",
    "Lionel Messi plays for Inter Miami",
]
BUILTIN_QUESTIONS = [
    "Who is the president of the United States?", "Who is Trump?", "Where does Carl Sagan work?",
    "Who wrote Paradiso?", "What is the capital of Australia?", "Which club does Messi play for?",
    "What is the capital of France?", "How many legs does a spider have?", "Who painted the Mona Lisa?",
]
UNRELATED = ["What is the boiling point of water?", "Explain photosynthesis in one sentence.", "What is 12 times 7?",
             "Which planet is known as the red planet?", "What currency is used in Japan?"]


def _jsonl(path: Path, n: int) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(n), fh)]


def _template(row: dict) -> str | None:
    """CounterFact's prompt with the subject replaced by ``{}`` (None when the subject is not in it)."""
    return row["prompt"].replace(row["subject"], "{}", 1) if row["subject"] in row["prompt"] else None


@pytest.fixture(scope="module")
def corpus() -> tuple[list[Edit], list[str]]:
    """Edits and questions: real benchmark data when ``../shared/data`` is present, else a built-in handful."""
    data = default_data_dir()
    scope, cf = data / "scope" / "edit-questions.jsonl", data / "counterfact" / "counterfact-dev.jsonl"
    if not (scope.is_file() and cf.is_file()):
        edits = [Edit.text(s) for s in BUILTIN_EDITS]
        edits.append(Edit.fact("Danielle Darrieux", "The mother tongue of {} is", "English",
                               paraphrases=["Where {} is from, people speak the language of"]))
        return edits, BUILTIN_QUESTIONS + ["What language does Danielle Darrieux speak?"]
    rows = _jsonl(scope, N_SCOPE_EDITS)
    facts = [r for r in _jsonl(cf, 3 * N_FACTS) if _template(r) and "{}" in r["rephrase_prompt"].replace(
        r["subject"], "{}", 1)][:N_FACTS]
    edits = [Edit.text(r["edit"]) for r in rows]
    edits += [Edit.fact(r["subject"], _template(r), r["target_new"],
                        paraphrases=[r["rephrase_prompt"].replace(r["subject"], "{}", 1)]) for r in facts]
    # in scope (a question of each of 30 text edits, the rephrasing of 10 facts), then locality and unrelated
    questions = [r["questions"][i % len(r["questions"])] for i, r in enumerate(rows[::4])]
    questions += [r["rephrase_prompt"] for r in facts[:10]] + [r["locality_prompt"] for r in facts[:10]] + UNRELATED
    return edits, questions


@pytest.fixture(scope="module")
def store(corpus, embedder, tmp_path_factory: pytest.TempPathFactory):
    edits, _ = corpus
    with EditStore(tmp_path_factory.mktemp("speed") / "speed.db", embedder=embedder) as s:
        s.add_many(edits)
        yield s


@pytest.fixture(scope="module")
def classifier() -> ScopeClassifier:
    return ScopeClassifier.load()


def _router(store: EditStore, classifier: ScopeClassifier) -> Router:
    return Router(store, FakeListChatModel(responses=["unused"]), classifier=classifier, policy="ike", mello=False)


@pytest.fixture(scope="module")
def st_embedder() -> Embedder:
    """The packaged MiniLM through sentence-transformers (the backend GPU users get), whose one-text path is tested."""
    return Embedder.shared(backend="sentence-transformers")


def _st_encode(embedder, texts: list[str]) -> np.ndarray:
    """The straightforward embedding: sentence-transformers' own ``encode`` where that is the backend, else the
    embedder's batch path (the NumPy backend has no separate one-text path)."""
    if embedder.backend != "sentence-transformers":
        return embedder.encode(list(texts))
    return np.asarray(embedder._model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True),
                      dtype=np.float32)


# ---- the embedder's one-text path -------------------------------------------------------------------

def test_one_text_encode_is_bit_identical_to_sentence_transformers(st_embedder, corpus) -> None:
    embedder, (edits, questions) = st_embedder, corpus
    texts = questions[:25] + [t for e in edits[:10] for t in e.search_texts()] + [
        "x", "?", "   padded   ", "Ünïcode — 東京 is where?", "1999 or 2000",
        "Where does Carl Sagan work? " * 60,  # longer than the model's 256 tokens: truncated alike
    ]
    for text in texts:
        fast, plain = embedder.encode([text]), _st_encode(embedder, [text])
        assert fast.dtype == np.float32 and fast.shape == (1, embedder.dim)
        assert np.array_equal(fast, plain), f"{text!r}: max difference {np.abs(fast - plain).max()}"
    # The packaged encoder takes the lean forward (it agreed with the model on its first text); if a library
    # update makes it disagree it turns itself off, which keeps vectors right but routing slower: say so here.
    assert isinstance(embedder._lean, _LeanBert), "the lean BERT forward is off for the packaged embedder"


def test_lean_forward_declines_what_it_does_not_reproduce(st_embedder) -> None:
    embedder = st_embedder
    embedder.encode(["warm"])
    lean = embedder._lean
    assert isinstance(lean, _LeanBert)
    model = embedder._model
    two = model.preprocess(["a short one", "and a somewhat longer second text"])  # padded batch
    assert lean.sentence_embedding(two) is None
    one = model.preprocess(["one text"])
    assert lean.sentence_embedding({**one, "prompt_length": 2}) is None  # inputs it does not know
    assert lean.sentence_embedding(one) is not None


def test_a_lean_forward_that_disagrees_is_turned_off(st_embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = st_embedder

    class Drifting(_LeanBert):
        def sentence_embedding(self, features):
            out = super().sentence_embedding(features)
            return None if out is None else out * (1 + 1e-6)  # a last-bit change, as a library update might bring

    monkeypatch.setattr(embedder, "_lean", None)  # as after loading; restored after the test
    monkeypatch.setattr(_LeanBert, "build", classmethod(lambda cls, model: Drifting(list(model), model[0].model)))
    text = "Who is the employer of Carl Sagan?"
    first = embedder.encode([text])
    assert embedder._lean is False
    assert np.array_equal(first, _st_encode(embedder, [text]))
    assert np.array_equal(embedder.encode([text]), first)


# ---- stored vectors instead of re-embedding ------------------------------------------------------------

def test_search_hits_carry_the_stored_vector_of_the_matched_text(store: EditStore, embedder, corpus) -> None:
    _, questions = corpus
    conn = sqlite3.connect(store.path)
    try:
        multi = 0
        for q in questions[:30]:
            for hit in store.search_vector(embedder.encode([q])[0], k=5):
                texts = hit.edit.search_texts()
                rows = conn.execute("SELECT vec FROM vectors WHERE edit_id = ? ORDER BY k", [hit.edit.id]).fetchall()
                stored = np.frombuffer(rows[texts.index(hit.matched_text)][0], dtype=np.float32)
                assert hit.vector is not None and np.array_equal(hit.vector, stored)
                # it is the matched text's vector: re-embedding that text alone gives it up to float noise
                assert float(hit.vector @ embedder.encode([hit.matched_text])[0]) > 1 - 1e-5
                assert np.isclose(float(hit.vector @ embedder.encode([q])[0]), hit.score, atol=1e-5)
                multi += len(texts) > 1
    finally:
        conn.close()
    assert multi, "no edit with several stored vectors was retrieved; the test data should include some"
    hit = store.search_vector(embedder.encode([questions[0]])[0], k=1)[0]
    assert "vector" not in hit.to_dict() and hit == SearchHit(hit.edit, hit.score, hit.matched_text)


def test_prepare_matches_the_straightforward_computation(store: EditStore, classifier, embedder, corpus) -> None:
    """Same routes, same edits used and left as candidates, probabilities within 1e-6, on real questions."""
    _, questions = corpus
    router = _router(store, classifier)
    threshold, routed, worst = router.threshold, 0, 0.0
    matched_all: set[str] = set()
    fact_texts: set[str] = set()
    for q in questions:
        prepared = router.prepare(q)
        text = q.strip()
        qvec = _st_encode(embedder, [text])
        hits = store.search_vector(qvec[0], k=router.k)
        matched = [h.matched_text for h in hits]
        ref = classifier.predict_proba([text] * len(hits), matched, q_vecs=np.repeat(qvec, len(hits), axis=0),
                                       e_vecs=_st_encode(embedder, matched)) if hits else np.zeros(0)
        got = {u.edit.id: u for u in prepared.used + prepared.candidates}
        assert sorted(got) == sorted(h.edit.id for h in hits), q
        for hit, p in zip(hits, ref):
            u = got[hit.edit.id]
            worst = max(worst, abs(u.scope_probability - float(p)))
            assert abs(u.scope_probability - float(p)) <= 1e-6, (q, hit.matched_text, u.scope_probability, float(p))
            assert u.similarity == pytest.approx(hit.score, abs=1e-6) and u.matched_text == hit.matched_text
            if abs(float(p) - threshold) > 1e-6:  # a decision a float's last bit cannot flip
                assert (u in prepared.used) == (p >= threshold), (q, hit.matched_text)
        expected = sorted((h.edit.id for h, p in zip(hits, ref) if p >= threshold), key=lambda i: -got[i].scope_probability)
        assert prepared.edit_ids == expected
        assert prepared.route == ("ike" if expected else "base")
        routed += bool(expected)
        matched_all.update(matched)
        for u in prepared.used:
            if u.edit.kind == "fact":
                fact_texts.update(pair_texts(text, u.edit))
    # both kinds of question occurred, so both branches were compared
    assert 0 < routed < len(questions), routed
    cached = set(router._vec_cache)
    assert not cached & matched_all, "candidate texts were embedded although the store holds their vectors"
    # the only texts embedded are those the fact check compares (the question and an in-scope fact edit's prompt,
    # each also with the subject masked)
    assert cached <= fact_texts, cached - fact_texts


def test_hits_without_a_stored_vector_are_embedded(store: EditStore, classifier, embedder) -> None:
    """A store that returns no vectors (PostgreSQL today) still gets the matched texts' vectors, embedded."""
    router = _router(store, classifier)
    hits = store.search_vector(embedder.encode(["Who wrote Paradiso?"])[0], k=3)
    bare = [SearchHit(h.edit, h.score, h.matched_text) for h in hits]
    mixed = [bare[0], *hits[1:]]
    assert np.array_equal(router._hit_vectors(hits), np.stack([h.vector for h in hits]))
    vecs = router._hit_vectors(mixed)
    assert np.array_equal(vecs[0], router._embed([hits[0].matched_text])[0])
    assert np.array_equal(vecs[1:], np.stack([h.vector for h in hits[1:]]))
    assert np.allclose(router._hit_vectors(bare), np.stack([h.vector for h in hits]), atol=1e-5)


def test_namespaces_are_checked_once_but_unknown_ones_still_fail(store: EditStore, classifier) -> None:
    router = _router(store, classifier)
    router.prepare("Who wrote Paradiso?")
    for _ in range(2):  # not remembered as known after failing
        with pytest.raises(NotFoundError):
            router.prepare("Who wrote Paradiso?", "no-such-tenant")
    store.create_namespace("speed-late")  # created after the router started answering
    assert router.prepare("Who wrote Paradiso?", "speed-late").route == "base"  # nothing stored there
