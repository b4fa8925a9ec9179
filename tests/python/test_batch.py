"""nimbus batch MANIFEST.csv: many scenes, per-scene status, resume after interruption
with outputs verified by checksum."""
import csv
import hashlib
import json
import signal
import subprocess
import time

import numpy as np
import pytest
import rasterio

from conftest import run_nimbus


@pytest.fixture
def scenes(make_scene):
    return [make_scene(1100 + 60 * i, 1000, seed=20 + i, name=f"scene{i}") for i in range(4)]


def _manifest(path, rows, header=("s2_raster", "product_mask", "id")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _rows(scenes, base):
    # Relative paths: resolved against the manifest's directory.
    return [(s["s2"].relative_to(base), s["product_mask"].relative_to(base), f"field-{i}") for i, s in
            enumerate(scenes)]


def _report(out_dir):
    with open(out_dir / "batch-report.csv") as f:
        return {r["id"]: r for r in csv.DictReader(f)}


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_batch_writes_each_mask_with_a_record_and_a_report(nimbus_bin, scenes, tmp_path):
    manifest = _manifest(tmp_path / "m.csv", _rows(scenes, tmp_path))
    out = tmp_path / "out"
    proc = run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", out, "--min-area", "20")
    assert proc.returncode == 0, proc.stderr
    assert "[4/4] field-3: done" in proc.stderr  # one progress line per scene when not on a terminal
    assert "4 done, 0 skipped" in proc.stderr
    report = _report(out)
    assert [report[f"field-{i}"]["status"] for i in range(4)] == ["done"] * 4
    for i, s in enumerate(scenes):
        mask = out / f"field-{i}.tif"
        record = json.loads((out / f"field-{i}.tif.nimbus.json").read_text())
        assert record["sha256"] == _sha256(mask) == report[f"field-{i}"]["sha256"]
        single = tmp_path / f"single{i}.tif"
        run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", s["s2"], "--product-mask", s["product_mask"],
                   "--out", single, "--min-area", "20", "-q", check=True)
        with rasterio.open(mask) as a, rasterio.open(single) as b:
            assert np.array_equal(a.read(), b.read())
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["batch-report.csv"] + [f"field-{i}.tif{x}" for i in range(4) for x in ("", ".aux.xml", ".nimbus.json")])


def test_interrupted_batch_resumes_and_verifies_outputs(nimbus_bin, scenes, tmp_path):
    manifest = _manifest(tmp_path / "m.csv", _rows(scenes, tmp_path))
    out = tmp_path / "out"
    proc = subprocess.Popen([str(nimbus_bin), "batch", str(manifest), "--out-dir", str(out), "--threads", "1"],
                            stderr=subprocess.PIPE, text=True)
    # Interrupt as soon as the first scene is recorded, while the second runs.
    start = time.time()
    while time.time() - start < 120 and not (out / "field-0.tif.nimbus.json").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    finished = {p.name for p in out.glob("*.nimbus.json")}
    assert "field-0.tif.nimbus.json" in finished and len(finished) < 4
    assert not [p for p in out.iterdir() if ".nimbus-partial" in p.name]
    first_sha = _sha256(out / "field-0.tif")

    again = run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", out)
    assert again.returncode == 0, again.stderr
    report = _report(out)
    assert report["field-0"]["status"] == "skipped" and report["field-0"]["sha256"] == first_sha
    assert {report[f"field-{i}"]["status"] for i in range(len(finished), 4)} == {"done"}

    # A damaged output no longer verifies against its record: only that scene is redone.
    damaged = out / "field-2.tif"
    damaged.write_bytes(damaged.read_bytes()[:-100])
    third = run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", out)
    assert third.returncode == 0, third.stderr
    report = _report(out)
    assert [report[f"field-{i}"]["status"] for i in range(4)] == ["skipped", "skipped", "done", "skipped"]
    assert json.loads((out / "field-2.tif.nimbus.json").read_text())["sha256"] == _sha256(damaged)

    # Another parameter is another recipe: the masks would be replaced, which takes
    # --overwrite (refused before any scene runs without it); then everything is recomputed.
    refused = run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", out, "--cloud-thr", "0.5")
    assert refused.returncode == 2 and "--overwrite" in refused.stderr, refused.stderr
    fourth = run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", out, "--cloud-thr", "0.5", "--overwrite")
    assert fourth.returncode == 0, fourth.stderr
    assert {r["status"] for r in _report(out).values()} == {"done"}


