"""CelebA on disk: the real download, the synthetic stand-in, and the readers both share.

CelebA's layout is torchvision's: ``img_align_celeba.zip`` holding ``img_align_celeba/000001.jpg ...``
(202,599 JPEGs of 178x218) and ``list_eval_partition.txt`` with CRLF-terminated lines ``000001.jpg 0``
(0 train, 1 valid, 2 test): :func:`partition_text` writing the official split reproduces torchvision's
md5 of that file.

The download stage's output ``data/raw/gan`` is small, whatever the source (raw outputs are archives
or shards, never 200k loose files that DVC would hash and copy into its cache):

* ``source: real``: only ``source.json``, pointing at the zip and partition file outside the tracked
  outputs: downloaded into ``gan.data.cache_dir`` (kept between runs, never fetched twice), or the
  user's own copy (``gan.data.archive``, read in place), or an extracted tree (``gan.data.root``);
  with md5s and per-split counts, so a different archive is a visible change.
* ``source: synthetic``: ``img_align_celeba.zip`` + ``list_eval_partition.txt`` in the real layout,
  and the same ``source.json`` pointing at them (relative paths).

:func:`open_source` turns ``source.json`` into an :class:`ImageSource` (a zip read in place through
one open handle, or a directory) plus the partition file, so the features stage reads synthetic
and real data with the same code.

The synthetic set draws procedural faces (face oval, hair, eyes, brows, nose, mouth,
skin/hair/background colours, small pose and scale changes, JPEG noise). The signal a generator
has to learn is the joint structure: a skin-coloured oval with two dark eyes at a fixed vertical
offset, a mouth below, hair framing the top, on a flat background.
"""

from __future__ import annotations

import functools
import io as _io
import logging
import os
import re
import urllib.parse
import zipfile
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repropipe import io
from repropipe.download import DownloadError, fetch
from repropipe.gan.config import DataConfig
from repropipe.io import DataError

log = logging.getLogger("repropipe.gan")

IMG_DIR = "img_align_celeba"
ARCHIVE = "img_align_celeba.zip"
PARTITION = "list_eval_partition.txt"
SOURCE_FILE = "source.json"
WIDTH, HEIGHT = 178, 218
SPLITS = {"train": 0, "valid": 1, "test": 2}

# torchvision.datasets.CelebA's file list: (Google Drive id, md5, name).
CELEBA_FILES = {
    "archive": ("0B7EVK8r0v71pZjFTYXZWM3FlRnM", "00d2c5bc6d35e252742224ab0c1e8fcb", ARCHIVE),
    "partition": ("0B7EVK8r0v71pY0NSMzRuSXJEVkk", "d32c9cbf5e040fd4025c592c306e6668", PARTITION),
}
DRIVE_VIEW = "https://drive.google.com/file/d/{}/view"
DRIVE_FOLDER = {"archive": "folder Img, 'Align&Cropped Images'", "partition": "folder Eval"}
CELEBA_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
GDOWN_PIN = "gdown==6.5.1"  # as in pyproject's [real] extra

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
    """Write ``num_images`` faces as ``img_align_celeba.zip`` plus a partition file (contiguous 0/1/2
    blocks, as CelebA's is) and ``source.json``: three files whatever ``num_images`` is."""
    from tqdm import tqdm

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_train = int(round(num_images * fractions[0]))
    n_valid = int(round(num_images * fractions[1]))
    splits = [0 if i < n_train else 1 if i < n_train + n_valid else 2 for i in range(num_images)]
    with io.atomic_path(root / ARCHIVE) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for i in tqdm(range(num_images), desc="synthetic faces", unit="img"):
            buf = _io.BytesIO()
            draw_face(rng).save(buf, format="JPEG", quality=90)
            # a fixed timestamp: the same seed gives the same zip, byte for byte
            zf.writestr(zipfile.ZipInfo(f"{IMG_DIR}/{image_name(i)}", date_time=(2015, 1, 1, 0, 0, 0)), buf.getvalue())
    io.atomic_write_bytes(root / PARTITION, partition_text(splits).encode("ascii"))
    write_source(root, {"source": "synthetic", "archive": ARCHIVE, "partition": PARTITION,
                        "md5": {"archive": io.md5_file(root / ARCHIVE), "partition": io.md5_file(root / PARTITION)},
                        "counts": count_by_split(read_partition(root / PARTITION)), "num_images": num_images,
                        "seed": seed, "generator": "repropipe.gan.data.draw_face"})
    log.info("event=synthesized root=%s images=%d", root, num_images)
    return root


