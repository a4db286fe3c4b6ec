"""The LangChain integration: MemoryChatModel, EditRetriever, LocalChatModel, per-user namespaces, events.

Wiring tests use langchain-core's own fake chat models as the inner model (subclassed to record what they
were sent) over a real store, the real packaged embedder and scope classifier; the end-to-end tests use the
real packaged SmolLM2 through memedit's registry.
"""
from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from pydantic import Field

from memedit.errors import ValidationError
from memedit.integrations.langchain import (
    ROUTE_EVENT,
    EditRetriever,
    LocalChatModel,
    MemoryChatModel,
    namespace_for_user,
    namespace_from_config,
    to_role_dicts,
)
from memedit.store import EditStore

ALICE = {"configurable": {"user_id": "alice"}}
BOB = {"configurable": {"user_id": "bob"}}
CEO = "Actually, the CEO of Acme is Jane Roe now."
CEO_Q = "Who is the CEO of Acme?"
FRANCE = "What is the capital of France?"




class RecordingChat(FakeListChatModel):
    """langchain-core's FakeListChatModel that remembers each conversation and keyword arguments it got."""

    calls: list[dict[str, Any]] = Field(default_factory=list)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
        self.calls.append({"messages": list(messages), "stop": stop, "kwargs": dict(kwargs)})
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


class ToolChat(GenericFakeChatModel):
    """GenericFakeChatModel that supports bind_tools (as provider models do) and records what it got."""

    calls: list[dict[str, Any]] = Field(default_factory=list)

    def bind_tools(self, tools, **kwargs):  # type: ignore[override]
        from langchain_core.utils.function_calling import convert_to_openai_tool

        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
        self.calls.append({"messages": list(messages), "stop": stop, "kwargs": dict(kwargs)})
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


class EventRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any, Any]] = []

    def on_custom_event(self, name, data, *, run_id, tags=None, metadata=None, **kwargs):  # type: ignore[override]
        self.events.append((name, data, run_id))


@pytest.fixture
def store(tmp_path: Path, embedder) -> EditStore:
    s = EditStore(tmp_path / "chat.db", embedder=embedder)
    yield s
    s.close()


@pytest.fixture
def inner() -> RecordingChat:
    return RecordingChat(responses=["Paris."])


@pytest.fixture
def chat(inner: RecordingChat, store: EditStore) -> MemoryChatModel:
    return MemoryChatModel(inner=inner, store=store, policy="ike")


def _meta(msg: AIMessage) -> dict[str, Any]:
    assert msg.response_metadata["memedit"] == msg.additional_kwargs["memedit"]
    return msg.response_metadata["memedit"]


def _prompt_text(call: dict[str, Any]) -> str:
    return "\n".join(str(m.content) for m in call["messages"])


# --------------------------------------------------------------------------- namespaces from config


def test_doctests() -> None:
    import doctest

    import memedit.chat
    import memedit.integrations.langchain

    for module in (memedit.integrations.langchain, memedit.chat):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_namespace_for_user_is_safe_and_injective() -> None:
    assert namespace_for_user("u42") == "users/u42"
    assert namespace_for_user(42) == "users/42"
    assert namespace_for_user("u42", prefix="acme/users") == "acme/users/u42"
    odd = ["Alice", "alice@example.com", "../../etc", "a/b", "ALICE", "Ålice", "x" * 300, " alice", "-1"]
    names = {namespace_for_user(u) for u in odd} | {namespace_for_user("alice")}
    assert len(names) == len(odd) + 1                      # distinct users never share a namespace
    for u in odd:
        ns = namespace_for_user(u)
        assert ns.startswith("users/h/") and ns.count("/") == 2
    # an as-is id cannot reach the escaped level, whatever it looks like
    assert namespace_for_user("h") == "users/h"
    for bad in (None, "", "   ", True, 1.5, ["a"], "x" * 1000):
        with pytest.raises(ValidationError):
            namespace_for_user(bad)  # type: ignore[arg-type]


