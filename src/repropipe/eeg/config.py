"""Typed views of the ``eeg`` params: what each EEG stage reads, as frozen dataclasses.

Why: below a stage the code takes named fields (``cfg.train.simclr.tau``) instead of walking the
nested params dict, so following a key from params.yaml to where it acts is one attribute search.
The registered sections mirror workflow/schemas/params.schema.yaml key for key (tests/test_config.py);
field order follows params.yaml, since model kwargs built from a section keep that order in model.pt.

``DownloadConfig`` and ``FeaturesStageConfig`` gather the scalar keys of the ``eeg`` section that
the download and features stages declare one by one (a stage's ``ctx.params`` holds only what it
declares, so no class can mirror the whole ``eeg`` section); tests/test_eeg.py checks them against
the schema and against the keys the stages declare.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from repropipe.config import ConfigError, params_section, parse

Run = Literal["transformer", "linformer", "transformer_low", "simclr_low", "eegnet"]


@params_section("eeg.synthetic")
@dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic stand-in's recording length and planted effect strength."""

    duration_s: float
    effect: float


@params_section("eeg.features")
@dataclass(frozen=True)
class FeatureConfig:
    """Band-pass (Hz), epoch window around the cue (s) and chunking (samples at 160 Hz)."""

    l_freq: float
    h_freq: float
    tmin: float
    tmax: float
    chunk: int
    overlap: int


@params_section("eeg.split")
@dataclass(frozen=True)
class SplitConfig:
    """How many subjects validate and test under the cross_subject protocol."""

    val_subjects: int
    test_subjects: int


@dataclass(frozen=True)
class TransformerConfig:
    token_len: int
    d_model: int
    heads: int
    layers: int
    ff: int
    dropout: float
    spatial: int


@dataclass(frozen=True)
class LinformerConfig:
    k: int
    proj_len: int


@dataclass(frozen=True)
class SimclrConfig:
    pretrain_epochs: int
    tau: float
    lr: float
    finetune_lr: float
    emb: int
    proj_dim: int
    hidden: int
    channels_per_chunk: int
    finetune_epochs: int


@dataclass(frozen=True)
class EegnetConfig:
    """torcheeg EEGNet sizes; ``epochs`` None trains ``eeg.train.epochs``."""

    F1: int
    D: int
    F2: int
    kernel_1: int
    kernel_2: int
    dropout: float
    epochs: int | None


@params_section("eeg.train")
@dataclass(frozen=True)
class TrainConfig:
    runs: list[Run]
    epochs: int
    max_low_label_epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    label_fraction: float
    checkpoint_every: int
    augment: bool
    transformer: TransformerConfig
    linformer: LinformerConfig
    simclr: SimclrConfig
    eegnet: EegnetConfig
    precision: Literal["32", 32, "bf16", "16-mixed"] = "32"


@params_section("eeg.evaluate")
@dataclass(frozen=True)
class EvaluateConfig:
    """Post-cue windows (samples) for the accuracy curve, token counts and repeats for the timing curve."""

    windows: list[int]
    bench_tokens: list[int]
    repeats: int


def _eeg_keys(cls: type, params: Mapping[str, Any]) -> Any:
    """``cls`` from the ``eeg`` keys a stage declared (its ``ctx.params``), refusing extra or missing ones."""
    eeg = params.get("eeg")
    if not isinstance(eeg, Mapping):
        raise ConfigError(f"params: key 'eeg' is not set (needed by {cls.__qualname__})")
    return parse(cls, eeg, "eeg")


@dataclass(frozen=True)
class DownloadConfig:
    """eeg_download's keys: which recordings, from where."""

    source: Literal["synthetic", "real"]
    subjects: list[int]
    runs: list[Literal[4, 8, 12]]
    local_dir: str | None
    cache_dir: str
    exclude_known_bad: bool
    synthetic: SyntheticConfig

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> DownloadConfig:
        return _eeg_keys(cls, params)


@dataclass(frozen=True)
class FeaturesStageConfig:
    """eeg_features' keys: preprocessing, what to do with a bad recording, and the evaluation protocol."""

    on_bad: Literal["error", "skip"]
    evaluation: Literal["cross_subject", "within_subject"]
    within_subject_folds: int
    features: FeatureConfig
    split: SplitConfig

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> FeaturesStageConfig:
        return _eeg_keys(cls, params)
