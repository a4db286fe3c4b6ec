"""A batch of prompts split at the subject's last token, with the part before it computed once.

>>> batch = CachedBatch(model, rows, pad_id=tok.pad_token_id)            # doctest: +SKIP
>>> logits = batch.logits(rows_idx)  # (n_scored_positions, vocab)     # doctest: +SKIP

Why: the value optimisation adds a vector at the subject's last token and
runs the model 5-20 times. Every token *before* that position is unaffected
(causal attention), so its keys/values are computed once into a KV cache and
each step only runs the subject's last token and what follows. Rows are
left-padded before the split and right-padded after it, so the subject's
last token is column 0 of the suffix in every row: the edit hook needs no
per-row positions.

Only the positions that are scored go through the LM head (a pre-hook on
the head gathers them), which matters for large vocabularies (Gemma: 262k).
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch

from ...models.arch import ArchSpec
from ..hooks import get_module
from .prompts import Row


class CachedBatch:
    """Rows of :class:`~memedit.methods.rome.prompts.Row` ready for repeated forward passes."""

    def __init__(self, model: Any, arch: ArchSpec, rows: Sequence[Row], *, pad_id: int, use_cache: bool = True) -> None:
        self.model = model
        self.arch = arch
        self.rows = list(rows)
        self.device = next(model.parameters()).device
        n = len(self.rows)
        P = max(len(r.prefix) for r in self.rows)
        S = max(len(r.suffix) for r in self.rows)
        self.P, self.S = P, S
        self.prefix_ids = torch.full((n, P), pad_id, dtype=torch.long)
        self.prefix_mask = torch.zeros((n, P), dtype=torch.long)
        self.suffix_ids = torch.full((n, S), pad_id, dtype=torch.long)
        self.suffix_mask = torch.zeros((n, S), dtype=torch.long)
        for i, r in enumerate(self.rows):
            if r.prefix:
                self.prefix_ids[i, P - len(r.prefix):] = torch.tensor(r.prefix)
                self.prefix_mask[i, P - len(r.prefix):] = 1
            self.suffix_ids[i, : len(r.suffix)] = torch.tensor(r.suffix)
            self.suffix_mask[i, : len(r.suffix)] = 1
        lengths = self.prefix_mask.sum(1, keepdim=True)
        self.prefix_pos = (self.prefix_mask.cumsum(1) - 1).clamp(min=0)
        self.suffix_pos = lengths + torch.arange(S)[None, :]
        # scored positions: (row, column, target id); target -1 marks a KL position
        self.scored = [(i, c, t) for i, r in enumerate(self.rows) for c, t in r.targets]
        for name in ("prefix_ids", "prefix_mask", "suffix_ids", "suffix_mask", "prefix_pos", "suffix_pos"):
            setattr(self, name, getattr(self, name).to(self.device))
        self.cache = None
        self.use_cache = use_cache and P > 0
        # column of the subject's last token in what the model sees (0 with the cache, P without)
        self.subject_col = 0 if (self.use_cache or P == 0) else P
        if self.use_cache:
            with torch.no_grad():
                out = model(input_ids=self.prefix_ids, attention_mask=self.prefix_mask, position_ids=self.prefix_pos,
                            use_cache=True)
            self.cache = out.past_key_values
            _sanitize(self.cache)

    def select(self, rows: Sequence[int]) -> tuple[list[tuple[int, int, int]], torch.Tensor]:
        """Scored positions restricted to ``rows`` (re-indexed) and the row index tensor."""
        idx = list(rows)
        where = {r: j for j, r in enumerate(idx)}
        scored = [(where[i], c, t) for i, c, t in self.scored if i in where]
        return scored, torch.tensor(idx, device=self.device)

    def logits(self, rows: Sequence[int] | None = None) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
        """Logits ``(n_scored, vocab)`` at the scored positions of ``rows`` (default all) and those positions.

        Hooks registered by the caller on the model (the edit) run as usual;
        column 0 of the suffix is the subject's last token in every row.
        """
        rows = list(range(len(self.rows))) if rows is None else list(rows)
        scored, idx = self.select(rows)
        full = len(rows) == len(self.rows)
        ids = self.suffix_ids if full else self.suffix_ids[idx]
        smask = self.suffix_mask if full else self.suffix_mask[idx]
        pos = self.suffix_pos if full else self.suffix_pos[idx]
        kwargs: dict[str, Any] = {}
        if self.use_cache:
            cache = copy.deepcopy(self.cache)
            if not full:
                cache.batch_select_indices(idx)
            pmask = self.prefix_mask if full else self.prefix_mask[idx]
            kwargs = {"past_key_values": cache, "attention_mask": torch.cat([pmask, smask], 1), "use_cache": True}
        elif self.P > 0:  # no cache: whole sequences every time (slower; kept for comparison)
            pmask = self.prefix_mask if full else self.prefix_mask[idx]
            pids = self.prefix_ids if full else self.prefix_ids[idx]
            ppos = self.prefix_pos if full else self.prefix_pos[idx]
            ids = torch.cat([pids, ids], 1)
            pos = torch.cat([ppos, pos], 1)
            kwargs = {"attention_mask": torch.cat([pmask, smask], 1), "use_cache": False}
        else:
            kwargs = {"attention_mask": smask, "use_cache": False}
        r_idx = torch.tensor([s[0] for s in scored], device=self.device)
        c_idx = torch.tensor([s[1] + self.subject_col for s in scored], device=self.device)

        def gather(module: Any, args: tuple) -> tuple:
            hidden = args[0]
            return (hidden[r_idx, c_idx][None], *args[1:])

        head = get_module(self.model, self.arch.path("lm_head"))
        handle = head.register_forward_pre_hook(gather)
        try:
            out = self.model(input_ids=ids, position_ids=pos, **kwargs)
        finally:
            handle.remove()
        return out.logits[0].float(), scored


def _sanitize(cache: Any) -> None:
    """Replace non-finite values that fully padded prefix positions can leave in a KV cache (they are masked)."""
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor) and not torch.isfinite(t).all():
                setattr(layer, name, torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0))
