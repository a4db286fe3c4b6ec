"""Causal tracing (Meng et al., 2022): where in the network does the model recall a fact?

>>> from memedit.methods.trace import causal_trace, plot_trace                     # doctest: +SKIP
>>> r = causal_trace(model, tok, "The Eiffel Tower is located in the city of", "Eiffel Tower")  # doctest: +SKIP
>>> r.layer_effects()            # indirect effect per layer at the subject's last token  # doctest: +SKIP
>>> plot_trace(r, "eiffel.png")                                                   # doctest: +SKIP

1. **clean run**: the prompt as is; record every layer's hidden state (or
   MLP / attention output) and the probability ``high`` of the answer.
2. **corrupted run**: Gaussian noise (``noise`` x the standard deviation of
   the token embeddings, 3 by default) is added to the subject's token
   embeddings; the answer's probability drops to ``low``.
3. **corrupted-with-restoration**: as 2, but one state (layer ``l``, token
   ``t``) is copied back from the clean run. Its probability minus ``low`` is
   the *indirect effect* of that state. For ``kind="mlp"``/``"attn"`` a window
   of ``window`` layers around ``l`` is restored at once (as in the paper).

All restorations of all noise samples are batched (``batch_size`` rows per
forward pass); the same noise samples are reused for every (layer, token),
and tokens before the subject are skipped (restoring them changes nothing).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ValidationError
from ..models.arch import arch_for
from .hooks import TraceDict, first, get_module, replace_first
from .rome.prompts import target_ids

KINDS = {"hidden": "layer", "mlp": "mlp", "attn": "attn"}


@dataclass
class TraceResult:
    """``scores[t, l]``: probability of ``answer`` with state (layer ``l``, token ``t``) restored."""

    scores: np.ndarray
    low: float
    high: float
    tokens: list[str]
    subject_range: tuple[int, int]
    answer: str
    kind: str
    window: int
    prompt: str
    subject: str
    samples: int
    seconds: float = 0.0
    traced_tokens: list[int] = field(default_factory=list)

    @property
    def effects(self) -> np.ndarray:
        """Indirect effects ``scores - low`` (tokens x layers)."""
        return self.scores - self.low

    @property
    def subject_last(self) -> int:
        """Index of the subject's last token."""
        return self.subject_range[1] - 1

    def layer_effects(self, token: int | None = None) -> list[float]:
        """Indirect effect per layer at ``token`` (default: the subject's last token)."""
        t = self.subject_last if token is None else token
        return [float(x) for x in self.effects[t]]

    def best_layer(self, token: int | None = None) -> int:
        """The layer with the largest indirect effect at ``token`` (default: the subject's last token)."""
        return int(np.argmax(self.layer_effects(token)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "prompt": self.prompt, "subject": self.subject, "answer": self.answer, "kind": self.kind,
            "window": self.window, "samples": self.samples, "low": self.low, "high": self.high,
            "tokens": self.tokens, "subject_range": list(self.subject_range),
            "layer_effects_subject_last": self.layer_effects(), "best_layer": self.best_layer(),
            "effects": [[round(float(x), 6) for x in row] for row in self.effects],
            "seconds": round(self.seconds, 2),
        }


def noise_scale(model: Any, multiplier: float = 3.0, n_ids: int = 4096, seed: int = 0) -> float:
    """``multiplier`` x the standard deviation of the embedding module's output over random token ids."""
    arch = arch_for(model)
    embed = get_module(model, arch.path("embed"))
    vocab = int(getattr(embed, "num_embeddings", None) or model.config.vocab_size)
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (1, min(n_ids, vocab)), generator=g).to(device)
    with torch.no_grad():
        std = float(embed(ids).float().std())
    return multiplier * std


def _subject_range(tok: Any, prompt: str, subject: str) -> tuple[list[int], tuple[int, int]]:
    start = prompt.find(subject)
    if start < 0:
        raise ValidationError(f"subject {subject!r} does not occur in prompt {prompt!r}")
    end = start + len(subject)
    enc = tok(prompt, add_special_tokens=True, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    inside = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < end and b > start]
    if not inside:
        raise ValidationError(f"subject {subject!r} has no token in {prompt!r}")
    return ids, (inside[0], inside[-1] + 1)


