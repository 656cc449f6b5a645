"""GAN branch: losses, I-SIR, data readers and bad input, the fidelity cache, a tiny end-to-end run."""

from __future__ import annotations

import dataclasses
import io as pyio
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_PARAMS, branch_results, copy_project
from repropipe.download import DownloadError
from repropipe.gan import data, features, fidelity
from repropipe.gan.config import DataConfig
from repropipe.gan.isir import Calibration, calibrate, isir_sample
from repropipe.gan.losses import loss_D, loss_G, loss_GP
from repropipe.io import DataError, md5_file


# ---------------------------------------------------------------- losses

def _linear_critic(w: torch.Tensor):
    return lambda x: x.reshape(x.shape[0], -1) @ w


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic():
    torch.manual_seed(0)
    w = torch.randn(3 * 8 * 8, dtype=torch.float64)
    w /= w.norm()
    x_real, x_fake = torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.randn(6, 3, 8, 8, dtype=torch.float64)
    assert loss_GP(x_fake, x_real, _linear_critic(w)).item() == pytest.approx(0.0, abs=1e-20)
    # a weight of norm 3 has gradient norm 3 everywhere: (3 - 1)^2 = 4
    assert loss_GP(x_fake, x_real, _linear_critic(3 * w)).item() == pytest.approx(4.0, rel=1e-12)


def test_gradient_penalty_trains_the_critic_and_not_the_generator():
    w = torch.full((12,), 0.5, requires_grad=True)
    x_fake = torch.randn(4, 3, 2, 2, requires_grad=True)
    gp = loss_GP(x_fake, torch.randn(4, 3, 2, 2), _linear_critic(w))
    gp.backward()
    assert w.grad is not None and w.grad.abs().sum() > 0  # create_graph: the penalty reaches D's weights
    assert x_fake.grad is None  # x_fake is detached inside


def test_wgan_losses():
    d_fake, d_real = torch.tensor([1.0, 3.0]), torch.tensor([5.0, 7.0])
    assert loss_D(d_fake, d_real).item() == pytest.approx(2.0 - 6.0)
    assert loss_G(d_fake).item() == pytest.approx(-2.0)


# ---------------------------------------------------------------- I-SIR

class _CountingCritic:
    def __init__(self, fn):
        self.fn, self.batches = fn, []

    def __call__(self, x):
        self.batches.append(x.shape[0])
        return self.fn(x).reshape(-1, 1)


def test_isir_shapes_and_batched_calls():
    D = _CountingCritic(lambda x: torch.zeros(x.shape[0]))
    z, trace = isir_sample(3, 10, 4, 6, D, lambda z: z, batch_size=16, generator=torch.Generator().manual_seed(0))
    changed = trace.changed
    assert z.shape == (10, 6) and len(changed) == 3
    assert trace.ess == pytest.approx([5.0] * 3)  # a flat critic: all 5 candidates weigh the same
    assert all(0.0 <= c <= 1.0 for c in changed)
    assert D.batches == [16, 16, 16, 2] * 3  # 10 rows x 5 particles per iteration, batched, no per-sample loop


def test_isir_moves_latents_towards_the_region_the_critic_prefers():
    n_z, g = 4, torch.Generator().manual_seed(1)
    D = _CountingCritic(lambda x: 3.0 * x[:, 0])  # G = identity; p*(z) has z_0 ~ N(3, 1)
    z, trace = isir_sample(10, 400, 20, n_z, D, lambda z: z, generator=g)
    changed = trace.changed
    assert z[:, 0].mean() > 2.3  # plain N(0, I) sampling would give ~0
    assert z[:, 1:].mean().abs() < 0.2 and (z[:, 1:].std() - 1).abs() < 0.15  # untouched coordinates stay N(0, 1)
    assert changed[0] > 0.9 and changed[-1] < changed[0]  # the first move almost always jumps, later ones less


def test_isir_with_a_flat_critic_keeps_the_prior_and_moves_at_rate_np_over_np_plus_1():
    z, trace = isir_sample(4, 2000, 3, 2, lambda x: torch.zeros(x.shape[0], 1), lambda z: z,
                           generator=torch.Generator().manual_seed(2))
    assert z.mean().abs() < 0.1 and (z.std() - 1).abs() < 0.1
    assert np.mean(trace.changed) == pytest.approx(0.75, abs=0.03)


def test_calibration_recovers_a_known_log_density_ratio_whatever_the_class_sizes():
    """Real scores ~ N(1, 1), generated ~ N(0, 1): log p_real(s) / p_fake(s) = s - 1/2, so a = 1, b = -1/2;
    twice as many generated scores must not move b (the class-size prior is taken out)."""
    g = torch.Generator().manual_seed(4)
    real, fake = torch.randn(20000, generator=g) + 1.0, torch.randn(40000, generator=g)
    cal = calibrate(real, fake)
    assert cal.a == pytest.approx(1.0, abs=0.04) and cal.b == pytest.approx(-0.5, abs=0.04)
    assert (cal.n_real, cal.n_fake) == (20000, 40000) and cal.auc == pytest.approx(0.76, abs=0.01)  # Phi(1/sqrt 2)
    # a critic in other units (WGAN scores are only defined up to scale and shift) gets the same ratio
    other = calibrate(50 * real + 7, 50 * fake + 7)
    assert other.a * 50 == pytest.approx(cal.a, rel=0.01) and other.a * 7 + other.b == pytest.approx(cal.b, abs=0.01)


