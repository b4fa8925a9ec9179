"""Runs an ONNX model with OpenCV DNN from Python, after the same graph
rewrites Nimbus applies (written independently here, on python3-onnx), so the
reference and Nimbus see numerically identical model outputs."""
import cv2
import numpy as np
import onnx
from onnx import numpy_helper


def _constant_values(graph):
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def fix_for_opencv(model):
    graph = model.graph
    constants = _constant_values(graph)
    for node in graph.node:
        for op_type, attr_name in (("Split", "split"), ("ReduceSum", "axes")):
            if node.op_type == op_type and len(node.input) == 2 and node.input[1] in constants:
                values = [int(v) for v in np.asarray(constants[node.input[1]]).ravel()]
                node.attribute.append(onnx.helper.make_attribute(attr_name, values))
                del node.input[1]
    outputs = {o.name for o in graph.output}
    rename, kept = {}, []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
            continue
        for k, name in enumerate(node.input):
            if name in rename:
                node.input[k] = rename[name]
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return model


def opencv_model(path):
    net = cv2.dnn.readNetFromONNX(np.frombuffer(fix_for_opencv(onnx.load(str(path))).SerializeToString(), np.uint8))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def run(x):
        net.setInput(np.ascontiguousarray(x, dtype=np.float32))
        return net.forward()

    return run
