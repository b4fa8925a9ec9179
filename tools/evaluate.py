#!/usr/bin/env python3
"""Evaluates Nimbus' cloud and shadow masks against labelled chips.

Datasets (read from DATA_DIR, default ../shared/data; never copied into the repo):
  ukis-csmask/sentinel2.npz   512x512, 6 bands (B02,B03,B04,B08,B11,B12 reflectance), labels
                              0 = cloud shadow, 1..3 = clear (water, snow, land), 4 = cloud
  oncloudn-demo/chip_id_N/    512x512 L2A B02,B03,B04,B08 (uint16 DN), label.tif 1 = cloud, 255 = no label

Each chip becomes a 12-band DN stack (bands a chip lacks are filled from the nearest available
band by wavelength, see docs/models.md) and an all-zero product mask (the labelled chips carry no
product mask; an empty mask is what FarmVibes' GML route gives for products since baseline 04.00).
Nimbus runs on it with --keep-probabilities, and the probabilities are compared with the labels.
Give --cloud-model several times to compare cloud models side by side in one run (same chips, same
binary); without it the CLI's default model is used.

Usage: evaluate.py [--data DATA_DIR] [--nimbus build/nimbus] [--cloud-model M ...] [--shadow-model M]
                   [--sweep]
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parents[1]
BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
WAVELENGTH = {"B01": 443, "B02": 490, "B03": 560, "B04": 665, "B05": 705, "B06": 740, "B07": 783, "B08": 842,
              "B8A": 865, "B09": 945, "B11": 1610, "B12": 2190}


def stack_bands(available):
    """12-band DN stack from {band: DN array}; missing bands take the nearest available one."""
    out = []
    for b in BANDS:
        src = b if b in available else min(available, key=lambda a: abs(WAVELENGTH[a] - WAVELENGTH[b]))
        out.append(available[src])
    return np.stack(out).astype(np.uint16)


def load_chips(data_dir):
    chips = []
    ukis = data_dir / "ukis-csmask" / "sentinel2.npz"
    if ukis.exists():
        d = np.load(ukis)
        img = d["img"]
        dn = {b: np.clip(np.round(img[..., i] * 10000), 1, 65535) for i, b in
              enumerate(["B02", "B03", "B04", "B08", "B11", "B12"])}
        msk = d["msk"][..., 0]
        chips.append({"name": "ukis-csmask", "dn": stack_bands(dn), "cloud": msk == 4, "shadow": msk == 0,
                      "valid": np.ones(msk.shape, bool)})
    for chip_dir in sorted((data_dir / "oncloudn-demo").glob("chip_id_*")):
        dn = {}
        for b in ["B02", "B03", "B04", "B08"]:
            with rasterio.open(chip_dir / f"{b}.tif") as src:
                dn[b] = np.maximum(src.read(1), 1)
        with rasterio.open(chip_dir / "label.tif") as src:
            label = src.read(1)
        chips.append({"name": f"oncloudn/{chip_dir.name}", "dn": stack_bands(dn), "cloud": label == 1,
                      "shadow": None, "valid": label != 255})
    return chips


def write_inputs(chip, work):
    _, h, w = chip["dn"].shape
    profile = dict(driver="GTiff", width=w, height=h, count=12, dtype="uint16", crs="EPSG:32631",
                   transform=from_origin(300000, 5000000, 10, 10), nodata=0)
    with rasterio.open(work / "s2.tif", "w", **profile) as dst:
        dst.write(chip["dn"])
    with rasterio.open(work / "pm.tif", "w", **dict(profile, count=1, dtype="uint8", nodata=100)) as dst:
        dst.write(np.zeros((1, h, w), np.uint8))


def run_nimbus(nimbus, work, cloud_model, shadow_model):
    args = [str(nimbus), "improve-cloud-mask", "--s2-raster", str(work / "s2.tif"), "--product-mask",
            str(work / "pm.tif"), "--out", str(work / "mask.tif"), "--keep-probabilities", str(work), "-q"]
    if cloud_model:
        args += ["--cloud-model", cloud_model]
    if shadow_model:
        args += ["--shadow-model", shadow_model]
    subprocess.run(args, check=True)
    read = lambda n: rasterio.open(work / n).read(1)
    return read("cloud_probability.tif"), read("shadow_probability.tif"), read("mask.tif")


def scores(pred, truth, valid):
    p, t = pred[valid], truth[valid]
    tp = np.sum(p & t)
    fp = np.sum(p & ~t)
    fn = np.sum(~p & t)
    iou = tp / max(tp + fp + fn, 1)
    return {"iou": iou, "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--nimbus", default=str(ROOT / "build" / "nimbus"))
    ap.add_argument("--cloud-model", action="append",
                    help="cloud model (path or embedded:<name>); repeat to compare models side by side")
    ap.add_argument("--shadow-model")
    ap.add_argument("--cloud-thr", type=float, default=0.3)
    ap.add_argument("--shadow-thr", type=float, default=0.2)
    ap.add_argument("--sweep", action="store_true", help="also report IoU over a threshold sweep")
    a = ap.parse_args()

    chips = load_chips(Path(a.data))
    if not chips:
        sys.exit(f"no labelled chips under {a.data}")
    models = a.cloud_model or [None]
    label = lambda m: "default model" if m is None else m.removeprefix("embedded:")
    shadow_label = "default shadow model" if a.shadow_model is None else a.shadow_model.removeprefix("embedded:")
    sweep = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    print("| chip | target | method | IoU | precision | recall |")
    print("|---|---|---|---|---|---|")
    sweep_rows = []
    row = lambda chip, target, method, s: print(f"| {chip} | {target} | {method} | {s['iou']:.3f} | "
                                                f"{s['precision']:.3f} | {s['recall']:.3f} |")
    with tempfile.TemporaryDirectory() as tmp:
        for chip in chips:
            results = []
            for i, model in enumerate(models):
                work = Path(tmp) / f"{chip['name'].replace('/', '_')}-{i}"
                work.mkdir()
                write_inputs(chip, work)
                results.append((model, run_nimbus(a.nimbus, work, model, a.shadow_model)))
            targets = [("cloud", chip["cloud"], 0, a.cloud_thr)]
            if chip["shadow"] is not None:
                targets.append(("shadow", chip["shadow"], 1, a.shadow_thr))
            for target, truth, which, thr in targets:
                row(chip["name"], target, "product mask only (empty)",
                    scores(np.zeros_like(truth), truth, chip["valid"]))
                # The shadow probability does not depend on the cloud model: one row for it.
                runs = results if target == "cloud" else results[:1]
                for model, outputs in runs:
                    prob = outputs[which]
                    name = label(model) if target == "cloud" else shadow_label
                    row(chip["name"], target, f"{name}, p > {thr}", scores(prob > np.float32(thr), truth, chip["valid"]))
                    sweep_rows.append((chip["name"], target, name,
                                       [scores(prob > np.float32(t), truth, chip["valid"])["iou"] for t in sweep]))
            union = chip["cloud"] | (chip["shadow"] if chip["shadow"] is not None else False)
            for model, outputs in results:
                row(chip["name"], "cloud+shadow", f"{label(model)}, final mask (merge, dilation 5)",
                    scores(outputs[2].astype(bool), union, chip["valid"]))
    if a.sweep:
        print()
        print("| chip | target | model | " + " | ".join(f"p > {t}" for t in sweep) + " |")
        print("|---|---|---|" + "---|" * len(sweep))
        for name, target, model, ious in sweep_rows:
            print(f"| {name} | {target} | {model} | " + " | ".join(f"{v:.3f}" for v in ious) + " |")


if __name__ == "__main__":
    main()
