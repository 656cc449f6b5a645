"""The QR benchmark's params, typed (mirrors ``qr`` in workflow/schemas/params.schema.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from repropipe.config import params_section

Method = Literal["torch.linalg.qr", "mgs_autograd", "qr_class", "memory_efficient", "fast"]


@params_section("qr")
@dataclass(frozen=True)
class QRConfig:
    """The grid (every m x n with n <= m, every method), its precision, threads and timing repeats."""

    dtype: Literal["float32", "float64"]
    threads: int
    m: list[int]
    n: list[int]
    repeats: int
    methods: list[Method]
