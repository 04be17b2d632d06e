"""A local HTTP server on 127.0.0.1 for download tests (never the internet)."""

import http.server
import threading


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
