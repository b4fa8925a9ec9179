#!/usr/bin/env python3
"""Model reuse across scenes: `nimbus batch` over 20 small scenes, two builds side by side.

Runs the same batch (20 synthetic 256 x 256 scenes, --window 256: one chip per model per
scene) with a build that loads the models for every scene (BEFORE, e.g. main's build) and
one that loads them once per process (AFTER), alternating the two, with

  1. the embedded models (nimbus_cloud_v2 and nimbus_shadow_v1, a few kB each), and
  2. FPN-ResNet18-sized cloud and shadow models (tests/tools/make_test_models.py --width 64
     --fpn 256, random weights, about 45 MB each; made once in WORK/fpn-resnet18-sized).

Prints per build the batch's wall time, the first scene's and the median later scene's
seconds (batch-report.csv, 10 ms resolution), and from them the model loading paid per
scene (BEFORE) and per process (AFTER): load per scene = (wall BEFORE - wall AFTER) /
(scenes - 1), or median later scene BEFORE - AFTER; load per process = first scene AFTER -
median later scene AFTER.

Usage: bench_model_reuse.py --before /work/main/build/nimbus --after build/nimbus
                            [--work /tmp/nimbus-bench-reuse] [--scenes 20] [--repeat 3]
                            [--threads 1] [--engine auto] [--skip-fpn] [--realtime]
  --realtime runs each batch under SCHED_FIFO (chrt -f 50, root) to shield it from other load.
"""
import argparse
import csv
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tools"))


def make_scenes(work, count, size):
    from synthetic_scene import make_scene, write_scene
    manifest = work / f"scenes_{count}x{size}.csv"
    if manifest.exists():
        return manifest
    rows = ["id,s2_raster,product_mask"]
    for i in range(count):
        paths = write_scene(make_scene(size, size, seed=i), work / "scenes" / f"scene{i:02d}")
        rows.append(f"scene{i:02d},{paths['s2']},{paths['product_mask']}")
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def fpn_models(work):
    models = work / "fpn-resnet18-sized"
    if not (models / "fpn_shadow_op11.onnx").exists():
        subprocess.run([sys.executable, str(ROOT / "tests" / "tools" / "make_test_models.py"), str(models),
                        "--width", "64", "--fpn", "256"], check=True, stdout=subprocess.DEVNULL)
    return ["--cloud-model", str(models / "fpn_cloud_op11.onnx"), "--shadow-model", str(models / "fpn_shadow_op11.onnx")]


def run_batch(nimbus, manifest, out_dir, extra, realtime):
    # A fresh output directory each time: finished scenes would otherwise be skipped.
    subprocess.run(["rm", "-rf", str(out_dir)], check=True)
    cmd = [str(nimbus), "-q", "batch", str(manifest), "--out-dir", str(out_dir), *extra]
    if realtime:
        cmd = ["chrt", "-f", "50", *cmd]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    with open(out_dir / "batch-report.csv") as f:
        rows = list(csv.DictReader(f))
    if {r["status"] for r in rows} != {"done"}:
        raise SystemExit(f"{nimbus}: not every scene was done: {rows}")
    seconds = [float(r["seconds"]) for r in rows]
    return {"wall": wall, "first": seconds[0], "later": statistics.median(seconds[1:]), "sum": sum(seconds)}


def best(runs, key):
    return min(r[key] for r in runs)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, type=Path, help="nimbus binary that loads models per scene")
    p.add_argument("--after", required=True, type=Path, help="nimbus binary that loads models once per process")
    p.add_argument("--work", type=Path, default=Path("/tmp/nimbus-bench-reuse"))
    p.add_argument("--scenes", type=int, default=20)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3, help="alternating runs per build; the best is kept")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--engine", default="auto")
    p.add_argument("--skip-fpn", action="store_true")
    p.add_argument("--realtime", action="store_true")
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    manifest = make_scenes(a.work, a.scenes, a.size)
    common = ["--window", str(a.size), "--threads", str(a.threads), "--engine", a.engine]
    sets = [("embedded models", [])]
    if not a.skip_fpn:
        sets.append(("FPN-ResNet18-sized models", fpn_models(a.work)))
    print(f"{a.scenes} scenes of {a.size}x{a.size}, --window {a.size}, --threads {a.threads}, --engine {a.engine}; "
          f"best of {a.repeat} alternating runs per build{' under SCHED_FIFO' if a.realtime else ''}")
    for label, models in sets:
        runs = {"before": [], "after": []}
        for _ in range(a.repeat):
            for which, binary in (("before", a.before), ("after", a.after)):
                runs[which].append(run_batch(binary, manifest, a.work / f"out_{which}", common + models,
                                              a.realtime))
        b, f = runs["before"], runs["after"]
        print(f"\n{label}")
        print(f"  {'build':<8} {'batch wall s':>12} {'first scene s':>14} {'later scene s (median)':>23}")
        for which in ("before", "after"):
            r = runs[which]
            print(f"  {which:<8} {best(r, 'wall'):>12.3f} {best(r, 'first'):>14.3f} {best(r, 'later'):>23.3f}")
        saved = best(b, "wall") - best(f, "wall")
        print(f"  batch {best(b, 'wall'):.2f} s -> {best(f, 'wall'):.2f} s: {saved:.2f} s "
              f"({100 * saved / best(b, 'wall'):.0f}%) less")
        # BEFORE loads the models for each of the N scenes, AFTER for the first only.
        print(f"  model loading: {saved / (a.scenes - 1):.3f} s per scene before (batch walls), "
              f"{best(b, 'later') - best(f, 'later'):.2f} s (report medians); once per process after: "
              f"first scene - median later scene = {best(f, 'first') - best(f, 'later'):.2f} s")

if __name__ == "__main__":
    main()
