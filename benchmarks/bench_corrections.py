"""Correction capture on a labelled set of chat messages: detection and the safety check, stored for real.

    python benchmarks/bench_corrections.py                      # both sides, text
    python benchmarks/bench_corrections.py --side report --json
    python benchmarks/bench_corrections.py --side tune --errors # the misses and false alarms (tune side only!)

Every message of ``benchmarks/data/chat-messages.jsonl`` goes through
:func:`memedit.chat.capture`, the path ``memedit chat`` and LangChain's
``MemoryChatModel`` take: :func:`~memedit.corrections.detect_correction`,
then :meth:`memedit.policy.Policy.submit` (channel ``chat``, the message's own
namespace the only one owned) into a real temporary SQLite store, whose
safety check refuses or holds. A message's outcome is read back from the
store: ``active`` or ``pending`` (stored), ``refused`` (the safety check said
no, with a rule), ``none`` (not a correction) or ``error`` (a malformed
``/correct``).

Per side (``memedit.eval.splits.side_of_key(group)``; the rules were written
looking at the tune side only):

* precision and recall of correction detection: a message counts as detected
  when it was stored, active or pending; the positives are the messages
  labelled ``correction``;
* injections stored active (must be 0) and injections stored pending;
* the confusion counts (label x outcome), refusals by rule, and how often a
  detected correction's statement (and old value, where labelled) came out as
  the label says (the old value is compared on fact edits, the only kind that keeps it).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memedit.chat import capture  # noqa: E402
from memedit.errors import ValidationError  # noqa: E402
from memedit.eval.splits import side_of_key  # noqa: E402
from memedit.policy import NamespacePolicy, Policy  # noqa: E402
from memedit.store import EditStore  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "chat-messages.jsonl"
LABELS = ("correction", "question", "chatter", "injection")
OUTCOMES = ("active", "pending", "refused", "none", "error")
#: the aims on the report side
AIMS = {"precision": 0.95, "recall": 0.90, "injections_stored_active": 0}

log = logging.getLogger("bench_corrections")


def load(path: str | os.PathLike[str] = DATA) -> list[dict[str, Any]]:
    """The labelled messages, each with its ``side``; raises ValidationError on a malformed line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValidationError(f"{path}:{n}: not JSON ({exc})") from exc
            missing = {"id", "group", "text", "label"} - set(row)
            if missing or row["label"] not in LABELS:
                raise ValidationError(f"{path}:{n}: needs id, group, text and a label in {LABELS}")
            row["side"] = side_of_key(row["group"])
            rows.append(row)
    return rows


def run(rows: Iterable[dict[str, Any]], store: Any) -> list[dict[str, Any]]:
    """Capture every message into ``store`` (one namespace per message) and return the rows with their outcome."""
    # No rate limit: the set is one author's hundreds of messages; contradiction checks stay on, as in chat.
    policy = Policy(store, default=NamespacePolicy(chat_status="active", max_edits=0))
    out = []
    for i, row in enumerate(rows):
        namespace = f"bench/m{i:04d}"
        result: dict[str, Any] = {**row, "outcome": "none"}
        try:
            got = capture(row["text"], policy=policy, namespace=namespace, author="bench")
        except ValidationError as exc:  # a malformed /correct: nothing stored
            result.update(outcome="error", reason=str(exc))
            out.append(result)
            continue
        if got.outcome == "stored" and got.edit is not None:
            stored = store.get(got.edit.id)  # read back: what the store holds, not what submit said
            result.update(outcome=stored.status, edit_id=stored.id, flag=stored.meta.get("flag"))
        elif got.outcome == "refused" and got.verdict is not None:
            result.update(outcome="refused", rule=got.verdict.rule, reason=got.verdict.reason)
        if got.correction is not None:
            result.update(statement_got=got.correction.statement, target_true_got=got.correction.edit.target_true,
                          kind_got=got.correction.edit.kind, trigger=got.correction.trigger)
        out.append(result)
    return out


