"""ASVspoof 2019 LA on disk: the layout, the one protocol reader, audio access, and the download stage.

The raw stage output ``data/raw/asvspoof`` holds exactly one of:

* ``LA/`` - the extracted tree (what ``source: synthetic`` writes, in the real layout);
* ``source.json`` - ``source: real``: a pointer to LA.zip (downloaded into ``real.cache_dir``, or
  the user's own copy, ``real.archive``) or to an extracted tree (``real.root``), with md5s so a
  change is visible. FLACs are read straight from the zip, so neither DVC nor Snakemake ever
  hashes or stats 121,461 files, and DVC never copies 7 GB into its cache;
* ``LA.zip`` - also accepted, for a user who drops the archive there by hand.

:func:`open_source` turns any of the three into an :class:`LASource` with the same methods, so the
protocol reader and the feature extractor run unchanged on synthetic and real data.
"""

from __future__ import annotations

import io as _io
import logging
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repropipe.io import DataError, atomic_write_json, md5_file, open_zip, read_json

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from repropipe.asvspoof.config import RealConfig

log = logging.getLogger("repropipe.asvspoof")

SPLITS = ("train", "dev", "eval")
PROTOCOL_DIR = "LA/ASVspoof2019_LA_cm_protocols"
PROTOCOL_FILES = {"train": "ASVspoof2019.LA.cm.train.trn.txt", "dev": "ASVspoof2019.LA.cm.dev.trl.txt",
                  "eval": "ASVspoof2019.LA.cm.eval.trl.txt"}
ASV_SCORES = {s: f"LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.{s}.gi.trl.scores.txt" for s in ("dev", "eval")}
SAMPLE_RATE = 16000
# Protocol lines of the official LA release (ASVspoof 2019 evaluation plan): the structural check of a
# real LA.zip or tree, since no md5 of LA.zip is published where this pipeline can read it offline.
OFFICIAL_COUNTS = {"train": 25380, "dev": 24844, "eval": 71237}
KEYS = {"bonafide": 1, "spoof": 0}  # label 1 = bona fide: higher score means more bona fide
# Spoofing systems per partition (README.LA.txt of the release; ASVspoof 2019 evaluation plan): train and dev
# share A01-A06, eval holds A07-A19 (A16 and A19 are A04 and A06 again), so eval attacks are unseen in training.
ATTACKS = {"train": tuple(f"A{i:02d}" for i in range(1, 7)), "dev": tuple(f"A{i:02d}" for i in range(1, 7)),
           "eval": tuple(f"A{i:02d}" for i in range(7, 20))}
SPLIT_LETTER = {"train": "T", "dev": "D", "eval": "E"}
# ``line``: the protocol line that listed the utterance, so an audio error can name it
COLUMNS = ["speaker_id", "utt_id", "system_id", "key", "label", "path", "line"]
_SPEAKER = re.compile(r"LA_\d{4}")
_UTT = {split: re.compile(rf"LA_{letter}_\d{{7}}") for split, letter in SPLIT_LETTER.items()}


def protocol_path(split: str) -> str:
    return f"{PROTOCOL_DIR}/{PROTOCOL_FILES[split]}"


def audio_path(split: str, utt_id: str) -> str:
    return f"LA/ASVspoof2019_LA_{split}/flac/{utt_id}.flac"


# --------------------------------------------------------------------------- sources


class LASource(ABC):
    """Read access to an LA tree by relative path (``LA/...``), wherever it lives.

    Two implementations: an extracted directory and LA.zip read in place (so 121,461 FLACs need
    not be extracted, hashed by DVC or stat-ed by Snakemake).
    """

    description = ""

    @abstractmethod
    def exists(self, rel: str) -> bool: ...

    @abstractmethod
    def read_bytes(self, rel: str) -> bytes: ...

    @abstractmethod
    def where(self, rel: str) -> str:
        """A path a human can find the file at, for error messages."""

    def reopened(self) -> "LASource":
        """This source for another process (a forked worker must not share an open archive's file offset)."""
        return self


