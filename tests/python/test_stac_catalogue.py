"""Catalogue inputs and outputs: `nimbus batch` over STAC item URLs and ItemCollections (saved
search results, a file or a URL on the local Range server), and --stac-out, a STAC Item for the
mask checked field by field against the mask file (checksum, projection, cloud cover computed
here with numpy inside the area of interest)."""
import hashlib
import json
import os
import subprocess

import numpy as np
import pytest
import rasterio
import rasterio.features

from conftest import run_nimbus
from http_range_server import RangeServer
from test_stac import RUN, _earth_search, _planetary_computer, _read, _write, product  # noqa: F401 (fixture)

EXTENSIONS = {"projection/v1.1.0", "eo/v1.1.0", "file/v2.1.0", "raster/v1.1.0", "classification/v1.1.0",
              "processing/v1.1.0"}


@pytest.fixture(scope="module")
def items(product):  # noqa: F811
    """Two items of one product under different ids: 'A' at the top, 'B' in a sub-folder (relative hrefs)."""
    root, _ = product
    (root / "sub").mkdir(exist_ok=True)
    a = dict(_earth_search(lambda b: f"cogs/{b}.tif"), id="S2B_31TDH_20230601_0_L2A")
    b = dict(_planetary_computer(lambda b: f"../cogs/{b}.tif"), id="S2A/31TDH:20230611")  # not a file name
    b["properties"] = dict(b["properties"], datetime="2023-06-11T10:00:00Z")
    _write(root / "item_a.json", a)
    _write(root / "sub" / "item_b.json", b)
    return root, a, b


@pytest.fixture(scope="module")
def single_masks(nimbus_bin, items, tmp_path_factory):
    """Each item's mask from a single-scene run."""
    root, _, _ = items
    out = tmp_path_factory.mktemp("single")
    masks = {}
    for name, item in (("a", root / "item_a.json"), ("b", root / "sub" / "item_b.json")):
        run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", item, "--out", out / f"{name}.tif", *RUN,
                   check=True)
        masks[name] = _read(out / f"{name}.tif")[0]
    return masks


def _collection(features):
    return {"type": "FeatureCollection", "features": features}


def _batch(nimbus_bin, manifest, out_dir, *extra):
    return run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", out_dir, *RUN, *extra)


def _errors(stderr):
    return [line for line in stderr.splitlines() if line.startswith("nimbus: error: ")]


def test_manifest_with_item_urls(nimbus_bin, items, single_masks, tmp_path):
    root, a, b = items
    with RangeServer(root) as server:
        manifest = tmp_path / "scenes.csv"
        manifest.write_text(f"s2_raster\n{server.url('item_a.json')}\n{server.url('sub/item_b.json')}\n")
        proc = _batch(nimbus_bin, manifest, tmp_path / "out")
        assert proc.returncode == 0, proc.stderr
        assert server.requests["/cogs/B02.tif"] > 0
        # Ids are the items' ids, made file names; a second run verifies and skips both.
        again = _batch(nimbus_bin, manifest, tmp_path / "out")
        assert again.returncode == 0, again.stderr
        assert (tmp_path / "out" / "batch-report.csv").read_text().count(",skipped,") == 2
    np.testing.assert_array_equal(_read(tmp_path / "out" / "S2B_31TDH_20230601_0_L2A.tif")[0], single_masks["a"])
    np.testing.assert_array_equal(_read(tmp_path / "out" / "S2A_31TDH_20230611.tif")[0], single_masks["b"])


