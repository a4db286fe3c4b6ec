"""The ``memedit`` command line.

    memedit add "The CEO of Acme is Jane Roe now."
    memedit add --subject "the US" --prompt "The current president of {} is" --target-new Trump
    memedit search "Who leads the US?" --json
    memedit forget 3 --yes

Every command takes ``--store PATH`` (default ``./stores/default.db`` or
``$MEMEDIT_STORE``), ``--namespace`` where it applies, and ``--json`` for
machine-readable output. Errors print one clear line to stderr and exit
non-zero: 2 for bad input, 3 for something that does not exist, 4 for a
conflict with the current state, 5 for a store problem.
"""
from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .cli_common import StoreOpt, cli_errors as _errors
from .cli_lazy import LazyGroup
from .config import DEFAULT_NAMESPACE, default_store_path
from .errors import MemeditError, NotFoundError, ValidationError

app = typer.Typer(help="memedit: correct what a language model knows, keep and audit every correction.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, cls=LazyGroup)
console = Console()
err_console = Console(stderr=True)

NsOpt = Annotated[str, typer.Option("--namespace", "-n", help="Namespace (tenant or user) to act in.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.callback()
def _main(verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv for debug).")] = 0) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")




@contextmanager
def _open(store: str | None, as_json: bool, create: bool = True) -> Iterator[Any]:
    from .store.open import default_store_target, describe, open_store

    with _errors(as_json, where=describe(store or default_store_target())):
        s = open_store(store, create=create)  # a path: SQLite; a postgresql:// URL: PostgreSQL; None: the default
        try:
            yield s
        finally:
            s.close()


def _emit(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def _edit_table(edits: list[Any], scores: list[float] | None = None) -> Table:
    table = Table(show_lines=False)
    for col in ("id", "ns", "status", "edit", "author", "uses", "created"):
        table.add_column(col, overflow="fold")
    if scores is not None:
        table.add_column("score", justify="right")
    for i, e in enumerate(edits):
        text = escape(e.sentence()) if e.status != "forgotten" else "[dim](forgotten)[/dim]"
        row = [str(e.id), e.namespace, e.status, text, escape(e.author or ""), str(e.usage_count), (e.created_at or "")[:19]]
        if scores is not None:
            row.append(f"{scores[i]:.3f}")
        table.add_row(*row)
    return table


@app.command()
def add(
    statement: Annotated[Optional[str], typer.Argument(help="A free-text correction, e.g. 'The CEO of Acme is Jane Roe now.'")] = None,
    subject: Annotated[Optional[str], typer.Option(help="Fact edit: the subject, e.g. 'the US'.")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="Fact edit: template with {} for the subject.")] = None,
    target_new: Annotated[Optional[str], typer.Option(help="Fact edit: the corrected answer.")] = None,
    target_true: Annotated[Optional[str], typer.Option(help="Fact edit: the old answer, if known.")] = None,
    paraphrase: Annotated[Optional[list[str]], typer.Option(help="Fact edit: another phrasing (repeatable).")] = None,
    author: Annotated[Optional[str], typer.Option(help="Who made the correction.")] = None,
    source: Annotated[Optional[str], typer.Option(help="Where it came from (e.g. the chat message).")] = None,
    pending: Annotated[bool, typer.Option("--pending", help="Store as pending; it answers only once approved.")] = False,
    store: StoreOpt = None, namespace: NsOpt = DEFAULT_NAMESPACE, as_json: JsonOpt = False,
) -> None:
    """Store one correction (free text, or a fact with --subject/--prompt/--target-new) through the safety check.

    Refused (exit 2, nothing stored): instructions to the assistant, prompt markup, an answer for every question,
    another namespace named in the text, a statement with no concrete subject, an opinion. Held pending: encoded
    text, look-alike or invisible characters.
    """
    from .edits import Edit

    with _errors(as_json):
        if any(v is not None for v in (subject, prompt, target_new)):
            edit = Edit.fact(subject, prompt, target_new, target_true=target_true, paraphrases=paraphrase or (),  # type: ignore[arg-type]
                             statement=statement, namespace=namespace, author=author, source=source)
        elif statement is None:
            raise ValidationError("give a statement, or --subject, --prompt and --target-new")
        else:
            edit = Edit.text(statement, namespace=namespace, author=author, source=source)
    with _open(store, as_json) as s:
        # The one door every edit goes through (memedit.policy): the safety check refuses instructions, universal
        # answers, other namespaces, non-facts (exit 2, nothing stored) and holds encoded text pending. The operator
        # at the terminal reviews, so no rate limit and no contradiction hold: an active add supersedes, as before.
        from .policy import NamespacePolicy, Policy

        policy = Policy(s, default=NamespacePolicy(max_edits=0, check_contradictions=False))
        stored = policy.submit(edit, channel="cli", status="pending" if pending else None)
        superseded = stored.supersedes if stored.status == "active" else None
    if as_json:
        _emit(stored.to_dict())
    else:
        held = stored.meta.get("hold_reason")
        console.print(f"stored edit [bold]{stored.id}[/bold] ({stored.status})" +
                      (f", superseding edit {superseded}" if superseded else "") +
                      (f", held for review: {escape(held)}" if held else ""))


@app.command("list")
def list_(
    status: Annotated[Optional[list[str]], typer.Option(help="Only these statuses (repeatable).")] = None,
    author: Annotated[Optional[str], typer.Option(help="Only this author's edits.")] = None,
    text: Annotated[Optional[str], typer.Option(help="Only edits whose text contains this.")] = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", help="List every namespace.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    offset: Annotated[int, typer.Option(help="Skip this many (paging).")] = 0,
    store: StoreOpt = None, namespace: NsOpt = DEFAULT_NAMESPACE, as_json: JsonOpt = False,
) -> None:
    """List edits, newest first."""
    with _open(store, as_json, create=False) as s:
        ns = None if all_namespaces else namespace
        edits = s.list(ns, status=status or None, author=author, text=text, limit=limit, offset=offset)
        total = s.count(ns, status=status or None, author=author, text=text)
    if as_json:
        _emit({"total": total, "edits": [e.to_dict() for e in edits]})
    else:
        console.print(_edit_table(edits))
        console.print(f"{len(edits)} of {total}")


@app.command()
def show(edit_id: Annotated[int, typer.Argument(help="The edit's id.")], store: StoreOpt = None,
         as_json: JsonOpt = False) -> None:
    """Show one edit with its status, links and usage."""
    with _open(store, as_json, create=False) as s:
        edit = s.get(edit_id)
        usage = s.usage(edit_id, limit=10)
    if as_json:
        _emit({**edit.to_dict(), "recent_uses": usage})
        return
    for key, value in edit.to_dict().items():
        if value not in (None, [], {}, ""):
            console.print(f"[bold]{key}[/bold]: {escape(str(value))}", highlight=False)
    for u in usage:
        console.print(escape(f"  used {u['ts'][:19]} via {u['route']} (score {u['score']}): {u['question']}"), highlight=False)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="A question or phrase to look up.")],
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 5,
    status: Annotated[Optional[list[str]], typer.Option(help="Statuses to search (default: active).")] = None,
    store: StoreOpt = None, namespace: NsOpt = DEFAULT_NAMESPACE, as_json: JsonOpt = False,
) -> None:
    """Find the stored edits nearest to a question (namespace-filtered)."""
    with _open(store, as_json, create=False) as s:
        hits = s.search(query, namespace, k=k, statuses=tuple(status) if status else ("active",))
    if as_json:
        _emit([h.to_dict() for h in hits])
    else:
        console.print(_edit_table([h.edit for h in hits], [h.score for h in hits]))


