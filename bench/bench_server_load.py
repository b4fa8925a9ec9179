#!/usr/bin/env python3
"""Load test of `nimbus serve` on 127.0.0.1: 20 runs queued on a small synthetic scene
plus 200 concurrent clients polling run status, bounded in time. Prints the p50/p99
status latency while runs execute, the server's peak RSS, and checks that no run was
lost or executed twice.

Usage: bench_server_load.py [--nimbus build/nimbus] [--runs 20] [--clients 200]
       [--concurrent-runs 1] [--http-threads N] [--size 560]"""
import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tools"))

from server_load import run_load, summary  # noqa: E402
from synthetic_scene import make_scene, write_scene  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nimbus", default=str(ROOT / "build" / "nimbus"))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--concurrent-runs", type=int, default=1)
    ap.add_argument("--http-threads", type=int, default=0, help="0: the server's default")
    ap.add_argument("--size", type=int, default=560)
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scene = write_scene(make_scene(a.size, a.size, seed=3), Path(tmp) / "inputs")
        args = ["--concurrent-runs", str(a.concurrent_runs), "--max-queued", str(max(100, a.runs))]
        if a.http_threads:
            args += ["--http-threads", str(a.http_threads)]
        r = run_load(a.nimbus, scene, Path(tmp) / "data", a.runs, a.clients, timeout=a.timeout, server_args=args)
    print(summary(r))
    lost = [i for i, s in r["statuses"].items() if s != "done"]
    twice = [i for i, n in r["executions"].items() if n != 1]
    print(f"runs not done: {len(lost)}; runs not executed exactly once: {len(twice)}")
    return 1 if lost or twice or r["error_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
