"""What the CLI tells a user while and after it works (issue 17, items 3 and 7): progress
for one scene and for a batch (a bar on a terminal, lines with an ETA in a pipe, nothing
with -q, stage timings with -v), the --report fields, grouped and wrapped --help with the
program's name, --version, and a batch refusing a manifest with bad paths before it starts."""
import csv
import json
import os
import pty
import re
import select
import subprocess

import pytest

from conftest import run_nimbus

# 192 x 192 pixels in 64-pixel chips without overlap: 9 chips, a few seconds.
CHIPS = ["--window", "64", "--overlap", "0"]


@pytest.fixture
def small_scene(make_scene):
    return make_scene(192, 192, seed=5)


def _improve(scene, out):
    return ["improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask", scene["product_mask"], "--out", out,
            *CHIPS]


def _run(nimbus_bin, *args, interval=None):
    env = dict(os.environ)
    if interval is not None:
        env["NIMBUS_PROGRESS_INTERVAL"] = str(interval)
    return subprocess.run([str(nimbus_bin), *map(str, args)], capture_output=True, text=True, env=env, timeout=900)


def _run_on_terminal(nimbus_bin, *args):
    """Runs with stderr (and stdout) on a pseudo-terminal; returns (exit code, everything written)."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(str(nimbus_bin), [str(nimbus_bin), *map(str, args)])
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], 600)
        if not ready:
            os.kill(pid, 9)
            raise AssertionError("no output for 600 s")
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode()


def test_pipe_gets_progress_lines_with_eta_and_a_last_line(nimbus_bin, small_scene, tmp_path):
    proc = _run(nimbus_bin, *_improve(small_scene, tmp_path / "m.tif"), interval=0)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr  # no bar in a log
    lines = [l for l in proc.stderr.splitlines() if re.search(r"chips \d+/\d+", l)]
    counts = [int(re.search(r"chips (\d+)/9", l).group(1)) for l in lines]
    assert counts == list(range(1, 10))  # interval 0: a line per chip, in order
    assert all("ETA" in l and "chips/s" in l for l in lines[:-1])
    assert "chips 9/9 (100%)" in lines[-1] and "done in" in lines[-1]


def test_pipe_lines_are_time_based(nimbus_bin, small_scene, tmp_path):
    # With the default interval (seconds) a short run prints its first and last chip only.
    proc = _run(nimbus_bin, *_improve(small_scene, tmp_path / "m.tif"), interval=3600)
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if re.search(r"chips \d+/\d+", l)]
    assert len(lines) == 2 and "chips 1/9" in lines[0] and "ETA" in lines[0] and "chips 9/9" in lines[1]


def test_terminal_gets_one_bar_updated_in_place(nimbus_bin, small_scene, tmp_path):
    code, out = _run_on_terminal(nimbus_bin, *_improve(small_scene, tmp_path / "m.tif"))
    assert code == 0, out
    # The terminal turns "\n" into "\r\n"; one line holds every update of the bar.
    bar_lines = [l for l in out.split("\n") if re.search(r"chips \d+/\d+", l)]
    assert len(bar_lines) == 1, out
    updates = [u for u in bar_lines[0].split("\r") if "chips" in u]
    assert len(updates) >= 2, bar_lines
    assert all("ETA" in u for u in updates[:-1])
    assert re.search(r"\[#+\] chips 9/9 \(100%\)", updates[-1]) and "done in" in updates[-1]
    assert re.search(r"\n\[[\d:]+\] wrote ", out)  # the summary after the bar, on a line of its own


def test_quiet_prints_nothing(nimbus_bin, small_scene, tmp_path):
    proc = _run(nimbus_bin, "-q", *_improve(small_scene, tmp_path / "m.tif"), interval=0)
    assert proc.returncode == 0 and proc.stderr == ""
    code, out = _run_on_terminal(nimbus_bin, "-q", *_improve(small_scene, tmp_path / "m2.tif"))
    assert code == 0 and out == ""


def test_verbose_adds_stage_timings(nimbus_bin, small_scene, tmp_path):
    plain = _run(nimbus_bin, *_improve(small_scene, tmp_path / "a.tif"))
    verbose = _run(nimbus_bin, "-v", *_improve(small_scene, tmp_path / "b.tif"))
    assert plain.returncode == 0 and verbose.returncode == 0, verbose.stderr
    assert "stage " not in plain.stderr
    stages = re.findall(r"stage (\w+): [\d.]+ s", verbose.stderr)
    assert stages == ["prepare", "chips", "merge", "write"]


def test_report_names_inputs_outputs_parameters_engine_and_versions(nimbus_bin, small_scene, tmp_path):
    report = tmp_path / "r.json"
    proc = run_nimbus(nimbus_bin, *_improve(small_scene, tmp_path / "m.tif"), "--cloud-thr", "0.45", "--report",
                      report, "--keep-probabilities", tmp_path, "--engine", "opencv", "-q")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(report.read_text())
    assert r["inputs"] == {"s2_raster": str(small_scene["s2"]), "product_mask": str(small_scene["product_mask"]),
                           "cloud_model": "embedded:nimbus_cloud_v2", "shadow_model": "embedded:nimbus_shadow_v1"}
    assert r["outputs"] == {"mask": str(tmp_path / "m.tif"), "report": str(report),
                            "cloud_probability": str(tmp_path / "cloud_probability.tif"),
                            "shadow_probability": str(tmp_path / "shadow_probability.tif")}
    assert r["parameters"]["cloud_thr"] == 0.45 and r["parameters"]["window"] == 64
    assert r["parameters"]["overlap"] == 0 and r["parameters"]["engine"] == "opencv"
    assert not {"s2_raster", "out", "report"} & set(r["parameters"])  # files are inputs or outputs
    assert r["engine"] == "opencv" and r["cloud_engine"] == r["shadow_engine"] == "opencv"
    version = run_nimbus(nimbus_bin, "--version").stdout
    assert r["nimbus_version"] in version.splitlines()[0]
    assert set(r["versions"]) == {"nimbus", "gdal", "opencv", "onednn"}
    for name, label in [("gdal", "GDAL"), ("opencv", "OpenCV"), ("onednn", "oneDNN")]:
        assert f"{label} {r['versions'][name]}" in version
    assert r["seconds_prepare"] >= 0 and r["chips_per_model"] == 9


def _manifest(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("s2_raster", "product_mask", "id"))
        w.writerows(rows)
    return path


def test_batch_progress_moves_within_a_scene(nimbus_bin, make_scene, tmp_path):
    scenes = [make_scene(192, 192, seed=30 + i, name=f"s{i}") for i in range(2)]
    manifest = _manifest(tmp_path / "m.csv", [(s["s2"], s["product_mask"], f"f{i}") for i, s in enumerate(scenes)])
    proc = _run(nimbus_bin, "batch", manifest, "--out-dir", tmp_path / "out", *CHIPS, interval=0)
    assert proc.returncode == 0, proc.stderr
    for i in range(2):
        within = [l for l in proc.stderr.splitlines() if f"scene {i + 1}/2 f{i}: chips" in l]
        assert len(within) >= 8 and all("batch ETA" in l for l in within), proc.stderr
    assert "[2/2] f1: done" in proc.stderr
    code, out = _run_on_terminal(nimbus_bin, "batch", manifest, "--out-dir", tmp_path / "out2", *CHIPS)
    assert code == 0, out
    updates = out.split("\r")
    assert any(re.search(r"scene 1/2 f0: chips \d/9", u) for u in updates)
    assert any(re.search(r"scene 2/2 f1: chips \d/9", u) for u in updates)
    assert "2/2 scenes" in out


def test_batch_with_bad_paths_reports_each_once_and_computes_nothing(nimbus_bin, small_scene, tmp_path):
    rows = [(small_scene["s2"], small_scene["product_mask"], "good"),
            ("missing-a.tif", small_scene["product_mask"], "a"),
            (small_scene["s2"], "missing-pm.tif", "b"),
            (small_scene["s2"], "missing-pm.tif", "c"),  # the same bad path in two rows: told once
            ("https://example.invalid/x.json", "", "d")]
    manifest = _manifest(tmp_path / "m.csv", rows)
    proc = run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", tmp_path / "out")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3, proc.stderr
    assert all(l.startswith("nimbus: error: ") for l in lines)
    assert f"scene a: input '{tmp_path / 'missing-a.tif'}' does not exist; fix the manifest" in lines[0]
    assert lines[1].startswith("nimbus: error: scenes b, c: input") and "missing-pm.tif" in lines[1]
    assert "scene d:" in lines[2] and "http" in lines[2]
    assert not (tmp_path / "out").exists()


def test_help_is_grouped_wrapped_and_names_the_program(nimbus_bin, tmp_path):
    link = tmp_path / "nimbus"
    link.symlink_to(nimbus_bin)
    env = dict(os.environ, COLUMNS="72")
    text = subprocess.run([str(link), "improve-cloud-mask", "--help"], capture_output=True, text=True, env=env,
                          check=True).stdout
    assert "Usage: nimbus improve-cloud-mask" in text and str(tmp_path) not in text
    headings = re.findall(r"^(\w[\w ]*):$", text, re.MULTILINE)
    assert headings[:6] == ["Inputs", "Outputs", "Models", "Parameters", "Area of interest", "Performance"]
    declared = json.loads(subprocess.run([str(nimbus_bin), "ops", "describe", "improve-cloud-mask", "--json"],
                                         capture_output=True, text=True, check=True).stdout)
    sections = dict(zip(headings, re.split(r"^\w[\w ]*:$", text, flags=re.MULTILINE)[1:]))
    for p in declared:  # each option under the heading its declaration gives
        assert re.search(rf"^\s+{re.escape(p['cli_flag'])}\b", sections[p["group"]], re.MULTILINE), p["name"]
    body = text.split("Examples:")[0]
    assert max(len(l) for l in body.splitlines()) <= 72
    assert "Examples:" in text and "nimbus improve-cloud-mask --s2-raster" in text
    wide = subprocess.run([str(link), "improve-cloud-mask", "--help"], capture_output=True, text=True,
                          env=dict(os.environ, COLUMNS="200"), check=True).stdout
    assert len(wide.splitlines()) < len(text.splitlines())  # wrapped to the width it is given
    top = subprocess.run([str(link), "--help"], capture_output=True, text=True, env=env, check=True).stdout
    assert "Usage: nimbus [OPTIONS] SUBCOMMAND" in top and "Examples:" in top


def test_version_names_the_libraries(nimbus_bin):
    proc = run_nimbus(nimbus_bin, "--version")
    assert proc.returncode == 0
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"nimbus \d+\.\d+\.\d+", lines[0])
    assert [l.split()[0] for l in lines[1:]] == ["GDAL", "OpenCV", "oneDNN"]
    assert all(re.fullmatch(r"\S+ \d+\.\d+(\.\d+)?\S*", l) for l in lines[1:])
