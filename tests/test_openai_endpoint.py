"""The OpenAI-compatible endpoint, driven by the official ``openai`` client and LangChain's ``ChatOpenAI``.

Real parts: a uvicorn server on a loopback port in this process, a SQLite/FAISS store, memedit tokens, the packaged
SmolLM2 answering, the official clients over real HTTP (streaming included).
"""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'memedit[web]')")
openai = pytest.importorskip("openai", reason="the openai client is not installed (the test extra)")
uvicorn = pytest.importorskip("uvicorn")

from fastapi.testclient import TestClient  # noqa: E402

from memedit import EditStore  # noqa: E402
from memedit.editor import Editor  # noqa: E402
from memedit.policy import NamespacePolicy, Policy  # noqa: E402
from memedit.web.app import create_app  # noqa: E402
from memedit.web.auth import TokenFile  # noqa: E402
from memedit.web.openai_api import ChatService  # noqa: E402

MODEL = "smollm2-135m-instruct"
CORRECTION = "Actually, the CEO of Acme Corp is Jane Roe."
QUESTION = "Who is the CEO of Acme Corp?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, embedder):
    path = tmp_path_factory.mktemp("openai")
    store = EditStore(path / "s.db", embedder=embedder)
    tokens, admin = TokenFile.open(path / "s.tokens.json")
    acme = tokens.create("acme-app", namespaces=["acme"], write=True)
    reader = tokens.create("acme-reader", namespaces=["acme"], write=False)
    other = tokens.create("globex-app", namespaces=["globex"], write=True)
    policy = Policy(store, default=NamespacePolicy(chat_status="active", max_edits=100, window_s=60))
    chat = ChatService(Editor(model=MODEL, store=store, max_new_tokens=24), model_id=MODEL)
    app = create_app(store, tokens=tokens, policy=policy, chat=chat)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}/v1", "store": store,
           "keys": {"admin": admin, "acme": acme, "reader": reader, "other": other}}
    srv.should_exit = True
    thread.join(timeout=10)
    store.close()


def _client(server, who: str = "acme", **kw) -> "openai.OpenAI":
    return openai.OpenAI(base_url=server["url"], api_key=server["keys"][who], max_retries=0, **kw)


def _ask(client, text: str, **kw):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}], **kw)


def test_models_lists_the_served_model(server):
    assert [m.id for m in _client(server).models.list().data] == [MODEL]


def test_a_correction_is_stored_in_the_tokens_namespace_and_then_answers(server):
    client = _client(server)
    got = _ask(client, CORRECTION)
    reply, meta = got.choices[0].message.content, got.model_extra["memedit"]
    assert reply.startswith("Noted:") and "Jane Roe" in reply, reply
    assert meta["route"] == "correction" and meta["namespace"] == "acme"
    edit = server["store"].get(meta["edit_id"])
    assert edit.namespace == "acme" and edit.status == "active" and edit.author == "acme-app"

    answer = _ask(client, QUESTION)
    assert "Jane Roe" in answer.choices[0].message.content
    assert answer.model_extra["memedit"]["route"] != "base"
    assert meta["edit_id"] in answer.model_extra["memedit"]["edit_ids"]
    assert answer.choices[0].finish_reason == "stop" and answer.model == MODEL

    # another tenant's token: its namespace holds no such edit, so the base model answers
    elsewhere = _ask(_client(server, "other"), QUESTION)
    assert elsewhere.model_extra["memedit"]["route"] == "base"
    assert elsewhere.model_extra["memedit"]["namespace"] == "globex"


def test_streaming_sends_the_same_answer_in_chunks(server):
    client = _client(server)
    _ask(client, CORRECTION)  # stored once already, or now: either way the question is in scope
    plain = _ask(client, QUESTION).choices[0].message.content
    chunks = list(_ask(client, QUESTION, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain
    assert len(chunks) > 3 and chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["memedit"]["route"] != "base"


def test_out_of_scope_turns_see_the_whole_conversation(server):
    """No edit in scope: the model answers the conversation as sent (system prompt and history), as without memedit."""
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "My name is Zorblax."},
                {"role": "assistant", "content": "Nice to meet you, Zorblax!"},
                {"role": "user", "content": "What is my name?"}]
    got = _client(server).chat.completions.create(model=MODEL, messages=messages)
    assert got.model_extra["memedit"]["route"] == "base"
    assert "Zorblax" in got.choices[0].message.content  # only the history says so (alone it answers another name)


