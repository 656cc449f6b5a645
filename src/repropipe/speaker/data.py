"""VoxCeleb in the NTU ML2023 Spring HW4 layout: obtain it (Kaggle, a wav tree, a local copy, or
synthesize it) and read it back with validation.

The layout, as the course's sample code describes it ("data directory |---- metadata.json
|---- testdata.json |---- mapping.json |---- uttr-{random string}.pt"; 600 VoxCeleb2 speakers,
56,666 labelled and 4,000 test utterances) and its dataset classes read it::

    metadata.json  {"n_mels": 40, "speakers": {"id00464": [{"feature_path": "uttr-<32 hex>.pt", "mel_len": 652}, ...]}}
    mapping.json   {"speaker2id": {"id00464": 0, ...}, "id2speaker": {"0": "id00464", ...}}
    testdata.json  {"n_mels": 40, "utterances": [{"feature_path": "uttr-<32 hex>.pt", "mel_len": 813}, ...]}
    uttr-*.pt      one float32 tensor (mel_len, n_mels) per utterance (log-mel frames, 10 ms hop)

Every JSON file is decoded strictly as UTF-8 and every speaker id and file name is checked (no
U+FFFD, no lone surrogates): a bad byte is an error naming the file, never a bogus speaker.

Every reader goes through :func:`load_feature`, which uses ``torch.load(weights_only=True)`` so a
.pt file that carries a pickled object (code) is refused, and checks shape and dtype.

Synthetic data (the default) plants a learnable-but-not-trivial speaker signal: each speaker has
its own spectral envelope (a few formant-like bumps over the mel axis plus a spectral tilt) and its
own speaking rate (mean lengths of voiced and pause segments). Utterances mix that envelope with
speaker-independent "phoneme" patterns that change every segment, a random per-utterance channel
tilt and gain, and Gaussian noise, so a single frame says little about the speaker and a model has
to pool over time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from repropipe.download import DownloadError
from repropipe.io import (DataError, atomic_dir, atomic_path, atomic_torch_save, atomic_write_json, atomic_write_text,
                          md5_file, read_json, read_utf8)
from repropipe.speaker.config import RealConfig, SyntheticConfig

log = logging.getLogger("repropipe.speaker")

N_MELS = 40
KAGGLE_COMPETITION = "ml2023springhw4"
SOURCE_FILE = "source.json"  # ours, beside the HW4 files: where the data came from (for provenance)


# ---------------------------------------------------------------------------------------------
# Reading (shared by every source)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Utterance:
    feature_path: str
    mel_len: int
    speaker: str | None  # None for testdata.json utterances (unlabelled)


@dataclass
class HW4Dataset:
    root: Path
    n_mels: int
    speakers: list[str]          # sorted by id in mapping.json
    utterances: list[Utterance]  # labelled (metadata.json)
    test: list[Utterance]        # unlabelled (testdata.json)


def _read_json(path: Path) -> Any:
    """One of the three HW4 JSON files, decoded strictly as UTF-8: a stray byte is an error naming the
    file and line, never a U+FFFD inside a speaker id."""
    text = read_utf8(path, "missing (expected the HW4 layout: metadata.json, mapping.json, testdata.json, uttr-*.pt)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON: {exc.msg}", line=exc.lineno) from exc


def check_name(path: Path, name: Any, what: str) -> str:
    """A speaker id or file name as text that round-trips: no U+FFFD (something upstream decoded bytes
    lossily), no lone surrogates (``\\udcxx`` escapes of undecodable bytes), no control characters."""
    if not isinstance(name, str) or not name.strip():
        raise DataError(path, f"{what} must be a non-empty string, got {name!r}")
    if "\ufffd" in name:
        raise DataError(path, f"{what} {ascii(name)} contains U+FFFD, the replacement character: the file was decoded "
                              "lossily somewhere upstream; recreate it from the original")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(path, f"{what} {ascii(name)} holds a lone surrogate (an undecodable byte escaped as "
                              "\\udcxx); it cannot be a real id") from None
    if any(unicodedata.category(c).startswith("C") or c.isspace() for c in name):
        raise DataError(path, f"{what} {ascii(name)} contains whitespace or control characters")
    return name


def _entries(path: Path, items: Any, where: str, speaker: str | None) -> list[Utterance]:
    if not isinstance(items, list):
        raise DataError(path, f"{where}: expected a list of {{feature_path, mel_len}} entries")
    out = []
    for i, e in enumerate(items):
        if not (isinstance(e, dict) and isinstance(e.get("feature_path"), str) and isinstance(e.get("mel_len"), int)
                and e["mel_len"] > 0):
            raise DataError(path, f"{where}[{i}]: expected {{'feature_path': str, 'mel_len': positive int}}, got {e!r}")
        check_name(path, e["feature_path"], f"{where}[{i}].feature_path")
        if "/" in e["feature_path"] or "\\" in e["feature_path"] or e["feature_path"].startswith(".."):
            raise DataError(path, f"{where}[{i}]: feature_path must be a file name in the dataset folder")
        out.append(Utterance(e["feature_path"], e["mel_len"], speaker))
    return out


def read_dataset(root: str | os.PathLike[str]) -> HW4Dataset:
    """Parse and cross-check the three JSON files (the .pt files are read by :func:`load_feature`)."""
    root = Path(root)
    meta_path, map_path, test_path = root / "metadata.json", root / "mapping.json", root / "testdata.json"
    meta, mapping, test = _read_json(meta_path), _read_json(map_path), _read_json(test_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("speakers"), dict) or not isinstance(meta.get("n_mels"), int):
        raise DataError(meta_path, "expected {'n_mels': int, 'speakers': {speaker_id: [utterances]}}")
    if not isinstance(mapping, dict) or not isinstance(mapping.get("speaker2id"), dict):
        raise DataError(map_path, "expected {'speaker2id': {speaker_id: int}, 'id2speaker': {str(int): speaker_id}}")
    s2i = mapping["speaker2id"]
    for spk in meta["speakers"]:
        check_name(meta_path, spk, "speaker id")
    for spk in s2i:
        check_name(map_path, spk, "speaker id")
    if sorted(s2i) != sorted(meta["speakers"]):
        raise DataError(map_path, "speaker2id does not list the same speakers as metadata.json")
    if sorted(s2i.values()) != list(range(len(s2i))):
        raise DataError(map_path, "speaker2id ids must be 0..N-1, each once")
    i2s = mapping.get("id2speaker")
    if i2s is not None and i2s != {str(i): spk for spk, i in s2i.items()}:
        raise DataError(map_path, "id2speaker is not the inverse of speaker2id")
    if not isinstance(test, dict) or "utterances" not in test:
        raise DataError(test_path, "expected {'n_mels': int, 'utterances': [{feature_path, mel_len}]}")
    if test.get("n_mels", meta["n_mels"]) != meta["n_mels"]:
        raise DataError(test_path, f"n_mels {test['n_mels']!r} differs from metadata.json's {meta['n_mels']}")
    speakers = sorted(s2i, key=lambda s: s2i[s])
    utts = [u for s in speakers for u in _entries(meta_path, meta["speakers"][s], f"speakers.{s}", s)]
    if not utts:
        raise DataError(meta_path, "no utterances listed")
    return HW4Dataset(root, meta["n_mels"], speakers, utts, _entries(test_path, test["utterances"], "utterances", None))


def load_feature(root: str | os.PathLike[str], utt: Utterance, n_mels: int) -> "torch.Tensor":
    """One utterance's (mel_len, n_mels) float32 tensor; refuses pickles, wrong shapes and dtypes."""
    import pickle
    import zipfile

    import torch

    path = Path(root) / utt.feature_path
    if not path.exists():
        raise DataError(path, "listed in the metadata but missing")
    if not zipfile.is_zipfile(path):
        raise DataError(path, "not a readable torch tensor file (expected torch.save's zip format)")
    try:
        x = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        why = next((ln.strip() for ln in str(exc).splitlines() if "Unsupported" in ln), "pickled objects")
        raise DataError(path, f"refused: not a plain tensor file ({why}); torch.load(weights_only=True) loads "
                              "tensors only, never code") from exc
    except Exception as exc:  # truncated zip, not a torch file at all
        raise DataError(path, f"not a readable torch tensor file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(x, torch.Tensor):
        raise DataError(path, f"expected one tensor, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise DataError(path, f"expected dtype float32, got {x.dtype}")
    if x.dim() != 2 or x.shape[1] != n_mels or x.shape[0] < 1:
        raise DataError(path, f"expected shape (mel_len, {n_mels}), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise DataError(path, "contains NaN or infinite values")
    return x


# ---------------------------------------------------------------------------------------------
# Writing the layout
# ---------------------------------------------------------------------------------------------

def write_layout(dest: Path, speakers: dict[str, list[dict[str, Any]]], test: list[dict[str, Any]],
                 n_mels: int = N_MELS) -> None:
    """The three JSON files as the course's Python preprocessing writes them: ``json.dump`` defaults
    (one line, ``", "`` and ``": "`` separators), keys in the order of the sample code's description,
    speaker ids numbered in sorted order."""
    order = sorted(speakers)
    for name, obj in (("metadata.json", {"n_mels": n_mels, "speakers": {s: speakers[s] for s in order}}),
                      ("mapping.json", {"speaker2id": {s: i for i, s in enumerate(order)},
                                        "id2speaker": {str(i): s for i, s in enumerate(order)}}),
                      ("testdata.json", {"n_mels": n_mels, "utterances": test})):
        atomic_write_text(dest / name, json.dumps(obj))


def feature_name(counter: int, tag: int) -> str:
    """``uttr-<32 hex digits>.pt``, the shape of the released names (a uuid4's hex, e.g.
    ``uttr-5c88b2f1803449789c36f14fb4d3c1eb.pt``), derived from the utterance's counter and random tag
    so that the same seed gives the same names."""
    digest = hashlib.md5(f"{counter}:{tag}".encode()).digest()
    return f"uttr-{uuid.UUID(bytes=digest, version=4).hex}.pt"


def save_feature(path: Path, mel: "torch.Tensor") -> None:
    import torch

    atomic_torch_save(path, mel.to(torch.float32).contiguous().clone())


# ---------------------------------------------------------------------------------------------
# Synthetic
# ---------------------------------------------------------------------------------------------

def _speaker_profile(rng: np.random.Generator, n_mels: int) -> dict[str, Any]:
    bins = np.arange(n_mels)
    env = np.zeros(n_mels)
    for _ in range(3):
        c, w, a = rng.uniform(3, n_mels - 3), rng.uniform(2.0, 5.0), rng.uniform(0.4, 1.0)
        env += a * np.exp(-0.5 * ((bins - c) / w) ** 2)
    env += rng.uniform(-0.6, 0.6) * (bins / n_mels - 0.5)
    return {"envelope": env - env.mean(), "voiced_mean": rng.uniform(4, 14), "pause_mean": rng.uniform(2, 8),
            "pitch": rng.uniform(0, 6)}


def synth_utterance(rng: np.random.Generator, prof: dict[str, Any], phonemes: np.ndarray, length: int,
                    noise: float) -> np.ndarray:
    """Log-mel frames: envelope + per-segment phoneme pattern + channel + noise, pauses between segments."""
    n_mels = phonemes.shape[1]
    bins = np.arange(n_mels)
    out = np.full((length, n_mels), -4.0)
    t = 0
    while t < length:
        dur = max(2, int(rng.exponential(prof["voiced_mean"])))
        ph = phonemes[rng.integers(len(phonemes))]
        harm = 0.3 * np.cos(2 * np.pi * bins / (8 + prof["pitch"]))  # speaker-specific low-band ripple
        out[t:t + dur] = 1.0 + 1.6 * prof["envelope"] + ph + harm
        t += dur + max(1, int(rng.exponential(prof["pause_mean"])))
    channel = rng.normal(0, 0.25) * (bins / n_mels - 0.5) + rng.normal(0, 0.3)
    return (out + channel + rng.normal(0, noise, size=out.shape)).astype(np.float32)


def synthesize(dest: str | os.PathLike[str], *, n_speakers: int, utts_per_speaker: int, min_len: int, max_len: int,
               n_test: int, noise: float, seed: int, n_mels: int = N_MELS) -> None:
    """Write a synthetic dataset in the HW4 layout (see the module docstring for the planted signal)."""
    import torch

    if min_len > max_len:
        raise ValueError(f"speaker.synthetic: min_len {min_len} > max_len {max_len}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    phonemes = rng.normal(0, 1.0, size=(24, n_mels))
    phonemes = np.stack([np.convolve(p, np.ones(3) / 3, mode="same") * 1.2 for p in phonemes])
    # VoxCeleb2-style ids (id0NNNN), as HW4's 600 speakers have; VoxCeleb1's start at id10001
    profiles = {f"id{i + 1:05d}": _speaker_profile(rng, n_mels) for i in range(n_speakers)}
    speakers: dict[str, list[dict[str, Any]]] = {s: [] for s in profiles}
    counter = 0

    def emit(spk: str) -> dict[str, Any]:
        nonlocal counter
        length = int(rng.integers(min_len, max_len + 1))
        mel = synth_utterance(rng, profiles[spk], phonemes, length, noise)
        name = feature_name(counter, int(rng.integers(16**8)))
        counter += 1
        save_feature(dest / name, torch.from_numpy(mel))
        return {"feature_path": name, "mel_len": length}

    for spk in profiles:
        for _ in range(utts_per_speaker):
            speakers[spk].append(emit(spk))
    # testdata.json: unlabelled utterances of the same speakers, as in HW4
    names = sorted(profiles)
    test = [emit(names[int(rng.integers(n_speakers))]) for _ in range(n_test)]
    write_layout(dest, speakers, test, n_mels)
    log.info("event=synthesized dest=%s speakers=%d utterances=%d test=%d", dest, n_speakers,
             n_speakers * utts_per_speaker, n_test)


# ---------------------------------------------------------------------------------------------
# Real sources
# ---------------------------------------------------------------------------------------------

def _kaggle_credentials_present() -> bool:
    if (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")) or os.environ.get("KAGGLE_API_TOKEN"):
        return True
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    return (config_dir / "kaggle.json").exists() or (config_dir / "access_token").exists()


def download_kaggle(cache: str | os.PathLike[str]) -> Path:
    """Fetch the HW4 competition files with the user's own Kaggle token; returns the HW4 folder.

    The archive and its extraction stay under ``cache`` (outside the DVC outputs): a rerun does
    not download the ~7 GB again, and the ~62k uttr-*.pt files are read in place, never hashed
    by DVC or copied into its cache. The user must have accepted the competition rules on kaggle.com.
    """
    if not _kaggle_credentials_present():
        raise DownloadError(
            "speaker.source is 'real' with real.from 'kaggle', but no Kaggle token was found: put your kaggle.json "
            "(kaggle.com -> Settings -> API -> Create New Token) in ~/.kaggle/ (chmod 600), or set KAGGLE_CONFIG_DIR, "
            "or KAGGLE_USERNAME and KAGGLE_KEY; accept the rules of the competition "
            f"https://www.kaggle.com/competitions/{KAGGLE_COMPETITION} first. Or set speaker.real.hw4_dir to a copy "
            "you already have.")
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi  # lazy: only the real downloader needs it
    except ImportError as exc:
        raise DownloadError("the 'kaggle' package is needed for speaker.real.from 'kaggle': "
                            "pip install -e '.[real]' (or pip install kaggle==2.2.5)") from exc
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"{KAGGLE_COMPETITION}.zip"
    if not archive.exists():
        api = KaggleApi()
        api.authenticate()
        log.info("event=kaggle_download competition=%s dest=%s", KAGGLE_COMPETITION, cache)
        api.competition_download_files(KAGGLE_COMPETITION, path=str(cache), quiet=False)
    if not archive.exists():
        raise DownloadError(f"{archive}: the Kaggle download did not produce the expected archive")
    unpacked = cache / "unpacked"
    if not (unpacked.exists() and any(unpacked.rglob("metadata.json"))):
        import zipfile

        tmp = cache / "unpacked.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        shutil.rmtree(unpacked, ignore_errors=True)
        tmp.rename(unpacked)
    return _find_layout(unpacked)


def _find_layout(root: Path) -> Path:
    hits = sorted(root.rglob("metadata.json"), key=lambda p: len(p.parts))
    if not hits:
        raise DataError(root, "no metadata.json found: not the HW4 dataset")
    return hits[0].parent


def check_hw4_dir(src: str | os.PathLike[str]) -> HW4Dataset:
    """Validate an existing HW4 folder (the JSON files, and that every listed .pt exists)."""
    src = Path(src).expanduser().resolve()
    ds = read_dataset(src)
    for u in ds.utterances + ds.test:
        if not (src / u.feature_path).is_file():
            raise DataError(src / u.feature_path, "listed in the metadata but missing")
    return ds


@functools.lru_cache(maxsize=4)
def _mel_transform(sample_rate: int, n_mels: int) -> Any:
    import torchaudio

    win, hop = int(round(0.025 * sample_rate)), int(round(0.010 * sample_rate))
    return torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=win, win_length=win, hop_length=hop,
                                                n_mels=n_mels, center=False)


def log_mel(wave: np.ndarray, sample_rate: int, n_mels: int = N_MELS) -> "torch.Tensor":
    """Our own extraction for VoxCeleb1 wavs: 40 log-mel bands, 25 ms window, 10 ms hop -> (frames, n_mels).

    The filterbank is built once per sample rate (VoxCeleb1 is all 16 kHz), not once per file.
    """
    import torch

    x = torch.as_tensor(wave, dtype=torch.float32)
    if x.dim() == 2:  # soundfile gives (frames, channels)
        x = x.mean(1)
    return torch.log(_mel_transform(sample_rate, n_mels)(x) + 1e-6).T.contiguous()


def wav_tree_root(src: str | os.PathLike[str]) -> Path:
    """The folder whose children are speaker folders: ``src`` itself, or its ``wav/`` (what
    VoxCeleb1's dev and test archives unpack to)."""
    src = Path(src).expanduser()
    if not src.is_dir():
        raise DataError(src, "speaker.real.wav_dir: no such folder")
    return src / "wav" if (src / "wav").is_dir() else src


def convert_wav_tree(src: str | os.PathLike[str], dest: str | os.PathLike[str], test_fraction: float,
                     seed: int) -> None:
    """A VoxCeleb1 tree (``wav/<speaker>/<video>/<n>.wav``, e.g. ``id10001/1zcIwhmdeo4/00001.wav``) into
    the HW4 layout with our 40-mel features.

    Every wav must sit exactly at ``<speaker>/<video>/<n>.wav``, and every folder and file name must
    be valid UTF-8 (an undecodable byte in a folder name would otherwise become a bogus speaker id);
    either problem is an error naming the file. A ``test_fraction`` of the utterances goes to
    testdata.json (unlabelled), as in HW4.
    """
    import soundfile as sf
    from tqdm import tqdm

    src, dest = wav_tree_root(src), Path(dest)
    wavs = sorted(src.rglob("*.wav"))
    if not wavs:
        raise DataError(src, "no .wav files found (expected <speaker>/<video>/<n>.wav, e.g. id10001/1zcIwhmdeo4/00001.wav)")
    rng = np.random.default_rng(seed)
    speakers: dict[str, list[dict[str, Any]]] = {}
    test: list[dict[str, Any]] = []
    dest.mkdir(parents=True, exist_ok=True)
    for wav in tqdm(wavs, desc="log-mel", unit="wav"):
        rel = wav.relative_to(src)
        if len(rel.parts) != 3:
            raise DataError(wav, f"expected <speaker>/<video>/<n>.wav under {src} (VoxCeleb1's wav/ folder, e.g. "
                                 "id10001/1zcIwhmdeo4/00001.wav)")
        for part, what in zip(rel.parts, ("speaker folder", "video folder", "file name")):
            check_name(wav, part, what)
        spk = rel.parts[0]
        try:
            wave, sr = sf.read(wav, dtype="float32")
        except Exception as exc:
            raise DataError(wav, f"not a readable wav ({exc})") from exc
        if wave.size == 0:
            raise DataError(wav, "holds no samples")
        mel = log_mel(wave, sr)
        if mel.shape[0] < 1:
            raise DataError(wav, "shorter than one 25 ms frame")
        name = "uttr-" + hashlib.sha1(rel.as_posix().encode()).hexdigest()[:32] + ".pt"
        save_feature(dest / name, mel)
        entry = {"feature_path": name, "mel_len": int(mel.shape[0])}
        (test if rng.random() < test_fraction else speakers.setdefault(spk, [])).append(entry)
    if not speakers:
        raise DataError(src, "every utterance went to testdata.json; lower speaker.real.wav_test_fraction")
    write_layout(dest, speakers, test)


def obtain(dest: str | os.PathLike[str], source: Literal["synthetic", "real"], seed: int, *,
           synthetic: SyntheticConfig | None = None, real: RealConfig | None = None) -> str:
    """Fill ``dest`` from ``source`` (``synthetic`` or ``real`` must then be given); returns a data_source description.

    Synthetic data (a few hundred files) is written into ``dest`` in the HW4 layout. Real data
    (~62k uttr-*.pt) stays where it is (your ``hw4_dir``, or the Kaggle extraction or wav-tree
    conversion under ``real.cache_dir``) and ``dest`` holds only ``source.json`` naming that
    folder (``root``) with the md5s of its JSON files, so DVC never hashes or caches 62k files.
    """
    with atomic_dir(dest) as tmp:  # nothing half-written survives a failure
        if source == "synthetic":
            if synthetic is None:
                raise ValueError("speaker.source is 'synthetic' but no speaker.synthetic config was given")
            desc, root = _synthesize(tmp, synthetic, seed)
        else:
            if real is None:
                raise ValueError("speaker.source is 'real' but no speaker.real config was given")
            desc, root = _fetch(tmp, real, seed)
        read_dataset(root)  # never point at a layout we cannot read
        info: dict[str, Any] = {"data_source": desc, "synthetic": source == "synthetic"}
        if root != tmp:
            info.update(root=str(root), md5={n: md5_file(root / n) for n in ("metadata.json", "mapping.json",
                                                                             "testdata.json")})
        atomic_write_json(tmp / SOURCE_FILE, info)
    log.info("stage=speaker_download event=done data_source=%r", desc)
    return desc


def data_root(raw: str | os.PathLike[str]) -> Path:
    """The HW4 folder behind the download stage's output: ``source.json``'s ``root``, else ``raw`` itself."""
    raw = Path(raw)
    source = raw / SOURCE_FILE
    if source.exists():
        root = read_json(source, "missing").get("root")
        if root:
            return Path(root)
    return raw


def _synthesize(tmp: Path, s: SyntheticConfig, seed: int) -> tuple[str, Path]:
    synthesize(tmp, n_speakers=s.n_speakers, utts_per_speaker=s.utts_per_speaker, min_len=s.min_len,
               max_len=s.max_len, n_test=s.n_test, noise=s.noise, seed=seed)
    return f"synthetic (HW4 layout, {s.n_speakers} speakers x {s.utts_per_speaker} utterances, seed {seed})", tmp


def _fetch(tmp: Path, r: RealConfig, seed: int) -> tuple[str, Path]:
    if r.hw4_dir:
        root = Path(r.hw4_dir).expanduser().resolve()
        check_hw4_dir(root)
        return f"real (HW4 VoxCeleb2 subset from {r.hw4_dir})", root
    if r.from_ == "kaggle":
        root = download_kaggle(r.cache_dir).resolve()
        check_hw4_dir(root)
        return f"real (HW4 VoxCeleb2 subset, Kaggle {KAGGLE_COMPETITION})", root
    if not r.wav_dir:
        raise ValueError("speaker.real.from is 'wav_tree' but speaker.real.wav_dir is not set")
    converted = (Path(r.cache_dir) / "wav_tree_hw4").resolve()
    with atomic_dir(converted) as conv:  # re-converted whenever the download stage runs
        convert_wav_tree(r.wav_dir, conv, r.wav_test_fraction, seed)
    return f"real (VoxCeleb1 wav tree {r.wav_dir}, our 40-mel extraction)", converted
