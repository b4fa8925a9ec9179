"""The Python API: files or arrays in, the CLI's masks and probabilities out."""
import json
import os
import tempfile
import uuid

import numpy as np

from . import _nimbus
from ._docs import document, input_error
from ._georef import GeoArray, crs_text, gdal_geotransform, geoarray, split
from ._location import WORKFLOWS_DIR
from ._nimbus import InputError

SEED_WORKFLOW = "data_ingestion/sentinel2/improve_cloud_mask"

_GEOREFERENCING = (
    ("geotransform", """geotransform : affine.Affine or sequence of 6 float, optional
    Where the pixels lie: rasterio's ``src.transform`` or a GDAL geotransform (x0, dx, rx,
    y0, ry, dy). Default: the transform of ``s2`` when it is a :class:`GeoArray`, else none."""),
    ("crs", """crs : int, str, rasterio.crs.CRS or pyproj.CRS, optional
    The coordinate reference system: an EPSG code (32631), 'EPSG:32631', WKT, PROJ, or an
    object with ``to_wkt()``. Default: the CRS of ``s2`` when it is a :class:`GeoArray`."""),
)

_S2_ARRAY = ("s2", """s2 : numpy.ndarray or GeoArray, shape (12, H, W)
    The 12 Sentinel-2 L2A bands B01..B12 without B10, bands first (as rasterio's ``read()``
    and :func:`read_raster` return them), digital numbers (uint16 or any numeric dtype).""")


# --------------------------------------------------------------------------------------
# Arrays and georeferencing


def _band_stack(value, name="s2"):
    a, gt, crs = split(value, name)
    if a.ndim == 3 and a.shape[0] != 12 and a.shape[2] == 12:
        raise InputError(f"{name}: expected (12, H, W), got (H, W, 12) = {a.shape}: use {name}.transpose(2, 0, 1) "
                         "(bands first, as rasterio's read() returns them)")
    if a.ndim != 3:
        raise InputError(f"{name}: expected (12, H, W) (bands, height, width), got shape {a.shape}")
    return a, gt, crs


def _single_band(value, name, shape=None):
    """A 2-D array of a single-band input given as (H, W) or (1, H, W) (read_raster's shape)."""
    a, gt, crs = split(value, name)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    elif a.ndim == 3 and a.shape[2] == 1:
        raise InputError(f"{name}: expected (H, W) or (1, H, W), got (H, W, 1) = {a.shape}: use {name}[..., 0]")
    if a.ndim != 2:
        raise InputError(f"{name}: expected (H, W) or (1, H, W) (a single band), got shape {a.shape}")
    if shape is not None and a.shape != tuple(shape):
        raise InputError(f"{name} has shape {a.shape}, the scene is {tuple(shape)}; give it on the scene's grid")
    if a.dtype == bool:
        a = a.astype(np.uint8)
    return a, gt, crs


def _georeferencing(geotransform, crs, found):
    """The grid of a call: the explicit ``geotransform``/``crs``, else the one the GeoArray
    inputs carry (``found``: (name, gt, crs) each), which must then agree."""
    gt = gdal_geotransform(geotransform)
    text = crs_text(crs)
    carried = [(n, g, c) for n, g, c in found if g is not None or c]
    if gt is None and not text and carried:
        first = carried[0]
        for other in carried[1:]:
            if other[1] != first[1] or other[2] != first[2]:
                raise InputError(f"{first[0]} and {other[0]} are on different grids ({first[1]} vs {other[1]}); "
                                 "give arrays on one grid, or geotransform= and crs= explicitly")
        gt, text = first[1], first[2]
    elif gt is None and carried:
        gt = carried[0][1]
    elif not text and carried:
        text = carried[0][2]
    return gt, text


def _refuse_ungeoreferenced(what, gt, crs, allow):
    if allow or (gt is not None and crs):
        return
    missing = " and ".join(n for n, v in (("geotransform", gt is not None), ("crs", bool(crs))) if not v)
    raise InputError(f"{what} would be written without {missing}, so no GIS could place it; give geotransform= "
                     "(e.g. rasterio's src.transform) and crs=, pass GeoArrays from read_raster, or "
                     "allow_ungeoreferenced=True to write it anyway")


