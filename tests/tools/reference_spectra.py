"""Reference L2A reflectance spectra of the classes a cloud mask must get right, each with its source.

Used by tests/python/test_cloud_model_spectra.py (per-spectrum checks of the embedded cloud models
and a synthetic scene holding every class) and documented in docs/models.md.

Band order B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B11, B12 (L2A has no B10); values are
bottom-of-atmosphere reflectance (DN x 1e-4 after the baseline-04.00 offset). Where a source gives
fewer bands, the missing ones are filled as stated in `filled`, never tuned to the model.

Four kinds of source, named at the start of each entry's `source`:
- measured: per-band medians from real Sentinel-2 pixels (the issue-12 scene; the ukis-csmask chip
  in /work/shared/data, which is evaluation data and is not copied here, only these summary values);
- literature: representative values inside the ranges that published work gives for the class; the
  exact numbers are chosen by us within those ranges (not read off a table), and the reference is
  named for the ranges and the spectral shape;
- mixture: a first-order linear mix of two entries above (a semi-transparent layer over a surface),
  stated as such;
- stress case: a literature entry pushed to the worst case a test must survive, stated as such.
"""

BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]


def _spectrum(values):
    assert len(values) == len(BANDS)
    return [float(v) for v in values]


def _mix(a, b, fraction_a):
    return [fraction_a * x + (1.0 - fraction_a) * y for x, y in zip(a, b)]


# Clear water: strong absorption beyond 700 nm, a little blue scattering.
_CLEAR_WATER = _spectrum([0.050, 0.045, 0.030, 0.015, 0.010, 0.007, 0.006, 0.005, 0.004, 0.003, 0.002, 0.001])
# The issue-12 thick ice cloud (medians of the scene's pixels with mean visible reflectance > 0.5).
_THICK_ICE = _spectrum([1.13, 1.13, 1.03, 0.98, 0.97, 0.96, 0.95, 0.93, 0.93, 1.55, 0.23, 0.26])

