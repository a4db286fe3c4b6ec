"""Fit :class:`memedit.fact_match.FactMatcher` on the tune side of the split; measure it on the report side.

>>> from memedit.fact_match_train import train
>>> matcher, metrics = train(out="/tmp/fact-match.json")      # doctest: +SKIP
>>> metrics["report"]["precision"] > 0.9                       # doctest: +SKIP
True

The pairs come from the evaluation files (CounterFact and zsRE, read through
:mod:`memedit.eval.datasets`): each record's fact edit with every question it
is probed with. A pair is positive when the question's expected answer is the
edit's new object (the direct question, its paraphrases, a question about an
alias of the subject), negative when it is not (zsRE's questions about another
relation of the same subject, questions that need the fact plus reasoning).
CounterFact's neighbourhood questions are about other subjects and never reach
the check (the scope classifier keeps them out), so they are not used.

Only tune-side subjects are fitted on and the threshold is chosen there (the
lowest that keeps tune precision at or above ``min_precision``); the report
side is scored once, for the record, and never feeds a choice.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .fact_match import FEATURES, FactMatcher, features, pair_texts

log = logging.getLogger(__name__)

FILES = (("counterfact/counterfact-dev.jsonl", "counterfact"), ("zsre/zsre-dev.jsonl", "zsre"))


def labelled_pairs(data_dir: Path) -> list[dict[str, Any]]:
    """Every (question, fact edit, label, side) pair from the evaluation files."""
    from .eval.datasets import load_cases
    from .eval.splits import default_split

    split = default_split()
    pairs: list[dict[str, Any]] = []
    for rel, fmt in FILES:
        for case in load_cases(data_dir / rel, fmt).cases:
            side = split.side_of_subject(case.edit.subject or "")
            for probe in case.probes:
                if probe.kind == "locality" and fmt == "counterfact":
                    continue
                label = probe.kind != "locality" and case.edit.target_new in probe.expected
                pairs.append({"question": probe.question, "edit": case.edit, "label": int(label), "side": side,
                              "kind": probe.kind, "source": fmt})
    return pairs


def feature_matrix(pairs: Sequence[dict[str, Any]], progress: bool = False) -> np.ndarray:
    from .embeddings import Embedder
    from .scope import ScopeClassifier

    texts = [pair_texts(p["question"], p["edit"]) for p in pairs]
    unique = sorted({t for ts in texts for t in ts})
    log.info("embedding %d texts", len(unique))
    vecs = Embedder().encode(unique, show_progress=progress)
    row = {t: i for i, t in enumerate(unique)}
    scope = ScopeClassifier.load().predict_proba([p["question"] for p in pairs], [p["edit"].sentence() for p in pairs])
    return np.stack([features(p["question"], p["edit"], float(s), vecs[[row[t] for t in ts]])
                     for p, s, ts in zip(pairs, scope, texts)])


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method (six features: exact and instant)."""
    xb = np.c_[x, np.ones(len(x))]
    w = np.zeros(xb.shape[1])
    reg = np.eye(xb.shape[1]) * l2
    reg[-1, -1] = 0.0  # the bias is not shrunk
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -50, 50)))
        grad = xb.T @ (p - y) / len(y) + reg @ w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb / len(y) + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1])


def scores(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, Any]:
    pred = probs >= threshold
    tp, fp, fn = int((pred & (labels == 1)).sum()), int((pred & (labels == 0)).sum()), int((~pred & (labels == 1)).sum())
    return {"n": int(len(labels)), "positives": int(labels.sum()), "tp": tp, "fp": fp, "fn": fn,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None}


def choose_threshold(labels: np.ndarray, probs: np.ndarray, min_precision: float) -> float:
    """The lowest threshold (on a 0.01 grid) whose precision is at least ``min_precision``."""
    for t in np.arange(0.05, 0.96, 0.01):
        s = scores(labels, probs, float(t))
        if s["precision"] is not None and s["precision"] >= min_precision:
            return round(float(t), 2)
    return 0.95


def train(out: str | Path, data_dir: str | Path | None = None, min_precision: float = 0.95,
          progress: bool = False) -> tuple[FactMatcher, dict[str, Any]]:
    """Fit on the tune side, choose the threshold there, write ``out``; returns the matcher and its metrics."""
    from .eval.splits import default_data_dir, default_split

    t0 = time.perf_counter()
    pairs = labelled_pairs(Path(data_dir) if data_dir else default_data_dir())
    x = feature_matrix(pairs, progress=progress)
    y = np.array([p["label"] for p in pairs], dtype=np.float64)
    tune = np.array([p["side"] == "tune" for p in pairs])
    w, b = fit_logistic(x[tune], y[tune])
    probe = FactMatcher(tuple(float(v) for v in w), b, 0.5)
    probs = np.array([probe.probability_of(r) for r in x])
    threshold = choose_threshold(y[tune], probs[tune], min_precision)
    metrics: dict[str, Any] = {"tune": scores(y[tune], probs[tune], threshold),
                               "report": scores(y[~tune], probs[~tune], threshold), "by_kind_report": {}}
    for src in ("counterfact", "zsre"):
        for kind in ("reliability", "generalization", "locality", "portability"):
            k = np.array([p["side"] == "report" and p["source"] == src and p["kind"] == kind for p in pairs])
            if k.any():
                metrics["by_kind_report"][f"{src}/{kind}"] = {"n": int(k.sum()),
                                                             "asks_fact": round(float((probs[k] >= threshold).mean()), 4)}
    split = default_split()
    meta = {"format": 1, "model": "logistic regression", "min_tune_precision": min_precision,
            "split": split.record(), "trained_on": "tune side of counterfact-dev.jsonl and zsre-dev.jsonl",
            "pairs": {"tune": int(tune.sum()), "report": int((~tune).sum())}, "metrics": metrics,
            "train_seconds": round(time.perf_counter() - t0, 1), "feature_help": dict(zip(FEATURES, (
                "cosine(question, filled prompt)", "cosine of both with the subject masked",
                "the question names the subject", "the question names the new object",
                "the scope classifier's probability", "product of the first two")))}
    matcher = FactMatcher(tuple(round(float(v), 6) for v in w), round(b, 6), threshold, meta)
    matcher.save(out)
    return matcher, metrics
