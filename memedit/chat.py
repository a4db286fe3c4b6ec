"""One chat turn at a time: corrections become edits, questions are answered through them.

>>> from memedit import Editor
>>> from memedit.chat import ChatSession
>>> session = ChatSession(Editor(model="smollm2-135m-instruct", store="stores/chat.db"))   # doctest: +SKIP
>>> session.handle("Actually, the current president of the US is Trump.").reply            # doctest: +SKIP
'Noted: "The current president of the US is Trump." (edit 1, active)'
>>> session.handle("Who is the US president?").route                                      # doctest: +SKIP
'ike'

:class:`ChatSession` is what ``memedit chat`` drives: besides corrections
(``/correct ...`` or natural phrasings, see :mod:`memedit.corrections`) and
questions it understands ``/edits``, ``/forget ID``, ``/help`` and ``/quit``.
:func:`record_correction` and :func:`acknowledgement` are shared with the
LangChain wrapper (:mod:`memedit.integrations.langchain`), so a correction
reads and lands the same way wherever it is typed.

Questions are answered one at a time (no conversation history): each goes
through :meth:`Editor.ask`, which decides whether a stored edit is in scope.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from .corrections import Correction, detect_correction, is_command
from .edits import Edit, validate_namespace
from .errors import ConflictError, NotFoundError, ValidationError
from .policy import ORIGIN_KEY

log = logging.getLogger(__name__)

CORRECTION_STATUSES = ("active", "pending")
HELP = """\
Ask anything, or correct me:
  /correct <statement>                          store a correction, e.g. /correct The CEO of Acme is Jane Roe.
  /correct subject | prompt with {} | target    store a structured fact
  Actually, X is Y. / No, X is Y now. / FYI X is Y   natural corrections are stored too
  /edits                                        list this namespace's live edits
  /forget ID                                    erase one of them everywhere
  /help                                         this text
  /quit                                         leave"""


@dataclass
class ChatTurn:
    """What one line of chat did.

    ``kind`` is ``"answer"``, ``"correction"``, ``"command"``, ``"error"`` or
    ``"quit"``; ``route`` is the answer's route (``"base"``, ``"ike"`` ...),
    ``"correction"`` for a stored correction, else None. ``data`` holds the
    details (the :class:`~memedit.answer.Answer` as a dict, the stored edit ...).
    """

    user: str
    reply: str
    kind: str
    route: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user, "reply": self.reply, "kind": self.kind, "route": self.route, "data": self.data}


def check_correction_status(status: str) -> str:
    """Return ``status`` if a chat correction may be stored with it (``active`` or ``pending``)."""
    if status not in CORRECTION_STATUSES:
        raise ValidationError(f"correction status must be one of {CORRECTION_STATUSES}, got {status!r}")
    return status


def record_correction(editor: Any, correction: Correction, *, status: str = "active",
                      namespace: str | None = None, author: str | None = None) -> Edit:
    """Store ``correction`` through ``editor.edit`` (so the editor's own bookkeeping runs) and return the edit.

    ``namespace``/``author`` override the ones the correction was parsed with.
    """
    check_correction_status(status)
    e = correction.edit
    ns = validate_namespace(namespace or e.namespace)
    who = author if author is not None else e.author
    # origin "chat": memedit.policy treats it as needing review before it is shared or committed to the weights
    meta = {ORIGIN_KEY: "chat"}
    if e.kind == "fact":
        return editor.edit(e.statement, subject=e.subject, prompt=e.prompt, target_new=e.target_new,
                           target_true=e.target_true, paraphrases=e.paraphrases, namespace=ns, author=who,
                           source=e.source, status=status, meta=meta)
    return editor.edit(e.statement, namespace=ns, author=who, source=e.source, status=status, meta=meta)


def acknowledgement(edit: Edit) -> str:
    """The short reply to a stored correction.

    >>> from memedit.edits import Edit
    >>> from dataclasses import replace
    >>> acknowledgement(replace(Edit.text("The CEO of Acme is Jane Roe."), id=7))
    'Noted: "The CEO of Acme is Jane Roe." (edit 7, active)'
    """
    text = edit.statement or edit.sentence()
    if edit.status == "pending":
        return f'Thanks, I recorded "{text}" (edit {edit.id}, pending); it will be used once it is approved.'
    extra = f", replaces edit {edit.supersedes}" if edit.supersedes else ""
    return f'Noted: "{text}" (edit {edit.id}, {edit.status}{extra})'


def correction_payload(edit: Edit, correction: Correction) -> dict[str, Any]:
    """What a stored correction reports (chat metadata, callback events, ``--json``)."""
    return {"route": "correction", "namespace": edit.namespace, "edit_id": edit.id, "status": edit.status,
            "kind": edit.kind, "statement": correction.statement, "confidence": correction.confidence,
            "trigger": correction.trigger, "supersedes": edit.supersedes}


def answer_payload(answer: Any) -> dict[str, Any]:
    """The route, used edit ids and scores of an :class:`~memedit.answer.Answer`, JSON-ready."""
    return {
        "route": answer.route, "namespace": answer.namespace,
        "edit_ids": [u.edit.id for u in answer.used],
        "scores": [round(float(u.scope_probability), 4) for u in answer.used],
        "similarities": [round(float(u.similarity), 4) for u in answer.used],
        "matched": [u.matched_text for u in answer.used],
        "timings_ms": dict(getattr(answer, "timings_ms", {}) or {}),
    }


class ChatSession:
    """A terminal-style chat over an :class:`~memedit.editor.Editor`, one namespace.

    ``correction_status`` is ``"active"`` (a correction answers at once) or
    ``"pending"`` (it waits for ``memedit approve``).
    """

    def __init__(self, editor: Any, *, namespace: str | None = None, correction_status: str = "active",
                 author: str | None = None):
        self.editor = editor
        self.namespace = validate_namespace(namespace or getattr(editor, "namespace", None) or "default")
        self.correction_status = check_correction_status(correction_status)
        self.author = author
        # Chatting in a namespace is using it: create it (once) so questions before any correction work.
        editor.store.create_namespace(self.namespace)

    def handle(self, line: str) -> ChatTurn:
        """Act on one line the user typed and return the reply."""
        text = (line or "").strip()
        if not text:
            return ChatTurn(user=text, reply="", kind="command")
        try:
            if text.startswith("/") and not is_command(text):
                return self._command(text)
            correction = detect_correction(text, namespace=self.namespace, author=self.author)
            if correction is not None:
                edit = record_correction(self.editor, correction, status=self.correction_status)
                return ChatTurn(user=text, reply=acknowledgement(edit), kind="correction", route="correction",
                                data={**correction_payload(edit, correction), "edit": edit.to_dict()})
            answer = self.editor.ask(text, namespace=self.namespace)
            return ChatTurn(user=text, reply=answer.text, kind="answer", route=answer.route,
                            data={**answer_payload(answer), "answer": answer.to_dict()})
        except (ValidationError, NotFoundError, ConflictError) as exc:
            # The user's mistake (a bad /correct, an unknown id ...): say so and keep chatting. Anything else
            # (a broken store, a missing model) would fail every turn alike, so it propagates.
            log.info("chat turn failed: %s", exc)
            return ChatTurn(user=text, reply=f"error: {exc}", kind="error", data={"type": type(exc).__name__})

    def _command(self, text: str) -> ChatTurn:
        name, _, arg = text.partition(" ")
        name, arg = name.lower(), arg.strip()
        if name in ("/quit", "/exit", "/bye"):
            return ChatTurn(user=text, reply="bye", kind="quit")
        if name in ("/help", "/?"):
            return ChatTurn(user=text, reply=HELP, kind="command")
        if name == "/edits":
            edits = self.editor.store.list(self.namespace, status=("active", "pending"), limit=50)
            lines = [f"{e.id}: {e.sentence()} ({e.status})" for e in edits] or ["(no edits yet)"]
            return ChatTurn(user=text, reply="\n".join(lines), kind="command",
                            data={"edits": [e.to_dict() for e in edits]})
        if name == "/forget":
            if not arg.isdigit():
                raise ValidationError("usage: /forget ID (see /edits for the ids)")
            try:
                edit = self.editor.store.get(int(arg))
            except NotFoundError:
                edit = None
            if edit is None or edit.namespace != self.namespace:
                # the same answer for "no such edit" and "another namespace's edit": do not confirm it exists
                raise NotFoundError(f"no edit {arg} in namespace {self.namespace!r}")
            report = self.editor.forget(int(arg))
            return ChatTurn(user=text, reply=f"forgot edit {arg}", kind="command", data={"forget": report})
        raise ValidationError(f"unknown command {name}; /help lists them")
