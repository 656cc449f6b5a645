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
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repropipe.io import DataError, atomic_write_json, md5_file, open_zip, read_json

if TYPE_CHECKING:
    import pandas as pd

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
COLUMNS = ["speaker_id", "utt_id", "system_id", "key", "label", "path"]


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


def parse_protocol(text: str, *, name: str, split: str, on_bad: str = "error",
                   bad: list[BadItem] | None = None) -> "pd.DataFrame":
    """Parse official CM protocol lines ``SPEAKER_ID UTT_ID - SYSTEM_ID KEY`` into a DataFrame.

    Columns: speaker_id, utt_id, system_id ('-' for bona fide), key, label (1 bona fide, 0 spoof),
    path (relative, ``LA/ASVspoof2019_LA_<split>/flac/<utt>.flac``). A malformed line raises
    :class:`DataError` naming file and line, or with ``on_bad='skip'`` is appended to ``bad``.
    """
    import pandas as pd

    rows = []
    seen: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        parts = raw.split()
        problem = None
        if len(parts) != 5:
            problem = f"expected 5 columns 'SPEAKER_ID UTT_ID - SYSTEM_ID KEY', got {len(parts)}"
        elif parts[4] not in KEYS:
            problem = f"unknown key {parts[4]!r} (expected bonafide or spoof)"
        elif parts[1] in seen:
            problem = f"utterance {parts[1]} listed twice"
        if problem is not None:
            if on_bad != "skip":
                raise DataError(name, problem, line=lineno)
            if bad is not None:
                bad.append(BadItem(name, lineno, problem))
            log.warning("event=skip file=%s line=%d reason=%s", name, lineno, problem)
            continue
        spk, utt, _, system, key = parts
        seen.add(utt)
        rows.append((spk, utt, system, key, KEYS[key], audio_path(split, utt)))
    return pd.DataFrame(rows, columns=COLUMNS)


def read_protocol(source: LASource, split: str, *, on_bad: str = "error",
                  bad: list[BadItem] | None = None) -> "pd.DataFrame":
    """The protocol of one split as a DataFrame (see :func:`parse_protocol`), from any source."""
    rel = protocol_path(split)
    if not source.exists(rel):
        raise DataError(source.where(rel), "protocol file missing")
    text = source.read_bytes(rel).decode("utf-8", errors="replace")
    return parse_protocol(text, name=source.where(rel), split=split, on_bad=on_bad, bad=bad)


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


# --------------------------------------------------------------------------- structural check of real data


def check_structure(source: LASource, *, expect_official_counts: bool = True) -> dict[str, int]:
    """Check a real LA.zip or tree before anything uses it; returns the utterances per split.

    Every protocol file must exist, every utterance it lists must exist in the archive or tree, and
    (unless ``expect_official_counts`` is off, for a user's own subset) each protocol must have the
    official number of lines (:data:`OFFICIAL_COUNTS`). This catches a truncated download or a
    partial extraction where an md5 cannot: DataShare's checksum is not known offline.
    """
    counts: dict[str, int] = {}
    for split in SPLITS:
        rel = protocol_path(split)
        if not source.exists(rel):
            raise DataError(source.where(rel), "protocol file missing; is this the complete ASVspoof 2019 LA release?")
        name = source.where(rel)
        text = source.read_bytes(rel).decode("utf-8", errors="replace")
        lines = [(i, line.split()) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
        expected = OFFICIAL_COUNTS[split]
        if expect_official_counts and len(lines) != expected:
            raise DataError(name, f"{len(lines)} protocol lines, the official release has {expected}; a truncated "
                                  "or altered file? (a deliberate subset: set asvspoof.real.expect_official_counts: false)")
        missing = [(i, parts[1]) for i, parts in lines if len(parts) >= 2 and not source.exists(audio_path(split, parts[1]))]
        if missing:
            line, utt = missing[0]
            raise DataError(source.where(audio_path(split, utt)),
                            f"listed in {name} line {line} but not in the data ({len(missing)} of {len(lines)} "
                            f"listed {split} files missing); an incomplete download or extraction?")
        counts[split] = len(lines)
    log.info("event=structure_ok source=%s %s", source.description, " ".join(f"{k}={v}" for k, v in counts.items()))
    return counts


# --------------------------------------------------------------------------- download stage


def download_real(real: dict[str, Any], out_dir: Path) -> None:
    """``source: real``: write ``out_dir/source.json`` pointing at LA data outside the tracked outputs.

    * ``real.root``: an extracted tree the user already has (the directory containing ``LA/``);
      the md5 of each protocol file is recorded so a change re-runs the features.
    * ``real.archive``: an LA.zip the user already has: md5-verified and read in place, not copied.
    * otherwise ``real.url`` is fetched to ``<real.cache_dir>/LA.zip`` (resumable, md5-checked) and
      read from there; a cache that already holds a verified copy is not fetched again.
    """
    from repropipe.download import DownloadError, fetch

    md5 = real.get("md5")
    official = bool(real.get("expect_official_counts", True))
    if real.get("root"):
        root = Path(real["root"]).expanduser().resolve()
        src = DirSource(root)
        sums = {}
        for split in SPLITS:
            rel = protocol_path(split)
            if not src.exists(rel):
                raise DataError(src.where(rel), "protocol file missing; real.root must be the directory that contains LA/")
            sums[rel] = md5_file(root / rel)
        counts = check_structure(src, expect_official_counts=official)
        atomic_write_json(out_dir / "source.json", {"root": str(root), "protocol_md5": sums, "utterances": counts})
        return
    if real.get("archive"):
        archive = Path(real["archive"]).expanduser().resolve()
        if not archive.is_file():
            raise DataError(archive, "real.archive: no such file")
    else:
        if not md5:
            log.warning("event=no_md5 msg=real.md5 is not set: the archive is fetched unverified; its md5 is "
                        "recorded in source.json so you can pin it in params.yaml")
        archive = fetch(real["url"], Path(real["cache_dir"]) / "LA.zip", md5=md5 or None).resolve()
    got = md5_file(archive)
    if md5 and got.lower() != md5.lower():
        raise DownloadError(f"{archive}: md5 {got}, expected {md5} (real.md5); the archive is incomplete or not LA.zip")
    # fails early, naming the file, if it is not LA.zip, lacks a protocol or a listed FLAC, or is cut short
    counts = check_structure(ZipSource(archive), expect_official_counts=official)
    atomic_write_json(out_dir / "source.json", {"archive": str(archive), "md5": got, "utterances": counts})


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
