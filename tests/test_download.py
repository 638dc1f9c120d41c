"""The downloader against a real HTTP server on 127.0.0.1 (ephemeral port, in a thread).

The server can answer Range requests or ignore them, cut the connection part-way
through a file, or hang; nothing is mocked: urllib talks to it over a real socket.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import re
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fewstep.data.download import download_file, with_env_mirrors
from fewstep.data.mnist import SPECS, load_idx_dataset
from fewstep.errors import DatasetNotFoundError, DownloadError

PAYLOAD = bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8))
MD5 = hashlib.md5(PAYLOAD).hexdigest()


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    ranges: bool = True  # honour "Range: bytes=N-"
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before hanging up...
    cuts_left: dict[str, int] = field(default_factory=dict)  # ...this many more times
    hang: float = 0.0  # seconds to sleep before answering
    log: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: a cut is a closed socket

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        try:
            self._get()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass

    def _get(self) -> None:
        st: ServerState = self.server.state  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        st.log.append((self.path, rng))
        if st.hang:
            time.sleep(st.hang)
        body = st.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if st.ranges and m:
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        part = body[start:]
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Accept-Ranges", "bytes" if st.ranges else "none")
        self.end_headers()
        if st.cuts_left.get(self.path, 0) > 0:
            st.cuts_left[self.path] -= 1
            self.wfile.write(part[: st.cut_after[self.path]])
            self.wfile.flush()
            return  # HTTP/1.0: the socket closes here, short of Content-Length
        self.wfile.write(part)


@dataclass
class Server:
    state: ServerState
    base: str

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.state = ServerState(files={"/data.bin": PAYLOAD})  # type: ignore[attr-defined]
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield Server(httpd.state, f"http://127.0.0.1:{httpd.server_address[1]}")  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def _no_env_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEWSTEP_MIRROR", raising=False)


def dead_url() -> str:
    """A URL on a port nobody listens on: the connection is refused at once."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/data.bin"


def test_download_verifies_md5_and_sha256(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "data.bin"
    out = download_file([server.url("/data.bin")], dest, md5=MD5, sha256=hashlib.sha256(PAYLOAD).hexdigest(),
                        timeout=5)
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "data.bin.partial").exists()
    # already there and verified: no new request
    n = len(server.state.log)
    download_file([server.url("/data.bin")], dest, md5=MD5)
    assert len(server.state.log) == n


def test_wrong_checksum_leaves_no_file(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError) as ei:
        download_file([server.url("/data.bin")], dest, md5="0" * 32, timeout=5)
    assert "md5 mismatch" in str(ei.value) and MD5 in str(ei.value)
    assert not dest.exists() and not (tmp_path / "data.bin.partial").exists()
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download_file([server.url("/data.bin")], dest, md5=MD5, sha256="f" * 64, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_mirror_fallback_and_all_reasons(server: Server, tmp_path: Path) -> None:
    dead, missing, good = dead_url(), server.url("/nope.bin"), server.url("/data.bin")
    dest = download_file([dead, missing, good], tmp_path / "data.bin", md5=MD5, timeout=5)
    assert dest.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError) as ei:
        download_file([dead, missing, "ftp://example.invalid/x"], tmp_path / "other.bin", md5=MD5, timeout=5)
    msg = str(ei.value)
    assert "other.bin" in msg and str(tmp_path) in msg and "tried 3 URL(s)" in msg
    assert dead in msg and "refused" in msg.lower()
    assert missing in msg and "HTTP 404" in msg
    assert "unsupported URL scheme 'ftp'" in msg


def test_cut_connection_resumes_with_range(server: Server, tmp_path: Path) -> None:
    server.state.cut_after["/data.bin"] = 70_000
    server.state.cuts_left["/data.bin"] = 2
    dest = download_file([server.url("/data.bin")], tmp_path / "data.bin", md5=MD5, timeout=5)
    assert dest.read_bytes() == PAYLOAD
    # the first request had no Range; the resumes asked for exactly what was missing
    ranges = [r for p, r in server.state.log]
    assert ranges[0] is None and ranges[1:] == ["bytes=70000-", "bytes=140000-"]


def test_cut_connection_restarts_without_range_support(server: Server, tmp_path: Path) -> None:
    server.state.ranges = False
    server.state.cut_after["/data.bin"] = 50_000
    server.state.cuts_left["/data.bin"] = 1
    dest = download_file([server.url("/data.bin")], tmp_path / "data.bin", md5=MD5, timeout=5)
    assert dest.read_bytes() == PAYLOAD
    assert [r for _, r in server.state.log] == [None, "bytes=50000-"]  # asked, got a 200 and started over


def test_cut_on_every_attempt_keeps_partial_for_next_mirror(server: Server, tmp_path: Path) -> None:
    server.state.files["/b/data.bin"] = PAYLOAD
    server.state.cut_after["/data.bin"] = 30_000
    server.state.cuts_left["/data.bin"] = 10**6  # mirror 1 always hangs up part-way
    dest = download_file([server.url("/data.bin"), server.url("/b/data.bin")], tmp_path / "data.bin", md5=MD5,
                         timeout=5, resume_attempts=1)
    assert dest.read_bytes() == PAYLOAD
    assert server.state.log[-1] == ("/b/data.bin", "bytes=60000-")  # mirror 2 continued where mirror 1 stopped


