"""QR orthogonalisation layer: MGS, hand-written backward, memory-efficient and fast variants.

Names are loaded on first use (PEP 562) so that importing the stage registry does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "QR": "backward",
    "backward_normalization": "backward",
    "backward_orthogonalization": "backward",
    "qr_backward": "backward",
    "QR_METHODS": "functions",
    "Orthogonalize": "functions",
    "FAST_FORWARDS": "functions",
    "cholesky_qr2_forward": "functions",
    "householder_forward": "functions",
    "householder_solve_forward": "functions",
    "householder_qr": "functions",
    "positive_diagonal": "functions",
    "qr_fast": "functions",
    "qr_memory_efficient": "functions",
    "mgs_forward": "gram_schmidt",
    "modified_gram_schmidt": "gram_schmidt",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'repropipe.qr' has no attribute {name!r}")
    return getattr(importlib.import_module(f"repropipe.qr.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return __all__
