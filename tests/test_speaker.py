"""Speaker branch: HW4 reader, bad input, padding masks, losses, trial scoring, a tiny end-to-end run."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_PARAMS, branch_results, copy_project
from repropipe.download import DownloadError
from repropipe.io import DataError
from repropipe.models import build_model
from repropipe.config import parse
from repropipe.speaker import data, evaluate, features
from repropipe.speaker.config import RealConfig, SpecAugmentConfig, TrainConfig, TripletConfig
from repropipe.speaker.models import ABLATION, ConformerBlock, RelPositionSelfAttention, rel_shift
from repropipe.speaker.train import triplet_loss, random_crop

TINY = dict(n_speakers=6, utts_per_speaker=5, min_len=20, max_len=40, n_test=3, noise=1.0, seed=0)


@pytest.fixture(scope="module")
def hw4(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hw4")
    data.synthesize(root, **TINY)
    return root


def _copy(src: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(src, dest)
    return dest


# The ML2023 Spring HW4 sample code (its dataset section and myDataset / InferenceDataset classes),
# quoted: the official structure the synthetic folder must have.
HW4_SAMPLE_CODE = """
- The architecture of data directory \\
  - data directory \\
  |---- metadata.json \\
  |---- testdata.json \\
  |---- mapping.json \\
  |---- uttr-{random string}.pt \\

- The information in metadata
  - "n_mels": The dimention of mel-spectrogram.
  - "speakers": A dictionary.
    - Key: speaker ids.
    - value: "feature_path" and "mel_len"
"""
HW4_READS = [  # what the sample code's classes index, verbatim
    'mapping["speaker2id"]', 'json.load(open(metadata_path))["speakers"]', 'utterances["feature_path"]',
    'metadata["utterances"]', 'utterance["feature_path"]', 'mapping["id2speaker"][str(pred)]',
]


def _sample_code_reader(data_dir: Path) -> tuple[list[tuple[str, int]], list[str], dict[str, str]]:
    """The sample code's myDataset / InferenceDataset loops, as they index the files (torch.load made safe)."""
    mapping = json.load((data_dir / "mapping.json").open())
    speaker2id = mapping["speaker2id"]
    metadata = json.load(open(data_dir / "metadata.json"))["speakers"]
    train = [(u["feature_path"], speaker2id[spk]) for spk in metadata.keys() for u in metadata[spk]]
    test = [u["feature_path"] for u in json.load((data_dir / "testdata.json").open())["utterances"]]
    return train, test, mapping["id2speaker"]


def test_synthetic_data_is_in_the_hw4_layout(hw4):
    assert "uttr-{random string}.pt" in HW4_SAMPLE_CODE and '"feature_path" and "mel_len"' in HW4_SAMPLE_CODE
    files = sorted(p.name for p in hw4.iterdir())
    assert files[:3] == ["mapping.json", "metadata.json", "testdata.json"]
    assert all(re.fullmatch(r"uttr-[0-9a-f]{32}\.pt", f) for f in files[3:]) and len(files) == 3 + 30 + 3
    meta_text = (hw4 / "metadata.json").read_text()
    # one json.dump line, keys in the sample code's order: {"n_mels": 40, "speakers": {"id00001": [{"feature_path": ...
    assert re.match(r'\{"n_mels": 40, "speakers": \{"id00001": \[\{"feature_path": "uttr-[0-9a-f]{32}\.pt", '
                    r'"mel_len": \d+\}, ', meta_text) and "\n" not in meta_text
    assert (hw4 / "mapping.json").read_text().startswith('{"speaker2id": {"id00001": 0, "id00002": 1, ')
    assert re.match(r'\{"n_mels": 40, "utterances": \[\{"feature_path": "uttr-', (hw4 / "testdata.json").read_text())
    train, test, id2speaker = _sample_code_reader(hw4)
    assert len(train) == 30 and len(test) == 3 and id2speaker["2"] == "id00003"
    for feat_path, label in train[:3] + [(t, -1) for t in test]:
        mel = torch.load(hw4 / feat_path, weights_only=True)  # the sample code calls torch.load on each
        assert mel.dtype == torch.float32 and mel.dim() == 2 and mel.shape[1] == 40
    ds = data.read_dataset(hw4)
    assert len(ds.utterances) == 30 and ds.speakers == sorted(ds.speakers)
    assert [(u.feature_path, ds.speakers.index(u.speaker)) for u in ds.utterances] == train
    for u in ds.utterances[:5] + ds.test:
        x = data.load_feature(hw4, u, 40)
        assert x.shape == (u.mel_len, 40) and x.dtype == torch.float32
        assert 20 <= u.mel_len <= 40


def test_synthetic_speakers_differ_more_than_utterances_of_one_speaker(hw4):
    """The planted signal: the spectral shape of voiced frames clusters by speaker."""
    ds = data.read_dataset(hw4)

    def shape(x: torch.Tensor) -> torch.Tensor:
        voiced = x[x.mean(1) > -1.5].mean(0)
        return voiced - voiced.mean()

    means = torch.stack([shape(data.load_feature(hw4, u, 40)) for u in ds.utterances])
    labels = torch.tensor([ds.speakers.index(u.speaker) for u in ds.utterances])
    d = torch.cdist(means, means)
    same = labels[:, None] == labels[None, :]
    off = ~torch.eye(len(labels), dtype=torch.bool)
    assert d[same & off].mean() < 0.8 * d[~same].mean()


