#!/usr/bin/env python3
"""Whole-pipeline benchmark on a full Sentinel-2 tile (10980 x 10980, 12 bands uint16).

Prints, measured in the same run:
  1. pipeline time / sum of pure model-inference time over the same chips (target <= 1.15),
     with FPN-ResNet18-sized cloud and shadow models (tests/tools/make_test_models.py
     --width 64 --fpn 256, random weights) and with the embedded models;
  2. peak RSS of the streaming mode and of --in-memory (target < 2 GB for streaming);
  3. inference GFLOP/s (conv FLOPs of the ONNX graphs) against the FMA peak of this machine.
The merge-step ratio against the numpy reference is bench/bench_merge.py.

Usage: bench_pipeline.py [--work /tmp/nimbus-bench] [--build build] [--skip-fpn] [--size 10980]
"""
import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from reference.opencv_model import fix_for_opencv  # noqa: E402


def opencv_net(path):
    import cv2
    import numpy as np
    import onnx
    return cv2.dnn.readNetFromONNX(np.frombuffer(fix_for_opencv(onnx.load(str(path))).SerializeToString(), np.uint8))


def model_flops(path, chip=512):
    """FLOPs of one 1 x 12 x chip x chip forward pass, as OpenCV DNN counts them (convolutions dominate)."""
    net = opencv_net(path)
    return float(net.getFLOPS((1, 12, chip, chip)))


def run(nimbus, tile, out_dir, extra, reuse):
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "report.json"
    if reuse and report.exists():
        return json.loads(report.read_text())
    cmd = [str(nimbus), "improve-cloud-mask", "--s2-raster", str(tile / "s2.tif"), "--product-mask",
           str(tile / "product_mask.tif"), "--out", str(out_dir / "mask.tif"), "--report", str(report), "-q", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    r = json.loads(report.read_text())
    r["wall"] = wall
    report.write_text(json.dumps(r, indent=2))
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/nimbus-bench")
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--size", type=int, default=10980)
    ap.add_argument("--skip-fpn", action="store_true", help="only the embedded models (minutes instead of ~25)")
    ap.add_argument("--reuse", action="store_true", help="reuse reports of earlier runs in --work")
    a = ap.parse_args()
    work = Path(a.work)
    nimbus = Path(a.build) / "nimbus"
    tile = work / f"tile{a.size}"
    if not (tile / "product_mask.tif").exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "make_full_tile.py"), str(tile), "--size", str(a.size)],
                       check=True)
    models = work / "fpn-resnet18-sized"
    if not a.skip_fpn and not (models / "fpn_shadow_op11.onnx").exists():
        subprocess.run([sys.executable, str(ROOT / "tests" / "tools" / "make_test_models.py"), str(models),
                        "--width", "64", "--fpn", "256"], check=True, capture_output=True)

    peak = subprocess.run([str(Path(a.build) / "bench" / "nimbus_fma_peak")], check=True, capture_output=True,
                          text=True).stdout
    peak_gflops = max(float(x) for x in re.findall(r"gflops=([0-9.]+)", peak))

    rows = []
    configs = [("embedded spectral models, streaming", []), ("embedded spectral models, --in-memory",
                                                              ["--in-memory"])]
    if not a.skip_fpn:
        configs.insert(0, ("FPN-ResNet18-sized models, streaming",
                           ["--cloud-model", str(models / "fpn_cloud_op11.onnx"), "--shadow-model",
                            str(models / "fpn_shadow_op11.onnx")]))
    for name, extra in configs:
        r = run(nimbus, tile, work / re.sub(r"[^a-z0-9]+", "_", name.lower()), extra, a.reuse)
        row = {"config": name, **r, "ratio": r["seconds_total"] / r["seconds_inference"]}
        if "FPN" in name:
            flops = model_flops(models / "fpn_cloud_op11.onnx") + model_flops(models / "fpn_shadow_op11.onnx")
            row["gflop_per_chip"] = flops / 1e9
            processed = r["chips_per_model"] - r["chips_skipped"]
            row["gflops"] = flops * processed / r["seconds_inference"] / 1e9
        rows.append(row)

    print(f"full tile {a.size}x{a.size}x12, machine FMA peak {peak_gflops:.0f} GFLOP/s (2 threads)")
    for r in rows:
        if "gflop_per_chip" in r:
            print(f"FPN-sized models: {r['gflop_per_chip']:.1f} GFLOP per chip for cloud + shadow")
    print("| configuration | chips (skipped) | total s | inference s | total / inference | merge s | write s | "
          "peak RSS MB | inference GFLOP/s (% of peak) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        g = f"{r['gflops']:.0f} ({100 * r['gflops'] / peak_gflops:.0f} %)" if "gflops" in r else "-"
        print(f"| {r['config']} | {r['chips_per_model']} ({r['chips_skipped']}) | {r['seconds_total']:.1f} | "
              f"{r['seconds_inference']:.1f} | {r['ratio']:.3f} | {r['seconds_merge']:.2f} | {r['seconds_write']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {g} |")


if __name__ == "__main__":
    main()
