"""Edit requests and how their prompts are tokenised (subject position, target tokens).

>>> from memedit.methods.rome.prompts import as_request
>>> r = as_request({"prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
...                 "target_new": "English", "ground_truth": "French"})
>>> r.template, r.target_true
('The mother tongue of {} is', 'French')

A request is what the weight editors need from an edit: the subject, a
template with ``{}`` where the subject goes, ``target_new`` and optionally
``target_true``. :func:`as_request` accepts a :class:`memedit.edits.Edit`
(fact kind), a ``Request``, or a CounterFact-style dict (``prompt`` with
``{}`` or with the subject written out, ``target_new`` as a string or
``{"str": ...}``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import ValidationError


@dataclass(frozen=True)
class Request:
    """One fact to write: ``template.format(subject)`` should be continued by ``target_new``."""

    subject: str
    template: str
    target_new: str
    target_true: str | None = None
    paraphrases: tuple[str, ...] = ()
    edit_id: int | None = None
    #: more (template, target) pairs the edit is written for, with the subject at ``{}`` (chat forms, see
    #: :func:`with_chat_forms`): each adds a rewrite row to the value optimisation and a key row to the key
    forms: tuple[tuple[str, str], ...] = ()

    def prompt(self) -> str:
        """The filled prompt, e.g. ``'The mother tongue of Danielle Darrieux is'``."""
        return self.template.replace("{}", self.subject)

    def form_requests(self) -> list["Request"]:
        """One request per extra form (its template, its target), for the row builders."""
        return [Request(self.subject, t, target, edit_id=self.edit_id) for t, target in self.forms]


CHAT_TARGETS = ("object", "sentence")


def with_chat_forms(tok: Any, req: Request, n: int, target: str = "sentence") -> Request:
    """``req`` with its first ``n`` chat questions as extra forms: the question as the chat template renders it
    for the router's bare route (``[{"role": "user", "content": question}]``, generation prompt added), the
    subject where the question names it, and as target the new object (``target="object"``) or the edit's
    sentence, which restates the subject's name before the object (``"sentence"``).

    A tokenizer without a chat template, or ``n == 0``, leaves ``req`` as it is.
    """
    from dataclasses import replace

    from ...chat_check import edit_questions
    from ...edits import Edit

    if n <= 0 or not getattr(tok, "chat_template", None):
        return req
    if target not in CHAT_TARGETS:
        raise ValidationError(f"chat target must be one of {CHAT_TARGETS}")
    edit = Edit.fact(req.subject, req.template, req.target_new, target_true=req.target_true)
    q = edit_questions(edit)
    answer = req.target_new if target == "object" else edit.sentence()
    forms = []
    for question in [q.direct, *q.paraphrases][:n]:
        if req.subject not in question:
            continue
        rendered = tok.apply_chat_template([{"role": "user", "content": question.replace(req.subject, "\x00", 1)}],
                                           tokenize=False, add_generation_prompt=True)
        if rendered.count("\x00") != 1 or "{" in rendered or "}" in rendered:
            continue  # a template that rewrites the text, or braces that would confuse the placeholder
        forms.append((rendered.replace("\x00", "{}"), answer))
    return replace(req, forms=req.forms + tuple(forms))


def _target(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("str")
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} must be a non-empty string")
    return value.strip()


def as_request(edit: Any) -> Request:
    """A :class:`Request` from an ``Edit``, a ``Request`` or a CounterFact-style dict; ValidationError otherwise."""
    if isinstance(edit, Request):
        req = edit
    elif hasattr(edit, "kind") and hasattr(edit, "target_new"):
        if edit.kind != "fact":
            raise ValidationError("weight editors need a fact edit (subject, prompt with {}, target_new); "
                                  "free-text corrections cannot be committed to the weights")
        req = Request(subject=edit.subject, template=edit.prompt, target_new=edit.target_new,
                      target_true=edit.target_true, paraphrases=tuple(edit.paraphrases), edit_id=edit.id)
    elif isinstance(edit, dict):
        subject = edit.get("subject")
        prompt = edit.get("prompt")
        if not isinstance(subject, str) or not subject.strip():
            raise ValidationError("request needs a non-empty 'subject'")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValidationError("request needs a non-empty 'prompt'")
        subject = subject.strip()
        if "{}" not in prompt:
            if subject not in prompt:
                raise ValidationError(f"subject {subject!r} does not occur in prompt {prompt!r}")
            prompt = prompt.replace(subject, "{}", 1)
        paraphrases = edit.get("paraphrases") or edit.get("paraphrase_prompts") or ()
        if isinstance(edit.get("rephrase_prompt"), str):
            paraphrases = (edit["rephrase_prompt"], *paraphrases)
        req = Request(subject=subject, template=prompt.strip(), target_new=_target(edit.get("target_new"), "target_new"),
                      target_true=_target(edit.get("target_true", edit.get("ground_truth")), "target_true"),
                      paraphrases=tuple(paraphrases), edit_id=edit.get("id"))
    else:
        raise ValidationError(f"cannot make an edit request from {type(edit).__name__}")
    if req.template.count("{}") != 1:
        raise ValidationError(f"prompt {req.template!r} must contain exactly one '{{}}' where the subject goes")
    if not req.subject or not req.subject.strip():
        raise ValidationError("request needs a non-empty subject")
    if not req.target_new or not req.target_new.strip():
        raise ValidationError("request needs a non-empty target_new")
    return req


# --------------------------------------------------------------------------- tokenisation


def target_ids(tok: Any, prompt: str, target: str) -> list[int]:
    """Token ids of ``target`` as it continues ``prompt`` (with a separating space unless the prompt ends in one).

    Raises ValidationError when the target tokenises to nothing.
    """
    text = target if (not prompt or prompt[-1].isspace()) else " " + target.strip()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValidationError(f"target {target!r} tokenises to nothing with this tokenizer")
    return list(ids)


def encode_with_subject(tok: Any, prefix: str, template: str, subject: str) -> tuple[list[int], int]:
    """Token ids of ``prefix + template.format(subject)`` and the index of the subject's last token."""
    ids, positions = subject_positions(tok, prefix, template, subject)
    return ids, positions[-1]


