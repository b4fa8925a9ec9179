"""Hostile inputs, round 2 (input side): out-of-range numbers, files that block or
explode, inputs that look valid but are not. Each bad input gives one line
`nimbus: error: ...` and exit 2 (never a crash, a hang or a silent wrong mask);
valid inputs keep their exact results."""
import os
import re
import shutil
import socket
import stat
import subprocess
import threading
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import rasterio
from onnx import TensorProto, helper, numpy_helper

from conftest import ROOT, run_nimbus

SEED_YAML = ROOT / "workflows" / "data_ingestion" / "sentinel2" / "improve_cloud_mask.yaml"
# Runs that hung or took minutes before these fixes; a bound well above the fixed cost.
HANG_GUARD_S = int(os.environ.get("NIMBUS_TEST_HANG_GUARD_S", "120"))


@pytest.fixture
def scene(make_scene):
    return make_scene(600, 560)


def _improve(nimbus_bin, s2, pm, out, *extra):
    return _run(nimbus_bin, "improve-cloud-mask", "--s2-raster", s2, "--product-mask", pm, "--out", out, "-q", *extra)


def _run(nimbus_bin, *args, env=None):
    return subprocess.run([str(nimbus_bin), *map(str, args)], capture_output=True, text=True, timeout=HANG_GUARD_S,
                          env=env)


def _one_error_line(proc, code=2):
    assert proc.returncode == code, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("nimbus: error: "), proc.stderr
    return lines[0]


def _leftovers(directory):
    return [p for p in Path(directory).rglob("*") if ".nimbus-partial" in p.name or ".partial-" in p.name]


def _rewrite(src_path, dst_path, transform=None, **profile_changes):
    with rasterio.open(src_path) as src:
        profile = src.profile
        data = src.read()
        descriptions = src.descriptions
    profile.update(profile_changes)
    if transform is not None:
        data = transform(data)
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data.astype(profile["dtype"]))
        if "count" not in profile_changes:
            dst.descriptions = descriptions
    return dst_path


def _custom_workflow(tmp_path, merge_parameter, value_name="closing_size"):
    """The seed workflow with one more root parameter mapped to a merge (or model) op parameter."""
    text = SEED_YAML.read_text()
    text = text.replace("  shadow_model: null\n", f"  shadow_model: null\n  {value_name}: null\n", 1)
    task = "merge:" if merge_parameter in ("closing_size", "min_area") else "cloud:"
    head, tail = text.split(f"  {task}\n", 1)
    tail = tail.replace("    parameters:\n", f"    parameters:\n      {merge_parameter}: '@from({value_name})'\n", 1)
    path = tmp_path / "workflows" / "custom.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(head + f"  {task}\n" + tail)
    return path


def _workflow_args(scene, tmp_path, workflow=SEED_YAML):
    return ["run", workflow, "--input", f"s2_raster={scene['s2']}", "--input", f"product_mask={scene['product_mask']}",
            "--param", "cloud_model=embedded:nimbus_cloud_v1", "--param", "shadow_model=embedded:nimbus_shadow_v1",
            "--out-dir", tmp_path / "out", "--no-cache", "-q"]


# --- B2: closing size ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["2147483647", "46341", "16385"])
def test_closing_size_above_the_maximum_is_refused(nimbus_bin, scene, tmp_path, value):
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "m.tif",
                                    "--closing-size", value))
    assert "--closing-size" in line and value in line and "16384" in line
    assert not (tmp_path / "m.tif").exists()


def test_closing_size_above_the_maximum_in_a_workflow(nimbus_bin, scene, tmp_path):
    workflow = _custom_workflow(tmp_path, "closing_size")
    line = _one_error_line(_run(nimbus_bin, *_workflow_args(scene, tmp_path, workflow), "--param",
                                "closing_size=2147483647"))
    assert "closing_size" in line and "2147483647" in line and "16384" in line


