"""MEMIT: Mass-Editing Memory In a Transformer (Meng et al., 2023) - many facts, several layers, one batch.

>>> from memedit.methods import memit                                       # doctest: +SKIP
>>> result = memit.apply(model, tok, edits)      # model left bit-identical  # doctest: +SKIP
>>> [d.param for d in result.deltas]                                        # doctest: +SKIP
['model.layers.2.mlp.down_proj.weight', ..., 'model.layers.6.mlp.down_proj.weight']

The algorithm (paper, Alg. 1), sharing steps 1-2 with ROME:

1. for every edit, a target hidden state ``z_i = h_i + delta_i`` at the
   subject's last token after the *last* edit layer ``L`` (the value
   optimisation of :mod:`memedit.methods.rome.values`, site ``"residual"``,
   all edits batched together);
2. for each edit layer ``l`` in order, with the updates of the earlier layers
   in place: keys ``K`` (averaged over the context prefixes) and the
   remaining residual ``R = (z - h_L) / (layers left)``, then the
   least-squares update

       Delta_l = R K^T (lambda C_l + K K^T)^-1

   which spreads the change over the layers. :mod:`memedit.methods.emmet`
   swaps only this closed form.

For families whose MLP output is normalised before the residual add (Gemma's
``post_feedforward_layernorm``), the wanted residual change is mapped back
through that norm to a down-projection target (:func:`through_post_norm`).

Like ROME, :func:`apply` returns deltas (one per layer, rank <= number of
edits) and leaves the model's weights bit-identical.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any, Callable, Sequence

import torch

from ..errors import ValidationError
from ..models.arch import ArchSpec, arch_for
from .deltas import EditResult, LowRankDelta, apply_deltas, restore, snapshot
from .hooks import frozen, get_module
from .rome import contexts_for, probe
from .rome.hparams import ValueHParams
from .rome.keys import compute_keys
from .rome.prompts import Request, as_request, target_ids, with_chat_forms
from .rome.values import compute_values


@dataclass(frozen=True)
class MemitHParams(ValueHParams):
    """MEMIT: ``layers`` (ascending), ``mom2_update_weight`` = lambda, value optimisation as in ROME.

    ``mom2_update_weight`` (lambda) weighs the preserved keys against the new
    ones; 15000 is the MEMIT paper's GPT-J value, the architecture table can
    give a measured one per model shape (SmolLM2-135M: 2000).
    The residual target is clamped tighter than ROME's MLP value
    (``clamp_norm_factor`` 0.75 of the hidden state's norm, weight decay 0.5:
    the MEMIT paper's GPT-J settings). ``chunk_size`` edits share one value
    optimisation batch.
    """

    layers: tuple[int, ...] = ()
    mom2_update_weight: float = 15000.0
    clamp_norm_factor: float = 0.75
    weight_decay: float = 0.5
    chunk_size: int = 16
    key_batch_size: int = 128

    @classmethod
    def for_model(cls, model: Any, **overrides: Any) -> "MemitHParams":
        """Defaults for ``model``'s family; layers from the architecture table."""
        arch = arch_for(model)
        chosen = arch.default_layers(model.config)
        hp = cls(layers=tuple(chosen["memit"]))
        if "memit_lambda" in chosen:
            hp = hp.with_(mom2_update_weight=chosen["memit_lambda"])
        hp = hp.with_(**overrides) if overrides else hp
        if "layers" in overrides:
            hp = hp.with_(layers=tuple(int(x) for x in overrides["layers"]))
        hp.validate()
        return hp

    def validate(self) -> None:
        super().validate()
        if not self.layers:
            raise ValidationError("MEMIT needs at least one layer")
        if list(self.layers) != sorted(set(self.layers)):
            raise ValidationError(f"layers must be ascending and distinct, got {list(self.layers)}")
        if self.mom2_update_weight < 0:
            raise ValidationError("mom2_update_weight must be >= 0")
        if self.chunk_size < 1 or self.key_batch_size < 1:
            raise ValidationError("chunk_size and key_batch_size must be >= 1")


Solver = Callable[[torch.Tensor, torch.Tensor, Any, Any], tuple[torch.Tensor, torch.Tensor]]


def memit_solve(K: torch.Tensor, R: torch.Tensor, stats: Any, hp: MemitHParams) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, V)`` with ``U @ V.T = R K^T (lambda C + K K^T)^-1``; ``K``: (n, d_in), ``R``: (n, d_out). Float64.

    >>> import torch
    >>> K = torch.randn(3, 8, dtype=torch.float64); R = torch.randn(3, 5, dtype=torch.float64)
    >>> U, V = memit_solve(K, R, None, MemitHParams(layers=(0,), mom2_update_weight=0.0))
    >>> torch.allclose((U @ V.T) @ K.T, R.T)     # lambda = 0: the new keys map exactly to R
    True
    """
    Kt = K.to(torch.float64).T  # (d_in, n)
    d = Kt.shape[0]
    if stats is None:
        C = torch.eye(d, dtype=torch.float64, device=Kt.device)
    else:
        C = stats.regularised(torch.float64, Kt.device)
    A = hp.mom2_update_weight * C + Kt @ Kt.T
    if hp.mom2_update_weight == 0:  # pure least squares: minimum-norm solution
        V = torch.linalg.pinv(A, hermitian=True) @ Kt
    else:
        V = torch.linalg.solve(A, Kt)
    return R.to(torch.float64).T.contiguous(), V


def through_post_norm(model: Any, arch: ArchSpec, layer: int, K: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Map a wanted change ``R`` of the *normalised* MLP output to a change of the down projection's output.

    With ``y = g * m / rms(m)`` (RMSNorm after the MLP, gain ``g``), ``y`` can
    only move over ``{g * n : |n|^2 = d}``; the reachable output closest to
    ``y + R`` is found exactly (:func:`nearest_on_gain_ellipsoid`), and ``m``
    is moved to that direction at its own length (what the layer is used to).
    Returns ``m_new - m`` for each row of ``K``.
    """
    module = get_module(model, arch.path("mlp_down", layer))
    norm = get_module(model, arch.path("mlp_post_norm", layer))
    W = module.weight.detach().float()
    W = W.T if arch.weight_transposed else W
    m = K.float() @ W.T
    if getattr(module, "bias", None) is not None:
        m = m + module.bias.detach().float()
    with torch.no_grad():
        y = norm(m.to(W.dtype)).float()
        hidden = m.shape[-1]
        g = norm(torch.ones(1, hidden, device=m.device, dtype=module.weight.dtype)).float()[0]
    n = nearest_on_gain_ellipsoid(g, y + R.float())
    m_new = n * (m.norm(dim=-1, keepdim=True) / hidden ** 0.5)
    return (m_new - m.double()).float()