@pytest.mark.parametrize("where", ["file", "url"])
def test_item_collection_as_manifest(nimbus_bin, items, single_masks, tmp_path, where):
    """Inline items; relative hrefs resolve against the collection's location (here the root)."""
    root, a, b = items
    b_here = json.loads(json.dumps(b).replace("../cogs/", "cogs/"))
    _write(root / f"search_{where}.json", _collection([a, b_here]))
    with RangeServer(root) as server:
        manifest = root / f"search_{where}.json" if where == "file" else server.url(f"search_{where}.json")
        proc = _batch(nimbus_bin, manifest, tmp_path / "out", "--stac-items")
        assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    np.testing.assert_array_equal(_read(out / "S2B_31TDH_20230601_0_L2A.tif")[0], single_masks["a"])
    np.testing.assert_array_equal(_read(out / "S2A_31TDH_20230611.tif")[0], single_masks["b"])
    # One STAC Item per mask next to it, and their ItemCollection with absolute hrefs.
    collection = json.loads((out / "items.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    assert [f["id"] for f in collection["features"]] == ["S2B_31TDH_20230601_0_L2A", "S2A_31TDH_20230611"]
    for feature in collection["features"]:
        item = json.loads((out / f"{feature['id']}.json").read_text())
        assert item["assets"]["mask"]["href"] == f"./{feature['id']}.tif"
        assert feature["assets"]["mask"]["href"] == str(out / f"{feature['id']}.tif")
        digest = hashlib.sha256((out / f"{feature['id']}.tif").read_bytes()).hexdigest()
        assert item["assets"]["mask"]["file:checksum"] == "1220" + digest
        link = next(link for link in item["links"] if link["rel"] == "derived_from")
        assert link["href"].endswith(f"search_{where}.json#{'S2B_31TDH_20230601_0_L2A' if feature is collection['features'][0] else 'S2A/31TDH:20230611'}")
    assert item["properties"]["datetime"] == "2023-06-11T10:00:00Z"


def test_bad_collections_are_refused(nimbus_bin, items, tmp_path):
    root, a, _ = items
    cases = {
        "empty": (_collection([]), "without items"),
        "item": (a, "is a STAC Item, not an ItemCollection"),
        "other": ({"type": "Catalog", "id": "x"}, "not a STAC ItemCollection"),
        "duplicate": (_collection([a, a]), "features 1 and 2 both have the id 'S2B_31TDH_20230601_0_L2A'"),
        "no_id": (_collection([a, {"type": "Feature", "assets": {}}]), "feature 2 is not a STAC Item"),
    }
    for name, (doc, expected) in cases.items():
        manifest = _write(tmp_path / f"{name}.json", doc)
        proc = _batch(nimbus_bin, manifest, tmp_path / name)
        assert proc.returncode == 2, (name, proc.stderr)
        errors = _errors(proc.stderr)
        assert len(errors) == 1 and expected in errors[0] and str(manifest) in errors[0], (name, proc.stderr)
        assert not (tmp_path / name).exists(), name  # refused before anything was written
    (tmp_path / "broken.json").write_text('{"type": "FeatureCollection", "features": [')
    proc = _batch(nimbus_bin, tmp_path / "broken.json", tmp_path / "broken")
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr


def test_one_broken_item_is_named_once_and_the_others_run(nimbus_bin, items, single_masks, tmp_path):
    root, a, b = items
    l1c = dict(_earth_search(lambda b: f"cogs/{b}.tif", **{"s2:product_type": "S2MSI1C"}), id="S2B_L1C")
    no_band = dict(_earth_search(lambda b: f"cogs/{b}.tif", drop=("B8A",)), id="S2B_NO_B8A")
    # The broken items come first: they fail before the good one runs, not after.
    manifest = _write(root / "mixed.json", _collection([l1c, no_band, a]))
    proc = _batch(nimbus_bin, manifest, tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    errors = _errors(proc.stderr)
    assert len(errors) == 2, proc.stderr
    assert "scene S2B_L1C:" in errors[0] and "Level-1C" in errors[0]
    assert "scene S2B_NO_B8A:" in errors[1] and "no asset for band B8A" in errors[1]
    assert proc.stderr.count("is a Level-1C item") == 1 and proc.stderr.count("no asset for band B8A") == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "S2B_31TDH_20230601_0_L2A.tif", "S2B_31TDH_20230601_0_L2A.tif.aux.xml", "S2B_31TDH_20230601_0_L2A.tif.nimbus.json",
        "batch-report.csv"]
    np.testing.assert_array_equal(_read(tmp_path / "out" / "S2B_31TDH_20230601_0_L2A.tif")[0], single_masks["a"])


def test_item_urls_with_the_same_id_are_refused(nimbus_bin, items, tmp_path):
    root, a, _ = items
    _write(root / "copy_of_a.json", a)
    with RangeServer(root) as server:
        manifest = tmp_path / "scenes.csv"
        manifest.write_text(f"s2_raster\n{server.url('item_a.json')}\n{server.url('copy_of_a.json')}\n")
        proc = _batch(nimbus_bin, manifest, tmp_path / "out")
    assert proc.returncode == 2 and "both have the id 'S2B_31TDH_20230601_0_L2A'" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def _inside(polygon, src):
    """Pixels whose centre lies inside the polygon (in the raster's CRS), as GDAL rasterises."""
    return rasterio.features.geometry_mask([polygon], out_shape=(src.height, src.width), transform=src.transform,
                                           invert=True)


def test_stac_out_field_by_field(nimbus_bin, items, tmp_path):
    root, a, _ = items
    with rasterio.open(root / "cogs" / "B02.tif") as b02:
        crs, bounds, res = b02.crs, b02.bounds, b02.res[0]
    # A triangle in the raster's CRS crossing nodata-free and masked areas; the written window is its envelope.
    x0, y1 = bounds.left + 37 * res, bounds.top - 41 * res
    triangle = {"type": "Polygon", "coordinates": [[[x0, y1], [x0 + 250 * res, y1], [x0, y1 - 200 * res],
                                                    [x0, y1]]]}
    out = tmp_path / "masks"
    out.mkdir()
    proc = run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", root / "item_a.json", "--out",
                      out / "mask.tif", "--stac-out", tmp_path / "catalog" / "mask.json", "--report",
                      tmp_path / "report.json", "--aoi", json.dumps(triangle), "--aoi-crs", crs.to_string(), *RUN)
    assert proc.returncode == 2 and "stac-out" in proc.stderr  # its folder does not exist: checked up front
    assert list(out.iterdir()) == []
    (tmp_path / "catalog").mkdir()
    proc = run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", root / "item_a.json", "--out",
                      out / "mask.tif", "--stac-out", tmp_path / "catalog" / "mask.json", "--report",
                      tmp_path / "report.json", "--aoi", json.dumps(triangle), "--aoi-crs", crs.to_string(), *RUN)
    assert proc.returncode == 0, proc.stderr
    item = json.loads((tmp_path / "catalog" / "mask.json").read_text())
    report = json.loads((tmp_path / "report.json").read_text())
    assert item["type"] == "Feature" and item["stac_version"] == "1.0.0" and item["id"] == "mask"
    assert {u.split("stac-extensions.github.io/")[1].rsplit("/", 1)[0] for u in item["stac_extensions"]} == EXTENSIONS
    assert set(item) >= {"geometry", "bbox", "properties", "links", "assets"}
    props, asset = item["properties"], item["assets"]["mask"]
    assert props["datetime"] == a["properties"]["datetime"]
    assert props["processing:software"] == {"nimbus": report_version(nimbus_bin)}
    assert props["nimbus:models"]["cloud"]["sha256"] == report["cloud_model_sha256"]
    assert props["nimbus:models"]["shadow"]["sha256"] == report["shadow_model_sha256"]
    assert props["nimbus:parameters"]["window"] == 256 and props["nimbus:parameters"]["aoi_crs"] == crs.to_string()
    # The asset: relative to the item, checksum and size of the very file.
    assert asset["href"] == "../masks/mask.tif"
    data = (out / "mask.tif").read_bytes()
    assert asset["file:checksum"] == "1220" + hashlib.sha256(data).hexdigest() and asset["file:size"] == len(data)
    assert asset["type"] == "image/tiff; application=geotiff; profile=cloud-optimized" and asset["roles"] == ["data"]
    assert asset["raster:bands"][0]["nodata"] == 100 and asset["raster:bands"][0]["data_type"] == "uint8"
    assert {c["value"] for c in asset["classification:classes"]} == {0, 1, 100}
    # Projection: the mask file's own grid.
    with rasterio.open(out / "mask.tif") as src:
        mask = src.read(1)
        assert props["proj:epsg"] == src.crs.to_epsg()
        assert props["proj:shape"] == [src.height, src.width]
        assert props["proj:transform"] == list(src.transform)[:6]
        assert props["proj:bbox"] == pytest.approx(list(src.bounds))
        inside = _inside(triangle, src)
    # Cloud cover: masked share of the valid pixels inside the triangle, in percent. FarmVibes'
    # mask writes no-data as 1; the same run with --nodata-value 255 tells those pixels apart.
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", root / "item_a.json", "--out", tmp_path / "nd.tif",
               "--nodata-value", "255", "--aoi", json.dumps(triangle), "--aoi-crs", crs.to_string(), *RUN, check=True)
    with rasterio.open(tmp_path / "nd.tif") as src:
        with_nodata = src.read(1)
    input_nodata = with_nodata == 255
    np.testing.assert_array_equal(with_nodata[~input_nodata], mask[~input_nodata])  # only no-data differs
    valid = inside & (mask != 100) & ~input_nodata
    want = 100.0 * np.count_nonzero(valid & (mask == 1)) / np.count_nonzero(valid)
    assert 0 < want < 100 and np.count_nonzero(valid) < mask.size  # the polygon does restrict it
    assert props["eo:cloud_cover"] == pytest.approx(want, abs=1e-9)
    assert report["cloud_cover"] == props["eo:cloud_cover"]
    # Geometry: the triangle in WGS 84, bbox its envelope.
    ring = item["geometry"]["coordinates"][0]
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    assert item["geometry"]["type"] == "Polygon" and ring[0] == ring[-1]
    assert item["bbox"] == pytest.approx([min(lons), min(lats), max(lons), max(lats)])
    from rasterio.warp import transform_geom
    want_ring = transform_geom(crs, "EPSG:4326", triangle)["coordinates"][0]
    for lon, lat in want_ring:
        assert min(abs(lon - x) + abs(lat - y) for x, y in ring) < 1e-6
    link = next(link for link in item["links"] if link["rel"] == "derived_from")
    assert link["href"] == str(root / "item_a.json")


