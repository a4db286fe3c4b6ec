"""The ``memedit`` command group that imports its sub-commands on first use.

>>> from memedit.cli_lazy import LAZY_COMMANDS
>>> LAZY_COMMANDS["ledger"][0]
'memedit.commit_cli'

Each sub-command group lives beside its feature's code; importing them all
(models, evaluation, the web app) made ``memedit list`` pay for every one.
:class:`LazyGroup` lists them from :data:`LAZY_COMMANDS` and imports a
module only when its command is run (or ``--help`` lists every command).
"""
from __future__ import annotations

import importlib

import click
import typer
from typer.core import TyperGroup

#: sub-commands that live beside their feature's code, imported only when named (so `memedit list` loads no
#: model code): command -> (module, mounted as a group of that name (True, with this help) or merged at the top
#: level (False: the module's own command, with its own help))
LAZY_COMMANDS: dict[str, tuple[str, bool, str | None]] = {
    "models": ("memedit.models.cli", True, "List and prepare the packaged language models."),
    "scope": ("memedit.scope_cli", True, "Train and evaluate the scope classifier."),
    "serac": ("memedit.serac_cli", True, "Train SERAC's counterfactual adapter (LoRA)."),
    "ask": ("memedit.chat_cli", False, None),
    "chat": ("memedit.chat_cli", False, None),
    "commit": ("memedit.commit_cli", False, None),
    "ledger": ("memedit.commit_cli", False, None),
    "eval": ("memedit.eval.cli", True, "Evaluate editing quality on CounterFact / zsRE-format data."),
    "weights": ("memedit.methods.weights_cli", True, "Second-moment statistics and causal tracing for weight edits."),
    "serve": ("memedit.web.cli", False, None),
    "tokens": ("memedit.web.cli", False, None),
}


def lazy_command(name: str) -> click.Command | None:
    """The click command ``name`` of :data:`LAZY_COMMANDS`, mounted exactly as ``add_typer`` would mount it
    (None when its module is not installed, e.g. an optional extra)."""
    module, grouped, help_text = LAZY_COMMANDS[name]
    try:
        sub = importlib.import_module(module).app
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return None
    holder = typer.Typer(add_completion=False)
    holder.callback()(lambda: None)  # a callback keeps the holder a group even when it holds one command
    if grouped:
        holder.add_typer(sub, name=name, help=help_text)
    else:
        holder.add_typer(sub)
    return typer.main.get_command(holder).commands.get(name)  # type: ignore[attr-defined]


class LazyGroup(TyperGroup):
    """The top-level group: its own commands, then :data:`LAZY_COMMANDS`, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY_COMMANDS if n not in self.commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            command = lazy_command(cmd_name)
            if command is not None:
                self.commands[cmd_name] = command
        return command