def test_closing_size_bounds_in_python(nimbus_py):
    c = np.zeros((40, 50), np.float32)
    with pytest.raises(nimbus_py.InputError, match="closing_size.*16384"):
        nimbus_py.merge_cloud_masks(c, c, np.zeros((40, 50), np.uint8), closing_size=2147483647)
    with pytest.raises(nimbus_py.InputError, match="closing_size"):
        nimbus_py.merge_cloud_masks(c, c, np.zeros((40, 50), np.uint8), closing_size=2**40)
    # The largest radius runs (the dilation is bounded by the raster, not the radius) and is exact:
    # one cloudy pixel covers the whole raster.
    pm = np.zeros((40, 50), np.uint8)
    pm[3, 4] = 1
    assert nimbus_py.merge_cloud_masks(c, c, pm, closing_size=16384).all()


# --- B23: merge_cloud_masks in Python -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 0), (0, 5), (0, 0)])
def test_merge_cloud_masks_empty_arrays_are_refused(nimbus_py, shape):
    a = np.zeros(shape, np.float32)
    with pytest.raises(nimbus_py.InputError, match="at least"):
        nimbus_py.merge_cloud_masks(a, a, np.zeros(shape, np.uint8))


@pytest.mark.parametrize("dtype,value", [(np.uint16, 1024), (np.uint16, 2048), (np.uint16, 256), (np.float32, 0.5),
                                         (np.float64, np.nan), (np.int32, -1)])
def test_merge_cloud_masks_nonzero_product_is_cloud_for_any_dtype(nimbus_py, dtype, value):
    c = np.zeros((20, 30), np.float32)
    pm = np.zeros((20, 30), dtype)
    pm[5, 7] = value
    mask = nimbus_py.merge_cloud_masks(c, c, pm, closing_size=0)
    assert mask[5, 7] == 1 and mask.sum() == 1


# --- B16: numbers out of range ----------------------------------------------------------------------------------

def test_float_parameter_overflow_is_an_input_error(nimbus_bin, scene, tmp_path):
    line = _one_error_line(_run(nimbus_bin, *_workflow_args(scene, tmp_path), "--param", "cloud_thr=1e400"))
    assert "1e400" in line and "range" in line


def test_integer_parameter_above_int_range_is_not_truncated(nimbus_bin, scene, tmp_path):
    workflow = _custom_workflow(tmp_path, "closing_size")
    # 4294967301 = 2^32 + 5 used to run as closing size 5.
    line = _one_error_line(_run(nimbus_bin, *_workflow_args(scene, tmp_path, workflow), "--param",
                                "closing_size=4294967301"))
    assert "closing_size" in line and "4294967301" in line and "outside" in line
    assert not (tmp_path / "out" / "mask.tif").exists()


def test_float_overflow_in_a_workflow_file_names_file_and_line(nimbus_bin, scene, tmp_path):
    text = SEED_YAML.read_text().replace("  cloud_thr: null", "  cloud_thr: 1e400")
    workflow = tmp_path / "overflow.yaml"
    workflow.write_text(text)
    line = _one_error_line(_run(nimbus_bin, *_workflow_args(scene, tmp_path, workflow)))
    assert "overflow.yaml:" in line and "1e400" in line


def test_unconvertible_cli_number_is_one_error_line(nimbus_bin, scene, tmp_path):
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "m.tif",
                                    "--closing-size", "99999999999"))
    assert "--closing-size" in line


# --- B25: window lower bound --------------------------------------------------------------------------------

@pytest.mark.parametrize("window", ["1", "7", "63"])
def test_window_below_the_minimum_is_refused(nimbus_bin, scene, tmp_path, window):
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "m.tif",
                                    "--window", window))
    assert "window" in line and "minimum of 64" in line


def test_window_below_the_minimum_in_a_workflow(nimbus_bin, scene, tmp_path):
    workflow = _custom_workflow(tmp_path, "window_size", value_name="window")
    line = _one_error_line(_run(nimbus_bin, *_workflow_args(scene, tmp_path, workflow), "--param", "window=7"))
    assert "window_size" in line and "64" in line


