"""The embedded cloud models on reference spectra (tests/tools/reference_spectra.py, each with its
source) and on a synthetic scene holding every class: clouds (water, thick ice, thin cirrus) must be
cloud, snow (flat, sunlit and shaded mountain slopes), desert, soil, urban, water and vegetation clear.
The models run through the real pipeline (improve-cloud-mask --keep-probabilities)."""
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from scipy import ndimage

from conftest import run_nimbus
from reference_spectra import BANDS, SPECTRA

THRESHOLD = 0.3  # the CLI's default --cloud-thr
CELL = 128       # 4 x 4 cells of 128 px: one pure spectrum per cell
NAMES = list(SPECTRA)


def _write_stack(refl, work):
    """12-band DN GeoTIFF + empty product mask from reflectance [12, H, W]; returns their paths."""
    dn = np.clip(np.round(refl * 10000.0), 1, 65535).astype(np.uint16)
    _, h, w = dn.shape
    profile = dict(driver="GTiff", width=w, height=h, count=12, dtype="uint16", crs="EPSG:32631",
                   transform=from_origin(300000, 5000000, 10, 10), nodata=0)
    work.mkdir(parents=True, exist_ok=True)
    with rasterio.open(work / "s2.tif", "w", **profile) as dst:
        dst.write(dn)
    with rasterio.open(work / "pm.tif", "w", **dict(profile, count=1, dtype="uint8", nodata=100)) as dst:
        dst.write(np.zeros((1, h, w), np.uint8))
    return work / "s2.tif", work / "pm.tif"


def _cloud_probability(nimbus_bin, refl, work, model):
    s2, pm = _write_stack(refl, work)
    out = work / model
    out.mkdir()
    run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", s2, "--product-mask", pm, "--out", out / "mask.tif",
               "--keep-probabilities", out, "--cloud-model", f"embedded:{model}", "-q", check=True)
    with rasterio.open(out / "cloud_probability.tif") as src:
        return src.read(1)


