"""How separable a batch's keys are at each MLP layer: why a MEMIT/EMMET batch stops fitting as it grows.

    python benchmarks/key_separability.py --n 1000 --layers 1,2,3,4,5,6,7,8,10,12 --threads 2
    python benchmarks/key_separability.py --model gemma3-270m --n 100 --layers 2,3,4,5 --json sep.json

MEMIT's update at a layer is ``R K^T (lambda C + K K^T)^-1``; in the metric
the statistics define (``C^-1``), it writes each direction of the keys'
Gram matrix ``D = K^T C^-1 K`` with weight ``eig / (lambda + eig)``. Keys
that are nearly parallel in that metric (subjects sharing a last token,
repeated subjects) give ``D`` small eigenvalues, and those directions are
shrunk towards nothing: edits that live there do not take, whatever the
solver. For each layer this prints the mean diagonal of ``D`` (the typical
``k^T C^-1 k``), how many eigenvalues fall below 10% and 1% of it, and how
many edit pairs have a whitened cosine above 0.9. No weights change.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "counterfact" / "counterfact-dev.jsonl"


def separability(model, tok, recs, layers, stats_tokens: int) -> list[dict]:
    import torch

    from memedit.methods.memit import MemitHParams, _keys
    from memedit.methods.rome import contexts_for
    from memedit.methods.rome.prompts import as_request
    from memedit.methods.stats import second_moments

    reqs = [as_request(r) for r in recs]
    contexts = contexts_for(model, tok, MemitHParams.for_model(model))
    stats = second_moments(model, tok, layers, n_tokens=stats_tokens)
    rows = []
    for layer in layers:
        K, _ = _keys(model, tok, reqs, layer, contexts, layer, 128)
        K = K.double()
        D = K @ stats[layer].solve(K.T)
        ev = torch.linalg.eigvalsh((D + D.T) / 2)
        diag = D.diagonal()
        cos = D / torch.sqrt(diag[:, None] * diag[None, :]) - torch.eye(len(D), dtype=D.dtype)
        md = float(diag.mean())
        rows.append({"layer": layer, "mean_diag": round(md, 1), "eig_below_10pct": int((ev < 0.1 * md).sum()),
                     "eig_below_1pct": int((ev < 0.01 * md).sum()), "pairs_cos_above_0.9": int((cos > 0.9).sum()) // 2,
                     "max_cos": round(float(cos.max()), 4)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--side", default="report", choices=("tune", "report", "all"),
                    help="side of the tune / report split (a diagnosis of reported figures, so report side by default)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--layers", default="1,2,3,4,5,6,7,8")
    ap.add_argument("--stats-tokens", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from memedit.eval.weights import load_counterfact
    from memedit.models.registry import load_causal_lm

    if args.threads:
        torch.set_num_threads(args.threads)
    recs = load_counterfact(args.data, n=args.n, side=args.side)
    model, tok = load_causal_lm(args.model)
    layers = [int(x) for x in args.layers.split(",") if x.strip()]
    rows = separability(model, tok, recs, layers, args.stats_tokens)
    print(f"{len(recs)} edits, {args.model}")
    print(f"{'layer':>5} {'mean diag':>10} {'eig<10%':>8} {'eig<1%':>7} {'cos>0.9':>8} {'max cos':>8}")
    for r in rows:
        print(f"{r['layer']:>5} {r['mean_diag']:>10.0f} {r['eig_below_10pct']:>8} {r['eig_below_1pct']:>7} "
              f"{r['pairs_cos_above_0.9']:>8} {r['max_cos']:>8.3f}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "n": len(recs), "layers": rows}, indent=1))


if __name__ == "__main__":
    main()
