"""The workflow engine: the seed YAML end to end, nesting, caching, describe,
and one test per validation error."""
import json
import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import ROOT, run_nimbus

SEED_MD = ROOT / "docs" / "seed_improve_cloud_mask.md"
SEED_YAML = ROOT / "workflows" / "data_ingestion" / "sentinel2" / "improve_cloud_mask.yaml"
EMBEDDED = ["--param", "cloud_model=embedded:nimbus_cloud_v2", "--param", "shadow_model=embedded:nimbus_shadow_v1"]


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.fixture
def scene(make_scene):
    return make_scene(900, 700, seed=3, nodata_wedge=True)


@pytest.fixture
def workflows_dir(tmp_path):
    """A workflows tree with the shipped workflows, for test workflows to nest."""
    d = tmp_path / "workflows"
    shutil.copytree(ROOT / "workflows", d)
    return d


def _write_workflow(workflows_dir, name, text):
    path = workflows_dir / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def _run(nimbus_bin, workflow, scene, out_dir, *extra, cache=None):
    args = ["run", workflow, "--input", f"s2_raster={scene['s2']}", "--input",
            f"product_mask={scene['product_mask']}", "--out-dir", out_dir]
    args += ["--cache-dir", cache] if cache else ["--no-cache"]
    return run_nimbus(nimbus_bin, *args, *extra)


def _task_states(stderr):
    return dict(re.findall(r"task (\S+) \(\S+\): (cached|done)", stderr))


def test_seed_yaml_is_shipped_unchanged():
    block = re.search(r"```yaml\n(.*?)```", SEED_MD.read_text(), re.S).group(1)
    assert SEED_YAML.read_text() == block


def test_seed_workflow_equals_direct_cli(nimbus_bin, scene, tmp_path):
    proc = _run(nimbus_bin, SEED_YAML, scene, tmp_path / "wf", *EMBEDDED, "--param", "cloud_thr=0.4")
    assert proc.returncode == 0, proc.stderr
    direct = tmp_path / "direct.tif"
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask", scene["product_mask"],
               "--out", direct, "--cloud-thr", "0.4", "-q", check=True)
    np.testing.assert_array_equal(_read(tmp_path / "wf" / "mask.tif"), _read(direct))
    assert sorted(p.name for p in (tmp_path / "wf").iterdir()) == ["mask.tif"]


def test_seed_workflow_with_test_models_by_name(nimbus_bin, scene, test_models, tmp_path):
    models = ["--param", f"cloud_model={test_models / 'fpn_cloud_op13.onnx'}", "--param",
              f"shadow_model={test_models / 'fpn_shadow_op11.onnx'}", "--param", "in_memory=true"]
    proc = _run(nimbus_bin, "data_ingestion/sentinel2/improve_cloud_mask", scene, tmp_path / "wf", *models)
    assert proc.returncode == 0, proc.stderr
    direct = tmp_path / "direct.tif"
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask", scene["product_mask"],
               "--out", direct, "--cloud-model", test_models / "fpn_cloud_op13.onnx", "--shadow-model",
               test_models / "fpn_shadow_op11.onnx", "-q", check=True)
    np.testing.assert_array_equal(_read(tmp_path / "wf" / "mask.tif"), _read(direct))


