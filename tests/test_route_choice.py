"""policy='auto' takes the route measured best for the base model, and the recorded choice follows its figures."""
from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from memedit import Edit, EditStore
from memedit.errors import ValidationError
from memedit.eval.splits import default_split
from memedit.route import Router
from memedit.route_choice import CHOICE_PATH, choose, load_choices, measured_route

FACT = "The CEO of Acme is Jane Roe."
QUESTION = "Who is the CEO of Acme?"


def _mean_figures(entry: dict) -> dict[str, dict[str, float]]:
    """Per route, the mean over the recorded datasets (what choose() compares)."""
    datasets = list(entry["figures"].values())
    routes = set.intersection(*(set(d) for d in datasets))
    return {r: {k: sum(d[r][k] for d in datasets) / len(datasets) for k in ("rel_gen", "para_gen", "loc")}
            for r in routes}


def test_recorded_choices_follow_their_figures_and_split() -> None:
    doc = load_choices()
    assert doc["split_sha256"] == default_split().sha256, "re-measure the route choice on the current split"
    for name, entry in doc["models"].items():
        assert entry["route"] == choose(_mean_figures(entry)), name
    assert measured_route("smollm2-135m-instruct") == doc["models"]["smollm2-135m-instruct"]["route"]
    assert measured_route("never-measured") is None and measured_route(None) is None


def test_choose_prefers_answers_then_locality() -> None:
    assert choose({"ike": {"rel_gen": 0.9, "para_gen": 0.9, "loc": 0.9},
                   "serac": {"rel_gen": 1.0, "para_gen": 0.7, "loc": 1.0}}) == "ike"
    assert choose({"ike": {"rel_gen": 0.8, "para_gen": 0.8, "loc": 0.95},
                   "serac": {"rel_gen": 0.8, "para_gen": 0.8, "loc": 1.0}}) == "serac"


def test_a_broken_choice_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "choice.json"
    bad.write_text('{"models": {"m": {"route": "weights"}}}', encoding="utf-8")
    with pytest.raises(ValidationError, match="route in"):
        load_choices.__wrapped__(str(bad))
    assert CHOICE_PATH.is_file()


@pytest.fixture
def store(tmp_path: Path, embedder) -> EditStore:
    s = EditStore(tmp_path / "auto.db", embedder=embedder)
    s.add(Edit.text(FACT))
    yield s
    s.close()


def test_auto_takes_the_measured_route_for_the_packaged_model(store: EditStore) -> None:
    router = Router(store, "smollm2-135m-instruct")       # a name: nothing loads to decide the route
    assert router.prepare(QUESTION).route == measured_route("smollm2-135m-instruct") == "serac"
    assert router.prepare("What is the capital of France?").route == "base"
    assert not router.base.loaded


def test_auto_falls_back_where_nothing_was_measured(store: EditStore) -> None:
    from memedit.methods.serac import SERAC

    plain = Router(store, "smollm2-135m-instruct", serac=SERAC(adapter=None))   # SERAC without its adapter
    assert plain.prepare(QUESTION).route == "ike"
    remote = Router(store, FakeListChatModel(responses=["x"]))                  # the user's own chat model
    assert remote.prepare(QUESTION).route == "ike"                               # answers, with the edit in view


def test_auto_finds_the_measured_route_through_langchain(store: EditStore) -> None:
    """The packaged SmolLM2 wrapped as a LangChain model is still the model that measured better with SERAC."""
    from memedit.integrations.langchain import LocalChatModel
    from memedit.models.backends import LazyBackend, LocalLM

    lazy = LazyBackend(lambda: LocalLM.from_name("smollm2-135m-instruct"), name="smollm2-135m-instruct")
    wrapped = LocalChatModel(backend=lazy, model_name="smollm2-135m-instruct")
    assert Router(store, wrapped).prepare(QUESTION).route == "serac"
    assert not lazy.loaded  # deciding the route loads no model
