#!/usr/bin/env python3
"""Multiply-add FLOPs of an ONNX model's convolutions (and Gemm/MatMul) for one
input shape: 2 x MACs, the usual figure behind "GFLOP/s" for CNN inference.

Usage: model_flops.py MODEL.onnx C H W   (prints GFLOP per forward pass)
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference


def conv_flops(model_path, channels, height, width):
    model = onnx.load(model_path)
    graph = model.graph
    inp = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}][0]
    dims = inp.type.tensor_type.shape.dim
    for d, v in zip(dims, (1, channels, height, width)):
        d.ClearField("dim_param")
        d.dim_value = v
    model = shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    weights = {t.name: numpy_helper.to_array(t).shape for t in graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            w = weights[node.input[1]]
            out = shapes.get(node.output[0])
            if not out or 0 in out:
                raise SystemExit(f"no static shape for {node.name}")
            if node.op_type == "Conv":
                total += 2 * int(np.prod(out)) * int(np.prod(w[1:]))
            else:
                inp_shape = shapes[node.input[0]]
                total += 2 * int(np.prod(inp_shape)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul") and node.input[1] in weights:
            w = weights[node.input[1]]
            out = shapes[node.output[0]]
            total += 2 * int(np.prod(out)) * int(w[0] if node.op_type == "MatMul" else min(w))
    return total


if __name__ == "__main__":
    print(f"{conv_flops(sys.argv[1], *map(int, sys.argv[2:5])) / 1e9:.3f}")
