#!/usr/bin/env python3
"""Whole-pipeline benchmark on a full Sentinel-2 tile (10980 x 10980, 12 bands uint16).

Prints, measured in the same run:
  1. the whole job with FPN-ResNet18-sized cloud and shadow models (tests/tools/make_test_models.py
     --width 64 --fpn 256, random weights) on each inference engine (oneDNN, OpenCV DNN), and
     the oneDNN / OpenCV time ratio (target <= 0.45);
  2. pipeline time / sum of pure model-inference time over the same chips (target <= 1.05);
  3. peak RSS of the streaming mode and of --in-memory (target < 2 GB for streaming);
  4. inference GFLOP/s (FLOPs of the direct convolutions, as `nimbus infer` counts them)
     against the FMA peak of this machine.
The merge-step ratio against the numpy reference is bench/bench_merge.py.

Usage: bench_pipeline.py [--work /tmp/nimbus-bench] [--build build] [--skip-fpn | --skip-embedded] [--size 10980]
                         [--engines onednn,opencv] [--realtime]
  --realtime runs the jobs under SCHED_FIFO (chrt -f 50, root) to shield them from other load.
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


def model_gflop(nimbus, path, scale, work):
    """GFLOP of one 1 x 12 x 512 x 512 pass as the oneDNN engine counts it (direct convolutions)."""
    import numpy as np
    chip = work / f"chip_{scale}.npy"
    if not chip.exists():
        np.save(chip, (np.random.default_rng(0).uniform(100, 5000, (1, 12, 512, 512)) * scale).astype(np.float32))
    out = subprocess.run([str(nimbus), "infer", str(path), "--input", str(chip), "--engine", "onednn", "--warmup",
                          "0"], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["gflop"]


def run(nimbus, tile, out_dir, extra, reuse, realtime=False):
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "report.json"
    if reuse and report.exists():
        return json.loads(report.read_text())
    if (out_dir / "mask.tif").exists():
        (out_dir / "mask.tif").unlink()
    cmd = [str(nimbus), "improve-cloud-mask", "--s2-raster", str(tile / "s2.tif"), "--product-mask",
           str(tile / "product_mask.tif"), "--out", str(out_dir / "mask.tif"), "--report", str(report), "-q", *extra]
    if realtime:
        cmd = ["chrt", "-f", "50", *cmd]
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
    ap.add_argument("--engines", default="onednn,opencv", help="engines to run the FPN-sized models on")
    ap.add_argument("--skip-embedded", action="store_true", help="only the FPN-sized models")
    ap.add_argument("--realtime", action="store_true")
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

    peak_cmd = [str(Path(a.build) / "bench" / "nimbus_fma_peak")]
    peak = subprocess.run(["chrt", "-f", "50", *peak_cmd] if a.realtime else peak_cmd, check=True,
                          capture_output=True, text=True).stdout
    import os
    peak_gflops = max(float(x) for x in re.findall(rf"threads={os.cpu_count()} gflops=([0-9.]+)", peak))

    rows = []
    configs = [] if a.skip_embedded else [("embedded spectral models, streaming", []),
                                          ("embedded spectral models, --in-memory", ["--in-memory"])]
    if not a.skip_fpn:
        for engine in reversed(a.engines.split(",")):
            configs.insert(0, (f"FPN-ResNet18-sized models, streaming, {engine}",
                               ["--cloud-model", str(models / "fpn_cloud_op11.onnx"), "--shadow-model",
                                str(models / "fpn_shadow_op11.onnx"), "--engine", engine]))
    gflop = None
    for name, extra in configs:
        r = run(nimbus, tile, work / re.sub(r"[^a-z0-9]+", "_", name.lower()), extra, a.reuse, a.realtime)
        row = {"config": name, **r, "ratio": r["seconds_total"] / r["seconds_inference"]}
        if "FPN" in name:
            if gflop is None:
                gflop = (model_gflop(nimbus, models / "fpn_cloud_op11.onnx", 1.0, work) +
                         model_gflop(nimbus, models / "fpn_shadow_op11.onnx", 1e-4, work))
            row["gflop_per_chip"] = gflop
            processed = r["chips_per_model"] - r["chips_skipped"]
            row["gflops"] = gflop * 1e9 * processed / r["seconds_inference"] / 1e9
        rows.append(row)

    print(f"tile {a.size}x{a.size}x12, machine FMA peak {peak_gflops:.0f} GFLOP/s (2 threads)")
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
    fpn = {r["config"].rsplit(", ", 1)[1]: r for r in rows if "FPN" in r["config"]}
    if "onednn" in fpn and "opencv" in fpn:
        print(f"FPN-sized job, oneDNN / OpenCV DNN time: {fpn['onednn']['seconds_total'] / fpn['opencv']['seconds_total']:.3f}"
              f" ({fpn['onednn']['seconds_total']:.1f} s vs {fpn['opencv']['seconds_total']:.1f} s)")


if __name__ == "__main__":
    main()