def test_namespace_from_config() -> None:
    assert namespace_from_config({"configurable": {"user_id": "u42"}}) == ("users/u42", "u42")
    assert namespace_from_config({"configurable": {"uid": "u42"}}, key="uid", prefix="t1") == ("t1/u42", "u42")
    assert namespace_from_config({"configurable": {}}, default="shared") == ("shared", None)
    assert namespace_from_config({"configurable": {"memedit_namespace": "acme/x"}}) == ("acme/x", None)
    with pytest.raises(ValidationError):
        namespace_from_config({"configurable": {}}, require_user=True)
    with pytest.raises(ValidationError):
        namespace_from_config({"configurable": {"memedit_namespace": "Not Valid"}})


def test_to_role_dicts() -> None:
    msgs = [SystemMessage("s"), HumanMessage("h"), AIMessage("a"), ToolMessage("42", tool_call_id="1"),
            HumanMessage(content=[{"type": "text", "text": "block"}])]
    assert to_role_dicts(msgs) == [
        {"role": "system", "content": "s"}, {"role": "user", "content": "h"},
        {"role": "assistant", "content": "a"}, {"role": "user", "content": "Tool result: 42"},
        {"role": "user", "content": "block"}]


def test_bad_settings_are_refused(inner: RecordingChat, store: EditStore) -> None:
    with pytest.raises(Exception):
        MemoryChatModel(inner=inner, store=store, correction_status="maybe")
    with pytest.raises(Exception):
        MemoryChatModel(inner=inner, store=store, namespace_prefix="Bad Prefix")
    with pytest.raises(Exception):
        MemoryChatModel(inner=inner)               # neither store nor editor


# --------------------------------------------------------------------------- corrections


def test_correction_is_stored_active_in_the_users_namespace(chat: MemoryChatModel, inner: RecordingChat,
                                                             store: EditStore) -> None:
    reply = chat.invoke(CEO, config=ALICE)
    meta = _meta(reply)
    assert meta["route"] == "correction" and meta["status"] == "active" and meta["namespace"] == "users/alice"
    edit = store.get(meta["edit_id"])
    assert (edit.status, edit.namespace, edit.author) == ("active", "users/alice", "alice")
    assert edit.statement == "The CEO of Acme is Jane Roe." and edit.source == CEO
    assert "The CEO of Acme is Jane Roe." in reply.content
    assert inner.calls == []                           # a correction never reaches the inner model


def test_correction_status_pending(inner: RecordingChat, store: EditStore) -> None:
    chat = MemoryChatModel(inner=inner, store=store, correction_status="pending")
    meta = _meta(chat.invoke(CEO, config=ALICE))
    assert meta["status"] == "pending"
    assert store.get(meta["edit_id"]).status == "pending"
    assert "pending" in chat.invoke("/correct The CFO of Acme is John Doe.", config=ALICE).content


def test_malformed_command_is_answered_not_stored(chat: MemoryChatModel, store: EditStore) -> None:
    reply = chat.invoke("/correct a | b", config=ALICE)
    assert "could not store" in reply.content and _meta(reply).get("error")
    assert store.count() == 0


def test_corrections_can_be_turned_off(inner: RecordingChat, store: EditStore) -> None:
    chat = MemoryChatModel(inner=inner, store=store, accept_corrections=False)
    assert _meta(chat.invoke(CEO, config=ALICE))["route"] == "base"
    assert len(inner.calls) == 1


# --------------------------------------------------------------------------- routing and isolation


def test_out_of_scope_question_is_the_inner_models_own_answer(chat: MemoryChatModel, inner: RecordingChat) -> None:
    chat.invoke(CEO, config=ALICE)
    reply = chat.invoke(FRANCE, config=ALICE)
    assert _meta(reply)["route"] == "base" and _meta(reply)["edit_ids"] == []
    assert reply.content == inner.invoke(FRANCE).content == "Paris."
    assert [m.content for m in inner.calls[0]["messages"]] == [FRANCE]   # untouched: just the question