def test_same_seed_same_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    data.synthesize(a, **TINY)
    data.synthesize(b, **TINY)
    assert (a / "metadata.json").read_text() == (b / "metadata.json").read_text()
    name = data.read_dataset(a).utterances[7].feature_path
    assert torch.equal(torch.load(a / name, weights_only=True), torch.load(b / name, weights_only=True))


def test_features_split_unseen_speakers_for_verification(hw4, tmp_path):
    manifest = features.build(hw4, tmp_path / "f", verify_speakers=2, val_fraction=0.2, seed=0)
    assert len(manifest["classes"]) == 4 and not set(manifest["classes"]) & set(manifest["verify_speakers"])
    assert manifest["counts"] == {"train": 16, "val": 4, "verify": 10, "test": 3}
    assert manifest["synthetic"] is False or manifest["synthetic"] is True
    tr = features.load_shard(tmp_path / "f" / "train.pt")
    val = features.load_shard(tmp_path / "f" / "val.pt")
    assert not set(tr.names) & set(val.names)
    assert tr.utterance(3).shape == (tr.length(3), 40)
    ds = data.read_dataset(hw4)
    u = next(u for u in ds.utterances if u.feature_path == tr.names[3])
    assert torch.equal(tr.utterance(3), data.load_feature(hw4, u, 40))


# ---------------------------------------------------------------------------------------------- bad input

def _broken(hw4: Path, tmp_path: Path) -> tuple[Path, data.HW4Dataset]:
    root = _copy(hw4, tmp_path / "bad")
    return root, data.read_dataset(root)


def test_malformed_metadata_names_file_and_line(hw4, tmp_path):
    root, _ = _broken(hw4, tmp_path)
    (root / "metadata.json").write_text('{"n_mels": 40,\n "speakers": {\n  "id1": [}\n}')
    with pytest.raises(DataError, match=r"metadata.json:3: not valid JSON"):
        data.read_dataset(root)


def test_metadata_with_bad_entry_is_refused(hw4, tmp_path):
    root, _ = _broken(hw4, tmp_path)
    meta = json.loads((root / "metadata.json").read_text())
    meta["speakers"]["id00001"][0]["mel_len"] = "long"
    (root / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"metadata.json: speakers.id00001\[0\]"):
        data.read_dataset(root)


def test_mapping_that_disagrees_with_metadata_is_refused(hw4, tmp_path):
    root, _ = _broken(hw4, tmp_path)
    mapping = json.loads((root / "mapping.json").read_text())
    mapping["speaker2id"]["id99999"] = 99
    (root / "mapping.json").write_text(json.dumps(mapping))
    with pytest.raises(DataError, match="mapping.json: speaker2id does not list the same speakers"):
        data.read_dataset(root)


@pytest.mark.parametrize("name", ["metadata.json", "mapping.json", "testdata.json"])
def test_a_byte_that_is_not_utf8_names_the_file_and_line(hw4, tmp_path, name):
    root, _ = _broken(hw4, tmp_path)
    text = json.loads((root / name).read_text())
    blob = json.dumps(text, indent=1).encode()
    # inside a speaker id, or (testdata.json has none) inside a file name
    at = blob.index(b'"uttr-') + 6 if name == "testdata.json" else blob.index(b'"id00002"') + 3
    (root / name).write_bytes(blob[:at] + b"\xe9" + blob[at + 1:])  # Latin-1 e-acute: not UTF-8
    line = blob[:at].count(b"\n") + 1
    with pytest.raises(DataError, match=rf"{name}:{line}: not UTF-8 text: byte 0xe9") as err:
        data.read_dataset(root)
    assert err.value.path == root / name and "\ufffd" not in str(err.value)


def test_a_speaker_id_with_a_replacement_character_is_impossible(hw4, tmp_path):
    """U+FFFD (valid UTF-8 or as a \\ufffd escape) or a lone surrogate in an id: refused, naming the file."""
    for bad, match in (("id0\ufffd001", "contains U+FFFD"), ("id0\udce9001", "lone surrogate")):
        root = _copy(hw4, tmp_path / f"bad{len(list(tmp_path.iterdir()))}")
        for name in ("metadata.json", "mapping.json"):
            path = root / name
            path.write_text(path.read_text().replace('"id00001"', json.dumps(bad)))
        with pytest.raises(DataError, match=rf"metadata.json: speaker id .*{re.escape(match)}"):
            data.read_dataset(root)
    root = _copy(hw4, tmp_path / "badfile")
    (root / "testdata.json").write_text((root / "testdata.json").read_text().replace('"uttr-', '"\\ufffduttr-', 1))
    with pytest.raises(DataError, match=r"testdata.json: utterances\[0\].feature_path .*U\+FFFD"):
        data.read_dataset(root)


def test_testdata_with_other_mel_bands_is_refused(hw4, tmp_path):
    root, _ = _broken(hw4, tmp_path)
    test = json.loads((root / "testdata.json").read_text())
    (root / "testdata.json").write_text(json.dumps({**test, "n_mels": 80}))
    with pytest.raises(DataError, match="testdata.json: n_mels 80 differs from metadata.json's 40"):
        data.read_dataset(root)


