"""Starts `nimbus serve` for tests and talks to it as FarmVibes' Python client does
(spec /work/shared/spec/farmvibes-rest-api.md, section 1.2): one requests.Session,
Accept and Content-Type application/json on every request, bodies serialised by hand."""
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import requests

WORKFLOW = "data_ingestion/sentinel2/improve_cloud_mask"
EMBEDDED = {"cloud_model": "embedded:nimbus_cloud_v2", "shadow_model": "embedded:nimbus_shadow_v1"}
PRODUCT = {
    "product_name": "S2A_MSIL2A_20210501T101031_N0300_R022_T33UUP_20210501T130513", "orbit_number": 30593,
    "relative_orbit_number": 22, "orbit_direction": "DESCENDING", "platform": "A", "extra_info": {},
    "tile_id": "33UUP", "processing_level": "L2A",
}
GEOMETRY = {"type": "Polygon", "coordinates": [[[13.5, 52.2], [14.0, 52.2], [14.0, 52.6], [13.5, 52.6], [13.5, 52.2]]]}
STATUSES = {"pending", "queued", "running", "failed", "done", "cancelled", "deleting", "deleted"}


def stac_item(item_id, href, data_type):
    """A data object as the client encodes it (spec 4.5, 4.6)."""
    props = dict(PRODUCT)
    if data_type == "Sentinel2Raster":
        props["bands"] = {b: i for i, b in enumerate(
            ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"])}
    else:
        props["bands"] = {"cloud": 0}
        props["categories"] = ["Clear", "Cloud"]
    props.update({"start_datetime": "2021-05-01T10:10:31+00:00", "end_datetime": "2021-05-01T10:10:31+00:00",
                  "datetime": "2021-05-01T10:10:31Z"})
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "properties": props, "geometry": GEOMETRY,
            "links": [], "assets": {f"{item_id}-asset": {"href": str(href), "type": "image/tiff"}},
            "bbox": [13.5, 52.2, 14.0, 52.6], "stac_extensions": [], "terravibes_data_type": data_type}


def run_body(scene, name="icm-test", parameters=None, s2_href=None, mask_href=None):
    return {"name": name, "workflow": WORKFLOW, "parameters": parameters,
            "user_input": {"s2_raster": stac_item("s2", s2_href or scene["s2"], "Sentinel2Raster"),
                           "product_mask": stac_item("pm", mask_href or scene["product_mask"], "Sentinel2CloudMask")}}


class Client:
    """The HTTP behaviour of vibe_core.client.FarmvibesAiClient."""

    def __init__(self, base_url, token=None):
        self.base = base_url
        self.session = requests.Session()
        self.headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body)
        return self.session.request(method, self.base + path, data=data, headers=self.headers, timeout=30)

    def submit(self, body):
        r = self.request("POST", "v0/runs", body)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def status(self, run_id):
        r = self.request("GET", f"v0/runs?ids={run_id}")
        assert r.status_code == 200, r.text
        return r.json()[0]["details.status"]

    def wait(self, run_id, until=("done", "failed"), timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(run_id)
            if st in until:
                return st
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} still {st} after {timeout} s")


class NimbusServer:
    """`nimbus serve --port 0` on 127.0.0.1; the port is read from its first line."""

    def __init__(self, binary, data_dir, input_roots=(), args=(), env=None):
        self.binary, self.data_dir, self.input_roots, self.args = binary, Path(data_dir), input_roots, list(args)
        self.env = env
        self.proc = None
        self.port = None
        self.log = []

    def start(self):
        cmd = [str(self.binary), "serve", "--data-dir", str(self.data_dir), "--port", "0"]
        for root in self.input_roots:
            cmd += ["--input-root", str(root)]
        for k, v in EMBEDDED.items():
            cmd += ["--param", f"{k}={v}"]
        cmd += self.args
        env = dict(os.environ, **(self.env or {}))
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"nimbus serve exited ({self.proc.wait()}): {''.join(self.log)}")
            self.log.append(line)
            m = re.search(r"listening on http://([^/]+):(\d+)/", line)
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        raise AssertionError("nimbus serve did not start")

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/"

    def client(self, token=None):
        return Client(self.url, token)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


class GatedFileServer:
    """An http server whose file answers wait until release(): a run that downloads its
    input stays executing for as long as a test needs."""

    def __init__(self, files):
        import http.server
        self.files = {f"/{Path(p).name}": Path(p) for p in files}
        self.gate = threading.Event()
        self.requested = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = outer.files.get(self.path)
                if path is None:
                    self.send_error(404)
                    return
                outer.requested.set()
                outer.gate.wait(120)
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{Path(path).name}"

    def release(self):
        self.gate.set()

    def close(self):
        self.gate.set()
        self.httpd.shutdown()
