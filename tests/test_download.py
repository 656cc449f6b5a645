"""The shared downloader against a real HTTP server on 127.0.0.1 (never the real dataset URLs)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from repropipe.download import DownloadError, fetch

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /data.bin, honours Range, and cuts the first full response short."""

    cut_after: int | None = None
    ranges_seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path != "/data.bin":
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        type(self).ranges_seen.append(rng or "")
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        body = PAYLOAD[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = type(self).cut_after
        if cut is not None and not rng:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops mid-transfer
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        """Keep the test output clean: http.server logs every request to stderr."""


@pytest.fixture
def server():
    _Handler.cut_after, _Handler.ranges_seen = None, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_verifies_and_caches(server, tmp_path):
    dest = fetch(f"{server}/data.bin", tmp_path / "d.bin", md5=MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    fetch(f"{server}/data.bin", dest, md5=MD5, progress=False)
    assert _Handler.ranges_seen == [""]  # the second call used the verified copy


def test_interrupted_download_resumes_with_range(server, tmp_path):
    _Handler.cut_after = 300_000
    with pytest.raises(DownloadError, match="run again to resume"):
        fetch(f"{server}/data.bin", tmp_path / "d.bin", md5=MD5, progress=False)
    assert not (tmp_path / "d.bin").exists() and (tmp_path / "d.bin.part").stat().st_size == 300_000
    dest = fetch(f"{server}/data.bin", tmp_path / "d.bin", md5=MD5, progress=False)
    assert _Handler.ranges_seen[-1] == "bytes=300000-"
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "d.bin.part").exists()


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="checksum mismatch.*md5"):
        fetch(f"{server}/data.bin", tmp_path / "d.bin", md5="0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_missing_url_and_file_urls(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(f"{server}/nope", tmp_path / "x", progress=False)
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    out = fetch(src.as_uri(), tmp_path / "out" / "copy.bin", sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert out.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="no such file"):
        fetch((tmp_path / "absent").as_uri(), tmp_path / "y")


def test_existing_file_with_wrong_sum_is_not_overwritten(tmp_path):
    dest = tmp_path / "d.bin"
    dest.write_bytes(b"something else")
    with pytest.raises(DownloadError, match="delete it"):
        fetch("http://127.0.0.1:9/never", dest, md5=MD5)
    assert dest.read_bytes() == b"something else"
