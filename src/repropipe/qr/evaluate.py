"""The QR benchmark: memory, time and accuracy of every QR variant over a grid of shapes, and its results.

Saved-for-backward bytes are counted exactly with ``torch.autograd.graph.saved_tensors_hooks``
(each distinct storage once, the input A itself excluded since the caller holds it anyway);
peak RSS growth comes from memory_profiler and is noisy by nature (allocator caching), so it is
reported beside, never instead of, the exact count.

:func:`run` measures the grid the ``qr`` params ask for; :func:`write_results` splits what it found
into ``metrics.json`` (exact: saved bytes, slopes, errors; repeats byte for byte) and
``timings.json`` (measured: times and RSS). The measurement helpers here are also what
``python -m repropipe qr bench-backward`` (bench.py) times with.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil
import torch
from memory_profiler import memory_usage
from torch import Tensor

from repropipe import io
from repropipe.qr.backward import QR
from repropipe.qr.config import QRConfig
from repropipe.qr.functions import positive_diagonal, qr_fast, qr_memory_efficient
from repropipe.qr.gram_schmidt import modified_gram_schmidt

if TYPE_CHECKING:
    import pandas as pd

    from repropipe.stages import StageContext

log = logging.getLogger("repropipe.qr")

DATA_SOURCE = "none (random matrices, no dataset)"
NOISY_FIELDS = ("time_s", "time_ratio_to_linalg", "peak_rss_mib")  # measured, never repeat byte for byte

FwdBwd = Callable[[Tensor, Tensor, Tensor], Tensor]


def _autograd_fwd_bwd(fn: Callable[[Tensor], tuple[Tensor, Tensor]]) -> FwdBwd:
    def run(A: Tensor, gQ: Tensor, gR: Tensor) -> Tensor:
        A = A.detach().requires_grad_(True)
        Q, R = fn(A)
        torch.autograd.backward((Q, R), (gQ, gR))
        return A.grad
    return run


def _class_fwd_bwd(A: Tensor, gQ: Tensor, gR: Tensor) -> Tensor:
    qr = QR()
    qr.forward(A)
    return qr.backward(gQ, gR)


def _linalg_qr(A: Tensor) -> tuple[Tensor, Tensor]:
    return torch.linalg.qr(A, mode="reduced")


METHODS: dict[str, FwdBwd] = {
    "torch.linalg.qr": _autograd_fwd_bwd(_linalg_qr),
    "mgs_autograd": _autograd_fwd_bwd(modified_gram_schmidt),
    "qr_class": _class_fwd_bwd,
    "memory_efficient": _autograd_fwd_bwd(qr_memory_efficient),
    "fast": _autograd_fwd_bwd(qr_fast),
}

# Leading-order elements kept for backward, for the report's "theory" column.
THEORY = {
    "torch.linalg.qr": "m n + n^2 (Q, R)",
    "mgs_autograd": "~ m n^2 (every projection)",
    "qr_class": "m n + n^2 (Q, R; u recomputed)",
    "memory_efficient": "m n + n^2 (Q, R)",
    "fast": "m n + n^2 (Q, R)",
}


def saved_bytes(method: str, A: Tensor) -> int:
    """Bytes of distinct storages kept alive for backward by one forward pass."""
    if method == "qr_class":
        qr = QR()
        qr.forward(A)
        return sum(t.untyped_storage().nbytes() for t in qr.saved_tensors())
    fn = {"torch.linalg.qr": _linalg_qr, "mgs_autograd": modified_gram_schmidt,
          "memory_efficient": qr_memory_efficient, "fast": qr_fast}[method]
    A = A.detach().requires_grad_(True)
    seen: dict[int, int] = {A.untyped_storage().data_ptr(): 0}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        seen.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(A)
    del out
    return sum(seen.values())


def saved_elements(fn: Callable[[Tensor], tuple[Tensor, Tensor]], A: Tensor) -> int:
    """Number of elements handed to save_for_backward (no de-duplication), for the exact test."""
    A = A.detach().requires_grad_(True)
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(A)
    return total


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: nothing to trim, the measurement is only a little noisier
        return


def peak_rss_growth_mib(run: Callable[[], object]) -> float:
    _trim()
    base = psutil.Process().memory_info().rss / 2**20
    peak = memory_usage((run, (), {}), interval=0.002, max_usage=True, include_children=False)
    return max(0.0, float(peak) - base)


def median_time_s(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: first-call allocations and lazy init are not what we measure
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def accuracy(method: str, A: Tensor) -> tuple[float, float]:
    """||A - QR|| / ||A|| and ||Q^T Q - I||_F for the method's forward."""
    with torch.no_grad():
        if method == "qr_class":
            Q, R = QR().forward(A)
        elif method == "mgs_autograd":
            Q, R = modified_gram_schmidt(A)
        elif method == "torch.linalg.qr":
            Q, R = _linalg_qr(A)
        elif method == "memory_efficient":
            Q, R = qr_memory_efficient(A)
        else:
            Q, R = qr_fast(A)
    n = A.shape[1]
    recon = float(torch.linalg.norm(A - Q @ R) / torch.linalg.norm(A))
    orth = float(torch.linalg.norm(Q.mT @ Q - torch.eye(n, dtype=A.dtype)))
    return recon, orth


