"""Georeferencing as Python users hold it: affine.Affine or GDAL 6-tuples, EPSG codes, WKT,
rasterio/pyproj CRS objects; and GeoArray, an array with its transform, CRS and nodata."""
import math
import numbers
from typing import NamedTuple, Optional

import numpy as np

from ._nimbus import InputError


def gdal_geotransform(value, name="geotransform"):
    """``value`` as a GDAL geotransform (x0, dx, rx, y0, ry, dy) of floats, or None.

    Accepts an ``affine.Affine`` (rasterio's ``src.transform``), anything with ``to_gdal()``,
    or 6 numbers in GDAL order (``src.transform.to_gdal()``, ``read_raster(...).geotransform``)."""
    if value is None:
        return None
    if hasattr(value, "to_gdal"):  # affine.Affine (a namedtuple of 9 coefficients in its own order)
        numbers_ = tuple(value.to_gdal())
    else:
        if isinstance(value, (str, bytes)):
            raise InputError(f"{name} = {value!r} is text; give an affine.Affine or 6 numbers in GDAL order "
                             "(x0, dx, rx, y0, ry, dy)")
        try:
            numbers_ = tuple(np.asarray(value, dtype=np.float64).reshape(-1)) if np.ndim(value) == 1 else None
        except (TypeError, ValueError):
            numbers_ = None
        if numbers_ is None or len(numbers_) != 6:
            raise InputError(f"{name} = {value!r} is not a geotransform; give an affine.Affine (rasterio's "
                             "src.transform) or 6 numbers in GDAL order (x0, dx, rx, y0, ry, dy)")
    gt = tuple(float(v) for v in numbers_)
    if not all(math.isfinite(v) for v in gt):
        raise InputError(f"{name} = {gt} has a non-finite number; give finite coordinates and pixel sizes")
    affine_hint = ("if these are affine coefficients (a, b, c, d, e, f) as rasterio prints them, pass "
                   "affine.Affine(a, b, c, d, e, f) instead")
    if gt[1] * gt[5] - gt[2] * gt[4] == 0:
        raise InputError(f"{name} = {gt} maps every pixel onto a line (GDAL order x0, dx, rx, y0, ry, dy); "
                         + affine_hint)
    if not hasattr(value, "to_gdal") and (gt[1] == 0 or gt[5] == 0):
        # Plain numbers are ambiguous: affine order (dx, 0, x0, 0, dy, y0) read in GDAL order has
        # a zero pixel width. Only a grid turned by exactly 90 degrees has one; it is given as an Affine.
        raise InputError(f"{name} = {gt} has a zero pixel width or height in GDAL order (x0, dx, rx, y0, ry, dy); "
                         + affine_hint + " (a grid turned by 90 degrees is given as an affine.Affine too)")
    return gt


