"""Nimbus: trustworthy Sentinel-2 cloud masks.

Files in, file out (the CLI's options as keywords, underscores for dashes)::

    import nimbus
    report = nimbus.improve_cloud_mask("S2.tif", "mask.tif", product_mask="PM.tif", cloud_thr=0.3)

Arrays in, arrays out, with rasterio or :func:`read_raster` (bands first; transforms as
``affine.Affine`` or GDAL 6-tuples; CRS as EPSG codes, WKT or ``rasterio.crs.CRS``)::

    s2, pm = nimbus.read_raster("S2.tif"), nimbus.read_raster("PM.tif")
    mask, transform, crs, nodata = nimbus.improve_cloud_mask_array(s2, pm)
    mask_da = nimbus.improve_cloud_mask_array(s2, pm).to_xarray()   # with xarray installed

Each op on its own (:func:`compute_cloud_prob`, :func:`compute_shadow_prob`,
:func:`merge_cloud_masks`, :func:`run_op`), the FarmVibes workflow (:func:`run_workflow`),
many scenes (:func:`batch`) and many scenes on a Dask cluster (``nimbus.dask``).
Long-running calls release the GIL. Bad input raises :class:`InputError`.
Full reference: docs/python.md, or ``help()`` on each function.
"""
from ._api import (
    SEED_WORKFLOW,
    batch,
    compute_cloud_prob,
    compute_shadow_prob,
    improve_cloud_mask,
    improve_cloud_mask_array,
    merge_cloud_masks,
    normalise_scenes,
    operation_parameters,
    process_batch_scene,
    read_batch_manifest,
    read_raster,
    run_op,
    run_workflow,
    scene_id_from_path,
    set_log_level,
    write_raster,
)
from ._georef import GeoArray
from ._location import WORKFLOWS_DIR
from ._nimbus import InputError, __version__

InputError.__module__ = "nimbus"
InputError.__doc__ = ("Bad input: a missing or unreadable file, a value out of range or of the wrong type, arrays of "
                      "the wrong shape. The message names the parameter and the fix (the CLI's message, with "
                      "Python keywords). A ValueError.")
GeoArray.__module__ = "nimbus"

__all__ = [
    "improve_cloud_mask", "improve_cloud_mask_array", "compute_cloud_prob", "compute_shadow_prob",
    "merge_cloud_masks", "run_op", "run_workflow", "batch", "normalise_scenes", "process_batch_scene",
    "read_batch_manifest", "scene_id_from_path", "read_raster", "write_raster", "GeoArray", "InputError",
    "operation_parameters", "set_log_level", "SEED_WORKFLOW", "WORKFLOWS_DIR", "__version__",
]


def __dir__():
    # The API and the module's own attributes; not the private modules (_api, _nimbus, ...)
    # Python binds on the package when they are imported.
    return sorted(set(__all__) | {"dask"} | {n for n in globals() if n.startswith("__") and n.endswith("__")})


def __getattr__(name):
    # nimbus.dask without importing it first (it imports distributed only when called).
    if name == "dask":
        import importlib
        return importlib.import_module(".dask", __name__)
    raise AttributeError(f"module 'nimbus' has no attribute '{name}'")
