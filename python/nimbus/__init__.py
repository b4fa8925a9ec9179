"""Nimbus: trustworthy Sentinel-2 cloud masks.

Files in, files out::

    import nimbus
    report = nimbus.improve_cloud_mask("S2.tif", "mask.tif", product_mask="PM.tif",
                                       cloud_model="cloud_model2_cpu.onnx", shadow_model="shadow.onnx")

Arrays in, arrays out (bands x height x width digital numbers, GDAL geotransform, CRS)::

    mask = nimbus.improve_cloud_mask_array(s2, product_mask, geotransform=gt, crs="EPSG:32631")

Each op on its own (files or arrays), the FarmVibes workflow, many scenes
(``nimbus.batch``) and many scenes on a Dask cluster (``nimbus.dask``).
Long-running calls release the GIL. Bad input raises ``nimbus.InputError``.
"""
import inspect
import os
import tempfile
import uuid

import numpy as np

from ._location import WORKFLOWS_DIR
from ._nimbus import improve_cloud_mask as _improve_cloud_mask
from ._nimbus import run_workflow as _run_workflow_files
from ._nimbus import (  # noqa: F401  (re-exported API)
    InputError,
    __version__,
    check_batch_outputs,
    check_scene_ids,
    merge_cloud_masks,
    operation_parameters,
    process_batch_scene,
    read_batch_manifest,
    read_raster,
    remove_stale_partials,
    run_op,
    scene_id_from_path,
    set_log_level,
    write_raster,
)

SEED_WORKFLOW = "data_ingestion/sentinel2/improve_cloud_mask"

__all__ = [
    "InputError", "__version__", "improve_cloud_mask", "improve_cloud_mask_array", "run_workflow", "run_op",
    "compute_cloud_prob", "compute_shadow_prob", "merge_cloud_masks", "read_raster", "write_raster", "batch",
    "normalise_scenes", "set_log_level", "SEED_WORKFLOW", "operation_parameters", "WORKFLOWS_DIR",
]


def improve_cloud_mask(s2_raster, out, product_mask=None, **options):
    return _improve_cloud_mask(s2_raster, out, product_mask, **options)


def _declare(function, operation):
    """Gives ``function`` the signature and docstring of the library's declaration of
    ``operation``: the keywords, defaults and help are the CLI's, one declaration for both."""
    declared = operation_parameters(operation)
    leading = [p for p in declared if p["required"]] + [p for p in declared if p["name"] == "product_mask"]
    rest = [p for p in declared if p not in leading]
    parameters = [inspect.Parameter(p["name"], inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    **({} if p["required"] else {"default": p["default"]})) for p in leading]
    parameters += [inspect.Parameter(p["name"], inspect.Parameter.KEYWORD_ONLY, default=p["default"]) for p in rest]
    function.__signature__ = inspect.Signature(parameters)
    lines = []
    for p in declared:
        accepted = ""
        if "choices" in p:
            accepted = " One of " + ", ".join(repr(c) for c in p["choices"]) + "."
        elif "min" in p and "max" in p:
            accepted = f" In [{p['min']:g}, {p['max']:g}]."
        lines.append(f"    {p['name']} ({p['type']}): {p['help']}.{accepted}")
    function.__doc__ = ("Runs improve-cloud-mask on one scene and returns its report (a dict): cloud and shadow "
                        "models, merged with the product mask, written as a georeferenced mask. Bad input raises "
                        "InputError naming the parameter.\n\nParameters:\n" + "\n".join(lines))
    return function


_declare(improve_cloud_mask, "improve-cloud-mask")


class _ArrayInputs:
    """Arrays written as GeoTIFFs in GDAL's in-memory file system for the file-based engine."""

    def __init__(self):
        self.prefix = f"/vsimem/nimbus-py-{uuid.uuid4().hex}"
        self.paths = []

    def add(self, name, array, geotransform, crs, nodata):
        path = f"{self.prefix}/{name}.tif"
        write_raster(path, np.asarray(array), geotransform, crs or "", nodata)
        self.paths.append(path)
        return path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        from ._nimbus import _unlink_vsimem
        for p in self.paths:
            _unlink_vsimem(p)


