"""``memedit commit`` and ``memedit ledger``: write used edits into the weights, list and undo commits.

    memedit commit --min-uses 3                        # MEMIT batch of the default namespace's edits used >= 3 times
    memedit commit --min-uses 3 --dry-run --json       # what would be committed; loads no model
    memedit commit --ids 4,9 --method rome             # these edits, one ROME commit each
    memedit ledger list --json                         # commits, oldest first, with their gates
    memedit ledger revert 2                            # take commit 2 out of the weights (redo puts it back)

Commits are gated (:mod:`memedit.gates`, with the chat gates of
:mod:`memedit.chat_gates`: the committed model must answer each edit's chat
questions with the new target and keep the subject's name and unrelated
answers): a refused batch leaves the weights untouched, its edits keep
answering through the memory, and the command exits 6 naming the gates that
failed and why. The ledger is
persisted beside the store, so every later ``memedit ask`` / ``chat`` / Editor
on the store loads the model as base + ledger and answers committed edits from
the weights (route ``weights``).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Annotated, Any, Iterator, Optional

import typer
from rich.console import Console
from rich.table import Table

from .cli_common import StoreOpt, cli_errors, int_list
from .config import DEFAULT_NAMESPACE
from .errors import ConflictError, NotFoundError, ValidationError, check_id

console = Console(highlight=False, soft_wrap=True)
app = typer.Typer(add_completion=False)
ledger_app = typer.Typer(help="List, revert and redo weight commits.", no_args_is_help=True, add_completion=False)
app.add_typer(ledger_app, name="ledger")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Base model: a registered name or a local directory.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="torch device, e.g. cpu, cuda, mps.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")]
#: exit code of a commit that the gates refused (the weights stayed as they were)
EXIT_REFUSED = 6


@contextmanager
def _editor(store: str | None, model: str, device: str, dtype: str, as_json: bool) -> Iterator[Any]:
    with cli_errors(as_json):
        from .editor import Editor

        ed = Editor(model=model, store=store, device=device, dtype=dtype)
        try:
            yield ed
        finally:
            ed.close()


@app.command("commit")
def commit_command(
    min_uses: Annotated[int, typer.Option("--min-uses", help="Commit active fact edits used at least this often.")] = 1,
    ids: Annotated[Optional[str], typer.Option("--ids", help="Comma-separated edit ids instead of --min-uses.")] = None,
    method: Annotated[str, typer.Option("--method", help="memit or emmet (one batch), or rome (one commit per edit).")] = "memit",
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace whose edits are chosen.")] = DEFAULT_NAMESPACE,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be committed; change nothing.")] = False,
    actor: Annotated[Optional[str], typer.Option("--actor", help="Who commits (recorded in the history).")] = None,
    store: StoreOpt = None, model: ModelOpt = "smollm2-135m-instruct", device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32", as_json: JsonOpt = False,
) -> None:
    """Commit frequently used edits into the base model's weights (gated, reversible)."""
    with cli_errors(as_json):  # arguments and store first: a typo must not wait for a model to load
        chosen = int_list(ids, "--ids")
        _check_edits(store, namespace, chosen)
    with _editor(store, model, device, dtype, as_json) as ed:
        if not dry_run:
            n = len(chosen) if chosen is not None else len(ed.commit(min_uses=min_uses, namespace=namespace,
                                                                        method=method, dry_run=True).candidates)
            if n and not as_json:
                console.print(f"committing {n} edit(s) with {method} (value optimisation takes seconds per edit) ...")
        report = ed.commit(chosen, min_uses=min_uses, namespace=namespace, method=method, actor=actor,
                           dry_run=dry_run)
    out = report.to_dict()
    out["dry_run"] = dry_run
    if as_json:
        print(json.dumps(out, default=str))
    elif not report.candidates:
        console.print(f"nothing to commit: no active, uncommitted fact edit in {namespace!r} used >= {min_uses} times")
    elif dry_run:
        console.print(f"would commit edits {report.candidates} with {method}")
    else:
        if report.commit_ids:
            console.print(f"committed edits {report.committed_edits} as commit(s) {report.commit_ids} "
                          f"in {report.seconds:.1f} s")
        for r in report.refused:
            console.print(f"[red]refused[/red] edits {r['edits']}: gate(s) {', '.join(r['failed'])} failed; "
                          "the weights are unchanged and the edits keep answering through the memory", markup=True)
            if r.get("reason"):
                console.print(f"  {r['reason']}", markup=False)
    if report.refused:
        raise typer.Exit(EXIT_REFUSED)


