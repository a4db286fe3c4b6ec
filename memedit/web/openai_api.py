"""An OpenAI-compatible chat endpoint: put memedit in front of any chat app that speaks the OpenAI API.

>>> from openai import OpenAI                                                          # doctest: +SKIP
>>> client = OpenAI(base_url="http://127.0.0.1:8765/v1", api_key=MEMEDIT_TOKEN)       # doctest: +SKIP
>>> client.chat.completions.create(model="smollm2-135m-instruct", messages=[
...     {"role": "user", "content": "Actually, the CEO of Acme is Jane Roe."}]).choices[0].message.content
'Noted: "The CEO of Acme is Jane Roe." (edit 1, active)'                               # doctest: +SKIP

``memedit serve --model NAME`` mounts ``POST /v1/chat/completions`` (plain
JSON, or server-sent events with ``"stream": true``) and ``GET /v1/models``.
The API key is a memedit token (``memedit tokens add``): the namespace it
covers holds the conversation's corrections (a token over several
namespaces, or an admin token, names one in the ``X-Memedit-Namespace``
header; an admin token without it uses ``default``).

Each request is one chat turn, as in ``memedit chat``: the last message must
come from the user. A correction ("Actually, X is Y.") goes through the same
door as every other edit (:func:`memedit.chat.capture`, the server's
:class:`~memedit.policy.Policy`: safety check, namespace rules, rate limit)
and the reply acknowledges it or says why it was refused; any other message
goes through the editor's scope decision: with no edit in scope the model
answers the conversation as the app sent it (system prompt and history
included, as it would without memedit); with one in scope the routed answer
(SERAC, IKE, MeLLo, the weights) is about the user's message alone, as in
``memedit chat``.
Every completion carries a ``memedit`` field: the route, the namespace and
the edits used (or the stored correction).

Limits, each refused with 400 rather than silently ignored: one choice
(``n`` = 1), no tools or functions, no log-probabilities, no JSON response
format. Streaming sends a local model's base-route answer token by token as
it is generated, and a correction's or a routed answer (finished first) in
word-sized chunks. A request's ``max_tokens`` (or
``max_completion_tokens``) caps a base-route answer below the server's
``--max-new-tokens``; routed answers keep the server's length. ``usage``
counts tokens where the answering model tokenizes locally (a correction's
turn uses none; a remote model's is null). Errors use OpenAI's shape, ``{"error": {"message", "type", "param",
"code"}}``, so OpenAI clients raise their usual exceptions.
"""
from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Optional, Union

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..chat import acknowledgement, answer_payload, base_payload, capture, prepare_or_none, refusal, text_pieces
from ..corrections import detect_correction
from ..edits import validate_namespace
from ..errors import ValidationError
from ..safety import RefusedEditError
from .api import AuthError, caller
from .contract import error_responses

PREFIX = "/v1"
NAMESPACE_HEADER = "X-Memedit-Namespace"


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class OpenAIErrorOut(BaseModel):
    """Every error under ``/v1``: OpenAI's error object."""

    error: OpenAIErrorBody


ERRORS = error_responses(
    OpenAIErrorOut,
    s400="a request memedit's endpoint does not serve (n > 1, tools, log-probabilities, JSON format, "
         "a last message that is not the user's)",
    s401="no API key, or not a valid memedit token",
    s403="the token may not use this namespace",
    s404="no such model (GET /v1/models lists the one served), or no such namespace",
    s413="the request body is over the server's limit; it was not read",
    s422="a malformed request body",
    s429="too many corrections from this token in the namespace's window; see Retry-After",
    s503="this server answers no questions (started without --model), or the store is unavailable",
)
router = APIRouter(prefix=PREFIX, responses=ERRORS, tags=["OpenAI-compatible"])


class OpenAIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", *,
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.type, self.param, self.code = status, type_, param, code


@dataclass
class ChatService:
    """The model behind ``/v1``: an :class:`~memedit.editor.Editor` over the app's store, and the id it is served as."""

    editor: Any
    model_id: str
    created: int = field(default_factory=lambda: int(time.time()))
    #: held while a turn reads or writes the store and runs the model (neither is safe to share across threads)
    lock: Any = field(default_factory=threading.RLock)


# ---- request bodies -------------------------------------------------------------
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: Optional[str] = None


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Union[str, list[ContentPart], None] = None


