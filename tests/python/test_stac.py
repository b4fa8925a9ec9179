"""STAC items as --s2-raster: Earth Search v1 and Planetary Computer conventions, from a
local file and over HTTP (a local Range server, tests/python/http_range_server.py), give
the same stack and mask as the SAFE product their COG assets were made from; malformed,
L1C and incomplete items, 404 assets and servers that stop answering are clear errors."""
import json
import os

import numpy as np
import pytest
import rasterio
import rasterio.shutil

from conftest import run_nimbus
from http_range_server import RangeServer
from synthetic_safe import RES, write_safe
from synthetic_scene import BANDS

EARTH_SEARCH_KEYS = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
                     "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
                     "B11": "swir16", "B12": "swir22", "SCL": "scl"}
PLANETARY_COMPUTER_KEYS = {b: b for b in BANDS} | {"SCL": "SCL"}
# Small runs: one 256-pixel window covers most of the scene.
RUN = ("--window", "256", "-q")


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.tags()


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    """A synthetic SAFE product (SCL as its only mask layer) and its bands as COGs in `root/cogs`."""
    root = tmp_path_factory.mktemp("stac")
    safe, _, _ = write_safe(root / "safe", width=400, height=380, baseline="05.09", classi=False)
    cogs = root / "cogs"
    cogs.mkdir()
    for band in BANDS + ["SCL"]:
        res = RES.get(band, 20)
        jp2 = next(safe.rglob(f"*_{band}_{res}m.jp2"))
        rasterio.shutil.copy(jp2, cogs / f"{band}.tif", driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256)
    return root, safe