def test_calibrated_isir_targets_p_times_exp_a_d_plus_b():
    n_z, g = 3, torch.Generator().manual_seed(5)
    D = _CountingCritic(lambda x: 3.0 * x[:, 0])  # exp(D) alone would pull z_0 to N(3, 1)
    z, _ = isir_sample(12, 2000, 20, n_z, D, lambda z: z, generator=g,
                       calibration=Calibration(a=0.5, b=-4.0, n_real=1, n_fake=1, auc=0.5))
    assert z[:, 0].mean() == pytest.approx(1.5, abs=0.1)  # p(z) exp(1.5 z_0 - 4): z_0 ~ N(1.5, 1)
    assert (z[:, 0].std() - 1).abs() < 0.1
    flat = Calibration(a=0.0, b=3.0, n_real=1, n_fake=1, auc=0.5)  # a = 0: every particle weighs the same
    _, trace = isir_sample(4, 2000, 3, 2, D, lambda z: z, generator=torch.Generator().manual_seed(2), calibration=flat)
    assert np.mean(trace.changed) == pytest.approx(0.75, abs=0.03)


def test_tempered_isir_targets_p_times_r_to_the_temperature():
    """temperature t scales the calibrated log-ratio: p(z) exp(t (a D + b)) with D = 3 z_0, a = 1: z_0 ~ N(3 t, 1);
    t = 0 is plain sampling whatever the critic."""
    D = _CountingCritic(lambda x: 3.0 * x[:, 0])
    cal = Calibration(a=1.0, b=-4.0, n_real=1, n_fake=1, auc=0.5)
    z, trace = isir_sample(12, 2000, 20, 3, D, lambda z: z, generator=torch.Generator().manual_seed(6),
                           calibration=cal, temperature=0.5)
    assert z[:, 0].mean() == pytest.approx(1.5, abs=0.1) and (z[:, 0].std() - 1).abs() < 0.1
    z0, trace0 = isir_sample(4, 2000, 3, 3, D, lambda z: z, generator=torch.Generator().manual_seed(6),
                             calibration=cal, temperature=0.0)
    assert z0[:, 0].mean().abs() < 0.1 and trace0.ess == pytest.approx([4.0] * 4)
    assert max(trace.ess) < 21 and min(trace.ess) > 1  # tempered weights: between one candidate and all 21


def test_effective_sample_size_counts_the_candidates_the_weights_use():
    from repropipe.gan.isir import effective_sample_size

    log_w = torch.log(torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0]]))
    assert effective_sample_size(log_w).tolist() == pytest.approx([4.0, 1.0, 2.0])
    assert effective_sample_size(torch.tensor([1000.0, 1000.0, -1e9])).item() == pytest.approx(2.0)  # no overflow


def test_select_temperature_picks_the_minimum_of_the_held_out_criterion():
    """A pool where half the proposals (log r = 1) are 'real-like' features 1 and half (log r = 0) are 0; the held-out
    target mean is 0.75, reached when r^t gives the first half 3/4 of the mass: e^t = 3, t = log 3."""
    from repropipe.gan.isir import select_temperature

    feats = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)  # the weights are float64
    log_r = torch.tensor([1.0, 1.0, 0.0, 0.0])
    temps = [0.0, 0.5, 1.0, 1.1, 1.5, 3.0]
    choice = select_temperature(log_r, temps, lambda w: (w @ feats - 0.75) ** 2)
    assert choice.temperature == 1.1  # the grid point nearest log 3 = 1.0986
    assert choice.criterion[temps.index(1.1)] == min(choice.criterion) and len(choice.ess_fraction) == len(temps)
    assert choice.ess_fraction[0] == pytest.approx(1.0) and choice.ess_fraction[-1] < choice.ess_fraction[1]
    # a criterion that only gets worse with reweighting chooses t = 0 (plain sampling); ties go to the smaller t
    assert select_temperature(log_r, temps, lambda w: (w @ feats - 0.5) ** 2).temperature == 0.0
    assert select_temperature(log_r, [1.0, 0.5], lambda w: torch.zeros(2)).temperature == 0.5
    with pytest.raises(ValueError):
        select_temperature(log_r, temps, lambda w: torch.full((len(temps),), float("nan")))


def test_critic_and_generator_have_torch_mimicrys_parameter_counts():
    """torch-mimicry 0.1.16 wgan_gp_64: WGANGPGenerator64 12,220,675 / WGANGPDiscriminator64 10,141,441
    parameters at ngf = ndf = 1024, 172,195 / 40,081 at 64. The critic's blocks keep their input width
    in the first convolution and carry no normalisation."""
    from repropipe.models import build_model

    def count(name, **kw):
        return sum(p.numel() for p in build_model(name, **kw).parameters())

    assert count("wgan_gp_64_generator", ngf=1024) == 12_220_675
    assert count("wgan_gp_64_generator", ngf=64) == 172_195
    assert count("wgan_gp_64_critic", ndf=1024) == 10_141_441
    assert count("wgan_gp_64_critic", ndf=64) == 40_081
    D = build_model("wgan_gp_64_critic", ndf=64)
    widths = [(b.c1.in_channels, b.c1.out_channels, b.c2.out_channels) for b in D.blocks]
    assert widths == [(4, 4, 8), (8, 8, 16), (16, 16, 32), (32, 32, 64)]
    assert not [m for m in D.modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm2d))]


def test_critic_block_shortcut_reads_the_relu_of_its_input_as_mimicrys_in_place_relu_makes_it():
    from repropipe.gan.models import DBlock

    torch.manual_seed(0)
    block = DBlock(4, 8)
    x = torch.randn(2, 4, 8, 8)
    h = torch.nn.functional.avg_pool2d(block.c2(torch.relu(block.c1(torch.relu(x)))), 2)
    torch.testing.assert_close(block(x), h + torch.nn.functional.avg_pool2d(block.c_sc(torch.relu(x)), 2))