def test_cache_hits_and_partial_recompute(nimbus_bin, scene, tmp_path):
    cache = tmp_path / "cache"
    first = _run(nimbus_bin, SEED_YAML, scene, tmp_path / "a", *EMBEDDED, cache=cache)
    assert first.returncode == 0, first.stderr
    assert _task_states(first.stderr) == {"cloud": "done", "shadow": "done", "merge": "done"}

    again = _run(nimbus_bin, SEED_YAML, scene, tmp_path / "b", *EMBEDDED, cache=cache)
    assert _task_states(again.stderr) == {"cloud": "cached", "shadow": "cached", "merge": "cached"}
    np.testing.assert_array_equal(_read(tmp_path / "a" / "mask.tif"), _read(tmp_path / "b" / "mask.tif"))

    threshold = _run(nimbus_bin, SEED_YAML, scene, tmp_path / "c", *EMBEDDED, "--param", "cloud_thr=0.9",
                     cache=cache)
    assert _task_states(threshold.stderr) == {"cloud": "cached", "shadow": "cached", "merge": "done"}
    assert not np.array_equal(_read(tmp_path / "a" / "mask.tif"), _read(tmp_path / "c" / "mask.tif"))

    # in_memory is not part of the key (as in FarmVibes): still cached.
    mem = _run(nimbus_bin, SEED_YAML, scene, tmp_path / "d", *EMBEDDED, "--param", "in_memory=true", cache=cache)
    assert _task_states(mem.stderr) == {"cloud": "cached", "shadow": "cached", "merge": "cached"}

    # A changed input file is a new input.
    scene["product_mask"].touch()
    touched = _run(nimbus_bin, SEED_YAML, scene, tmp_path / "e", *EMBEDDED, cache=cache)
    assert _task_states(touched.stderr) == {"cloud": "cached", "shadow": "cached", "merge": "done"}
    assert not [p for p in cache.rglob("*") if ".partial-" in p.name]


def test_failed_run_leaves_no_sink_and_no_partial_cache(nimbus_bin, scene, tmp_path):
    cache = tmp_path / "cache"
    proc = _run(nimbus_bin, SEED_YAML, scene, tmp_path / "out", "--param", "cloud_model=embedded:nimbus_cloud_v2",
                "--param", "shadow_model=/nonexistent/shadow.onnx", cache=cache)
    assert proc.returncode == 2
    assert "shadow.onnx" in proc.stderr
    assert not (tmp_path / "out" / "mask.tif").exists()
    assert not [p for p in cache.rglob("*") if ".partial-" in p.name]


def test_nested_workflows(nimbus_bin, scene, workflows_dir, tmp_path):
    # An improve_cloud_mask_ensemble-style nesting: a wrapper around a workflow
    # computing cloud probability, feeding an op, and the seed workflow nested whole.
    _write_workflow(workflows_dir, "test/cloud_only", """
        name: cloud_only
        sources:
          raster: [prob.sentinel_raster]
        sinks:
          probability: prob.cloud_probability
        parameters:
          model: null
        tasks:
          prob:
            op: compute_cloud_prob
            parameters:
              model_path: '@from(model)'
        """)
    wrapper = _write_workflow(workflows_dir, "test/nested_improve", """
        name: nested_improve
        sources:
          s2_raster: [cloud.raster, shadow.sentinel_raster, full.s2_raster]
          product_mask: [merge.product_mask, full.product_mask]
        sinks:
          mask: merge.merged_cloud_mask
          seed_mask: full.mask
        parameters:
          thr: 0.4
        tasks:
          cloud:
            workflow: test/cloud_only
            parameters:
              model: embedded:nimbus_cloud_v2
          shadow:
            op: compute_shadow_prob
            parameters:
              model_path: embedded:nimbus_shadow_v1
          merge:
            op: merge_cloud_masks_simple
            op_dir: merge_cloud_masks
            parameters:
              cloud_prob_threshold: '@from(thr)'
          full:
            workflow: data_ingestion/sentinel2/improve_cloud_mask
            parameters:
              cloud_thr: '@from(thr)'
              cloud_model: embedded:nimbus_cloud_v2
              shadow_model: embedded:nimbus_shadow_v1
        edges:
        - origin: cloud.probability
          destination: [merge.cloud_probability]
        - origin: shadow.shadow_probability
          destination: [merge.shadow_probability]
        """)
    proc = _run(nimbus_bin, wrapper, scene, tmp_path / "out", cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    states = _task_states(proc.stderr)
    assert set(states) == {"cloud.prob", "shadow", "merge", "full.cloud", "full.shadow", "full.merge"}
    direct = tmp_path / "direct.tif"
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask", scene["product_mask"],
               "--out", direct, "--cloud-thr", "0.4", "-q", check=True)
    np.testing.assert_array_equal(_read(tmp_path / "out" / "mask.tif"), _read(direct))
    np.testing.assert_array_equal(_read(tmp_path / "out" / "seed_mask.tif"), _read(direct))
    # The same op calls inside and outside the nesting share cache entries.
    assert sum(1 for s in states.values() if s == "cached") >= 1


