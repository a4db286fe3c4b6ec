"""Step 1: the key ``k*`` - what the edited matrix reads when the model sees the subject.

>>> K = compute_keys(model, tok, [request], layer=4, contexts=("", "The day began. "))   # doctest: +SKIP
>>> K.shape       # (n_requests, intermediate_size)                                     # doctest: +SKIP

``k*`` is the input of the MLP down projection at the subject's last token,
averaged over the prompt preceded by each context prefix (ROME, eq. 3), and
over the request's extra forms (the subject as it appears in chat questions). All
prefixed prompts of all requests go through ONE forward pass, cut after the
subject's last token (later tokens cannot change it) and stopped after the
layer (later layers are not needed).

The same contexts are used by the value optimisation, and the same averaged
key by the update: the r-ROME consistency that removes ROME's "disabling"
edits (Gupta et al., 2024).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ...models.arch import arch_for
from ..hooks import TraceDict
from .prompts import Request, encode_with_subject, subject_positions


def compute_keys(
    model: Any,
    tok: Any,
    requests: Sequence[Request],
    layer: int,
    contexts: Sequence[str],
    *,
    also_residual_at: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Averaged keys ``(n_requests, d_in)`` (float32, on the model's device).

    ``contexts`` are the prefixes ("" for the bare prompt). With
    ``also_residual_at=L`` the residual stream after block ``L`` at the same
    positions is averaged too and returned second (MEMIT needs it; ``L >=
    layer``), in the same pass.
    """
    arch = arch_for(model)
    device = next(model.parameters()).device
    seqs: list[list[int]] = []
    owner: list[int] = []
    for i, req in enumerate(requests):
        prompts = [(ctx, req.template) for ctx in contexts] + [("", f.template) for f in req.form_requests()]
        for ctx, template in prompts:
            ids, last = encode_with_subject(tok, ctx, template, req.subject)
            seqs.append(ids[: last + 1])
            owner.append(i)
    width = max(len(s) for s in seqs)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    # left padding puts every subject's last token in the final column
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for j, s in enumerate(seqs):
        ids[j, width - len(s):] = torch.tensor(s)
        mask[j, width - len(s):] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    owner_t = torch.tensor(owner, device=device)
    counts = torch.bincount(owner_t, minlength=len(requests)).to(torch.float32)[:, None]

    key_module = arch.path("mlp_down", layer)
    resid_module = arch.path("layer", also_residual_at) if also_residual_at is not None else None
    names = [key_module] + ([resid_module] if resid_module else [])
    with torch.no_grad(), TraceDict(model, names, retain_input=True, stop=True) as td:
        model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device), use_cache=False)
    k = td[key_module].input[:, -1].float()
    resid = td[resid_module].output[:, -1].float() if resid_module else None
    keys = torch.zeros(len(requests), k.shape[-1], device=device).index_add_(0, owner_t, k) / counts
    if resid is None:
        return keys
    z = torch.zeros(len(requests), resid.shape[-1], device=device).index_add_(0, owner_t, resid) / counts
    return keys, z


def subject_prefix_keys(model: Any, tok: Any, req: Request, layer: int) -> torch.Tensor | None:
    """Keys at the subject's tokens before its last, ``(n_subject_tokens - 1, d_in)`` (float32; None for one token).

    Read from the bare prompt and each chat form, averaged per token position
    counted back from the subject's last token. They are what the layer sees
    while the model is still *writing* the subject's name; an update that
    moves them is what turns "Darrieux" into "Darrieks" (issue 19), so ROME
    can keep them fixed (``RomeHParams.protect_subject``).
    """
    arch = arch_for(model)
    device = next(model.parameters()).device
    module = arch.path("mlp_down", layer)
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}
    for template in [req.template, *(f.template for f in req.form_requests())]:
        ids, positions = subject_positions(tok, "", template, req.subject)
        if len(positions) < 2:
            continue
        with torch.no_grad(), TraceDict(model, [module], retain_input=True, stop=True) as td:
            model(input_ids=torch.tensor([ids[: positions[-1]]], device=device), use_cache=False)
        k = td[module].input[0].float()
        for back, pos in enumerate(reversed(positions[:-1]), start=1):
            sums[back] = sums.get(back, 0) + k[pos]
            counts[back] = counts.get(back, 0) + 1
    if not sums:  # a one-token subject
        return None
    return torch.stack([sums[b] / counts[b] for b in sorted(sums)])
