"""LangChain: a chat model that accepts corrections, a retriever of in-scope edits, and callback events.

>>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
>>> from memedit.integrations.langchain import MemoryChatModel
>>> chat = MemoryChatModel(inner=FakeListChatModel(responses=["Paris."]), store="stores/chat.db")  # doctest: +SKIP
>>> alice = {"configurable": {"user_id": "alice"}}
>>> chat.invoke("Actually, the CEO of Acme is Jane Roe now.", config=alice).content               # doctest: +SKIP
'Noted: "The CEO of Acme is Jane Roe." (edit 1, active)'
>>> chat.invoke("Who is the CEO of Acme?", config=alice).response_metadata["memedit"]["route"]   # doctest: +SKIP
'ike'

Three pieces:

* :class:`MemoryChatModel` wraps any ``BaseChatModel`` (the *inner* model).
  For each call it looks at the last human message: a correction (see
  :mod:`memedit.corrections`) is stored as an edit in the caller's namespace,
  through :meth:`memedit.policy.Policy.submit` exactly as ``memedit chat``
  stores it (:func:`memedit.chat.capture`), and acknowledged, or refused with
  the safety check's reason (an instruction rewrite, an answer for every
  question, another namespace, no concrete fact); anything else is a question. A question no stored edit
  is in scope of goes to the inner model unchanged (the whole conversation,
  with any bound tools); an in-scope one is answered by the
  :class:`~memedit.editor.Editor` (IKE over the inner model, SERAC's
  counterfactual model, ...). The reply's ``response_metadata["memedit"]``
  (and ``additional_kwargs["memedit"]``) says which route answered and which
  edits, with their scores. It streams natively (``stream``/``astream``):
  the inner model's own chunks when it answers, memedit's finished reply in
  word-sized chunks otherwise, the route on the last chunk. Tracing names the
  inner model (``ls_model_name``); ``bind_tools`` hands tools to it, or says
  it has none.
* :class:`EditRetriever` returns the edits in scope of a query as
  ``Document`` objects, for chains that want the facts rather than an answer;
  ``k``, ``namespace`` and ``score_threshold`` can be given per call.
* :class:`LocalChatModel` is a real ``BaseChatModel`` over memedit's local
  transformers backend (the packaged SmolLM2 by default), for running all of
  this offline.

**Per-user namespaces.** Each call's namespace comes from
``config["configurable"]``: ``{"configurable": {"user_id": "u42"}}`` ->
``users/u42`` (the key and prefix are the fields ``namespace_key`` and
``namespace_prefix``; see :func:`namespace_for_user` for ids that are not
already namespace-safe). With no user id the field ``namespace`` is used, or,
with ``require_user=True``, the call is refused. A chat model's ``invoke``
in langchain-core 1.x forwards only callbacks, tags and metadata from its
config to ``_generate`` (and puts the config in the context variable that
``ensure_config()`` reads only when the call is a step of a larger runnable),
so ``invoke``/``ainvoke`` here read the namespace from the merged config and
hand it to ``_generate`` as a keyword argument. Being an invocation
parameter, it is part of LangChain's cache key too, though these answers are
not cached by default (``cache=False``): they depend on edits that change.

**Callback events.** Every routing decision (an answer's route, or a stored
correction) is sent to the run's callback handlers as the custom event
``"memedit_route"`` (``on_custom_event``; ``astream_events`` shows it as
``on_custom_event``), with the payload described in :func:`route_event`.
A bare ``model.stream()``/``astream()`` has no run to attach it to
(langchain-core hands ``_stream`` no run manager), so there the last chunk's
metadata is the record; streamed inside a runnable (a chain, an agent) the
event arrives as well.

LangChain's own standard suites (``langchain-tests``: chat model unit and
integration, retriever integration) pass on these classes
(``tests/test_langchain_standard.py``).
"""
from __future__ import annotations

import hashlib
import logging
import re
import threading
import unicodedata
from typing import Any, AsyncIterator, Iterator, Literal, Optional, Sequence