def reference_grad(A: Tensor, gQ: Tensor, gR: Tensor) -> Tensor:
    """Gradient through torch.linalg.qr with signs fixed so diag(R) > 0, like ours."""
    A = A.detach().requires_grad_(True)
    Q, R = positive_diagonal(*torch.linalg.qr(A, mode="reduced"))
    torch.autograd.backward((Q, R), (gQ, gR))
    return A.grad


@dataclass
class Row:
    method: str
    m: int
    n: int
    saved_bytes: int
    peak_rss_mib: float
    time_s: float
    time_ratio_to_linalg: float
    recon_error: float
    orth_error: float
    grad_rel_diff: float


def well_conditioned(m: int, n: int, seed: int, dtype: torch.dtype) -> Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + m * 1009 + n)
    return torch.randn(m, n, generator=g, dtype=dtype)


def run_grid(ms: list[int], ns: list[int], methods: list[str], repeats: int, seed: int,
             dtype: torch.dtype = torch.float64, progress: Callable[[str], None] | None = None) -> list[Row]:
    torch.manual_seed(seed)
    rows: list[Row] = []
    for m in ms:
        for n in ns:
            if n > m:
                continue
            A = well_conditioned(m, n, seed, dtype)
            g = torch.Generator().manual_seed(seed + 7)
            gQ = torch.randn(m, n, generator=g, dtype=dtype)
            gR = torch.randn(n, n, generator=g, dtype=dtype).triu()
            sign = torch.sign(torch.diagonal(torch.linalg.qr(A).R))
            ref = reference_grad(A, gQ, gR)
            base_time = None
            for method in methods:
                if progress:
                    progress(f"{method} m={m} n={n}")
                fwd_bwd = METHODS[method]
                # torch.linalg.qr has LAPACK's signs; feed it sign-flipped upstream gradients so
                # every method computes the gradient of the same loss.
                if method == "torch.linalg.qr":
                    args = (A, gQ * sign, gR * sign.unsqueeze(-1))
                else:
                    args = (A, gQ, gR)
                t = median_time_s(lambda: fwd_bwd(*args), repeats)
                if method == "torch.linalg.qr":
                    base_time = t
                grad = fwd_bwd(*args)
                rss = peak_rss_growth_mib(lambda: fwd_bwd(*args))
                recon, orth = accuracy(method, A)
                rows.append(Row(
                    method=method, m=m, n=n,
                    saved_bytes=saved_bytes(method, A),
                    peak_rss_mib=rss,
                    time_s=t,
                    time_ratio_to_linalg=t / base_time if base_time else math.nan,
                    recon_error=recon, orth_error=orth,
                    grad_rel_diff=float(torch.linalg.norm(grad - ref) / torch.linalg.norm(ref)),
                ))
    return rows


