"""Differentiable QR variants that keep only Q and R for backward, and the layer built on them.

Every function here returns R with a positive diagonal (Gram-Schmidt's convention), so results
can be compared with each other directly and with LAPACK after :func:`positive_diagonal`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from repropipe.qr.backward import qr_backward, upper_product_into
from repropipe.qr.gram_schmidt import modified_gram_schmidt, mgs_forward


def positive_diagonal(Q: Tensor, R: Tensor) -> tuple[Tensor, Tensor]:
    """Flip signs so diag(R) > 0: LAPACK's Householder QR does not promise a sign."""
    s = torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))
    s = torch.where(s == 0, torch.ones_like(s), s)
    return Q * s.unsqueeze(-2), R * s.unsqueeze(-1)


def householder_qr(A: Tensor) -> tuple[Tensor, Tensor]:
    """torch.linalg.qr (reduced) with the sign convention of this package; autograd backward."""
    return positive_diagonal(*torch.linalg.qr(A, mode="reduced"))


@torch.no_grad()
def householder_forward(A: Tensor) -> tuple[Tensor, Tensor]:
    """LAPACK Householder QR (geqrf + orgqr through torch.linalg.qr), no graph, diag(R) > 0, row-major Q.

    Orthogonal to working precision whatever kappa(A) is; ``qr_fast(A, forward="householder")``
    and the fallback of :func:`householder_solve_forward`.
    LAPACK hands Q back column-major; we copy it row-major, because the backward's ``Q @ S``
    into a row-major gradient is slower with a column-major Q by more than the copy costs
    (one thread, MKL: 9 ms against 4 ms at 4096 x 256, 19 ms against 8-14 ms at 16384 x 128).
    """
    Qc, R = torch.linalg.qr(A, mode="reduced")
    return _row_major_positive(Qc, R)


def _diagonal_signs(R: Tensor) -> Tensor:
    s = torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))
    return torch.where(s == 0, torch.ones_like(s), s)


def _row_major_positive(Qc: Tensor, R: Tensor) -> tuple[Tensor, Tensor]:
    """LAPACK's (column-major Q, R) -> row-major Q and diag(R) > 0, writing over both."""
    s = _diagonal_signs(R)
    Qc.mul_(s.unsqueeze(-2))  # in place, in memory order: cheap; then one transposing copy
    return Qc.contiguous(), R.mul_(s.unsqueeze(-1))


#: :func:`householder_solve_forward` forms Q = A R^{-1} only for m n^2 >= this and m >= SOLVE_MIN_ASPECT n
#: (squarer matrices are rarely well-conditioned enough to pass the gate). Below, the saving (a
#: TRSM of m n^2 flops in place of orgqr's 2 m n^2 - 2/3 n^3 and a transposing copy) is no larger
#: than the extra n x n work and calls (one core, MKL: 0.15 ms slower at 256 x 64, a tie at
#: 1024 x 64, 0.6 ms faster at 4096 x 64, 10 ms faster at 4096 x 256).
SOLVE_MIN_WORK = 2**23
SOLVE_MIN_ASPECT = 4


def _cond_bound(R: Tensor) -> Tensor:
    """sqrt(kappa_1(R) kappa_inf(R)), an upper bound on kappa_2(R) (||X||_2^2 <= ||X||_1 ||X||_inf)."""
    eye = torch.eye(R.shape[-1], dtype=R.dtype, device=R.device)
    Rinv = torch.linalg.solve_triangular(R, eye, upper=True)
    one = torch.linalg.matrix_norm(R, 1) * torch.linalg.matrix_norm(Rinv, 1)
    inf = torch.linalg.matrix_norm(R, float("inf")) * torch.linalg.matrix_norm(Rinv, float("inf"))
    return (one * inf).sqrt()


