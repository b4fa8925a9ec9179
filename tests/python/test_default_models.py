"""The embedded models are reproducible from their generator and described by their sidecars."""
import hashlib
import json
import subprocess
import sys

from conftest import ROOT, run_nimbus


def test_generator_reproduces_committed_models(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "models" / "make_default_models.py"), str(tmp_path)], check=True,
                   stdout=subprocess.DEVNULL)
    for name in ("nimbus_cloud_v1", "nimbus_cloud_v2", "nimbus_shadow_v1"):
        committed = (ROOT / "models" / f"{name}.onnx").read_bytes()
        assert (tmp_path / f"{name}.onnx").read_bytes() == committed
        sidecar = json.loads((ROOT / "models" / f"{name}.json").read_text())
        assert sidecar["sha256"] == hashlib.sha256(committed).hexdigest()
        assert sidecar["name"] == name
        assert len(sidecar["bands"]) == 12 and "B10" not in sidecar["bands"]


def test_provenance_names_the_embedded_models(nimbus_bin, make_scene, tmp_path):
    import rasterio
    scene = make_scene(600, 560)
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask", scene["product_mask"],
               "--out", tmp_path / "m.tif", "--cloud-thr", "0.45", "-q", check=True)
    with rasterio.open(tmp_path / "m.tif") as src:
        tags = src.tags()
        assert src.overviews(1), "a COG carries overviews"
    sidecar = json.loads((ROOT / "models" / "nimbus_cloud_v2.json").read_text())
    assert tags["NIMBUS_CLOUD_MODEL"] == "embedded:nimbus_cloud_v2"
    assert tags["NIMBUS_CLOUD_MODEL_SHA256"] == sidecar["sha256"]
    assert tags["NIMBUS_CLOUD_THRESHOLD"] == "0.45"
    assert tags["NIMBUS_S2_RASTER"] == "s2.tif"


def test_creation_options_are_passed_to_gdal(nimbus_bin, make_scene, tmp_path):
    import rasterio
    scene = make_scene(600, 560)
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask", scene["product_mask"],
               "--out", tmp_path / "m.tif", "--co", "COMPRESS=DEFLATE", "-q", check=True)
    with rasterio.open(tmp_path / "m.tif") as src:
        assert src.profile["compress"].lower() == "deflate"
    bad = run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask",
                     scene["product_mask"], "--out", tmp_path / "b.tif", "--co", "NOPE=1")
    assert bad.returncode == 2 and "NOPE" in bad.stderr and not (tmp_path / "b.tif").exists()


def test_every_embedded_model_loads_by_name_and_unknown_names_list_them(nimbus_bin, make_scene, tmp_path):
    import rasterio
    scene = make_scene(600, 560)
    for name in ("nimbus_cloud_v1", "nimbus_cloud_v2"):
        run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask",
                   scene["product_mask"], "--out", tmp_path / f"{name}.tif", "--cloud-model", f"embedded:{name}", "-q",
                   check=True)
        with rasterio.open(tmp_path / f"{name}.tif") as src:
            sidecar = json.loads((ROOT / "models" / f"{name}.json").read_text())
            assert src.tags()["NIMBUS_CLOUD_MODEL_SHA256"] == sidecar["sha256"]
    bad = run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask",
                     scene["product_mask"], "--out", tmp_path / "bad.tif", "--cloud-model", "embedded:nimbus_cloud_v3")
    assert bad.returncode == 2 and not (tmp_path / "bad.tif").exists()
    for name in ("nimbus_cloud_v1", "nimbus_cloud_v2", "nimbus_shadow_v1"):
        assert f"embedded:{name}" in bad.stderr