# --- B17: YAML that explodes ----------------------------------------------------------------------------------

def test_yaml_alias_bomb_is_refused(nimbus_bin, scene, tmp_path):
    # Ten levels of nine aliases each: under 1 KB of text, 9^10 values once expanded.
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    # The anchors live inside a parameter value so the document stays a workflow.
    text = SEED_YAML.read_text().replace("  cloud_thr: null",
                                         "  cloud_thr:\n    " + "\n    ".join(levels) + "\n    all: *a9", 1)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(text)
    line = _one_error_line(_run(nimbus_bin, *_workflow_args(scene, tmp_path, bomb)))
    assert "bomb.yaml" in line and "aliases" in line


def test_nested_workflows_that_multiply_are_refused(nimbus_bin, scene, tmp_path):
    wf = tmp_path / "workflows"
    wf.mkdir()
    (wf / "level0.yaml").write_text(SEED_YAML.read_text().replace("name: improve_cloud_mask", "name: level0"))
    for i in range(1, 25):
        (wf / f"level{i}.yaml").write_text(f"""name: level{i}
sources:
  s2_raster: [a.s2_raster, b.s2_raster]
  product_mask: [a.product_mask, b.product_mask]
sinks:
  mask: a.mask
tasks:
  a:
    workflow: level{i - 1}
  b:
    workflow: level{i - 1}
""")
    proc = _run(nimbus_bin, "run", wf / "level24.yaml", "--input", f"s2_raster={scene['s2']}", "--input",
                f"product_mask={scene['product_mask']}", "--out-dir", tmp_path / "out", "--no-cache", "-q")
    line = _one_error_line(proc)
    assert "more than 2000 ops" in line


def test_huge_workflow_file_is_refused(nimbus_bin, scene, tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text(SEED_YAML.read_text() + "#" + "x" * (2 << 20) + "\n")
    line = _one_error_line(_run(nimbus_bin, *_workflow_args(scene, tmp_path, big)))
    assert "big.yaml" in line and "bytes" in line


def test_deeply_nested_yaml_is_refused(nimbus_bin, scene, tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text(SEED_YAML.read_text().replace("  cloud_thr: null", "  cloud_thr: " + "[" * 5000 + "]" * 5000))
    line = _one_error_line(_run(nimbus_bin, *_workflow_args(scene, tmp_path, deep)))
    assert "deep.yaml" in line


# --- B9 and other special files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["--s2-raster", "--product-mask", "--cloud-model"])
def test_fifo_as_input_is_refused(nimbus_bin, scene, tmp_path, role):
    fifo = tmp_path / "pipe.tif"
    os.mkfifo(fifo)
    paths = {"--s2-raster": scene["s2"], "--product-mask": scene["product_mask"]}
    paths[role] = fifo
    extra = ["--cloud-model", fifo] if role == "--cloud-model" else []
    line = _one_error_line(_improve(nimbus_bin, paths["--s2-raster"], paths["--product-mask"], tmp_path / "m.tif",
                                    *extra))
    assert "pipe.tif" in line and "FIFO" in line
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_fifo_as_batch_manifest_is_refused(nimbus_bin, tmp_path):
    fifo = tmp_path / "scenes.csv"
    os.mkfifo(fifo)
    line = _one_error_line(_run(nimbus_bin, "batch", fifo, "--out-dir", tmp_path / "out", "-q"))
    assert "scenes.csv" in line and "FIFO" in line


def test_character_device_as_raster_is_refused(nimbus_bin, scene, tmp_path):
    line = _one_error_line(_improve(nimbus_bin, "/dev/zero", scene["product_mask"], tmp_path / "m.tif"))
    assert "/dev/zero" in line and "device" in line


def test_socket_as_product_mask_is_refused(nimbus_bin, scene, tmp_path):
    path = tmp_path / "pm.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    try:
        line = _one_error_line(_improve(nimbus_bin, scene["s2"], path, tmp_path / "m.tif"))
    finally:
        server.close()
    assert "pm.sock" in line and "is a socket" in line


def test_directory_as_model_is_refused(nimbus_bin, scene, tmp_path):
    model_dir = tmp_path / "models"  # not around the output, which would be refused first
    model_dir.mkdir()
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "m.tif",
                                    "--shadow-model", model_dir))
    assert "--shadow-model" in line and "is a directory" in line


