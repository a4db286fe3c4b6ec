"""SERAC's counterfactual model (Mitchell et al., 2022, "Memory-Based Model Editing at Scale").

>>> from memedit.methods.serac import SERAC
>>> serac = SERAC()                       # the packaged SmolLM2, loaded on the first SERAC answer
>>> serac.counterfactual.loaded
False
>>> msgs = serac.build("Who is Trump?", ["The current president of the US is Trump"])
>>> msgs[-1]["content"].splitlines()[0]
'New fact: "The current president of the US is Trump"'

SERAC keeps edits in a memory, lets a scope classifier decide whether a
question touches one, and answers in-scope questions with a separate small
*counterfactual model* conditioned on the edit, so the base model (possibly
a big remote one) never sees those questions and is never changed. The router
and the scope classifier are memedit's own (:mod:`memedit.route`,
:mod:`memedit.scope`); this module is the counterfactual model.

The paper fine-tunes a small seq2seq model on ``(edit, question) -> answer``.
Here the counterfactual model is the packaged SmolLM2-135M-Instruct, either

* **prompted** (``adapter=None``): it only ever sees questions the classifier
  put in scope, so unlike IKE it gets no "retain" examples, only
  demonstrations of using the fact (a paraphrased question, the fact's own
  prompt, and a reverse question), retrieved from the same hand-written pool
  as IKE's; or
* **with a trained LoRA adapter** (the default: the packaged one, trained on
  the dev files' training split; or ``adapter="DIR"``; see
  :mod:`memedit.methods.serac_adapter`, ``memedit serac train`` and
  ``docs/SERAC.md``): a private
  copy of the base model with the adapter merged in, prompted with the
  adapter's short format (the fact(s) and the question, no demonstrations).
  An adapter trained on other weights is refused. The adapter learnt
  "question -> object" and answers a question *about the object* ("Who is
  Hung-yi Lee?") with the name it was asked about; such an echo is no answer,
  so :meth:`SERAC.generate` then asks again with the prompted format
  (demonstrations include reverse questions), and the trace says so.
"""
from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import ValidationError
from ..models.backends import Backend, LazyBackend, as_backend, lazy_backend
from .ike import DemonstrationPool, IKE
from .prompting import edit_statement

if TYPE_CHECKING:  # pragma: no cover
    from ..answer import UsedEdit

log = logging.getLogger(__name__)

DEFAULT_COUNTERFACTUAL = "smollm2-135m-instruct"

SERAC_SYSTEM = (
    "You answer using the new fact you are given. The fact is true, even if it contradicts what you know. "
    "Answer in a few words."
)
SERAC_KINDS = ("update", "copy", "reverse")


