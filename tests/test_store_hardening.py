"""Issue 14's store defects, each on real files: crashed saves, empty / foreign / damaged / read-only stores,
ids beyond SQLite's integers, import and export errors, damaged vectors, and `tokens add` on a fresh store.

Every command here must end with its documented exit code and, on error, one line: never a traceback.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cli import js, ok, one_line_error, run

from memedit import Edit, EditStore
from memedit.errors import StoreError

MAX = 2**63 - 1
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def seeded(tmp_path, embedder):
    """A closed store of five text edits (ids 1..5) with its index file written."""
    path = tmp_path / "s.db"
    with EditStore(path, embedder=embedder) as s:
        for i in range(5):
            s.add(Edit.text(f"The CEO of Company{i} is Person{i}."))
        s.flush()
    return path


def _python(code: str, *args: str, as_nobody: bool = False) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python process (as the user nobody through setpriv when asked)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if as_nobody else []
    return subprocess.run([*user, sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd="/tmp")


# ---- 1. a writer killed while saving the index ------------------------------------------------------------
CRASH_WHILE_SAVING = """
import os, signal, sys
from memedit import EditStore
store = EditStore(sys.argv[1])
store.forget(1)                   # rewrites the index; the next save is the one that dies
store.get(2)
os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)   # die between writing the temp file and renaming it
store.rebuild_index()
"""


def test_a_crashed_index_save_leaves_no_file_behind(seeded):
    res = _python(CRASH_WHILE_SAVING, str(seeded))
    assert res.returncode == -signal.SIGKILL, res.stderr
    left = list(seeded.parent.glob(".s.faiss.tmp-*"))
    assert len(left) == 1 and left[0].stat().st_size > 0  # the crash left vectors beside the store

    with EditStore(seeded) as store:  # opening removes it (no embedder needed)
        assert not list(seeded.parent.glob(".s.faiss.tmp-*"))
        assert store.removed_leftovers == [str(left[0])]
        report = store.verify()
        assert report.ok and report.removed_leftovers == [str(left[0])]

    with EditStore(seeded) as store:  # verify removes and reports one it finds (here: left while open)
        left[0].write_bytes(b"vectors")
        assert store.verify().removed_leftovers == [str(left[0])] and not left[0].exists()
    left[0].write_bytes(b"vectors")
    res = run("verify", store=seeded)
    assert res.exit_code == 0 and "removed a leftover temporary index file" in res.stdout, res.output
    assert not left[0].exists()


# ---- 2 and 3. files that are not a store, damaged stores, read-only stores --------------------------------
def _zero(p: Path) -> None:
    p.write_bytes(b"")


def _text(p: Path) -> None:
    p.write_text("hello, I am a text file\n")


def _foreign(p: Path) -> None:
    with sqlite3.connect(p) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")


def _folder(p: Path) -> None:
    p.mkdir()


def _index_folder(p: Path) -> None:
    p.with_suffix(".faiss").mkdir()


@pytest.mark.parametrize("make,needle", [
    (_zero, "empty file (0 bytes)"), (_text, "not a SQLite database"), (_foreign, "another program (tables: customers)"),
    (_folder, "it is a folder"), (_index_folder, "index path"),
])
def test_files_that_are_not_a_store_are_refused_untouched(tmp_path, make, needle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "x.db"
    make(path)
    before = sorted((p.name, p.stat().st_size, p.is_dir()) for p in tmp_path.iterdir())
    for cmd in (["list"], ["verify"], ["show", "1"], ["export", "-"], ["add", "The CEO of Acme is Jane Roe."],
                ["import", str(tmp_path)], ["namespaces"]):
        if cmd[0] == "import":
            (tmp_path / "in.jsonl").write_text('{"format": "memedit-edits", "version": 1}\n')
            cmd = ["import", str(tmp_path / "in.jsonl")]
        res = run(*cmd, store=path)
        one_line_error(res, 5, needle)
        (tmp_path / "in.jsonl").unlink(missing_ok=True)
    with pytest.raises(StoreError, match="x.db"):
        EditStore(path)
    assert sorted((p.name, p.stat().st_size, p.is_dir()) for p in tmp_path.iterdir()) == before


def test_a_parent_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "plain").write_text("x")
    one_line_error(run("add", "The CEO of Acme is Jane Roe.", store=tmp_path / "plain" / "x.db"), 5, "is a file")
    one_line_error(run("list", store=tmp_path / "plain" / "sub" / "x.db"), 5, "is a file")


def test_every_damaged_page_is_exit_5_or_a_failed_verify_never_a_traceback(seeded, tmp_path):
    pages = seeded.stat().st_size // 4096
    outcomes = set()
    for page in range(2, pages + 1):
        copy = tmp_path / f"d{page}.db"
        shutil.copy(seeded, copy)
        with open(copy, "r+b") as fh:
            fh.seek((page - 1) * 4096)
            fh.write(b"\xa5" * 4096)
        res = run("verify", store=copy)
        assert res.exit_code in (1, 5), (page, res.output, res.exception)
        if res.exit_code == 5:
            one_line_error(res, 5)
        else:
            assert "problem:" in res.stdout and "FAILED" in res.stdout
        outcomes.add(res.exit_code)
        for cmd in (["list"], ["show", "3"], ["history", "2"], ["export", "-"]):
            res = run(*cmd, store=copy)
            assert res.exit_code in (0, 5), (page, cmd, res.output, res.exception)
            if res.exit_code:
                one_line_error(res, 5, "damaged")
    assert outcomes == {1, 5}


@pytest.mark.skipif(sys.platform != "linux", reason="runs a process as another user")
def test_a_read_only_store_is_exit_5_with_one_line(seeded, tmp_path):
    folder = Path(shutil.copytree(seeded.parent, Path("/tmp") / f"ro-{os.getpid()}-{tmp_path.name}"))
    try:
        for p in folder.iterdir():
            p.chmod(0o444)
        folder.chmod(0o555)
        as_nobody = os.geteuid() == 0  # root writes anything: run as nobody
        if as_nobody and not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a file read-only")
        for cmd in (["list"], ["add", "The CEO of Globex is Bob Stone."], ["forget", "1", "--yes"]):
            res = _python("from memedit.cli import main; main()", *cmd, "--store", str(folder / "s.db"), as_nobody=as_nobody)
            assert res.returncode == 5, (cmd, res.stdout, res.stderr)
            assert "Traceback" not in res.stderr
            lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
            assert len(lines) == 1 and "read-only" in lines[0], res.stderr
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


# ---- 4. ids beyond SQLite's integers ----------------------------------------------------------------------
@pytest.mark.parametrize("edit_id", [str(2**63), str(10**30), "0", "-3"])
def test_ids_outside_sqlite_integers_are_exit_2(seeded, edit_id):
    for cmd in (["show", edit_id], ["history", edit_id], ["forget", edit_id, "--yes"], ["approve", edit_id],
                ["reject", edit_id]):
        res = run(*cmd, store=seeded)
        if edit_id.startswith("-"):  # click reads it as an option
            assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        else:
            one_line_error(res, 2, "below 2^63")
    one_line_error(run("list", "--offset", str(10**20), store=seeded), 2, "offset")
    assert js("verify", store=seeded)["ok"] is True


def _export_with_ids(path: Path, ids: list[int]) -> None:
    lines = [json.dumps({"format": "memedit-edits", "version": 1})]
    lines += [json.dumps({"id": i, "statement": f"The mayor of Town{n} is Mayor{n}.", "kind": "text"})
              for n, i in enumerate(ids)]
    path.write_text("\n".join(lines) + "\n")


def test_import_of_ids_beyond_sqlite_is_refused_and_the_last_id_keeps_the_store_usable(seeded, tmp_path):
    _export_with_ids(tmp_path / "big.jsonl", [3, 2**63])
    one_line_error(run("import", tmp_path / "big.jsonl", store=seeded), 2, "line 3")
    _export_with_ids(tmp_path / "last.jsonl", [MAX])
    res = js("import", tmp_path / "last.jsonl", store=seeded)
    assert res["imported"] == 1 and res["remapped"] is True
    stored = js("list", "--limit", "1", store=seeded)["edits"][0]
    assert stored["statement"] == "The mayor of Town0 is Mayor0." and stored["id"] == 6
    assert js("add", "The CEO of Initech is Bill Lumbergh.", store=seeded)["id"] == 7  # the next add still works
    assert js("verify", store=seeded)["ok"] is True


# ---- 5. import and export errors --------------------------------------------------------------------------
def test_import_of_a_file_that_is_not_utf8_is_exit_2_and_stores_nothing(seeded, tmp_path):
    src = tmp_path / "latin1.jsonl"
    src.write_bytes(b'{"format": "memedit-edits", "version": 1}\n{"statement": "Le maire de Pau est Andr\xe9."}\n')
    one_line_error(run("import", src, store=seeded), 2, "line 2: not UTF-8")
    assert js("list", store=seeded)["total"] == 5


@pytest.mark.parametrize("target", ["missing/out.jsonl", "."])
def test_export_to_a_missing_folder_or_a_folder_is_exit_2(seeded, tmp_path, target, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    one_line_error(run("export", target, store=seeded), 2, "cannot export to")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ---- 8. damaged vectors -----------------------------------------------------------------------------------
def _damage_vector(path: Path, edit_id: int) -> None:
    with sqlite3.connect(path) as conn:
        blob = bytearray(conn.execute("SELECT vec FROM vectors WHERE edit_id = ? AND k = 0", [edit_id]).fetchone()[0])
        blob[8:12] = np.float32(0.9).tobytes()  # one float changed: still a vector of the right size
        conn.execute("UPDATE vectors SET vec = ? WHERE edit_id = ? AND k = 0", [bytes(blob), edit_id])


def test_a_damaged_vector_is_found_by_verify_and_repaired(seeded, embedder):
    _damage_vector(seeded, 3)
    res = run("verify", store=seeded)
    assert res.exit_code == 1 and "edit 3: vector 0 is damaged" in res.stdout, res.output
    assert js_fail("verify", store=seeded)["damaged_vectors"] == [3]
    with EditStore(seeded, embedder=embedder) as s:  # a rebuild now would serve the damaged vector
        s.rebuild_index()
    res = run("verify", "--repair", "--json", store=seeded)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["repaired"] == [3] and out["ok"] is True and out["damaged_vectors"] == []
    with EditStore(seeded, embedder=embedder) as s:
        vec = s.db.execute("SELECT vec FROM vectors WHERE edit_id = 3 AND k = 0").fetchone()[0]
        fresh = embedder.encode(["The CEO of Company2 is Person2."])[0]
        assert np.allclose(np.frombuffer(vec, dtype=np.float32), fresh, atol=1e-5)
        hit = s.search("Who is the CEO of Company2?", k=1)[0]
        assert hit.edit.id == 3 and hit.score > 0.8
        assert [e.kind for e in s.history(3)][-1] == "repair"


def js_fail(*args, store=None):
    res = run(*args, "--json", store=store)
    assert res.exit_code == 1, res.output
    return json.loads(res.stdout)


def test_a_store_from_before_vector_hashes_gets_them_recorded(seeded):
    from memedit.store.vectors import vector_digest

    with sqlite3.connect(seeded) as conn:  # the store as memedit wrote it before migration 5
        conn.execute("ALTER TABLE vectors DROP COLUMN sha256")
        conn.execute("DELETE FROM migrations WHERE version = 5")
    with EditStore(seeded) as s:
        rows = s.db.execute("SELECT edit_id, k, vec, sha256 FROM vectors").fetchall()
        assert rows and all(h == vector_digest(e, k, v) for e, k, v, h in rows)
        assert s.verify().ok


# ---- tokens add on a fresh store --------------------------------------------------------------------------
def test_tokens_add_on_a_fresh_store_creates_exactly_that_token(tmp_path):
    store = tmp_path / "fresh.db"
    res = run("tokens", "add", "admin", "-n", "*", "--write", "--json", store=store)
    assert res.exit_code == 0, res.output
    secret = json.loads(res.stdout)["token"]
    assert [t["name"] for t in js("tokens", "list", store=store)] == ["admin"]
    from memedit.web.auth import TokenFile

    assert TokenFile.open(tmp_path / "fresh.tokens.json")[0].authenticate(secret).is_admin
    res = ok("tokens", "add", "bob", "-n", "acme", store=store)
    assert res.stdout.count("me_") == 1  # bob's secret, once; no other token made or shown


OPEN_AT = """
import sys, time
from memedit import EditStore
start = float(sys.argv[2])
while time.time() < start:
    pass
