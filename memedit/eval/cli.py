"""``memedit eval``: evaluate editing quality on CounterFact / zsRE-format files.

    memedit eval run --data ../shared/data/zsre/zsre-dev.jsonl --format zsre --limit 100 --seed 0 \\
        --policy ike --json /tmp/eval/zsre.json --plot /tmp/eval/zsre.png
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(help="Evaluate memedit on knowledge-editing benchmarks.", no_args_is_help=True)



@app.callback()
def _group() -> None:
    """Evaluate memedit on knowledge-editing benchmarks."""


METRICS = ("reliability", "generalization", "locality", "portability")


def _fmt(x: Any) -> str:
    return "-" if x is None else (f"{x:.1%}" if isinstance(x, float) else str(x))


def render_table(report_dict: dict[str, Any], title: str) -> Any:
    from rich.table import Table

    t = Table(title=title)
    for col in ("group", "probes", "rel prob", "rel gen", "gen prob", "gen gen", "loc prob", "loc unchanged",
                "loc has-gt", "port prob", "port gen", "scope P", "scope R", "demo leaks"):
        t.add_column(col, justify="right" if col != "group" else "left")
    groups = [("overall", report_dict["overall"])]
    groups += [(f"route={k}", v) for k, v in report_dict["by_route"].items()]
    groups += [(f"data={k}", v) for k, v in report_dict.get("by_source", {}).items()] if len(
        report_dict.get("by_source", {})) > 1 else []
    for name, s in groups:
        g = lambda kind, key: (s.get(kind) or {}).get(key)  # noqa: E731
        t.add_row(name, str(s["probes"]), _fmt(g("reliability", "prob")), _fmt(g("reliability", "gen")),
                  _fmt(g("generalization", "prob")), _fmt(g("generalization", "gen")),
                  _fmt(g("locality", "prob")), _fmt(g("locality", "gen")), _fmt(g("locality", "contains_gt")),
                  _fmt(g("portability", "prob")), _fmt(g("portability", "gen")),
                  _fmt(s["scope"]["precision"]), _fmt(s["scope"]["recall"]),
                  "{leaks}/{n}".format(**s.get("demonstration_leaks", {"leaks": "-", "n": "-"})))
    return t


def plot(report_dicts: dict[str, dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels, vals_prob, vals_gen = [], [], []
    for mode, rd in report_dicts.items():
        o = rd["overall"]
        for m in METRICS:
            if m in o:
                labels.append(f"{m[:4]}\n{mode}" if len(report_dicts) > 1 else m)
                vals_prob.append(o[m]["prob"] if o[m]["prob"] is not None else np.nan)
                vals_gen.append(o[m]["gen"] if o[m]["gen"] is not None else np.nan)
        labels.append(f"scope P\n{mode}" if len(report_dicts) > 1 else "scope P")
        vals_prob.append(o["scope"]["precision"] or np.nan)
        vals_gen.append(np.nan)
        labels.append(f"scope R\n{mode}" if len(report_dicts) > 1 else "scope R")
        vals_prob.append(o["scope"]["recall"] or np.nan)
        vals_gen.append(np.nan)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels)), 4))
    ax.bar(x - 0.2, vals_prob, 0.4, label="probability-based / scope")
    ax.bar(x + 0.2, vals_gen, 0.4, label="generation-based (locality: unchanged)")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate")
    first = next(iter(report_dicts.values()))["config"]
    ax.set_title(f"memedit eval: {first.get('format')} n={first.get('limit')} model={first.get('model')} "
                 f"policy={first.get('policy')}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


@app.command("run")
def run(
    data: Path = typer.Option(..., "--data", help="JSONL file in CounterFact or zsRE/KnowEdit format."),
    format: str = typer.Option(..., "--format", help="counterfact | zsre"),  # noqa: A002
    limit: Optional[int] = typer.Option(100, "--limit", help="Random subsample size (all: 0)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the subsample."),
    model: str = typer.Option("smollm2-135m-instruct", "--model", help="Base model (registered name or path)."),
    policy: str = typer.Option("ike", "--policy", help="ike | serac | auto | weights (auto's memory route, and each "
                               "case's edit committed into the weights before it is asked: --commit-method)"),
    commit_method: str = typer.Option("rome", "--commit-method", help="With --policy weights: rome (one gated commit "
                                      "per edit, in sequence) | memit | emmet (one batch per case, or per run in "
                                      "batch mode)."),
    mode: str = typer.Option("single", "--mode", help="single (one namespace per case) | batch (all edits in one) | both"),
    batch: bool = typer.Option(False, "--batch", help="Shorthand for --mode batch."),
    classifier: Optional[Path] = typer.Option(None, "--classifier", help="Scope classifier artifact (default: packaged)."),
    max_new_tokens: int = typer.Option(16, "--max-new-tokens", help="Greedy answer length judged for generation."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads (default: 1 if the load is high)."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Minutes; stop before the next case after this (the report says so)."),
    partial: Optional[Path] = typer.Option(None, "--partial", help="Append each probe result to this JSONL file as it comes."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the JSON report here."),
    plot_out: Optional[Path] = typer.Option(None, "--plot", help="Write a bar plot PNG here."),
    store: Optional[str] = typer.Option(None, "--store", help="Store to run in (a path or a postgresql:// URL; "
                                        "each case gets its own namespace). Default: a temporary SQLite store."),
    serac_adapter: Optional[str] = typer.Option(None, "--serac-adapter", help="SERAC's counterfactual model gets this "
                                                "trained adapter (a directory or 'packaged'; default: the packaged one "
                                                "with --policy serac; 'none': prompted); implies --heldout-of it."),
    heldout_of: Optional[str] = typer.Option(None, "--heldout-of", help="Drop every case this SERAC adapter "
                                             "(directory or 'packaged') trained on (by content), before sampling."),
    keep_same_relation_locality: bool = typer.Option(False, "--keep-same-relation-locality", help="zsRE: keep the "
                                                     "locality probes that ask the edited relation itself (KnowEdit "
                                                     "label noise; set aside and counted by default)."),
    side: str = typer.Option("report", "--side", help="report | tune | all: which side of the project's tune / "
                             "report split (memedit.eval.splits, by subject) to sample from; report by default."),
) -> None:
    """Evaluate reliability, generalization, locality, portability and scope decisions."""
    from rich.console import Console

    from ..editor import Editor
    from ..errors import MemeditError
    from . import evaluate, load_cases, sample
    from .datasets import subjects_shared

    console = Console(width=max(Console().width, 170))
    modes = ["batch"] if batch else (["single", "batch"] if mode == "both" else [mode])
    try:
        import torch

        if threads is None and os.getloadavg()[0] > 2:
            threads = 1
        if threads:
            torch.set_num_threads(threads)
        from .splits import check_side, default_split

        check_side(side)
        committer = None
        if policy == "weights":
            from ..commit import METHODS

            if commit_method not in METHODS:
                raise typer.BadParameter(f"--commit-method must be one of {METHODS}")
            committer = lambda ed, ids: ed.commit(ids, method=commit_method)  # noqa: E731 - gated, real commits
        loaded = load_cases(data, format, keep_same_relation_locality=keep_same_relation_locality)
        split = default_split()
        candidates = split.select(loaded.cases, [split.side_of_subject(c.edit.subject or "") for c in loaded.cases],
                                  side)
        dropped = None
        console.print(f"split {split.sha256[:12]}: {len(candidates)} of {len(loaded.cases)} cases on the {side} side")
        if serac_adapter is None and policy == "serac":  # SERAC's default: the packaged adapter, when it ships
            from ..methods.serac_adapter import packaged_adapter_available

            serac_adapter = "packaged" if packaged_adapter_available() else "none"
        prompt_only = serac_adapter == "none"
        if prompt_only:
            serac_adapter = None
        heldout_of = heldout_of or serac_adapter  # an adapter is never scored on the cases it trained on
        if heldout_of is not None:
            from ..methods.serac_adapter import exclude_training_cases

            before = len(candidates)
            candidates, dropped = exclude_training_cases(candidates, heldout_of)
            console.print(f"--heldout-of {heldout_of}: dropped {dropped} of {before} cases (the adapter trained on "
                          f"them); {len(candidates)} left")
        # In one namespace, two cases that edit the same subject contradict each other (see sample()); batch mode
        # draws distinct subjects, single mode (one namespace per case) needs not.
        distinct = "batch" in modes
        cases = sample(candidates, limit or None, seed, distinct_subjects=distinct)
        if distinct:
            console.print(f"batch mode: one case per subject ({subjects_shared(candidates)} of {len(candidates)} "
                          "candidate cases share their subject with another)")
        if loaded.same_relation_locality:
            console.print(f"{loaded.same_relation_locality} zsRE locality probes in the file ask the edited relation itself, "
                          "set aside (--keep-same-relation-locality keeps them)")
        console.print(f"{loaded.total} records in {data}; {loaded.skipped} skipped (subject not in prompt, or target_new = old answer); "
                      f"evaluating {len(cases)} (seed {seed})"
                      + (f"; fewer than --limit {limit}" if limit and len(cases) < limit else ""))
        serac = None
        if serac_adapter is not None or prompt_only:
            from ..methods.serac import SERAC

            serac = SERAC(adapter=serac_adapter)  # one counterfactual model for every mode; None: prompt-only
        clf = None
        if classifier is not None:
            from ..scope import ScopeClassifier

            clf = ScopeClassifier.load(classifier)
        config = {"data": str(data), "format": format, "limit": len(cases), "seed": seed, "model": model,
                  "policy": policy, "classifier": str(classifier) if classifier else "packaged",
                  "max_new_tokens": max_new_tokens, "records": loaded.total, "skipped": loaded.skipped,
                  "serac_adapter": "none" if prompt_only else serac_adapter, "heldout_of": heldout_of,
                  "dropped_training_cases": dropped, "side": side, "split_sha256": split.sha256,
                  "same_relation_locality_set_aside": loaded.same_relation_locality,
                  "distinct_subjects": distinct, "commit_method": commit_method if committer else None}
        reports: dict[str, dict[str, Any]] = {}
        base = None
        for m in modes:
            def factory(store: Any) -> Editor:
                ed = Editor(model=base if base is not None else model, store=store,
                            policy="auto" if committer is not None else policy,
                            classifier=clf, max_new_tokens=max_new_tokens)
                if serac is not None:
                    ed.router.register(serac)  # replaces the router's default SERAC
                return ed
            sink = None
            if partial is not None:
                partial.parent.mkdir(parents=True, exist_ok=True)
                fh = partial.open("a", encoding="utf-8")
                sink = lambda r, fh=fh, m=m: (fh.write(json.dumps(dict(r.to_dict(), mode=m)) + "\n"), fh.flush())  # noqa: E731
            rep = evaluate(factory, cases, mode=m, progress=True, config=dict(config, mode=m), on_result=sink,
                           store_path=store, commit=committer,
                           time_budget_s=None if time_budget is None else time_budget * 60 / len(modes))
            rd = rep.to_dict()
            reports[m] = rd
            console.print(render_table(rd, f"{format} · {side} side · {m} · {model} · {policy} · n={rep.cases}/{len(cases)} "
                                           f"({rd['seconds']:.0f} s)"))
    except MemeditError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(reports if len(reports) > 1 else next(iter(reports.values())), indent=1),
                            encoding="utf-8")
        console.print(f"JSON report: {json_out}")
    if plot_out is not None:
        plot(reports, plot_out)
        console.print(f"plot: {plot_out}")


def _mount_mquake() -> None:  # issue 5: `memedit eval mquake` lives in memedit/eval/mquake.py
    from .mquake import build_command

    app.command("mquake")(build_command())


_mount_mquake()

from . import weights_cli as _weights_cli  # noqa: E402,F401  (issue 4: registers `memedit eval weights`)


if __name__ == "__main__":
    app()