class ChatCompletionIn(BaseModel):
    """OpenAI's chat request; fields memedit cannot honour are refused with 400 (see the module doc)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[MessageIn] = Field(min_length=1)
    stream: bool = False
    n: int = Field(default=1, ge=1, le=128)
    max_tokens: Optional[int] = Field(default=None, ge=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    temperature: Optional[float] = Field(default=None, ge=0, le=2)
    tools: Optional[list[Any]] = None
    functions: Optional[list[Any]] = None
    tool_choice: Any = None
    logprobs: Optional[bool] = None
    response_format: Optional[dict[str, Any]] = None
    stream_options: Optional[dict[str, Any]] = None
    user: Optional[str] = None


# ---- helpers ----------------------------------------------------------------------
def _service(request: Request) -> ChatService:
    service = getattr(request.app.state.memedit, "chat", None)
    if service is None:
        raise OpenAIError(503, "this memedit server answers no questions: start it with 'memedit serve --model NAME'",
                          "server_error", code="no_model")
    return service


def _text(message: MessageIn) -> str:
    if isinstance(message.content, str):
        return message.content
    parts = message.content or []
    if any(p.type != "text" for p in parts):
        raise OpenAIError(400, "only text content is supported (no images, audio or files)", param="messages")
    return "".join(p.text or "" for p in parts)


def _check(body: ChatCompletionIn, service: ChatService) -> str:
    """The user's message, once the request is one memedit serves."""
    if body.model not in (service.model_id, "memedit"):
        raise OpenAIError(404, f"the model {body.model!r} does not exist here; this server answers as "
                               f"{service.model_id!r} (GET /v1/models)", param="model", code="model_not_found")
    if body.n != 1:
        raise OpenAIError(400, "memedit returns one choice per request (n must be 1)", param="n")
    if body.tools or body.functions or body.tool_choice not in (None, "none"):
        raise OpenAIError(400, "tools and functions are not supported by memedit's endpoint", param="tools")
    if body.logprobs:
        raise OpenAIError(400, "log-probabilities are not returned by memedit's endpoint", param="logprobs")
    if body.response_format and body.response_format.get("type", "text") != "text":
        raise OpenAIError(400, "only text responses are supported (response_format type 'text')",
                          param="response_format")
    last = body.messages[-1]
    if last.role != "user":
        raise OpenAIError(400, "the last message must be the user's: each request is one chat turn",
                          param="messages")
    text = _text(last).strip()
    if not text:
        raise OpenAIError(400, "the user's message is empty", param="messages")
    return text


def _namespace(request: Request) -> tuple[Any, str]:
    """The caller and the namespace this turn uses (see the module doc)."""
    who = caller(request)
    if who is None:
        raise AuthError(401, "an API key is required: a memedit token (Authorization: Bearer <token>)")
    named = request.headers.get(NAMESPACE_HEADER)
    if named is not None:
        namespace = named.strip()
    else:
        exact = [p for p in who.namespaces if "*" not in p]
        namespace = exact[0] if len(exact) == 1 else "default"
    try:
        namespace = validate_namespace(namespace)
    except ValidationError as exc:
        raise OpenAIError(400, str(exc), param=NAMESPACE_HEADER) from None
    if not who.can_read(namespace):
        raise AuthError(403, f"this token may not use namespace {namespace!r}"
                             + ("" if named else f"; name one it covers in the {NAMESPACE_HEADER} header"))
    return who, namespace


def _history(messages: list[MessageIn]) -> list[dict[str, str]]:
    """The conversation as role / text pairs for the base model (system and developer messages as system)."""
    roles = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
    return [{"role": roles[m.role], "content": _text(m)} for m in messages if m.role in roles and _text(m).strip()]


@dataclass
class Turn:
    """What one chat turn produced: the reply, the ``memedit`` payload, token usage and why the reply ended."""

    reply: str
    payload: dict[str, Any]
    usage: dict[str, int] | None = None
    finish: str = "stop"
    #: a base-route answer not generated yet: (backend, messages, token limit), streamed token by token
    pending: tuple[Any, list[dict[str, str]], int | None] | None = None


NO_TOKENS = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def _counted(reply: str, payload: dict[str, Any], backend: Any, messages: list[dict[str, str]],
             limit: int | None) -> Turn:
    """A model's reply with its token usage, where the backend tokenizes locally (a remote model's is unknown)."""
    prompt_ids, tokenizer = getattr(backend, "prompt_ids", None), getattr(backend, "tokenizer", None)
    if prompt_ids is None or tokenizer is None:
        return Turn(reply, payload)
    prompt = len(prompt_ids(messages))
    completion = len(tokenizer(reply, add_special_tokens=False)["input_ids"]) if reply else 0
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return Turn(reply, payload, usage, "length" if limit is not None and completion >= limit else "stop")