from langchain_core.callbacks import (AsyncCallbackManager, AsyncCallbackManagerForLLMRun, CallbackManager,
                                     CallbackManagerForLLMRun, CallbackManagerForRetrieverRun)
from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import (AIMessage, AIMessageChunk, BaseMessage, ChatMessage, HumanMessage, SystemMessage,
                                     ToolMessage)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from ..chat import (acknowledgement, answer_payload, base_payload, capture, chat_policy, check_correction_status,
                    prepare_or_none, refusal, text_pieces)
from ..config import DEFAULT_NAMESPACE
from ..corrections import DEFAULT_MIN_CONFIDENCE
from ..edits import NAMESPACE_RE, validate_namespace
from ..errors import ConflictError, NotFoundError, ValidationError

log = logging.getLogger(__name__)

__all__ = ["MemoryChatModel", "EditRetriever", "LocalChatModel", "namespace_for_user", "namespace_from_config",
           "ROUTE_EVENT", "route_event"]

#: name of the custom callback event sent for every routing decision
ROUTE_EVENT = "memedit_route"
#: keyword arguments ``invoke`` hands to ``_generate`` / ``_get_relevant_documents``
NAMESPACE_KWARG = "memedit_namespace"
AUTHOR_KWARG = "memedit_author"

_PART = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
_MAX_USER_ID = 512


# --------------------------------------------------------------------------- namespaces from config


def namespace_for_user(user_id: Any, prefix: str = "users") -> str:
    """A namespace for one user, distinct for distinct ids.

    >>> namespace_for_user("u42"), namespace_for_user(7)
    ('users/u42', 'users/7')
    >>> namespace_for_user("Alice@Example.com")
    'users/h/alice-example-com-f8db6f2f05fc7ed9'

    An id that is already a valid namespace part is used as it is. Any other
    (capitals, '@', spaces, '/', non-ASCII ...) becomes a readable slug plus a
    hash of the exact id under an extra ``h/`` level, so ``"Alice"`` and
    ``"alice"`` never share edits, and no id can name another's namespace (an
    as-is id has no '/', so it cannot reach the ``h/`` level).
    """
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
        raise ValidationError(f"a user id must be a string or an integer, got {type(user_id).__name__}")
    raw = str(user_id)
    if not raw.strip():
        raise ValidationError("a user id must not be empty")
    if len(raw) > _MAX_USER_ID:
        raise ValidationError(f"a user id is at most {_MAX_USER_ID} characters")
    base = f"{prefix}/" if prefix else ""
    if _PART.fullmatch(raw):
        return validate_namespace(base + raw)
    ascii_ = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_).strip("-")[:40].strip("-") or "user"
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return validate_namespace(f"{base}h/{slug}-{digest}")


def namespace_from_config(config: RunnableConfig | None, *, key: str = "user_id", prefix: str = "users",
                          default: str = DEFAULT_NAMESPACE, require_user: bool = False) -> tuple[str, str | None]:
    """``(namespace, user id or None)`` for a call's config.

    >>> namespace_from_config({"configurable": {"user_id": "u42"}})
    ('users/u42', 'u42')
    >>> namespace_from_config({"configurable": {"memedit_namespace": "acme/support"}})
    ('acme/support', None)
    >>> namespace_from_config(None)
    ('default', None)

    ``configurable["memedit_namespace"]`` names a namespace outright (for a
    server that maps users itself); otherwise ``configurable[key]`` is the user.
    """
    configurable = (config or {}).get("configurable") or {}
    explicit = configurable.get(NAMESPACE_KWARG)
    user = configurable.get(key)
    if explicit is not None:
        return validate_namespace(explicit), (str(user) if user is not None else None)
    if user is None or (isinstance(user, str) and not user.strip()):
        if require_user:
            raise ValidationError(f"this model needs config['configurable'][{key!r}] (the user whose edits to use)")
        return validate_namespace(default), None
    return namespace_for_user(user, prefix), str(user)


def _author(user: str | None) -> str | None:
    # The author column is short, single-line text; an id that does not fit is left out (the namespace
    # already says whose edit it is).
    if user is None or len(user) > 100 or not user.isprintable():
        return None
    return user