class DirSource(LASource):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)  # the directory that contains LA/
        self.description = f"directory {self.root}"

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def read_bytes(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def where(self, rel: str) -> str:
        return str(self.root / rel)


class ZipSource(LASource):
    """Members of LA.zip, read without extracting; the prefix before ``LA/`` is found once."""

    def __init__(self, archive: Path) -> None:
        self.archive = Path(archive)
        self.description = f"archive {self.archive}"
        self.zf = open_zip(self.archive)
        names = self.zf.namelist()
        marker = protocol_path("train")
        hit = next((n for n in names if n.endswith(marker)), None)
        if hit is None:
            raise DataError(self.archive, f"no member ending in {marker}; is this ASVspoof 2019 LA.zip?")
        self.prefix = hit[: -len(marker)]
        self.names = set(names)

    def exists(self, rel: str) -> bool:
        return self.prefix + rel in self.names

    def read_bytes(self, rel: str) -> bytes:
        return self.zf.read(self.prefix + rel)

    def where(self, rel: str) -> str:
        return f"{self.archive}!{self.prefix}{rel}"

    def reopened(self) -> "ZipSource":
        import copy

        twin = copy.copy(self)
        twin.zf = open_zip(self.archive)
        return twin


def open_source(raw_dir: str | os.PathLike[str]) -> LASource:
    """The LA data behind the download stage's output directory (see module docstring)."""
    raw = Path(raw_dir)
    if (raw / "LA").is_dir():
        return DirSource(raw)
    if (raw / "LA.zip").is_file():
        return ZipSource(raw / "LA.zip")
    pointer = raw / "source.json"
    if pointer.is_file():
        doc = read_json(pointer, "missing")
        if doc.get("archive"):
            return ZipSource(Path(doc["archive"]))
        if doc.get("root"):
            return DirSource(Path(doc["root"]))
    raise DataError(raw, "holds no LA/ tree, LA.zip or source.json; run `python -m repropipe asvspoof download`")


def data_source_of(raw_dir: str | os.PathLike[str]) -> str:
    marker = Path(raw_dir) / "SYNTHETIC"
    return "synthetic" if marker.exists() else "real"


# --------------------------------------------------------------------------- protocol reader


@dataclass
class BadItem:
    """One skipped protocol line or audio file (``on_bad_file: skip``): shown in the report."""

    where: str
    line: int | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"where": self.where, "line": self.line, "reason": self.reason}


def decode_lines(raw: bytes | str) -> list[tuple[int, str | None, str | None]]:
    """``(line number, text, problem)`` per line, each decoded strictly as UTF-8 on its own.

    The release's text files are ASCII (README.LA.txt: "protocol files in ASCII format"); a byte that
    is not UTF-8 means a damaged or foreign file, and it is reported at its line instead of being
    replaced by U+FFFD and surfacing later as a bogus id or a "missing" file.
    """
    if isinstance(raw, str):
        return [(i, t, None) for i, t in enumerate(raw.splitlines(), start=1)]
    chunks = raw.split(b"\n")
    if chunks and not chunks[-1]:
        chunks.pop()  # the final newline ends the last line; it does not start another
    out: list[tuple[int, str | None, str | None]] = []
    for i, chunk in enumerate(chunks, start=1):
        try:
            out.append((i, chunk.decode("utf-8"), None))
        except UnicodeDecodeError as exc:
            out.append((i, None, f"not UTF-8 text: byte 0x{chunk[exc.start]:02x} at column {exc.start + 1}"))
    return out


def check_protocol_line(parts: list[str], split: str) -> str | None:
    """What is wrong with one split CM protocol line, or ``None`` (README.LA.txt, section 3).

    ``SPEAKER_ID AUDIO_FILE_NAME - SYSTEM_ID KEY``: speaker ``LA_dddd``; file ``LA_<T|D|E>_ddddddd``
    (the letter of this partition); ``-``; ``-`` exactly for bona fide, else an attack of this
    partition (train and dev A01-A06, eval A07-A19); ``bonafide`` or ``spoof``, agreeing with the system.
    """
    if len(parts) != 5:
        return f"expected 5 columns 'SPEAKER_ID AUDIO_FILE_NAME - SYSTEM_ID KEY', got {len(parts)}"
    spk, utt, env, system, key = parts
    if key not in KEYS:
        return f"unknown key {key!r} (expected bonafide or spoof)"
    if not _SPEAKER.fullmatch(spk):
        return f"speaker id {spk!r} is not LA_ and 4 digits"
    if not _UTT[split].fullmatch(utt):
        return f"file name {utt!r} is not LA_{SPLIT_LETTER[split]}_ and 7 digits (the {split} partition)"
    if env != "-":
        return f"third column {env!r}, expected '-' (not used for LA)"
    if key == "bonafide" and system != "-":
        return f"bona fide with system id {system!r}; bona fide lines have '-'"
    if key == "spoof" and system not in ATTACKS[split]:
        allowed = f"{ATTACKS[split][0]}-{ATTACKS[split][-1]}"
        return f"spoof with system id {system!r}; {split} attacks are {allowed}"
    return None


