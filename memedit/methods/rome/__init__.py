"""ROME: Rank-One Model Editing (Meng et al., 2022), with the r-ROME key consistency (Gupta et al., 2024).

>>> from memedit.edits import Edit
>>> from memedit.methods import rome
>>> from memedit.methods.deltas import apply_deltas
>>> edit = Edit.fact("Danielle Darrieux", "The mother tongue of {} is", "English", target_true="French")
>>> result = rome.apply(model, tok, edit)          # the model is left exactly as it was   # doctest: +SKIP
>>> apply_deltas(model, result.deltas)             # the caller decides to write it        # doctest: +SKIP

One file per step, as in the paper and its reference code:

* :mod:`.hparams`  - hyperparameters, defaults per model family (layer from the arch table);
* :mod:`.contexts` - the short context prefixes (sampled once from the model, cached);
* :mod:`.keys`     - step 1, the key ``k*`` (subject's last token, averaged over contexts);
* :mod:`.values`   - step 2, the value ``v*`` (optimised so the model says ``target_new``);
* :mod:`.update`   - step 3, the closed-form rank-one update with ``C^-1``;
* :mod:`.prompts`, :mod:`.batch`, :mod:`.measure` - requests, batching, probability probes.

:func:`apply` is a pure function: it returns an
:class:`~memedit.methods.deltas.EditResult` and leaves the weights
bit-identical; applying the delta is the caller's business.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any


from ...errors import ValidationError
from ...models.arch import arch_for
from ..deltas import EditResult, LowRankDelta, temporarily_applied
from ..hooks import frozen, get_module
from .contexts import context_prefixes
from .hparams import RomeHParams, ValueHParams
from .keys import compute_keys, subject_prefix_keys
from .measure import target_logprobs
from .prompts import Request, as_request, target_ids, with_chat_forms
from .update import rank_one_update
from .values import compute_values

__all__ = ["apply", "RomeHParams", "ValueHParams", "Request", "as_request", "contexts_for"]


def contexts_for(model: Any, tok: Any, hp: ValueHParams) -> tuple[str, ...]:
    """The bare prompt ("") followed by the context prefixes of ``hp`` (explicit, or sampled once and cached)."""
    if hp.prefixes is not None:
        return ("", *hp.prefixes)
    return ("", *context_prefixes(model, tok, n=hp.n_prefixes, length=hp.prefix_tokens, seed=hp.prefix_seed))


def probe(model: Any, tok: Any, requests: list[Request]) -> dict[str, list[float]]:
    """Mean log-probability per token of target_new (and target_true where given) on each request's prompt."""
    prompts, targets, kinds = [], [], []
    for r in requests:
        prompts.append(r.prompt())
        targets.append(r.target_new)
        kinds.append("new")
        if r.target_true:
            prompts.append(r.prompt())
            targets.append(r.target_true)
            kinds.append("true")
    lps = target_logprobs(model, tok, prompts, targets)
    out: dict[str, list[float]] = {"new": [], "true": []}
    for kind, lp in zip(kinds, lps):
        out[kind].append(lp)
    return out


def apply(
    model: Any,
    tok: Any,
    edit: Any,
    hparams: RomeHParams | None = None,
    stats: Any = None,
) -> EditResult:
    """Compute the ROME update writing ``edit`` (an ``Edit``, ``Request`` or CounterFact dict) into ``model``.

    ``stats``: the :class:`~memedit.methods.stats.SecondMoment` of the edit
    layer; when None it is loaded from the cache or computed (once, minutes).
    Returns one rank-one :class:`LowRankDelta` on the layer's down projection;
    the model is left bit-identical.
    """
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    timings: dict[str, float] = {}
    arch = arch_for(model)
    hp = hparams or RomeHParams.for_model(model)
    hp.validate()
    req = with_chat_forms(tok, as_request(edit), hp.chat_forms, hp.chat_target)
    n_layers = arch.n_layers(model.config)
    if not 0 <= hp.layer < n_layers:
        raise ValidationError(f"layer {hp.layer} is outside this model's 0..{n_layers - 1}")
    target_ids(tok, req.prompt(), req.target_new)  # fails early on a target that tokenises to nothing
    if req.target_true:
        target_ids(tok, req.prompt(), req.target_true)

    t = time.perf_counter()
    if hp.mom2_adjustment:
        from ..stats import check_compatible, second_moment

        if stats is None:
            stats = second_moment(model, tok, hp.layer, n_tokens=hp.stats_tokens, seq_len=hp.stats_seq_len)
        else:
            check_compatible(stats, model, hp.layer)
    timings["stats"] = time.perf_counter() - t

    module = get_module(model, arch.path("mlp_down", hp.layer))
    param_name = arch.weight_name(hp.layer)
    with frozen(model):
        t = time.perf_counter()
        contexts = contexts_for(model, tok, hp)
        timings["contexts"] = time.perf_counter() - t

        before = None
        if hp.measure:
            t = time.perf_counter()
            before = probe(model, tok, [req])
            timings["measure_before"] = time.perf_counter() - t

        t = time.perf_counter()
        keys = compute_keys(model, tok, [req], hp.layer, contexts)
        protected = subject_prefix_keys(model, tok, req, hp.layer) if hp.protect_subject else None
        timings["keys"] = time.perf_counter() - t

        t = time.perf_counter()
        values = compute_values(model, tok, [req], layer=hp.layer, site="mlp", contexts=contexts, hp=hp)
        timings["values"] = time.perf_counter() - t

        t = time.perf_counter()
        W = module.weight.detach()
        W = W.T if arch.weight_transposed else W
        bias = getattr(module, "bias", None)
        v_star = values.init[0] + values.delta[0]
        if arch.mlp_post_norm and hp.post_norm_rescale:  # only the direction reaches the residual (see RomeHParams)
            v_star = v_star * (values.init[0].norm() / v_star.norm().clamp(min=1e-12))
        u, c = rank_one_update(W, keys[0], v_star, stats if hp.mom2_adjustment else None, bias=bias,
                               damping=hp.norm_constraint, protected=protected)
        delta = LowRankDelta.from_update(param_name, u, c, transposed=arch.weight_transposed)
        if not delta.is_finite():
            raise ValidationError("ROME produced a non-finite update; nothing was changed")
        timings["update"] = time.perf_counter() - t

        after = None
        if hp.measure:
            t = time.perf_counter()
            with temporarily_applied(model, [delta]):
                after = probe(model, tok, [req])
            timings["measure_after"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    timings["cpu_total"] = time.process_time() - cpu_start  # CPU time of this process (all threads)

    info: dict[str, Any] = {
        "seconds": timings,
        "steps": values.steps[0],
        "losses": values.losses[0],
        "prob_train_before": values.prob_before[0],
        "prob_train_after": values.prob_after[0],
        "delta_norm": delta.norm(),
        "weight_norm": float(module.weight.detach().float().norm()),
        "value_shift_norm": float(values.delta[0].norm()),
        "value_norm": float(values.init[0].norm()),
        "key_norm": float(keys[0].norm()),
        "contexts": list(contexts),
        "request": {"subject": req.subject, "template": req.template, "target_new": req.target_new,
                    "target_true": req.target_true},
        "hparams": asdict(hp),  # the commit ledger keeps how each edit was made
    }
    if before is not None and after is not None:
        info["logprob_new_before"] = before["new"][0]
        info["logprob_new_after"] = after["new"][0]
        if before["true"]:
            info["logprob_true_before"] = before["true"][0]
            info["logprob_true_after"] = after["true"][0]
    return EditResult(deltas=[delta], method="rome", layers=[hp.layer], stats=info)