def _check_prefix(prefix: str) -> str:
    if prefix and (not NAMESPACE_RE.fullmatch(prefix) or prefix.count("/") > 1):
        raise ValidationError(f"namespace_prefix {prefix!r} must be a namespace of at most 2 parts (e.g. 'users')")
    return prefix


# --------------------------------------------------------------------------- messages


def _text(message: BaseMessage | Any) -> str:
    """The text of a message whose content may be a string or a list of content blocks."""
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type", "text") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def to_role_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as memedit's ``{"role", "content"}`` dicts.

    >>> to_role_dicts([SystemMessage("Be brief."), HumanMessage("Hi")])
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}]

    A tool result becomes a user turn quoting it (a small local model has no tool role).
    """
    out = []
    for m in messages:
        if isinstance(m, SystemMessage):
            role = "system"
        elif isinstance(m, HumanMessage):
            role = "user"
        elif isinstance(m, AIMessage):
            role = "assistant"
        elif isinstance(m, ToolMessage):
            out.append({"role": "user", "content": f"Tool result: {_text(m)}"})
            continue
        elif isinstance(m, ChatMessage) and m.role in ("system", "user", "assistant"):
            role = m.role
        else:
            raise ValidationError(f"cannot turn a {type(m).__name__} into a chat turn")
        out.append({"role": role, "content": _text(m)})
    return out


def route_event(payload: dict[str, Any], run_manager: CallbackManagerForLLMRun | CallbackManagerForRetrieverRun | None,
                name: str = ROUTE_EVENT) -> None:
    """Send ``payload`` to the run's handlers as the custom event ``name``.

    The payload of ``"memedit_route"`` is, for an answer: ``route`` ("base",
    "ike", "serac", ...), ``namespace``, ``question``, ``edit_ids``,
    ``scores`` (calibrated P(in scope) per used edit), ``similarities``,
    ``matched`` and ``timings_ms``; for a stored correction: ``route`` =
    "correction", ``namespace``, ``edit_id``, ``status``, ``kind``,
    ``statement``, ``confidence``, ``trigger``, ``supersedes`` (and ``flag``,
    ``hold_rule``, ``hold_reason`` for a held one); for a refused correction:
    ``route`` = "correction", ``namespace``, ``refused`` = True, ``rule``,
    ``reason``.

    langchain-core's ``dispatch_custom_event`` needs the config context of an
    enclosing runnable, which a chat model's ``_generate`` does not have when
    called with ``invoke``; a callback manager parented on this run reaches
    the same handlers, with this run's id (as ``dispatch_custom_event`` would
    give the enclosing run's).
    """
    if run_manager is None or not run_manager.handlers:
        return
    CallbackManager(**_parented_on(run_manager)).on_custom_event(name, payload, run_id=run_manager.run_id)


def _parented_on(run_manager: Any) -> dict[str, Any]:
    """A callback manager's arguments that reach ``run_manager``'s handlers, parented on its run."""
    return dict(handlers=run_manager.handlers, inheritable_handlers=run_manager.inheritable_handlers,
                parent_run_id=run_manager.run_id, tags=run_manager.tags, inheritable_tags=run_manager.inheritable_tags,
                metadata=run_manager.metadata, inheritable_metadata=run_manager.inheritable_metadata)


async def aroute_event(payload: dict[str, Any], run_manager: AsyncCallbackManagerForLLMRun | None,
                       name: str = ROUTE_EVENT) -> None:
    """:func:`route_event` for an async run (its handlers may be async: astream_events listens with one)."""
    if run_manager is None or not run_manager.handlers:
        return
    await AsyncCallbackManager(**_parented_on(run_manager)).on_custom_event(name, payload, run_id=run_manager.run_id)


def _dispatch_in_context(payload: dict[str, Any], name: str = ROUTE_EVENT) -> None:
    """The route event through the runnable config in the context (a streamed run has no run manager at hand)."""
    try:
        dispatch_custom_event(name, dict(payload))
    except RuntimeError:  # no enclosing run to attach it to: nobody listens
        pass


async def _adispatch_in_context(payload: dict[str, Any], name: str = ROUTE_EVENT) -> None:
    try:
        await adispatch_custom_event(name, dict(payload))
    except RuntimeError:
        pass


def _child_callbacks(run_manager: CallbackManagerForLLMRun | None) -> CallbackManager | None:
    """Callbacks for a nested call, so the inner model's run shows up under this one."""
    if run_manager is None:
        return None
    return CallbackManager(
        handlers=run_manager.inheritable_handlers, inheritable_handlers=run_manager.inheritable_handlers,
        parent_run_id=run_manager.run_id, tags=run_manager.inheritable_tags,
        inheritable_tags=run_manager.inheritable_tags, metadata=run_manager.inheritable_metadata,
        inheritable_metadata=run_manager.inheritable_metadata,
    )