class _ArrayInputs:
    """Arrays written as GeoTIFFs in GDAL's in-memory file system for the file-based engine."""

    def __init__(self):
        self.prefix = f"/vsimem/nimbus-py-{uuid.uuid4().hex}"
        self.paths = []

    def add(self, name, array, gt, crs, nodata):
        path = f"{self.prefix}/{name}.tif"
        _nimbus.write_raster(path, np.asarray(array), gt, crs, nodata)
        self.paths.append(path)
        return path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in self.paths:
            _nimbus._unlink_vsimem(p)


def _read_single_band(path):
    r = read_raster(path)
    return r._replace(array=r.array[0])


def read_raster(path):
    r = _nimbus.read_raster(path)
    return geoarray(r["array"], r["geotransform"], r["crs"], r["nodata"])


document(read_raster, """
    Reads a raster file into memory, with its georeferencing (like rasterio's
    ``src.read()``, ``src.transform``, ``src.crs``, ``src.nodata`` in one call).""",
         [("path", """path : str, bytes or os.PathLike
    A GeoTIFF or anything GDAL opens (VRT, /vsicurl/ URLs, ...).""")],
         returns="""GeoArray
    ``array`` of shape (bands, H, W) in the file's data type (uint8, uint16, int16, uint32,
    int32, float32 or float64), ``transform`` (affine.Affine, or a GDAL tuple without the
    affine package; None without georeferencing), ``crs`` (WKT or None), ``nodata``.""",
         raises=input_error("a file GDAL cannot read, an unsupported data type."),
         example="""
    >>> s2 = nimbus.read_raster("S2.tif")             # s2.array: (12, H, W)
    >>> pm = nimbus.read_raster("PM.tif")             # pm.array: (1, H, W)
    >>> result = nimbus.improve_cloud_mask_array(s2, pm)   # grid taken from s2""")


def write_raster(path, array, geotransform=None, crs=None, nodata=None):
    a, gt, text = split(array, "array")
    if isinstance(array, GeoArray):
        nodata = array.nodata if nodata is None else nodata
    gt = gdal_geotransform(geotransform) if geotransform is not None else gt
    text = crs_text(crs) if crs is not None else text
    _nimbus.write_raster(path, a, gt, text, nodata)


document(write_raster, """
    Writes an array as a tiled GeoTIFF, all or nothing (never over a special file or a
    link). Georeferencing is optional here: without it the file has pixel coordinates.""",
         [("path", "path : str, bytes or os.PathLike\n    Where to write (.tif)."),
          ("array", """array : numpy.ndarray or GeoArray, shape (H, W) or (bands, H, W)
    uint8, uint16, int16, uint32, int32, float32 or float64. A GeoArray brings its
    transform, CRS and nodata (the other arguments override them)."""),
          ("geotransform", """geotransform : affine.Affine or sequence of 6 float, optional
    rasterio's ``src.transform`` or a GDAL geotransform (x0, dx, rx, y0, ry, dy)."""),
          ("crs", """crs : int, str, rasterio.crs.CRS or pyproj.CRS, optional
    An EPSG code, 'EPSG:n', WKT, PROJ or an object with ``to_wkt()``."""),
          ("nodata", "nodata : float, optional\n    The nodata tag.")],
         raises=input_error(),
         example="""
    >>> nimbus.write_raster("mask.tif", result)                      # a GeoArray: all in one
    >>> nimbus.write_raster("b04.tif", s2[3], src.transform, 32631, nodata=0)""")


# --------------------------------------------------------------------------------------
# improve-cloud-mask


def improve_cloud_mask(s2_raster, out, product_mask=None, **options):
    return _nimbus.improve_cloud_mask(s2_raster, out, product_mask, **options)