SPECTRA = {
    # ---- clouds: the model must say cloud ----
    "thick_water_cloud": {
        "cloud": True,
        "values": _spectrum([0.617, 0.617, 0.603, 0.648, 0.648, 0.648, 0.773, 0.773, 0.773, 0.773, 0.603, 0.469]),
        "source": "measured: ukis-csmask sentinel2.npz, cloud label (4), brightest quarter by mean visible "
                  "reflectance, per-band median of B02 B03 B04 B08 B11 B12",
        "filled": "nearest band by wavelength as tools/evaluate.py does (B01<-B02, B05/B06<-B04, B07/B8A/B09<-B08), "
                  "so B09 is a stand-in and the model must find this cloud without the vapour test",
    },
    "thick_ice_cloud": {
        "cloud": True,
        "values": _THICK_ICE,
        "source": "measured: issue 12, L2A scene of processing baseline 04.00 stacked at 60 m with B8A standing in "
                  "for B08: medians B02 1.13, B03 1.03, B04 0.98, B8A 0.93, B09 1.55, B11 0.23, B12 0.26",
        "filled": "B01<-B02; B05-B07 linear in wavelength between B04 and B8A; B08<-B8A (as in the scene's stack)",
    },
    "thin_cirrus": {
        "cloud": True,
        "values": _mix(_THICK_ICE, _CLEAR_WATER, 0.25),
        "source": "mixture: 25 % thick_ice_cloud over 75 % clear_water, the first-order (single-layer, no multiple "
                  "reflection) model of a semi-transparent ice cloud over a dark surface",
        "filled": "-",
    },
    # ---- snow: bright in the visible like cloud, dark at 1.6 um ----
    "snow_flat": {
        "cloud": False,
        "values": _spectrum([0.96, 0.96, 0.95, 0.93, 0.92, 0.91, 0.90, 0.88, 0.87, 0.78, 0.14, 0.09]),
        "source": "literature: fresh snow on level ground. Warren (1982), 'Optical properties of snow', Rev. Geophys. "
                  "20(1): visible reflectance 0.9-0.98, falling through the near infrared as ice absorption grows "
                  "(weak ice bands near 0.90 and 1.03 um put 945 nm below 865 nm), strong absorption around 1.5 "
                  "and 2.0 um leaving 1.6 um and 2.2 um reflectance mostly below 0.2 and falling with grain size",
        "filled": "-",
    },
    "snow_mountain_sunlit": {
        "cloud": False,
        "values": _spectrum([1.00, 1.02, 1.01, 0.99, 0.98, 0.97, 0.96, 0.94, 0.93, 1.12, 0.16, 0.10]),
        "source": "literature (as snow_flat) on a sun-facing slope without terrain correction (reflectance up to "
                  "~1), at high altitude where the vapour correction can overshoot: B09/B8A raised from snow's "
                  "~0.9 to 1.2, our estimate of the overshoot for a few km of altitude, not a measurement",
        "filled": "-",
    },
    "snow_mountain_vapour_overcorrected": {
        "cloud": False,
        "values": _spectrum([1.00, 1.02, 1.01, 0.99, 0.98, 0.97, 0.96, 0.94, 0.93, 1.35, 0.16, 0.10]),
        "source": "stress case: snow_mountain_sunlit with B09/B8A = 1.45, i.e. a vapour correction as wrong as over "
                  "the issue-12 cloud tops; only the small-particle test (B12 well below B11 for snow grains) "
                  "keeps it clear",
        "filled": "-",
    },
    "snow_mountain_shaded": {
        "cloud": False,
        "values": _spectrum([0.50, 0.46, 0.40, 0.35, 0.33, 0.32, 0.31, 0.30, 0.29, 0.24, 0.05, 0.03]),
        "source": "literature (as snow_flat) on a slope in terrain shadow, lit by the blue sky only: darker and "
                  "bluer (reflectance falling with wavelength), which is why it passes the haze test",
        "filled": "-",
    },
    # ---- other bright or cloud-like surfaces ----
    "bright_desert": {
        "cloud": False,
        "values": _spectrum([0.22, 0.27, 0.37, 0.48, 0.52, 0.55, 0.57, 0.59, 0.60, 0.61, 0.68, 0.62]),
        "source": "literature: sand seas such as the Libya-4 CEOS pseudo-invariant calibration site, whose "
                  "reflectance rises from ~0.2-0.3 in the blue to ~0.6-0.7 in the SWIR (iron-oxide absorption "
                  "in the blue, no water or vegetation)",
        "filled": "-",
    },
    "bright_soil": {
        "cloud": False,
        "values": _spectrum([0.172, 0.172, 0.177, 0.205, 0.205, 0.205, 0.397, 0.397, 0.397, 0.397, 0.458, 0.339]),
        "source": "measured: ukis-csmask sentinel2.npz, land label (3), brightest quarter by mean visible "
                  "reflectance, per-band median of B02 B03 B04 B08 B11 B12",
        "filled": "nearest band by wavelength as tools/evaluate.py does",
    },
    "urban_mixed": {
        "cloud": False,
        "values": _spectrum([0.10, 0.11, 0.13, 0.15, 0.17, 0.19, 0.21, 0.22, 0.23, 0.23, 0.26, 0.22]),
        "source": "literature: a dense built-up 10-20 m pixel, a mix of roofing, asphalt, concrete and some "
                  "vegetation; man-made materials are flat to slowly rising from 0.1 to 0.3 across 0.4-2.2 um "
                  "(e.g. the man-made material spectra of the ECOSTRESS spectral library)",
        "filled": "-",
    },
    "urban_red_roofs": {
        "cloud": False,
        "values": _spectrum([0.08, 0.09, 0.12, 0.22, 0.27, 0.30, 0.32, 0.33, 0.34, 0.35, 0.40, 0.33]),
        "source": "literature: terracotta/clay-tile roofs (iron-oxide absorption below 600 nm, red and beyond "
                  "bright), as in clay roofing spectra of the ECOSTRESS spectral library",
        "filled": "-",
    },
    "turbid_water": {
        "cloud": False,
        "values": _spectrum([0.08, 0.10, 0.16, 0.17, 0.14, 0.08, 0.07, 0.06, 0.05, 0.03, 0.01, 0.008]),
        "source": "literature: sediment-laden river or coastal water: suspended matter raises the green-red "
                  "reflectance to ~0.1-0.2 while water absorption keeps the NIR low and the SWIR near 0",
        "filled": "-",
    },
    "clear_water": {
        "cloud": False,
        "values": _CLEAR_WATER,
        "source": "literature: clear deep water, reflectance a few per cent in the blue and close to 0 beyond "
                  "700 nm (liquid water absorption)",
        "filled": "-",
    },
    "vegetation": {
        "cloud": False,
        "values": _spectrum([0.03, 0.04, 0.08, 0.04, 0.11, 0.28, 0.34, 0.37, 0.39, 0.39, 0.20, 0.10]),
        "source": "literature: green vegetation: chlorophyll absorption in blue and red, the red-edge rise to a "
                  "0.3-0.5 NIR plateau, leaf-water absorption lowering 1.6 and 2.2 um",
        "filled": "-",
    },
}