def _build_editor(inner: BaseChatModel, store: Any, namespace: str, policy: Any) -> Any:
    from ..editor import Editor
    from ..models.backends import LangChainLM

    return Editor(model=LangChainLM(inner), store=store, namespace=namespace, policy=policy)


# --------------------------------------------------------------------------- the chat model


class MemoryChatModel(BaseChatModel):
    """A chat model that takes corrections and answers through them; any ``BaseChatModel`` inside.

    >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
    >>> chat = MemoryChatModel(inner=FakeListChatModel(responses=["Paris."]), store="stores/x.db")  # doctest: +SKIP
    >>> chat.invoke("What is the capital of France?").content                                      # doctest: +SKIP
    'Paris.'

    Give either ``store`` (a path or an ``EditStore``; an
    :class:`~memedit.editor.Editor` is built over it with the inner model as
    its base model, through :class:`~memedit.models.backends.LangChainLM`) or
    ``editor`` (used as it is: its model answers in-scope questions, the
    inner model out-of-scope ones).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseChatModel
    """The chat model that answers whatever no stored edit is in scope of."""
    editor: Any = Field(default=None, exclude=True)
    store: Any = Field(default=None, exclude=True)
    policy: Any = "auto"
    """How an in-scope question is answered (``"auto"``, ``"ike"``, ``"serac"``, a callable); used when ``store`` is
    given. ``"auto"`` lets the inner model answer in-scope questions too, with the edits in its prompt (IKE), unless
    it is a model measured better with SERAC (the packaged SmolLM2 as a ``LocalChatModel``); ``"serac"`` keeps
    edited facts away from it (the local counterfactual model answers them)."""
    namespace: str = DEFAULT_NAMESPACE
    """The namespace of calls whose config names no user."""
    namespace_key: str = "user_id"
    namespace_prefix: str = "users"
    require_user: bool = False
    """Refuse calls whose config names no user (instead of sharing ``namespace``)."""
    correction_status: Literal["active", "pending"] = "active"
    """``"active"``: a correction answers at once; ``"pending"``: it waits for a reviewer's approval."""
    edit_policy: Any = Field(default=None, exclude=True)
    """The :class:`~memedit.policy.Policy` every correction is submitted through (its safety check, rate limits,
    per-namespace review); default: :func:`memedit.chat.chat_policy` over the editor's store."""
    accept_corrections: bool = True
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    """Natural-language corrections scoring below this are treated as questions."""
    tool_model: Optional[Runnable] = Field(default=None, exclude=True)
    """The inner model with tools bound (set by :meth:`bind_tools`); answers out-of-scope turns."""
    cache: Any = False  # answers depend on the edits, which change: never serve a cached one

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="after")
    def _check(self) -> "MemoryChatModel":
        validate_namespace(self.namespace)
        _check_prefix(self.namespace_prefix)
        check_correction_status(self.correction_status)
        if self.editor is None and self.store is None:
            raise ValidationError("MemoryChatModel needs a store (path or EditStore) or an editor")
        return self

    def get_editor(self) -> Any:
        """The editor, built over ``store`` on first use (so its errors surface as memedit's own, not pydantic's)."""
        if self.editor is None:
            with self._lock:
                if self.editor is None:
                    self.editor = _build_editor(self.inner, self.store, self.namespace, self.policy)
        return self.editor

    def get_policy(self) -> Any:
        """The policy corrections are submitted through, built over the editor's store on first use."""
        if self.edit_policy is None:
            store = self.get_editor().store
            with self._lock:
                if self.edit_policy is None:
                    self.edit_policy = chat_policy(store)
        return self.edit_policy

    @property
    def _llm_type(self) -> str:
        return "memedit-memory"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"inner": getattr(self.inner, "_llm_type", type(self.inner).__name__),
                "policy": self.policy if isinstance(self.policy, str) else getattr(self.policy, "__name__", "custom"),
                "correction_status": self.correction_status}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """Tracing parameters, with the inner model's name as ``ls_model_name`` (it answers most turns)."""
        kwargs = {k: v for k, v in kwargs.items() if k not in (NAMESPACE_KWARG, AUTHOR_KWARG)}
        params = super()._get_ls_params(stop=stop, **kwargs)
        try:
            inner = self.inner._get_ls_params(stop=stop, **kwargs)
        except (AttributeError, TypeError, ValueError, NotImplementedError):
            inner = {}
        name = inner.get("ls_model_name") or getattr(self.inner, "model_name", None) or getattr(self.inner, "model", None)
        params["ls_model_name"] = str(name or getattr(self.inner, "_llm_type", type(self.inner).__name__))
        return params

    # ---- config -> namespace ---------------------------------------------------
    def resolve_namespace(self, config: RunnableConfig | None = None) -> tuple[str, str | None]:
        """``(namespace, user id)`` for a call made with ``config`` (the current runnable's config if None)."""
        return namespace_from_config(ensure_config(config), key=self.namespace_key, prefix=self.namespace_prefix,
                                     default=self.namespace, require_user=self.require_user)

    def _with_namespace(self, config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        if NAMESPACE_KWARG not in kwargs:
            namespace, user = self.resolve_namespace(config)
            kwargs[NAMESPACE_KWARG] = namespace
            kwargs.setdefault(AUTHOR_KWARG, _author(user))
        return kwargs

    def invoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        return super().invoke(input, config, stop=stop, **self._with_namespace(config, kwargs))

    async def ainvoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        return await super().ainvoke(input, config, stop=stop, **self._with_namespace(config, kwargs))

    def stream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> Iterator[AIMessageChunk]:
        yield from super().stream(input, config, stop=stop, **self._with_namespace(config, kwargs))

    async def astream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AsyncIterator[AIMessageChunk]:
        async for chunk in super().astream(input, config, stop=stop, **self._with_namespace(config, kwargs)):
            yield chunk

    # ---- tools -------------------------------------------------------------------
    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> "MemoryChatModel":
        """A copy whose out-of-scope answers come from ``inner.bind_tools(tools, ...)`` (same store and editor).

        In-scope answers stay text: the stored edit is the answer, no tool is needed for it.
        """
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        try:
            bound = self.inner.bind_tools(tools, **kwargs)
        except NotImplementedError:
            name = getattr(self.inner, "model_name", None) or type(self.inner).__name__
            raise NotImplementedError(f"the inner chat model ({name}) does not support tool calling, and "
                                      "MemoryChatModel.bind_tools hands tools to it") from None
        return self.model_copy(update={"tool_model": bound, "editor": self.get_editor()})

    # ---- one call ---------------------------------------------------------------
    def _decide(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """``(text, payload)``: the reply memedit gives itself (a correction's, an in-scope answer), or
        ``(None, payload)`` when the inner model answers the conversation as it stands."""
        namespace = kwargs.pop(NAMESPACE_KWARG, None)
        author = kwargs.pop(AUTHOR_KWARG, None)
        if namespace is None:  # generate() called directly: the enclosing runnable's config, if any
            namespace, user = self.resolve_namespace()
            author = _author(user)
        namespace = validate_namespace(namespace)
        last = messages[-1] if messages else None
        if not isinstance(last, HumanMessage):
            # A tool result or an assistant prefill: the inner model's business, memory has nothing to add.
            return None, {"route": "passthrough", "namespace": namespace}
        text = _text(last).strip()
        if self.accept_corrections:
            try:
                # the same door as `memedit chat`: detection, then Policy.submit with its safety check
                got = capture(text, policy=self.get_policy(), namespace=namespace, author=author,
                              status=self.correction_status, min_confidence=self.min_confidence)
            except (ValidationError, ConflictError) as exc:  # a malformed /correct, or a rate limit: say so
                return f"I could not store that correction: {exc}", {"route": "correction", "namespace": namespace,
                                                                      "error": str(exc)}
            if got.outcome == "stored" and got.edit is not None:
                log.info("stored correction %s in %s (%s)", got.edit.id, namespace, got.edit.status)
                return acknowledgement(got.edit), got.payload(namespace)
            if got.outcome == "refused" and got.verdict is not None:
                return refusal(got.verdict), got.payload(namespace)
        editor = self.get_editor()
        prepared = _prepare(editor, text, namespace)
        if prepared is None or prepared.route == "base":
            # Out of scope: the inner model answers the conversation as it stands (system prompt, history,
            # bound tools, stop words), exactly as it would without memedit.
            return None, {**_base_payload(namespace, prepared), "question": text}
        # In scope: the editor answers from the same decision (no second retrieval), and records the use.
        answer = editor.router.run(prepared)
        return answer.text, {**answer_payload(answer), "question": text}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        text, payload = self._decide(messages, kwargs)
        message = self._call_inner(messages, stop, run_manager, kwargs) if text is None else AIMessage(content=text)
        return self._reply(message, payload, run_manager)

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        """Native streaming: the inner model's own chunks when it answers; memedit's reply (a correction's, an
        in-scope answer, finished before the first chunk) in word-sized chunks. The last chunk carries the route."""
        text, payload = self._decide(messages, kwargs)
        if run_manager is not None:
            route_event(dict(payload), run_manager)
        else:  # langchain-core's stream() gives _stream no run manager; the run's config is in the context
            _dispatch_in_context(payload)
        if text is None:
            for chunk in self._answering_model().stream(messages, stop=stop, **kwargs):  # context callbacks reach it
                yield _as_chunk(chunk)
        else:
            yield from _text_chunks(text)
        yield _route_chunk(payload)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        """:meth:`_stream` for async callers: the decision (store, scope, a local model) runs in a worker thread,
        the inner model streams through its own ``astream``."""
        text, payload = await run_in_executor(None, self._decide, messages, kwargs)
        if run_manager is not None:
            await aroute_event(dict(payload), run_manager)
        else:  # as in _stream: the run's config is in the context
            await _adispatch_in_context(payload)
        if text is None:
            async for chunk in self._answering_model().astream(messages, stop=stop, **kwargs):
                yield _as_chunk(chunk)
        else:
            for chunk in _text_chunks(text):
                yield chunk
        yield _route_chunk(payload)

    def _answering_model(self) -> Runnable:
        """The inner model, with tools bound where :meth:`bind_tools` bound them."""
        return self.tool_model if self.tool_model is not None else self.inner

    def _call_inner(self, messages: list[BaseMessage], stop: list[str] | None,
                    run_manager: CallbackManagerForLLMRun | None, kwargs: dict[str, Any]) -> AIMessage:
        config: RunnableConfig = {"callbacks": _child_callbacks(run_manager)}
        reply = self._answering_model().invoke(messages, config=config, stop=stop, **kwargs)
        return reply if isinstance(reply, AIMessage) else AIMessage(content=_text(reply))

    def _reply(self, message: AIMessage, payload: dict[str, Any], run_manager: CallbackManagerForLLMRun | None,
               ) -> ChatResult:
        event = dict(payload)
        route_event(event, run_manager)
        meta = {k: v for k, v in payload.items() if k != "question"}
        message = message.model_copy(update={
            "response_metadata": {**message.response_metadata, "memedit": meta},
            "additional_kwargs": {**message.additional_kwargs, "memedit": meta},
        })
        return ChatResult(generations=[ChatGeneration(message=message)])


def _as_chunk(chunk: Any) -> ChatGenerationChunk:
    """An inner model's stream item as a generation chunk."""
    return ChatGenerationChunk(message=chunk if isinstance(chunk, AIMessageChunk) else AIMessageChunk(content=_text(chunk)))


def _text_chunks(text: str) -> Iterator[ChatGenerationChunk]:
    """A reply memedit gives itself, finished, in word-sized chunks."""
    for piece in text_pieces(text):
        yield ChatGenerationChunk(message=AIMessageChunk(content=piece))


def _route_chunk(payload: dict[str, Any]) -> ChatGenerationChunk:
    """The empty last chunk of a stream, carrying the turn's route as the invoked message's metadata does."""
    meta = {k: v for k, v in payload.items() if k != "question"}
    return ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata={"memedit": meta},
                                                      additional_kwargs={"memedit": meta}))


