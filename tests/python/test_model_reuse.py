"""Models are loaded once per process and shared by every run (batch scenes, repeated
Python calls, Dask tasks); a model file replaced in place is loaded again."""
import hashlib
import re
import shutil

import pytest

from conftest import ROOT, run_nimbus

np = pytest.importorskip("numpy")
rasterio = pytest.importorskip("rasterio")

LOADED = re.compile(r"model (\S+): loaded into this process's model cache")
REUSED = re.compile(r"model (\S+): reused from this process's model cache")


@pytest.fixture
def models(tmp_path):
    """Copies of the default models under paths no other test has loaded in this process."""
    d = tmp_path / "models"
    d.mkdir()
    for name in ("nimbus_cloud_v2", "nimbus_shadow_v1"):
        shutil.copyfile(ROOT / "models" / f"{name}.onnx", d / f"{name}.onnx")
    return {"cloud_model": str(d / "nimbus_cloud_v2.onnx"), "shadow_model": str(d / "nimbus_shadow_v1.onnx")}


@pytest.fixture
def small_scenes(make_scene):
    return [make_scene(192, 160, seed=40 + i, name=f"scene{i}") for i in range(3)]


def _pixels(path):
    with rasterio.open(path) as src:
        return src.read(1)


def _sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_repeated_python_calls_load_each_model_once(nimbus_py, models, small_scenes, tmp_path):
    reports = []
    for i, scene in enumerate(small_scenes):
        reports.append(nimbus_py.improve_cloud_mask(scene["s2"], tmp_path / f"m{i}.tif",
                                                    product_mask=scene["product_mask"], window=64, **models))
    assert [(r["models_loaded"], r["model_cache_hits"]) for r in reports] == [(2, 0), (0, 2), (0, 2)]
    # The shared model gives the mask a fresh load gives: run scene 0 again.
    again = nimbus_py.improve_cloud_mask(small_scenes[0]["s2"], tmp_path / "again.tif",
                                         product_mask=small_scenes[0]["product_mask"], window=64, **models)
    assert again["model_cache_hits"] == 2
    assert _sha256(tmp_path / "again.tif") == _sha256(tmp_path / "m0.tif")


def test_a_model_file_replaced_in_place_is_loaded_again(nimbus_py, nimbus_bin, models, small_scenes, test_models,
                                                         tmp_path):
    scene = small_scenes[0]

    def run(name):
        return nimbus_py.improve_cloud_mask(scene["s2"], tmp_path / f"{name}.tif", product_mask=scene["product_mask"],
                                            window=64, keep_probabilities=str(tmp_path / name), **models)

    first = run("a")
    assert first["cloud_model_sha256"] == _sha256(ROOT / "models" / "nimbus_cloud_v2.onnx")
    # Overwritten in place (same path and inode), with another model's bytes.
    other = test_models / "cheaplab_op11.onnx"
    with open(models["cloud_model"], "wb") as f:
        f.write(other.read_bytes())
    second = run("b")
    assert (second["models_loaded"], second["model_cache_hits"]) == (1, 1)
    assert second["cloud_model_sha256"] == _sha256(other)
    # The probabilities are the new model's: as another process loading it afresh computes them.
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask", scene["product_mask"],
               "--out", tmp_path / "c.tif", "--window", 64, "--cloud-model", other,
               "--shadow-model", models["shadow_model"], "--keep-probabilities", tmp_path / "c", "-q", check=True)
    a, b, c = (_pixels(tmp_path / x / "cloud_probability.tif") for x in "abc")
    assert not np.array_equal(a, b)
    assert np.array_equal(b, c)


def test_batch_loads_each_model_once_for_all_scenes(nimbus_bin, models, small_scenes, tmp_path):
    manifest = tmp_path / "scenes.csv"
    manifest.write_text("id,s2_raster,product_mask\n" +
                        "".join(f"s{i},{s['s2']},{s['product_mask']}\n" for i, s in enumerate(small_scenes)))
    proc = run_nimbus(nimbus_bin, "-v", "batch", manifest, "--out-dir", tmp_path / "out", "--window", 64,
                      "--cloud-model", models["cloud_model"], "--shadow-model", models["shadow_model"])
    assert proc.returncode == 0, proc.stderr
    assert sorted(LOADED.findall(proc.stderr)) == sorted([models["cloud_model"], models["shadow_model"]])
    assert len(REUSED.findall(proc.stderr)) == 2 * (len(small_scenes) - 1)


def test_process_batch_scene_reuses_the_models_of_earlier_tasks(nimbus_py, models, small_scenes, tmp_path, capfd):
    # What each Dask task runs on a worker: the second and later tasks find the models loaded.
    nimbus_py.set_log_level("debug")
    try:
        outcomes = [nimbus_py.process_batch_scene({"id": f"s{i}", "s2_raster": s["s2"],
                                                   "product_mask": s["product_mask"]}, tmp_path / "out",
                                                  dict(window=64, **models))
                    for i, s in enumerate(small_scenes)]
    finally:
        nimbus_py.set_log_level("warn")
    captured = capfd.readouterr()
    err = captured.err  # the library's own logger writes to stderr
    assert [o["status"] for o in outcomes] == ["done"] * len(small_scenes)
    assert sorted(LOADED.findall(err)) == sorted([models["cloud_model"], models["shadow_model"]])
    assert len(REUSED.findall(err)) == 2 * (len(small_scenes) - 1)


@pytest.mark.parametrize("engine, fixed", [("opencv", True), ("onednn", False)])
def test_model_fixes_name_the_rewrites_of_the_engine_that_ran(nimbus_py, test_models, make_scene, tmp_path, engine,
                                                              fixed):
    # fpn_cloud_op13 has a Split with a sizes input: OpenCV DNN needs it as an attribute, oneDNN reads it as given.
    scene = make_scene(256, 256, seed=3)
    report = nimbus_py.improve_cloud_mask(scene["s2"], tmp_path / "m.tif", product_mask=scene["product_mask"],
                                          window=256, engine=engine,
                                          cloud_model=str(test_models / "fpn_cloud_op13.onnx"))
    assert report["cloud_engine"] == engine
    if fixed:
        assert any("Split node(s): sizes input -> attribute" in f for f in report["model_fixes"]), report
    else:
        assert report["model_fixes"] == []
