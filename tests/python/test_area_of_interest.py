"""Area of interest (--aoi / --bbox / --aoi-crs / --crop-to-aoi): only the chips the AOI
needs run, and the written window equals the full-scene output cropped to it, bit for bit."""
import json

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_geom

from conftest import run_nimbus

# 64-pixel chips with overlap 0.25 (step 48) give a 6 x 5 grid on 301 x 251 pixels.
WIDTH, HEIGHT = 301, 251
CHIPS = ["--window", "64", "--overlap", "0.25"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from synthetic_scene import make_scene as build, write_scene
    return write_scene(build(WIDTH, HEIGHT, 7, True), tmp_path_factory.mktemp("aoi_scene"))


def _run(nimbus_bin, scene, out_dir, *extra, check=True):
    out_dir.mkdir(parents=True, exist_ok=True)
    return run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask",
                      scene["product_mask"], "--out", out_dir / "mask.tif", "--keep-probabilities", out_dir,
                      "--report", out_dir / "report.json", "-q", *CHIPS, *extra, check=check)


def _read(out_dir):
    with rasterio.open(out_dir / "mask.tif") as src:
        mask, transform, crs, tags = src.read(1), src.transform, src.crs, src.tags()
    with rasterio.open(out_dir / "cloud_probability.tif") as src:
        cloud = src.read(1)
    with rasterio.open(out_dir / "shadow_probability.tif") as src:
        shadow = src.read(1)
    report = json.loads((out_dir / "report.json").read_text())
    return {"mask": mask, "cloud": cloud, "shadow": shadow, "transform": transform, "crs": crs, "tags": tags,
            "report": report}


@pytest.fixture(scope="module")
def full_runs(nimbus_bin, scene, tmp_path_factory):
    """Full-scene outputs per merge setting, computed once."""
    cache = {}

    def get(*merge_args):
        if merge_args not in cache:
            out = tmp_path_factory.mktemp("full")
            _run(nimbus_bin, scene, out, *merge_args)
            cache[merge_args] = _read(out)
        return cache[merge_args]

    return get


def _utm_box(full, x0, y0, x1, y1):
    """Projected coordinates of the pixel rectangle [x0, x1) x [y0, y1)."""
    t = full["transform"]
    left, top = t * (x0, y0)
    right, bottom = t * (x1, y1)
    return left, bottom, right, top


def _window_of(result):
    return tuple(int(v) for v in result["tags"]["NIMBUS_AOI_WINDOW"].split(","))


def _assert_crop_equal(full, part):
    x0, y0, w, h = _window_of(part)
    for key in ("mask", "cloud", "shadow"):
        assert part[key].shape == (h, w)
        np.testing.assert_array_equal(part[key], full[key][y0:y0 + h, x0:x0 + w], err_msg=key)
    assert part["crs"] == full["crs"]
    assert part["transform"] == full["transform"] * rasterio.Affine.translation(x0, y0)


# Pixel rectangles: inside crossing chip boundaries, at each corner, along edges, an odd
# one-pixel sliver, and one larger than the raster (clamped to it).
WINDOWS = [
    ("interior-crossing-chips", (40, 50, 131, 97)),
    ("top-left-corner-over-nodata-edge", (0, 0, 121, 37)),
    ("bottom-right-corner", (270, 230, 301, 251)),
    ("right-edge-strip", (290, 0, 301, 251)),
    ("bottom-edge-strip", (0, 240, 301, 251)),
    ("single-pixel", (150, 125, 151, 126)),
    ("beyond-the-raster", (-50, -50, 400, 400)),
]


@pytest.mark.parametrize("name,box", WINDOWS, ids=[w[0] for w in WINDOWS])
def test_bbox_in_raster_crs_equals_full_scene_crop(nimbus_bin, scene, full_runs, tmp_path, name, box):
    full = full_runs()
    x0, y0, x1, y1 = box
    bbox = _utm_box(full, x0, y0, x1, y1)
    _run(nimbus_bin, scene, tmp_path, "--bbox", ",".join(repr(v) for v in bbox), "--aoi-crs", "EPSG:32631")
    part = _read(tmp_path)
    expected = (max(0, x0), max(0, y0), min(WIDTH, x1) - max(0, x0), min(HEIGHT, y1) - max(0, y0))
    assert _window_of(part) == expected
    _assert_crop_equal(full, part)
    report = part["report"]
    assert report["chips_total"] == 30 and report["aoi_window"] == ",".join(map(str, expected))
    if name != "beyond-the-raster":
        assert report["chips_per_model"] < report["chips_total"]


