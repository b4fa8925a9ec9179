"""A library call changes nothing process-wide that it does not restore (GDAL's error
handler and block cache, OpenCV's thread count, spdlog's and Python's log levels), and
leaves nothing behind: no /vsimem file after a scene, flat memory over 30 scenes in
one Python process and in one `nimbus batch`.

Every check runs in a fresh interpreter (a script below), so what it observes is what a
host process sees, not what earlier tests left in pytest's process."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, python_package_dir

SCENE = 256   # pixels: tiny SAFE products keep 30 scenes within seconds
WINDOW = 128

# Loaded in every script: the same libraries the process (rasterio, cv2, nimbus) uses.
PRELUDE = r"""
import ctypes, ctypes.util, json, os, sys
sys.path.insert(0, os.environ["NIMBUS_PY_DIR"])
gdal = ctypes.CDLL("libgdal.so.32")
gdal.GDALGetCacheMax64.restype = ctypes.c_int64
gdal.VSIReadDirRecursive.restype = ctypes.POINTER(ctypes.c_char_p)
gdal.VSIReadDirRecursive.argtypes = [ctypes.c_char_p]
gdal.CPLError.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]

def vsimem_files():
    listing = gdal.VSIReadDirRecursive(b"/vsimem/")
    out = []
    i = 0
    while listing and listing[i]:
        out.append(listing[i].decode())
        i += 1
    return out

libc = ctypes.CDLL("libc.so.6")

def rss_kb():
    # Freed heap handed back first, so what remains is memory still held (a leak stays).
    libc.malloc_trim(0)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
"""


def _run_script(body, tmp_path, **env):
    script = tmp_path / "probe.py"
    script.write_text(PRELUDE + body)
    environment = dict(os.environ, NIMBUS_PY_DIR=str(python_package_dir()), **{k: str(v) for k, v in env.items()})
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=environment)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.fixture(scope="module")
def small_safe(tmp_path_factory):
    pytest.importorskip("rasterio")
    from synthetic_safe import write_safe
    safe, _, _ = write_safe(tmp_path_factory.mktemp("safe"), width=SCENE, height=SCENE)
    return safe


@pytest.fixture(autouse=True)
def _needs_module(nimbus_py):
    return nimbus_py


def test_gdal_error_handler_and_cache_of_the_host_survive_nimbus(small_safe, tmp_path):
    """The host's global GDAL error handler keeps receiving GDAL's messages after a Nimbus
    call that works and one that fails; rasterio keeps raising with GDAL's message and
    logging GDAL's warnings; GDAL's cache size is the host's."""
    (tmp_path / "garbage.tif").write_bytes(b"II*\x00 not a tiff")
    result, _ = _run_script(rf"""
import logging
import rasterio
from rasterio.errors import RasterioIOError
HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_char_p)
received = []
host_handler = HANDLER(lambda level, num, msg: received.append(msg.decode()))
gdal.CPLSetErrorHandler(host_handler)      # the host's own, process-wide

class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []
    def emit(self, record):
        self.messages.append(record.getMessage())

def host_sees_gdal(tag):
    # The host's handler gets a GDAL message raised outside any rasterio environment ...
    gdal.CPLError(2, 1, f"probe {{tag}}".encode())
    ok = received[-1:] == [f"probe {{tag}}"]
    # ... rasterio raises with GDAL's message ...
    try:
        rasterio.open("/nonexistent/dir/{{}}.tif".format(tag))
        raises = False
    except RasterioIOError as e:
        raises = "No such file or directory" in str(e)
    # ... and logs GDAL's warnings through Python logging inside its environment.
    records = Records()
    logging.getLogger("rasterio").addHandler(records)
    with rasterio.Env():
        gdal.CPLError(2, 1, f"env probe {{tag}}".encode())
    logging.getLogger("rasterio").removeHandler(records)
    logged = any(f"env probe {{tag}}" in m for m in records.messages)
    return {{"handler": ok, "rasterio_raises": raises, "rasterio_logs": logged}}

cache_before = gdal.GDALGetCacheMax64()
seen = {{"before": host_sees_gdal("before")}}
import nimbus
seen["after_import"] = host_sees_gdal("import")
nimbus.improve_cloud_mask({str(small_safe)!r}, {str(tmp_path / 'm.tif')!r}, threads=1, window={WINDOW},
                          engine="opencv")
seen["after_call"] = host_sees_gdal("call")
try:
    nimbus.improve_cloud_mask({str(tmp_path / 'missing.tif')!r}, {str(tmp_path / 'n.tif')!r},
                              product_mask={str(tmp_path / 'missing_pm.tif')!r})
except nimbus.InputError:
    pass
try:
    nimbus.read_raster({str(tmp_path / 'garbage.tif')!r})   # GDAL itself fails on this one
except nimbus.InputError:
    pass
seen["after_failure"] = host_sees_gdal("failure")
print(json.dumps({{"seen": seen, "cache": [cache_before, gdal.GDALGetCacheMax64()]}}))
""", tmp_path)
    for moment, checks in result["seen"].items():
        assert checks == {"handler": True, "rasterio_raises": True, "rasterio_logs": True}, moment
    assert result["cache"][0] == result["cache"][1], "a Nimbus call changed GDAL's block cache size"


