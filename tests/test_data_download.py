"""The real download code against a real HTTP server on 127.0.0.1 (Range support, dropped connections)."""

from __future__ import annotations

import http.server
import os
import re
import socket
import threading

import pytest

from cs336_basics.data import download as dl
from cs336_basics.data import generate_demo_corpus, load_token_file, prepare_dataset
from cs336_basics.data.cli import main
from cs336_basics.errors import UserError

PAYLOAD = os.urandom(300_000)


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-``; can drop the connection or ignore Range."""

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path.rsplit("/", 1)[-1])
        if body is None:
            self.send_error(404, "Not Found")
            return
        start, status = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and not srv.ignore_range:
            start, status = int(m.group(1)), 206
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        data = body[start:]
        if srv.drop_after is not None:  # send part of the body, then hang up
            data, srv.drop_after = data[: srv.drop_after], None
            self.wfile.write(data)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    srv.files = {"f.bin": PAYLOAD}
    srv.requests, srv.drop_after, srv.ignore_range = [], None, False
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}/files"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _no_retry_wait(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_DELAY_S", 0.0)


def test_full_download(server, tmp_path):
    dest = dl.download_file(f"{server.base}/f.bin", tmp_path / "f.bin", progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not dl.part_path(dest).exists()
    assert server.requests == [("/files/f.bin", None)]


def test_interrupted_download_resumes_on_the_next_call(server, tmp_path):
    server.drop_after = 100_000
    dest = tmp_path / "f.bin"
    with pytest.raises(UserError, match="re-run the same command to resume from byte 100000") as err:
        dl.download_file(f"{server.base}/f.bin", dest, progress=False, retries=0)
    assert "\n" not in str(err.value)
    assert not dest.exists() and dl.part_path(dest).stat().st_size == 100_000
    dl.download_file(f"{server.base}/f.bin", dest, progress=False, retries=0)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/files/f.bin", "bytes=100000-")
    assert not dl.part_path(dest).exists()


def test_dropped_connection_is_retried_within_one_call(server, tmp_path):
    server.drop_after = 12_345
    dest = dl.download_file(f"{server.base}/f.bin", tmp_path / "f.bin", progress=False, retries=2)
    assert dest.read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == [None, "bytes=12345-"]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    dest = tmp_path / "f.bin"
    dl.part_path(dest).write_bytes(b"stale partial data")
    server.ignore_range = True
    dl.download_file(f"{server.base}/f.bin", dest, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_file_is_finished_via_416(server, tmp_path):
    dest = tmp_path / "f.bin"
    dl.part_path(dest).write_bytes(PAYLOAD)
    dl.download_file(f"{server.base}/f.bin", dest, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_existing_file_is_not_fetched_again(server, tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"already here")
    dl.download_file(f"{server.base}/f.bin", dest, progress=False)
    assert server.requests == [] and dest.read_bytes() == b"already here"


def test_http_error_says_how_to_fetch_by_hand(server, tmp_path):
    with pytest.raises(UserError, match=r"HTTP 404.*by hand.*put it at") as err:
        dl.download_file(f"{server.base}/missing.txt", tmp_path / "missing.txt", progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "missing.txt").exists()


def test_no_network_fails_in_one_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/TinyStoriesV2-GPT4-valid.txt"
    dest = tmp_path / "tinystories" / "TinyStoriesV2-GPT4-valid.txt"
    with pytest.raises(UserError) as err:
        dl.download_file(url, dest, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and url in msg and str(dest) in msg and "by hand" in msg


def test_base_url_from_environment(server, tmp_path, monkeypatch):
    server.files = {name: name.encode() * 100 for name in dl.TINYSTORIES_FILES.values()}
    monkeypatch.setenv(dl.BASE_URL_ENV, server.base)
    paths = dl.download_tinystories(tmp_path, progress=False)
    for split, name in dl.TINYSTORIES_FILES.items():
        assert paths[split] == tmp_path / "tinystories" / name
        assert paths[split].read_bytes() == name.encode() * 100


def test_cli_download(server, tmp_path, capsys):
    server.files = {name: b"hello" for name in dl.TINYSTORIES_FILES.values()}
    main(
        [
            "download",
            "--data-dir",
            str(tmp_path),
            "--base-url",
            server.base,
            "--split",
            "valid",
            "--no-progress",
        ]
    )
    assert (tmp_path / "tinystories" / dl.TINYSTORIES_FILES["valid"]).read_bytes() == b"hello"
    assert not (tmp_path / "tinystories" / dl.TINYSTORIES_FILES["train"]).exists()


def test_prepare_tinystories_end_to_end_from_local_server(server, tmp_path):
    server.files = {
        dl.TINYSTORIES_FILES["train"]: generate_demo_corpus(seed=21, num_stories=120).encode(),
        dl.TINYSTORIES_FILES["valid"]: generate_demo_corpus(seed=22, num_stories=10).encode(),
    }
    ds = prepare_dataset("tinystories", tmp_path, vocab_size=300, progress=False, base_url=server.base)
    assert ds.dataset == "tinystories" and ds.vocab_size == 300
    assert ds.train_tokens == tmp_path / "tinystories" / "v300-cs336" / "train.npy"
    for path in (ds.train_tokens, ds.valid_tokens):
        assert len(load_token_file(path, vocab_size=300, tokenizer_path=ds.tokenizer_path)) > 0