def fitted_slopes(rows: list[Row]) -> dict[str, dict[str, float]]:
    """Least-squares slope of log(saved bytes) against log(n) at the largest m, per method."""
    out: dict[str, dict[str, float]] = {}
    if not rows:
        return out
    m_max = max(r.m for r in rows)
    for method in sorted({r.method for r in rows}):
        pts = [(r.n, r.saved_bytes) for r in rows if r.method == method and r.m == m_max and r.saved_bytes > 0]
        if len(pts) < 2:
            continue
        x = np.log([p[0] for p in pts])
        y = np.log([p[1] for p in pts])
        slope = float(np.polyfit(x, y, 1)[0])
        ns = np.array([p[0] for p in pts], dtype=float)
        theory = (m_max * ns**2 / 2) if method == "mgs_autograd" else (m_max * ns + ns**2)
        theory_slope = float(np.polyfit(x, np.log(theory), 1)[0])
        out[method] = {"m": m_max, "fitted_slope": slope, "theory_slope": theory_slope}
    return out


def rows_as_dicts(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


@dataclass
class Benchmark:
    """One run of the grid with the params it ran under."""

    cfg: QRConfig
    rows: list[Row]
    slopes: dict[str, dict[str, float]]  # see fitted_slopes

    @property
    def headline_shape(self) -> tuple[int, int]:
        """The largest shape measured (4096 x 256 in the demo): where the report's table and ratios are taken."""
        return max((r.m, r.n) for r in self.rows)

    def at_headline(self) -> list[Row]:
        return [r for r in self.rows if (r.m, r.n) == self.headline_shape]

    def frame(self) -> "pd.DataFrame":
        import pandas as pd

        return pd.DataFrame(rows_as_dicts(self.rows))


def run(cfg: QRConfig, seed: int) -> Benchmark:
    """Measure every (m, n <= m, method) of the grid with ``cfg.threads`` torch threads, with a progress bar."""
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    todo = [(m, n, meth) for m in cfg.m for n in cfg.n if n <= m for meth in cfg.methods]
    bar = tqdm(total=len(todo), desc="qr_benchmark", unit="case")

    def progress(msg: str) -> None:
        bar.set_postfix_str(msg)
        bar.update(1)

    rows = run_grid(cfg.m, cfg.n, list(cfg.methods), cfg.repeats, seed, getattr(torch, cfg.dtype), progress)
    bar.close()
    return Benchmark(cfg, rows, fitted_slopes(rows))


def headline(bench: Benchmark) -> tuple[dict[str, float], dict[str, float]]:
    """At the headline shape: saved bytes (exact) and time ratios and peak RSS (measured)."""
    m, n = bench.headline_shape
    exact: dict[str, float] = {"headline_m": m, "headline_n": n}
    measured: dict[str, float] = {"headline_m": m, "headline_n": n}
    for r in bench.at_headline():
        measured[f"time_ratio/{r.method}"] = r.time_ratio_to_linalg
        measured[f"peak_rss_mib/{r.method}"] = r.peak_rss_mib
        exact[f"saved_bytes/{r.method}"] = r.saved_bytes
    return exact, measured


def write_results(ctx: "StageContext", bench: Benchmark, out: str | Path) -> None:
    """``out``/metrics.json (exact numbers; the grid and slopes in details.json, with provenance.json) and
    ``out``/timings.json (measured ones), kept apart so metrics.json repeats byte for byte; then the headline
    shape's numbers on the console."""
    out = Path(out)
    exact, measured = headline(bench)
    grid = rows_as_dicts(bench.rows)
    ctx.write_metrics(out / "metrics.json", {
        **exact,
        "slopes": bench.slopes,
        "grid": [{k: v for k, v in r.items() if k not in NOISY_FIELDS} for r in grid],
        "dtype": bench.cfg.dtype,
        "threads": bench.cfg.threads,
    }, data_source=DATA_SOURCE, device="cpu")
    io.atomic_write_json(out / "timings.json", {
        **measured,
        "grid": [{k: r[k] for k in ("method", "m", "n", *NOISY_FIELDS)} for r in grid],
    })
    log.info("qr_benchmark event=metrics %s", {k: v for k, v in measured.items() if k.startswith("time_ratio")})
    m, n = bench.headline_shape
    df = bench.frame()
    print(f"\nqr_benchmark at m={m}, n={n} ({bench.cfg.dtype}, CPU, {bench.cfg.threads} thread(s)):")
    print(df[(df.m == m) & (df.n == n)][["method", "saved_bytes", "peak_rss_mib", "time_s", "time_ratio_to_linalg",
                                         "grad_rel_diff"]].to_string(index=False))