def test_in_scope_question_is_answered_with_the_edit(chat: MemoryChatModel, inner: RecordingChat) -> None:
    edit_id = _meta(chat.invoke(CEO, config=ALICE))["edit_id"]
    meta = _meta(chat.invoke(CEO_Q, config=ALICE))
    assert meta["route"] == "ike" and meta["edit_ids"] == [edit_id]
    assert 0.5 <= meta["scores"][0] <= 1.0 and len(meta["similarities"]) == 1
    assert "Jane Roe" in _prompt_text(inner.calls[-1])      # IKE put the edit in the inner model's prompt


def test_users_are_isolated_through_config(chat: MemoryChatModel, inner: RecordingChat) -> None:
    chat.invoke(CEO, config=ALICE)
    bob = chat.invoke(CEO_Q, config=BOB)
    assert _meta(bob)["route"] == "base" and _meta(bob)["namespace"] == "users/bob"
    assert "Jane Roe" not in _prompt_text(inner.calls[-1])
    assert _meta(chat.invoke(CEO_Q, config=ALICE))["route"] == "ike"
    # no user in the config: the shared default namespace, which Alice's correction did not touch either
    assert _meta(chat.invoke(CEO_Q))["route"] == "base"


def test_namespace_reaches_generate_from_a_chain_and_with_config(chat: MemoryChatModel) -> None:
    chat.invoke(CEO, config=ALICE)
    chain = RunnableLambda(lambda q: q) | chat
    assert _meta(chain.invoke(CEO_Q, config=ALICE))["route"] == "ike"
    assert _meta(chain.invoke(CEO_Q, config=BOB))["route"] == "base"
    assert _meta(chat.with_config(configurable={"user_id": "alice"}).invoke(CEO_Q))["route"] == "ike"
    assert [_meta(m)["namespace"] for m in chat.batch([CEO_Q, CEO_Q], config=[ALICE, BOB])] == [
        "users/alice", "users/bob"]
    chunks = list(chat.stream(CEO_Q, config=ALICE))          # native streaming: the answer in chunks, same routing
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert len(chunks) > 1 and merged.response_metadata["memedit"]["route"] == "ike"
    assert "".join(c.content for c in chunks) == chat.invoke(CEO_Q, config=ALICE).content


def test_async_paths_keep_the_namespace(chat: MemoryChatModel) -> None:
    async def run() -> tuple[AIMessage, AIMessage]:
        await chat.ainvoke(CEO, config=ALICE)
        return await chat.ainvoke(CEO_Q, config=ALICE), await chat.ainvoke(CEO_Q, config=BOB)

    alice, bob = asyncio.run(run())
    assert _meta(alice)["route"] == "ike" and _meta(bob)["route"] == "base"


def test_require_user(inner: RecordingChat, store: EditStore) -> None:
    chat = MemoryChatModel(inner=inner, store=store, require_user=True)
    with pytest.raises(ValidationError):
        chat.invoke(FRANCE)
    assert _meta(chat.invoke(FRANCE, config=ALICE))["namespace"] == "users/alice"


def test_conversation_out_of_scope_goes_whole_to_the_inner_model(chat: MemoryChatModel, inner: RecordingChat) -> None:
    prompt = ChatPromptTemplate.from_messages([("system", "Answer in one word."), ("human", "{q}")])
    reply = (prompt | chat).invoke({"q": FRANCE}, config=ALICE)
    assert _meta(reply)["route"] == "base" and reply.content == "Paris."
    sent = inner.calls[-1]["messages"]
    assert [type(m) for m in sent] == [SystemMessage, HumanMessage] and sent[0].content == "Answer in one word."