def test_isir_is_deterministic_given_its_generator():
    D = lambda x: x.sum(1, keepdim=True)  # noqa: E731
    a = isir_sample(2, 5, 3, 4, D, lambda z: z, generator=torch.Generator().manual_seed(3))
    b = isir_sample(2, 5, 3, 4, D, lambda z: z, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and len(a[1].ess) == 2


# ---------------------------------------------------------------- data and bad input

@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return data.synthesize(tmp_path / "raw", 10, seed=0)


def _rewrite_zip(archive: Path, changes: dict[str, bytes | None]) -> None:
    """Replace (bytes) or drop (None) members of a CelebA-layout zip, keyed by image name."""
    with zipfile.ZipFile(archive) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(archive, "w") as zf:
        for n, blob in members.items():
            key = n.rsplit("/", 1)[-1]
            if key in changes and changes[key] is None:
                continue
            zf.writestr(n, changes.get(key, blob))


def test_synthetic_is_a_zip_in_celebas_layout_and_deterministic(raw: Path, tmp_path: Path):
    from PIL import Image

    assert sorted(p.name for p in raw.iterdir()) == [data.ARCHIVE, data.PARTITION, data.SOURCE_FILE]
    with zipfile.ZipFile(raw / data.ARCHIVE) as zf:
        names = zf.namelist()
        assert names[0] == "img_align_celeba/000001.jpg" and len(names) == 10
        with Image.open(pyio.BytesIO(zf.read(names[0]))) as im:
            assert im.format == "JPEG" and im.size == (178, 218)
    entries = data.read_partition(raw / data.PARTITION)
    assert [e.split for e in entries] == [0] * 8 + [1] + [2]
    info = json.loads((raw / data.SOURCE_FILE).read_text())
    assert info["source"] == "synthetic" and info["counts"] == {"train": 8, "valid": 1, "test": 1}
    again = data.synthesize(tmp_path / "again", 10, seed=0)
    assert md5_file(again / data.ARCHIVE) == md5_file(raw / data.ARCHIVE) == info["md5"]["archive"]


def test_shards_hold_center_cropped_64px_uint8_images_read_from_the_zip(raw: Path, tmp_path: Path):
    index = features.build_shards(raw, tmp_path / "f", 178, 64, 5, "error")
    assert index["splits"]["train"] == {"count": 8, "shards": ["train-000.pt", "train-001.pt"]}
    assert index["source"]["source"] == "synthetic"
    x = features.load_split(tmp_path / "f", "train")
    assert x.dtype == torch.uint8 and x.shape == (8, 3, 64, 64)
    with zipfile.ZipFile(raw / data.ARCHIVE) as zf:
        first = data.decode_image(zf.read("img_align_celeba/000001.jpg"), "x", 178, 64)
    assert torch.equal(x[0], torch.from_numpy(first))


def test_corrupt_jpeg_is_named_or_skipped_and_counted(raw: Path, tmp_path: Path):
    _rewrite_zip(raw / data.ARCHIVE, {"000003.jpg": b"\xff\xd8\xff\xe0 this is not a jpeg"})
    with pytest.raises(DataError, match=r"img_align_celeba.zip!img_align_celeba/000003.jpg: not a readable JPEG"):
        features.build_shards(raw, tmp_path / "f", 178, 64, 100, "error")
    index = features.build_shards(raw, tmp_path / "g", 178, 64, 100, "skip")
    assert index["skipped"]["corrupt"] == ["000003.jpg"] and index["splits"]["train"]["count"] == 7


def test_missing_image_is_named_or_skipped(raw: Path, tmp_path: Path):
    _rewrite_zip(raw / data.ARCHIVE, {"000005.jpg": None})
    with pytest.raises(DataError, match=r"list_eval_partition.txt: 1 listed image\(s\) missing .*000005.jpg"):
        features.build_shards(raw, tmp_path / "f", 178, 64, 100, "error")
    index = features.build_shards(raw, tmp_path / "g", 178, 64, 100, "skip")
    assert index["skipped"]["missing"] == ["000005.jpg"] and index["splits"]["train"]["count"] == 7


def test_partition_that_does_not_match_the_images(raw: Path, tmp_path: Path):
    part = raw / data.PARTITION
    part.write_text("".join(part.read_text().splitlines(keepends=True)[:-2]))  # two images left unlisted
    with pytest.raises(DataError, match="does not match the images: 2 image"):
        features.build_shards(raw, tmp_path / "f", 178, 64, 100, "error")
    part.write_text(part.read_text() + "000009.jpg three\n")
    with pytest.raises(DataError, match=r"list_eval_partition.txt:9: expected"):
        data.read_partition(part)


def test_image_too_small_for_the_crop():
    from PIL import Image

    buf = pyio.BytesIO()
    Image.new("RGB", (100, 120)).save(buf, format="JPEG")
    with pytest.raises(DataError, match="000001.jpg: image is 100x120, smaller than the 178x178 center crop"):
        data.decode_image(buf.getvalue(), "000001.jpg", 178, 64)


# ---------------------------------------------------------------- real CelebA (a tiny fake, no network)

@pytest.fixture
def fake_celeba(raw: Path, tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """A tiny CelebA zip nesting its folder as Kaggle's copy does, plus a partition file; the md5s
    torchvision checks are patched to theirs."""
    archive, part = tmp_path / "mine" / data.ARCHIVE, tmp_path / "mine" / data.PARTITION
    archive.parent.mkdir()
    with zipfile.ZipFile(raw / data.ARCHIVE) as src, zipfile.ZipFile(archive, "w") as dst:
        for n in src.namelist():
            dst.writestr(f"img_align_celeba/{n}", src.read(n))
    part.write_bytes((raw / data.PARTITION).read_bytes())
    monkeypatch.setitem(data.CELEBA_FILES, "archive", ("x", md5_file(archive), data.ARCHIVE))
    monkeypatch.setitem(data.CELEBA_FILES, "partition", ("y", md5_file(part), data.PARTITION))
    return archive, part


def _real(**kw) -> DataConfig:
    return DataConfig(**{"num_images": 10, "archive": None, "partition": None, "root": None,
                         "cache_dir": "data/cache/gan", "verify_md5": True, **kw})


def _same_shards(raw: Path, other: Path, tmp_path: Path) -> None:
    a = features.build_shards(raw, tmp_path / "fa", 178, 64, 100, "error")
    b = features.build_shards(other, tmp_path / "fb", 178, 64, 100, "error")
    assert a["splits"] == b["splits"]
    assert torch.equal(features.load_split(tmp_path / "fa", "train"), features.load_split(tmp_path / "fb", "train"))


def test_a_user_archive_is_verified_and_read_in_place(raw: Path, fake_celeba, tmp_path: Path):
    archive, part = fake_celeba
    out, cache = tmp_path / "out", tmp_path / "cache"
    info = data.download_real(out, _real(archive=str(archive), partition=str(part), cache_dir=str(cache)))
    assert [p.name for p in out.iterdir()] == [data.SOURCE_FILE]  # the raw output: one small file
    assert not cache.exists()  # read in place, not copied
    assert info["archive"] == str(archive) and info["counts"] == {"train": 8, "valid": 1, "test": 1}
    assert info["md5"]["archive"] == md5_file(archive) and info["num_images"] == 10
    _same_shards(raw, out, tmp_path)


def test_download_lands_in_the_cache_once_and_the_raw_output_is_source_json(raw: Path, fake_celeba, tmp_path: Path):
    import functools
    import http.server
    import threading

    archive, part = fake_celeba
    gets: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            gets.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass  # keep the test output free of the server's access log

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(archive.parent)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        params = _real(archive=f"{base}/{data.ARCHIVE}", partition=f"{base}/{data.PARTITION}",
                       cache_dir=str(tmp_path / "cache"))
        for run in ("first", "second"):
            out = tmp_path / run
            info = data.download_real(out, params)
            assert [p.name for p in out.iterdir()] == [data.SOURCE_FILE]
        assert sorted(gets) == [f"/{data.ARCHIVE}", f"/{data.PARTITION}"]  # the second run fetched nothing
    finally:
        httpd.shutdown()
    assert Path(info["archive"]) == (tmp_path / "cache" / data.ARCHIVE).resolve()
    _same_shards(raw, tmp_path / "second", tmp_path)


def test_an_extracted_tree_is_read_in_place(raw: Path, fake_celeba, tmp_path: Path):
    archive, part = fake_celeba
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "tree")
    root = tmp_path / "tree" / "img_align_celeba"  # holds img_align_celeba/ (Kaggle nesting)
    (root / data.PARTITION).write_bytes(part.read_bytes())
    info = data.download_real(tmp_path / "out", _real(root=str(root)))
    assert info["root"] == str(root) and info["num_images"] == 10
    _same_shards(raw, tmp_path / "out", tmp_path)


def test_wrong_files_say_what_to_do(raw: Path, tmp_path: Path):
    mine = tmp_path / "img_align_celeba.zip"
    mine.write_bytes((raw / data.ARCHIVE).read_bytes())  # not the real CelebA: md5 differs
    part = str(raw / data.PARTITION)
    with pytest.raises(DownloadError, match=r"md5 .* expected 00d2c5bc.*gan\.data\.verify_md5: false"):
        data.download_real(tmp_path / "o1", _real(archive=str(mine), partition=part))
    with pytest.raises(DownloadError, match=r"(?s)checksum mismatch.*gan\.data\.archive"):
        data.download_real(tmp_path / "o2", _real(archive=mine.as_uri(), partition=part, cache_dir=str(tmp_path / "c")))
    info = data.download_real(tmp_path / "o3", _real(archive=str(mine), partition=part, verify_md5=False))
    assert info["md5"]["archive"] == md5_file(mine)  # a re-packed copy is accepted and its md5 recorded
    not_celeba = tmp_path / "other.zip"
    with zipfile.ZipFile(not_celeba, "w") as zf:
        zf.writestr("LA/readme.txt", "hello")
    with pytest.raises(DataError, match="other.zip: no img_align_celeba/\\*.jpg members"):
        data.download_real(tmp_path / "o4", _real(archive=str(not_celeba), partition=part, verify_md5=False))


# ---------------------------------------------------------------- official formats, byte for byte

# torchvision.datasets.CelebA._load_csv, which reads list_eval_partition.txt (quoted):
#     with open(os.path.join(self.root, self.base_folder, filename)) as csv_file:
#         data = list(csv.reader(csv_file, delimiter=" ", skipinitialspace=True))
OFFICIAL_SPLIT = (162_770, 19_867, 19_962)  # images 000001-162770 train, -182637 valid, -202599 test


def test_the_official_partition_file_is_reproduced_byte_for_byte(tmp_path: Path):
    splits = [s for s, n in enumerate(OFFICIAL_SPLIT) for _ in range(n)]
    text = data.partition_text(splits)
    assert text.startswith("000001.jpg 0\r\n000002.jpg 0\r\n") and text.endswith("202599.jpg 2\r\n")
    assert "162770.jpg 0\r\n162771.jpg 1\r\n" in text and "182637.jpg 1\r\n182638.jpg 2\r\n" in text
    path = tmp_path / data.PARTITION
    path.write_bytes(text.encode("ascii"))
    assert md5_file(path) == data.CELEBA_FILES["partition"][1] == "d32c9cbf5e040fd4025c592c306e6668"
    assert data.count_by_split(data.read_partition(path)) == dict(zip(data.SPLITS, OFFICIAL_SPLIT))


def test_the_synthetic_partition_is_in_the_official_format_and_torchvision_reads_it(raw: Path):
    import csv

    blob = (raw / data.PARTITION).read_bytes()
    assert blob == data.partition_text([0] * 8 + [1] + [2]).encode("ascii")
    assert blob.startswith(b"000001.jpg 0\r\n000002.jpg 0\r\n") and blob.endswith(b"000010.jpg 2\r\n")
    with open(raw / data.PARTITION) as csv_file:  # exactly as torchvision's _load_csv opens and parses it
        rows = list(csv.reader(csv_file, delimiter=" ", skipinitialspace=True))
    assert rows[0] == ["000001.jpg", "0"] and [int(r[1]) for r in rows] == [0] * 8 + [1] + [2]


def test_a_partition_byte_that_is_not_utf8_names_file_and_line(raw: Path, tmp_path: Path):
    part = raw / data.PARTITION
    lines = part.read_bytes().split(b"\r\n")
    lines[2] = b"000003\xe9.jpg 0"  # Latin-1 e-acute
    part.write_bytes(b"\r\n".join(lines))
    with pytest.raises(DataError, match=r"list_eval_partition.txt:3: not UTF-8 text: byte 0xe9 at column 7"):
        data.read_partition(part)
    with pytest.raises(DataError, match=r"list_eval_partition.txt:3: not UTF-8"):
        features.build_shards(raw, tmp_path / "f", 178, 64, 100, "error")


# ---------------------------------------------------------------- Google Drive through gdown (faked, no network)

class _FakeGdown:
    """Stands in for the gdown module: records calls and writes what Drive would have sent."""

    def __init__(self, bodies: dict[str, bytes] | None = None, error: Exception | None = None) -> None:
        self.bodies, self.error, self.calls = bodies or {}, error, []

    def download(self, *, id: str, output: str, quiet: bool, resume: bool, retries: int) -> str:  # noqa: A002
        self.calls.append(id)
        if self.error is not None:
            raise self.error
        Path(output).write_bytes(self.bodies[id])
        return output


DRIVE_PAGE = (b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
              b"<p>Google Drive can't scan this file for viruses.</p><form id=\"download-form\" "
              b"action=\"https://drive.usercontent.google.com/download\"></form></body></html>")


@pytest.fixture
def drive_ids(fake_celeba, monkeypatch) -> dict[str, bytes]:
    """torchvision's Drive ids (the production table), with md5s of the tiny fake's bytes."""
    archive, part = fake_celeba
    ids = {"archive": "0B7EVK8r0v71pZjFTYXZWM3FlRnM", "partition": "0B7EVK8r0v71pY0NSMzRuSXJEVkk"}
    for key, path in (("archive", archive), ("partition", part)):
        monkeypatch.setitem(data.CELEBA_FILES, key, (ids[key], md5_file(path), path.name))
    return {ids["archive"]: archive.read_bytes(), ids["partition"]: part.read_bytes()}


def test_without_gdown_the_stage_stops_first_and_says_which_file_goes_where(drive_ids, tmp_path: Path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gdown", None)  # import gdown -> ImportError
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as err:
        data.download_real(tmp_path / "out", _real(cache_dir=str(cache)))
    msg = str(err.value)
    assert "gdown==6.5.1" in msg and "pip install -e '.[real]'" in msg
    for name, key in ((data.ARCHIVE, "gan.data.archive"), (data.PARTITION, "gan.data.partition")):
        assert f"put it at {cache / name} (gan.data.cache_dir)" in msg and f"set {key}: /path/to/{name}" in msg
    assert "https://drive.google.com/file/d/0B7EVK8r0v71pZjFTYXZWM3FlRnM/view" in msg
    assert not cache.exists() and not (tmp_path / "out").exists()  # stopped before any work
    # following the message: the zip put into the cache is used, only the partition file is still asked for
    cache.mkdir()
    (cache / data.ARCHIVE).write_bytes(drive_ids["0B7EVK8r0v71pZjFTYXZWM3FlRnM"])
    with pytest.raises(DownloadError) as err:
        data.download_real(tmp_path / "out", _real(cache_dir=str(cache)))
    assert data.PARTITION in str(err.value) and f"{cache / data.ARCHIVE}" not in str(err.value)
    (cache / data.PARTITION).write_bytes(drive_ids["0B7EVK8r0v71pY0NSMzRuSXJEVkk"])
    info = data.download_real(tmp_path / "out", _real(cache_dir=str(cache)))  # no gdown needed any more
    assert info["counts"] == {"train": 8, "valid": 1, "test": 1}


def test_gdown_fetches_torchvisions_drive_files_once(raw: Path, drive_ids, tmp_path: Path, monkeypatch):
    import sys

    fake = _FakeGdown(drive_ids)
    monkeypatch.setitem(sys.modules, "gdown", fake)
    cache = tmp_path / "cache"
    for run in ("first", "second"):
        info = data.download_real(tmp_path / run, _real(cache_dir=str(cache)))
    assert fake.calls == ["0B7EVK8r0v71pZjFTYXZWM3FlRnM", "0B7EVK8r0v71pY0NSMzRuSXJEVkk"]  # cached the second time
    assert Path(info["archive"]) == (cache / data.ARCHIVE).resolve()
    _same_shards(raw, tmp_path / "second", tmp_path)
    # a Drive share link given as gan.data.archive goes through gdown too, with the id in the link
    fake.bodies["1AbC-dEf_123"] = fake.bodies["0B7EVK8r0v71pZjFTYXZWM3FlRnM"]
    link = "https://drive.google.com/file/d/1AbC-dEf_123/view?usp=sharing"
    data.download_real(tmp_path / "third", _real(archive=link, cache_dir=str(tmp_path / "cache2")))
    assert fake.calls[2:] == ["1AbC-dEf_123", "0B7EVK8r0v71pY0NSMzRuSXJEVkk"]
    assert data.drive_id("https://drive.google.com/uc?export=download&id=0B7EVK8r0v71pZjFTYXZWM3FlRnM") == \
        "0B7EVK8r0v71pZjFTYXZWM3FlRnM"


def test_an_html_page_from_drive_is_detected_deleted_and_refused(drive_ids, tmp_path: Path, monkeypatch):
    import sys

    fake = _FakeGdown({**drive_ids, "0B7EVK8r0v71pZjFTYXZWM3FlRnM": DRIVE_PAGE})
    monkeypatch.setitem(sys.modules, "gdown", fake)
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"got an HTML page, not img_align_celeba.zip") as err:
        data.download_real(tmp_path / "out", _real(cache_dir=str(cache)))
    assert f"put it at {cache / data.ARCHIVE} (gan.data.cache_dir)" in str(err.value)
    assert "set gan.data.archive: /path/to/img_align_celeba.zip" in str(err.value)
    assert not (cache / data.ARCHIVE).exists() and not (tmp_path / "out").exists()
    # the same page even when md5 checks are off, and gdown's own refusal, say the same
    with pytest.raises(DownloadError, match="got an HTML page"):
        data.download_real(tmp_path / "out", _real(cache_dir=str(cache), verify_md5=False))
    refusing = _FakeGdown(error=RuntimeError("Too many users have viewed or downloaded this file recently."))
    monkeypatch.setitem(sys.modules, "gdown", refusing)
    with pytest.raises(DownloadError, match=r"(?s)gdown could not fetch .*Too many users.*gan\.data\.archive"):
        data.download_real(tmp_path / "out", _real(cache_dir=str(cache)))


def test_an_html_page_from_a_url_or_on_disk_is_refused(drive_ids, tmp_path: Path):
    import http.server
    import threading

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(DRIVE_PAGE)))
            self.end_headers()
            self.wfile.write(DRIVE_PAGE)

        def log_message(self, *args):
            pass  # keep the test output free of the server's access log

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    cache, part = tmp_path / "cache", tmp_path / data.PARTITION
    part.write_bytes(drive_ids["0B7EVK8r0v71pY0NSMzRuSXJEVkk"])
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{data.ARCHIVE}"
        with pytest.raises(DownloadError, match=r"got an HTML page, not img_align_celeba.zip.*deleted"):
            data.download_real(tmp_path / "o1", _real(archive=url, partition=str(part), cache_dir=str(cache)))
        assert not (cache / data.ARCHIVE).exists()
    finally:
        httpd.shutdown()
    saved = tmp_path / "saved" / data.ARCHIVE  # a browser's "Save as" of the confirmation page
    saved.parent.mkdir()
    saved.write_bytes(DRIVE_PAGE)
    with pytest.raises(DownloadError, match=r"gan.data.archive .*img_align_celeba.zip: got an HTML page"):
        data.download_real(tmp_path / "o2", _real(archive=str(saved), partition=str(part), verify_md5=False))
    assert saved.exists()  # the user's own file is never deleted


