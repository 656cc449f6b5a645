"""The speaker branch's params, typed: one frozen dataclass per ``speaker.*`` section a stage reads.

Each mirrors its node of workflow/schemas/params.schema.yaml (tests/test_config.py keeps the two in
step); a stage builds them with ``X.of(ctx.params)`` and everything below takes their fields.
``speaker.source`` (a string) and ``speaker.models`` (a list) are read as they are by the stages.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from repropipe.config import key, params_section

Precision = Literal["32", 32, "bf16", "16-mixed"]


@params_section("speaker.synthetic")
@dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic stand-in: its size and how noisy each utterance is."""

    n_speakers: int
    utts_per_speaker: int
    min_len: int
    max_len: int
    n_test: int
    noise: float


@params_section("speaker.real")
@dataclass(frozen=True)
class RealConfig:
    """Where the real HW4 data comes from (``speaker.real``; the key ``from`` is read as :attr:`from_`)."""

    from_: Literal["kaggle", "wav_tree"] = key("from")
    hw4_dir: str | None = key("hw4_dir")
    wav_dir: str | None = key("wav_dir")
    wav_test_fraction: float = key("wav_test_fraction")
    cache_dir: str = key("cache_dir")


@params_section("speaker.features")
@dataclass(frozen=True)
class FeaturesConfig:
    """How utterances are split: speakers held out for verification, utterances held out for identification."""

    verify_speakers: int
    val_fraction: float


@params_section("speaker.model")
@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the HW4 classifier family (Transformer/Conformer, mean/attention pooling, linear/AM-softmax).

    ``attention`` is the Conformer's self-attention; its default is the demo's plain attention, so
    params files written before the key existed give the same model.
    """

    d_model: int
    n_heads: int
    n_layers: int
    ff_dim: int
    conv_kernel: int
    dropout: float
    am_scale: float
    am_margin: float
    attention: Literal["none", "relative"] = "none"


@params_section("speaker.ecapa")
@dataclass(frozen=True)
class EcapaConfig:
    """Sizes of ECAPA-TDNN and its AAM-softmax head."""

    channels: int
    mfa_channels: int
    attention_channels: int
    se_channels: int
    res2net_scale: int
    emb_dim: int
    aam_scale: float
    aam_margin: float


@dataclass(frozen=True)
class SpecAugmentConfig:
    enabled: bool
    freq_mask: int
    time_mask: int


@params_section("speaker.train")
@dataclass(frozen=True)
class TrainConfig:
    """The loop every speaker model trains with (crops, batches, schedule, augmentation, precision)."""

    segment_len: int
    batch_size: int
    epochs: int
    lr: float
    weight_decay: float
    warmup_steps: int
    checkpoint_every: int
    specaugment: SpecAugmentConfig
    precision: Precision = "32"


@params_section("speaker.triplet")
@dataclass(frozen=True)
class TripletConfig:
    """The triplet conv1d embedder and its optional autoencoder pre-training."""

    channels: int
    emb_dim: int
    margin: float
    lr: float
    epochs: int
    autoencoder_epochs: int


@params_section("speaker.evaluate")
@dataclass(frozen=True)
class EvaluateConfig:
    """Scoring: batch size, verification trials kept, enrolment top-k."""

    batch_size: int
    max_trials: int
    top_k: int


@dataclass(frozen=True)
class Training:
    """Everything speaker_train reads, typed: the loop and the sizes of each model family."""

    train: TrainConfig
    model: ModelConfig
    ecapa: EcapaConfig
    triplet: TripletConfig

    @classmethod
    def of(cls, params: dict[str, Any]) -> "Training":
        return cls(TrainConfig.of(params), ModelConfig.of(params), EcapaConfig.of(params),  # type: ignore[attr-defined]
                   TripletConfig.of(params))  # type: ignore[attr-defined]