def test_geojson_in_epsg4326_equals_full_scene_crop(nimbus_bin, scene, full_runs, tmp_path):
    full = full_runs()
    left, bottom, right, top = _utm_box(full, 57, 33, 190, 160)
    utm = {"type": "Polygon", "coordinates": [[(left, bottom), (right, bottom), (right, top), (left, top),
                                                (left, bottom)]]}
    lonlat = transform_geom("EPSG:32631", "EPSG:4326", utm, precision=-1)
    path = tmp_path / "field.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection",
                                "features": [{"type": "Feature", "properties": {}, "geometry": lonlat}]}))
    _run(nimbus_bin, scene, tmp_path / "out", "--aoi", path)
    part = _read(tmp_path / "out")
    x0, y0, w, h = _window_of(part)
    # The reprojected rectangle's envelope: the same pixels, give or take one at each side.
    assert abs(x0 - 57) <= 1 and abs(y0 - 33) <= 1 and abs(x0 + w - 190) <= 1 and abs(y0 + h - 160) <= 1
    _assert_crop_equal(full, part)
    assert part["tags"]["NIMBUS_AOI_CRS"] == "EPSG:4326"


def test_wkt_and_geojson_text_match_bbox(nimbus_bin, scene, full_runs, tmp_path):
    full = full_runs()
    left, bottom, right, top = _utm_box(full, 100, 20, 180, 90)
    ring = [(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)]
    wkt = "POLYGON((" + ", ".join(f"{x!r} {y!r}" for x, y in ring) + "))"
    geojson = json.dumps({"type": "Polygon", "coordinates": [ring]})
    for name, args in (("wkt", ["--aoi", wkt]), ("geojson", ["--aoi", geojson])):
        _run(nimbus_bin, scene, tmp_path / name, *args, "--aoi-crs", "EPSG:32631")
        part = _read(tmp_path / name)
        assert _window_of(part) == (100, 20, 80, 70)
        _assert_crop_equal(full, part)


@pytest.mark.parametrize("merge", [("--min-area", "40", "--closing-size", "3"), ("--min-area", "200"),
                                   ("--closing-size", "0")], ids=["min-area-40", "min-area-200", "no-dilation"])
def test_merge_halo_keeps_the_window_exact(nimbus_bin, scene, full_runs, tmp_path, merge):
    """The documented min_area rule: a halo of closing_size + min_area makes even min_area > 0 exact."""
    full = full_runs(*merge)
    bbox = _utm_box(full, 120, 70, 200, 150)
    _run(nimbus_bin, scene, tmp_path, "--bbox", ",".join(map(repr, bbox)), "--aoi-crs", "EPSG:32631", *merge)
    _assert_crop_equal(full, _read(tmp_path))


@pytest.mark.parametrize("options,box", [(("--downsampling", "2"), (33, 41, 150, 120)),
                                         (("--blend", "linear"), (60, 90, 170, 200)),
                                         (("--in-memory",), (130, 5, 230, 70)),
                                         (("--downsampling", "2", "--in-memory"), (250, 180, 301, 251))])
def test_chip_options_with_aoi_equal_full_scene_crop(nimbus_bin, scene, full_runs, tmp_path, options, box):
    """--in-memory with an AOI copies only the chips' pixels; the full run it is compared with reads from disk."""
    full = full_runs(*[o for o in options if o != "--in-memory"])
    bbox = _utm_box(full, *box)
    _run(nimbus_bin, scene, tmp_path, "--bbox", ",".join(map(repr, bbox)), "--aoi-crs", "EPSG:32631", *options)
    _assert_crop_equal(full, _read(tmp_path))


