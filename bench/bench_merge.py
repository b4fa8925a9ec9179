#!/usr/bin/env python3
"""Merge step (threshold + OR + disk dilation + min_area) on a full tile: Nimbus (C++)
against the numpy/scipy/scikit-image reference of the spec, measured in the same run,
with identical output required.

Usage: bench_merge.py [--size 10980] [--min-area 50] [--work DIR] [--build build]
"""
import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from reference.farmvibes_reference import merge_cloud_masks  # noqa: E402


def smooth_field(rng, n, cells):
    coarse = rng.random((cells, cells)).astype(np.float32)
    return np.clip(ndimage.zoom(coarse, n / cells, order=1)[:n, :n], 0, 1).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=10980)
    ap.add_argument("--min-area", type=int, default=50)
    ap.add_argument("--work", default="/tmp/nimbus-bench")
    ap.add_argument("--build", default=str(ROOT / "build"))
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    n = a.size
    rng = np.random.default_rng(0)
    cloud = smooth_field(rng, n, 400) ** 2
    shadow = smooth_field(rng, n, 500) ** 3
    cloud[:, : n // 10] = 100.0  # a no-data strip
    product = (smooth_field(rng, n, 300) > 0.93).astype(np.uint8)
    cloud.tofile(work / "cloud.f32")
    shadow.tofile(work / "shadow.f32")
    product.tofile(work / "product.u8")

    out = subprocess.run([str(Path(a.build) / "bench" / "nimbus_merge_bench"), str(work / "cloud.f32"),
                          str(work / "shadow.f32"), str(work / "product.u8"), str(n), str(n), str(a.min_area),
                          str(work / "mask.u8"), "3"], check=True, capture_output=True, text=True)
    nimbus_s = float(out.stdout.strip())
    nimbus_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    t0 = time.perf_counter()
    ref = merge_cloud_masks(cloud, shadow, product, 0.3, 0.2, 5, a.min_area)
    ref_s = time.perf_counter() - t0

    ours = np.fromfile(work / "mask.u8", np.uint8).reshape(n, n)
    identical = bool(np.array_equal(ours, ref))
    print(f"merge on {n}x{n}, min_area={a.min_area}: nimbus {nimbus_s:.2f} s (best of 3, peak RSS "
          f"{nimbus_rss:.0f} MB), numpy/scipy/skimage reference {ref_s:.2f} s -> {ref_s / nimbus_s:.1f}x faster; "
          f"outputs identical: {identical}")
    if not identical:
        sys.exit("outputs differ")


if __name__ == "__main__":
    main()
