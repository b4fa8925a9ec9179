"""Hostile outputs and command lines: an output that is an input, outputs that collide,
special files, bad creation options, names too long for the temporary files, failed
commits, signals and Ctrl-C in Python. Each case: one `nimbus: error:` line, exit 2,
nothing left behind, no input modified."""
import hashlib
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import ROOT, python_package_dir, run_nimbus


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


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _created(tmp_path):
    """What a run left in tmp_path (the scene fixture lives in tmp_path/scene)."""
    return sorted(p.name for p in Path(tmp_path).iterdir() if p.name != "scene")


def _leftovers(directory):
    return sorted(p.name for p in Path(directory).rglob("*") if ".nimbus-" in p.name or p.name.endswith(".ovr.tmp"))


# --- B10: an output that resolves to an input ------------------------------------------------------------------


@pytest.mark.parametrize("case", ["out-is-raster", "out-is-product-mask", "out-is-hard-link", "out-is-symlink",
                                  "preview-is-raster", "report-is-product-mask", "probabilities-over-model"])
def test_output_that_is_an_input_is_refused(case, nimbus_bin, scene, default_models, tmp_path):
    s2, pm = scene["s2"], scene["product_mask"]
    out = tmp_path / "mask.tif"
    extra = []
    if case == "out-is-raster":
        out = s2
    elif case == "out-is-product-mask":
        out = pm
    elif case == "out-is-hard-link":
        out = tmp_path / "hard.tif"
        os.link(s2, out)
    elif case == "out-is-symlink":
        out = tmp_path / "link.tif"
        out.symlink_to(s2)
    elif case == "preview-is-raster":
        extra = ["--preview", s2]
    elif case == "report-is-product-mask":
        extra = ["--report", pm]
    elif case == "probabilities-over-model":
        models = tmp_path / "models"
        models.mkdir()
        (models / "cloud_probability.tif").write_bytes(default_models["cloud"].read_bytes())
        extra = ["--keep-probabilities", models, "--cloud-model", models / "cloud_probability.tif"]
    before = {p: _sha(p) for p in (s2, pm)}
    line = _one_error_line(_improve(nimbus_bin, s2, pm, out, *extra))
    assert "input" in line
    assert {p: _sha(p) for p in (s2, pm)} == before
    assert not (tmp_path / "mask.tif").exists()
    assert _leftovers(tmp_path) == [] and _leftovers(Path(s2).parent) == []


def test_stack_safe_output_inside_the_product_is_refused(nimbus_bin, tmp_path):
    from synthetic_safe import write_safe
    safe, _, _ = write_safe(tmp_path / "p", width=600, height=600)
    mtd = safe / "MTD_MSIL2A.xml"
    before = _sha(mtd)
    for args in (["--out", mtd], ["--out", safe / "stack.tif"], ["--out", tmp_path / "s.tif", "--product-mask-out",
                                                                  safe / "GRANULE" / "pm.tif"]):
        line = _one_error_line(run_nimbus(nimbus_bin, "stack-safe", safe, *args, "-q"))
        assert "input" in line and "product" in line
    # Given as its metadata file, the product is still the directory around it.
    line = _one_error_line(run_nimbus(nimbus_bin, "stack-safe", mtd, "--out", safe / "stack.tif", "-q"))
    assert "inside the input" in line
    assert _sha(mtd) == before
    assert not (safe / "stack.tif").exists() and not (tmp_path / "s.tif").exists()