@torch.no_grad()
def householder_solve_forward(A: Tensor) -> tuple[Tensor, Tensor]:
    r"""Householder R (geqrf), and Q = A R^{-1} by one in-place TRSM when R is well-conditioned.

    The default forward of :func:`qr_fast`. R is LAPACK's Householder R, backward stable whatever
    kappa(A) is. Forming Q from A and R loses orthogonality like :math:`\varepsilon\,\kappa_2(A)`
    (against Householder's :math:`\varepsilon`), so it is used only when the bound
    :math:`\sqrt{\kappa_1(R)\kappa_\infty(R)} \ge \kappa_2(R)` is at most n/2 (from R^{-1}: n^3
    flops, about 2 ms at n = 256). On tall matrices with log-spaced singular values the gate admits kappa_2 up to about
    3, where ``||Q^T Q - I||`` stayed within 1.4x of Householder's (600 x 130 to 16384 x 128;
    random Gaussian tall matrices have kappa_2 of 1.2 to 3 and pass). Otherwise Q comes from orgqr
    on the same reflectors, exactly as :func:`householder_forward`. The TRSM runs on a row-major
    copy of A, so Q comes out row-major (the layout the backward wants) without a transposing
    copy; with orgqr's 2 m n^2 flops gone too, the forward is about 17 % faster at 4096 x 256.
    Small or squarish matrices (below :data:`SOLVE_MIN_WORK` / :data:`SOLVE_MIN_ASPECT`) go straight
    to :func:`householder_forward`.
    """
    m, n = A.shape[-2], A.shape[-1]
    if m * n * n < SOLVE_MIN_WORK or m < SOLVE_MIN_ASPECT * n:
        return householder_forward(A)
    a, tau = torch.geqrf(A)
    R = a[..., :n, :].triu()
    R.mul_(_diagonal_signs(R).unsqueeze(-1))
    d = torch.diagonal(R, dim1=-2, dim2=-1)
    # max r_ii / min r_ii <= kappa_2(R) <= the bound: a free first check that spares clearly
    # ill-conditioned R the inverse. NaN (singular R: 0/0, inf * 0) falls back too.
    if bool((~(d.amax(-1) <= n / 2 * d.amin(-1))).any()) or bool((~(_cond_bound(R) <= n / 2)).any()):
        return _row_major_positive(torch.linalg.householder_product(a, tau), a[..., :n, :].triu())
    Q = A.clone(memory_format=torch.contiguous_format)
    torch.linalg.solve_triangular(R, Q, upper=True, left=False, out=Q)
    return Q, R


#: CholeskyQR2 keeps its second pass only when the first left ``||Q1^T Q1 - I||_F`` below this.
#: Then every eigenvalue of Q1^T Q1 lies in [0.5, 1.5], kappa(Q1) <= sqrt(3), and the second
#: pass is orthogonal to working precision; above it (kappa(A) beyond about eps^{-1/2}) one
#: more pass is not enough and we use Householder instead.
CHOLQR2_MAX_DEPARTURE = 0.5


def _gram(X: Tensor) -> Tensor:
    """X^T X from its upper triangle (panels, about 60 % of a full GEMM at n = 256), mirrored."""
    n = X.shape[-1]
    G = torch.zeros(*X.shape[:-2], n, n, dtype=X.dtype, device=X.device)
    upper_product_into(G, X, X)
    G.triu_()
    return G + G.triu(1).mT


@torch.no_grad()
def cholesky_qr2_forward(A: Tensor) -> tuple[Tensor, Tensor]:
    """CholeskyQR2 (Fukaya et al. 2014): two passes of R = chol(X^T X), X <- X R^{-1}.

    Two Gram GEMMs and two triangular solves, all BLAS-3, instead of Householder's panel
    updates, which is why it is fast for tall-skinny A; the solves run in place on one copy of A.
    Numerical caveat: one pass loses orthogonality like eps kappa(A)^2, and the second pass
    restores it to machine precision only while kappa(A) is below about eps^{-1/2} (1e8 in
    float64, 3e3 in float32; Yamamoto et al. 2015, ETNA 44:306). Beyond that we fall back to
    Householder QR, detected cheaply: the Cholesky factorisation breaks down, or the first pass
    leaves ``||Q1^T Q1 - I||_F`` above :data:`CHOLQR2_MAX_DEPARTURE` (an n x n check on the Gram
    matrix the second pass computes anyway).
    """
    Q = A.clone(memory_format=torch.contiguous_format)
    G1 = _gram(Q)
    R1, info1 = torch.linalg.cholesky_ex(G1, upper=True)
    if bool((info1 != 0).any()):
        return householder_qr(A)
    # Row-major Q with out=Q: one left-sided TRSM on Q^T, no copy (see qr_backward).
    torch.linalg.solve_triangular(R1, Q, upper=True, left=False, out=Q)
    G2 = _gram(Q)
    eye = torch.eye(G2.shape[-1], dtype=G2.dtype, device=G2.device)
    departure = torch.linalg.matrix_norm(G2 - eye)
    R2, info2 = torch.linalg.cholesky_ex(G2, upper=True)
    if bool(((info2 != 0) | ~(departure <= CHOLQR2_MAX_DEPARTURE)).any()):
        return householder_qr(A)
    torch.linalg.solve_triangular(R2, Q, upper=True, left=False, out=Q)
    return Q, R2 @ R1


