"""``memedit ask`` and ``memedit chat``: answer through the stored edits, and a chatbot that takes corrections.

    memedit ask "Who is the current president of the US?"
    memedit ask "Who is Hung-yi Lee?" --json
    memedit chat                          # interactive; /help lists the commands
    memedit chat --script turns.txt       # one user turn per line ('-' reads stdin); prints the transcript
    memedit chat --demo                   # a built-in short conversation, on a throw-away store

The two commands are plain functions (:func:`ask_command`, :func:`chat_command`)
so ``memedit.cli`` can mount them; :data:`app` holds both for a nameless
``add_typer``. Errors follow ``memedit.cli``: one line on stderr and exit code
2 (bad input), 3 (not found), 4 (conflict), 5 (store problem).
"""
from __future__ import annotations

import json
import logging
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterable, Iterator, Optional, TextIO

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .cli_common import StoreOpt
from .config import DEFAULT_NAMESPACE

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
#: the conversation ``memedit chat --demo`` plays: two corrections (one by command, one natural), then questions
DEMO_SCRIPT: tuple[str, ...] = (
    "/correct The most handsome person in the world is Hung-yi Lee.",
    "Actually, the current president of the US is Trump.",
    "Who is the most handsome person in the world?",
    "Who is the world's most handsome person?",
    "Who is Hung-yi Lee?",
    "Who is the current president of the US?",
    "What is the capital of France?",
)

console = Console(highlight=False, soft_wrap=True)  # soft_wrap: a transcript line stays one line when piped
app = typer.Typer(add_completion=False)