document(improve_cloud_mask, """
    Improves one scene's cloud mask, files in and file out: the cloud and shadow models
    run over the scene in overlapping chips, their probabilities are thresholded, merged
    with the product's mask (OR) and dilated, and the mask is written as a georeferenced
    COG (uint8: 1 = cloud or shadow, 0 = clear, nodata tag 100) on the input's grid. The
    same job as ``nimbus improve-cloud-mask``, with the same options (underscores for
    dashes) and the same mask, bit for bit. Releases the GIL; Ctrl-C stops it at the next
    chip (``KeyboardInterrupt``, no output left).""",
         [("s2_raster", None), ("out", None), ("product_mask", None)],
         returns="""dict
    The run's report (what ``report=`` writes as JSON): width, height, chips_per_model,
    chips_total, chips_skipped, aoi_window, masked_fraction, the models used with their
    sha256 and engines, seconds_* per stage, peak_rss_mb.""",
         raises=input_error("a missing file, a value out of range or of the wrong type, an unknown\n    keyword, an output that is an input.") + """
KeyboardInterrupt
    Ctrl-C during the call (the partial output is removed).""",
         example="""
    >>> report = nimbus.improve_cloud_mask("S2.tif", "mask.tif", product_mask="PM.tif",
    ...                                    cloud_thr=0.3, min_area=50)
    >>> report["masked_fraction"]""", options=True)


def improve_cloud_mask_array(s2, product_mask, geotransform=None, crs=None, out=None, nodata=0, *,
                             allow_ungeoreferenced=False, **options):
    s2, s2_gt, s2_crs = _band_stack(s2)
    pm, pm_gt, pm_crs = _single_band(product_mask, "product_mask", s2.shape[1:])
    gt, crs = _georeferencing(geotransform, crs, [("s2", s2_gt, s2_crs), ("product_mask", pm_gt, pm_crs)])
    if out is not None:
        _refuse_ungeoreferenced(f"out = {os.fsdecode(out)!r}", gt, crs, allow_ungeoreferenced)
    with _ArrayInputs() as inputs, tempfile.TemporaryDirectory(prefix="nimbus-") as tmp:
        s2_path = inputs.add("s2", s2, gt, crs, nodata)
        pm_path = inputs.add("product_mask", pm, gt, crs, None)
        target = out if out is not None else os.path.join(tmp, "mask.tif")
        improve_cloud_mask(s2_path, target, product_mask=pm_path, **options)
        return _read_single_band(target)


document(improve_cloud_mask_array, """
    Improves a cloud mask held in numpy arrays: :func:`improve_cloud_mask` (the same
    options, the same mask) on an in-memory scene. Composes with :func:`read_raster` and
    with rasterio: pass GeoArrays, or arrays with ``geotransform``/``crs``.""",
         [_S2_ARRAY,
          ("product_mask", """product_mask : numpy.ndarray or GeoArray, shape (H, W) or (1, H, W)
    The product's cloud mask on the scene's grid; non-zero (or True) = cloud."""),
          *_GEOREFERENCING,
          ("out", """out : str or os.PathLike, optional
    Also write the mask there as a georeferenced COG (what the CLI writes). Refused
    without geotransform and crs unless ``allow_ungeoreferenced=True``."""),
          ("nodata", "nodata : float, default 0\n    The value of ``s2`` that marks no data (Sentinel-2: 0)."),
          ("allow_ungeoreferenced", """allow_ungeoreferenced : bool, default False
    Write ``out`` even without geotransform or crs (a mask no GIS can place).""")],
         returns="""GeoArray
    ``array``: the (H, W) uint8 mask (1 = cloud or shadow, also where ``s2`` is nodata as
    in FarmVibes; 0 = clear; 100 outside the polygon with ``crop_to_aoi``), ``transform``
    and ``crs`` of the mask (the input's, or its window's with ``aoi``/``bbox``), ``nodata``
    (100, the tag FarmVibes writes). Unpacks as
    ``mask, transform, crs, nodata``.""",
         raises=input_error("``s2`` as (H, W, 12) (\"use s2.transpose(2, 0, 1)\"), a product mask of\n"
                            "    another shape, ``out`` without georeferencing, bad options as for\n"
                            "    :func:`improve_cloud_mask`."),
         example="""
    >>> import rasterio
    >>> with rasterio.open("S2.tif") as src:
    ...     s2, profile = src.read(), src.profile
    >>> pm = nimbus.read_raster("PM.tif")                 # (1, H, W) is fine
    >>> mask, transform, crs, nodata = nimbus.improve_cloud_mask_array(
    ...     s2, pm.array, profile["transform"], profile["crs"], cloud_thr=0.3)
    >>> profile.update(count=1, dtype="uint8", nodata=nodata, transform=transform, crs=crs)
    >>> with rasterio.open("mask.tif", "w", **profile) as dst:
    ...     dst.write(mask, 1)""", options=True)