# --- B21: a server that never answers ------------------------------------------------------------------------------

def test_silent_http_server_times_out_and_names_the_url(nimbus_bin, scene, tmp_path):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def accept_and_stay_silent():
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    url = f"/vsicurl/http://127.0.0.1:{port}/scene.tif"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GDAL_HTTP", "CPL_VSIL_CURL"))}
    try:
        proc = _run(nimbus_bin, "improve-cloud-mask", "--s2-raster", url, "--product-mask", scene["product_mask"],
                    "--out", tmp_path / "m.tif", "-q", env=env)
    finally:
        stop.set()
        thread.join()
        for c in accepted:
            c.close()
        server.close()
    line = _one_error_line(proc)
    assert f"127.0.0.1:{port}/scene.tif" in line and "server" in line
    assert accepted, "the test server saw no connection"


# --- B5, B6, B4: band order, reflectance, non-finite values ---------------------------------------------------

def test_reversed_band_order_is_refused(nimbus_bin, scene, tmp_path):
    with rasterio.open(scene["s2"]) as src:
        names = list(src.descriptions)
    s2 = _rewrite(scene["s2"], tmp_path / "reversed.tif", transform=lambda d: d[::-1])
    with rasterio.open(s2, "r+") as dst:
        dst.descriptions = tuple(reversed(names))
    line = _one_error_line(_improve(nimbus_bin, s2, scene["product_mask"], tmp_path / "m.tif"))
    assert "reversed.tif" in line and "B12,B11,B09" in line and "B01,B02,B03" in line


@pytest.mark.parametrize("names", [("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"),
                                   ("",) * 12, ("Band 1",) * 12])
def test_band_descriptions_in_order_or_absent_are_accepted(nimbus_bin, scene, tmp_path, names):
    s2 = _rewrite(scene["s2"], tmp_path / "named.tif")
    with rasterio.open(s2, "r+") as dst:
        dst.descriptions = names
    a = _improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "a.tif")
    b = _improve(nimbus_bin, s2, scene["product_mask"], tmp_path / "b.tif")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    with rasterio.open(tmp_path / "a.tif") as x, rasterio.open(tmp_path / "b.tif") as y:
        assert np.array_equal(x.read(), y.read())


def test_reflectance_with_an_outlier_is_refused(nimbus_bin, scene, tmp_path):
    def reflectance_with_outlier(d):
        r = d.astype(np.float32) * 1e-4
        r[:, 10, 10] = 5000.0
        return r
    s2 = _rewrite(scene["s2"], tmp_path / "refl_outlier.tif", transform=reflectance_with_outlier, dtype="float32")
    line = _one_error_line(_improve(nimbus_bin, s2, scene["product_mask"], tmp_path / "m.tif"))
    assert "refl_outlier.tif" in line and "reflectance" in line and "10000" in line


def test_one_band_in_reflectance_is_refused(nimbus_bin, scene, tmp_path):
    def band_seven_scaled(d):
        r = d.astype(np.float32)
        r[6] *= 1e-4
        return r
    s2 = _rewrite(scene["s2"], tmp_path / "mixed.tif", transform=band_seven_scaled, dtype="float32")
    line = _one_error_line(_improve(nimbus_bin, s2, scene["product_mask"], tmp_path / "m.tif"))
    assert "band 7" in line and "reflectance" in line