def test_id2speaker_must_invert_speaker2id(hw4, tmp_path):
    root, _ = _broken(hw4, tmp_path)
    mapping = json.loads((root / "mapping.json").read_text())
    mapping["id2speaker"]["0"], mapping["id2speaker"]["1"] = mapping["id2speaker"]["1"], mapping["id2speaker"]["0"]
    (root / "mapping.json").write_text(json.dumps(mapping))
    with pytest.raises(DataError, match="mapping.json: id2speaker is not the inverse of speaker2id"):
        data.read_dataset(root)


def test_missing_pt_fails_the_features_build_and_leaves_nothing(hw4, tmp_path):
    root, ds = _broken(hw4, tmp_path)
    (root / ds.utterances[4].feature_path).unlink()
    out = tmp_path / "features"
    with pytest.raises(DataError, match=f"{ds.utterances[4].feature_path}: listed in the metadata but missing"):
        features.build(root, out, 2, 0.2, 0)
    assert not (out / "manifest.json").exists()


@pytest.mark.parametrize("payload,match", [
    (lambda: torch.zeros(10, 39), r"expected shape \(mel_len, 40\), got \(10, 39\)"),
    (lambda: torch.zeros(10, 40, dtype=torch.float64), "expected dtype float32, got torch.float64"),
    (lambda: {"mel": torch.zeros(10, 40)}, "expected one tensor, got dict"),
    (lambda: torch.full((10, 40), float("nan")), "NaN"),
])
def test_wrong_tensor_is_refused_naming_the_file(hw4, tmp_path, payload, match):
    root, ds = _broken(hw4, tmp_path)
    u = ds.utterances[0]
    torch.save(payload(), root / u.feature_path)
    with pytest.raises(DataError, match=match) as err:
        data.load_feature(root, u, 40)
    assert u.feature_path in str(err.value)


class Payload:
    """A pickled object: what weights_only=True exists to refuse (it could run code on load)."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_pickle_payload_is_refused(hw4, tmp_path):
    root, ds = _broken(hw4, tmp_path)
    u = ds.utterances[0]
    torch.save(Payload(), root / u.feature_path)
    with pytest.raises(DataError, match="refused: not a plain tensor file") as err:
        data.load_feature(root, u, 40)
    assert u.feature_path in str(err.value)
    (root / u.feature_path).write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="not a readable torch tensor file"):
        data.load_feature(root, u, 40)


def _real(**changes) -> RealConfig:
    """speaker.real of the test params with ``changes``, typed as the download stage hands it down."""
    return parse(RealConfig, {**TINY_PARAMS["speaker"]["real"], "wav_test_fraction": 0.1, **changes}, "speaker.real")


def test_real_config_keeps_the_keyword_key_from():
    """``speaker.real.from`` is a Python keyword: the typed config still parses it, refuses a bad value naming the
    key, and code reads it as ``from_``."""
    from repropipe.config import ConfigError

    real = RealConfig.of(TINY_PARAMS)
    assert real.from_ == "kaggle" and real == _real(wav_test_fraction=0.05)
    assert "from_='kaggle'" in repr(real)
    with pytest.raises(dataclasses.FrozenInstanceError):
        real.cache_dir = "elsewhere"
    with pytest.raises(ConfigError, match=r"speaker\.real\.from: expected one of \['kaggle', 'wav_tree'\]"):
        _real(**{"from": "ftp"})
    with pytest.raises(ConfigError, match="speaker.real: key 'from' is missing"):
        parse(RealConfig, {k: v for k, v in TINY_PARAMS["speaker"]["real"].items() if k != "from"}, "speaker.real")


def test_download_stage_leaves_nothing_on_failure(tmp_path):
    real = _real(**{"from": "wav_tree"}, wav_dir=str(tmp_path / "empty"), cache_dir=str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .wav files found"):
        data.obtain(tmp_path / "raw", "real", 0, real=real)
    assert not (tmp_path / "raw").exists() and not (tmp_path / "raw.partial").exists()


def test_missing_kaggle_token_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nokaggle"))
    with pytest.raises(DownloadError, match="kaggle.json") as err:
        data.download_kaggle(tmp_path / "cache")
    assert "ml2023springhw4" in str(err.value) and "hw4_dir" in str(err.value)


def test_user_hw4_folder_is_read_in_place_behind_a_small_source_json(hw4, tmp_path):
    real = _real(hw4_dir=str(hw4), cache_dir=str(tmp_path / "cache"))
    desc = data.obtain(tmp_path / "raw", "real", 0, real=real)
    assert [f.name for f in (tmp_path / "raw").iterdir()] == ["source.json"]  # no per-utterance files to hash
    info = json.loads((tmp_path / "raw" / "source.json").read_text())
    assert desc.startswith("real") and info["synthetic"] is False and info["root"] == str(hw4.resolve())
    assert data.data_root(tmp_path / "raw") == hw4.resolve()
    manifest = features.build(tmp_path / "raw", tmp_path / "feat", 2, 0.2, 0)
    assert manifest["counts"] == features.build(hw4, tmp_path / "feat2", 2, 0.2, 0)["counts"]
    missing = _copy(hw4, tmp_path / "broken")
    next(missing.glob("uttr-*.pt")).unlink()
    with pytest.raises(DataError, match="listed in the metadata but missing"):
        data.obtain(tmp_path / "raw2", "real", 0, real=_real(hw4_dir=str(missing), cache_dir=str(tmp_path / "cache")))


def test_wav_tree_is_converted_into_the_cache_not_the_raw_output(tmp_path):
    import soundfile as sf

    for k in range(3):
        path = tmp_path / "wav" / f"id1000{k % 2 + 1}" / "vid" / f"{k:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.random.default_rng(k).normal(0, 0.1, 8000).astype(np.float32), 16000)
    real = _real(**{"from": "wav_tree"}, wav_dir=str(tmp_path / "wav"), wav_test_fraction=0.0,
                 cache_dir=str(tmp_path / "cache"))
    data.obtain(tmp_path / "raw", "real", 0, real=real)
    assert [f.name for f in (tmp_path / "raw").iterdir()] == ["source.json"]
    assert data.data_root(tmp_path / "raw") == (tmp_path / "cache" / "wav_tree_hw4").resolve()
    assert len(data.read_dataset(data.data_root(tmp_path / "raw")).utterances) == 3


def test_voxceleb1_wav_tree_becomes_40_mel_hw4_layout(tmp_path):
    import soundfile as sf

    rng = np.random.default_rng(0)
    for spk, n in (("id10001", 3), ("id10002", 2)):
        for k in range(n):
            path = tmp_path / "wav" / spk / "vid" / f"{k:05d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, rng.normal(0, 0.1, 16000).astype(np.float32), 16000)
    data.convert_wav_tree(tmp_path / "wav", tmp_path / "raw", test_fraction=0.0, seed=0)
    ds = data.read_dataset(tmp_path / "raw")
    assert ds.speakers == ["id10001", "id10002"] and len(ds.utterances) == 5
    x = data.load_feature(tmp_path / "raw", ds.utterances[0], 40)
    assert x.shape == ((16000 - 400) // 160 + 1, 40)  # 25 ms window, 10 ms hop at 16 kHz


def _wav(path: Path, seconds: float = 0.5, seed: int = 0) -> None:
    """A VoxCeleb1-format file: 16 kHz mono 16-bit PCM WAV."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.random.default_rng(seed).normal(0, 0.1, int(16000 * seconds)), 16000, subtype="PCM_16")


