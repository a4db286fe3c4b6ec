"""Step 2: the target value - the vector that, written at the subject, makes the model say ``target_new``.

>>> res = compute_values(model, tok, [request], layer=4, site="mlp", contexts=ctx, hp=hp)   # doctest: +SKIP
>>> res.delta.shape, res.init.shape          # (n_requests, hidden)                          # doctest: +SKIP

A free vector ``delta`` is added to the output of one place at the subject's
last token (ROME: the MLP down projection of the edit layer, ``site="mlp"``;
MEMIT: the residual stream after its last edit layer, ``site="residual"``) in
every prompt, and optimised with Adam to

    minimise  mean_prompts -log p(target_new | context + prompt)
              + kl_factor * KL(p_orig || p_edited)  on "{subject} is a"
              + weight_decay * |delta|^2 / |v|^2,   |delta| <= clamp * |v|

where ``v`` is the unedited output at that place (ROME eq. 4). The value is
``v* = v + delta`` with ``v`` averaged over the same prefixed prompts as the key.

Speed: all prompts of all requests (rewrite + KL rows) go through one
batched pass per step; the tokens before the subject's last token are
computed once into a KV cache (:class:`CachedBatch`); only the scored
positions reach the LM head; every request stops as soon as its mean target
probability reaches ``stop_prob`` and its rows leave the batch.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ...errors import ValidationError
from ...models.arch import arch_for
from ..hooks import Trace, replace_first
from .batch import CachedBatch
from .hparams import ValueHParams
from .prompts import Request, kl_row, rewrite_row

log = logging.getLogger(__name__)

SITES = ("mlp", "residual")


@dataclass
class ValueResult:
    """Per request: ``delta`` (n, hidden), ``init`` = unedited value averaged over the prompts, and a log."""

    delta: torch.Tensor
    init: torch.Tensor
    steps: list[int]
    prob_before: list[float]
    prob_after: list[float]
    losses: list[list[float]] = field(default_factory=list)
    seconds: float = 0.0


def build_rows(tok: Any, requests: Sequence[Request], contexts: Sequence[str], kl_prompts: Sequence[str]) -> list:
    """The rewrite rows (every context x every request) and KL rows of a batch."""
    rows = []
    for i, req in enumerate(requests):
        for ctx in contexts:
            rows.append(rewrite_row(tok, i, ctx, req))
        for form in req.form_requests():  # chat forms: the question as the router sends it, no context
            rows.append(rewrite_row(tok, i, "", form))
        for kl in kl_prompts:
            rows.append(kl_row(tok, i, kl, req))
    return rows


def compute_values(
    model: Any,
    tok: Any,
    requests: Sequence[Request],
    *,
    layer: int,
    site: str,
    contexts: Sequence[str],
    hp: ValueHParams,
) -> ValueResult:
    """Optimise one ``delta`` per request (independently, batched). The model's weights are not touched.

    The caller should freeze the parameters (:func:`memedit.methods.hooks.frozen`)
    so backward computes no weight gradients.
    """
    if site not in SITES:
        raise ValidationError(f"site must be one of {SITES}")
    t0 = time.perf_counter()
    arch = arch_for(model)
    place = arch.path("mlp_down", layer) if site == "mlp" else arch.path("layer", layer)
    rows = build_rows(tok, requests, contexts, hp.kl_prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    batch = CachedBatch(model, arch, rows, pad_id=pad, use_cache=hp.prefix_cache)
    device = batch.device
    n_req = len(requests)
    hidden = arch.hidden_size(model.config)

    row_req = torch.tensor([r.request for r in rows], device=device)
    is_rewrite = torch.tensor([r.kind == "rewrite" for r in rows], device=device)
    delta = torch.zeros(n_req, hidden, device=device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hp.lr)

    state: dict[str, Any] = {"rows": None, "init": None}

    def add_delta(output: Any, _name: str) -> Any:
        h = output[0] if isinstance(output, (tuple, list)) else output
        active = state["rows"]
        col = batch.subject_col
        if state["init"] is None:  # first pass: record the unedited value at the subject (all rows present)
            state["init"] = h[:, col].detach().float()
        add = torch.zeros_like(h)
        add[:, col] = delta[row_req[active]].to(h.dtype)
        return replace_first(output, h + add)

    active_req = list(range(n_req))
    init_kl: dict[int, torch.Tensor] = {}
    steps = [0] * n_req
    prob_before = [0.0] * n_req
    prob_after = [0.0] * n_req
    losses: list[list[float]] = [[] for _ in range(n_req)]
    init = None
    with Trace(model, place, retain_output=False, edit_output=add_delta):
        for step in range(hp.max_steps + 1):
            active_rows = [i for i, r in enumerate(rows) if r.request in set(active_req)]
            state["rows"] = torch.tensor(active_rows, device=device)
            logits, scored = batch.logits(active_rows)
            if init is None:
                # unedited values averaged over each request's rewrite rows (= W k* + b at the MLP site)
                v = state["init"]
                init = torch.zeros(n_req, v.shape[-1], device=device).index_add_(0, row_req[is_rewrite], v[is_rewrite])
                init = init / torch.bincount(row_req[is_rewrite], minlength=n_req)[:, None].float()
                init_norm = init.norm(dim=-1)
            logp = torch.log_softmax(logits, dim=-1)
            local = state["rows"]
            row_of = torch.tensor([s[0] for s in scored], device=device)
            tgt = torch.tensor([s[2] for s in scored], device=device)
            orig_row = local[row_of]
            req_of = row_req[orig_row]
            is_kl = tgt < 0
            # negative log-likelihood: mean over a row's target tokens, then over the request's rows
            tok_lp = logp[~is_kl].gather(1, tgt[~is_kl][:, None])[:, 0]
            rw_rows = orig_row[~is_kl]
            row_sum = torch.zeros(len(rows), device=device).index_add(0, rw_rows, tok_lp)
            row_cnt = torch.zeros(len(rows), device=device).index_add(0, rw_rows, torch.ones_like(tok_lp))
            present = row_cnt > 0
            row_lp = torch.where(present, row_sum / row_cnt.clamp(min=1), torch.zeros_like(row_sum))
            req_nll = -torch.zeros(n_req, device=device).index_add(0, row_req[present], row_lp[present])
            req_rows = torch.zeros(n_req, device=device).index_add(0, row_req[present], torch.ones_like(row_lp[present]))
            req_nll = req_nll / req_rows.clamp(min=1)
            req_prob = torch.zeros(n_req, device=device).index_add(
                0, row_req[present], row_lp[present].detach().exp()) / req_rows.clamp(min=1)
            # MPES (Gupta et al., 2025, "Lifelong Knowledge Editing requires Better Regularization"): a request
            # is done once every target token is the most probable token in every prompt it is optimised on
            misses = None
            if hp.stop_rule == "most_probable":
                with torch.no_grad():
                    miss = (logits[~is_kl].argmax(-1) != tgt[~is_kl]).float()
                    misses = torch.zeros(n_req, device=device).index_add(0, req_of[~is_kl], miss)
            # KL to the unedited distribution on the KL prompts
            kl_pos = torch.nonzero(is_kl)[:, 0]
            kl_terms = torch.zeros(n_req, device=device)
            for j in kl_pos.tolist():
                r = int(orig_row[j])
                if r not in init_kl:
                    init_kl[r] = logp[j].detach()
                kl = torch.nn.functional.kl_div(logp[j], init_kl[r], log_target=True, reduction="sum")
                kl_terms = kl_terms.index_add(0, req_of[j:j + 1], kl[None])
            decay = hp.weight_decay * (delta.norm(dim=-1) ** 2) / (init_norm ** 2).clamp(min=1e-12)
            per_req = req_nll + hp.kl_factor * kl_terms + decay

            still = []
            for i in active_req:
                p = float(req_prob[i])
                losses[i].append(float(per_req[i].detach()))
                if step == 0:
                    prob_before[i] = p
                prob_after[i] = p
                finished = bool(misses[i] == 0) if misses is not None else p >= hp.stop_prob
                if finished or step == hp.max_steps:
                    continue
                steps[i] = step + 1
                still.append(i)
            if not still:
                break
            loss = per_req[still].sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            # only requests still optimising move (Adam's momentum would carry the others)
            done = [i for i in range(n_req) if i not in set(still)]
            kept = delta.detach()[done].clone() if done else None
            opt.step()
            with torch.no_grad():  # project each delta into the allowed ball
                if done:
                    delta[done] = kept
                max_norm = hp.clamp_norm_factor * init_norm
                norms = delta.norm(dim=-1)
                scale = torch.where(norms > max_norm, max_norm / norms.clamp(min=1e-12), torch.ones_like(norms))
                delta.mul_(scale[:, None])
            active_req = still
    assert init is not None
    seconds = time.perf_counter() - t0
    log.debug("values: %d requests, steps %s, p %s -> %s in %.2f s", n_req, steps, prob_before, prob_after, seconds)
    return ValueResult(delta=delta.detach(), init=init.detach(), steps=steps, prob_before=prob_before,
                       prob_after=prob_after, losses=losses, seconds=seconds)
