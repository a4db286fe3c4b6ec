"""Answer quality and latency by route on a few dozen CounterFact / zsRE edits (generation-based).

    python benchmarks/bench_answer_routes.py --data ../shared/data --n 20 --policies ike serac [--json out.json]

The first ``--n`` usable records of ``counterfact/counterfact-dev.jsonl`` and
of ``zsre/zsre-dev.jsonl`` (after ``--skip``) become fact edits in one
namespace each, so every edit is a distractor for the others' questions. For
each edit three probes go through :class:`memedit.route.Router`:

* reliability: the edit's own prompt; success = the answer contains ``target_new``;
* generalization: its paraphrase (``rephrase_prompt``); same success test;
* locality: an unrelated prompt (CounterFact ``locality_prompt``, zsRE's first
  Relation_Specificity prompt); success = the answer is *exactly* the bare
  model's answer to the same prompt (sent as a one-message chat).

Reported per dataset and policy: success rates, and how the router routed
each probe kind (in scope vs base); plus, for reliability, the probability
test ``log p(target_new) > log p(target_true)`` as the chat reply on the very
messages the answer used. Latency: the base route against a bare
``LocalLM.chat`` call on the same questions, interleaved.

This is a development check on development splits; it is small on purpose
(2 shared CPU cores): do not run it on whole files.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memedit import Edit, EditStore  # noqa: E402
from memedit.errors import ValidationError  # noqa: E402
from memedit.models.backends import LocalLM  # noqa: E402
from memedit.route import Router  # noqa: E402

log = logging.getLogger("bench_answer_routes")


def load_cases(data: Path, dataset: str, n: int, skip: int) -> list[dict[str, Any]]:
    """Records turned into ``{edit, rel, gen, loc, target, true}``; records whose subject is not in the prompt are skipped."""
    path = data / ("counterfact/counterfact-dev.jsonl" if dataset == "counterfact" else "zsre/zsre-dev.jsonl")
    cases = []
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i < skip:
                continue
            r = json.loads(line)
            subject, prompt = r["subject"], r["prompt"]
            if prompt.count(subject) != 1 or "{" in prompt or "}" in prompt:
                continue
            true = r["ground_truth"][0] if isinstance(r["ground_truth"], list) else r["ground_truth"]
            if dataset == "counterfact":
                loc, loc_truth = r["locality_prompt"], r["locality_ground_truth"]
            else:
                spec = r["locality"]["Relation_Specificity"][0]
                loc, loc_truth = spec["prompt"], spec["ground_truth"][0]
            try:
                edit = Edit.fact(subject, prompt.replace(subject, "{}"), r["target_new"], target_true=true,
                                 source=f"{dataset}-dev line {i}")
            except ValidationError:
                continue
            cases.append({"edit": edit, "rel": prompt, "gen": r["rephrase_prompt"], "loc": loc,
                          "loc_truth": loc_truth, "target": r["target_new"], "true": true})
            if len(cases) == n:
                break
    return cases


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    lm = LocalLM.from_name(args.model, max_new_tokens=args.max_new_tokens)
    from memedit.scope import ScopeClassifier

    clf = ScopeClassifier.load(args.scope)
    results: dict[str, Any] = {"model": args.model, "n": args.n, "skip": args.skip, "k": args.k,
                               "max_new_tokens": args.max_new_tokens, "scope_threshold": clf.threshold, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        store = EditStore(Path(tmp) / "bench.db")
        bare_cache: dict[str, str] = {}

        def bare(q: str) -> str:
            if q not in bare_cache:
                bare_cache[q] = lm.chat([{"role": "user", "content": q}])
            return bare_cache[q]

        for dataset in args.datasets:
            cases = load_cases(Path(args.data), dataset, args.n, args.skip)
            ns = store.create_namespace(f"bench-{dataset}")
            stored = store.add_many([Edit.fact(c["edit"].subject, c["edit"].prompt, c["edit"].target_new,
                                               target_true=c["edit"].target_true, namespace=ns,
                                               source=c["edit"].source) for c in cases])
            for policy in args.policies:
                router = Router(store, lm, counterfactual=lm, classifier=clf, policy=policy, k=args.k)
                rows = []
                for case, edit in zip(cases, stored):
                    row: dict[str, Any] = {"edit_id": edit.id}
                    for kind in ("rel", "gen", "loc"):
                        q = case[kind]
                        p = router.prepare(q, ns)
                        a = router.run(p)
                        own = [u.edit.id for u in a.used]
                        if kind == "loc":
                            ok = a.text == bare(q) if a.route != "base" else True
                        else:
                            ok = case["target"].lower() in a.text.lower()
                        row[kind] = {"q": q, "route": a.route, "own_edit_used": edit.id in own, "ok": ok,
                                     "text": a.text, "ms": a.timings_ms}
                        if kind == "rel" and p.route != "base" and p.backend.supports_logprobs:
                            new, old = p.backend.continuation_logprobs([p.messages, p.messages],
                                                                       [case["target"], case["true"]])
                            row[kind]["p_new_gt_old"] = new > old
                    rows.append(row)
                    log.info("%s %s #%s rel=%s gen=%s loc=%s", dataset, policy, edit.id, row["rel"]["ok"],
                             row["gen"]["ok"], row["loc"]["ok"])
                results["runs"][f"{dataset}/{policy}"] = {"summary": summarize(rows), "rows": rows}

        # Latency: the base route vs a bare chat call on the same out-of-scope questions, interleaved.
        router = Router(store, lm, classifier=clf, policy="ike", k=args.k)
        questions = ["What is the capital of France?", "Who wrote Hamlet?", "What is the boiling point of water?",
                     "Name a primary colour.", "How many legs does a spider have?", "What is the largest planet?"]
        routed, direct = [], []
        for q in questions * args.latency_rounds:
            t0 = time.perf_counter()
            a = router.answer(q, f"bench-{args.datasets[0]}")
            routed.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            text = lm.chat([{"role": "user", "content": q}])
            direct.append((time.perf_counter() - t0) * 1000)
            if a.route == "base" and a.text != text:
                log.warning("base route differs from the bare model on %r", q)
        results["latency_ms"] = {
            "base_route_median": statistics.median(routed), "bare_chat_median": statistics.median(direct),
            "overhead_median": statistics.median(r - d for r, d in zip(routed, direct)),
        }
        store.close()
    return results


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("rel", "gen", "loc"):
        probes = [r[kind] for r in rows]
        in_scope = [p for p in probes if p["route"] != "base"]
        out[kind] = {
            "success": round(sum(p["ok"] for p in probes) / len(probes), 3),
            "routed_in_scope": round(len(in_scope) / len(probes), 3),
            "success_when_in_scope": round(sum(p["ok"] for p in in_scope) / len(in_scope), 3) if in_scope else None,
            "own_edit_used": round(sum(p["own_edit_used"] for p in probes) / len(probes), 3),
        }
    pn = [r["rel"]["p_new_gt_old"] for r in rows if "p_new_gt_old" in r["rel"]]
    if pn:
        out["rel"]["p_new_gt_old_when_in_scope"] = round(sum(pn) / len(pn), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--datasets", nargs="+", default=["counterfact", "zsre"], choices=["counterfact", "zsre"])
    ap.add_argument("--policies", nargs="+", default=["ike", "serac"], choices=["ike", "serac"])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--skip", type=int, default=0, help="records to skip first (to look at another sample)")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--scope", help="scope classifier artifact (default: the packaged one)")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--latency-rounds", type=int, default=2)
    ap.add_argument("--json", help="write all rows and summaries here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("faiss", "sentence_transformers", "httpx", "memedit.models.registry"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    res = run(args)
    for name, r in res["runs"].items():
        print(name, json.dumps(r["summary"]))
    print("latency_ms", json.dumps(res["latency_ms"]))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