def test_parallel_and_serial_agree(nimbus_bin, scene, tmp_path):
    outs = []
    for n in ("1", "2"):
        proc = _run(nimbus_bin, SEED_YAML, scene, tmp_path / n, *EMBEDDED, "--parallel-tasks", n)
        assert proc.returncode == 0, proc.stderr
        outs.append(_read(tmp_path / n / "mask.tif"))
    np.testing.assert_array_equal(*outs)


def test_describe_prints_the_seed_mermaid_graph(nimbus_bin):
    proc = run_nimbus(nimbus_bin, "workflows", "describe", "data_ingestion/sentinel2/improve_cloud_mask", check=True)
    seed_graph = re.search(r"```\{mermaid\}\n(.*?)```", SEED_MD.read_text(), re.S).group(1)
    ours = re.search(r"```mermaid\n(.*?)```", proc.stdout, re.S).group(1)
    assert ours.strip() == seed_graph.strip()
    assert "Improves cloud masks by merging the product cloud mask" in proc.stdout
    assert "cloud_thr      (0.3)" in proc.stdout


def test_workflows_list_and_ops(nimbus_bin):
    assert "data_ingestion/sentinel2/improve_cloud_mask" in run_nimbus(nimbus_bin, "workflows", "list").stdout
    ops = run_nimbus(nimbus_bin, "ops", "list", check=True).stdout
    for op in ("compute_cloud_prob", "compute_shadow_prob", "merge_cloud_masks_simple"):
        assert op in ops
    desc = run_nimbus(nimbus_bin, "ops", "describe", "merge_cloud_masks_simple", check=True).stdout
    assert re.search(r"closing_size\s+int\s+default 5", desc)


BASE = """
    name: broken
    sources:
      s2_raster: [cloud.sentinel_raster, shadow.sentinel_raster]
      product_mask: [merge.product_mask]
    sinks:
      mask: merge.merged_cloud_mask
    parameters:
      thr: 0.3
    tasks:
      cloud:
        op: compute_cloud_prob
        parameters:
          model_path: embedded:nimbus_cloud_v2
      shadow:
        op: compute_shadow_prob
        parameters:
          model_path: embedded:nimbus_shadow_v1
      merge:
        op: merge_cloud_masks_simple
        parameters:
          cloud_prob_threshold: '@from(thr)'
    edges:
    - origin: cloud.cloud_probability
      destination: [merge.cloud_probability]
    - origin: shadow.shadow_probability
      destination: [merge.shadow_probability]
    """