def _item(keys, href, properties, drop=()):
    assets = {key: {"href": href(band), "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                    "roles": ["data"]} for band, key in keys.items() if band not in drop}
    return {"type": "Feature", "stac_version": "1.0.0", "id": "S2B_31TDH_20230601_0_L2A",
            "collection": "sentinel-2-l2a", "geometry": None, "bbox": [0, 45, 1, 46],
            "properties": {"datetime": "2023-06-01T10:00:00Z", "s2:product_type": "S2MSI2A", **properties},
            "links": [], "assets": assets}


def _earth_search(href, drop=(), **properties):
    return _item(EARTH_SEARCH_KEYS, href, {"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": False,
                                           **properties}, drop)


def _planetary_computer(href, drop=(), **properties):
    return _item(PLANETARY_COMPUTER_KEYS, href, {"s2:processing_baseline": "05.09", **properties}, drop)


def _write(path, item):
    path.write_text(json.dumps(item))
    return path


@pytest.fixture(scope="module")
def safe_mask(nimbus_bin, product):
    root, safe = product
    out = root / "safe_mask.tif"
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", safe, "--out", out, *RUN, check=True)
    return _read(out)


def _mask(nimbus_bin, source, out, env=None):
    proc = subprocess_run(nimbus_bin, ["improve-cloud-mask", "--s2-raster", source, "--out", out, *RUN], env)
    assert proc.returncode == 0, proc.stderr
    return _read(out)


def subprocess_run(nimbus_bin, args, env=None):
    import subprocess
    return subprocess.run([str(nimbus_bin), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def _assert_same_mask(got, want):
    np.testing.assert_array_equal(got[0], want[0])
    for tag in ("NIMBUS_PROCESSING_BASELINE", "NIMBUS_BOA_ADD_OFFSET_APPLIED", "NIMBUS_PRODUCT_MASK_SOURCE"):
        assert got[1][tag] == want[1][tag], tag


def test_local_items_stack_and_mask_like_the_safe_product(nimbus_bin, product, safe_mask, tmp_path):
    root, safe = product
    run_nimbus(nimbus_bin, "stack-safe", safe, "--out", tmp_path / "safe_stack.tif", "--product-mask-out",
               tmp_path / "safe_pm.tif", "-q", check=True)
    want_stack, want_pm = _read(tmp_path / "safe_stack.tif")[0], _read(tmp_path / "safe_pm.tif")[0]
    # Earth Search hrefs relative to the item, Planetary Computer's absolute.
    items = {"es": _write(root / "es_item.json", _earth_search(lambda b: f"./cogs/{b}.tif")),
             "pc": _write(root / "pc_item.json", _planetary_computer(lambda b: str(root / "cogs" / f"{b}.tif")))}
    for name, item in items.items():
        run_nimbus(nimbus_bin, "stack-safe", item, "--out", tmp_path / f"{name}_stack.tif", "--product-mask-out",
                   tmp_path / f"{name}_pm.tif", "-q", check=True)
        stack, tags = _read(tmp_path / f"{name}_stack.tif")
        np.testing.assert_array_equal(stack, want_stack)
        np.testing.assert_array_equal(_read(tmp_path / f"{name}_pm.tif")[0], want_pm)
        with rasterio.open(tmp_path / f"{name}_stack.tif") as st:
            assert list(st.descriptions) == BANDS and st.tags(1)["NIMBUS_BOA_ADD_OFFSET"] == "-1000"
        got = _mask(nimbus_bin, item, tmp_path / f"{name}_mask.tif")
        _assert_same_mask(got, safe_mask)
        assert got[1]["NIMBUS_PRODUCT_MASK_SOURCE"] == "SCL"
        assert got[1]["NIMBUS_BOA_ADD_OFFSET_APPLIED"] == "-1000"


def test_offset_already_applied_by_earth_search_is_not_added_again(nimbus_bin, product, safe_mask, tmp_path):
    """Earth Search's harmonised COGs (DN already shifted by -1000) with boa_offset_applied: the same mask."""
    root, _ = product
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    for band in BANDS:
        with rasterio.open(root / "cogs" / f"{band}.tif") as src:
            data = src.read(1).astype(np.int32)
            profile = src.profile
        data = np.where(data == 0, 0, np.maximum(data - 1000, 1)).astype(np.uint16)
        with rasterio.open(shifted / f"{band}.tif", "w", **profile) as dst:
            dst.write(data, 1)
    (shifted / "SCL.tif").symlink_to(root / "cogs" / "SCL.tif")
    item = _write(shifted / "item.json", _earth_search(lambda b: f"{b}.tif", **{"earthsearch:boa_offset_applied": True}))
    got = _mask(nimbus_bin, item, tmp_path / "mask.tif")
    np.testing.assert_array_equal(got[0], safe_mask[0])
    assert got[1]["NIMBUS_BOA_ADD_OFFSET_APPLIED"] == "0"


@pytest.mark.parametrize("convention", ["earth_search", "planetary_computer"])
def test_items_over_http_give_the_local_mask(nimbus_bin, product, safe_mask, tmp_path, convention):
    root, _ = product
    # Earth Search's item as its API answers it (chunked, no HEAD); Planetary Computer's as a static file.
    token = "st=2026&sig=abc%2B"
    with RangeServer(root, api_style=convention == "earth_search",
                     token=None if convention == "earth_search" else token) as server:
        if convention == "earth_search":
            _write(root / "es_http.json", _earth_search(lambda b: f"cogs/{b}.tif"))  # relative to the item's URL
            url, env = server.url("es_http.json"), {}
        else:
            _write(root / "pc_http.json", _planetary_computer(lambda b: server.url(f"cogs/{b}.tif")))
            url, env = server.url("pc_http.json") + "?" + token, {"NIMBUS_STAC_TOKEN": token}
        got = _mask(nimbus_bin, url, tmp_path / "mask.tif", env)
        _assert_same_mask(got, safe_mask)
        # Band files were read in place, by ranges, not downloaded by another route.
        assert server.requests["/cogs/B02.tif"] > 0 and server.bytes_sent["/cogs/B02.tif"] > 0
        # No folder listing and no probing of sidecar names for every band (~30 each).
        assert server.requests["/cogs/"] == 0 and server.total_requests < 100, sorted(server.requests.items())
        if env:
            assert all(q == token for q in server.queries["/cogs/B02.tif"])
        else:
            assert all(q == "" for q in server.queries["/cogs/B02.tif"])


def test_python_front_end_takes_an_item_url(nimbus_py, product, safe_mask, tmp_path):
    root, _ = product
    _write(root / "es_python.json", _earth_search(lambda b: f"cogs/{b}.tif"))
    with RangeServer(root) as server:
        nimbus_py.improve_cloud_mask(s2_raster=server.url("es_python.json"), out=str(tmp_path / "py.tif"), window=256)
    np.testing.assert_array_equal(_read(tmp_path / "py.tif")[0], safe_mask[0])


def test_flaky_server_gives_the_identical_mask(nimbus_bin, product, safe_mask, tmp_path):
    root, _ = product
    _write(root / "es_flaky.json", _earth_search(lambda b: f"cogs/{b}.tif"))
    with RangeServer(root, fail_every=5) as server:
        got = _mask(nimbus_bin, server.url("es_flaky.json"), tmp_path / "mask.tif", {"GDAL_HTTP_RETRY_DELAY": "0.1"})
    assert server.failures >= 3, server.failures  # requests did fail, and were retried
    np.testing.assert_array_equal(got[0], safe_mask[0])


def _refused(nimbus_bin, source, tmp_path, env=None):
    out = tmp_path / "out" / "mask.tif"
    out.parent.mkdir(exist_ok=True)
    proc = subprocess_run(nimbus_bin, ["improve-cloud-mask", "--s2-raster", source, "--out", out], env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nimbus: error: "), proc.stderr
    assert list(out.parent.iterdir()) == []
    return lines[0]


def test_malformed_item_is_refused(nimbus_bin, tmp_path):
    bad = tmp_path / "item.json"
    bad.write_text('{"type": "Feature", "assets": {')
    assert "not valid JSON" in _refused(nimbus_bin, bad, tmp_path) and str(bad) in _refused(nimbus_bin, bad, tmp_path)
    bad.write_text('{"type": "Feature", "properties": {}}')
    assert "not a STAC Item" in _refused(nimbus_bin, bad, tmp_path)
    bad.write_text('{"type": 5, "assets": {}}')
    assert "not a STAC Item" in _refused(nimbus_bin, bad, tmp_path)
    bad.write_text('{"type": "Feature", "id": 7, "assets": {"scl": {"href": 3}, "coastal": {"href": 3}}, "properties": []}')
    assert "has no \"href\"" in _refused(nimbus_bin, bad, tmp_path)
    bad.write_text('{"type": "FeatureCollection", "features": []}')
    assert "ItemCollection" in _refused(nimbus_bin, bad, tmp_path)


def test_level1c_item_is_refused(nimbus_bin, product, tmp_path):
    root, _ = product
    l1c = _earth_search(lambda b: str(root / "cogs" / f"{b}.tif"), drop=("SCL",), **{"s2:product_type": "S2MSI1C"})
    message = _refused(nimbus_bin, _write(tmp_path / "l1c.json", l1c), tmp_path)
    assert "Level-1C" in message and "Level-2A" in message


def test_missing_band_asset_is_refused(nimbus_bin, product, tmp_path):
    root, _ = product
    item = _write(tmp_path / "item.json", _planetary_computer(lambda b: str(root / "cogs" / f"{b}.tif"), drop=("B8A",)))
    message = _refused(nimbus_bin, item, tmp_path)
    assert "no asset for band B8A" in message and str(item) in message


def test_missing_asset_on_the_server_is_refused(nimbus_bin, product, tmp_path):
    root, _ = product
    _write(root / "es_404.json", _earth_search(lambda b: f"cogs/{b}.tif"))
    with RangeServer(root, missing=["cogs/B03.tif"]) as server:
        message = _refused(nimbus_bin, server.url("es_404.json"), tmp_path, {"NIMBUS_STAC_TOKEN": "sig=SECRET"})
        no_item = _refused(nimbus_bin, server.url("no_such_item"), tmp_path)
    assert "asset 'green'" in message and server.url("cogs/B03.tif") in message and "404" in message
    assert "SECRET" not in message and "$NIMBUS_STAC_TOKEN" in message  # the token is never shown
    assert server.url("no_such_item") in no_item and "404" in no_item


@pytest.mark.parametrize("hang_under", ["/", "/cogs/"], ids=["item", "assets"])
def test_server_that_stops_answering_is_refused(nimbus_bin, product, tmp_path, hang_under):
    """The server hangs on every request (the item) or only on the band files (its assets)."""
    root, _ = product
    _write(root / "es_hang.json", _earth_search(lambda b: f"cogs/{b}.tif"))
    env = {"GDAL_HTTP_LOW_SPEED_TIME": "1", "GDAL_HTTP_CONNECTTIMEOUT": "2", "GDAL_HTTP_MAX_RETRY": "0"}
    with RangeServer(root, hang_under=hang_under) as server:
        url = server.url("es_hang.json")
        message = _refused(nimbus_bin, url, tmp_path, env)
    assert url in message and "GDAL_HTTP_LOW_SPEED_TIME" in message
    if hang_under != "/":
        assert "asset 'coastal'" in message and server.url("cogs/B01.tif") in message


def test_signed_assets_without_the_token_are_refused(nimbus_bin, product, tmp_path):
    root, _ = product
    with RangeServer(root, token="sig=abc") as server:
        _write(root / "pc_unsigned.json", _planetary_computer(lambda b: server.url(f"cogs/{b}.tif")))
        message = _refused(nimbus_bin, server.url("pc_unsigned.json") + "?sig=abc", tmp_path)
        wrong = _refused(nimbus_bin, server.url("pc_unsigned.json") + "?sig=abc", tmp_path,
                         {"NIMBUS_STAC_TOKEN": "sig=wrong"})
    assert "asset 'B01'" in message and "403" in message and "NIMBUS_STAC_TOKEN" in message
    assert "403" in wrong and "wrong" not in wrong


def test_batch_manifest_takes_item_paths(nimbus_bin, product, safe_mask, tmp_path):
    """A local item in a manifest: the scene's id is the item's id (URLs and ItemCollections:
    test_stac_catalogue.py)."""
    root, _ = product
    _write(root / "es_batch.json", _earth_search(lambda b: f"cogs/{b}.tif"))
    manifest = tmp_path / "scenes.csv"
    manifest.write_text(f"s2_raster\n{root / 'es_batch.json'}\n")
    proc = run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", tmp_path / "out", *RUN)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(_read(tmp_path / "out" / "S2B_31TDH_20230601_0_L2A.tif")[0], safe_mask[0])


def test_relative_hrefs_resolve_against_the_item(nimbus_bin, product, tmp_path):
    """'../cogs/B02.tif' from an item in a sub-folder, as a file and as a URL, is the same stack."""
    root, _ = product
    (root / "items" / "deep").mkdir(parents=True, exist_ok=True)
    item = _write(root / "items" / "deep" / "item.json", _planetary_computer(lambda b: f"../../cogs/./{b}.tif"))
    run_nimbus(nimbus_bin, "stack-safe", root / "cogs" / ".." / "safe" / next((root / "safe").iterdir()).name,
               "--out", tmp_path / "safe.tif", "-q", check=True)
    with RangeServer(root) as server:
        for name, source in (("file", item), ("url", server.url("items/deep/item.json"))):
            run_nimbus(nimbus_bin, "stack-safe", source, "--out", tmp_path / f"{name}.tif", "-q", check=True)
            np.testing.assert_array_equal(_read(tmp_path / f"{name}.tif")[0], _read(tmp_path / "safe.tif")[0])
        assert server.requests["/cogs/B02.tif"] > 0


@pytest.fixture(scope="module")
def full_tile(tmp_path_factory):
    """A full 10980 x 10980 tile as band COGs (cheap low-entropy data, ~100 MB) and an Earth Search item."""
    from synthetic_band_cogs import stac_item, write_band_cogs
    root = tmp_path_factory.mktemp("full_tile")
    write_band_cogs(root / "cogs")
    _write(root / "item.json", stac_item(lambda b: f"cogs/{b}.tif"))
    return root


def test_one_chip_field_of_a_full_tile_reads_under_2_percent(nimbus_bin, full_tile, tmp_path):
    """A field inside one chip of the 29 x 29 grid (chip 14 alone reads columns and rows
    5372..5607): only that chip runs, under 2 % of the band files' bytes cross the wire,
    and the mask equals the one computed from the same item's files on disk."""
    x0, y0, x1, y1 = 5440, 5450, 5490, 5500
    bbox = f"{300000 + 10 * x0},{5109840 - 10 * y1},{300000 + 10 * x1},{5109840 - 10 * y0}"
    args = ["--bbox", bbox, "--aoi-crs", "EPSG:32631", "-q"]
    with RangeServer(full_tile) as server:
        proc = subprocess_run(nimbus_bin, ["improve-cloud-mask", "--s2-raster", server.url("item.json"), "--out",
                                           tmp_path / "http.tif", "--report", tmp_path / "report.json", *args])
        assert proc.returncode == 0, proc.stderr
    band_bytes = sum(f.stat().st_size for f in (full_tile / "cogs").glob("*.tif"))
    sent = sum(n for path, n in server.bytes_sent.items() if path.startswith("/cogs/"))
    assert 0 < sent < 0.02 * band_bytes, (sent, band_bytes, dict(server.bytes_sent))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["chips_per_model"] == 1 and report["chips_total"] == 841
    assert report["aoi_window"] == f"{x0},{y0},{x1 - x0},{y1 - y0}"
    proc = subprocess_run(nimbus_bin, ["improve-cloud-mask", "--s2-raster", full_tile / "item.json", "--out",
                                       tmp_path / "local.tif", *args])
    assert proc.returncode == 0, proc.stderr
    http, local = _read(tmp_path / "http.tif"), _read(tmp_path / "local.tif")
    np.testing.assert_array_equal(http[0], local[0])
    assert http[0].shape == (1, y1 - y0, x1 - x0)


def test_server_that_stops_answering_mid_run_names_the_asset(nimbus_bin, full_tile, tmp_path):
    """The band files' headers are served, their tiles never: the stack opens, the first pixel
    read times out, and the error names the asset URL and the timeout settings."""
    env = {"GDAL_HTTP_LOW_SPEED_TIME": "1", "GDAL_HTTP_CONNECTTIMEOUT": "2", "GDAL_HTTP_MAX_RETRY": "0"}
    bbox = f"{300000 + 10 * 5440},{5109840 - 10 * 5500},{300000 + 10 * 5490},{5109840 - 10 * 5450}"
    with RangeServer(full_tile, hang_under="/cogs/", hang_from_byte=16384) as server:
        out = tmp_path / "out" / "mask.tif"
        out.parent.mkdir()
        proc = subprocess_run(nimbus_bin, ["improve-cloud-mask", "--s2-raster", server.url("item.json"), "--bbox", bbox,
                                           "--aoi-crs", "EPSG:32631", "--out", out, "-q"], env)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("nimbus: error: "), proc.stderr
        assert "over the network failed at '" + server.url("cogs/") in lines[0], lines[0]
        assert "GDAL_HTTP_LOW_SPEED_TIME" in lines[0] and "GDAL_HTTP_MAX_RETRY" in lines[0]
        assert list(out.parent.iterdir()) == []
