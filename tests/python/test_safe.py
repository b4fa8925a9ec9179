"""Sentinel-2 L2A SAFE input: band stacking on the 10 m grid, BOA offset,
product mask derived from the product, .zip archives, COG provenance."""
import shutil
import subprocess

import numpy as np
import pytest
from scipy import ndimage
import rasterio
from rasterio.vrt import WarpedVRT
from rasterio.warp import Resampling, reproject

from conftest import run_nimbus
from synthetic_safe import RES, write_safe
from synthetic_scene import BANDS

CLASSES_SCL_CLOUD = (3, 8, 9, 10)


def _jp2(safe, band):
    return next(safe.rglob(f"*_{band}_{RES[band]}m.jp2"))


def _onto_b02(path, safe, resampling, nodata):
    with rasterio.open(_jp2(safe, "B02")) as ref, rasterio.open(path) as src:
        out = np.zeros((src.count, ref.height, ref.width), np.float64)
        for b in range(src.count):
            reproject(src.read(b + 1), out[b], src_transform=src.transform, src_crs=src.crs,
                      dst_transform=ref.transform, dst_crs=ref.crs, resampling=resampling, src_nodata=nodata,
                      dst_nodata=nodata)
        return out, ref.profile


def _away_from_swath_edge(safe, margin=20):
    """Pixels farther than `margin` from B02's no-data and from the raster border, where
    coarse bands fully cover the 10 m grid."""
    with rasterio.open(_jp2(safe, "B02")) as b02:
        nodata = b02.read(1) == 0
    inside = ~ndimage.binary_dilation(nodata, iterations=margin, border_value=1) & ~nodata
    return inside, nodata


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1), src.tags()


@pytest.fixture(scope="module")
def safe_product(tmp_path_factory):
    return write_safe(tmp_path_factory.mktemp("safe"), width=1100, height=1000)


def _farmvibes_band(safe, band, like):
    """One band as FarmVibes' download_stack_sentinel2 resamples it: a bilinear WarpedVRT onto B02's grid."""
    with rasterio.open(_jp2(safe, band)) as src, WarpedVRT(src, crs=like.crs, transform=like.transform,
                                                           width=like.width, height=like.height,
                                                           resampling=Resampling.bilinear, src_nodata=0,
                                                           nodata=0) as vrt:
        return vrt.read(1)


def test_stack_matches_farmvibes_band_stacking(nimbus_bin, safe_product, tmp_path):
    safe, scene, offset = safe_product
    run_nimbus(nimbus_bin, "stack-safe", safe, "--out", tmp_path / "stack.tif", "--product-mask-out",
               tmp_path / "pm.tif", "-q", check=True)
    with rasterio.open(tmp_path / "stack.tif") as st:
        assert st.count == 12 and st.dtypes[0] == "uint16" and st.nodata == 0
        assert list(st.descriptions) == BANDS
        assert st.tags(1)["NIMBUS_BOA_ADD_OFFSET"] == "-1000"
        stack = st.read()
        for i, band in enumerate(BANDS):
            want = _farmvibes_band(safe, band, st)
            diff = np.abs(stack[i].astype(int) - want.astype(int))
            if RES[band] == 60:
                # GDAL's warper rounds a few 6x-upsampled values differently between warp paths.
                assert diff.max() <= 1, band
            else:
                assert diff.max() == 0, band
    # The product mask: MSK_CLASSI opaque | cirrus, nearest onto the 10 m grid.
    classi, _ = _onto_b02(next(safe.rglob("MSK_CLASSI_B00.jp2")), safe, Resampling.nearest, None)
    pm, tags = _read(tmp_path / "pm.tif")
    np.testing.assert_array_equal(pm, ((classi[0] != 0) | (classi[1] != 0)).astype(np.uint8))
    assert tags["NIMBUS_PRODUCT_MASK_SOURCE"] == "MSK_CLASSI"


def test_safe_run_equals_run_on_its_stack(nimbus_bin, safe_product, tmp_path):
    safe, scene, offset = safe_product
    proc = run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", safe, "--out", tmp_path / "safe_mask.tif",
                      "--keep-probabilities", tmp_path / "safe")
    assert proc.returncode == 0, proc.stderr
    assert "BOA_ADD_OFFSET -1000" in proc.stderr and "MSK_CLASSI" in proc.stderr
    run_nimbus(nimbus_bin, "stack-safe", safe, "--out", tmp_path / "stack.tif", "--product-mask-out",
               tmp_path / "pm.tif", "-q", check=True)
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", tmp_path / "stack.tif", "--product-mask",
               tmp_path / "pm.tif", "--out", tmp_path / "stack_mask.tif", "--keep-probabilities", tmp_path / "stack",
               "-q", check=True)
    for name in ("cloud_probability.tif", "shadow_probability.tif"):
        np.testing.assert_array_equal(_read(tmp_path / "safe" / name)[0], _read(tmp_path / "stack" / name)[0])
    mask, tags = _read(tmp_path / "safe_mask.tif")
    np.testing.assert_array_equal(mask, _read(tmp_path / "stack_mask.tif")[0])
    assert tags["NIMBUS_PROCESSING_BASELINE"] == "05.09"
    assert tags["NIMBUS_BOA_ADD_OFFSET_APPLIED"] == "-1000"
    assert tags["NIMBUS_PRODUCT_MASK_SOURCE"] == "MSK_CLASSI"
    assert len(tags["NIMBUS_CLOUD_MODEL_SHA256"]) == 64


