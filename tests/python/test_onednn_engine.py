"""The oneDNN engine against torch (and OpenCV DNN) on the test models, the embedded
models and one small graph per op family of the common conv-net set, exported by
torch as users export; plus engine selection, fallback and provenance."""
import json
import subprocess

import numpy as np
import pytest

from conftest import run_nimbus

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


def infer(nimbus_bin, model, x, tmp_path, engine="onednn", threads=None, name="out"):
    inp = tmp_path / f"{name}_in.npy"
    out = tmp_path / f"{name}_{engine}.npy"
    np.save(inp, np.ascontiguousarray(x, dtype=np.float32))
    args = ["infer", model, "--input", inp, "--output", out, "--engine", engine, "--warmup", "0"]
    if threads:
        args += ["--threads", str(threads)]
    proc = run_nimbus(nimbus_bin, *args)
    assert proc.returncode == 0, proc.stderr
    return np.load(out), json.loads(proc.stdout.strip().splitlines()[-1]), proc


def probabilities(logits):
    x = logits.astype(np.float64)
    if x.shape[1] == 2:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True))[:, 1]
    return 1 / (1 + np.exp(-x[:, 0]))


@pytest.mark.parametrize("model", ["cheaplab_op11", "cheaplab_op13", "fpn_cloud_op11", "fpn_cloud_op13",
                                   "fpn_shadow_op11", "fpn_shadow_op13"])
def test_test_models_match_torch_and_opencv(model, nimbus_bin, test_models, tmp_path):
    name = model.rsplit("_op", 1)[0]
    x = np.load(test_models / f"{name}_torch_input.npy")
    want = probabilities(np.load(test_models / f"{name}_torch_output.npy"))
    got_logits, info, _ = infer(nimbus_bin, test_models / f"{model}.onnx", x, tmp_path)
    assert info["engine"] == "onednn"
    opencv_logits, _, _ = infer(nimbus_bin, test_models / f"{model}.onnx", x, tmp_path, engine="opencv")
    got, opencv = probabilities(got_logits), probabilities(opencv_logits)
    if name == "cheaplab":
        # Learned-index ratios amplify fp32 rounding on a few pixels in every engine (docs/inference.md).
        assert (np.abs(got - want) > 1e-3).mean() < 1e-3
        assert (np.abs(got - opencv) > 1e-3).mean() < 1e-3
    else:
        assert np.abs(got - want).max() < 1e-4
        assert np.abs(got - opencv).max() < 1e-4


@pytest.mark.parametrize("model,scale", [("embedded:nimbus_cloud_v2", 1.0), ("embedded:nimbus_cloud_v1", 1.0),
                                         ("embedded:nimbus_shadow_v1", 1e-4)])
def test_embedded_models_match_opencv(model, scale, nimbus_bin, tmp_path):
    rng = np.random.default_rng(3)
    x = (rng.uniform(50, 12000, (1, 12, 512, 512)) * scale).astype(np.float32)
    got, _, _ = infer(nimbus_bin, model, x, tmp_path)
    want, _, _ = infer(nimbus_bin, model, x, tmp_path, engine="opencv")
    assert np.abs(probabilities(got) - probabilities(want)).max() < 1e-4


# --- one small graph per op family ------------------------------------------------------------

class Se(nn.Module):
    """Squeeze-excitation: GlobalAveragePool, 1x1 convs, Sigmoid, broadcast Mul; grouped and dilated convs."""
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(12, 16, 3, padding=2, dilation=2)
        self.g = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.dw = nn.Conv2d(16, 16, 5, padding=2, groups=16)
        self.s1, self.s2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.out = nn.Conv2d(16, 3, 1)

    def forward(self, x):
        h = F.leaky_relu(self.a(x), 0.1)
        h = torch.tanh(self.g(h)) + self.dw(h)
        s = torch.sigmoid(self.s2(F.relu(self.s1(F.adaptive_avg_pool2d(h, 1)))))
        return self.out(h * s)


