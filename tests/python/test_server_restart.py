"""`nimbus serve` survives restarts: finished runs and outputs remain, pending runs stay
queued, a run interrupted by SIGTERM goes back to pending, and a run executing when the
server was killed (-9) is marked failed with a reason and leaves no partial output."""
import os

import pytest

from nimbus_server import GatedFileServer, NimbusServer, run_body


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from synthetic_scene import make_scene, write_scene
    return write_scene(make_scene(560, 530, seed=7), tmp_path_factory.mktemp("inputs"))


def _output_href(run):
    return next(iter(run["output"]["mask"][0]["assets"].values()))["href"]


def _leftovers(data_dir, run_id):
    return sorted(p.name for p in (data_dir / "runs").glob(f"{run_id}*"))


def test_sigterm_requeues_and_restart_keeps_everything(nimbus_bin, scene, tmp_path):
    data = tmp_path / "data"
    gate = GatedFileServer([scene["s2"]])
    try:
        srv = NimbusServer(nimbus_bin, data, [scene["s2"].parent]).start()
        c = srv.client()
        finished = c.submit(run_body(scene, name="finished"))
        assert c.wait(finished) == "done"
        finished_view = c.request("GET", f"v0/runs/{finished}").json()
        executing = c.submit(run_body(scene, name="executing", s2_href=gate.url(scene["s2"])))
        assert gate.requested.wait(30)
        waiting = c.submit(run_body(scene, name="waiting"))
        assert srv.stop() == 0  # SIGTERM: a clean stop
        assert _leftovers(data, executing) == []

        gate.requested.clear()
        srv = NimbusServer(nimbus_bin, data, [scene["s2"].parent]).start()
        c = srv.client()
        assert c.request("GET", "v0/runs").json() == [finished, executing, waiting]
        assert c.request("GET", f"v0/runs/{finished}").json() == finished_view
        assert os.path.exists(_output_href(finished_view))
        assert gate.requested.wait(30)  # the interrupted run executes again, from the start
        assert c.status(waiting) == "pending"
        gate.release()
        assert c.wait(executing) == "done"
        assert c.wait(waiting) == "done"
        srv.stop()
    finally:
        gate.close()


def test_kill9_during_a_run(nimbus_bin, scene, tmp_path):
    data = tmp_path / "data"
    gate = GatedFileServer([scene["s2"]])
    try:
        srv = NimbusServer(nimbus_bin, data, [scene["s2"].parent]).start()
        c = srv.client()
        killed = c.submit(run_body(scene, name="killed", s2_href=gate.url(scene["s2"])))
        assert gate.requested.wait(30)
        waiting = c.submit(run_body(scene, name="waiting"))
        assert _leftovers(data, killed) == [f"{killed}.partial"]  # executing: its private directory
        srv.kill9()

        srv = NimbusServer(nimbus_bin, data, [scene["s2"].parent]).start()
        c = srv.client()
        assert c.status(killed) == "failed"
        reason = c.request("GET", f"v0/runs?ids={killed}&fields=details.reason").json()[0]["details.reason"]
        assert "server stopped while this run was executing" in reason
        run = c.request("GET", f"v0/runs/{killed}").json()
        assert run["output"] == {} and run["details"]["end_time"] is not None
        assert all(t["status"] in ("failed", "cancelled", "done") for t in run["task_details"].values())
        assert _leftovers(data, killed) == []  # no partial output
        assert c.wait(waiting) == "done"  # the queued run was kept and runs
        assert os.path.exists(_output_href(c.request("GET", f"v0/runs/{waiting}").json()))
        srv.stop()
    finally:
        gate.close()