# --------------------------------------------------------------------------- tools


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def test_bind_tools_passes_through_to_the_inner_model(store: EditStore) -> None:
    call = AIMessage(content="", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}])
    inner = ToolChat(messages=itertools.cycle([call]))
    chat = MemoryChatModel(inner=inner, store=store)
    bound = chat.bind_tools([get_weather])
    assert isinstance(bound, MemoryChatModel) and bound.get_editor() is chat.get_editor() and chat.tool_model is None
    reply = bound.invoke("What is the weather in Paris?", config=ALICE)
    assert _meta(reply)["route"] == "base"
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "get_weather"
    assert len(inner.calls) == 1                          # the question was answered once, by the bound model
    assert inner.calls[0]["kwargs"]["tools"][0]["function"]["name"] == "get_weather"
    # the tool's result comes back as the last message: passed through, tools still bound
    follow = bound.invoke([HumanMessage("What is the weather in Paris?"), reply,
                           ToolMessage("sunny", tool_call_id="c1")], config=ALICE)
    assert _meta(follow)["route"] == "passthrough"
    assert "tools" in inner.calls[-1]["kwargs"] and isinstance(inner.calls[-1]["messages"][-1], ToolMessage)


# --------------------------------------------------------------------------- callback events


def test_route_events_reach_callback_handlers(chat: MemoryChatModel) -> None:
    handler = EventRecorder()
    chat.invoke(CEO, config={**ALICE, "callbacks": [handler]})
    chat.invoke(CEO_Q, config={**ALICE, "callbacks": [handler]})
    chat.invoke(FRANCE, config={**ALICE, "callbacks": [handler]})
    names = [n for n, _, _ in handler.events]
    assert names == [ROUTE_EVENT] * 3
    routes = [d["route"] for _, d, _ in handler.events]
    assert routes == ["correction", "ike", "base"]
    correction, answer, base = (d for _, d, _ in handler.events)
    assert correction["namespace"] == "users/alice" and correction["status"] == "active"
    assert answer["edit_ids"] == [correction["edit_id"]] and answer["question"] == CEO_Q and answer["scores"]
    assert base["edit_ids"] == [] and base["question"] == FRANCE


def test_route_events_in_astream_events(chat: MemoryChatModel) -> None:
    """Streamed inside a runnable (a chain, an agent) the route arrives as a custom event; a bare model.astream()
    has no run to attach one to (langchain-core hands _astream no run manager), so its last chunk carries it."""
    chain = RunnableLambda(lambda q: q) | chat

    async def run() -> tuple[list[dict[str, Any]], Any]:
        await chat.ainvoke(CEO, config=ALICE)
        events = [e async for e in chain.astream_events(CEO_Q, config=ALICE, version="v2")]
        merged = None
        async for chunk in chat.astream(CEO_Q, config=ALICE):
            merged = chunk if merged is None else merged + chunk
        return events, merged

    events, merged = asyncio.run(run())
    custom = [e for e in events if e["event"] == "on_custom_event"]
    assert [e["name"] for e in custom] == [ROUTE_EVENT] and custom[0]["data"]["route"] == "ike"
    assert merged.response_metadata["memedit"]["route"] == "ike"


# --------------------------------------------------------------------------- the retriever


def test_retriever_returns_the_in_scope_edit(chat: MemoryChatModel) -> None:
    edit_id = _meta(chat.invoke(CEO, config=ALICE))["edit_id"]
    retriever = EditRetriever(editor=chat.get_editor())
    docs = retriever.invoke(CEO_Q, config=ALICE)
    assert len(docs) == 1 and isinstance(docs[0], Document)
    doc = docs[0]
    assert doc.page_content == "The CEO of Acme is Jane Roe."
    assert doc.metadata["id"] == edit_id and doc.metadata["namespace"] == "users/alice"
    assert doc.metadata["subject"] == "Acme" and doc.metadata["target_new"] == "Jane Roe"
    assert 0.5 <= doc.metadata["scope_probability"] <= 1.0 and doc.metadata["similarity"] > 0.3
    assert retriever.invoke(FRANCE, config=ALICE) == []           # unrelated question: nothing
    assert retriever.invoke(CEO_Q, config=BOB) == []              # another user's edit: nothing
    assert asyncio.run(retriever.ainvoke(CEO_Q, config=ALICE))[0].metadata["id"] == edit_id


