"""The sizes of the full real datasets and the published training recipes the report projects stage costs to.

Every number here is a count from the dataset's release or a recipe file, with its source named; the
report multiplies a measured cost per unit by them (``report/costs.py``) and labels the result a
projection. tests/test_report.py checks them against the branch code and ``conf/`` files that hold
the same numbers (the report may not import branch code, so they are repeated here, not shared).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class FullDataset:
    name: str
    unit: str  # the unit a stage records with ctx.record_units (utterances, images, files)
    count: int
    source: str


@dataclass(frozen=True)
class Run:
    """Training runs of one model in a recipe: ``count`` runs of ``epochs`` epochs at ``batch_size``."""

    model: str
    count: int
    epochs: int
    batch_size: int


@dataclass(frozen=True)
class Recipe:
    """A published training recipe, reduced to the optimiser steps and examples it takes."""

    name: str
    runs: tuple[Run, ...]
    train_items: int  # items in one epoch
    drop_last: bool
    source: str

    def steps(self) -> int:
        per_epoch = (lambda b: self.train_items // b) if self.drop_last else (lambda b: math.ceil(self.train_items / b))
        return sum(r.count * r.epochs * per_epoch(r.batch_size) for r in self.runs)

    def examples(self) -> int:
        return sum(r.count * r.epochs * self.train_items for r in self.runs)


ASVSPOOF_SPLITS = {"train": 25_380, "dev": 24_844, "eval": 71_237}
ASVSPOOF_LA = FullDataset(
    "ASVspoof 2019 LA (train 25,380 + dev 24,844 + eval 71,237)", "utterances", sum(ASVSPOOF_SPLITS.values()),
    "line counts of the three CM protocols in LA.zip (ASVspoof 2019 evaluation plan; Wang et al., Computer Speech & "
    "Language 64, 2020); the same counts are checked by repropipe.asvspoof.data.OFFICIAL_COUNTS")
VOXCELEB1 = FullDataset(
    "VoxCeleb1 (dev 148,642 + test 4,874)", "utterances", 153_516,
    "Nagrani, Chung & Zisserman, 'VoxCeleb: a large-scale speaker identification dataset', Interspeech 2017 "
    "(1,251 speakers, 153,516 utterances: dev 148,642 + test 4,874; docs/speaker.md)")
VOXCELEB2_DEV = FullDataset(
    "VoxCeleb2 dev", "utterances", 1_092_009,
    "Chung, Nagrani & Zisserman, 'VoxCeleb2: Deep Speaker Recognition', Interspeech 2018 (dev: 5,994 speakers, "
    "1,092,009 utterances; the same split table is in PaddleSpeech examples/voxceleb/README.md)")
CELEBA = FullDataset(
    "CelebA aligned", "images", 202_599,
    "Liu et al., 'Deep Learning Face Attributes in the Wild', ICCV 2015; img_align_celeba.zip and the 202,599 lines "
    "of list_eval_partition.txt (docs/gan.md)")
EEGMMI = FullDataset(
    "PhysioNet EEG Motor Movement/Imagery 1.0.0 (109 subjects x 14 runs)", "files", 109 * 14,
    "Schalk et al., IEEE TBME 51(6), 2004; physionet.org/content/eegmmidb/1.0.0: 109 volunteers, 14 experimental runs "
    "each, one EDF+ file per run (S001-S109)")

# data stages: cost per unit x the full release
DATA: dict[str, tuple[FullDataset, ...]] = {
    "asvspoof_download": (ASVSPOOF_LA,), "asvspoof_features": (ASVSPOOF_LA,),
    "speaker_download": (VOXCELEB1, VOXCELEB2_DEV), "speaker_features": (VOXCELEB1, VOXCELEB2_DEV),
    "gan_download": (CELEBA,), "gan_features": (CELEBA,),
    "eeg_download": (EEGMMI,), "eeg_features": (EEGMMI,),
}

ASVSPOOF_PAPER = Recipe(
    "ASVspoof paper recipes (conf/asvspoof/paper.yaml)",
    runs=(Run("lfcc_lcnn", 6, 100, 64), Run("lfcc_lcnn_lstmsum_p2s", 6, 100, 64), Run("aasist", 6, 100, 24),
          Run("aasist_l", 6, 100, 24),
          Run("lfcc_lcnn shuffled-label control", 1, 100, 64)),
    train_items=ASVSPOOF_SPLITS["train"], drop_last=False,
    source="conf/asvspoof/paper.yaml laid over params.yaml: NII LFCC-LCNN and LFCC-LCNN-LSTM-sum-P2SGrad 00_train.sh "
           "(100 epochs, batch 64) and "
           "clovaai/aasist AASIST.conf / AASIST-L.conf (100 epochs, batch 24), 6 seeds each, plus the pipeline's "
           "shuffled-label control (one lfcc_lcnn run); every epoch visits all 25,380 training utterances")

# train stages: cost per optimiser step (and per example) x the recipe's
TRAIN: dict[str, Recipe] = {"asvspoof_train": ASVSPOOF_PAPER}
