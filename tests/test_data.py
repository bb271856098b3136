"""The download path of `fetch`, for real over HTTP, against a loopback server serving a temporary mirror."""
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from soundscaper import data
from soundscaper.data import DataError, entry, fetch, fetch_main

GOOD = "test_set_ISOP_ISOE"            # 185,925 bytes
CORRUPT = "validation_set_ISOP_ISOE"
CUT = "test_set_audio_file_ids"        # 135,888 bytes


class Handler(http.server.SimpleHTTPRequestHandler):
    cut_once: set = set()      # paths whose first response is cut half-way
    requests: list = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        path = Path(self.directory) / self.path.lstrip("/")
        Handler.requests.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404); return
        body = path.read_bytes()
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
    monkeypatch.setattr(data, "_verified", {})
    Handler.requests = []
    yield httpd
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
    monkeypatch.setattr(data, "time", type("T", (), {"sleep": staticmethod(lambda s: None)}))
    with pytest.raises(DataError, match="SOUNDSCAPER_DATA"):
        fetch(GOOD)


def test_mirror_only_entries_need_a_mirror(server):
    with pytest.raises(DataError, match="only available from a data mirror"):
        fetch("norm_loudness_json")


def test_fetch_all_against_the_mirror(mirror, monkeypatch, capsys):
    monkeypatch.setenv("SOUNDSCAPER_DATA", str(mirror))
    assert fetch_main(["--all"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith(f"{len(data.manifest())} verified, 0 failed")
