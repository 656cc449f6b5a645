"""LFCC and log-mel features via torchaudio, written as a few shards per split.

Layout of ``data/features/asvspoof``::

    index.parquet            one row per utterance kept: split, speaker_id, utt_id, system_id, key,
                             label, shard, row (where its features are)
    <kind>/<split>-NNN.pt    float16 tensor (n, n_features, frames) per shard, kind = lfcc | mel
    manifest.json            the feature config, counts, data_source, and every skipped item
    asv_scores.<split>.txt   the real set's ASV scores, copied when present (for min t-DCF)

Utterances are cropped or repeat-padded to a fixed length so a whole batch goes through one
STFT: per-utterance transform calls would spend more time in Python than in the FFT. Features are
stored as float16 (half the disk of float32; LFCC and dB values lose nothing that matters).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repropipe.asvspoof.data import SAMPLE_RATE, BadItem, LASource, read_audio
from repropipe.io import DataError, atomic_path

log = logging.getLogger("repropipe.asvspoof.features")

KINDS = ("lfcc", "mel")


@dataclass(frozen=True)
class FeatureConfig:
    seconds: float = 4.0
    n_fft: int = 512
    win_ms: float = 20.0
    hop_ms: float = 10.0
    n_lfcc: int = 20
    n_mels: int = 80

    @property
    def samples(self) -> int:
        return int(round(self.seconds * SAMPLE_RATE))

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> "FeatureConfig":
        return cls(seconds=float(p["seconds"]), n_fft=int(p.get("n_fft", 512)), n_lfcc=int(p.get("n_lfcc", 20)),
                   n_mels=int(p.get("n_mels", 80)))


class Extractor(torch.nn.Module):
    """Waveform batch (B, samples) -> {'lfcc': (B, 3*n_lfcc, T), 'mel': (B, n_mels, T)}."""

    def __init__(self, cfg: FeatureConfig, kinds: tuple[str, ...] = KINDS) -> None:
        super().__init__()
        import torchaudio.transforms as T

        win = int(SAMPLE_RATE * cfg.win_ms / 1000)
        hop = int(SAMPLE_RATE * cfg.hop_ms / 1000)
        self.kinds = kinds
        self.lfcc = T.LFCC(sample_rate=SAMPLE_RATE, n_filter=cfg.n_lfcc, n_lfcc=cfg.n_lfcc,
                           speckwargs={"n_fft": cfg.n_fft, "win_length": win, "hop_length": hop})
        self.mel = T.MelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=cfg.n_fft, win_length=win, hop_length=hop,
                                    n_mels=cfg.n_mels)

    def forward(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        import torchaudio.functional as F

        out = {}
        if "lfcc" in self.kinds:
            c = self.lfcc(wav)
            d = F.compute_deltas(c, win_length=3)
            dd = F.compute_deltas(d, win_length=3)
            out["lfcc"] = torch.cat([c, d, dd], dim=1)
        if "mel" in self.kinds:
            # dB without top_db: top_db clips relative to the batch maximum, which would make an
            # utterance's features depend on which batch it landed in.
            out["mel"] = 10.0 * torch.log10(self.mel(wav).clamp_min(1e-10))
        return out


def fix_length(x: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` samples, repeating the utterance when it is shorter (ASVspoof convention)."""
    if len(x) >= n:
        return x[:n]
    reps = -(-n // len(x))
    return np.tile(x, reps)[:n]


def load_waveform(source: LASource, rel: str, n: int) -> np.ndarray:
    x, sr = read_audio(source, rel)
    if sr != SAMPLE_RATE:
        raise DataError(source.where(rel), f"sample rate {sr} Hz, expected {SAMPLE_RATE} Hz")
    return fix_length(x, n)


def extract_split(source: LASource, df: Any, split: str, out_dir: Path, cfg: FeatureConfig,
                  kinds: tuple[str, ...], *, shard_size: int, batch_size: int = 64, on_bad: str = "error",
                  bad: list[BadItem] | None = None, progress: bool = True) -> Any:
    """Decode, featurise and shard one split; returns ``df`` restricted to kept rows plus shard/row columns."""
    from tqdm import tqdm

    extractor = Extractor(cfg, kinds)
    keep: list[int] = []
    shard_rows: list[tuple[int, int]] = []
    buffers: dict[str, list[torch.Tensor]] = {k: [] for k in kinds}
    wav_batch: list[np.ndarray] = []
    shard, in_shard = 0, 0

    def flush_batch() -> None:
        if not wav_batch:
            return
        with torch.no_grad():
            feats = extractor(torch.from_numpy(np.stack(wav_batch)))
        for k in kinds:
            buffers[k].append(feats[k].to(torch.float16))
        wav_batch.clear()

    def flush_shard() -> None:
        nonlocal shard, in_shard
        flush_batch()
        if in_shard == 0:
            return
        for k in kinds:
            with atomic_path(out_dir / k / f"{split}-{shard:03d}.pt") as tmp:
                torch.save(torch.cat(buffers[k]).contiguous(), tmp)
            buffers[k].clear()
        shard, in_shard = shard + 1, 0

    for pos, row in enumerate(tqdm(df.itertuples(index=False), total=len(df), desc=f"features {split}",
                                   disable=not progress, leave=False)):
        try:
            wav = load_waveform(source, row.path, cfg.samples)
        except DataError as exc:
            if on_bad != "skip":
                raise
            if bad is not None:
                bad.append(BadItem(str(exc.path), None, str(exc).split(": ", 1)[-1]))
            log.warning("event=skip %s", exc)
            continue
        wav_batch.append(wav)
        keep.append(pos)
        shard_rows.append((shard, in_shard))
        in_shard += 1
        if len(wav_batch) >= batch_size:
            flush_batch()
        if in_shard >= shard_size:
            flush_shard()
    flush_shard()
    kept = df.iloc[keep].copy()
    kept["split"] = split
    kept["shard"] = [s for s, _ in shard_rows]
    kept["row"] = [r for _, r in shard_rows]
    return kept.reset_index(drop=True)


def load_features(feat_dir: str | Path, split: str, kind: str) -> tuple[torch.Tensor, Any]:
    """All of one split's features of one kind, in index order, with the index rows."""
    import pandas as pd

    feat_dir = Path(feat_dir)
    index = pd.read_parquet(feat_dir / "index.parquet")
    index = index[index.split == split].reset_index(drop=True)
    shards = sorted(index.shard.unique())
    parts = {s: torch.load(feat_dir / kind / f"{split}-{s:03d}.pt", weights_only=True) for s in shards}
    # rows were written in index order, shard after shard, so concatenation is index order
    x = torch.cat([parts[s] for s in shards]) if shards else torch.empty(0)
    if len(x) != len(index):
        raise DataError(feat_dir / kind, f"{split}: {len(x)} feature rows for {len(index)} index rows")
    return x, index