def parse_protocol(text: bytes | str, *, name: str, split: str, on_bad: str = "error",
                   bad: list[BadItem] | None = None) -> "pd.DataFrame":
    """Parse official CM protocol lines ``SPEAKER_ID UTT_ID - SYSTEM_ID KEY`` into a DataFrame.

    Columns: speaker_id, utt_id, system_id ('-' for bona fide), key, label (1 bona fide, 0 spoof),
    path (relative, ``LA/ASVspoof2019_LA_<split>/flac/<utt>.flac``), line. Bytes are decoded strictly
    as UTF-8, line by line. A line that is not UTF-8 or breaks :func:`check_protocol_line` raises
    :class:`DataError` naming file and line, or with ``on_bad='skip'`` is appended to ``bad``.
    """
    import pandas as pd

    rows = []
    seen: dict[str, int] = {}
    for lineno, raw, problem in decode_lines(text):
        if raw is not None and not raw.strip():
            continue
        parts = raw.split() if raw is not None else []
        if problem is None:
            problem = check_protocol_line(parts, split)
        if problem is None and parts[1] in seen:
            problem = f"utterance {parts[1]} listed twice (first at line {seen[parts[1]]})"
        if problem is not None:
            if on_bad != "skip":
                raise DataError(name, problem, line=lineno)
            if bad is not None:
                bad.append(BadItem(name, lineno, problem))
            log.warning("event=skip file=%s line=%d reason=%s", name, lineno, problem)
            continue
        spk, utt, _, system, key = parts
        seen[utt] = lineno
        rows.append((spk, utt, system, key, KEYS[key], audio_path(split, utt), lineno))
    return pd.DataFrame(rows, columns=COLUMNS)


def read_protocol(source: LASource, split: str, *, on_bad: str = "error",
                  bad: list[BadItem] | None = None) -> "pd.DataFrame":
    """The protocol of one split as a DataFrame (see :func:`parse_protocol`), from any source."""
    rel = protocol_path(split)
    if not source.exists(rel):
        raise DataError(source.where(rel), "protocol file missing")
    return parse_protocol(source.read_bytes(rel), name=source.where(rel), split=split, on_bad=on_bad, bad=bad)


def balanced_subset(df: "pd.DataFrame", per_class: int | None, seed: int) -> "pd.DataFrame":
    """At most ``per_class`` bona fide and ``per_class`` spoof rows (spoofs spread over attacks).

    Real dev/eval are 90 % spoof; a balanced subset gives faster, lower-variance EER estimates
    while keeping every attack present. ``None`` keeps everything.
    """
    if per_class is None:
        return df
    import numpy as np

    rng = np.random.default_rng(seed)
    bona = df[df.label == 1]
    spoof = df[df.label == 0]
    keep_b = bona.iloc[np.sort(rng.permutation(len(bona))[:per_class])]
    # round-robin over attack systems so each keeps a share
    order = []
    groups = [g.index.to_numpy()[rng.permutation(len(g))] for _, g in spoof.groupby("system_id", sort=True)]
    i = 0
    while len(order) < min(per_class, len(spoof)):
        for g in groups:
            if i < len(g) and len(order) < per_class:
                order.append(g[i])
        i += 1
    keep_s = spoof.loc[sorted(order)]
    import pandas as pd

    return pd.concat([keep_b, keep_s]).sort_index()


# --------------------------------------------------------------------------- the organisers' ASV scores


ASV_KEYS = ("target", "nontarget", "spoof")
ALL_ATTACKS = tuple(f"A{i:02d}" for i in range(1, 20))