def subject_positions(tok: Any, prefix: str, template: str, subject: str) -> tuple[list[int], list[int]]:
    """Token ids of ``prefix + template.format(subject)`` and the indices of the subject's tokens, in order.

    Without offsets (a slow tokenizer) only the last index is known: the list is that one index.
    """
    before, after = template.split("{}", 1)
    text = prefix + before + subject + after
    start = len(prefix) + len(before)
    end = start + len(subject)
    enc = None
    if getattr(tok, "is_fast", False):
        enc = tok(text, add_special_tokens=True, return_offsets_mapping=True)
    if enc is not None and "offset_mapping" in enc:
        ids = list(enc["input_ids"])
        positions = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < end and b > start]
        if not positions:
            raise ValidationError(f"subject {subject!r} has no token in {text!r}")
        return ids, positions
    ids = list(tok(text, add_special_tokens=True)["input_ids"])
    upto = tok(text[:end], add_special_tokens=True)["input_ids"]
    return ids, [len(upto) - 1]


@dataclass
class Row:
    """One sequence of a batch, split at the subject's last token.

    ``prefix``: tokens before it (never change during the optimisation; cached);
    ``suffix``: the subject's last token and everything after (recomputed);
    ``targets``: (suffix column predicting it, token id) pairs scored for the loss.
    """

    request: int
    kind: str  # "rewrite" | "kl"
    prefix: list[int]
    suffix: list[int]
    targets: list[tuple[int, int]] = field(default_factory=list)


def rewrite_row(tok: Any, index: int, context: str, req: Request, target: str | None = None) -> Row:
    """``context + prompt`` followed by the target (its last token is predicted, never fed)."""
    ids, last = encode_with_subject(tok, context, req.template, req.subject)
    tgt = target_ids(tok, req.prompt(), target or req.target_new)
    seq = ids + tgt
    n_prompt = len(ids)
    targets = [(n_prompt + j - 1 - last, t) for j, t in enumerate(tgt)]
    return Row(request=index, kind="rewrite", prefix=seq[:last], suffix=seq[last:-1], targets=targets)


def kl_row(tok: Any, index: int, kl_template: str, req: Request) -> Row:
    """``kl_template`` with the subject; the next-token distribution at its end is kept close to the original."""
    ids, last = encode_with_subject(tok, "", kl_template, req.subject)
    return Row(request=index, kind="kl", prefix=ids[:last], suffix=ids[last:], targets=[(len(ids) - 1 - last, -1)])
