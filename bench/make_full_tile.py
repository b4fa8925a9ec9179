#!/usr/bin/env python3
"""Writes a full Sentinel-2 tile (10980 x 10980, 12 bands uint16, nodata 0) for benchmarks,
by mirroring tiles of a synthetic scene (tests/tools/synthetic_scene.py) across the tile,
with a no-data wedge like a swath edge. Written band by band to bound memory.

Usage: make_full_tile.py OUT_DIR [--size 10980]
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "tools"))
from synthetic_scene import CRS, make_scene, transform_for  # noqa: E402


def mirrored(block, size):
    """Tiles `block` over size x size, mirroring every other copy so seams are continuous."""
    h, w = block.shape
    row = np.concatenate([block if (i % 2 == 0) else block[:, ::-1] for i in range(-(-size // w))], axis=1)[:, :size]
    return np.concatenate([row if (j % 2 == 0) else row[::-1] for j in range(-(-size // h))], axis=0)[:size]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--size", type=int, default=10980)
    a = ap.parse_args()
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = a.size
    scene = make_scene(2048, 2048, seed=11)
    rows, cols = np.mgrid[0:n, 0:n]
    outside = cols < (0.12 * n - 0.1 * rows)  # swath edge in the west
    profile = dict(driver="GTiff", width=n, height=n, count=12, dtype="uint16", crs=CRS, transform=transform_for(n),
                   nodata=0, tiled=True, blockxsize=512, blockysize=512, compress="zstd", predictor=2, BIGTIFF="YES",
                   interleave="band")
    with rasterio.open(out / "s2.tif", "w", **profile) as dst:
        for b in range(12):
            band = mirrored(scene["dn"][b], n)
            band[outside] = 0
            dst.write(band, b + 1)
    pm = mirrored(scene["product_mask"], n)
    pm[outside] = 0
    with rasterio.open(out / "product_mask.tif", "w", **dict(profile, count=1, dtype="uint8", nodata=100)) as dst:
        dst.write(pm, 1)
    print(out / "s2.tif")


if __name__ == "__main__":
    main()
