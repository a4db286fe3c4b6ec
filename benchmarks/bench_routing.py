"""Routing overhead per question (embed + search + classify) at N stored edits, and out-of-scope ask vs bare model.

    python benchmarks/bench_routing.py --sizes 1000 10000 --queries 200 --ask-questions 20 [--scope DIR] [--json out.json]

A fresh store per size is filled with the synthetic fact edits of
``bench_store.make_edits``; the questions are half in scope (a natural
question about a stored edit) and half unrelated (general-knowledge questions).
Routing overhead = :meth:`Router.prepare`'s ``embed + search + classify``
timings (classification runs only when the search returns candidates); also
reported, each piece's p50 and the whole ``prepare`` wall time. On the first (smallest) store,
out-of-scope questions are answered through ``Router.answer`` and by the bare
``base.chat([user: q])``, interleaved, and the median ratio is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from bench_store import make_edits  # noqa: E402
from memedit import EditStore  # noqa: E402
from memedit.route import Router  # noqa: E402

UNRELATED = [
    "What is the capital of France?", "How many legs does a spider have?", "Who wrote Hamlet?",
    "What is the boiling point of water?", "Explain photosynthesis in one sentence.", "What is 12 times 7?",
    "Which planet is known as the red planet?", "What language is spoken in Brazil?",
    "Name a primary colour.", "What does a thermometer measure?", "Who painted the Mona Lisa?",
    "What is the largest ocean on Earth?", "How many days are in a leap year?", "What gas do plants absorb?",
    "What is the chemical symbol for gold?", "Who was the first person on the Moon?",
    "What is the square root of 81?", "Which animal is known as the king of the jungle?",
    "What is the freezing point of water in Fahrenheit?", "What currency is used in Japan?",
]


PIECES = ("embed", "search", "classify")  # Router.prepare's timings that make up the routing overhead


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.array(xs), q)), 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ask-questions", type=int, default=20)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--scope", help="scope classifier artifact (default: packaged)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from memedit.scope import ScopeClassifier

    clf = ScopeClassifier.load(args.scope)
    out: dict = {"sizes": {}, "threads": args.threads, "scope": args.scope or "packaged"}
    with tempfile.TemporaryDirectory() as tmp:
        first_router = None
        for n in args.sizes:
            edits, questions = make_edits(n)
            store = EditStore(Path(tmp) / f"r{n}.db")
            t0 = time.perf_counter()
            store.add_many(edits, batch_size=512)
            add_s = time.perf_counter() - t0
            router = Router(store, args.model, classifier=clf, policy="ike", max_new_tokens=args.max_new_tokens)
            qs = [questions[i * (n // (args.queries // 2))] for i in range(args.queries // 2)]
            qs += [UNRELATED[i % len(UNRELATED)] + ("" if i < len(UNRELATED) else f" ({i})")
                   for i in range(args.queries // 2)]
            for q in qs[:5]:
                router.prepare(q)  # warm-up
            overhead, wall, routes = [], [], []
            pieces: dict[str, list[float]] = {k: [] for k in PIECES}
            for q in qs:
                t0 = time.perf_counter()
                p = router.prepare(q)
                wall.append((time.perf_counter() - t0) * 1000)
                overhead.append(sum(p.timings_ms.get(k, 0.0) for k in PIECES))
                for k in PIECES:
                    pieces[k].append(p.timings_ms.get(k, 0.0))
                routes.append(p.route)
            half = len(qs) // 2
            out["sizes"][n] = {
                "add_s": round(add_s, 1),
                "overhead_p50_ms": pct(overhead, 50), "overhead_p99_ms": pct(overhead, 99),
                # which part the overhead is: embed (the question; edit texts only where the store has no vectors)
                **{f"{k}_p50_ms": pct(v, 50) for k, v in pieces.items()},
                "prepare_wall_p50_ms": pct(wall, 50), "prepare_wall_p99_ms": pct(wall, 99),
                "in_scope_routed_edit": sum(r != "base" for r in routes[:half]) / half,
                "unrelated_routed_base": sum(r == "base" for r in routes[half:]) / (len(qs) - half),
            }
            print(n, out["sizes"][n], flush=True)
            if first_router is None:  # out-of-scope ask vs bare model, on the smallest store
                first_router = router
                oos = UNRELATED[: args.ask_questions]
                router.base.chat([{"role": "user", "content": oos[0]}])  # load + warm-up
                via, bare, ratio, same = [], [], [], 0
                for q in oos:
                    t0 = time.perf_counter()
                    a = router.answer(q)
                    t1 = time.perf_counter()
                    b = router.base.chat([{"role": "user", "content": q}], args.max_new_tokens)
                    t2 = time.perf_counter()
                    via.append((t1 - t0) * 1000)
                    bare.append((t2 - t1) * 1000)
                    ratio.append((t1 - t0) / (t2 - t1))
                    same += int(a.route == "base" and a.text == b)
                out["out_of_scope_ask"] = {
                    "store_size": args.sizes[0], "n": len(oos), "ask_p50_ms": pct(via, 50), "bare_p50_ms": pct(bare, 50),
                    "ratio_of_medians": round(statistics.median(via) / statistics.median(bare), 3),
                    "median_ratio": round(statistics.median(ratio), 3), "identical_base_answers": same,
                }
                print(out["out_of_scope_ask"], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