def report_version(nimbus_bin):
    # The first line: "nimbus X.Y.Z" (the libraries follow).
    return subprocess.run([str(nimbus_bin), "--version"], capture_output=True, text=True).stdout.splitlines()[0].split()[-1]


def test_stac_out_of_a_raster_without_time_and_from_python(nimbus_py, nimbus_bin, product, tmp_path):  # noqa: F811
    """A plain stack: no acquisition time (datetime null, a start/end range), a 'via' link to the raster;
    the Python keyword stac_out= and the report dict's cloud_cover."""
    root, safe = product
    run_nimbus(nimbus_bin, "stack-safe", safe, "--out", tmp_path / "stack.tif", "--product-mask-out",
               tmp_path / "pm.tif", "-q", check=True)
    report = nimbus_py.improve_cloud_mask(s2_raster=str(tmp_path / "stack.tif"), product_mask=str(tmp_path / "pm.tif"),
                                          out=str(tmp_path / "mask.tif"), stac_out=str(tmp_path / "mask.json"),
                                          window=256)
    item = json.loads((tmp_path / "mask.json").read_text())
    props = item["properties"]
    assert props["datetime"] is None and props["start_datetime"] == props["end_datetime"] == props["created"]
    assert [link["rel"] for link in item["links"]] == ["via", "via"]
    assert item["links"][0]["href"] == str(tmp_path / "stack.tif")
    with rasterio.open(tmp_path / "mask.tif") as src:
        mask = src.read(1)
    with rasterio.open(tmp_path / "stack.tif") as src:
        input_nodata = (src.read() == 0).any(axis=0)  # a pixel where any band is 0: FarmVibes writes it as 1
    assert input_nodata.any()  # the synthetic product has a no-data edge: it must not count as cloud
    want = 100.0 * np.count_nonzero((mask == 1) & ~input_nodata) / np.count_nonzero((mask != 100) & ~input_nodata)
    assert report["cloud_cover"] == pytest.approx(want, abs=1e-9) and props["eo:cloud_cover"] == report["cloud_cover"]


