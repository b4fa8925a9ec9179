"""Bad input: one clear error line naming the file and the fix, exit code 2,
and no output file left behind."""
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from conftest import run_nimbus


def _write(path, array, crs="EPSG:32631", transform=None, nodata=0):
    count, h, w = array.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count, dtype=array.dtype, crs=crs,
                       transform=transform or from_origin(300000, 5000000, 10, 10), nodata=nodata) as dst:
        dst.write(array)
    return path


@pytest.fixture
def scene(make_scene):
    return make_scene(600, 560)


def _assert_clean_failure(proc, out_dir, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("nimbus: error: ")
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    assert not [p for p in out_dir.iterdir() if p.name.startswith("mask") or ".nimbus-partial" in p.name]


def _run(nimbus_bin, s2, pm, out, *extra):
    return run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", s2, "--product-mask", pm, "--out", out, "-q",
                      *extra)


def test_missing_raster(nimbus_bin, scene, tmp_path):
    missing = tmp_path / "nope.tif"
    proc = _run(nimbus_bin, missing, scene["product_mask"], tmp_path / "mask.tif")
    _assert_clean_failure(proc, tmp_path, missing, "--s2-raster")


def test_missing_product_mask(nimbus_bin, scene, tmp_path):
    missing = tmp_path / "nope_pm.tif"
    proc = _run(nimbus_bin, scene["s2"], missing, tmp_path / "mask.tif")
    _assert_clean_failure(proc, tmp_path, missing, "--product-mask")


def test_band_count_differs_from_model_channels(nimbus_bin, scene, tmp_path):
    with rasterio.open(scene["s2"]) as src:
        ten = _write(tmp_path / "ten_bands.tif", src.read()[:10], transform=src.transform)
    proc = _run(nimbus_bin, ten, scene["product_mask"], tmp_path / "mask.tif")
    _assert_clean_failure(proc, tmp_path, "ten_bands.tif", "12 input channels", "10 bands")


@pytest.mark.parametrize("what", ["size", "crs", "transform"])
def test_grid_mismatch(what, nimbus_bin, scene, tmp_path):
    with rasterio.open(scene["product_mask"]) as src:
        pm, transform = src.read(), src.transform
    if what == "size":
        pm_path = _write(tmp_path / "pm_bad.tif", pm[:, :500, :], transform=transform, nodata=100)
    elif what == "crs":
        pm_path = _write(tmp_path / "pm_bad.tif", pm, crs="EPSG:32632", transform=transform, nodata=100)
    else:
        pm_path = _write(tmp_path / "pm_bad.tif", pm, transform=transform * rasterio.Affine.translation(3, 0),
                         nodata=100)
    proc = _run(nimbus_bin, scene["s2"], pm_path, tmp_path / "mask.tif")
    _assert_clean_failure(proc, tmp_path, "pm_bad.tif", "different grids", {"size": "size", "crs": "CRS",
                                                                           "transform": "geotransform"}[what])


def test_scene_smaller_than_a_chip(nimbus_bin, make_scene, tmp_path):
    small = make_scene(400, 600)
    proc = _run(nimbus_bin, small["s2"], small["product_mask"], tmp_path / "mask.tif")
    _assert_clean_failure(proc, tmp_path, "width is 400 pixels", "512")


@pytest.mark.parametrize("content,needle", [(b"not a model at all", "not a valid ONNX"),
                                            (b"version https://git-lfs.github.com/spec/v1\noid sha256:45de\n",
                                             "git lfs pull"),
                                            (b"", "empty")])
def test_unreadable_model(content, needle, nimbus_bin, scene, tmp_path):
    model = tmp_path / "cloud_model2_cpu.onnx"
    model.write_bytes(content)
    proc = _run(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "mask.tif", "--cloud-model", model)
    _assert_clean_failure(proc, tmp_path, model, "--cloud-model", needle)


def test_missing_model(nimbus_bin, scene, tmp_path):
    proc = _run(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "mask.tif", "--shadow-model",
                tmp_path / "shadow.onnx")
    _assert_clean_failure(proc, tmp_path, "shadow.onnx", "--shadow-model")


def test_model_with_wrong_output_channels(nimbus_bin, scene, tmp_path, default_models):
    # The shadow model (1 channel) used as the cloud model (needs 2).
    proc = _run(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "mask.tif", "--cloud-model",
                default_models["shadow"])
    _assert_clean_failure(proc, tmp_path, "nimbus_shadow_v1.onnx", "outputs 1 channel", "needs 2")


def test_output_directory_missing(nimbus_bin, scene, tmp_path):
    proc = _run(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "no_dir" / "mask.tif")
    _assert_clean_failure(proc, tmp_path, "no_dir", "--out")


@pytest.mark.parametrize("flag,value,accepted", [("--cloud-thr", "1.5", "[0, 1]"),
                                                 ("--shadow-thr", "-0.1", "[0, 1]"),
                                                 ("--closing-size", "-1", "[0, 16384]"),
                                                 ("--min-area", "-5", "minimum of 0"),
                                                 ("--overlap", "1.5", "[0, 0.875]"),
                                                 ("--window", "0", "minimum of 64")])
def test_parameter_out_of_range(flag, value, accepted, nimbus_bin, scene, tmp_path):
    # The CLI names the parameter by its flag and gives the declared range.
    proc = _run(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "mask.tif", flag, value)
    _assert_clean_failure(proc, tmp_path, flag, value, accepted)


def test_corrupt_raster(nimbus_bin, scene, tmp_path):
    data = scene["s2"].read_bytes()
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(data[: len(data) // 3])
    proc = _run(nimbus_bin, truncated, scene["product_mask"], tmp_path / "mask.tif")
    _assert_clean_failure(proc, tmp_path, "truncated.tif")


def test_all_nodata_raster(nimbus_bin, scene, tmp_path):
    with rasterio.open(scene["s2"]) as src:
        empty = _write(tmp_path / "empty.tif", np.zeros((12, src.height, src.width), np.uint16),
                       transform=src.transform)
    proc = _run(nimbus_bin, empty, scene["product_mask"], tmp_path / "mask.tif")
    _assert_clean_failure(proc, tmp_path, "empty.tif", "no valid pixel")