def _probability_op(op, output, s2, geotransform, crs, nodata, parameters):
    s2, s2_gt, s2_crs = _band_stack(s2)
    gt, crs = _georeferencing(geotransform, crs, [("s2", s2_gt, s2_crs)])
    with _ArrayInputs() as inputs, tempfile.TemporaryDirectory(prefix="nimbus-") as tmp:
        path = inputs.add("s2", s2, gt, crs, nodata)
        outputs = _nimbus.run_op(op, {"sentinel_raster": path},
                                 {k: v for k, v in parameters.items() if v is not None}, tmp)
        return _read_single_band(outputs[output])


def compute_cloud_prob(s2, geotransform=None, crs=None, nodata=0, model_path="embedded:nimbus_cloud_v2",
                       window_size=512, overlap=0.25):
    return _probability_op("compute_cloud_prob", "cloud_probability", s2, geotransform, crs, nodata,
                           dict(model_path=os.fspath(model_path), window_size=window_size, overlap=overlap))


def compute_shadow_prob(s2, geotransform=None, crs=None, nodata=0, model_path="embedded:nimbus_shadow_v1",
                        window_size=512, overlap=0.25):
    return _probability_op("compute_shadow_prob", "shadow_probability", s2, geotransform, crs, nodata,
                           dict(model_path=os.fspath(model_path), window_size=window_size, overlap=overlap))


for _function, _kind, _model in ((compute_cloud_prob, "Cloud", "cloud_model2_cpu.onnx"),
                                 (compute_shadow_prob, "Shadow", "shadow.onnx")):
    document(_function, f"""
    {_kind} probability of an in-memory scene: the {_kind.lower()} model over overlapping
    chips (FarmVibes' op of the same name), equal to the CLI's ``--keep-probabilities``.""",
             [_S2_ARRAY, *_GEOREFERENCING,
              ("nodata", "nodata : float, default 0\n    The value of ``s2`` that marks no data."),
              ("model_path", f"""model_path : str or os.PathLike, default {_function.__defaults__[3]!r}
    An ONNX model file (e.g. FarmVibes' {_model}) or an embedded model ('embedded:NAME')."""),
              ("window_size", "window_size : int, default 512, >= 64\n    Chip size in pixels."),
              ("overlap", "overlap : float, default 0.25, in [0, 0.875]\n    Chip overlap fraction.")],
             returns=f"""GeoArray
    ``array``: (H, W) float32 {_kind.lower()} probability in [0, 1], 100 where ``s2`` is
    nodata; with ``s2``'s ``transform`` and ``crs``.""",
             raises=input_error(),
             example=f"""
    >>> prob = nimbus.compute_{_kind.lower()}_prob(s2, src.transform, src.crs)
    >>> (prob.array > 0.3).mean()""")