def test_crop_to_aoi_sets_outside_pixels_to_nodata(nimbus_bin, scene, full_runs, tmp_path):
    full = full_runs()
    t = full["transform"]
    # A triangle with corners on pixel corners: (60, 40), (160, 40), (60, 140).
    corners = [t * (60, 40), t * (160, 40), t * (60, 140), t * (60, 40)]
    wkt = "POLYGON((" + ", ".join(f"{x!r} {y!r}" for x, y in corners) + "))"
    _run(nimbus_bin, scene, tmp_path, "--aoi", wkt, "--aoi-crs", "EPSG:32631", "--crop-to-aoi")
    part = _read(tmp_path)
    assert _window_of(part) == (60, 40, 100, 100)
    rows, cols = np.mgrid[0:100, 0:100]
    inside = cols + rows < 99  # pixel centre strictly inside the triangle
    outside = cols + rows > 99  # centres on the hypotenuse may go either way
    crop = full["mask"][40:140, 60:160]
    np.testing.assert_array_equal(part["mask"][inside], crop[inside])
    assert np.all(part["mask"][outside] == 100)
    assert np.all(part["cloud"][outside] == 100)
    assert part["report"]["masked_fraction"] == pytest.approx(
        np.mean(part["mask"][part["mask"] != 100] == 1))
    assert part["tags"]["NIMBUS_CROP_TO_AOI"] == "true"


def test_python_api_takes_bbox(nimbus_py, scene, full_runs, tmp_path):
    full = full_runs()
    bbox = _utm_box(full, 10, 200, 90, 251)
    report = nimbus_py.improve_cloud_mask(scene["s2"], tmp_path / "m.tif", product_mask=scene["product_mask"],
                                          bbox=",".join(map(repr, bbox)), aoi_crs="EPSG:32631", window=64,
                                          overlap=0.25, keep_probabilities=tmp_path)
    assert report["aoi_window"] == "10,200,80,51"
    assert report["chips_per_model"] < report["chips_total"] == 30
    with rasterio.open(tmp_path / "m.tif") as src:
        np.testing.assert_array_equal(src.read(1), full["mask"][200:251, 10:90])


@pytest.mark.parametrize("args,needle", [
    (["--bbox", "500000,100,500100,200", "--aoi-crs", "EPSG:32631"], "does not overlap"),
    (["--bbox", "1,2,3"], "minx,miny,maxx,maxy"),
    (["--aoi", "POLYGON((0 0, 1 1"], "neither an existing file"),
    (["--aoi", "POINT(1 1)"], "Polygon"),
    (["--bbox", "0,0,1,1", "--aoi-crs", "EPSG:999999"], "--aoi-crs"),
    (["--bbox", "0,0,1,1", "--aoi", "POLYGON((0 0, 1 0, 1 1, 0 0))"], "pass one of them"),
    (["--crop-to-aoi"], "needs an area of interest"),
    (["--bbox", "300000,5002380,300170,5002550", "--aoi-crs", "EPSG:32631"], "no valid pixel near the area"),
], ids=["misses-raster", "bad-bbox", "bad-wkt", "point", "bad-crs", "both", "crop-without-aoi", "all-nodata"])
def test_bad_area_of_interest_is_a_clear_input_error(nimbus_bin, scene, tmp_path, args, needle):
    proc = _run(nimbus_bin, scene, tmp_path / "out", *args, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nimbus: error:") and needle in lines[0], proc.stderr
    if "--bbox" in args or "--aoi" in args:
        assert "--aoi" in lines[0] or "--bbox" in lines[0]
    assert list((tmp_path / "out").iterdir()) == []


def test_batch_applies_the_area_of_interest_to_every_scene(nimbus_bin, scene, full_runs, tmp_path):
    """The same field on every scene of a batch; a scene it misses fails alone (exit 1 for the batch)."""
    import csv
    from synthetic_scene import make_scene as build, write_scene
    full = full_runs()
    other = write_scene(build(WIDTH, HEIGHT, 8, False), tmp_path / "other")
    # The same grid shifted 5 km east: the AOI misses it.
    elsewhere = write_scene(build(WIDTH, HEIGHT, 9, False), tmp_path / "elsewhere")
    with rasterio.open(elsewhere["s2"], "r+") as dst:
        dst.transform = dst.transform * rasterio.Affine.translation(500, 0)
    with rasterio.open(elsewhere["product_mask"], "r+") as dst:
        dst.transform = dst.transform * rasterio.Affine.translation(500, 0)
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("s2_raster", "product_mask", "id"))
        for name, s in (("a", scene), ("b", other), ("c", elsewhere)):
            w.writerow((s["s2"], s["product_mask"], name))
    bbox = ",".join(map(repr, _utm_box(full, 70, 60, 170, 140)))
    proc = run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", tmp_path / "out", "--bbox", bbox, "--aoi-crs",
                      "EPSG:32631", *CHIPS)
    with open(tmp_path / "out" / "batch-report.csv") as f:
        status = {r["id"]: r["status"] for r in csv.DictReader(f)}
    assert status["a"] == "done" and status["b"] == "done" and status["c"] != "done", proc.stderr
    assert "does not overlap" in proc.stderr
    with rasterio.open(tmp_path / "out" / "a.tif") as src:
        assert src.tags()["NIMBUS_AOI_WINDOW"] == "70,60,100,80"
        np.testing.assert_array_equal(src.read(1), full["mask"][60:140, 70:170])
    with rasterio.open(tmp_path / "out" / "b.tif") as src:
        assert src.shape == (80, 100)


