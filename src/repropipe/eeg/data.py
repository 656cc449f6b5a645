"""PhysioNet EEG Motor Movement/Imagery: real download, synthetic EDF+ writer, and the one reader.

Both sources end as ``data/raw/eeg/S001/S001R04.edf`` (PhysioNet naming) plus ``manifest.json``,
and :func:`read_run` is the only way anything downstream opens them, so the synthetic default
exercises exactly the code path real recordings take.

Synthetic signal (documented so a reader knows what a model can learn): every channel carries
independent pink (1/f) noise; two sensorimotor sources (near C3 and C4, position jittered per
subject) carry narrow-band mu (8-13 Hz) and beta (13-30 Hz) rhythms whose centre frequencies and
strength vary by subject, spread to neighbouring electrodes with a Gaussian fall-off over the
standard_1005 positions. During T1 (left fist imagery) the right-hemisphere (C4) source weakens by
a subject-specific depth, during T2 (right fist) the left-hemisphere (C3) one does: a lateralised
event-related desynchronisation, learnable across subjects but noisy within a trial.
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import warnings
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from repropipe.io import DataError, atomic_path, atomic_write_json, sha256_file

if TYPE_CHECKING:
    from repropipe.eeg.config import DownloadConfig

log = logging.getLogger("repropipe.eeg")

SFREQ = 160.0
RUNS = (4, 8, 12)  # imagined left/right fist
# The 64 channel labels as they appear in the PhysioNet EDF headers (dots pad to 4 characters).
PHYSIONET_CHANNELS = (
    "Fc5. Fc3. Fc1. Fcz. Fc2. Fc4. Fc6. C5.. C3.. C1.. Cz.. C2.. C4.. C6.. Cp5. Cp3. Cp1. Cpz. Cp2. Cp4. "
    "Cp6. Fp1. Fpz. Fp2. Af7. Af3. Afz. Af4. Af8. F7.. F5.. F3.. F1.. Fz.. F2.. F4.. F6.. F8.. Ft7. Ft8. "
    "T7.. T8.. T9.. T10. Tp7. Tp8. P7.. P5.. P3.. P1.. Pz.. P2.. P4.. P6.. P8.. Po7. Po3. Poz. Po4. Po8. "
    "O1.. Oz.. O2.. Iz.."
).split()
assert len(PHYSIONET_CHANNELS) == 64
# Recordings the dataset is known to get wrong (see README): 88, 92 and 100 are sampled at 128 Hz
# instead of 160 Hz, and 104's imagery runs carry mis-timed/short annotation sets. MOABB and
# braindecode exclude the same four.
KNOWN_BAD_SUBJECTS = (88, 92, 100, 104)
# S001R04's start as MNE reports it (``meas_date: 2009-08-12 16:15:00 UTC``); synthetic files carry the same.
MEAS_DATE = datetime.datetime(2009, 8, 12, 16, 15, tzinfo=datetime.timezone.utc)


def run_path(root: str | os.PathLike[str], subject: int, run: int) -> Path:
    return Path(root) / f"S{subject:03d}" / f"S{subject:03d}R{run:02d}.edf"


# -------------------------------------------------------------------------------------- integrity
# The SHA-256 table MNE ships for every PhysioNet EEG MMI file (pooch registry format, one
# "S001/S001R04.edf <hex>" per line). None reads MNE's own file; tests that feed synthetic EDFs (which
# are not PhysioNet's bytes) point this at a table in the same format made from their files, so the
# parser and the checks the real data meets are the ones exercised.
CHECKSUM_FILE: str | os.PathLike[str] | None = None
MNE_LAYOUT = Path("MNE-eegbci-data") / "files" / "eegmmidb" / "1.0.0"  # under MNE's cache root (~/mne_data)


def checksum_table(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """``{"S001/S001R04.edf": sha256 hex}`` from MNE's ``mne/data/eegbci_checksums.txt`` (or ``path``,
    or :data:`CHECKSUM_FILE`): the only record of what PhysioNet's bytes are, since PhysioNet serves the
    files without a checksum list of its own."""
    path = path if path is not None else CHECKSUM_FILE
    if path is None:
        from importlib.resources import files

        res = files("mne").joinpath("data", "eegbci_checksums.txt")
        return _parse_checksums(res.read_bytes(), str(res))
    return _parse_checksums(Path(path).read_bytes(), str(path))


@functools.lru_cache(maxsize=4)
def _parse_checksums(raw: bytes, where: str) -> dict[str, str]:
    table: dict[str, str] = {}
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DataError(where, f"not an ASCII checksum table (byte {exc.start})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        digest = parts[1] if len(parts) >= 2 else ""
        if ":" in digest:
            alg, digest = digest.split(":", 1)
            if alg.lower() != "sha256":
                raise DataError(where, f"hash {alg!r}, expected sha256", line=lineno)
        if len(parts) != 2 or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
            raise DataError(where, f"expected '<file> <sha256 hex>', got {line.strip()!r}", line=lineno)
        table[parts[0]] = digest.lower()
    return table


def _edf_layout(path: Path) -> tuple[int, int, int, int]:
    """(size on disk, bytes the header promises, records, bytes per record) from the EDF header."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(256)
        if len(head) < 256:
            raise DataError(path, f"truncated EDF: {size} bytes, shorter than the 256-byte header")
        try:
            header_bytes = int(head[184:192].decode("ascii").strip())
            n_records = int(head[236:244].decode("ascii").strip())
            n_signals = int(head[252:256].decode("ascii").strip())
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(path, f"not an EDF file (unreadable header fields: {exc})") from None
        if header_bytes != 256 * (n_signals + 1):
            raise DataError(path, f"not an EDF file: header size {header_bytes} bytes for {n_signals} signals "
                                  f"(EDF needs 256 * (signals + 1) = {256 * (n_signals + 1)})")
        fh.seek(256 + n_signals * 216)
        spr = fh.read(n_signals * 8)
    if len(spr) < n_signals * 8:
        raise DataError(path, f"truncated EDF: {size} bytes, the {n_signals} signal headers are incomplete")
    try:
        per_record = sum(int(spr[i * 8:(i + 1) * 8].decode("ascii").strip()) for i in range(n_signals)) * 2
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(path, f"not an EDF file (unreadable samples-per-record field: {exc})") from None
    return size, header_bytes + max(n_records, 0) * per_record, n_records, per_record


