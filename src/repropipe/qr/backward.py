r"""Hand-derived backward of modified Gram-Schmidt, and the class that uses it.

Notation: a bar is the gradient of a scalar loss :math:`L`, e.g. :math:`\bar y = \partial L/\partial y`.

**Normalisation.** :math:`y = x / \rho`, :math:`\rho = \lVert x \rVert_2`. Differentiating,
:math:`d\rho = y^\top dx` and :math:`dy = (I - y y^\top)\, dx / \rho`. Collecting the terms of
:math:`dL = \bar y^\top dy + \bar\rho\, d\rho` that multiply :math:`dx`:

.. math::
    \bar x = \frac{1}{\rho}\left(\bar y - y\,(y^\top \bar y)\right) + \bar\rho\, y .

**One orthogonalisation step.** :math:`r = q^\top u`, :math:`u' = u - r q`. Then
:math:`dr = q^\top du + u^\top dq` and :math:`du' = du - q\,dr - r\,dq`, so

.. math::
    dL = \bar u'^\top du' + \bar r\, dr
       = \bar u'^\top du - r\,\bar u'^\top dq + c\,(q^\top du + u^\top dq),
    \qquad c = \bar r - q^\top \bar u',

which gives

.. math::
    \bar u = \bar u' + c\, q, \qquad \bar q = -r\, \bar u' + c\, u .

**The whole factorisation.** Column :math:`k` of MGS is a chain of orthogonalisation steps
against :math:`q_0, \dots, q_{k-1}` followed by one normalisation. Walking the columns in
reverse (so that every use of :math:`q_k` in later columns has already added its
contribution to :math:`\bar q_k`) and each chain in reverse gives :math:`\bar A`. The inputs of
each step, :math:`u^{(j)}`, need not be stored: the step is invertible,
:math:`u^{(j)} = u^{(j+1)} + r_{jk} q_j` with :math:`u^{(k)} = r_{kk} q_k`, so :class:`QR`
keeps only Q and R and recomputes them on the way back.

**Closed form (Q and R only).** Summing those steps gives the known matrix expression for
:math:`A = QR`, :math:`m \ge n` (Walter & Lehmann 2018; Seeger et al. 2017):

.. math::
    M = R \bar R^\top - \bar Q^\top Q, \qquad
    \bar A = \left(\bar Q + Q\, \operatorname{copyltu}(M)\right) R^{-\top},

where :math:`\operatorname{copyltu}(M) = \operatorname{tril}(M) + \operatorname{tril}(M, -1)^\top`
mirrors the lower triangle. :func:`qr_backward` implements it with two GEMMs and one in-place
triangular solve; it is what the memory-efficient and fast variants use.
"""

from __future__ import annotations

import torch
from torch import Tensor

from repropipe.qr.gram_schmidt import _check_tall, mgs_forward


def backward_normalization(y: Tensor, rho: Tensor, grad_y: Tensor, grad_rho: Tensor | float = 0.0) -> Tensor:
    """Gradient w.r.t. x of (y = x/||x||, rho = ||x||), given the gradients of y and rho."""
    return (grad_y - y * torch.dot(y, grad_y)) / rho + grad_rho * y


def backward_orthogonalization(
    u: Tensor, q: Tensor, r: Tensor, grad_u_out: Tensor, grad_r: Tensor | float = 0.0
) -> tuple[Tensor, Tensor]:
    """Gradients w.r.t. (u, q) of (u' = u - (q.u) q, r = q.u), given those of u' and r."""
    c = grad_r - torch.dot(q, grad_u_out)
    return grad_u_out + c * q, -r * grad_u_out + c * u