def run_workflow(workflow, inputs, out_dir=None, params=None, geotransform=None, crs=None, nodata=0,
                 cache_dir="", parallel_tasks=2, workflows_dir="", overwrite=False):
    """Runs a workflow (name or YAML path). ``inputs`` maps each source to a file path or to
    a numpy array (written with ``geotransform``/``crs``; ``nodata`` applies to 3-D arrays,
    i.e. the Sentinel-2 stack). With ``out_dir`` the sinks are written there and their paths
    returned; without, the sinks come back as arrays (single-band sinks as 2-D).
    ``cache_dir``: the op cache ('' = none). ``workflows_dir``: where workflows named by
    name are found ('' = :data:`WORKFLOWS_DIR`, the ones shipped with this package).
    ``overwrite``: replace sink files already in ``out_dir`` (otherwise refused before any task)."""
    params = dict(params or {})
    with tempfile.TemporaryDirectory(prefix="nimbus-") as tmp:
        files = {}
        for name, value in inputs.items():
            if isinstance(value, np.ndarray):
                # The engine identifies inputs by path, size and time: real files, not /vsimem.
                path = os.path.join(tmp, f"input-{name}.tif")
                write_raster(path, value, geotransform, crs or "", nodata if value.ndim == 3 else None)
                files[name] = path
            else:
                files[name] = os.fspath(value)
        target = os.fspath(out_dir) if out_dir is not None else os.path.join(tmp, "sinks")
        sinks = _run_workflow_files(os.fspath(workflow), files, target, params, os.fspath(cache_dir),
                                    parallel_tasks, os.fspath(workflows_dir) or WORKFLOWS_DIR, overwrite)
        if out_dir is not None:
            return sinks
        arrays = {}
        for sink, path in sinks.items():
            a = read_raster(path)["array"]
            arrays[sink] = a[0] if a.shape[0] == 1 else a
        return arrays


def _band_stack(array, name):
    a = np.asarray(array)
    if a.ndim != 3:
        raise InputError(f"{name} must be a (bands, height, width) array, got shape {a.shape}")
    return a


def improve_cloud_mask_array(s2, product_mask, geotransform=None, crs=None, out=None, nodata=0, **options):
    """The whole job on arrays: ``s2`` (12, H, W) digital numbers (nodata 0), ``product_mask``
    (H, W), non-zero = cloud. Returns the (H, W) uint8 mask; with ``out`` also writes it
    there as a georeferenced COG. ``options`` as for :func:`improve_cloud_mask`."""
    s2 = _band_stack(s2, "s2")
    pm = np.asarray(product_mask)
    if pm.shape != s2.shape[1:]:
        raise InputError(f"product_mask has shape {pm.shape}, the scene is {s2.shape[1:]}")
    with _ArrayInputs() as inputs, tempfile.TemporaryDirectory(prefix="nimbus-") as tmp:
        s2_path = inputs.add("s2", s2, geotransform, crs, nodata)
        pm_path = inputs.add("product_mask", pm.astype(np.uint8, copy=False) if pm.dtype == bool else pm,
                             geotransform, crs, None)
        target = os.fsdecode(out) if out is not None else os.path.join(tmp, "mask.tif")
        improve_cloud_mask(s2_path, target, product_mask=pm_path, **options)
        return read_raster(target)["array"][0]


def _probability_op(op, output, s2, geotransform, crs, nodata, parameters):
    s2 = _band_stack(s2, "s2")
    with _ArrayInputs() as inputs, tempfile.TemporaryDirectory(prefix="nimbus-") as tmp:
        path = inputs.add("s2", s2, geotransform, crs, nodata)
        outputs = run_op(op, {"sentinel_raster": path}, {k: v for k, v in parameters.items() if v is not None}, tmp)
        return read_raster(outputs[output])["array"][0]