def test_offset_harmonises_to_pre_2022_dn(nimbus_bin, tmp_path):
    """The same scene as baseline 02.08 (raw DN) and 05.09 (DN + 1000) gives the same probabilities."""
    old, _, _ = write_safe(tmp_path / "old", width=600, height=560, baseline="02.08")
    new, _, _ = write_safe(tmp_path / "new", width=600, height=560, baseline="05.09")
    probs = []
    for name, safe in (("old", old), ("new", new)):
        run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", safe, "--out", tmp_path / f"{name}.tif",
                   "--keep-probabilities", tmp_path / name, "-q", check=True)
        probs.append(_read(tmp_path / name / "cloud_probability.tif")[0])
    inside, _ = _away_from_swath_edge(old)
    assert np.abs(probs[0][inside] - probs[1][inside]).max() < 1e-3


def test_zip_and_mtd_path_equal_the_directory(nimbus_bin, safe_product, tmp_path):
    safe, _, _ = safe_product
    archive = shutil.make_archive(str(tmp_path / "product"), "zip", safe.parent, safe.name)
    outs = []
    for source in (safe, archive, safe / "MTD_MSIL2A.xml", f"/vsizip/{archive}/{safe.name}"):
        out = tmp_path / f"mask{len(outs)}.tif"
        run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", source, "--out", out, "-q", check=True)
        outs.append(_read(out)[0])
    for other in outs[1:]:
        np.testing.assert_array_equal(outs[0], other)


def test_gdal_virtual_paths_for_plain_rasters(nimbus_bin, make_scene, tmp_path):
    scene = make_scene(600, 560)
    archive = shutil.make_archive(str(tmp_path / "scene"), "zip", scene["s2"].parent)
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", f"/vsizip/{archive}/s2.tif", "--product-mask",
               f"/vsizip/{archive}/product_mask.tif", "--out", tmp_path / "zip.tif", "-q", check=True)
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask", scene["product_mask"],
               "--out", tmp_path / "plain.tif", "-q", check=True)
    np.testing.assert_array_equal(_read(tmp_path / "zip.tif")[0], _read(tmp_path / "plain.tif")[0])


def test_scl_fallback_and_old_baseline(nimbus_bin, tmp_path):
    safe, scene, offset = write_safe(tmp_path, width=600, height=560, baseline="02.08", classi=False)
    assert offset == 0
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", safe, "--out", tmp_path / "m.tif", "--closing-size",
               "0", "--cloud-thr", "1", "--shadow-thr", "1", "-q", check=True)
    mask, tags = _read(tmp_path / "m.tif")
    assert tags["NIMBUS_PRODUCT_MASK_SOURCE"] == "SCL"
    assert tags["NIMBUS_BOA_ADD_OFFSET_APPLIED"] == "0"
    scl, _ = _onto_b02(next(safe.rglob("*_SCL_20m.jp2")), safe, Resampling.nearest, None)
    expected = np.isin(scl[0], CLASSES_SCL_CLOUD)
    inside, nodata = _away_from_swath_edge(safe)
    # Thresholds of 1 switch the models off: the mask is the product mask plus nodata.
    assert mask[nodata].all()
    np.testing.assert_array_equal(mask.astype(bool)[inside], expected[inside])


def test_incomplete_product_is_reported(nimbus_bin, tmp_path):
    safe, _, _ = write_safe(tmp_path, width=600, height=560)
    _jp2(safe, "B8A").unlink()
    proc = run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", safe, "--out", tmp_path / "m.tif")
    assert proc.returncode == 2
    assert "no image file for band B8A" in proc.stderr
    assert not (tmp_path / "m.tif").exists()


def test_level1c_product_is_reported(nimbus_bin, tmp_path):
    l1c = tmp_path / "S2A_MSIL1C_20230601T100000_N0509_R122_T31TDH_20230601T120000.SAFE"
    l1c.mkdir()
    (l1c / "MTD_MSIL1C.xml").write_text("<x/>")
    proc = run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", l1c, "--out", tmp_path / "m.tif")
    assert proc.returncode == 2
    assert "MTD_MSIL2A.xml" in proc.stderr and "Level-2A" in proc.stderr


def test_cloud_gml_is_rasterised_when_present(nimbus_bin, tmp_path):
    safe, _, _ = write_safe(tmp_path, width=600, height=560, baseline="02.08", classi=False)
    qi = next(safe.rglob("IMG_DATA")).parent / "QI_DATA"
    qi.mkdir(exist_ok=True)
    # One opaque-cloud square, 100..300 px east and 50..250 px south of the origin.
    x0, y0 = 300000 + 100 * 10, 5000040 - 50 * 10
    square = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"maskType": "OPAQUE"},
              "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x0 + 2000, y0], [x0 + 2000, y0 - 2000],
                                                               [x0, y0 - 2000], [x0, y0]]]}}]}
    (tmp_path / "sq.geojson").write_text(__import__("json").dumps(square))
    subprocess.run(["ogr2ogr", "-f", "GML", "-a_srs", "EPSG:32631", str(qi / "MSK_CLOUDS_B00.gml"),
                    str(tmp_path / "sq.geojson")], check=True)
    run_nimbus(nimbus_bin, "stack-safe", safe, "--out", tmp_path / "st.tif", "--product-mask-out", tmp_path / "pm.tif",
               "-q", check=True)
    pm, tags = _read(tmp_path / "pm.tif")
    assert tags["NIMBUS_PRODUCT_MASK_SOURCE"] == "MSK_CLOUDS GML"
    expected = np.zeros_like(pm)
    expected[50:250, 100:300] = 1
    np.testing.assert_array_equal(pm, expected)