class QR:
    """MGS with an explicit, autograd-free backward built from the two step gradients.

    Usage mirrors a hand-rolled layer: ``Q, R = qr.forward(A)``, then
    ``grad_A = qr.backward(grad_Q, grad_R)``. Only Q and R are kept between the two calls.
    """

    def __init__(self) -> None:
        self.Q: Tensor | None = None
        self.R: Tensor | None = None

    def forward(self, A: Tensor) -> tuple[Tensor, Tensor]:
        _check_tall(A)
        Q, R = mgs_forward(A.detach())
        self.Q, self.R = Q, R
        return Q, R

    def saved_tensors(self) -> tuple[Tensor, ...]:
        """What this object holds for backward (for the memory benchmark)."""
        return tuple(t for t in (self.Q, self.R) if t is not None)

    @torch.no_grad()
    def backward(self, grad_Q: Tensor | None, grad_R: Tensor | None = None) -> Tensor:
        if self.Q is None or self.R is None:
            raise RuntimeError("QR.backward called before forward")
        Q, R = self.Q, self.R
        m, n = Q.shape
        gQ = torch.zeros_like(Q) if grad_Q is None else grad_Q.clone()
        gR = torch.zeros_like(R) if grad_R is None else grad_R
        grad_A = torch.empty_like(Q)
        for k in range(n - 1, -1, -1):
            u = R[k, k] * Q[:, k]
            g = backward_normalization(Q[:, k], R[k, k], gQ[:, k], gR[k, k])
            for j in range(k - 1, -1, -1):
                q, r = Q[:, j], R[j, k]
                u = u + r * q  # recompute u^(j) from u^(j+1)
                g, g_q = backward_orthogonalization(u, q, r, g, gR[j, k])
                gQ[:, j] += g_q
            grad_A[:, k] = g
        return grad_A


def _mm_into(out: Tensor, a: Tensor, b: Tensor, *, beta: float = 1.0, alpha: float = 1.0) -> Tensor:
    """out <- beta*out + alpha*a@b in place, for matrices or one batch dimension (one GEMM call)."""
    if out.dim() == 2:
        return out.addmm_(a, b, beta=beta, alpha=alpha)
    return out.baddbmm_(a, b, beta=beta, alpha=alpha)


def _flat_batch(t: Tensor | None) -> Tensor | None:
    """(..., r, c) -> (batch, r, c) so that addmm/baddbmm cover every batch shape."""
    return None if t is None or t.dim() <= 3 else t.reshape(-1, *t.shape[-2:])


#: Row panel of :func:`qr_backward`'s :math:`Q^\top \bar Q`. Only the upper triangle of that n x n
#: product is read, so it is computed a panel of rows at a time, each panel from its diagonal
#: on: about (1 + b/n)/2 of the flops. Smaller panels skip more of the lower triangle but make
#: thinner GEMMs; 64 was the fastest on one core (MKL, 4096 x 256: 13 ms against 16 ms for the
#: full product; 32 and 96 within 0.5 ms of it). At n <= panel it is one GEMM, as before.
PANEL = 64


def qr_backward(Q: Tensor, R: Tensor, grad_Q: Tensor | None, grad_R: Tensor | None, *,
                panel: int = PANEL) -> Tensor | None:
    r"""Closed-form gradient of A = QR from Q and R alone (see the module docstring).

    Written for speed at tall-skinny sizes, where it is about two GEMMs with inner or outer
    dimension m and one triangular solve; everything else is n x n:

    1. :math:`N = \bar R R^\top - Q^\top \bar Q` (this is :math:`M^\top`): only its upper
       triangle is used, so the m-sized product is accumulated in place, ``panel`` rows at a
       time from the diagonal on (:func:`upper_product_into`): about 60 % of a full GEMM's
       flops at n = 256, and no m x n temporary,
    2. :math:`S = \operatorname{copyltu}(M) = \operatorname{triu}(N) + \operatorname{triu}(N, 1)^\top`
       (symmetric, n x n),
    3. :math:`B = \bar Q + Q S` into one fresh m x n buffer (``addmm``; the caller's
       :math:`\bar Q` is never written: autograd may hand the same tensor to other nodes),
    4. :math:`B \leftarrow B R^{-\top}` in place. ``solve_triangular(..., out=B)`` with a
       row-major B goes straight to one left-sided TRSM on :math:`B^\top` (column-major, the
       layout LAPACK wants) with no copy; a fresh output would first be copied into a
       column-major buffer and solved right-sided, about twice the time at 4096 x 256.

    That buffer is the only m x n allocation, and it is returned as the gradient (row-major, the
    layout of A, so AccumulateGrad keeps it without a copy). A missing gradient (None: autograd
    was told not to materialise zeros) skips its terms instead of multiplying zeros. Under
    ``create_graph=True`` (grad mode on and an input that requires grad) the same formula runs
    out of place, so that double backward works.
    """
    if panel < 1:
        raise ValueError(f"panel must be >= 1, got {panel}")
    if grad_Q is None and grad_R is None:
        return None
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (Q, R, grad_Q, grad_R)):
        return _qr_backward_differentiable(Q, R, grad_Q, grad_R)
    with torch.no_grad():
        return _qr_backward_in_place(Q, R, grad_Q, grad_R, panel)


