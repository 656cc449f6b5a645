"""Atomic writes, checksums and the one metrics.json writer.

Every file a stage produces goes through :func:`atomic_path`: it is written under a temporary
name in the same directory and renamed into place only when complete, so a killed stage never
leaves a file that looks finished, and a file that existed before is untouched until then.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
# files an orchestrator adds to a directory output (Snakemake's marker): not part of what a stage saw
TOOL_MARKERS = (".snakemake_timestamp",)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {target}")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a finished output gets normal modes
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; it becomes ``path`` only if the block succeeds.

    A stage whose output is a directory builds it here, so a killed or failed run leaves the
    previous output untouched and never a half-filled directory that looks finished; a re-run
    never mixes old and new files.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        old = None
        if target.exists() or target.is_symlink():
            old = target.with_name(f".{target.name}.{os.getpid()}.old")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        elif old is not None:
            old.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy and torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def _finite(obj: Any) -> Any:
    """JSON has no NaN/Infinity; write them as null rather than produce invalid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps_json(obj: Any) -> str:
    normalised = json.loads(json.dumps(obj, default=_json_default))
    return json.dumps(_finite(normalised), indent=2, sort_keys=True, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, dumps_json(obj))


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def md5_file(path: str | os.PathLike[str]) -> str:
    """MD5, because that is what dataset publishers (ASVspoof, CelebA) list."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _files_under(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return [path]


def fingerprint(paths: Iterable[str | os.PathLike[str]]) -> str:
    """One sha256 over the relative names and contents of every file under ``paths``.

    Missing paths are part of the fingerprint (as 'missing'), so the value still says exactly
    what the stage saw.
    """
    h = hashlib.sha256()
    for root in sorted(str(p) for p in paths):
        root_path = Path(root)
        if not root_path.exists():
            h.update(f"{root}\0missing\0".encode())
            continue
        for f in _files_under(root_path):
            if f.name in TOOL_MARKERS:
                continue
            h.update(f"{f.as_posix()}\0{sha256_file(f)}\0".encode())
    return h.hexdigest()


def params_hash(params: Any) -> str:
    """sha256 of the canonical JSON of the params a stage read."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


class DataError(ValueError):
    """Bad input data: the message starts with ``file:line:`` (or ``file:``) and says what was expected.

    Every reader raises this for malformed input so the CLI can print one clear line and exit 2.
    """

    def __init__(self, path: str | os.PathLike[str], message: str, line: int | None = None) -> None:
        self.path, self.line = Path(path), line
        self._made_with = (path, message, line)
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # an exception pickles as its class and ``args`` by default, which this __init__ does not take: a
        # DataError raised in a pool worker would fail to unpickle and stall the pool's result thread
        return type(self), self._made_with


def read_json(path: str | os.PathLike[str], missing: str) -> Any:
    """A JSON file the pipeline or a user wrote; a DataError naming it (and the line) otherwise.

    ``missing`` says what the user should do when the file is not there.
    """
    path = Path(path)
    text = read_utf8(path, missing)  # strict: a stray byte is named here, not as a bogus id later
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON: {exc.msg}", line=exc.lineno) from exc


def open_zip(path: str | os.PathLike[str]) -> zipfile.ZipFile:
    """An archive read in place (LA.zip, the CelebA zip); a DataError naming it when unreadable."""
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(path, f"not a readable zip archive ({exc})") from exc


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save`` whose bytes depend on ``obj`` only.

    Given a file name, torch.save records that name inside the archive; saving to the temporary
    name of an atomic write would make two identical models differ byte for byte. Saving to a
    buffer gives every archive the same fixed record name.
    """
    import io as _io

    import torch

    buf = _io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def torch_load(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """The one way to read a .pt file: ``weights_only=True`` (tensors and plain containers; never code).

    A file that holds anything else (a pickled object, a payload) is refused with a DataError
    naming it, and nothing in it runs.
    """
    import pickle

    import torch

    if Path(path).is_file() and not zipfile.is_zipfile(path):
        raise DataError(path, "not a readable torch file (expected torch.save's zip format; truncated or foreign?)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataError(path, f"refused: not tensors and plain containers (loaded with weights_only=True; "
                              f"{str(exc).splitlines()[0]})") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise DataError(path, f"not a readable torch file ({exc})") from exc


class OutputNotWritable(OSError):
    """A stage's output location cannot be written: found before any work starts."""


def check_writable(outputs: Iterable[str | os.PathLike[str]]) -> None:
    """Fail early, naming the output, when the folder it is (re)placed in cannot be written.

    Outputs are replaced by a rename inside their parent folder, so that folder (or, where it does
    not exist yet, its nearest existing ancestor) must take a new file. Probed by creating one, since
    permission bits say nothing for root, read-only mounts or immutable folders.
    """
    for out in outputs:
        p = Path(out)
        folder = next((a for a in (p.parent, *p.parent.parents) if a.exists()), Path("."))
        why = None
        if not folder.is_dir():
            why = f"{folder} is not a folder"
        else:
            try:
                fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
                os.close(fd)
                os.unlink(probe)
            except OSError as exc:
                why = f"cannot create files in {folder}: {exc.strerror or exc}"
        if why:
            raise OutputNotWritable(f"{out}: output location is not writable ({why}); nothing was run")


def read_utf8(path: str | os.PathLike[str], missing: str) -> str:
    """A text file decoded strictly as UTF-8, or a DataError naming the file, the line and the byte.

    Why strict: a lossy decode turns a stray byte into U+FFFD, which then surfaces far away as a
    bogus id (a speaker 'id1\\ufffd001') or a "listed but missing" file; the place to stop is the
    file that holds the byte. ``missing`` says what to do when the file is not there.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, missing)
    blob = path.read_bytes()
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = blob.count(b"\n", 0, exc.start) + 1
        column = exc.start - (blob.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(path, f"not UTF-8 text: byte 0x{blob[exc.start]:02x} at column {column} ({exc.reason}); "
                              "re-export the file as UTF-8", line=line) from None
