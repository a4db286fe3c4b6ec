"""Seconds per multi-hop question (median) with the default model and 1k stored edits.

    python benchmarks/bench_multihop.py --edits 1000 --questions 10 [--json out.json]
    python benchmarks/bench_multihop.py --edits 10000 --questions 50 --detect-only   # the check alone, no model

A store gets ``--edits`` synthetic fact edits (made-up people, each with a
country of citizenship, a founder/company pair, a spouse ...; generated from
the relation catalogue's cloze forms) in one namespace. ``--questions``
two-hop questions, each over a different stored edit, go through
:class:`memedit.route.Router` (route ``mello``, structured decomposition,
SmolLM2 for the hops no edit covers). Printed: median and p90 seconds per
question, split into decomposition (entity + relations) and the rest (hops:
store lookups and model calls), plus the router's overhead for a single-hop
question on the same store (the multi-hop detector runs on every question).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memedit import Edit, EditStore  # noqa: E402
from memedit.route import Router  # noqa: E402

log = logging.getLogger("bench_multihop")

FIRST = ["Ada", "Bram", "Cleo", "Dario", "Elin", "Femi", "Gita", "Hugo", "Iris", "Jonas", "Kaia", "Lior", "Mira",
         "Nils", "Oona", "Pavel", "Quinn", "Rosa", "Sami", "Tove"]
LAST = ["Abara", "Berglund", "Castell", "Dunmore", "Ekwueme", "Fontaine", "Grieve", "Halloran", "Ilves", "Jaramillo",
        "Kowalczyk", "Lindqvist", "Moreau", "Nakashima", "Okafor", "Pereira", "Quist", "Rautio", "Szabo", "Tanaka"]
COUNTRIES = ["Kenya", "Peru", "Norway", "Vietnam", "Chile", "Ghana", "Poland", "Canada", "Egypt", "Portugal"]
# (edit template, a two-hop question template over the edited person)
PATTERNS = [
    ("{} is a citizen of", "What is the capital of the country that {} is a citizen of?"),
    ("{} is a citizen of", "Who is the head of state of the country of citizenship of {}?"),
    ("{} is a citizen of", "What is the official language of the country that {} is a citizen of?"),
]


def build_store(path: Path, n: int, seed: int) -> tuple[EditStore, list[Edit]]:
    rnd = random.Random(seed)
    store = EditStore(path)
    initials = "ABCDEFGHJKLMNPRSTVW"
    names = [f"{f} {m}. {l}" for f in FIRST for m in initials for l in LAST]  # 7600 people
    if n > len(names):  # two middle initials: 144,400 more
        names += [f"{f} {m}. {m2}. {l}" for f in FIRST for m in initials for m2 in initials for l in LAST]
    rnd.shuffle(names)
    if n > len(names):
        raise SystemExit(f"at most {len(names)} edits")
    edits = [Edit.fact(names[i], PATTERNS[0][0], rnd.choice(COUNTRIES), namespace="bench") for i in range(n)]
    store.create_namespace("bench")
    t0 = time.perf_counter()
    stored = store.add_many(edits)
    log.info("stored %d edits in %.1f s", len(stored), time.perf_counter() - t0)
    return store, stored


def detect_cost(store: EditStore, stored: list[Edit], args: argparse.Namespace) -> dict[str, object]:
    """Median milliseconds of MeLLo's multi-hop check per question, for three kinds of question.

    ``single``: a single-hop question about no stored subject; ``in_scope``: a
    single-hop question about a stored subject (the check decomposes it);
    ``multi``: a two-hop question over a stored edit. Each question is asked
    ``--questions`` times in rounds, so repeated ones hit the decomposition
    cache as they would in a chat.
    """
    from memedit.methods.mello import MeLLo

    mello = MeLLo(store)
    rnd = random.Random(args.seed + 1)
    kinds = {
        "single": [f"What is the capital of {c}?" for c in COUNTRIES],
        "in_scope": [f"Which country is {stored[rnd.randrange(len(stored))].subject} a citizen of?" for _ in range(10)],
        "multi": [PATTERNS[i % 3][1].format(stored[rnd.randrange(len(stored))].subject) for i in range(10)],
    }
    t0 = time.perf_counter()
    mello.claims(kinds["multi"][0], "bench")  # warm: the fact table (built once), embedder, catalogue vectors
    first = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(max(1, args.questions // 10)):
        for kind, qs in kinds.items():
            for q in qs:
                t0 = time.perf_counter()
                mello.claims(q, "bench")
                times[kind].append(time.perf_counter() - t0)
    return {"edits": args.edits, "first_call_ms": round(1000 * first, 2),
            **{f"median_{k}_ms": round(1000 * statistics.median(v), 3) for k, v in times.items()},
            "claimed": {k: sum(mello.claims(q, "bench") for q in qs) for k, qs in kinds.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edits", type=int, default=1000)
    ap.add_argument("--questions", type=int, default=10)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--detect-only", action="store_true",
                    help="Only time MeLLo's multi-hop check (Router.prepare's claims call) per question; no model.")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store, stored = build_store(Path(tmp) / "bench.db", args.edits, args.seed)
        if args.detect_only:
            res = detect_cost(store, stored, args)
            store.close()
            print(json.dumps(res, indent=1))
            if args.json:
                args.json.write_text(json.dumps(res, indent=1))
            return 0
        router = Router(store, args.model, policy="ike")
        mello = router.methods["mello"]
        rnd = random.Random(args.seed + 1)
        # warm up: model, embedder, catalogue vectors, scope classifier
        router.answer(PATTERNS[0][1].format(stored[0].subject), "bench")
        totals, decomp, routes = [], [], []
        for i in range(args.questions):
            e = stored[1 + rnd.randrange(len(stored) - 1)]
            q = rnd.choice(PATTERNS)[1].format(e.subject)
            t0 = time.perf_counter()
            d = mello.decompose(q, "bench")
            decomp.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            a = router.answer(q, "bench")  # decomposition now cached: this is routing + hops
            totals.append(time.perf_counter() - t0 + decomp[-1])
            routes.append(a.route)
            log.info("%5.2f s  [%s] %s -> %s (entity %r, %d hops)", totals[-1], a.route, q, a.text, d.entity,
                     len(d.relations))
        t_single = []
        for i in range(args.questions):
            q = f"What is the capital of {rnd.choice(COUNTRIES)}? ({i})"
            t0 = time.perf_counter()
            router.prepare(q, "bench")
            t_single.append(time.perf_counter() - t0)
        store.close()
    q90 = lambda xs: sorted(xs)[min(len(xs) - 1, int(0.9 * len(xs)))]  # noqa: E731
    res = {"edits": args.edits, "questions": args.questions, "model": args.model, "threads": args.threads,
           "median_s_per_question": round(statistics.median(totals), 3), "p90_s": round(q90(totals), 3),
           "median_decompose_s": round(statistics.median(decomp), 3),
           "routed_mello": sum(r == "mello" for r in routes) / len(routes),
           "median_prepare_single_hop_s": round(statistics.median(t_single), 4)}
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
