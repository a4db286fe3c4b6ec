"""Multi-hop detection: precision and recall of the router's detector on our labelled questions, per side.

    python benchmarks/bench_multihop_detect.py                     # report side (the figures we quote)
    python benchmarks/bench_multihop_detect.py --side tune --errors  # what it gets wrong (tune side only!)
    python benchmarks/bench_multihop_detect.py --external          # + the benchmarks' own questions, report side

``benchmarks/data/multihop-questions.jsonl`` (written by
``benchmarks/data/multihop_questions.py``) holds single-hop and multi-hop
questions; a row's side is its subject's under the project's split
(:meth:`memedit.eval.splits.DataSplit.side_of_subject`). The packaged detector
(:mod:`memedit.methods.hop_detector`) was trained on the tune side only.
Each question is scored with its subject as the namespace's one stored
subject (what :meth:`memedit.methods.mello.MeLLo.claims` passes), for:

* ``detector``: the packaged hop detector (what ``MeLLo.claims`` uses);
* ``relations>=2``: the previous rule (the decomposer finds an entity and two
  or more catalogue relations), for comparison.

``--external`` adds report-side questions of the shared data, read here and
never used for training: MQuAKE's multi-hop questions (positives) and its
single-hop and rewrite questions (negatives), zsRE's edit prompts and
rephrasings (negatives) and its portability "Reasoning" questions (positives,
as labelled by the dataset), and CounterFact's prompts (cloze negatives).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memedit.eval.splits import default_data_dir, default_split, read_jsonl_records  # noqa: E402
from memedit.methods.hop_detector import HopDetector  # noqa: E402
from memedit.methods.hop_detector_train import read_rows, with_sides  # noqa: E402
from memedit.methods.multihop import default_decomposer  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "multihop-questions.jsonl"
log = logging.getLogger("bench_multihop_detect")


def old_rule(question: str, subject: str) -> bool:
    d = default_decomposer()
    return d.may_be_multi_hop(question, [subject]) and d.decompose(question, [subject]).is_multi_hop


def scores(rows: list[dict[str, Any]], predict: Callable[[str, str], bool]) -> dict[str, Any]:
    tp = fp = fn = tn = 0
    errors = []
    for r in rows:
        p, y = predict(r["question"], r["subject"]), r["label"] == "multi"
        tp += p and y
        fp += p and not y
        fn += y and not p
        tn += not p and not y
        if p != y:
            errors.append(f"{r['label']:6} {r['question']}")
    return {"n": len(rows), "multi": tp + fn, "precision": round(tp / max(1, tp + fp), 4),
            "recall": round(tp / max(1, tp + fn), 4), "tp": tp, "fp": fp, "fn": fn, "tn": tn, "errors": errors}


def external_rows(side: str) -> list[dict[str, Any]]:
    """Report-side (or tune-side) questions from the shared benchmark files, labelled by their own structure."""
    root = default_data_dir()
    split = default_split()
    rows: list[dict[str, Any]] = []
    mq = root / "mquake" / "mquake-cf-dev.jsonl"
    if mq.is_file():
        recs = read_jsonl_records(mq)
        for rec, s in zip(recs, split.mquake_sides(recs)):
            if s != side:
                continue
            head = rec["orig"]["triples_labeled"][0][0]
            rows += [dict(question=q, label="multi", subject=head, source="mquake-multi") for q in rec["questions"]]
            for h, t in zip(rec["single_hops"], rec["orig"]["triples_labeled"]):
                rows.append(dict(question=h["question"], label="single", subject=t[0], source="mquake-single"))
            rows += [dict(question=rw["question"], label="single", subject=rw["subject"], source="mquake-rewrite")
                     for rw in rec["requested_rewrite"]]
    zs = root / "zsre" / "zsre-dev.jsonl"
    if zs.is_file():
        for rec in read_jsonl_records(zs):
            if split.side_of_subject(rec["subject"]) != side:
                continue
            for key in ("prompt", "rephrase_prompt"):
                rows.append(dict(question=rec[key], label="single", subject=rec["subject"], source=f"zsre-{key}"))
            for p in (rec.get("portability") or {}).get("Reasoning", []):
                rows.append(dict(question=p["prompt"], label="multi", subject=rec["subject"], source="zsre-reasoning"))
    cf = root / "counterfact" / "counterfact-dev.jsonl"
    if cf.is_file():
        for rec in read_jsonl_records(cf)[:600]:
            if split.side_of_subject(rec["subject"]) == side:
                rows.append(dict(question=rec["prompt"], label="single", subject=rec["subject"],
                                 source="counterfact-prompt"))
                if rec.get("rephrase_prompt"):  # labelled a paraphrase by the data, though some add a hop
                    rows.append(dict(question=rec["rephrase_prompt"], label="single", subject=rec["subject"],
                                     source="counterfact-rephrase"))
    return rows


def by_source(rows: Iterable[dict[str, Any]], predict: Callable[[str, str], bool]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["source"], []).append(r)
    for src, rs in sorted(groups.items()):
        s = scores(rs, predict)
        claimed = s["tp"] + s["fp"]
        out[src] = {"n": s["n"], "label": rs[0]["label"], "claimed_multi": round(claimed / s["n"], 4)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--side", default="report", choices=("tune", "report"))
    ap.add_argument("--detector", type=Path, default=None, help="artifact path (default: the packaged one)")
    ap.add_argument("--errors", action="store_true", help="list the misclassified questions")
    ap.add_argument("--external", action="store_true", help="also the shared benchmarks' own questions")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)
    det = HopDetector.load(args.detector)
    rows = [r for r in with_sides(read_rows(args.data)) if r["side"] == args.side]
    methods: dict[str, Callable[[str, str], bool]] = {
        "detector": lambda q, s: det.is_multi_hop(q, [s]), "relations>=2": old_rule,
        "both": lambda q, s: det.is_multi_hop(q, [s]) and old_rule(q, s)}
    report: dict[str, Any] = {"side": args.side, "data": str(args.data), "split": default_split().sha256,
                              "detector": det.meta.get("training"), "methods": {}}
    for name, fn in methods.items():
        s = scores(rows, fn)
        hand = scores([r for r in rows if r.get("source") == "hand"], fn)
        report["methods"][name] = {**{k: v for k, v in s.items() if k != "errors"},
                                   "hand_written": {k: hand[k] for k in ("n", "precision", "recall")}}
        print(f"{name:13} {args.side}: n={s['n']} (multi {s['multi']}) precision {s['precision']:.3f} "
              f"recall {s['recall']:.3f}  | hand-written n={hand['n']}: P {hand['precision']:.3f} "
              f"R {hand['recall']:.3f}")
        if args.errors:
            print("\n".join("   " + e for e in s["errors"]))
        if args.external:
            ext = by_source(external_rows(args.side), fn)
            report["methods"][name]["external"] = ext
            for src, v in ext.items():
                print(f"   {src:28} n={v['n']:4} ({v['label']}) claimed multi-hop: {v['claimed_multi']:.1%}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
