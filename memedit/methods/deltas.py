"""Weight deltas: what the weight editors return, and how they are applied.

>>> import torch
>>> from memedit.methods.deltas import LowRankDelta, apply_deltas
>>> net = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False))
>>> d = LowRankDelta("0.weight", U=torch.ones(2, 1), V=torch.ones(3, 1))
>>> before = net[0].weight.detach().clone()
>>> apply_deltas(net, [d])
>>> torch.allclose(net[0].weight, before + 1)
True
>>> apply_deltas(net, [d], sign=-1)
>>> torch.allclose(net[0].weight, before)
True

The editors (ROME, MEMIT, EMMET) are pure functions: they read the model,
return an :class:`EditResult` holding :class:`LowRankDelta` factors, and leave
the weights exactly as they found them (bit-identical). Applying, stacking and
reverting deltas is the caller's business (the commit ledger).

A delta is stored **in the parameter's own layout**: ``param.shape ==
(U.shape[0], V.shape[0])`` and ``dense() == U @ V.T``. For ``nn.Linear``
(``W`` is ``(out, in)``) ``U`` holds the value side and ``V`` the key side;
for GPT-2's ``Conv1D`` (``W`` stored ``(in, out)``) they are swapped when the
delta is built (:meth:`LowRankDelta.from_update`), so nothing downstream needs
to know the layout.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import torch

from ..errors import ValidationError
from .hooks import get_parameter


@dataclass
class LowRankDelta:
    """``W_new = W + U @ V.T`` for the parameter named ``param``.

    ``U``: ``(rows, r)``, ``V``: ``(cols, r)`` float32 CPU tensors, where the
    parameter's shape is ``(rows, cols)``.
    """

    param: str
    U: torch.Tensor
    V: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.param, str) or not self.param:
            raise ValidationError("LowRankDelta.param must be a parameter name")
        U = torch.as_tensor(self.U)
        V = torch.as_tensor(self.V)
        if U.dim() == 1:
            U = U[:, None]
        if V.dim() == 1:
            V = V[:, None]
        if U.dim() != 2 or V.dim() != 2 or U.shape[1] != V.shape[1]:
            raise ValidationError(
                f"LowRankDelta for {self.param}: U and V must be (rows, r) and (cols, r), got "
                f"{tuple(U.shape)} and {tuple(V.shape)}"
            )
        self.U = U.detach().to("cpu", torch.float32).contiguous()
        self.V = V.detach().to("cpu", torch.float32).contiguous()

    @classmethod
    def from_update(
        cls, param: str, value_side: torch.Tensor, key_side: torch.Tensor, *, transposed: bool = False
    ) -> "LowRankDelta":
        """A delta from the math orientation ``Delta = value_side @ key_side.T`` (``(out, r)``, ``(in, r)``).

        ``transposed=True`` (from the architecture table) stores it for a
        ``(in, out)`` weight such as GPT-2's Conv1D.
        """
        if transposed:
            return cls(param, U=key_side, V=value_side)
        return cls(param, U=value_side, V=key_side)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the parameter this delta applies to."""
        return (int(self.U.shape[0]), int(self.V.shape[0]))

    @property
    def rank(self) -> int:
        """Number of factor columns (an upper bound on the rank)."""
        return int(self.U.shape[1])

    def dense(self) -> torch.Tensor:
        """``U @ V.T`` in the parameter's shape (float32, CPU)."""
        return self.U @ self.V.T

    def norm(self) -> float:
        """Frobenius norm of the dense delta, computed from the factors."""
        gram = (self.U.T @ self.U) * (self.V.T @ self.V)
        return float(gram.sum().clamp(min=0).sqrt())

    def is_finite(self) -> bool:
        """Whether both factors hold only finite values."""
        return bool(torch.isfinite(self.U).all() and torch.isfinite(self.V).all())


@dataclass
class EditResult:
    """What a weight editor returns: the deltas, where they go, and what happened.

    ``stats`` holds timings per step (seconds), optimisation losses, update
    norms and target probabilities before/after (measured with the deltas
    applied temporarily).
    """

    deltas: list[LowRankDelta]
    method: str
    layers: list[int]
    stats: dict[str, Any] = field(default_factory=dict)

    def params(self) -> list[str]:
        """Names of the parameters the deltas touch."""
        return list(dict.fromkeys(d.param for d in self.deltas))


def apply_deltas(model: torch.nn.Module, deltas: Iterable[LowRankDelta], sign: int | float = +1) -> None:
    """Add ``sign * U @ V.T`` to each delta's parameter, in place, in the parameter's dtype and device.

    Every delta is checked (name exists, shape matches, finite) before any
    weight changes, so a bad delta leaves the model untouched.
    """
    deltas = list(deltas)
    targets = []
    for d in deltas:
        p = get_parameter(model, d.param)
        if tuple(p.shape) != d.shape:
            raise ValidationError(f"delta for {d.param} has shape {d.shape}, the parameter is {tuple(p.shape)}")
        if not d.is_finite():
            raise ValidationError(f"delta for {d.param} holds non-finite values; nothing was applied")
        targets.append((p, d))
    with torch.no_grad():
        for p, d in targets:
            U = d.U.to(device=p.device, dtype=torch.float32)
            V = d.V.to(device=p.device, dtype=torch.float32)
            if p.dtype == torch.float32:
                p.addmm_(U, V.T, alpha=sign)
            else:  # add in float32, round once into the parameter's dtype
                p.copy_((p.float() + sign * (U @ V.T)).to(p.dtype))


def snapshot(model: torch.nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Exact copies of the named parameters (for a bit-identical restore)."""
    return {n: get_parameter(model, n).detach().clone() for n in dict.fromkeys(names)}


def restore(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Copy saved parameter values back in place (bit-identical)."""
    with torch.no_grad():
        for n, value in saved.items():
            get_parameter(model, n).copy_(value)


@contextlib.contextmanager
def temporarily_applied(model: torch.nn.Module, deltas: Sequence[LowRankDelta]) -> Iterator[None]:
    """Apply ``deltas`` inside the block; the touched parameters are restored bit-identically afterwards.

    >>> net = torch.nn.Linear(2, 2, bias=False)
    >>> w = net.weight.detach().clone()
    >>> with temporarily_applied(net, [LowRankDelta("weight", torch.ones(2), torch.ones(2))]):
    ...     bool((net.weight != w).all())
    True
    >>> torch.equal(net.weight, w)
    True
    """
    saved = snapshot(model, [d.param for d in deltas])
    try:
        apply_deltas(model, deltas)
        yield
    finally:
        restore(model, saved)
