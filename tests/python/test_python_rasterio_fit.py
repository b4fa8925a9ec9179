"""The Python API as rasterio/xarray users hold rasters: documented functions, bands-first
arrays with their georeferencing, Affine or GDAL transforms, EPSG/WKT/CRS objects, a clean
namespace, and read_raster -> improve_cloud_mask_array -> rasterio equal to the CLI."""
import inspect
import pydoc
import sys

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

from conftest import run_nimbus

GT = (500000.0, 10.0, 0.0, 4000000.0, 0.0, -10.0)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from synthetic_scene import make_scene, write_scene
    return write_scene(make_scene(600, 560, 5, True), tmp_path_factory.mktemp("fit") / "scene")


@pytest.fixture(scope="module")
def cli_mask(nimbus_bin, scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "mask.tif"
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask", scene["product_mask"],
               "--out", out, "-q", check=True)
    return out


def _public_functions(nimbus):
    return {name: getattr(nimbus, name) for name in nimbus.__all__ if inspect.isfunction(getattr(nimbus, name))}


def _example_code(doc):
    """The code of a docstring's Example section, without the prompts."""
    example = doc.split("Example\n-------\n", 1)[1]
    return "\n".join(line[4:] for line in example.splitlines() if line.startswith((">>> ", "... ")))


def test_every_public_function_has_a_docstring_with_its_sections(nimbus_py):
    functions = _public_functions(nimbus_py)
    assert {"improve_cloud_mask", "improve_cloud_mask_array", "read_raster", "write_raster", "compute_cloud_prob",
            "merge_cloud_masks", "run_workflow", "batch"} <= set(functions)
    for name, function in functions.items():
        doc = inspect.getdoc(function)
        assert doc and len(doc.splitlines()[0]) > 20, name
        assert "Example\n-------\n>>> " in doc, name
        compile(_example_code(doc), f"<example of {name}>", "exec")  # examples are valid Python
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                assert f"\n{parameter.name} : " in doc, (name, parameter.name)
    for cls in (nimbus_py.GeoArray, nimbus_py.InputError):
        assert len(inspect.getdoc(cls)) > 80
    assert "Raises\n------\nImportError" in inspect.getdoc(nimbus_py.GeoArray.to_xarray)


def test_help_of_improve_cloud_mask_shows_the_declared_parameters(nimbus_py):
    text = pydoc.render_doc(nimbus_py.improve_cloud_mask, renderer=pydoc.plaintext)
    for section in ("Parameters", "Returns", "Raises", "InputError", "Example", "nimbus.improve_cloud_mask("):
        assert section in text, section
    for p in nimbus_py.operation_parameters():
        assert f"{p['name']} : " in text, p["name"]
    # Types, defaults and ranges come from the declaration.
    assert "cloud_thr : float, default 0.3, in [0, 1]" in text
    assert "window : int, default 512, >= 64" in text
    assert "blend : str, default 'midpoint', one of 'midpoint', 'linear'" in text
    assert "s2_raster : str or os.PathLike, required" in text
    signature = inspect.signature(nimbus_py.improve_cloud_mask)
    assert signature.parameters["cloud_thr"].default == 0.3
    assert signature.parameters["cloud_thr"].kind == inspect.Parameter.KEYWORD_ONLY
    # The array version takes the same options, with the same documentation.
    array_doc = inspect.getdoc(nimbus_py.improve_cloud_mask_array)
    assert "cloud_thr : float, default 0.3, in [0, 1]" in array_doc and "allow_ungeoreferenced : bool" in array_doc
    assert "s2_raster" not in inspect.signature(nimbus_py.improve_cloud_mask_array).parameters