def test_nan_nodata_gives_the_mask_of_zero_nodata(nimbus_bin, make_scene, tmp_path):
    scene = make_scene(600, 560, seed=4, nodata_wedge=True)

    def zero_to_nan(d):
        f = d.astype(np.float32)
        f[f == 0] = np.nan
        return f
    s2 = _rewrite(scene["s2"], tmp_path / "nan_nodata.tif", transform=zero_to_nan, dtype="float32", nodata=np.nan)
    a = _improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "a.tif")
    b = _improve(nimbus_bin, s2, scene["product_mask"], tmp_path / "b.tif")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    with rasterio.open(tmp_path / "a.tif") as x, rasterio.open(tmp_path / "b.tif") as y:
        assert np.array_equal(x.read(), y.read())


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_untagged_non_finite_value_is_an_input_error(nimbus_bin, scene, tmp_path, value):
    def with_hole(d):
        f = d.astype(np.float32)
        f[3, 100, 200] = value
        return f
    s2 = _rewrite(scene["s2"], tmp_path / "hole.tif", transform=with_hole, dtype="float32", nodata=None)
    line = _one_error_line(_improve(nimbus_bin, s2, scene["product_mask"], tmp_path / "m.tif"))
    assert "hole.tif" in line and "band 4" in line and "x=200 y=100" in line and "nodata" in line
    assert "model" not in line


# --- B7: product mask checks -------------------------------------------------------------------------------

def test_product_mask_all_nodata_is_refused(nimbus_bin, scene, tmp_path):
    pm = _rewrite(scene["product_mask"], tmp_path / "pm_nodata.tif", transform=lambda d: np.full_like(d, 100))
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], pm, tmp_path / "m.tif"))
    assert "pm_nodata.tif" in line and "nodata" in line


def test_raster_as_product_mask_is_refused(nimbus_bin, scene, tmp_path):
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["s2"], tmp_path / "m.tif"))
    assert "--product-mask" in line and "12 bands" in line and "one band" in line


def test_product_mask_in_a_workflow_is_checked(nimbus_bin, scene, tmp_path):
    args = _workflow_args(dict(scene, product_mask=scene["s2"]), tmp_path)
    line = _one_error_line(_run(nimbus_bin, *args))
    assert "12 bands" in line and "--input product_mask" in line


