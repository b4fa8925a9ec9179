"""The page at `GET /` in a real browser (Debian's headless chromium): it loads, a run
submitted through the API appears on it and finishes with its mask's quicklook, and a
screenshot is saved (NIMBUS_SCREENSHOT_DIR, else the test's temporary directory)."""
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from nimbus_server import NimbusServer, run_body

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def chromium(*args, tmp_path):
    # --no-sandbox: CI runs as root, where chromium refuses its sandbox.
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def test_page_shows_runs_and_quicklooks(nimbus_bin, tmp_path):
    from synthetic_scene import make_scene, write_scene
    scene = write_scene(make_scene(560, 530, seed=11), tmp_path / "inputs")
    srv = NimbusServer(nimbus_bin, tmp_path / "data", [scene["s2"].parent]).start()
    try:
        dom = chromium("--dump-dom", srv.url, tmp_path=tmp_path)
        assert "<h1>Nimbus runs</h1>" in dom and "No runs yet" in dom
        assert 'http-equiv="refresh"' not in dom  # nothing to wait for

        c = srv.client()
        run_id = c.submit(run_body(scene, name="page <run>", parameters={"cloud_thr": 0.45}))
        dom = chromium("--dump-dom", srv.url, tmp_path=tmp_path)
        row = re.search(rf'<tr id="run-{run_id}" class="(\w+)">(.*?)</tr>', dom, re.S)
        assert row, dom
        assert "page &lt;run&gt;" in row.group(2)  # escaped, never markup
        assert "cloud_thr" in row.group(2)
        if row.group(1) not in ("done", "failed"):
            assert 'http-equiv="refresh"' in dom  # it refreshes while runs execute

        assert c.wait(run_id) == "done"
        # Let the browser's own refresh bring the finished state.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            dom = chromium("--dump-dom", srv.url, tmp_path=tmp_path)
            row = re.search(rf'<tr id="run-{run_id}" class="(\w+)">(.*?)</tr>', dom, re.S)
            if row.group(1) == "done":
                break
        assert row.group(1) == "done"
        img = re.search(r'<img src="(/runs/[^"]+\.png)"', row.group(2))
        assert img, row.group(2)
        r = c.session.get(srv.url.rstrip("/") + img.group(1))
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/png" and r.content[:4] == b"\x89PNG"
        assert 'http-equiv="refresh"' not in dom

        out_dir = Path(os.environ.get("NIMBUS_SCREENSHOT_DIR", tmp_path))
        out_dir.mkdir(parents=True, exist_ok=True)
        shot = out_dir / "server_page.png"
        chromium(f"--screenshot={shot}", "--window-size=1400,500", srv.url, tmp_path=tmp_path)
        assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 5000
    finally:
        srv.stop()