def test_thread_count_and_log_levels_of_the_host_survive_nimbus(small_safe, tmp_path):
    """OpenCV's thread count after calls with threads=1 (one after the other and from
    concurrent Python threads), spdlog's global level and Python's logging levels."""
    result, _ = _run_script(rf"""
import logging, threading
import cv2
spdlog = ctypes.CDLL("libspdlog.so.1.10")
spdlog_level = spdlog._ZN6spdlog9get_levelEv    # spdlog::get_level(), the process-wide default logger's
cv2.setNumThreads(3)                              # the host's choice
logging.getLogger().setLevel(logging.INFO)
state = lambda: [cv2.getNumThreads(), spdlog_level(), logging.getLogger().level,
                 logging.getLogger("nimbus").level]
before = state()
import nimbus
after_import = state()
for engine in ("opencv", "onednn"):
    nimbus.improve_cloud_mask({str(small_safe)!r}, {str(tmp_path / 'seq.tif')!r}, threads=1, window={WINDOW},
                              engine=engine, overwrite=True)
after_calls = state()
errors = []
def run(i, threads):
    try:
        for k in range(3):
            nimbus.improve_cloud_mask({str(small_safe)!r}, {str(tmp_path)!r} + f"/t{{i}}_{{k}}.tif", threads=threads,
                                      window=64, engine="opencv")
    except Exception as e:
        errors.append(repr(e))
workers = [threading.Thread(target=run, args=(i, 1 + i % 2)) for i in range(3)]
for w in workers: w.start()
for w in workers: w.join()
print(json.dumps({{"before": before, "after_import": after_import, "after_calls": after_calls,
                  "after_concurrent_calls": state(), "errors": errors}}))
""", tmp_path)
    assert result["errors"] == []
    assert result["before"][0] == 3
    for moment in ("after_import", "after_calls", "after_concurrent_calls"):
        assert result[moment] == result["before"], moment


def _safe_scenes_in_python(safe, tmp_path, scenes):
    result, _ = _run_script(rf"""
import nimbus
rss, leftovers = [], []
for i in range({scenes}):
    nimbus.improve_cloud_mask({str(safe)!r}, {str(tmp_path)!r} + f"/m{{i}}.tif", threads=1, window={WINDOW},
                              engine="opencv")
    leftovers.append(vsimem_files())
    rss.append(rss_kb())
print(json.dumps({{"rss_kb": rss, "vsimem": leftovers}}))
""", tmp_path)
    return result


def test_safe_scenes_leave_no_vsimem_files_and_flat_memory_in_python(small_safe, tmp_path):
    result = _safe_scenes_in_python(small_safe, tmp_path, 30)
    assert all(files == [] for files in result["vsimem"]), result["vsimem"][0]
    rss = result["rss_kb"]
    per_scene_kb = (rss[29] - rss[9]) / 20
    print(f"Python process: RSS {rss[0] / 1024:.1f} MB after scene 1, {rss[29] / 1024:.1f} MB after scene 30; "
          f"growth over scenes 11-30: {per_scene_kb:.1f} kB/scene")
    assert per_scene_kb < 1024


def _batch_peak_rss_kb(nimbus_bin, safe, tmp_path, scenes):
    manifest = tmp_path / f"m{scenes}.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("s2_raster", "id"))
        w.writerows((safe, f"scene{i:02d}") for i in range(scenes))
    proc = subprocess.Popen([str(nimbus_bin), "batch", str(manifest), "--out-dir", str(tmp_path / f"out{scenes}"),
                             "--threads", "1", "--window", str(WINDOW), "--engine", "opencv", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode()
    assert proc.returncode == 0, stderr
    with open(tmp_path / f"out{scenes}" / "batch-report.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["done"] * scenes
    return usage.ru_maxrss


def test_safe_scenes_keep_batch_memory_flat(nimbus_bin, small_safe, tmp_path):
    """Peak RSS of one `nimbus batch` over 10 and over 30 copies of a SAFE product."""
    peak10 = _batch_peak_rss_kb(nimbus_bin, small_safe, tmp_path, 10)
    peak30 = _batch_peak_rss_kb(nimbus_bin, small_safe, tmp_path, 30)
    per_scene_kb = (peak30 - peak10) / 20
    print(f"nimbus batch: peak RSS {peak10 / 1024:.1f} MB over 10 scenes, {peak30 / 1024:.1f} MB over 30; "
          f"{per_scene_kb:.1f} kB/scene")
    assert per_scene_kb < 1024
