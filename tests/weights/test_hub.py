"""Registry downloads against a local HTTP server on 127.0.0.1 (never the internet)."""

import hashlib
import http.server
import json
import socket
import time

import pytest
import torch

from c3d_extract.errors import ChecksumError, DownloadError, WeightsNotFoundError
from c3d_extract.weights import hub
from c3d_extract.weights.hub import resolve_weights
from tests.support.http_server import serve
from tests.support.weights_support import numpy_params, pickle_state_dict

PICKLE = hub.REGISTRY["sports1m-pytorch"].filename


class _TruncatingHandler(http.server.BaseHTTPRequestHandler):
    """Announces the whole file, sends half of it, then hangs up."""

    payload = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload[: len(self.payload) // 2])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_registry_entries_are_data():
    for name, item in hub.REGISTRY.items():
        assert item.name == name and item.url.startswith("http") and item.filename
        assert item.url.endswith(item.filename)


def test_fetch_records_the_sha256_and_loads(source, cache, mirror, monkeypatch):
    folder, url = mirror
    torch.save(pickle_state_dict(numpy_params(source)), str(folder / PICKLE))
    expected_sha = hashlib.sha256((folder / PICKLE).read_bytes()).hexdigest()
    monkeypatch.setenv(hub.REGISTRY_URL_ENV, url)
    seen = []
    path = hub.fetch("sports1m-pytorch", progress=lambda got, total: seen.append((got, total)))
    assert path == cache / PICKLE and path.read_bytes() == (folder / PICKLE).read_bytes()
    assert not list(cache.glob("*.part"))
    size = path.stat().st_size
    assert seen[0] == (0, size) and seen[-1] == (size, size)
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    records = json.loads((cache / "registry.json").read_text())
    assert records["sports1m-pytorch"]["sha256"] == expected_sha
    assert records["sports1m-pytorch"]["url"] == f"{url}/{PICKLE}"
    # By name: checked against the record, converted, named as asked.
    weights = resolve_weights("sports1m-pytorch")
    assert weights.name == "sports1m-pytorch" and weights.sha256 == expected_sha
    assert weights.source_format == "c3d-pytorch-pickle"
    assert torch.equal(weights.state_dict["conv1a.weight"], source.conv1a.weight.detach())
    # A second fetch does not download again (the mirror is gone).
    (folder / PICKLE).unlink()
    assert hub.fetch("sports1m-pytorch") == path


def test_changed_file_fails_its_checksum(cache, mirror, monkeypatch):
    folder, url = mirror
    (folder / PICKLE).write_bytes(b"weights" * 1000)
    monkeypatch.setenv(hub.REGISTRY_URL_ENV, url)
    path = hub.fetch("sports1m-pytorch")
    path.write_bytes(b"tampered" * 1000)
    with pytest.raises(ChecksumError, match="sha256"):
        resolve_weights("sports1m-pytorch")
    with pytest.raises(ChecksumError):
        hub.fetch("sports1m-pytorch")


def test_truncated_transfer_leaves_no_file(cache, monkeypatch):
    handler = type("Handler", (_TruncatingHandler,), {"payload": bytes(range(256)) * 4096})
    server, url = serve(handler)
    try:
        with pytest.raises(DownloadError, match="broke off"):
            hub.fetch("sports1m-caffe", base_url=url)
    finally:
        server.shutdown()
        server.server_close()
    assert not cache.exists() or list(cache.iterdir()) == []
    with pytest.raises(WeightsNotFoundError, match="c3d-weights fetch sports1m-caffe"):
        resolve_weights("sports1m-caffe")


def test_server_down_fails_at_once_naming_the_url_and_the_manual_steps(cache):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(DownloadError) as caught:
        hub.fetch("sports1m-mmaction2", base_url=url)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert f"{url}/{hub.REGISTRY['sports1m-mmaction2'].filename}" in message
    assert "c3d-weights convert" in message
    assert not (cache / hub.REGISTRY["sports1m-mmaction2"].filename).exists()


def test_missing_file_on_the_server(cache, mirror):
    _, url = mirror
    with pytest.raises(DownloadError, match="HTTP 404"):
        hub.fetch("sports1m-caffe", base_url=url)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_unknown_names(cache):
    from c3d_extract.errors import WeightsError

    with pytest.raises(WeightsError, match="unknown weights name"):
        hub.fetch("sports1m-nonexistent")
    with pytest.raises(WeightsError, match="not a known registry name"):
        resolve_weights("sports1m-nonexistent")