def crs_text(value, name="crs"):
    """``value`` as text GDAL understands ('' = no CRS): an EPSG code (int), 'EPSG:n', WKT,
    PROJ, or an object with ``to_wkt()`` (rasterio.crs.CRS, pyproj.CRS) or ``ExportToWkt()``
    (osgeo.osr.SpatialReference)."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} = {value!r} is not a CRS; give an EPSG code (32631), 'EPSG:32631', WKT or a "
                         "rasterio.crs.CRS")
    if isinstance(value, numbers.Integral):
        if value <= 0:
            raise InputError(f"{name} = {value} is not an EPSG code; give e.g. 32631")
        return f"EPSG:{int(value)}"
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode()
    for method in ("to_wkt", "ExportToWkt"):
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    raise InputError(f"{name} = {value!r} of type {type(value).__name__} is not a CRS; give an EPSG code (32631), "
                     "'EPSG:32631', WKT or a rasterio.crs.CRS")


def transform_object(gt):
    """A GDAL geotransform as an ``affine.Affine`` when the affine package is importable
    (it comes with rasterio), else the GDAL tuple itself; None stays None."""
    if gt is None:
        return None
    try:
        from affine import Affine
    except ImportError:
        return tuple(gt)
    return Affine.from_gdal(*gt)


class GeoArray(NamedTuple):
    """A raster in memory: the array and where it lies on Earth.

    Fields (unpack like a tuple: ``array, transform, crs, nodata = result``):

    array : numpy.ndarray
        (H, W) for single-band results, (bands, H, W) from :func:`read_raster`.
    transform : affine.Affine or tuple or None
        Pixel-to-map transform: an ``affine.Affine`` when the ``affine`` package is
        importable (it comes with rasterio), else the GDAL 6-tuple; None when the input had
        no georeferencing.
    crs : str or None
        The coordinate reference system as WKT (``rasterio.crs.CRS.from_wkt(crs)``), None if
        unknown.
    nodata : float or None
        The raster's nodata value (100 for masks, FarmVibes' tag), None if none.

    ``geotransform`` gives the transform in GDAL order whatever its type and
    ``to_xarray()`` an ``xarray.DataArray`` (needs xarray); ``numpy.asarray(g)`` is
    ``g.array``. Every function taking an
    array also takes a GeoArray, and uses its transform and CRS.
    """

    array: np.ndarray
    transform: object = None
    crs: Optional[str] = None
    nodata: Optional[float] = None

    def __array__(self, dtype=None, copy=None):
        # numpy functions (np.asarray, np.array_equal, rasterio's write) see the array itself.
        return np.asarray(self.array, dtype=dtype)

    @property
    def geotransform(self):
        """The transform as a GDAL 6-tuple (x0, dx, rx, y0, ry, dy), or None."""
        return gdal_geotransform(self.transform, "transform")

    def to_xarray(self, name=None):
        """This raster as an ``xarray.DataArray``.

        Dimensions ``("y", "x")`` or ``("band", "y", "x")`` (bands numbered from 1); ``x``
        and ``y`` coordinates at pixel centres when the transform has no rotation (as
        rasterio's ``xy()`` gives them); ``attrs``: ``crs`` (WKT), ``transform`` (the 6
        affine coefficients a, b, c, d, e, f) and ``nodata``; a ``spatial_ref`` coordinate
        with ``crs_wkt`` and ``GeoTransform`` (the CF/rioxarray convention).

        Parameters
        ----------
        name : str, optional
            The DataArray's name.

        Returns
        -------
        xarray.DataArray
            Sharing memory with ``array``.

        Raises
        ------
        ImportError
            When xarray is not installed (Debian: ``apt-get install python3-xarray``).

        Example
        -------
        >>> result = nimbus.improve_cloud_mask_array(s2, pm, src.transform, src.crs)
        >>> da = result.to_xarray(name="cloud_mask")
        >>> da.sel(x=500005.0, y=3999995.0, method="nearest")
        """
        try:
            import xarray
        except ImportError as e:
            raise ImportError("GeoArray.to_xarray() needs xarray, which is not installed (Debian: apt-get install "
                              "python3-xarray); the array, transform and crs fields work without it") from e
        a = np.asarray(self.array)
        if a.ndim not in (2, 3):
            raise InputError(f"to_xarray: the array has shape {a.shape}; give (H, W) or (bands, H, W)")
        dims = ("y", "x") if a.ndim == 2 else ("band", "y", "x")
        coords = {}
        if a.ndim == 3:
            coords["band"] = np.arange(1, a.shape[0] + 1)
        attrs = {}
        gt = self.geotransform
        if gt is not None:
            x0, dx, rx, y0, ry, dy = gt
            attrs["transform"] = (dx, rx, x0, ry, dy, y0)
            if rx == 0 and ry == 0:
                coords["x"] = x0 + dx * (np.arange(a.shape[-1]) + 0.5)
                coords["y"] = y0 + dy * (np.arange(a.shape[-2]) + 0.5)
        if self.crs:
            attrs["crs"] = self.crs
        if self.nodata is not None:
            attrs["nodata"] = self.nodata
        if gt is not None or self.crs:
            ref = {"crs_wkt": self.crs or "", "spatial_ref": self.crs or ""}
            if gt is not None:
                ref["GeoTransform"] = " ".join(repr(v) for v in gt)
            coords["spatial_ref"] = xarray.Variable((), 0, attrs=ref)
            attrs["grid_mapping"] = "spatial_ref"
        return xarray.DataArray(a, dims=dims, coords=coords, attrs=attrs, name=name)


def split(value, name):
    """(array, GDAL geotransform or None, CRS text) of a GeoArray or an array-like."""
    if isinstance(value, GeoArray):
        return np.asarray(value.array), gdal_geotransform(value.transform, f"{name}.transform"), \
            crs_text(value.crs, f"{name}.crs")
    return np.asarray(value), None, ""


def geoarray(array, gt, crs_wkt, nodata):
    """A GeoArray from what read_raster's engine call returns."""
    return GeoArray(array, transform_object(gt), crs_wkt or None, nodata)
