#!/usr/bin/env python3
"""The torch-built test models of make_test_models.py, cached in CACHE_DIR/models-<digest of the
generator> and regenerated only when the generator changes.

Safe for concurrent callers (pytest processes run side by side under `ctest -j`): each one
generates into its own temporary directory and renames it into place, so a models directory
is either absent or complete. Under CTest the pytest_test_models fixture runs this once before
the test files.

Usage: cached_test_models.py CACHE_DIR   (prints the models directory; nothing to do without torch/onnx)
"""
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

GENERATOR = Path(__file__).resolve().with_name("make_test_models.py")
COMPLETE_MARKER = "fpn_shadow_op13.onnx"  # the generator's last file


def ensure_test_models(cache_dir):
    digest = hashlib.sha256(GENERATOR.read_bytes()).hexdigest()[:12]
    out = Path(cache_dir) / f"models-{digest}"
    if (out / COMPLETE_MARKER).exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    work.chmod(0o755)  # mkdtemp's 0700 would stay on the renamed directory
    try:
        proc = subprocess.run([sys.executable, str(GENERATOR), str(work)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{GENERATOR.name} failed ({proc.returncode}):\n{proc.stderr}")
        if out.exists() and not (out / COMPLETE_MARKER).exists():
            shutil.rmtree(out, ignore_errors=True)  # an interrupted run of an older, non-atomic cache
        try:
            os.rename(work, out)
        except OSError:
            if not (out / COMPLETE_MARKER).exists():  # else another process's identical copy won
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    missing = [m for m in ("torch", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"no test models: {', '.join(missing)} not installed (the tests that need them skip)")
        return
    print(ensure_test_models(sys.argv[1]))


if __name__ == "__main__":
    main()