def test_batch_refuses_one_stac_out_for_all_scenes(nimbus_py, nimbus_bin, items, tmp_path):
    root, _, _ = items
    with pytest.raises(nimbus_py.InputError, match="stac_items=True"):
        nimbus_py.batch([str(root / "item_a.json")], str(tmp_path / "out"), stac_out=str(tmp_path / "x.json"))
    proc = run_nimbus(nimbus_bin, "batch", tmp_path / "m.csv", "--out-dir", tmp_path / "out", "--stac-out", "x.json")
    assert proc.returncode == 2 and "--stac-out" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_python_batch_takes_an_item_collection(nimbus_py, items, single_masks, tmp_path):
    root, a, _ = items
    collection = _write(root / "python_search.json", _collection([a]))
    outcomes = nimbus_py.batch(str(collection), str(tmp_path / "out"), progress=False, stac_items=True, window=256)
    assert [o["status"] for o in outcomes] == ["done"]
    assert outcomes[0]["stac_item"] == str(tmp_path / "out" / "S2B_31TDH_20230601_0_L2A.json")
    np.testing.assert_array_equal(_read(tmp_path / "out" / "S2B_31TDH_20230601_0_L2A.tif")[0], single_masks["a"])
    assert json.loads((tmp_path / "out" / "items.geojson").read_text())["features"][0]["id"] == a["id"]
