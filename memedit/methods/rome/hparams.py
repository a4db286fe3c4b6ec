"""Hyperparameters of ROME (and the value optimisation MEMIT / EMMET share), with per-family defaults.

>>> from memedit.methods.rome.hparams import RomeHParams
>>> hp = RomeHParams(layer=4)
>>> hp.max_steps, hp.lr, hp.kl_factor
(20, 1.0, 0.0625)
>>> RomeHParams(layer=4, lr=0.2).lr
0.2

:meth:`RomeHParams.for_model` takes the edit layer from the architecture table
(:mod:`memedit.models.arch`), where it was chosen by causal tracing.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from ...errors import ValidationError
from ...models.arch import arch_for


@dataclass(frozen=True)
class ValueHParams:
    """How the target value (ROME's ``v*``, MEMIT's ``z``) is optimised.

    * context: ``n_prefixes`` short texts of ``prefix_tokens`` tokens sampled
      once from the model (seeded, cached) are put before the prompt, as in
      ROME; ``prefixes`` gives them explicitly instead. The bare prompt is
      always included. The same prefixed prompts define the key.
    * loss: mean negative log-probability of ``target_new`` over the prefixed
      prompts + ``kl_factor`` x KL to the unedited next-token distribution on
      ``kl_prompts`` (keeps what the subject *is*) + ``weight_decay`` x
      ``|delta|^2 / |v|^2``; ``|delta|`` is clamped to
      ``clamp_norm_factor x |v|``.
    * chat forms (issue 19): ``chat_forms`` of the edit's chat questions
      (direct first, then paraphrases), rendered with the tokenizer's chat
      template as the router's bare route sends them, add a rewrite row each
      (target: the new object, or the edit's sentence, ``chat_target``) and a
      key row each (:func:`memedit.methods.rome.prompts.with_chat_forms`); 0
      writes the cloze prompt only, as in the paper.
    * optimiser: Adam with ``lr``, at most ``max_steps`` steps, stopping
      (``stop_rule="prob"``) once the mean probability of the target over the
      prefixed prompts reaches ``stop_prob``, or (``stop_rule="most_probable"``,
      MPES) once the target is the most probable continuation in every
      prefixed prompt.
    """

    n_prefixes: int = 5
    prefix_tokens: int = 10
    prefixes: tuple[str, ...] | None = None
    prefix_seed: int = 0
    kl_prompts: tuple[str, ...] = ("{} is a",)
    chat_forms: int = 0
    chat_target: str = "sentence"
    lr: float = 1.0
    max_steps: int = 20
    stop_prob: float = 0.9
    stop_rule: str = "prob"
    kl_factor: float = 0.0625
    weight_decay: float = 1e-3
    clamp_norm_factor: float = 4.0
    # statistics (second moments of the keys)
    stats_tokens: int = 100_000
    stats_seq_len: int = 128
    # compute the tokens before the subject once (KV cache); False recomputes whole prompts (ablation)
    prefix_cache: bool = True
    # report p(target) before / after (two small forward passes)
    measure: bool = True

    def validate(self) -> None:
        """Raise ValidationError on values that cannot work."""
        if self.max_steps < 1:
            raise ValidationError("max_steps must be >= 1")
        if self.lr <= 0:
            raise ValidationError("lr must be > 0")
        if not 0 < self.stop_prob <= 1:
            raise ValidationError("stop_prob must be in (0, 1]")
        if self.stop_rule not in ("prob", "most_probable"):
            raise ValidationError("stop_rule must be 'prob' or 'most_probable'")
        if self.chat_forms < 0:
            raise ValidationError("chat_forms must be >= 0")
        if self.chat_target not in ("object", "sentence"):
            raise ValidationError("chat_target must be 'object' or 'sentence'")
        if self.n_prefixes < 0 or self.prefix_tokens < 1:
            raise ValidationError("n_prefixes must be >= 0 and prefix_tokens >= 1")
        for p in self.kl_prompts:
            if p.count("{}") != 1:
                raise ValidationError(f"KL prompt {p!r} must contain exactly one '{{}}'")

    def with_(self, **changes: Any) -> Any:
        """A copy with some fields changed (unknown names raise ValidationError)."""
        known = {f.name for f in fields(self)}
        bad = sorted(set(changes) - known)
        if bad:
            raise ValidationError(f"unknown hyperparameter(s) {bad}; known: {sorted(known)}")
        return replace(self, **changes)


@dataclass(frozen=True)
class RomeHParams(ValueHParams):
    """ROME: one rank-one update of the MLP down projection at ``layer``.

    ``mom2_adjustment=False`` drops ``C^-1`` (the update then only uses the key
    direction); keep it True. ``norm_constraint`` is ENCORE's
    Frobenius-norm penalty on the update, as a ridge ``norm_constraint x
    mean(diag C)`` added to ``C`` (None: only the statistics' own tiny
    damping); see :mod:`.update`. The default 1.0 was chosen on SmolLM2 and
    CounterFact: 30 sequential edits raised held-out perplexity 2.2% instead
    of 3.6% (NS 66.7 = unedited instead of 63.3) and single edits scored the
    same; over 100 sequential edits it helps little (+18.7% instead of +20.1%):
    the ``sequential`` preset (:data:`ROME_PRESETS`) is what keeps long series in check.

    ``post_norm_rescale`` matters only for families whose MLP output is
    normalised before the residual add (Gemma's ``post_feedforward_layernorm``):
    there the edited prompt's output depends only on the *direction* of the
    target value, and the optimisation is free to inflate its length; an
    inflated ``v* - W k*`` then dominates every other key's (normalised)
    output and the edit spreads to unrelated subjects. With the flag (default)
    ``v*`` is scaled back to the length of ``W k*``, which leaves the edited
    prompt's normalised output exactly as optimised.
    """

    layer: int = 0
    mom2_adjustment: bool = True
    norm_constraint: float | None = 1.0
    post_norm_rescale: bool = True
    #: keep the layer's output at the subject's earlier tokens exactly unchanged (see :mod:`.update`, issue 19)
    protect_subject: bool = False

    @classmethod
    def for_model(cls, model: Any, preset: str = "single", **overrides: Any) -> "RomeHParams":
        """Defaults for ``model``'s family: the edit layer (and any measured settings) from the architecture table.

        ``preset`` (:data:`ROME_PRESETS`) goes on top of the family's settings,
        ``overrides`` on top of both: ``"single"`` for edits judged one at a
        time, ``"sequential"`` for many edits written one after another into
        the same weights (what committing does).
        """
        if preset not in ROME_PRESETS:
            raise ValidationError(f"unknown ROME preset {preset!r}; use one of {sorted(ROME_PRESETS)}")
        arch = arch_for(model)
        chosen = arch.default_layers(model.config)
        base = cls(layer=chosen["rome"]).with_(**chosen.get("rome_hp", {}))  # measured per model, if any
        base = base.with_(**ROME_PRESETS[preset])
        hp = base.with_(**overrides) if overrides else base
        hp.validate()
        return hp

    def validate(self) -> None:
        super().validate()
        if self.layer < 0:
            raise ValidationError("layer must be >= 0")
        if self.norm_constraint is not None and self.norm_constraint < 0:
            raise ValidationError("norm_constraint must be >= 0")


#: Named settings on top of a family's defaults (:meth:`RomeHParams.for_model`). ``sequential``: ENCORE's
#: most-probable early stopping with a stronger norm constraint. Measured on SmolLM2 and the first 100 CounterFact
#: records written one after another: held-out perplexity +8.0% (the single-edit defaults: +18.7%; aim <= 10%),
#: ES 97 / PS 87 / NS 63 (unedited 66); judged one at a time (50 records) the same settings give ES 100 / PS 86 /
#: NS 68 against ES 100 / PS 88 / NS 70 for ``single`` (unedited NS 70), and greedy generations follow the edit
#: less often (80% vs 90%), so single edits keep the plain defaults. ``chat_forms=2`` (issue 19, chosen on the tune
#: side, 15 records in sequence): chat answers give the new object for 80% of direct questions instead of 53% and
#: 77% of paraphrase questions instead of 53%, perplexity and unrelated answers unchanged, ~5x the time per edit;
#: a tokenizer without a chat template writes the cloze prompt only. See docs/BENCHMARKS.md.
ROME_PRESETS: dict[str, dict[str, Any]] = {
    "single": {},
    "sequential": {"stop_rule": "most_probable", "norm_constraint": 2.0, "chat_forms": 2},
}