def test_failed_scene_is_reported_once_and_the_others_complete(nimbus_bin, scenes, tmp_path):
    # A path that exists but is no raster fails when its scene runs (a missing path stops
    # the batch before it starts: test_cli_progress.py).
    broken = tmp_path / "broken.tif"
    broken.write_text("not a raster")
    rows = _rows(scenes[:2], tmp_path) + [("broken.tif", scenes[0]["product_mask"], "ghost")]
    manifest = _manifest(tmp_path / "m.csv", rows)
    proc = run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", tmp_path / "out", "-q")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("nimbus: error: scene ghost: ") and str(broken) in line
    report = _report(tmp_path / "out")
    assert [report[k]["status"] for k in ("field-0", "field-1", "ghost")] == ["done", "done", "failed"]
    assert "broken.tif" in report["ghost"]["error"]
    assert not (tmp_path / "out" / "ghost.tif").exists()
    # With progress shown, the error is still printed once (after the batch), not also in its progress line.
    again = run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", tmp_path / "out")
    assert again.returncode == 2
    assert again.stderr.count("ghost: ") == 2, again.stderr  # its progress line and its error line
    assert "[3/3] ghost: failed in " in again.stderr and again.stderr.count("nimbus: error:") == 1
    assert "@[" not in again.stderr and "(--s2-raster)" in again.stderr  # spelled as the CLI takes it


@pytest.mark.parametrize("content,needle", [
    ("s2_raster,id\na.tif,x\nb.tif,x\n", "both have the id 'x'"),
    ("s2,id\na.tif,x\n", "unknown column 's2'"),
    ("id\nx\n", "no s2_raster column"),
    ("", "is empty"),
    ("s2_raster,id\na.tif\n", "line 2: 1 fields, the header has 2"),
    ('s2_raster\n"a.tif\n', "unterminated quoted field"),
    ("s2_raster,id\na.tif,../x\n", "cannot name an output file"),
])
def test_bad_manifest(content, needle, nimbus_bin, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(content)
    proc = run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", tmp_path / "out")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nimbus: error: manifest"), proc.stderr
    assert needle in lines[0] and str(manifest) in lines[0]
    assert not (tmp_path / "out").exists()


def test_ids_default_to_file_and_product_names(nimbus_py):
    assert nimbus_py.scene_id_from_path("/d/T31TDH_2023.tif") == "T31TDH_2023"
    safe = "S2B_MSIL2A_20230601T100000_N0509_R122_T31TDH_20230601T120000"
    assert nimbus_py.scene_id_from_path(f"/d/{safe}.SAFE") == safe
    assert nimbus_py.scene_id_from_path(f"/d/{safe}.SAFE/") == safe
    assert nimbus_py.scene_id_from_path(f"/d/{safe}.SAFE/MTD_MSIL2A.xml") == safe
    assert nimbus_py.scene_id_from_path(f"/d/{safe}.zip") == safe
    assert nimbus_py.scene_id_from_path(f"/d/{safe}.SAFE.zip") == safe


def test_python_batch_resumes_like_the_cli(nimbus_py, scenes, tmp_path):
    # Both rasters are called s2.tif: without ids they would collide.
    pairs = [(s["s2"], s["product_mask"]) for s in scenes[:2]]
    with pytest.raises(nimbus_py.InputError, match="both have the id 's2'"):
        nimbus_py.batch(pairs, tmp_path / "out", progress=False)
    named = [{"s2_raster": s["s2"], "product_mask": s["product_mask"], "id": f"p{i}"} for i, s in enumerate(scenes[:2])]
    first = nimbus_py.batch(named, tmp_path / "out", progress=False)
    assert [(o["id"], o["status"]) for o in first] == [("p0", "done"), ("p1", "done")]
    second = nimbus_py.batch(named, tmp_path / "out", progress=False)
    assert [o["status"] for o in second] == ["skipped", "skipped"]
    assert [o["sha256"] for o in second] == [o["sha256"] for o in first]
