"""What every CLI command group shares: the ``--store`` option and one way to report memedit's errors.

>>> import typer
>>> from memedit.cli_common import cli_errors
>>> from memedit.errors import NotFoundError
>>> try:
...     with cli_errors(as_json=True):
...         raise NotFoundError("no edit with id 7")
... except typer.Exit as e:
...     e.exit_code
{"error": "no edit with id 7", "type": "NotFoundError"}
3

Exit codes: 2 bad input, 3 not found, 4 conflict, 5 store problem, 1 anything else memedit reports.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from typing import Annotated, Iterator, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .errors import ConflictError, MemeditError, NotFoundError, StoreError, ValidationError, as_store_error

#: ``--store``: a SQLite file or a ``postgresql://`` URL (a str: a Path would collapse the URL's ``//``)
StoreOpt = Annotated[Optional[str], typer.Option(
    "--store", "-s", help="SQLite store file or postgresql:// URL (default ./stores/default.db or $MEMEDIT_STORE).")]
EXIT_CODES: dict[type[MemeditError], int] = {ValidationError: 2, NotFoundError: 3, ConflictError: 4, StoreError: 5}
err_console = Console(stderr=True)


def exit_code(exc: MemeditError) -> int:
    return next((c for t, c in EXIT_CODES.items() if isinstance(exc, t)), 1)


@contextmanager
def cli_errors(as_json: bool, where: object = None) -> Iterator[None]:
    """Turn memedit's errors into one line on stderr (or a JSON object on stdout) and a distinct exit code.

    A SQLite or file-system error (a damaged, foreign or unreachable store
    file) is a store problem, exit 5; ``where`` names the store in its message.
    """
    try:
        yield
    except MemeditError as exc:
        report_error(exc, as_json)
    except (sqlite3.Error, OSError) as exc:
        report_error(as_store_error(exc, where) or StoreError(str(exc)), as_json)


def report_error(exc: MemeditError, as_json: bool) -> NoReturn:
    """Print ``exc`` as one line on stderr (or a JSON object on stdout) and exit with its code."""
    if as_json:
        print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
    else:
        # escape: messages quote user input ('[/]' would be read as markup); soft_wrap: one line
        err_console.print(f"[red]error:[/red] {escape(single_line(str(exc)))}", highlight=False, markup=True,
                          soft_wrap=True)
    raise typer.Exit(exit_code(exc)) from None


def single_line(text: str) -> str:
    """``text`` on one line (a message quoting a path or input with line breaks must not span several)."""
    return " ".join(text.splitlines())


def int_list(text: str | None, option: str, *, unique_sorted: bool = False) -> list[int] | None:
    """A comma-separated list of integers from option ``option`` (None when not given); clear errors otherwise."""
    if text is None:
        return None
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValidationError(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise ValidationError(f"{option} is empty")
    return sorted(set(values)) if unique_sorted else values
