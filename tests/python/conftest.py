"""Shared fixtures: the nimbus binary, generated test models and synthetic scenes."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "tools"))

np = pytest.importorskip("numpy")
rasterio = pytest.importorskip("rasterio")


def _cache_dir():
    return Path(os.environ.get("NIMBUS_TEST_CACHE", ROOT / "build" / "test-cache"))


@pytest.fixture(scope="session")
def nimbus_bin():
    path = Path(os.environ.get("NIMBUS_BIN", ROOT / "build" / "nimbus"))
    if not path.exists():
        pytest.skip(f"nimbus binary not built at {path}; build first or set NIMBUS_BIN")
    return path


def python_package_dir():
    """Where the built package lives (build/python); NIMBUS_PYTHONPATH overrides."""
    return Path(os.environ.get("NIMBUS_PYTHONPATH", ROOT / "build" / "python"))


@pytest.fixture(scope="session")
def nimbus_py():
    """The nimbus Python package (skips where it is not built, e.g. in sanitizer builds)."""
    if os.environ.get("NIMBUS_PYTHONPATH") == "":
        pytest.skip("this build has no Python module (sanitizer build)")
    path = python_package_dir()
    if not (path / "nimbus" / "__init__.py").exists():
        pytest.skip(f"the nimbus Python package is not built at {path}")
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    import nimbus
    return nimbus


@pytest.fixture(scope="session")
def test_models():
    """Torch-built test models, regenerated only when their generator changes; safe when several
    pytest processes ask at once (tests/tools/cached_test_models.py)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from cached_test_models import ensure_test_models
    return ensure_test_models(_cache_dir())


@pytest.fixture(scope="session")
def default_models():
    return {"cloud": ROOT / "models" / "nimbus_cloud_v2.onnx", "shadow": ROOT / "models" / "nimbus_shadow_v1.onnx"}


@pytest.fixture
def make_scene(tmp_path):
    """make_scene(width, height, seed=0, nodata_wedge=False) -> {'s2', 'product_mask', 'truth'} paths."""
    from synthetic_scene import make_scene as build, write_scene

    def make(width, height, seed=0, nodata_wedge=False, name="scene"):
        return write_scene(build(width, height, seed, nodata_wedge), tmp_path / name)

    return make


def run_nimbus(binary, *args, check=False):
    proc = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"nimbus failed ({proc.returncode}): {proc.stderr}")
    return proc
