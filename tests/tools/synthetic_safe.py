#!/usr/bin/env python3
"""Writes a synthetic Sentinel-2 L2A SAFE product (compact naming, JPEG2000 bands at
10/20/60 m, SCL, MSK_CLASSI, MTD_MSIL2A.xml with the processing baseline and BOA
offsets) from a synthetic scene, for tests of Nimbus' SAFE reader.

Usage: synthetic_safe.py OUT_DIR [--width W] [--height H] [--baseline 05.09] [--no-classi]
"""
import argparse
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from synthetic_scene import BANDS, CRS, make_scene

RES = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10, "B8A": 20,
       "B09": 60, "B11": 20, "B12": 20}
ESA_ID = {"B01": 0, "B02": 1, "B03": 2, "B04": 3, "B05": 4, "B06": 5, "B07": 6, "B08": 7, "B8A": 8, "B09": 9,
          "B10": 10, "B11": 11, "B12": 12}
ORIGIN = (300000.0, 5000040.0)
JP2 = dict(driver="JP2OpenJPEG", QUALITY="100", REVERSIBLE="YES", YCBCR420="NO")


def block_mean(a, f):
    h, w = a.shape[0] // f, a.shape[1] // f
    return a[: h * f, : w * f].reshape(h, f, w, f).mean(axis=(1, 3))


def block_max(a, f):
    h, w = a.shape[0] // f, a.shape[1] // f
    return a[: h * f, : w * f].reshape(h, f, w, f).max(axis=(1, 3))


def write_jp2(path, arrays, res):
    arrays = np.asarray(arrays)
    if arrays.ndim == 2:
        arrays = arrays[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", width=arrays.shape[2], height=arrays.shape[1], count=arrays.shape[0],
                       dtype=arrays.dtype, crs=CRS, transform=from_origin(*ORIGIN, res, res), **JP2) as dst:
        dst.write(arrays)


def mtd_xml(baseline, offset):
    offsets = "".join(f'<BOA_ADD_OFFSET band_id="{i}">{offset}</BOA_ADD_OFFSET>' for i in range(13))
    offset_block = f"<BOA_ADD_OFFSET_VALUES_LIST>{offsets}</BOA_ADD_OFFSET_VALUES_LIST>" if offset else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
  <n1:General_Info>
    <Product_Info>
      <PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
    </Product_Info>
    <Product_Image_Characteristics>
      <QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>
      {offset_block}
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:Level-2A_User_Product>
"""


def write_safe(out_dir, width=1200, height=1080, seed=5, baseline="05.09", classi=True):
    """Returns (safe_dir, scene dict, offset)."""
    scene = make_scene(width, height, seed, nodata_wedge=True)
    offset = -1000 if baseline >= "04.00" else 0
    stored = scene["dn"].astype(np.int32) - offset
    stored[:, scene["dn"][0] == 0] = 0
    stored = stored.astype(np.uint16)
    safe = Path(out_dir) / f"S2B_MSIL2A_20230601T100000_N{baseline.replace('.', '')}_R122_T31TDH_20230601T120000.SAFE"
    granule = safe / "GRANULE" / "L2A_T31TDH_A000001_20230601T100000"
    for i, band in enumerate(BANDS):
        res = RES[band]
        data = stored[i] if res == 10 else np.round(block_mean(stored[i].astype(np.float64), res // 10)).astype(np.uint16)
        write_jp2(granule / "IMG_DATA" / f"R{res}m" / f"T31TDH_20230601T100000_{band}_{res}m.jp2", data, res)
    cloud = scene["cloud"].astype(np.uint8)
    shadow = scene["shadow"].astype(np.uint8)
    scl = np.where(cloud == 1, 9, np.where(shadow == 1, 3, 4)).astype(np.uint8)
    write_jp2(granule / "IMG_DATA" / "R20m" / "T31TDH_20230601T100000_SCL_20m.jp2", block_max(scl, 2).astype(np.uint8),
              20)
    if classi:
        opaque = block_max(scene["product_mask"], 6).astype(np.uint8)
        write_jp2(granule / "QI_DATA" / "MSK_CLASSI_B00.jp2", np.stack([opaque, np.zeros_like(opaque),
                                                                        np.zeros_like(opaque)]), 60)
    (safe / "MTD_MSIL2A.xml").write_text(mtd_xml(baseline, offset))
    return safe, scene, offset


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--width", type=int, default=1200)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--baseline", default="05.09")
    p.add_argument("--no-classi", action="store_true")
    a = p.parse_args()
    safe, _, _ = write_safe(a.out_dir, a.width, a.height, baseline=a.baseline, classi=not a.no_classi)
    print(safe)


if __name__ == "__main__":
    main()
