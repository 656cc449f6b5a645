"""ASVspoof features: the fast extractor equals torchaudio's transforms, and the bench times the stage's code."""

from __future__ import annotations

import argparse
import re

import pytest
import torch

from repropipe.asvspoof import features
from repropipe.asvspoof.features import Extractor, FeatureConfig, deltas3


def _batch() -> torch.Tensor:
    """A loud, a quiet (60 dB down) and a half-silent utterance: the 80 dB LFCC floor bites."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 8000, generator=g) * 0.1
    w[0] *= torch.sin(torch.linspace(0, 40, 8000)) ** 2  # some structure over time
    w[1] *= 1e-3
    w[1:, 4000:] = 0.0  # digital silence: floored 80 dB below the utterance's (not the batch's) peak
    return w


def _reference(wav: torch.Tensor, cfg: FeatureConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """What the stage promises: torchaudio's own transforms, run on one utterance at a time."""
    import torchaudio.functional as F
    import torchaudio.transforms as T

    win, hop = int(16000 * cfg.win_ms / 1000), int(16000 * cfg.hop_ms / 1000)
    lfcc = T.LFCC(16000, n_filter=cfg.n_lfcc, n_lfcc=cfg.n_lfcc,
                  speckwargs={"n_fft": cfg.n_fft, "win_length": win, "hop_length": hop})
    mel = T.MelSpectrogram(16000, n_fft=cfg.n_fft, win_length=win, hop_length=hop, n_mels=cfg.n_mels)
    to_db = T.AmplitudeToDB("power", top_db=None)
    c = lfcc(wav)
    d = F.compute_deltas(c, win_length=3)
    return torch.cat([c, d, F.compute_deltas(d, win_length=3)]), to_db(mel(wav))


def test_extractor_equals_torchaudio_transforms_per_utterance():
    cfg = FeatureConfig(seconds=0.5)
    wav = _batch()
    with torch.no_grad():
        got = Extractor(cfg)(wav)
        for i in range(len(wav)):
            lfcc, mel = _reference(wav[i], cfg)
            assert got["lfcc"][i].shape == lfcc.shape == (60, 51)
            assert got["mel"][i].shape == mel.shape == (80, 51)
            # dB-scale values up to a few hundred: float32 rounding differs, nothing else may
            torch.testing.assert_close(got["lfcc"][i], lfcc, rtol=1e-5, atol=2e-3)
            torch.testing.assert_close(got["mel"][i], mel, rtol=1e-5, atol=2e-3)


def test_features_do_not_depend_on_batch_neighbours():
    """torchaudio's LFCC on a (B, n, T) batch takes its 80 dB floor over the whole batch; ours is per utterance."""
    cfg = FeatureConfig(seconds=0.5)
    wav = _batch()
    ex = Extractor(cfg)
    with torch.no_grad():
        together = ex(wav)["lfcc"][1]
        alone = ex(wav[1:2])["lfcc"][0]
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-4)


def test_single_kind_extractors_match_the_combined_one():
    cfg = FeatureConfig(seconds=0.5)
    wav = _batch()
    with torch.no_grad():
        both = Extractor(cfg)(wav)
        torch.testing.assert_close(Extractor(cfg, ("lfcc",))(wav)["lfcc"], both["lfcc"], rtol=1e-5, atol=1e-4)
        assert set(Extractor(cfg, ("mel",))(wav)) == {"mel"}
    with pytest.raises(ValueError, match="unknown feature kinds"):
        Extractor(cfg, ("mfcc",))


@pytest.mark.parametrize("frames", [1, 2, 7])
def test_deltas3_is_compute_deltas(frames):
    import torchaudio.functional as F

    c = torch.randn(2, 20, frames, generator=torch.Generator().manual_seed(frames)) * 50
    assert torch.equal(deltas3(c), F.compute_deltas(c, win_length=3))


