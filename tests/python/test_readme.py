"""The README's commands run, as written, in the order a reader runs them.

Every ```bash block of README.md is executed with bash -euo pipefail in one sandbox directory that
holds what the README's reader has: the build (`./build` links to the build under test), the demo
scene made by `scripts/setup.sh`, Sentinel-2 band files, a SAFE product, FarmVibes-named models
(the torch-built test models) and, for the STAC examples, Earth Search's and the Planetary
Computer's URLs served by a local Range server (the only rewrite: their https://host/ prefix becomes
the local server's). `bash scripts/test.sh` is the one command not run here: CI runs it, and it
runs this test.
"""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.transform import Affine

from conftest import ROOT
from http_range_server import RangeServer
from synthetic_safe import RES, write_safe
from synthetic_scene import BANDS

README = ROOT / "README.md"
SAFE_NAME = "S2B_MSIL2A_20230601T103629_N0509_R008_T31TDH_20230601T135411.SAFE"
EARTH_SEARCH = "https://earth-search.aws.element84.com/"
PLANETARY_COMPUTER = "https://planetarycomputer.microsoft.com/"
EARTH_SEARCH_KEYS = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
                     "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
                     "B11": "swir16", "B12": "swir22", "SCL": "scl"}
PC_TOKEN = "st=2026-11-28&se=2026-11-29&sig=readme%2Btest"
# The synthetic product is placed inside tile 31TDH so that the README's field (lon/lat bbox) lies on it.
TILE_ORIGIN = (449000.0, 4752000.0)


def bash_blocks(text):
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def _move_to_tile(src, dst, res):
    """Copies a band file as a COG whose upper-left corner is TILE_ORIGIN."""
    with rasterio.open(src) as band:
        profile = band.profile | dict(driver="GTiff", transform=Affine(res, 0, TILE_ORIGIN[0], 0, -res, TILE_ORIGIN[1]))
        data = band.read()
    tmp = dst.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as out:
        out.write(data)
    rasterio.shutil.copy(tmp, dst, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256)
    tmp.unlink()


def _stac_item(item_id, keys, href, properties):
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "sentinel-2-l2a",
            "geometry": None, "bbox": [2.37, 42.88, 2.43, 42.92],
            "properties": {"datetime": "2023-06-01T10:36:29Z", "s2:product_type": "S2MSI2A",
                           "s2:processing_baseline": "05.09", **properties},
            "links": [], "assets": {key: {"href": href(band), "roles": ["data"],
                                          "type": "image/tiff; application=geotiff; profile=cloud-optimized"}
                                    for band, key in keys.items()}}


@pytest.fixture(scope="module")
def sandbox(nimbus_bin, nimbus_py, test_models, tmp_path_factory):
    """The reader's working directory, and the local servers standing in for the two catalogues."""
    home = tmp_path_factory.mktemp("readme")
    (home / "build").symlink_to(Path(nimbus_bin).resolve().parent)
    safe, _, _ = write_safe(home / "products", width=600, height=540, baseline="05.09", classi=False)
    shutil.copytree(safe, home / SAFE_NAME)
    bands = home / "bands"
    bands.mkdir()
    for band in BANDS + ["SCL"]:
        shutil.copy(next(safe.rglob(f"*_{band}_{RES.get(band, 20)}m.jp2")), bands / f"{band}.jp2")
    farmvibes = home / "farmvibes"
    farmvibes.mkdir()
    shutil.copy(test_models / "cheaplab_op13.onnx", farmvibes / "cloud_model2_cpu.onnx")
    shutil.copy(test_models / "fpn_shadow_op13.onnx", farmvibes / "shadow.onnx")

    web = home.parent / (home.name + "-web")
    cogs = web / "blobs"
    cogs.mkdir(parents=True)
    for band in BANDS + ["SCL"]:
        _move_to_tile(next(safe.rglob(f"*_{band}_{RES.get(band, 20)}m.jp2")), cogs / f"{band}.tif", RES.get(band, 20))
    with RangeServer(web, token=PC_TOKEN, signed_under="/blobs-signed/") as server:
        (web / "blobs-signed").symlink_to(cogs)
        es = web / "earth-search/v1/collections/sentinel-2-l2a/items/S2B_31TDH_20230601_0_L2A"
        es.parent.mkdir(parents=True)
        es.write_text(json.dumps(_stac_item("S2B_31TDH_20230601_0_L2A", EARTH_SEARCH_KEYS,
                                            lambda b: server.url(f"blobs/{b}.tif"),
                                            {"earthsearch:boa_offset_applied": False})))
        pc = web / ("planetarycomputer/api/stac/v1/collections/sentinel-2-l2a/items/"
                    "S2B_MSIL2A_20230601T103629_R008_T31TDH_20230601T135411")
        pc.parent.mkdir(parents=True)
        pc.write_text(json.dumps(_stac_item(pc.name, {b: b for b in BANDS} | {"SCL": "SCL"},
                                            lambda b: server.url(f"blobs-signed/{b}.tif"), {})))
        yield home, server


def _run(block, cwd, server, env_extra=None):
    script = block.replace(EARTH_SEARCH, server.url("earth-search/")).replace(
        PLANETARY_COMPUTER, server.url("planetarycomputer/"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NIMBUS_STAC_TOKEN")}
    env.update({"PC_TOKEN": PC_TOKEN, "NIMBUS_CACHE_DIR": str(cwd / ".nimbus-cache")}, **(env_extra or {}))
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_every_readme_command_runs(sandbox):
    home, server = sandbox
    blocks = bash_blocks(README.read_text())
    assert len(blocks) >= 7, "the README lost its examples"
    first, rest = blocks[0], blocks[1:]
    # The two commands: setup.sh runs (in the checkout, as a reader runs it; its demo directory is
    # the sandbox's), test.sh is what CI runs.
    assert "bash scripts/setup.sh" in first and "bash scripts/test.sh" in first
    setup = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, capture_output=True, text=True, timeout=900,
                           env={**os.environ, "NIMBUS_DEMO_DIR": str(home / "demo-out")})
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert (home / "demo-out" / "mask.tif").is_file()
    for block in rest:
        proc = _run(block, home, server)
        assert proc.returncode == 0, f"README block failed:\n{block}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"

    # What the commands made is what the README says they make.
    for name in ("first-mask.tif", "first-mask.png", "my-mask.tif", "safe-mask.tif", "safe-stack.tif",
                 "field-mask.tif", "pc-field-mask.tif", "farmvibes-mask.tif", "workflow-out/mask.tif",
                 "masks/demo.tif", "masks/batch-report.csv", "python-mask.tif"):
        assert (home / name).is_file(), name
    with rasterio.open(home / "first-mask.tif") as a, rasterio.open(home / "demo-out" / "mask.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
    with rasterio.open(home / "python-mask.tif") as a, rasterio.open(home / "masks" / "demo.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
    # The field is 1 km² (100 × 100 pixels, give or take the snapping to the grid), read by ranges.
    with rasterio.open(home / "field-mask.tif") as field, rasterio.open(home / "pc-field-mask.tif") as pc:
        assert 99 <= field.width <= 102 and 99 <= field.height <= 102
        np.testing.assert_array_equal(field.read(), pc.read())
    assert server.bytes_sent["/blobs/B02.tif"] < (Path(server.root) / "blobs" / "B02.tif").stat().st_size


def test_the_readme_links_resolve():
    text = README.read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