def test_wav_tree_layout_and_names_are_checked(tmp_path):
    # VoxCeleb1 unpacks to wav/<speaker>/<video>/<n>.wav; pointing at the folder above wav/ works too
    _wav(tmp_path / "vox1" / "wav" / "id10001" / "1zcIwhmdeo4" / "00001.wav")
    _wav(tmp_path / "vox1" / "wav" / "id10002" / "C7k7C-PDvAA" / "00001.wav", seed=1)
    data.convert_wav_tree(tmp_path / "vox1", tmp_path / "out", test_fraction=0.0, seed=0)
    assert data.read_dataset(tmp_path / "out").speakers == ["id10001", "id10002"]
    # a wav one level too shallow would otherwise make its video folder a speaker
    _wav(tmp_path / "vox1" / "wav" / "id10003" / "00001.wav")
    with pytest.raises(DataError, match=r"id10003/00001.wav: expected <speaker>/<video>/<n>.wav"):
        data.convert_wav_tree(tmp_path / "vox1", tmp_path / "out2", test_fraction=0.0, seed=0)
    # a folder name that is not UTF-8 (Latin-1 e-acute) must not become a speaker id
    bad = tmp_path / "vox2"
    _wav(bad / "id10001" / "v" / "00001.wav")
    os.makedirs(os.path.join(os.fsencode(bad), b"id1\xe90002", b"v"))
    with open(os.path.join(os.fsencode(bad), b"id1\xe90002", b"v", b"00001.wav"), "wb") as fh:
        fh.write((bad / "id10001" / "v" / "00001.wav").read_bytes())
    with pytest.raises(DataError, match=r"speaker folder 'id1\\udce90002' holds a lone surrogate"):
        data.convert_wav_tree(bad, tmp_path / "out3", test_fraction=0.0, seed=0)


# ---------------------------------------------------------------------------------------------- models

CONFORMERS = sorted(n for n, c in ABLATION.items() if c["encoder"] == "conformer")


@pytest.mark.parametrize("name,attention", [(n, "none") for n in sorted(ABLATION)]
                         + [(n, "relative") for n in CONFORMERS]
                         + [("speaker_triplet", None), ("speaker_ecapa_tdnn", None)])
def test_padding_does_not_change_a_prediction(name, attention):
    torch.manual_seed(0)
    if name in ABLATION:
        model = build_model(name, n_classes=5, d_model=16, ff_dim=32, attention=attention)
    else:
        model = build_model(name)
    model.eval()
    short, long_ = torch.randn(1, 37, 40), torch.randn(1, 61, 40)
    alone = model(short)
    padded = torch.cat([short, torch.full((1, 24, 40), 7.0)], 1)
    batch = torch.cat([padded, long_])
    together = model(batch, torch.tensor([37, 61]))
    torch.testing.assert_close(together[0:1], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together[1:2], model(long_), atol=1e-5, rtol=1e-5)