@ledger_app.command("list")
def ledger_list(status: Annotated[Optional[str], typer.Option("--status", help="applied, reverted or dropped.")] = None,
                store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """The store's weight commits, oldest first (needs no model)."""
    with cli_errors(as_json):
        from .store.open import open_store

        if status not in (None, "applied", "reverted", "dropped"):
            raise ValidationError("--status must be applied, reverted or dropped")
        with open_store(store, create=False) as s:
            where, params = ("WHERE status = ?", [status]) if status else ("", [])
            rows = list(s.db.query(f"SELECT id, ts, method, model, edit_ids, status, base_hash FROM commits {where} "
                                   "ORDER BY id", params))
    for r in rows:
        r["edit_ids"] = json.loads(r["edit_ids"])
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("id", "time", "method", "model", "edits", "status")
    for r in rows:
        table.add_row(str(r["id"]), r["ts"], r["method"], r["model"], ",".join(map(str, r["edit_ids"])), r["status"])
    console.print(table)


def _check_edits(store: str | None, namespace: str, chosen: list[int] | None) -> None:
    """Before any model loads: the store and namespace exist, and each chosen edit is an active, uncommitted fact."""
    from .store.open import open_store

    with open_store(store, create=False) as s:
        s.require_namespace(namespace)
        for edit_id in chosen or ():
            e = s.get(check_id(edit_id, "an edit id in --ids"))
            if e.kind != "fact" or e.status != "active":
                raise ValidationError(f"edit {e.id} is a {e.status} {e.kind} edit; only active fact edits can be "
                                      "committed to the weights")
            if e.committed:
                raise ConflictError(f"edit {e.id} is already committed")


def _check_commit(store: str | None, commit_id: int, kind: str) -> None:
    """Before any model loads: the commit exists and is in the state ``kind`` (revert, redo) needs."""
    from .store.open import open_store

    needs, done = {"revert": ("applied", "reverted"), "redo": ("reverted", "redone")}[kind]
    with open_store(store, create=False) as s:
        row = next(iter(s.db.query("SELECT status FROM commits WHERE id = ?", [check_id(commit_id, "a commit id")])),
                   None)
    if row is None:
        raise NotFoundError(f"no commit with id {commit_id}")
    if row["status"] != needs:
        raise ConflictError(f"commit {commit_id} is {row['status']}; only {needs} commits can be {done}")


def _undo(kind: str, commit_id: int, store: str | None, model: str, device: str, dtype: str, actor: str | None,
          as_json: bool) -> None:
    with cli_errors(as_json):
        _check_commit(store, commit_id, kind)
    with _editor(store, model, device, dtype, as_json) as ed:
        getattr(ed.weights, kind)(commit_id, actor=actor)
    if as_json:
        print(json.dumps({"commit": commit_id, "done": kind}))
    else:
        console.print(f"commit {commit_id}: {kind} done")


@ledger_app.command("revert")
def ledger_revert(commit_id: int, store: StoreOpt = None, model: ModelOpt = "smollm2-135m-instruct",
                  device: DeviceOpt = "cpu", dtype: DtypeOpt = "float32",
                  actor: Annotated[Optional[str], typer.Option("--actor")] = None, as_json: JsonOpt = False) -> None:
    """Take a commit out of the weights (its deltas stay in the ledger for redo)."""
    _undo("revert", commit_id, store, model, device, dtype, actor, as_json)


@ledger_app.command("redo")
def ledger_redo(commit_id: int, store: StoreOpt = None, model: ModelOpt = "smollm2-135m-instruct",
                device: DeviceOpt = "cpu", dtype: DtypeOpt = "float32",
                actor: Annotated[Optional[str], typer.Option("--actor")] = None, as_json: JsonOpt = False) -> None:
    """Put a reverted commit back in its place in the order."""
    _undo("redo", commit_id, store, model, device, dtype, actor, as_json)
