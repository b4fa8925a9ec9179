#!/usr/bin/env python3
"""Writes the small rasters the raster-header fuzz target starts from (committed in
seeds/raster_header; re-run to regenerate): GeoTIFF variants a user could hand Nimbus."""
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

OUT = Path(__file__).resolve().parent / "seeds" / "raster_header"


def write(name, count, dtype, **extra):
    rng = np.random.default_rng(len(name))
    data = (rng.random((count, 8, 8)) * 3000).astype(dtype)
    profile = dict(driver="GTiff", width=8, height=8, count=count, dtype=dtype, crs="EPSG:32631",
                   transform=from_origin(300000, 5000000, 10, 10), nodata=0, **extra)
    with rasterio.open(OUT / name, "w", **profile) as dst:
        dst.write(data)
        if "offsets" in name:
            for b in range(1, count + 1):
                dst.update_tags(b, NIMBUS_BOA_ADD_OFFSET="-1000")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    write("l2a_uint16.tif", 12, "uint16")
    write("l2a_tiled_zstd.tif", 12, "uint16", tiled=True, blockxsize=16, blockysize=16, compress="zstd")
    write("l2a_offsets.tif", 12, "uint16", compress="deflate")
    write("byte.tif", 3, "uint8")
    write("float32.tif", 12, "float32", compress="lzw", predictor=3)
    write("bigtiff_int16.tif", 4, "int16", BIGTIFF="YES")


if __name__ == "__main__":
    sys.exit(main())
