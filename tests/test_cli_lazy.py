"""The CLI answers at once: each command, in a fresh process, loads only what it needs (issue 14).

`list`, `show`, `history`, `verify`, `export`, `namespaces`, `tokens list` and `ledger list` load no model and no
embedder; `add`, `search` and `forget` no language model (and `add` / `search` no torch: the packaged embedder
runs on NumPy); `commit` and `ledger revert` check their ids and the
store before anything of a model loads. What a process imported is the honest, untimed measure (timings are in
benchmarks/bench_cli.py and docs/BENCHMARKS.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memedit import Edit, EditStore

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys
out, sys.argv = sys.argv[1], ["memedit", *sys.argv[2:]]
from memedit.cli import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
mods = sorted(sys.modules)
json.dump({"code": code, "modules": mods}, open(out, "w"))
"""
EMBEDDER = ("sentence_transformers", "memedit.embeddings")
MODEL = ("memedit.models.backends", "memedit.editor", "memedit.commit", "memedit.route", "torch")


def loaded(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    """The exit code of ``memedit ARGS`` in a fresh process, and every module it imported."""
    out = tmp_path / "probe.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", PROBE, str(out), *args], capture_output=True, text=True, env=env,
                         timeout=300, cwd=tmp_path)
    assert out.exists(), res.stderr
    data = json.loads(out.read_text())
    return data["code"], set(data["modules"])


def _has(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


@pytest.fixture(scope="module")
def store(tmp_path_factory, embedder) -> Path:
    path = tmp_path_factory.mktemp("lazy") / "s.db"
    with EditStore(path, embedder=embedder) as s:
        s.add(Edit.text("The CEO of Acme is Jane Roe."))
        s.add(Edit.fact("Globex", "The CEO of {} is", "Bob Stone"))
        s.flush()
    from memedit.web.auth import TokenFile

    TokenFile.open(path.with_name("s.tokens.json"))
    return path


@pytest.mark.parametrize("args", [["list"], ["show", "1"], ["history", "1"], ["verify"], ["export", "out.jsonl"],
                                  ["namespaces"], ["tokens", "list"], ["ledger", "list"]])
def test_reading_commands_load_no_model_and_no_embedder(store, tmp_path, args):
    code, modules = loaded(tmp_path, *args, "--store", str(store))
    assert code == 0
    assert not _has(modules, EMBEDDER + MODEL), _has(modules, EMBEDDER + MODEL)


def test_forget_loads_no_embedder_and_search_no_model(store, tmp_path):
    code, modules = loaded(tmp_path, "forget", "1", "--yes", "--store", str(store))
    assert code == 0 and not _has(modules, EMBEDDER + MODEL), _has(modules, EMBEDDER + MODEL)
    code, modules = loaded(tmp_path, "search", "Who runs Globex?", "--store", str(store))
    assert code == 0 and _has(modules, EMBEDDER) and not _has(modules, MODEL[:4]), _has(modules, MODEL)


def test_add_and_search_embed_without_torch(store, tmp_path):
    """The packaged embedder runs on NumPy, so the commands that embed one sentence import no torch at all."""
    heavy = ("torch", "transformers", "sentence_transformers", "sklearn")
    for args in (["add", "The CFO of Initech is Bill Lumbergh."], ["search", "Who is Initech's CFO?"]):
        code, modules = loaded(tmp_path, *args, "--store", str(store))
        assert code == 0 and "memedit.bert_numpy" in modules and not _has(modules, heavy), _has(modules, heavy)


@pytest.mark.parametrize("args,code", [
    (["commit", "--ids", "4,9"], 3),                          # no such edits
    (["commit", "--ids", "2", "-n", "nope"], 3),              # no such namespace
    (["commit", "--ids", str(2**63)], 2),                     # not an id
    (["commit", "--ids", "1"], 2),                            # forgotten by the test above, or a text edit
    (["ledger", "revert", "1"], 3),                           # no such commit
    (["ledger", "redo", "0"], 2),
])
def test_commit_and_ledger_check_ids_before_any_model_loads(store, tmp_path, args, code):
    got, modules = loaded(tmp_path, *args, "--store", str(store))
    assert got == code
    assert not _has(modules, MODEL + EMBEDDER), _has(modules, MODEL + EMBEDDER)


def test_import_memedit_loads_no_store_backend(tmp_path):
    res = subprocess.run([sys.executable, "-c", "import sys, memedit; print(sorted(sys.modules))"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    modules = set(json.loads(res.stdout.replace("'", '"')))
    assert not _has(modules, ("numpy", "faiss", "sqlite_utils", "memedit.store.sqlite", "torch")), res.stdout