# --- B19: SAFE metadata ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_safe(tmp_path_factory):
    from synthetic_safe import write_safe
    return write_safe(tmp_path_factory.mktemp("safe2"), width=600, height=560)


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_unreadable_mtd_takes_the_baseline_from_the_name(nimbus_bin, small_safe, tmp_path, damage):
    safe, _, _ = small_safe
    ok = _run(nimbus_bin, "improve-cloud-mask", "--s2-raster", safe, "--out", tmp_path / "ok.tif", "-q")
    assert ok.returncode == 0, ok.stderr
    copy = tmp_path / safe.name
    shutil.copytree(safe, copy)
    mtd = copy / "MTD_MSIL2A.xml"
    text = mtd.read_text()
    mtd.write_text("" if damage == "empty" else text[: len(text) // 3])
    proc = _run(nimbus_bin, "improve-cloud-mask", "--s2-raster", copy, "--out", tmp_path / "damaged.tif")
    assert proc.returncode == 0, proc.stderr
    assert "processing baseline 05.09 from the product name" in proc.stderr
    with rasterio.open(tmp_path / "ok.tif") as a, rasterio.open(tmp_path / "damaged.tif") as b:
        assert np.array_equal(a.read(), b.read())


def test_unreadable_mtd_without_a_baseline_in_the_name_is_refused(nimbus_bin, small_safe, tmp_path):
    safe, _, _ = small_safe
    copy = tmp_path / "renamed.SAFE"
    shutil.copytree(safe, copy)
    (copy / "MTD_MSIL2A.xml").write_text("")
    line = _one_error_line(_run(nimbus_bin, "improve-cloud-mask", "--s2-raster", copy, "--out", tmp_path / "m.tif",
                                "-q"))
    assert "renamed.SAFE" in line and "MTD_MSIL2A.xml" in line and "re-download" in line


# --- B8: sizes that cannot fit -------------------------------------------------------------------------------

def _sparse(path, width, height, count, dtype, **extra):
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=dtype, tiled=True,
                   blockxsize=512, blockysize=512, sparse_ok=True, compress="deflate", crs="EPSG:32631",
                   transform=rasterio.transform.from_origin(300000, 5000000, 10, 10), **extra)
    with rasterio.open(path, "w", **profile):
        pass
    return path


def test_huge_declared_raster_is_an_input_error_with_numbers(nimbus_bin, tmp_path):
    s2 = _sparse(tmp_path / "huge.tif", 200000, 200000, 12, "uint16", nodata=0)
    pm = _sparse(tmp_path / "huge_pm.tif", 200000, 200000, 1, "uint8")
    line = _one_error_line(_improve(nimbus_bin, s2, pm, tmp_path / "m.tif"))
    assert "huge.tif" in line and "200000x200000" in line and "GiB" in line


def test_huge_declared_safe_band_is_an_input_error(nimbus_bin, small_safe, tmp_path):
    safe, _, _ = small_safe
    copy = tmp_path / safe.name
    shutil.copytree(safe, copy)
    b02 = next(copy.rglob("*_B02_10m.jp2"))
    b02.unlink()
    _sparse(b02, 100000, 100000, 1, "uint16")  # a GeoTIFF under the .jp2 name; GDAL opens it by content
    line = _one_error_line(_run(nimbus_bin, "improve-cloud-mask", "--s2-raster", copy, "--out", tmp_path / "m.tif",
                                "-q"))
    assert "100000x100000" in line and "GiB" in line


def test_raster_with_gigantic_blocks_is_refused_before_any_read(nimbus_bin, tmp_path):
    # Found by the raster-header fuzzer: a header may declare blocks of any size, and GDAL
    # decodes a whole block to read one chip (2 GiB per band here, for a 600x560 scene).
    s2 = tmp_path / "bigblock.tif"
    profile = dict(driver="GTiff", width=600, height=560, count=12, dtype="uint16", tiled=True, blockxsize=32768,
                   blockysize=32768, sparse_ok=True, compress="deflate", crs="EPSG:32631",
                   transform=rasterio.transform.from_origin(300000, 5000000, 10, 10))
    with rasterio.open(s2, "w", **profile):
        pass
    pm = _sparse(tmp_path / "pm.tif", 600, 560, 1, "uint8")
    line = _one_error_line(_improve(nimbus_bin, s2, pm, tmp_path / "m.tif"))
    assert "bigblock.tif" in line and "32768x32768" in line and "re-tile" in line
    assert not (tmp_path / "m.tif").exists()


# --- B20: archives with many entries ----------------------------------------------------------------------

def test_safe_zip_with_many_entries_is_read_in_proportion(nimbus_bin, small_safe, tmp_path):
    if os.environ.get("NIMBUS_PYTHONPATH") == "" or "ASAN_OPTIONS" in os.environ:
        # GDAL indexes an archive by growing an array with realloc, one entry at a time: cheap with
        # glibc, quadratic under AddressSanitizer's allocator (minutes for 150 000 entries).
        pytest.skip("archive indexing inside GDAL is quadratic under AddressSanitizer; covered by the Release run")
    safe, _, _ = small_safe
    archive = tmp_path / "product.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for f in sorted(safe.rglob("*")):
            if f.is_file():
                z.write(f, f"{safe.name}/{f.relative_to(safe)}")
        for i in range(150_000):
            z.writestr(f"{safe.name}/AUX_DATA/extra/e{i}.dat", b"")
    ok = _run(nimbus_bin, "improve-cloud-mask", "--s2-raster", safe, "--out", tmp_path / "dir.tif", "-q")
    proc = _run(nimbus_bin, "improve-cloud-mask", "--s2-raster", archive, "--out", tmp_path / "zip.tif", "-q")
    assert ok.returncode == 0 and proc.returncode == 0, ok.stderr + proc.stderr
    with rasterio.open(tmp_path / "dir.tif") as a, rasterio.open(tmp_path / "zip.tif") as b:
        assert np.array_equal(a.read(), b.read())


# --- B22: ONNX external data -----------------------------------------------------------------------------

@pytest.mark.parametrize("location", ["weights.bin", "../../etc/passwd"])
def test_onnx_external_data_is_refused(nimbus_bin, scene, tmp_path, location):
    w = numpy_helper.from_array(np.full((2, 12, 1, 1), 1e-4, np.float32), "w")
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "96")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    (tmp_path / "weights.bin").write_bytes(np.full(24, 1e-4, np.float32).tobytes())
    graph = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["output"], kernel_shape=[1, 1])], "ext",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 12, "h", "w"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, "h", "w"])], [w])
    model = tmp_path / "external.onnx"
    model.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]).SerializeToString())
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "m.tif",
                                    "--cloud-model", model))
    assert "external.onnx" in line and "external data" in line and location in line
    assert "save_as_external_data=False" in line


