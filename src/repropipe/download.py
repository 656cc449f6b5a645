"""The one downloader: resumable, checksum-verified, atomic; http(s):// and file:// alike.

Real datasets are gigabytes behind flaky servers, so a download continues from a ``.part`` file
with an HTTP Range request after an interruption, and only a file whose checksum matches is
renamed into place: nothing at ``dest`` is ever a half-downloaded archive. A destination that
already exists with the right checksum is not fetched again (the cache). Tests exercise this
against a server on 127.0.0.1 and file:// URLs; the real dataset URLs are never called in tests.
"""

from __future__ import annotations

import logging
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from repropipe.io import md5_file, sha256_file

log = logging.getLogger("repropipe.download")

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed or its checksum did not match; the message says what to do."""


def _verify(path: Path, md5: str | None, sha256: str | None) -> str | None:
    """None when the file matches every checksum given, else a description of the mismatch."""
    if md5 is not None:
        got = md5_file(path)
        if got.lower() != md5.lower():
            return f"md5 {got}, expected {md5}"
    if sha256 is not None:
        got = sha256_file(path)
        if got.lower() != sha256.lower():
            return f"sha256 {got}, expected {sha256}"
    return None


def fetch(url: str, dest: str | os.PathLike[str], *, md5: str | None = None, sha256: str | None = None,
          headers: dict[str, str] | None = None, timeout: float = 60.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` unless ``dest`` already holds a verified copy.

    Interrupted downloads leave ``dest + '.part'``; the next call resumes it when the server
    honours Range requests and starts over when it does not. A checksum mismatch deletes the
    partial file and raises :class:`DownloadError` naming the URL, the file and both sums.
    """
    dest = Path(dest)
    if dest.exists():
        problem = _verify(dest, md5, sha256)
        if problem is None:
            log.info("event=cached path=%s", dest)
            return dest
        raise DownloadError(f"{dest}: exists but does not match ({problem}); delete it to download again from {url}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if url.startswith("file://"):
        src = Path(urllib.request.url2pathname(url[len("file://"):]))
        if not src.exists():
            raise DownloadError(f"{url}: no such file")
        shutil.copyfile(src, part)
    else:
        _http_resume(url, part, headers or {}, timeout, progress)
    problem = _verify(part, md5, sha256)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url} -> {dest}: checksum mismatch ({problem}); the partial file was deleted. "
                            "Retry, or download the file yourself and point params at it.")
    os.replace(part, dest)
    log.info("event=downloaded url=%s path=%s bytes=%d", url, dest, dest.stat().st_size)
    return dest


def _http_resume(url: str, part: Path, headers: dict[str, str], timeout: float, progress: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers=dict(headers))
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the .part is already complete
            return
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{url}: cannot connect ({exc}); check the network or download it by hand") from exc
    with resp:
        resumed = have and resp.status == 206
        if have and not resumed:
            log.info("event=restart url=%s reason=server ignored Range", url)
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as fh, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=part.name, disable=not progress) as bar:
            try:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    fh.write(chunk)
                    bar.update(len(chunk))
            except OSError as exc:
                raise DownloadError(f"{url}: connection lost after {fh.tell()} bytes ({exc}); "
                                    f"run again to resume from {part}") from exc
    if total is not None and part.stat().st_size < total:
        raise DownloadError(f"{url}: got {part.stat().st_size} of {total} bytes; run again to resume from {part}")
