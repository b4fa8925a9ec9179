"""Interrupted runs and broken models leave nothing half-written."""
import os
import signal
import subprocess
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import ROOT, run_nimbus

SEED_YAML = ROOT / "workflows" / "data_ingestion" / "sentinel2" / "improve_cloud_mask.yaml"


def _start(nimbus_bin, *args):
    return subprocess.Popen([str(nimbus_bin), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_chips(proc, deadline=60):
    """Waits until the run has started inference (its first progress line)."""
    start = time.time()
    while time.time() - start < deadline:
        line = proc.stderr.readline()
        if "chips" in line or not line:
            return
    raise AssertionError("no progress line")


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_run_removes_partial_outputs(sig, code, nimbus_bin, test_models, make_scene, tmp_path):
    scene = make_scene(2200, 1600, seed=2)
    out = tmp_path / "out"
    out.mkdir()
    proc = _start(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask", scene["product_mask"],
                  "--out", out / "mask.tif", "--keep-probabilities", out, "--preview", out / "p.png",
                  "--cloud-model", test_models / "fpn_cloud_op11.onnx", "--shadow-model",
                  test_models / "fpn_shadow_op11.onnx")
    _wait_for_chips(proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "partial outputs removed" in err
    assert list(out.iterdir()) == []


def test_killed_workflow_leaves_no_cache_entry_and_is_cleaned(nimbus_bin, make_scene, tmp_path):
    scene = make_scene(2200, 1600, seed=4)
    cache = tmp_path / "cache"
    args = ["run", SEED_YAML, "--input", f"s2_raster={scene['s2']}", "--input",
            f"product_mask={scene['product_mask']}", "--param", "cloud_model=embedded:nimbus_cloud_v2", "--param",
            "shadow_model=embedded:nimbus_shadow_v1", "--out-dir", tmp_path / "out", "--cache-dir", cache]
    proc = _start(nimbus_bin, *args)
    # Kill as soon as a work directory exists: mid-task, no chance to clean up.
    start = time.time()
    while time.time() - start < 60 and not list(cache.rglob("*.partial-*")):
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    leftovers = list(cache.rglob("*.partial-*"))
    assert leftovers, "the kill should land while a task is running"
    assert not (tmp_path / "out" / "mask.tif").exists()
    assert not [p for p in cache.rglob("outputs.json") if ".partial-" in str(p)]
    # The next run removes the dead process' work directories and completes.
    again = run_nimbus(nimbus_bin, *args)
    assert again.returncode == 0, again.stderr
    assert all(not p.exists() for p in leftovers)
    assert not list(cache.rglob("*.partial-*"))


def _nan_model(path):
    """A cloud model in the right contract whose scores are 0/0."""
    zero = numpy_helper.from_array(np.zeros((2, 12, 1, 1), np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(2, np.float32), "b")
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["z"], kernel_shape=[1, 1]),
             helper.make_node("Div", ["z", "z"], ["output"])]
    graph = helper.make_graph(nodes, "nan", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                           [1, 12, "h", "w"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, "h", "w"])],
                              [zero, bias])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))
    return path


def test_nan_model_output_is_a_clear_error(nimbus_bin, make_scene, tmp_path):
    scene = make_scene(600, 560)
    model = _nan_model(tmp_path / "nan.onnx")
    proc = run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask",
                      scene["product_mask"], "--out", tmp_path / "m.tif", "--cloud-model", model)
    assert proc.returncode == 2, proc.stderr
    assert "NaN" in proc.stderr and "nan.onnx" in proc.stderr
    assert not (tmp_path / "m.tif").exists()