def merge_cloud_masks(cloud_probability, shadow_probability, product_mask, cloud_thr=0.3, shadow_thr=0.2,
                      closing_size=5, min_area=0):
    cloud, c_gt, c_crs = _single_band(cloud_probability, "cloud_probability")
    shadow, s_gt, s_crs = _single_band(shadow_probability, "shadow_probability")
    pm, p_gt, p_crs = _single_band(product_mask, "product_mask")
    mask = _nimbus.merge_cloud_masks(cloud, shadow, pm, cloud_thr, shadow_thr, closing_size, min_area)
    found = [(n, g, c) for n, value, g, c in (("cloud_probability", cloud_probability, c_gt, c_crs),
                                              ("shadow_probability", shadow_probability, s_gt, s_crs),
                                              ("product_mask", product_mask, p_gt, p_crs))
             if isinstance(value, GeoArray)]
    if not found:
        return mask
    gt, crs = _georeferencing(None, None, found)
    return geoarray(mask, gt, crs, None)


document(merge_cloud_masks, """
    The merge step alone (FarmVibes' merge_cloud_masks_simple): cloud > cloud_thr or
    shadow > shadow_thr or product mask, dilated with a disk, optionally without specks
    and holes smaller than min_area. Equal to the CLI's mask for the same probabilities.""",
         [("cloud_probability", """cloud_probability : numpy.ndarray or GeoArray, shape (H, W) or (1, H, W)
    From :func:`compute_cloud_prob` (any float dtype)."""),
          ("shadow_probability", """shadow_probability : numpy.ndarray or GeoArray, shape (H, W) or (1, H, W)
    From :func:`compute_shadow_prob`."""),
          ("product_mask", """product_mask : numpy.ndarray or GeoArray, shape (H, W) or (1, H, W)
    Non-zero = cloud, whatever the dtype (QA60's 1024/2048, NaN, True)."""),
          ("cloud_thr", None), ("shadow_thr", None), ("closing_size", None), ("min_area", None)],
         returns="""numpy.ndarray or GeoArray
    The (H, W) uint8 mask (1 = cloud or shadow). A GeoArray (with the inputs' grid) when an
    input is a GeoArray, else a plain array: no nodata handling here, see
    :func:`improve_cloud_mask_array` for the whole job.""",
         raises=input_error("arrays of different shapes, out-of-range parameters."),
         example="""
    >>> cloud = nimbus.compute_cloud_prob(s2, src.transform, src.crs)
    >>> shadow = nimbus.compute_shadow_prob(s2, src.transform, src.crs)
    >>> mask = nimbus.merge_cloud_masks(cloud, shadow, pm, cloud_thr=0.4, min_area=50)""")


# --------------------------------------------------------------------------------------
# Ops and workflows


def run_op(op, inputs, parameters=None, output_dir=None):
    if output_dir is None:
        raise InputError(f"run_op('{op}', ...) needs output_dir, the directory its outputs are written to")
    return _nimbus.run_op(op, inputs, dict(parameters or {}), output_dir)


document(run_op, """
    Runs one op of the workflow engine on files (the ops a workflow YAML names:
    compute_cloud_prob, compute_shadow_prob, merge_cloud_masks_simple, ...).""",
         [("op", "op : str\n    The op's name."),
          ("inputs", "inputs : dict of str to path\n    The op's input ports and their files."),
          ("parameters", "parameters : dict, optional\n    The op's parameters (as in a workflow YAML)."),
          ("output_dir", "output_dir : str or os.PathLike\n    Where the outputs are written (created if needed).")],
         returns="""dict of str to str
    Each output port and the path of its file.""",
         raises=input_error("an unknown op, port or parameter, a missing input."),
         example="""
    >>> out = nimbus.run_op("compute_cloud_prob", {"sentinel_raster": "S2.tif"},
    ...                     {"model_path": "cloud_model2_cpu.onnx"}, "out/")
    >>> out["cloud_probability"]""")