def test_the_public_namespace_is_the_api(nimbus_py):
    public = {n for n in dir(nimbus_py) if not (n.startswith("__") and n.endswith("__"))}
    assert public == set(nimbus_py.__all__) - {"__version__"} | {"dask"}
    assert not [n for n in public if n.startswith("_")]
    for name in ("np", "os", "inspect", "tempfile", "uuid", "check_batch_outputs", "remove_stale_partials",
                 "check_scene_ids", "_nimbus", "_api", "_location"):
        assert name not in dir(nimbus_py), name
    for name in nimbus_py.__all__:
        assert hasattr(nimbus_py, name), name
    namespace = {}
    exec("from nimbus import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(nimbus_py.__all__)
    assert nimbus_py.dask.improve_cloud_masks.__doc__  # the Dask submodule without importing it first
    assert nimbus_py.improve_cloud_mask.__module__ == "nimbus" and nimbus_py.GeoArray.__module__ == "nimbus"


def test_read_raster_improve_cloud_mask_array_and_rasterio_equal_the_cli(nimbus_py, scene, cli_mask, tmp_path):
    s2 = nimbus_py.read_raster(scene["s2"])
    pm = nimbus_py.read_raster(scene["product_mask"])
    assert s2.array.shape == (12, 560, 600) and pm.array.shape == (1, 560, 600)
    with rasterio.open(cli_mask) as cli:
        expected, profile = cli.read(1), cli.profile
    # GeoArrays straight from read_raster: the grid comes with them.
    result = nimbus_py.improve_cloud_mask_array(s2, pm)
    assert isinstance(result.transform, Affine)
    assert result.transform == profile["transform"] and CRS.from_wkt(result.crs) == profile["crs"]
    assert result.nodata == profile["nodata"] == 100
    assert np.array_equal(result.array, expected)
    # Written with rasterio from the returned transform and CRS: the CLI's file, pixel for pixel.
    mask, transform, crs, nodata = result
    with rasterio.open(tmp_path / "by_rasterio.tif", "w", driver="GTiff", width=mask.shape[1], height=mask.shape[0],
                       count=1, dtype=mask.dtype, transform=transform, crs=crs, nodata=nodata) as dst:
        dst.write(mask, 1)
    with rasterio.open(tmp_path / "by_rasterio.tif") as mine:
        assert mine.read(1).tobytes() == expected.tobytes()
        assert mine.transform == profile["transform"] and mine.crs == profile["crs"]
        assert mine.nodata == profile["nodata"] and mine.dtypes == ("uint8",)
    # The product mask as read_raster's (1, H, W) array and as (H, W); the S2 stack from rasterio.
    with rasterio.open(scene["s2"]) as src:
        raw, src_transform, src_crs = src.read(), src.transform, src.crs
    for product_mask in (pm.array, pm.array[0], pm.array[0].astype(bool)):
        again = nimbus_py.improve_cloud_mask_array(raw, product_mask, src_transform, src_crs)
        assert np.array_equal(again.array, expected) and again.transform == src_transform
    assert np.array_equal(np.asarray(result), expected)  # numpy sees a GeoArray's array


def _write_and_read(nimbus_py, path, geotransform, crs):
    nimbus_py.write_raster(path, np.arange(12, dtype=np.uint8).reshape(3, 4), geotransform, crs)
    back = nimbus_py.read_raster(path)
    with rasterio.open(path) as src:
        return back, src.transform, src.crs


@pytest.mark.parametrize("transform", [Affine.from_gdal(*GT), GT, list(GT), np.array(GT)],
                         ids=["Affine", "gdal-tuple", "list", "ndarray"])
def test_transforms_as_affine_or_gdal_sequences(nimbus_py, tmp_path, transform):
    back, file_transform, _ = _write_and_read(nimbus_py, tmp_path / "t.tif", transform, 32631)
    assert file_transform == Affine.from_gdal(*GT)
    assert back.transform == Affine.from_gdal(*GT) and back.geotransform == GT


def _osr_32631():
    osr = pytest.importorskip("osgeo.osr")
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    return srs


@pytest.mark.parametrize("make_crs", [lambda: 32631, lambda: np.int64(32631), lambda: "EPSG:32631",
                                      lambda: "epsg:32631", lambda: CRS.from_epsg(32631).to_wkt(),
                                      lambda: CRS.from_epsg(32631), _osr_32631],
                         ids=["int", "numpy-int", "EPSG-string", "lower-case", "WKT", "rasterio-CRS", "osr"])
def test_crs_as_epsg_codes_strings_wkt_and_crs_objects(nimbus_py, tmp_path, make_crs):
    back, _, file_crs = _write_and_read(nimbus_py, tmp_path / "c.tif", GT, make_crs())
    assert file_crs.to_epsg() == 32631 and CRS.from_wkt(back.crs).to_epsg() == 32631


@pytest.mark.parametrize("transform, message", [
    ((10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0), r"affine coefficients .* pass affine.Affine\(a, b, c, d, e, f\)"),
    (tuple(Affine.from_gdal(*GT)), r"not a geotransform; give an affine.Affine"),  # Affine's 9 numbers as a tuple
    ((1.0, 2.0), r"not a geotransform"),
    ("500000 10 0 4000000 0 -10", r"is text"),
    ((500000.0, float("nan"), 0.0, 4000000.0, 0.0, -10.0), r"non-finite"),
])
def test_bad_transforms_name_the_fix(nimbus_py, tmp_path, transform, message):
    with pytest.raises(nimbus_py.InputError, match=r"^geotransform = .*" + message):
        nimbus_py.write_raster(tmp_path / "bad.tif", np.zeros((3, 4), np.uint8), transform, 32631)
    assert not (tmp_path / "bad.tif").exists()


@pytest.mark.parametrize("crs, message", [
    (True, r"^crs = True is not a CRS"), (-4326, r"^crs = -4326 is not an EPSG code"),
    (object(), r"^crs = <object .* is not a CRS; give an EPSG code"), ("EPSG:99999999", r"CRS 'EPSG:99999999'"),
])
def test_bad_crs_name_the_fix(nimbus_py, tmp_path, crs, message):
    with pytest.raises(nimbus_py.InputError, match=message):
        nimbus_py.write_raster(tmp_path / "bad.tif", np.zeros((3, 4), np.uint8), GT, crs)


def test_bands_last_arrays_get_the_transpose_hint(nimbus_py, scene):
    s2 = nimbus_py.read_raster(scene["s2"]).array
    pm = nimbus_py.read_raster(scene["product_mask"]).array
    hint = r"expected \(12, H, W\), got \(H, W, 12\) = \(560, 600, 12\): use s2.transpose\(2, 0, 1\)"
    with pytest.raises(nimbus_py.InputError, match=hint):
        nimbus_py.improve_cloud_mask_array(s2.transpose(1, 2, 0), pm)
    with pytest.raises(nimbus_py.InputError, match=hint):
        nimbus_py.compute_cloud_prob(s2.transpose(1, 2, 0))
    with pytest.raises(nimbus_py.InputError, match=r"got \(H, W, 1\) = \(560, 600, 1\): use product_mask\[..., 0\]"):
        nimbus_py.improve_cloud_mask_array(s2, pm.transpose(1, 2, 0))
    with pytest.raises(nimbus_py.InputError, match=r"product_mask: expected \(H, W\) or \(1, H, W\) .*\(2, 560, 600\)"):
        nimbus_py.improve_cloud_mask_array(s2, np.concatenate([pm, pm]))
    with pytest.raises(nimbus_py.InputError, match=r"product_mask has shape \(560, 599\), the scene is \(560, 600\)"):
        nimbus_py.improve_cloud_mask_array(s2, pm[0, :, 1:])


def test_out_without_georeferencing_is_refused_unless_allowed(nimbus_py, scene, cli_mask, tmp_path):
    s2 = nimbus_py.read_raster(scene["s2"])
    pm = nimbus_py.read_raster(scene["product_mask"])
    with pytest.raises(nimbus_py.InputError, match=r"without geotransform and crs, .*allow_ungeoreferenced=True"):
        nimbus_py.improve_cloud_mask_array(s2.array, pm.array, out=tmp_path / "m.tif")
    with pytest.raises(nimbus_py.InputError, match=r"would be written without geotransform, so no GIS"):
        nimbus_py.improve_cloud_mask_array(s2.array, pm.array, crs=32631, out=tmp_path / "m.tif")
    with pytest.raises(nimbus_py.InputError, match=r"the sinks in out_dir .* without geotransform and crs"):
        nimbus_py.run_workflow(nimbus_py.SEED_WORKFLOW, {"s2_raster": s2.array, "product_mask": pm.array},
                               out_dir=tmp_path / "wf")
    assert sorted(tmp_path.iterdir()) == []
    # Asked for explicitly: the same mask, without georeferencing.
    result = nimbus_py.improve_cloud_mask_array(s2.array, pm.array, out=tmp_path / "m.tif", allow_ungeoreferenced=True)
    assert result.transform is None and result.crs is None
    with pytest.warns(NotGeoreferencedWarning), rasterio.open(tmp_path / "m.tif") as written, \
            rasterio.open(cli_mask) as cli:
        assert written.crs is None and np.array_equal(written.read(1), cli.read(1))
    # GeoArray inputs bring their grid, so out= needs nothing more.
    nimbus_py.improve_cloud_mask_array(s2, pm, out=tmp_path / "g.tif")
    with rasterio.open(tmp_path / "g.tif") as written, rasterio.open(cli_mask) as cli:
        assert written.transform == cli.transform and written.crs == cli.crs


def test_geoarrays_on_different_grids_are_refused(nimbus_py, scene):
    s2 = nimbus_py.read_raster(scene["s2"])
    pm = nimbus_py.read_raster(scene["product_mask"])
    shifted = pm._replace(transform=pm.transform * Affine.translation(1, 0))
    with pytest.raises(nimbus_py.InputError, match=r"s2 and product_mask are on different grids"):
        nimbus_py.improve_cloud_mask_array(s2, shifted)


def test_without_affine_transforms_are_gdal_tuples(nimbus_py, tmp_path, monkeypatch):
    nimbus_py.write_raster(tmp_path / "a.tif", np.ones((3, 4), np.uint8), GT, 32631)
    monkeypatch.setitem(sys.modules, "affine", None)  # import affine now raises ImportError
    back = nimbus_py.read_raster(tmp_path / "a.tif")
    assert type(back.transform) is tuple and back.transform == GT and back.geotransform == GT
    nimbus_py.write_raster(tmp_path / "b.tif", back)  # a GeoArray brings its grid and CRS
    with rasterio.open(tmp_path / "b.tif") as src:
        assert src.transform.to_gdal() == GT and src.crs.to_epsg() == 32631


def test_to_xarray_gives_a_georeferenced_data_array(nimbus_py, scene):
    xarray = pytest.importorskip("xarray")
    s2 = nimbus_py.read_raster(scene["s2"])
    result = nimbus_py.improve_cloud_mask_array(s2, nimbus_py.read_raster(scene["product_mask"]))
    da = result.to_xarray(name="cloud_mask")
    assert isinstance(da, xarray.DataArray) and da.dims == ("y", "x") and da.name == "cloud_mask"
    assert np.array_equal(da.values, result.array)
    with rasterio.open(scene["s2"]) as src:
        xs, _ = src.xy([0] * 600, list(range(600)))
        _, ys = src.xy(list(range(560)), [0] * 560)
        assert np.allclose(da.x.values, xs) and np.allclose(da.y.values, ys)
        assert da.attrs["transform"] == tuple(src.transform)[:6] and CRS.from_wkt(da.attrs["crs"]) == src.crs
        assert da.coords["spatial_ref"].attrs["GeoTransform"].split() == [repr(v) for v in src.transform.to_gdal()]
    assert da.attrs["nodata"] == 100
    # Pixel lookups by map coordinates.
    assert int(da.sel(x=xs[17], y=ys[33])) == result.array[33, 17]
    bands = s2.to_xarray()
    assert bands.dims == ("band", "y", "x") and list(bands.band.values) == list(range(1, 13))


def test_to_xarray_without_xarray_says_how_to_get_it(nimbus_py, scene, monkeypatch):
    result = nimbus_py.read_raster(scene["product_mask"])
    monkeypatch.setitem(sys.modules, "xarray", None)
    with pytest.raises(ImportError, match=r"to_xarray\(\) needs xarray.*apt-get install python3-xarray"):
        result.to_xarray()
    assert result.array.shape == (1, 560, 600)  # everything else works without it