def test_batch_output_that_is_an_input_is_refused_before_any_scene(nimbus_bin, make_scene, tmp_path):
    a = make_scene(600, 560, seed=1, name="a")
    b = make_scene(600, 560, seed=2, name="b")
    # Scene 'b' writes <out-dir>/s2.tif: the raster of scene 'a' when --out-dir is a's folder.
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"s2_raster,product_mask,id\n{a['s2']},{a['product_mask']},first\n"
                        f"{b['s2']},{b['product_mask']},s2\n")
    before = _sha(a["s2"])
    line = _one_error_line(run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", a["s2"].parent, "-q"))
    assert "scene s2" in line and "input" in line
    assert _sha(a["s2"]) == before
    assert not (a["s2"].parent / "first.tif").exists()
    # The manifest itself is an input too: batch-report.csv must not replace it.
    report_manifest = tmp_path / "batch-report.csv"
    report_manifest.write_text(f"s2_raster,product_mask,id\n{b['s2']},{b['product_mask']},x\n")
    line = _one_error_line(run_nimbus(nimbus_bin, "batch", report_manifest, "--out-dir", tmp_path, "-q"))
    assert "batch report" in line and "manifest" in line
    assert not (tmp_path / "x.tif").exists()


def test_run_sink_that_is_an_input_is_refused(nimbus_bin, scene, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    pm = out / "mask.tif"  # the workflow's sink 'mask' is written as <out-dir>/mask.tif
    pm.write_bytes(Path(scene["product_mask"]).read_bytes())
    before = _sha(pm)
    line = _one_error_line(run_nimbus(nimbus_bin, "run", "data_ingestion/sentinel2/improve_cloud_mask", "--input",
                                      f"s2_raster={scene['s2']}", "--input", f"product_mask={pm}", "--out-dir", out,
                                      "--param", "cloud_model=embedded:nimbus_cloud_v1", "--param",
                                      "shadow_model=embedded:nimbus_shadow_v1", "--no-cache", "-q"))
    assert "sink mask" in line and "--input product_mask" in line
    assert _sha(pm) == before


def test_python_output_that_is_an_input_raises(nimbus_py, scene, tmp_path):
    before = _sha(scene["s2"])
    with pytest.raises(nimbus_py.InputError, match="input"):
        nimbus_py.improve_cloud_mask(scene["s2"], scene["s2"], product_mask=scene["product_mask"])
    with pytest.raises(nimbus_py.InputError, match="input"):
        nimbus_py.batch([(scene["s2"], scene["product_mask"])], Path(scene["s2"]).parent, progress=False)
    assert _sha(scene["s2"]) == before


# --- B11: outputs that collide --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["out-in-probabilities", "probabilities-dir-is-out", "preview-is-out"])
def test_colliding_outputs_are_refused(case, nimbus_bin, scene, tmp_path):
    if case == "out-in-probabilities":
        proc = _improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "cloud_probability.tif",
                        "--keep-probabilities", tmp_path)
    elif case == "probabilities-dir-is-out":
        proc = _improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "m.tif", "--keep-probabilities",
                        tmp_path / "m.tif")
    else:
        proc = _improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "m.tif", "--preview",
                        tmp_path / "." / "m.tif")
    assert "same file" in _one_error_line(proc) or "also the" in proc.stderr
    assert _created(tmp_path) == []


def test_stack_safe_outputs_that_collide_are_refused(nimbus_bin, tmp_path):
    from synthetic_safe import write_safe
    safe, _, _ = write_safe(tmp_path / "p", width=600, height=600)
    line = _one_error_line(run_nimbus(nimbus_bin, "stack-safe", safe, "--out", tmp_path / "x.tif",
                                      "--product-mask-out", tmp_path / "x.tif", "-q"))
    assert "same file" in line
    assert not (tmp_path / "x.tif").exists()


# --- B3: creation options --------------------------------------------------------------------------------------


@pytest.mark.parametrize("option,needle", [
    ("BLOCKSIZE=100000", "multiple of 16 from 128 to 4096"),
    ("BLOCKSIZE=0", ">= 128"),
    ("BLOCKSIZE=200", "multiple of 16"),
    ("COMPRESS=NOSUCH", "unexpected value for COMPRESS"),
    ("LEVEL=abc", "LEVEL"),
    ("NOSUCH=1", "not a COG creation option"),
    ("COMPRESS=JPEG", "lossy"),
    ("MAX_Z_ERROR=0.5", "lossy"),
    ("TILING_SCHEME=GoogleMapsCompatible", "grid"),
    ("RESAMPLING=NOSUCH", "resampling"),
    ("COMPRESS", "KEY=VALUE"),
    ("PREDICTOR=FLOATING_POINT", "8-bit mask"),        # used to fail after all the work
    ("OVERVIEW_COMPRESS=JPEG", "float32 probability"),  # idem, with --keep-probabilities
])
def test_creation_options_are_validated_before_any_work(option, needle, nimbus_bin, scene, tmp_path):
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "m.tif", "--co",
                                    option, "--keep-probabilities", tmp_path / "probs"))
    assert "--co" in line and needle in line
    assert _created(tmp_path) == []  # not even the --keep-probabilities directory


