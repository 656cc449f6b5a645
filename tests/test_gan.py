"""GAN branch: losses, I-SIR, data readers and bad input, the fidelity cache, a tiny end-to-end run."""

from __future__ import annotations

import io as pyio
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from repropipe.download import DownloadError
from repropipe.gan import data, features, fidelity
from repropipe.gan.isir import isir_sample
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
    z, changed = isir_sample(3, 10, 4, 6, D, lambda z: z, batch_size=16, generator=torch.Generator().manual_seed(0))
    assert z.shape == (10, 6) and len(changed) == 3
    assert all(0.0 <= c <= 1.0 for c in changed)
    assert D.batches == [16, 16, 16, 2] * 3  # 10 rows x 5 particles per iteration, batched, no per-sample loop


def test_isir_moves_latents_towards_the_region_the_critic_prefers():
    n_z, g = 4, torch.Generator().manual_seed(1)
    D = _CountingCritic(lambda x: 3.0 * x[:, 0])  # G = identity; p*(z) has z_0 ~ N(3, 1)
    z, changed = isir_sample(10, 400, 20, n_z, D, lambda z: z, generator=g)
    assert z[:, 0].mean() > 2.3  # plain N(0, I) sampling would give ~0
    assert z[:, 1:].mean().abs() < 0.2 and (z[:, 1:].std() - 1).abs() < 0.15  # untouched coordinates stay N(0, 1)
    assert changed[0] > 0.9 and changed[-1] < changed[0]  # the first move almost always jumps, later ones less


def test_isir_with_a_flat_critic_keeps_the_prior_and_moves_at_rate_np_over_np_plus_1():
    z, changed = isir_sample(4, 2000, 3, 2, lambda x: torch.zeros(x.shape[0], 1), lambda z: z,
                             generator=torch.Generator().manual_seed(2))
    assert z.mean().abs() < 0.1 and (z.std() - 1).abs() < 0.1
    assert np.mean(changed) == pytest.approx(0.75, abs=0.03)


def test_isir_is_deterministic_given_its_generator():
    D = lambda x: x.sum(1, keepdim=True)  # noqa: E731
    a = isir_sample(2, 5, 3, 4, D, lambda z: z, generator=torch.Generator().manual_seed(3))
    b = isir_sample(2, 5, 3, 4, D, lambda z: z, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and a[1] == b[1]


# ---------------------------------------------------------------- data and bad input

@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return data.synthesize(tmp_path / "raw", 10, seed=0)


def test_synthetic_layout_matches_celeba(raw: Path):
    from PIL import Image

    names = sorted(p.name for p in (raw / data.IMG_DIR).iterdir())
    assert names[0] == "000001.jpg" and len(names) == 10
    with Image.open(raw / data.IMG_DIR / names[0]) as im:
        assert im.format == "JPEG" and im.size == (178, 218)
    entries = data.read_partition(raw / data.PARTITION)
    assert [e.split for e in entries] == [0] * 8 + [1] + [2]
    assert json.loads((raw / data.SOURCE_FILE).read_text())["source"] == "synthetic"


def test_shards_hold_center_cropped_64px_uint8_images(raw: Path, tmp_path: Path):
    index = features.build_shards(raw, tmp_path / "f", 178, 64, 5, "error")
    assert index["splits"]["train"] == {"count": 8, "shards": ["train-000.pt", "train-001.pt"]}
    x = features.load_split(tmp_path / "f", "train")
    assert x.dtype == torch.uint8 and x.shape == (8, 3, 64, 64)
    assert torch.equal(x[0], torch.from_numpy(data.load_image(raw / data.IMG_DIR / "000001.jpg", 178, 64)))


def test_corrupt_jpeg_is_named_or_skipped_and_counted(raw: Path, tmp_path: Path):
    bad = raw / data.IMG_DIR / "000003.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(DataError, match="000003.jpg: not a readable JPEG"):
        features.build_shards(raw, tmp_path / "f", 178, 64, 100, "error")
    index = features.build_shards(raw, tmp_path / "g", 178, 64, 100, "skip")
    assert index["skipped"]["corrupt"] == ["000003.jpg"] and index["splits"]["train"]["count"] == 7


def test_missing_image_is_named_or_skipped(raw: Path, tmp_path: Path):
    (raw / data.IMG_DIR / "000005.jpg").unlink()
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


def test_image_too_small_for_the_crop(raw: Path):
    from PIL import Image

    small = raw / data.IMG_DIR / "000001.jpg"
    Image.new("RGB", (100, 120)).save(small, format="JPEG")
    with pytest.raises(DataError, match="smaller than the 178x178 center crop"):
        data.load_image(small, 178, 64)


def _zip_of(raw: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted((raw / data.IMG_DIR).iterdir()):
            zf.write(p, f"{data.IMG_DIR}/{p.name}")
    return dest


def test_real_download_from_a_user_given_archive_is_verified_and_extracted(raw: Path, tmp_path: Path, monkeypatch):
    archive = _zip_of(raw, tmp_path / "img_align_celeba.zip")
    part = raw / data.PARTITION
    monkeypatch.setitem(data.CELEBA_FILES, "archive", ("x", md5_file(archive), "img_align_celeba.zip"))
    monkeypatch.setitem(data.CELEBA_FILES, "partition", ("y", md5_file(part), data.PARTITION))
    root = data.download_real(tmp_path / "real", str(archive), part.as_uri())
    assert len(list((root / data.IMG_DIR).iterdir())) == 10 and (root / data.PARTITION).exists()
    assert data.read_source(root)["source"] == "real" and not (root / ".download").exists()


def test_real_download_with_the_wrong_file_says_what_to_do(raw: Path, tmp_path: Path):
    archive = _zip_of(raw, tmp_path / "img_align_celeba.zip")  # not the real CelebA: md5 differs
    with pytest.raises(DownloadError, match=r"(?s)checksum mismatch.*gan\.data\.archive"):
        data.download_real(tmp_path / "real", str(archive), None)


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
    m = json.loads((project / "results/gan/metrics.json").read_text())
    assert m["comparable_to_published"] is False and m["feature_extractor"] == fidelity.FALLBACK
    assert m["provenance"]["data_source"] == "synthetic"
    assert len(m["isir_changed_fraction"]) == 2 and m["train_steps"] == 4
    for key in ("fid/trained", "fid/trained_isir", "fid/untrained", "kid/trained", "kid/trained_isir"):
        assert np.isfinite(m[key]), key
    run = project / "results/gan/models/wgan_gp_64_generator"
    ckpt = torch.load(run / "checkpoints/last.pt", weights_only=False)
    assert set(ckpt["state"]) == {"G", "D", "opt_G", "opt_D"} and ckpt["global_step"] == 4
    assert (run / "samples/step_000002.png").exists()
    section = json.loads((project / "results/gan/section.json").read_text())
    assert section["synthetic"] is True and "NOT comparable" in " ".join(section["notes"])