def _crlf_hint(path: Path) -> str:
    crlf = path.read_bytes().count(b"\r\n")
    return (f"it holds {crlf} CR LF byte pairs: a text-mode (LF->CRLF) copy does this (FTP in ASCII mode, "
            f"git with autocrlf, a Windows text-mode write); copy the file in binary mode or fetch it again")


def check_edf_size(path: str | os.PathLike[str]) -> None:
    """The file is exactly as long as its EDF header promises.

    Shorter: an interrupted copy (reads as garbage or fails deep inside a reader). Longer: most often
    a text-mode copy that turned every LF byte of the binary samples into CR LF, which MNE reads as
    shifted samples or fails on with a misleading encoding hint. Either way, name the file first.
    """
    path = Path(path)
    size, expected, n_records, per_record = _edf_layout(path)
    if size < expected:
        raise DataError(path, f"truncated EDF: {size} bytes on disk, header promises {expected} "
                              f"({n_records} records of {per_record} bytes)")
    if size > expected and n_records >= 0:
        raise DataError(path, f"EDF longer than its header promises: {size} bytes on disk, {size - expected} more "
                              f"than the {expected} of {n_records} records of {per_record} bytes; "
                              + _crlf_hint(path))


def verify_physionet(path: str | os.PathLike[str], rel: str, table: dict[str, str]) -> bool:
    """Check one EDF against PhysioNet's SHA-256 (``rel`` like ``S001/S001R04.edf``) and its header size.

    Returns whether the table lists the run (an unlisted run gets the size check only). A mismatch
    says the bytes are not PhysioNet's and, when the size gives it away, what happened to them.
    """
    path = Path(path)
    expected = table.get(rel)
    if expected is not None:
        got = sha256_file(path)
        if got != expected:
            size, promised, _, _ = _edf_layout(path)
            why = ""
            if size > promised:
                why = (f" The file is {size - promised} bytes longer than its EDF header promises ({promised}); "
                       + _crlf_hint(path) + ".")
            elif size < promised:
                why = f" The file is {promised - size} bytes shorter than its EDF header promises: an interrupted copy."
            raise DataError(path, f"SHA-256 {got} is not PhysioNet's {expected} for {rel} (MNE's "
                                  f"eegbci_checksums.txt): these bytes are not PhysioNet's.{why} Delete it and fetch "
                                  f"it again (eeg.local_dir: null downloads from PhysioNet).")
    check_edf_size(path)
    return expected is not None


