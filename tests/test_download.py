"""How hfmed fetches official archives: resumable, retried, checked, and quiet about the cache.

Every test talks to a local HTTP server whose routes misbehave on purpose (cut connections,
stalls, ignored ranges, server errors), so nothing here needs the network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import random
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hfmed.errors import UserError
from hfmed.sources import download
from hfmed.sources.download import cache_dir, fetch, md5sum

BODY = random.Random(0).randbytes(300_000)
BODY_MD5 = hashlib.md5(BODY).hexdigest()
HALF = len(BODY) // 2
FAST = dict(backoff=0.01, timeout=5.0, progress=False)


@dataclasses.dataclass
class Route:
    body: bytes
    cut_first: bool = False  # first answer: full Content-Length, half the body, then close
    stall_first: float = 0.0  # first answer: half the body, then silence for this many seconds
    ignore_range: bool = False  # always answer 200 with the whole body
    range_from_zero: bool = False  # answer a Range request with 206 for bytes 0- whatever was asked
    statuses: list[int] = dataclasses.field(default_factory=list)  # answered first, one per request
    served: int = 0


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_GET(self):
        server = self.server
        path = urllib.parse.urlsplit(self.path).path
        with server.lock:
            server.requests.append({"path": path, "range": self.headers.get("Range")})
            route = server.routes.get(path)
            first = route is not None and route.served == 0
            if route is not None:
                route.served += 1
                status = route.statuses.pop(0) if route.statuses else None
        if route is None:
            return self.send_error(404)
        if status is not None:
            return self.send_error(status)

        body, start = route.body, 0
        wanted = self.headers.get("Range")
        if wanted and not route.ignore_range:
            start = 0 if route.range_from_zero else int(wanted.removeprefix("bytes=").split("-")[0])
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
        rest = body[start:]
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        if first and (route.cut_first or route.stall_first):
            self.wfile.write(rest[: len(rest) // 2])
            self.wfile.flush()
            time.sleep(route.stall_first)
            self.close_connection = True
            return
        self.wfile.write(rest)


class Server:
    def __init__(self, httpd: ThreadingHTTPServer):
        self.httpd = httpd
        host, port = httpd.server_address[:2]
        self.base = f"http://{host}:{port}"

    @property
    def requests(self) -> list[dict]:
        with self.httpd.lock:
            return list(self.httpd.requests)

    def add(self, path: str, body: bytes = BODY, **behaviour) -> str:
        self.httpd.routes[path] = Route(body, **behaviour)
        return self.base + path


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.lock = threading.Lock()
    httpd.requests = []
    httpd.routes = {}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Server(httpd)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def online(monkeypatch):
    monkeypatch.delenv("HFMED_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_a_good_file_is_downloaded_and_its_md5_checked(server, tmp_path):
    url = server.add("/files/pneumoniamnist.npz") + "?download=1"
    dest = tmp_path / "pneumoniamnist.npz"

    assert fetch(url, dest, BODY_MD5, **FAST) == dest

    assert dest.read_bytes() == BODY
    assert not (tmp_path / "pneumoniamnist.npz.part").exists()
    assert [r["range"] for r in server.requests] == [None]


def test_any_md5_of_the_accepted_set_will_do(server, tmp_path):
    url = server.add("/a.npz")
    superseded_release = "0" * 32
    fetch(url, tmp_path / "a.npz", [superseded_release, BODY_MD5.upper()], **FAST)
    assert (tmp_path / "a.npz").read_bytes() == BODY


@pytest.mark.parametrize("md5", [BODY_MD5, [BODY_MD5, "1" * 32], None])
def test_a_cached_file_is_used_without_a_request(server, tmp_path, md5):
    url = server.add("/a.npz")
    dest = tmp_path / "a.npz"
    dest.write_bytes(BODY)

    assert fetch(url, dest, md5, **FAST) == dest
    assert server.requests == []


def test_a_cached_file_with_a_wrong_md5_is_downloaded_again(server, tmp_path):
    url = server.add("/a.npz")
    dest = tmp_path / "a.npz"
    dest.write_bytes(b"an older, broken copy")

    fetch(url, dest, BODY_MD5, **FAST)

    assert dest.read_bytes() == BODY
    assert len(server.requests) == 1


def test_a_cached_file_with_a_wrong_md5_is_gone_even_if_the_new_download_fails(server, tmp_path):
    url = server.add("/a.npz", statuses=[404])
    dest = tmp_path / "a.npz"
    dest.write_bytes(b"an older, broken copy")

    with pytest.raises(UserError):
        fetch(url, dest, BODY_MD5, **FAST)
    assert not dest.exists()


def test_a_corrupt_download_raises_and_leaves_neither_file_nor_part(server, tmp_path):
    url = server.add("/a.npz", body=BODY[:-1] + b"\x00")
    dest = tmp_path / "a.npz"

    with pytest.raises(UserError) as caught:
        fetch(url, dest, BODY_MD5, **FAST)

    message = str(caught.value)
    assert "\n" not in message
    assert url in message and BODY_MD5 in message and "--source" in message
    assert hashlib.md5(BODY[:-1] + b"\x00").hexdigest() in message
    assert not dest.exists()
    assert not (tmp_path / "a.npz.part").exists()


def test_a_connection_cut_mid_body_is_resumed_with_a_range_request(server, tmp_path):
    url = server.add("/a.npz", cut_first=True)
    dest = tmp_path / "a.npz"

    fetch(url, dest, BODY_MD5, **FAST)

    assert dest.read_bytes() == BODY
    ranges = [r["range"] for r in server.requests]
    assert ranges == [None, f"bytes={HALF}-"]


def test_a_stalled_connection_times_out_and_is_resumed(server, tmp_path):
    url = server.add("/a.npz", stall_first=1.0)
    dest = tmp_path / "a.npz"

    fetch(url, dest, BODY_MD5, backoff=0.01, timeout=0.3, progress=False)

    assert dest.read_bytes() == BODY
    first, *later = [r["range"] for r in server.requests]
    resumed_from = [int(r.removeprefix("bytes=").rstrip("-")) for r in later if r]
    assert first is None and resumed_from and 0 < resumed_from[0] <= HALF


def test_a_server_that_ignores_range_still_gives_the_right_file(server, tmp_path):
    url = server.add("/a.npz", cut_first=True, ignore_range=True)
    dest = tmp_path / "a.npz"

    fetch(url, dest, BODY_MD5, **FAST)

    assert dest.read_bytes() == BODY
    assert [r["range"] for r in server.requests] == [None, f"bytes={HALF}-"]


def test_a_partial_answer_for_the_wrong_range_starts_over(server, tmp_path):
    url = server.add("/a.npz", range_from_zero=True)
    dest = tmp_path / "a.npz"
    (tmp_path / "a.npz.part").write_bytes(BODY[:100_000])

    fetch(url, dest, BODY_MD5, **FAST)

    assert dest.read_bytes() == BODY
    assert [r["range"] for r in server.requests] == ["bytes=100000-", None]


def test_a_leftover_part_is_resumed(server, tmp_path):
    url = server.add("/a.npz")
    dest = tmp_path / "a.npz"
    (tmp_path / "a.npz.part").write_bytes(BODY[:100_000])

    fetch(url, dest, BODY_MD5, **FAST)

    assert dest.read_bytes() == BODY
    assert [r["range"] for r in server.requests] == ["bytes=100000-"]
    assert not (tmp_path / "a.npz.part").exists()


def test_a_complete_leftover_part_is_checked_and_kept(server, tmp_path):
    url = server.add("/a.npz")
    dest = tmp_path / "a.npz"
    (tmp_path / "a.npz.part").write_bytes(BODY)

    fetch(url, dest, BODY_MD5, **FAST)

    assert dest.read_bytes() == BODY
    assert [r["range"] for r in server.requests] == [f"bytes={len(BODY)}-"]


def test_a_leftover_part_longer_than_the_file_is_discarded(server, tmp_path):
    url = server.add("/a.npz")
    dest = tmp_path / "a.npz"
    (tmp_path / "a.npz.part").write_bytes(BODY + b"junk")

    fetch(url, dest, BODY_MD5, **FAST)

    assert dest.read_bytes() == BODY
    assert [r["range"] for r in server.requests] == [f"bytes={len(BODY) + 4}-", None]


@pytest.mark.parametrize("status", [403, 404, 410])
def test_a_client_error_fails_at_once(server, tmp_path, status):
    url = server.add("/a.npz", statuses=[status])

    with pytest.raises(UserError) as caught:
        fetch(url, tmp_path / "a.npz", BODY_MD5, **FAST)

    message = str(caught.value)
    assert "\n" not in message
    assert url in message and str(status) in message and "--source" in message
    assert len(server.requests) == 1


def test_a_missing_file_fails_at_once(server, tmp_path):
    url = server.base + "/not-there.npz"
    with pytest.raises(UserError, match="404"):
        fetch(url, tmp_path / "not-there.npz", BODY_MD5, **FAST)
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [429, 500, 503])
def test_server_errors_are_retried_with_exponential_backoff(server, tmp_path, monkeypatch, status):
    slept = []
    monkeypatch.setattr(download.time, "sleep", slept.append)
    url = server.add("/a.npz", statuses=[status, status, status])

    fetch(url, tmp_path / "a.npz", BODY_MD5, retries=5, backoff=0.5, timeout=5.0, progress=False)

    assert (tmp_path / "a.npz").read_bytes() == BODY
    assert slept == [0.5, 1.0, 2.0]
    assert len(server.requests) == 4


def test_exhausted_retries_raise_one_line_and_keep_the_part_for_the_next_run(server, tmp_path):
    url = server.add("/a.npz", cut_first=True, statuses=[None, 503, 503])
    dest = tmp_path / "a.npz"
    part = tmp_path / "a.npz.part"

    with pytest.raises(UserError) as caught:
        fetch(url, dest, BODY_MD5, retries=2, **FAST)

    message = str(caught.value)
    assert "\n" not in message
    assert url in message and "3 attempts" in message and "--source" in message
    assert not dest.exists()
    assert part.read_bytes() == BODY[:HALF]

    fetch(url, dest, BODY_MD5, **FAST)

    assert dest.read_bytes() == BODY
    assert [r["range"] for r in server.requests][-1] == f"bytes={HALF}-"


def test_offline_mode_names_where_to_put_the_file(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HFMED_OFFLINE", "1")
    url = server.add("/a.npz")
    dest = tmp_path / "a.npz"

    with pytest.raises(UserError) as caught:
        fetch(url, dest, BODY_MD5, **FAST)

    message = str(caught.value)
    assert "\n" not in message
    assert str(dest) in message and "--source" in message and "HFMED_OFFLINE" in message
    assert server.requests == []


def test_offline_mode_still_serves_the_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HFMED_OFFLINE", "1")
    url = server.add("/a.npz")
    dest = tmp_path / "a.npz"
    dest.write_bytes(BODY)

    assert fetch(url, dest, BODY_MD5, **FAST) == dest
    assert server.requests == []


def test_offline_mode_keeps_a_cached_file_that_fails_its_check(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HFMED_OFFLINE", "1")
    url = server.add("/a.npz")
    dest = tmp_path / "a.npz"
    dest.write_bytes(b"not it")

    with pytest.raises(UserError, match="md5"):
        fetch(url, dest, BODY_MD5, **FAST)
    assert dest.read_bytes() == b"not it"


def test_hf_hub_offline_forbids_downloads_too(server, tmp_path, monkeypatch):
    """A huggingface_hub user's HF_HUB_OFFLINE=1 means no network at all, Zenodo included."""
    monkeypatch.delenv("HFMED_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    url = server.add("/a.npz")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set, so it cannot be fetched"):
        fetch(url, tmp_path / "a.npz", BODY_MD5, **FAST)
    assert server.requests == []


