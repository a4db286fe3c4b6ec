"""The edit: one correction of what a model knows, validated at the boundary.

>>> from memedit.edits import Edit
>>> e = Edit.fact("the US", "The current president of {} is", "Trump", target_true="Biden")
>>> e.sentence()
'The current president of the US is Trump'
>>> Edit.text("The CEO of Acme is Jane Roe now.").kind
'text'

Two kinds:

* a **fact edit** (ROME / CounterFact style): ``subject``, a ``prompt`` template
  with ``{}`` where the subject goes, ``target_new``, optional
  ``target_true``, optional ``paraphrases`` (templates with ``{}`` or plain
  sentences) and an optional free-text ``statement``;
* a **free-text correction**: a ``statement`` only.

:func:`Edit.validated` is the single gate every edit passes before it is
stored; it normalises (NFC, trimmed) and rejects with
:class:`~memedit.errors.ValidationError` anything empty, over-long, containing
control characters, of the wrong type, or structurally wrong.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Iterable

from .errors import ValidationError

KINDS = ("fact", "text")
STATUSES = ("pending", "active", "superseded", "rejected", "forgotten")
#: statuses whose edits may answer questions or be found for review
LIVE_STATUSES = ("pending", "active")

# Limits: generous for real corrections, small enough that a store cannot be
# flooded with megabyte "facts" through a chat box.
MAX_SUBJECT = 200
MAX_PROMPT = 500
MAX_TARGET = 300
MAX_STATEMENT = 2000
MAX_PARAPHRASES = 20
MAX_AUTHOR = 100
MAX_SOURCE = 4000

NAMESPACE_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?(?:/[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?){0,3}$")
NAMESPACE_HELP = (
    "lower-case letters, digits, '.', '_' and '-', starting and ending with a letter or digit, "
    "at most 64 characters a part, up to 4 parts joined by '/' (e.g. 'default', 'acme/user-42')"
)
# Lone surrogates (U+D800-DFFF) cannot be encoded as UTF-8 for SQLite or the tokenizer; they reach
# Python from undecodable argv bytes (surrogateescape) or JSON such as "\\ud800".
# Control characters, bidi overrides/isolates and marks, zero-width no-break space, and lone surrogates
# (which cannot be encoded as UTF-8 for SQLite or the tokenizer; they reach Python from undecodable argv
# bytes or JSON such as "\\ud800"). Single-line fields also refuse tabs; statements may hold tabs and newlines.
_INVISIBLE = "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff"
_CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f{_INVISIBLE}]")
_CONTROL_MULTILINE = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_INVISIBLE}]")
_BRACES = re.compile(r"\{[^}]*\}")


def utcnow() -> str:
    """Current time as an ISO-8601 UTC string with microseconds (sortable)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def validate_namespace(namespace: Any) -> str:
    """Return ``namespace`` if it is well formed, else raise ValidationError."""
    if not isinstance(namespace, str):
        raise ValidationError(f"namespace must be a string, got {type(namespace).__name__}")
    if not NAMESPACE_RE.fullmatch(namespace):  # fullmatch: '$' alone would accept a trailing newline
        raise ValidationError(f"invalid namespace {namespace!r}: use {NAMESPACE_HELP}")
    return namespace