def test_rel_shift_puts_each_query_at_its_distance_to_each_key():
    t = 6
    x = torch.randn(2, 3, t, 2 * t - 1)
    naive = torch.empty(2, 3, t, t)
    for i in range(t):
        for j in range(t):
            naive[..., i, j] = x[..., i, (t - 1) - (i - j)]  # column k holds distance T-1-k
    assert torch.equal(rel_shift(x), naive)


def test_relative_scores_equal_transformer_xl_computed_pair_by_pair():
    """Dai et al. 2019, sec. 3.3: A_ij = (q_i + u)^T k_j + (q_i + v)^T W_R R_{i-j}, over sqrt(d_head)."""
    torch.manual_seed(0)
    d, heads, t = 8, 2, 5
    attn = RelPositionSelfAttention(d, heads, dropout=0.0).eval()
    x = torch.randn(1, t, d)
    scores, _ = attn.scores(x)
    q, k, _ = attn.in_proj(x)[0].chunk(3, dim=-1)
    dh = d // heads
    inv_freq = 1.0 / 10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    naive = torch.empty(heads, t, t)
    for i in range(t):
        for j in range(t):
            ang = (i - j) * inv_freq
            r = attn.pos_proj(torch.stack((ang.sin(), ang.cos()), -1).flatten())  # W_R R_{i-j}
            for h in range(heads):
                sl = slice(h * dh, (h + 1) * dh)
                naive[h, i, j] = ((q[i, sl] + attn.pos_bias_u[h]) @ k[j, sl]
                                  + (q[i, sl] + attn.pos_bias_v[h]) @ r[sl]) / dh ** 0.5
    torch.testing.assert_close(scores[0], naive, atol=1e-5, rtol=1e-5)


def test_relative_attention_sees_frame_order_and_plain_attention_does_not():
    """With a 1-frame convolution only attention mixes frames. A block with plain attention is
    permutation-equivariant (permuting the frames permutes its output, so mean pooling cannot tell
    the order); with relative positions it is not."""
    x = torch.randn(1, 30, 16, generator=torch.Generator().manual_seed(0))
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(1))
    gap = {}
    for attention in ("none", "relative"):
        torch.manual_seed(0)
        block = ConformerBlock(16, 2, 32, 1, 0.0, attention).eval()
        with torch.no_grad():
            gap[attention] = float((block(x, None)[:, perm] - block(x[:, perm], None)).abs().max())
    assert gap["none"] < 1e-5
    assert gap["relative"] > 1e-2, gap


def test_relative_attention_adds_the_position_projection_and_u_v_biases():
    """Paper recipe's block (d 80, 2 heads, ff 320, kernel 31): W_R is 80 x 80 (no bias), u and v 2 x 40."""
    def count(attention: str) -> int:
        return sum(p.numel() for p in ConformerBlock(80, 2, 320, 31, 0.1, attention).parameters())

    assert count("none") == 152_080
    assert count("relative") == 158_640 == 152_080 + 80 * 80 + 2 * (2 * 40)


def test_attention_must_be_a_known_kind():
    with pytest.raises(ValueError, match="attention must be one of"):
        build_model("speaker_conformer", n_classes=5, d_model=16, attention="rotary")


def test_am_softmax_subtracts_the_margin_at_the_target_only():
    torch.manual_seed(0)
    model = build_model("speaker_am_softmax", n_classes=4, d_model=16, am_scale=30.0, am_margin=0.2).eval()
    x, y = torch.randn(3, 20, 40), torch.tensor([0, 2, 3])
    diff = model(x) - model(x, labels=y)
    expected = torch.zeros(3, 4)
    expected[torch.arange(3), y] = 30.0 * 0.2
    torch.testing.assert_close(diff, expected)
    assert model(x).abs().max() <= 30.0 + 1e-4  # scaled cosines


