#!/usr/bin/env python3
"""Builds Nimbus' embedded default models as ONNX graphs (no training, no weights
from elsewhere). Deterministic: the same script gives byte-identical files.

The models follow FarmVibes' contract so the same pipeline runs them:
  cloud:  N x 12 x H x W raw L2A DN        -> N x 2 x H x W logits (class 1 = cloud)
  shadow: N x 12 x 512 x 512 DN * 1e-4     -> N x 1 x 512 x 512 logit
Band order B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B11,B12.
nimbus_cloud_v2 is the default; nimbus_cloud_v1 is kept, byte for byte, so masks made
with it can be reproduced. The spectral tests are explained in docs/models.md.

Usage: make_default_models.py OUT_DIR
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
B = {name: i for i, name in enumerate(BANDS)}
OPSET = 11


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, stem):
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, array, stem="w"):
        n = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), n))
        return n

    def conv1x1(self, x, weights, bias):
        """weights: [out][in] linear combination per pixel."""
        w = np.asarray(weights, dtype=np.float32)[:, :, None, None]
        out = self.name("lin")
        self.nodes.append(helper.make_node("Conv", [x, self.const(w), self.const(np.asarray(bias, np.float32))], [out],
                                           kernel_shape=[1, 1]))
        return out

    def op(self, op_type, inputs, **attrs):
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def minimum(self, a, b):
        """min(a, b) = a - relu(a - b), from ops every engine has."""
        return self.op("Sub", [a, self.op("Relu", [self.op("Sub", [a, b])])])

    def maximum(self, a, b):
        """max(a, b) = a + relu(b - a), from ops every engine has."""
        return self.op("Add", [a, self.op("Relu", [self.op("Sub", [b, a])])])

    def model(self, inp, out, in_shape, out_shape, doc):
        graph = helper.make_graph(
            self.nodes, "nimbus_default", [helper.make_tensor_value_info(inp, TensorProto.FLOAT, in_shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)], self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="nimbus",
                              producer_version="1")
        m.doc_string = doc
        onnx.checker.check_model(m)
        return m


def row(coeffs, scale):
    """A 12-band linear combination from {band: coefficient}, times `scale`."""
    r = np.zeros(len(BANDS), dtype=np.float64)
    for band, c in coeffs.items():
        r[B[band]] = c
    return (r * scale).tolist()


def test(coeffs, offset, softness, input_scale):
    """A spectral test as one logit: (sum_b c_b * rho_b + offset) / softness."""
    return row(coeffs, input_scale / softness), offset / softness


def cloud_model():
    # Input is raw DN; rho = DN * 1e-4.
    s = 1e-4
    tests = [
        # bright in the visible: clouds are white, most land and all water is not
        test({"B02": 1 / 3, "B03": 1 / 3, "B04": 1 / 3}, -0.14, 0.03, s),
        # haze-optimised transform: blue high relative to red (soil, rock and haze-free land fail)
        test({"B02": 1.0, "B04": -0.5}, -0.10, 0.02, s),
        # bright in SWIR too: snow and ice are dark at B11, clouds are not
        test({"B11": 1.0, "B03": -0.45}, 0.02, 0.02, s),
        # not vegetation: the red edge (B08 - B04) of clouds is small next to their brightness
        test({"B02": 0.5, "B03": 0.5, "B04": 1.5, "B08": -1.0}, 0.0, 0.05, s),
    ]
    g = Graph()
    t = g.conv1x1("input", [w for w, _ in tests], [b for _, b in tests])
    parts = [g.conv1x1(t, [[1.0 if j == i else 0.0 for j in range(len(tests))]], [0.0]) for i in range(len(tests))]
    score = parts[0]
    for p in parts[1:]:
        score = g.minimum(score, p)
    logits = g.conv1x1(score, [[0.0], [1.0]], [0.0, 0.0])
    g.nodes[-1].output[0] = "output"
    return g.model("input", "output", ["batch", 12, "height", "width"], ["batch", 2, "height", "width"],
                   "Nimbus spectral cloud model v1: min of brightness, HOT, SWIR and red-edge tests")


def cloud_model_v2():
    """v1's four tests, except that the snow test (dark at 1.6 um) no longer vetoes a cloud
    whose top is above most of the water vapour: thick, high ice clouds are dark at 1.6 um
    like snow, but snow lies on the ground, under the vapour column.

        cloud = bright AND hot AND no-red-edge AND (bright-SWIR OR (vapour-excess AND small-particles))

    Input is raw DN; rho = DN * 1e-4. See docs/models.md for the physics of each test."""
    s = 1e-4
    tests = {
        # bright in the visible: clouds are white, most land and all water is not
        "bright": test({"B02": 1 / 3, "B03": 1 / 3, "B04": 1 / 3}, -0.14, 0.03, s),
        # haze-optimised transform: blue high relative to red (soil, rock and haze-free land fail)
        "hot": test({"B02": 1.0, "B04": -0.5}, -0.10, 0.02, s),
        # not vegetation: the red edge (B08 - B04) of clouds is small next to their brightness
        "no_red_edge": test({"B02": 0.5, "B03": 0.5, "B04": 1.5, "B08": -1.0}, 0.0, 0.05, s),
        # bright SWIR (v1's snow test): snow and ice are dark at 1.6 um, water clouds are not
        "bright_swir": test({"B11": 1.0, "B03": -0.45}, 0.02, 0.02, s),
        # water-vapour excess: L2A's vapour correction assumes the target is on the ground, so a
        # top above most of the vapour comes out far brighter at 945 nm than at 865 nm; ground
        # targets (snow included: ice absorbs more at 945 nm) stay near or below B8A
        "vapour_excess": test({"B09": 1.0, "B8A": -1.3}, -0.03, 0.02, s),
        # small particles: cloud ice crystals (tens of um) keep B12 near B11; for snow grains
        # (hundreds of um) B12 typically lies well below B11
        "small_particles": test({"B12": 1.0, "B11": -0.8}, 0.0, 0.01, s),
    }
    names = list(tests)
    g = Graph()
    t = g.conv1x1("input", [tests[n][0] for n in names], [tests[n][1] for n in names])
    part = {n: g.conv1x1(t, [[1.0 if m == n else 0.0 for m in names]], [0.0]) for n in names}
    high_top = g.minimum(part["vapour_excess"], part["small_particles"])
    not_snow = g.maximum(part["bright_swir"], high_top)
    score = g.minimum(g.minimum(g.minimum(part["bright"], part["hot"]), part["no_red_edge"]), not_snow)
    g.conv1x1(score, [[0.0], [1.0]], [0.0, 0.0])
    g.nodes[-1].output[0] = "output"
    return g.model("input", "output", ["batch", 12, "height", "width"], ["batch", 2, "height", "width"],
                   "Nimbus spectral cloud model v2: brightness, HOT and red-edge tests AND (bright SWIR OR "
                   "(water-vapour excess AND small particles))")


def shadow_model():
    # Input is reflectance (DN * 1e-4).
    g = Graph()
    nir = g.conv1x1("input", [row({"B08": 1.0}, 1.0)], [0.0])
    # Surroundings: mean NIR over ~40 px (400 m), from an 8x-downsampled, smoothed copy.
    coarse = g.op("AveragePool", [nir], kernel_shape=[8, 8], strides=[8, 8])
    smooth = g.op("AveragePool", [coarse], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2],
                  count_include_pad=0)
    surround = g.op("Resize", [smooth, g.const(np.zeros(0), "roi"), g.const([1, 1, 8, 8], "scales")], mode="linear",
                    coordinate_transformation_mode="half_pixel")
    # darker than 60 % of the surroundings' NIR
    rel = g.op("Sub", [g.op("Mul", [surround, g.const([0.60 / 0.015])]), g.op("Mul", [nir, g.const([1 / 0.015])])])
    tests = [
        test({"B08": -1.0}, 0.20, 0.03, 1.0),             # dark in NIR in absolute terms
        test({"B08": 1.0, "B03": -1.0}, 0.0, 0.005, 1.0),  # not water: water is brighter in green than NIR
        test({"B11": -1.0}, 0.16, 0.03, 1.0),             # dark in SWIR
    ]
    t = g.conv1x1("input", [w for w, _ in tests], [b for _, b in tests])
    score = rel
    for i in range(len(tests)):
        score = g.minimum(score, g.conv1x1(t, [[1.0 if j == i else 0.0 for j in range(len(tests))]], [0.0]))
    g.nodes.append(helper.make_node("Identity", [score], ["output"]))
    # The Identity on a computed tensor is harmless; it gives the output a stable name.
    return g.model("input", "output", [1, 12, 512, 512], [1, 1, 512, 512],
                   "Nimbus spectral shadow model v1: NIR darker than surroundings, dark SWIR, not water")


def sidecar(model_bytes, name, kind, scaling, chip):
    return {
        "name": name,
        "kind": kind,
        "bands": BANDS,
        "input_scaling": scaling,
        "chip_size": chip,
        "output": "2 logits, class 1 = cloud" if kind == "cloud" else "1 logit, sigmoid = shadow probability",
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
    }


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
    out.mkdir(parents=True, exist_ok=True)
    for name, kind, build, scaling, chip in [("nimbus_cloud_v1", "cloud", cloud_model, "raw DN", None),
                                             ("nimbus_cloud_v2", "cloud", cloud_model_v2, "raw DN", None),
                                             ("nimbus_shadow_v1", "shadow", shadow_model, "DN * 1e-4", 512)]:
        data = build().SerializeToString()
        (out / f"{name}.onnx").write_bytes(data)
        (out / f"{name}.json").write_text(json.dumps(sidecar(data, name, kind, scaling, chip), indent=2) + "\n")
        print(f"wrote {out / f'{name}.onnx'} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