def upper_product_into(N: Tensor, X: Tensor, Y: Tensor, *, alpha: float = 1.0, panel: int = PANEL) -> Tensor:
    """N <- N + alpha X^T Y on and above the diagonal (below it: unspecified), ``panel`` rows per GEMM.

    For products of which only one triangle is read (the backward's :math:`Q^\top \bar Q`, a
    Gram matrix before its Cholesky factorisation). Rows i:i+b of the upper triangle need only
    columns i: of Y, so each panel is one GEMM of b x (n - i) with inner dimension m, written
    into a view of N (strided views go to BLAS without a copy). Matrices or batches (..., m, n).
    """
    if panel < 1:
        raise ValueError(f"panel must be >= 1, got {panel}")
    n = N.shape[-1]
    if n <= panel:
        return _mm_into(N, X.mT, Y, alpha=alpha)
    for i in range(0, n, panel):
        e = min(i + panel, n)
        _mm_into(N[..., i:e, i:], X[..., :, i:e].mT, Y[..., :, i:], alpha=alpha)
    return N


def _qr_backward_in_place(Q: Tensor, R: Tensor, grad_Q: Tensor | None, grad_R: Tensor | None,
                          panel: int = PANEL) -> Tensor:
    shape = Q.shape
    if Q.dim() > 3:
        Q, R, grad_Q, grad_R = _flat_batch(Q), _flat_batch(R), _flat_batch(grad_Q), _flat_batch(grad_R)
    if grad_R is not None:
        N = torch.matmul(grad_R, R.mT)
    else:
        N = torch.zeros(R.shape, dtype=R.dtype, device=R.device)
    if grad_Q is not None:
        upper_product_into(N, Q, grad_Q, alpha=-1.0, panel=panel)
    S = N.triu_()
    S += N.triu(1).mT
    B = torch.empty(Q.shape, dtype=Q.dtype, device=Q.device)
    if grad_Q is None:
        torch.matmul(Q, S, out=B)
    else:
        B.copy_(grad_Q)
        _mm_into(B, Q, S)
    torch.linalg.solve_triangular(R.mT, B, upper=False, left=False, out=B)
    return B.reshape(shape)


def _qr_backward_differentiable(Q: Tensor, R: Tensor, grad_Q: Tensor | None, grad_R: Tensor | None) -> Tensor:
    """The same formula with out-of-place ops only, recorded by autograd (for double backward)."""
    N = Q.new_zeros(R.shape)
    if grad_R is not None:
        N = N + grad_R @ R.mT
    if grad_Q is not None:
        N = N - Q.mT @ grad_Q
    B = Q @ (N.triu() + N.triu(1).mT)
    if grad_Q is not None:
        B = B + grad_Q
    return torch.linalg.solve_triangular(R.mT, B, upper=False, left=False)