def test_an_out_of_scope_answer_streams_as_it_is_generated(server):
    client = _client(server)
    plain = _ask(client, "Describe the city of Paris in detail.")
    chunks = list(_ask(client, "Describe the city of Paris in detail.", stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == plain.choices[0].message.content and len(pieces) > 5
    assert chunks[-1].model_extra["memedit"]["route"] == "base"
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason == "length"  # 24 tokens, the limit


def test_usage_and_max_tokens(server):
    client = _client(server)
    full = _ask(client, "Describe the city of Paris in detail.")
    u = full.usage
    assert u.prompt_tokens > 5 and u.completion_tokens > 3 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    short = _ask(client, "Describe the city of Paris in detail.", max_tokens=3)
    assert short.usage.completion_tokens <= 3 and len(short.choices[0].message.content) < len(full.choices[0].message.content)
    assert full.choices[0].message.content.startswith(short.choices[0].message.content)  # greedy: the same start
    noted = _ask(client, "Actually, the CTO of Acme Corp is Dana Lee.")
    assert noted.model_extra["memedit"]["route"] == "correction" and noted.usage.total_tokens == 0  # no model ran
    chunks = list(_ask(client, "Describe the city of Paris in detail.", stream=True,
                       stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == u.total_tokens


def test_keys_and_namespaces_are_checked(server):
    with pytest.raises(openai.AuthenticationError):
        _ask(openai.OpenAI(base_url=server["url"], api_key="not-a-token", max_retries=0), QUESTION)
    with pytest.raises(openai.PermissionDeniedError, match="namespace"):
        _ask(_client(server, "other", default_headers={"X-Memedit-Namespace": "acme"}), QUESTION)
    # the admin token names the namespace in the header
    got = _ask(_client(server, "admin", default_headers={"X-Memedit-Namespace": "acme"}), QUESTION)
    assert got.model_extra["memedit"]["namespace"] == "acme"


def test_a_read_only_token_cannot_store_corrections(server):
    before = server["store"].count(namespace="acme")
    got = _ask(_client(server, "reader"), "Actually, the CFO of Acme Corp is Bill Lumbergh.")
    meta = got.model_extra["memedit"]
    assert meta["refused"] is True and meta["rule"] == "permission"
    assert "did not store" in got.choices[0].message.content
    assert not [e for e in server["store"].list(namespace="acme") if "Lumbergh" in (e.statement or e.sentence())]
    assert server["store"].count(namespace="acme") == before


def test_what_the_endpoint_does_not_serve_is_refused(server):
    client = _client(server)
    with pytest.raises(openai.BadRequestError, match="one choice"):
        _ask(client, QUESTION, n=2)
    with pytest.raises(openai.BadRequestError, match="tools"):
        _ask(client, QUESTION, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    with pytest.raises(openai.BadRequestError, match="last message"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION},
                                                              {"role": "assistant", "content": "Jane"}])
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model=MODEL, messages=[])


def test_langchain_chat_openai_talks_to_it(server):
    pytest.importorskip("langchain_openai", reason="langchain-openai is not installed (the test extra)")
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=MODEL, base_url=server["url"], api_key=server["keys"]["acme"], max_retries=0)
    llm.invoke(CORRECTION)
    assert "Jane Roe" in llm.invoke(QUESTION).content
    assert "Jane Roe" in "".join(chunk.content for chunk in llm.stream(QUESTION))


def test_the_readme_snippet_runs(server, monkeypatch, capsys):
    """The README's "in front of any chat app" snippet, as written, against this server (its URL swapped in)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    after = readme.split("<!-- openai-snippet", 1)[1]
    code = after.split("```python\n", 1)[1].split("```", 1)[0]
    assert code.count("http://127.0.0.1:8765/v1") == 1
    code = code.replace("http://127.0.0.1:8765/v1", server["url"])
    code = code.replace("Acme", "Initech")  # a subject no other test here corrected
    monkeypatch.setenv("MEMEDIT_TOKEN", server["keys"]["acme"])
    exec(compile(code, "README.md", "exec"), {})
    first, second = capsys.readouterr().out.strip().splitlines()
    assert first.startswith("Noted:") and "Jane Roe" in first
    assert second.startswith("Jane Roe") and "'route': 'base'" not in second, second


def test_without_a_model_the_endpoint_says_so(tmp_path, embedder):
    store = EditStore(tmp_path / "s.db", embedder=embedder)
    tokens, admin = TokenFile.open(tmp_path / "s.tokens.json")
    try:
        client = TestClient(create_app(store, tokens=tokens))
        auth = {"Authorization": f"Bearer {admin}"}
        res = client.post("/v1/chat/completions", headers=auth,
                          json={"model": MODEL, "messages": [{"role": "user", "content": QUESTION}]})
        assert res.status_code == 503 and res.json()["error"]["code"] == "no_model"
        assert client.get("/v1/models", headers=auth).json() == {"object": "list", "data": []}
        # no key: refused before the body is read, in OpenAI's error shape
        res = client.post("/v1/chat/completions", json={"model": MODEL, "messages": []})
        assert res.status_code == 401 and res.json()["error"]["type"] == "authentication_error"
        # the audit API keeps its own error model
        assert client.get("/api/edits", params={"namespace": "default"}).json()["type"] == "AuthError"
    finally:
        store.close()