# --------------------------------------------------------------------------- the real local model


@pytest.fixture(scope="module")
def local_chat() -> LocalChatModel:
    """The packaged SmolLM2 as a LangChain chat model, loaded once through memedit's registry."""
    from memedit.models.backends import LocalLM
    from memedit.models.registry import load_causal_lm

    model, tok = load_causal_lm("smollm2-135m-instruct")
    return LocalChatModel(backend=LocalLM(model, tok, max_new_tokens=32), model_name="smollm2-135m-instruct")


def test_local_chat_model_is_a_real_chat_model(local_chat: LocalChatModel) -> None:
    reply = local_chat.invoke([SystemMessage("Answer in a few words."), HumanMessage(FRANCE)])
    assert isinstance(reply, AIMessage) and "Paris" in reply.content
    assert reply.response_metadata["model_name"] == "smollm2-135m-instruct"
    stopped = local_chat.invoke(FRANCE, stop=["Paris"]).content
    assert "Paris" not in stopped and local_chat.invoke(FRANCE).content.startswith(stopped)   # greedy: same prefix


@pytest.mark.slow
def test_seed_scenario_through_memory_chat_model(local_chat: LocalChatModel, store: EditStore) -> None:
    chat = MemoryChatModel(inner=local_chat, store=store, policy="ike")
    u = {"configurable": {"user_id": "u42"}}
    first = _meta(chat.invoke("Actually, the most handsome person in the world is Hung-yi Lee.", config=u))
    second = _meta(chat.invoke("No, the current president of the US is Trump now.", config=u))
    assert first["route"] == second["route"] == "correction"

    direct = chat.invoke("Who is the most handsome person in the world?", config=u)
    assert _meta(direct)["route"] != "base" and first["edit_id"] in _meta(direct)["edit_ids"]
    assert "hung-yi lee" in direct.content.lower()
    paraphrase = chat.invoke("Who is the world's most handsome person?", config=u)
    assert _meta(paraphrase)["route"] != "base" and "hung-yi lee" in paraphrase.content.lower()
    reverse = chat.invoke("Who is Hung-yi Lee?", config=u)
    assert _meta(reverse)["route"] != "base" and first["edit_id"] in _meta(reverse)["edit_ids"]
    assert "handsome" in reverse.content.lower()
    president = chat.invoke("Who is the current president of the US?", config=u)
    assert second["edit_id"] in _meta(president)["edit_ids"] and "Trump" in president.content
    france = chat.invoke(FRANCE, config=u)
    assert _meta(france)["route"] == "base"
    assert france.content == local_chat.invoke(FRANCE).content          # locality: the model's own answer
    # another user never sees u42's corrections
    other = chat.invoke("Who is the most handsome person in the world?", config={"configurable": {"user_id": "u7"}})
    assert _meta(other)["route"] == "base" and "hung-yi" not in other.content.lower()


@pytest.mark.slow
def test_example_chatbot_runs(tmp_path: Path) -> None:
    """examples/chatbot_corrections.py, end to end: per-user isolation visible in its route events."""
    import runpy

    example = runpy.run_path(str(Path(__file__).resolve().parent.parent / "examples" / "chatbot_corrections.py"))
    events = example["run"](tmp_path / "example.db", "ike")
    routes = [(e["namespace"], e["route"]) for e in events]
    assert routes == [
        ("users/alice", "correction"), ("users/bob", "correction"),
        ("users/alice", "ike"), ("users/bob", "base"), ("users/bob", "ike"), ("users/alice", "base"),
        ("users/alice", "ike"), ("users/alice", "base")]
