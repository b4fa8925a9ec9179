#!/usr/bin/env python3
"""Deterministic synthetic Sentinel-2 L2A scenes for the demo, tests and benchmarks.

A scene is a 12-band uint16 GeoTIFF (B01..B12 without B10, DN = reflectance x 10000,
nodata 0) with fields of vegetation, bare soil and water, thick and thin clouds,
their shadows cast to the south-east, and optionally a no-data wedge like the edge
of a Sentinel-2 swath. With it come the product's own cloud mask (only the thick
cloud cores, as an L2A product mask often is) and the true cloud/shadow labels.

Usage: synthetic_scene.py OUT_DIR [--width W] [--height H] [--seed S] [--nodata-wedge]
"""
import argparse
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from scipy import ndimage

BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
# Typical surface reflectance spectra per band.
SPECTRA = {
    "vegetation": [0.03, 0.04, 0.07, 0.04, 0.11, 0.28, 0.33, 0.36, 0.38, 0.38, 0.20, 0.10],
    "soil": [0.10, 0.12, 0.16, 0.20, 0.23, 0.25, 0.27, 0.28, 0.29, 0.29, 0.34, 0.28],
    "water": [0.06, 0.06, 0.05, 0.03, 0.02, 0.015, 0.012, 0.01, 0.008, 0.008, 0.005, 0.003],
    "cloud": [0.46, 0.45, 0.44, 0.44, 0.45, 0.46, 0.47, 0.47, 0.47, 0.30, 0.34, 0.24],
}
CRS = "EPSG:32631"


def smooth_noise(rng, shape, sigma):
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def make_scene(width, height, seed=0, nodata_wedge=False, cloud_cover=0.2):
    """Returns dict with dn [12,H,W] uint16, product_mask [H,W] uint8, cloud/shadow truth [H,W] bool."""
    rng = np.random.default_rng(seed)
    shape = (height, width)
    land = smooth_noise(rng, shape, 40)
    water = land < -1.3
    soil = (~water) & (smooth_noise(rng, shape, 12) > 0.4)
    surface = np.empty((12, height, width), np.float32)
    for b in range(12):
        surface[b] = np.where(water, SPECTRA["water"][b], np.where(soil, SPECTRA["soil"][b], SPECTRA["vegetation"][b]))
    surface *= 1.0 + 0.08 * smooth_noise(rng, shape, 3)[None]

    # Cloud optical thickness: thick cores with thin, semi-transparent edges.
    c = smooth_noise(rng, shape, 36) + 0.3 * smooth_noise(rng, shape, 5)
    level = np.quantile(c, 1.0 - cloud_cover)
    alpha = np.clip((c - level) / 0.9, 0.0, 1.0)
    cloud_truth = alpha > 0.15

    # Shadows: the cloud's footprint shifted to the south-east, not under cloud.
    shift = (max(6, height // 40), max(6, width // 50))
    shadow_alpha = ndimage.shift(alpha, shift, order=0, mode="constant", cval=0.0)
    shadow_truth = (shadow_alpha > 0.15) & ~cloud_truth
    darkening = 1.0 - 0.75 * np.clip(shadow_alpha * 1.5, 0, 1)

    refl = surface * darkening[None]
    cloud_spectrum = np.asarray(SPECTRA["cloud"], np.float32)[:, None, None]
    refl = refl * (1.0 - alpha[None]) + cloud_spectrum * alpha[None]
    refl += rng.normal(0.0, 0.004, refl.shape).astype(np.float32)
    dn = np.clip(np.round(refl * 10000.0), 1, 20000).astype(np.uint16)

    product_mask = (alpha > 0.85).astype(np.uint8)  # the product only catches thick cores
    if nodata_wedge:
        rows, cols = np.mgrid[0:height, 0:width]
        outside = cols < (0.35 * width - 0.3 * rows)
        dn[:, outside] = 0
        product_mask[outside] = 0
    return {"dn": dn, "product_mask": product_mask, "cloud": cloud_truth, "shadow": shadow_truth}


def transform_for(height):
    return from_origin(300000.0, 5000040.0 + 10.0 * height, 10.0, 10.0)


def write_scene(scene, out_dir, prefix=""):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dn = scene["dn"]
    _, h, w = dn.shape
    profile = dict(driver="GTiff", width=w, height=h, count=12, dtype="uint16", crs=CRS, transform=transform_for(h),
                   nodata=0, tiled=True, blockxsize=256, blockysize=256, compress="deflate", predictor=2)
    paths = {"s2": out / f"{prefix}s2.tif", "product_mask": out / f"{prefix}product_mask.tif",
             "truth": out / f"{prefix}truth.tif"}
    with rasterio.open(paths["s2"], "w", **profile) as dst:
        dst.write(dn)
        dst.descriptions = tuple(BANDS)
    mask_profile = dict(profile, count=1, dtype="uint8", nodata=100)
    with rasterio.open(paths["product_mask"], "w", **mask_profile) as dst:
        dst.write(scene["product_mask"][None])
    truth = scene["cloud"].astype(np.uint8) + 2 * scene["shadow"].astype(np.uint8)  # 0 clear, 1 cloud, 2 shadow
    with rasterio.open(paths["truth"], "w", **dict(mask_profile, nodata=None)) as dst:
        dst.write(truth[None])
    return paths


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--width", type=int, default=1536)
    p.add_argument("--height", type=int, default=1536)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--nodata-wedge", action="store_true")
    a = p.parse_args()
    paths = write_scene(make_scene(a.width, a.height, a.seed, a.nodata_wedge), a.out_dir)
    for k, v in paths.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
