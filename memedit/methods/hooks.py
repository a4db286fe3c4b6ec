"""Hooks as context managers that always clean up (after baukit's ``nethook``).

>>> import torch
>>> from memedit.methods.hooks import Trace, TraceDict
>>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
>>> with Trace(net, "0", retain_input=True) as t:
...     _ = net(torch.ones(1, 3))
>>> t.output.shape, t.input.shape
(torch.Size([1, 4]), torch.Size([1, 3]))
>>> with TraceDict(net, ["0", "2"], edit_output=lambda out, name: out * 0 if name == "2" else out):
...     net(torch.ones(1, 3)).abs().sum().item()
0.0
>>> sum(len(m._forward_hooks) for m in net.modules())   # nothing left behind
0

* ``retain_output`` / ``retain_input`` keep what passed through (the first
  positional argument, or the first keyword argument for modules called with
  keywords only); ``clone`` / ``detach`` copy it.
* ``edit_output(output, name) -> new_output`` replaces the module's output.
  Modules that return tuples (older transformers decoder layers) get the
  whole tuple; use :func:`first` / :func:`replace_first` inside the edit.
* ``stop=True`` raises :class:`StopForward` after the module ran, ending the
  forward pass early; the context manager swallows it. Use it to compute
  activations up to a layer without paying for the rest of the model.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Any, Callable, Iterable

import torch

from ..errors import ValidationError


class StopForward(Exception):
    """Raised by a hook with ``stop=True`` to end a forward pass early; swallowed by the context manager."""


def get_module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The submodule called ``name`` (as in ``model.named_modules()``); '' is the model itself.

    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    >>> get_module(net, "0").out_features
    2
    """
    if name == "":
        return model
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        raise ValidationError(f"{type(model).__name__} has no submodule {name!r}") from exc


def get_parameter(model: torch.nn.Module, name: str) -> torch.nn.Parameter:
    """The parameter called ``name`` (as in ``model.named_parameters()``)."""
    try:
        return model.get_parameter(name)
    except AttributeError as exc:
        raise ValidationError(f"{type(model).__name__} has no parameter {name!r}") from exc


def first(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a module output (the tensor itself, or the first element of a tuple)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def replace_first(output: Any, tensor: torch.Tensor) -> Any:
    """``output`` with its hidden-state tensor replaced (keeps tuple structure)."""
    if isinstance(output, tuple):
        return (tensor, *output[1:])
    if isinstance(output, list):
        return [tensor, *output[1:]]
    return tensor


def _copy(x: Any, clone: bool, detach: bool) -> Any:
    if not isinstance(x, torch.Tensor):
        return x
    if detach:
        x = x.detach()
    if clone:
        x = x.clone()
    return x


class Trace(contextlib.AbstractContextManager):
    """Hook one module of ``model`` for the duration of a ``with`` block.

    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    >>> with Trace(net, "0", stop=True) as t:
    ...     net(torch.zeros(1, 2))      # stops after module "0"; the exception is swallowed
    >>> t.output.shape
    torch.Size([1, 2])
    """

    def __init__(
        self,
        model: torch.nn.Module,
        layer: str | None = None,
        *,
        retain_output: bool = True,
        retain_input: bool = False,
        clone: bool = False,
        detach: bool = False,
        edit_output: Callable[..., Any] | None = None,
        stop: bool = False,
    ) -> None:
        module = get_module(model, layer or "")
        self.layer = layer
        self.input: Any = None
        self.output: Any = None
        self._stop = stop

        def hook(mod: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            if retain_input:
                value = args[0] if args else next(iter(kwargs.values()), None)
                self.input = _copy(value, clone, detach)
            if edit_output is not None:
                output = _call_edit(edit_output, output, layer)
            if retain_output:
                self.output = _copy(first(output) if isinstance(output, (tuple, list)) else output, clone, detach)
            if stop:
                raise StopForward()
            return output

        self._handle = module.register_forward_hook(hook, with_kwargs=True)

    def __enter__(self) -> "Trace":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)

    def close(self) -> None:
        """Remove the hook (idempotent)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def _call_edit(fn: Callable[..., Any], output: Any, layer: str | None) -> Any:
    new = fn(output, layer)
    return output if new is None else new


class TraceDict(OrderedDict, contextlib.AbstractContextManager):
    """Hook several modules at once; ``td[name]`` is each module's :class:`Trace`.

    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    >>> with TraceDict(net, ["0", "1"], retain_input=True) as td:
    ...     _ = net(torch.zeros(4, 2))
    >>> td["1"].input.shape, td["0"].output.shape
    (torch.Size([4, 3]), torch.Size([4, 3]))

    With ``stop=True`` the forward pass stops after the *last* of ``layers``
    (in the order given) has run.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        layers: Iterable[str],
        *,
        retain_output: bool = True,
        retain_input: bool = False,
        clone: bool = False,
        detach: bool = False,
        edit_output: Callable[..., Any] | None = None,
        stop: bool = False,
    ) -> None:
        super().__init__()
        names = list(dict.fromkeys(layers))
        if not names:
            raise ValidationError("TraceDict needs at least one layer name")
        try:
            for i, name in enumerate(names):
                self[name] = Trace(
                    model, name, retain_output=retain_output, retain_input=retain_input, clone=clone,
                    detach=detach, edit_output=edit_output, stop=stop and i == len(names) - 1,
                )
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "TraceDict":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)

    def close(self) -> None:
        """Remove every hook (idempotent)."""
        for trace in reversed(list(self.values())):
            trace.close()


@contextlib.contextmanager
def frozen(model: torch.nn.Module):
    """Eval mode and ``requires_grad=False`` on every parameter inside the block, restored afterwards.

    Gradients then flow only to tensors the caller creates (an edit's delta
    vector), and backward never computes weight gradients.
    """
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