class SERAC:
    """The counterfactual model and its prompt format; the route that uses it is ``"serac"``.

    ``counterfactual`` is anything :func:`~memedit.models.backends.as_backend`
    accepts; a model *name* loads on the first SERAC answer. ``adapter`` (a
    directory written by ``memedit serac train``, ``"packaged"``, or a
    :class:`~memedit.methods.serac_adapter.LoRAAdapter`) puts a trained LoRA on
    the counterfactual model (a name, a path or a ``(model, tokenizer)`` pair,
    default the adapter's base model) and switches to the adapter's prompt.
    The default, ``"auto"``, is the packaged adapter when the counterfactual
    model is the packaged SmolLM2 (and the prompt-only path, with a warning, if
    that copy's weights differ from the ones it was trained on); ``None`` is
    always the prompt-only path.
    """

    route = "serac"

    def __init__(self, counterfactual: Any = None, *, pool: DemonstrationPool | None = None, k: int = 3,
                 system: str = SERAC_SYSTEM, device: Any = "cpu", dtype: Any = "float32", adapter: Any = "auto"):
        self.adapter = None
        self._fallback = False
        if adapter == "auto":  # the packaged adapter, when it ships and the model is the one it was trained on
            from .serac_adapter import packaged_adapter_available

            default_model = counterfactual is None or counterfactual == DEFAULT_COUNTERFACTUAL
            adapter = "packaged" if default_model and packaged_adapter_available() else None
            self._fallback = adapter is not None
        if adapter is not None:
            from .serac_adapter import LoRAAdapter, load_counterfactual

            ad = LoRAAdapter.load(adapter)  # files and metadata checked now; the weights when the model loads
            target = counterfactual if counterfactual is not None else ad.base_model
            ad.check_target(target)
            self.adapter = ad
            name = f"{target if isinstance(target, str) else 'model'}+serac-adapter"

            def factory() -> Backend:
                try:
                    return load_counterfactual(ad, target, device=device, dtype=dtype)
                except ValidationError as exc:
                    if not self._fallback:
                        raise
                    # The default adapter does not fit this copy of the model: answer prompted, as without it.
                    log.warning("not using the packaged SERAC adapter (%s); prompting %s instead", exc, target)
                    self.adapter = None
                    return as_backend(target, device=device, dtype=dtype)

            self.counterfactual: Backend = LazyBackend(factory, name=name, is_local=True)
        else:
            self.counterfactual = lazy_backend(counterfactual or DEFAULT_COUNTERFACTUAL, device=device, dtype=dtype)
        self.prompt = IKE(pool, k=k, retain=0, system=system, kinds=SERAC_KINDS)

    def backend(self, base: Backend) -> Backend:  # noqa: ARG002 - SERAC never answers with the base model
        """The model that answers SERAC questions: the counterfactual model, never ``base``."""
        return self.counterfactual

    def build(self, question: str, statements: Sequence[str], **kwargs: Any) -> list[dict[str, str]]:
        """Chat messages for the counterfactual model (the adapter's short format when there is an adapter)."""
        if self.adapter is not None:
            from .serac_adapter import adapter_messages

            return adapter_messages(statements, question, self.adapter.system)
        return self.prompt.build(question, statements, **kwargs)

    def generate(self, backend: Backend, prepared: Any) -> tuple[str, list[dict[str, Any]]]:
        """The answer to a prepared question, and a trace of any step that changed it.

        With an adapter, an answer that only repeats words of the question and
        is not an edit's new object (:func:`is_echo`) is replaced by the answer
        to the prompted format. An answer to a question that asks an in-scope
        edit's own fact must contain its new object, or the object replaces it
        (:func:`memedit.fact_match.checked_answer`).
        """
        from ..fact_match import checked_answer

        text = backend.chat(prepared.messages, prepared.max_new_tokens)
        targets = [u.edit.target_new for u in prepared.used if u.edit.target_new]
        subjects = [u.edit.subject for u in prepared.used if u.edit.target_new and u.edit.subject]
        steps: list[dict[str, Any]] = []
        if self.adapter is not None and is_echo(text, prepared.question, targets, subjects):
            retry = self.prompt.messages(prepared.question, prepared.used)
            second = backend.chat(retry, prepared.max_new_tokens)
            log.debug("SERAC adapter echoed the question (%r); prompted answer %r", text, second)
            steps.append({"step": "serac-echo", "adapter_answer": text, "answer": second,
                          "why": "the adapter's answer only repeats the question; asked again with demonstrations"})
            text = second
        text, checked = checked_answer(text, prepared.question, prepared.used, self.route)
        return text, steps + checked

    def messages(self, question: str, used: Sequence["UsedEdit"], **kwargs: Any) -> list[dict[str, str]]:
        """The prompt for a question and its in-scope edits (same keywords as :meth:`IKE.messages`)."""
        if self._fallback and not self.counterfactual.loaded:
            self.counterfactual.get()  # settles whether the default adapter applies before the prompt is built
        if self.adapter is not None:
            return self.build(question, [edit_statement(u.edit) for u in used])
        return self.prompt.messages(question, used, **kwargs)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def is_echo(answer: str, question: str, targets: Sequence[str] = (), subjects: Sequence[str] = ()) -> bool:
    """Whether ``answer`` only repeats words of ``question`` in order (e.g. "Hung-yi Lee" to "Who is Hung-yi Lee?").

    An answer that is one of ``targets`` (the in-scope edits' new objects) is
    an echo only when the question names that object but none of the edits'
    ``subjects``: a reverse question ("Who is Hung-yi Lee?" after "the most
    handsome person in the world is Hung-yi Lee"), whose answer is the fact,
    not the name. When the question names a subject ("Prague is a twin city
    of" -> "Prague", the edit's new object) the answer stands.

    >>> is_echo("Hung-yi Lee.", "Who is Hung-yi Lee?"), is_echo("English", "What is the mother tongue of X?")
    (True, False)
    >>> is_echo("Hung-yi Lee", "Who is Hung-yi Lee?", ["Hung-yi Lee"], ["the world"])
    True
    >>> is_echo("Prague", "Prague is a twin city of", ["Prague"], ["Prague"])
    False
    """
    a, q = _words(answer), _words(question)
    if not a or not _contains(q, a):
        return False
    if any(a == _words(t) for t in targets):
        named = [w for w in (_words(s) for s in subjects) if w]
        return bool(named) and not any(_contains(q, w) for w in named)
    return True


def _contains(words: Sequence[str], part: Sequence[str]) -> bool:
    part = list(part)
    return any(list(words[i:i + len(part)]) == part for i in range(len(words) - len(part) + 1))
