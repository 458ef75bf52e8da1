"""A small real HTTP file server on loopback for tests: serves bytes by path, with HEAD, byte
ranges, optional Basic auth, and an optional fault (connections cut midway through a body)."""
from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    """``files``: path -> bytes. ``auth``: (user, password) required on every request, if set.
    ``cut_after``: path -> byte count after which every response body of it is cut (the
    connection closed with the Content-Length unmet: a connection lost midway)."""

    def __init__(self, files: dict[str, bytes], auth: tuple[str, str] | None = None,
                 cut_after: dict[str, int] | None = None):
        self.files = files
        self.auth = auth
        self.cut_after = cut_after or {}
        self.requests: list[tuple[str, str, dict]] = []   # (method, path, headers)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):   # quiet
                pass

            def _authorised(self) -> bool:
                given = self.headers.get("Authorization")
                server.requests.append((self.command, self.path, dict(self.headers)))
                if server.auth is None:
                    return True
                expected = "Basic " + base64.b64encode(":".join(server.auth).encode()).decode()
                if given == expected:
                    return True
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def _serve(self, body: bool):
                if not self._authorised():
                    return
                data = server.files.get(self.path.split("?", 1)[0])
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start, end = 0, len(data)
                ranged = self.headers.get("Range")
                if ranged and ranged.startswith("bytes="):
                    first, _, last = ranged[6:].partition("-")
                    start = int(first or 0)
                    end = min(len(data), int(last) + 1) if last else len(data)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(end - start))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if not body:
                    return
                cut = server.cut_after.get(self.path.split("?", 1)[0])
                chunk = data[start:end]
                if cut is not None and end > cut:
                    self.wfile.write(chunk[:max(0, cut - start)])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)   # the body ends short of its Content-Length
                    return
                self.wfile.write(chunk)

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}{path}"

    def __enter__(self) -> "FileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