@app.command()
def forget(
    edit_id: Annotated[int, typer.Argument(help="The edit to erase.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    actor: Annotated[Optional[str], typer.Option(help="Who is forgetting it (recorded).")] = None,
    store: StoreOpt = None, as_json: JsonOpt = False,
) -> None:
    """Erase an edit everywhere it went (database, WAL, index); a hash tombstone stays in the log."""
    with _open(store, as_json, create=False) as s:
        edit = s.get(edit_id)
        if not yes:
            if as_json or not sys.stdin.isatty():
                raise ValidationError("forget needs --yes when not run interactively")
            typer.confirm(f"Erase edit {edit_id} ({edit.sentence()!r})?", abort=True)
        report = s.forget(edit_id, actor=actor)
    if as_json:
        _emit(report)
    else:
        console.print(f"forgot edit {edit_id}" + ("" if report["checkpoint_complete"] else
                      " (WAL checkpoint pending: another process holds the store open)"))


def _lifecycle(action: str, edit_id: int, actor: str | None, store: str | None, as_json: bool) -> None:
    with _open(store, as_json, create=False) as s:
        edit = getattr(s, action)(edit_id, actor=actor)
    if as_json:
        _emit(edit.to_dict())
    else:
        console.print(f"edit {edit.id} is now {edit.status}")


@app.command()
def approve(edit_id: Annotated[int, typer.Argument(help="A pending edit.")],
            actor: Annotated[Optional[str], typer.Option(help="Who approves (recorded).")] = None,
            store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Approve a pending edit: it becomes active and supersedes older edits of the same fact."""
    _lifecycle("approve", edit_id, actor, store, as_json)


@app.command()
def reject(edit_id: Annotated[int, typer.Argument(help="A pending edit.")],
           actor: Annotated[Optional[str], typer.Option(help="Who rejects (recorded).")] = None,
           store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Reject a pending edit: it stays in history and never answers."""
    _lifecycle("reject", edit_id, actor, store, as_json)


@app.command()
def history(edit_id: Annotated[int, typer.Argument(help="The edit's id.")], store: StoreOpt = None,
            as_json: JsonOpt = False) -> None:
    """Show every event about an edit, oldest first, with its chain hash."""
    with _open(store, as_json, create=False) as s:
        events = s.history(edit_id)
        reading = None if as_json else _reading(s, edit_id)
    if as_json:
        _emit([e.to_dict() for e in events])
        return
    if reading:  # a statement read as (subject, relation, object) (issue 20): what MeLLo's hops see
        line = (f"read as: {reading['subject']} -[{reading['label']} ({reading['relation']})]-> {reading['object']}"
                f"  (from {reading['template']!r}, score {float(reading.get('score', 0)):.2f})")
        console.print(escape(line), highlight=False)
    table = Table()
    for col in ("seq", "time", "event", "actor", "details", "hash"):
        table.add_column(col, overflow="fold")
    for e in events:
        table.add_row(str(e.seq), e.ts[:19], e.kind, escape(e.actor or ""), escape(json.dumps(e.payload)), e.hash[:12])
    console.print(table)


def _reading(s: Any, edit_id: int) -> dict[str, Any] | None:
    """The edit's recorded (subject, relation, object) reading, if it has one (a forgotten edit has none)."""
    try:
        meta = s.get(edit_id).meta
    except MemeditError:
        return None
    reading = meta.get("triple") if isinstance(meta, dict) else None
    needed = ("subject", "label", "relation", "object", "template")
    return reading if isinstance(reading, dict) and all(isinstance(reading.get(k), str) for k in needed) else None


@app.command()
def verify(
    repair: Annotated[bool, typer.Option("--repair", help="Re-embed the edits whose stored vectors are damaged "
                                         "(loads the embedder), then check again.")] = False,
    store: StoreOpt = None, as_json: JsonOpt = False,
) -> None:
    """Check the event hash chain, every edit's content hash, every stored vector and the index; exit 1 on any problem."""
    repaired: list[int] = []
    with _open(store, as_json, create=False) as s:
        report = s.verify()
        if repair and report.damaged_vectors:
            repaired = s.repair_vectors(report.damaged_vectors)
            report = s.verify()
        index = s.check_index() if s.count() else {"consistent": True}
    ok = report.ok and index["consistent"]
    if as_json:
        _emit({**report.to_dict(), "index": index, "repaired": repaired, "ok": ok})
    else:
        console.print(f"{report.events} events, {report.edits} edits, head {report.head_hash[:16]}")
        for path in report.removed_leftovers:
            console.print(f"removed a leftover temporary index file (a writer crashed while saving): {escape(path)}",
                          highlight=False)
        if repaired:
            console.print(f"re-embedded the vectors of edit(s) {', '.join(map(str, repaired))}")
        for p in report.problems:
            console.print(f"[red]problem:[/red] {escape(p)}", highlight=False)
        if not index["consistent"]:
            console.print("[red]problem:[/red] the index does not match the database")
        console.print("[green]ok[/green]" if ok else "[red]FAILED[/red]")
    if not ok:
        raise typer.Exit(1)


@app.command()
def export(
    out: Annotated[Path, typer.Argument(help="File to write (JSON lines); '-' for stdout.")],
    store: StoreOpt = None,
    namespace: Annotated[Optional[str], typer.Option("--namespace", "-n", help="Only this namespace (default: all).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Export edits (tombstones included) as JSON lines; import gives back the same file."""
    with _open(store, as_json, create=False) as s:
        n = s.export_jsonl(sys.stdout if str(out) == "-" else out, namespace)
    if str(out) != "-":
        if as_json:
            _emit({"exported": n, "path": str(out)})
        else:
            console.print(f"exported {n} edits to {out}")


@app.command("import")
def import_(
    src: Annotated[Path, typer.Argument(help="A JSON lines file written by 'memedit export'.")],
    skip_existing: Annotated[bool, typer.Option(help="Skip edits whose uid is already stored.")] = False,
    actor: Annotated[Optional[str], typer.Option(help="Who imports (recorded).")] = None,
    store: StoreOpt = None, as_json: JsonOpt = False,
) -> None:
    """Import edits from JSON lines, all or nothing."""
    with _errors(as_json):
        if not src.is_file():  # before opening (and so creating) the store
            raise NotFoundError(f"no such file: {src}")
    with _open(store, as_json) as s:
        result = s.import_jsonl(src, actor=actor, skip_existing=skip_existing, progress=not as_json)
    if as_json:
        _emit(result)
    else:
        console.print(f"imported {result['imported']} edits" + (" (new ids assigned)" if result["remapped"] else ""))


@app.command()
def namespaces(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """List namespaces with their number of live edits."""
    with _open(store, as_json, create=False) as s:
        rows = s.namespaces()
    if as_json:
        _emit(rows)
    else:
        table = Table("namespace", "live edits", "created")
        for r in rows:
            table.add_row(r["name"], str(r["live"]), r["created_at"][:19])
        console.print(table)


@app.command()
def reindex(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Rebuild the vector index from the vectors kept in SQLite."""
    with _open(store, as_json, create=False) as s:
        n = s.rebuild_index()
    if as_json:
        _emit({"vectors": n})
    else:
        console.print(f"rebuilt the index: {n} vectors")


@app.command("copy-store")
def copy_store_(
    src: Annotated[str, typer.Argument(help="The store to copy: a SQLite file or a postgresql:// URL.")],
    dst: Annotated[str, typer.Argument(help="An empty store to copy into (created if missing): a file or a URL.")],
    actor: Annotated[Optional[str], typer.Option(help="Who copies (recorded in the destination's log with --no-history).")] = None,
    history: Annotated[bool, typer.Option("--history/--no-history", help="Also copy the event log, usage, notes and the "
                                          "weight ledger with its deltas (default), or only the edits.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Copy a store (edits with ids, tombstones, links; by default history and weight ledger too), e.g. SQLite -> PostgreSQL."""
    from .store.copy import copy_store

    with _errors(as_json):
        result = copy_store(src, dst, actor=actor, progress=not as_json, history=history)
    if as_json:
        _emit(result)
    else:
        extra = (f", {result['events']} events, {result['commits']} weight commits ({result['delta_blobs']} with deltas)"
                 if history else " (edits only; the destination's log starts here)")
        console.print(f"copied {result['imported']} edits{extra} from {result['source']} to {result['destination']}")


@app.command()
def demo(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """A short tour: store corrections, search them, show history, forget one."""
    from .demo import run_demo

    with _errors(as_json):
        result = run_demo(store or default_store_path(), console=None if as_json else console)
    if as_json:
        _emit(result)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
