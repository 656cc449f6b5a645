"""ASVspoof branch: protocol reader, bad input, features, scoring helpers, a tiny synthetic set."""

from __future__ import annotations

import dataclasses
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from repropipe.asvspoof import data
from repropipe.asvspoof.config import RealConfig, SyntheticConfig
from repropipe.asvspoof.evaluate import best_accuracy, eer_by_attack, min_tdcf
from repropipe.asvspoof.features import FeatureConfig, extract_split, fix_length, load_features
from repropipe import config
from repropipe.io import DataError

CFG = {"utterances": {"train": 10, "dev": 6, "eval": 18}, "speakers": {"train": 2, "dev": 2, "eval": 2},
       "bonafide_fraction": 0.2, "seconds": [0.3, 0.4]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from repropipe.asvspoof.synth import write_synthetic

    root = tmp_path_factory.mktemp("raw")
    write_synthetic(root, config.parse(SyntheticConfig, CFG), seed=0, progress=False)
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
    proto = src.where(data.protocol_path("dev"))
    lines = dict(zip(df.utt_id, df.line))
    with pytest.raises(DataError, match=broken[0]):
        extract_split(src, df, "dev", tmp_path / "f1", cfg, ("lfcc",), shard_size=4, progress=False)
    # each bad file's error names the protocol file and line that listed it
    for i, what in enumerate(["not a readable FLAC file", "listed in the protocol but missing", "sample rate 8000 Hz"]):
        with pytest.raises(DataError, match=rf"{broken[i]}\.flac: {what}.* \(listed in {re.escape(proto)} "
                                            rf"line {lines[broken[i]]}\)$"):
            extract_split(src, df.iloc[i:i + 1], "dev", tmp_path / f"g{i}", cfg, ("lfcc",), shard_size=4,
                          progress=False, protocol=proto)
    bad: list = []
    kept = extract_split(src, df, "dev", tmp_path / "f2", cfg, ("lfcc",), shard_size=4, on_bad="skip", bad=bad,
                         progress=False, protocol=proto)
    assert len(kept) == len(df) - 3 and len(bad) == 3
    assert [(b.where, b.line) for b in bad] == [(proto, lines[u]) for u in broken]
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


def test_features_over_two_processes_are_byte_identical_to_one(tiny, tmp_path):
    """The stage spreads blocks of rows over one process per CPU: same shard bytes, same index, from a zip too."""
    import zipfile

    df = data.read_protocol(data.open_source(tiny), "eval")
    with zipfile.ZipFile(tmp_path / "LA.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(tiny.rglob("*")):
            if f.is_file() and f.relative_to(tiny).parts[0] == "LA":
                zf.write(f, str(f.relative_to(tiny)))
    cfg = FeatureConfig(seconds=0.5)
    out = {}
    for name, src, processes in (("one", data.DirSource(tiny), 1), ("two", data.ZipSource(tmp_path / "LA.zip"), 2)):
        out[name] = extract_split(src, df, "eval", tmp_path / name, cfg, ("lfcc", "mel"), shard_size=7,
                                  progress=False, processes=processes)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.pt"))
    assert len(files) == 2 * -(-len(df) // 7)
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.pt"))
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f
    assert out["one"].equals(out["two"])


def test_bad_audio_over_two_processes_errors_or_is_skipped_in_protocol_order(tiny, tmp_path):
    root, broken = _broken_copy(tiny, tmp_path)
    src = data.DirSource(root)
    df = data.read_protocol(src, "dev")
    proto = src.where(data.protocol_path("dev"))
    cfg = FeatureConfig(seconds=0.3)
    with pytest.raises(DataError, match=rf"{broken[0]}\.flac: not a readable FLAC"):
        extract_split(src, df, "dev", tmp_path / "e", cfg, ("lfcc",), shard_size=4, progress=False, protocol=proto,
                      processes=2)
    bad: list = []
    kept = extract_split(src, df, "dev", tmp_path / "s", cfg, ("lfcc",), shard_size=4, on_bad="skip", bad=bad,
                         progress=False, protocol=proto, processes=2)
    assert len(kept) == len(df) - 3 and [b.line for b in bad] == sorted(b.line for b in bad) and len(bad) == 3


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


# ----------------------------------------------------------------- ASV scores and min t-DCF

# The release's ASV score format (README.LA.txt, section 4: "CM_KEY ASV_KEY SCORES", CM_KEY 'bonafide' or the
# attack id). The first three are trials of the organisers' eval file as the t-DCF package's copy lists them
# (its first target trial, LA_0015 LA_E_1103494, a nontarget and a spoof trial); the last three are the lines
# quoted in issue 12, whose spoof line has 'spoof' as CM_KEY, which is accepted too.
OFFICIAL_ASV = ["bonafide target 7.981530", "bonafide nontarget -41.948130", "A19 spoof -17.367870",
                "bonafide target 7.981530", "bonafide nontarget -8.523100", "spoof spoof -1.074000"]


def test_official_asv_score_lines_parse():
    from repropipe.asvspoof.data import parse_asv_scores

    asv = parse_asv_scores("".join(x + "\n" for x in OFFICIAL_ASV).encode("ascii"), name="asv.txt", split="eval")
    assert asv["target"].tolist() == [7.98153, 7.98153]
    assert asv["nontarget"].tolist() == [-41.94813, -8.5231]
    assert asv["spoof"].tolist() == [-17.36787, -1.074]


@pytest.mark.parametrize("line,msg", [
    ("LA_0015 LA_E_1103494 - bonafide target 7.981530", "expected 3 columns 'CM_KEY ASV_KEY SCORE'"),  # t-DCF package copy
    ("LA_0015 bonafide target 7.981530", "expected 3 columns"),        # four columns, as this project once wrote
    ("bonafide impostor -3.0", "ASV key 'impostor'"),
    ("A07 target 3.0", "target trial with CM key 'A07'"),
    ("bonafide spoof 3.0", "spoof trial with CM key 'bonafide'"),
    ("A03 spoof 3.0", "spoof trial with CM key 'A03'; expected an attack id \\(A07-A19 for eval\\)"),
    ("bonafide target 7.98x", "score '7.98x' is not a finite number"),
    ("bonafide target nan", "score 'nan' is not a finite number"),
    (b"bonafide targ\xeat 1.0", "not UTF-8 text: byte 0xea at column 14"),
])
def test_bad_asv_score_line_names_file_and_line(line, msg, tmp_path):
    from repropipe.asvspoof.data import read_asv_scores

    f = tmp_path / "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt"
    f.write_bytes(b"bonafide target 7.981530\n" + (line if isinstance(line, bytes) else line.encode()) + b"\n"
                  + b"bonafide nontarget -8.523100\nA07 spoof 1.0\n")
    with pytest.raises(DataError, match=rf"scores\.txt:2: {msg}"):
        read_asv_scores(f, split="eval")


@pytest.mark.parametrize("drop,msg", [("nontarget", "no nontarget trials \\(1 target, 0 nontarget, 1 spoof\\)"),
                                      ("target", "no target trials"), ("spoof", "no spoof trials")])
def test_asv_score_file_without_a_trial_type_is_an_error_naming_it(drop, msg, tmp_path):
    from repropipe.asvspoof.data import read_asv_scores

    f = tmp_path / "asv.eval.txt"
    f.write_text("".join(x + "\n" for x in ["bonafide target 7.9", "bonafide nontarget -8.5", "A07 spoof -1.0"]
                         if x.split()[1] != drop))
    with pytest.raises(DataError, match=rf"asv\.eval\.txt: {msg}"):
        read_asv_scores(f)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match=r"empty\.txt: no target and no nontarget and no spoof trials"):
        read_asv_scores(tmp_path / "empty.txt")


def test_min_tdcf_on_a_hand_checked_case():
    """Worked by hand from the ASVspoof 2019 formulas (evaluation plan; the organisers' eval_metrics.py).

    ASV trials sorted: -3 n, -2 n, -1 n, 1 t, 1.5 n, 2 t, 3 t, 4 t. Rejecting the lowest k: FRR = FAR = 1/4 at
    k = 4, so the ASV threshold is 1 (accept >= 1): P_miss = 0, P_fa = 1/4 (1.5), spoofs [0, 2, 5, -1] -> P_miss_spoof = 1/2.
    C1 = 0.9405 (1 - 0) - 0.0095 * 10 * 1/4 = 0.91675, C2 = 10 * 0.05 * (1 - 1/2) = 0.25.
    CM: bona fide [0.95, 0.9, 0.85, -1], spoofs ten values in (-1, 0.5]: accepting the top three bona fide costs
    (C1 * 1/4 + C2 * 0) / C2 = 0.91675; accepting everything costs (0 + C2 * 1) / C2 = 1; anything between more.
    """
    from repropipe.asvspoof.evaluate import asv_error_rates

    asv = {"target": np.array([1.0, 2, 3, 4]), "nontarget": np.array([-3.0, -2, -1, 1.5]),
           "spoof": np.array([0.0, 2, 5, -1])}
    assert asv_error_rates(asv) == {"eer": 0.25, "threshold": 1.0, "pfa": 0.25, "pmiss": 0.0, "pmiss_spoof": 0.5}
    bona = np.array([0.95, 0.9, 0.85, -1.0])
    spoof = np.array([0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1, -0.2, -0.3, -0.4])
    assert min_tdcf(bona, spoof, asv) == pytest.approx(0.91675, abs=1e-12)
    # a CM that lets every spoof through: t-DCF 1 at best ("an arbitrarily bad CM", normalised)
    assert min_tdcf(np.array([0.0, 0.1]), np.array([1.0, 2.0]), asv) == pytest.approx(1.0)


def _official_min_tdcf(bona: np.ndarray, spoof: np.ndarray, asv: dict[str, np.ndarray]) -> float:
    """The organisers' algorithm, transcribed step by step (compute_det_curve, compute_eer,
    obtain_asv_error_rates, compute_tDCF of eval_metrics.py, ASVspoof 2019 cost model), by loops."""
    def det(tar: np.ndarray, non: np.ndarray) -> tuple[list, list, list]:
        pairs = sorted([(s, 1) for s in tar] + [(s, 0) for s in non], key=lambda p: p[0])  # stable: targets first
        frr, far, thr = [0.0], [1.0], [pairs[0][0] - 0.001]
        n_t = n_n = 0
        for s, is_t in pairs:
            n_t += is_t
            n_n += 1 - is_t
            frr.append(n_t / len(tar))
            far.append((len(non) - n_n) / len(non))
            thr.append(s)
        return frr, far, thr

    frr, far, thr = det(asv["target"], asv["nontarget"])
    i = min(range(len(frr)), key=lambda k: abs(frr[k] - far[k]))
    t = thr[i]
    pfa = sum(x >= t for x in asv["nontarget"]) / len(asv["nontarget"])
    pmiss = sum(x < t for x in asv["target"]) / len(asv["target"])
    pmiss_spoof = sum(x < t for x in asv["spoof"]) / len(asv["spoof"])
    c1 = 0.95 * 0.99 * (1 - pmiss) - 0.95 * 0.01 * 10 * pfa
    c2 = 10 * 0.05 * (1 - pmiss_spoof)
    pmiss_cm, pfa_cm, _ = det(bona, spoof)
    return min((c1 * m + c2 * f) / min(c1, c2) for m, f in zip(pmiss_cm, pfa_cm))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_tdcf_equals_the_official_algorithm_on_untied_scores(seed):
    rng = np.random.default_rng(seed)
    asv = {"target": rng.normal(25, 17, 300), "nontarget": rng.normal(-40, 17, 900), "spoof": rng.normal(-12, 14, 400)}
    bona, spoof = rng.normal(1.0, 1, 60), rng.normal(-1.0, 1.5, 500)
    assert min_tdcf(bona, spoof, asv) == pytest.approx(_official_min_tdcf(bona, spoof, asv), rel=1e-12)


# ----------------------------------------------------------------- the synthetic release, file by file


def test_synthetic_files_are_in_the_release_formats(tiny, tmp_path):
    import re

    import soundfile as sf

    from repropipe.asvspoof.data import parse_asv_scores
    from repropipe.asvspoof.synth import zip_la_tree

    for split in data.SPLITS:  # protocols: ASCII, one LF-terminated line each, the official pattern
        raw = (tiny / data.protocol_path(split)).read_bytes()
        raw.decode("ascii")
        assert raw.endswith(b"\n") and b"\r" not in raw
        letter, attacks = data.SPLIT_LETTER[split], "|".join(data.ATTACKS[split])
        pattern = re.compile(rf"LA_\d{{4}} LA_{letter}_\d{{7}} - (- bonafide|({attacks}) spoof)")
        assert all(pattern.fullmatch(x) for x in raw.decode().splitlines())
        info = sf.info(str(tiny / data.read_protocol(data.DirSource(tiny), split).path[0]))
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", 16000, 1)
    for split, rel in data.ASV_SCORES.items():  # ASV scores: three columns, six decimals, ids of the split
        raw = (tiny / rel).read_bytes()
        attacks = "|".join(data.ATTACKS[split])
        pattern = re.compile(rf"(bonafide (target|nontarget)|({attacks}) spoof) -?\d+\.\d{{6}}")
        assert raw.endswith(b"\n") and all(pattern.fullmatch(x) for x in raw.decode("ascii").splitlines())
        asv = parse_asv_scores(raw, name=rel, split=split)
        df = data.read_protocol(data.DirSource(tiny), split)
        assert len(asv["target"]) == (df.label == 1).sum() and len(asv["spoof"]) == (df.label == 0).sum()
    archive = zip_la_tree(tiny, tmp_path / "LA.zip")
    import zipfile

    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        assert all(n.startswith("LA/") for n in names) and all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
    src = data.ZipSource(archive)
    assert src.prefix == "" and data.check_structure(src, expect_official_counts=False) == CFG["utterances"]


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
    real = RealConfig(url="file:///nowhere/LA.zip", md5=None, cache_dir=str(tmp_path / "cache"), archive=str(good),
                      root=None, expect_official_counts=True)
    data.download_real(real, tmp_path / "raw")
    assert json.loads((tmp_path / "raw" / "source.json").read_text())["utterances"] == CFG["utterances"]

    # a listed FLAC missing from the archive: the error names it and the protocol line listing it
    utt = data.read_protocol(data.DirSource(tiny), "eval").utt_id[3]
    partial = _zip_of(tiny, tmp_path / "partial.zip", drop=f"{utt}.flac")
    with pytest.raises(DataError, match=rf"{utt}\.flac: listed in .*cm\.eval\.trl\.txt line \d+ but not in the data \(1 of"):
        data.check_structure(data.ZipSource(partial))
    with pytest.raises(DataError, match=f"{utt}.flac"):
        data.download_real(dataclasses.replace(real, archive=str(partial)), tmp_path / "raw2")

    # a protocol that is not the official length (a truncated file, or the user's own subset)
    monkeypatch.setattr(data, "OFFICIAL_COUNTS", dict(CFG["utterances"], dev=25))
    with pytest.raises(DataError, match=r"cm\.dev\.trl\.txt: 6 protocol lines, the official release has 25"):
        data.check_structure(data.ZipSource(good))
    assert data.check_structure(data.ZipSource(good), expect_official_counts=False)["dev"] == 6
    data.download_real(dataclasses.replace(real, expect_official_counts=False), tmp_path / "raw3")  # opt-out for a subset

    # a protocol file missing altogether
    no_eval = _zip_of(tiny, tmp_path / "noeval.zip", drop=data.PROTOCOL_FILES["eval"])
    with pytest.raises(DataError, match=r"cm\.eval\.trl\.txt: protocol file missing"):
        data.check_structure(data.ZipSource(no_eval), expect_official_counts=False)


def test_shuffled_labels_keep_counts_and_break_the_link():
    from repropipe.asvspoof.train import shuffled_labels

    labels = np.array([1] * 20 + [0] * 80)
    a, b = shuffled_labels(labels, 0), shuffled_labels(labels, 0)
    assert np.array_equal(a, b) and a.sum() == 20 and not np.array_equal(a, labels)
    assert 0.1 < (a == labels).mean() < 0.9


def test_per_model_settings_replace_only_the_keys_they_set():
    from conftest import TINY_PARAMS
    from repropipe.asvspoof.config import TrainConfig

    section = dict(TINY_PARAMS["asvspoof"]["train"], lr=0.003, epochs=3,
                   per_model={"mel_resnet18": {"lr": 0.001, "lr_schedule": "step"}, "aasist": None})
    cfg = config.parse(TrainConfig, section, "asvspoof.train")
    mel = cfg.for_model("mel_resnet18")
    assert (mel.lr, mel.epochs, mel.lr_schedule, mel.per_model) == (0.001, 3, "step", None)
    for name in ("lfcc_lcnn", "aasist"):  # not listed, or listed as null: the shared settings
        assert cfg.for_model(name) == dataclasses.replace(cfg, per_model=None)
    with pytest.raises(config.ConfigError, match=r"asvspoof.train.per_model.mel_resnet18: unknown key 'momentum'"):
        config.parse(TrainConfig, dict(section, per_model={"mel_resnet18": {"momentum": 0.9}}), "asvspoof.train")


def test_per_model_overrides_mirror_the_schema():
    """per_model's schema sits under patternProperties, which tests/test_config.py does not walk: check it here
    (every field optional in the class is an optional, non-null key in the schema)."""
    import yaml

    from conftest import ROOT
    from repropipe.asvspoof.config import ModelOverrides

    schema = yaml.safe_load((ROOT / "workflow/schemas/params.schema.yaml").read_text())
    per_model = schema["properties"]["asvspoof"]["properties"]["train"]["properties"]["per_model"]
    (node,) = per_model["patternProperties"].values()
    nullable = {**node, "properties": {k: {**v, "type": [v["type"], "null"]} if "type" in v else {**v, "enum": [*v["enum"], None]}
                                       for k, v in node["properties"].items()}}
    assert config.schema_mismatches(ModelOverrides, nullable, "asvspoof.train.per_model.*") == []


def test_lfcc_gmm_baseline_separates_planted_frames_and_not_shuffled_ones():
    """Bona fide frames centred at 0, spoofed at +0.4 in every coefficient: the GMM log-likelihood
    ratio ranks held-out utterances well; trained on labels unrelated to the class it is near chance."""
    from repropipe.asvspoof import baseline
    from repropipe.metrics import compute_eer

    g = torch.Generator().manual_seed(0)

    def utts(n, shift):
        return torch.randn(n, 60, 20, generator=g) + shift

    x = torch.cat([utts(30, 0.0), utts(30, 0.4)]).half()  # float16, as the features stage stores them
    y = np.r_[np.ones(30, int), np.zeros(30, int)]
    xt, yt = torch.cat([utts(20, 0.0), utts(20, 0.4)]).half(), np.r_[np.ones(20, int), np.zeros(20, int)]
    gmm = baseline.fit(x, y, seed=0, components=4)
    s = baseline.score(gmm, xt)
    assert s.shape == (40,) and compute_eer(s[yt == 1], s[yt == 0])[0] < 0.1
    assert np.array_equal(s, baseline.score(baseline.fit(x, y, seed=0, components=4), xt))  # seeded
    mixed = np.tile([1, 0], 30)  # each "class" holds 15 bona fide and 15 spoofed utterances: nothing to learn
    s0 = baseline.score(baseline.fit(x, mixed, seed=0, components=4), xt)
    assert compute_eer(s0[yt == 1], s0[yt == 0])[0] > 0.25
    with pytest.raises(ValueError, match="bona fide and spoofed"):
        baseline.fit(x, np.ones(60, int), seed=0)


def _fake_evaluation(with_asv: bool):
    """A small Evaluation as evaluate_all returns it: lfcc_lcnn (two seeds), the authors' AASIST weights and the
    LFCC-GMM reference; lfcc_lcnn_lstmsum_p2s, aasist (trained) and aasist_l were not in the model list."""
    from repropipe.asvspoof.evaluate import PRETRAINED_SUFFIX, PUBLISHED, REFERENCE, Evaluation

    def run(model, seed, eer, tdcf, **extra):
        split = {"eer": eer, "accuracy_at_eer_threshold": 0.9, "best_accuracy": 0.95, "per_attack_eer": {"A07": eer},
                 "min_tdcf": tdcf if with_asv else "not available"}
        return {"model": model, "seed": seed, "selected_epoch": 1, "control": False, "dev": split, "eval": split,
                **extra}

    results = [run("lfcc_lcnn", 0, 0.10, 0.30), run("lfcc_lcnn", 1, 0.14, 0.34),
               run(f"aasist{PRETRAINED_SUFFIX}", PUBLISHED, 0.0125, 0.05,
                   weights={"path": "AASIST.pth", "sha256": "0" * 64}),
               run(REFERENCE, 7, 0.2, 0.5, baseline=True)]
    per_model, unc = {}, {}
    for m in dict.fromkeys(r["model"] for r in results):
        rs = [r for r in results if r["model"] == m]
        mean = float(np.mean([r["eval"]["eer"] for r in rs]))
        per_model[m] = {"control": False, "seeds": [r["seed"] for r in rs], "eval_eer_mean": mean,
                        "eval_eer_std": 0.0, "dev_eer_mean": mean, "per_attack_eer_mean": {"A07": mean}}
        unc[m] = {"eer_mean": {"value": mean, "ci_low": mean - 0.01, "ci_high": mean + 0.01}}
        if with_asv:
            t = float(np.mean([r["eval"]["min_tdcf"] for r in rs]))
            per_model[m].update(eval_min_tdcf_mean=t, eval_min_tdcf_std=0.0)
            unc[m]["min_tdcf_mean"] = {"value": t, "ci_low": t - 0.02, "ci_high": t + 0.02}
    asv = {"eval": {"eer": 0.02, "pfa": 0.02, "pmiss": 0.02, "pmiss_spoof": 0.5}} if with_asv else {}
    manifest = {"counts": {"eval": 40}, "source": "synthetic", "config": {"seconds": 0.5}, "skipped": []}
    return Evaluation(results=results, per_model=per_model, scores_eval={}, eval_index=None, histories={}, unc=unc,
                      reference=REFERENCE, asv=asv, manifest=manifest, data_source="synthetic")


@pytest.mark.parametrize("with_asv", [False, True])
def test_section_has_the_anchor_table_measured_beside_published(with_asv):
    from repropipe.asvspoof import section
    from repropipe.report.section import ANCHOR_TITLE

    sec = section.build(_fake_evaluation(with_asv), [])
    assert len(sec.tables) == 3 and "1.92 %" in sec.tables[0].anchor and "lfcc_lcnn_lstmsum_p2s" in sec.tables[0].anchor
    t = sec.tables[-1]
    assert t.title.startswith(ANCHOR_TITLE) and "not comparable" in t.title
    rows = {(r[0].split(":")[0], r[1]): r for r in t.rows}
    assert rows[("lfcc_gmm", "eval EER (%)")][2:5] == ["20.00 [19.00, 21.00] (seed 7)", "published: 8.09",
                                                       "real ASVspoof 2019 LA eval"]
    p2s = rows[("lfcc_lcnn_lstmsum_p2s", "eval EER (%)")]
    assert p2s[2:4] == ["not run", "published: 1.92"] and p2s[5] == "best of six training runs; range 1.92-3.10 %"
    assert rows[("aasist", "eval EER (%)")][2] == "not run" and rows[("aasist_l", "eval EER (%)")][2] == "not run"
    pre = rows[("aasist (authors' published weights, not trained here)", "eval EER (%)")]
    assert pre[2] == "1.25 [0.25, 2.25] (authors' weights, scored here)" and pre[3] == "published: 0.83"
    assert not any(r[0].startswith("lfcc_lcnn:") for r in t.rows)  # the 1.92 % is not lfcc_lcnn's
    gmm_tdcf = rows[("lfcc_gmm", "min t-DCF (eval)")]
    assert gmm_tdcf[3] == "published: 0.2116"
    assert gmm_tdcf[2] == ("0.5000 [0.4800, 0.5200] (seed 7)" if with_asv
                           else "not available (no ASV scores in this data)")
    assert ("lfcc_lcnn_lstmsum_p2s", "min t-DCF (eval)") not in rows  # no published min t-DCF quoted for it


def test_features_stage_starts_one_pool_for_every_split_and_writes_the_bytes_of_one_process(tiny, tmp_path,
                                                                                            monkeypatch):
    """write_features starts its worker pool once (its start-up was a quarter of the test-scale pass when every split
    started one); with skipped bad audio, every file (shards, index, manifest and its skip list) equals one process's."""
    from conftest import TINY_PARAMS
    from repropipe.asvspoof import features
    from repropipe.asvspoof.config import FeaturesConfig

    root, broken = _broken_copy(tiny, tmp_path)
    cfg = dataclasses.replace(FeaturesConfig.of(TINY_PARAMS), shard_size=4)
    started = []
    real_pool = features.FeaturePool

    def spy_pool(*args, **kwargs):
        started.append(args[-1])
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(features, "FeaturePool", spy_pool)
    for name, processes in (("one", 1), ("two", 2)):
        features.write_features(root, tmp_path / name, cfg, seed=0, on_bad="skip", processes=processes)
    assert started == [2]
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".pt"]) > 2 * len(data.SPLITS)
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f
    skipped = json.loads((tmp_path / "two" / "manifest.json").read_text())["skipped"]
    assert [s for b in broken for s in skipped if b in json.dumps(s)] and len(skipped) == 3


def test_a_pool_serves_only_the_source_and_settings_it_was_started_for(tiny, tmp_path):
    from repropipe.asvspoof.features import FeaturePool

    src = data.open_source(tiny)
    df = data.read_protocol(src, "dev")
    with FeaturePool(src, FeatureConfig(seconds=0.3), ("lfcc",), 2) as pool:
        with pytest.raises(ValueError, match="another source, feature config or kinds"):
            extract_split(src, df, "dev", tmp_path / "x", FeatureConfig(seconds=0.4), ("lfcc",), shard_size=4,
                          progress=False, pool=pool)
        kept = extract_split(src, df, "dev", tmp_path / "y", FeatureConfig(seconds=0.3), ("lfcc",), shard_size=4,
                             progress=False, pool=pool)
    assert len(kept) == len(df)
