"""``memedit models``: list the offline model registry and prepare (convert and cache) a model.

    memedit models list
    memedit models list --json
    memedit models prepare smollm2-135m-instruct
    memedit models prepare gemma3-270m --json

Errors print one line to stderr (or a JSON object with ``--json``) and exit
non-zero: 2 for bad input, 3 for a name that resolves to nothing, 1 when a
registered model's package is not installed (the message names the pip
command).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..cli_common import cli_errors as _errors
from .registry import DEFAULT_MODEL, KNOWN_MODELS, cached_model_path, list_models, read_marker, resolve_model

app = typer.Typer(
    help="The offline model registry: models shipped inside PyPI packages, converted once and cached.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table or text.")]
CacheOpt = Annotated[
    Optional[Path],
    typer.Option("--cache-dir", help="Cache root (default: $MEMEDIT_CACHE_DIR, else ~/.cache/memedit)."),
]




def _emit(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


@app.command("list")
def list_cmd(as_json: JsonOpt = False, cache_dir: CacheOpt = None) -> None:
    """List the registered models: package, license, whether installed and already converted."""
    with _errors(as_json):
        infos = list_models(cache_dir)
    if as_json:
        _emit([i.to_dict() for i in infos])
        return
    table = Table(show_lines=False)
    table.add_column("name", no_wrap=True)
    for col in ("installed", "cached", "license", "install with", "description"):
        table.add_column(col, overflow="fold")
    for i in infos:
        table.add_row(
            i.name + (" (default)" if i.default else ""),
            "yes" if i.installed else "[red]no[/red]",
            "yes" if i.cached else "no",
            i.license,
            i.pip_command or "",
            i.description,
        )
    Console().print(table)  # built here so it sees the terminal width of this run


@app.command("prepare")
def prepare_cmd(
    name: Annotated[str, typer.Argument(help="Registered model name, local model directory, or cached hub id.")] = DEFAULT_MODEL,
    as_json: JsonOpt = False,
    cache_dir: CacheOpt = None,
) -> None:
    """Convert a model now (once; later runs return at once) and print the directory it loads from."""
    started = time.perf_counter()
    with _errors(as_json):
        if not as_json and name in KNOWN_MODELS and cached_model_path(name, cache_dir) is None:
            err_console.print(f"converting {name} once (dequantizing a GGUF takes 15-60 s on a CPU) ...", highlight=False)
        path = resolve_model(name, cache_dir)
    seconds = round(time.perf_counter() - started, 2)
    if as_json:
        _emit({"name": name, "path": str(path), "seconds": seconds, "marker": read_marker(path)})
    else:
        print(path)
