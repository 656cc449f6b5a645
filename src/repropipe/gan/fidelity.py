"""FID and KID through torch-fidelity, with real-image statistics cached as a stage output.

torch-fidelity downloads its Inception-v3 weights on first use. When ``feature_extractor_weights_path``
points at that .pth file (weights-inception-2015-12-05-6726825d.pth), the standard
``inception-v3-compat`` extractor is used and the numbers are comparable to published FID. Without
it (no network here), a fallback is registered with torch-fidelity under a name that says what it
is: a fixed, randomly initialised (seed 20240905, independent of params) three-layer conv net
whose pooled activations stand in for Inception features. Its FID/KID rank generators sensibly
but are NOT comparable to published values; metrics.json and the report say so.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from repropipe import io

log = logging.getLogger("repropipe.gan")

FALLBACK = "repropipe-random-conv-fallback"
INCEPTION = "inception-v3-compat"
REAL_CACHE_NAME = "repropipe-gan-real"
META = "meta.json"
_FALLBACK_SEED = 20240905


def _fallback_class() -> type:
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class RandomConvFallback(FeatureExtractorBase):
        """Fixed random conv features (64x64 input): 3 strided convs, ReLU, mean + 2x2 pooling -> 320 dims."""

        def __init__(self, name: str, features_list: list[str], **kwargs: Any) -> None:
            super().__init__(name, features_list)
            g = torch.Generator().manual_seed(_FALLBACK_SEED)
            self.convs = nn.ModuleList([nn.Conv2d(3, 32, 4, 2, 1), nn.Conv2d(32, 64, 4, 2, 1), nn.Conv2d(64, 128, 4, 2, 1)])
            with torch.no_grad():
                for c in self.convs:
                    fan_in = c.in_channels * c.kernel_size[0] * c.kernel_size[1]
                    c.weight.copy_(torch.randn(c.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                    c.bias.zero_()
            self.requires_grad_(False)
            self.eval()

        @staticmethod
        def get_provided_features_list() -> tuple[str, ...]:
            return ("pool",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric: str) -> str:
            return "pool"

        @staticmethod
        def can_be_compiled() -> bool:
            return False

        @staticmethod
        def get_dummy_input_for_compile() -> torch.Tensor:
            return torch.zeros(1, 3, 64, 64, dtype=torch.uint8)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            x = x.float()
            if x.shape[-1] != 64 or x.shape[-2] != 64:
                x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
            h = (x - 128.0) / 128.0
            h1 = F.relu(self.convs[0](h))
            h2 = F.relu(self.convs[1](h1))
            h3 = F.relu(self.convs[2](h2))
            feats = torch.cat([h1.mean((2, 3)), h2.mean((2, 3)), h3.mean((2, 3)),
                               F.adaptive_avg_pool2d(h3, 2).flatten(1)[:, :96]], dim=1)
            return (feats,)

    return RandomConvFallback


def register_fallback() -> None:
    """Register the fallback extractor with torch-fidelity once per process."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if FALLBACK not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(FALLBACK, _fallback_class())


def extractor_settings(weights_path: str | None) -> dict[str, Any]:
    """torch-fidelity kwargs for the extractor, plus whether the numbers compare to published FID."""
    if weights_path:
        if not Path(weights_path).is_file():
            raise FileNotFoundError(f"gan.fidelity.feature_extractor_weights_path: no such file {weights_path!r} "
                                    "(torch-fidelity's weights-inception-2015-12-05-6726825d.pth)")
        return {"feature_extractor": INCEPTION, "feature_extractor_weights_path": str(weights_path),
                "comparable_to_published": True}
    register_fallback()
    return {"feature_extractor": FALLBACK, "comparable_to_published": False}


def _kwargs(settings: dict[str, Any], cuda: bool) -> dict[str, Any]:
    kw = {k: v for k, v in settings.items() if k != "comparable_to_published"}
    return {**kw, "cuda": cuda, "verbose": False, "batch_size": 100, "save_cpu_ram": True}


def cache_real_statistics(images: torch.Tensor, cache_dir: str | os.PathLike[str], settings: dict[str, Any],
                          cuda: bool, extra_meta: dict[str, Any]) -> dict[str, Any]:
    """Compute features and FID statistics of the real images once, into torch-fidelity's cache."""
    import torch_fidelity

    from repropipe.gan.features import Uint8Images

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    ds = Uint8Images(images)
    # input2 = the same cache entry: the features are computed once and every other lookup hits the cache
    torch_fidelity.calculate_metrics(input1=ds, input2=ds, input1_cache_name=REAL_CACHE_NAME,
                                     input2_cache_name=REAL_CACHE_NAME, cache_root=str(cache_dir), cache=True,
                                     fid=True, kid=True, kid_subset_size=2, kid_subsets=1,  # KID of real vs itself is not needed
                                     **_kwargs(settings, cuda))
    meta = {"cache_name": REAL_CACHE_NAME, "num_real": len(ds), **settings, **extra_meta}
    io.atomic_write_json(cache_dir / META, meta)
    return meta


