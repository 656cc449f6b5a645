"""QR orthogonalisation layer: MGS, hand-written backward, memory-efficient and fast variants."""

from repropipe.qr.backward import QR, backward_normalization, backward_orthogonalization, qr_backward
from repropipe.qr.functions import (
    QR_METHODS,
    Orthogonalize,
    cholesky_qr2_forward,
    householder_qr,
    positive_diagonal,
    qr_fast,
    qr_memory_efficient,
)
from repropipe.qr.gram_schmidt import mgs_forward, modified_gram_schmidt

__all__ = [
    "QR",
    "QR_METHODS",
    "Orthogonalize",
    "backward_normalization",
    "backward_orthogonalization",
    "cholesky_qr2_forward",
    "householder_qr",
    "mgs_forward",
    "modified_gram_schmidt",
    "positive_diagonal",
    "qr_backward",
    "qr_fast",
    "qr_memory_efficient",
]
