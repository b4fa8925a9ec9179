"""One declaration per parameter: the CLI (options, help, error spelling), the Python
signature, `ops describe` and the provenance tags all come from the library's
declaration of improve-cloud-mask, so they agree with it."""
import inspect
import json
import re
import subprocess

import pytest
import rasterio

PER_SCENE = {"s2_raster", "product_mask", "out", "keep_probabilities", "preview", "report", "stac_out"}


@pytest.fixture(scope="module")
def declared(nimbus_bin):
    proc = subprocess.run([str(nimbus_bin), "ops", "describe", "improve-cloud-mask", "--json"], capture_output=True,
                          text=True, check=True)
    params = json.loads(proc.stdout)
    assert len(params) >= 20
    return params


def _help_options(nimbus_bin, command):
    text = subprocess.run([str(nimbus_bin), command, "--help"], capture_output=True, text=True, check=True).stdout
    return text, set(re.findall(r"^\s+(?:-\w,)?(--[a-z0-9-]+)", text, re.MULTILINE)) - {"--help"}


def test_python_sees_the_same_declaration(nimbus_py, declared):
    assert nimbus_py.operation_parameters("improve-cloud-mask") == declared


def test_cli_help_lists_exactly_the_declared_options(nimbus_bin, declared):
    text, options = _help_options(nimbus_bin, "improve-cloud-mask")
    assert options == {p["cli_flag"] for p in declared}
    lines = text.splitlines()
    for p in declared:
        at = next(i for i, l in enumerate(lines) if re.match(rf"\s+{re.escape(p['cli_flag'])}\b", l))
        # The option's entry: its line and the description's wrapped continuation lines.
        end = next((j for j in range(at + 1, len(lines)) if not re.match(r"\s{20,}\S", lines[j])), len(lines))
        line = " ".join(l.strip() for l in lines[at:end])
        if p["required"]:
            assert "REQUIRED" in line, line
        if p["type"] in ("int", "float", "string") and p["default"] is not None:
            shown = str(p["default"]) if p["type"] != "float" else f"{p['default']:g}"
            assert f"={shown}" in line, (p["name"], line)
        if "choices" in p:
            assert "|".join(p["choices"]) in line


def test_batch_takes_every_declared_option_not_given_per_scene(nimbus_bin, declared):
    _, options = _help_options(nimbus_bin, "batch")
    # --stac-items: the per-scene form of --stac-out (an item per mask, named by the scene).
    assert options - {"--out-dir", "--stac-items"} == {p["cli_flag"] for p in declared if p["name"] not in PER_SCENE}


def test_python_signature_is_the_declaration(nimbus_py, declared):
    signature = inspect.signature(nimbus_py.improve_cloud_mask)
    assert list(signature.parameters)[:3] == ["s2_raster", "out", "product_mask"]
    assert set(signature.parameters) == {p["name"] for p in declared}
    for p in declared:
        parameter = signature.parameters[p["name"]]
        if p["required"]:
            assert parameter.default is inspect.Parameter.empty
        else:
            assert parameter.default == p["default"], p["name"]
        # The docstring wraps the help to its width.
        assert " ".join(p["help"].split()) in " ".join(nimbus_py.improve_cloud_mask.__doc__.split())


def test_ops_describe_lists_every_parameter(nimbus_bin, declared):
    text = subprocess.run([str(nimbus_bin), "ops", "describe", "improve-cloud-mask"], capture_output=True, text=True,
                          check=True).stdout
    for p in declared:
        assert re.search(rf"^\s+{p['name']}\s+{re.escape(p['cli_flag'])}\s", text, re.MULTILINE), p["name"]


def test_op_parameters_come_from_the_same_declarations(nimbus_bin, declared):
    # improve-cloud-mask's thresholds are the merge op's, renamed as the workflow names them.
    merge = json.loads(subprocess.run([str(nimbus_bin), "ops", "describe", "merge_cloud_masks_simple", "--json"],
                                      capture_output=True, text=True, check=True).stdout)
    by_name = {p["name"]: p for p in declared}
    for op_name, name in [("cloud_prob_threshold", "cloud_thr"), ("shadow_prob_threshold", "shadow_thr"),
                          ("closing_size", "closing_size"), ("min_area", "min_area")]:
        op_param = next(p for p in merge if p["name"] == op_name)
        mine = dict(by_name[name], name=op_name, cli_flag=op_param["cli_flag"])
        assert mine == op_param


# Non-default values for every parameter that carries a tag, as CLI text and as the tag reads back.
NON_DEFAULT = {"cloud_thr": ("0.35", "0.35"), "shadow_thr": ("0.25", "0.25"), "closing_size": ("2", "2"),
               "min_area": ("3", "3"), "window": ("96", "96"), "overlap": ("0.5", "0.5"),
               "downsampling": ("1", "1"), "blend": ("linear", "linear"), "nodata_value": ("255", "255")}


def test_provenance_tags_record_every_tagged_parameter(nimbus_bin, declared, make_scene, tmp_path):
    scene = make_scene(150, 130, seed=3)
    tagged = [p for p in declared if "tag" in p]
    assert {p["name"] for p in tagged} == set(NON_DEFAULT), "give the new tagged parameter a value here"
    args = [str(nimbus_bin), "improve-cloud-mask", "--s2-raster", str(scene["s2"]), "--product-mask",
            str(scene["product_mask"]), "--out", str(tmp_path / "m.tif"), "-q"]
    for p in tagged:
        args += [p["cli_flag"], NON_DEFAULT[p["name"]][0]]
    subprocess.run(args, check=True, capture_output=True)
    with rasterio.open(tmp_path / "m.tif") as ds:
        tags = ds.tags()
    for p in tagged:
        assert tags[p["tag"]] == NON_DEFAULT[p["name"]][1], p["name"]
    # Each tag belongs to one parameter.
    assert len({p["tag"] for p in tagged}) == len(tagged)


@pytest.mark.parametrize("flag,value,python_name", [("--closing-size", "20000", "closing_size"),
                                                    ("--engine", "gpu", "engine"),
                                                    ("--window", "32", "window")])
def test_each_front_end_names_the_parameter_its_own_way(nimbus_bin, nimbus_py, make_scene, tmp_path, flag, value,
                                                        python_name):
    scene = make_scene(100, 90)
    proc = subprocess.run([str(nimbus_bin), "improve-cloud-mask", "--s2-raster", str(scene["s2"]), "--product-mask",
                           str(scene["product_mask"]), "--out", str(tmp_path / "m.tif"), flag, value],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith(f"nimbus: error: {flag} = "), proc.stderr
    typed = {"closing_size": 20000, "engine": "gpu", "window": 32}[python_name]
    with pytest.raises(nimbus_py.InputError) as error:
        nimbus_py.improve_cloud_mask(scene["s2"], tmp_path / "m.tif", product_mask=scene["product_mask"],
                                     **{python_name: typed})
    assert str(error.value).startswith(f"{python_name} = ") and "--" not in str(error.value)
    assert not (tmp_path / "m.tif").exists()
