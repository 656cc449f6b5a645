"""LFCC and log-mel features via torchaudio, written as a few shards per split.

Layout of ``data/features/asvspoof``::

    index.parquet            one row per utterance kept: split, speaker_id, utt_id, system_id, key,
                             label, shard, row (where its features are)
    <kind>/<split>-NNN.pt    float16 tensor (n, n_features, frames) per shard, kind = lfcc | mel;
                             int16 tensor (n, samples) for kind = wave (the crop itself, for
                             raw-waveform models such as AASIST)
    manifest.json            the feature config, counts, data_source, and every skipped item
    asv_scores.<split>.txt   the real set's ASV scores, copied when present (for min t-DCF)

Utterances are cropped or repeat-padded to a fixed length so a small batch goes through one STFT
shared by LFCC and mel (see :class:`Extractor` for what a profile found). Batches are small on
purpose: :data:`BATCH_SIZE` utterances keep the spectrograms in cache, while 64 at a time ran at
half the speed of one at a time. Features are stored as float16 (half the disk of float32; LFCC and
dB values lose nothing that matters). ``python -m repropipe asvspoof bench-features`` times this
module's :func:`extract_split` end to end, beside FLAC decode alone and decode + torchaudio LFCC.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from repropipe.asvspoof.data import SAMPLE_RATE, BadItem, LASource, read_audio
from repropipe.io import DataError, atomic_path, atomic_torch_save, torch_load

if TYPE_CHECKING:
    from repropipe.asvspoof.config import FeaturesConfig

log = logging.getLogger("repropipe.asvspoof.features")

KINDS = ("lfcc", "mel", "wave")
SPECTRAL = ("lfcc", "mel")  # what :class:`Extractor` computes; ``wave`` is the crop itself
BATCH_SIZE = 8  # utterances per STFT: 2-16 run alike; 64 spills the cache (0.5x)


# NII's LFCC front end (project-NN-Pytorch-scripts, sandbox/util_frontend.py, class LFCC, as the
# LFCC-LCNN models of project/03-asvspoof-mega build it: LFCC(320, 160, 512, 16000, 20, with_energy=True)),
# each option as a FeatureConfig field; the defaults are torchaudio's LFCC, which the demo uses.
NII_FRONT_END = {"pre_emphasis": 0.97, "window": "hamming", "stft_pad": "zero", "lfcc_log": "log10",
                 "lfcc_c0": "log_energy", "delta": "nii"}


@dataclass(frozen=True)
class FeatureConfig:
    """The feature settings (``asvspoof.features``); every front-end option defaults to today's torchaudio LFCC.

    The NII options, quoted from NII's ``LFCC.forward``:

    * ``pre_emphasis`` 0.97: ``x[:, 1:] = x[:, 1:] - 0.97 * x[:, 0:-1]`` (0: none);
    * ``window`` hamming: ``torch.stft(x, fn, fs, fl, window=torch.hamming_window(fl), onesided=True,
      pad_mode="constant")``, whose ``center=True`` pads n_fft/2 zeros each side: ``stft_pad`` zero
      (torchaudio reflects);
    * ``lfcc_log`` log10: ``torch.log10(torch.matmul(sp_amp, self.lfcc_fb) + torch.finfo(torch.float32).eps)``
      (torchaudio: ``10 log10(max(x, 1e-10))`` floored 80 dB below the utterance's maximum);
    * ``lfcc_c0`` log_energy: ``power_spec = sp_amp / self.fn``; ``energy = torch.log10(power_spec.sum(axis=2)
      + eps)``; ``lfcc[:, :, 0] = energy`` (c0 replaced; in ``db`` mode the energy is in dB too);
    * ``delta`` nii: ``output = -1 * x_temp[:, 0:length] + x_temp[:, 2:]`` on the edge-replicated sequence,
      that is c[t+1] - c[t-1], twice torchaudio's ``compute_deltas`` (win_length 3), and the same again for
      the double deltas.

    ``frames``: the LFCC / mel crop in frames, (frames - 1) x hop samples with ``center=True`` (750: NII's
    training crop, 7.49 s), independent of ``seconds``, which then sets only the ``wave`` crop (AASIST's
    64,600 samples). null: ``seconds`` for every kind. NII's whole-utterance scoring is not available:
    features are stored as fixed-shape shards.
    """

    seconds: float = 4.0
    n_fft: int = 512
    win_ms: float = 20.0
    hop_ms: float = 10.0
    n_lfcc: int = 20
    n_mels: int = 80
    frames: int | None = None
    pre_emphasis: float = 0.0
    window: str = "hann"            # hann | hamming
    stft_pad: str = "reflect"       # reflect | zero
    lfcc_log: str = "db"            # db | log10
    lfcc_c0: str = "c0"             # c0 | log_energy
    delta: str = "torchaudio"       # torchaudio | nii

    @property
    def samples(self) -> int:
        """The crop of the ``wave`` kind (and of every kind when ``frames`` is null)."""
        return int(round(self.seconds * SAMPLE_RATE))

    @property
    def hop(self) -> int:
        return int(SAMPLE_RATE * self.hop_ms / 1000)

    @property
    def spectral_samples(self) -> int:
        """The crop LFCC and mel are computed from."""
        return self.samples if self.frames is None else (self.frames - 1) * self.hop

    @property
    def read_samples(self) -> int:
        """How many samples each utterance is cropped or repeat-padded to when read (the longest crop)."""
        return max(self.samples, self.spectral_samples)


class Extractor(torch.nn.Module):
    """Waveform batch (B, samples) -> {'lfcc': (B, 3*n_lfcc, T), 'mel': (B, n_mels, T)}, float32.

    Numerically the same as ``torchaudio.transforms.LFCC`` (plus two ``compute_deltas``) and
    ``MelSpectrogram`` (in dB) applied to each utterance on its own (tests/test_asvspoof_features.py
    checks it), but built for throughput, which a profile of the two transforms showed is lost in:

    * two STFTs of the same waveform: here one ``torchaudio.functional.spectrogram`` feeds both;
    * ``complex.abs().pow(2)``: torch's complex abs is a scalar hypot, as slow as the FFT itself;
      ``re^2 + im^2`` gives the same power for a quarter of the time;
    * three filterbank products: the linear (LFCC) and mel filterbanks are one matrix, one GEMM,
      and the dB conversion of both is one log10 over the result.

    The LFCC's 80 dB floor (``top_db`` inside ``torchaudio.transforms.LFCC``) is taken per
    utterance, as the transform does for a single utterance; applied to a (B, n, T) batch the
    transform would take it over the whole batch, making features depend on batch composition.
    The mel spectrogram has no floor (the dB of a power clamped at 1e-10), as before.

    With the NII options of :class:`FeatureConfig` (:data:`NII_FRONT_END`) the LFCC is NII's instead
    (tests/test_asvspoof_nii.py: within 1e-5 of a transcription of NII's class); the pre-emphasis, window and
    padding apply to the shared STFT, so a mel spectrogram extracted beside it uses them too.
    """

    def __init__(self, cfg: FeatureConfig, kinds: tuple[str, ...] = SPECTRAL) -> None:
        super().__init__()
        import torchaudio.functional as F

        unknown = set(kinds) - set(SPECTRAL)
        if unknown or not kinds:
            raise ValueError(f"unknown feature kinds {sorted(unknown) or '()'} for the extractor; it computes "
                             f"{', '.join(SPECTRAL)} ('wave' is stored as read)")
        self.kinds = kinds
        self.n_fft = cfg.n_fft
        self.win = int(SAMPLE_RATE * cfg.win_ms / 1000)
        self.hop = int(SAMPLE_RATE * cfg.hop_ms / 1000)
        self.n_lfcc = cfg.n_lfcc if "lfcc" in kinds else 0
        n_freqs = cfg.n_fft // 2 + 1
        f_max = float(SAMPLE_RATE // 2)  # both transforms' default
        banks = []
        if "lfcc" in kinds:
            banks.append(F.linear_fbanks(n_freqs, 0.0, f_max, cfg.n_lfcc, SAMPLE_RATE))
            self.register_buffer("dct", F.create_dct(cfg.n_lfcc, cfg.n_lfcc, "ortho"))
        if "mel" in kinds:
            banks.append(F.melscale_fbanks(n_freqs, 0.0, f_max, cfg.n_mels, SAMPLE_RATE, None, "htk"))
        self.pre_emphasis, self.stft_pad, self.lfcc_log = cfg.pre_emphasis, cfg.stft_pad, cfg.lfcc_log
        self.log_energy, self.delta_scale = cfg.lfcc_c0 == "log_energy", 1.0 if cfg.delta == "nii" else 0.5
        windows = {"hann": torch.hann_window, "hamming": torch.hamming_window}  # periodic, as NII's and torchaudio's
        self.register_buffer("window", windows[cfg.window](self.win))
        self.register_buffer("fbank", torch.cat(banks, dim=1).contiguous())  # (n_freqs, n_lfcc + n_mels)

    def forward(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        import torchaudio.functional as F

        # center=True's reflect padding, done here: torch's reflection_pad1d took 6 % of the forward pass
        p = self.n_fft // 2
        if wav.shape[-1] <= p:
            raise ValueError(f"{wav.shape[-1]} samples: the crop must be longer than n_fft/2 = {p} samples")
        if self.pre_emphasis:
            wav = torch.cat([wav[..., :1], wav[..., 1:] - self.pre_emphasis * wav[..., :-1]], dim=-1)
        if self.stft_pad == "zero":
            wav = torch.nn.functional.pad(wav, (p, p))
        else:
            wav = torch.cat([wav[..., 1 : p + 1].flip(-1), wav, wav[..., -p - 1 : -1].flip(-1)], dim=-1)
        spec = F.spectrogram(wav, 0, self.window, self.n_fft, self.hop, self.win, None, False, center=False)
        spec = spec.mT  # (B, T, freq): the FFT's own memory order, so no copy
        power = torch.addcmul(spec.real.square(), spec.imag, spec.imag)
        banks = torch.matmul(power, self.fbank)  # (B, T, freq) @ (freq, banks)
        out = {}
        if self.lfcc_log == "log10":  # NII: log10(x + float32 eps) for the LFCC; the mel part stays in dB
            eps = torch.finfo(torch.float32).eps
            lf = (banks[..., : self.n_lfcc] + eps).log10()
            db = banks[..., self.n_lfcc:].clamp_min(1e-10).log10_().mul_(10.0)
            mel = db
        else:  # dB as AmplitudeToDB('power'): 10 log10(max(x, 1e-10))
            db = banks.clamp_min_(1e-10).log10_().mul_(10.0)
            mel = db[..., self.n_lfcc:]
            lf = db[..., : self.n_lfcc]
            if self.n_lfcc:
                lf = torch.maximum(lf, lf.amax(dim=(-2, -1), keepdim=True) - 80.0)  # top_db=80, per utterance
        if self.n_lfcc:
            c = torch.matmul(lf, self.dct).mT  # (B, n_lfcc, T)
            if self.log_energy:
                c[:, 0] = self._log_energy(power)
            d = deltas3(c, self.delta_scale)
            dd = deltas3(d, self.delta_scale)
            out["lfcc"] = torch.cat([c, d, dd], dim=1)
        if "mel" in self.kinds:
            out["mel"] = mel.mT
        return out

    def _log_energy(self, power: torch.Tensor) -> torch.Tensor:
        """NII's c0: the frame's log energy, sum(|X|^2) / n_fft, in the LFCC's own log (log10 or dB)."""
        energy = power.sum(-1) / self.n_fft
        if self.lfcc_log == "log10":
            return (energy + torch.finfo(torch.float32).eps).log10()
        return energy.clamp_min(1e-10).log10().mul(10.0)


def deltas3(c: torch.Tensor, scale: float = 0.5) -> torch.Tensor:
    """``torchaudio.functional.compute_deltas(c, win_length=3)``: (c[t+1] - c[t-1]) / 2, edges replicated;
    ``scale`` 1: NII's delta, c[t+1] - c[t-1].

    The same arithmetic as the library's grouped conv1d with kernel (-1, 0, 1), without building a
    kernel per channel for every batch (5-10 % of the forward pass in a profile).
    """
    padded = torch.cat([c[..., :1], c, c[..., -1:]], dim=-1)
    diff = padded[..., 2:] - padded[..., :-2]
    return diff.mul_(scale) if scale != 1.0 else diff


def fix_length(x: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` samples, repeating the utterance when it is shorter (ASVspoof convention)."""
    if len(x) >= n:
        return x[:n]
    reps = -(-n // len(x))
    return np.tile(x, reps)[:n]


def to_pcm16(wav: np.ndarray) -> torch.Tensor:
    """float samples in [-1, 1] -> int16, exactly inverting soundfile's read of a PCM_16 FLAC (x * 32768).

    ASVspoof 2019 LA's FLACs are 16-bit, so storing the crop as int16 loses nothing and halves the
    disk of float32 (the real set at 4 s: 121,461 x 64,600 x 2 bytes, about 15.7 GB).
    """
    return torch.from_numpy(np.clip(np.round(wav * 32768.0), -32768, 32767).astype(np.int16))


def load_waveform(source: LASource, rel: str, n: int) -> np.ndarray:
    x, sr = read_audio(source, rel)
    if sr != SAMPLE_RATE:
        raise DataError(source.where(rel), f"sample rate {sr} Hz, expected {SAMPLE_RATE} Hz")
    return fix_length(x, n)


WORKER_THREADS = 1  # each worker process is one of the stage's CPUs
TASK_BLOCKS = 8  # blocks per task: fewer round trips (4 -> 8 cut the parent's CPU at 6,000 utterances 0.40 -> 0.29 s)
IN_FLIGHT = 3  # tasks handed out per worker ahead of the parent: a worker never waits for its next one


@dataclass(frozen=True)
class _Work:
    """What featurising a block needs: the archive, the extractor (None: only ``wave``), settings, kinds."""

    source: LASource
    extractor: Extractor | None
    cfg: FeatureConfig
    kinds: tuple[str, ...]

    @classmethod
    def build(cls, source: LASource, cfg: FeatureConfig, kinds: tuple[str, ...]) -> "_Work":
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown feature kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
        spectral = tuple(k for k in kinds if k in SPECTRAL)
        return cls(source, Extractor(cfg, spectral) if spectral else None, cfg, tuple(kinds))


@functools.lru_cache(maxsize=16)
def row_layout(cfg: FeatureConfig, kinds: tuple[str, ...]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each kind's (shape, numpy dtype) of one utterance's stored features: fixed for a config, because every
    utterance is cropped or padded to the same length; an extractor run on one silent crop measures it."""
    spectral = tuple(k for k in kinds if k in SPECTRAL)
    layout: dict[str, tuple[tuple[int, ...], str]] = {}
    if spectral:
        with torch.no_grad():
            feats = Extractor(cfg, spectral)(torch.zeros(1, cfg.spectral_samples))
        layout.update({k: (tuple(feats[k].shape[1:]), "float16") for k in spectral})
    if "wave" in kinds:
        layout["wave"] = ((cfg.samples,), "int16")
    return {k: layout[k] for k in kinds}


def _runs(positions: list[int], chunk: int) -> list[tuple[int, int, int]]:
    """(chunk, first row in it, rows) for each run of consecutive ``positions`` inside one chunk, in order."""
    runs: list[list[int]] = []
    for p in positions:
        c, r = divmod(p, chunk)
        if runs and runs[-1][0] == c and runs[-1][1] + runs[-1][2] == r:
            runs[-1][2] += 1
        else:
            runs.append([c, r, 1])
    return [(c, r, n) for c, r, n in runs]


@dataclass(frozen=True)
class SplitRows:
    """A split's feature rows on disk while it is featurised, so the parent process handles no feature bytes.

    Per kind, one file per ``chunk`` protocol rows, each row at a fixed offset given by its protocol position
    (features have a fixed shape: :func:`row_layout`). A worker writes its block's rows where they belong, and
    the worker that saves a shard reads that shard's kept rows back (a skipped row is a hole nobody reads, so
    shards have no gaps). Files are created sparse and a chunk is deleted once every row in it is in a saved
    shard, so the disk held is a few shards' worth, not the split's; nothing in them is a stage output.
    """

    root: Path
    chunk: int
    layout: dict[str, tuple[tuple[int, ...], str]]

    def path(self, kind: str, c: int) -> Path:
        return self.root / f"{kind}-{c:06d}.rows"

    def row_bytes(self, kind: str) -> int:
        shape, dtype = self.layout[kind]
        return int(np.prod(shape)) * np.dtype(dtype).itemsize

    def write(self, kind: str, positions: list[int], rows: np.ndarray) -> None:
        """Put ``rows[i]`` at protocol position ``positions[i]``."""
        shape, dtype = self.layout[kind]
        if rows.shape != (len(positions), *shape) or rows.dtype != np.dtype(dtype):
            raise RuntimeError(f"{kind} rows {rows.shape} {rows.dtype}, expected {(len(positions), *shape)} {dtype}")
        flat, size, i = memoryview(np.ascontiguousarray(rows).reshape(-1).view(np.uint8)), self.row_bytes(kind), 0
        for c, r, n in _runs(positions, self.chunk):
            fd = os.open(self.path(kind, c), os.O_WRONLY)
            try:
                buf, offset = flat[i * size:(i + n) * size], r * size
                while buf:
                    written = os.pwrite(fd, buf, offset)
                    buf, offset = buf[written:], offset + written
            finally:
                os.close(fd)
            i += n

    def read(self, kind: str, positions: list[int]) -> np.ndarray:
        """The rows at ``positions``, in that order, as one new array."""
        shape, dtype = self.layout[kind]
        out = np.empty((len(positions), *shape), dtype)
        flat, size, i = memoryview(out.reshape(-1).view(np.uint8)), self.row_bytes(kind), 0
        for c, r, n in _runs(positions, self.chunk):
            fd = os.open(self.path(kind, c), os.O_RDONLY)
            try:
                buf, offset = flat[i * size:(i + n) * size], r * size
                while buf:
                    got = os.preadv(fd, [buf], offset)
                    if not got:
                        raise RuntimeError(f"{self.path(kind, c)}: ends before row {offset // size}")
                    buf, offset = buf[got:], offset + got
            finally:
                os.close(fd)
            i += n
        return out


@contextlib.contextmanager
def _rows_on_disk(out_dir: Path, split: str, n: int, chunk: int, layout: dict[str, tuple[tuple[int, ...], str]]
                  ) -> Iterator[tuple[SplitRows, Callable[[int], None]]]:
    """A :class:`SplitRows` for ``n`` protocol rows in a hidden directory of ``out_dir``, and a function that deletes
    the chunks below a protocol position; the directory is gone when the block ends, whatever happens in it."""
    import shutil
    import tempfile

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = SplitRows(Path(tempfile.mkdtemp(prefix=f".{split}-rows-", dir=out_dir)), chunk, layout)
    n_chunks, dropped = -(-n // chunk), 0
    try:
        for c in range(n_chunks):
            for kind in layout:
                with open(rows.path(kind, c), "wb") as f:
                    f.truncate(min(chunk, n - c * chunk) * rows.row_bytes(kind))  # sparse: no disk until written

        def drop_below(position: int) -> None:
            nonlocal dropped
            while dropped < min(n_chunks, position // chunk):
                for kind in layout:
                    rows.path(kind, dropped).unlink()
                dropped += 1

        yield rows, drop_below
    finally:
        shutil.rmtree(rows.root, ignore_errors=True)


BlockDone = tuple[list[int], list[tuple[int, str, str]]]  # (kept positions, (position, path, reason) of bad ones)
_WORKER: _Work | None = None  # a worker process's own state, set once by _init_worker


def _init_worker(source: LASource, cfg: FeatureConfig, kinds: tuple[str, ...]) -> None:
    """A worker process, once for its life: one torch thread (the processes are the parallelism), its own
    archive handle, its own extractor."""
    global _WORKER
    torch.set_num_threads(WORKER_THREADS)
    _WORKER = _Work.build(source.reopened(), cfg, kinds)


def _featurise(work: _Work, rows: SplitRows, blocks: list[list[tuple[int, str]]]) -> list[BlockDone]:
    """:func:`_block_features` of each block, its rows written to ``rows``; only positions go back to the parent."""
    done = []
    for block in blocks:
        kept, feats, bad = _block_features(work, block)
        for kind, values in (feats or {}).items():
            rows.write(kind, kept, values.numpy())
        done.append((kept, bad))
    return done


def _worker_featurise(rows: SplitRows, blocks: list[list[tuple[int, str]]]) -> list[BlockDone]:
    assert _WORKER is not None, "_worker_featurise runs only in a FeaturePool worker"
    return _featurise(_WORKER, rows, blocks)


def copy_asv_scores(source: LASource, out_dir: Path) -> None:
    """The organisers' ASV score files, when the data has them, checked and copied for min t-DCF.

    A bad line stops the stage naming the file and line. It runs as one task beside the features (a worker's,
    when there is a pool), so its parsing is not a serial step after the last shard."""
    from repropipe.asvspoof import data
    from repropipe.io import atomic_write_bytes

    checked = {}
    for split, rel in data.ASV_SCORES.items():
        if source.exists(rel):
            checked[split] = source.read_bytes(rel)
            data.parse_asv_scores(checked[split], name=source.where(rel), split=split)  # a bad file stops here
    for split, raw in checked.items():  # none is copied unless all are good
        atomic_write_bytes(out_dir / f"asv_scores.{split}.txt", raw)


def _worker_copy_asv_scores(out_dir: Path) -> None:
    assert _WORKER is not None, "_worker_copy_asv_scores runs only in a FeaturePool worker"
    copy_asv_scores(_WORKER.source, out_dir)


def _save_shard(rows: SplitRows, kind: str, positions: list[int], path: Path) -> None:
    """One shard file of one kind: the rows at ``positions``, saved atomically (a fresh array: no copy for torch)."""
    atomic_torch_save(path, torch.from_numpy(rows.read(kind, positions)))


class _Done:
    """A task run on the spot, with a pool result's ``ready``/``wait``/``get`` (one process: no pool)."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._value, self._error = None, None
        try:
            self._value = fn(*args)
        except Exception as exc:  # noqa: BLE001 - re-raised by get(), where a pool's result raises it
            self._error = exc

    def ready(self) -> bool:
        return True

    def wait(self) -> None:
        """Nothing to wait for: the task ran when this object was made."""

    def get(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


class _Inline:
    """The :class:`FeaturePool` interface run in this process, for one process."""

    processes = 1

    def __init__(self, work: _Work) -> None:
        self.work = work

    def featurise(self, rows: SplitRows, blocks: list[list[tuple[int, str]]]) -> _Done:
        return _Done(_featurise, self.work, rows, blocks)

    def save(self, rows: SplitRows, kind: str, positions: list[int], path: Path) -> _Done:
        return _Done(_save_shard, rows, kind, positions, path)

    def copy_asv_scores(self, out_dir: Path) -> _Done:
        return _Done(copy_asv_scores, self.work.source, out_dir)


class FeaturePool:
    """Worker processes for a whole features pass: started once, given one split after another.

    Starting and joining a pool of two forked workers costs about 0.14 s; one pool per split made
    that a quarter of the test-scale stage. Each worker sets itself up once (:func:`_init_worker`):
    one torch thread, its own handle on the archive (a forked worker must not share a zip's file
    offset), its own :class:`Extractor`. The workers do all the per-utterance work, the shard files
    included (:class:`SplitRows`). Use as a context manager; :func:`extract_split` takes it as
    ``pool`` for a split of the same ``source``, ``cfg`` and ``kinds``.
    """

    def __init__(self, source: LASource, cfg: FeatureConfig, kinds: tuple[str, ...], processes: int) -> None:
        import multiprocessing

        if processes < 2:
            raise ValueError(f"a FeaturePool needs at least 2 processes, got {processes}: run one process without a pool")
        _Work.build(source, cfg, kinds)  # bad kinds or settings fail here, not in every worker
        self.source, self.cfg, self.kinds, self.processes = source, cfg, tuple(kinds), processes
        self._pool = multiprocessing.get_context("fork").Pool(processes, initializer=_init_worker,
                                                               initargs=(source, cfg, self.kinds))

    def featurise(self, rows: SplitRows, blocks: list[list[tuple[int, str]]]) -> Any:
        """Blocks featurised by a worker into ``rows``; the result's ``get()`` gives their :data:`BlockDone`."""
        return self._pool.apply_async(_worker_featurise, (rows, blocks))

    def save(self, rows: SplitRows, kind: str, positions: list[int], path: Path) -> Any:
        """A shard file written by a worker from ``rows``."""
        return self._pool.apply_async(_save_shard, (rows, kind, positions, path))

    def copy_asv_scores(self, out_dir: Path) -> Any:
        """:func:`copy_asv_scores` run by a worker (with its own handle on the archive)."""
        return self._pool.apply_async(_worker_copy_asv_scores, (out_dir,))

    def close(self) -> None:
        self._pool.terminate()  # results are all in (or an error is on its way up): nothing to wait for

    def __enter__(self) -> "FeaturePool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _block_features(work: _Work, block: list[tuple[int, str]]) -> tuple[list[int], dict[str, torch.Tensor] | None,
                                                                        list[tuple[int, str, str]]]:
    """Decode and featurise one block of listed rows: (kept positions, float16 features, (pos, path, reason) of bad ones).

    A block is :data:`BATCH_SIZE` consecutive protocol rows, whatever process runs it, so the
    STFT batches (and the bytes of every shard) are the same for any number of processes.
    """
    source, extractor, cfg, kinds = work.source, work.extractor, work.cfg, work.kinds
    wavs, kept, bad = [], [], []
    for pos, rel in block:
        try:
            wavs.append(load_waveform(source, rel, cfg.read_samples))
            kept.append(pos)
        except DataError as exc:
            bad.append((pos, str(exc.path), str(exc).split(": ", 1)[-1]))
    if not wavs:
        return kept, None, bad
    batch = np.stack(wavs)
    out: dict[str, torch.Tensor] = {}
    if extractor is not None:
        with torch.no_grad():
            # a prefix of the repeat-padded longest crop is the shorter crop itself (fix_length)
            feats = extractor(torch.from_numpy(batch[:, : cfg.spectral_samples]))
        out = {k: feats[k].to(torch.float16) for k in kinds if k in SPECTRAL}
    if "wave" in kinds:
        out["wave"] = to_pcm16(batch[:, : cfg.samples])
    return kept, out, bad


class _Split:
    """One split of a features pass, as :func:`_extract` runs it: its tasks, which rows were kept, its shards.

    ``take`` learns the kept rows of each task in protocol order and hands out each shard as soon as its rows are
    known; the split's :class:`SplitRows` exist from its first task to its last shard.
    """

    def __init__(self, df: Any, split: str, out_dir: Path, cfg: FeatureConfig, kinds: tuple[str, ...], *,
                 shard_size: int, batch_size: int, on_bad: str, protocol: str | None, progress: bool) -> None:
        self.df, self.split, self.out_dir, self.kinds = df, split, out_dir, kinds
        self.shard_size, self.on_bad, self.protocol, self.progress = shard_size, on_bad, protocol, progress
        self.layout = row_layout(cfg, kinds)
        paths = list(df.path)
        self.lines = list(df.line) if "line" in df.columns else [None] * len(df)
        blocks = [[(i, paths[i]) for i in range(start, min(start + batch_size, len(paths)))]
                  for start in range(0, len(paths), batch_size)]
        self.tasks: Any = collections.deque(blocks[i:i + TASK_BLOCKS] for i in range(0, len(blocks), TASK_BLOCKS))
        self.n_tasks, self.taken = len(self.tasks), 0
        self.keep: list[int] = []  # protocol positions of the kept rows, in order
        self.saved = 0  # kept rows handed out in shards
        self.saving: Any = collections.deque()  # (one shard's file results, position below which no row is needed)
        self.bad: list[BadItem] = []
        self.rows: SplitRows | None = None
        self._drop_below: Callable[[int], None] = lambda position: None
        self._stack = contextlib.ExitStack()  # the rows on disk, the progress bar
        self._bar: Any = None

    def next_task(self) -> list[list[tuple[int, str]]] | None:
        if not self.tasks:
            return None
        if self.rows is None:
            self.rows, self._drop_below = self._stack.enter_context(
                _rows_on_disk(self.out_dir, self.split, len(self.df), self.shard_size, self.layout))
        return self.tasks.popleft()

    def take(self, runner: Any, task: list[list[tuple[int, str]]], done: list[BlockDone]) -> None:
        """A task's results, in protocol order: bad rows reported or recorded, full shards handed out."""
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=len(self.df), desc=f"features {self.split}", disable=not self.progress, leave=False)
        for block, (kept, bad_items) in zip(task, done):
            for pos, path, reason in bad_items:
                self._bad_row(pos, path, reason)
            self.keep.extend(kept)
            self._bar.update(len(block))
        self.taken += 1
        while len(self.keep) - self.saved >= self.shard_size:
            self._save(runner, self.shard_size)
        if self.taken == self.n_tasks:
            self._bar.close()
            if len(self.keep) > self.saved:
                self._save(runner, len(self.keep) - self.saved)

    def _save(self, runner: Any, n: int) -> None:  # the next n kept rows
        positions, shard = self.keep[self.saved:self.saved + n], self.saved // self.shard_size
        self.saving.append(([runner.save(self.rows, k, positions, self.out_dir / k / f"{self.split}-{shard:03d}.pt")
                             for k in self.kinds], positions[-1] + 1))
        self.saved += n

    def reap(self, wait: bool) -> None:
        """Shard files written (waiting for them with ``wait``): their rows' chunks deleted, and all the rows once
        the last shard is in."""
        while self.saving and (wait or all(r.ready() for r in self.saving[0][0])):
            results, below = self.saving[0]
            for r in results:
                r.get()
            self.saving.popleft()
            self._drop_below(below)
        if self.taken == self.n_tasks and not self.saving:
            self.close()

    def pending(self) -> list[Any]:
        return [r for results, _ in self.saving for r in results]

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._stack.close()

    def result(self) -> Any:
        kept_df = self.df.iloc[self.keep].copy()
        kept_df["split"] = self.split
        kept_df["shard"] = [n // self.shard_size for n in range(len(self.keep))]
        kept_df["row"] = [n % self.shard_size for n in range(len(self.keep))]
        return kept_df.reset_index(drop=True)

    def _bad_row(self, pos: int, path: str, reason: str) -> None:
        line = self.lines[pos]
        if self.protocol is not None and line is not None:
            if self.on_bad != "skip":
                raise DataError(path, f"{reason} (listed in {self.protocol} line {line})")
            self.bad.append(BadItem(self.protocol, int(line), f"{path}: {reason}"))
        elif self.on_bad != "skip":
            raise DataError(path, reason)
        else:
            self.bad.append(BadItem(path, None, reason))
        log.warning("event=skip %s: %s", path, reason)


def _extract(splits: list[_Split], runner: Any, beside: tuple[Any, ...] = ()) -> None:
    """Every split's features and shards, the splits one after another without a pause between them.

    At most :data:`IN_FLIGHT` tasks per worker are handed out ahead, the next split's as soon as a split has no
    more: its last task and shard files overlap the next split's first tasks, so no worker waits at a split's
    end. Results are taken in protocol order, split after split, so the first bad row stops the pass as in
    one process. ``beside`` are results of tasks handed out with the features (the ASV score check): an error
    in one stops the pass as soon as it is in. On an error every task already handed out finishes before the
    rows on disk are deleted (no worker writes into a deleted file, and no file is left half-written).
    """
    running: Any = collections.deque()  # (split, task, result), in protocol order
    order = iter(splits)
    current = next(order, None)

    def hand_out() -> None:
        nonlocal current
        while current is not None and len(running) < IN_FLIGHT * runner.processes:
            task = current.next_task()
            if task is None:
                current = next(order, None)
            else:
                running.append((current, task, runner.featurise(current.rows, task)))

    def settle() -> None:
        for result in [r for _, _, r in running] + [r for s in splits for r in s.pending()] + [*beside]:
            result.wait()

    def check_beside(wait: bool) -> None:
        for result in beside:
            if wait or result.ready():
                result.get()  # raises the task's error

    with contextlib.ExitStack() as stack:
        for s in splits:
            stack.callback(s.close)
        stack.callback(settle)  # runs first
        check_beside(wait=False)
        hand_out()
        while running:
            split, task, result = running.popleft()
            done = result.get()
            hand_out()
            split.take(runner, task, done)
            for s in splits:
                s.reap(wait=False)
            check_beside(wait=False)
        for s in splits:
            s.reap(wait=True)
        check_beside(wait=True)


def extract_split(source: LASource, df: Any, split: str, out_dir: Path, cfg: FeatureConfig,
                  kinds: tuple[str, ...], *, shard_size: int, batch_size: int = BATCH_SIZE, on_bad: str = "error",
                  bad: list[BadItem] | None = None, progress: bool = True, protocol: str | None = None,
                  processes: int = 1, pool: FeaturePool | None = None) -> Any:
    """Decode, featurise and shard one split; returns ``df`` restricted to kept rows plus shard/row columns.

    A missing, unreadable or wrong-rate FLAC raises :class:`DataError` naming the FLAC and, when
    ``protocol`` is given and ``df`` has the ``line`` column, the protocol file and line that listed
    it; with ``on_bad='skip'`` it is recorded in ``bad`` under that protocol line instead.
    Blocks of ``batch_size`` rows go to ``pool``'s workers when one is given (the features stage
    starts one for all its splits), else, with ``processes`` > 1, to a pool started for this split;
    the shards are byte-identical to one process's. The workers write the features and the shard
    files (:class:`SplitRows`); this process only hands out blocks, learns which rows were kept, and
    hands out each shard once its rows are known. Every shard file is written atomically.
    """
    kinds = tuple(kinds)
    if pool is not None and (pool.source is not source or pool.cfg != cfg or pool.kinds != kinds):
        raise ValueError(f"split {split}: the worker pool was started for another source, feature config or kinds "
                         f"({pool.kinds} vs {kinds})")
    job = _Split(df, split, out_dir, cfg, kinds, shard_size=shard_size, batch_size=batch_size, on_bad=on_bad,
                 protocol=protocol, progress=progress)
    n_blocks = -(-len(df) // batch_size)
    with contextlib.ExitStack() as stack:
        if pool is None and min(processes, n_blocks) > 1:
            pool = stack.enter_context(FeaturePool(source, cfg, kinds, min(processes, n_blocks)))
        _extract([job], pool if pool is not None else _Inline(_Work.build(source, cfg, kinds)))
    if bad is not None:
        bad.extend(job.bad)
    return job.result()


def write_features(raw_dir: str | Path, out_dir: Path, cfg: FeaturesConfig, *, seed: int, on_bad: str,
                   processes: int, processes_from: str = "", progress: bool = True) -> None:
    """The features stage's output in ``out_dir``: every split's shards (dev and eval class-balanced to
    ``cfg.max_per_class``), ``index.parquet``, the organisers' ASV score files (checked, copied) and
    ``manifest.json`` (config, counts, every skipped item). ``processes`` single-threaded workers (the CPU
    budget, which ``processes_from`` names for the log) give the same bytes as one."""
    import dataclasses

    import pandas as pd

    from repropipe.asvspoof import data
    from repropipe.io import atomic_write_json

    source = data.open_source(raw_dir)
    front_end = cfg.front_end()
    bad: list[BadItem] = []
    dfs, protocol_bad = {}, {}  # the protocols, read first to size the pool; skipped lines listed split by split
    for split in data.SPLITS:
        df = data.read_protocol(source, split, on_bad=on_bad, bad=protocol_bad.setdefault(split, []))
        dfs[split] = df if split == "train" else data.balanced_subset(df, cfg.max_per_class, seed).reset_index(drop=True)
    # one pool for every split: its start-up is paid once (and none for fewer blocks than processes)
    processes = max(1, min(processes, sum(-(-len(df) // BATCH_SIZE) for df in dfs.values())))
    log.info("event=features processes=%d from=%s", processes, processes_from)
    jobs = {split: _Split(df, split, out_dir, front_end, cfg.kinds, shard_size=cfg.shard_size, batch_size=BATCH_SIZE,
                          on_bad=on_bad, protocol=source.where(data.protocol_path(split)), progress=progress)
            for split, df in dfs.items()}
    # the largest split first: the pass ends on the smallest split's last shard, the one step the workers
    # cannot share (for the real LA: eval, train, dev)
    order = sorted(jobs.values(), key=lambda job: -len(job.df))
    out_dir.mkdir(parents=True, exist_ok=True)
    with FeaturePool(source, front_end, cfg.kinds, processes) if processes > 1 else contextlib.nullcontext() as pool:
        runner = pool if pool is not None else _Inline(_Work.build(source, front_end, cfg.kinds))
        _extract(order, runner, beside=(runner.copy_asv_scores(out_dir),))
    frames = []
    for split, job in jobs.items():
        bad.extend(protocol_bad[split] + job.bad)
        frames.append(job.result())
        log.info("event=features split=%s utterances=%d", split, len(frames[-1]))
    index = pd.concat(frames, ignore_index=True)
    with atomic_path(out_dir / "index.parquet") as t:
        index.to_parquet(t, index=False)
    atomic_write_json(out_dir / "manifest.json", {
        "data_source": data.data_source_of(raw_dir), "source": source.description,
        "config": dataclasses.asdict(cfg),
        "counts": {s: int((index.split == s).sum()) for s in data.SPLITS},
        "skipped": [b.as_dict() for b in bad],
    })


def load_features(feat_dir: str | Path, split: str, kind: str) -> tuple[torch.Tensor, Any]:
    """All of one split's features of one kind, in index order, with the index rows."""
    import pandas as pd

    feat_dir = Path(feat_dir)
    index = pd.read_parquet(feat_dir / "index.parquet")
    index = index[index.split == split].reset_index(drop=True)
    shards = sorted(index.shard.unique())
    parts = {s: torch_load(feat_dir / kind / f"{split}-{s:03d}.pt") for s in shards}
    # rows were written in index order, shard after shard, so concatenation is index order
    x = torch.cat([parts[s] for s in shards]) if shards else torch.empty(0)
    if len(x) != len(index):
        raise DataError(feat_dir / kind, f"{split}: {len(x)} feature rows for {len(index)} index rows")
    return x, index