# --- Parity review: grids checked before any model runs ----------------------------------------------------

def test_workflow_grid_mismatch_is_reported_before_any_task(nimbus_bin, scene, make_scene, tmp_path):
    other = make_scene(640, 560, name="other")
    cache = tmp_path / "cache"
    proc = _run(nimbus_bin, "run", SEED_YAML, "--input", f"s2_raster={scene['s2']}", "--input",
                f"product_mask={other['product_mask']}", "--out-dir", tmp_path / "out", "--cache-dir", cache, "-q")
    line = _one_error_line(proc)
    assert "different grids" in line and str(other["product_mask"]) in line and str(scene["s2"]) in line
    assert "--input product_mask" in line and "nimbus-work" not in line and "partial" not in line
    assert not list(cache.rglob("outputs.json")), "no task may run before the grids are checked"


# --- Found while probing: more numbers and metadata without bounds, unicode paths ----------------------------

@pytest.mark.parametrize("threads", ["-3", "100000"])
def test_thread_count_out_of_range_is_refused(nimbus_bin, scene, tmp_path, threads):
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "m.tif",
                                    "--threads", threads))
    assert "--threads" in line and threads in line and "1024" in line


def test_damaged_boa_offset_tag_is_refused(nimbus_bin, scene, tmp_path):
    s2 = _rewrite(scene["s2"], tmp_path / "tagged.tif")
    with rasterio.open(s2, "r+") as dst:
        dst.update_tags(3, NIMBUS_BOA_ADD_OFFSET="nan")
    line = _one_error_line(_improve(nimbus_bin, s2, scene["product_mask"], tmp_path / "m.tif"))
    assert "tagged.tif" in line and "band 3" in line and "NIMBUS_BOA_ADD_OFFSET" in line


def test_damaged_boa_offset_in_the_metadata_is_refused(nimbus_bin, small_safe, tmp_path):
    safe, _, _ = small_safe
    copy = tmp_path / safe.name
    shutil.copytree(safe, copy)
    mtd = copy / "MTD_MSIL2A.xml"
    mtd.write_text(mtd.read_text().replace('<BOA_ADD_OFFSET band_id="3">-1000<', '<BOA_ADD_OFFSET band_id="3">1e300<'))
    line = _one_error_line(_run(nimbus_bin, "improve-cloud-mask", "--s2-raster", copy, "--out", tmp_path / "m.tif",
                                "-q"))
    assert "1e300" in line and "re-download" in line


