"""Sentinel-2 L2A band files of a full tile (10980 x 10980 at 10 m) as COGs, one per band at
its native resolution (10/20/60 m, SCL at 20 m), plus STAC items of them - cheaply: each
band repeats one small pattern tile (a smooth field plus sparse noise) written block by block
with fast DEFLATE, so the files are small but every block holds real, compressible data.

    write_band_cogs(out_dir, size=10980) -> {band: path}
    stac_item(hrefs) -> an Earth Search v1 item dict
"""
import numpy as np
import rasterio
from rasterio.windows import Window

from synthetic_safe import RES
from synthetic_scene import BANDS, CRS

EARTH_SEARCH_KEYS = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
                     "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
                     "B11": "swir16", "B12": "swir22", "SCL": "scl"}
BLOCK = 512
ORIGIN = (300000.0, 5109840.0)


def _pattern(seed, band_index, scl):
    """One BLOCK x BLOCK tile: SCL classes in patches, or reflectance-like DN with sparse noise."""
    rng = np.random.default_rng(seed + band_index)
    y, x = np.mgrid[0:BLOCK, 0:BLOCK]
    if scl:
        classes = np.array([4, 5, 8, 9, 3, 6], dtype=np.uint8)  # vegetation, bare, cloud medium/high, shadow, water
        return classes[((x // 64) + 3 * (y // 64) + band_index) % len(classes)]
    field = 1500 + 400 * np.sin(x / (40.0 + band_index)) * np.cos(y / 57.0) + 30 * band_index
    noise = rng.integers(0, 16, size=field.shape) * (rng.random(field.shape) < 0.03)
    return (field // 16 * 16 + noise).astype(np.uint16)  # terraced, so DEFLATE packs it small


def write_band_cogs(out_dir, size=10980, seed=5):
    """The 12 bands and SCL of a size x size (10 m) tile; returns {band: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, band in enumerate(BANDS + ["SCL"]):
        res = RES.get(band, 20)
        n = size * 10 // res
        scl = band == "SCL"
        tile = _pattern(seed, i, scl)
        profile = dict(driver="GTiff", width=n, height=n, count=1, dtype="uint8" if scl else "uint16",
                       crs=CRS, transform=rasterio.Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1]), nodata=0,
                       tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="deflate", zlevel=1)
        path = out_dir / f"{band}.tif"
        # Blocks in file order, header first: a cloud-optimised layout without overviews.
        with rasterio.open(path, "w", **profile) as dst:
            for by in range(0, n, BLOCK):
                for bx in range(0, n, BLOCK):
                    w, h = min(BLOCK, n - bx), min(BLOCK, n - by)
                    dst.write(tile[:h, :w], 1, window=Window(bx, by, w, h))
        paths[band] = path
    return paths


def stac_item(href, item_id="S2B_31TDH_20230601_0_L2A"):
    """An Earth Search v1 item whose asset for band B is href(B)."""
    assets = {key: {"href": href(band), "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                    "roles": ["data"]} for band, key in EARTH_SEARCH_KEYS.items()}
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "sentinel-2-l2a",
            "geometry": None, "bbox": [0, 45, 1, 46],
            "properties": {"datetime": "2023-06-01T10:00:00Z", "s2:product_type": "S2MSI2A",
                           "s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": False},
            "links": [], "assets": assets}