def test_bench_times_the_stages_own_extract_split(monkeypatch, capsys):
    from repropipe.asvspoof.bench import bench

    calls = []
    real = features.extract_split

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "extract_split", spy)
    args = argparse.Namespace(utterances=3, seconds=0.5, batch_size=None, kinds="lfcc,mel", repeats=1, zip=True)
    assert bench(args) == 0
    out = capsys.readouterr().out
    assert len(calls) == 2 and "batch_size" not in calls[0]  # warm-up + 1 timed pass, the stage's default batch
    for row in ("decode alone", "ceiling: decode + torchaudio LFCC", "end to end", "deflated LA.zip"):
        assert row in out


def test_bench_threads_times_the_stages_work_at_each_budget(monkeypatch, capsys, tmp_path):
    """`asvspoof bench-threads` on the test-scale params: the stage's write_features with processes=n and train_one
    with n torch threads, each budget timed, the ratios printed; --utterances resizes the synthetic set."""
    import yaml

    from conftest import TINY_PARAMS
    from repropipe.asvspoof import train as tr
    from repropipe.cli import main

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    seen = {"features": [], "train": []}
    real_extract, real_train = features.write_features, tr.train_one

    def spy_extract(*args, **kwargs):
        seen["features"].append(kwargs["processes"])
        return real_extract(*args, **kwargs)

    def spy_train(*args, **kwargs):
        seen["train"].append(torch.get_num_threads())
        return real_train(*args, **kwargs)

    monkeypatch.setattr(features, "write_features", spy_extract)
    monkeypatch.setattr(tr, "train_one", spy_train)
    threads = torch.get_num_threads()
    try:
        assert main(["asvspoof", "bench-threads", "--params", str(tmp_path / "params.yaml"), "--repeats", "1",
                     "--utterances", "40"]) == 0
    finally:
        torch.set_num_threads(threads)
    # one pass to build the training features, a warm-up and a timed pass per budget
    assert seen["features"] == [1, 1, 2, 1, 2]
    assert seen["train"] == [1, 2, 1, 2]
    out = capsys.readouterr().out
    assert "40 utterances" in out and "load average" in out
    assert re.search(r"features\s+[\d.]+\s+[\d.]+\s+[\d.]+", out) and re.search(r"train\s+[\d.]+\s+[\d.]+\s+[\d.]+", out)
    cpu = re.search(r"1 CPU: parent ([\d.]+), workers ([\d.]+); 2 CPU: parent ([\d.]+), workers ([\d.]+)", out)
    assert cpu and float(cpu[2]) == 0 and float(cpu[4]) > 0  # one process has no workers; two do the work


def test_split_rows_put_each_row_at_its_position_across_chunks_and_read_back_any_subset(tmp_path):
    """Rows written block by block (a skipped row leaves a hole) come back, in the asked order, across chunk files."""
    import numpy as np

    layout = {"lfcc": ((3, 5), "float16"), "wave": ((7,), "int16")}
    with features._rows_on_disk(tmp_path, "dev", 11, 4, layout) as (rows, drop_below):
        assert sorted(p.name for p in rows.root.iterdir()) == [f"{k}-{c:06d}.rows" for k in layout for c in range(3)]
        rng = np.random.default_rng(0)
        truth = {k: rng.standard_normal((11, *shape)).astype(dtype) for k, (shape, dtype) in layout.items()}
        blocks = [[0, 1, 2], [4, 5, 6, 7, 8], [9, 10]]  # 3 skipped; the middle block spans two chunks
        for k in layout:
            for block in blocks:
                rows.write(k, block, truth[k][block])
        kept = [p for b in blocks for p in b]
        for k in layout:
            assert np.array_equal(rows.read(k, kept), truth[k][kept])
            assert np.array_equal(rows.read(k, [10, 0]), truth[k][[10, 0]])
        with pytest.raises(RuntimeError, match="expected"):
            rows.write("lfcc", [3], truth["wave"][[3]])
        drop_below(9)  # rows 0-7 are in saved shards: chunks 0 and 1 go, chunk 2 (rows 8-10) stays
        assert sorted(p.name for p in rows.root.iterdir()) == [f"{k}-000002.rows" for k in layout]
        assert np.array_equal(rows.read("wave", [8, 10]), truth["wave"][[8, 10]])
    assert not rows.root.exists()


