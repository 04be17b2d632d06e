"""A local HTTP server on 127.0.0.1 for download tests (never the internet)."""

import contextlib
import functools
import http.server
import threading

import pytest


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder's files without logging each request."""

    def log_message(self, *args):
        pass


def serve(handler):
    """Starts a threaded server for ``handler`` on a free port; returns (server, base URL).
    The caller shuts it down and closes it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@contextlib.contextmanager
def served_folder(folder):
    """``folder`` served over HTTP on 127.0.0.1 for the block; yields its base URL."""
    server, url = serve(functools.partial(QuietHandler, directory=str(folder)))
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def use_weights_cache(folder, monkeypatch):
    """Point the weights cache at ``folder`` and forget any registry URL of the environment;
    returns ``folder``."""
    from c3d_extract.weights import hub

    monkeypatch.setenv("C3D_EXTRACT_CACHE", str(folder))
    monkeypatch.delenv(hub.REGISTRY_URL_ENV, raising=False)
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The weights cache in a folder of the test (import this fixture to use it)."""
    return use_weights_cache(tmp_path / "cache", monkeypatch)


@pytest.fixture
def mirror(tmp_path):
    """A local folder served over HTTP on 127.0.0.1; yields (folder, base URL)."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    with served_folder(folder) as url:
        yield folder, url