class _QROnlyBackward(torch.autograd.Function):
    """Shared autograd wrapper: any forward, then the closed-form backward from Q and R.

    Saves exactly Q and R. Gradients are not materialised: when the loss uses only Q (the usual
    case in a model) the backward gets ``grad_R=None`` and skips its terms rather than
    multiplying an n x n (or, for an unused Q, an m x n) block of zeros.
    """

    @staticmethod
    def forward(ctx: Any, A: Tensor, forward_fn: Callable[[Tensor], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        if A.shape[-2] < A.shape[-1]:
            raise ValueError(f"expected tall matrices with m >= n, got shape {tuple(A.shape)}")
        ctx.set_materialize_grads(False)
        Q, R = forward_fn(A)
        ctx.save_for_backward(Q, R)
        return Q, R

    @staticmethod
    def backward(ctx: Any, grad_Q: Tensor | None, grad_R: Tensor | None) -> tuple[Tensor | None, None]:
        Q, R = ctx.saved_tensors
        return qr_backward(Q, R, grad_Q, grad_R), None


def qr_memory_efficient(A: Tensor) -> tuple[Tensor, Tensor]:
    """MGS forward (blocked, see :func:`mgs_forward`); saves exactly Q and R (m*n + n^2 values)."""
    return _QROnlyBackward.apply(A, mgs_forward)


#: Forwards :func:`qr_fast` can use; all return R with a positive diagonal.
FAST_FORWARDS: dict[str, Callable[[Tensor], tuple[Tensor, Tensor]]] = {
    "householder_solve": householder_solve_forward,
    "householder": householder_forward,
    "cholesky_qr2": cholesky_qr2_forward,
}


def qr_fast(A: Tensor, forward: str = "householder_solve") -> tuple[Tensor, Tensor]:
    """Householder forward (LAPACK's R) with the Q-and-R-only backward; saves exactly Q and R.

    The time saved over ``torch.linalg.qr`` is in the backward (about two GEMMs and one in-place
    triangular solve, see :func:`repropipe.qr.backward.qr_backward`) and, for tall well-conditioned
    A, in the forward: :func:`householder_solve_forward` (the default) forms Q = A R^{-1} with one
    TRSM instead of orgqr, and falls back to orgqr (:func:`householder_forward`) when R's
    condition bound says that Q would lose orthogonality. ``forward="householder"`` always uses
    orgqr: orthogonal to working precision whatever kappa(A) is, plus one copy of Q into row-major.
    ``forward="cholesky_qr2"`` swaps in :func:`cholesky_qr2_forward`: all BLAS-3 and a handful of
    kernel launches (the better shape for a GPU), but 6 m n^2 flops against Householder's
    4 m n^2 - 4/3 n^3. On one CPU core it ties with ``householder`` at 4096 x 256 and 16384 x 128
    and is 5-15 % slower at 1024 x 256 and 4096 x 64
    (``python -m repropipe qr bench-backward --methods fast_householder,fast_cholesky_qr2``), and it is only
    orthogonal to working precision for kappa(A) below about eps^{-1/2} (it falls back to
    Householder above that).

    The memory-efficient variant's blocked MGS forward is faster still at m >> n (2 m n^2
    flops, mostly GEMM), but its Q loses orthogonality like eps kappa(A) whatever kappa(A) is.
    """
    if forward not in FAST_FORWARDS:
        raise ValueError(f"unknown forward {forward!r}; expected one of {sorted(FAST_FORWARDS)}")
    return _QROnlyBackward.apply(A, FAST_FORWARDS[forward])


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