def compute_cloud_prob(s2, geotransform=None, crs=None, nodata=0, model_path="embedded:nimbus_cloud_v2",
                       window_size=512, overlap=0.25):
    """Cloud probability (H, W) float32 of a (12, H, W) array; 100 where the input is nodata.
    ``model_path``: an ONNX file such as FarmVibes' cloud_model2_cpu.onnx, or an embedded model."""
    return _probability_op("compute_cloud_prob", "cloud_probability", s2, geotransform, crs, nodata,
                           dict(model_path=os.fspath(model_path), window_size=window_size, overlap=overlap))


def compute_shadow_prob(s2, geotransform=None, crs=None, nodata=0, model_path="embedded:nimbus_shadow_v1",
                        window_size=512, overlap=0.25):
    """Shadow probability (H, W) float32 of a (12, H, W) array; 100 where the input is nodata."""
    return _probability_op("compute_shadow_prob", "shadow_probability", s2, geotransform, crs, nodata,
                           dict(model_path=os.fspath(model_path), window_size=window_size, overlap=overlap))


def normalise_scenes(scenes):
    """Scenes as dicts with s2_raster, product_mask (None: derived from a SAFE product) and id.
    Accepts paths, (s2_raster, product_mask) pairs, dicts, a manifest CSV path or one scene's path."""
    if isinstance(scenes, (str, bytes, os.PathLike)):
        # One path: a manifest (.csv, any case) or a single scene, never its characters.
        if os.fsdecode(scenes).lower().endswith(".csv"):
            return read_batch_manifest(os.fsdecode(scenes))
        scenes = [scenes]
    out = []
    for s in scenes:
        try:
            if isinstance(s, dict):
                d = {"s2_raster": os.fsdecode(s["s2_raster"]), "product_mask": s.get("product_mask"),
                     "id": s.get("id")}
            elif isinstance(s, (tuple, list)):
                d = {"s2_raster": os.fsdecode(s[0]), "product_mask": s[1] if len(s) > 1 else None, "id": None}
            else:
                d = {"s2_raster": os.fsdecode(s), "product_mask": None, "id": None}
        except (TypeError, KeyError, IndexError) as e:
            raise InputError(f"scene {s!r} is not a path, a (s2_raster, product_mask) pair or a dict with "
                             f"s2_raster ({e})") from None
        if isinstance(d["id"], bytes):
            d["id"] = os.fsdecode(d["id"])
        d["s2_raster"] = os.path.abspath(d["s2_raster"]) if "://" not in d["s2_raster"] and not d[
            "s2_raster"].startswith("/vsi") else d["s2_raster"]
        if d["product_mask"] is not None:
            d["product_mask"] = os.path.abspath(os.fsdecode(d["product_mask"]))
        if d["id"] is None:
            d["id"] = scene_id_from_path(d["s2_raster"])
        out.append(d)
    check_scene_ids(out)
    return out


def batch(scenes, out_dir, progress=True, **options):
    """Processes scenes one after the other into ``out_dir``/<id>.tif, skipping scenes whose
    output verifies against its record (so an interrupted batch resumes). Returns one
    outcome dict per scene: id, status ('done', 'skipped', 'failed'), output, sha256, error,
    seconds. ``options`` as for :func:`improve_cloud_mask`."""
    scenes = normalise_scenes(scenes)
    out_dir = os.path.abspath(os.fsdecode(out_dir))
    # Every output location is checked against every input before the first scene runs.
    check_batch_outputs(scenes, out_dir, options)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise InputError(f"out_dir '{out_dir}' cannot be created ({e.strerror}); choose a writable directory") from None
    remove_stale_partials(scenes, out_dir, True)
    bar = _progress(len(scenes)) if progress else None
    outcomes = []
    for scene in scenes:
        outcomes.append(process_batch_scene(scene, out_dir, options))
        if bar:
            bar(outcomes[-1])
    return outcomes


def _progress(total):
    try:
        from tqdm import tqdm
        t = tqdm(total=total, unit="scene")

        def step(outcome):
            t.set_postfix_str(f"{outcome['id']}: {outcome['status']}")
            t.update(1)
            if t.n == total:
                t.close()
        return step
    except ImportError:
        done = [0]

        def step(outcome):
            done[0] += 1
            print(f"[{done[0]}/{total}] {outcome['id']}: {outcome['status']}", flush=True)
        return step
