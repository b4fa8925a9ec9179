"""A local HTTP server for network-input tests: serves files from a directory on
127.0.0.1 with Range requests (single ranges, as GDAL's /vsicurl/ asks), counts requests
and bytes per path, and can misbehave on demand: answer 1 request in N with 503, answer
404 for chosen paths, accept connections and never answer, or serve JSON as a STAC API
(chunked, no HEAD, no ranges).

    with RangeServer(directory) as server:
        url = server.url("item.json")
        ... server.requests["/item.json"], server.bytes_sent["/b02.tif"]
"""
import collections
import http.server
import os
import re
import threading
import time
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _serve(self, body):
        server = self.server.owner
        path = self.path.split("?", 1)[0]
        with server.lock:
            server.requests[path] += 1
            server.total_requests += 1
            n = server.total_requests
            queries = server.queries[path]
            queries.append(self.path.partition("?")[2])
        hang = server.hang_under is not None and path.startswith(server.hang_under)
        if hang and server.hang_from_byte:  # answer the headers, hang on the pixel data
            m = _RANGE.match((self.headers.get("Range") or "").strip())
            hang = bool(m and m.group(1) and int(m.group(1)) >= server.hang_from_byte)
        if hang:
            server.hung.wait(60)  # never answers within any test's timeout
            self.close_connection = True
            return
        if server.fail_every and n % server.fail_every == 0:
            with server.lock:
                server.failures += 1
            self._plain(503, b"try again")
            return
        if (server.token is not None and path.startswith(server.signed_under)
                and self.path.partition("?")[2] != server.token):
            self._plain(403, b"signature mismatch")  # as signed blob storage answers
            return
        file = (server.root / path.lstrip("/")).resolve()
        if path in server.missing or server.root not in file.parents or not file.is_file():
            self._plain(404, b"not found")
            return
        if server.api_style and path.endswith(".json"):
            self._as_stac_api(file.read_bytes(), body)
            return
        size = file.stat().st_size
        status, start, end = 200, 0, size - 1
        header = self.headers.get("Range")
        if header:
            m = _RANGE.match(header.strip())
            if not m or (not m.group(1) and not m.group(2)):
                self._plain(416, b"bad range")
                return
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # suffix range: the last N bytes
                start, end = max(0, size - int(m.group(2))), size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        with open(file, "rb") as f:  # only the range: band files may be gigabytes
            f.seek(start)
            chunk = f.read(end + 1 - start)
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(chunk)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body:
            self.wfile.write(chunk)
            with server.lock:
                server.bytes_sent[path] += len(chunk)

    def _as_stac_api(self, data, body):
        """As a STAC API answers an item: no HEAD, Range ignored, a chunked body of unknown length."""
        if not body:
            self._plain(405, b"")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/geo+json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(0, len(data), 1000):
            part = data[i:i + 1000]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")
        with self.server.owner.lock:
            self.server.owner.bytes_sent[self.path.split("?", 1)[0]] += len(data)

    def _plain(self, status, text):
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(text)

    def do_GET(self):
        self._serve(body=True)

    def do_HEAD(self):
        self._serve(body=False)


class RangeServer:
    """Serves `root` on 127.0.0.1 (an ephemeral port) in a background thread."""

    def __init__(self, root, fail_every=0, hang_under=None, missing=(), api_style=False, token=None,
                 signed_under="/", hang_from_byte=0):
        """fail_every=N: every Nth request gets 503; hang_under="/dir/": requests for paths under it
        ("/" for all) are accepted and never answered (with hang_from_byte=N: only ranges starting at
        byte N or later, e.g. the tiles after a COG's header); api_style: *.json answered as a STAC API
        does (no HEAD, no ranges, chunked); missing: paths answered with 404; token: the query
        string every request for a path under `signed_under` must carry (else 403), as signed
        blob storage answers."""
        self.root = Path(root).resolve()
        self.fail_every = fail_every
        self.hang_under = hang_under
        self.hang_from_byte = hang_from_byte
        self.api_style = api_style
        self.token = token
        self.signed_under = signed_under
        self.failures = 0
        self.missing = {"/" + m.lstrip("/") for m in missing}
        self.lock = threading.Lock()
        self.hung = threading.Event()
        self.requests = collections.Counter()
        self.bytes_sent = collections.Counter()
        self.queries = collections.defaultdict(list)
        self.total_requests = 0
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self):
        return self._httpd.server_address[1]

    def url(self, name=""):
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.hung.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