def clean_text(value: Any, name: str, max_len: int, *, required: bool = True, multiline: bool = False) -> str | None:
    """Normalise one text field (NFC, trimmed) or raise ValidationError saying which field and why."""
    if value is None:
        if required:
            raise ValidationError(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, got {type(value).__name__}")
    text = unicodedata.normalize("NFC", value).strip()
    if not text:
        if required:
            raise ValidationError(f"{name} must not be empty or whitespace")
        return None
    if len(text) > max_len:
        raise ValidationError(f"{name} is too long ({len(text)} characters; at most {max_len})")
    bad = (_CONTROL_MULTILINE if multiline else _CONTROL).search(text)
    if bad:
        raise ValidationError(f"{name} contains a control character (U+{ord(bad.group()):04X})")
    if not multiline and ("\n" in text or "\r" in text):
        raise ValidationError(f"{name} must be a single line")
    return text


def relation_key(prompt: str) -> str:
    """The relation a prompt template expresses, for 'same subject + relation' supersession.

    >>> relation_key("The  chief executive of {} is ")
    'the chief executive of {} is'
    """
    key = re.sub(r"\s+", " ", prompt.casefold()).strip()
    return key.rstrip(" ?.!:")


def subject_key(subject: str) -> str:
    return re.sub(r"\s+", " ", subject.casefold()).strip()


@dataclass(frozen=True)
class Edit:
    """One correction. Build with :meth:`fact` or :meth:`text`; stores assign ``id`` and bookkeeping."""

    kind: str
    statement: str | None = None
    subject: str | None = None
    prompt: str | None = None
    target_new: str | None = None
    target_true: str | None = None
    paraphrases: tuple[str, ...] = ()
    namespace: str = "default"
    author: str | None = None
    source: str | None = None
    # Assigned by the store:
    id: int | None = None
    uid: str | None = None
    status: str = "active"
    supersedes: int | None = None
    superseded_by: int | None = None
    usage_count: int = 0
    last_used_at: str | None = None
    committed: bool = False
    created_at: str | None = None
    updated_at: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- construction -------------------------------------------------
    @classmethod
    def fact(
        cls,
        subject: str,
        prompt: str,
        target_new: str,
        *,
        target_true: str | None = None,
        paraphrases: Iterable[str] = (),
        statement: str | None = None,
        namespace: str = "default",
        author: str | None = None,
        source: str | None = None,
    ) -> "Edit":
        """A fact edit; ``prompt`` holds ``{}`` where ``subject`` goes."""
        return cls(
            kind="fact", subject=subject, prompt=prompt, target_new=target_new, target_true=target_true,
            paraphrases=_as_tuple(paraphrases), statement=statement, namespace=namespace, author=author,
            source=source,
        ).validated()

    @classmethod
    def text(
        cls, statement: str, *, namespace: str = "default", author: str | None = None, source: str | None = None
    ) -> "Edit":
        """A free-text correction such as ``"The CEO of Acme is Jane Roe now."``."""
        return cls(kind="text", statement=statement, namespace=namespace, author=author, source=source).validated()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Edit":
        """Build from a plain dict (e.g. JSON), rejecting unknown keys, then validate."""
        if not isinstance(data, dict):
            raise ValidationError(f"an edit must be a JSON object, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationError(f"unknown edit field(s): {', '.join(unknown)}")
        kind = data.get("kind") or ("fact" if data.get("prompt") is not None else "text")
        values = dict(data, kind=kind)
        if "paraphrases" in values:
            values["paraphrases"] = _as_tuple(values["paraphrases"])
        return cls(**values).validated()

    # ---- validation ---------------------------------------------------
    def validated(self) -> "Edit":
        """Return a normalised copy, or raise ValidationError naming the first problem."""
        if self.kind not in KINDS:
            raise ValidationError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.status not in STATUSES:
            raise ValidationError(f"status must be one of {STATUSES}, got {self.status!r}")
        ns = validate_namespace(self.namespace)
        author = clean_text(self.author, "author", MAX_AUTHOR, required=False)
        source = clean_text(self.source, "source", MAX_SOURCE, required=False, multiline=True)
        if not isinstance(self.meta, dict):
            raise ValidationError("meta must be a JSON object")
        _check_bookkeeping(self)
        if self.kind == "text":
            for name in ("subject", "prompt", "target_new", "target_true"):
                if getattr(self, name) is not None:
                    raise ValidationError(f"a free-text correction has no {name}; use Edit.fact for structured edits")
            if self.paraphrases:
                raise ValidationError("a free-text correction has no paraphrases")
            statement = clean_text(self.statement, "statement", MAX_STATEMENT, multiline=True)
            return replace(self, namespace=ns, author=author, source=source, statement=statement)

        if self.subject is None:
            raise ValidationError("a fact edit needs a subject (the entity the prompt's {} stands for)")
        subject = clean_text(self.subject, "subject", MAX_SUBJECT)
        prompt = clean_text(self.prompt, "prompt", MAX_PROMPT)
        assert subject is not None and prompt is not None
        _check_template(prompt, "prompt")
        target_new = clean_text(self.target_new, "target_new", MAX_TARGET)
        target_true = clean_text(self.target_true, "target_true", MAX_TARGET, required=False)
        if target_true is not None and target_true.casefold() == (target_new or "").casefold():
            raise ValidationError("target_new equals target_true: the edit would change nothing")
        statement = clean_text(self.statement, "statement", MAX_STATEMENT, required=False, multiline=True)
        if not isinstance(self.paraphrases, tuple):
            raise ValidationError("paraphrases must be a list of strings")
        if len(self.paraphrases) > MAX_PARAPHRASES:
            raise ValidationError(f"too many paraphrases ({len(self.paraphrases)}; at most {MAX_PARAPHRASES})")
        paraphrases = []
        for i, p in enumerate(self.paraphrases):
            text = clean_text(p, f"paraphrases[{i}]", MAX_PROMPT)
            assert text is not None
            if "{" in text or "}" in text:
                _check_template(text, f"paraphrases[{i}]")
            paraphrases.append(text)
        return replace(
            self, namespace=ns, author=author, source=source, subject=subject, prompt=prompt,
            target_new=target_new, target_true=target_true, statement=statement,
            paraphrases=tuple(dict.fromkeys(paraphrases)),
        )

    # ---- views ----------------------------------------------------------
    @property
    def relation(self) -> str | None:
        """Normalised relation key of a fact edit (None for free text)."""
        return relation_key(self.prompt) if self.kind == "fact" and self.prompt else None

    def filled_prompt(self) -> str:
        """The prompt with the subject in place, e.g. ``'The capital of France is'``."""
        if self.kind != "fact":
            raise ValueError("only fact edits have a prompt")
        return self.prompt.replace("{}", self.subject)  # type: ignore[union-attr,arg-type]

    def sentence(self) -> str:
        """One declarative sentence stating the edit: the statement, or prompt + new target."""
        if self.kind == "text" or (self.statement and not self.prompt):
            return self.statement or ""
        return _join(self.filled_prompt(), self.target_new or "")

    def search_texts(self) -> list[str]:
        """What the vector index holds for this edit (deduplicated, first is canonical).

        The statement, the filled prompt followed by the new target (so a
        question from the object side also lands near it) and each paraphrase.
        """
        texts = [self.sentence()]
        if self.kind == "fact":
            if self.statement:
                texts.append(self.statement)
            for p in self.paraphrases:
                filled = p.replace("{}", self.subject or "")
                texts.append(_join(filled, self.target_new or ""))
        return list(dict.fromkeys(t for t in texts if t))

    def content(self) -> dict[str, Any]:
        """The user-supplied content (what forgetting erases), as a canonical dict."""
        return {
            "kind": self.kind, "statement": self.statement, "subject": self.subject, "prompt": self.prompt,
            "target_new": self.target_new, "target_true": self.target_true, "paraphrases": list(self.paraphrases),
            "author": self.author, "source": self.source, "meta": self.meta,
        }

    def to_dict(self) -> dict[str, Any]:
        """All fields as JSON-ready values."""
        d = asdict(self)
        d["paraphrases"] = list(self.paraphrases)
        return d


def _as_tuple(values: Any) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        raise ValidationError("paraphrases must be a list of strings, not a single string")
    try:
        return tuple(values)
    except TypeError as exc:
        raise ValidationError("paraphrases must be a list of strings") from exc


def _check_template(template: str, name: str) -> None:
    holes = _BRACES.findall(template)
    if holes.count("{}") != 1 or len(holes) != 1:
        raise ValidationError(f"{name} must contain exactly one '{{}}' where the subject goes, got {template!r}")
    if template.count("{") != 1 or template.count("}") != 1:
        raise ValidationError(f"{name} has stray braces: {template!r}")


def _join(prompt: str, target: str) -> str:
    prompt = prompt.rstrip()
    if prompt.endswith("?"):
        return f"{prompt} {target}"
    return f"{prompt} {target}".strip()


def _check_bookkeeping(edit: "Edit") -> None:
    """Store-assigned fields arrive from JSON on import: check their types too."""
    for name in ("id", "supersedes", "superseded_by"):
        value = getattr(edit, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValidationError(f"{name} must be a positive integer or null")
    if not isinstance(edit.usage_count, int) or isinstance(edit.usage_count, bool) or edit.usage_count < 0:
        raise ValidationError("usage_count must be a non-negative integer")
    if not isinstance(edit.committed, bool):
        raise ValidationError("committed must be true or false")
    for name in ("uid", "last_used_at", "created_at", "updated_at"):
        value = getattr(edit, name)
        if value is not None and (not isinstance(value, str) or len(value) > 64 or _CONTROL.search(value)):
            raise ValidationError(f"{name} must be a short string or null")