# ---------------------------------------------------------------- fidelity

def test_fallback_fid_ranks_real_images_above_noise(raw: Path, tmp_path: Path):
    data.synthesize(tmp_path / "more", 60, seed=5)
    features.build_shards(tmp_path / "more", tmp_path / "f", 178, 64, 100, "error")
    x = features.load_split(tmp_path / "f", "train")  # 48 images
    settings = fidelity.extractor_settings(None)
    assert settings == {"feature_extractor": fidelity.FALLBACK, "comparable_to_published": False}
    meta = fidelity.cache_real_statistics(x[:24], tmp_path / "stats", settings, False, {"real_split": "train"})
    assert meta["num_real"] == 24
    same = fidelity.fid_kid(x[24:], tmp_path / "stats", 12, False)
    noise = fidelity.fid_kid(torch.randint(0, 256, (24, 3, 64, 64), dtype=torch.uint8), tmp_path / "stats", 12, False)
    assert same["fid"] < noise["fid"] / 3 and same["kid_mean"] < noise["kid_mean"]
    # the bootstrap's FID at unit weights is torch-fidelity's FID, from the same features
    f_same, real = fidelity.features(x[24:], tmp_path / "stats", False)
    assert f_same.shape == (24, 320) and real.shape == (24, 320)
    assert fidelity.FIDBootstrap(f_same, real)(np.ones((1, 24)))[0] == pytest.approx(same["fid"], rel=1e-6)
    from repropipe.gan.evaluate import fid_uncertainty

    f_noise = fidelity.features(torch.randint(0, 256, (24, 3, 64, 64), dtype=torch.uint8), tmp_path / "stats", False)[0]
    u = fid_uncertainty({"real": (same["fid"], f_same, real), "noise": (noise["fid"], f_noise, real)}, "real", 0)
    assert u["real"]["ci_low"] < same["fid"] < u["real"]["ci_high"] < u["noise"]["ci_low"]
    t = u["noise"]["vs_reference"]
    assert t["significant"] and t["diff"] > 0 and t["ci_low"] > 0 and "vs_reference" not in u["real"]


