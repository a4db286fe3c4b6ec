"""Language-model backends: one small interface over a local transformers model or any LangChain chat model.

>>> from memedit.models.backends import as_backend
>>> lm = as_backend("smollm2-135m-instruct")                                  # doctest: +SKIP
>>> lm.chat([{"role": "user", "content": "What is the capital of France?"}])  # doctest: +SKIP
'The capital of France is Paris.'
>>> lm.continuation_logprob("The capital of France is", " Paris")              # doctest: +SKIP
-1.93...

Everything above the backends (the router, IKE, SERAC, MeLLo, evaluation)
speaks in chat messages, ``[{"role": "system"|"user"|"assistant", "content":
str}, ...]``; a backend turns them into whatever its model reads:

* :class:`LocalLM` wraps a ``transformers`` causal LM and its tokenizer. It
  renders messages with the tokenizer's chat template when there is one (else a
  plain ``User:``/``Assistant:`` layout), decodes greedily, and can score a
  continuation by teacher forcing (CounterFact-style ``p(new) > p(old)``).
  Device and dtype are whatever the model already has.
* :class:`LangChainLM` wraps any langchain-core ``BaseChatModel`` (a remote
  API, a local server ...). It has no token log-probabilities.
* :class:`LazyBackend` defers loading a named model until the first call, so
  an :class:`~memedit.editor.Editor` used only to store edits never loads one.

:func:`as_backend` turns what a user hands memedit (a name, a ``(model,
tokenizer)`` pair, a LangChain chat model, a backend) into a backend.
"""
from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Protocol, Sequence, Union, runtime_checkable

from ..errors import BackendError, UnsupportedOperationError, ValidationError

if TYPE_CHECKING:  # pragma: no cover - heavy imports stay out of module import time
    import torch

log = logging.getLogger(__name__)

Message = Mapping[str, str]
"""One chat turn: ``{"role": "system" | "user" | "assistant", "content": str}``."""
Prompt = Union[str, Sequence[Message]]
"""Raw text for :meth:`Backend.complete`-style scoring, or chat messages."""

ROLES = ("system", "user", "assistant")
DEFAULT_MAX_NEW_TOKENS = 48
PLAIN_ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}


