"""`downsampling` 2-4: the models see the scene decimated on a consistent grid, and the
probabilities come back to the full grid bilinearly (tests/reference: downsampled_probability)."""
import numpy as np
import pytest
import rasterio

from conftest import run_nimbus
from reference.farmvibes_reference import NODATA, downsampled_probability, merge_cloud_masks
from reference.opencv_model import opencv_model


def _run(nimbus_bin, scene, out_dir, *extra):
    out_dir.mkdir(exist_ok=True)
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask", scene["product_mask"],
               "--out", out_dir / "mask.tif", "--keep-probabilities", out_dir, "-q", *extra, check=True)
    with rasterio.open(out_dir / "cloud_probability.tif") as c, rasterio.open(out_dir / "shadow_probability.tif") as s, \
            rasterio.open(out_dir / "mask.tif") as m:
        return c.read(1), s.read(1), m.read(1), m.tags()


@pytest.mark.parametrize("ds,size", [(2, (1100, 1030)), (3, (1540, 1600))])
def test_matches_the_reference_grid(ds, size, nimbus_bin, test_models, default_models, make_scene, tmp_path):
    width, height = size
    scene = make_scene(width, height, seed=ds, nodata_wedge=True)
    cloud_model = test_models / "fpn_cloud_op11.onnx"
    shadow_model = default_models["shadow"]
    cloud, shadow, mask, tags = _run(nimbus_bin, scene, tmp_path / "nimbus", "--downsampling", str(ds),
                                     "--cloud-model", cloud_model, "--engine", "opencv", "--min-area", "20")
    assert tags["NIMBUS_DOWNSAMPLING"] == str(ds)
    want_cloud = downsampled_probability(scene["s2"], opencv_model(cloud_model), "cloud", ds, workdir=tmp_path)
    want_shadow = downsampled_probability(scene["s2"], opencv_model(shadow_model), "shadow", ds, workdir=tmp_path)
    for got, want in ((cloud, want_cloud), (shadow, want_shadow)):
        np.testing.assert_array_equal(got == NODATA, want == NODATA)
        assert np.abs(got - want).max() <= 1e-5
    with rasterio.open(scene["product_mask"]) as src:
        pm = src.read(1)
    np.testing.assert_array_equal(mask, merge_cloud_masks(cloud, shadow, pm, min_area=20))
    # Not a copy of the full-resolution answer: the coarse grid changes probabilities.
    full_cloud, _, _, _ = _run(nimbus_bin, scene, tmp_path / "full", "--cloud-model", cloud_model,
                               "--engine", "opencv")
    assert np.abs(full_cloud - cloud)[cloud != NODATA].max() > 1e-3


def test_downsampling_one_is_the_default_bit_for_bit(nimbus_bin, make_scene, tmp_path):
    scene = make_scene(700, 600, nodata_wedge=True)
    default = _run(nimbus_bin, scene, tmp_path / "default")
    explicit = _run(nimbus_bin, scene, tmp_path / "one", "--downsampling", "1")
    for a, b in zip(default[:3], explicit[:3]):
        np.testing.assert_array_equal(a, b)


def _workflow_with(tmp_path, parameter):
    """The seed workflow with one more root parameter wired into both probability ops."""
    from conftest import ROOT
    seed = (ROOT / "workflows" / "data_ingestion" / "sentinel2" / "improve_cloud_mask.yaml").read_text()
    text = seed.replace("parameters:\n  cloud_thr: null", f"parameters:\n  {parameter}: null\n  cloud_thr: null")
    for model in ("cloud_model", "shadow_model"):
        text = text.replace(f"      model_path: '@from({model})'",
                            f"      model_path: '@from({model})'\n      {parameter}: '@from({parameter})'")
    text = text.replace("parameters:\n    cloud_thr:", f"parameters:\n    {parameter}: the op parameter\n    cloud_thr:")
    path = tmp_path / f"with_{parameter}.yaml"
    path.write_text(text)
    return path


def test_workflow_parameter_equals_the_cli(nimbus_bin, make_scene, tmp_path):
    scene = make_scene(1100, 1040, nodata_wedge=True)
    cloud, shadow, mask, _ = _run(nimbus_bin, scene, tmp_path / "cli", "--downsampling", "2")
    run_nimbus(nimbus_bin, "run", _workflow_with(tmp_path, "downsampling"), "--input",
               f"s2_raster={scene['s2']}", "--input", f"product_mask={scene['product_mask']}", "--param",
               "cloud_model=embedded:nimbus_cloud_v2", "--param", "shadow_model=embedded:nimbus_shadow_v1",
               "--param", "downsampling=2", "--out-dir", tmp_path / "wf", "--no-cache", "-q", check=True)
    with rasterio.open(tmp_path / "wf" / "mask.tif") as m:
        np.testing.assert_array_equal(m.read(1), mask)


@pytest.mark.parametrize("args,needle", [
    (["--downsampling", "5"], "--downsampling = 5 is outside [1, 4]"),
    (["--downsampling", "0"], "--downsampling = 0 is outside [1, 4]"),
    (["--downsampling", "2"], "decimated by downsampling 2 it is 350x300, smaller than the 512-pixel window"),
])
def test_bad_downsampling_is_a_clear_error(args, needle, nimbus_bin, make_scene, tmp_path):
    scene = make_scene(700, 600)
    proc = run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask",
                      scene["product_mask"], "--out", tmp_path / "m.tif", *args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert not (tmp_path / "m.tif").exists()
