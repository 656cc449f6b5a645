import pytest
import torch

import repropipe.qr.functions as qr_functions
from repropipe.qr import (
    QR,
    Orthogonalize,
    backward_normalization,
    backward_orthogonalization,
    cholesky_qr2_forward,
    householder_forward,
    householder_qr,
    householder_solve_forward,
    mgs_forward,
    modified_gram_schmidt,
    positive_diagonal,
    qr_backward,
    qr_fast,
    qr_memory_efficient,
)
from repropipe.qr import bench
from repropipe.qr.evaluate import saved_bytes, saved_elements

F64 = torch.float64
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def rand(m, n, seed=0, device="cpu"):
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=F64).to(device)


def upstream(m, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=g, dtype=F64), torch.randn(n, n, generator=g, dtype=F64).triu()


def grad_of(fn, A, gQ, gR):
    A = A.clone().requires_grad_(True)
    Q, R = fn(A)
    torch.autograd.backward((Q, R), (gQ, gR))
    return A.grad


def rel(a, b):
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def fast_cholesky_qr2(A):
    return qr_fast(A, forward="cholesky_qr2")


def ill_conditioned(m, n, kappa, seed=0):
    """U diag(s) V^T with singular values log-spaced from 1 down to 1/kappa."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, n, generator=g, dtype=F64))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    s = torch.logspace(0, -torch.log10(torch.tensor(float(kappa))).item(), n, dtype=F64)
    return (U * s) @ V.mT


def orth_error(Q):
    return float(torch.linalg.norm(Q.mT @ Q - torch.eye(Q.shape[-1], dtype=Q.dtype, device=Q.device)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fn", [modified_gram_schmidt, qr_memory_efficient, qr_fast, fast_cholesky_qr2,
                                householder_qr])
@pytest.mark.parametrize("shape", [(40, 7), (12, 12), (100, 1), (300, 70)])
def test_factorisation_is_qr_with_positive_diagonal(fn, shape, device):
    A = rand(*shape, device=device)
    Q, R = fn(A)
    n = shape[1]
    assert Q.device == A.device and R.device == A.device
    assert torch.allclose(Q @ R, A, atol=1e-12)
    assert torch.allclose(Q.T @ Q, torch.eye(n, dtype=F64, device=device), atol=1e-12)
    assert torch.equal(R, R.triu())
    assert bool((torch.diagonal(R) > 0).all())


def test_mgs_matches_lapack_after_sign_fix():
    A = rand(30, 6)
    Q, R = modified_gram_schmidt(A)
    Qh, Rh = positive_diagonal(*torch.linalg.qr(A))
    assert torch.allclose(Q, Qh, atol=1e-12) and torch.allclose(R, Rh, atol=1e-12)


def test_backward_normalization_matches_autograd():
    x = rand(9, 1).squeeze(1).requires_grad_(True)
    gy, grho = rand(9, 1, seed=3).squeeze(1), torch.tensor(0.7, dtype=F64)
    rho = torch.linalg.vector_norm(x)
    y = x / rho
    torch.autograd.backward((y, rho), (gy, grho))
    ours = backward_normalization(y.detach(), rho.detach(), gy, grho)
    assert rel(ours, x.grad) < 1e-13


def test_backward_orthogonalization_matches_autograd():
    u = rand(9, 1).squeeze(1).requires_grad_(True)
    q = torch.nn.functional.normalize(rand(9, 1, seed=2).squeeze(1), dim=0).requires_grad_(True)
    r = torch.dot(q, u)
    u_out = u - r * q
    g_out, g_r = rand(9, 1, seed=4).squeeze(1), torch.tensor(-1.3, dtype=F64)
    torch.autograd.backward((u_out, r), (g_out, g_r))
    gu, gq = backward_orthogonalization(u.detach(), q.detach(), r.detach(), g_out, g_r)
    assert rel(gu, u.grad) < 1e-13 and rel(gq, q.grad) < 1e-13


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(25, 6), (64, 16), (10, 10)])
def test_qr_class_backward_matches_autograd_through_mgs(shape, device):
    A = rand(*shape, device=device)
    gQ, gR = (t.to(device) for t in upstream(*shape))
    reference = grad_of(modified_gram_schmidt, A, gQ, gR)
    layer = QR()
    Q, R = layer.forward(A)
    ours = layer.backward(gQ, gR)
    assert rel(ours, reference) < 1e-10
    # only Q's gradient given: the common case inside a model
    reference_q = grad_of(lambda a: (modified_gram_schmidt(a)[0], modified_gram_schmidt(a)[1] * 0), A, gQ, gR)
    assert rel(layer.backward(gQ, None), reference_q) < 1e-10


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fn", [qr_memory_efficient, qr_fast, fast_cholesky_qr2])
@pytest.mark.parametrize("which", ["Q", "R", "both"])
def test_q_and_r_only_backward_matches_linalg_qr(fn, which, device):
    A = rand(50, 12, device=device)
    gQ, gR = (t.to(device) for t in upstream(50, 12))
    if which == "Q":
        gR = torch.zeros_like(gR)
    if which == "R":
        gQ = torch.zeros_like(gQ)
    reference = grad_of(householder_qr, A, gQ, gR)
    assert rel(grad_of(fn, A, gQ, gR), reference) < 1e-10


@pytest.mark.parametrize("fn", [qr_memory_efficient, qr_fast, fast_cholesky_qr2])
@pytest.mark.parametrize("shape", [(8, 3), (5, 5), (9, 1)])
def test_gradcheck(fn, shape):
    A = rand(*shape).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: fn(a), (A,))


@pytest.mark.parametrize("fn", [qr_memory_efficient, qr_fast])
def test_gradgradcheck(fn):
    """create_graph=True takes the out-of-place path: second derivatives are right too."""
    A = rand(6, 3).requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda a: fn(a), (A,))


@pytest.mark.parametrize("fn", [qr_memory_efficient, qr_fast])
def test_gradcheck_batched(fn):
    A = rand(2 * 3 * 7, 3).reshape(2, 3, 7, 3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: fn(a), (A,))


@pytest.mark.parametrize("fn", [qr_memory_efficient, qr_fast, fast_cholesky_qr2])
@pytest.mark.parametrize("used", ["Q", "R"])
def test_unused_output_gets_no_materialised_zeros(fn, used):
    """A loss of Q alone (or R alone) hands the backward None for the other; same gradient as autograd."""
    A = rand(30, 6)
    W = rand(30, 6, seed=5) if used == "Q" else rand(6, 6, seed=5)

    def loss_grad(f):
        a = A.clone().requires_grad_(True)
        Q, R = f(a)
        ((Q if used == "Q" else R) * W).sum().backward()
        return a.grad

    assert rel(loss_grad(fn), loss_grad(householder_qr)) < 1e-10


@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
def test_qr_backward_leaves_upstream_gradients_alone_and_returns_row_major(batch):
    """Autograd may share dQ with other nodes: the backward must write only into its own buffer."""
    A = rand(40 * max(1, int(torch.tensor(batch).prod()) if batch else 1), 9).reshape(*batch, 40, 9)
    Q, R = householder_forward(A)
    gQ, gR = rand(A.numel() // 9, 9, seed=2).reshape(A.shape), rand(9, 9, seed=3).triu().expand(*batch, 9, 9)
    gQ_before, gR_before = gQ.clone(), gR.clone()
    grad = qr_backward(Q, R, gQ, gR)
    assert torch.equal(gQ, gQ_before) and torch.equal(gR, gR_before)
    assert grad.shape == A.shape and grad.is_contiguous()  # same layout as A: AccumulateGrad need not copy
    reference = grad_of(householder_qr, A, gQ, gR)
    assert rel(grad, reference) < 1e-10
    assert qr_backward(Q, R, None, None) is None


@pytest.mark.parametrize("batch", [(), (2,), (2, 2)])
@pytest.mark.parametrize("panel", [1, 3, 8, 9, 64])
@pytest.mark.parametrize("which", ["Q", "R", "both"])
def test_qr_backward_upper_triangle_panels_give_the_same_gradient(panel, batch, which):
    """Q^T dQ is computed panel by panel (upper triangle only); every panel size, ragged last panels
    and batches give the gradient of torch.linalg.qr, and a wrong lower triangle would not."""
    n = 9
    A = rand(30 * (int(torch.tensor(batch).prod()) if batch else 1), n).reshape(*batch, 30, n)
    Q, R = householder_forward(A)
    gQ = rand(A.numel() // n, n, seed=2).reshape(A.shape)
    gR = rand(n, n, seed=3).triu().expand(*batch, n, n).clone()
    if which == "Q":
        gR = None
    if which == "R":
        gQ = None
    grad = qr_backward(Q, R, gQ, gR, panel=panel)
    zQ, zR = torch.zeros_like(Q), torch.zeros_like(R)
    reference = grad_of(householder_qr, A, zQ if gQ is None else gQ, zR if gR is None else gR)
    assert rel(grad, reference) < 1e-10


def test_qr_backward_refuses_a_bad_panel():
    Q, R = householder_forward(rand(10, 3))
    with pytest.raises(ValueError, match="panel"):
        qr_backward(Q, R, torch.ones_like(Q), None, panel=0)


@pytest.mark.parametrize("fn", [qr_memory_efficient, qr_fast, fast_cholesky_qr2, mgs_forward, householder_forward,
                                householder_solve_forward])
@pytest.mark.parametrize("shape", [(50, 8), (100, 1), (6, 6), (520, 130)])
def test_forward_does_not_modify_its_input(fn, shape):
    A = rand(*shape)
    before = A.clone()
    fn(A)
    assert torch.equal(A, before)


@pytest.mark.parametrize("block", [1, 3, 8, 32, 200])
def test_blocked_mgs_is_mgs_to_rounding(block):
    A = rand(120, 37)
    Q, R = mgs_forward(A, block=block)
    Qr, Rr = modified_gram_schmidt(A)
    assert torch.allclose(Q, Qr, atol=1e-12) and torch.allclose(R, Rr, atol=1e-12)
    assert torch.equal(R, R.triu())


@pytest.mark.parametrize("kappa", [1e8, 1e10])
@pytest.mark.parametrize("block", [16, 32])
@pytest.mark.parametrize("shape", [(300, 40), (400, 64)])
def test_blocked_mgs_keeps_mgs_loss_of_orthogonality(shape, kappa, block):
    """||Q^T Q - I|| stays O(eps kappa) like MGS, not O(eps kappa^2) like classical Gram-Schmidt.

    On these matrices MGS and the blocked form give 0.3-1.0x eps kappa; dropping the (I + L)^{-1}
    correction (block classical Gram-Schmidt between panels) gives 11x to 9e5x.
    """
    A = ill_conditioned(*shape, kappa)
    eps = torch.finfo(F64).eps
    Q, R = mgs_forward(A, block=block)
    assert orth_error(Q) < 3 * eps * kappa
    assert rel(Q @ R, A) < 1e-14


def test_cholesky_qr2_orthogonal_to_working_precision_up_to_its_limit():
    for kappa in (1e2, 1e6, 1e7, 1e10, 1e14):  # past ~1e8 the Householder fallback takes over
        A = ill_conditioned(300, 40, kappa)
        Q, R = cholesky_qr2_forward(A)
        assert orth_error(Q) < 1e-13, kappa
        assert rel(Q @ R, A) < 1e-14, kappa


def test_cholesky_qr2_gram_over_several_panels():
    """n = 130 > PANEL: the Gram matrix is built from upper-triangle panels (a ragged last one) and mirrored."""
    A = ill_conditioned(400, 130, 1e6)
    assert rel(qr_functions._gram(A), A.mT @ A) < 1e-14
    assert torch.equal(qr_functions._gram(A), qr_functions._gram(A).mT)
    Q, R = cholesky_qr2_forward(A)
    assert orth_error(Q) < 1e-13
    assert rel(Q @ R, A) < 1e-14


def test_cholesky_qr2_falls_back_to_householder_when_first_pass_is_far_from_orthogonal(monkeypatch):
    A = rand(60, 10)
    Q, R = cholesky_qr2_forward(A)
    Qh, Rh = householder_forward(A)
    assert not torch.equal(Q, Qh)  # the Cholesky passes ran: same factorisation, other rounding
    assert torch.allclose(Q, Qh, atol=1e-12)
    monkeypatch.setattr(qr_functions, "CHOLQR2_MAX_DEPARTURE", 0.0)
    Qf, Rf = cholesky_qr2_forward(A)
    assert torch.equal(Qf, Qh) and torch.equal(Rf, Rh)


@pytest.mark.parametrize("batch", [(), (2,)])
def test_householder_solve_forms_q_from_r_on_tall_well_conditioned_input(batch):
    """Q = A R^{-1} (not orgqr's Q: other rounding) with LAPACK's R, as orthogonal as Householder's to 1.5x."""
    A = rand(520 * (batch[0] if batch else 1), 130).reshape(*batch, 520, 130)  # m = 4n, m n^2 >= SOLVE_MIN_WORK
    Q, R = householder_solve_forward(A)
    Qh, Rh = householder_forward(A)
    assert not torch.equal(Q, Qh) and torch.equal(R, Rh)
    assert Q.is_contiguous() and bool((torch.diagonal(R, dim1=-2, dim2=-1) > 0).all())
    assert rel(Q @ R, A) < 1e-14
    for q, qh in zip(Q.reshape(-1, 520, 130), Qh.reshape(-1, 520, 130)):
        assert orth_error(q) < 1.5 * orth_error(qh)


@pytest.mark.parametrize("kappa", [10, 1e4, 1e12])
def test_householder_solve_falls_back_to_orgqr_when_r_is_ill_conditioned(kappa):
    """Past the gate (kappa_2 above about 3 here) Q = A R^{-1} would lose orthogonality like eps kappa: orgqr."""
    A = ill_conditioned(520, 130, kappa)
    Q, R = householder_solve_forward(A)
    Qh, Rh = householder_forward(A)
    assert torch.equal(Q, Qh) and torch.equal(R, Rh)
    assert orth_error(Q) < 1e-13


def test_householder_solve_falls_back_on_exactly_rank_deficient_input():
    """A zero column and a repeated one: R is singular, its condition bound inf or NaN; orgqr's Q stays orthogonal."""
    A = rand(520, 130)
    A[:, 5] = 0
    A[:, 8] = A[:, 7]
    Q, R = householder_solve_forward(A)
    assert torch.equal(Q, householder_forward(A)[0])
    assert torch.isfinite(Q).all() and orth_error(Q) < 1e-13


def test_householder_solve_gate_follows_the_condition_bound(monkeypatch):
    A = rand(520, 130)
    monkeypatch.setattr(qr_functions, "_cond_bound", lambda R: torch.tensor(130 / 2 + 1.0, dtype=F64))
    assert torch.equal(householder_solve_forward(A)[0], householder_forward(A)[0])
    monkeypatch.setattr(qr_functions, "_cond_bound", lambda R: torch.tensor(130 / 2, dtype=F64))
    assert not torch.equal(householder_solve_forward(A)[0], householder_forward(A)[0])


@pytest.mark.parametrize("shape", [(511, 128), (520, 127), (60, 10)])
def test_householder_solve_leaves_small_or_squarish_matrices_to_orgqr(shape):
    """m < 4n, m n^2 < 2^23 (just), and small."""
    A = rand(*shape)
    assert torch.equal(householder_solve_forward(A)[0], householder_forward(A)[0])


def test_cond_bound_bounds_kappa_2():
    for kappa in (1.0, 3.0, 1e3):
        R = torch.linalg.qr(ill_conditioned(200, 40, kappa))[1]
        k2 = torch.linalg.cond(R)
        assert k2 <= qr_functions._cond_bound(R) * (1 + 1e-12) <= 40 * k2


def test_fast_default_forward_gradient_matches_linalg_qr_on_a_tall_matrix():
    A = rand(520, 130)
    gQ, gR = upstream(520, 130)
    assert rel(grad_of(qr_fast, A, gQ, gR), grad_of(householder_qr, A, gQ, gR)) < 1e-10


def test_fast_refuses_unknown_forward():
    with pytest.raises(ValueError, match="unknown forward"):
        qr_fast(rand(5, 2), forward="givens")


@pytest.mark.parametrize("m,n", [(64, 8), (200, 17), (33, 33)])
def test_memory_efficient_saves_exactly_q_and_r(m, n):
    A = rand(m, n)
    assert saved_elements(qr_memory_efficient, A) == m * n + n * n
    assert saved_elements(qr_fast, A) == m * n + n * n
    assert saved_elements(fast_cholesky_qr2, A) == m * n + n * n
    # autograd through MGS keeps every projection: far more, growing like m n^2
    assert saved_elements(modified_gram_schmidt, A) > m * n * (n - 1) / 2


def test_saved_bytes_grow_quadratically_for_autograd_mgs_only():
    m = 256
    small, large = rand(m, 8), rand(m, 32)
    ratio_mgs = saved_bytes("mgs_autograd", large) / saved_bytes("mgs_autograd", small)
    ratio_eff = saved_bytes("memory_efficient", large) / saved_bytes("memory_efficient", small)
    assert ratio_mgs > 10  # ~ (32/8)^2 = 16
    assert ratio_eff < 5   # ~ 32/8 = 4
    assert saved_bytes("qr_class", large) == (m * 32 + 32 * 32) * 8


def test_fast_variant_stays_orthogonal_on_nearly_rank_deficient_input():
    A = rand(40, 5)
    A[:, 4] = A[:, 3]  # exactly rank deficient: Cholesky of A^T A breaks down
    A[:, 4] += 1e-14 * rand(40, 1).squeeze(1)
    Q, R = qr_fast(A)
    assert torch.allclose(Q @ R, A, atol=1e-10)
    # one CholeskyQR pass would lose orthogonality entirely at kappa ~ 1e14
    assert torch.allclose(Q.T @ Q, torch.eye(5, dtype=F64), atol=1e-10)


def test_orthogonalize_layer_trains_inside_a_model():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(16, 4, dtype=F64))
    layer = Orthogonalize("memory_efficient")
    x = torch.randn(32, 16, dtype=F64)
    target = torch.randn(32, 4, dtype=F64)
    opt = torch.optim.SGD([weight], lr=0.1)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = ((x @ layer(weight) - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    Q = layer(weight)
    assert torch.allclose(Q.T @ Q, torch.eye(4, dtype=F64), atol=1e-10)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("fn", [modified_gram_schmidt, qr_memory_efficient, qr_fast])
def test_wide_matrix_is_refused(fn):
    with pytest.raises(ValueError, match="m >= n"):
        fn(rand(3, 5))


def test_unknown_layer_method_is_refused():
    with pytest.raises(ValueError, match="unknown QR method"):
        Orthogonalize("givens")


def test_bench_backward_measures_every_method_against_linalg():
    """The numbers the bench prints come with correct gradients and exact saved-element counts."""
    methods = ["fast", "memory_efficient", "fast_cholesky_qr2", "fast_householder"]
    results = bench.measure([(48, 6), (20, 20)], methods, repeats=2)
    assert [(r.m, r.n) for r in results] == [(48, 6), (20, 20)]
    for res in results:
        assert list(res.timings) == ["torch.linalg.qr", *methods]
        for meth, tm in res.timings.items():
            assert len(tm.total) == 2 and all(t > 0 for t in tm.total)
            assert res.grad_rel_diff[meth] < 1e-10
            assert res.saved_over_qr[meth] == 1.0
        assert res.ratio("torch.linalg.qr") == 1.0
    text = bench.format_results(results, "header")
    assert "48x6: fast " in text and "goal at 48x6: fast <= 0.9" in text
    q1, q3 = results[0].paired_quartiles("fast")
    assert min(results[0].paired_ratios("fast")) <= q1 <= results[0].paired_ratio("fast") <= q3
    assert f"quartiles {q1:.3f}-{q3:.3f}" in text


def test_bench_backward_rejects_bad_shapes_and_methods():
    assert bench.parse_shapes("4096x256,16384X128") == [(4096, 256), (16384, 128)]
    with pytest.raises(ValueError, match="not a tall matrix"):
        bench.parse_shapes("4x8")
    with pytest.raises(ValueError, match="MxN"):
        bench.parse_shapes("4096by256")
    with pytest.raises(ValueError, match="unknown method"):
        bench.measure([(8, 2)], ["givens"], repeats=1)


def test_bench_backward_is_a_cli_tool(capsys):
    from repropipe.cli import main

    assert main(["qr", "bench-backward", "--shapes", "24x4", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "interleaved medians of 1 rounds" in out and "24x4: fast " in out