def check_messages(messages: Any) -> list[dict[str, str]]:
    """Return ``messages`` as a list of plain dicts, or raise ValidationError saying what is wrong.

    >>> check_messages([{"role": "user", "content": "Hi"}])
    [{'role': 'user', 'content': 'Hi'}]
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValidationError("messages must be a list of {'role', 'content'} dicts")
    if not messages:
        raise ValidationError("messages must not be empty")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ValidationError(f"messages[{i}] must be a dict with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValidationError(f"messages[{i}]['role'] must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise ValidationError(f"messages[{i}]['content'] must be a string, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    return out


@runtime_checkable
class ChatBackend(Protocol):
    """What the router needs from a model: a name, whether it runs locally, and ``chat``."""

    name: str
    is_local: bool

    def chat(self, messages: Sequence[Message], max_new_tokens: int | None = None) -> str: ...


class Backend(ABC):
    """Base class of memedit's backends; subclasses implement :meth:`chat` and, if they can, scoring."""

    name: str = "backend"
    #: True when the model runs in this process (cheap to prompt, exposes log-probs; its weights can be edited).
    is_local: bool = False
    supports_logprobs: bool = False

    @abstractmethod
    def chat(self, messages: Sequence[Message], max_new_tokens: int | None = None) -> str:
        """The model's reply to ``messages``, stripped."""

    def chat_batch(self, conversations: Sequence[Sequence[Message]], max_new_tokens: int | None = None) -> list[str]:
        """Replies to several conversations (one call each unless a subclass batches)."""
        return [self.chat(m, max_new_tokens) for m in conversations]

    def complete(self, text: str, max_new_tokens: int | None = None) -> str:
        """Continue raw ``text`` (no chat formatting)."""
        raise UnsupportedOperationError(f"{self.name} only chats; it cannot continue raw text")

    def continuation_logprob(self, prompt: Prompt, continuation: str) -> float:
        """Sum of token log-probabilities of ``continuation`` right after ``prompt`` (teacher-forced)."""
        return self.continuation_logprobs([prompt], [continuation])[0]

    def continuation_logprobs(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[float]:
        """:meth:`continuation_logprob` for aligned lists."""
        raise UnsupportedOperationError(
            f"{self.name} exposes no token log-probabilities; score with a local model (LocalLM) instead"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# --------------------------------------------------------------------------- local transformers models


class LocalLM(Backend):
    """A transformers causal LM and its tokenizer, decoded greedily.

    >>> from memedit.models.backends import LocalLM
    >>> lm = LocalLM.from_name("smollm2-135m-instruct")                   # doctest: +SKIP
    >>> lm.chat([{"role": "user", "content": "Name a colour."}], max_new_tokens=8)  # doctest: +SKIP

    The model is used where it is (its device, its dtype); nothing here moves
    or casts it. ``chat`` renders with the tokenizer's chat template when it has
    one, so a question sent through memedit's base route is token for token the
    prompt a plain ``apply_chat_template`` + ``generate`` would build.
    """

    is_local = True
    supports_logprobs = True

    def __init__(self, model: Any, tokenizer: Any, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 name: str | None = None, batch_size: int = 8):
        if not hasattr(model, "generate") or not callable(tokenizer):
            raise ValidationError("LocalLM needs a transformers causal LM (with .generate) and its tokenizer")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValidationError("max_new_tokens must be a positive integer")
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.name = name or str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_token_id = int(pad)
        self.stop_token_ids = self._stop_ids()

    @classmethod
    def from_name(cls, name: str = "smollm2-135m-instruct", device: "str | torch.device" = "cpu",
                  dtype: "torch.dtype | str" = "float32", *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                  cache_dir: Any = None) -> "LocalLM":
        """Load a model through the offline registry (a registered name, a local directory, a cached hub id)."""
        from .registry import load_causal_lm

        model, tok = load_causal_lm(name, device=device, dtype=dtype, cache_dir=cache_dir)
        return cls(model, tok, max_new_tokens=max_new_tokens, name=name)

    # ---- properties -------------------------------------------------------
    @property
    def device(self) -> "torch.device":
        return next(self.model.parameters()).device

    def _stop_ids(self) -> list[int]:
        # The tokenizer's eos plus whatever the model's generation config stops on
        # (chat models often end a turn with a token other than the tokenizer's eos).
        ids: list[int] = []
        for source in (self.tokenizer.eos_token_id, getattr(getattr(self.model, "generation_config", None),
                                                            "eos_token_id", None)):
            if source is None:
                continue
            ids.extend([int(source)] if isinstance(source, int) else [int(s) for s in source])
        return list(dict.fromkeys(ids))

    # ---- prompt rendering --------------------------------------------------
    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text ``chat`` feeds the model, ending where the assistant's reply begins."""
        msgs = check_messages(messages)
        if msgs[-1]["role"] == "assistant":
            raise ValidationError("the last message must not be the assistant's: chat generates that turn")
        if self.has_chat_template:
            return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return self._render_plain(msgs) + "Assistant:"

    @staticmethod
    def _render_plain(msgs: Sequence[Message]) -> str:
        # For base (non-chat) models: "User: ...\nAssistant: ...\n" turns, system text as a preamble.
        parts = []
        for m in msgs:
            if m["role"] == "system":
                parts.append(m["content"].strip() + "\n\n")
            else:
                parts.append(f"{PLAIN_ROLE_LABELS[m['role']]}: {m['content'].strip()}\n")
        return "".join(parts)

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: chat messages rendered (specials come from the template) or raw text."""
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        text = self.render(prompt)
        # A chat template writes its own special tokens; a plain layout gets the tokenizer's usual ones.
        return list(self.tokenizer(text, add_special_tokens=not self.has_chat_template)["input_ids"])

    # ---- generation ---------------------------------------------------------
    def _generation_config(self, max_new_tokens: int | None) -> Any:
        from transformers import GenerationConfig

        n = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        if not isinstance(n, int) or n < 1:
            raise ValidationError("max_new_tokens must be a positive integer")
        return GenerationConfig(max_new_tokens=n, do_sample=False, num_beams=1,
                                eos_token_id=self.stop_token_ids or None, pad_token_id=self.pad_token_id)

    def _generate(self, id_lists: list[list[int]], max_new_tokens: int | None) -> list[list[int]]:
        """Greedy continuations (new token ids only, stop token removed) of left-padded prompts."""
        import torch

        width = max(len(ids) for ids in id_lists)
        input_ids = torch.full((len(id_lists), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(id_lists), width), dtype=torch.long)
        for row, ids in enumerate(id_lists):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            mask[row, width - len(ids):] = 1
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                      generation_config=self._generation_config(max_new_tokens))
        stops = set(self.stop_token_ids)
        results = []
        for row in out[:, width:].tolist():
            cut = next((i for i, t in enumerate(row) if t in stops), len(row))
            results.append(row[:cut])
        return results

    def _decode(self, ids: list[int], plain_chat: bool) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if plain_chat:  # a base model keeps writing the next "User:" turn; that is not its answer
            for marker in ("\nUser:", "\nSystem:", "\nAssistant:"):
                text = text.split(marker, 1)[0]
        return text.strip()

    def chat(self, messages: Sequence[Message], max_new_tokens: int | None = None) -> str:
        """Greedy reply to ``messages`` (at most ``max_new_tokens``, default the backend's)."""
        return self.chat_batch([messages], max_new_tokens)[0]

    def chat_batch(self, conversations: Sequence[Sequence[Message]], max_new_tokens: int | None = None) -> list[str]:
        """Replies to several conversations, generated in left-padded batches of ``batch_size``.

        Batched greedy decoding can differ from one-at-a-time decoding in the
        last floating-point bits (padding changes the reduction order); use
        :meth:`chat` where token-exact reproducibility matters.
        """
        ids = [self.prompt_ids(list(m)) for m in conversations]
        out: list[str] = []
        for start in range(0, len(ids), self.batch_size):
            for new in self._generate(ids[start:start + self.batch_size], max_new_tokens):
                out.append(self._decode(new, plain_chat=not self.has_chat_template))
        return out

    def stream_chat(self, messages: Sequence[Message], max_new_tokens: int | None = None) -> Iterator[str]:
        """:meth:`chat`'s reply as it is generated: text pieces whose concatenation is ``chat``'s string.

        The same prompt, the same greedy decoding (one unpadded row, as ``chat``);
        generation runs in a worker thread and a ``TextIteratorStreamer`` hands the
        decoded text over. Leading and trailing whitespace is held back, as
        ``chat`` strips it. A model without a chat template answers in one piece
        (its reply is cut at the next "User:" turn, known only at the end).
        """
        import threading

        import torch
        from transformers import TextIteratorStreamer

        if not self.has_chat_template:
            yield self.chat(messages, max_new_tokens)
            return
        ids = torch.tensor([self.prompt_ids(list(messages))], dtype=torch.long, device=self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        config = self._generation_config(max_new_tokens)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config,
                                        streamer=streamer)
            except BaseException as exc:  # surfaced to the reader below, not lost in the thread
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, name="memedit-stream", daemon=True)
        worker.start()
        started, held = False, ""
        for piece in streamer:
            text = held + piece
            if not started:
                text = text.lstrip()
                started = bool(text)
            body = text.rstrip()
            held = text[len(body):]
            if body:
                yield body
        worker.join()
        if failure:
            raise BackendError(f"{self.name} failed while streaming: {type(failure[0]).__name__}: {failure[0]}")

    def complete(self, text: str, max_new_tokens: int | None = None) -> str:
        """Greedy continuation of raw ``text`` (no chat formatting), stripped."""
        if not isinstance(text, str) or not text:
            raise ValidationError("text must be a non-empty string")
        return self._decode(self._generate([self.prompt_ids(text)], max_new_tokens)[0], plain_chat=False)

    # ---- scoring --------------------------------------------------------------
    def continuation_logprobs(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[float]:
        """Teacher-forced ``sum log p(continuation tokens | prompt)`` for aligned pairs.

        A string prompt is raw text (give the continuation its leading space,
        e.g. ``("The capital of France is", " Paris")``); a message list is
        rendered as for :meth:`chat` and the continuation is the assistant's
        reply. Prompt and continuation are tokenized separately, so the
        continuation's tokens are exactly those of ``continuation`` alone.
        """
        import torch

        if len(prompts) != len(continuations):
            raise ValidationError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        pairs = []
        for p, c in zip(prompts, continuations):
            if not isinstance(c, str) or not c:
                raise ValidationError("each continuation must be a non-empty string")
            cont = list(self.tokenizer(c, add_special_tokens=False)["input_ids"])
            pairs.append((self.prompt_ids(p), cont))
        scores: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start:start + self.batch_size]
            width = max(len(p) + len(c) for p, c in chunk)
            input_ids = torch.full((len(chunk), width), self.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (p, c) in enumerate(chunk):  # right padding: positions stay those of an unpadded pass
                input_ids[row, :len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
                mask[row, :len(p) + len(c)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
                logp = torch.log_softmax(logits.float(), dim=-1)
            for row, (p, c) in enumerate(chunk):
                pos = torch.arange(len(p) - 1, len(p) + len(c) - 1, device=logp.device)
                tgt = torch.tensor(c, dtype=torch.long, device=logp.device)
                scores.append(float(logp[row, pos, tgt].sum()))
        return scores


# --------------------------------------------------------------------------- LangChain chat models


class LangChainLM(Backend):
    """Any langchain-core ``BaseChatModel`` as a memedit backend.

    >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
    >>> lm = LangChainLM(FakeListChatModel(responses=["Paris."]))
    >>> lm.chat([{"role": "user", "content": "What is the capital of France?"}])
    'Paris.'

    The reply length is the chat model's own setting (``max_new_tokens`` is
    not forwarded: providers name it differently). No log-probabilities.
    """

    is_local = False
    supports_logprobs = False

    def __init__(self, chat_model: Any, *, name: str | None = None):
        from langchain_core.language_models import BaseChatModel

        if not isinstance(chat_model, BaseChatModel):
            raise ValidationError(f"LangChainLM wraps a langchain-core BaseChatModel, got {type(chat_model).__name__}")
        self.chat_model = chat_model
        # The chat model's own model name where it has one (ChatOpenAI's "gpt-4o", memedit's LocalChatModel's
        # registered name), so policy="auto" finds a measured route for it; else its class.
        own = getattr(chat_model, "model_name", None) or getattr(chat_model, "model", None)
        self.name = name or (own if isinstance(own, str) and own else type(chat_model).__name__)

    @staticmethod
    def to_langchain(messages: Sequence[Message]) -> list[Any]:
        """Role dicts as LangChain message objects."""
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
        return [kinds[m["role"]](content=m["content"]) for m in check_messages(messages)]

    @staticmethod
    def _text(reply: Any) -> str:
        content = getattr(reply, "content", reply)
        if isinstance(content, list):  # content blocks: keep the text ones
            content = "".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content
                              if isinstance(b, str) or (isinstance(b, dict) and b.get("type", "text") == "text"))
        return str(content).strip()

    def chat(self, messages: Sequence[Message], max_new_tokens: int | None = None) -> str:
        return self._text(self.chat_model.invoke(self.to_langchain(messages)))

    def chat_batch(self, conversations: Sequence[Sequence[Message]], max_new_tokens: int | None = None) -> list[str]:
        replies = self.chat_model.batch([self.to_langchain(m) for m in conversations])
        return [self._text(r) for r in replies]


# --------------------------------------------------------------------------- lazy loading


class LazyBackend(Backend):
    """A backend built on first use (loading a model takes a second or more; storing edits needs none).

    >>> lazy = LazyBackend(lambda: LocalLM.from_name("smollm2-135m-instruct"), name="smollm2-135m-instruct")
    >>> lazy.loaded
    False
    """

    def __init__(self, factory: Callable[[], Backend], *, name: str, is_local: bool = True):
        self._factory = factory
        self._backend: Backend | None = None
        self._lock = threading.Lock()
        self.name = name
        self.is_local = is_local

    @property
    def loaded(self) -> bool:
        return self._backend is not None

    def get(self) -> Backend:
        """The real backend, loading it now if needed."""
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    log.info("loading model %s", self.name)
                    self._backend = as_backend(self._factory())
                    self.is_local = self._backend.is_local
        return self._backend

    @property
    def supports_logprobs(self) -> bool:  # type: ignore[override]
        return self.get().supports_logprobs

    def chat(self, messages: Sequence[Message], max_new_tokens: int | None = None) -> str:
        return self.get().chat(messages, max_new_tokens)

    def chat_batch(self, conversations: Sequence[Sequence[Message]], max_new_tokens: int | None = None) -> list[str]:
        return self.get().chat_batch(conversations, max_new_tokens)

    def complete(self, text: str, max_new_tokens: int | None = None) -> str:
        return self.get().complete(text, max_new_tokens)

    def continuation_logprobs(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[float]:
        return self.get().continuation_logprobs(prompts, continuations)

    def __getattr__(self, attr: str) -> Any:
        # Backend-specific extras (LocalLM.render, .tokenizer ...) reach the real backend.
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self.get(), attr)


# --------------------------------------------------------------------------- coercion


def _is_langchain_chat_model(x: Any) -> bool:
    try:
        from langchain_core.language_models import BaseChatModel
    except ImportError:  # pragma: no cover - langchain-core is a dependency, but stay usable without it
        return False
    return isinstance(x, BaseChatModel)


def as_backend(x: Any, *, device: "str | torch.device" = "cpu", dtype: "torch.dtype | str" = "float32") -> Backend:
    """A backend from a model name, a ``(model, tokenizer)`` pair, a LangChain chat model or a backend.

    >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
    >>> as_backend(FakeListChatModel(responses=["ok"])).is_local
    False

    ``device``/``dtype`` apply only when a name is loaded here.
    """
    if isinstance(x, Backend):
        return x
    if isinstance(x, str):
        return LocalLM.from_name(x, device=device, dtype=dtype)
    if isinstance(x, tuple) and len(x) == 2:
        return LocalLM(*x)
    if _is_langchain_chat_model(x):
        return LangChainLM(x)
    if isinstance(x, ChatBackend):  # a user's own duck-typed backend
        return _Adapted(x)
    raise ValidationError(
        f"cannot use {type(x).__name__} as a model: pass a registered model name or local path, a (model, tokenizer) "
        "pair, a langchain-core BaseChatModel, or a memedit backend"
    )


def lazy_backend(x: Any, *, device: "str | torch.device" = "cpu", dtype: "torch.dtype | str" = "float32") -> Backend:
    """Like :func:`as_backend`, but a model *name* is loaded only when first used."""
    if isinstance(x, str):
        return LazyBackend(lambda: LocalLM.from_name(x, device=device, dtype=dtype), name=x, is_local=True)
    return as_backend(x, device=device, dtype=dtype)


class _Adapted(Backend):
    """Wraps an object that follows :class:`ChatBackend` without subclassing :class:`Backend`."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.name = str(getattr(inner, "name", type(inner).__name__))
        self.is_local = bool(getattr(inner, "is_local", False))

    def chat(self, messages: Sequence[Message], max_new_tokens: int | None = None) -> str:
        return self.inner.chat(messages, max_new_tokens)
