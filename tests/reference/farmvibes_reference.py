"""Reference implementation of FarmVibes.AI improve_cloud_mask, written from the
behavioural spec (shared/spec/farmvibes-improve-cloud-mask.md) with numpy,
rasterio, scipy and scikit-image, for golden parity tests against Nimbus.

It follows the spec literally, including FarmVibes' per-chip reads, numpy
float32 arithmetic and skimage/scipy morphology. Where FarmVibes is buggy it
does what FarmVibes intends (see docs/differences.md):
  * softmax is computed per sample (FarmVibes breaks for batch_size > 1);
  * remove_small_components fills clear holes with a boolean inversion
    instead of relying on uint8 `~` (same result, by design rather than by luck).

The model is any callable taking float32 [1, C, H, W] and returning [1, K, H, W].
"""
import math

import numpy as np
import rasterio
from rasterio.windows import Window
from scipy import ndimage
from skimage.measure import label
from skimage.morphology import disk

NODATA = 100.0


# ---------------------------------------------------------------- chip grid (2.2)
def read_intervals(dim, chip, step):
    if dim < chip:
        raise ValueError(f"dim_size={dim} cannot be smaller than chip_size={chip}.")
    n = math.ceil((dim - chip) / step) + 1
    if dim > chip:
        n = max(n, 2)
    starts = np.round(np.linspace(0, dim - chip, n)).astype(int)
    return [(int(s), int(s) + chip) for s in starts]