def _turn(request: Request, service: ChatService, text: str, history: list[dict[str, str]],
          max_tokens: int | None = None, stream: bool = False) -> Turn:
    """One user message's turn: a correction stored or refused, or an answer (see the module doc)."""
    who, namespace = _namespace(request)
    st = request.app.state.memedit
    with st.lock, service.lock:
        if not who.can_write(namespace):
            try:
                is_correction = detect_correction(text, namespace=namespace) is not None
            except (RefusedEditError, ValidationError):  # a malformed or unsafe /correct: a correction all the same
                is_correction = True
            if is_correction:
                return Turn(f"I did not store that (permission): this token may not change namespace {namespace!r}",
                            {"route": "correction", "namespace": namespace, "refused": True, "rule": "permission"},
                            dict(NO_TOKENS))
        else:
            st.store.create_namespace(namespace)
            try:
                got = capture(text, policy=st.policy, namespace=namespace, author=who.name)
            except ValidationError as exc:  # a malformed /correct: tell the user how to write it, as memedit chat does
                return Turn(f"error: {exc}", {"route": "correction", "namespace": namespace, "error": str(exc)},
                            dict(NO_TOKENS))
            if got.outcome == "stored" and got.edit is not None:
                return Turn(acknowledgement(got.edit), got.payload(namespace), dict(NO_TOKENS))
            if got.outcome == "refused" and got.verdict is not None:
                return Turn(refusal(got.verdict), got.payload(namespace), dict(NO_TOKENS))
        editor = service.editor
        prepared = prepare_or_none(editor, text, namespace)
        if prepared is None or prepared.route == "base":
            # No edit in scope: the model answers the conversation as the app sent it (system prompt, history),
            # exactly as it would without memedit in front of it; the request's max_tokens applies here.
            limits = [n for n in (max_tokens, editor.router.max_new_tokens) if n]
            limit = min(limits) if limits else None
            if stream and callable(getattr(editor.base, "stream_chat", None)):  # a local model: stream its tokens
                return Turn("", base_payload(namespace, prepared), pending=(editor.base, history, limit))
            reply = editor.base.chat(history, limit)
            return _counted(reply, base_payload(namespace, prepared), editor.base, history, limit)
        answer = editor.router.run(prepared)  # the same decision, not a second retrieval; records the use
        return _counted(answer.text, answer_payload(answer), prepared.backend, prepared.messages,
                        prepared.max_new_tokens)


def _generated(service: ChatService, pending: tuple[Any, list[dict[str, str]], int | None]) -> Iterator[str]:
    """A pending answer's pieces as the model writes them. The model runs in one worker thread that holds the
    service's lock from the first token to the last (the response's chunks are read from other threads)."""
    backend, messages, limit = pending
    pieces: queue.Queue[Any] = queue.Queue()
    done = object()

    def work() -> None:
        try:
            with service.lock:
                for piece in backend.stream_chat(messages, limit):
                    pieces.put(piece)
        except Exception as exc:  # handed to the reader: the stream says what went wrong
            pieces.put(exc)
        finally:
            pieces.put(done)

    threading.Thread(target=work, name="memedit-v1-stream", daemon=True).start()
    while (item := pieces.get()) is not done:
        if isinstance(item, Exception):
            raise item
        yield item


def _stream(completion_id: str, created: int, model: str, turn: Turn, usage: bool,
            service: ChatService) -> Iterator[str]:
    def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(chunk)}\n\n"

    yield event({"role": "assistant", "content": ""})
    if turn.pending is not None:
        written = []
        try:
            for piece in _generated(service, turn.pending):
                written.append(piece)
                yield event({"content": piece})
        except Exception as exc:  # the status line is sent already: report it in the stream, as OpenAI does
            body = {"error": {"message": f"the model failed: {type(exc).__name__}: {exc}", "type": "server_error",
                              "param": None, "code": "model_error"}}
            yield f"data: {json.dumps(body)}\n\n"
            yield "data: [DONE]\n\n"
            return
        backend, messages, limit = turn.pending
        turn = _counted("".join(written), turn.payload, backend, messages, limit)
    else:
        for piece in text_pieces(turn.reply):
            if piece:
                yield event({"content": piece})
    yield event({}, turn.finish, memedit=turn.payload)
    if usage:  # stream_options.include_usage: a last chunk with no choices, as OpenAI sends it
        chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [], "usage": turn.usage}
        yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"


# ---- operations -------------------------------------------------------------------
@router.get("/models", summary="The model this server answers as")
def list_models(request: Request) -> dict[str, Any]:
    if caller(request) is None:
        raise AuthError(401, "an API key is required: a memedit token (Authorization: Bearer <token>)")
    service = getattr(request.app.state.memedit, "chat", None)
    data = [] if service is None else [{"id": service.model_id, "object": "model", "created": service.created,
                                        "owned_by": "memedit"}]
    return {"object": "list", "data": data}


@router.post("/chat/completions", summary="One chat turn: a correction is stored, a question answered through the edits",
             responses={200: {"description": "a chat.completion, or with stream=true server-sent "
                                             "chat.completion.chunk events ending in [DONE]",
                              "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
def chat_completions(body: ChatCompletionIn, request: Request) -> Any:
    service = _service(request)
    text = _check(body, service)
    turn = _turn(request, service, text, _history(body.messages), body.max_completion_tokens or body.max_tokens,
                 stream=body.stream)
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(_stream(completion_id, created, service.model_id, turn, include_usage, service),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": service.model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": turn.reply},
                         "finish_reason": turn.finish, "logprobs": None}],
            "usage": turn.usage, "memedit": turn.payload}
