#!/usr/bin/env python3
"""STAC item over HTTP against local files, on a full Sentinel-2 tile (10980 x 10980).

The tile is bench/make_full_tile.py's (a synthetic scene mirrored across the tile, with a
no-data wedge), split into one COG per band at its native resolution (10/20/60 m, DEFLATE,
512-pixel tiles, as Earth Search serves them; SCL at 20 m from the tile's product mask) and
described by an Earth Search v1 item. The same item is run from local files and through the
Range-capable test server on 127.0.0.1 (tests/python/http_range_server.py), in the same run:

  (a) a one-chip field (50 x 50 pixels inside chip 14,14 of the 29 x 29 grid),
  (b) a 10 km x 10 km area of interest (1000 x 1000 pixels, tile centre),
  (c) the full tile,

each with time, bytes read (HTTP: bytes the server sent; local: the process's read() bytes,
/proc/PID/io rchar, sampled), peak RSS (the run's --report), against the full-tile local run;
and the full tile over HTTP / local time ratio (target <= 1.1). Models: Nimbus' embedded
defaults (nimbus_cloud_v2, nimbus_shadow_v1; fast), not FarmVibes' FPNs.

Usage: bench_stac.py [--work /tmp/nimbus-bench-stac] [--build build] [--size 10980] [--skip-full]
"""
import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "tests" / "tools"))
from http_range_server import RangeServer  # noqa: E402
from synthetic_band_cogs import stac_item  # noqa: E402
from synthetic_safe import RES  # noqa: E402
from synthetic_scene import BANDS  # noqa: E402


def band_cogs(work, size):
    """One COG per band (and SCL) from make_full_tile.py's 12-band stack."""
    tile = work / "tile"
    if not (tile / "s2.tif").exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "make_full_tile.py"), str(tile), "--size", str(size)],
                       check=True)
    cogs = work / "cogs"
    cogs.mkdir(exist_ok=True)
    co = ["-of", "COG", "-co", "COMPRESS=DEFLATE", "-co", "BLOCKSIZE=512", "-co", "OVERVIEWS=NONE", "-q"]
    for i, band in enumerate(BANDS):
        out = cogs / f"{band}.tif"
        if out.exists():
            continue
        res = RES[band]
        resample = [] if res == 10 else ["-tr", str(res), str(res), "-r", "average"]
        subprocess.run(["gdal_translate", "-b", str(i + 1), *resample, *co, str(tile / "s2.tif"), str(out)],
                       check=True)
    scl = cogs / "SCL.tif"
    if not scl.exists():
        # Product mask 1 -> SCL 9 (cloud high), 0 -> 4 (vegetation), nodata (100) -> 0, at 20 m.
        tmp = work / "scl_10m.tif"
        subprocess.run(["gdal_calc.py", "--quiet", "-A", str(tile / "product_mask.tif"), "--outfile", str(tmp),
                        "--calc", "where(A == 1, 9, where(A == 0, 4, 0))", "--type", "Byte", "--NoDataValue", "0",
                        "--overwrite", "--co", "COMPRESS=DEFLATE", "--co", "TILED=YES"], check=True)
        subprocess.run(["gdal_translate", "-tr", "20", "20", "-r", "nearest", *co, str(tmp), str(scl)], check=True)
        tmp.unlink()
    return cogs


def run(nimbus, source, out, extra):
    """Runs improve-cloud-mask; returns (wall seconds, report, rchar bytes sampled from /proc)."""
    report = out.with_suffix(".json")
    start = time.perf_counter()
    proc = subprocess.Popen([str(nimbus), "improve-cloud-mask", "--s2-raster", str(source), "--out", str(out),
                             "--report", str(report), "-q", *extra], stderr=subprocess.PIPE, text=True)
    rchar = [0]

    def sample():
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/io").read_text().splitlines():
                    if line.startswith("rchar:"):
                        rchar[0] = int(line.split()[1])
            except OSError:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, err = proc.communicate()
    sampler.join()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {err}")
    return seconds, json.loads(report.read_text()), rchar[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/nimbus-bench-stac")
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--size", type=int, default=10980)
    ap.add_argument("--skip-full", action="store_true", help="only the field and the 10 km AOI")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    nimbus = Path(a.build) / "nimbus"
    cogs = band_cogs(work, a.size)
    band_bytes = sum(f.stat().st_size for f in cogs.glob("*.tif"))
    (work / "item_local.json").write_text(json.dumps(stac_item(lambda b: str(cogs / f"{b}.tif"))))
    (work / "item.json").write_text(json.dumps(stac_item(lambda b: f"cogs/{b}.tif")))

    def bbox(x0, y0, x1, y1):
        return ["--bbox", f"{300000 + 10 * x0},{5109840 - 10 * y1},{300000 + 10 * x1},{5109840 - 10 * y0}",
                "--aoi-crs", "EPSG:32631"]

    centre = a.size // 2
    cases = [("field (1 chip, 50x50 px)", bbox(5440, 5450, 5490, 5500)),
             ("10 km x 10 km AOI", bbox(centre - 500, centre - 500, centre + 500, centre + 500))]
    if not a.skip_full:
        cases.append(("full tile", []))
    results = {}
    for name, extra in cases:
        for where in ("local", "http"):
            out = work / f"{where}_{len(results)}.tif"
            if where == "local":
                seconds, report, rchar = run(nimbus, work / "item_local.json", out, extra)
                sent = rchar
            else:
                with RangeServer(work) as server:
                    seconds, report, _ = run(nimbus, server.url("item.json"), out, extra)
                sent = sum(n for path, n in server.bytes_sent.items() if path.startswith("/cogs/"))
            results[(name, where)] = {"seconds": seconds, "bytes": sent, "peak_rss_mb": report["peak_rss_mb"],
                                      "chips": report["chips_per_model"], "mask": out}
            if where == "http":
                # Over HTTP the mask must be the local run's, pixel for pixel (and on the same grid).
                with rasterio.open(results[(name, "local")]["mask"]) as want, rasterio.open(out) as got:
                    if want.transform != got.transform or not np.array_equal(want.read(), got.read()):
                        raise SystemExit(f"{name}: the mask over HTTP differs from the local files' mask")
            print(f"{name:28s} {where:5s} {seconds:8.2f} s  {sent / 1e6:9.1f} MB read  "
                  f"{report['peak_rss_mb']:7.0f} MB RSS  {report['chips_per_model']} chips/model", flush=True)
    print(f"\nband files: {band_bytes / 1e6:.1f} MB; models: embedded defaults (nimbus_cloud_v2, nimbus_shadow_v1)")
    full = results.get(("full tile", "local"))
    if full:
        print("\nagainst the full-tile local run:")
        for (name, where), r in results.items():
            print(f"  {name:28s} {where:5s} time {r['seconds'] / full['seconds']:6.3f}x  "
                  f"bytes {r['bytes'] / band_bytes * 100:6.2f} % of the band files  "
                  f"RSS {r['peak_rss_mb'] / full['peak_rss_mb']:5.2f}x")
        http = results[("full tile", "http")]
        print(f"\nfull tile over HTTP / local files: {http['seconds'] / full['seconds']:.3f}x (target <= 1.1)")


if __name__ == "__main__":
    main()