def test_the_aoi_file_is_an_input_and_never_overwritten(nimbus_bin, scene, tmp_path):
    aoi = tmp_path / "field.geojson"
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [[[2.0, 45.0], [2.1, 45.0], [2.1, 45.1],
                                                                    [2.0, 45.0]]]}))
    before = aoi.read_bytes()
    proc = run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask",
                      scene["product_mask"], "--out", aoi, "--aoi", aoi, "-q")
    assert proc.returncode == 2 and "--aoi" in proc.stderr, proc.stderr
    assert aoi.read_bytes() == before


def test_preview_shows_the_window(nimbus_bin, scene, full_runs, tmp_path):
    import struct
    full = full_runs()
    t = full["transform"]
    corners = [t * (60, 40), t * (160, 40), t * (60, 140), t * (60, 40)]
    wkt = "POLYGON((" + ", ".join(f"{x!r} {y!r}" for x, y in corners) + "))"
    _run(nimbus_bin, scene, tmp_path, "--aoi", wkt, "--aoi-crs", "EPSG:32631", "--crop-to-aoi", "--preview",
         tmp_path / "p.png")
    header = (tmp_path / "p.png").read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width == 100 and height > 100  # the window, then the legend strip
    # The world file puts the image on the window: its top-left pixel centre is the window's.
    world = [float(v) for v in (tmp_path / "p.pgw").read_text().split()]
    assert world == pytest.approx([t.a, 0, 0, t.e, *(t * (60.5, 40.5))])


# The seed workflow's graph with the test chips (64 pixels) and the merge's halo parameters.
AOI_WORKFLOW = """
name: aoi_test
sources:
  s2_raster: [cloud.sentinel_raster, shadow.sentinel_raster]
  product_mask: [merge.product_mask]
sinks:
  mask: merge.merged_cloud_mask
parameters:
  min_area: null
  closing_size: null
tasks:
  cloud:
    op: compute_cloud_prob
    parameters: {window_size: 64, overlap: 0.25, model_path: "embedded:nimbus_cloud_v2"}
  shadow:
    op: compute_shadow_prob
    parameters: {window_size: 64, overlap: 0.25, model_path: "embedded:nimbus_shadow_v1"}
  merge:
    op: merge_cloud_masks_simple
    op_dir: merge_cloud_masks
    parameters: {min_area: "@from(min_area)", closing_size: "@from(closing_size)"}
edges:
- origin: cloud.cloud_probability
  destination: [merge.cloud_probability]
- origin: shadow.shadow_probability
  destination: [merge.shadow_probability]
"""


def _run_workflow(nimbus_bin, scene, tmp_path, out, *extra, check=True):
    workflow = tmp_path / "aoi_test.yaml"
    workflow.write_text(AOI_WORKFLOW)
    return run_nimbus(nimbus_bin, "run", workflow, "--input", f"s2_raster={scene['s2']}", "--input",
                      f"product_mask={scene['product_mask']}", "--out-dir", out, "--cache-dir", tmp_path / "cache",
                      *extra, check=check)


