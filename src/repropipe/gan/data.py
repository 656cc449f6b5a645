"""CelebA on disk: the real download, the synthetic stand-in, and the readers both share.

The layout is torchvision's: ``<root>/img_align_celeba/000001.jpg ...`` (178x218 JPEGs) and
``<root>/list_eval_partition.txt`` with lines ``000001.jpg 0`` (0 train, 1 valid, 2 test).

The synthetic set draws procedural faces in that exact format (face oval, hair, eyes, brows, nose,
mouth, skin/hair/background colours, small pose and scale changes, JPEG noise). The signal a
generator has to learn is the joint structure: a skin-coloured oval with two dark eyes at a fixed
vertical offset, a mouth below, hair framing the top, on a flat background.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repropipe import io
from repropipe.io import DataError

log = logging.getLogger("repropipe.gan")

IMG_DIR = "img_align_celeba"
PARTITION = "list_eval_partition.txt"
SOURCE_FILE = "SOURCE.json"
WIDTH, HEIGHT = 178, 218
SPLITS = {"train": 0, "valid": 1, "test": 2}

# torchvision.datasets.CelebA's file list: (Google Drive id, md5, name).
CELEBA_FILES = {
    "archive": ("0B7EVK8r0v71pZjFTYXZWM3FlRnM", "00d2c5bc6d35e252742224ab0c1e8fcb", "img_align_celeba.zip"),
    "partition": ("0B7EVK8r0v71pY0NSMzRuSXJEVkk", "d32c9cbf5e040fd4025c592c306e6668", PARTITION),
}
GDRIVE = "https://drive.google.com/uc?export=download&id={}"

SKIN = [(255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 134, 96), (141, 85, 60), (92, 58, 40)]
HAIR = [(20, 18, 16), (60, 40, 25), (110, 75, 40), (200, 160, 90), (150, 60, 30), (170, 170, 170)]


# ----------------------------------------------------------------------------------------------
# synthetic faces
# ----------------------------------------------------------------------------------------------

def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator, amount: float = 12.0) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.normal(0, amount), 0, 255)) for c in rgb)  # type: ignore[return-value]


def draw_face(rng: np.random.Generator) -> "Image.Image":
    """One 178x218 procedural face; every choice comes from ``rng``."""
    from PIL import Image, ImageDraw

    bg = tuple(int(v) for v in rng.integers(40, 230, size=3))
    img = Image.new("RGB", (WIDTH, HEIGHT), bg)
    d = ImageDraw.Draw(img)
    s = rng.uniform(0.85, 1.12)
    cx, cy = WIDTH / 2 + rng.normal(0, 5), HEIGHT * 0.55 + rng.normal(0, 5)
    fw, fh = 50 * s, 66 * s
    skin = _jitter(SKIN[rng.integers(len(SKIN))], rng)
    hair = _jitter(HAIR[rng.integers(len(HAIR))], rng, 8)
    shirt = tuple(int(v) for v in rng.integers(0, 255, size=3))
    hair_len = rng.uniform(0.3, 1.3)
    # shoulders and neck
    d.ellipse([cx - 2.0 * fw, cy + 1.05 * fh, cx + 2.0 * fw, cy + 2.6 * fh], fill=shirt)
    d.rectangle([cx - 0.4 * fw, cy + 0.6 * fh, cx + 0.4 * fw, cy + 1.2 * fh], fill=_jitter(skin, rng, 4))
    # hair behind the head, longer or shorter
    d.ellipse([cx - 1.2 * fw, cy - 1.25 * fh, cx + 1.2 * fw, cy + hair_len * fh], fill=hair)
    # face
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    # fringe
    d.chord([cx - 1.05 * fw, cy - 1.2 * fh, cx + 1.05 * fw, cy - rng.uniform(0.25, 0.55) * fh], 180, 360, fill=hair)
    # eyes, brows
    ey, ex = cy - 0.12 * fh, 0.4 * fw
    er = rng.uniform(0.11, 0.16) * fw
    iris = _jitter(HAIR[rng.integers(3)], rng, 20)
    for side in (-1, 1):
        x = cx + side * ex
        d.ellipse([x - 1.5 * er, ey - 0.8 * er, x + 1.5 * er, ey + 0.8 * er], fill=(245, 245, 240))
        d.ellipse([x - 0.7 * er, ey - 0.7 * er, x + 0.7 * er, ey + 0.7 * er], fill=iris)
        by = ey - 2.0 * er - rng.uniform(0, 0.05) * fh
        d.line([x - 1.7 * er, by + side * 0.0, x + 1.7 * er, by - rng.uniform(-2, 3)], fill=hair, width=max(2, int(er / 2)))
    # nose
    d.line([cx, ey + 0.1 * fh, cx - 0.06 * fw, cy + 0.28 * fh, cx + 0.04 * fw, cy + 0.3 * fh],
           fill=tuple(int(c * 0.8) for c in skin), width=2)
    # mouth: a smile (arc) or a closed mouth (ellipse)
    my, mw = cy + 0.52 * fh, rng.uniform(0.25, 0.42) * fw
    lips = _jitter((180, 70, 70), rng, 15)
    if rng.random() < 0.5:
        d.chord([cx - mw, my - 0.12 * fh, cx + mw, my + 0.12 * fh], 0, 180, fill=lips)
    else:
        d.ellipse([cx - mw, my - 0.04 * fh, cx + mw, my + 0.04 * fh], fill=lips)
    img = img.rotate(rng.normal(0, 4), resample=Image.BILINEAR, center=(cx, cy), fillcolor=bg)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 3, size=(HEIGHT, WIDTH, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def image_name(i: int) -> str:
    return f"{i + 1:06d}.jpg"


def synthesize(root: str | os.PathLike[str], num_images: int, seed: int, fractions: tuple[float, float] = (0.8, 0.1)) -> Path:
    """Write ``num_images`` faces plus a partition file (contiguous 0/1/2 blocks, as CelebA's is)."""
    from tqdm import tqdm

    root = Path(root)
    img_dir = root / IMG_DIR
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_train = int(round(num_images * fractions[0]))
    n_valid = int(round(num_images * fractions[1]))
    lines = []
    for i in tqdm(range(num_images), desc="synthetic faces", unit="img"):
        face = draw_face(rng)
        with io.atomic_path(img_dir / image_name(i)) as tmp:
            face.save(tmp, format="JPEG", quality=90)
        split = 0 if i < n_train else 1 if i < n_train + n_valid else 2
        lines.append(f"{image_name(i)} {split}\n")
    io.atomic_write_text(root / PARTITION, "".join(lines))
    write_source(root, {"source": "synthetic", "num_images": num_images, "seed": seed,
                        "generator": "repropipe.gan.data.draw_face"})
    log.info("event=synthesized root=%s images=%d", root, num_images)
    return root


def write_source(root: Path, info: dict[str, Any]) -> None:
    io.atomic_write_json(root / SOURCE_FILE, info)


def read_source(root: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(root) / SOURCE_FILE
    if not path.exists():
        return {"source": "unknown (no SOURCE.json beside the images)"}
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------------------------
# real CelebA
# ----------------------------------------------------------------------------------------------

def _as_url(location: str) -> str:
    """A local path becomes a file:// URL so fetch verifies and copies it the same way."""
    if "://" in location:
        return location
    return Path(location).expanduser().resolve().as_uri()


def download_real(root: str | os.PathLike[str], archive: str | None, partition: str | None) -> Path:
    """Fetch and verify img_align_celeba.zip and list_eval_partition.txt (torchvision's md5 sums).

    ``archive``/``partition`` may be a local path or a URL of a copy the user already has; when
    absent the Google Drive files torchvision uses are tried, which Drive often refuses to
    serve to scripts (a quota page arrives instead and the md5 check fails).
    """
    from repropipe.download import DownloadError, fetch

    root = Path(root)
    staging = root / ".download"
    got: dict[str, Path] = {}
    for key, location in (("archive", archive), ("partition", partition)):
        gid, md5, name = CELEBA_FILES[key]
        url = _as_url(location) if location else GDRIVE.format(gid)
        try:
            got[key] = fetch(url, staging / name, md5=md5)
        except DownloadError as exc:
            raise DownloadError(
                f"CelebA {name}: {exc}\n  Google Drive often refuses scripted downloads. Download {name} "
                f"yourself (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, 'Align&Cropped Images'; md5 {md5}) "
                f"and set gan.data.{key} in params.yaml to its path or URL.") from exc
    _extract(got["archive"], root)
    shutil.copyfile(got["partition"], root / PARTITION)
    write_source(root, {"source": "real", "archive": str(archive or GDRIVE.format(CELEBA_FILES['archive'][0])),
                        "md5": {k: CELEBA_FILES[k][1] for k in CELEBA_FILES}})
    shutil.rmtree(staging, ignore_errors=True)
    return root


def _extract(archive: Path, root: Path) -> None:
    """Unzip into a temporary folder, then rename: a killed extraction leaves no half folder."""
    tmp = root / ".extract.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
    except zipfile.BadZipFile as exc:
        raise DataError(archive, f"not a readable zip archive ({exc})") from exc
    found = tmp / IMG_DIR
    if not found.is_dir():
        raise DataError(archive, f"archive has no {IMG_DIR}/ folder at its top level")
    dest = root / IMG_DIR
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(found, dest)
    shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# readers shared by both sources
# ----------------------------------------------------------------------------------------------

@dataclass
class Entry:
    name: str
    split: int


def read_partition(path: str | os.PathLike[str]) -> list[Entry]:
    """Parse list_eval_partition.txt; a malformed line is a DataError naming file and line."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "partition file is missing (expected lines like '000001.jpg 0')")
    entries, seen = [], set()
    for no, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2") or not parts[0].lower().endswith(".jpg"):
            raise DataError(path, f"expected '<image>.jpg <0|1|2>', got {raw!r}", line=no)
        if parts[0] in seen:
            raise DataError(path, f"image {parts[0]} listed twice", line=no)
        seen.add(parts[0])
        entries.append(Entry(parts[0], int(parts[1])))
    if not entries:
        raise DataError(path, "partition file lists no images")
    return entries


def load_image(path: Path, crop: int, size: int) -> np.ndarray:
    """Center crop ``crop`` x ``crop`` and resize to ``size``: uint8 [3, size, size]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(path, f"not a readable JPEG ({exc})") from exc
    w, h = im.size
    if w < crop or h < crop:
        raise DataError(path, f"image is {w}x{h}, smaller than the {crop}x{crop} center crop")
    left, top = (w - crop) // 2, (h - crop) // 2
    im = im.crop((left, top, left + crop, top + crop)).resize((size, size), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


def check_layout(root: Path, entries: list[Entry], on_bad: str) -> tuple[list[Entry], dict[str, list[str]]]:
    """Partition and folder must agree; mismatches are errors or skipped-and-counted (``on_bad``)."""
    img_dir = root / IMG_DIR
    if not img_dir.is_dir():
        raise DataError(img_dir, "image folder is missing")
    on_disk = {p.name for p in img_dir.iterdir() if p.suffix.lower() == ".jpg"}
    listed = {e.name for e in entries}
    missing = sorted(listed - on_disk)
    unlisted = sorted(on_disk - listed)
    if on_bad == "error":
        if missing:
            raise DataError(root / PARTITION, f"{len(missing)} listed image(s) missing from {img_dir}, "
                            f"first {missing[0]}; set gan.features.on_bad_image: skip to skip them")
        if unlisted:
            raise DataError(root / PARTITION, f"does not match the images: {len(unlisted)} image(s) in {img_dir} "
                            f"are not listed, first {unlisted[0]}")
    keep = [e for e in entries if e.name in on_disk]
    return keep, {"missing": missing, "unlisted": unlisted}


def count_by_split(entries: list[Entry]) -> dict[str, int]:
    return {name: sum(e.split == code for e in entries) for name, code in SPLITS.items()}


