"""The speaker branch's params, typed: one frozen dataclass per ``speaker.*`` section a stage reads.

Each mirrors its node of workflow/schemas/params.schema.yaml (tests/test_config.py keeps the two in
step); a stage builds them with ``X.of(ctx.params)`` and everything below takes their fields.
``speaker.source`` (a string) and ``speaker.models`` (a list) are read as they are by the stages.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from repropipe.config import params_section

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
@dataclass(frozen=True, init=False, repr=False, eq=False, match_args=False)
class RealConfig:
    """Where the real HW4 data comes from.

    The params key ``from`` is a Python keyword, so this class declares its fields through
    ``__annotations__`` (the field keeps the key's name, which is what the schema check and the
    parser match on) and code reads it as :attr:`from_`.
    """

    __annotations__ = {
        "from": "Literal['kaggle', 'wav_tree']",
        "hw4_dir": "str | None",
        "wav_dir": "str | None",
        "wav_test_fraction": "float",
        "cache_dir": "str",
    }

    def __init__(self, **values: Any) -> None:
        names = [f.name for f in dataclasses.fields(self)]
        if sorted(values) != sorted(names):
            raise TypeError(f"RealConfig takes exactly {names}, got {sorted(values)}")
        for name in names:
            object.__setattr__(self, name, values[name])

    @property
    def from_(self) -> Literal["kaggle", "wav_tree"]:
        """``speaker.real.from``: the Kaggle competition or a VoxCeleb1 wav tree."""
        return getattr(self, "from")

    def __repr__(self) -> str:
        return "RealConfig(" + ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)) + ")"

    def __eq__(self, other: object) -> bool:
        return type(other) is RealConfig and all(getattr(self, f.name) == getattr(other, f.name)
                                                 for f in dataclasses.fields(self))

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, f.name) for f in dataclasses.fields(self)))


@params_section("speaker.features")
@dataclass(frozen=True)
class FeaturesConfig:
    """How utterances are split: speakers held out for verification, utterances held out for identification."""

    verify_speakers: int
    val_fraction: float


@params_section("speaker.model")
@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the HW4 classifier family (Transformer/Conformer, mean/attention pooling, linear/AM-softmax)."""

    d_model: int
    n_heads: int
    n_layers: int
    ff_dim: int
    conv_kernel: int
    dropout: float
    am_scale: float
    am_margin: float


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
