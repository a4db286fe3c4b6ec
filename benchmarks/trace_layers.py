"""Causal tracing over several CounterFact facts, to choose a model family's ROME/MEMIT layers.

    python benchmarks/trace_layers.py --model gemma3-270m --facts 10 --threads 1 --json trace.json

Takes the first ``--facts`` records of the CounterFact dev file whose
ground-truth object the model produces greedily (a fact it knows), traces each
one (:func:`memedit.methods.trace.causal_trace`: corrupt the subject's
embeddings, restore one state at the subject's last token) for the MLP
outputs (a window of ``--window`` layers restored together) and the residual
stream, and prints the mean indirect effect per layer, each fact normalised by
its clean-minus-corrupted probability (:func:`average_layer_effects`), over
the facts whose corruption removes at least ``--min-drop`` of the answer's
probability (where it does not, the normalised effects are noise). The
per-architecture table in ``memedit/models/arch.py`` records what this found.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "counterfact" / "counterfact-dev.jsonl"
log = logging.getLogger("trace_layers")


def known_facts(model: Any, tok: Any, recs: list[dict[str, Any]], want: int) -> list[dict[str, Any]]:
    """The first ``want`` records whose greedy continuation starts with the ground truth, where the subject
    does not contain the answer ("Toyota Cresta" -> "Toyota" is read off the subject, not recalled)."""
    from memedit.methods.rome.measure import greedy_continuations

    out: list[dict[str, Any]] = []
    for start in range(0, len(recs), 16):
        chunk = recs[start:start + 16]
        gens = greedy_continuations(model, tok, [r["prompt"] for r in chunk], max_new_tokens=4)
        for r, g in zip(chunk, gens):
            truth = r["ground_truth"].strip().lower()
            if g.strip().lower().startswith(truth) and truth not in r["subject"].lower():
                out.append(r)
                if len(out) >= want:
                    return out
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--side", default="tune", choices=("tune", "report", "all"),
                    help="side of the tune / report split (layers are chosen from this, so tune side by default)")
    ap.add_argument("--facts", type=int, default=10)
    ap.add_argument("--scan", type=int, default=400, help="records scanned for known facts")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--window", type=int, default=6)
    ap.add_argument("--kinds", default="mlp,hidden")
    ap.add_argument("--min-drop", type=float, default=0.1,
                    help="average only facts whose corruption lowers p(answer) by at least this much")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", dest="json_out", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch
    from tqdm.auto import tqdm

    from memedit.eval.weights import load_counterfact
    from memedit.methods.trace import average_layer_effects, causal_trace
    from memedit.models.registry import load_causal_lm

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_causal_lm(args.model)
    facts = known_facts(model, tok, load_counterfact(args.data, n=args.scan, side=args.side), args.facts)
    log.info("%d known facts among the first %d records: %s", len(facts), args.scan,
             ", ".join(f"{r.get('case_id')} {r['subject']}/{r['ground_truth']}" for r in facts))
    report: dict[str, Any] = {"model": args.model, "facts": [
        {"case_id": r.get("case_id"), "subject": r["subject"], "prompt": r["prompt"], "answer": r["ground_truth"]}
        for r in facts], "samples": args.samples, "window": args.window, "kinds": {}}
    for kind in [k for k in args.kinds.split(",") if k]:
        t0 = time.perf_counter()
        results = [causal_trace(model, tok, r["prompt"], r["subject"], answer=r["ground_truth"], kind=kind,
                                samples=args.samples, window=args.window, tokens="subject_last")
                   for r in tqdm(facts, desc=f"tracing {kind}")]
        kept = [r for r in results if r.high - r.low >= args.min_drop]
        if not kept:
            log.warning("%s: no fact loses %.2f of its probability under corruption; raise --noise", kind,
                        args.min_drop)
            continue
        mean = average_layer_effects(kept)
        best = int(max(range(len(mean)), key=mean.__getitem__))
        report["kinds"][kind] = {"mean_normalised_effect": [round(x, 4) for x in mean], "best_layer": best,
                                 "facts_kept": len(kept),
                                 "per_fact": [{"subject": r.subject, "high": round(r.high, 4), "low": round(r.low, 4),
                                               "best_layer": r.best_layer()} for r in results],
                                 "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{kind:6s} ({len(kept)}/{len(results)} facts) best layer {best}: "
              + " ".join(f"{x:.2f}" for x in mean))
        for r in results:
            print(f"    {r.subject[:30]:30s} p clean {r.high:.3f} corrupted {r.low:.3f} best layer {r.best_layer()}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
