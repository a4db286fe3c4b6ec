"""Speed and quality of the weight editors (ROME, MEMIT, EMMET) on CounterFact records.

    python benchmarks/bench_weight_edit.py --n 25                              # all three methods
    python benchmarks/bench_weight_edit.py --n 25 --methods rome --threads 2 --json out.json
    python benchmarks/bench_weight_edit.py --n 10 --methods rome --rome-hp n_prefixes=20 --rome-hp max_steps=20 \
        --rome-hp prefix_cache=false --rome-hp stop_prob=0.95           # a ROME-reference-like setting

For each record (``../shared/data/counterfact/counterfact-dev.jsonl`` by
default; read in place, never copied), with the probability-based scores of
the ROME paper (mean log-probability per target token):

* **efficacy**: p(new) > p(true) on the edit prompt;
* **paraphrase**: p(new) > p(true) on the rephrased prompt;
* **neighborhood**: p(true) > p(new) on a prompt about another subject with
  the same true object (locality; compare with the unedited model);
* **gen-efficacy**: greedy decoding of the edit prompt (and the paraphrase)
  starts with the new object.

ROME edits are applied one at a time and reverted (bit-identically) before
the next; MEMIT and EMMET write all records in one batch. Seconds per edit
are the editors' own totals (statistics are precomputed and cached first,
and reported apart). Set ``--threads``: on a shared 2-core machine one
thread is often faster than two.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "counterfact" / "counterfact-dev.jsonl"


def parse_hp(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
        if isinstance(out[key], list):
            out[key] = tuple(out[key])
    return out


def ledger_timings(model: Any, tok: Any, recs: list[dict[str, Any]], rome_hp: Any, stats: Any) -> dict[str, Any]:
    """Seconds to revert one commit and to replay a whole ledger onto a fresh copy of the base weights."""
    import tempfile

    from memedit import Edit, EditStore
    from memedit.commit import CommitLedger
    from memedit.gates import GateConfig
    from memedit.methods.deltas import restore, snapshot
    from memedit.models.arch import arch_for

    names = [arch_for(model).weight_name(rome_hp.layer)]
    pristine = snapshot(model, names)
    lenient = GateConfig(min_efficacy=0.0, max_perplexity_ratio=10.0, min_neighborhood_kept=0.0)
    with tempfile.TemporaryDirectory() as tmp, EditStore(Path(tmp) / "bench.db") as store:
        edits = [store.add(Edit.fact(r["subject"], r["prompt"].replace(r["subject"], "{}", 1), r["target_new"],
                                     target_true=r["ground_truth"])) for r in recs]
        ledger = CommitLedger(store, model, tok, model_name="bench", gates=lenient)
        t = time.perf_counter()
        report = ledger.commit(edits, method="rome", hparams=rome_hp, stats=stats)
        commit_s = time.perf_counter() - t
        t = time.perf_counter()
        ledger.revert(report.commit_ids[0])
        revert_s = time.perf_counter() - t
        restore(model, pristine)  # as a fresh process would load the base weights
        t = time.perf_counter()
        replay = CommitLedger(store, model, tok, model_name="bench", gates=lenient, base_hash=ledger.base_hash)
        replay_s = time.perf_counter() - t
        assert replay.model_state_matches_ledger()
        restore(model, pristine)
    return {"commits": len(report.commit_ids), "commit_seconds_total_incl_gates": round(commit_s, 2),
            "revert_seconds": round(revert_s, 3), "replay_seconds_attach": round(replay_s, 3)}


def gate_timings(model: Any, tok: Any, recs: list[dict[str, Any]], rome_hp: Any, stats: Any) -> dict[str, Any]:
    """Seconds per commit of the default gates, uncached and cached, on a chain of ROME commits.

    Each record is edited with ROME on the weights left by the previous one
    (as a ledger commits them); its gates run once without a cache and once
    with one (the order alternates, so load changes hit both alike), the
    verdicts are compared, and the deltas land.
    """
    import statistics

    from memedit import Edit
    from memedit.gates import GateCache, run_gates
    from memedit.methods import rome
    from memedit.methods.deltas import apply_deltas, restore, snapshot
    from memedit.models.arch import arch_for

    pristine = snapshot(model, [arch_for(model).weight_name(rome_hp.layer)])
    cache = GateCache()
    plain_s, cached_s, same = [], [], True
    plain_cpu, cached_cpu = [], []  # CPU seconds of this process: on a shared machine wall time measures the neighbours
    try:
        for i, r in enumerate(recs):
            edit = Edit.fact(r["subject"], r["prompt"].replace(r["subject"], "{}", 1), r["target_new"],
                             target_true=r["ground_truth"])
            deltas = rome.apply(model, tok, edit, rome_hp, stats=stats).deltas
            got = {}
            for which in (("plain", "cached") if i % 2 == 0 else ("cached", "plain")):
                t, c = time.perf_counter(), time.process_time()
                got[which] = run_gates(model, tok, [edit], deltas, cache=cache if which == "cached" else None)
                (cached_s if which == "cached" else plain_s).append(time.perf_counter() - t)
                (cached_cpu if which == "cached" else plain_cpu).append(time.process_time() - c)
            same &= [g.to_dict() for g in got["plain"]] == [g.to_dict() for g in got["cached"]]
            apply_deltas(model, deltas)
    finally:
        restore(model, pristine)
    return {"commits": len(recs), "uncached_seconds_per_commit_median": round(statistics.median(plain_s), 2),
            "cached_seconds_per_commit_median": round(statistics.median(cached_s), 2),
            "uncached_cpu_seconds_per_commit_median": round(statistics.median(plain_cpu), 2),
            "cached_cpu_seconds_per_commit_median": round(statistics.median(cached_cpu), 2),
            "uncached_seconds": [round(x, 2) for x in plain_s], "cached_seconds": [round(x, 2) for x in cached_s],
            "uncached_cpu_seconds": [round(x, 2) for x in plain_cpu], "cached_cpu_seconds": [round(x, 2) for x in cached_cpu],
            "cache_hits": cache.hits, "cache_misses": cache.misses, "same_verdicts": same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--side", default="report", choices=("tune", "report", "all"),
                    help="side of the tune / report split (figures are reported, so report side by default)")
    ap.add_argument("--n", type=int, default=25)
    ap.add_argument("--offset", type=int, default=0, help="skip this many records first")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--methods", default="rome,memit,emmet")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--stats-tokens", type=int, default=100_000)
    ap.add_argument("--rome-hp", action="append", default=[], help="ROME hyperparameter override key=value")
    ap.add_argument("--batch-hp", action="append", default=[], help="MEMIT/EMMET hyperparameter override key=value")
    ap.add_argument("--no-generate", action="store_true", help="skip generation-based scores")
    ap.add_argument("--ledger", type=int, default=0, metavar="N",
                    help="also time N ROME commits through the ledger, one revert and a whole-ledger replay")
    ap.add_argument("--gates", type=int, default=0, metavar="N",
                    help="also time the default gates for N chained ROME commits, uncached and cached")
    ap.add_argument("--time-stats", action="store_true",
                    help="also time computing one layer's statistics from scratch (a throw-away cache)")
    ap.add_argument("--json", type=Path, default=None, help="write all results here")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from memedit.methods import emmet, memit, rome
    from memedit.methods.deltas import apply_deltas, restore, snapshot
    from memedit.methods.emmet import EmmetHParams
    from memedit.methods.memit import MemitHParams
    from memedit.methods.rome import RomeHParams
    from memedit.methods.stats import second_moments
    from memedit.eval.weights import load_counterfact, score_records as score, summarise
    from memedit.models.registry import load_causal_lm

    recs = load_counterfact(args.data, n=args.n, offset=args.offset, side=args.side)
    model, tok = load_causal_lm(args.model, device=args.device, reuse=False)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    rome_hp = RomeHParams.for_model(model, stats_tokens=args.stats_tokens, **parse_hp(args.rome_hp))
    batch_over = parse_hp(args.batch_hp)
    memit_hp = MemitHParams.for_model(model, stats_tokens=args.stats_tokens,
                                      **{k: v for k, v in batch_over.items() if k != "emmet_lambda"})
    emmet_hp = EmmetHParams.for_model(model, stats_tokens=args.stats_tokens, **batch_over)
    layers = sorted({rome_hp.layer, *memit_hp.layers})
    t = time.perf_counter()
    stats = second_moments(model, tok, layers, n_tokens=args.stats_tokens)
    stats_seconds = time.perf_counter() - t
    from memedit.methods.rome import contexts_for

    contexts_for(model, tok, rome_hp)  # sample (or load) the context prefixes once, outside the timings

    report: dict[str, Any] = {"model": args.model, "n": len(recs), "threads": torch.get_num_threads(),
                              "stats_seconds_load_or_compute": round(stats_seconds, 2), "stats_layers": layers,
                              "command": " ".join(sys.argv), "results": {}}
    if args.time_stats:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            second_moments(model, tok, [rome_hp.layer], n_tokens=args.stats_tokens, cache_dir=Path(tmp))
            report["stats_one_layer_fresh_seconds"] = round(time.perf_counter() - t, 2)
        print(f"statistics for layer {rome_hp.layer} over {args.stats_tokens} tokens, from scratch: "
              f"{report['stats_one_layer_fresh_seconds']:.1f} s", flush=True)
    if args.ledger:
        report["ledger"] = ledger_timings(model, tok, recs[:args.ledger], rome_hp, stats[rome_hp.layer])
        print(f"ledger: {report['ledger']}", flush=True)
    if args.gates:
        report["gates"] = gate_timings(model, tok, recs[:args.gates], rome_hp, stats[rome_hp.layer])
        print(f"gates: {report['gates']}", flush=True)
    base = score(model, tok, recs, generate=not args.no_generate)
    report["results"]["unedited"] = {"scores": summarise(base)}
    from memedit.models.arch import arch_for

    arch = arch_for(model)
    pristine = snapshot(model, [arch.weight_name(layer) for layer in layers])

    if "rome" in methods:
        rows, secs, cpus, steps, details = [], [], [], [], []
        for i, rec in enumerate(recs):
            res = rome.apply(model, tok, rec, rome_hp, stats=stats[rome_hp.layer])
            secs.append(res.stats["seconds"]["total"])
            cpus.append(res.stats["seconds"]["cpu_total"])
            steps.append(res.stats["steps"])
            apply_deltas(model, res.deltas)
            rows += score(model, tok, [rec], generate=not args.no_generate)
            restore(model, pristine)
            details.append({k: res.stats[k] for k in ("seconds", "steps", "delta_norm", "logprob_new_before",
                                                      "logprob_new_after") if k in res.stats})
            print(f"rome {i + 1}/{len(recs)} {rec['prompt']!r} -> {rec['target_new']!r}: {secs[-1]:.2f} s, "
                  f"{steps[-1]} steps, efficacy {rows[-1]['efficacy']}, paraphrase {rows[-1]['paraphrase']}, "
                  f"neighborhood {rows[-1]['neighborhood']}", flush=True)
        report["results"]["rome"] = {
            "scores": summarise(rows), "median_seconds_per_edit": round(statistics.median(secs), 3),
            "mean_seconds_per_edit": round(statistics.mean(secs), 3), "median_steps": statistics.median(steps),
            "median_cpu_seconds_per_edit": round(statistics.median(cpus), 3),
            "hparams": {k: v for k, v in rome_hp.__dict__.items()}, "per_edit": details,
            "per_record": rows,
        }
    for name, mod, hp in (("memit", memit, memit_hp), ("emmet", emmet, emmet_hp)):
        if name not in methods:
            continue
        res = mod.apply(model, tok, recs, hp, stats=stats)
        seconds = res.stats["seconds"]["total"]
        cpu = res.stats["seconds"]["cpu_total"]
        apply_deltas(model, res.deltas)
        rows = score(model, tok, recs, generate=not args.no_generate)
        restore(model, pristine)
        report["results"][name] = {
            "scores": summarise(rows), "batch_seconds": round(seconds, 2),
            "seconds_per_edit": round(seconds / len(recs), 3), "cpu_seconds_per_edit": round(cpu / len(recs), 3),
            "timings": res.stats["seconds"],
            "layers": res.stats["layers"], "median_steps": statistics.median(res.stats["steps"]),
            "hparams": {k: v for k, v in hp.__dict__.items()}, "per_record": rows,
        }
        print(f"{name}: batch of {len(recs)} in {seconds:.1f} s", flush=True)

    print()
    print(f"{'method':10s} {'s/edit':>8s} {'cpu s':>8s} {'steps':>6s} {'ES':>6s} {'PS':>6s} {'NS':>6s} {'genES':>6s} {'genPS':>6s}")
    for name, r in report["results"].items():
        s = r["scores"]
        per = r.get("median_seconds_per_edit", r.get("seconds_per_edit", float("nan")))
        cpu = r.get("median_cpu_seconds_per_edit", r.get("cpu_seconds_per_edit", float("nan")))
        print(f"{name:10s} {per:8.2f} {cpu:8.2f} {r.get('median_steps', float('nan')):6.1f} {s['efficacy']:6.1f} {s['paraphrase']:6.1f} {s['neighborhood']:6.1f} "
              f"{s.get('gen_efficacy', float('nan')):6.1f} {s.get('gen_paraphrase', float('nan')):6.1f}")
    print(f"(ROME: median wall / CPU seconds and optimisation steps per edit; MEMIT/EMMET: batch seconds / edits. threads={report['threads']}, "
          f"statistics load/compute {stats_seconds:.1f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
