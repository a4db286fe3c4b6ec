"""``memedit eval weights``: ROME / MEMIT / EMMET on CounterFact records (table, JSON, plot).

    memedit eval weights --n 100 --scenarios rome,rome-sequential,memit,emmet \\
        --json out/weights.json --plot out/weights.png --threads 1
    memedit eval weights --n 20 --scenarios rome-sequential --no-chat      # cloze scores only (faster)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..cli_common import cli_errors
from .cli import app

DEFAULT_DATA = Path("../shared/data/counterfact/counterfact-dev.jsonl")


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` with JSON values (plain strings allowed) as a dict; lists become tuples."""
    from ..errors import ValidationError

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"hyperparameter override {item!r} is not key=value")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
        if isinstance(out[key.strip()], list):
            out[key.strip()] = tuple(out[key.strip()])
    return out


@app.command("weights")
def weights_command(
    data: Annotated[Path, typer.Option("--data", help="CounterFact-format JSONL.")] = DEFAULT_DATA,
    n: Annotated[int, typer.Option("--n", help="Records to edit (the batch size of MEMIT/EMMET).")] = 100,
    offset: Annotated[int, typer.Option("--offset", help="Skip this many records (of the chosen side) first.")] = 0,
    side: Annotated[str, typer.Option("--side", help="report | tune | all: side of the project's tune / report split "
                                      "(memedit.eval.splits); report by default.")] = "report",
    scenarios: Annotated[str, typer.Option("--scenarios", help="Comma-separated: rome, rome-sequential, memit, emmet.")] = "rome,rome-sequential,memit,emmet",
    model: Annotated[str, typer.Option("--model", "-m", help="Registered model name or local directory.")] = "smollm2-135m-instruct",
    device: Annotated[str, typer.Option("--device")] = "cpu",
    dtype: Annotated[str, typer.Option("--dtype")] = "float32",
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads.")] = None,
    stats_tokens: Annotated[int, typer.Option("--stats-tokens", help="Tokens of text for the second-moment statistics.")] = 100_000,
    no_generate: Annotated[bool, typer.Option("--no-generate", help="Skip the generation-based scores.")] = False,
    chat: Annotated[bool, typer.Option("--chat/--no-chat", help="Also score chat answers (direct and paraphrase "
                                       "questions, subject name, unrelated questions), as users get them.")] = True,
    rome_hp: Annotated[list[str] | None, typer.Option(
        "--rome-hp", help="ROME hyperparameter override key=value (JSON value), repeatable.")] = None,
    batch_hp: Annotated[list[str] | None, typer.Option(
        "--batch-hp", help="MEMIT/EMMET hyperparameter override key=value (JSON value), repeatable.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the whole report here.")] = None,
    plot_out: Annotated[Optional[Path], typer.Option("--plot", help="Write a bar chart PNG here.")] = None,
) -> None:
    """Efficacy, paraphrase and neighborhood scores, generation efficacy, perplexity change and chat scores per scenario."""
    with cli_errors(False):
        import torch

        from ..errors import ValidationError
        from ..models.registry import load_causal_lm
        from .weights import evaluate_weight_edits, load_counterfact, plot, render

        if n < 1:
            raise ValidationError("--n must be at least 1")
        if threads:
            torch.set_num_threads(threads)
        recs = load_counterfact(data, n=n, offset=offset, side=side)
        from .splits import default_split

        typer.echo(f"{len(recs)} CounterFact records from the {side} side of split {default_split().sha256[:12]}",
                   err=True)
        lm, tok = load_causal_lm(model, device=device, dtype=dtype, reuse=False)
        report = evaluate_weight_edits(lm, tok, recs, scenarios=[s.strip() for s in scenarios.split(",") if s.strip()],
                                       rome_hparams=parse_overrides(rome_hp), batch_hparams=parse_overrides(batch_hp),
                                       stats_tokens=stats_tokens, generate=not no_generate, chat=chat)
        report.update(model=model, device=device, dtype=dtype, threads=torch.get_num_threads(), side=side,
                      split_sha256=default_split().sha256,
                      command="memedit eval weights " + " ".join(sys.argv[3:]))
    typer.echo(render(report))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=1, default=str))
    if plot_out:
        plot(report, plot_out)
