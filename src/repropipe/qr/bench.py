"""`python -m repropipe qr bench-backward`: forward+backward time of the QR variants against torch.linalg.qr.

The question it answers is a ratio on one machine: how long one differentiable QR (forward, then
backward with given upstream gradients dQ, dR) takes with our variants, divided by the same with
``torch.linalg.qr`` and its autograd backward. To make that ratio trustworthy on a machine that
other jobs are loading, the methods are **interleaved**: every round runs each method once, in an
order rotated by one each round, after one untimed warm-up round; the printed numbers are medians
over the rounds, and the ratio is the ratio of medians from this one run. Pin it to one core
(``taskset -c 1``) so the scheduler does not move it; the load average at the start and end is
printed so a reader can judge the noise.

For each method it prints the forward and backward split (timed separately inside each
round), wall and CPU time (on a loaded core the process's CPU time is the steadier estimate), the
median of the per-round ratios ("paired", robust to load that drifts across rounds), the
relative difference of its gradient to torch.linalg.qr's (signs fixed so diag(R) > 0), and the
number of elements it saved for backward divided by m n + n^2. No timing is asserted anywhere:
tests check gradients and saved elements; this prints numbers.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from repropipe.stages import tool

DEFAULT_SHAPES = "4096x256,1024x256,4096x64,16384x128"
DEFAULT_METHODS = "torch.linalg.qr,fast,memory_efficient"
#: Goals from issue 14 at the headline shape (ratio of interleaved medians, one thread, float64).
GOALS = {"fast": 0.9, "memory_efficient": 1.5}
BASE = "torch.linalg.qr"


@dataclass
class Timing:
    """Per-round times of one method at one shape, in seconds."""

    forward: list[float] = field(default_factory=list)
    backward: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def median(self, what: str) -> float:
        return statistics.median(getattr(self, what))


@dataclass
class ShapeResult:
    m: int
    n: int
    timings: dict[str, Timing]
    grad_rel_diff: dict[str, float]
    saved_over_qr: dict[str, float]

    def ratio(self, method: str, what: str = "total") -> float:
        """Ratio of medians: the number the goals are stated in."""
        return self.timings[method].median(what) / self.timings[BASE].median(what)

    def paired_ratios(self, method: str) -> list[float]:
        """Per round, method / torch.linalg.qr (the two ran back to back): their spread is the bench's noise."""
        return [a / b for a, b in zip(self.timings[method].total, self.timings[BASE].total)]

    def paired_ratio(self, method: str) -> float:
        """Median over rounds of (method / torch.linalg.qr) within the same round: robust to slow drifts in load."""
        return statistics.median(self.paired_ratios(method))

    def paired_quartiles(self, method: str) -> tuple[float, float]:
        """First and third quartile of the per-round ratios (both equal the ratio with fewer than two rounds)."""
        ratios = self.paired_ratios(method)
        if len(ratios) < 2:
            return ratios[0], ratios[0]
        q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        return q1, q3


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """"4096x256,1024x256" -> [(4096, 256), (1024, 256)]; tall shapes only."""
    shapes = []
    for part in text.split(","):
        try:
            m, n = (int(x) for x in part.lower().split("x"))
        except ValueError:
            raise ValueError(f"--shapes: expected MxN[,MxN...] like 4096x256, got {part!r}") from None
        if m < n or n < 1:
            raise ValueError(f"--shapes: {part!r} is not a tall matrix (need m >= n >= 1)")
        shapes.append((m, n))
    return shapes


def _forward_fns() -> dict[str, Callable[..., Any]]:
    import torch

    from repropipe.qr.functions import qr_fast, qr_memory_efficient
    from repropipe.qr.gram_schmidt import modified_gram_schmidt

    return {
        BASE: lambda A: torch.linalg.qr(A, mode="reduced"),
        "fast": qr_fast,
        "fast_householder": lambda A: qr_fast(A, forward="householder"),
        "fast_cholesky_qr2": lambda A: qr_fast(A, forward="cholesky_qr2"),
        "memory_efficient": qr_memory_efficient,
        "mgs_autograd": modified_gram_schmidt,
    }