def test_ecapa_tdnn_is_speechbrains_with_the_papers_parameter_count():
    """Desplanques et al. 2020 (arXiv:2005.07143), Table 1: ECAPA-TDNN (C=512) 6.2M, (C=1024) 14.7M
    parameters, on 80 filterbanks with 1536 channels in the aggregation layer (Fig. 2), attention and
    SE bottlenecks 128, Res2Net scale 8, 192-dim embeddings. speechbrain 1.1.2's ECAPA_TDNN with those
    settings has 14,660,416 and 6,194,048 (its own VoxCeleb recipe widens the aggregation layer to
    3 * 1024 = 3072 channels: 20,767,552, not the paper's system)."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    def count(m):
        return sum(p.numel() for p in m.parameters())

    paper = dict(n_mels=80, mfa_channels=1536, attention_channels=128, se_channels=128, res2net_scale=8, emb_dim=192)
    big = build_model("speaker_ecapa_tdnn", n_classes=5994, channels=1024, **paper)
    assert isinstance(big.ecapa, ECAPA_TDNN)
    assert count(big.ecapa) == 14_660_416
    assert count(big.classifier) == 5994 * 192  # VoxCeleb2 dev's 5,994 speakers: the AAM head's class centres
    assert count(build_model("speaker_ecapa_tdnn", channels=512, **paper).ecapa) == 6_194_048
    # the demo's size (params.yaml speaker.ecapa on 40 mels): parameters of the embedder alone
    demo = build_model("speaker_ecapa_tdnn", n_mels=40, channels=32, mfa_channels=96, attention_channels=16,
                       se_channels=16, res2net_scale=8, emb_dim=64)
    assert count(demo.ecapa) == 46_220


def test_building_ecapa_leaves_the_process_wide_torch_settings_alone():
    """speechbrain's import would switch TF32 on for every later CUDA matmul (its "quirks")."""
    import subprocess
    import sys

    code = ("import torch; before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32); "
            "from repropipe.models import build_model; build_model('speaker_ecapa_tdnn'); "
            "import speechbrain.utils.quirks as q; "
            "print(before == (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32), sorted(q.applied_quirks))")
    env = {k: v for k, v in os.environ.items() if k != "SB_DISABLE_QUIRKS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip().splitlines()[-1] == "True []"


def test_ecapa_eval_embedding_is_speechbrains_forward_and_aam_adds_the_angular_margin():
    torch.manual_seed(0)
    model = build_model("speaker_ecapa_tdnn", n_classes=4, aam_scale=30.0, aam_margin=0.2).eval()
    x, y = torch.randn(3, 40, 40), torch.tensor([0, 2, 3])
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), model.ecapa(x).squeeze(1))
        torch.testing.assert_close(model.embed(x, torch.tensor([40, 40, 40])), model.ecapa(x).squeeze(1))
        plain, margin = model(x), model(x, labels=y)
    cos = plain / 30.0
    assert cos.abs().max() <= 1 + 1e-5
    target = cos[torch.arange(3), y].clamp(-1 + 1e-7, 1 - 1e-7)
    expected = plain.clone()
    expected[torch.arange(3), y] = 30.0 * torch.cos(torch.acos(target) + 0.2)  # cos(theta + m) at the target only
    torch.testing.assert_close(margin, expected, atol=1e-4, rtol=1e-4)


def test_triplet_loss_is_zero_only_when_separated_by_the_margin():
    a = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    y = torch.tensor([0, 1])
    assert triplet_loss(a, a.clone(), y, 0.3) == 0.0  # cos(a,p)=1, cos(a,n)=0
    swapped = a.flip(0)
    assert triplet_loss(a, swapped, y, 0.3) == pytest.approx((0.3 + 1.3) / 2)
    near = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.5]]), dim=1)
    assert 0 < triplet_loss(near, near.clone(), y, 0.3) < 0.3


def test_random_crop_keeps_short_utterances_whole():
    x = torch.arange(50.0)[:, None].expand(50, 40)
    assert random_crop(x[:20], 32).shape[0] == 20
    c = random_crop(x, 32)
    assert c.shape[0] == 32 and torch.equal(c[:, 0], torch.arange(c[0, 0], c[0, 0] + 32))


# ---------------------------------------------------------------------------------------------- scoring

def test_trials_and_eer_on_separable_and_random_embeddings():
    labels = torch.arange(4).repeat_interleave(5)
    centers = torch.eye(8)[:4] * 5
    emb = centers[labels] + 0.1 * torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    pairs = evaluate.pair_trials(emb, labels, 10_000, 0)
    assert pairs.target.size == 4 * 10 and pairs.nontarget.size == 190 - 40
    assert evaluate.eer_summary(pairs)["eer"] == 0.0
    assert evaluate.eer_summary(evaluate.enrolment_trials(emb, labels, 5, 0))["eer"] == 0.0
    noise = torch.randn(20, 8, generator=torch.Generator().manual_seed(1))
    assert evaluate.eer_summary(evaluate.pair_trials(noise, labels, 10_000, 0))["eer"] > 0.2
    sampled = evaluate.pair_trials(emb, labels, 50, 0)
    assert sampled.target.size + sampled.nontarget.size == 50