def nearest_on_gain_ellipsoid(g: torch.Tensor, t: torch.Tensor, iters: int = 200) -> torch.Tensor:
    """Per row of ``t``: ``n`` minimising ``|g * n - t|`` subject to ``|n|^2 = d`` (unit RMS), float64.

    The Lagrange condition gives ``n_j = g_j t_j / (g_j^2 + mu)`` with the one
    ``mu > -min g^2`` at which ``|n|^2 = d`` (``|n(mu)|`` falls monotonically
    there; found by bisection on ``log(mu + min g^2)``). Dividing by ``g``
    instead (the naive inverse) blows up wherever a gain is near zero, which
    Gemma's post-MLP norms have.

    >>> import torch
    >>> g = torch.tensor([0.0, 0.5, 2.0, 3.0]); n0 = torch.tensor([[1.0, -1.0, 1.0, 1.0]])  # |n0|^2 = d = 4
    >>> n = nearest_on_gain_ellipsoid(g, g * n0)          # a reachable target is hit exactly
    >>> torch.allclose((g * n).double(), (g * n0).double(), atol=1e-6), round(float(n.norm() ** 2), 6)
    (True, 4.0)
    """
    g64, t64 = g.double(), t.double()
    d = t64.shape[-1]
    g2 = g64 ** 2
    shifted = g2 - g2.min()  # g^2 + mu = shifted + s with s = mu + min g^2 > 0
    gt = g64 * t64  # (rows, d)
    scale = gt.norm(dim=-1).clamp(min=1e-300)
    # s in (0, s_hi]; |n(s_hi)|^2 <= |gt|^2 / s_hi^2 = d
    log_lo = torch.log(scale * 1e-12)
    log_hi = torch.log(scale / d ** 0.5)

    def sq_norm(s: torch.Tensor) -> torch.Tensor:
        return ((gt / (shifted + s[:, None])) ** 2).sum(-1)

    for _ in range(iters):
        mid = (log_lo + log_hi) / 2
        too_long = sq_norm(mid.exp()) > d
        log_lo = torch.where(too_long, mid, log_lo)
        log_hi = torch.where(too_long, log_hi, mid)
    s = log_hi.exp()
    n = gt / (shifted + s[:, None])
    # hard case: even at the smallest mu the norm falls short (t has no component where g is smallest);
    # the free length goes along the smallest gain, which moves g * n least
    short = (d - (n ** 2).sum(-1)).clamp(min=0)
    n[:, int(torch.argmin(g2))] += short.sqrt()
    return n


