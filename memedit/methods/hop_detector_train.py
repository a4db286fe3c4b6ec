"""Training the hop detector (:mod:`memedit.methods.hop_detector`) on the tune side of a labelled question set.

    python -m memedit.methods.hop_detector_train benchmarks/data/multihop-questions.jsonl --out memedit/resources

Rows are ``{"question", "label": "single" | "multi", "subject"}``; a row's
side is its subject's (:meth:`memedit.eval.splits.DataSplit.side_of_subject`),
and only tune-side rows are read for the weights, the L2 strength and the
threshold. The strength is chosen by 5-fold cross-validation grouped by
subject on the tune side; the threshold is the one with the best F1 on those
out-of-fold predictions (ties: the higher threshold). Logistic regression
fitted with L-BFGS in torch; the artifact is safetensors + JSON.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ValidationError
from .hop_detector import ARTIFACT_STEM, FORMAT_VERSION, STRUCT_FEATURES, HopDetector

log = logging.getLogger(__name__)

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
FOLDS = 5


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    for i, r in enumerate(rows):
        if r.get("label") not in ("single", "multi") or not r.get("question") or not r.get("subject"):
            raise ValidationError(f"{path}:{i + 1}: a row needs question, subject and label single|multi")
    return rows


def with_sides(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with its ``side`` under the project's split."""
    from ..eval.splits import default_split

    split = default_split()
    return [dict(r, side=split.side_of_subject(r["subject"])) for r in rows]


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """Weights and bias of an L2-regularised logistic regression (standardised inputs)."""
    import torch

    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + (w @ w) / (2 * c * len(y))
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy().astype(np.float32), float(b.detach()[0])


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


def _predict(x: np.ndarray, mean: np.ndarray, std: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    z = ((x - mean) / std) @ w + b
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _f1(y: np.ndarray, pred: np.ndarray) -> float:
    tp = float(((pred == 1) & (y == 1)).sum())
    return 2 * tp / max(1.0, float(pred.sum() + y.sum()))


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def cross_validate(x: np.ndarray, y: np.ndarray, groups: Sequence[str], c: float) -> np.ndarray:
    """Out-of-fold probabilities, folds grouped by subject."""
    keys = sorted(set(groups))
    fold_of = {k: int(hashlib.sha256(k.encode()).hexdigest(), 16) % FOLDS for k in keys}
    folds = np.asarray([fold_of[g] for g in groups])
    out = np.zeros(len(y), np.float32)
    for f in range(FOLDS):
        tr, te = folds != f, folds == f
        mean, std = _standardise(x[tr])
        w, b = _fit((x[tr] - mean) / std, y[tr], c)
        out[te] = _predict(x[te], mean, std, w, b)
    return out


def best_threshold(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    grid = np.round(np.arange(0.05, 0.96, 0.01), 2)
    scores = [(_f1(y, (p >= t).astype(int)), t) for t in grid]
    f1, t = max(scores)
    return float(t), float(f1)


def train(data: str | Path, *, embedder: str | None = None) -> HopDetector:
    from ..embeddings import DEFAULT_EMBEDDER, Embedder
    from ..eval.splits import default_split

    rows = [r for r in with_sides(read_rows(data)) if r["side"] == "tune"]
    if len({r["label"] for r in rows}) < 2:
        raise ValidationError("the tune side needs both single-hop and multi-hop questions")
    name = embedder or DEFAULT_EMBEDDER
    det = HopDetector({}, {"embedder": name})
    det._embedder = Embedder.shared(name)
    x = np.concatenate([det.features([r["question"]], [r["subject"]]) for r in rows])
    y = np.asarray([r["label"] == "multi" for r in rows], np.int64)
    groups = [r["subject"].casefold() for r in rows]
    cv = {}
    for c in C_GRID:
        p = cross_validate(x, y, groups, c)
        cv[c] = (best_threshold(y, p), p)
        log.info("C=%g: out-of-fold log-loss %.4f, F1 %.4f at threshold %.2f", c, _log_loss(y, p), cv[c][0][1],
                 cv[c][0][0])
    # the strength with the best out-of-fold log-loss (a proper score; F1 alone favours a weak penalty and an
    # extreme threshold), then the threshold with the best F1 for it
    c = min(C_GRID, key=lambda k: _log_loss(y, cv[k][1]))
    (threshold, f1), p = cv[c]
    pred = (p >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    mean, std = _standardise(x)
    w, b = _fit((x - mean) / std, y, c)
    raw = Path(data).read_bytes()
    meta = {
        "format_version": FORMAT_VERSION, "artifact": ARTIFACT_STEM, "embedder": name, "dim": int(x.shape[1]) -
        len(STRUCT_FEATURES), "struct_features": list(STRUCT_FEATURES), "threshold": threshold, "l2_c": c,
        "training": {"data": Path(data).name, "data_sha256": hashlib.sha256(raw).hexdigest(), "side": "tune",
                     "rows": len(rows), "multi": int(y.sum()), "subjects": len(set(groups)),
                     "cv_f1": round(f1, 4), "cv_precision": round(tp / max(1, int(pred.sum())), 4),
                     "cv_recall": round(tp / max(1, int(y.sum())), 4), "folds": FOLDS},
        "split": default_split().record(),
    }
    return HopDetector({"w": w, "b": np.asarray([b], np.float32), "mean": mean, "std": std}, meta,
                       _embedder=det._embedder)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="directory for hop-detector.{json,safetensors}")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(1)
    det = train(args.data)
    out = args.out or Path(__file__).resolve().parents[1] / "resources"
    paths = det.save(out)
    log.info("wrote %s (%s)", paths, json.dumps(det.meta["training"]))


if __name__ == "__main__":
    main()
