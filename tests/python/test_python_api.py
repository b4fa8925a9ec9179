"""import nimbus: files and arrays in, the same masks and probabilities as the CLI out."""
import threading
import time

import numpy as np
import pytest
import rasterio

from conftest import ROOT, run_nimbus
from reference.farmvibes_reference import merge_cloud_masks as reference_merge

SEED_YAML = ROOT / "workflows" / "data_ingestion" / "sentinel2" / "improve_cloud_mask.yaml"


@pytest.fixture
def scene(make_scene):
    return make_scene(1100, 1000, seed=7, nodata_wedge=True)


@pytest.fixture
def cli_outputs(nimbus_bin, scene, tmp_path):
    """The CLI's mask and probabilities for the scene: what every API path must equal."""
    out = tmp_path / "cli"
    out.mkdir()
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask", scene["product_mask"],
               "--out", out / "mask.tif", "--keep-probabilities", out, "-q", check=True)
    read = lambda name: rasterio.open(out / name).read(1)  # noqa: E731
    return {"mask": read("mask.tif"), "cloud": read("cloud_probability.tif"),
            "shadow": read("shadow_probability.tif"), "dir": out}


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1), src.transform, src.crs


def test_files_in_file_out_equals_the_cli(nimbus_py, scene, cli_outputs, tmp_path):
    report = nimbus_py.improve_cloud_mask(scene["s2"], tmp_path / "m.tif", product_mask=scene["product_mask"],
                                          cloud_thr=0.3, threads=1)
    mask, transform, crs = _read(tmp_path / "m.tif")
    assert np.array_equal(mask, cli_outputs["mask"])
    assert report["width"] == 1100 and report["height"] == 1000 and report["chips_per_model"] > 0
    assert 0 < report["masked_fraction"] < 1
    with rasterio.open(scene["s2"]) as src:
        assert transform == src.transform and crs == src.crs


def test_arrays_in_array_out_equals_the_cli(nimbus_py, scene, cli_outputs, tmp_path):
    with rasterio.open(scene["s2"]) as src:
        s2, gt, crs = src.read(), src.transform.to_gdal(), src.crs.to_wkt()
    with rasterio.open(scene["product_mask"]) as src:
        pm = src.read(1)
    result = nimbus_py.improve_cloud_mask_array(s2, pm, geotransform=gt, crs=crs, out=tmp_path / "arr.tif")
    mask = result.array
    assert mask.dtype == np.uint8 and mask.shape == (1000, 1100)
    assert np.array_equal(mask, cli_outputs["mask"])
    written, transform, written_crs = _read(tmp_path / "arr.tif")
    assert np.array_equal(written, mask)
    assert transform.to_gdal() == pytest.approx(gt) and written_crs.to_epsg() == 32631
    # The result carries the mask's georeferencing: the written file's.
    assert result.transform == transform and rasterio.crs.CRS.from_wkt(result.crs) == written_crs
    assert result.nodata == 100
    # Without georeferencing the mask is the same (the grid only matters for the output file).
    ungeoreferenced = nimbus_py.improve_cloud_mask_array(s2, pm)
    assert np.array_equal(ungeoreferenced.array, mask)
    assert ungeoreferenced.transform is None and ungeoreferenced.crs is None