def test_workflow_run_geometry_equals_improve_cloud_mask_aoi(nimbus_bin, scene, full_runs, tmp_path):
    """FarmVibes' run geometry: the same window, bit for bit, as --aoi; the geometry is in the cache key."""
    full = full_runs("--min-area", "40", "--closing-size", "3")
    left, bottom, right, top = _utm_box(full, 57, 33, 190, 160)
    utm = {"type": "Polygon", "coordinates": [[(left, bottom), (right, bottom), (right, top), (left, top),
                                                (left, bottom)]]}
    lonlat = transform_geom("EPSG:32631", "EPSG:4326", utm, precision=-1)
    field = tmp_path / "field.geojson"  # FarmVibes' user_input form: a FeatureCollection in EPSG:4326
    field.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": lonlat}]}))
    _run(nimbus_bin, scene, tmp_path / "aoi", "--aoi", field, "--min-area", "40", "--closing-size", "3")
    want = _read(tmp_path / "aoi")
    proc = _run_workflow(nimbus_bin, scene, tmp_path, tmp_path / "wf", "--geometry", field, "--param", "min_area=40",
                         "--param", "closing_size=3")
    with rasterio.open(tmp_path / "wf" / "mask.tif") as src:
        got, transform = src.read(1), src.transform
    np.testing.assert_array_equal(got, want["mask"])
    assert transform == want["transform"]
    # Another geometry in the same cache: nothing is reused, and its window is its own.
    x0, y0, w, h = _window_of(want)
    box = _utm_box(full, 200, 150, 260, 230)
    wkt = "POLYGON(({0} {1}, {2} {1}, {2} {3}, {0} {3}, {0} {1}))".format(*box)
    proc = _run_workflow(nimbus_bin, scene, tmp_path, tmp_path / "wf2", "--geometry", wkt, "--geometry-crs",
                         "EPSG:32631", "--param", "min_area=40", "--param", "closing_size=3")
    assert "cached" not in proc.stderr, proc.stderr
    with rasterio.open(tmp_path / "wf2" / "mask.tif") as src:
        np.testing.assert_array_equal(src.read(1), full["mask"][150:230, 200:260])
    # The first geometry again: every task from the cache.
    proc = _run_workflow(nimbus_bin, scene, tmp_path, tmp_path / "wf3", "--geometry", field, "--param",
                         "min_area=40", "--param", "closing_size=3", "-v")
    assert proc.stderr.count("cached") == 3, proc.stderr
    with rasterio.open(tmp_path / "wf3" / "mask.tif") as src:
        np.testing.assert_array_equal(src.read(1), want["mask"])


def test_python_run_workflow_takes_a_geometry(nimbus_py, scene, full_runs, tmp_path):
    full = full_runs()
    left, bottom, right, top = _utm_box(full, 10, 20, 70, 90)
    workflow = tmp_path / "aoi_test.yaml"
    workflow.write_text(AOI_WORKFLOW)
    sinks = nimbus_py.run_workflow(str(workflow), {"s2_raster": scene["s2"], "product_mask": scene["product_mask"]},
                                   geometry={"type": "Polygon", "coordinates": [[(left, bottom), (right, bottom),
                                                                                 (right, top), (left, top),
                                                                                 (left, bottom)]]},
                                   geometry_crs="EPSG:32631")
    np.testing.assert_array_equal(sinks["mask"], full["mask"][20:90, 10:70])


def test_workflow_geometry_missing_the_raster_is_a_clear_error(nimbus_bin, scene, tmp_path):
    proc = _run_workflow(nimbus_bin, scene, tmp_path, tmp_path / "out", "--geometry",
                         "POLYGON((100 10, 101 10, 101 11, 100 11, 100 10))", check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nimbus: error: --geometry does not overlap"), proc.stderr
    assert "--geometry-crs" in lines[0] and "s2_raster" in lines[0]
    assert not (tmp_path / "out" / "mask.tif").exists()