def test_lower_case_creation_options_still_work(nimbus_bin, scene, tmp_path):
    _improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "m.tif", "--co", "compress=deflate",
             "--co", "blocksize=512", check=True)
    with rasterio.open(tmp_path / "m.tif") as src:
        assert src.compression.name.upper() == "DEFLATE" and src.block_shapes[0] == (512, 512)


# --- B12: all outputs of a run together ------------------------------------------------------------------------


def test_bad_report_path_leaves_no_mask(nimbus_bin, scene, tmp_path):
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "mask.tif",
                                    "--report", tmp_path / "missing" / "r.json", "--preview", tmp_path / "p.png"))
    assert "--report" in line
    assert _created(tmp_path) == []


def test_output_locations_are_checked_before_any_work(nimbus_bin, scene, tmp_path):
    # An all-nodata raster fails only after every chip is read; a bad --preview must be reported first.
    with rasterio.open(scene["s2"]) as src:
        profile = src.profile
    empty = tmp_path / "empty.tif"
    with rasterio.open(empty, "w", **profile) as dst:
        dst.write(np.zeros((profile["count"], profile["height"], profile["width"]), dtype=profile["dtype"]))
    line = _one_error_line(_improve(nimbus_bin, empty, scene["product_mask"], tmp_path / "mask.tif", "--preview",
                                    tmp_path / "missing" / "p.png"))
    assert "--preview" in line


def test_report_is_published_with_the_mask(nimbus_bin, scene, tmp_path):
    _improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "mask.tif", "--report", tmp_path / "r.json",
             check=True)
    import json
    assert json.loads((tmp_path / "r.json").read_text())["width"] == 600
    assert _leftovers(tmp_path) == []


# --- B13: long output names ------------------------------------------------------------------------------------


def test_long_output_names_are_written(nimbus_bin, scene, tmp_path):
    out = tmp_path / ("m" * 246 + ".tif")  # 250 bytes: the old hidden name + GDAL's .ovr.tmp exceeded 255
    _improve(nimbus_bin, scene["s2"], scene["product_mask"], out, check=True)
    assert out.exists() and _leftovers(tmp_path) == []


def test_too_long_output_name_is_refused_up_front(nimbus_bin, scene, tmp_path):
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / ("m" * 300 + ".tif")))
    assert "304 bytes" in line and "255" in line


# --- B14: signals ----------------------------------------------------------------------------------------------


def _wait_for_chips(proc):
    while True:
        line = proc.stderr.readline()
        if "chips" in line or not line:
            return


