"""Inputs of the wrong kind and failing disks: one clear message, a non-zero exit, no
partial output and no stale cache entry."""
import os
import resource
import shutil
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest
import rasterio
from onnx import TensorProto, helper, numpy_helper

from conftest import ROOT, run_nimbus

SEED_YAML = ROOT / "workflows" / "data_ingestion" / "sentinel2" / "improve_cloud_mask.yaml"


@pytest.fixture
def scene(make_scene):
    return make_scene(600, 560)


def _improve(nimbus_bin, s2, pm, out, *extra, **kw):
    return run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", s2, "--product-mask", pm, "--out", out, "-q",
                      *extra, **kw)


def _one_error_line(proc, code=2):
    assert proc.returncode == code, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("nimbus: error: "), proc.stderr
    return lines[0]


def _partial_files(directory):
    return [p for p in Path(directory).rglob("*") if ".nimbus-partial" in p.name or ".partial-" in p.name]


def _rewrite_as(src_path, dst_path, dtype, scale=1.0):
    with rasterio.open(src_path) as src:
        profile = src.profile
        data = (src.read().astype(np.float64) * scale).astype(dtype)
    profile.update(dtype=dtype)
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)
    return dst_path


def test_uint8_raster_is_refused(nimbus_bin, scene, tmp_path):
    s2 = _rewrite_as(scene["s2"], tmp_path / "tci.tif", np.uint8, scale=1 / 64)
    line = _one_error_line(_improve(nimbus_bin, s2, scene["product_mask"], tmp_path / "mask.tif"))
    assert "tci.tif" in line and "8-bit" in line and "16-bit" in line
    assert not (tmp_path / "mask.tif").exists()


def test_float_reflectance_is_refused(nimbus_bin, scene, tmp_path):
    s2 = _rewrite_as(scene["s2"], tmp_path / "reflectance.tif", np.float32, scale=1e-4)
    line = _one_error_line(_improve(nimbus_bin, s2, scene["product_mask"], tmp_path / "mask.tif"))
    assert "reflectance.tif" in line and "reflectance" in line and "10000" in line
    assert not (tmp_path / "mask.tif").exists()


def test_float_digital_numbers_give_the_uint16_mask(nimbus_bin, scene, tmp_path):
    s2 = _rewrite_as(scene["s2"], tmp_path / "dn_float.tif", np.float32)
    a = _improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "a.tif")
    b = _improve(nimbus_bin, s2, scene["product_mask"], tmp_path / "b.tif")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    with rasterio.open(tmp_path / "a.tif") as x, rasterio.open(tmp_path / "b.tif") as y:
        assert np.array_equal(x.read(), y.read())


def _half_resolution_model(path):
    """A cloud model that keeps the channel contract but halves H and W."""
    w = numpy_helper.from_array(np.full((2, 12, 1, 1), 1e-4, np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["output"], kernel_shape=[1, 1], strides=[2, 2])]
    graph = helper.make_graph(nodes, "half", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            [1, 12, "h", "w"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, "oh", "ow"])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))
    return path


def test_model_with_wrong_output_shape(nimbus_bin, scene, tmp_path):
    model = _half_resolution_model(tmp_path / "half.onnx")
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "mask.tif",
                                    "--cloud-model", model))
    assert "half.onnx" in line and "returned shape 1x2x256x256" in line and "same spatial size" in line
    assert not _partial_files(tmp_path)
    assert not (tmp_path / "mask.tif").exists()


def test_output_parent_is_a_file(nimbus_bin, scene, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], blocker / "mask.tif"))
    assert "not_a_dir" in line and "--out" in line


def _can_mount():
    return os.geteuid() == 0 and shutil.which("mount") is not None


@contextmanager
def _tmpfs(path, options):
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "nimbus-test", str(path)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_unwritable_output_directory(nimbus_bin, scene, tmp_path):
    out = tmp_path / "readonly"
    if _can_mount():
        # root ignores permission bits: a read-only file system is what stops it.
        with _tmpfs(out, "ro,size=1m"):
            line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], out / "mask.tif"))
    else:
        out.mkdir()
        out.chmod(0o555)
        line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], out / "mask.tif"))
    assert "readonly" in line and "--out" in line


def _file_size_limit(limit):
    def apply():
        # Writes past the limit then fail with EFBIG instead of killing the process,
        # as a full disk would fail them with ENOSPC.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _run_limited(nimbus_bin, limit, *args):
    return subprocess.run([str(nimbus_bin), *map(str, args)], capture_output=True, text=True, timeout=900,
                          preexec_fn=_file_size_limit(limit))


def test_disk_full_while_writing_the_mask(nimbus_bin, make_scene, tmp_path):
    scene = make_scene(1100, 1000, seed=3)
    out = tmp_path / "out"
    out.mkdir()
    proc = _run_limited(nimbus_bin, 20_000, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask",
                        scene["product_mask"], "--out", out / "mask.tif", "--keep-probabilities", out, "-q")
    line = _one_error_line(proc)
    assert "out" in line and ("disk" in line or "space" in line or "large" in line), line
    assert list(out.iterdir()) == []


def test_disk_full_on_a_tiny_file_system(nimbus_bin, make_scene, tmp_path):
    if not _can_mount():
        pytest.skip("needs root to mount a tmpfs (the RLIMIT_FSIZE test covers the same path)")
    scene = make_scene(1100, 1000, seed=3)
    with _tmpfs(tmp_path / "tiny", "size=64k") as out:
        proc = _improve(nimbus_bin, scene["s2"], scene["product_mask"], out / "mask.tif", "--keep-probabilities", out)
        line = _one_error_line(proc)
        assert "tiny" in line
        assert list(out.iterdir()) == []


def test_disk_full_in_a_workflow_leaves_no_cache_entry(nimbus_bin, make_scene, tmp_path):
    scene = make_scene(1100, 1000, seed=5)
    cache = tmp_path / "cache"
    args = ["run", SEED_YAML, "--input", f"s2_raster={scene['s2']}", "--input",
            f"product_mask={scene['product_mask']}", "--param", "cloud_model=embedded:nimbus_cloud_v2", "--param",
            "shadow_model=embedded:nimbus_shadow_v1", "--out-dir", tmp_path / "out", "--cache-dir", cache, "-q"]
    proc = _run_limited(nimbus_bin, 20_000, *args)
    assert proc.returncode == 2, proc.stderr
    assert "nimbus: error: " in proc.stderr
    assert not (tmp_path / "out" / "mask.tif").exists()
    assert not list(cache.rglob("*.partial-*"))
    assert not list(cache.rglob("outputs.json")), "a failed task must not leave a cache entry"
    # With room again the same command completes.
    again = run_nimbus(nimbus_bin, *args)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "out" / "mask.tif").exists()
