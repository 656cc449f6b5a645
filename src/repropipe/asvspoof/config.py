"""Typed params of the ASVspoof branch: one frozen dataclass per ``asvspoof.*`` section a stage reads.

Each stage turns ``ctx.params`` into these at its boundary (``TrainConfig.of(ctx.params)``); the code
below it reads named fields. ``tests/test_config.py`` checks every class against
workflow/schemas/params.schema.yaml, so a key added on one side only fails CI.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from repropipe.config import params_section

if TYPE_CHECKING:
    from repropipe.asvspoof.features import FeatureConfig

ModelName = Literal["lfcc_lcnn", "lfcc_lcnn_ocsoftmax", "lfcc_lcnn_lstmsum_p2s", "mel_resnet18", "aasist", "aasist_l"]
FeatureKind = Literal["lfcc", "mel", "wave"]
Imbalance = Literal["none", "weighted_loss", "weighted_sampler"]
Schedule = Literal["constant", "cosine", "step"]
PrecisionName = Literal["32", 32, "bf16", "16-mixed"]


@params_section("asvspoof.real")
@dataclass(frozen=True)
class RealConfig:
    """Where the real ASVspoof 2019 LA release comes from (``source: real``); see data.download_real."""

    url: str
    md5: str | None  # DataShare's md5 of LA.zip; None: fetched unverified, the md5 is recorded
    cache_dir: str  # where LA.zip is downloaded (not a tracked output)
    archive: str | None  # an LA.zip the user already has, read in place
    root: str | None  # an extracted tree: the directory that contains LA/
    expect_official_counts: bool  # false for a deliberate subset of the release


@dataclass(frozen=True)
class SplitCounts:
    train: int
    dev: int
    eval: int


@params_section("asvspoof.synthetic")
@dataclass(frozen=True)
class SyntheticConfig:
    """Size of the synthetic stand-in (synth.write_synthetic)."""

    utterances: SplitCounts
    speakers: SplitCounts
    bonafide_fraction: float
    seconds: tuple[float, ...]  # (shortest, longest) utterance, drawn uniformly


@params_section("asvspoof.features")
@dataclass(frozen=True)
class FeaturesConfig:
    """The features stage's section: what to extract and how to shard it, plus the front end's settings.

    The front end itself is :class:`repropipe.asvspoof.features.FeatureConfig`; :meth:`front_end` hands
    it every field the two share by name, so a front-end setting added to both reaches the extractor.
    """

    kinds: tuple[FeatureKind, ...]
    seconds: float  # fixed length: crop or repeat-pad
    n_lfcc: int
    n_mels: int
    n_fft: int
    shard_size: int  # utterances per shard file
    max_per_class: int | None  # class-balanced dev/eval subset; None keeps every utterance
    # NII's LFCC front end, option by option (FeatureConfig's docstring quotes NII's code); the defaults are
    # torchaudio's LFCC, which the demo uses
    frames: int | None = None  # LFCC/mel crop in frames (750: NII); None: `seconds` for every kind
    pre_emphasis: float = 0.0
    window: Literal["hann", "hamming"] = "hann"
    stft_pad: Literal["reflect", "zero"] = "reflect"
    lfcc_log: Literal["db", "log10"] = "db"
    lfcc_c0: Literal["c0", "log_energy"] = "c0"
    delta: Literal["torchaudio", "nii"] = "torchaudio"

    def front_end(self) -> FeatureConfig:
        from repropipe.asvspoof.features import FeatureConfig  # torch: only when features are made

        shared = {f.name for f in dataclasses.fields(FeatureConfig)} & {f.name for f in dataclasses.fields(self)}
        return FeatureConfig(**{name: getattr(self, name) for name in sorted(shared)})


@dataclass(frozen=True)
class ModelOverrides:
    """``asvspoof.train.per_model.<model>``: the keys set here replace the shared ones for that model.

    None means "not set" (the schema forbids null for these keys, so None never comes from a file);
    ``tests/test_asvspoof.py`` checks the fields against the schema's per-model properties.
    """

    lr: float | None = None
    epochs: int | None = None
    batch_size: int | None = None
    weight_decay: float | None = None
    imbalance: Imbalance | None = None
    lr_schedule: Schedule | None = None
    lr_min: float | None = None
    lr_step_epochs: int | None = None
    lr_gamma: float | None = None


@dataclass(frozen=True)
class AugmentConfig:
    """Feature-domain augmentation (train.augment); 0 turns each off."""

    gain_db: float
    noise_std: float
    spec_freq_mask: int
    spec_time_mask: int


@params_section("asvspoof.train")
@dataclass(frozen=True)
class TrainConfig:
    models: tuple[ModelName, ...]
    seeds: tuple[int, ...]
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    per_model: dict[str, ModelOverrides | None] | None
    imbalance: Imbalance
    select_on_dev: bool  # keep the epoch with the best dev EER (else the last)
    shuffled_label_control: bool  # also train lfcc_lcnn on shuffled labels (first seed)
    checkpoint_every: int
    augment: AugmentConfig
    precision: PrecisionName = "32"
    lr_schedule: Schedule = "constant"
    lr_min: float = 0.0  # cosine: the final lr
    lr_step_epochs: int = 10  # step: epochs between decays
    lr_gamma: float = 0.5  # step: decay factor

    def for_model(self, name: str) -> TrainConfig:
        """These settings with ``per_model[name]`` laid over the shared ones (and no per_model left).

        Architectures differ in what they need (a ResNet18 trained from scratch wants a smaller step
        than the LCNN), so one shared value per key would shortchange one of them.
        """
        over = (self.per_model or {}).get(name) or ModelOverrides()
        changes = {k: v for k, v in dataclasses.asdict(over).items() if v is not None}
        return dataclasses.replace(self, per_model=None, **changes)


@dataclass(frozen=True)
class PretrainedConfig:
    """Published weights scored beside the trained models (file paths; None: off)."""

    aasist: str | None = None
    aasist_l: str | None = None

    def named(self) -> dict[str, str]:
        """Model name -> weights file, for the ones that are set."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name)}


@params_section("asvspoof.evaluate")
@dataclass(frozen=True)
class EvaluateConfig:
    pretrained: PretrainedConfig