class Strided(nn.Module):
    """Strided/asymmetric convs, pooling (ceil mode, count_include_pad), ConvTranspose back up, Clip."""
    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(12, 16, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        self.up_grouped = nn.ConvTranspose2d(16, 8, 2, stride=2, groups=2)
        self.out = nn.Conv2d(28, 2, 1)

    def forward(self, x):
        h = F.hardtanh(self.down(x), -0.5, 2.0)                     # Clip
        p = F.max_pool2d(h, 3, 2, 1, ceil_mode=True)
        q = F.avg_pool2d(h, 3, 2, 1, count_include_pad=False)
        r = F.avg_pool2d(h, 2, 2, count_include_pad=True)
        m = p[:, :, :q.shape[2], :q.shape[3]] + q + r
        u = self.up(m)
        u2 = self.up_grouped(m)
        w = F.interpolate(self.up(h), size=x.shape[-2:], mode="nearest")
        return self.out(torch.cat([F.interpolate(u, size=x.shape[-2:], mode="bilinear", align_corners=False),
                                   F.interpolate(u2, scale_factor=2, mode="bilinear", align_corners=True), w,
                                   x[:, :4]], dim=1))


class Heads(nn.Module):
    """Split, Slice, Pad, Reshape/Transpose/MatMul, Softmax over channels, Reduce*, GroupNorm, InstanceNorm,
    BatchNorm not after a conv, Max/Min/Div/Sub with broadcasting, Gemm via Linear."""
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(12, 16, 1)
        self.gn = nn.GroupNorm(4, 16)
        self.inorm = nn.InstanceNorm2d(16, affine=True)
        self.bn = nn.BatchNorm2d(16)
        self.lin = nn.Linear(16, 16)
        self.pad_conv = nn.Conv2d(16, 16, 5)
        self.out = nn.Conv2d(16, 3, 1)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.bn.running_var.uniform_(0.5, 1.5)
            self.gn.weight.uniform_(0.5, 1.5)
            self.inorm.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        h = self.c(x * 1e-3)
        a, b = torch.split(h, [6, 10], dim=1)
        h = torch.cat([b, a], dim=1)
        h = F.relu(self.gn(h)) + self.inorm(h)
        h = self.bn(torch.maximum(h, h.mean(dim=1, keepdim=True)) - torch.amax(h, dim=(2, 3), keepdim=True) / 4)
        n, c, hh, ww = h.shape
        t = self.lin(h.permute(0, 2, 3, 1).reshape(n, hh * ww, c))   # MatMul + Add
        h = t.reshape(n, hh, ww, c).permute(0, 3, 1, 2)
        h = torch.softmax(h, dim=1) + F.log_softmax(h.reshape(n, c, hh * ww), dim=2).reshape(n, c, hh, ww) * 0.01
        crop = h[:, :, 2:-2, 2:-2]
        h = self.pad_conv(F.pad(crop, (4, 4, 4, 4)))
        return self.out(torch.minimum(h, torch.tensor(3.0)) / (h.abs().sum(dim=1, keepdim=True) + 1))


class Classifier(nn.Module):
    """Global pooling, Flatten, Gemm (Linear), then broadcast back over the chip."""
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(12, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        h = F.relu(self.c(x))
        z = self.fc(torch.flatten(F.adaptive_max_pool2d(h, 1), 1))
        return h[:, :2] * 0 + z[:, :, None, None] + F.avg_pool2d(h[:, 2:4], 3, 1, 1)


OP_MODELS = {"se": Se, "strided": Strided, "heads": Heads, "classifier": Classifier}


@pytest.fixture(scope="module")
def op_models(tmp_path_factory):
    torch.manual_seed(1)
    out = tmp_path_factory.mktemp("op_models")
    x = torch.rand(1, 12, 64, 48) * 4 - 1
    models = {}
    for name, cls in OP_MODELS.items():
        model = cls().eval()
        with torch.no_grad():
            want = model(x).numpy()
        for opset in (11, 13):
            path = out / f"{name}_op{opset}.onnx"
            torch.onnx.export(model, x, str(path), opset_version=opset, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "batch"}})
            models[(name, opset)] = (path, x.numpy(), want)
    return models