def test_unicode_paths_work_and_are_named(nimbus_bin, make_scene, tmp_path):
    scene = make_scene(600, 560, name="scène ☁ 雲")
    out = tmp_path / "sortie ☀"
    out.mkdir()
    ok = _improve(nimbus_bin, scene["s2"], scene["product_mask"], out / "masque.tif")
    assert ok.returncode == 0, ok.stderr
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["s2"], out / "m.tif"))
    assert "scène ☁ 雲" in line


def test_model_with_a_huge_fixed_input_is_refused(nimbus_bin, scene, tmp_path):
    w = numpy_helper.from_array(np.full((2, 12, 1, 1), 1e-4, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["output"], kernel_shape=[1, 1])], "huge",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 12, 100000, 100000])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, 100000, 100000])],
                              [w])
    model = tmp_path / "huge_input.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(model))
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "m.tif",
                                    "--cloud-model", model))
    assert "huge_input.onnx" in line and "100000x100000" in line and "8192" in line


@pytest.mark.parametrize("overlap", ["0.9", "0.998"])
def test_overlap_that_leaves_a_tiny_step_is_refused(nimbus_bin, scene, tmp_path, overlap):
    # 0.998 on 512-pixel chips is a 1-pixel step: millions of chips on a tile.
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "m.tif",
                                    "--overlap", overlap))
    assert "overlap" in line and overlap in line and "0.875" in line


def test_directory_as_workflow_input_is_named(nimbus_bin, scene, tmp_path):
    args = _workflow_args(dict(scene, s2=tmp_path), tmp_path)
    line = _one_error_line(_run(nimbus_bin, *args))
    assert "--input s2_raster" in line and "is a directory" in line


def _digest(path):
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("output", ["--out", "--report", "--keep-probabilities"])
def test_an_output_never_replaces_an_input(nimbus_bin, scene, tmp_path, output):
    before = {k: _digest(scene[k]) for k in ("s2", "product_mask")}
    if output == "--out":
        proc = _improve(nimbus_bin, scene["s2"], scene["product_mask"], scene["product_mask"])
    elif output == "--report":
        proc = _improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "m.tif", "--report", scene["s2"])
    else:
        victim = tmp_path / "cloud_probability.tif"
        shutil.copy(scene["product_mask"], victim)
        before["victim"] = _digest(victim)
        proc = _improve(nimbus_bin, scene["s2"], victim, tmp_path / "m.tif", "--keep-probabilities", tmp_path)
        scene = dict(scene, victim=victim)
    line = _one_error_line(proc)
    assert "would replace the input" in line  # one mechanism for every output (OutputSet)
    assert {k: _digest(scene[k]) for k in before} == before


def test_a_workflow_sink_never_replaces_an_input(nimbus_bin, scene, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    pm = out / "mask.tif"
    shutil.copy(scene["product_mask"], pm)
    before = _digest(pm)
    args = _workflow_args(dict(scene, product_mask=pm), tmp_path)
    line = _one_error_line(_run(nimbus_bin, *args))
    assert "sink mask" in line and "would replace the input" in line
    assert _digest(pm) == before


@pytest.mark.parametrize("target", ["fifo", "/dev/zero"])
def test_vrt_referencing_a_special_file_is_refused(nimbus_bin, scene, tmp_path, target):
    if target == "fifo":
        target = tmp_path / "pipe.tif"
        os.mkfifo(target)
    subprocess.run(["gdal_translate", "-q", "-of", "VRT", str(scene["s2"]), str(tmp_path / "base.vrt")], check=True)
    text = (tmp_path / "base.vrt").read_text()
    text = re.sub(r"<SourceFilename[^>]*>[^<]*</SourceFilename>",
                  f'<SourceFilename relativeToVRT="0">{target}</SourceFilename>', text)
    (tmp_path / "evil.vrt").write_text(text)
    assert str(target) in text
    line = _one_error_line(_improve(nimbus_bin, tmp_path / "evil.vrt", scene["product_mask"], tmp_path / "m.tif"))
    assert "evil.vrt" in line and str(target) in line and "not a regular file" in line
