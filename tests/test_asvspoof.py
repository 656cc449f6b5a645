"""ASVspoof branch: protocol reader, bad input, features, scoring helpers, a tiny synthetic set."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from repropipe.asvspoof import data
from repropipe.asvspoof.evaluate import best_accuracy, eer_by_attack, min_tdcf
from repropipe.asvspoof.features import FeatureConfig, extract_split, fix_length, load_features
from repropipe.io import DataError

CFG = {"utterances": {"train": 10, "dev": 6, "eval": 18}, "speakers": {"train": 2, "dev": 2, "eval": 2},
       "bonafide_fraction": 0.2, "seconds": [0.3, 0.4]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from repropipe.asvspoof.synth import write_synthetic

    root = tmp_path_factory.mktemp("raw")
    write_synthetic(root, CFG, seed=0, progress=False)
    return root


def test_synthetic_set_has_the_real_layout_and_protocol(tiny):
    src = data.open_source(tiny)
    for split in data.SPLITS:
        df = data.read_protocol(src, split)
        assert len(df) == CFG["utterances"][split] and list(df.columns) == data.COLUMNS
        assert all(src.exists(p) for p in df.path)
        assert set(df.system_id[df.label == 1]) == {"-"}
    train, ev = data.read_protocol(src, "train"), data.read_protocol(src, "eval")
    assert set(train.system_id[train.label == 0]) <= {f"A0{i}" for i in range(1, 7)}
    assert set(ev.system_id[ev.label == 0]) == {f"A{i:02d}" for i in range(7, 20)}
    assert not set(train.speaker_id) & set(ev.speaker_id)
    line = (tiny / data.protocol_path("train")).read_text().splitlines()[0].split()
    assert len(line) == 5 and line[2] == "-" and line[1].startswith("LA_T_")
    x, sr = data.read_audio(src, train.path[0])
    assert sr == 16000 and x.dtype == np.float32 and np.abs(x).max() <= 1.0


def test_zip_source_reads_the_same_protocol(tiny, tmp_path):
    archive = tmp_path / "LA.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in (tiny / "LA").rglob("*"):
            if f.is_file():
                zf.write(f, f.relative_to(tiny).as_posix())
    a = data.read_protocol(data.DirSource(tiny), "dev")
    b = data.read_protocol(data.ZipSource(archive), "dev")
    assert a.equals(b)
    assert data.read_audio(data.ZipSource(archive), a.path[0])[0].shape == data.read_audio(data.DirSource(tiny), a.path[0])[0].shape


# Official CM protocol lines (README.LA.txt of the release: "SPEAKER_ID AUDIO_FILE_NAME - SYSTEM_ID KEY"),
# the first line of ASVspoof2019.LA.cm.train.trn.txt and a spoofed line of the same speaker.
OFFICIAL_PROTOCOL = ["LA_0079 LA_T_1138215 - - bonafide", "LA_0079 LA_T_1271820 - A01 spoof"]


def test_official_protocol_lines_parse_and_the_synthetic_writer_writes_them_byte_for_byte():
    from repropipe.asvspoof.synth import protocol_line

    raw = "".join(line + "\n" for line in OFFICIAL_PROTOCOL).encode("ascii")
    df = data.parse_protocol(raw, name="ASVspoof2019.LA.cm.train.trn.txt", split="train")
    assert df.to_dict("records") == [
        {"speaker_id": "LA_0079", "utt_id": "LA_T_1138215", "system_id": "-", "key": "bonafide", "label": 1,
         "path": "LA/ASVspoof2019_LA_train/flac/LA_T_1138215.flac", "line": 1},
        {"speaker_id": "LA_0079", "utt_id": "LA_T_1271820", "system_id": "A01", "key": "spoof", "label": 0,
         "path": "LA/ASVspoof2019_LA_train/flac/LA_T_1271820.flac", "line": 2}]
    written = "".join(protocol_line(*line.split()[:2], *line.split()[3:]) for line in OFFICIAL_PROTOCOL)
    assert written.encode() == raw


GOOD = "LA_0079 LA_T_1138215 - - bonafide"


@pytest.mark.parametrize("split,line,msg", [
    ("train", "LA_0079 LA_T_1138216 - bonafide", "expected 5 columns"),
    ("train", "LA_0079 LA_T_1138216 - A01 fake", "unknown key 'fake'"),
    ("train", "LA_0079 LA_T_1138216 - A99 spoof", "spoof with system id 'A99'; train attacks are A01-A06"),
    ("dev", "LA_0079 LA_D_1138216 - A07 spoof", "spoof with system id 'A07'; dev attacks are A01-A06"),
    ("eval", "LA_0079 LA_E_1138216 - A06 spoof", "spoof with system id 'A06'; eval attacks are A07-A19"),
    ("train", "LA_0079 LA_T_1138216 - A01 bonafide", "bona fide with system id 'A01'"),
    ("train", "LA_0079 LA_T_1138216 - bonafide bonafide", "bona fide with system id 'bonafide'"),
    ("train", "LA_0079 LA_T_1138216 - - spoof", "spoof with system id '-'"),
    ("train", "LA_0079 LA_E_1138216 - - bonafide", "file name 'LA_E_1138216' is not LA_T_"),
    ("train", "LA_79 LA_T_1138216 - - bonafide", "speaker id 'LA_79'"),
    ("train", "LA_0079 LA_T_1138216 x - bonafide", "third column 'x'"),
    ("train", GOOD, "utterance LA_T_1138215 listed twice \\(first at line 1\\)"),
    ("train", b"LA_0079 LA_T_11\xe98216 - - bonafide", "not UTF-8 text: byte 0xe9 at column 16"),
])
def test_bad_protocol_line_names_file_and_line_or_is_skipped(split, line, msg):
    letter = data.SPLIT_LETTER[split]
    first, last = GOOD.replace("_T_", f"_{letter}_"), f"LA_0080 LA_{letter}_1000001 - - bonafide"
    if isinstance(line, str):
        line = line.replace("LA_T_1138215", f"LA_{letter}_1138215")
    raw = first.encode() + b"\n" + (line if isinstance(line, bytes) else line.encode()) + b"\n" + last.encode() + b"\n"
    with pytest.raises(DataError, match=rf"proto.txt:2: {msg}"):
        data.parse_protocol(raw, name="proto.txt", split=split)
    bad: list = []
    df = data.parse_protocol(raw, name="proto.txt", split=split, on_bad="skip", bad=bad)
    assert list(df.line) == [1, 3] and [(b.where, b.line) for b in bad] == [("proto.txt", 2)]


def _broken_copy(tiny: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    import shutil

    import soundfile as sf

    root = tmp_path / "raw"
    shutil.copytree(tiny, root)
    df = data.read_protocol(data.DirSource(root), "dev")
    p0, p1, p2 = (root / p for p in df.path[:3])
    p0.write_bytes(p0.read_bytes()[:100])            # truncated FLAC
    p1.unlink()                                       # listed but missing
    sf.write(p2, np.zeros(8000, np.float32), 8000, format="FLAC")  # wrong sample rate
    return root, list(df.utt_id[:3])


def test_bad_audio_errors_or_is_skipped_and_counted(tiny, tmp_path):
    root, broken = _broken_copy(tiny, tmp_path)
    src = data.DirSource(root)
    df = data.read_protocol(src, "dev")
    cfg = FeatureConfig(seconds=0.3)
    with pytest.raises(DataError, match=broken[0]):
        extract_split(src, df, "dev", tmp_path / "f1", cfg, ("lfcc",), shard_size=4, progress=False)
    bad: list = []
    kept = extract_split(src, df, "dev", tmp_path / "f2", cfg, ("lfcc",), shard_size=4, on_bad="skip", bad=bad,
                         progress=False)
    assert len(kept) == len(df) - 3 and len(bad) == 3
    reasons = " ".join(b.reason for b in bad)
    assert "not a readable FLAC" in reasons and "missing" in reasons and "sample rate 8000" in reasons


def test_features_are_sharded_shaped_and_independent_of_batching(tiny, tmp_path):
    import pandas as pd

    src = data.open_source(tiny)
    df = data.read_protocol(src, "eval")
    cfg = FeatureConfig(seconds=0.5)
    a = extract_split(src, df, "eval", tmp_path / "a", cfg, ("lfcc", "mel"), shard_size=5, batch_size=3, progress=False)
    b = extract_split(src, df, "eval", tmp_path / "b", cfg, ("lfcc", "mel"), shard_size=100, batch_size=64, progress=False)
    assert sorted(p.name for p in (tmp_path / "a" / "lfcc").iterdir()) == [f"eval-00{i}.pt" for i in range(4)]
    a.to_parquet(tmp_path / "a" / "index.parquet")
    b.to_parquet(tmp_path / "b" / "index.parquet")
    xa, ia = load_features(tmp_path / "a", "eval", "lfcc")
    xb, _ = load_features(tmp_path / "b", "eval", "lfcc")
    assert xa.shape == (len(df), 60, 51) and xa.dtype == torch.float16
    assert torch.equal(xa, xb)
    assert load_features(tmp_path / "a", "eval", "mel")[0].shape == (len(df), 80, 51)
    assert list(ia.utt_id) == list(df.utt_id) and isinstance(ia, pd.DataFrame)


def test_fix_length_crops_and_repeat_pads():
    x = np.arange(5, dtype=np.float32)
    assert list(fix_length(x, 3)) == [0, 1, 2]
    assert list(fix_length(x, 12)) == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]


def test_balanced_subset_keeps_every_attack():
    import pandas as pd

    df = pd.DataFrame({"label": [1] * 10 + [0] * 90, "system_id": ["-"] * 10 + [f"A{7 + i % 3:02d}" for i in range(90)]})
    sub = data.balanced_subset(df, 6, seed=0)
    assert (sub.label == 1).sum() == 6 and (sub.label == 0).sum() == 6
    assert sub[sub.label == 0].system_id.value_counts().to_dict() == {"A07": 2, "A08": 2, "A09": 2}


def test_scoring_helpers_on_known_cases():
    import pandas as pd

    scores = np.array([3.0, 2.0, 1.0, 0.0, -1.0, 2.5])
    labels = np.array([1, 1, 0, 0, 0, 0])
    acc, thr = best_accuracy(scores, labels)
    assert acc == pytest.approx(5 / 6) and thr == 3.0  # accepting only 3.0 ties with accepting down to 2.0; the higher wins
    idx = pd.DataFrame({"label": labels, "system_id": ["-", "-", "A07", "A07", "A08", "A08"]})
    per = eer_by_attack(scores, idx)
    assert per["A07"] == 0.0 and 0.0 < per["A08"] <= 0.5


def test_min_tdcf_is_zero_for_a_perfect_cm_and_positive_otherwise():
    rng = np.random.default_rng(0)
    asv = {"target": rng.normal(3, 1, 500), "nontarget": rng.normal(-3, 1, 500), "spoof": rng.normal(2, 1, 500)}
    assert min_tdcf(np.array([5.0, 6.0]), np.array([0.0, 1.0]), asv) == 0.0
    assert min_tdcf(rng.normal(0, 1, 200), rng.normal(0, 1, 200), asv) > 0.5


def _zip_of(tree: Path, archive: Path, drop: str | None = None) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for f in (tree / "LA").rglob("*"):
            rel = f.relative_to(tree).as_posix()
            if f.is_file() and (drop is None or not rel.endswith(drop)):
                zf.write(f, "LA_release/" + rel)  # a prefix before LA/, as some repackaged archives have
    return archive


def test_real_archive_structure_check_counts_and_listed_files(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "OFFICIAL_COUNTS", dict(CFG["utterances"]))
    good = _zip_of(tiny, tmp_path / "LA.zip")
    assert data.check_structure(data.ZipSource(good)) == CFG["utterances"]
    assert data.check_structure(data.DirSource(tiny)) == CFG["utterances"]
    real = {"url": "file:///nowhere/LA.zip", "md5": None, "cache_dir": str(tmp_path / "cache"),
            "archive": str(good), "root": None, "expect_official_counts": True}
    data.download_real(real, tmp_path / "raw")
    assert json.loads((tmp_path / "raw" / "source.json").read_text())["utterances"] == CFG["utterances"]

    # a listed FLAC missing from the archive: the error names it and the protocol line listing it
    utt = data.read_protocol(data.DirSource(tiny), "eval").utt_id[3]
    partial = _zip_of(tiny, tmp_path / "partial.zip", drop=f"{utt}.flac")
    with pytest.raises(DataError, match=rf"{utt}\.flac: listed in .*cm\.eval\.trl\.txt line \d+ but not in the data \(1 of"):
        data.check_structure(data.ZipSource(partial))
    with pytest.raises(DataError, match=f"{utt}.flac"):
        data.download_real(dict(real, archive=str(partial)), tmp_path / "raw2")

    # a protocol that is not the official length (a truncated file, or the user's own subset)
    monkeypatch.setattr(data, "OFFICIAL_COUNTS", dict(CFG["utterances"], dev=25))
    with pytest.raises(DataError, match=r"cm\.dev\.trl\.txt: 6 protocol lines, the official release has 25"):
        data.check_structure(data.ZipSource(good))
    assert data.check_structure(data.ZipSource(good), expect_official_counts=False)["dev"] == 6
    data.download_real(dict(real, expect_official_counts=False), tmp_path / "raw3")  # opt-out for a subset

    # a protocol file missing altogether
    no_eval = _zip_of(tiny, tmp_path / "noeval.zip", drop=data.PROTOCOL_FILES["eval"])
    with pytest.raises(DataError, match=r"cm\.eval\.trl\.txt: protocol file missing"):
        data.check_structure(data.ZipSource(no_eval), expect_official_counts=False)


def test_shuffled_labels_keep_counts_and_break_the_link():
    from repropipe.asvspoof.train import settings_for, shuffled_labels

    labels = np.array([1] * 20 + [0] * 80)
    a, b = shuffled_labels(labels, 0), shuffled_labels(labels, 0)
    assert np.array_equal(a, b) and a.sum() == 20 and not np.array_equal(a, labels)
    assert 0.1 < (a == labels).mean() < 0.9
    p = {"lr": 0.003, "epochs": 3, "per_model": {"mel_resnet18": {"lr": 0.001}}}
    assert settings_for("mel_resnet18", p) == {"lr": 0.001, "epochs": 3}
    assert settings_for("lfcc_lcnn", p) == {"lr": 0.003, "epochs": 3}
    assert settings_for("lfcc_lcnn", {"lr": 0.003, "per_model": None})["lr"] == 0.003
