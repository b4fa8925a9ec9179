"""A small load on `nimbus serve` (the full one is bench/bench_server_load.py): runs
queued while clients poll their status; every run finishes done, executed exactly once,
and no status request fails. No timing is asserted (latency is reported by the bench)."""
from server_load import run_load


def test_queued_runs_with_polling_clients(nimbus_bin, tmp_path):
    from synthetic_scene import make_scene, write_scene
    scene = write_scene(make_scene(560, 530, seed=4), tmp_path / "inputs")
    r = run_load(nimbus_bin, scene, tmp_path / "data", runs=4, clients=24, processes=2, timeout=240,
                 server_args=["--concurrent-runs", "2", "--max-queued", "4"])
    assert set(r["statuses"].values()) == {"done"}, r["statuses"]
    assert set(r["executions"].values()) == {1}, r["executions"]
    assert r["error_count"] == 0, r["errors"]
    assert r["requests"] > 0
