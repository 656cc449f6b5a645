"""Typed views of the ``gan`` params sections (one frozen dataclass per section a stage reads).

Why: a stage turns its params into these at its boundary, so data, features, train and evaluate
take named, typed fields (``cfg.isir.particles``) instead of walking nested params dicts.
Each class mirrors its node of workflow/schemas/params.schema.yaml field for field (tests/test_config.py
fails when the two drift apart); the comments in params.yaml say what each key does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from repropipe.config import params_section


@params_section("gan.data")
@dataclass(frozen=True)
class DataConfig:
    """Where CelebA comes from (``source: real``) or how many synthetic faces to draw (``source: synthetic``)."""

    num_images: int
    archive: str | None
    partition: str | None
    root: str | None
    cache_dir: str
    verify_md5: bool


@params_section("gan.features")
@dataclass(frozen=True)
class FeaturesConfig:
    crop: int
    size: Literal[64]
    shard_size: int
    on_bad_image: Literal["error", "skip"]


@params_section("gan.model")
@dataclass(frozen=True)
class ModelConfig:
    """Registered model names of the generator and critic and their widths."""

    generator: str
    critic: str
    nz: int
    ngf: int
    ndf: int


@params_section("gan.train")
@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    n_dis: int
    lr: float
    beta1: float
    beta2: float
    gp_scale: float
    checkpoint_every: int
    sample_every: int
    precision: Literal["32", 32, "bf16", "16-mixed"] = "32"


@params_section("gan.fidelity")
@dataclass(frozen=True)
class FidelityConfig:
    feature_extractor_weights_path: str | None
    real_split: Literal["train", "valid", "test"]
    num_real: int


@dataclass(frozen=True)
class IsirConfig:
    """I-SIR latent sampling: ``iterations`` (0: plain sampling only), ``particles`` per chain, critic batch size."""

    iterations: int
    particles: int
    batch_size: int


@dataclass(frozen=True)
class CalibrationConfig:
    """Held-out images the critic is calibrated on (``num_images`` 0: the whole split), the generated pool it is
    calibrated against (``num_generated`` 0: as many as the held-out images), and the temperatures t of the I-SIR
    weight exp(t (a D + b)) among which the one whose reweighted pool is closest (FID) to the held-out images is
    chosen: 0 is plain sampling, 1 the calibrated density ratio."""

    split: Literal["valid", "test"]
    num_images: int
    num_generated: int = 0
    temperatures: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


@params_section("gan.evaluate")
@dataclass(frozen=True)
class EvaluateConfig:
    num_samples: int
    kid_subset_size: int
    isir: IsirConfig
    calibration: CalibrationConfig