def _grid(spectra):
    refl = np.zeros((12, 4 * CELL, 4 * CELL), np.float32)
    for i, values in enumerate(spectra):
        r, c = divmod(i, 4)
        refl[:, r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = np.asarray(values, np.float32)[:, None, None]
    # The two spare cells hold vegetation, a neutral background.
    for i in range(len(spectra), 16):
        r, c = divmod(i, 4)
        refl[:, r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = np.asarray(SPECTRA["vegetation"]["values"],
                                                                                np.float32)[:, None, None]
    return refl


def _cell_values(prob, count):
    """The probability at the centre of each cell (every pixel of a cell is the same spectrum)."""
    return [float(prob[(i // 4) * CELL + CELL // 2, (i % 4) * CELL + CELL // 2]) for i in range(count)]


@pytest.fixture(scope="module")
def spectra_probabilities(nimbus_bin, tmp_path_factory):
    work = tmp_path_factory.mktemp("spectra")
    refl = _grid([SPECTRA[n]["values"] for n in NAMES])
    return {model: dict(zip(NAMES, _cell_values(_cloud_probability(nimbus_bin, refl, work / model, model),
                                                len(NAMES))))
            for model in ("nimbus_cloud_v1", "nimbus_cloud_v2")}


def test_reference_spectra_are_complete_and_sourced():
    assert len(BANDS) == 12 and "B10" not in BANDS
    for name, entry in SPECTRA.items():
        assert len(entry["values"]) == 12, name
        assert all(0.0 <= v <= 1.6 for v in entry["values"]), name
        assert entry["source"].startswith(("measured", "literature", "mixture", "stress case")), name
    classes = {n.split("_")[0] for n in SPECTRA}
    assert {"thick", "thin", "snow", "bright", "urban", "turbid", "clear", "vegetation"} <= classes


@pytest.mark.parametrize("name", NAMES)
def test_v2_classifies_reference_spectrum(name, spectra_probabilities):
    p = spectra_probabilities["nimbus_cloud_v2"][name]
    if SPECTRA[name]["cloud"]:
        assert p > 0.5, f"{name}: cloud probability {p:.4f}, expected cloud ({SPECTRA[name]['source']})"
    else:
        assert p < THRESHOLD, f"{name}: cloud probability {p:.4f}, expected clear ({SPECTRA[name]['source']})"


def test_v1_still_loads_and_still_misses_thick_ice(spectra_probabilities):
    """v1 is kept unchanged for reproducibility, including the flaw v2 fixes."""
    v1 = spectra_probabilities["nimbus_cloud_v1"]
    assert v1["thick_ice_cloud"] < 0.01 and v1["thick_water_cloud"] > 0.99
    for name in NAMES:
        if not SPECTRA[name]["cloud"]:
            assert v1[name] < THRESHOLD, name


def test_v2_equals_v1_where_b09_is_a_stand_in(nimbus_bin, tmp_path):
    """Chips without B09 get it from B8A/B08 (tools/evaluate.py); then the vapour test must stay silent
    and v2 must give what v1 gives, on every class."""
    spectra = []
    for name in NAMES:
        values = list(SPECTRA[name]["values"])
        values[BANDS.index("B09")] = values[BANDS.index("B8A")]
        spectra.append(values)
    refl = _grid(spectra)
    p = {m: _cell_values(_cloud_probability(nimbus_bin, refl, tmp_path / m, m), len(NAMES))
         for m in ("nimbus_cloud_v1", "nimbus_cloud_v2")}
    for name, p1, p2 in zip(NAMES, p["nimbus_cloud_v1"], p["nimbus_cloud_v2"]):
        assert abs(p2 - p1) < 0.01, f"{name}: v1 {p1:.4f}, v2 {p2:.4f} with B09 = B8A"


def _smooth(rng, shape, sigma):
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-12)


def synthetic_scene(seed=3, size=512):
    """Every clear class as a textured field, with the three cloud types over the surfaces they are
    hard to tell from: thick ice over snowy mountains, thin cirrus over water, water clouds over land."""
    rng = np.random.default_rng(seed)
    clear_classes = [n for n in NAMES if not SPECTRA[n]["cloud"]]
    # Surface: vertical strips of each clear class, brightness varying +-10 % (terrain, texture).
    strip = size // len(clear_classes) + 1
    cls = np.minimum(np.arange(size) // strip, len(clear_classes) - 1)
    surface_class = np.broadcast_to(cls[None, :], (size, size))
    texture = 1.0 + 0.10 * _smooth(rng, (size, size), 4)
    refl = np.stack([np.asarray([SPECTRA[clear_classes[k]]["values"][b] for k in range(len(clear_classes))],
                                np.float32)[surface_class] for b in range(12)]) * texture[None]
    truth = np.zeros((size, size), bool)
    touched = np.zeros((size, size), bool)  # any cloud at all, however thin
    # Cloud blobs with soft edges: alpha 1 in the core, fading out over ~10 px.
    for name, row, col, radius in [("thick_ice_cloud", 130, strip * clear_classes.index("snow_mountain_sunlit"), 60),
                                   ("thick_ice_cloud", 380, strip * clear_classes.index("snow_flat"), 50),
                                   ("thin_cirrus", 140, strip * clear_classes.index("clear_water"), 45),
                                   ("thick_water_cloud", 390, strip * clear_classes.index("vegetation"), 55),
                                   ("thick_water_cloud", 260, strip * clear_classes.index("bright_desert"), 40)]:
        yy, xx = np.mgrid[0:size, 0:size]
        dist = np.hypot(yy - row, xx - col) + 6.0 * _smooth(rng, (size, size), 6)
        alpha = np.clip((radius - dist) / 10.0, 0.0, 1.0)
        spectrum = np.asarray(SPECTRA[name]["values"], np.float32)[:, None, None]
        refl = refl * (1.0 - alpha[None]) + spectrum * alpha[None]
        truth |= alpha > 0.5
        touched |= alpha > 0.0
    refl += rng.normal(0.0, 0.004, refl.shape).astype(np.float32)
    return np.clip(refl, 0.0001, None), truth, touched, surface_class, clear_classes


# Clear classes that a per-pixel model cannot keep below 1 % false cloud once textured, with why.
# They are held to "no worse than v1" and a looser bound instead.
KNOWN_LIMITS = {
    "bright_soil": "the haze test (rho_B02 - 0.5 rho_B04 > 0.10) is an absolute threshold; the brightest "
                   "(hazy) ukis land sits just under it and crosses it where the texture makes it ~10 % brighter",
}


def test_v2_on_a_synthetic_scene_of_every_class(nimbus_bin, tmp_path):
    refl, truth, touched, surface_class, clear_classes = synthetic_scene()
    cloud = {m: _cloud_probability(nimbus_bin, refl, tmp_path / m, m) > THRESHOLD
             for m in ("nimbus_cloud_v1", "nimbus_cloud_v2")}
    v1, v2 = cloud["nimbus_cloud_v1"], cloud["nimbus_cloud_v2"]
    # Blob edges (alpha near 0.5) are genuinely ambiguous: score cores, and clear ground no cloud touches.
    core = ndimage.binary_erosion(truth, iterations=4)
    clear = ~ndimage.binary_dilation(touched, iterations=2)
    assert v2[core].mean() > 0.98, f"only {v2[core].mean():.3f} of cloud cores found"
    assert v1[core].mean() < 0.8, "the scene must hold the ice clouds v1 misses, or it tests nothing new"
    for k, name in enumerate(clear_classes):
        region = clear & (surface_class == k)
        assert region.sum() > 1000, name
        fp1, fp2 = v1[region].mean(), v2[region].mean()
        assert fp2 <= fp1 + 0.002, f"{name}: v2 calls {fp2:.3f} of its clear pixels cloud, v1 {fp1:.3f}"
        limit = 0.10 if name in KNOWN_LIMITS else 0.01
        assert fp2 < limit, f"{name}: {fp2:.3f} of its clear pixels called cloud"
    tp, fp, fn = np.sum(v2 & truth), np.sum(v2 & ~truth), np.sum(~v2 & truth)
    assert tp / (tp + fp + fn) > 0.85


def test_v2_only_ever_adds_cloud_where_the_tops_are_high(nimbus_bin, tmp_path):
    """v2 = v1 with the snow veto lifted: on any spectrum its probability is never below v1's, and the
    mask changes (at the default threshold) only where the water-vapour excess test fires, B09 above
    1.3 B8A. (Below the threshold the soft OR can lift a probability a little anywhere.)"""
    rng = np.random.default_rng(11)
    refl = rng.uniform(0.0, 1.2, (12, 512, 512)).astype(np.float32)
    # Half the pixels with a snow-like SWIR (where v1's veto acts), to exercise the lifted veto.
    refl[10:, :, 256:] *= 0.2
    p1 = _cloud_probability(nimbus_bin, refl, tmp_path / "v1", "nimbus_cloud_v1")
    p2 = _cloud_probability(nimbus_bin, refl, tmp_path / "v2", "nimbus_cloud_v2")
    assert np.all(p2 >= p1 - 1e-6)
    changed = (p2 > THRESHOLD) & (p1 <= THRESHOLD)
    assert changed.sum() > 1000, "the random spectra must exercise the new tests"
    dn = np.clip(np.round(refl * 10000.0), 1, 65535) * 1e-4
    b09, b8a = dn[BANDS.index("B09")], dn[BANDS.index("B8A")]
    assert np.all(b09[changed] > 1.3 * b8a[changed])