class _CacheOnly(torch.utils.data.Dataset):
    """Stands in for the real images: touching it means the cached statistics were not found."""

    def __init__(self, n: int, cache_dir: Path) -> None:
        self.n, self.cache_dir = n, cache_dir

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        raise RuntimeError(f"{self.cache_dir}: cached real-image features not found; re-run gan_real_stats")


def read_meta(cache_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(cache_dir) / META
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the gan_real_stats stage first")
    return json.loads(path.read_text())


def fid_kid(fake: torch.Tensor, cache_dir: str | os.PathLike[str], kid_subset_size: int, cuda: bool) -> dict[str, float]:
    """FID and KID of uint8 samples [n, 3, H, W] against the cached real statistics."""
    import torch_fidelity

    from repropipe.gan.features import Uint8Images

    cache_dir = Path(cache_dir)
    meta = read_meta(cache_dir)
    settings = {k: meta[k] for k in ("feature_extractor", "feature_extractor_weights_path") if k in meta}
    if meta["feature_extractor"] == FALLBACK:
        register_fallback()
    subset = min(kid_subset_size, len(fake), meta["num_real"])
    out = torch_fidelity.calculate_metrics(
        input1=Uint8Images(fake), input2=_CacheOnly(meta["num_real"], cache_dir),
        input2_cache_name=meta["cache_name"], cache_root=str(cache_dir), cache=True,
        fid=True, kid=True, kid_subset_size=subset, **_kwargs(settings, cuda))
    return {"fid": float(out["frechet_inception_distance"]), "kid_mean": float(out["kernel_inception_distance_mean"]),
            "kid_std": float(out["kernel_inception_distance_std"]), "kid_subset_size": subset}


def features(fake: torch.Tensor, cache_dir: str | os.PathLike[str], cuda: bool) -> tuple[Any, Any]:
    """Feature vectors (numpy, float64) of the samples and of the cached real images, from the same extractor
    and layer torch-fidelity's FID uses: the raw material of the FID bootstrap."""
    import torch_fidelity.utils as tu

    from repropipe.gan.features import Uint8Images

    cache_dir = Path(cache_dir)
    meta = read_meta(cache_dir)
    settings = {k: meta[k] for k in ("feature_extractor", "feature_extractor_weights_path") if k in meta}
    if meta["feature_extractor"] == FALLBACK:
        register_fallback()
    kw = {**_kwargs(settings, cuda), "input1": Uint8Images(fake), "input2": _CacheOnly(meta["num_real"], cache_dir),
          "input2_cache_name": meta["cache_name"], "cache_root": str(cache_dir), "cache": True, "fid": True}
    layer = tu.resolve_feature_layer_for_metric("fid", **kw)
    extractor = tu.create_feature_extractor(tu.resolve_feature_extractor(**kw), [layer], **kw)
    f_fake = tu.extract_featuresdict_from_input_id(1, extractor, **kw)[layer]
    f_real = tu.extract_featuresdict_from_input_id_cached(2, extractor, **kw)[layer]
    return f_fake.double().numpy(), f_real.double().numpy()


class FIDBootstrap:
    """FID of resampled generated samples against fixed real statistics, fast enough to repeat.

    The real side (mean ``mu_r``, covariance ``S_r``) stays fixed: its images are not what is being
    evaluated. For weights ``w`` over the generated feature rows, the weighted mean and covariance give
    ``|mu - mu_r|^2 + tr S + tr S_r - 2 tr sqrt(S_r^1/2 S S_r^1/2)``; the last trace is the sum of
    square roots of the eigenvalues of a symmetric matrix (``eigvalsh``), with ``S_r^1/2`` computed once:
    the same value as torch-fidelity's ``tr sqrt(S S_r)`` without a general eigensolver per replicate.
    """

    def __init__(self, fake: Any, real: Any):
        import numpy as np

        self.f = np.asarray(fake, dtype=np.float64)
        real = np.asarray(real, dtype=np.float64)
        self.mu_r = real.mean(0)
        s_r = np.cov(real, rowvar=False)
        ev, vec = np.linalg.eigh(s_r)
        self.root_r = (vec * np.sqrt(np.clip(ev, 0, None))) @ vec.T
        self.tr_r = float(np.trace(s_r))

    def __call__(self, w: Any) -> Any:
        import numpy as np

        out = np.empty(len(w))
        for i, wi in enumerate(np.atleast_2d(w)):
            n = wi.sum()
            mu = wi @ self.f / n
            c = self.f - mu
            s = (c * wi[:, None]).T @ c / (n - 1)
            m = self.root_r @ s @ self.root_r
            tr_cov = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
            d = mu - self.mu_r
            out[i] = d @ d + np.trace(s) + self.tr_r - 2 * tr_cov
        return out
