"""LangChain's own standard test suites (``langchain-tests``) on memedit's LangChain classes.

``MemoryChatModel`` runs the chat-model unit and integration suites twice: over a streaming fake inner model
(LangChain's ``GenericFakeChatModel``, so every route streams natively) and over the packaged SmolLM2
(``LocalChatModel``). ``EditRetriever`` runs the retriever integration suite over a real store. Each skip is a
capability the inner model lacks, set in the class below with the reason; nothing else is skipped by us (the
suites also skip what they are not configured for: multimodal inputs, VCR cassettes, environment-variable init).
"""
from __future__ import annotations

import itertools
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest

pytest.importorskip("langchain_tests", reason="langchain-tests is not installed (the test extra)")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage  # noqa: E402
from langchain_tests.integration_tests import ChatModelIntegrationTests, RetrieversIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from memedit import Edit, EditStore  # noqa: E402
from memedit.editor import Editor  # noqa: E402
from memedit.integrations.langchain import EditRetriever, LocalChatModel, MemoryChatModel  # noqa: E402

WORKDIR = Path(tempfile.mkdtemp(prefix="memedit-lc-standard-"))


def _streaming_inner() -> GenericFakeChatModel:
    """A fake chat model that streams its reply token by token (LangChain's own test double)."""
    return GenericFakeChatModel(messages=itertools.cycle([AIMessage(content="Hello there, how are you today?")]))


@lru_cache(maxsize=1)
def _local_inner() -> LocalChatModel:
    return LocalChatModel.from_name("smollm2-135m-instruct", max_new_tokens=16)


class _Capabilities:
    """What both inner models lack, so the suites must not expect it of the wrapper either."""

    @property
    def chat_model_class(self) -> type[MemoryChatModel]:
        return MemoryChatModel

    @property
    def has_tool_calling(self) -> bool:
        return False  # neither inner model calls tools (MemoryChatModel.bind_tools delegates to the inner one)

    @property
    def has_structured_output(self) -> bool:
        return False  # structured output needs tool calling or a JSON mode in the inner model

    @property
    def returns_usage_metadata(self) -> bool:
        return False  # neither inner model reports token usage (the wrapper passes the inner model's through)


class TestMemoryChatModelUnit(_Capabilities, ChatModelUnitTests):
    @property
    def chat_model_params(self) -> dict:
        return {"inner": _streaming_inner(), "store": str(WORKDIR / "unit.db")}


class TestMemoryChatModelOverAStreamingModel(_Capabilities, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict:
        return {"inner": _streaming_inner(), "store": str(WORKDIR / "fake.db")}


class TestMemoryChatModelOverTheLocalModel(_Capabilities, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict:
        return {"inner": _local_inner(), "store": str(WORKDIR / "local.db")}


@lru_cache(maxsize=1)
def _editor() -> Editor:
    store = EditStore(WORKDIR / "retriever.db")
    for text in ("The CEO of Acme Corp is Jane Roe.", "Acme Corp is headquartered in Springfield.",
                 "Acme Corp was founded in 1950.", "The CFO of Acme Corp is Bill Lumbergh."):
        store.add(Edit.text(text))
    store.add(Edit.text("The capital of Australia is Canberra."))
    return Editor(store=store)


class TestEditRetriever(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[EditRetriever]:
        return EditRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"editor": _editor()}

    @property
    def retriever_query_example(self) -> str:
        return "What do you know about Acme Corp?"


def test_the_retriever_takes_namespace_and_threshold_per_call() -> None:
    retriever = EditRetriever(editor=_editor())
    docs = retriever.invoke("Who is the CEO of Acme Corp?")
    assert docs and docs[0].page_content == "The CEO of Acme Corp is Jane Roe."
    scores = [d.metadata["scope_probability"] for d in retriever.invoke("What do you know about Acme Corp?", k=4)]
    assert len(scores) >= 2 and scores == sorted(scores, reverse=True)
    cut = (scores[0] + scores[-1]) / 2
    kept = retriever.invoke("What do you know about Acme Corp?", k=4, score_threshold=cut)
    assert 0 < len(kept) < len(scores) and all(d.metadata["scope_probability"] >= cut for d in kept)
    _editor().store.create_namespace("empty")
    assert retriever.invoke("Who is the CEO of Acme Corp?", namespace="empty") == []
    with pytest.raises(ValueError, match="k must be a positive integer"):
        retriever.invoke("Who is the CEO of Acme Corp?", k=0)
    with pytest.raises(ValueError, match="score_threshold"):
        retriever.invoke("Who is the CEO of Acme Corp?", score_threshold=1.5)
    with pytest.raises(TypeError):
        retriever.invoke("Who is the CEO of Acme Corp?", top_n=3)  # an unknown keyword is still an error


def test_tools_on_an_inner_model_without_them_say_which_capability_is_missing() -> None:
    chat = MemoryChatModel(inner=_streaming_inner(), store=str(WORKDIR / "tools.db"))
    with pytest.raises(NotImplementedError, match="does not support tool calling"):
        chat.bind_tools([{"type": "function", "function": {"name": "f", "parameters": {}}}])
