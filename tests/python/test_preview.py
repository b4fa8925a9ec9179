"""The --preview quicklook: true colour, the mask tinted (cloud magenta, shadow yellow), nodata as a neutral grey
hatch, a legend strip below the image."""
import numpy as np
import pytest
import rasterio

from conftest import run_nimbus

HATCH_GREYS = {110, 150}


def _preview(nimbus_bin, scene, tmp_path, *extra):
    from PIL import Image
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask", scene["product_mask"],
               "--out", tmp_path / "m.tif", "--preview", tmp_path / "p.png", "-q", *extra, check=True)
    rgb = np.asarray(Image.open(tmp_path / "p.png").convert("RGB")).astype(int)
    with rasterio.open(tmp_path / "m.tif") as src:
        mask = src.read(1).astype(bool)
    # The image part: the preview's width scaled like its height, the legend strip below it.
    scale = rgb.shape[1] / mask.shape[1]
    rgb = rgb[:round(mask.shape[0] * scale)]
    with rasterio.open(scene["s2"]) as src:
        nodata = np.any(src.read() == 0, axis=0)
    return rgb, mask, nodata


@pytest.mark.parametrize("blend", ["midpoint", "linear"])
def test_nodata_is_a_grey_hatch_not_the_mask_colour(blend, nimbus_bin, make_scene, tmp_path):
    scene = make_scene(600, 560, seed=5, nodata_wedge=True)
    rgb, mask, nodata = _preview(nimbus_bin, scene, tmp_path, "--blend", blend)
    assert rgb.shape[:2] == mask.shape  # below 1024 px the preview is full size
    assert nodata.mean() > 0.1 and mask[nodata].all(), "the mask covers nodata, which the preview must not show"
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    grey = (r == g) & (g == b) & np.isin(r, list(HATCH_GREYS))
    assert grey[nodata].all(), "every nodata pixel is drawn in one of the hatch greys"
    # A hatch, not a flat fill: both greys appear in the wedge.
    assert set(np.unique(r[nodata])) == HATCH_GREYS
    # Valid masked pixels are tinted magenta (cloud: red and blue lifted above green) or yellow (shadow: red and
    # green above blue), and never hatch-grey.
    valid_masked = mask & ~nodata
    assert valid_masked.sum() > 1000
    magenta = (r > g) & (b > g)
    yellow = (r > b) & (g > b)
    assert np.mean(magenta[valid_masked] | yellow[valid_masked]) > 0.99
    assert magenta[valid_masked].mean() > 0.3 and yellow[valid_masked].mean() > 0.05
    assert not grey[valid_masked].any()


def test_scene_without_nodata_has_no_hatch(nimbus_bin, make_scene, tmp_path):
    scene = make_scene(600, 560, seed=5, nodata_wedge=False)
    rgb, mask, nodata = _preview(nimbus_bin, scene, tmp_path)
    assert not nodata.any()
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hatch = (r == g) & (g == b) & np.isin(r, list(HATCH_GREYS))
    # A true-colour pixel may be grey by chance, but not a hatch's worth of them.
    assert hatch.mean() < 0.01


def test_downscaled_preview_hatches_where_most_of_a_pixel_is_nodata(nimbus_bin, make_scene, tmp_path):
    import cv2
    scene = make_scene(1100, 700, seed=9, nodata_wedge=True)
    rgb, mask, nodata = _preview(nimbus_bin, scene, tmp_path)
    assert rgb.shape[:2] == (round(700 * 1024 / 1100), 1024)  # longest side 1024
    expected = cv2.resize(nodata.astype(np.uint8), rgb.shape[1::-1], interpolation=cv2.INTER_AREA) != 0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hatch = (r == g) & (g == b) & np.isin(r, list(HATCH_GREYS))
    assert expected.mean() > 0.1 and hatch[expected].all()
    # Outside the nodata, a true-colour pixel may be one of the greys by chance, but rarely.
    assert hatch[~expected].mean() < 0.005