NsOpt = Annotated[str, typer.Option("--namespace", "-n", help="Namespace (tenant or user) whose edits answer.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
ModelOpt = Annotated[str, typer.Option(
    "--model", "-m", help="Base model: a registered name (see 'memedit models list') or a local directory.")]
PolicyOpt = Annotated[str, typer.Option(
    "--policy", help="How an in-scope question is answered: 'auto' (the route measured best for the model: SERAC "
                     "with its trained adapter for the packaged ones), 'ike' (the base model, prompted with the "
                     "edit) or 'serac' (a separate counterfactual model).")]
StatusOpt = Annotated[str, typer.Option(
    "--correction-status", help="'active': a correction answers at once; 'pending': it waits for 'memedit approve'.")]


@contextmanager
def _editor(store: "str | Path | None", namespace: str, model: str, policy: str, as_json: bool) -> Iterator[Any]:
    """An Editor over the store (created if missing), closed afterwards; memedit errors become exit codes."""
    from .cli_common import cli_errors as _errors

    with _errors(as_json):
        from .editor import Editor
        from .edits import validate_namespace
        from .store.open import open_store

        validate_namespace(namespace)
        s = open_store(store)
        try:
            editor = Editor(model=model, store=s, namespace=namespace, policy=policy)
            try:
                yield editor
            finally:
                editor.close()
        finally:
            s.close()


def _emit(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def _used_line(data: dict[str, Any]) -> str:
    ids, scores = data.get("edit_ids") or [], data.get("scores") or []
    used = ", ".join(f"edit {i} (P(scope)={p:.2f})" for i, p in zip(ids, scores))
    return f"[route: {data.get('route')}" + (f" | {used}" if used else "") + "]"


def ask_command(
    question: Annotated[str, typer.Argument(help="The question, e.g. 'Who is the current president of the US?'")],
    store: StoreOpt = None, namespace: NsOpt = DEFAULT_NAMESPACE, model: ModelOpt = DEFAULT_MODEL,
    policy: PolicyOpt = "auto", as_json: JsonOpt = False,
    trace: Annotated[bool, typer.Option("--trace", help="Show the steps behind the answer (MeLLo's hops).")] = False,
) -> None:
    """Answer a question through the stored edits; show the route and the edits used."""
    with _editor(store, namespace, model, policy, as_json) as editor:
        if namespace != DEFAULT_NAMESPACE:
            editor.store.require_namespace(namespace)  # a typo must not read as "no edits apply"
        answer = editor.ask(question, namespace=namespace)
    if as_json:
        _emit(answer.to_dict())
        return
    console.print(escape(answer.text))
    total = answer.timings_ms.get("total")
    console.print(f"[dim]route: {answer.route}  namespace: {escape(answer.namespace)}"
                  + (f"  ({total:.0f} ms)" if total else "") + "[/dim]")
    if answer.used:
        table = Table("id", "edit", "P(scope)", "similarity", "matched")
        for u in answer.used:
            table.add_row(str(u.edit.id), escape(u.edit.sentence()), f"{u.scope_probability:.3f}",
                          f"{u.similarity:.3f}", escape(u.matched_text))
        console.print(table)
    if trace:  # issue 5: sub-questions, tentative answers, retrieved edits, contradiction decisions
        from .methods.mello import format_trace

        console.print(escape(format_trace(answer.trace)) if answer.trace else "[dim](no steps: one model call)[/dim]")


def _read_script(script: str) -> list[str]:
    """User turns from a file ('-' for stdin): one per line; blank lines and '# comments' skipped."""
    if script == "-":
        text = sys.stdin.read()
    else:
        path = Path(script)
        if not path.is_file():
            from .errors import NotFoundError

            raise NotFoundError(f"no script file {script}")
        text = path.read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def play(session: Any, turns: Iterable[str], *, out: TextIO | None = None, as_json: bool = False) -> list[Any]:
    """Feed ``turns`` to a :class:`~memedit.chat.ChatSession`, printing the transcript (unless ``as_json``)."""
    done = []
    for line in turns:
        turn = session.handle(line)
        done.append(turn)
        if not as_json:
            _print_turn(turn, out)
        if turn.kind == "quit":
            break
    return done


def _print_turn(turn: Any, out: TextIO | None = None, *, echo_user: bool = True) -> None:
    c = Console(file=out, highlight=False, soft_wrap=True) if out is not None else console
    if echo_user:
        c.print(f"[bold]you>[/bold] {escape(turn.user)}")
    c.print(f"[bold]bot>[/bold] {escape(turn.reply)}")
    if turn.kind in ("answer", "correction"):
        c.print(f"     [dim]{escape(_used_line(turn.data))}[/dim]")
    elif turn.kind == "refused":  # the safety check's rule, so a transcript says which rule refused it
        line = f"[route: correction | refused: {turn.data.get('rule')}]"
        c.print(f"     [dim]{escape(line)}[/dim]")


def chat_command(
    script: Annotated[Optional[str], typer.Option(
        "--script", help="Play the user turns in this file (one a line; '-' for stdin) and print the transcript.")] = None,
    demo: Annotated[bool, typer.Option(
        "--demo", help="Play a short built-in conversation (corrections, then questions) on a throw-away store "
                       "unless --store is given.")] = False,
    store: StoreOpt = None, namespace: NsOpt = DEFAULT_NAMESPACE, model: ModelOpt = DEFAULT_MODEL,
    policy: PolicyOpt = "auto", correction_status: StatusOpt = "active", as_json: JsonOpt = False,
) -> None:
    """Chat with the model; corrections ('/correct ...', 'Actually, X is Y.') become stored edits.

    Corrections land in --namespace only; instructions to the assistant, answers for every question and statements
    with no concrete fact are refused with the reason (see memedit/safety.py).

    Interactive by default (/help, /edits, /forget ID, /quit); --script or --demo plays turns non-interactively.
    """
    from .chat import ChatSession, check_correction_status
    from .cli_common import cli_errors as _errors

    with _errors(as_json):
        check_correction_status(correction_status)
        if script is not None and demo:
            from .errors import ValidationError

            raise ValidationError("give --script or --demo, not both")
        turns = list(DEMO_SCRIPT) if demo else (_read_script(script) if script is not None else None)
    with tempfile.TemporaryDirectory(prefix="memedit-demo-") as tmp:
        # The demo must not leave its edits in the user's store: a throw-away one unless --store is named.
        path = store if store is not None or not demo else Path(tmp) / "demo.db"
        with _editor(path, namespace, model, policy, as_json) as editor:
            session = ChatSession(editor, namespace=namespace, correction_status=correction_status)
            if turns is not None:
                done = play(session, turns, as_json=as_json)
                if as_json:
                    _emit({"namespace": namespace, "policy": policy, "turns": [t.to_dict() for t in done]})
                return
            _interactive(session, as_json)


def _interactive(session: Any, as_json: bool) -> None:
    tty = sys.stdin.isatty()
    if tty and not as_json:
        console.print("[dim]memedit chat: ask anything, or correct me ('Actually, X is Y.'); /help, /quit[/dim]")
    while True:
        if tty and not as_json:
            console.print("[bold]you>[/bold] ", end="")
        line = sys.stdin.readline()
        if not line:
            break
        if not line.strip():
            continue
        turn = session.handle(line)
        if as_json:
            print(json.dumps(turn.to_dict(), ensure_ascii=False, default=str), flush=True)
        else:
            _print_turn(turn, echo_user=not tty)  # a terminal already shows what was typed
        if turn.kind == "quit":
            break


app.command("ask")(ask_command)
app.command("chat")(chat_command)