def write_source(root: Path, info: dict[str, Any]) -> None:
    io.atomic_write_json(Path(root) / SOURCE_FILE, info)


def read_source(root: str | os.PathLike[str]) -> dict[str, Any]:
    return io.read_json(Path(root) / SOURCE_FILE, "missing; run `python -m repropipe gan download` first")


# ----------------------------------------------------------------------------------------------
# image sources: the zip read in place, or an extracted tree
# ----------------------------------------------------------------------------------------------

class ImageSource(ABC):
    """The JPEGs of ``img_align_celeba/`` by file name (``000001.jpg``), wherever they live."""

    description = ""

    @abstractmethod
    def names(self) -> set[str]: ...

    @abstractmethod
    def read_bytes(self, name: str) -> bytes: ...

    @abstractmethod
    def where(self, name: str) -> str:
        """A path a human can find the image at, for error messages."""


class ZipImages(ImageSource):
    """``img_align_celeba.zip`` read without extracting, through one open handle.

    Members are found by their folder name, so a zip that nests the folder (Kaggle's copy has
    ``img_align_celeba/img_align_celeba/``) works too.
    """

    def __init__(self, archive: str | os.PathLike[str]) -> None:
        self.archive = Path(archive)
        self.description = f"archive {self.archive}"
        self.zf = io.open_zip(self.archive)
        self.members: dict[str, str] = {}
        for member in self.zf.namelist():
            folder, _, name = member.rpartition("/")
            if folder.rsplit("/", 1)[-1] == IMG_DIR and name.lower().endswith(".jpg"):
                if name in self.members:
                    raise DataError(self.archive, f"holds {name} twice ({self.members[name]} and {member})")
                self.members[name] = member
        if not self.members:
            raise DataError(self.archive, f"no {IMG_DIR}/*.jpg members; is this CelebA's {ARCHIVE}?")

    def names(self) -> set[str]:
        return set(self.members)

    def read_bytes(self, name: str) -> bytes:
        try:
            return self.zf.read(self.members[name])
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise DataError(self.where(name), f"unreadable zip member ({exc})") from exc

    def where(self, name: str) -> str:
        return f"{self.archive}!{self.members.get(name, IMG_DIR + '/' + name)}"


class DirImages(ImageSource):
    """An extracted tree: ``<root>/img_align_celeba/*.jpg``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.folder = self.root / IMG_DIR
        self.description = f"directory {self.folder}"
        if not self.folder.is_dir():
            raise DataError(self.folder, "image folder is missing")

    def names(self) -> set[str]:
        return {p.name for p in self.folder.iterdir() if p.suffix.lower() == ".jpg"}

    def read_bytes(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()

    def where(self, name: str) -> str:
        return str(self.folder / name)


@dataclass
class Opened:
    """What the features stage reads: the images, the partition file, and the provenance."""

    images: ImageSource
    partition: Path
    info: dict[str, Any]


def _resolve(raw: Path, location: str) -> Path:
    path = Path(location).expanduser()
    return path if path.is_absolute() else raw / path


def open_source(raw_dir: str | os.PathLike[str]) -> Opened:
    """The images behind the download stage's output (its ``source.json``; see module docstring)."""
    raw = Path(raw_dir)
    info = read_source(raw)
    if info.get("root"):
        root = _resolve(raw, info["root"])
        images: ImageSource = DirImages(root)
        partition = _resolve(raw, info.get("partition") or str(root / PARTITION))
    elif info.get("archive"):
        images = ZipImages(_resolve(raw, info["archive"]))
        partition = _resolve(raw, info.get("partition") or PARTITION)
    else:
        raise DataError(raw / SOURCE_FILE, "names neither an archive nor a root; re-run the gan_download stage")
    return Opened(images, partition, info)


# ----------------------------------------------------------------------------------------------
# real CelebA
# ----------------------------------------------------------------------------------------------