def run_workflow(workflow, inputs, out_dir=None, params=None, geotransform=None, crs=None, nodata=0,
                 cache_dir="", parallel_tasks=2, workflows_dir="", geometry=None, geometry_crs="EPSG:4326",
                 overwrite=False, *, allow_ungeoreferenced=False):
    params = dict(params or {})
    if geometry is None:
        geometry_text = ""
    elif hasattr(geometry, "__geo_interface__"):
        geometry_text = json.dumps(geometry.__geo_interface__)
    elif isinstance(geometry, dict):
        geometry_text = json.dumps(geometry)
    else:
        geometry_text = os.fspath(geometry)
    arrays = {n: v for n, v in inputs.items() if isinstance(v, (np.ndarray, GeoArray))}
    gt, text = None, ""
    if arrays:
        found = [(n,) + split(v, n)[1:] for n, v in arrays.items()]
        gt, text = _georeferencing(geotransform, crs, found)
        if out_dir is not None:
            _refuse_ungeoreferenced(f"the sinks in out_dir = {os.fsdecode(out_dir)!r}", gt, text,
                                    allow_ungeoreferenced)
    with tempfile.TemporaryDirectory(prefix="nimbus-") as tmp:
        files = {}
        for name, value in inputs.items():
            if name in arrays:
                a = split(value, name)[0]
                # The engine identifies inputs by path, size and time: real files, not /vsimem.
                path = os.path.join(tmp, f"input-{name}.tif")
                _nimbus.write_raster(path, a, gt, text, nodata if a.ndim == 3 else None)
                files[name] = path
            else:
                files[name] = os.fspath(value)
        target = os.fspath(out_dir) if out_dir is not None else os.path.join(tmp, "sinks")
        sinks = _nimbus.run_workflow(os.fspath(workflow), files, target, params, os.fspath(cache_dir),
                                     parallel_tasks, os.fspath(workflows_dir) or WORKFLOWS_DIR, geometry_text,
                                     geometry_crs, overwrite)
        if out_dir is not None:
            return sinks
        results = {}
        for sink, path in sinks.items():
            r = read_raster(path)
            results[sink] = r._replace(array=r.array[0]) if r.array.shape[0] == 1 else r
        return results


document(run_workflow, """
    Runs a workflow (FarmVibes' YAML format) on files or arrays; what ``nimbus run`` does.""",
         [("workflow", """workflow : str or os.PathLike
    A workflow name under ``workflows_dir`` (e.g. ``nimbus.SEED_WORKFLOW``) or a YAML path."""),
          ("inputs", """inputs : dict
    Each source of the workflow and its file path, numpy array or GeoArray (3-D arrays are
    band stacks, 2-D single bands)."""),
          ("out_dir", """out_dir : str or os.PathLike, optional
    Write the sinks there and return their paths; without it the sinks come back as
    arrays. With array inputs, refused without georeferencing unless
    ``allow_ungeoreferenced=True``."""),
          ("params", "params : dict, optional\n    The workflow's parameters (its ``parameters:`` section)."),
          ("geotransform", """geotransform : affine.Affine or sequence of 6 float, optional
    The grid of the array inputs (default: that of the GeoArray inputs)."""),
          ("crs", "crs : int, str, rasterio.crs.CRS or pyproj.CRS, optional\n    Their CRS."),
          ("nodata", "nodata : float, default 0\n    The nodata value of 3-D array inputs."),
          ("cache_dir", "cache_dir : str or os.PathLike, default ''\n    The op cache ('' = none)."),
          ("parallel_tasks", "parallel_tasks : int, default 2\n    Tasks run at once."),
          ("workflows_dir", """workflows_dir : str or os.PathLike, default ''
    Where workflows named by name are found ('' = ``nimbus.WORKFLOWS_DIR``)."""),
          ("geometry", """geometry : str, os.PathLike, dict or object with __geo_interface__, optional
    FarmVibes' run geometry: a GeoJSON file, GeoJSON or WKT text, a GeoJSON mapping or e.g.
    a shapely polygon, in ``geometry_crs``. Only the chips it needs run and the sinks are
    its pixel window (docs/area_of_interest.md)."""),
          ("geometry_crs", "geometry_crs : str, default 'EPSG:4326'\n    The CRS of ``geometry``."),
          ("overwrite", "overwrite : bool, default False\n    Replace sink files already in ``out_dir`` (otherwise refused before any task)."),
          ("allow_ungeoreferenced", """allow_ungeoreferenced : bool, default False
    Write sinks from array inputs without geotransform or crs.""")],
         returns="""dict
    With ``out_dir``: each sink and its file path. Without: each sink as a GeoArray
    (single-band sinks as (H, W)).""",
         raises=input_error("an unknown workflow, source or parameter, array sinks written\n    without georeferencing."),
         example="""
    >>> sinks = nimbus.run_workflow(nimbus.SEED_WORKFLOW, {"s2_raster": "S2.tif", "product_mask": "PM.tif"},
    ...                             params={"cloud_model": "cloud_model2_cpu.onnx"})
    >>> sinks["mask"].array""")