# (id, edit of BASE, line the error must point at or None, words the message must contain)
VALIDATION_CASES = [
    ("unknown-op", lambda t: t.replace("op: compute_shadow_prob", "op: compute_shadow_probz"), 15,
     ["tasks.shadow.op", "unknown op 'compute_shadow_probz'"]),
    ("unknown-input-port", lambda t: t.replace("[merge.cloud_probability]", "[merge.cloud_prob]"), 25,
     ["edges[0].destination", "cloud_prob could not be found as input of op merge_cloud_masks_simple"]),
    ("unknown-output-port", lambda t: t.replace("origin: shadow.shadow_probability", "origin: shadow.shadow_prob"),
     26, ["edges[1].origin", "shadow_prob could not be found as output"]),
    ("edge-to-missing-task", lambda t: t.replace("[merge.shadow_probability]", "[merger.shadow_probability]"), 27,
     ["edges[1].destination", "task 'merger', which does not exist"]),
    ("cycle", lambda t: t + "- origin: merge.merged_cloud_mask\n  destination: [cloud.sentinel_raster]\n", None,
     ["already attached"]),
    ("source-not-connected", lambda t: t.replace("  product_mask: [merge.product_mask]\n", ""), 18,
     ["merge.product_mask' missing inputs"]),
    ("parameter-wrong-type", lambda t: t.replace("model_path: embedded:nimbus_cloud_v2", "window_size: big"), 14,
     ["tasks.cloud.parameters.window_size", "must be of type int", '"big"']),
    ("unknown-parameter", lambda t: t.replace("model_path: embedded:nimbus_cloud_v2", "modelpath: x.onnx"), 14,
     ["tasks.cloud.parameters.modelpath", "unknown parameter 'modelpath' of op compute_cloud_prob"]),
    ("undefined-reference", lambda t: t.replace("'@from(thr)'", "'@from(threshold)'"), 22,
     ["undefined workflow parameter 'threshold'"]),
    ("unmapped-parameter", lambda t: t.replace("  thr: 0.3\n", "  thr: 0.3\n  unused: 1\n"), 10,
     ["parameters.unused", "not mapped to any task parameters"]),
    ("unknown-top-level-field", lambda t: "colour: blue\n" + t, 1, ["unknown field 'colour'"]),
    ("missing-tasks", lambda t: t.split("tasks:")[0], None, ["missing required field 'tasks'"]),
    ("malformed-yaml", lambda t: t.replace("sinks:\n", "sinks: [\n"), None, ["malformed YAML"]),
    ("task-without-op", lambda t: t.replace("op: compute_cloud_prob", "opx: compute_cloud_prob"), 12,
     ["contains unknown field 'opx'"]),
    ("wrong-op-dir", lambda t: t.replace("op: merge_cloud_masks_simple",
                                         "op: merge_cloud_masks_simple\n    op_dir: elsewhere"), 19,
     ["op_dir", "merge_cloud_masks"]),
    ("incompatible-edge-types", lambda t: t.replace("[merge.cloud_probability]", "[merge.product_mask]").replace(
        "  product_mask: [merge.product_mask]\n", "  product_mask: [merge.cloud_probability]\n"), None,
     ["Incompatible types"]),
]


