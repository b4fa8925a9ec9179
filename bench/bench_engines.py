#!/usr/bin/env python3
"""Per-chip latency of the inference engines, measured side by side in one run:
Nimbus' oneDNN engine, Nimbus' OpenCV DNN engine (the engine before oneDNN) and
onnxruntime (the engine FarmVibes runs; the npm package onnxruntime-node, installed
into the build directory for this benchmark only), on the same ONNX files and the
same 1 x 12 x 512 x 512 chip, 2 threads, warm-up runs excluded, min over rounds.

Also prints each engine's peak RSS, the oneDNN engine's throughput (FLOPs of the
direct convolutions / time: Winograd layers do fewer multiplies, so this is the
effective rate) against the FMA peak measured in the same run, and the ratios the
engine is held to: oneDNN >= 2x OpenCV and >= 1.25x onnxruntime on the FPN models,
faster than both on CheapLab.

Usage: bench_engines.py [--build build] [--models DIR] [--rounds 3] [--repeat 5] [--threads 2] [--realtime]
  --realtime runs every timed process under SCHED_FIFO (chrt -f 50, needs root), which
  shields the figures from other load on a shared machine.
"""
import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORT_VERSION = "1.30.0"


def ensure_models(models):
    if not (models / "fpn_shadow_op13.onnx").exists():
        subprocess.run([sys.executable, str(ROOT / "tests" / "tools" / "make_test_models.py"), str(models),
                        "--width", "64", "--fpn", "256"], check=True, capture_output=True)
    import numpy as np
    for name in ("cheaplab", "fpn_cloud", "fpn_shadow"):
        chip = models / f"{name}_chip.npy"
        if not chip.exists():
            np.save(chip, np.load(models / f"{name}_torch_input.npy").astype(np.float32))


def ensure_onnxruntime(build):
    where = build / "onnxruntime-node"
    if not (where / "node_modules" / "onnxruntime-node").exists():
        where.mkdir(parents=True, exist_ok=True)
        (where / "package.json").write_text('{"name": "nimbus-bench-ort", "private": true}\n')
        subprocess.run(["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund",
                        f"onnxruntime-node@{ORT_VERSION}"], cwd=where, check=True, capture_output=True)
    return where / "node_modules"


def peak_rss_of(cmd, realtime, env=None):
    """Runs cmd; returns its last output line as JSON and the child's peak RSS in MB (wait4)."""
    if realtime:
        cmd = ["chrt", "-f", "50", *cmd]
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{err}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--models", default="/tmp/nimbus-bench/fpn-resnet18-sized")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--realtime", action="store_true")
    a = ap.parse_args()
    build, models = Path(a.build), Path(a.models)
    ensure_models(models)
    node_modules = ensure_onnxruntime(build)
    env = dict(os.environ, NODE_PATH=str(node_modules))
    nimbus = build / "nimbus"

    peak_text = subprocess.run(["chrt", "-f", "50", str(build / "bench" / "nimbus_fma_peak")] if a.realtime else
                               [str(build / "bench" / "nimbus_fma_peak")], check=True, capture_output=True,
                               text=True).stdout
    peak = max(float(g) for g in re.findall(rf"threads={os.cpu_count()} gflops=([0-9.]+)", peak_text))
    isa = re.findall(rf"isa=(\w+) threads={os.cpu_count()} gflops=([0-9.]+)", peak_text)

    results = {}
    for rnd in range(a.rounds):
        for name in ("fpn_cloud", "fpn_shadow", "cheaplab"):
            model, chip = models / f"{name}_op13.onnx", models / f"{name}_chip.npy"
            common = ["--input", chip, "--threads", a.threads, "--warmup", 2, "--repeat", a.repeat]
            runs = {
                "onednn": [nimbus, "infer", model, "--engine", "onednn", *common],
                "onednn-direct": [nimbus, "infer", model, "--engine", "onednn", *common],
                "opencv": [nimbus, "infer", model, "--engine", "opencv", *common],
                "onnxruntime": ["node", ROOT / "bench" / "ort_bench.js", model, chip, a.threads, 2, a.repeat],
            }
            for engine, cmd in runs.items():
                run_env = dict(env, NIMBUS_ONEDNN_WINOGRAD="0") if engine == "onednn-direct" else env
                info, rss = peak_rss_of(cmd, a.realtime, run_env)
                key = (name, engine)
                best = results.get(key)
                if best is None or info["min_ms"] < best["min_ms"]:
                    results[key] = dict(info, rss_mb=rss)
                if engine.startswith("onednn"):
                    results[key]["gflop"] = info["gflop"]

    print(f"FMA peak measured in this run: {peak:.0f} GFLOP/s ({', '.join(f'{i} {g}' for i, g in isa)}; "
          f"{os.cpu_count()} threads); engines on {a.threads} threads, min over {a.rounds} rounds x {a.repeat} runs")
    print("| model | GFLOP | oneDNN ms | OpenCV DNN ms | onnxruntime ms | oneDNN / OpenCV | oneDNN / onnxruntime "
          "| oneDNN effective GFLOP/s (% of peak) | oneDNN direct-only ms, GFLOP/s (% of peak) "
          "| peak RSS MB (oneDNN / OpenCV / ORT) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    verdict = []
    for name in ("fpn_cloud", "fpn_shadow", "cheaplab"):
        d, o, r = results[(name, "onednn")], results[(name, "opencv")], results[(name, "onnxruntime")]
        direct = results[(name, "onednn-direct")]
        gflops = d["gflop"] / (d["min_ms"] / 1e3)
        direct_gflops = direct["gflop"] / (direct["min_ms"] / 1e3)
        vs_cv, vs_ort = o["min_ms"] / d["min_ms"], r["min_ms"] / d["min_ms"]
        print(f"| {name} | {d['gflop']:.1f} | {d['min_ms']:.1f} | {o['min_ms']:.1f} | {r['min_ms']:.1f} | "
              f"{vs_cv:.2f}x | {vs_ort:.2f}x | {gflops:.0f} ({100 * gflops / peak:.0f} %) | "
              f"{direct['min_ms']:.1f}, {direct_gflops:.0f} ({100 * direct_gflops / peak:.0f} %) | "
              f"{d['rss_mb']:.0f} / {o['rss_mb']:.0f} / {r['rss_mb']:.0f} |")
        if name.startswith("fpn"):
            verdict.append(f"{name}: >= 2x OpenCV {'met' if vs_cv >= 2 else 'MISSED'}, >= 1.25x onnxruntime "
                           f"{'met' if vs_ort >= 1.25 else 'MISSED'}, >= 65 % of peak with direct convolutions "
                           f"only {'met' if direct_gflops >= 0.65 * peak else 'MISSED'}")
        else:
            verdict.append(f"{name}: faster than both {'met' if vs_cv > 1 and vs_ort > 1 else 'MISSED'}")
    print("\n".join(verdict))


if __name__ == "__main__":
    main()
