"""``memedit serac ...``: train SERAC's counterfactual adapter.

    memedit serac train --out out/serac-adapter --threads 1
    memedit eval run --data ../shared/data/zsre/zsre-dev.jsonl --format zsre --policy serac \\
        --serac-adapter out/serac-adapter            # scored on the adapter's held-out cases only

The lead CLI mounts :data:`app` as the ``serac`` sub-command; it also runs on
its own: ``python -m memedit.serac_cli --help``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .cli_common import cli_errors

app = typer.Typer(help="SERAC's counterfactual model: train its LoRA adapter.", no_args_is_help=True,
                  add_completion=False)


@app.callback()
def _group() -> None:
    """SERAC's counterfactual model: train its LoRA adapter."""


@app.command("train")
def train(
    out: Path = typer.Option(..., "--out", help="Directory for serac-adapter.safetensors and serac-adapter.json."),
    counterfact: Optional[Path] = typer.Option(None, "--counterfact", help="CounterFact-format JSONL (default, when "
                                               "neither file is given: <data dir>/counterfact/counterfact-dev.jsonl)."),
    zsre: Optional[Path] = typer.Option(None, "--zsre", help="zsRE/KnowEdit-format JSONL (default, when neither file "
                                        "is given: <data dir>/zsre/zsre-dev.jsonl)."),
    base: str = typer.Option("smollm2-135m-instruct", "--base", help="Counterfactual base model (name or path)."),
    steps: int = typer.Option(160, "--steps", help="Optimizer steps."),
    rank: int = typer.Option(4, "--rank", help="LoRA rank."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="LoRA alpha (default: 2 x rank)."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (AdamW; linear warm-up and decay)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Examples per step."),
    seed: int = typer.Option(0, "--seed", help="Seed of the LoRA initialisation and the example order (the split is "
                             "the project's fixed tune / report split: only the tune side trains)."),
    eval_examples: int = typer.Option(200, "--eval-examples", help="Held-out examples scored before and after."),
    no_pool: bool = typer.Option(False, "--no-pool", help="Do not add the packaged IKE demonstration pool's examples."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads (default: torch's)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an adapter already in --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the adapter's metadata as JSON."),
) -> None:
    """Train a LoRA adapter for SERAC's counterfactual model on CounterFact / zsRE-format data (the tune side of the split only)."""
    from .errors import ValidationError
    from .methods.serac_adapter import META_FILE, WEIGHTS_FILE
    from .methods.serac_training import TrainConfig, train_serac_adapter

    with cli_errors(as_json):
        if counterfact is None and zsre is None:
            from .scope_train import default_data_dir

            d = default_data_dir()
            counterfact, zsre = d / "counterfact" / "counterfact-dev.jsonl", d / "zsre" / "zsre-dev.jsonl"
        if not force and any((out / f).exists() for f in (WEIGHTS_FILE, META_FILE)):
            raise ValidationError(f"{out} already holds a SERAC adapter; pass --force to overwrite it")
        cfg = TrainConfig(steps=steps, batch_size=batch_size, rank=rank, alpha=2.0 * rank if alpha is None else alpha,
                          lr=lr, seed=seed, eval_examples=eval_examples, use_pool=not no_pool)
        meta = train_serac_adapter(out, counterfact=counterfact, zsre=zsre, base=base, config=cfg,
                                   progress=not as_json, threads=threads)
    if as_json:
        typer.echo(json.dumps(meta, indent=1))
        return
    t, h = meta["training"], meta["heldout"]
    typer.echo(f"wrote {out}/{WEIGHTS_FILE} and {META_FILE}: {meta['lora']['parameters']:,} LoRA parameters, "
               f"{t['steps']} steps in {t['seconds']:.0f} s, final loss {t['final_loss']:.3f}")
    typer.echo("loss curve (step: mean loss): " + ", ".join(f"{s}: {v:.3f}" for s, v in t["loss_curve"]))
    for src, after in h["after"].items():
        before = h["before"].get(src, {})
        typer.echo(f"held-out {src:<11} ({after['examples']} examples): loss {before.get('loss', float('nan')):.3f} -> "
                   f"{after['loss']:.3f}, exact answers {before.get('exact', 0):.1%} -> {after['exact']:.1%}")


if __name__ == "__main__":  # pragma: no cover
    app()
