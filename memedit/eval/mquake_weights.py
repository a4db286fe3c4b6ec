"""MQuAKE's weight-editing baselines: a case's edits written into the weights, then the bare model is asked.

>>> from memedit.eval.mquake_weights import WeightBaseline
>>> from memedit.models.backends import LocalLM
>>> base = WeightBaseline(LocalLM.from_name("smollm2-135m-instruct"), "rome")    # doctest: +SKIP
>>> with base.applied(case.edits):                                              # doctest: +SKIP
...     base.backend.chat([{"role": "user", "content": case.questions[0]}])

The MQuAKE paper's point is that locate-then-edit methods write the edited
fact itself but not its consequences: after "Ellie Kemper is a citizen of
Croatia" is written, the model says Croatia when asked her citizenship
(edit-wise accuracy) yet still answers the two-hop question through the old
country. ``rome`` writes a case's edits one after another (as sequential ROME
commits do), ``memit`` in one batch; either way the weights come back bit for
bit after each case (:meth:`WeightBaseline.applied` restores a snapshot).
Statistics are the cached second moments of :mod:`memedit.methods.stats`.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from ..errors import ValidationError

log = logging.getLogger(__name__)

WEIGHT_METHODS = ("rome", "memit")


class WeightBaseline:
    """Applies a case's edits to a local backend's weights with ROME or MEMIT, inside a ``with`` block."""

    def __init__(self, backend: Any, method: str, *, hparams: dict[str, Any] | None = None,
                 stats_tokens: int = 100_000, stats_options: dict[str, Any] | None = None) -> None:
        """``hparams``: overrides of the family defaults; ``stats_options``: more keywords for
        :func:`memedit.methods.stats.second_moments` (``texts`` for another corpus)."""
        from ..methods.memit import MemitHParams
        from ..methods.rome import RomeHParams
        from ..methods.stats import second_moments
        from ..models.arch import arch_for

        if method not in WEIGHT_METHODS:
            raise ValidationError(f"weight baseline must be one of {WEIGHT_METHODS}, got {method!r}")
        model = getattr(backend, "model", None)
        if model is None or not getattr(backend, "is_local", False):
            raise ValidationError(f"the {method} baseline edits weights: it needs a local transformers model, "
                                  f"not {type(backend).__name__}")
        self.backend, self.method = backend, method
        self.model, self.tok = model, backend.tokenizer
        cls = RomeHParams if method == "rome" else MemitHParams
        self.hp = cls.for_model(model, stats_tokens=stats_tokens, **(hparams or {}))
        layers = [self.hp.layer] if method == "rome" else list(self.hp.layers)
        self.stats = second_moments(model, self.tok, layers, **{"n_tokens": stats_tokens, **(stats_options or {})})
        self.arch = arch_for(model)
        self.names = [self.arch.weight_name(layer) for layer in layers]

    @contextmanager
    def applied(self, edits: Sequence[Any]) -> Iterator[dict[str, Any]]:
        """The edits written into the weights for the block; the weights restored bit for bit afterwards.

        Yields an info dict (``edits``: how many were written, ``seconds``).
        """
        from ..methods import memit, rome
        from ..methods.deltas import apply_deltas, restore, snapshot

        if not edits:
            raise ValidationError("no edits to write into the weights")
        saved = snapshot(self.model, self.names)
        info: dict[str, Any] = {"edits": 0, "seconds": 0.0}
        try:
            if self.method == "rome":
                for e in edits:  # sequential: each edit sees the previous ones in the weights
                    res = rome.apply(self.model, self.tok, e, self.hp, stats=self.stats[self.hp.layer])
                    apply_deltas(self.model, res.deltas)
                    info["edits"] += 1
                    info["seconds"] += res.stats["seconds"]["total"]
            else:
                res = memit.apply(self.model, self.tok, list(edits), self.hp, stats=self.stats)
                apply_deltas(self.model, res.deltas)
                info["edits"] = len(edits)
                info["seconds"] = res.stats["seconds"]["total"]
            yield info
        finally:
            restore(self.model, saved)