def causal_trace(
    model: Any,
    tok: Any,
    prompt: str,
    subject: str,
    *,
    answer: str | None = None,
    kind: str = "hidden",
    samples: int = 10,
    noise: float = 3.0,
    window: int = 10,
    tokens: str | Sequence[int] = "all",
    batch_size: int = 64,
    seed: int = 0,
) -> TraceResult:
    """Trace one prompt; see the module docstring. ``answer`` defaults to the model's own top next token.

    ``tokens``: ``"all"`` (every token from the subject's first on), ``"subject_last"``,
    or explicit token indices.
    """
    if kind not in KINDS:
        raise ValidationError(f"kind must be one of {sorted(KINDS)}")
    if samples < 1 or window < 1:
        raise ValidationError("samples and window must be >= 1")
    t0 = time.perf_counter()
    arch = arch_for(model)
    n_layers = arch.n_layers(model.config)
    device = next(model.parameters()).device
    ids, (s0, s1) = _subject_range(tok, prompt, subject)
    T = len(ids)
    places = [arch.path(KINDS[kind], layer) for layer in range(n_layers)]
    input_ids = torch.tensor([ids], device=device)

    # 1. clean run
    with torch.no_grad(), TraceDict(model, places, detach=True) as td:
        logits = model(input_ids=input_ids, use_cache=False, logits_to_keep=1).logits[0, -1].float()
    clean = [td[p].output[0] for p in places]  # each (T, H)
    probs = torch.softmax(logits, -1)
    if answer is None:
        answer_id = int(probs.argmax())
        answer = tok.decode([answer_id])
    else:
        answer_id = target_ids(tok, prompt, answer)[0]
    high = float(probs[answer_id])

    # which (layer, token) states get restored
    if tokens == "all":
        traced = list(range(s0, T))
    elif tokens == "subject_last":
        traced = [s1 - 1]
    else:
        traced = sorted({int(t) for t in tokens})
        if any(t < 0 or t >= T for t in traced):
            raise ValidationError(f"token indices must be within 0..{T - 1}")
    configs: list[tuple[int, int] | None] = [None] + [(layer, t) for t in traced for layer in range(n_layers)]

    def window_of(layer: int) -> list[int]:
        if kind == "hidden":
            return [layer]
        lo = max(0, layer - window // 2)
        hi = min(n_layers, layer - (-window // 2))
        return list(range(lo, hi))

    # 2./3. corrupted runs, with and without restoration; noise sample s is shared by all configs
    g = torch.Generator().manual_seed(seed)
    scale = noise_scale(model, noise)
    hidden = clean[0].shape[-1] if kind == "hidden" else arch.hidden_size(model.config)
    noise_t = (torch.randn(samples, s1 - s0, hidden, generator=g) * scale).to(device)
    rows = [(c, s) for c in configs for s in range(samples)]
    result = torch.zeros(len(configs), device=device)
    embed_name = arch.path("embed")
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        sample_idx = torch.tensor([s for _, s in chunk], device=device)
        restore: dict[int, tuple[list[int], list[int]]] = {}
        for r, (c, _) in enumerate(chunk):
            if c is None:
                continue
            layer, t = c
            for lay in window_of(layer):
                rr, tt = restore.setdefault(lay, ([], []))
                rr.append(r)
                tt.append(t)
        restore_t = {lay: (torch.tensor(rr, device=device), torch.tensor(tt, device=device))
                     for lay, (rr, tt) in restore.items()}

        def edit(output: Any, name: str) -> Any:
            h = first(output)
            if name == embed_name:
                h = h.clone()
                h[:, s0:s1] = h[:, s0:s1] + noise_t[sample_idx].to(h.dtype)
                return replace_first(output, h)
            lay = places.index(name)
            if lay not in restore_t:
                return output
            rr, tt = restore_t[lay]
            h = h.clone()
            h[rr, tt] = clean[lay][tt].to(h.dtype)
            return replace_first(output, h)

        batch_ids = input_ids.expand(len(chunk), T)
        with torch.no_grad(), TraceDict(model, [embed_name, *places], retain_output=False, edit_output=edit):
            out = model(input_ids=batch_ids, use_cache=False, logits_to_keep=1).logits[:, -1].float()
        p = torch.softmax(out, -1)[:, answer_id]
        cfg_idx = torch.tensor([configs.index(c) for c, _ in chunk], device=device)
        result.index_add_(0, cfg_idx, p)
    result = (result / samples).cpu().numpy()
    low = float(result[0])
    scores = np.full((T, n_layers), low, dtype=np.float64)
    for i, c in enumerate(configs[1:], start=1):
        layer, t = c  # type: ignore[misc]
        scores[t, layer] = result[i]
    token_strs = [tok.decode([i]) for i in ids]
    return TraceResult(scores=scores, low=low, high=high, tokens=token_strs, subject_range=(s0, s1), answer=answer,
                       kind=kind, window=window if kind != "hidden" else 1, prompt=prompt, subject=subject,
                       samples=samples, seconds=time.perf_counter() - t0, traced_tokens=traced)


def average_layer_effects(results: Sequence[TraceResult], normalise: bool = True) -> list[float]:
    """Mean indirect effect per layer at the subject's last token over several traces.

    With ``normalise`` each trace is divided by its ``high - low`` first, so
    facts the model is very sure of do not dominate.
    """
    if not results:
        raise ValidationError("no traces to average")
    rows = []
    for r in results:
        e = np.asarray(r.layer_effects())
        if normalise:
            e = e / max(r.high - r.low, 1e-6)
        rows.append(e)
    return [float(x) for x in np.mean(rows, axis=0)]


def plot_trace(result: TraceResult, path: str | Path, title: str | None = None) -> Path:
    """Write the (token x layer) heatmap of ``result`` as a PNG and return its path (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cmap = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}[result.kind]
    labels = [repr(t)[1:-1] + ("*" if result.subject_range[0] <= i < result.subject_range[1] else "")
              for i, t in enumerate(result.tokens)]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.22 * result.scores.shape[1] + 2), 0.32 * len(labels) + 1.5), dpi=150)
    im = ax.pcolormesh(result.scores, cmap=cmap, vmin=result.low)
    ax.invert_yaxis()
    ax.set_yticks([0.5 + i for i in range(len(labels))])
    ax.set_yticklabels(labels, fontsize=7)
    step = max(1, result.scores.shape[1] // 10)
    ax.set_xticks([0.5 + i for i in range(0, result.scores.shape[1], step)])
    ax.set_xticklabels(list(range(0, result.scores.shape[1], step)), fontsize=7)
    what = {"hidden": "single restored layer", "mlp": f"restored MLP, window {result.window}",
            "attn": f"restored attention, window {result.window}"}[result.kind]
    ax.set_xlabel(f"layer ({what})", fontsize=8)
    ax.set_title(title or f"p({result.answer.strip()!r}) - {result.prompt}", fontsize=8)
    cb = fig.colorbar(im, ax=ax)
    cb.ax.tick_params(labelsize=7)
    cb.set_label(f"p(answer); clean {result.high:.3f}, corrupted {result.low:.3f}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
