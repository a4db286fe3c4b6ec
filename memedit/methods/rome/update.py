"""Step 3: the closed-form rank-one update (ROME, eq. 2) that stores ``k* -> v*`` in the down projection.

>>> import torch
>>> from memedit.methods.rome.update import rank_one_update
>>> W = torch.randn(4, 6); k = torch.randn(6); v = torch.randn(4)
>>> u, c = rank_one_update(W, k, v, stats=None)          # without statistics C = I
>>> torch.allclose((W.double() + u @ c.T) @ k.double(), v.double(), atol=1e-6)
True

    Delta = (v* - W k*) (C^-1 k*)^T / ((C^-1 k*)^T k*)

so that ``(W + Delta) k* = v*`` exactly while keys the layer already serves
(summarised by ``C = E[k k^T]``) move as little as possible. ``k*`` is the
averaged key of :mod:`.keys`, and ``W k*`` is computed with that *same* key
(r-ROME): using one key for the update and another for the value is what
produced ROME's disabling edits.

Norm constraint: ``C`` is estimated from ~100k tokens of one kind of prose;
directions that prose rarely uses get tiny eigenvalues, and ``C^-1`` turns
them into large update components that other text does reach. ENCORE
(Gupta et al., 2025, "Lifelong Knowledge Editing requires Better
Regularization") adds a Frobenius-norm penalty on the update to the
preservation objective; with ROME's equality constraint

    min tr(Delta C Delta^T) + rho ||Delta||_F^2  s.t.  Delta k* = r
    =>  C + rho I  in place of C above

(``rho = damping * mean(diag C)``): a ridge, the same as shrinking the
estimate of ``C`` toward a multiple of the identity.

Protected keys (issue 19): keys ``k_1..k_m`` whose outputs must not move at
all (the subject's earlier tokens, which the model reads again whenever it
writes the subject's name). The update direction ``d`` then minimises
``d^T C d`` subject to ``d^T k* = 1`` and ``d^T k_j = 0``:

    d = C^-1 K (K^T C^-1 K)^-1 e_1,   K = [k*, k_1, ..., k_m],   Delta = (v* - W k*) d^T

which is ROME's direction when ``m = 0``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...errors import ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from ..stats import SecondMoment


def rank_one_update(
    W: torch.Tensor, key: torch.Tensor, value: torch.Tensor, stats: "SecondMoment | None", *,
    bias: torch.Tensor | None = None, damping: float | None = None, protected: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(u, c)`` with ``Delta = u @ c.T``: ``u`` is ``(out, 1)``, ``c = C^-1 k*`` is ``(in, 1)``.

    ``W`` is in math orientation ``(out, in)``; ``value`` is ``v*`` (the full
    target output, including ``bias`` when the layer has one). ``stats=None``
    uses ``C = I``. ``damping``: the ridge on ``C`` relative to its mean
    diagonal (the norm constraint, see the module docstring); None keeps the
    statistics' own. ``protected``: ``(m, in)`` keys the update must leave
    unchanged (see the module docstring). Computed in float64.
    """
    k = key.detach().to(torch.float64).reshape(-1)
    v = value.detach().to(torch.float64).reshape(-1)
    W64 = W.detach().to(device=k.device, dtype=torch.float64)
    if W64.shape != (v.numel(), k.numel()):
        raise ValidationError(f"update shapes do not match: W {tuple(W.shape)}, key {k.numel()}, value {v.numel()}")
    current = W64 @ k
    if bias is not None:
        current = current + bias.detach().to(device=k.device, dtype=torch.float64)
    c = stats.solve(k, damping) if stats is not None else k.clone()
    denom = torch.dot(c, k)
    if not torch.isfinite(denom) or denom.abs() < 1e-20:
        raise ValidationError("degenerate key (k^T C^-1 k is zero or not finite); the subject gives no usable key")
    if protected is not None and protected.numel():
        K = torch.cat([k[None, :], protected.detach().to(device=k.device, dtype=torch.float64)], 0).T  # (in, m+1)
        CiK = stats.solve(K, damping) if stats is not None else K.clone()
        gram = K.T @ CiK
        gram = gram + torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device) * 1e-9 * gram.diagonal().mean()
        e1 = torch.zeros(gram.shape[0], dtype=gram.dtype, device=gram.device)
        e1[0] = 1.0
        d = CiK @ torch.linalg.solve(gram, e1)
        if not torch.isfinite(d).all():
            raise ValidationError("the protected keys leave no usable update direction")
        return (v - current)[:, None], d[:, None]
    u = (v - current) / denom
    return u[:, None], c[:, None]
