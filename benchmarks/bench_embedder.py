"""The packaged embedder on its two backends: NumPy (the default on the CPU) and sentence-transformers.

    python benchmarks/bench_embedder.py [--texts 1000] [--runs 5] [--json out.json]

For each backend, in one run on one machine: a cold process that imports
``memedit.embeddings``, loads the packaged MiniLM and embeds one sentence
(what ``memedit add`` / ``search`` pay), median of ``--runs``; one text at a
time (the router's path) over 200 questions, median per text; a batch of
``--texts`` texts, median of ``--runs``; and how far the two backends'
vectors are apart on those texts (largest component difference, smallest
cosine, top-5 neighbours that agree). Texts are zsRE prompts and rephrasings
from ``../shared/data`` (inputs only; nothing is tuned here).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memedit.embeddings import Embedder  # noqa: E402
from memedit.scope_train import default_data_dir  # noqa: E402

import numpy as np  # noqa: E402

log = logging.getLogger("bench_embedder")
BACKENDS = ("numpy", "sentence-transformers")
COLD = ("import time; t = time.perf_counter(); from memedit.embeddings import Embedder; "
        "Embedder(backend={backend!r}).encode(['Who is the CEO of Acme?']); print(time.perf_counter() - t)")


def load_texts(n: int) -> list[str]:
    texts: list[str] = []
    with open(default_data_dir() / "zsre" / "zsre-dev.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            texts += [row["prompt"], row["rephrase_prompt"]]
            if len(texts) >= n:
                break
    return texts[:n]


def cold_seconds(backend: str) -> tuple[float, float]:
    """Wall time of the whole process, and the part after the interpreter started."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", COLD.format(backend=backend)], capture_output=True, text=True,
                         env=env, check=True)
    return time.perf_counter() - t0, float(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    texts = load_texts(args.texts)
    questions = texts[:200]
    report: dict = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "texts": len(texts), "runs": args.runs, "backends": {}}
    vectors = {}
    for backend in BACKENDS:
        emb = Embedder(backend=backend)
        emb.encode(questions[:3])  # warm: first calls build caches in both libraries
        per_text = []
        for q in questions:
            t0 = time.perf_counter()
            emb.encode([q])
            per_text.append(time.perf_counter() - t0)
        batch = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            vectors[backend] = emb.encode(texts)
            batch.append(time.perf_counter() - t0)
        cold = [cold_seconds(backend) for _ in range(args.runs)]
        report["backends"][backend] = {
            "cold_process_s": statistics.median(c[0] for c in cold),
            "cold_import_load_encode_s": statistics.median(c[1] for c in cold),
            "one_text_ms": 1000 * statistics.median(per_text),
            "batch_s": statistics.median(batch),
        }
        log.info("%-22s %s", backend, json.dumps({k: round(v, 3) for k, v in report["backends"][backend].items()}))
    a, b = vectors["numpy"], vectors["sentence-transformers"]
    half = len(texts) // 2

    def top5(v: np.ndarray) -> np.ndarray:
        return np.argsort(-(v[:half] @ v[half:].T), axis=1, kind="stable")[:, :5]

    report["agreement"] = {"max_abs_diff": float(np.abs(a - b).max()), "min_cosine": float((a * b).sum(1).min()),
                           "top5_rows_identical": float((top5(a) == top5(b)).all(1).mean())}
    log.info("agreement %s", json.dumps(report["agreement"]))
    n, s = report["backends"]["numpy"], report["backends"]["sentence-transformers"]
    log.info("numpy / sentence-transformers: cold process %.2f, one text %.2f, batch %.2f",
             n["cold_process_s"] / s["cold_process_s"], n["one_text_ms"] / s["one_text_ms"], n["batch_s"] / s["batch_s"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