def test_hf_home_holds_the_cache_unless_hfmed_cache_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv("HFMED_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert cache_dir() == tmp_path / "hf" / "hfmed"
    monkeypatch.setenv("HFMED_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_hfmed_cache_overrides_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HFMED_CACHE", str(tmp_path / "elsewhere" / "cache"))
    assert cache_dir() == tmp_path / "elsewhere" / "cache"
    assert cache_dir().is_dir()


def test_the_default_cache_dir_is_under_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("HFMED_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "hfmed"
    assert cache_dir().is_dir()


def test_an_unusable_cache_folder_is_a_user_error(server, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    monkeypatch.setenv("HFMED_CACHE", str(blocker / "cache"))

    with pytest.raises(UserError, match="HFMED_CACHE") as caught:
        cache_dir()
    assert str(blocker / "cache") in str(caught.value)

    with pytest.raises(UserError, match="HFMED_CACHE"):
        fetch(server.add("/a.npz"), blocker / "a.npz", BODY_MD5, **FAST)


def test_an_empty_set_of_checksums_is_a_programming_error(server, tmp_path):
    with pytest.raises(ValueError):
        fetch(server.add("/a.npz"), tmp_path / "a.npz", [], **FAST)


def test_md5sum_reads_in_chunks_and_agrees_with_hashlib(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(BODY)
    assert md5sum(path, chunk_size=7) == md5sum(path) == BODY_MD5


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_progress_bar_is_drawn_on_a_terminal(server, tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(download.sys, "stderr", terminal)

    fetch(server.add("/a.npz"), tmp_path / "a.npz", BODY_MD5, backoff=0.01, timeout=5.0)

    assert "a.npz" in terminal.getvalue() and "293k" in terminal.getvalue()


@pytest.mark.parametrize("stderr, progress", [(Terminal, False), (io.StringIO, True)])
def test_the_progress_bar_is_off_when_asked_or_not_on_a_terminal(server, tmp_path, monkeypatch, stderr, progress):
    stream = stderr()
    monkeypatch.setattr(download.sys, "stderr", stream)

    fetch(server.add("/a.npz"), tmp_path / "a.npz", BODY_MD5, backoff=0.01, timeout=5.0, progress=progress)

    assert stream.getvalue() == ""
