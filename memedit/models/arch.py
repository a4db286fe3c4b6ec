"""Per-architecture table: abstract places in a model, mapped per model family (pyvene style).

>>> from memedit.models.arch import arch_for_type
>>> spec = arch_for_type("llama")
>>> spec.path("mlp_down", 4)
'model.layers.4.mlp.down_proj'
>>> spec.weight_name(4)
'model.layers.4.mlp.down_proj.weight'
>>> arch_for_type("gpt2").weight_transposed
True

Weight editors (ROME, MEMIT, EMMET), causal tracing and statistics never look
at a model's *name*; they ask :func:`arch_for` (which reads
``model.config.model_type``) where things are:

========================  ==========================================================
abstract name             meaning
========================  ==========================================================
``layer``                 decoder block ``i``; its output is the residual stream
``mlp``                   the MLP of block ``i`` (its output, before any post-norm)
``mlp_down``              the MLP down (output) projection: the matrix that is edited.
                          Its *input* is the key ``k``, its *output* the value ``v``
``mlp_post_norm``         a norm applied to the MLP output before the residual add
                          (Gemma-2/3), or None
``attn``                  the attention block of layer ``i``
``embed``                 token embeddings (Gemma scales inside this module)
``final_norm``            the norm before the LM head
``lm_head``               the output projection to the vocabulary
========================  ==========================================================

A family not in the table raises :class:`UnknownArchitectureError`, whose
message lists the supported types and shows how to add one with
:func:`register_arch`.

Default edit layers (:meth:`ArchSpec.default_layers`) were chosen with causal
tracing (:mod:`memedit.methods.trace`) where a packaged model of the family
exists, and by depth fraction otherwise (see the notes next to each entry).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import NotFoundError, ValidationError

if TYPE_CHECKING:  # pragma: no cover
    import torch


class UnknownArchitectureError(NotFoundError):
    """The model's ``config.model_type`` has no entry in the architecture table."""


PLACES = ("layer", "mlp", "mlp_down", "mlp_post_norm", "attn", "embed", "final_norm", "lm_head")


@dataclass(frozen=True)
class ArchSpec:
    """Where the parts of one model family live (module paths; ``{}`` is the layer index).

    ``weight_transposed`` is True when the edited matrix is stored as
    ``(in, out)`` (GPT-2's ``Conv1D``) instead of ``nn.Linear``'s ``(out, in)``.

    ``rome_layer`` / ``memit_layers`` are depth fractions used for models
    without a measured entry; ``measured`` maps ``(num_layers, hidden_size)``
    to layers chosen by causal tracing on a real model of that shape.
    """

    model_type: str
    layer: str = "model.layers.{}"
    mlp: str = "model.layers.{}.mlp"
    mlp_down: str = "model.layers.{}.mlp.down_proj"
    mlp_post_norm: str | None = None
    attn: str = "model.layers.{}.self_attn"
    embed: str = "model.embed_tokens"
    final_norm: str = "model.norm"
    lm_head: str = "lm_head"
    n_layers_attr: tuple[str, ...] = ("num_hidden_layers", "n_layer")
    hidden_attr: tuple[str, ...] = ("hidden_size", "n_embd")
    weight_transposed: bool = False
    rome_layer: float = 0.18
    memit_layers: tuple[float, float] = (0.1, 0.3)
    measured: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict, compare=False)
    notes: str = ""

    # ---- paths ------------------------------------------------------------
    def path(self, place: str, layer: int | None = None) -> str:
        """The module path of ``place`` (one of :data:`PLACES`), formatted with ``layer`` where needed."""
        if place not in PLACES:
            raise ValidationError(f"unknown place {place!r}; use one of {PLACES}")
        template = getattr(self, place)
        if template is None:
            raise ValidationError(f"{self.model_type} has no {place}")
        if "{}" in template:
            if layer is None:
                raise ValidationError(f"{place} of {self.model_type} needs a layer index")
            return template.format(int(layer))
        return template

    def weight_name(self, layer: int) -> str:
        """Fully qualified name (as in ``model.named_parameters()``) of the edited matrix of ``layer``."""
        return self.path("mlp_down", layer) + ".weight"

    def module(self, model: Any, place: str, layer: int | None = None) -> "torch.nn.Module":
        """The module at ``place`` in ``model``."""
        from ..methods.hooks import get_module

        return get_module(model, self.path(place, layer))

    def weight(self, model: Any, layer: int) -> "torch.nn.Parameter":
        """The edited matrix of ``layer`` (as stored: ``(out, in)``, or ``(in, out)`` if transposed)."""
        return self.module(model, "mlp_down", layer).weight

    # ---- sizes --------------------------------------------------------------
    def n_layers(self, config: Any) -> int:
        """Number of decoder blocks."""
        return int(_first_attr(_text_config(config), self.n_layers_attr))

    def hidden_size(self, config: Any) -> int:
        """Width of the residual stream."""
        return int(_first_attr(_text_config(config), self.hidden_attr))

    # ---- default edit layers -------------------------------------------------
    def default_layers(self, config: Any) -> dict[str, Any]:
        """``{"rome": int, "memit": [int, ...]}`` for a model of this family with ``config``'s shape.

        Measured entries win (and may add ``"memit_lambda"`` and ``"rome_hp"``,
        ROME hyperparameters chosen for that model); otherwise the depth
        fractions are applied.
        """
        n = self.n_layers(config)
        key = (n, self.hidden_size(config))
        if key in self.measured:
            chosen = self.measured[key]
            out = {"rome": int(chosen["rome"]), "memit": [int(x) for x in chosen["memit"]]}
            if "memit_lambda" in chosen:
                out["memit_lambda"] = float(chosen["memit_lambda"])
            if "rome_hp" in chosen:
                out["rome_hp"] = dict(chosen["rome_hp"])
            return out
        rome = min(n - 1, max(0, round(self.rome_layer * (n - 1))))
        lo = min(n - 1, max(0, round(self.memit_layers[0] * (n - 1))))
        hi = min(n - 1, max(lo, round(self.memit_layers[1] * (n - 1))))
        return {"rome": rome, "memit": list(range(lo, hi + 1))}