def test_missing_inception_weights_path_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="feature_extractor_weights_path"):
        fidelity.extractor_settings(str(tmp_path / "nope.pth"))


# ---------------------------------------------------------------- tiny end to end

def test_tiny_pipeline_trains_and_reports(project: Path, monkeypatch):
    from repropipe.stages import load_all, run_stage

    monkeypatch.chdir(project)
    stages = load_all()
    for name in ("gan_download", "gan_features", "gan_train", "gan_real_stats", "gan_evaluate"):
        run_stage(stages[name], project / "params.yaml")
    m = branch_results(project, "gan")
    assert m["comparable_to_published"] is False and m["feature_extractor"] == fidelity.FALLBACK
    assert json.loads((project / "results/gan/provenance.json").read_text())["data_source"] == "synthetic"
    assert m["train_steps"] == 4
    for key in ("fid/trained", "fid/trained_isir", "fid/trained_isir_uncalibrated", "fid/untrained", "kid/trained",
                "kid/trained_isir", "isir_calibration/a", "isir_calibration/b", "isir_calibration/auc"):
        assert np.isfinite(m[key]), key
    assert m["isir_calibration/n_real"] == m["isir_calibration/n_fake"] == 4  # the whole valid split (40 images: 4)
    heldout = {k.rsplit("/t=", 1)[1]: v for k, v in m.items() if k.startswith("isir_calibration/heldout_fid/t=")}
    assert list(heldout) == ["0", "0.1", "0.25", "0.5", "0.75", "1"]
    assert min(heldout.values()) == heldout[f"{m['isir_calibration/temperature']:g}"]
    section = json.loads((project / "results/gan/section.json").read_text())
    per_iteration = next(t for t in section["tables"] if t["title"].startswith("I-SIR per iteration"))
    assert len(per_iteration["rows"]) == 2  # isir.iterations in the tiny params
    assert [m["isir_changed_fraction/last_iteration"], m["isir_uncalibrated_changed_fraction/last_iteration"],
            m["isir_ess/last_iteration"], m["isir_uncalibrated_ess/last_iteration"]] == per_iteration["rows"][-1][1:]
    traces = ("isir_changed_fraction", "isir_uncalibrated_changed_fraction", "isir_ess", "isir_uncalibrated_ess")
    assert [list(row[1:]) for row in per_iteration["rows"]] == [list(v) for v in zip(*(m[k] for k in traces))]
    assert all(1.0 <= e <= 4.0 for e in m["isir_ess"])  # 3 particles + the current one
    run = project / "results/gan/models/wgan_gp_64_generator"
    ckpt = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert set(ckpt["state"]) == {"G", "D", "opt_G", "opt_D", "precision"} and ckpt["global_step"] == 4
    assert ckpt["state"]["precision"]["name"] == "32"
    assert (run / "samples/step_000002.png").exists()
    assert section["synthetic"] is True and "NOT comparable" in " ".join(section["notes"])
    for name in ("trained", "trained_isir", "untrained"):  # intervals on every FID and KID (issue 17)
        assert m[f"fid_ci_low/{name}"] <= m[f"fid_ci_high/{name}"] and m[f"kid_ci_low/{name}"] <= m[f"kid/{name}"]
    assert 0.0 <= m["fid_p_vs_ref/trained_isir"] <= 1.0 and "fid_p_vs_ref/trained" not in m
    assert "independent bootstrap over generated samples" in json.dumps(section)


