#!/usr/bin/env python3
"""The `downsampling` trade, measured in one run: time per scene at ds = 1, 2, 3 and how
far the ds = 2 / 3 masks are from the ds = 1 mask (IoU of the masked pixels, share of pixels
changed), on the demo scene and on the labelled chips of ../shared/data (each chip mirrored
to 1536 x 1536 so the 512-pixel chips of the fixed-size shadow model fit the decimated
scene; cloud IoU against the labels is reported on the central, unmirrored copy). With
--tile, also the time per full tile (bench/make_full_tile.py) with the FPN-sized models.

Usage: bench_downsampling.py [--build build] [--data ../shared/data] [--work /tmp/nimbus-bench/ds] [--realtime]
                             [--tile /tmp/nimbus-bench/tile10980 --models /tmp/nimbus-bench/fpn-resnet18-sized]
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests" / "tools"))
import evaluate  # noqa: E402


REALTIME = []


def run(nimbus, s2, pm, out_dir, ds, extra=()):
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run([*REALTIME, str(nimbus), "improve-cloud-mask", "--s2-raster", str(s2), "--product-mask", str(pm), "--out",
                    str(out_dir / "mask.tif"), "--keep-probabilities", str(out_dir), "--report",
                    str(out_dir / "report.json"), "--downsampling", str(ds), "-q", *map(str, extra)], check=True)
    seconds = time.perf_counter() - t0
    with rasterio.open(out_dir / "mask.tif") as m, rasterio.open(out_dir / "cloud_probability.tif") as c:
        return m.read(1), c.read(1), seconds, json.loads((out_dir / "report.json").read_text())


def agreement(mask, ref):
    a, b = mask == 1, ref == 1
    union = np.sum(a | b)
    return np.sum(a & b) / max(union, 1), np.mean(a != b)


def mirror3(a):
    row = np.concatenate([a[..., ::-1], a, a[..., ::-1]], axis=-1)
    return np.concatenate([row[..., ::-1, :], row, row[..., ::-1, :]], axis=-2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--work", default="/tmp/nimbus-bench/ds")
    ap.add_argument("--tile")
    ap.add_argument("--models")
    ap.add_argument("--realtime", action="store_true", help="run the jobs under chrt -f 50 (root)")
    a = ap.parse_args()
    if a.realtime:
        REALTIME.extend(["chrt", "-f", "50"])
    nimbus, work = Path(a.build) / "nimbus", Path(a.work)
    work.mkdir(parents=True, exist_ok=True)

    scenes = []
    demo = work / "demo"
    if not (demo / "s2.tif").exists():
        subprocess.run([sys.executable, str(ROOT / "tests" / "tools" / "synthetic_scene.py"), str(demo), "--width",
                        "1536", "--height", "1536", "--seed", "7", "--nodata-wedge"], check=True,
                       capture_output=True)
    scenes.append(("demo scene (synthetic, 1536²)", demo / "s2.tif", demo / "product_mask.tif", None))
    for chip in evaluate.load_chips(Path(a.data)):
        d = work / chip["name"].replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        big = dict(chip, dn=mirror3(chip["dn"]))
        evaluate.write_inputs(big, d)
        scenes.append((f"{chip['name']} (mirrored 3x3)", d / "s2.tif", d / "pm.tif", chip))

    print("| scene | ds | seconds | chips per model | mask IoU vs ds=1 | pixels changed vs ds=1 | "
          "cloud IoU vs labels (p > 0.3) |")
    print("|---|---|---|---|---|---|---|")
    for name, s2, pm, chip in scenes:
        ref = None
        for ds in (1, 2, 3):
            mask, cloud, seconds, report = run(nimbus, s2, pm, s2.parent / f"ds{ds}", ds)
            if ref is None:
                ref = mask
            iou, changed = agreement(mask, ref)
            label = "-"
            if chip is not None:
                h, w = chip["cloud"].shape
                centre = cloud[h:2 * h, w:2 * w]
                label = f"{evaluate.scores((centre > 0.3) & (centre != 100), chip['cloud'], chip['valid'])['iou']:.3f}"
            print(f"| {name} | {ds} | {seconds:.2f} | {report['chips_per_model']} | {iou:.4f} | "
                  f"{100 * changed:.2f} % | {label} |", flush=True)

    if a.tile:
        tile, models = Path(a.tile), Path(a.models)
        extra = ["--cloud-model", models / "fpn_cloud_op11.onnx", "--shadow-model", models / "fpn_shadow_op11.onnx"]
        ref = None
        for ds in (1, 2, 3):
            mask, _, seconds, report = run(nimbus, tile / "s2.tif", tile / "product_mask.tif", work / f"tile_ds{ds}",
                                           ds, extra)
            ref = mask if ref is None else ref
            iou, changed = agreement(mask, ref)
            print(f"| full tile, FPN-sized models | {ds} | {seconds:.1f} | {report['chips_per_model']} | {iou:.4f} | "
                  f"{100 * changed:.2f} % | - |", flush=True)


if __name__ == "__main__":
    main()
