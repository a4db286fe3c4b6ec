"""Probability probes used to report and evaluate weight edits.

>>> lp = target_logprobs(model, tok, ["The capital of France is"], ["Paris"])   # doctest: +SKIP
>>> lp[0]   # mean log-probability per target token                        # doctest: +SKIP
-0.41

Batched: one forward pass per ``batch_size`` (prompt, target) pairs, with
only the target positions sent through the LM head.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ...models.arch import arch_for
from ..hooks import get_module
from .prompts import target_ids


def target_logprobs(
    model: Any, tok: Any, prompts: Sequence[str], targets: Sequence[str], *, batch_size: int = 32
) -> list[float]:
    """Mean log-probability per token of each ``target`` continuing its ``prompt`` (ROME's comparison score)."""
    if len(prompts) != len(targets):
        raise ValueError("prompts and targets must have the same length")
    arch = arch_for(model)
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: list[float] = []
    for start in range(0, len(prompts), batch_size):
        seqs, spans = [], []
        for p, t in zip(prompts[start:start + batch_size], targets[start:start + batch_size]):
            ids = list(tok(p, add_special_tokens=True)["input_ids"])
            tgt = target_ids(tok, p, t)
            seqs.append(ids + tgt)
            spans.append((len(ids), tgt))
        width = max(len(s) for s in seqs) - 1
        input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for i, s in enumerate(seqs):
            input_ids[i, : len(s) - 1] = torch.tensor(s[:-1])
            mask[i, : len(s) - 1] = 1
        rows, cols, ids = [], [], []
        for i, (n, tgt) in enumerate(spans):
            for j, t in enumerate(tgt):
                rows.append(i)
                cols.append(n + j - 1)
                ids.append(t)
        r_idx = torch.tensor(rows, device=device)
        c_idx = torch.tensor(cols, device=device)

        def gather(module: Any, args: tuple) -> tuple:
            return (args[0][r_idx, c_idx][None], *args[1:])

        handle = get_module(model, arch.path("lm_head")).register_forward_pre_hook(gather)
        try:
            with torch.no_grad():
                logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False).logits[0]
        finally:
            handle.remove()
        lp = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(ids, device=device)[:, None])[:, 0].cpu()
        sums = torch.zeros(len(seqs)).index_add_(0, torch.tensor(rows), lp)
        counts = torch.zeros(len(seqs)).index_add_(0, torch.tensor(rows), torch.ones_like(lp))
        out.extend((sums / counts).tolist())
    return out


def greedy_continuations(
    model: Any, tok: Any, prompts: Sequence[str], *, max_new_tokens: int = 8, batch_size: int = 16
) -> list[str]:
    """Greedy continuations (decoded, without the prompt) of each prompt, batched with left padding."""
    device = next(model.parameters()).device
    out: list[str] = []
    old = tok.padding_side
    tok.padding_side = "left"
    try:
        for start in range(0, len(prompts), batch_size):
            enc = tok(list(prompts[start:start + batch_size]), return_tensors="pt", padding=True).to(device)
            with torch.no_grad():
                gen = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                     pad_token_id=tok.pad_token_id, top_p=None, top_k=None, temperature=None)
            out.extend(tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    finally:
        tok.padding_side = old
    return out