# ---------------------------------------------------------------- real-mode rehearsal

@pytest.mark.e2e
def test_real_mode_rehearsal_from_a_local_celeba_copy(tmp_path: Path, monkeypatch):
    """``gan.source: real`` on CelebA's two files in the official layout, read in place (no network):
    download -> features -> train (tiny) -> real-stats -> evaluate, through the production code; only
    torchvision's md5 table is substituted (the tiny zip cannot have the real zip's md5)."""
    import copy

    from PIL import Image

    from repropipe.stages import load_all, run_stage

    downloads = tmp_path / "downloads"  # where a user keeps what they fetched by hand
    downloads.mkdir()
    rng, n = np.random.default_rng(7), 30
    with zipfile.ZipFile(downloads / data.ARCHIVE, "w") as zf:
        for i in range(n):
            buf = pyio.BytesIO()
            data.draw_face(rng).save(buf, format="JPEG", quality=90)
            zf.writestr(f"img_align_celeba/{i + 1:06d}.jpg", buf.getvalue())
    with zipfile.ZipFile(downloads / data.ARCHIVE) as zf, Image.open(pyio.BytesIO(zf.read("img_align_celeba/000001.jpg"))) as im:
        assert im.size == (178, 218) and im.format == "JPEG"  # CelebA's aligned-and-cropped images
    (downloads / data.PARTITION).write_bytes(
        "".join(f"{i + 1:06d}.jpg {0 if i < 24 else 1 if i < 27 else 2}\r\n" for i in range(n)).encode())
    for key, name in (("archive", data.ARCHIVE), ("partition", data.PARTITION)):
        gid = data.CELEBA_FILES[key][0]
        monkeypatch.setitem(data.CELEBA_FILES, key, (gid, md5_file(downloads / name), name))

    params = copy.deepcopy(TINY_PARAMS)
    params["gan"]["source"] = "real"
    params["gan"]["data"].update(archive=str(downloads / data.ARCHIVE), partition=str(downloads / data.PARTITION))
    project = copy_project(tmp_path / "proj", params)
    monkeypatch.chdir(project)
    stages = load_all()
    for name in ("gan_download", "gan_features", "gan_train", "gan_real_stats", "gan_evaluate"):
        run_stage(stages[name], project / "params.yaml")
    assert sorted(p.name for p in (project / "data/raw/gan").iterdir()) == [data.SOURCE_FILE]  # read in place
    source = json.loads((project / "data/raw/gan" / data.SOURCE_FILE).read_text())
    assert source["source"] == "real" and source["archive"] == str(downloads / data.ARCHIVE)
    assert source["counts"] == {"train": 24, "valid": 3, "test": 3}
    index = features.read_index(project / "data/features/gan")
    assert index["splits"]["train"]["count"] == 24 and index["skipped"] == {"missing": [], "unlisted": [], "corrupt": []}
    m = branch_results(project, "gan")
    assert m["data_source"] == "real"
    assert json.loads((project / "results/gan/provenance.json").read_text())["data_source"] == "real"
    for key in ("fid/trained", "fid/trained_isir", "kid/trained", "isir_calibration/a"):
        assert np.isfinite(m[key]), key
    assert m["isir_calibration/n_real"] == 3  # calibrated on the 3 held-out valid images of the partition
    section = json.loads((project / "results/gan/section.json").read_text())
    assert section["synthetic"] is False


