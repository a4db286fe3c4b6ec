"""Usage-driven commits judged by the chat answers users get (issue 19): memory route vs after the commits.

    python benchmarks/bench_chat_commits.py --n 12 --threads 1 --json out/chat-commits.json
    python benchmarks/bench_chat_commits.py --n 12 --side tune --rome-hp n_prefixes=3     # tuning: tune side only

What a chatbot user would do, on CounterFact records of one side of the
project's split (report by default; ``../shared/data`` is read in place):

1. each record becomes a fact edit in a fresh store, and its chat questions
   (:func:`memedit.chat_check.edit_questions`: the direct question and up to
   three paraphrase questions) are asked once through :meth:`Editor.ask`,
   answered by the memory route (the policy's, ``auto`` by default) - these
   uses are what ``commit --min-uses 1`` then picks;
2. ``Editor.commit(min_uses=1, method=...)``: every edit, gated (cloze and
   chat gates); ROME writes one commit per edit, in sequence;
3. the same questions are asked again: a committed edit goes to the weights
   route, which falls back to the memory when its answer misses the edit.

Reported: the share of direct / paraphrase answers containing the new target
(strict scorer) before the commits (memory), after them (what users get), and
of the committed model's own answers on the weights route; commits landed and
refused (by gate); fallbacks; unrelated probe answers (the gates' probe set,
asked of the bare model) still right; subject names still written ("Tell me
about X.", asked of the bare model).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "counterfact" / "counterfact-dev.jsonl"
log = logging.getLogger("bench_chat_commits")


def _pct(oks: list[bool]) -> float | None:
    return round(100.0 * sum(oks) / len(oks), 1) if oks else None


def _ask_all(ed: Any, questions: list[tuple[Any, str, str]]) -> list[dict[str, Any]]:
    """Ask each (edit, kind, question) through the Editor; the answer, its route and whether it gives the edit."""
    from memedit.chat_check import answer_gives

    out = []
    for edit, kind, q in questions:
        a = ed.ask(q)
        check = next((s for s in a.trace if s.get("step") == "weights-check"), None)
        out.append({"edit": edit.id, "kind": kind, "question": q, "answer": a.text, "route": a.route,
                    "ok": answer_gives(a.text, q, edit), "weights_answer": check["weights_answer"] if check else None,
                    "weights_ok": check["ok"] if check else None})
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from memedit import Edit, EditStore, Editor
    from memedit.chat_check import edit_questions, name_kept
    from memedit.chat_gates import chat_probes
    from memedit.eval.scoring import answer_matches
    from memedit.eval.splits import default_split
    from memedit.eval.weights import load_counterfact
    from memedit.eval.weights_cli import parse_overrides

    torch.set_num_threads(args.threads)
    recs = load_counterfact(args.data, n=args.n, offset=args.offset, side=args.side)
    tmp = Path(tempfile.mkdtemp(prefix="bench-chat-commits-"))
    store = EditStore(tmp / "s.db")
    ed = Editor(model=args.model, store=store, policy=args.policy)
    edits = []
    for r in recs:
        tmpl = r["prompt"].replace(r["subject"], "{}", 1)
        edits.append(store.add(Edit.fact(r["subject"], tmpl, r["target_new"], target_true=r["ground_truth"])))
    questions = []
    for e in edits:
        q = edit_questions(e)
        questions += [(e, "direct", q.direct)] + [(e, "paraphrase", p) for p in q.paraphrases]
    lm = ed.base.get()
    probes = chat_probes()
    names = [f"Tell me about {e.subject}." for e in edits]

    def bare(prompts: list[str], n: int) -> list[str]:
        return [lm.chat([{"role": "user", "content": p}], n) for p in prompts]

    t0 = time.perf_counter()
    probes_before, names_before = bare([p["question"] for p in probes], 24), bare(names, 48)
    memory = _ask_all(ed, questions)
    t_memory = time.perf_counter() - t0
    t0 = time.perf_counter()
    hparams = None
    if args.rome_hp and args.method == "rome":
        from memedit.methods.rome import RomeHParams

        hparams = RomeHParams.for_model(lm.model, preset="sequential", **parse_overrides(args.rome_hp))
    report = ed.commit(min_uses=1, method=args.method, hparams=hparams)
    t_commit = time.perf_counter() - t0
    after = _ask_all(ed, questions)
    probes_after, names_after = bare([p["question"] for p in probes], 24), bare(names, 48)
    right = [(b, a, p) for b, a, p in zip(probes_before, probes_after, probes)
             if answer_matches(b, p["answers"][:1], p["answers"][1:])]
    committed = set(report.committed_edits)
    refused = Counter(g for r in report.refused for g in r["failed"])

    def share(rows: list[dict[str, Any]], kind: str, key: str = "ok", only: set[int] | None = None) -> float | None:
        return _pct([bool(r[key]) for r in rows if r["kind"] == kind and (only is None or r["edit"] in only)])

    on_weights = [r for r in after if r["weights_ok"] is not None]
    out = {
        "n": len(edits), "side": args.side, "split_sha256": default_split().sha256, "model": args.model,
        "method": args.method, "policy": args.policy, "threads": args.threads,
        "committed": len(committed), "refused": len(edits) - len(committed), "refused_by_gate": dict(refused),
        "memory": {"direct": share(memory, "direct"), "paraphrase": share(memory, "paraphrase"),
                   "routes": dict(Counter(r["route"] for r in memory))},
        "after": {"direct": share(after, "direct"), "paraphrase": share(after, "paraphrase"),
                  "routes": dict(Counter(r["route"] for r in after))},
        "memory_on_committed": {"direct": share(memory, "direct", only=committed),
                                "paraphrase": share(memory, "paraphrase", only=committed)},
        "after_on_committed": {"direct": share(after, "direct", only=committed),
                               "paraphrase": share(after, "paraphrase", only=committed)},
        "weights_answers": {"asked": len(on_weights), "direct": share(on_weights, "direct", "weights_ok"),
                            "paraphrase": share(on_weights, "paraphrase", "weights_ok"),
                            "fallbacks": sum(not r["weights_ok"] for r in on_weights)},
        "unrelated_kept": _pct([answer_matches(a, p["answers"][:1], p["answers"][1:]) for _, a, p in right]),
        "unrelated_counted": len(right),
        "names_kept": _pct([name_kept(b, a, e.subject or "") for b, a, e in zip(names_before, names_after, edits)]),
        "seconds": {"memory_asks": round(t_memory, 1), "commits": round(t_commit, 1)},
        "commit_report": report.to_dict(), "memory_answers": memory, "after_answers": after,
        "command": "python benchmarks/bench_chat_commits.py " + " ".join(sys.argv[1:]),
    }
    ed.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--side", default="report", choices=["report", "tune", "all"])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--method", default="rome", choices=["rome", "memit", "emmet"])
    p.add_argument("--policy", default="auto")
    p.add_argument("--rome-hp", action="append", help="ROME hyperparameter override key=value (JSON value).")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = run(args)
    slim = {k: v for k, v in out.items() if k not in ("commit_report", "memory_answers", "after_answers")}
    print(json.dumps(slim, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