def batch_edit(
    model: Any,
    tok: Any,
    edits: Sequence[Any],
    hp: MemitHParams,
    stats: dict[int, Any] | None,
    solver: Solver,
    method: str,
    targets: "Targets | None" = None,
    progress: bool = False,
) -> EditResult:
    """The MEMIT loop with a pluggable closed form (``solver``); see :func:`apply`.

    ``targets``: step 1's result for the same requests (:func:`compute_targets`),
    e.g. shared between a MEMIT and an EMMET run with equal value hyperparameters.
    """
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    timings: dict[str, float] = {}
    arch = arch_for(model)
    hp.validate()
    if not edits:
        raise ValidationError(f"{method} needs at least one edit")
    requests = [with_chat_forms(tok, as_request(e), hp.chat_forms, hp.chat_target) for e in edits]
    n_layers = arch.n_layers(model.config)
    if hp.layers[-1] >= n_layers or hp.layers[0] < 0:
        raise ValidationError(f"layers {list(hp.layers)} are outside this model's 0..{n_layers - 1}")
    for r in requests:
        target_ids(tok, r.prompt(), r.target_new)
    layers = list(hp.layers)
    z_layer = layers[-1]

    t = time.perf_counter()
    from .stats import check_compatible, second_moments

    stats = dict(stats or {})
    missing = [layer for layer in layers if layer not in stats]
    if missing:
        stats.update(second_moments(model, tok, missing, n_tokens=hp.stats_tokens, seq_len=hp.stats_seq_len))
    for layer in layers:
        check_compatible(stats[layer], model, layer)
    timings["stats"] = time.perf_counter() - t

    names = [arch.weight_name(layer) for layer in layers]
    saved = snapshot(model, names)
    deltas: list[LowRankDelta] = []
    info: dict[str, Any] = {"n_edits": len(requests)}
    with frozen(model):
        try:
            t = time.perf_counter()
            contexts = contexts_for(model, tok, hp)
            timings["contexts"] = time.perf_counter() - t
            before = None
            if hp.measure:
                t = time.perf_counter()
                before = probe(model, tok, requests)
                timings["measure_before"] = time.perf_counter() - t

            # 1. target hidden states z_i at the last edit layer (or the caller's, computed with the same values)
            t = time.perf_counter()
            if targets is None:
                targets = compute_targets(model, tok, requests, hp, contexts, progress=progress)
            elif targets.z.shape[0] != len(requests) or targets.layer != z_layer:
                raise ValidationError(f"the given targets are for {targets.z.shape[0]} edits at layer {targets.layer}, "
                                      f"not {len(requests)} at layer {z_layer}")
            z_target = targets.z
            steps, p_before, p_after = targets.steps, targets.prob_before, targets.prob_after
            timings["values"] = time.perf_counter() - t

            # 2. spread the residual over the layers, each update computed with the previous ones in place
            t = time.perf_counter()
            layer_info = []
            for i, layer in enumerate(layers):
                K, z_now = _keys(model, tok, requests, layer, contexts, z_layer, hp.key_batch_size)
                R = (z_target - z_now) / (len(layers) - i)
                R_out = through_post_norm(model, arch, layer, K, R) if arch.mlp_post_norm else R
                U, V = solver(K, R_out, stats[layer], hp)
                delta = LowRankDelta.from_update(names[i], U, V, transposed=arch.weight_transposed)
                if not delta.is_finite():
                    raise ValidationError(f"{method} produced a non-finite update at layer {layer}; nothing was changed")
                apply_deltas(model, [delta])
                deltas.append(delta)
                # how well the update writes the wanted outputs for the new keys (EMMET: ~0 by construction)
                fit = (U.to(K.device) @ (V.to(K.device).T @ K.double().T)).T
                err = (fit - R_out.double()).norm(dim=-1) / R_out.double().norm(dim=-1).clamp(min=1e-12)
                layer_info.append({"layer": layer, "residual_norm": float(R.norm(dim=-1).mean()),
                                   "delta_norm": delta.norm(), "fit_error": float(err.max())})
            timings["updates"] = time.perf_counter() - t

            if hp.measure:  # every delta is in place right now
                t = time.perf_counter()
                after = probe(model, tok, requests)
                timings["measure_after"] = time.perf_counter() - t
                info["logprob_new_before"] = before["new"] if before else None
                info["logprob_new_after"] = after["new"]
                if after["true"]:
                    info["logprob_true_before"] = before["true"] if before else None
                    info["logprob_true_after"] = after["true"]
        finally:
            restore(model, saved)
    timings["total"] = time.perf_counter() - t_start
    timings["cpu_total"] = time.process_time() - cpu_start  # CPU time of this process (all threads)
    info.update({"seconds": timings, "steps": steps, "prob_train_before": p_before, "prob_train_after": p_after,
                 "layers": layer_info, "contexts": list(contexts)})
    return EditResult(deltas=deltas, method=method, layers=layers, stats=info)


