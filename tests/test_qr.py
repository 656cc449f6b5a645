import pytest
import torch

from repropipe.qr import (
    QR,
    Orthogonalize,
    backward_normalization,
    backward_orthogonalization,
    householder_qr,
    modified_gram_schmidt,
    positive_diagonal,
    qr_fast,
    qr_memory_efficient,
)
from repropipe.qr.benchmark import saved_bytes, saved_elements

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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fn", [modified_gram_schmidt, qr_memory_efficient, qr_fast, householder_qr])
@pytest.mark.parametrize("shape", [(40, 7), (12, 12), (100, 1)])
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
@pytest.mark.parametrize("fn", [qr_memory_efficient, qr_fast])
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


def test_gradcheck_memory_efficient():
    A = rand(8, 3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: qr_memory_efficient(a), (A,))


@pytest.mark.parametrize("m,n", [(64, 8), (200, 17), (33, 33)])
def test_memory_efficient_saves_exactly_q_and_r(m, n):
    A = rand(m, n)
    assert saved_elements(qr_memory_efficient, A) == m * n + n * n
    assert saved_elements(qr_fast, A) == m * n + n * n
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
