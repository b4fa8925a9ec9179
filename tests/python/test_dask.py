"""nimbus.dask on a LocalCluster of several worker processes, including a worker killed
mid-scene: every scene ends with exactly one verified output."""
import hashlib
import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import rasterio

from conftest import python_package_dir, run_nimbus

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster(nimbus_py):
    # Worker processes import nimbus from the build tree.
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(python_package_dir()), old]))
    cluster = distributed.LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=40)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, nimbus_bin):
    """Five scenes and the mask the CLI makes for each, computed once."""
    from synthetic_scene import make_scene, write_scene

    base = tmp_path_factory.mktemp("dask-scenes")
    out = []
    for i in range(5):
        files = write_scene(make_scene(1400, 1300, 40 + i, False), base / f"d{i}")
        scene = dict(s2_raster=str(files["s2"]), product_mask=str(files["product_mask"]), id=f"tile{i}")
        run_nimbus(nimbus_bin, "improve-cloud-mask", "--s2-raster", files["s2"], "--product-mask",
                   files["product_mask"], "--out", base / f"expected{i}.tif", "-q", check=True)
        with rasterio.open(base / f"expected{i}.tif") as src:
            scene["expected"] = src.read()
        out.append(scene)
    return out


def _submitted(scenes):
    return [{k: v for k, v in s.items() if k != "expected"} for s in scenes]


def _check_outputs(scenes, out_dir):
    names = sorted(p.name for p in out_dir.iterdir())
    expected = sorted(f"tile{i}.tif{x}" for i in range(len(scenes)) for x in ("", ".aux.xml", ".nimbus.json"))
    assert names == expected, names
    for i, scene in enumerate(scenes):
        out = out_dir / f"tile{i}.tif"
        assert json.loads((out_dir / f"tile{i}.tif.nimbus.json").read_text())["sha256"] == hashlib.sha256(
            out.read_bytes()).hexdigest()
        with rasterio.open(out) as src:
            assert np.array_equal(src.read(), scene["expected"])


def test_scenes_on_a_local_cluster(nimbus_py, cluster, scenes, tmp_path):
    import nimbus.dask

    assert len(cluster.scheduler_info()["workers"]) == 3
    out_dir = tmp_path / "masks"
    outcomes = nimbus.dask.improve_cloud_masks(_submitted(scenes), out_dir, client=cluster)
    assert [(o["id"], o["status"]) for o in outcomes] == [(f"tile{i}", "done") for i in range(len(scenes))]
    _check_outputs(scenes, out_dir)
    again = nimbus.dask.improve_cloud_masks(_submitted(scenes), out_dir, client=cluster)
    assert {o["status"] for o in again} == {"skipped"}


def test_worker_killed_mid_scene(nimbus_py, cluster, scenes, tmp_path):
    import nimbus.dask

    out_dir = tmp_path / "masks"
    killed = []

    def kill_a_busy_worker():
        # As soon as some scene is being written, SIGKILL the worker process running a task.
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            busy = [addr for addr, keys in cluster.processing().items() if keys]
            if busy and out_dir.exists() and any(".nimbus-partial" in p.name for p in out_dir.iterdir()):
                pid = cluster.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.005)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    outcomes = nimbus.dask.improve_cloud_masks(_submitted(scenes), out_dir, client=cluster)
    killer.join()
    assert killed, "a worker should have been killed while writing"
    assert [o["id"] for o in outcomes] == [f"tile{i}" for i in range(len(scenes))]
    assert {o["status"] for o in outcomes} <= {"done", "skipped"}
    # Nothing lost, nothing duplicated, no partial files left.
    _check_outputs(scenes, out_dir)


def test_bad_scene_is_an_outcome_not_a_crash(nimbus_py, cluster, scenes, tmp_path):
    import nimbus.dask

    good = _submitted(scenes)[1]
    bad = dict(good, s2_raster=str(tmp_path / "missing.tif"), id="missing")
    outcomes = nimbus.dask.improve_cloud_masks([good, bad], tmp_path / "masks", client=cluster)
    assert [o["status"] for o in outcomes] == ["done", "failed"]
    assert "missing.tif" in outcomes[1]["error"]