def _is_url(location: str) -> bool:
    return "://" in location


def drive_id(location: str | None) -> str | None:
    """The Google Drive file id in a Drive link (``/file/d/<id>/...`` or ``?id=<id>``), else None."""
    if not location:
        return None
    parts = urllib.parse.urlparse(location)
    if parts.netloc not in ("drive.google.com", "docs.google.com"):
        return None
    m = re.match(r"/file/d/([\w-]+)", parts.path)
    if m:
        return m.group(1)
    ids = urllib.parse.parse_qs(parts.query).get("id")
    return ids[0] if ids else None


def looks_like_html(path: str | os.PathLike[str]) -> bool:
    """True for an HTML page: what Google Drive (or a login wall) sends instead of a large file.

    Neither a zip (``PK``) nor CelebA's partition file (``000001.jpg 0``) starts with ``<``.
    """
    with open(path, "rb") as fh:
        head = fh.read(1024).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<meta", b"<!--")) or b"<html" in head


def manual_step(key: str, cache_dir: Path) -> str:
    """Exactly which file to put where (and which params key points at it) when it cannot be fetched."""
    gid, md5, name = CELEBA_FILES[key]
    return (f"Download {name} (md5 {md5}) yourself: {DRIVE_VIEW.format(gid)} ({DRIVE_FOLDER[key]} of CelebA's "
            f"Google Drive, linked from {CELEBA_PAGE}). Then either put it at {cache_dir / name} (gan.data.cache_dir) and run the "
            f"stage again, or set gan.data.{key}: /path/to/{name} in params.yaml (read in place, never copied).")


def _gdown_or_stop(keys: list[str], cache_dir: Path) -> Any:
    """gdown, imported only when a Google Drive file has to be fetched; without it, stop before any
    download and say, for every file still missing, what to put where."""
    try:
        import gdown  # lazy: only the real CelebA download needs it (pip install -e '.[real]')
    except ImportError:
        steps = "\n".join(f"  - {manual_step(k, cache_dir)}" for k in keys)
        raise DownloadError(
            f"gan.source is 'real' and CelebA comes from Google Drive, which needs gdown ({GDOWN_PIN}; "
            f"pip install -e '.[real]'), and it is not installed. Install it, or:\n{steps}") from None
    return gdown


def _refuse_html(path: Path, what: str, key: str, cache_dir: Path, delete: bool) -> None:
    if looks_like_html(path):
        if delete:
            path.unlink()
        raise DownloadError(
            f"{what}: got an HTML page, not {CELEBA_FILES[key][2]} (Google Drive answers large files with a "
            f"confirmation or quota page){'; the page was deleted' if delete else ''}.\n  {manual_step(key, cache_dir)}")


@functools.lru_cache(maxsize=8)
def _md5_of(path: str, size: int, mtime_ns: int) -> str:
    return io.md5_file(path)


def file_md5(path: Path) -> str:
    """md5 of a file, computed once per run: the 1.4 GB zip takes seconds to hash, and both the
    check and source.json need it."""
    st = path.stat()
    return _md5_of(str(path), st.st_size, st.st_mtime_ns)


def _check_md5(path: Path, key: str, cache_dir: Path, verify: bool, delete: bool, source: str) -> None:
    if not verify:
        return
    _gid, md5, name = CELEBA_FILES[key]
    got = file_md5(path)
    if got != md5:
        if delete:
            path.unlink()
        raise DownloadError(
            f"{source}: checksum mismatch for {path} (md5 {got}, expected {md5}, torchvision's {name})"
            f"{'; the file was deleted' if delete else ''}. Set gan.data.verify_md5: false to use a different copy "
            f"of {name} anyway, or:\n  {manual_step(key, cache_dir)}")


