"""Every ``memedit`` command through typer's CliRunner, against real stores under tmp_path.

Exit codes: 0 ok, 1 verify failed, 2 bad input, 3 not found, 4 conflict.
"""
from __future__ import annotations

import json
import sqlite3

import pytest
import typer.main
from typer.testing import CliRunner

from memedit import cli as cli_module
from memedit.cli import app

CORE_COMMANDS = ["add", "list", "show", "search", "forget", "approve", "reject", "history", "verify", "export",
                 "import", "namespaces", "reindex", "demo"]
PRES = "The current president of {} is"


@pytest.fixture(scope="module", autouse=True)
def _shared_embedder(embedder):
    """Load the shared embedder once (the CLI's stores reuse it)."""
    yield


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Work in tmp_path with $MEMEDIT_STORE set, so nothing can touch ./stores; wide tables."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMEDIT_STORE", str(tmp_path / "env-default.db"))
    monkeypatch.setattr(cli_module.console, "width", 250)
    return tmp_path


@pytest.fixture
def db(env):
    return env / "x.db"


runner = CliRunner()


def run(*args, store=None, input=None):
    argv = [str(a) for a in args]
    if store is not None:
        argv += ["--store", str(store)]
    return runner.invoke(app, argv, input=input)


def ok(*args, store=None):
    res = run(*args, store=store)
    assert res.exit_code == 0, (args, res.exit_code, res.stdout, res.stderr, res.exception)
    return res


def js(*args, store=None):
    return json.loads(ok(*args, "--json", store=store).stdout)


def one_line_error(res, code, needle=None):
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    if needle:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in res.output
    return lines[0]


def json_error(res, code, type_name):
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    data = json.loads(res.stdout)
    assert set(data) >= {"error", "type"} and data["type"] == type_name and data["error"]
    return data


# ---- help ---------------------------------------------------------------------------

def test_top_level_help_lists_the_commands(env):
    res = ok("--help")
    for name in CORE_COMMANDS:
        assert name in res.stdout


def test_help_for_every_command(env):
    group = typer.main.get_command(app)
    names = sorted(group.commands)
    assert set(CORE_COMMANDS) <= set(names)
    for name in names:
        res = run(name, "--help")
        assert res.exit_code == 0, (name, res.output)
        assert "Usage" in res.stdout and "--help" in res.stdout
        assert (group.commands[name].help or "").strip(), f"{name} has no help text"
    for name in CORE_COMMANDS:
        assert "--store" in run(name, "--help").stdout or name == "demo"


# ---- add / list / show / search ------------------------------------------------------------

def test_add_free_text_fact_pending_and_paraphrases(db):
    res = ok("add", "The CEO of Acme is Jane Roe now.", "--author", "alice", store=db)
    assert "stored edit 1 (active)" in res.stdout
    e = js("add", "--subject", "the US", "--prompt", PRES, "--target-new", "Biden", store=db)
    assert e["id"] == 2 and e["kind"] == "fact" and e["status"] == "active"
    e = js("add", "--subject", "the US", "--prompt", PRES, "--target-new", "Trump", "--target-true", "Biden",
           "--paraphrase", "The person who leads {} right now is", "--paraphrase", "Who runs {}?",
           "--source", "chat", store=db)
    assert e["id"] == 3 and e["supersedes"] == 2 and e["target_true"] == "Biden"
    assert e["paraphrases"] == ["The person who leads {} right now is", "Who runs {}?"]
    res = ok("add", "--subject", "the us", "--prompt", PRES, "--target-new", "Obama", "--pending", store=db)
    assert "stored edit 4 (pending)" in res.stdout and "superseding" not in res.stdout
    res = ok("add", "--subject", "France", "--prompt", "The capital of {} is", "--target-new", "Lyon",
             "-n", "acme", store=db)
    assert "stored edit 5 (active)" in res.stdout
    res = ok("add", "--subject", "the US", "--prompt", PRES, "--target-new", "Vance", store=db)
    assert "stored edit 6 (active), superseding edit 3" in res.stdout  # the active predecessor, not the pending 4
    for old in (3, 4):  # the active edit and the pending one of the same fact are both replaced
        shown = js("show", str(old), store=db)
        assert shown["status"] == "superseded" and shown["superseded_by"] == 6
    # a fact with a statement given as the argument keeps it
    e = js("add", "Merz leads Germany.", "--subject", "Germany", "--prompt", "The chancellor of {} is",
           "--target-new", "Merz", store=db)
    assert e["statement"] == "Merz leads Germany." and e["kind"] == "fact"
    assert not (db.parent / "stores").exists() and not (db.parent / "env-default.db").exists()


