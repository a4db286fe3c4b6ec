"""EMMET: batched editing under an equality constraint (Gupta et al., 2024, "A Unified Framework for Model Editing").

>>> from memedit.methods import emmet                                          # doctest: +SKIP
>>> result = emmet.apply(model, tok, edits)     # model left bit-identical    # doctest: +SKIP

ROME and MEMIT both solve a *preservation-memorization* problem: keep the
outputs for the keys the layer already serves (``K0``, summarised by ``C0 =
K0 K0^T``) while writing new key-value pairs ``(K_E, V_E)``. MEMIT memorises
in the least-squares sense; EMMET (like ROME, for a whole batch) memorises
*exactly*:

    minimise  |Delta K0|^2   subject to   (W0 + Delta) K_E = V_E

whose closed form is

    Delta = (V_E - W0 K_E) (K_E^T C0^-1 K_E)^-1 K_E^T C0^-1 .

With one edit this is ROME's update. ``K_E^T C0^-1 K_E`` becomes
ill-conditioned when edits share a subject or keys are nearly parallel, so
``emmet_lambda`` adds ``lambda * mean(diag) * I`` to it (0 gives the exact
equality constraint). Keys, values and the spreading of the residual over
several layers are MEMIT's (:func:`memedit.methods.memit.batch_edit`); only
the closed form differs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import ValidationError
from .deltas import EditResult
from .memit import MemitHParams, Targets, batch_edit


@dataclass(frozen=True)
class EmmetHParams(MemitHParams):
    """MEMIT's hyperparameters plus ``emmet_lambda``, the relative regulariser of ``K^T C^-1 K``."""

    emmet_lambda: float = 0.1
    # ``for_model`` is MEMIT's: the same layers and lambda from the architecture table

    def validate(self) -> None:
        super().validate()
        if self.emmet_lambda < 0:
            raise ValidationError("emmet_lambda must be >= 0")


def emmet_solve(K: torch.Tensor, R: torch.Tensor, stats: Any, hp: EmmetHParams) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, V)`` with ``U @ V.T = R (K^T C^-1 K + lambda I)^-1 K^T C^-1``; ``K``: (n, d_in), ``R``: (n, d_out).

    >>> import torch
    >>> K = torch.randn(3, 8, dtype=torch.float64); R = torch.randn(3, 5, dtype=torch.float64)
    >>> U, V = emmet_solve(K, R, None, EmmetHParams(layers=(0,), emmet_lambda=0.0))
    >>> torch.allclose((U @ V.T) @ K.T, R.T)     # the equality constraint holds
    True
    """
    Kt = K.to(torch.float64).T  # (d_in, n)
    if stats is None:
        CinvK = Kt.clone()
    else:
        CinvK = stats.solve(Kt)  # (d_in, n), C regularised as in ROME
    D = Kt.T @ CinvK  # (n, n)
    if hp.emmet_lambda:
        D = D + hp.emmet_lambda * D.diagonal().mean() * torch.eye(D.shape[0], dtype=D.dtype, device=D.device)
    D = (D + D.T) / 2
    R64 = R.to(torch.float64)  # (n, d_out)
    # U = R^T D^-1  (d_out, n);  D symmetric
    try:
        U = torch.linalg.solve(D, R64).T
    except RuntimeError:  # singular without regularisation: least-squares (pseudo-inverse) solution
        U = (torch.linalg.pinv(D, hermitian=True) @ R64).T
    return U.contiguous(), CinvK


def apply(
    model: Any,
    tok: Any,
    edits: Sequence[Any],
    hparams: EmmetHParams | None = None,
    stats: dict[int, Any] | None = None,
    targets: Targets | None = None,
    progress: bool = False,
) -> EditResult:
    """Compute EMMET updates for all ``edits`` at once; one delta per layer, model untouched.

    ``targets``: precomputed target values (:func:`memedit.methods.memit.compute_targets`).
    """
    hp = hparams or EmmetHParams.for_model(model)
    return batch_edit(model, tok, edits, hp, stats, emmet_solve, "emmet", targets=targets, progress=progress)