def _text_config(config: Any) -> Any:
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def _first_attr(obj: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    raise ValidationError(f"config of type {type(obj).__name__} has none of {names}")


# --------------------------------------------------------------------------- the table

# SmolLM2-135M (llama, 30 layers, hidden 576). Causal tracing (memedit.methods.trace, 10 noise
# samples, noise 3x embedding std, answer = CounterFact ground truth) on 10 CounterFact dev facts the
# model gets right greedily (case ids 931 Kyoto University/Japan, 380 Darmstadt/Germany, 937 Windows
# XP/Microsoft, 921 Companions of the Prophet/Islam, 1259 Ilya Nikolaevich Ulyanov/Russian, 600 Yazid
# I/Islam, 405 Japan Open Tennis Championships/Tokyo, 360 Irish Ferries/Dublin, 815 Lugano/Italian,
# 0 Danielle Darrieux/French). Mean indirect effect at the subject's last token, each fact
# normalised by its clean-minus-corrupted probability:
#   MLP, window 6 (restores layers l-3..l+2), layers 0-9:
#       .12 .14 .19 [.24] .10 .11 .11 .08 .06 .04, then <= .04 and falling to 0 by layer 28
#   residual stream, layers 0-9: .08 .19 .23 [.31] .30 .27 .27 .28 .28 .28, a plateau to ~15, ~0 from 23
# So the subject's MLP recall happens in layers 0-5 and is complete in the residual by layer 3-4.
# ROME layer: 4 (the end of that window; on 12 CounterFact edits layers 3 and 4 scored the same,
# ES 100 / PS 91.7 / NS 75 = unedited 75, layer 5 dropped PS to 83.3). MEMIT layers: 2-6, the
# window around that peak. MEMIT's lambda: the paper's 15000 (GPT-J) wrote only ~10% of the wanted
# residual here (fit error 0.9; ES 66.7 / PS 58.3 on 12 edits); 2000 gives ES 100 / PS 83.3 / NS 75
# with update norms 9-19 per layer, 500 the same scores with larger norms.
_SMOLLM2_135M = {"rome": 4, "memit": [2, 3, 4, 5, 6], "memit_lambda": 2000.0}

# Gemma-3-270m (gemma3_text, 18 layers, hidden 640). Causal tracing (benchmarks/trace_layers.py, 10 noise
# samples, noise 3x embedding std) on the first 10 CounterFact dev facts it gets right greedily whose subject
# does not contain the answer (case ids 0, 14, 112, 182, 231, 361, 371, 380, 397, 433; 9 kept: corrupting
# "Gwen Stefani" does not lower p(English)). Mean normalised indirect effect at the subject's last token:
#   MLP, one layer restored (window 1), layers 0-8: .00 -.01 .04 [.24] .02 .04 .03 .02 .00, ~0 after
#   MLP, window 3: .00 .09 .45 .44 .38 .12 .11 .05 .02 ...; window 6: a plateau over layers 1-6 (~.52)
#   residual stream: .64 .64 .61 .62 .54 .54 .49 .49 .43 .34 .31 .30, then ~0 from layer 12
# So one MLP, layer 3, does the subject's recall. ROME layer 3 (layer 6 scored the same on 12 edits); MEMIT
# layers 2-5 around it. ROME settings (first 30 CounterFact records, unedited NS 80): the MLP output passes
# post_feedforward_layernorm, so only v*'s direction matters; without rescaling v* (RomeHParams.
# post_norm_rescale) the optimisation pushed |v* - Wk*| to the 4x clamp and NS fell to 8.3 (12 records); with
# it NS 60.0; without ENCORE's ridge (norm_constraint None) 63.3; with the value shift clamped to 0.75x |v|
# ES 100 / PS 100 / NS 73.3 (1.0x: the same; 0.5x: ES 96.7 / PS 96.7 / NS 80.0).
# MEMIT's lambda (layers 2-5, first 100 records in one batch, unedited NS 78): 2000 gives ES 99 / PS 94 / NS 77,
# perplexity +1.2%; 500 gives ES 99 / PS 96 / NS 72, +4.1%; on 30 records 15000 wrote too little (ES 60).
_GEMMA3_270M = {"rome": 3, "memit": [2, 3, 4, 5], "memit_lambda": 2000.0,
                "rome_hp": {"norm_constraint": None, "clamp_norm_factor": 0.75}}

_ARCHS: dict[str, ArchSpec] = {}
_LOCK = threading.Lock()


def register_arch(spec: ArchSpec, *, replace_existing: bool = False) -> ArchSpec:
    """Add a family to the table, keyed by its ``config.model_type``.

    >>> from memedit.models.arch import ArchSpec, register_arch, arch_for_type
    >>> _ = register_arch(ArchSpec("mistral"), replace_existing=True)   # Llama-like paths are the defaults
    >>> arch_for_type("mistral").path("mlp_down", 2)
    'model.layers.2.mlp.down_proj'
    """
    with _LOCK:
        if spec.model_type in _ARCHS and not replace_existing:
            raise ValidationError(
                f"architecture {spec.model_type!r} is already registered; pass replace_existing=True to override it"
            )
        _ARCHS[spec.model_type] = spec
    return spec


def supported_types() -> list[str]:
    """The ``model_type`` values with a table entry.

    >>> {"llama", "gemma3_text", "gpt2", "qwen2"} <= set(supported_types())
    True
    """
    return sorted(_ARCHS)


def arch_for_type(model_type: str) -> ArchSpec:
    """The table entry for a ``config.model_type``; :class:`UnknownArchitectureError` if there is none."""
    spec = _ARCHS.get(str(model_type))
    if spec is None:
        raise UnknownArchitectureError(
            f"no architecture table entry for model_type {model_type!r}; supported: {', '.join(supported_types())}. "
            "Register one with memedit.models.arch.register_arch(ArchSpec(model_type=..., layer='model.layers.{}', "
            "mlp='model.layers.{}.mlp', mlp_down='model.layers.{}.mlp.down_proj', embed=..., final_norm=..., "
            "lm_head=...)) giving the module paths of your model (see model.named_modules())."
        )
    return spec


def arch_for(model_or_config: Any) -> ArchSpec:
    """The table entry for a model (or its config), chosen by ``config.model_type`` only.

    >>> from transformers import GPT2Config
    >>> arch_for(GPT2Config(n_layer=2, n_embd=8, n_head=2)).path("mlp_down", 1)
    'transformer.h.1.mlp.c_proj'
    """
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if not model_type:
        raise UnknownArchitectureError(f"{type(model_or_config).__name__} has no config.model_type")
    return arch_for_type(model_type)


_LLAMA = ArchSpec(
    "llama",
    rome_layer=0.14,
    memit_layers=(0.07, 0.2),
    measured={(30, 576): _SMOLLM2_135M},
    notes="LlamaForCausalLM (SmolLM2). SiLU-gated MLP; down_proj is nn.Linear (out, in).",
)
register_arch(_LLAMA)
register_arch(replace(_LLAMA, model_type="qwen2", measured={}, notes="Qwen2ForCausalLM; Llama layout."))
register_arch(replace(_LLAMA, model_type="qwen3", measured={},
                      notes="Qwen3ForCausalLM; Llama layout (q/k norms inside attention do not touch the MLP)."))
register_arch(replace(_LLAMA, model_type="mistral", measured={}, notes="MistralForCausalLM; Llama layout."))
register_arch(replace(_LLAMA, model_type="phi3", measured={},
                      notes="Phi3ForCausalLM; the MLP's gate and up projections are one matrix (gate_up_proj), "
                            "the edited down_proj is nn.Linear (out, in) as in Llama."))
register_arch(ArchSpec(
    "gemma3_text",
    mlp_post_norm="model.layers.{}.post_feedforward_layernorm",
    rome_layer=0.2,
    memit_layers=(0.1, 0.3),
    measured={(18, 640): _GEMMA3_270M},
    notes="Gemma3ForCausalLM (gemma-3-270m/1b). The MLP output passes post_feedforward_layernorm before the "
    "residual add; the embedding module multiplies by sqrt(hidden).",
))
register_arch(ArchSpec(
    "gemma2",
    mlp_post_norm="model.layers.{}.post_feedforward_layernorm",
    rome_layer=0.2,
    memit_layers=(0.1, 0.3),
    notes="Gemma2ForCausalLM; Gemma 3's text layout (post_feedforward_layernorm after the MLP).",
))
register_arch(ArchSpec(
    "gemma3",
    layer="model.language_model.layers.{}",
    mlp="model.language_model.layers.{}.mlp",
    mlp_down="model.language_model.layers.{}.mlp.down_proj",
    mlp_post_norm="model.language_model.layers.{}.post_feedforward_layernorm",
    attn="model.language_model.layers.{}.self_attn",
    embed="model.language_model.embed_tokens",
    final_norm="model.language_model.norm",
    rome_layer=0.2,
    memit_layers=(0.1, 0.3),
    notes="Gemma3ForConditionalGeneration (multimodal wrapper); the text stack lives under model.language_model.",
))
register_arch(ArchSpec(
    "gpt2",
    layer="transformer.h.{}",
    mlp="transformer.h.{}.mlp",
    mlp_down="transformer.h.{}.mlp.c_proj",
    attn="transformer.h.{}.attn",
    embed="transformer.wte",
    final_norm="transformer.ln_f",
    weight_transposed=True,
    rome_layer=0.35,  # ROME: GPT-2 XL layer 17 of 48
    memit_layers=(0.27, 0.35),  # MEMIT: GPT-2 XL layers 13-17
    notes="GPT2LMHeadModel. c_proj is a Conv1D whose weight is stored (in, out).",
))
register_arch(ArchSpec(
    "gptj",
    layer="transformer.h.{}",
    mlp="transformer.h.{}.mlp",
    mlp_down="transformer.h.{}.mlp.fc_out",
    attn="transformer.h.{}.attn",
    embed="transformer.wte",
    final_norm="transformer.ln_f",
    rome_layer=0.18,  # ROME: GPT-J layer 5 of 28
    memit_layers=(0.1, 0.3),  # MEMIT: GPT-J layers 3-8
    notes="GPTJForCausalLM. Attention and MLP read the same normalised input in parallel; fc_out is nn.Linear.",
))
register_arch(ArchSpec(
    "gpt_neox",
    layer="gpt_neox.layers.{}",
    mlp="gpt_neox.layers.{}.mlp",
    mlp_down="gpt_neox.layers.{}.mlp.dense_4h_to_h",
    attn="gpt_neox.layers.{}.attention",
    embed="gpt_neox.embed_in",
    final_norm="gpt_neox.final_layer_norm",
    notes="GPTNeoXForCausalLM (Pythia). Parallel attention and MLP by default; dense_4h_to_h is nn.Linear. "
          "transformers 5 names the output head lm_head (embed_out in 4.x).",
))
