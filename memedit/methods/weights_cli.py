"""Commands for the weight editors: precompute second-moment statistics, run causal tracing.

    memedit stats --model smollm2-135m-instruct                 # the family's default edit layers
    memedit stats --layers 2,3,4 --tokens 200000 --text corpus.txt --json
    memedit trace "The Eiffel Tower is located in the city of" --subject "Eiffel Tower" --kind mlp

(The lead mounts :data:`app`; standalone: ``python -m memedit.methods.weights_cli``.)

Errors print one line to stderr (or a JSON object with ``--json``) and exit
non-zero: 2 for bad input, 3 for something that does not exist, 1 otherwise.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from ..cli_common import cli_errors as _errors
from ..cli_common import int_list
from ..errors import ValidationError

app = typer.Typer(help="Weight editing tools: second-moment statistics and causal tracing.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
err_console = Console(stderr=True)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Registered model name, local directory or cached hub id.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="torch device, e.g. cpu, cuda, cuda:1, mps.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32, bfloat16, float16.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads (default: torch's choice).")]




def _load(model: str, device: str, dtype: str, threads: int | None) -> tuple[Any, Any]:
    import torch

    from ..models.registry import load_causal_lm

    if threads:
        torch.set_num_threads(threads)
    return load_causal_lm(model, device=device, dtype=dtype)


@app.command("stats")
def stats_cmd(
    model: ModelOpt = "smollm2-135m-instruct",
    layers: Annotated[Optional[str], typer.Option("--layers", "-l", help="Comma-separated layers (default: the family's ROME and MEMIT layers).")] = None,
    tokens: Annotated[int, typer.Option("--tokens", help="Number of tokens to average over.")] = 100_000,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Window length in tokens.")] = 128,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Windows per forward pass.")] = 8,
    text: Annotated[Optional[Path], typer.Option("--text", help="UTF-8 text file to use instead of the CIA World Factbook prose.")] = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    threads: ThreadsOpt = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Hide the progress bar.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Precompute (or find cached) second-moment statistics E[k k^T] of the edited layers' keys."""
    from ..models.arch import arch_for
    from .stats import second_moments, stats_dir

    with _errors(as_json):
        chosen = int_list(layers, "--layers", unique_sorted=True)
        if tokens < 1:
            raise ValidationError("--tokens must be >= 1")
        if text is not None and not text.is_file():
            raise ValidationError(f"--text {text} is not a file")
        m, tok = _load(model, device, dtype, threads)
        arch = arch_for(m)
        if chosen is None:
            d = arch.default_layers(m.config)
            chosen = sorted({d["rome"], *d["memit"]})
        n = arch.n_layers(m.config)
        bad = [x for x in chosen if not 0 <= x < n]
        if bad:
            raise ValidationError(f"layers {bad} are outside this model's 0..{n - 1}")
        t0 = time.perf_counter()
        result = second_moments(m, tok, chosen, texts=str(text) if text else None, n_tokens=tokens, seq_len=seq_len,
                                batch_size=batch_size, progress=not no_progress and not as_json)
        seconds = time.perf_counter() - t0
        rows = [{"layer": layer, "dim": sm.dim, "n_samples": sm.n_samples, "source": sm.meta.get("source"),
                 "fingerprint": sm.meta.get("fingerprint", "")[:16]} for layer, sm in sorted(result.items())]
        if as_json:
            print(json.dumps({"model": model, "model_type": arch.model_type, "layers": rows,
                              "cache_dir": str(stats_dir()), "seconds": round(seconds, 2)}, indent=2))
        else:
            for r in rows:
                print(f"layer {r['layer']}: dim {r['dim']}, {r['n_samples']} tokens, source {r['source']}")
            print(f"cached under {stats_dir()} ({seconds:.1f} s)")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "trace"


@app.command("trace")
def trace_cmd(
    prompt: Annotated[str, typer.Argument(help="The prompt, containing the subject, e.g. 'The Eiffel Tower is in'.")],
    subject: Annotated[str, typer.Option("--subject", "-s", help="The subject as written in the prompt.")],
    answer: Annotated[Optional[str], typer.Option("--answer", "-a", help="Answer to trace (default: the model's top next token).")] = None,
    kind: Annotated[str, typer.Option("--kind", "-k", help="hidden (residual), mlp or attn.")] = "hidden",
    samples: Annotated[int, typer.Option("--samples", help="Noise samples per state.")] = 10,
    window: Annotated[int, typer.Option("--window", help="Layers restored together for mlp/attn.")] = 10,
    noise: Annotated[float, typer.Option("--noise", help="Noise, in multiples of the embedding std.")] = 3.0,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="PNG path (default ./trace-<prompt>-<kind>.png).")] = None,
    model: ModelOpt = "smollm2-135m-instruct",
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Causal tracing: corrupt the subject, restore single states, write a heatmap PNG and per-layer effects."""
    from .trace import KINDS, causal_trace, plot_trace

    with _errors(as_json):
        if kind not in KINDS:
            raise ValidationError(f"--kind must be one of {sorted(KINDS)}")
        if subject not in prompt:
            raise ValidationError(f"subject {subject!r} does not occur in the prompt")
        m, tok = _load(model, device, dtype, threads)
        result = causal_trace(m, tok, prompt, subject, answer=answer, kind=kind, samples=samples, window=window,
                              noise=noise)
        path = plot_trace(result, out or Path(f"trace-{_slug(prompt)}-{kind}.png"))
        data = result.to_dict()
        data["png"] = str(path)
        if as_json:
            print(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            effects = result.layer_effects()
            print(f"answer {result.answer!r}: clean p={result.high:.4f}, corrupted p={result.low:.4f}")
            print(f"indirect effect at the subject's last token ({result.tokens[result.subject_last]!r}), per layer:")
            for layer, e in enumerate(effects):
                print(f"  layer {layer:2d}: {e:+.4f}")
            print(f"strongest layer: {result.best_layer()}; heatmap: {path}")


if __name__ == "__main__":  # pragma: no cover
    app()