# --------------------------------------------------------------------------- the retriever


class EditRetriever(BaseRetriever):
    """The stored edits in scope of a query, as Documents (nothing when no edit is in scope).

    >>> retriever = EditRetriever(editor=editor)                                           # doctest: +SKIP
    >>> [d.page_content for d in retriever.invoke("Who runs Acme?", config=alice)]          # doctest: +SKIP
    ['The CEO of Acme is Jane Roe.']

    Each document's metadata: ``id``, ``uid``, ``namespace``, ``kind``,
    ``status``, ``scope_probability``, ``similarity``, ``matched_text``,
    ``subject``/``prompt``/``target_new`` for fact edits. The namespace comes
    from the config exactly as for :class:`MemoryChatModel`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    editor: Any = Field(exclude=True)
    namespace: str = DEFAULT_NAMESPACE
    namespace_key: str = "user_id"
    namespace_prefix: str = "users"
    require_user: bool = False
    k: int = 5

    @model_validator(mode="after")
    def _check(self) -> "EditRetriever":
        validate_namespace(self.namespace)
        _check_prefix(self.namespace_prefix)
        if self.editor is None:
            raise ValidationError("EditRetriever needs an editor")
        return self

    def resolve_namespace(self, config: RunnableConfig | None = None) -> tuple[str, str | None]:
        return namespace_from_config(ensure_config(config), key=self.namespace_key, prefix=self.namespace_prefix,
                                     default=self.namespace, require_user=self.require_user)

    def invoke(self, input: str, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        kwargs.setdefault(NAMESPACE_KWARG, self.resolve_namespace(config)[0])
        return super().invoke(input, config, **kwargs)

    async def ainvoke(self, input: str, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        kwargs.setdefault(NAMESPACE_KWARG, self.resolve_namespace(config)[0])
        return await super().ainvoke(input, config, **kwargs)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                memedit_namespace: str | None = None, k: int | None = None,
                                namespace: str | None = None, score_threshold: float | None = None) -> list[Document]:
        """The in-scope edits, best first. Per call: ``k`` (at most this many), ``namespace`` (instead of the one the
        config names), ``score_threshold`` (only edits whose P(in scope) reaches it)."""
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValidationError(f"k must be a positive integer, got {k!r}")
        if score_threshold is not None and not 0.0 <= float(score_threshold) <= 1.0:
            raise ValidationError(f"score_threshold is a probability in [0, 1], got {score_threshold!r}")
        namespace = validate_namespace(namespace or memedit_namespace or self.resolve_namespace()[0])
        used = in_scope_edits(self.editor, query, namespace, k=max(self.k, k or 0))
        if score_threshold is not None:
            used = [u for u in used if float(u.scope_probability) >= float(score_threshold)]
        used = used[:k or self.k]
        route_event({"route": "retrieve", "namespace": namespace, "question": query,
                     "edit_ids": [u.edit.id for u in used],
                     "scores": [round(float(u.scope_probability), 4) for u in used]}, run_manager)
        return [_document(u) for u in used]

    async def _aget_relevant_documents(self, query: str, *, run_manager: Any, memedit_namespace: str | None = None,
                                       **kwargs: Any) -> list[Document]:
        # BaseRetriever's default async path drops extra keyword arguments (the namespace, k ...); keep them.
        return await run_in_executor(None, self._get_relevant_documents, query, run_manager=run_manager.get_sync(),
                                     memedit_namespace=memedit_namespace, **kwargs)


def in_scope_edits(editor: Any, question: str, namespace: str, *, k: int | None = None) -> list[Any]:
    """The :class:`~memedit.answer.UsedEdit` list the editor's scope decision puts in scope of ``question``."""
    prepared = _prepare(editor, question, namespace, k=k)
    return list(prepared.used) if prepared is not None else []