@pytest.mark.parametrize("case", VALIDATION_CASES, ids=[c[0] for c in VALIDATION_CASES])
def test_validation_errors(case, nimbus_bin, scene, workflows_dir, tmp_path):
    name, edit, line, words = case
    path = _write_workflow(workflows_dir, "broken", edit(textwrap.dedent(BASE)))
    proc = _run(nimbus_bin, path, scene, tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("nimbus: error: "), proc.stderr
    assert str(path) in lines[0]
    if line is not None:
        assert f"{path}:{line}:" in lines[0], lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    # Validation happens before any task runs.
    assert not _task_states(proc.stderr)
    assert not (tmp_path / "out" / "mask.tif").exists()


def test_real_cycle_is_reported(nimbus_bin, scene, workflows_dir, tmp_path):
    # merge feeds itself through an edge while its source mapping is removed.
    text = textwrap.dedent(BASE).replace("  product_mask: [merge.product_mask]\n", "  product_mask: [shadow.x]\n")
    text = text.replace("  product_mask: [shadow.x]\n", "")
    text += "- origin: merge.merged_cloud_mask\n  destination: [merge.product_mask]\n"
    path = _write_workflow(workflows_dir, "cyclic", text)
    proc = _run(nimbus_bin, path, scene, tmp_path / "out")
    assert proc.returncode == 2
    assert "cycle" in proc.stderr and "merge" in proc.stderr


def test_recursive_workflow_is_rejected(nimbus_bin, scene, workflows_dir, tmp_path):
    path = _write_workflow(workflows_dir, "test/self", """
        name: self
        sources:
          s2_raster: [inner.s2_raster]
          product_mask: [inner.product_mask]
        sinks:
          mask: inner.mask
        tasks:
          inner:
            workflow: test/self
        """)
    proc = _run(nimbus_bin, path, scene, tmp_path / "out")
    assert proc.returncode == 2
    assert "Recursive definition of workflow self" in proc.stderr


@pytest.mark.parametrize("extra,words", [
    (["--param", "cloud_threshold=0.4"], ["Tried to overwrite non-existent parameter cloud_threshold"]),
    (["--input", "s3_raster=x.tif"], ["no source 's3_raster'"]),
    (["--param", "cloud_thr=high"], ["cloud_prob_threshold", "must be of type float"]),
])
def test_run_time_argument_errors(extra, words, nimbus_bin, scene, tmp_path):
    proc = _run(nimbus_bin, SEED_YAML, scene, tmp_path / "out", *EMBEDDED, *extra)
    assert proc.returncode == 2, proc.stderr
    for w in words:
        assert w in proc.stderr


def test_missing_input_is_reported(nimbus_bin, scene, tmp_path):
    proc = run_nimbus(nimbus_bin, "run", SEED_YAML, "--input", f"s2_raster={scene['s2']}", "--out-dir",
                      tmp_path / "out", "--no-cache", *EMBEDDED)
    assert proc.returncode == 2
    assert "needs --input product_mask=FILE" in proc.stderr


def test_run_without_model_parameters_uses_the_embedded_models(nimbus_bin, make_scene, default_models, tmp_path):
    # A fresh machine: no FarmVibes files (/opt/terravibes), an empty cache. The run uses
    # Nimbus' embedded models and says so, in its log and its --report.
    assert not Path("/opt/terravibes").exists()
    scene = make_scene(600, 520, seed=8)
    cache = tmp_path / "cache"
    report = tmp_path / "run.json"
    proc = _run(nimbus_bin, SEED_YAML, scene, tmp_path / "out", "--report", report, cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert "task cloud: model embedded:nimbus_cloud_v2 (Nimbus' embedded model" in proc.stderr
    assert "task shadow: model embedded:nimbus_shadow_v1 (Nimbus' embedded model" in proc.stderr
    r = json.loads(report.read_text())
    assert r["models"] == {"cloud": "embedded:nimbus_cloud_v2", "shadow": "embedded:nimbus_shadow_v1"}
    assert r["outputs"] == {"mask": str(tmp_path / "out" / "mask.tif")}
    assert r["inputs"] == {"s2_raster": str(scene["s2"]), "product_mask": str(scene["product_mask"])}
    assert r["nimbus_version"] and set(r["versions"]) == {"nimbus", "gdal", "opencv", "onednn"}
    direct = tmp_path / "direct.tif"
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask",
               scene["product_mask"], "--out", direct, "-q", check=True)
    assert np.array_equal(_read(tmp_path / "out" / "mask.tif"), _read(direct))  # the same defaults everywhere

    # FarmVibes' files, given explicitly, are other models to the cache even with the same bytes.
    farmvibes = tmp_path / "terravibes"
    farmvibes.mkdir()
    shutil.copy(default_models["cloud"], farmvibes / "cloud_model2_cpu.onnx")
    shutil.copy(default_models["shadow"], farmvibes / "shadow.onnx")
    explicit = _run(nimbus_bin, SEED_YAML, scene, tmp_path / "out2", "--report", tmp_path / "run2.json",
                    "--param", f"cloud_model={farmvibes / 'cloud_model2_cpu.onnx'}",
                    "--param", f"shadow_model={farmvibes / 'shadow.onnx'}", cache=cache)
    assert explicit.returncode == 0, explicit.stderr
    r2 = json.loads((tmp_path / "run2.json").read_text())
    assert r2["models"] == {"cloud": str(farmvibes / "cloud_model2_cpu.onnx"), "shadow": str(farmvibes / "shadow.onnx")}
    keys = {t["task"]: t for t in r["tasks"]}
    keys2 = {t["task"]: t for t in r2["tasks"]}
    for task in ("cloud", "shadow"):
        assert keys2[task]["cache_key"] != keys[task]["cache_key"] and not keys2[task]["cache_hit"]
    assert "Nimbus' embedded model" not in explicit.stderr
    # The embedded default is served from the cache the second time.
    again = _run(nimbus_bin, SEED_YAML, scene, tmp_path / "out3", cache=cache)
    assert _task_states(again.stderr) == {"cloud": "cached", "shadow": "cached", "merge": "cached"}