def _seed(db):
    ok("add", "The discount is 100% today.", "--author", "alice", store=db)                      # 1
    ok("add", "--subject", "the US", "--prompt", PRES, "--target-new", "Biden", store=db)        # 2
    ok("add", "--subject", "the US", "--prompt", PRES, "--target-new", "Trump",                  # 3 supersedes 2
       "--paraphrase", "The person who leads {} right now is", "--author", "bob", store=db)
    ok("add", "Acme's new logo is blue.", "--pending", "--author", "carol", store=db)            # 4 pending
    ok("add", "The CEO of Acme Corp is Jane Roe now.", "-n", "acme", store=db)                    # 5
    ok("add", "Lionel Messi plays football for Real Madrid.", store=db)                          # 6


def test_list_filters_and_json(db):
    _seed(db)
    data = js("list", store=db)
    assert data["total"] == 5 and [e["id"] for e in data["edits"]] == [6, 4, 3, 2, 1]
    assert {e["namespace"] for e in data["edits"]} == {"default"}
    assert [e["id"] for e in js("list", "--status", "pending", store=db)["edits"]] == [4]
    assert [e["id"] for e in js("list", "--status", "pending", "--status", "superseded", store=db)["edits"]] == [4, 2]
    assert [e["id"] for e in js("list", "--author", "bob", store=db)["edits"]] == [3]
    assert [e["id"] for e in js("list", "--text", "100%", store=db)["edits"]] == [1]
    assert [e["id"] for e in js("list", "--text", "right now", store=db)["edits"]] == [3]
    assert [e["id"] for e in js("list", "-n", "acme", store=db)["edits"]] == [5]
    alln = js("list", "--all-namespaces", store=db)
    assert alln["total"] == 6 and {e["namespace"] for e in alln["edits"]} == {"default", "acme"}
    page = js("list", "--limit", "2", "--offset", "1", store=db)
    assert [e["id"] for e in page["edits"]] == [4, 3] and page["total"] == 5
    table = ok("list", store=db).stdout
    assert "The current president of the US is Trump" in table and "superseded" in table
    assert "5 of 5" in table
    one_line_error(run("list", "--status", "deleted", store=db), 2, "unknown status")
    one_line_error(run("list", "--limit", "0", store=db), 2)


def test_show(db):
    _seed(db)
    out = ok("show", "3", store=db).stdout
    assert "target_new: Trump" in out and "subject: the US" in out and "supersedes: 2" in out
    data = js("show", "3", store=db)
    assert data["id"] == 3 and data["paraphrases"] == ["The person who leads {} right now is"]
    assert data["recent_uses"] == []
    assert js("show", "2", store=db)["superseded_by"] == 3