@pytest.mark.parametrize("name", sorted(OP_MODELS))
@pytest.mark.parametrize("opset", [11, 13])
def test_op_families_match_torch(name, opset, nimbus_bin, op_models, tmp_path):
    path, x, want = op_models[(name, opset)]
    got, info, _ = infer(nimbus_bin, path, x, tmp_path)
    assert info["engine"] == "onednn"
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_thread_counts_give_identical_outputs(nimbus_bin, op_models, test_models, tmp_path):
    for path, x in [(op_models[("heads", 13)][0], op_models[("heads", 13)][1]),
                    (test_models / "fpn_shadow_op13.onnx", np.load(test_models / "fpn_shadow_torch_input.npy"))]:
        outs = [infer(nimbus_bin, path, x, tmp_path, threads=t, name=f"t{t}")[0] for t in (1, 2, 3)]
        for other in outs[1:]:
            np.testing.assert_array_equal(outs[0], other)


# --- selection, fallback, provenance ------------------------------------------------------------

@pytest.fixture(scope="module")
def lrn_model(tmp_path_factory):
    """A model with an op the oneDNN importer does not implement (LRN) but OpenCV DNN does."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.full((2, 12, 1, 1), 0.01, np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("LRN", ["c"], ["output"], size=3, name="the_lrn")]
    graph = helper.make_graph(nodes, "lrn", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                             [1, 12, 512, 512])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, 512, 512])], [w])
    path = tmp_path_factory.mktemp("lrn") / "lrn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_auto_falls_back_to_opencv_with_one_info_line(nimbus_bin, lrn_model, make_scene, tmp_path):
    scene = make_scene(600, 560)
    proc = run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask",
                      scene["product_mask"], "--out", tmp_path / "m.tif", "--cloud-model", lrn_model)
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if "OpenCV DNN instead" in l]
    assert len(lines) == 1 and "LRN" in lines[0] and "lrn.onnx" in lines[0], proc.stderr
    import rasterio
    with rasterio.open(tmp_path / "m.tif") as src:
        assert src.tags()["NIMBUS_CLOUD_ENGINE"] == "opencv"
        assert src.tags()["NIMBUS_SHADOW_ENGINE"] == "onednn"


def test_engine_onednn_refuses_what_it_cannot_run(nimbus_bin, lrn_model, make_scene, tmp_path):
    scene = make_scene(600, 560)
    proc = run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask",
                      scene["product_mask"], "--out", tmp_path / "m.tif", "--cloud-model", lrn_model,
                      "--engine", "onednn")
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l]
    assert len(lines) == 1 and lines[0].startswith("nimbus: error:")
    assert "LRN" in lines[0] and "--cloud-model" in lines[0] and "'opencv'" in lines[0]
    assert not (tmp_path / "m.tif").exists()


def test_engine_choice_is_validated_and_recorded(nimbus_bin, make_scene, tmp_path):
    scene = make_scene(600, 560)
    bad = run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask",
                     scene["product_mask"], "--out", tmp_path / "m.tif", "--engine", "tensorrt")
    assert bad.returncode != 0 and "engine" in bad.stderr.lower()
    import rasterio
    for engine in ("opencv", "onednn", "auto"):
        run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", scene["s2"], "--product-mask",
                   scene["product_mask"], "--out", tmp_path / f"{engine}.tif", "--engine", engine, "-q", check=True)
        with rasterio.open(tmp_path / f"{engine}.tif") as src:
            expected = "opencv" if engine == "opencv" else "onednn"
            assert src.tags()["NIMBUS_CLOUD_ENGINE"] == expected


def test_python_engine_keyword(nimbus_py, make_scene, tmp_path):
    scene = make_scene(600, 560)
    report = nimbus_py.improve_cloud_mask(str(scene["s2"]), str(tmp_path / "m.tif"),
                                          product_mask=str(scene["product_mask"]), engine="opencv")
    assert report["cloud_engine"] == "opencv" and report["shadow_engine"] == "opencv"
    with pytest.raises(nimbus_py.InputError, match="engine"):
        nimbus_py.improve_cloud_mask(str(scene["s2"]), str(tmp_path / "n.tif"),
                                     product_mask=str(scene["product_mask"]), engine="cuda")