def test_each_op_on_arrays_equals_the_cli_probabilities(nimbus_py, scene, cli_outputs):
    with rasterio.open(scene["s2"]) as src:
        s2, gt, crs = src.read(), src.transform.to_gdal(), "EPSG:32631"
    cloud_result = nimbus_py.compute_cloud_prob(s2, gt, crs)
    shadow_result = nimbus_py.compute_shadow_prob(s2, gt, crs)
    cloud, shadow = cloud_result.array, shadow_result.array
    assert cloud_result.transform.to_gdal() == pytest.approx(gt) and "32631" in shadow_result.crs
    assert cloud.dtype == np.float32 and np.array_equal(cloud, cli_outputs["cloud"])
    assert np.array_equal(shadow, cli_outputs["shadow"])
    with rasterio.open(scene["product_mask"]) as src:
        pm = src.read(1)
    merged = nimbus_py.merge_cloud_masks(cloud, shadow, pm, cloud_thr=0.3, shadow_thr=0.2, closing_size=5)
    assert np.array_equal(merged, cli_outputs["mask"])
    assert np.array_equal(merged, reference_merge(cloud, shadow, pm, 0.3, 0.2, 5, 0))
    with_min_area = nimbus_py.merge_cloud_masks(cloud, shadow, pm, min_area=40)
    assert np.array_equal(with_min_area, reference_merge(cloud, shadow, pm, 0.3, 0.2, 5, 40))
    # GeoArrays in: the mask comes back with their grid.
    geo_merged = nimbus_py.merge_cloud_masks(cloud_result, shadow_result, pm)
    assert np.array_equal(geo_merged.array, cli_outputs["mask"]) and geo_merged.transform == cloud_result.transform


def test_each_op_on_files(nimbus_py, scene, cli_outputs, tmp_path):
    out = nimbus_py.run_op("compute_cloud_prob", {"sentinel_raster": str(scene["s2"])},
                           {"model_path": "embedded:nimbus_cloud_v2"}, str(tmp_path / "ops"))
    assert np.array_equal(_read(out["cloud_probability"])[0], cli_outputs["cloud"])
    merge_inputs = {"product_mask": str(scene["product_mask"]),
                    "cloud_probability": str(cli_outputs["dir"] / "cloud_probability.tif"),
                    "shadow_probability": str(cli_outputs["dir"] / "shadow_probability.tif")}
    merged = nimbus_py.run_op("merge_cloud_masks_simple", merge_inputs, {}, str(tmp_path / "ops"))
    assert np.array_equal(_read(merged["merged_cloud_mask"])[0], cli_outputs["mask"])
    assert sorted(p.name for p in (tmp_path / "ops").iterdir()) == ["cloud_probability.tif",
                                                                    "merged_cloud_mask.tif"]
    with pytest.raises(nimbus_py.InputError, match="unknown parameter 'thr' of op merge_cloud_masks_simple"):
        nimbus_py.run_op("merge_cloud_masks_simple", merge_inputs, {"thr": 1}, str(tmp_path / "ops"))
    with pytest.raises(nimbus_py.InputError, match="needs input 'product_mask'"):
        nimbus_py.run_op("merge_cloud_masks_simple", {}, {}, str(tmp_path / "ops"))
    with pytest.raises(nimbus_py.InputError, match="min_area of op merge_cloud_masks_simple must be of type int"):
        nimbus_py.run_op("merge_cloud_masks_simple", merge_inputs, {"min_area": "big"}, str(tmp_path / "ops"))
    with pytest.raises(nimbus_py.InputError, match="unknown op 'nope'"):
        nimbus_py.run_op("nope", {}, {}, str(tmp_path / "ops"))


def test_workflow_equals_the_cli(nimbus_py, scene, cli_outputs, tmp_path):
    sinks = nimbus_py.run_workflow(nimbus_py.SEED_WORKFLOW,
                                   {"s2_raster": str(scene["s2"]), "product_mask": str(scene["product_mask"])},
                                   str(tmp_path / "wf"),
                                   params={"cloud_model": "embedded:nimbus_cloud_v2",
                                           "shadow_model": "embedded:nimbus_shadow_v1"})
    assert set(sinks) == {"mask"}
    assert np.array_equal(_read(sinks["mask"])[0], cli_outputs["mask"])