EditStore(sys.argv[1]).close()
"""


def test_processes_creating_one_store_at_once_all_open_it(tmp_path):
    """A store being created is a zero-byte file for a moment: no other process may take it for an empty one."""
    import time

    path = tmp_path / "new.db"
    start = time.time() + 3
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT, str(path), str(start)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(6)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    with EditStore(path) as s:
        assert s.verify().ok


def test_a_damaged_vector_in_a_postgresql_store_is_found_and_repaired(pg_url, embedder):
    from memedit.store import open_store

    url = pg_url()
    with open_store(url, embedder=embedder) as s:
        ids = [s.add(Edit.text(f"The CEO of Company{i} is Person{i}.")).id for i in range(3)]
        assert s.verify().ok
        s._tx(lambda: s._exec("UPDATE vectors SET vec = %s WHERE edit_id = %s AND k = 0",
                              (np.full(embedder.dim, 0.05, dtype=np.float32), ids[1])))
        report = s.verify()
        assert not report.ok and report.damaged_vectors == [ids[1]], report.problems
        assert s.repair_vectors() == [ids[1]]
        assert s.verify().ok
        hit = s.search("Who is the CEO of Company1?", k=1)[0]
        assert hit.edit.id == ids[1] and hit.score > 0.8
        assert [e.kind for e in s.history(ids[1])][-1] == "repair"


def test_a_postgresql_store_from_before_vector_hashes_gets_them_recorded(pg_url, embedder):
    from memedit.store import open_store

    url = pg_url()
    with open_store(url, embedder=embedder) as s:
        s.add(Edit.fact("Globex", "The CEO of {} is", "Hank Scorpio", paraphrases=("Globex is run by",)))
        s._tx(lambda: (s._exec("ALTER TABLE vectors DROP COLUMN sha256"),
                       s._exec("DELETE FROM migrations WHERE version = 7")))
    with open_store(url, embedder=embedder) as s:
        assert s._row("SELECT count(*) AS n FROM vectors WHERE sha256 IS NULL")["n"] == 0
        assert s._row("SELECT count(*) AS n FROM vectors")["n"] >= 2
        assert s.verify().ok