def test_search_json_scores_and_matched_text(db):
    _seed(db)
    hits = js("search", "the person who leads the US right now", store=db)
    assert hits[0]["edit"]["id"] == 3
    assert hits[0]["matched_text"] == "The person who leads the US right now is Trump"
    assert all(isinstance(h["score"], float) and -1.0 <= h["score"] <= 1.0001 for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert {h["edit"]["status"] for h in hits} == {"active"} and all(h["edit"]["namespace"] == "default" for h in hits)
    assert {h["edit"]["id"] for h in hits} == {1, 3, 6}
    assert len(js("search", "Who is Trump?", "-k", "1", store=db)) == 1
    assert js("search", "Who is Trump?", "-k", "1", store=db)[0]["edit"]["id"] == 3
    sup = js("search", "Who is the US president?", "--status", "superseded", store=db)
    assert [h["edit"]["id"] for h in sup] == [2]
    assert [h["edit"]["id"] for h in js("search", "Who runs Acme?", "-n", "acme", store=db)] == [5]
    table = ok("search", "Who is the US president?", store=db).stdout
    assert "The current president of the US is Trump" in table and "score" in table


# ---- lifecycle --------------------------------------------------------------------------------

def test_approve_reject_and_their_errors(db):
    ok("add", "--subject", "the US", "--prompt", PRES, "--target-new", "Biden", store=db)               # 1
    ok("add", "--subject", "the US", "--prompt", PRES, "--target-new", "Trump", "--pending", store=db)  # 2
    ok("add", "A doubtful claim.", "--pending", store=db)                                               # 3
    res = ok("approve", "2", "--actor", "reviewer", store=db)
    assert "edit 2 is now active" in res.stdout
    assert js("show", "1", store=db)["status"] == "superseded"
    rej = js("reject", "3", store=db)
    assert rej["id"] == 3 and rej["status"] == "rejected"
    one_line_error(run("approve", "2", store=db), 4, "only pending")
    one_line_error(run("reject", "1", store=db), 4)
    one_line_error(run("approve", "3", store=db), 4)
    one_line_error(run("approve", "99", store=db), 3, "no edit with id 99")
    json_error(run("approve", "2", "--json", store=db), 4, "ConflictError")
    json_error(run("reject", "99", "--json", store=db), 3, "NotFoundError")
    hist = js("history", "2", store=db)
    assert [e["kind"] for e in hist] == ["add", "approve"] and hist[1]["actor"] == "reviewer"
    assert [e["kind"] for e in js("history", "1", store=db)] == ["add", "supersede"]
    assert all(len(e["hash"]) == 64 for e in hist) and hist[1]["prev_hash"] != hist[0]["prev_hash"]
    table = ok("history", "2", store=db).stdout
    assert "approve" in table and "reviewer" in table
    one_line_error(run("history", "99", store=db), 3)


def test_forget_needs_yes_when_not_interactive(db):
    ok("add", "A secret to forget.", store=db)
    one_line_error(run("forget", "1", store=db), 2, "--yes")
    json_error(run("forget", "1", "--json", store=db), 2, "ValidationError")
    assert js("show", "1", store=db)["status"] == "active"
    assert js("show", "1", store=db)["statement"] == "A secret to forget."
    res = ok("forget", "1", "--yes", "--actor", "dpo", store=db)
    assert "forgot edit 1" in res.stdout
    shown = js("show", "1", store=db)
    assert shown["status"] == "forgotten" and shown["statement"] is None
    assert js("search", "secret", store=db) == []
    assert "(forgotten)" in ok("list", "--status", "forgotten", store=db).stdout
    one_line_error(run("forget", "1", "--yes", store=db), 4, "already forgotten")
    one_line_error(run("forget", "7", "--yes", store=db), 3)
    assert run("forget", "abc", "--yes", store=db).exit_code == 2  # typer refuses a non-integer id
    assert [e["kind"] for e in js("history", "1", store=db)] == ["add", "forget"]
    assert js("verify", store=db)["ok"] is True


# ---- verify ---------------------------------------------------------------------------------

def test_verify_ok_then_tampered(db):
    _seed(db)
    res = ok("verify", store=db)
    assert "ok" in res.stdout
    data = js("verify", store=db)
    assert data["ok"] is True and data["problems"] == [] and data["index"]["consistent"] is True
    con = sqlite3.connect(db)
    con.execute("UPDATE events SET payload = '{}' WHERE seq = 3")
    con.commit()
    con.close()
    res = run("verify", store=db)
    assert res.exit_code == 1 and "FAILED" in res.stdout and "event 3" in res.stdout
    res = run("verify", "--json", store=db)
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert data["ok"] is False and any("event 3" in p for p in data["problems"])


def test_verify_empty_store_and_altered_content(db):
    assert run("verify", store=db).exit_code == 3  # no store yet
    ok("add", "Bananas are yellow.", store=db)
    assert ok("verify", store=db).exit_code == 0
    con = sqlite3.connect(db)
    con.execute("UPDATE edits SET statement = 'Bananas are blue.' WHERE id = 1")
    con.commit()
    con.close()
    res = run("verify", store=db)
    assert res.exit_code == 1 and "edit 1: content was altered" in res.stdout


# ---- export / import / namespaces / reindex -------------------------------------------------------

def test_export_import_roundtrip(db, env):
    _seed(db)
    ok("forget", "6", "--yes", store=db)
    out = env / "out.jsonl"
    res = ok("export", str(out), store=db)
    assert "exported 6 edits" in res.stdout
    text = out.read_text(encoding="utf-8")
    to_stdout = ok("export", "-", store=db).stdout
    assert to_stdout == text
    assert json.loads(text.splitlines()[0]) == {"format": "memedit-edits", "version": 1}
    assert js("export", str(env / "o2.jsonl"), store=db) == {"exported": 6, "path": str(env / "o2.jsonl")}
    acme = ok("export", "-", "-n", "acme", store=db).stdout.splitlines()
    assert len(acme) == 2 and json.loads(acme[1])["namespace"] == "acme"
    one_line_error(run("export", "-", "-n", "nope", store=db), 3)

    other = env / "other.db"
    res = ok("import", str(out), store=other)
    assert "imported 6 edits" in res.stdout and "new ids" not in res.stdout
    assert ok("export", "-", store=other).stdout == text
    one_line_error(run("import", str(out), store=other), 2, "already exist")
    assert js("import", str(out), "--skip-existing", store=other) == {"imported": 0, "skipped": 6, "remapped": False}
    assert js("verify", store=other)["ok"] is True
    # into a store with colliding ids: new ids
    third = env / "third.db"
    ok("add", "Something local.", store=third)
    res = ok("import", str(out), store=third)
    assert "imported 6 edits (new ids assigned)" in res.stdout
    assert js("list", "--all-namespaces", store=third)["total"] == 7


def test_import_errors(db, env):
    ok("add", "Already here.", store=db)
    bad = env / "bad.jsonl"
    bad.write_text('{"format":"memedit-edits","version":1}\n{"statement":"fine"}\n{"statement": 5}\n', encoding="utf-8")
    one_line_error(run("import", str(bad), store=db), 2, "line 3")
    json_error(run("import", str(bad), "--json", store=db), 2, "ValidationError")
    bad.write_text('{"statement":"fine"}\nnot json\n', encoding="utf-8")
    one_line_error(run("import", str(bad), store=db), 2, "line 2: not valid JSON")
    one_line_error(run("import", str(env / "missing.jsonl"), store=db), 3, "no such file")
    fresh = env / "never-created.db"
    one_line_error(run("import", str(env / "missing.jsonl"), store=fresh), 3, "no such file")
    assert not fresh.exists(), "a failed import must not leave a new empty store behind"
    assert js("list", store=db)["total"] == 1


def test_namespaces_and_reindex(db):
    _seed(db)
    rows = js("namespaces", store=db)
    assert {r["name"]: r["live"] for r in rows} == {"acme": 1, "default": 4}
    table = ok("namespaces", store=db).stdout
    assert "acme" in table and "default" in table
    data = js("reindex", store=db)
    # 1 + 1 + 2 (paraphrase) + 1 + 2 + 2: edits 5 and 6 are sentences read as facts, indexed as the
    # canonical prompt + target and as the user's own sentence
    assert data == {"vectors": 9}
    assert "rebuilt the index: 9 vectors" in ok("reindex", store=db).stdout
    assert js("search", "Who is the US president?", "-k", "1", store=db)[0]["edit"]["id"] == 3
    assert js("verify", store=db)["index"]["consistent"] is True


def test_demo_json(env):
    path = env / "demo.db"
    data = js("demo", store=path)
    assert data["verify_ok"] is True
    assert data["still_found_after_forget"] is False
    assert data["namespace"] == "demo" and len(data["stored"]) == 3
    assert data["search"]["Who is the US president?"]["edit"] == data["stored"][1]
    assert data["superseded"] == data["stored"][2]
    assert js("verify", store=path)["ok"] is True
    out = ok("demo", store=env / "demo2.db").stdout
    assert "memedit demo" in out and "verify" in out


# ---- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "args,needle",
    [
        (["add", "x", "-n", "UPPER"], "invalid namespace 'UPPER'"),
        (["add", "x", "-n", "a b/../c"], "invalid namespace"),
        (["add"], "give a statement"),
        (["add", "   "], "statement must not be empty"),
        (["add", "--subject", "the US"], "prompt is required"),
        (["add", "--subject", "the US", "--prompt", "no hole", "--target-new", "x"], "exactly one '{}'"),
        (["add", "--subject", "a", "--prompt", "The [/] of {} {}", "--target-new", "b"], "The [/] of {} {}"),
        (["add", "--subject", "a", "--prompt", "The CEO of {} is", "--target-new", "b", "--target-true", "B"],
         "target_new equals target_true"),
        (["add", "--prompt", "The CEO of {} is", "--target-new", "b"], "needs a subject"),
        (["add", "bad\x1bescape"], "control character"),
        (["add", "x" * 2001], "statement is too long"),
        (["add", "--subject", "a", "--prompt", "The CEO of {} is", "--target-new", "b", "--paraphrase", "{0}"],
         "paraphrases[0]"),
    ],
)
def test_invalid_input_exits_2_with_one_line(db, args, needle):
    ok("add", "Seed edit.", store=db)
    one_line_error(run(*args, store=db), 2, needle)
    assert js("list", "--all-namespaces", store=db)["total"] == 1


