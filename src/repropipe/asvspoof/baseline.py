"""The classical reference countermeasure: LFCC-GMM, as the ASVspoof 2019 organisers' baseline.

Why: a deep model's EER means little until it is set against the classical system on the same
data; every model in the report is tested against this one. The organisers' B2 baseline models
bona fide and spoofed speech each with a diagonal-covariance GMM (512 components) on LFCC frames
with deltas and double deltas, and scores an utterance by the log-likelihood ratio
``mean_t log p(x_t | bona fide) - mean_t log p(x_t | spoof)`` (higher = more bona fide, the
convention of :mod:`repropipe.asvspoof.evaluate`). Here: scikit-learn's ``GaussianMixture`` on the
same LFCC features the LCNNs get (20 coefficients + deltas + double deltas, stored by the features
stage), with demo-sized mixtures (:data:`COMPONENTS`), fitted in seconds inside the evaluate stage
(like the EEG branch's CSP + LDA), seeded from the stage seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

COMPONENTS = 64  # the organisers use 512 on the full training set; 64 suits a few hundred utterances
MAX_FRAMES = 100_000  # per class: frames beyond this are subsampled (seeded) to keep the fit to seconds


def _frames(x: torch.Tensor) -> np.ndarray:
    """(n, features, T) -> (n * T, features) float64."""
    return x.float().permute(0, 2, 1).reshape(-1, x.shape[1]).double().numpy()


def fit(x: torch.Tensor, labels: np.ndarray, seed: int, components: int = COMPONENTS) -> dict[str, Any]:
    """One diagonal GMM per class (1 = bona fide, 0 = spoof) on the frames of the training utterances."""
    from sklearn.mixture import GaussianMixture

    labels = np.asarray(labels)
    if not ((labels == 1).any() and (labels == 0).any()):
        raise ValueError("LFCC-GMM needs bona fide and spoofed training utterances")
    rng = np.random.default_rng([seed, 2019])
    gmms = {}
    for cls in (1, 0):
        f = _frames(x[torch.from_numpy(np.flatnonzero(labels == cls))])
        if len(f) > MAX_FRAMES:
            f = f[np.sort(rng.choice(len(f), MAX_FRAMES, replace=False))]
        k = min(components, len(f))
        gmms[cls] = GaussianMixture(n_components=k, covariance_type="diag", max_iter=100, reg_covar=1e-3,
                                    random_state=seed, init_params="kmeans").fit(f)
    return {"bonafide": gmms[1], "spoof": gmms[0], "components": components}


def score(model: dict[str, Any], x: torch.Tensor) -> np.ndarray:
    """Per utterance: mean frame log-likelihood under bona fide minus under spoof."""
    n, _, t = x.shape
    f = _frames(x)
    llr = model["bonafide"].score_samples(f) - model["spoof"].score_samples(f)
    return llr.reshape(n, t).mean(1)
