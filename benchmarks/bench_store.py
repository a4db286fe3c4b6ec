"""Edit-store speed: batched add throughput, search latency, index rebuild and open time.

    python benchmarks/bench_store.py --sizes 1000 10000 100000 [--queries 300] [--json out.json]

For each size a fresh store is filled with synthetic fact edits (varied
subjects, relations and objects) through ``add_many`` (embedding included),
then searched with distinct natural questions. Reported: adds/s (and the share
spent embedding), search p50/p99 with the query embedding (``search``) and
without it (``search_vector``), full index rebuild from SQLite, and store
open + first search (index load and consistency check). Medians and p99 over
the queries; every figure from one run on one machine.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from memedit import Edit, EditStore  # noqa: E402
from memedit.embeddings import Embedder  # noqa: E402

RELATIONS = [
    ("The capital of {} is", "What is the capital of {}?"),
    ("The CEO of {} is", "Who runs {}?"),
    ("The mother tongue of {} is", "What language did {} grow up speaking?"),
    ("{} plays the sport of", "Which sport does {} play?"),
    ("The headquarters of {} are in", "Where is {} based?"),
    ("{} was born in", "Where was {} born?"),
    ("The author of {} is", "Who wrote {}?"),
    ("{} is a citizen of", "Which country is {} a citizen of?"),
    ("The official language of {} is", "What language is spoken officially in {}?"),
    ("{} works for", "Who is the employer of {}?"),
]
SYLLABLES = ["ka", "lo", "mi", "ren", "tas", "vo", "zel", "pri", "dun", "sha", "gor", "lin", "bex", "tor", "quin"]


def _name(rng: random.Random) -> str:
    return " ".join("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
                    for _ in range(rng.randint(1, 2)))


def make_edits(n: int, seed: int = 0) -> tuple[list[Edit], list[str]]:
    """``n`` fact edits and, for each, a natural question about it (same index)."""
    rng = random.Random(seed)
    edits, questions = [], []
    for i in range(n):
        rel, question = RELATIONS[i % len(RELATIONS)]
        subject = f"{_name(rng)} {i}"
        edits.append(Edit.fact(subject, rel, _name(rng)))
        questions.append(question.format(subject))
    return edits, questions


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def bench_size(n: int, queries: int, workdir: Path, embedder: Embedder) -> dict[str, float]:
    edits, questions = make_edits(n)
    path = workdir / f"bench-{n}.db"
    store = EditStore(path, embedder=embedder)
    store.embedder  # loaded before timing
    t0 = time.perf_counter()
    store.add_many(edits, batch_size=512, progress=sys.stderr.isatty())
    add_s = time.perf_counter() - t0
    # The embedding share: re-embed a sample of the same texts alone.
    sample = [t for e in edits[: min(n, 2000)] for t in e.search_texts()]
    t0 = time.perf_counter()
    embedder.encode(sample)
    embed_rate = len(sample) / (time.perf_counter() - t0)
    texts_per_edit = sum(len(e.search_texts()) for e in edits[:1000]) / min(n, 1000)

    rng = random.Random(1)
    picked = rng.sample(range(len(questions)), min(queries, len(questions)))
    qs = [questions[i] for i in picked]
    store.search(qs[0], k=5)  # warm: index built, caches filled
    lat, lat_vec, hits_at_1 = [], [], 0
    qvecs = embedder.encode(qs)
    for i, q, qv in zip(picked, qs, qvecs):
        t0 = time.perf_counter()
        hits = store.search(q, k=5)
        lat.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        store.search_vector(qv, k=5)
        lat_vec.append((time.perf_counter() - t0) * 1000)
        hits_at_1 += bool(hits) and hits[0].edit.subject == edits[i].subject
    t0 = time.perf_counter()
    store.rebuild_index()
    rebuild_s = time.perf_counter() - t0
    store.close()
    t0 = time.perf_counter()
    reopened = EditStore(path, embedder=embedder)
    reopened.search(qs[0], k=5)
    open_s = time.perf_counter() - t0
    assert not reopened.index_rebuilt, "a clean reopen must load the saved index, not rebuild it"
    reopened.close()
    return {
        "edits": n, "vectors": round(n * texts_per_edit), "add_per_s": n / add_s, "add_total_s": add_s,
        "embed_texts_per_s": embed_rate, "search_p50_ms": statistics.median(lat), "search_p99_ms": pct(lat, 99),
        "search_vector_p50_ms": statistics.median(lat_vec), "search_vector_p99_ms": pct(lat_vec, 99),
        "top1_is_the_asked_subject": hits_at_1 / len(qs), "rebuild_s": rebuild_s, "open_and_first_search_s": open_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--workdir", type=Path, help="where to put the stores (default: a temp dir)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice); 1 holds up better on a busy machine")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    embedder = Embedder.shared()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="memedit-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = [bench_size(n, args.queries, workdir, embedder) for n in args.sizes]
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d"), "command": "python " + " ".join(sys.argv),
            "load_average_at_end": os.getloadavg()}
    print(json.dumps(meta))
    header = ("edits", "vectors", "add/s", "embed texts/s", "search p50", "search p99", "vec p50", "vec p99",
              "top1 ok", "rebuild s", "open s")
    print(" | ".join(header))
    for r in rows:
        print(" | ".join([f"{r['edits']}", f"{r['vectors']}", f"{r['add_per_s']:.0f}", f"{r['embed_texts_per_s']:.0f}",
                          f"{r['search_p50_ms']:.1f} ms", f"{r['search_p99_ms']:.1f} ms",
                          f"{r['search_vector_p50_ms']:.2f} ms", f"{r['search_vector_p99_ms']:.2f} ms",
                          f"{r['top1_is_the_asked_subject']:.2f}", f"{r['rebuild_s']:.2f}",
                          f"{r['open_and_first_search_s']:.2f}"]))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