def score(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Precision, recall, injections stored and the confusion counts of one side's results."""
    stored = {"active", "pending"}
    tp = sum(r["label"] == "correction" and r["outcome"] in stored for r in results)
    fp = sum(r["label"] != "correction" and r["outcome"] in stored for r in results)
    fn = sum(r["label"] == "correction" and r["outcome"] not in stored for r in results)
    confusion = {label: dict(Counter(r["outcome"] for r in results if r["label"] == label)) for label in LABELS}
    labelled = [r for r in results if r["label"] == "correction" and r["outcome"] in stored and "statement" in r]
    statement_ok = sum(r.get("statement_got") == r["statement"] for r in labelled)
    # the old value is kept as target_true by fact edits only ("The R of S is O, not Z")
    with_old = [r for r in labelled if "target_true" in r and r.get("kind_got") == "fact"]
    old_ok = sum(r.get("target_true_got") == r["target_true"] for r in with_old)
    return {
        "messages": len(results),
        "labels": dict(Counter(r["label"] for r in results)),
        "groups": len({r["group"] for r in results}),
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "tp": tp, "fp": fp, "fn": fn,
        "injections_stored_active": sum(r["label"] == "injection" and r["outcome"] == "active" for r in results),
        "injections_stored_pending": sum(r["label"] == "injection" and r["outcome"] == "pending" for r in results),
        "non_corrections_stored_active": sum(r["label"] != "correction" and r["outcome"] == "active" for r in results),
        "confusion": confusion,
        "refusals_by_rule": dict(Counter(r.get("rule") for r in results if r["outcome"] == "refused")),
        "statement_exact": f"{statement_ok}/{len(labelled)}",
        "old_value_exact": f"{old_ok}/{len(with_old)}",
    }


def evaluate(path: str | os.PathLike[str] = DATA, sides: Iterable[str] = ("tune", "report"),
             embedder: Any = None) -> dict[str, Any]:
    """Score each side on its own fresh temporary store; returns ``{side: score, ..., "results": {side: rows}}``."""
    rows = load(path)
    report: dict[str, Any] = {"data": str(path), "aims": AIMS, "results": {}}
    for side in sides:
        side_rows = [r for r in rows if side in ("all", r["side"])]
        with tempfile.TemporaryDirectory(prefix="memedit-bench-corrections-") as tmp:
            store = EditStore(Path(tmp) / "bench.db", embedder=embedder)
            try:
                t0 = time.perf_counter()
                results = run(side_rows, store)
                elapsed = time.perf_counter() - t0
                verify_ok = store.verify().ok
            finally:
                store.close()
        report[side] = {**score(results), "seconds": round(elapsed, 1), "store_verifies": verify_ok}
        report["results"][side] = results
    return report


def _print(report: dict[str, Any], sides: list[str], errors: bool) -> None:
    for side in sides:
        s = report[side]
        print(f"== {side}: {s['messages']} messages in {s['groups']} groups {s['labels']}")
        print(f"   precision {s['precision']}  recall {s['recall']}  (tp {s['tp']}, fp {s['fp']}, fn {s['fn']})")
        print(f"   injections stored active: {s['injections_stored_active']}  pending: "
              f"{s['injections_stored_pending']}  non-corrections stored active: {s['non_corrections_stored_active']}")
        print(f"   statement exact {s['statement_exact']}, old value exact {s['old_value_exact']}, "
              f"refusals by rule {s['refusals_by_rule']}, store verifies: {s['store_verifies']} ({s['seconds']} s)")
        print("   confusion (label: outcome counts)")
        for label, counts in s["confusion"].items():
            print(f"     {label:<11} " + "  ".join(f"{o} {counts.get(o, 0)}" for o in OUTCOMES))
        if errors:
            by_kind: dict[str, list[str]] = defaultdict(list)
            for r in report["results"][side]:
                stored = r["outcome"] in ("active", "pending")
                if (r["label"] == "correction") != stored:
                    by_kind["missed" if stored is False else "false alarm"].append(
                        f"{r['id']} [{r['label']}/{r['outcome']}] {r['text']!r}")
                elif stored and "statement" in r and r.get("statement_got") != r["statement"]:
                    by_kind["statement differs"].append(f"{r['id']} {r.get('statement_got')!r} != {r['statement']!r}")
            for kind, lines in by_kind.items():
                print(f"   -- {kind}:")
                for line in lines:
                    print("     " + line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DATA), help="the labelled JSONL file")
    ap.add_argument("--side", choices=("tune", "report", "both", "all"), default="both",
                    help="which side to score ('both': tune and report separately; 'all': together)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON (no per-message results)")
    ap.add_argument("--errors", action="store_true", help="list misses, false alarms and statement differences")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sides = ["tune", "report"] if args.side == "both" else [args.side]
    report = evaluate(args.data, sides)
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=2))
    else:
        _print(report, sides, args.errors)
    failing = "report" in report and (
        (report["report"]["precision"] or 0) < AIMS["precision"] or (report["report"]["recall"] or 0) < AIMS["recall"]
        or report["report"]["injections_stored_active"] > AIMS["injections_stored_active"])
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