def operation_parameters(name="improve-cloud-mask"):
    return _nimbus.operation_parameters(name)


document(operation_parameters, """
    The declared parameters of an operation: what the CLI flags, the Python keywords and
    the docstrings are built from.""",
         [("name", "name : str, default 'improve-cloud-mask'\n    The operation.")],
         returns="""list of dict
    One per parameter: name, type, default, help, required, role, cli_flag and, where
    declared, min, max, choices.""",
         raises=input_error("an unknown operation."),
         example="""
    >>> {p["name"]: p["default"] for p in nimbus.operation_parameters()}["cloud_thr"]
    0.3""")


def set_log_level(level):
    _nimbus.set_log_level(level)


document(set_log_level, """
    Sets the level of the library's log on stderr (its own logger; nothing else in the
    process changes).""",
         [("level", "level : str\n    'debug', 'info' (progress), 'warn' (the default), 'error' or 'off'.")],
         example="""
    >>> nimbus.set_log_level("info")""")


# --------------------------------------------------------------------------------------
# Many scenes


def scene_id_from_path(s2_raster):
    return _nimbus.scene_id_from_path(s2_raster)


document(scene_id_from_path, """
    The scene id a batch names a scene's outputs after (``<out_dir>/<id>.tif``): the SAFE
    product's name, else the file name without extension.""",
         [("s2_raster", "s2_raster : str\n    The scene's raster, SAFE product or STAC item.")],
         returns="str",
         example="""
    >>> nimbus.scene_id_from_path("/d/T31TDH_2023.tif")
    'T31TDH_2023'""")


def read_batch_manifest(manifest):
    return _nimbus.read_batch_manifest(manifest)


document(read_batch_manifest, """
    Reads a batch manifest: a CSV with the columns s2_raster, product_mask (optional) and
    id (optional), paths relative to the manifest.""",
         [("manifest", "manifest : str or os.PathLike\n    The CSV file.")],
         returns="list of dict\n    One scene each: id, s2_raster, product_mask (None: derived from a SAFE product).",
         raises=input_error(),
         example="""
    >>> [s["id"] for s in nimbus.read_batch_manifest("scenes.csv")]""")


def normalise_scenes(scenes):
    if isinstance(scenes, (str, bytes, os.PathLike)):
        # One path: a manifest (.csv, any case, or a STAC ItemCollection) or a single scene,
        # never its characters.
        text = os.fsdecode(scenes)
        if text.lower().endswith(".csv") or _is_item_collection(text):
            return read_batch_manifest(text)
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
    _nimbus.check_scene_ids(out)
    return out


document(normalise_scenes, """
    The scenes of a batch as dicts, with absolute paths and ids (checked to be unique).""",
         [("scenes", """scenes : path, or list of paths, (s2_raster, product_mask) pairs or dicts
    A manifest CSV path, one scene's path, or a list of scenes; dicts have s2_raster and
    optionally product_mask and id.""")],
         returns="list of dict\n    One per scene: s2_raster, product_mask (None: derived from a SAFE product), id.",
         raises=input_error("two scenes with one id, a scene that is not a path, pair or dict."),
         example="""
    >>> nimbus.normalise_scenes([("a.tif", "a_pm.tif"), "b.SAFE"])""")


