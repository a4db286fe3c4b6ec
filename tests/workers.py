"""Start and follow ``store_worker.py`` processes (shared by the durability and PostgreSQL tests)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

WORKER = Path(__file__).with_name("store_worker.py")


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_ready(proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise AssertionError(f"worker exited before ready: {proc.stderr.read()}")  # type: ignore[union-attr]
        if json.loads(line).get("ready"):
            return
    raise AssertionError("worker never became ready")


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    """Wait for a worker and return (stdout, stderr).

    Not ``communicate``: it reads the raw pipe and would lose lines that
    ``wait_ready``'s buffered ``readline`` already pulled in (a fast writer's
    "done" arrives together with its "ready"). Workers print little, so
    waiting before reading cannot fill a pipe.
    """
    proc.wait(timeout=timeout)
    return proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]


def read_acks(ackfiles: Path | Sequence[Path]) -> tuple[dict[int, str], set[int]]:
    """What writers acknowledged: ``{edit id: sentence}`` added, and the ids they forgot (missing files: nothing)."""
    added: dict[int, str] = {}
    forgot: set[int] = set()
    for ackfile in [ackfiles] if isinstance(ackfiles, Path) else ackfiles:
        if not ackfile.exists():
            continue
        for line in ackfile.read_text().splitlines():
            kind, rest = line.split(" ", 1)
            if kind == "added":
                edit_id, text = rest.split(" ", 1)
                added[int(edit_id)] = text
            elif kind == "forgot":
                forgot.add(int(rest))
    return added, forgot


def check_acked(store, added: dict[int, str], forgot: set[int], allowed_unacked_forgets: int) -> None:
    """Every acknowledged edit is present with its exact content, unless the writer forgot it; every
    acknowledged forget stuck. A kill between a forget's commit and its acknowledgement leaves at most one
    unacknowledged forget per kill (``allowed_unacked_forgets``)."""
    unacked = 0
    for edit_id in forgot:
        assert store.get(edit_id).status == "forgotten", f"acknowledged forget of {edit_id} was undone"
    for edit_id, text in added.items():
        edit = store.get(edit_id)
        if edit.status == "forgotten":
            unacked += edit_id not in forgot
        else:
            assert edit.sentence() == text, f"edit {edit_id} changed: {edit.sentence()!r} != {text!r}"
    assert unacked <= allowed_unacked_forgets
