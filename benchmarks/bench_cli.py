"""How fast the ``memedit`` command answers: each command in a cold process, median of N runs.

    python benchmarks/bench_cli.py [--runs 5] [--edits 200] [--json out.json]

A store of ``--edits`` text edits is filled once (in this process); then each
command runs ``--runs`` times as a fresh ``python -m memedit.cli`` process
(so every import and every model load counts, as for a user at a terminal),
and ``import memedit`` alone. ``add`` stores a new edit each run, ``forget``
erases a different edit each run. Reported per command: median and range of
wall time. The machine's load average is recorded before and after, because
a shared machine's load changes every figure. What each command imports is
checked, untimed, by tests/test_cli_lazy.py.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench_cli")

#: the issue's bounds (seconds, cold process, median of 5 on the 2-core machine)
TARGETS = {"import memedit": 0.3, "list": 0.6, "add": 2.5, "search": 2.5, "forget": 2.5}


def commands(store: Path, n_edits: int, run: int) -> dict[str, list[str]]:
    """The commands timed, as argument lists (run ``run`` of the series picks its own edit to forget)."""
    s = ["--store", str(store)]
    return {
        "list": ["list", *s], "show": ["show", "1", *s], "history": ["history", "1", *s], "verify": ["verify", *s],
        "export": ["export", str(store.with_name("out.jsonl")), *s], "tokens list": ["tokens", "list", *s],
        "ledger list": ["ledger", "list", *s],
        "add": ["add", f"The treasurer of Guild{run} is Person{run}.", *s],
        "search": ["search", "Who runs Company7?", *s],
        "forget": ["forget", str(n_edits - run), "--yes", *s],
    }


def timed(argv: list[str]) -> float:
    """Wall seconds of one cold process; fails loudly if the command failed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{argv} failed ({res.returncode}): {res.stderr[-500:]}")
    return seconds


def prepare(folder: Path, n_edits: int) -> Path:
    """A store of ``n_edits`` text edits with its index and token file written."""
    import torch

    torch.set_num_threads(1)
    from memedit import Edit, EditStore
    from memedit.web.auth import TokenFile

    store = folder / "bench.db"
    with EditStore(store) as s:
        s.add_many([Edit.text(f"The CEO of Company{i} is Person{i}.") for i in range(n_edits)])
        s.flush()
    TokenFile.open(store.with_name("bench.tokens.json"))
    return store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--edits", type=int, default=200)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        store = prepare(Path(tmp), args.edits)
        load_before = os.getloadavg()
        times: dict[str, list[float]] = {"import memedit": []}
        for run in range(args.runs):  # interleaved, so a burst of load hits every command alike
            times["import memedit"].append(timed([sys.executable, "-c", "import memedit"]))
            for name, argv in commands(store, args.edits, run).items():
                times.setdefault(name, []).append(timed([sys.executable, "-m", "memedit.cli", *argv]))
        load_after = os.getloadavg()
    rows = {name: {"median_s": round(statistics.median(v), 3), "min_s": round(min(v), 3), "max_s": round(max(v), 3),
                   "target_s": TARGETS.get(name)} for name, v in times.items()}
    result = {"runs": args.runs, "edits": args.edits, "cpus": os.cpu_count(), "python": platform.python_version(),
              "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
              "commands": rows}
    log.info("%-16s %9s %9s %9s %8s", "command", "median s", "min s", "max s", "target")
    for name, r in rows.items():
        log.info("%-16s %9.2f %9.2f %9.2f %8s", name, r["median_s"], r["min_s"], r["max_s"], r["target_s"] or "")
    log.info("load average before %s, after %s", result["load_before"], result["load_after"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
