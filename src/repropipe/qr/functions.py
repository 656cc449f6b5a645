"""Differentiable QR variants that keep only Q and R for backward, and the layer built on them.

Every function here returns R with a positive diagonal (Gram-Schmidt's convention), so results
can be compared with each other directly and with LAPACK after :func:`positive_diagonal`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from repropipe.qr.backward import qr_backward
from repropipe.qr.gram_schmidt import modified_gram_schmidt, mgs_forward


def positive_diagonal(Q: Tensor, R: Tensor) -> tuple[Tensor, Tensor]:
    """Flip signs so diag(R) > 0: LAPACK's Householder QR does not promise a sign."""
    s = torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))
    s = torch.where(s == 0, torch.ones_like(s), s)
    return Q * s.unsqueeze(-2), R * s.unsqueeze(-1)


def householder_qr(A: Tensor) -> tuple[Tensor, Tensor]:
    """torch.linalg.qr (reduced) with the sign convention of this package; autograd backward."""
    return positive_diagonal(*torch.linalg.qr(A, mode="reduced"))


def _upper_cholesky(G: Tensor) -> tuple[Tensor, Tensor]:
    L, info = torch.linalg.cholesky_ex(G)
    return L.mT, info


@torch.no_grad()
def cholesky_qr2_forward(A: Tensor) -> tuple[Tensor, Tensor]:
    """CholeskyQR2 (Fukaya et al. 2014): two passes of R = chol(A^T A), Q = A R^{-1}.

    Two GEMMs and two triangular solves, all BLAS-3, instead of Householder's panel updates,
    which is why it is fast for tall-skinny A. One pass loses orthogonality like kappa(A)^2;
    the second pass restores it to machine precision as long as kappa(A) is below about
    eps^{-1/2} (1e8 in float64, 3e3 in float32). When the Cholesky factorisation breaks down
    (A numerically rank deficient for this method) we fall back to Householder QR.
    """
    R1, info1 = _upper_cholesky(A.mT @ A)
    if bool((info1 != 0).any()):
        return householder_qr(A)
    Q1 = torch.linalg.solve_triangular(R1, A, upper=True, left=False)
    R2, info2 = _upper_cholesky(Q1.mT @ Q1)
    if bool((info2 != 0).any()):
        return householder_qr(A)
    Q = torch.linalg.solve_triangular(R2, Q1, upper=True, left=False)
    return Q, R2 @ R1


class _QROnlyBackward(torch.autograd.Function):
    """Shared autograd wrapper: any forward, then the closed-form backward from Q and R."""

    @staticmethod
    def forward(ctx: Any, A: Tensor, forward_fn: Callable[[Tensor], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        if A.shape[-2] < A.shape[-1]:
            raise ValueError(f"expected tall matrices with m >= n, got shape {tuple(A.shape)}")
        Q, R = forward_fn(A)
        ctx.save_for_backward(Q, R)
        return Q, R

    @staticmethod
    def backward(ctx: Any, grad_Q: Tensor | None, grad_R: Tensor | None) -> tuple[Tensor, None]:
        Q, R = ctx.saved_tensors
        return qr_backward(Q, R, grad_Q, grad_R), None


def qr_memory_efficient(A: Tensor) -> tuple[Tensor, Tensor]:
    """MGS forward; saves exactly Q and R (m*n + n^2 values) and recomputes the rest."""
    return _QROnlyBackward.apply(A, mgs_forward)


def qr_fast(A: Tensor) -> tuple[Tensor, Tensor]:
    """CholeskyQR2 forward for tall-skinny A, with the same Q-and-R-only backward."""
    return _QROnlyBackward.apply(A, cholesky_qr2_forward)


QR_METHODS: dict[str, Callable[[Tensor], tuple[Tensor, Tensor]]] = {
    "householder": householder_qr,
    "mgs_autograd": modified_gram_schmidt,
    "memory_efficient": qr_memory_efficient,
    "fast": qr_fast,
}


class Orthogonalize(nn.Module):
    """Maps a tall weight or activation matrix to the Q factor of its QR decomposition.

    Use it where a model needs orthonormal columns (orthogonal projections, Stiefel-constrained
    weights) and gradients must flow through the orthogonalisation.
    """

    def __init__(self, method: str = "memory_efficient", return_r: bool = False) -> None:
        super().__init__()
        if method not in QR_METHODS:
            raise ValueError(f"unknown QR method {method!r}; expected one of {sorted(QR_METHODS)}")
        self.method = method
        self.return_r = return_r

    def forward(self, A: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        Q, R = QR_METHODS[self.method](A)
        return (Q, R) if self.return_r else Q

    def extra_repr(self) -> str:
        return f"method={self.method!r}, return_r={self.return_r}"
