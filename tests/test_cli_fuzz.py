"""Fuzzing the CLI (issue 14): random argument lists and import files against a real store.

Whatever the arguments, every command ends with a documented exit code (0 ok, 1 verify found a problem,
2 bad input, 3 not found, 4 conflict, 5 store problem), never with a traceback, an error is one line, and the
store still passes ``verify``. Most examples run in this process (typer's CliRunner, the real store and
embedder); a few run as real processes, where what reaches the terminal is the point.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from memedit import Edit, EditStore
from memedit.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXIT_CODES = {0, 1, 2, 3, 4, 5}
runner = CliRunner()

ids = st.one_of(st.integers(min_value=-3, max_value=12), st.integers(min_value=2**62, max_value=2**70),
                st.sampled_from(["abc", "", "1.5", "0x10", "٣"])).map(str)
texts = st.text(min_size=0, max_size=40)
namespaces = st.sampled_from(["default", "acme", "acme/u1", "nope", "UPPER", "a/../b", "", "x" * 200])
options = st.lists(st.one_of(
    st.tuples(st.just("--limit"), st.integers(-5, 2**64).map(str)), st.tuples(st.just("--offset"), ids),
    st.tuples(st.just("-n"), namespaces), st.tuples(st.just("--status"), st.sampled_from(["active", "bogus", ""])),
    st.tuples(st.just("--json")), st.tuples(st.just("-k"), st.integers(-2, 5000).map(str)),
), max_size=3).map(lambda opts: [x for opt in opts for x in opt])
commands = st.one_of(
    st.tuples(st.sampled_from(["show", "history", "approve", "reject"]), ids).map(list),
    st.tuples(st.just("forget"), ids, st.just("--yes")).map(list),
    st.just(["list"]), st.just(["verify"]), st.just(["namespaces"]), st.just(["ledger", "list"]),
    st.tuples(st.just("search"), texts).map(list), st.tuples(st.just("add"), texts).map(list),
    st.tuples(st.just("export"), st.sampled_from(["-", "out.jsonl", "missing/out.jsonl", "."])).map(list),
)


@pytest.fixture(scope="module")
def store(tmp_path_factory, embedder) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "s.db"
    with EditStore(path, embedder=embedder) as s:
        s.add(Edit.text("The CEO of Acme is Jane Roe.", namespace="acme"))
        s.add(Edit.fact("Globex", "The CEO of {} is", "Bob Stone"), status="pending")
        s.add(Edit.text("The mayor of Springfield is Joe Quimby."))
    return path


def check(res, args: list[str]) -> None:
    """A documented exit code, no traceback, one error line."""
    assert res.exit_code in EXIT_CODES, (args, res.exit_code, res.output)
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, repr(res.exception))
    assert "Traceback" not in res.output, (args, res.output)
    if res.exit_code and not res.stderr.startswith("Usage:"):  # click's own usage errors are exit 2 with help
        lines = res.stderr.strip().splitlines()
        assert len(lines) <= 1 or res.stdout.strip().startswith("{"), (args, res.stderr)


def store_ok(path: Path) -> None:
    res = runner.invoke(app, ["verify", "--json", "--store", str(path)])
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"] is True, res.output


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=commands, opts=options)
def test_random_arguments_end_cleanly_and_keep_the_store_sound(store, tmp_path, monkeypatch, command, opts):
    monkeypatch.chdir(tmp_path)
    args = [*command, *opts, "--store", str(store)]
    check(runner.invoke(app, args), args)
    store_ok(store)


lines = st.one_of(
    st.binary(max_size=60),
    st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
        st.sampled_from(["id", "statement", "kind", "status", "namespace", "uid", "usage_count", "supersedes",
                         "subject", "prompt", "target_new", "format", "version"]),
        st.one_of(st.integers(-2, 2**70), texts, st.none(), st.booleans(), st.lists(st.integers(), max_size=2)),
        max_size=5)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(lines, max_size=4), header=st.booleans())
def test_random_import_files_are_taken_whole_or_refused_cleanly(store, tmp_path, body, header):
    src = tmp_path / "in.jsonl"
    head = [b'{"format": "memedit-edits", "version": 1}'] if header else []
    src.write_bytes(b"\n".join(head + body) + b"\n")
    before = json.loads(runner.invoke(app, ["list", "--all-namespaces", "--json", "--store", str(store)]).stdout)
    args = ["import", str(src), "--store", str(store)]
    res = runner.invoke(app, args)
    check(res, args)
    after = json.loads(runner.invoke(app, ["list", "--all-namespaces", "--json", "--store", str(store)]).stdout)
    if res.exit_code:
        assert after["total"] == before["total"], "a refused import stored nothing"
    store_ok(store)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.one_of(
    st.tuples(st.sampled_from(["show", "history", "approve", "reject"]), ids).map(list),
    st.just(["list"]), st.just(["verify"])), opts=options)
def test_real_processes_print_no_traceback(store, command, opts):
    args = [*command, *opts, "--store", str(store)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "memedit.cli", *args], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode in EXIT_CODES, (args, res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, (args, res.stderr)
    if res.returncode and not res.stderr.startswith("Usage:"):
        assert len(res.stderr.strip().splitlines()) <= 1 or res.stdout.startswith("{"), (args, res.stderr)
