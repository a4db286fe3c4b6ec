"""Safety gates a weight commit must pass before it lands.

>>> from memedit.gates import GateConfig, run_gates
>>> results = run_gates(model, tok, edits, deltas, GateConfig())     # doctest: +SKIP
>>> [(g.name, g.passed) for g in results]                            # doctest: +SKIP
[('finite', True), ('norm', True), ('efficacy', True), ('perplexity', True), ('neighborhood', True)]

Every gate runs with the deltas applied *temporarily*; the model leaves
``run_gates`` bit-identical. The gates, cheapest first:

* **finite**: no NaN or infinity in the deltas;
* **norm**: each delta's Frobenius norm relative to its weight stays within a budget;
* **efficacy**: each edited prompt now prefers ``target_new`` over the old
  answer (``target_true``, or the model's own greedy answer before the edit),
  by mean per-token log-probability;
* **perplexity**: perplexity on held-out text does not rise past a ratio;
* **neighborhood**: unrelated probe prompts keep their greedy next token.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Sequence

import torch

from .edits import Edit
from .methods.deltas import LowRankDelta, temporarily_applied
from .methods.hooks import get_parameter


@dataclass
class GateConfig:
    """Thresholds; the defaults are deliberately strict for a chat product."""

    min_efficacy: float = 1.0            # fraction of edits that must prefer target_new
    max_perplexity_ratio: float = 1.05   # perplexity after / before on held-out text
    min_neighborhood_kept: float = 0.95  # fraction of probes whose greedy next token is unchanged
    max_relative_norm: float = 0.5       # ||delta||_F / ||W||_F per parameter
    heldout_texts: Sequence[str] | None = None   # default: memedit/resources/gate-heldout.json
    probes: Sequence[str] | None = None          # default: memedit/resources/gate-probes.json

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["heldout_texts"] = "default" if self.heldout_texts is None else len(self.heldout_texts)
        d["probes"] = "default" if self.probes is None else len(self.probes)
        return d


@dataclass
class GateResult:
    name: str
    passed: bool
    value: float
    threshold: float
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _resource(name: str) -> list[str]:
    return json.loads(resources.files("memedit").joinpath("resources", name).read_text(encoding="utf-8"))


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def mean_logprob(model: Any, tok: Any, prompt: str, target: str) -> float:
    """Mean per-token log-probability of ``target`` (with a leading space) after ``prompt``."""
    p_ids = tok(prompt, add_special_tokens=True)["input_ids"]
    t_ids = tok(" " + target.strip(), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + t_ids], device=_device(model))
    logits = model(ids).logits[0, len(p_ids) - 1:-1].float()
    logp = torch.log_softmax(logits, dim=-1)
    return float(logp[torch.arange(len(t_ids)), torch.tensor(t_ids, device=logp.device)].mean())


@torch.no_grad()
def greedy_tokens(model: Any, tok: Any, prompts: Sequence[str], n: int = 1) -> list[list[int]]:
    """The greedy next ``n`` token ids of each prompt (one padded batch per step)."""
    out = []
    for prompt in prompts:
        ids = torch.tensor([tok(prompt)["input_ids"]], device=_device(model))
        got = []
        for _ in range(n):
            nxt = int(model(ids).logits[0, -1].argmax())
            got.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]], device=ids.device)], dim=1)
        out.append(got)
    return out


@torch.no_grad()
def perplexity(model: Any, tok: Any, texts: Sequence[str]) -> float:
    """Token-weighted perplexity of ``texts``."""
    total, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([tok(text)["input_ids"]], device=_device(model))
        if ids.shape[1] < 2:
            continue
        logits = model(ids).logits[0, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
        total += float(nll)
        count += ids.shape[1] - 1
    return math.exp(total / max(count, 1))


def old_answers(model: Any, tok: Any, edits: Sequence[Edit]) -> list[str]:
    """What each edit replaces: ``target_true``, or the model's own greedy answer (before the edit)."""
    out = []
    for e in edits:
        if e.target_true:
            out.append(e.target_true)
            continue
        n = max(1, len(tok(" " + (e.target_new or ""), add_special_tokens=False)["input_ids"]))
        ids = greedy_tokens(model, tok, [e.filled_prompt()], n=n)[0]
        out.append(tok.decode(ids).strip() or tok.decode(ids))
    return out


def run_gates(model: Any, tok: Any, edits: Sequence[Edit], deltas: Sequence[LowRankDelta],
              config: GateConfig | None = None) -> list[GateResult]:
    """Evaluate every gate; the model is unchanged afterwards. Stops measuring after a failed cheap gate."""
    cfg = config or GateConfig()
    results: list[GateResult] = []
    finite = all(d.is_finite() for d in deltas)
    results.append(GateResult("finite", finite, float(finite), 1.0))
    if not finite:
        return results
    ratios = {d.param: d.norm() / max(float(get_parameter(model, d.param).detach().float().norm()), 1e-12)
              for d in deltas}
    worst = max(ratios.values(), default=0.0)
    results.append(GateResult("norm", worst <= cfg.max_relative_norm, worst, cfg.max_relative_norm,
                              {"relative_norms": ratios}))
    if worst > cfg.max_relative_norm:
        return results

    heldout = list(cfg.heldout_texts) if cfg.heldout_texts is not None else _resource("gate-heldout.json")
    probes = list(cfg.probes) if cfg.probes is not None else _resource("gate-probes.json")
    olds = old_answers(model, tok, edits)
    ppl_before = perplexity(model, tok, heldout)
    probe_before = greedy_tokens(model, tok, probes)
    with temporarily_applied(model, list(deltas)):
        prefer = []
        for e, old in zip(edits, olds):
            new_lp = mean_logprob(model, tok, e.filled_prompt(), e.target_new or "")
            old_lp = mean_logprob(model, tok, e.filled_prompt(), old)
            prefer.append({"edit": e.id, "new": new_lp, "old": old_lp, "old_answer": old, "ok": new_lp > old_lp})
        ppl_after = perplexity(model, tok, heldout)
        probe_after = greedy_tokens(model, tok, probes)
    efficacy = sum(p["ok"] for p in prefer) / max(len(prefer), 1)
    results.append(GateResult("efficacy", efficacy >= cfg.min_efficacy, efficacy, cfg.min_efficacy, {"edits": prefer}))
    ratio = ppl_after / ppl_before
    results.append(GateResult("perplexity", ratio <= cfg.max_perplexity_ratio, ratio, cfg.max_perplexity_ratio,
                              {"before": ppl_before, "after": ppl_after}))
    changed = [p for p, a, b in zip(probes, probe_before, probe_after) if a != b]
    kept = 1 - len(changed) / max(len(probes), 1)
    results.append(GateResult("neighborhood", kept >= cfg.min_neighborhood_kept, kept, cfg.min_neighborhood_kept,
                              {"changed": changed}))
    return results
