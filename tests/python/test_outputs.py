"""Outputs people can rely on and read (issue 17): GDAL-like overwrite rules, streams
('-', FIFOs, links to devices) written through instead of renamed over, --nodata-value,
the mask's colour table and category names, and the georeferenced preview."""
import json
import os
import subprocess
import threading

import numpy as np
import pytest
import rasterio
from osgeo import gdal

from conftest import run_nimbus


# Small scenes, so a window smaller than the default 512.
WINDOW = ["--window", "128"]


def _improve(nimbus_bin, scene, out, *extra):
    return run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask",
                      scene["product_mask"], "--out", out, "-q", *WINDOW, *extra)


@pytest.fixture
def small_scene(make_scene):
    return make_scene(160, 140, seed=3)


# --- overwrite rules -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("output", ["mask", "preview", "report", "probabilities", "mask sidecar", "world file"])
def test_existing_outputs_are_refused_without_overwrite_and_left_byte_identical(nimbus_bin, small_scene, tmp_path,
                                                                               output):
    o = tmp_path / "o"
    o.mkdir()
    args = ["--preview", o / "p.png", "--report", o / "r.json", "--keep-probabilities", o / "probs"]
    existing = {"mask": o / "m.tif", "preview": o / "p.png", "report": o / "r.json",
                "probabilities": o / "probs" / "shadow_probability.tif", "mask sidecar": o / "m.tif.aux.xml",
                "world file": o / "p.pgw"}[output]
    existing.parent.mkdir(exist_ok=True)
    existing.write_bytes(b"an earlier output\x00\xff")
    proc = _improve(nimbus_bin, small_scene, o / "m.tif", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("nimbus: error: ") and "already exists; pass --overwrite" in proc.stderr
    assert str(existing) in proc.stderr and proc.stderr.count("\n") == 1
    assert existing.read_bytes() == b"an earlier output\x00\xff"
    # Checked before any work: nothing else appeared.
    assert set(o.rglob("*")) == {existing} | ({existing.parent} if existing.parent != o else set())


def test_overwrite_replaces_every_output(nimbus_bin, small_scene, tmp_path):
    out = tmp_path / "m.tif"
    first = _improve(nimbus_bin, small_scene, out, "--report", tmp_path / "r.json")
    assert first.returncode == 0, first.stderr
    before = out.read_bytes()
    # Another threshold, same paths: refused, then replaced with --overwrite.
    again = _improve(nimbus_bin, small_scene, out, "--report", tmp_path / "r.json", "--cloud-thr", "0.9")
    assert again.returncode == 2 and out.read_bytes() == before
    replaced = _improve(nimbus_bin, small_scene, out, "--report", tmp_path / "r.json", "--cloud-thr", "0.9",
                        "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    with rasterio.open(out) as ds:
        assert ds.tags()["NIMBUS_CLOUD_THRESHOLD"] == "0.9"
    assert json.loads((tmp_path / "r.json").read_text())["width"] == 160


def test_python_overwrite_keyword(nimbus_py, small_scene, tmp_path):
    out = tmp_path / "m.tif"
    out.write_bytes(b"old")
    with pytest.raises(nimbus_py.InputError, match=r"already exists; pass overwrite to replace it"):
        nimbus_py.improve_cloud_mask(small_scene["s2"], out, product_mask=small_scene["product_mask"], window=128)
    assert out.read_bytes() == b"old"
    nimbus_py.improve_cloud_mask(small_scene["s2"], out, product_mask=small_scene["product_mask"], window=128,
                                 overwrite=True)
    with rasterio.open(out) as ds:
        assert ds.read(1).shape == (140, 160)


def test_run_refuses_existing_sinks_unless_overwrite(nimbus_bin, make_scene, tmp_path):
    scene = make_scene(512, 512, seed=4)  # the workflow's ops chip at 512
    args = ["run", "data_ingestion/sentinel2/improve_cloud_mask", "--input", f"s2_raster={scene['s2']}",
            "--input", f"product_mask={scene['product_mask']}", "--out-dir", tmp_path / "out", "--no-cache",
            "--param", "cloud_model=embedded:nimbus_cloud_v2", "--param", "shadow_model=embedded:nimbus_shadow_v1",
            "-q"]
    first = run_nimbus(nimbus_bin, *args)
    assert first.returncode == 0, first.stderr
    sinks = sorted((tmp_path / "out").iterdir())
    assert sinks
    before = {p: p.read_bytes() for p in sinks}
    again = run_nimbus(nimbus_bin, *args, "--param", "cloud_thr=0.9")
    assert again.returncode == 2 and "already exists; pass --overwrite" in again.stderr, again.stderr
    assert {p: p.read_bytes() for p in sinks} == before
    replaced = run_nimbus(nimbus_bin, *args, "--param", "cloud_thr=0.9", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert {p: p.read_bytes() for p in sinks} != before


def test_batch_refuses_a_foreign_existing_mask_before_any_scene_runs(nimbus_bin, make_scene, tmp_path):
    a = make_scene(140, 130, seed=1, name="a")
    b = make_scene(140, 130, seed=2, name="b")
    manifest = tmp_path / "scenes.csv"
    manifest.write_text(f"s2_raster,product_mask,id\n{a['s2']},{a['product_mask']},a\n"
                        f"{b['s2']},{b['product_mask']},b\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.tif").write_bytes(b"someone's mask")
    proc = run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", out, "-q", *WINDOW)
    assert proc.returncode == 2 and "scene b" in proc.stderr and "--overwrite" in proc.stderr, proc.stderr
    assert not (out / "a.tif").exists(), "refused before any scene ran"
    assert (out / "b.tif").read_bytes() == b"someone's mask"
    ok = run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", out, "-q", *WINDOW, "--overwrite")
    assert ok.returncode == 0, ok.stderr
    # Resuming needs no --overwrite: verified masks are skipped, not replaced.
    resumed = run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", out, *WINDOW)
    assert resumed.returncode == 0 and "2 skipped" in resumed.stderr, resumed.stderr
    # A changed recipe would replace the masks: refused without --overwrite.
    changed = run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", out, "--cloud-thr", "0.5", "-q", *WINDOW)
    assert changed.returncode == 2 and "another recipe" in changed.stderr, changed.stderr


# --- streams: '-', /dev/stdout-like links, FIFOs, directories ---------------------------------------------------

def test_report_dash_prints_json_on_stdout(nimbus_bin, small_scene, tmp_path):
    proc = _improve(nimbus_bin, small_scene, tmp_path / "m.tif", "--report", "-")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["width"] == 160 and report["height"] == 140
    assert not (tmp_path / "-").exists() and not any(p.name == "-" for p in tmp_path.parent.rglob("-"))


def test_dash_is_refused_for_the_mask(nimbus_bin, small_scene, tmp_path):
    proc = _improve(nimbus_bin, small_scene, "-")
    assert proc.returncode == 2 and "standard output" in proc.stderr and "give a file path" in proc.stderr
    assert not os.path.exists("-")


def test_report_through_a_link_to_a_device_keeps_the_link(nimbus_bin, small_scene, tmp_path):
    # As --report /dev/stdout run as root did: the link must stay a link, its target untouched.
    link = tmp_path / "stdout"
    link.symlink_to("/dev/null")
    proc = _improve(nimbus_bin, small_scene, tmp_path / "m.tif", "--report", link)
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and os.readlink(link) == "/dev/null"
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def _read_fifo(path, into):
    with open(path, "rb") as f:
        into.append(f.read())


def test_report_and_preview_to_fifos_through_links(nimbus_bin, small_scene, tmp_path):
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    link = tmp_path / "report-link"
    link.symlink_to(fifo)
    got = []
    reader = threading.Thread(target=_read_fifo, args=(fifo, got))
    reader.start()
    proc = _improve(nimbus_bin, small_scene, tmp_path / "m.tif", "--report", link)
    reader.join(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(got[0])["width"] == 160
    assert link.is_symlink() and fifo.is_fifo()


def test_a_fifo_nobody_reads_is_refused_without_hanging_and_publishes_nothing(nimbus_bin, small_scene, tmp_path):
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    proc = _improve(nimbus_bin, small_scene, tmp_path / "m.tif", "--report", fifo)
    assert proc.returncode == 2 and "nobody reads" in proc.stderr, proc.stderr
    assert not (tmp_path / "m.tif").exists() and fifo.is_fifo()


@pytest.mark.parametrize("kind", ["fifo", "directory", "link to /dev/null"])
def test_the_mask_is_never_written_to_or_renamed_over_a_special_path(nimbus_bin, small_scene, tmp_path, kind):
    out = tmp_path / "m.tif"
    if kind == "fifo":
        os.mkfifo(out)
    elif kind == "directory":
        out.mkdir()
    else:
        out.symlink_to("/dev/null")
    proc = _improve(nimbus_bin, small_scene, out, "--overwrite")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert {"fifo": "FIFO", "directory": "is a directory", "link to /dev/null": "character device"}[kind] in \
        proc.stderr
    assert out.is_fifo() if kind == "fifo" else out.is_dir() if kind == "directory" else out.is_symlink()


def test_preview_to_stdout_is_the_png_alone(nimbus_bin, small_scene, tmp_path):
    o = tmp_path / "o"
    o.mkdir()
    proc = subprocess.run([str(nimbus_bin), "improve-cloud-mask", "--s2-raster", str(small_scene["s2"]),
                           "--product-mask", str(small_scene["product_mask"]), "--out", str(o / "m.tif"),
                           "--preview", "-", "-q", *WINDOW], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"\x89PNG\r\n\x1a\n")
    assert sorted(p.name for p in o.iterdir()) == ["m.tif", "m.tif.aux.xml"]  # no world file for a stream


# --- the mask as readers see it --------------------------------------------------------------------------------

def _category_names(path):
    dataset = gdal.Open(str(path))  # kept alive while its band is used (osgeo would crash otherwise)
    band = dataset.GetRasterBand(1)
    band.GetMetadata()  # GDAL 3.6's GeoTIFF driver reads the .aux.xml on the first metadata request
    return band.GetCategoryNames()


def _nodata_pixels(scene):
    with rasterio.open(scene["s2"]) as src:
        return np.any(src.read() == 0, axis=0)


def test_default_mask_keeps_farmvibes_nodata_and_is_described(nimbus_bin, make_scene, tmp_path):
    scene = make_scene(200, 180, seed=5, nodata_wedge=True)
    assert _improve(nimbus_bin, scene, tmp_path / "m.tif").returncode == 0
    nodata = _nodata_pixels(scene)
    with rasterio.open(tmp_path / "m.tif") as ds:
        mask = ds.read(1)
        assert ds.nodata == 100
        colormap = ds.colormap(1)
        assert "FarmVibes" in ds.descriptions[0]
    assert nodata.any() and (mask[nodata] == 1).all() and set(np.unique(mask)) <= {0, 1}
    # A TIFF colour map has no alpha: GDAL reads the nodata entry as transparent, the others opaque.
    assert colormap[0][:3] == (0, 0, 0) and colormap[1] == (255, 0, 255, 255)
    assert colormap[100][:3] == (128, 128, 128)
    names = _category_names(tmp_path / "m.tif")
    assert names[0] == "clear" and names[1] == "cloud or shadow" and names[100] == "nodata"


def test_nodata_value_marks_nodata_pixels_with_the_value_and_the_tag(nimbus_bin, make_scene, tmp_path):
    scene = make_scene(200, 180, seed=5, nodata_wedge=True)
    assert _improve(nimbus_bin, scene, tmp_path / "default.tif").returncode == 0
    proc = _improve(nimbus_bin, scene, tmp_path / "m.tif", "--nodata-value", "255", "--report", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    nodata = _nodata_pixels(scene)
    with rasterio.open(tmp_path / "default.tif") as ds:
        default = ds.read(1)
    with rasterio.open(tmp_path / "m.tif") as ds:
        mask = ds.read(1)
        assert ds.nodata == 255 and ds.tags()["NIMBUS_NODATA_VALUE"] == "255"
        assert ds.colormap(1)[255][:3] == (128, 128, 128)
        valid = ds.read_masks(1) != 0
    assert (mask[nodata] == 255).all() and (valid == ~nodata).all()
    # Only the no-data pixels differ from FarmVibes' mask.
    assert (mask[~nodata] == default[~nodata]).all()
    assert _category_names(tmp_path / "m.tif")[255] == "nodata"
    # The masked share counts valid pixels only.
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["masked_fraction"] == pytest.approx((mask[~nodata] == 1).mean())


@pytest.mark.parametrize("value", ["0", "1", "256", "-1"])
def test_nodata_value_may_not_collide_with_the_classes(nimbus_bin, small_scene, tmp_path, value):
    proc = _improve(nimbus_bin, small_scene, tmp_path / "m.tif", "--nodata-value", value)
    assert proc.returncode == 2 and "--nodata-value" in proc.stderr and "[2, 255]" in proc.stderr, proc.stderr
    assert not (tmp_path / "m.tif").exists()


def test_probability_rasters_have_descriptions_and_units(nimbus_bin, small_scene, tmp_path):
    proc = _improve(nimbus_bin, small_scene, tmp_path / "m.tif", "--keep-probabilities", tmp_path / "p")
    assert proc.returncode == 0, proc.stderr
    for name in ("cloud", "shadow"):
        with rasterio.open(tmp_path / "p" / f"{name}_probability.tif") as ds:
            assert ds.descriptions[0].startswith(f"{name} probability") and ds.units[0] == "1"
            assert ds.nodata == 100


# --- the preview -------------------------------------------------------------------------------------------------

def test_preview_colours_cloud_shadow_nodata_and_has_a_legend_and_georeferencing(nimbus_bin, make_scene, tmp_path):
    from PIL import Image
    scene = make_scene(400, 360, seed=5, nodata_wedge=True)
    proc = _improve(nimbus_bin, scene, tmp_path / "m.tif", "--preview", tmp_path / "p.png")
    assert proc.returncode == 0, proc.stderr
    png = np.asarray(Image.open(tmp_path / "p.png").convert("RGB")).astype(int)
    assert png.shape[1] == 400 and png.shape[0] > 360  # the image, then the legend strip below
    rgb, legend = png[:360], png[360:]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    with rasterio.open(tmp_path / "m.tif") as ds:
        mask = ds.read(1) == 1
        mask_transform, mask_crs = ds.transform, ds.crs
    with rasterio.open(scene["truth"]) as ds:
        truth = ds.read(1)  # 0 clear, 1 cloud, 2 shadow
    with rasterio.open(scene["product_mask"]) as ds:
        product = ds.read(1) == 1
    nodata = _nodata_pixels(scene)
    hatch = (r == g) & (g == b) & np.isin(r, [110, 150])
    magenta = (r - g > 40) & (b - g > 40)
    yellow = (r - b > 40) & (g - b > 40)
    assert hatch[nodata].all()
    # Thick cloud cores (the product mask's) are cloud-coloured.
    core = product & ~nodata
    assert core.sum() > 200 and magenta[core].mean() > 0.99
    # Shadows the mask caught, away from any cloud, are shadow-coloured.
    from scipy import ndimage
    far_from_cloud = ~ndimage.binary_dilation(truth == 1, iterations=8)
    shadow = (truth == 2) & mask & far_from_cloud & ~nodata
    assert shadow.sum() > 50 and yellow[shadow].mean() > 0.9
    # Clear pixels are the true colour, untinted.
    clear = ~mask & ~nodata
    assert clear.sum() > 1000 and not hatch[clear].any() and magenta[clear].mean() < 0.02
    assert yellow[clear].mean() < 0.02
    # The legend strip shows each colour: pure cloud and shadow swatches and the hatch.
    colours = {tuple(c) for c in legend.reshape(-1, 3)}
    assert {(255, 0, 255), (255, 220, 0), (110, 110, 110), (150, 150, 150)} <= colours
    # The world file and the .aux.xml put the image where the mask is.
    world = [float(v) for v in (tmp_path / "p.pgw").read_text().split()]
    a, e = mask_transform.a, mask_transform.e
    assert world == pytest.approx([a, 0, 0, e, mask_transform.c + a / 2, mask_transform.f + e / 2])
    with rasterio.open(tmp_path / "p.png") as ds:
        assert ds.crs == mask_crs
        assert ds.transform.almost_equals(mask_transform)


def test_downscaled_preview_world_file_scales_the_pixels(nimbus_bin, make_scene, tmp_path):
    scene = make_scene(1100, 700, seed=9)
    assert _improve(nimbus_bin, scene, tmp_path / "m.tif", "--preview", tmp_path / "quick.png").returncode == 0
    with rasterio.open(tmp_path / "m.tif") as mask, rasterio.open(tmp_path / "quick.png") as png:
        assert png.width == 1024  # the longest side is at most 1024
        image_height = round(700 * 1024 / 1100)
        assert png.height > image_height
        # Same corner, pixels larger by the scale of each axis.
        assert png.transform.c == pytest.approx(mask.transform.c)
        assert png.transform.f == pytest.approx(mask.transform.f)
        assert png.transform.a == pytest.approx(mask.transform.a * 1100 / 1024)
        assert png.transform.e == pytest.approx(mask.transform.e * 700 / image_height)