@dataclass
class Targets:
    """Step 1's result: the wanted hidden state ``z`` (n, hidden) after ``layer`` for each request, and a log."""

    z: torch.Tensor
    layer: int
    steps: list[int]
    prob_before: list[float]
    prob_after: list[float]
    seconds: float


def compute_targets(model: Any, tok: Any, edits: Sequence[Any], hp: MemitHParams,
                    contexts: Sequence[str] | None = None, progress: bool = False) -> Targets:
    """``z_i = h_i + delta_i`` after the last edit layer for every edit, optimised ``hp.chunk_size`` edits at a time.

    The model's weights are not touched. Depends only on the value
    hyperparameters (:class:`ValueHParams` fields) and ``hp.layers[-1]``, so
    MEMIT and EMMET with the same values can share one result.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    requests = [with_chat_forms(tok, as_request(e), hp.chat_forms, hp.chat_target) for e in edits]
    layer = hp.layers[-1]
    with frozen(model):
        contexts = tuple(contexts) if contexts is not None else contexts_for(model, tok, hp)
        z_init, z_delta, steps, p_before, p_after = [], [], [], [], []
        starts = range(0, len(requests), hp.chunk_size)
        for start in tqdm(starts, desc="target values", unit="chunk", disable=not progress or len(starts) < 2):
            chunk = requests[start:start + hp.chunk_size]
            res = compute_values(model, tok, chunk, layer=layer, site="residual", contexts=contexts, hp=hp)
            z_init.append(res.init)
            z_delta.append(res.delta)
            steps += res.steps
            p_before += res.prob_before
            p_after += res.prob_after
    return Targets(z=torch.cat(z_init) + torch.cat(z_delta), layer=layer, steps=steps, prob_before=p_before,
                   prob_after=p_after, seconds=time.perf_counter() - t0)


def same_values(a: ValueHParams, b: ValueHParams) -> bool:
    """Whether two hyperparameter sets optimise the same target values (every :class:`ValueHParams` field equal)."""
    return all(getattr(a, f.name) == getattr(b, f.name) for f in fields(ValueHParams))


def _keys(model: Any, tok: Any, requests: list[Request], layer: int, contexts: Sequence[str], z_layer: int,
          batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Averaged keys at ``layer`` and hidden states at ``z_layer`` for all requests, in chunks of ``batch`` rows."""
    per = max(1, batch // max(1, len(contexts)))
    ks, zs = [], []
    for start in range(0, len(requests), per):
        k, z = compute_keys(model, tok, requests[start:start + per], layer, contexts, also_residual_at=z_layer)
        ks.append(k)
        zs.append(z)
    return torch.cat(ks), torch.cat(zs)


def apply(
    model: Any,
    tok: Any,
    edits: Sequence[Any],
    hparams: MemitHParams | None = None,
    stats: dict[int, Any] | None = None,
    targets: Targets | None = None,
    progress: bool = False,
) -> EditResult:
    """Compute MEMIT updates writing all ``edits`` at once; returns one delta per layer, model untouched.

    ``stats``: ``{layer: SecondMoment}``; missing layers are loaded from the
    cache or computed in one pass. ``targets``: precomputed step 1
    (:func:`compute_targets`) for these edits.
    """
    hp = hparams or MemitHParams.for_model(model)
    return batch_edit(model, tok, edits, hp, stats, memit_solve, "memit", targets=targets, progress=progress)