@pytest.mark.parametrize("sig,code", [(signal.SIGHUP, 129)])
def test_sighup_mid_run_removes_partial_outputs(sig, code, nimbus_bin, test_models, make_scene, tmp_path):
    scene = make_scene(2200, 1600, seed=2)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([str(nimbus_bin), "improve-cloud-mask", "--s2-raster", str(scene["s2"]),
                             "--product-mask", str(scene["product_mask"]), "--out", str(out / "mask.tif"),
                             "--keep-probabilities", str(out), "--cloud-model",
                             str(test_models / "fpn_cloud_op11.onnx"), "--shadow-model",
                             str(test_models / "fpn_shadow_op11.onnx")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_chips(proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "partial outputs removed" in err
    assert list(out.iterdir()) == []


def test_closed_stderr_does_not_kill_the_run(nimbus_bin, scene, tmp_path):
    # `nimbus … 2>&1 | head -1`: the reader goes away; the run must still finish cleanly.
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.run([str(nimbus_bin), "improve-cloud-mask", "--s2-raster", str(scene["s2"]), "--product-mask",
                           str(scene["product_mask"]), "--out", str(tmp_path / "mask.tif")], stderr=write_end,
                          stdout=subprocess.DEVNULL, timeout=300)
    os.close(write_end)
    assert proc.returncode == 0
    assert (tmp_path / "mask.tif").exists() and _leftovers(tmp_path) == []


# --- B15: Ctrl-C in Python -------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["improve_cloud_mask", "run_workflow", "batch", "run_op"])
def test_ctrl_c_in_python_stops_the_call_and_removes_outputs(call, test_models, make_scene, tmp_path):
    pkg = python_package_dir()
    if os.environ.get("NIMBUS_PYTHONPATH") == "" or not (pkg / "nimbus" / "__init__.py").exists():
        pytest.skip("the nimbus Python package is not built (e.g. sanitizer build)")
    scene = make_scene(1600, 1200, seed=3)
    out = tmp_path / "out"
    out.mkdir()
    cloud, shadow = str(test_models / "fpn_cloud_op11.onnx"), str(test_models / "fpn_shadow_op11.onnx")
    s2, pm = str(scene["s2"]), str(scene["product_mask"])
    # Each call creates `started` itself before its first chip; the signal follows at once.
    started, invocation = {
        "improve_cloud_mask": (out / "probs", f"nimbus.improve_cloud_mask({s2!r}, {str(out / 'mask.tif')!r}, "
                                              f"product_mask={pm!r}, keep_probabilities={str(out / 'probs')!r}, "
                                              f"cloud_model={cloud!r}, shadow_model={shadow!r})"),
        "run_workflow": (out / "wf", f"nimbus.run_workflow(nimbus.SEED_WORKFLOW, {{'s2_raster': {s2!r}, "
                                     f"'product_mask': {pm!r}}}, out_dir={str(out / 'wf')!r}, "
                              f"params={{'cloud_model': {cloud!r}, 'shadow_model': {shadow!r}}})"),
        "batch": (out / "probs", f"nimbus.batch([({s2!r}, {pm!r})], {str(out)!r}, progress=False, "
                                 f"keep_probabilities={str(out / 'probs')!r}, cloud_model={cloud!r}, "
                                 f"shadow_model={shadow!r})"),
        "run_op": (out / "op", f"nimbus.run_op('compute_cloud_prob', {{'sentinel_raster': {s2!r}}}, "
                               f"{{'model_path': {cloud!r}}}, {str(out / 'op')!r})"),
    }[call]
    script = textwrap.dedent(f"""
        import os, signal, sys, threading, time
        sys.path.insert(0, {str(pkg)!r})
        import nimbus
        def interrupt_once_running():
            while not os.path.isdir({str(started)!r}):
                time.sleep(0.001)
            os.kill(os.getpid(), signal.SIGINT)
        threading.Thread(target=interrupt_once_running, daemon=True).start()
        try:
            {invocation}
            print("FINISHED")
        except KeyboardInterrupt:
            print("INTERRUPTED")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.stdout.strip() == "INTERRUPTED", proc.stdout + proc.stderr
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    # No mask, probability, partial file or work directory; the output directory of
    # run_workflow / run_op (named by the caller) stays, empty.
    assert left == {"run_workflow": ["wf"], "run_op": ["op"]}.get(call, [])


# --- B1: command-line parse errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("args,needle", [
    (["--cloud-thr", "abc"], "--cloud-thr"),
    (["--window", "99999999999"], "--window"),
    (["--no-such-flag"], "--no-such-flag"),
    (["--blend", "cubic"], "--blend"),
    (["DROP"], None),
])
def test_cli_parse_errors_follow_the_contract(args, needle, nimbus_bin, scene, tmp_path):
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "m.tif", *args))
    assert "--help" in line
    if needle:
        assert needle in line
    assert _created(tmp_path) == []


@pytest.mark.parametrize("args", [["improve-cloud-mask", "--s2-raster", "x.tif"], ["batch"], [],
                                  ["no-such-command"]])
def test_missing_arguments_follow_the_contract(args, nimbus_bin):
    _one_error_line(run_nimbus(nimbus_bin, *args))


def test_help_and_version_still_exit_0(nimbus_bin):
    assert run_nimbus(nimbus_bin, "--version").returncode == 0
    assert run_nimbus(nimbus_bin, "improve-cloud-mask", "--help").returncode == 0


def test_global_flags_after_list_subcommands(nimbus_bin):
    proc = run_nimbus(nimbus_bin, "workflows", "list", "-q")
    assert proc.returncode == 0 and "improve_cloud_mask" in proc.stdout


# --- B18: manifest encodings -----------------------------------------------------------------------------------


def test_manifest_with_a_utf8_bom_is_accepted(nimbus_bin, scene, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"\xef\xbb\xbf" + f"s2_raster,product_mask,id\n{scene['s2']},{scene['product_mask']},a\n"
                         .encode())
    proc = run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", tmp_path / "out", "-q")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "a.tif").exists()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_manifest_is_refused_clearly(encoding, nimbus_bin, scene, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(f"s2_raster,product_mask,id\n{scene['s2']},{scene['product_mask']},a\n".encode(encoding))
    line = _one_error_line(run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", tmp_path / "out", "-q"))
    assert "UTF-16" in line and "UTF-8" in line


# --- B24, and wrongly typed Python arguments -------------------------------------------------------------------


def test_bytes_paths_in_python(nimbus_py, scene, tmp_path):
    out = tmp_path / "mask.tif"
    nimbus_py.improve_cloud_mask(os.fsencode(scene["s2"]), os.fsencode(out),
                                 product_mask=os.fsencode(scene["product_mask"]), report=os.fsencode(tmp_path / "r.json"))
    assert out.exists() and (tmp_path / "r.json").exists()
    outcomes = nimbus_py.batch([{"s2_raster": os.fsencode(scene["s2"]),
                                 "product_mask": os.fsencode(scene["product_mask"]), "id": b"x"}],
                               os.fsencode(tmp_path / "b"), progress=False)
    assert outcomes[0]["status"] == "done" and (tmp_path / "b" / "x.tif").exists()


@pytest.mark.parametrize("kwargs,needle", [
    ({"cloud_thr": True}, "cloud_thr"),
    ({"window": 512.0}, "window"),
    ({"in_memory": "no"}, "in_memory"),
    ({"creation_options": "COMPRESS=ZSTD"}, "creation_options"),
    ({"preview": 3}, "preview"),
    ({"keep_probabilities": ""}, "keep_probabilities"),  # used to mean "not given"
    ({"report": b""}, "report"),
    ({"cloud_thr": np.bool_(True)}, "cloud_thr"),
])
def test_wrongly_typed_python_options_name_the_option(kwargs, needle, nimbus_py, scene, tmp_path):
    with pytest.raises(nimbus_py.InputError, match=needle):
        nimbus_py.improve_cloud_mask(scene["s2"], tmp_path / "m.tif", product_mask=scene["product_mask"], **kwargs)
    assert _created(tmp_path) == []


def test_python_paths_of_the_wrong_type_or_with_nul(nimbus_py, scene, tmp_path):
    with pytest.raises(nimbus_py.InputError, match="s2_raster"):
        nimbus_py.improve_cloud_mask(123, tmp_path / "m.tif", product_mask=scene["product_mask"])
    with pytest.raises(nimbus_py.InputError, match="NUL"):
        nimbus_py.improve_cloud_mask(scene["s2"], str(tmp_path / "m.tif") + "\0.png",
                                     product_mask=scene["product_mask"])
    assert _created(tmp_path) == []


# --- B26 ------------------------------------------------------------------------------------------------------


def test_workflows_list_with_a_missing_directory(nimbus_bin, tmp_path):
    line = _one_error_line(run_nimbus(nimbus_bin, "workflows", "list", "--workflows-dir", tmp_path / "nope"))
    assert "--workflows-dir" in line


# --- Found by probing: special files, '-', newlines, batch ids --------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "char-device", "symlink-to-stdout", "dash", "directory"])
def test_special_output_paths_are_refused(kind, nimbus_bin, scene, tmp_path):
    target = tmp_path / "out.tif"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "char-device":
        try:
            os.mknod(target, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a /dev/null of our own
        except PermissionError:
            pytest.skip("creating a device node needs root")
    elif kind == "symlink-to-stdout":
        target.symlink_to("/proc/self/fd/1")  # what /dev/stdout is
    elif kind == "dash":
        target = "-"
    else:
        target.mkdir()
    before = os.lstat(target).st_mode if kind != "dash" else None
    # In tmp_path, so that a regression writing a file named '-' leaves it there, not in the checkout.
    proc = subprocess.run([str(nimbus_bin), "improve-cloud-mask", "--s2-raster", str(scene["s2"]), "--product-mask",
                           str(scene["product_mask"]), "--out", str(target), "-q"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    line = _one_error_line(proc)
    assert "--out" in line
    if kind != "dash":
        assert os.lstat(target).st_mode == before  # still the special file, not replaced by a mask
    assert _leftovers(tmp_path) == [] and not (tmp_path / "-").exists()


def test_newline_in_a_path_keeps_the_error_on_one_line(nimbus_bin, scene, tmp_path):
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "a\nb" / "m.tif"))
    assert "a\\nb" in line


@pytest.mark.parametrize("name", ["mask.tif\n", "mask\t.tif", "mask.tif\r"])
def test_control_characters_in_output_names_are_refused(name, nimbus_bin, scene, tmp_path):
    # "mask.tif\n" (an unstripped line of a file) used to become a file with a newline in its name.
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / name))
    assert "control character" in line
    assert _created(tmp_path) == []


@pytest.mark.parametrize("bad_id,needle", [("a\tb", "control"), ("x" * 250, "bytes")])
def test_batch_ids_that_cannot_name_files(bad_id, needle, nimbus_bin, scene, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f's2_raster,product_mask,id\n{scene["s2"]},{scene["product_mask"]},"{bad_id}"\n')
    line = _one_error_line(run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", tmp_path / "out", "-q"))
    assert needle in line
    assert not (tmp_path / "out").exists()


def test_python_run_op_and_write_raster_never_replace_inputs_or_special_files(nimbus_py, scene, tmp_path):
    # run_op writes <output_dir>/<port>.tif: here that is its own input.
    work = tmp_path / "op"
    work.mkdir()
    s2 = work / "cloud_probability.tif"
    s2.write_bytes(Path(scene["s2"]).read_bytes())
    before = _sha(s2)
    with pytest.raises(nimbus_py.InputError, match="input"):
        nimbus_py.run_op("compute_cloud_prob", {"sentinel_raster": str(s2)}, {"model_path": "embedded:nimbus_cloud_v1"},
                         str(work))
    assert _sha(s2) == before and sorted(p.name for p in work.iterdir()) == ["cloud_probability.tif"]
    fifo = tmp_path / "fifo.tif"
    os.mkfifo(fifo)
    with pytest.raises(nimbus_py.InputError, match="FIFO"):
        nimbus_py.write_raster(str(fifo), np.zeros((4, 4), np.uint8))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("row,expected", [
    ('{s2},{pm},my "best" scene', 'my "best" scene'),   # quotes inside an unquoted field are literal
    ('{s2},{pm}, "quoted, with comma" ', "quoted, with comma"),
])
def test_manifest_quotes_inside_fields(row, expected, nimbus_py, scene, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("s2_raster,product_mask,id\n" + row.format(s2=scene["s2"], pm=scene["product_mask"]) + "\n")
    assert nimbus_py.read_batch_manifest(str(manifest))[0]["id"] == expected


def test_manifest_text_after_a_closing_quote_is_refused(nimbus_bin, scene, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f's2_raster,product_mask,id\n{scene["s2"]},{scene["product_mask"]},"a"b\n')
    line = _one_error_line(run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", tmp_path / "out", "-q"))
    assert "line 2" in line and "closing quote" in line


@pytest.mark.parametrize("threads", ["-3", "100000"])
def test_thread_count_out_of_range_is_refused(threads, nimbus_bin, scene, tmp_path):
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "m.tif", "--threads",
                                    threads))
    assert "--threads" in line
    assert _created(tmp_path) == []



@pytest.mark.parametrize("option", ["--keep-probabilities", "--preview", "--report", "--cloud-model"])
def test_empty_option_values_are_refused(option, nimbus_bin, scene, tmp_path):
    # `--preview "$UNSET"` used to mean "no preview" without a word.
    line = _one_error_line(_improve(nimbus_bin, scene["s2"], scene["product_mask"], tmp_path / "m.tif", option, ""))
    assert option in line and "empty" in line
    assert _created(tmp_path) == []


def test_run_sink_on_a_directory_is_refused_before_any_task(nimbus_bin, scene, tmp_path):
    out = tmp_path / "out"
    (out / "mask.tif").mkdir(parents=True)
    line = _one_error_line(run_nimbus(nimbus_bin, "run", "data_ingestion/sentinel2/improve_cloud_mask", "--input",
                                      f"s2_raster={scene['s2']}", "--input", f"product_mask={scene['product_mask']}",
                                      "--out-dir", out, "--param", "cloud_model=nosuch.onnx", "--no-cache", "-q"))
    assert "sink mask" in line and "is a directory" in line  # reported before the missing model is found


def test_manifest_with_a_nul_byte_is_refused(nimbus_bin, scene, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(f"s2_raster,product_mask,id\n{scene['s2']}\0.bak,{scene['product_mask']},a\n".encode())
    line = _one_error_line(run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", tmp_path / "out", "-q"))
    assert "NUL" in line and "line 2" in line


def test_python_batch_of_one_path_is_one_scene(nimbus_py, scene, tmp_path):
    # A str used to be iterated character by character; a .CSV manifest was not recognised.
    outcomes = nimbus_py.batch(str(scene["s2"]), tmp_path / "out", progress=False, keep_probabilities=None)
    assert len(outcomes) == 1 and outcomes[0]["id"] == "s2"
    # Without a product mask the raster (not a SAFE product) fails cleanly, as one scene.
    assert outcomes[0]["status"] == "failed" and "product mask" in outcomes[0]["error"]
    manifest = tmp_path / "M.CSV"
    manifest.write_text(f"s2_raster,product_mask,id\n{scene['s2']},{scene['product_mask']},a\n")
    assert [o["status"] for o in nimbus_py.batch(str(manifest), tmp_path / "out", progress=False)] == ["done"]


def test_report_with_a_latin1_model_name(nimbus_bin, scene, default_models, tmp_path):
    # File names are bytes; the report's JSON must not fail (exit 1 after all the work) on them.
    model = os.path.join(os.fsencode(tmp_path), b"mod\xe8le.onnx")
    with open(model, "wb") as f:
        f.write(default_models["cloud"].read_bytes())
    proc = subprocess.run([os.fsencode(str(nimbus_bin)), b"improve-cloud-mask", b"--s2-raster",
                           os.fsencode(scene["s2"]), b"--product-mask", os.fsencode(scene["product_mask"]), b"--out",
                           os.fsencode(tmp_path / "m.tif"), b"--cloud-model", model, b"--report",
                           os.fsencode(tmp_path / "r.json"), b"-q"], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    import json
    assert "mod" in json.loads((tmp_path / "r.json").read_text())["cloud_model"]


def test_python_path_like_arguments_everywhere(nimbus_py, scene, tmp_path):
    # pathlib.Path used to be refused ("incompatible function arguments") by these calls.
    nimbus_py.write_raster(tmp_path / "a.tif", np.ones((3, 4), np.uint8))
    assert nimbus_py.read_raster(tmp_path / "a.tif").array.shape == (1, 3, 4)
    out = nimbus_py.run_op("compute_cloud_prob", {"sentinel_raster": Path(scene["s2"])},
                           {"model_path": "embedded:nimbus_cloud_v1"}, tmp_path / "op")
    assert Path(out["cloud_probability"]).exists()
    with pytest.raises(nimbus_py.InputError, match="input sentinel_raster"):
        nimbus_py.run_op("compute_cloud_prob", {"sentinel_raster": 3}, {}, tmp_path / "op")


def test_batch_output_replaced_by_a_fifo_does_not_hang_the_resume(nimbus_bin, scene, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"s2_raster,product_mask,id\n{scene['s2']},{scene['product_mask']},a\n")
    out = tmp_path / "out"
    assert run_nimbus(nimbus_bin, "batch", manifest, "--out-dir", out, "-q").returncode == 0
    (out / "a.tif").unlink()
    os.mkfifo(out / "a.tif")  # the resume used to block forever checksumming it
    proc = subprocess.run([str(nimbus_bin), "batch", str(manifest), "--out-dir", str(out), "-q"],
                          capture_output=True, text=True, timeout=120)
    line = _one_error_line(proc)
    assert "scene a" in line and "FIFO" in line
    assert stat.S_ISFIFO(os.lstat(out / "a.tif").st_mode)


def test_write_failures_name_the_output_not_its_hidden_temporary(nimbus_bin, make_scene, tmp_path):
    import resource
    scene = make_scene(1100, 1000, seed=7)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))  # the mask cannot be written
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    proc = subprocess.run([str(nimbus_bin), "improve-cloud-mask", "--s2-raster", str(scene["s2"]), "--product-mask",
                           str(scene["product_mask"]), "--out", str(tmp_path / "mask.tif"), "-q"],
                          capture_output=True, text=True, timeout=300, preexec_fn=limit)
    line = _one_error_line(proc)
    assert str(tmp_path / "mask.tif") in line and "nimbus-partial" not in line
    assert _created(tmp_path) == []


def test_numpy_scalars_are_accepted_as_options(nimbus_py, scene, tmp_path):
    nimbus_py.improve_cloud_mask(scene["s2"], tmp_path / "a.tif", product_mask=scene["product_mask"])
    nimbus_py.improve_cloud_mask(scene["s2"], tmp_path / "b.tif", product_mask=scene["product_mask"],
                                 window=np.int64(512), cloud_thr=np.float32(0.3), closing_size=np.int32(5),
                                 in_memory=np.bool_(True))
    assert _sha(tmp_path / "a.tif") != "" and (tmp_path / "b.tif").exists()
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert (a.read() == b.read()).all()