def parse_asv_scores(raw: bytes | str, *, name: str, split: str | None = None) -> dict[str, np.ndarray]:
    """The organisers' ASV scores, ``ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt``.

    Three columns, ``CM_KEY ASV_KEY SCORE`` (README.LA.txt, section 4): CM_KEY is ``bonafide`` or the
    attack id (A01-A19; ``spoof`` is accepted too), ASV_KEY ``target``, ``nontarget`` or ``spoof``,
    SCORE a number; target and nontarget trials are bona fide speech, spoof trials are not. The
    official scorer reads only columns 2 and 3, but a line that breaks any of this is a
    :class:`DataError` naming file and line: a four-column file (an ASV *protocol*, or the t-DCF
    package's own six-column copy) must not be silently read as nothing. Without target, nontarget
    or spoof trials no t-DCF exists: a DataError naming the file.
    """
    import numpy as np

    attacks = ATTACKS[split] if split in ATTACKS else ALL_ATTACKS
    out: dict[str, list[float]] = {k: [] for k in ASV_KEYS}
    for lineno, text, problem in decode_lines(raw):
        if text is not None and not text.strip():
            continue
        parts = text.split() if text is not None else []
        if problem is None and len(parts) != 3:
            problem = f"expected 3 columns 'CM_KEY ASV_KEY SCORE' (e.g. 'bonafide target 7.981530'), got {len(parts)}"
        if problem is None:
            cm_key, asv_key, value = parts
            if asv_key not in ASV_KEYS:
                problem = f"ASV key {asv_key!r}, expected target, nontarget or spoof"
            elif asv_key != "spoof" and cm_key != "bonafide":
                problem = f"{asv_key} trial with CM key {cm_key!r}; target and nontarget trials are bonafide"
            elif asv_key == "spoof" and cm_key != "spoof" and cm_key not in attacks:
                problem = (f"spoof trial with CM key {cm_key!r}; expected an attack id "
                           f"({attacks[0]}-{attacks[-1]}{' for ' + split if split in ATTACKS else ''}) or spoof")
            else:
                try:
                    score = float(value)
                except ValueError:
                    score = float("nan")
                if not np.isfinite(score):
                    problem = f"score {value!r} is not a finite number"
                else:
                    out[asv_key].append(score)
        if problem is not None:
            raise DataError(name, problem, line=lineno)
    empty = [k for k in ASV_KEYS if not out[k]]
    if empty:
        counts = ", ".join(f"{len(out[k])} {k}" for k in ASV_KEYS)
        raise DataError(name, f"no {' and no '.join(empty)} trials ({counts}); the t-DCF needs all three")
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def read_asv_scores(path: str | Path, split: str | None = None) -> dict[str, np.ndarray]:
    """:func:`parse_asv_scores` of a file on disk (errors name it)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read the ASV score file ({exc.strerror})") from exc
    return parse_asv_scores(raw, name=str(path), split=split)


# --------------------------------------------------------------------------- structural check of real data


def check_structure(source: LASource, *, expect_official_counts: bool = True, on_bad: str = "error",
                    bad: list[BadItem] | None = None) -> dict[str, int]:
    """Check a real LA.zip or tree before anything uses it; returns the utterances per split.

    Every protocol file must exist and parse (:func:`parse_protocol`: strict UTF-8, five columns, the
    partition's attack ids), every utterance it lists must exist in the archive or tree, and (unless
    ``expect_official_counts`` is off, for a user's own subset) each protocol must have the official
    number of lines (:data:`OFFICIAL_COUNTS`) and both ASV score files must be there. The ASV score
    files, when present, must parse (:func:`parse_asv_scores`). This catches a truncated download or
    a partial extraction where an md5 cannot: DataShare's checksum is not known offline. With ``on_bad='skip'`` bad lines and missing files are counted in ``bad``.
    """
    bad = [] if bad is None else bad
    counts: dict[str, int] = {}
    for split in SPLITS:
        rel = protocol_path(split)
        if not source.exists(rel):
            raise DataError(source.where(rel), "protocol file missing; is this the complete ASVspoof 2019 LA release?")
        name = source.where(rel)
        raw = source.read_bytes(rel)
        lines = sum(1 for line in raw.splitlines() if line.strip())
        expected = OFFICIAL_COUNTS[split]
        if expect_official_counts and lines != expected:
            raise DataError(name, f"{lines} protocol lines, the official release has {expected}; a truncated "
                                  "or altered file? (a deliberate subset: set asvspoof.real.expect_official_counts: false)")
        df = parse_protocol(raw, name=name, split=split, on_bad=on_bad, bad=bad)
        missing = [(line, path) for line, path in zip(df.line, df.path) if not source.exists(path)]
        if missing and on_bad != "skip":
            line, path = missing[0]
            raise DataError(source.where(path),
                            f"listed in {name} line {line} but not in the data ({len(missing)} of {lines} "
                            f"listed {split} files missing); an incomplete download or extraction?")
        for line, path in missing:
            bad.append(BadItem(name, int(line), f"{source.where(path)}: listed but not in the data"))
        counts[split] = len(df) - len(missing)
    for split, rel in ASV_SCORES.items():
        if source.exists(rel):
            parse_asv_scores(source.read_bytes(rel), name=source.where(rel), split=split)
        elif expect_official_counts:
            raise DataError(source.where(rel), "ASV score file missing (the release has it; min t-DCF needs it); "
                                               "is this the complete ASVspoof 2019 LA release?")
        else:
            log.warning("event=no_asv_scores file=%s msg=min t-DCF will not be available", source.where(rel))
    log.info("event=structure_ok source=%s %s skipped=%d", source.description,
             " ".join(f"{k}={v}" for k, v in counts.items()), len(bad))
    return counts


# --------------------------------------------------------------------------- download stage


def download_real(real: RealConfig, out_dir: Path, on_bad: str = "error") -> None:
    """``source: real``: write ``out_dir/source.json`` pointing at LA data outside the tracked outputs.

    * ``real.root``: an extracted tree the user already has (the directory containing ``LA/``);
      the md5 of each protocol file is recorded so a change re-runs the features.
    * ``real.archive``: an LA.zip the user already has: md5-verified and read in place, not copied.
    * otherwise ``real.url`` is fetched to ``<real.cache_dir>/LA.zip`` (resumable, md5-checked) and
      read from there; a cache that already holds a verified copy is not fetched again.

    ``on_bad`` is ``asvspoof.on_bad_file``: with ``skip``, bad protocol lines and listed-but-missing
    FLACs are counted in ``source.json`` (and skipped again, and listed, by the features stage).
    """
    from repropipe.download import DownloadError, fetch

    md5 = real.md5
    official = real.expect_official_counts
    if real.root:
        root = Path(real.root).expanduser().resolve()
        src = DirSource(root)
        sums = {}
        for split in SPLITS:
            rel = protocol_path(split)
            if not src.exists(rel):
                raise DataError(src.where(rel), "protocol file missing; real.root must be the directory that contains LA/")
            sums[rel] = md5_file(root / rel)
        bad: list[BadItem] = []
        counts = check_structure(src, expect_official_counts=official, on_bad=on_bad, bad=bad)
        atomic_write_json(out_dir / "source.json", {"root": str(root), "protocol_md5": sums, "utterances": counts,
                                                     "skipped": len(bad)})
        return
    if real.archive:
        archive = Path(real.archive).expanduser().resolve()
        if not archive.is_file():
            raise DataError(archive, "real.archive: no such file")
    else:
        if not md5:
            log.warning("event=no_md5 msg=real.md5 is not set: the archive is fetched unverified; its md5 is "
                        "recorded in source.json so you can pin it in params.yaml")
        archive = fetch(real.url, Path(real.cache_dir) / "LA.zip", md5=md5 or None).resolve()
    got = md5_file(archive)
    if md5 and got.lower() != md5.lower():
        raise DownloadError(f"{archive}: md5 {got}, expected {md5} (real.md5); the archive is incomplete or not LA.zip")
    # fails early, naming the file, if it is not LA.zip, lacks a protocol or a listed FLAC, or is cut short
    bad = []
    counts = check_structure(ZipSource(archive), expect_official_counts=official, on_bad=on_bad, bad=bad)
    atomic_write_json(out_dir / "source.json", {"archive": str(archive), "md5": got, "utterances": counts,
                                                 "skipped": len(bad)})


def read_audio(source: LASource, rel: str) -> tuple["Any", int]:
    """Decode one FLAC to float32 mono; a truncated or non-audio file raises :class:`DataError`."""
    import numpy as np
    import soundfile as sf

    if not source.exists(rel):
        raise DataError(source.where(rel), "listed in the protocol but missing")
    try:
        data, sr = sf.read(_io.BytesIO(source.read_bytes(rel)), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise DataError(source.where(rel), f"not a readable FLAC file ({exc})") from exc
    if data.ndim > 1:
        data = data.mean(axis=1)
    if data.size == 0:
        raise DataError(source.where(rel), "empty audio")
    return np.ascontiguousarray(data), int(sr)