_prepare = prepare_or_none
_base_payload = base_payload


def _document(used: Any) -> Document:
    e = used.edit
    meta: dict[str, Any] = {
        "id": e.id, "uid": e.uid, "namespace": e.namespace, "kind": e.kind, "status": e.status,
        "scope_probability": float(used.scope_probability), "similarity": float(used.similarity),
        "matched_text": used.matched_text, "created_at": e.created_at,
    }
    if e.kind == "fact":
        meta.update(subject=e.subject, prompt=e.prompt, target_new=e.target_new, target_true=e.target_true)
    return Document(page_content=e.statement or e.sentence(), metadata=meta, id=str(e.id))


# --------------------------------------------------------------------------- a local chat model


class LocalChatModel(BaseChatModel):
    """A ``BaseChatModel`` over memedit's local transformers backend (greedy decoding, offline).

    >>> chat = LocalChatModel.from_name("smollm2-135m-instruct")          # doctest: +SKIP
    >>> chat.invoke("What is the capital of France?").content             # doctest: +SKIP
    'The capital of France is Paris.'

    ``backend`` is a :class:`~memedit.models.backends.LocalLM` (or any memedit
    backend); ``max_new_tokens`` None keeps the backend's own limit. Stop
    words cut the reply at their first occurrence. No tool calling.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: Any = Field(exclude=True)
    max_new_tokens: Optional[int] = None
    model_name: str = ""

    @classmethod
    def from_name(cls, name: str = "smollm2-135m-instruct", *, device: Any = "cpu", dtype: Any = "float32",
                  **kwargs: Any) -> "LocalChatModel":
        """Load a registered model (or a local directory) through :mod:`memedit.models.registry`."""
        from ..models.backends import LocalLM

        return cls(backend=LocalLM.from_name(name, device=device, dtype=dtype), model_name=name, **kwargs)

    @model_validator(mode="after")
    def _check(self) -> "LocalChatModel":
        if not callable(getattr(self.backend, "chat", None)):
            raise ValidationError("LocalChatModel needs a memedit backend (e.g. LocalLM) as `backend`")
        if not self.model_name:
            self.model_name = str(getattr(self.backend, "name", "local"))
        return self

    @property
    def _llm_type(self) -> str:
        return "memedit-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "max_new_tokens": self.max_new_tokens}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        max_new = kwargs.pop("max_new_tokens", self.max_new_tokens)
        if kwargs:
            log.debug("LocalChatModel ignores %s", sorted(kwargs))
        text = self.backend.chat(to_role_dicts(messages), max_new)
        for s in stop or ():
            if s and s in text:
                text = text[:text.index(s)]
        message = AIMessage(content=text, response_metadata={"model_name": self.model_name})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        """Tokens as the model generates them (``LocalLM.stream_chat``); with stop words, the finished reply cut at
        the first one, in word-sized chunks (a stop word can only be found once its text is whole)."""
        max_new = kwargs.pop("max_new_tokens", self.max_new_tokens)
        stream = getattr(self.backend, "stream_chat", None)
        if stop or stream is None:
            result = self._generate(messages, stop, run_manager, max_new_tokens=max_new)
            pieces = text_pieces(str(result.generations[0].message.content))
        else:
            pieces = stream(to_role_dicts(messages), max_new)
        for piece in pieces:
            if piece:
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata={"model_name": self.model_name}))
