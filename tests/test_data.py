"""The download path of `fetch`, for real over HTTP, against a loopback server serving a temporary mirror."""
import http.server
import shutil
import threading
import time
from pathlib import Path

import pytest

from soundscaper import base, data
from soundscaper.cli import main as cli_main
from soundscaper.base import DataError
from soundscaper.data import entry, fetch

GOOD = "test_set_ISOP_ISOE"            # 185,925 bytes
CORRUPT = "validation_set_ISOP_ISOE"
CUT = "test_set_audio_file_ids"        # 135,888 bytes


class Handler(http.server.SimpleHTTPRequestHandler):
    cut_once: set = set()      # paths whose first response is cut half-way
    requests: list = []
    bloat: set = set()         # paths answered with the file followed by endless junk (a misbehaving mirror)
    stall: set = set()         # paths answered with headers and then silence
    sent: dict = {}            # bytes of the body each bloated path managed to send
    release = threading.Event()

    def log_message(self, *a):
        pass

    def do_GET(self):
        path = Path(self.directory) / self.path.lstrip("/")
        Handler.requests.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404); return
        body = path.read_bytes()
        if self.path in Handler.bloat:
            self.send_response(200); self.end_headers()                # no Content-Length, then too much
            sent, chunk = 0, body + bytes(1 << 20)
            try:
                while sent < 40 << 20:
                    self.wfile.write(chunk); sent += len(chunk)
            except OSError:
                pass
            Handler.sent[self.path] = sent
            return
        if self.path in Handler.stall:
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.flush()
            Handler.release.wait(60)                                   # a server that never sends the body
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path in Handler.cut_once:
            Handler.cut_once.discard(self.path)
            self.wfile.write(body[start:start + (len(body) - start) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)       # connection cut mid-file
            return
        self.wfile.write(body[start:])


@pytest.fixture()
def server(tmp_path, mirror, monkeypatch):
    served = tmp_path / "served"
    for name in (GOOD, CORRUPT, CUT):
        e = entry(name)
        (served / e.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mirror / e.path, served / e.path)
    bad = served / entry(CORRUPT).path
    b = bytearray(bad.read_bytes()); b[100] ^= 1; bad.write_bytes(bytes(b))       # same size, one bit flipped
    handler = lambda *a, **k: Handler(*a, directory=str(served), **k)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.delenv("SOUNDSCAPER_DATA", raising=False)
    monkeypatch.setenv("SOUNDSCAPER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SOUNDSCAPER_DOWNLOAD_URL", f"http://127.0.0.1:{httpd.server_port}/")
    monkeypatch.setattr(base, "_verified", {})
    Handler.requests, Handler.sent = [], {}
    Handler.bloat, Handler.stall = set(), set()
    Handler.release.clear()
    yield httpd
    Handler.release.set()
    httpd.shutdown()


def test_download_good_file(server, mirror, tmp_path):
    p = fetch(GOOD)
    assert p.is_relative_to(tmp_path / "cache") and p.read_bytes() == (mirror / entry(GOOD).path).read_bytes()
    n = len(Handler.requests)
    assert fetch(GOOD) == p and len(Handler.requests) == n           # second fetch comes from the cache
    assert not list(p.parent.glob("*.part"))


def test_corrupted_download_is_refused_and_removed(server, tmp_path):
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch(CORRUPT)
    left = [q for q in (tmp_path / "cache").rglob("*") if q.is_file()]
    assert left == []


def test_cut_connection_resumes(server, mirror):
    path = "/" + entry(CUT).path
    Handler.cut_once.add(path)
    p = fetch(CUT)
    assert p.read_bytes() == (mirror / entry(CUT).path).read_bytes()
    ranges = [r for q, r in Handler.requests if q == path]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")   # resumed, not restarted


def test_no_network_names_the_variable(server, monkeypatch):
    monkeypatch.setenv("SOUNDSCAPER_DOWNLOAD_URL", "http://127.0.0.1:9/")        # nothing listens on port 9
    t0 = time.monotonic()
    with pytest.raises(DataError, match="SOUNDSCAPER_DATA"):
        fetch(GOOD)
    assert time.monotonic() - t0 < 5                                             # refused: no retries


def test_a_mirror_sending_too_much_is_stopped_at_the_manifest_size(server, tmp_path):
    e = entry(GOOD)
    Handler.bloat.add("/" + e.path)
    with pytest.raises(DataError, match=f"more than the {e.size} bytes"):
        fetch(GOOD)
    deadline = time.monotonic() + 10
    while "/" + e.path not in Handler.sent and time.monotonic() < deadline:
        time.sleep(0.05)                                     # the server notices the hang-up when its write fails
    assert Handler.sent["/" + e.path] < 16 << 20             # the client hung up long before the 40 MiB
    assert [q for q in (tmp_path / "cache").rglob("*") if q.is_file()] == []


def test_a_stalled_server_times_out_quickly(server, monkeypatch):
    monkeypatch.setenv("SOUNDSCAPER_DOWNLOAD_TIMEOUT", "1")
    Handler.stall.add("/" + entry(GOOD).path)
    t0 = time.monotonic()
    with pytest.raises(DataError, match="sent nothing for 1 s"):
        fetch(GOOD)
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("bad", ["../escape.txt", "sub/../../escape.txt"])
def test_manifest_paths_cannot_leave_the_cache(server, tmp_path, monkeypatch, bad):
    e = entry(GOOD)
    shutil.copy(tmp_path / "served" / e.path, tmp_path / "escape.txt")     # what served/<bad> points at
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("name\tpath\turl\tsha256\tsize\n"
                        f"evil\t{bad}\thttp://example.invalid/escape.txt\t{e.sha256}\t{e.size}\n")
    monkeypatch.setenv("SOUNDSCAPER_MANIFEST", str(manifest))
    with pytest.raises(DataError, match="unsafe path"):
        fetch("evil")
    assert [q for q in (tmp_path / "cache").rglob("*") if q.is_file()] == []        # nothing written anywhere
    assert Handler.requests == []                                                     # not even asked for


def test_fetch_all_against_the_mirror(mirror, monkeypatch, capsys):
    monkeypatch.setenv("SOUNDSCAPER_DATA", str(mirror))
    assert cli_main(["fetch", "--all"]) == 0
    out = capsys.readouterr().out
    n = sum(bool(e.sha256) for e in data.manifest().values())      # --all skips files pinned by a git blob id only
    assert out.strip().endswith(f"{n} verified, 0 failed")