def measure(shapes: list[tuple[int, int]], methods: list[str], repeats: int, dtype: Any = None,
            seed: int = 0) -> list[ShapeResult]:
    """Interleaved forward/backward timings of ``methods`` (always including torch.linalg.qr)."""
    import torch

    from repropipe.qr.evaluate import reference_grad, saved_elements, well_conditioned

    dtype = dtype or torch.float64
    fns = _forward_fns()
    unknown = [m for m in methods if m not in fns]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {sorted(fns)}")
    methods = [BASE] + [m for m in methods if m != BASE]
    results = []
    for m, n in shapes:
        A = well_conditioned(m, n, seed, dtype)
        g = torch.Generator().manual_seed(seed + 7)
        gQ = torch.randn(m, n, generator=g, dtype=dtype)
        gR = torch.randn(n, n, generator=g, dtype=dtype).triu()
        # LAPACK's signs differ from ours (diag R > 0): give torch.linalg.qr sign-flipped upstream
        # gradients so every method differentiates the same loss and the gradients are comparable.
        sign = torch.sign(torch.diagonal(torch.linalg.qr(A).R))
        upstream = {meth: ((gQ * sign, gR * sign.unsqueeze(-1)) if meth == BASE else (gQ, gR)) for meth in methods}
        timings = {meth: Timing() for meth in methods}
        grads: dict[str, Any] = {}

        def once(meth: str, record: bool) -> None:
            a = A.detach().requires_grad_(True)
            dq, dr = upstream[meth]
            c0, t0 = time.process_time(), time.perf_counter()
            Q, R = fns[meth](a)
            t1 = time.perf_counter()
            torch.autograd.backward((Q, R), (dq, dr))
            t2, c2 = time.perf_counter(), time.process_time()
            grads[meth] = a.grad
            if record:
                tm = timings[meth]
                tm.forward.append(t1 - t0)
                tm.backward.append(t2 - t1)
                tm.total.append(t2 - t0)
                tm.cpu.append(c2 - c0)

        for meth in methods:  # warm-up round: lazy init, first allocations
            once(meth, record=False)
        for r in range(repeats):
            k = r % len(methods)
            for meth in methods[k:] + methods[:k]:
                once(meth, record=True)
        ref = reference_grad(A, gQ, gR)
        results.append(ShapeResult(
            m=m, n=n, timings=timings,
            grad_rel_diff={meth: float(torch.linalg.norm(grads[meth] - ref) / torch.linalg.norm(ref))
                           for meth in methods},
            saved_over_qr={meth: saved_elements(fns[meth], A) / (m * n + n * n) for meth in methods},
        ))
    return results


def format_results(results: list[ShapeResult], header: str) -> str:
    lines = [header]
    for res in results:
        lines.append(f"\n{res.m}x{res.n}")
        lines.append(f"  {'method':18s} {'forward ms':>10s} {'backward ms':>11s} {'total ms':>9s} "
                     f"{'/linalg wall':>12s} {'/linalg cpu':>11s} {'paired':>7s} {'grad rel diff':>13s} "
                     f"{'saved/(mn+n^2)':>14s}")
        for meth, tm in res.timings.items():
            lines.append(f"  {meth:18s} {tm.median('forward') * 1e3:10.1f} {tm.median('backward') * 1e3:11.1f} "
                         f"{tm.median('total') * 1e3:9.1f} {res.ratio(meth):12.3f} {res.ratio(meth, 'cpu'):11.3f} "
                         f"{res.paired_ratio(meth):7.3f} {res.grad_rel_diff[meth]:13.1e} "
                         f"{res.saved_over_qr[meth]:14.3f}")
    head = results[0]
    lines.append("\nratios to torch.linalg.qr (forward+backward, interleaved medians, wall):")
    for res in results:
        ratios = ", ".join(f"{meth} {res.ratio(meth):.3f}" for meth in res.timings if meth != BASE)
        lines.append(f"  {res.m}x{res.n}: {ratios}")
    for meth, goal in GOALS.items():
        if meth in head.timings:
            r = head.ratio(meth)
            q1, q3 = head.paired_quartiles(meth)
            lines.append(f"goal at {head.m}x{head.n}: {meth} <= {goal}: {r:.3f} ({'met' if r <= goal else 'NOT met'}); "
                         f"per-round ratios, quartiles {q1:.3f}-{q3:.3f}")
    return "\n".join(lines)


def _arguments(p: Any) -> None:
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"comma-separated MxN, the first is the headline "
                   f"(default {DEFAULT_SHAPES})")
    p.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated, torch.linalg.qr always included "
                   f"(default {DEFAULT_METHODS}; fast_householder, fast_cholesky_qr2 and mgs_autograd are also known)")
    p.add_argument("--repeats", type=int, default=15, help="timed rounds per shape; medians printed (default 15: "
                   "with 9 one slow stretch could move the headline ratio by 0.1 on a shared machine)")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"), help="(default float64)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: per-core numbers)")
    p.add_argument("--seed", type=int, default=0)


@tool("qr", "bench-backward", help="Time forward+backward of the fast and memory-efficient QR against "
      "torch.linalg.qr, interleaved, and print medians, the forward/backward split and the ratios.",
      arguments=_arguments)
def bench_backward(args: Any) -> int:
    import torch

    torch.set_num_threads(args.threads)
    shapes = parse_shapes(args.shapes)
    methods = [m for m in args.methods.split(",") if m]
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a"
    load0 = os.getloadavg()
    results = measure(shapes, methods, max(1, args.repeats), getattr(torch, args.dtype), args.seed)
    load1 = os.getloadavg()
    header = (f"bench-backward: {args.dtype}, {torch.get_num_threads()} torch thread(s), CPU affinity {affinity}, "
              f"torch {torch.__version__}, interleaved medians of {max(1, args.repeats)} rounds (order rotated "
              f"each round, one warm-up round), load average (1/5/15 min) "
              f"{'/'.join(f'{x:.2f}' for x in load0)} -> {'/'.join(f'{x:.2f}' for x in load1)}")
    print(format_results(results, header))
    return 0
