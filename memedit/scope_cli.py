"""``memedit scope ...``: train and evaluate the scope classifier.

>>> # memedit scope train --data-dir ../shared/data --out out/scope
>>> # memedit scope eval --json

The lead CLI mounts :data:`app` as the ``scope`` sub-command; it also runs on
its own: ``python -m memedit.scope_cli --help``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import typer

from .errors import MemeditError

log = logging.getLogger(__name__)

app = typer.Typer(
    help="Train and evaluate the scope classifier (does a question touch a stored edit?).",
    no_args_is_help=True,
    add_completion=False,
)

_COLUMNS = ("n_pos", "n_neg", "precision", "recall", "f1", "false_positive_rate", "auc", "ece")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _print_report(rep: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from .scope_train import iter_table_rows

    table = Table(title=title)
    table.add_column("pairs", no_wrap=True)
    for col in _COLUMNS:
        table.add_column("FPR" if col == "false_positive_rate" else col, justify="right")
    for label, m in iter_table_rows(rep):
        table.add_row(label, *(_fmt(m.get(c)) for c in _COLUMNS))
    console = Console(width=max(Console().width, 110))
    console.print(table)
    console.print(
        "neg rows: all positives + that negative kind; pos rows: that positive kind + all negatives. "
        "FPR = share of negatives scored in scope."
    )


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=1)


@app.command()
def train(
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="Folder with scope/, counterfact/, zsre/, mquake/ files (default: $MEMEDIT_DATA_DIR or ../shared/data)."
    ),
    out: Path = typer.Option(Path("out/scope"), "--out", help="Where to write scope-classifier.{safetensors,json} and scope-metrics.json."),
    seed: int = typer.Option(0, help="Seed for the splits, sampling and initialisation."),
    epochs: int = typer.Option(8, help="Training epochs of the MLP."),
    max_edits: Optional[int] = typer.Option(None, "--max-edits", help="Use at most this many edits per source (quick runs)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not keep training-text embeddings in memedit's cache directory."),
    threads: Optional[int] = typer.Option(None, help="Torch threads (default: torch's, or 1 when the machine is already busy)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON instead of a table."),
) -> None:
    """Generate training pairs, train the MLP, calibrate it, and report held-out metrics."""
    from .scope_train import ScopeTrainConfig, train_scope_classifier

    try:
        cfg = ScopeTrainConfig(seed=seed, epochs=epochs, max_edits_per_source=max_edits, threads=threads)
        metrics = train_scope_classifier(data_dir, out, seed=seed, config=cfg,
                                         cache_dir=None if no_cache else "default", progress=not as_json)
    except MemeditError as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
    else:
        _print_report(metrics["test"], f"scope classifier, held-out test split (threshold {metrics['threshold']:.3f})")
        typer.echo(f"wrote {out}/scope-classifier.safetensors, .json and scope-metrics.json "
                   f"in {metrics['timing_s']['total']:.0f} s")


@app.command("train-fact-match")
def train_fact_match(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data folder (default: $MEMEDIT_DATA_DIR or ../shared/data)."),
    out: Path = typer.Option(Path("out/fact-match.json"), "--out", help="Where to write the fitted check (JSON)."),
    min_precision: float = typer.Option(0.95, "--min-precision", help="Tune-side precision the threshold must keep."),
    threads: Optional[int] = typer.Option(None, help="Torch threads for the embedder."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Fit the "does the question ask the edit's own fact?" check on the tune side (memedit.fact_match)."""
    from .fact_match_train import train as fit
    from .scope_train import torch_threads

    try:
        with torch_threads(threads):
            matcher, metrics = fit(out, data_dir, min_precision=min_precision, progress=not as_json)
    except MemeditError as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    for side in ("tune", "report"):
        m = metrics[side]
        typer.echo(f"{side:6s} n={m['n']:5d}  precision {m['precision']}  recall {m['recall']}")
    for key, v in metrics["by_kind_report"].items():
        typer.echo(f"  report {key:28s} n={v['n']:4d}  asks the fact: {v['asks_fact']:.3f}")
    typer.echo(f"threshold {matcher.threshold:.2f}; wrote {out}")


@app.command("eval")
def evaluate(
    model: Optional[Path] = typer.Option(None, "--model", help="Artifact directory or file (default: the packaged classifier)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data folder (default: $MEMEDIT_DATA_DIR or ../shared/data)."),
    split: str = typer.Option("test", help="train, calibration, test (held out), or all (every edit; for other data)."),
    seed: Optional[int] = typer.Option(None, help="Split seed (default: the one the classifier was trained with)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the embedding cache."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON instead of a table."),
) -> None:
    """Report precision, recall, F1, AUC and ECE of a scope classifier, overall and per pair kind."""
    from .scope_train import evaluate_scope_classifier

    try:
        rep = evaluate_scope_classifier(model, data_dir, split=split, seed=seed,
                                        cache_dir=None if no_cache else "default", progress=not as_json)
    except MemeditError as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(rep, indent=2))
    else:
        _print_report(rep, f"scope classifier on the {split} split (threshold {rep['threshold']:.3f})")


if __name__ == "__main__":  # pragma: no cover
    app()