@pytest.mark.parametrize("processes", [1, 2])
def test_a_bad_utterance_stops_the_split_leaving_only_whole_shards_and_no_rows(tmp_path, processes):
    """on_bad error: the DataError names the FLAC and its protocol line; the rows on disk are gone and every file
    left is a whole shard (its workers finish what they were handed before the rows are deleted)."""
    from repropipe.asvspoof import data
    from repropipe.asvspoof.synth import write_synthetic
    from repropipe.asvspoof.config import SyntheticConfig
    from repropipe import config
    from repropipe.io import DataError, torch_load

    raw = tmp_path / "raw"
    write_synthetic(raw, config.parse(SyntheticConfig, {
        "utterances": {"train": 4, "dev": 4, "eval": 60}, "speakers": {"train": 2, "dev": 2, "eval": 3},
        "bonafide_fraction": 0.3, "seconds": [0.3, 0.4]}), seed=0, progress=False)
    src = data.DirSource(raw)
    df = data.read_protocol(src, "eval")
    broken = raw / df.path[45]
    broken.write_bytes(broken.read_bytes()[:100])
    proto = src.where(data.protocol_path("eval"))
    out = tmp_path / "out"
    with pytest.raises(DataError, match=rf"{df.utt_id[45]}\.flac: not a readable FLAC.*\(listed in .* line {df.line[45]}\)"):
        features.extract_split(src, df, "eval", out, FeatureConfig(seconds=0.3), ("lfcc", "wave"), shard_size=8,
                               batch_size=4, progress=False, protocol=proto, processes=processes)
    left = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert all(p.parts[0] in ("lfcc", "wave") for p in left), left  # no rows directory, no temporary file
    for p in (q for q in left if q.suffix == ".pt"):
        shard = int(p.stem.split("-")[1])
        assert shard < 45 // 8 and len(torch_load(out / p)) == 8


@pytest.mark.parametrize("processes", [1, 2])
def test_a_bad_asv_score_line_stops_the_features_stage_naming_file_and_line(tmp_path, processes):
    """The ASV score check runs beside the features (a worker's task with a pool): a bad line still stops the
    stage with the file and line, and the stage leaves no index, manifest, score copy or rows behind."""
    from repropipe import config
    from repropipe.asvspoof import data
    from repropipe.asvspoof.config import FeaturesConfig, SyntheticConfig
    from repropipe.asvspoof.synth import write_synthetic
    from repropipe.io import DataError

    raw = tmp_path / "raw"
    write_synthetic(raw, config.parse(SyntheticConfig, {
        "utterances": {"train": 40, "dev": 8, "eval": 40}, "speakers": {"train": 2, "dev": 2, "eval": 3},
        "bonafide_fraction": 0.3, "seconds": [0.3, 0.4]}), seed=0, progress=False)
    scores = raw / data.ASV_SCORES["eval"]
    lines = scores.read_text().splitlines(keepends=True)
    lines[2] = lines[2].rsplit(" ", 1)[0] + " 7.98x\n"
    scores.write_text("".join(lines))
    out = tmp_path / "out"
    cfg = config.parse(FeaturesConfig, {"kinds": ["lfcc"], "seconds": 0.3, "n_lfcc": 20, "n_mels": 40, "n_fft": 512,
                                        "shard_size": 16, "max_per_class": None})
    with pytest.raises(DataError, match=r"ASVspoof2019\.LA\.asv\.eval\.gi\.trl\.scores\.txt:3: score '7\.98x' is not"):
        features.write_features(raw, out, cfg, seed=0, on_bad="error", processes=processes, progress=False)
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert all(p.startswith("lfcc/") and p.endswith(".pt") for p in left), left
    assert not list(out.glob(".*"))