# ----------------------------------------------------------------------------------------- real
def resolve_local_dir(local_dir: str | os.PathLike[str]) -> Path:
    """The folder holding ``S001/`` in any layout people have the files in: MNE's cache root
    (``<root>/MNE-eegbci-data/files/eegmmidb/1.0.0``), PhysioNet's zip (``<dir>/files``), the
    ``eegmmidb/1.0.0`` folder, or a folder holding ``S001/`` itself."""
    d = Path(local_dir).expanduser()
    if not d.is_dir():
        raise DataError(d, "eeg.local_dir is not a folder")
    candidates = [d / MNE_LAYOUT, d / "files" / "eegmmidb" / "1.0.0", d / "eegmmidb" / "1.0.0", d / "1.0.0",
                  d / "files", d]
    for c in candidates:
        if c.is_dir() and any(p.is_dir() and len(p.name) == 4 and p.name[0] == "S" and p.name[1:].isdigit()
                              for p in c.iterdir()):
            return c
    raise DataError(d, "eeg.local_dir holds no PhysioNet layout: looked for S001/S001R04.edf ... under "
                       + ", ".join(str(c) for c in candidates))


def download_real(root: str | os.PathLike[str], subjects: list[int], runs: list[int], local_dir: str | None,
                  cache_dir: str | os.PathLike[str] | None = None, checksums: dict[str, str] | None = None) -> list[Path]:
    """Copy every run into ``root/Sxxx/SxxxRyy.edf`` from ``local_dir`` or, without one, from MNE's
    downloader into ``cache_dir`` (kept between runs, so an interrupted download resumes per file).

    Every source file is checked against PhysioNet's SHA-256 (:func:`verify_physionet`) before it is
    copied: MNE's ``load_data`` trusts any file already in its cache, and a local copy may have been
    damaged on the way. The network part is never called by tests.
    """
    table = checksum_table() if checksums is None else checksums
    root = Path(root)
    if not local_dir:
        from mne.datasets import eegbci

        cache = Path(cache_dir if cache_dir is not None else root / ".mne-download")
        cache.mkdir(parents=True, exist_ok=True)
        for s in subjects:
            files = eegbci.load_data(s, list(runs), path=str(cache), update_path=False)
            log.info("eeg_download event=subject subject=%d files=%d cache=%s", s, len(files), cache)
        local_dir = str(cache)
    src_root = resolve_local_dir(local_dir)
    out: list[Path] = []
    unlisted = []
    for s in subjects:
        for r in runs:
            src = run_path(src_root, s, r)
            if not src.exists():
                raise DataError(src, f"eeg.local_dir has no file for subject {s} run {r} "
                                     f"(expected the PhysioNet layout Sxxx/SxxxRyy.edf under {src_root})")
            rel = src.relative_to(src_root).as_posix()
            if not verify_physionet(src, rel, table):
                unlisted.append(rel)
            dst = run_path(root, s, r)
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
            out.append(dst)
    if unlisted:
        log.warning("eeg_download event=unverified files=%s reason=not_in_checksum_table", unlisted)
    if not cache_dir:
        shutil.rmtree(root / ".mne-download", ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------ synthetic
@dataclass(frozen=True)
class SubjectTraits:
    """The per-subject parameters the synthetic generator draws (subject-varying, seeded)."""

    mu_hz: float
    beta_hz: float
    mu_amp: float
    beta_amp: float
    depth: float
    left_site: str
    right_site: str


def subject_traits(seed: int, subject: int, effect: float) -> SubjectTraits:
    rng = np.random.default_rng([seed, subject, 7])
    return SubjectTraits(
        mu_hz=float(rng.uniform(9.0, 12.0)), beta_hz=float(rng.uniform(17.0, 25.0)),
        mu_amp=float(rng.uniform(0.8, 1.3)), beta_amp=float(rng.uniform(0.4, 0.8)),
        depth=float(np.clip(effect * rng.uniform(0.7, 1.3), 0.05, 0.95)),
        left_site=str(rng.choice(["C3", "Cp3", "Fc3", "C1"])), right_site=str(rng.choice(["C4", "Cp4", "Fc4", "C2"])),
    )


def _pink(rng: np.random.Generator, n_ch: int, n: int) -> np.ndarray:
    """Unit-variance 1/f noise per channel (FFT shaping of white noise)."""
    spec = np.fft.rfft(rng.standard_normal((n_ch, n)), axis=1)
    f = np.fft.rfftfreq(n, 1.0 / SFREQ)
    f[0] = f[1]
    x = np.fft.irfft(spec / np.sqrt(f), n=n, axis=1)
    return x / x.std(axis=1, keepdims=True)


def _narrowband(rng: np.random.Generator, n: int, centre: float, half_width: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SFREQ)
    spec[np.abs(f - centre) > half_width] = 0
    x = np.fft.irfft(spec, n=n)
    return x / x.std()


@functools.lru_cache(maxsize=1)
def montage() -> Any:
    """The standard_1005 montage the course uses (mne 1.13 warns it will be renamed colin27_1005)."""
    import mne

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return mne.channels.make_standard_montage("standard_1005")


def _positions() -> dict[str, np.ndarray]:
    pos = montage().get_positions()["ch_pos"]
    return {k.lower(): np.asarray(v) for k, v in pos.items()}


def standard_name(physionet_label: str) -> str:
    """'Fc5.' -> 'FC5', 'Cz..' -> 'Cz', 'Afz.' -> 'AFz' (what eegbci.standardize does)."""
    name = physionet_label.rstrip(".")
    names = {k.lower(): k for k in montage().ch_names}
    return names.get(name.lower(), name)


def _spatial(site: str, names: list[str], pos: dict[str, np.ndarray], sigma: float = 0.03) -> np.ndarray:
    centre = pos[site.lower()]
    d = np.array([np.linalg.norm(pos[n.lower()] - centre) for n in names])
    return np.exp(-(d ** 2) / (2 * sigma ** 2))


def _events(duration_s: float, rng: np.random.Generator) -> list[tuple[float, float, str]]:
    """PhysioNet's schedule: T0 rest 4.2 s alternating with T1/T2 imagery 4.1 s, from t=0."""
    out, t, kinds = [], 0.0, []
    n_imag = int(duration_s // 8.3) + 1
    kinds = list(rng.permutation(["T1", "T2"] * ((n_imag + 1) // 2)))
    i = 0
    while t + 4.2 <= duration_s:
        out.append((round(t, 4), 4.2, "T0"))
        t += 4.2
        if t + 4.1 > duration_s or i >= len(kinds):
            break
        out.append((round(t, 4), 4.1, kinds[i]))
        i += 1
        t += 4.1
    return out


def synth_run(seed: int, subject: int, run: int, duration_s: float, effect: float) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """(data in volts [64, n], annotations) for one synthetic run."""
    rng = np.random.default_rng([seed, subject, run])
    tr = subject_traits(seed, subject, effect)
    n = int(round(duration_s * SFREQ))
    names = [standard_name(c) for c in PHYSIONET_CHANNELS]
    pos = _positions()
    events = _events(duration_s, rng)
    t = np.arange(n) / SFREQ
    # amplitude envelopes of the two sources: 1, dipping by `depth` during contralateral imagery
    env = {"left": np.ones(n), "right": np.ones(n)}
    for onset, dur, kind in events:
        if kind == "T0":
            continue
        hemi = "right" if kind == "T1" else "left"  # left-hand imagery weakens the right hemisphere
        ramp = np.clip(np.minimum(t - onset - 0.3, onset + dur - t) / 0.5, 0, 1)  # ERD sets in ~0.3 s after the cue
        env[hemi] = env[hemi] * (1 - tr.depth * ramp)
    data = _pink(rng, 64, n) * 1.0
    for hemi, site in (("left", tr.left_site), ("right", tr.right_site)):
        rhythm = tr.mu_amp * _narrowband(rng, n, tr.mu_hz, 1.0) + tr.beta_amp * _narrowband(rng, n, tr.beta_hz, 2.5)
        data += np.outer(_spatial(site, names, pos), env[hemi] * rhythm)
    scale = 10e-6 * rng.uniform(0.7, 1.4)  # ~10 uV, subject/run gain
    return data * scale, events


def write_edf(path: str | os.PathLike[str], data: np.ndarray, events: list[tuple[float, float, str]],
              ch_names: list[str] | tuple[str, ...] = PHYSIONET_CHANNELS, sfreq: float = SFREQ) -> Path:
    """EDF+ with the given annotations, through mne.export (edfio), written atomically."""
    import mne

    info = mne.create_info(list(ch_names), sfreq, ch_types="eeg")
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_meas_date(MEAS_DATE)
    if events:
        on, du, de = zip(*events)
        raw.set_annotations(mne.Annotations(list(on), list(du), list(de)))
    with atomic_path(path) as tmp:
        edf_tmp = tmp.with_suffix(".edf")
        try:
            mne.export.export_raw(edf_tmp, raw, fmt="edf", overwrite=True, verbose="error")
            os.replace(edf_tmp, tmp)
        finally:
            edf_tmp.unlink(missing_ok=True)
    return Path(path)


def synthesize(root: str | os.PathLike[str], subjects: list[int], runs: list[int], seed: int, duration_s: float,
               effect: float) -> list[Path]:
    out = []
    for s in subjects:
        for r in runs:
            data, events = synth_run(seed, s, r, duration_s, effect)
            out.append(write_edf(run_path(root, s, r), data, events))
    return out


def write_manifest(root: str | os.PathLike[str], files: list[Path], source: str) -> Path:
    root = Path(root)
    return atomic_write_json(root / "manifest.json", {
        "source": source,
        "files": [{"path": f.relative_to(root).as_posix(), "sha256": sha256_file(f)} for f in sorted(files)],
    })


# --------------------------------------------------------------------------------------- reader
def read_run(path: str | os.PathLike[str], expect_sfreq: float = SFREQ, expect_channels: int = 64) -> Any:
    """Open one recording with ``mne.io.read_raw_edf`` and check what the pipeline relies on.

    Raises :class:`DataError` naming the file for: truncation, a sampling rate other than
    ``expect_sfreq``, a channel count other than ``expect_channels``, or no T1/T2 annotations.
    """
    import mne

    path = Path(path)
    if not path.exists():
        raise DataError(path, "missing recording")
    check_edf_size(path)
    try:
        raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    except Exception as exc:  # mne raises many types for malformed files
        raise DataError(path, f"unreadable EDF ({type(exc).__name__}: {exc})") from exc
    if abs(raw.info["sfreq"] - expect_sfreq) > 1e-6:
        raise DataError(path, f"sampling rate {raw.info['sfreq']:g} Hz, expected {expect_sfreq:g} Hz")
    if len(raw.ch_names) != expect_channels:
        raise DataError(path, f"{len(raw.ch_names)} channels, expected {expect_channels}")
    kinds = set(raw.annotations.description)
    if not kinds & {"T1", "T2"}:
        raise DataError(path, "no T1/T2 annotations (an EDF+ with event annotations is required)")
    return raw


# ----------------------------------------------------------------------------------- stage entry
def write_raw(root: str | os.PathLike[str], cfg: DownloadConfig, seed: int) -> list[Path]:
    """Every configured run under ``root`` (copied from PhysioNet or synthesised) plus ``manifest.json``."""
    subjects = list(cfg.subjects)
    if cfg.source == "real" and cfg.exclude_known_bad:
        dropped = sorted(set(subjects) & set(KNOWN_BAD_SUBJECTS))
        subjects = [s for s in subjects if s not in KNOWN_BAD_SUBJECTS]
        if dropped:
            log.info("eeg_download event=exclude subjects=%s reason=known_bad_recordings", dropped)
    if cfg.source == "real":
        files = download_real(root, subjects, list(cfg.runs), cfg.local_dir, cache_dir=cfg.cache_dir)
    else:
        files = synthesize(root, subjects, list(cfg.runs), seed, cfg.synthetic.duration_s, cfg.synthetic.effect)
    write_manifest(root, files, cfg.source)
    log.info("eeg_download event=done source=%s files=%d", cfg.source, len(files))
    return files


def subject_run(rel: str) -> tuple[int, int]:
    """(subject, run) from a PhysioNet run name like ``S001/S001R04.edf``."""
    name = Path(rel).stem  # S001R04
    if len(name) != 7 or name[0] != "S" or name[4] != "R":
        raise ValueError(f"{rel!r} is not a PhysioNet run name (SxxxRyy.edf)")
    return int(name[1:4]), int(name[5:7])


def read_manifest(root: str | os.PathLike[str]) -> tuple[str, list[int], list[int]]:
    """(source, subjects, runs) that eeg_download wrote under ``root``."""
    from repropipe.io import read_json

    path = Path(root) / "manifest.json"
    manifest = read_json(path, "missing; run `python -m repropipe eeg download` first")
    try:
        pairs = sorted({subject_run(f["path"]) for f in manifest["files"]})
        source = str(manifest["source"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(path, f"not an eeg_download manifest ({type(exc).__name__}: {exc})") from exc
    return source, sorted({s for s, _ in pairs}), sorted({r for _, r in pairs})