def test_workflow_on_arrays_returns_arrays(nimbus_py, scene, cli_outputs):
    with rasterio.open(scene["s2"]) as src:
        s2, gt = src.read(), src.transform.to_gdal()
    with rasterio.open(scene["product_mask"]) as src:
        pm = src.read(1)
    sinks = nimbus_py.run_workflow(nimbus_py.SEED_WORKFLOW, {"s2_raster": s2, "product_mask": pm},
                                   params={"cloud_model": "embedded:nimbus_cloud_v2",
                                           "shadow_model": "embedded:nimbus_shadow_v1"},
                                   geotransform=gt, crs="EPSG:32631")
    assert set(sinks) == {"mask"} and sinks["mask"].array.shape == (1000, 1100)
    assert np.array_equal(sinks["mask"].array, cli_outputs["mask"])
    assert sinks["mask"].transform.to_gdal() == pytest.approx(gt) and "32631" in sinks["mask"].crs


def test_bad_input_raises_input_error(nimbus_py, scene, tmp_path):
    assert issubclass(nimbus_py.InputError, ValueError)
    with pytest.raises(nimbus_py.InputError, match="nope.tif"):
        nimbus_py.improve_cloud_mask(tmp_path / "nope.tif", tmp_path / "m.tif", product_mask=scene["product_mask"])
    # Parameters are named as Python keywords, never as CLI flags.
    with pytest.raises(nimbus_py.InputError, match=r"^cloud_thr = 2.0 is outside \[0, 1\]"):
        nimbus_py.improve_cloud_mask(scene["s2"], tmp_path / "m.tif", product_mask=scene["product_mask"],
                                     cloud_thr=2.0)
    with pytest.raises(nimbus_py.InputError, match="^cloud_thr = 'high' has the wrong type"):
        nimbus_py.improve_cloud_mask(scene["s2"], tmp_path / "m.tif", cloud_thr="high")
    with pytest.raises(nimbus_py.InputError, match="^cloud_threshold is unknown; the parameters are s2_raster"):
        nimbus_py.improve_cloud_mask(scene["s2"], tmp_path / "m.tif", cloud_threshold=0.2)
    with pytest.raises(nimbus_py.InputError, match=r"^out .*\(--out\)|^output mask \(out\)") as error:
        nimbus_py.improve_cloud_mask(scene["s2"], tmp_path / "no_dir" / "m.tif", product_mask=scene["product_mask"])
    assert "--" not in str(error.value)
    with pytest.raises(nimbus_py.InputError, match=r"expected \(12, H, W\) \(bands, height, width\)"):
        nimbus_py.improve_cloud_mask_array(np.zeros((5, 5), np.uint16), np.zeros((5, 5), np.uint8))
    with pytest.raises(nimbus_py.InputError, match="dtype"):
        nimbus_py.write_raster(str(tmp_path / "c.tif"), np.zeros((4, 4), np.complex64))
    assert not (tmp_path / "m.tif").exists()


def test_raster_round_trip(nimbus_py, tmp_path):
    a = (np.arange(3 * 20 * 30) % 5000).astype(np.uint16).reshape(3, 20, 30)
    gt = [500000.0, 10.0, 0.0, 4000000.0, 0.0, -10.0]
    nimbus_py.write_raster(str(tmp_path / "a.tif"), a, gt, "EPSG:32631", 0)
    back = nimbus_py.read_raster(str(tmp_path / "a.tif"))
    assert back.array.dtype == np.uint16 and np.array_equal(back.array, a)
    assert back.geotransform == tuple(gt) and back.nodata == 0 and "32631" in back.crs


def test_long_calls_release_the_gil(nimbus_py, make_scene, tmp_path):
    big = make_scene(2000, 1800, seed=11, name="big")
    done = threading.Event()
    inside = []

    def work():
        inside.append(time.perf_counter())
        nimbus_py.improve_cloud_mask(big["s2"], tmp_path / "g.tif", product_mask=big["product_mask"], threads=1)
        inside.append(time.perf_counter())
        done.set()

    t = threading.Thread(target=work)
    t.start()
    ticks = []
    while not done.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    t.join()
    start, end = inside
    during = [x for x in ticks if start + 0.05 < x < end - 0.05]
    # With the GIL held for the whole call this thread could not tick while it ran.
    assert end - start > 0.3, "the call should take long enough to observe"
    assert len(during) > 0.3 * (end - start - 0.1) / 0.002, (len(during), end - start)