def test_stale_partial_is_discarded_after_checksum_failure(server: Server, tmp_path: Path) -> None:
    (tmp_path / "data.bin.partial").write_bytes(b"garbage from an older version" * 100)
    dest = download_file([server.url("/data.bin")], tmp_path / "data.bin", md5=MD5, timeout=5)
    assert dest.read_bytes() == PAYLOAD
    assert [r for _, r in server.state.log] == ["bytes=2900-", None]


def test_complete_partial_gets_416_and_is_verified(server: Server, tmp_path: Path) -> None:
    (tmp_path / "data.bin.partial").write_bytes(PAYLOAD)  # a run that died just before the rename
    dest = download_file([server.url("/data.bin")], tmp_path / "data.bin", md5=MD5, timeout=5)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "data.bin.partial").exists()


def test_env_mirror_is_tried_first(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.state.files["/mirror/data.bin"] = PAYLOAD
    monkeypatch.setenv("FEWSTEP_MIRROR", server.url("/mirror/"))
    assert with_env_mirrors(["https://example.invalid/x/data.bin"])[0] == server.url("/mirror/data.bin")
    download_file(["http://example.invalid/data.bin"], tmp_path / "data.bin", md5=MD5, timeout=5)
    assert [p for p, _ in server.state.log] == ["/mirror/data.bin"]


def test_hanging_server_fails_fast(server: Server, tmp_path: Path) -> None:
    server.state.hang = 1.5
    t = time.perf_counter()
    with pytest.raises(DownloadError, match="timed out"):
        download_file([server.url("/data.bin")], tmp_path / "data.bin", md5=MD5, timeout=0.3)
    assert time.perf_counter() - t < 1.2


# ------------------------------------------------------------------ dataset-level behaviour

def _idx_gz(a: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    return gzip.compress(head + a.tobytes())


def test_mnist_downloads_from_mirror_with_md5(server: Server, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    files = {"train-images-idx3-ubyte.gz": _idx_gz(rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)),
             "train-labels-idx1-ubyte.gz": _idx_gz(rng.integers(0, 10, 12).astype(np.uint8)),
             "t10k-images-idx3-ubyte.gz": _idx_gz(rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)),
             "t10k-labels-idx1-ubyte.gz": _idx_gz(rng.integers(0, 10, 5).astype(np.uint8))}
    for name, blob in files.items():
        server.state.files["/m/" + name] = blob
    spec = dataclasses.replace(SPECS["mnist"], mirrors=(dead_url().rsplit("/", 1)[0] + "/", server.url("/m/")),
                               md5={k: hashlib.md5(v).hexdigest() for k, v in files.items()})
    ds = load_idx_dataset(spec, tmp_path, download=True, timeout=5)
    assert ds.train.inputs.shape == (12, 1, 28, 28) and len(ds.test) == 5
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(files)


def test_offline_error_lists_missing_files_and_directory(tmp_path: Path) -> None:
    spec = dataclasses.replace(SPECS["fashion-mnist"], mirrors=(dead_url().rsplit("/", 1)[0] + "/",))
    # two of the four files are already there (raw, not gzipped): only the other two are reported
    (tmp_path / "fashion-mnist").mkdir()
    rng = np.random.default_rng(0)
    (tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte").write_bytes(
        gzip.decompress(_idx_gz(rng.integers(0, 256, (2, 28, 28), dtype=np.uint8))))
    (tmp_path / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(_idx_gz(np.zeros(2, np.uint8)))
    t = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as ei:
        load_idx_dataset(spec, tmp_path, download=True, timeout=2)
    assert time.perf_counter() - t < 5
    msg = str(ei.value)
    assert "missing 2 of 4 files: train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in msg
    assert "t10k" not in msg.split("\n")[0]
    assert f"{tmp_path / 'fashion-mnist'}/" in msg and "FEWSTEP_DATA" in msg and "--data-root" in msg
    assert "refused" in msg.lower() and "FEWSTEP_MIRROR" in msg
    assert msg.count("Downloading") == 1  # ONE error, not one per file
    with pytest.raises(DatasetNotFoundError, match="Downloading is disabled"):
        load_idx_dataset(spec, tmp_path, download=False)
    assert not list((tmp_path / "fashion-mnist").glob("*.partial"))


def test_concurrent_downloads_of_one_file_fetch_it_once(server: Server, tmp_path: Path) -> None:
    """Two downloaders (think: two DDP ranks) of the same file: one fetches, the other waits and reuses it."""
    server.state.hang = 0.2
    results: list[Path | BaseException] = []

    def worker() -> None:
        try:
            results.append(download_file([server.url("/data.bin")], tmp_path / "data.bin", md5=MD5, timeout=5))
        except BaseException as e:
            results.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [tmp_path / "data.bin"] * 2
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD and len(server.state.log) == 1