@pytest.mark.parametrize("comparable", [False, True])
def test_section_has_the_anchor_table_measured_beside_published(comparable):
    """From small fake Results: the trained WGAN-GP's FID (plain and I-SIR) beside the published FIDs, and the
    fallback extractor named as not comparable."""
    from types import SimpleNamespace

    from repropipe.gan.config import ModelConfig
    from repropipe.gan.evaluate import Results
    from repropipe.gan.isir import Calibration, TemperatureChoice
    from repropipe.gan.section import build
    from repropipe.report.section import ANCHOR_TITLE

    def system(fid: float) -> dict:
        return {"fid": fid, "kid_mean": 0.01, "kid_std": 0.001}

    trained = {"plain": system(40.0), "isir": system(36.0), "isir_uncalibrated": system(44.0),
               "isir_changed_fraction": [0.5], "isir_uncalibrated_changed_fraction": [0.25], "isir_ess": [2.5],
               "isir_uncalibrated_ess": [1.5]}
    fid = {n: {"value": v, "ci_low": v - 2.0, "ci_high": v + 2.0} for n, v in
           (("untrained", 300.0), ("trained", 40.0), ("trained_isir", 36.0), ("trained_isir_uncalibrated", 44.0))}
    meta = {"data_source": "synthetic", "comparable_to_published": comparable, "num_real": 64, "real_split": "test",
            "feature_extractor": "inception-v3-compat" if comparable else "fallback-convnet"}
    choice = TemperatureChoice(0.0, [0.0, 1.0], [7.5, 9.0], [1.0, 0.2])
    res = Results(trained=trained, untrained={"plain": system(300.0)}, calibration=Calibration(1.0, 0.0, 32, 32, 0.75),
                  temperature=choice,
                  fid=fid, curves={"loss_d": [(1, 0.5), (20, 0.1)]}, meta=meta,
                  model=ModelConfig("wgan_gp_g64", "wgan_gp_d64", nz=16, ngf=8, ndf=8),
                  cfg=SimpleNamespace(num_samples=64, calibration=SimpleNamespace(split="valid"),
                                      isir=SimpleNamespace(particles=3)))
    sec = build(res)
    temps = next(t for t in sec.tables if t.title.startswith("Temperature"))
    assert temps.rows == [[0.0, 7.5, 1.0, "yes"], [1.0, 9.0, 0.2, ""]]
    assert any("chose t = 0 " in n and "cannot lower FID" in n for n in sec.notes)
    assert any("not an effect of the critic" in n for n in sec.notes)  # t = 0: no claim that I-SIR lowered FID
    assert not any("calibrated critic lowered" in n for n in sec.notes)
    tempered = build(dataclasses.replace(res, temperature=TemperatureChoice(1.0, [0.0, 1.0], [7.5, 7.0], [1.0, 0.2])))
    assert "I-SIR with the calibrated critic lowered FID by 4 against plain sampling" in " ".join(tempered.notes)
    assert any("chose t = 1 " in n and "7.5 at t = 0" in n for n in tempered.notes)
    assert "5.71" in sec.tables[0].anchor  # the existing tables stay first
    t = sec.tables[-1]
    assert t.title.startswith(ANCHOR_TITLE) and "not comparable" in t.title
    assert ("fallback extractor 'fallback-convnet'" in t.title) is not comparable
    plain, isir = t.rows
    assert plain[0].startswith("WGAN-GP (ngf=8, ndf=8)") and "z ~ N(0, I)" in plain[0]
    assert plain[2] == "40.0000 [38.0000, 42.0000] (20 steps, 64 samples)" and plain[3] == "published: 5.71"
    assert "SNGAN" in plain[6] and "CelebA" in plain[4]
    assert isir[2].startswith("36.0000 [34.0000, 38.0000]") and isir[3] == "published: 22.7 (28.4 with plain sampling)"