def test_uncertainty_resamples_speakers_and_tests_against_the_reference():
    """A model with separable embeddings against a reference of noise: its EERs and accuracy are
    significantly better; the reference against itself (a copy) is not different."""
    labels = torch.arange(12).repeat_interleave(6)
    gen = torch.Generator().manual_seed(0)
    good = torch.eye(16)[labels] * 3 + torch.randn(72, 16, generator=gen)
    noise = torch.randn(72, 16, generator=gen)

    def raw(emb, correct):
        return {"pairs": evaluate.pair_trials(emb, labels, 10_000, 0), "enrol": evaluate.enrolment_trials(emb, labels, 5, 0),
                "id": (labels.numpy(), correct)}

    rng = np.random.default_rng(0)
    raws = {"ref": raw(noise, rng.random(72) < 0.1), "copy": raw(noise, rng.random(72) < 0.1),
            "good": raw(good, np.ones(72, bool))}
    points = {n: {"verification_eer": evaluate.eer_summary(r["pairs"])["eer"],
                  "enrolment_eer": evaluate.eer_summary(r["enrol"])["eer"]} for n, r in raws.items()}
    u = evaluate.uncertainty(raws, points, "ref", seed=0)
    for key in ("verification_eer", "enrolment_eer"):
        v = u["good"][key]
        assert v["ci_low"] <= v["value"] <= v["ci_high"] < u["ref"][key]["ci_low"]
        assert v["vs_reference"]["significant"] and v["vs_reference"]["diff"] < 0
        assert not u["copy"][key]["vs_reference"]["significant"]  # same embeddings: zero difference
        assert "vs_reference" not in u["ref"][key]
    acc = u["good"]["identification_accuracy"]
    assert acc["value"] == 1.0 and acc["vs_reference"]["significant"] and acc["vs_reference"]["mcnemar"]["p_value"] < 1e-6
    # a pair trial joins two speakers: the bootstrap resamples the 12 speakers, not the 2556 pairs
    assert raws["good"]["pairs"].speakers.shape == (72 * 71 // 2, 2)


def test_predictions_csv_is_the_hw4_format():
    text = evaluate.predictions_csv(["uttr-a.pt", "uttr-b.pt"], torch.tensor([1, 0]), ["id10001", "id10002"])
    assert text == "Id,Category\nuttr-a.pt,id10002\nuttr-b.pt,id10001\n"


# ---------------------------------------------------------------------------------------------- end to end

def test_tiny_pipeline_runs_every_stage(project, monkeypatch):
    from repropipe.stages import STAGES, load_all, run_stage

    load_all()
    monkeypatch.chdir(project)
    for step in ("download", "features", "train", "evaluate"):
        run_stage(STAGES[f"speaker_{step}"], project / "params.yaml")
    metrics = branch_results(project, "speaker")
    assert metrics["data_source"].startswith("synthetic")
    assert metrics["n_classes"] == 4 and set(metrics["models"]) == set(TINY_PARAMS["speaker"]["models"])
    assert 0.0 <= metrics["models"]["speaker_ecapa_tdnn"]["verification_eer"] <= 1.0
    assert metrics["reference"] == "speaker_hw4_baseline"
    for key in ("verification_eer", "enrolment_eer", "identification_accuracy"):
        lo, hi = metrics[f"{key}_ci_low/speaker_conformer"], metrics[f"{key}_ci_high/speaker_conformer"]
        assert 0.0 <= lo <= hi <= 1.0
        assert 0.0 <= metrics[f"{key}_p_vs_ref/speaker_conformer"] <= 1.0
        assert f"{key}_p_vs_ref/speaker_hw4_baseline" not in metrics
    section_text = (project / "results/speaker/section.json").read_text()
    assert "paired bootstrap over speakers" in section_text and "[95 % CI]" in section_text
    section = json.loads(section_text)
    ecapa = [r for r in section["tables"][0]["rows"] if r[0].startswith("ECAPA-TDNN")]
    assert ecapa and ecapa[0][1:4] == ["ECAPA-TDNN (SE-Res2Net TDNN)", "attentive statistics", "AAM-softmax"]
    assert (project / "results/speaker/models/speaker_triplet/autoencoder/model.pt").exists()
    csv = (project / "results/speaker/predictions/speaker_conformer_sap_am.csv").read_text().splitlines()
    assert csv[0] == "Id,Category" and len(csv) == 5


def test_a_ragged_last_batch_of_one_does_not_break_batchnorm(hw4, tmp_path):
    from repropipe.speaker.train import train_triplet

    built = features.build(hw4, tmp_path / "f", verify_speakers=2, val_fraction=0.2, seed=0)
    assert built["counts"]["train"] == 16
    train, val = features.load_shard(tmp_path / "f" / "train.pt"), features.load_shard(tmp_path / "f" / "val.pt")
    tp = TrainConfig(segment_len=16, batch_size=15, epochs=1, lr=1e-3, weight_decay=0.0, warmup_steps=0,
                     checkpoint_every=0, specaugment=SpecAugmentConfig(enabled=False, freq_mask=0, time_mask=0))
    trp = TripletConfig(channels=8, emb_dim=8, margin=0.3, lr=1e-3, epochs=1, autoencoder_epochs=0)
    hist = train_triplet(train, val, tp, trp, 0, torch.device("cpu"), tmp_path / "run")  # 16 = 15 + a batch of 1
    assert len(hist) == 1 and (tmp_path / "run" / "model.pt").exists()


# ---------------------------------------------------------------------------------------------- real-mode rehearsal

def _rehearse(tmp_path: Path, monkeypatch, real: dict) -> tuple[Path, dict]:
    """``speaker.source: real`` through download -> features -> train (tiny) -> evaluate, no network."""
    import copy

    from repropipe.stages import load_all, run_stage

    params = copy.deepcopy(TINY_PARAMS)
    params["speaker"]["source"] = "real"
    params["speaker"]["real"].update(real)
    params["speaker"]["models"] = ["speaker_conformer_sap_am", "speaker_triplet"]
    project = copy_project(tmp_path / "proj", params)
    monkeypatch.chdir(project)
    stages = load_all()
    for step in ("download", "features", "train", "evaluate"):
        run_stage(stages[f"speaker_{step}"], project / "params.yaml")
    assert [f.name for f in (project / "data/raw/speaker").iterdir()] == ["source.json"]  # read in place
    metrics = branch_results(project, "speaker")
    assert metrics["data_source"].startswith("real")
    assert set(metrics["models"]) == {"speaker_conformer_sap_am", "speaker_triplet"}
    for m in metrics["models"].values():
        assert 0.0 <= m["verification_eer"] <= 1.0
    section = json.loads((project / "results/speaker/section.json").read_text())
    assert section["synthetic"] is False
    return project, metrics


@pytest.mark.e2e
def test_real_mode_rehearsal_from_a_local_hw4_folder(tmp_path, monkeypatch):
    hw4_dir = tmp_path / "Dataset"  # the Kaggle archive's folder, kept outside the project
    data.synthesize(hw4_dir, n_speakers=6, utts_per_speaker=6, min_len=24, max_len=48, n_test=4, noise=1.0, seed=3)
    train, test, _ = _sample_code_reader(hw4_dir)  # what the course's own code would read
    project, metrics = _rehearse(tmp_path, monkeypatch, {"hw4_dir": str(hw4_dir)})
    assert json.loads((project / "data/raw/speaker/source.json").read_text())["root"] == str(hw4_dir.resolve())
    assert metrics["n_classes"] == 4 and metrics["counts"]["test"] == len(test) == 4
    assert sum(metrics["counts"][s] for s in ("train", "val", "verify")) == len(train) == 36
    csv = (project / "results/speaker/predictions/speaker_conformer_sap_am.csv").read_text().splitlines()
    assert csv[0] == "Id,Category" and sorted(line.split(",")[0] for line in csv[1:]) == sorted(test)


@pytest.mark.e2e
def test_real_mode_rehearsal_from_a_voxceleb1_wav_tree(tmp_path, monkeypatch):
    # VoxCeleb1's wav/<speaker>/<YouTube id>/<n>.wav: 16 kHz mono 16-bit PCM
    videos = ["1zcIwhmdeo4", "7gWzIy6yIIk", "C7k7C-PDvAA"]
    for k in range(6):
        for v in range(2):
            for n in range(2):
                _wav(tmp_path / "vox1" / "wav" / f"id{10001 + k}" / videos[(k + v) % 3] / f"{n + 1:05d}.wav",
                     seconds=0.6, seed=100 * k + 10 * v + n)
    project, metrics = _rehearse(tmp_path, monkeypatch, {"from": "wav_tree", "wav_dir": str(tmp_path / "vox1"),
                                                         "wav_test_fraction": 0.1})
    converted = project / "data/cache/speaker/wav_tree_hw4"
    ds = data.read_dataset(converted)
    assert ds.speakers == [f"id{10001 + k}" for k in range(6)] and len(ds.utterances) + len(ds.test) == 24
    assert metrics["counts"]["test"] == len(ds.test)


def test_section_has_the_anchor_table_measured_beside_published():
    """From a small fake Evaluation: the baseline and ECAPA-TDNN ran, speaker_conformer did not."""
    from repropipe.report.section import ANCHOR_TITLE
    from repropipe.speaker import section

    keys = ("identification_accuracy", "verification_eer", "enrolment_eer")
    models = {"speaker_hw4_baseline": 0.625, "speaker_ecapa_tdnn": 0.8125}
    metrics = {n: {"identification_accuracy": acc, "verification_eer": 0.2, "enrolment_eer": 0.1,
                   "verification_target_trials": 10, "verification_nontarget_trials": 90,
                   "verification_threshold": 0.5, "enrolment_threshold": 0.4} for n, acc in models.items()}
    test = {"diff": 0.1, "ci_low": 0.05, "ci_high": 0.15, "p_value": 0.01, "significant": True, "test": "paired"}
    unc = {n: {k: {"value": metrics[n][k], "ci_low": metrics[n][k] - 0.0625, "ci_high": metrics[n][k] + 0.0625,
                   **({} if n == "speaker_hw4_baseline" else {"vs_reference": test})} for k in keys} for n in models}
    manifest = {"classes": [f"id{i}" for i in range(8)], "verify_speakers": ["v1", "v2"], "counts": {"test": 5},
                "data_source": "synthetic", "synthetic": True}
    ev = evaluate.Evaluation(manifest=manifest, results={n: {"metrics": m} for n, m in metrics.items()},
                             histories={}, reference="speaker_hw4_baseline", uncertainty=unc)
    sec = section.build(ev)
    assert "0.93175" in sec.tables[0].anchor  # the existing tables stay first
    t = sec.tables[-1]
    assert t.title.startswith(ANCHOR_TITLE) and "not comparable" in t.title
    rows = {r[0].split(":")[0]: r for r in t.rows if r[1] == "identification accuracy"}
    eer = [r for r in t.rows if r[1] == "verification EER (fraction)"]
    assert len(eer) == 1 and eer[0][0].startswith("speaker_ecapa_tdnn")
    assert eer[0][2:4] == ["0.2000 [0.1375, 0.2625]", "published: 0.0087"] and "VoxCeleb1" in eer[0][4]
    assert rows["speaker_hw4_baseline"][2:4] == ["0.6250 [0.5625, 0.6875]", "published: 0.66025"]
    assert rows["speaker_conformer"][2:4] == ["not run", "published: 0.885"]
    assert rows["speaker_ecapa_tdnn"][2:4] == ["0.8125 [0.7500, 0.8750]", "none quoted here"]
    boss = rows["HW4 boss baseline (a leaderboard threshold, not a system)"]
    assert boss[3] == "published: 0.93175" and "Kaggle public test set" in boss[4]
