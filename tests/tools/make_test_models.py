#!/usr/bin/env python3
"""Small test models in FarmVibes' ONNX contract, built with python3-torch and
random (calibrated) weights; architectures written from their papers' outlines:

  cheaplab      CheapLab-like: learned spectral indices (1x1 num/den), 1x1 conv stack, final ReLU; 2 classes
  fpn_cloud     FPN-ResNet18-like with the FuseNet input split (3 + 9 channels, two backbones), bilinear
                align_corners top-down path, fixed 512 output; 2 classes
  fpn_shadow    FPN-like shadow net with GroupNorm heads and a stack+sum merge; 1 class

Each is exported at opset 11 and 13 with a dynamic batch axis, as torch users do.
`width` shrinks the channel counts so the test suite runs fast on 2 cores.

Usage: make_test_models.py OUT_DIR [--width 16] [--fpn 32]
       (--width 64 --fpn 256 gives FPN-ResNet18-sized models for benchmarks)
"""
import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)


class CheapLabLike(nn.Module):
    def __init__(self, channels=12, indices=8, classes=2, input_scale=1e-4):
        super().__init__()
        self.input_scale = input_scale
        self.num = nn.Conv2d(channels, indices, 1)
        self.den = nn.Conv2d(channels, indices, 1)
        self.bn = nn.BatchNorm2d(indices)
        self.body = nn.Sequential(nn.Conv2d(channels + indices, 16, 1), nn.ReLU(), nn.Conv2d(16, 16, 1), nn.ReLU(),
                                  nn.Conv2d(16, classes, 1))

    def forward(self, x):
        x = x * self.input_scale
        q = self.num(x) / (self.den(x).abs() + 0.5)
        return F.relu(self.body(torch.cat([x, self.bn(q)], dim=1)))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class Backbone(nn.Module):
    def __init__(self, cin, w):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(cin, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.layers = nn.ModuleList([BasicBlock(w, w, 1), BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 4 * w, 2),
                                     BasicBlock(4 * w, 8 * w, 2)])


class FpnLike(nn.Module):
    def __init__(self, classes, width=16, fpn=32, out_size=512, input_scale=1e-4, fusion=True, groupnorm=False,
                 stack_sum=False):
        super().__init__()
        self.input_scale, self.out_size, self.fusion, self.stack_sum = input_scale, out_size, fusion, stack_sum
        self.rgb = Backbone(3 if fusion else 12, width)
        self.aux = Backbone(9, width) if fusion else None
        chans = [width, 2 * width, 4 * width, 8 * width]
        self.lateral = nn.ModuleList([nn.Conv2d(c, fpn, 1) for c in chans])
        norm = (lambda c: nn.GroupNorm(8, c)) if groupnorm else (lambda c: nn.BatchNorm2d(c))
        self.heads = nn.ModuleList([nn.Sequential(nn.Conv2d(fpn, fpn, 3, 1, 1), norm(fpn), nn.ReLU())
                                    for _ in chans])
        self.classifier = nn.Conv2d(fpn, classes, 3, 1, 1)

    def forward(self, x):
        x = x * self.input_scale
        if self.fusion:
            x_rgb, x_aux = torch.split(x, [3, 9], dim=1)
            a = self.aux.stem(x_aux)
            h = self.rgb.stem(x_rgb) + a
        else:
            h = self.rgb.stem(x)
        feats = []
        for k, layer in enumerate(self.rgb.layers):
            h = layer(h)
            if self.fusion and k < 3:
                a = self.aux.layers[k](a)
                h = h + a
            feats.append(h)
        p = self.lateral[3](feats[3])
        pyramid = [p]
        for k in (2, 1, 0):
            p = self.lateral[k](feats[k]) + F.interpolate(p, size=feats[k].shape[-2:], mode="bilinear",
                                                            align_corners=True)
            pyramid.insert(0, p)
        size = pyramid[0].shape[-2:]
        levels = [F.interpolate(self.heads[k](q), size=size, mode="bilinear", align_corners=True) if k else
                  self.heads[k](q) for k, q in enumerate(pyramid)]
        merged = torch.stack(levels).sum(0) if self.stack_sum else levels[0] + levels[1] + levels[2] + levels[3]
        out = self.classifier(merged)
        return F.interpolate(out, size=(self.out_size, self.out_size), mode="bilinear", align_corners=True)


def synthetic_chips(n=2, size=512):
    """DN-realistic chips: smooth fields 300..6000 with bright blobs."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size] / size
    chips = []
    for k in range(n):
        base = 1500 + 1000 * np.sin(6 * xx + k) * np.cos(4 * yy)
        blob = 4000 * np.exp(-((xx - 0.3 - 0.3 * k) ** 2 + (yy - 0.6) ** 2) / 0.02)
        bands = [base * (0.5 + 0.1 * b) + blob + rng.normal(0, 50, base.shape) for b in range(12)]
        chips.append(np.round(np.clip(np.stack(bands), 1, 20000)))  # integer DN, as in a uint16 raster
    return torch.tensor(np.stack(chips), dtype=torch.float32)


@torch.no_grad()
def calibrate(model, classes, x):
    """Sets BN statistics from data and scales the classifier so logits spread over about +-4."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model(x)
    model.eval()
    last = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    out = model(x)
    score = out[:, 1] - out[:, 0] if classes == 2 else out[:, 0]
    gain = 3.0 / float(score.std() + 1e-6)
    last.weight.mul_(gain)
    if last.bias is not None:
        last.bias.mul_(gain)
        shift = -float((model(x)[:, 1] - model(x)[:, 0]).median() if classes == 2 else model(x)[:, 0].median())
        last.bias[-1] += shift - 0.5
    return model


def export(model, path, opset, shadow):
    x = synthetic_chips(1)
    if shadow:
        x = x * 1e-4
    torch.onnx.export(model, x, str(path), opset_version=opset, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, do_constant_folding=True)


def build(width, fpn_channels):
    chips = synthetic_chips()
    cheap = calibrate(CheapLabLike(), 2, chips)
    fpn = calibrate(FpnLike(2, width=width, fpn=fpn_channels), 2, chips)
    shadow = FpnLike(1, width=width, fpn=fpn_channels, input_scale=1.0, fusion=False, groupnorm=True, stack_sum=True)
    shadow = calibrate(shadow, 1, chips * 1e-4)
    return {"cheaplab": (cheap, False), "fpn_cloud": (fpn, False), "fpn_shadow": (shadow, True)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out_dir")
    p.add_argument("--width", type=int, default=16, help="backbone base width (ResNet-18: 64)")
    p.add_argument("--fpn", type=int, default=32, help="FPN channels (pytorch-fpn default: 256)")
    a = p.parse_args()
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, (model, shadow) in build(a.width, a.fpn).items():
        # The torch output for one chip, to check the ONNX engines against.
        x = synthetic_chips(1)
        x = x * 1e-4 if shadow else x
        with torch.no_grad():
            np.save(out / f"{name}_torch_input.npy", x.numpy())
            np.save(out / f"{name}_torch_output.npy", model(x).numpy())
        for opset in (11, 13):
            export(model, out / f"{name}_op{opset}.onnx", opset, shadow)
    print(f"models in {out}")


if __name__ == "__main__":
    main()