def test_invalid_input_as_json(db):
    data = json_error(run("add", "x", "-n", "UPPER", "--json", store=db), 2, "ValidationError")
    assert "UPPER" in data["error"]
    json_error(run("show", "42", "--json", store=db), 3, "NotFoundError")


def test_not_found_exits_3(db):
    one_line_error(run("list", store=db), 3, "no store at")
    assert not db.exists()  # reading commands never create a store
    for cmd in (["show", "1"], ["search", "x"], ["history", "1"], ["verify"], ["namespaces"], ["reindex"],
                ["export", "-"], ["approve", "1"], ["forget", "1", "--yes"]):
        one_line_error(run(*cmd, store=db), 3)
    assert not db.exists()
    json_error(run("list", "--json", store=db), 3, "NotFoundError")
    ok("add", "Seed edit.", store=db)
    one_line_error(run("show", "999", store=db), 3, "no edit with id 999")
    one_line_error(run("list", "-n", "nope", store=db), 3, "namespace 'nope' does not exist")
    one_line_error(run("search", "x", "-n", "nope", store=db), 3)


def test_user_text_with_markup_is_shown_literally(db):
    text = "Use [/] carefully and [bold]this[/bold] too."
    ok("add", text, "--author", "[red]eve[/red]", store=db)
    assert text in ok("list", store=db).stdout
    assert "[red]eve[/red]" in ok("list", store=db).stdout
    assert f"statement: {text}" in ok("show", "1", store=db).stdout
    assert text in ok("search", "careful", store=db).stdout
    ok("add", "A [i]pending[/i] one.", "--pending", store=db)
    ok("approve", "2", "--actor", "[red]eve[/red]", store=db)
    assert "[red]eve[/red]" in ok("history", "2", store=db).stdout
    assert "A [i]pending[/i] one." in ok("list", store=db).stdout


def test_default_store_comes_from_env(env):
    res = run("add", "Stored via the environment variable.")
    assert res.exit_code == 0, res.output
    assert (env / "env-default.db").exists() and not (env / "stores").exists()
    assert js("list")["total"] == 1


def test_history_shows_how_a_statement_was_read(db):
    ok("add", "Ada Lovelace holds citizenship in Kenya.", store=db)
    ok("add", "The discount is 100% today.", store=db)
    out = ok("history", "1", store=db).stdout
    assert "read as: Ada Lovelace -[country of citizenship (P27)]-> Kenya" in out
    assert "read as" not in ok("history", "2", store=db).stdout  # free text has no reading
    assert isinstance(js("history", "1", store=db), list)  # the JSON stays the list of events
    ok("forget", "1", "--yes", store=db)
    assert "read as" not in ok("history", "1", store=db).stdout  # forgetting erased the reading with the content