def _from_drive(gdown: Any, key: str, gid: str, cache_dir: Path, verify: bool) -> Path:
    """One Google Drive file into ``cache_dir`` through gdown (which follows Drive's confirmation step
    and resumes a ``.part`` file), then checked: an HTML page or a wrong md5 is deleted and refused."""
    name = CELEBA_FILES[key][2]
    dest = cache_dir / name
    if not dest.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        log.info("event=gdrive_download file=%s id=%s dest=%s", name, gid, dest)
        try:
            gdown.download(id=gid, output=str(dest), quiet=False, resume=True, retries=3)
        except Exception as exc:  # gdown's FileURLRetrievalError (quota, permissions), network errors
            raise DownloadError(f"CelebA {name}: gdown could not fetch Google Drive file {gid} "
                                f"({type(exc).__name__}: {str(exc).strip()})\n  {manual_step(key, cache_dir)}") from exc
        if not dest.is_file():
            raise DownloadError(f"CelebA {name}: gdown wrote nothing to {dest}\n  {manual_step(key, cache_dir)}")
    _refuse_html(dest, f"CelebA {name} from Google Drive ({dest})", key, cache_dir, delete=True)
    _check_md5(dest, key, cache_dir, verify, delete=True, source=f"Google Drive file {gid}")
    return dest.resolve()


def _obtain(key: str, location: str | None, cache_dir: Path, verify: bool, gdown: Any) -> Path:
    """One CelebA file. A local path is checked and read in place; a Google Drive link (or, when
    ``location`` is None, torchvision's Drive file) goes through gdown; any other URL through the
    shared downloader. Both land in ``cache_dir`` once and are reused after."""
    _gid, _md5, name = CELEBA_FILES[key]
    if location and not _is_url(location):
        path = Path(location).expanduser().resolve()
        if not path.is_file():
            raise DataError(path, f"gan.data.{key}: no such file")
        _refuse_html(path, f"gan.data.{key} {path}", key, cache_dir, delete=False)
        _check_md5(path, key, cache_dir, verify, delete=False, source=f"gan.data.{key}")
        return path
    gid = drive_id(location) if location else CELEBA_FILES[key][0]
    if gid:
        return _from_drive(gdown, key, gid, cache_dir, verify)
    assert location is not None
    try:
        dest = fetch(location, cache_dir / name).resolve()
    except DownloadError as exc:
        raise DownloadError(f"CelebA {name}: {exc}\n  {manual_step(key, cache_dir)}") from exc
    _refuse_html(dest, f"{location} -> {dest}", key, cache_dir, delete=True)
    _check_md5(dest, key, cache_dir, verify, delete=True, source=location)
    return dest


def _needs_gdown(location: str | None, key: str, cache_dir: Path) -> bool:
    if location and not drive_id(location):
        return False
    return not (cache_dir / CELEBA_FILES[key][2]).exists()


def download_real(out_dir: str | os.PathLike[str], d: DataConfig) -> dict[str, Any]:
    """``source: real``: write ``out_dir/source.json`` pointing at CelebA outside the tracked outputs.

    * ``d.root``: an extracted tree (the folder holding ``img_align_celeba/``), read in place;
      its partition file is ``d.partition`` or the one inside the tree.
    * otherwise ``d.archive`` / ``d.partition``: local paths are read in place; Google Drive
      links (or, when null, torchvision's Drive files) are fetched with gdown, other URLs with the
      shared downloader, into ``d.cache_dir`` once.

    Why gdown: for a 1.4 GB file Google Drive first answers with an HTML confirmation page, which
    gdown follows, as torchvision's CelebA does. Without gdown, or when an HTML page arrives anyway
    (quota exceeded), the stage stops before any work and names the file, where to put it, and the
    params key that points at it. Every file is md5-checked against torchvision's sums unless
    ``d.verify_md5`` is false; the sums and per-split counts go into source.json, so a different
    copy is a visible change.
    """
    out_dir = Path(out_dir)
    verify = d.verify_md5
    cache = Path(d.cache_dir).expanduser()
    if d.root:
        wanted = {"partition": d.partition} if d.partition else {}
    else:
        wanted = {"archive": d.archive, "partition": d.partition}
    drive = [k for k, loc in wanted.items() if _needs_gdown(loc, k, cache)]
    gdown = _gdown_or_stop(drive, cache) if drive else None  # stop before fetching anything
    info: dict[str, Any] = {"source": "real"}
    if d.root:
        root = Path(d.root).expanduser().resolve()
        images: ImageSource = DirImages(root)
        partition = (_obtain("partition", d.partition, cache, verify, gdown) if d.partition
                     else root / PARTITION)
        info.update(root=str(root), md5={"partition": file_md5(partition)})
    else:
        archive = _obtain("archive", d.archive, cache, verify, gdown)
        partition = _obtain("partition", d.partition, cache, verify, gdown)
        images = ZipImages(archive)  # fails early, naming the file, if it is not CelebA's zip
        info.update(archive=str(archive), md5={"archive": file_md5(archive), "partition": file_md5(partition)})
    entries = read_partition(partition)
    info.update(partition=str(partition.resolve()), counts=count_by_split(entries), num_images=len(images.names()))
    write_source(out_dir, info)
    log.info("event=real_source %s images=%d listed=%d", images.description, info["num_images"], len(entries))
    return info


