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
Here the counterfactual model is the packaged SmolLM2-135M-Instruct, prompted:
it only ever sees questions the classifier put in scope, so unlike IKE it gets
no "retain" examples, only demonstrations of using the fact (a paraphrased
question, the fact's own prompt, and a reverse question), retrieved from the
same hand-written pool as IKE's.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Sequence

from ..models.backends import Backend, lazy_backend
from .ike import DemonstrationPool, IKE

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
    accepts; a model *name* loads on the first SERAC answer.
    """

    route = "serac"

    def __init__(self, counterfactual: Any = None, *, pool: DemonstrationPool | None = None, k: int = 3,
                 system: str = SERAC_SYSTEM, device: Any = "cpu", dtype: Any = "float32"):
        self.counterfactual: Backend = lazy_backend(counterfactual or DEFAULT_COUNTERFACTUAL, device=device,
                                                    dtype=dtype)
        self.prompt = IKE(pool, k=k, retain=0, system=system, kinds=SERAC_KINDS)

    def backend(self, base: Backend) -> Backend:  # noqa: ARG002 - SERAC never answers with the base model
        """The model that answers SERAC questions: the counterfactual model, never ``base``."""
        return self.counterfactual

    def build(self, question: str, statements: Sequence[str], **kwargs: Any) -> list[dict[str, str]]:
        """Chat messages for the counterfactual model."""
        return self.prompt.build(question, statements, **kwargs)

    def messages(self, question: str, used: Sequence["UsedEdit"], **kwargs: Any) -> list[dict[str, str]]:
        """The prompt for a question and its in-scope edits (same keywords as :meth:`IKE.messages`)."""
        return self.prompt.messages(question, used, **kwargs)