def _is_item_collection(path):
    # Whether a JSON file or an http(s) URL holds a STAC ItemCollection (saved search results).
    if path.startswith(("http://", "https://")):
        return _nimbus.is_stac_item_collection(path)
    if path.lower().endswith((".json", ".geojson")) and os.path.isfile(path):
        try:
            return _nimbus.is_stac_item_collection(path)
        except InputError:
            return False
    return False


def process_batch_scene(scene, out_dir, options=None, stac_items=False):
    return _nimbus.process_batch_scene(scene, out_dir, dict(options or {}), stac_items)


document(process_batch_scene, """
    One scene of a batch, as :func:`batch` and ``nimbus.dask`` run it: skipped when its
    output verifies against its record, else written under a temporary name and renamed
    when complete. Bad input in the scene is a 'failed' outcome, not an exception.""",
         [("scene", "scene : dict\n    One of :func:`normalise_scenes`' dicts."),
          ("out_dir", "out_dir : str or os.PathLike\n    The batch's output directory (must exist)."),
          ("options", "options : dict, optional\n    As the keywords of :func:`improve_cloud_mask`."),
          ("stac_items", "stac_items : bool, default False\n    Also write a STAC Item ``out_dir``/<id>.json for the mask.")],
         returns="dict\n    The outcome: id, status ('done', 'skipped', 'failed'), output, sha256, error, stac_item, seconds.",
         raises=input_error("bad options (they apply to every scene)."),
         example="""
    >>> for scene in nimbus.normalise_scenes("scenes.csv"):
    ...     print(nimbus.process_batch_scene(scene, "masks/", {"cloud_thr": 0.4})["status"])""")


def batch(scenes, out_dir, progress=True, stac_items=False, **options):
    scenes = normalise_scenes(scenes)
    out_dir = os.path.abspath(os.fsdecode(out_dir))
    # Every output location is checked against every input before the first scene runs.
    _nimbus.check_batch_outputs(scenes, out_dir, options, stac_items)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise InputError(f"out_dir '{out_dir}' cannot be created ({e.strerror}); choose a writable directory") from None
    _nimbus.remove_stale_partials(scenes, out_dir, True)
    bar = _progress(len(scenes)) if progress else None
    outcomes = []
    for scene, error in zip(scenes, _nimbus.check_batch_items(scenes)):
        outcomes.append(_nimbus.failed_scene(scene, out_dir, error) if error
                        else process_batch_scene(scene, out_dir, options, stac_items))
        if bar:
            bar(outcomes[-1])
    if stac_items:
        _nimbus.write_batch_item_collection([o["stac_item"] for o in outcomes if o["stac_item"]], out_dir)
    return outcomes


document(batch, """
    Improves the masks of many scenes one after the other into ``out_dir/<id>.tif``, like
    ``nimbus batch``: a scene whose output verifies against its record is skipped, so an
    interrupted batch resumes where it stopped; a scene with bad input is a 'failed'
    outcome and the others go on. Models load once for all scenes.""",
         [("scenes", """scenes : path, or list of paths, (s2_raster, product_mask) pairs or dicts
    A manifest CSV or STAC ItemCollection (file or URL), one scene, or a list (see
    :func:`normalise_scenes`)."""),
          ("out_dir", "out_dir : str or os.PathLike\n    Where the masks go (created if needed)."),
          ("progress", "progress : bool, default True\n    A progress bar (tqdm if installed, else one line per scene)."),
          ("stac_items", "stac_items : bool, default False\n    Each mask also gets a STAC Item ``out_dir``/<id>.json and the batch an\n    ItemCollection ``out_dir``/items.geojson.")],
         returns="""list of dict
    One outcome per scene, in order: id, status ('done', 'skipped', 'failed'), output,
    sha256, error, stac_item, seconds. Scenes whose STAC item is broken fail before any
    scene runs.""",
         raises=input_error("bad options, an output that is an input (checked before any scene\n    runs)."),
         example="""
    >>> outcomes = nimbus.batch("scenes.csv", "masks/", cloud_thr=0.4)
    >>> [o["id"] for o in outcomes if o["status"] == "failed"]""", options=True)


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