def write_intervals(dim, chip, step):
    reads = read_intervals(dim, chip, step)
    edges = [reads[0][0]] + [(reads[k][1] + reads[k + 1][0]) // 2 for k in range(len(reads) - 1)] + [reads[-1][1]]
    writes = [(edges[k], edges[k + 1]) for k in range(len(reads))]
    chip_ranges = [(w0 - r0, w1 - r0) for (w0, w1), (r0, _) in zip(writes, reads)]
    return reads, writes, chip_ranges


# -------------------------------------------------------- probabilities (2.3, 2.4)
def softmax_class1(logits):
    x = logits.astype(np.float32)
    e = np.exp(x - np.max(x, axis=1, keepdims=True))
    p = e / np.sum(e, axis=1, keepdims=True)
    return p[:, 1:]


def sigmoid(logits):
    x = logits.astype(np.float32)
    with np.errstate(over="ignore"):
        return (1 / (1 + np.exp(-x))).astype(np.float32)


def linear_blend_weights(reads, chip):
    """Nimbus' --blend linear (not FarmVibes): per chip along one axis, 1 inside, ramping
    over the pixels shared with the previous chip as (t + 0.5) / L and with the next as
    (chip - t - 0.5) / R."""
    t = np.arange(chip, dtype=np.float64)
    weights = []
    for i, (start, end) in enumerate(reads):
        w = np.ones(chip)
        if i > 0:
            w = np.minimum(w, (t + 0.5) / (reads[i - 1][1] - start))
        if i + 1 < len(reads):
            w = np.minimum(w, (chip - t - 0.5) / (end - reads[i + 1][0]))
        weights.append(w)
    return weights


def compute_probability(raster_path, model, kind, window_size=512, overlap=0.25, in_memory=False,
                        blend="midpoint"):
    """kind: 'cloud' (raw DN, softmax class 1) or 'shadow' (DN * 1e-4, sigmoid).
    blend: 'midpoint' (FarmVibes) or 'linear' (Nimbus' weighted average of overlapping chips)."""
    step = int(window_size * (1 - overlap))
    with rasterio.open(raster_path) as src:
        height, width = src.height, src.width
        rows, rows_w, rows_c = write_intervals(height, window_size, step)
        cols, cols_w, cols_c = write_intervals(width, window_size, step)
        out = np.empty((height, width), np.float32)
        if blend == "linear":
            row_w = linear_blend_weights(rows, window_size)
            col_w = linear_blend_weights(cols, window_size)
            sum_wp = np.zeros((height, width))
            sum_w = np.zeros((height, width))
            invalid = np.zeros((height, width), bool)
        whole = src.read(masked=True) if in_memory else None
        for j in range(len(rows)):
            for i in range(len(cols)):
                (r0, r1), (c0, c1) = rows[j], cols[i]
                if whole is None:
                    chip = src.read(window=Window(c0, r0, c1 - c0, r1 - r0), masked=True)
                else:
                    chip = whole[:, r0:r1, c0:c1]
                data = np.ma.getdata(chip).astype(np.float32)
                mask = np.ma.getmaskarray(chip)
                if mask.all():
                    prob = np.full((1, window_size, window_size), NODATA, np.float32)
                else:
                    x = data[None]
                    if kind == "shadow":
                        x = x * np.float32(1e-4)
                    logits = model(x)
                    prob = (softmax_class1(logits) if kind == "cloud" else sigmoid(logits))[0]
                    prob[:, mask.any(axis=0)] = 1.0  # post_process; overwritten below
                if blend == "linear":
                    bad = mask.any(axis=0)
                    invalid[r0:r1, c0:c1] |= bad
                    w = np.outer(row_w[j], col_w[i]) * ~bad
                    sum_wp[r0:r1, c0:c1] += w * np.where(bad, 0, prob[0])
                    sum_w[r0:r1, c0:c1] += w
                    continue
                (a, b), (c, d) = rows_c[j], cols_c[i]
                block = prob[:, a:b, c:d].copy()
                block[:, mask[:, a:b, c:d].any(axis=0)] = NODATA
                (wr0, wr1), (wc0, wc1) = rows_w[j], cols_w[i]
                out[wr0:wr1, wc0:wc1] = block[0]
    if blend == "linear":
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (sum_wp / sum_w).astype(np.float32)
        out[invalid] = NODATA
    return out


# ------------------------------------------------------------------- merge (3)
def remove_small_components(mask, min_area):
    labels = label(mask.astype(bool), background=0, connectivity=2)
    sizes = np.bincount(labels.ravel())
    small = sizes < min_area
    small[0] = False
    out = mask.copy()
    out[small[labels]] = 0
    holes = label(~out.astype(bool), background=0, connectivity=2)
    sizes = np.bincount(holes.ravel())
    small = sizes < min_area
    small[0] = False
    out[small[holes]] = 1
    return out


def merge_cloud_masks(cloud_prob, shadow_prob, product_mask, cloud_thr=0.3, shadow_thr=0.2, closing_size=5,
                      min_area=0):
    merged = (cloud_prob > cloud_thr) | (shadow_prob > shadow_thr) | product_mask.astype(bool)
    merged = ndimage.binary_dilation(merged, structure=disk(closing_size), border_value=0).astype(np.uint8)
    if min_area > 0:
        merged = remove_small_components(merged, min_area)
    return merged


def improve_cloud_mask(s2_path, product_mask_path, cloud_model, shadow_model, cloud_thr=0.3, shadow_thr=0.2,
                       closing_size=5, min_area=0, window_size=512, overlap=0.25, in_memory=False, blend="midpoint"):
    cloud = compute_probability(s2_path, cloud_model, "cloud", window_size, overlap, in_memory, blend)
    shadow = compute_probability(s2_path, shadow_model, "shadow", window_size, overlap, in_memory, blend)
    with rasterio.open(product_mask_path) as src:
        pm = src.read(1)
    mask = merge_cloud_masks(cloud, shadow, pm, cloud_thr, shadow_thr, closing_size, min_area)
    return cloud, shadow, mask


# ---------------------------------------------------- downsampling (Nimbus' grid)
def downsampled_probability(raster_path, model, kind, ds, window_size=512, overlap=0.25, workdir=None):
    """Nimbus' `downsampling`: the model runs on the scene decimated by `ds` (pixel i of the
    coarse grid is full-resolution pixel i*ds + ds//2, GDAL's nearest sample, as FarmVibes
    reads), chips laid out on the coarse grid, and the coarse probabilities brought back to
    every full-resolution pixel by bilinear interpolation between the four nearest coarse
    pixel centres, leaving out nodata taps. Full-resolution nodata pixels are nodata."""
    import os
    import tempfile
    with rasterio.open(raster_path) as src:
        full = src.read(masked=True)
        profile = src.profile
    height, width = full.shape[1:]
    ch, cw = height // ds, width // ds
    coarse = full[:, ds // 2::ds, ds // 2::ds][:, :ch, :cw]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = os.path.join(tmp, "coarse.tif")
        transform = profile["transform"] * profile["transform"].scale(ds, ds)
        with rasterio.open(path, "w", **dict(profile, width=cw, height=ch, transform=transform)) as dst:
            dst.write(np.ma.getdata(coarse))
        p = compute_probability(path, model, kind, window_size, overlap).astype(np.float64)

    def taps(n, coarse_n):
        u = np.clip((np.arange(n) + 0.5) / ds - 0.5, 0, coarse_n - 1)
        i0 = u.astype(np.int64)
        return i0, np.minimum(i0 + 1, coarse_n - 1), (u - i0).astype(np.float32)

    y0, y1, wy = taps(height, ch)
    x0, x1, wx = taps(width, cw)
    wy, wx = wy[:, None], wx[None, :]
    values = [p[y0][:, x0], p[y0][:, x1], p[y1][:, x0], p[y1][:, x1]]
    weights = [(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx]
    num = np.zeros((height, width), np.float64)
    den = np.zeros((height, width), np.float64)
    for v, w in zip(values, weights):
        ok = v != NODATA
        num += np.where(ok, w * v, 0)
        den += np.where(ok, w, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / den, NODATA).astype(np.float32)
    out[np.ma.getmaskarray(full).any(axis=0)] = NODATA
    return out