# ----------------------------------------------------------------------------------------------
# readers shared by both sources
# ----------------------------------------------------------------------------------------------

@dataclass
class Entry:
    name: str
    split: int


def read_partition(path: str | os.PathLike[str]) -> list[Entry]:
    """Parse list_eval_partition.txt (``000001.jpg 0`` lines, CRLF or LF, as torchvision's csv reader
    accepts); a malformed line or a byte that is not UTF-8 is a DataError naming file and line."""
    path = Path(path)
    text = io.read_utf8(path, "partition file is missing (expected lines like '000001.jpg 0')")
    entries, seen = [], set()
    for no, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2") or not parts[0].lower().endswith(".jpg"):
            raise DataError(path, f"expected '<image>.jpg <0|1|2>', got {line!r}", line=no)
        if parts[0] in seen:
            raise DataError(path, f"image {parts[0]} listed twice", line=no)
        seen.add(parts[0])
        entries.append(Entry(parts[0], int(parts[1])))
    if not entries:
        raise DataError(path, "partition file lists no images")
    return entries


def partition_text(splits: list[int]) -> str:
    """list_eval_partition.txt as CelebA ships it: ``000001.jpg 0`` lines ending in CRLF.

    Byte for byte: the official split (162,770 / 19,867 / 19,962) written this way has torchvision's
    md5 d32c9cbf5e040fd4025c592c306e6668 (tests/test_gan.py checks it).
    """
    return "".join(f"{image_name(i)} {s}\r\n" for i, s in enumerate(splits))


def decode_image(blob: bytes, where: str, crop: int, size: int) -> np.ndarray:
    """Center crop ``crop`` x ``crop`` and resize to ``size``: uint8 [3, size, size]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(_io.BytesIO(blob)) as im:
            im.load()
            im = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(where, f"not a readable JPEG ({exc})") from exc
    w, h = im.size
    if w < crop or h < crop:
        raise DataError(where, f"image is {w}x{h}, smaller than the {crop}x{crop} center crop")
    left, top = (w - crop) // 2, (h - crop) // 2
    im = im.crop((left, top, left + crop, top + crop)).resize((size, size), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


def load_image(source: ImageSource, name: str, crop: int, size: int) -> np.ndarray:
    """One image of ``source`` (see :func:`decode_image`); an unreadable one names its location."""
    try:
        blob = source.read_bytes(name)
    except OSError as exc:
        raise DataError(source.where(name), f"unreadable ({exc})") from exc
    return decode_image(blob, source.where(name), crop, size)


def check_layout(source: ImageSource, partition: Path, entries: list[Entry],
                 on_bad: str) -> tuple[list[Entry], dict[str, list[str]]]:
    """Partition and images must agree; mismatches are errors or skipped-and-counted (``on_bad``)."""
    on_disk = source.names()
    listed = {e.name for e in entries}
    missing = sorted(listed - on_disk)
    unlisted = sorted(on_disk - listed)
    if on_bad == "error":
        if missing:
            raise DataError(partition, f"{len(missing)} listed image(s) missing from {source.description}, "
                            f"first {missing[0]}; set gan.features.on_bad_image: skip to skip them")
        if unlisted:
            raise DataError(partition, f"does not match the images: {len(unlisted)} image(s) in "
                            f"{source.description} are not listed, first {unlisted[0]}")
    keep = [e for e in entries if e.name in on_disk]
    return keep, {"missing": missing, "unlisted": unlisted}


def count_by_split(entries: list[Entry]) -> dict[str, int]:
    return {name: sum(e.split == code for e in entries) for name, code in SPLITS.items()}
