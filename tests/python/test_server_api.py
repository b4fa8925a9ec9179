"""`nimbus serve` against FarmVibes' REST API as its Python client uses it (spec
/work/shared/spec/farmvibes-rest-api.md): requests exactly as the client sends them,
responses checked field by field; the round trip's mask equals `nimbus run`'s bit for
bit; bad requests are 4xx JSON naming the field and queue nothing; security refusals."""
import email.utils
import json
import os
import re
import uuid

import numpy as np
import pytest
import rasterio

from conftest import run_nimbus
from nimbus_server import (EMBEDDED, STATUSES, WORKFLOW, GatedFileServer, NimbusServer, run_body, stac_item)

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?$")  # naive UTC, Python isoformat()
RUN_KEYS = ["name", "workflow", "parameters", "user_input", "id", "details", "task_details", "spatio_temporal_json",
            "output"]
DETAIL_KEYS = {"start_time", "submission_time", "end_time", "reason", "status", "subtasks"}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from synthetic_scene import make_scene, write_scene
    return write_scene(make_scene(560, 530, seed=5), tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def server(nimbus_bin, scene, tmp_path_factory):
    srv = NimbusServer(nimbus_bin, tmp_path_factory.mktemp("data"), [scene["s2"].parent]).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    return server.client()


def check_details(d, where):
    assert set(d) == DETAIL_KEYS, where
    assert d["status"] in STATUSES, where
    for key in ("start_time", "submission_time", "end_time"):
        assert d[key] is None or TIMESTAMP.match(d[key]), (where, key, d[key])


def test_workflows_list_and_describe(client):
    r = client.request("GET", "v0/workflows")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert WORKFLOW in r.json()
    assert client.request("GET", "v0/workflows/").json() == r.json()

    r = client.request("GET", f"v0/workflows/{WORKFLOW}?return_format=description")
    assert r.status_code == 200
    d = r.json()
    assert d["name"] == "improve_cloud_mask"
    assert d["inputs"] == {"s2_raster": "vibe_core.data.sentinel.Sentinel2Raster",
                           "product_mask": "vibe_core.data.sentinel.Sentinel2CloudMask"}
    assert d["outputs"] == {"mask": "vibe_core.data.sentinel.Sentinel2CloudMask"}
    # The workflow's effective defaults; the models are the server's --param defaults.
    assert d["parameters"] == {"cloud_thr": 0.3, "shadow_thr": 0.2, "in_memory": False, **EMBEDDED}
    desc = d["description"]
    assert set(desc["parameters"]) == set(d["parameters"])
    assert all(isinstance(v, str) and v for v in desc["parameters"].values())
    assert "∈" in desc["parameters"]["cloud_model"]  # UTF-8 served as application/json
    assert set(desc["inputs"]) == {"s2_raster", "product_mask"} and set(desc["outputs"]) == {"mask"}
    assert set(desc["task_descriptions"]) == {"cloud", "shadow", "merge"}
    assert desc["short_description"].startswith("Improves cloud masks")
    assert client.request("GET", f"v0/workflows/{WORKFLOW}").json() == d  # description is the default

    y = client.request("GET", f"v0/workflows/{WORKFLOW}?return_format=yaml")
    assert y.status_code == 200
    assert list(y.json()) == ["name", "sources", "sinks", "parameters", "tasks", "edges", "description"]
    assert y.json()["parameters"] == {k: None for k in d["parameters"]}
    assert y.json()["sinks"] == {"mask": "merge.merged_cloud_mask"}

    r = client.request("GET", "v0/workflows/no/such/workflow")
    assert r.status_code == 404 and r.json()["message"] == 'Workflow "no/such/workflow" not found'
    r = client.request("GET", f"v0/workflows/{WORKFLOW}?return_format=xml")
    assert r.status_code == 400 and r.json()["message"] == "Invalid return format: xml"


def test_health_metrics_and_headers(client, server):
    r = client.request("GET", "")  # E0: the client reads only the Date header
    date = email.utils.parsedate_to_datetime(r.headers["Date"])
    assert date.utcoffset().total_seconds() == 0
    r = client.request("GET", "v0/")
    assert r.json() == {"message": "REST API server is running", "id": None, "location": None}
    m = client.request("GET", "v0/system-metrics").json()
    assert set(m) == {"load_avg", "cpu_usage", "free_mem", "used_mem", "total_mem", "disk_free"}
    assert len(m["load_avg"]) == 3 and isinstance(m["total_mem"], int) and m["total_mem"] > m["free_mem"] > 0
    assert isinstance(m["disk_free"], int) and m["disk_free"] > 0
    assert server.host == "127.0.0.1"  # loopback unless told otherwise
    r = client.request("GET", "v0/nothing-here")
    assert r.status_code == 404 and "message" in r.json()


def test_round_trip_equals_nimbus_run(client, server, scene, nimbus_bin, tmp_path):
    before = client.request("GET", "v0/runs").json()
    run_id = client.submit(run_body(scene, parameters={"cloud_thr": 0.4}))
    assert str(uuid.UUID(run_id)) == run_id
    # What client.run() reads right after submitting.
    r = client.request("GET", f"v0/runs?ids={run_id}&fields=id&fields=name&fields=workflow&fields=parameters")
    assert r.status_code == 200
    assert r.json() == [{"name": "icm-test", "workflow": WORKFLOW, "parameters": {"cloud_thr": 0.4}, "id": run_id}]
    assert client.wait(run_id) == "done"

    run = client.request("GET", f"v0/runs/{run_id}").json()
    assert list(run) == RUN_KEYS
    assert run["user_input"] == run_body(scene, parameters={"cloud_thr": 0.4})["user_input"]  # as submitted
    assert run["spatio_temporal_json"] is None
    check_details(run["details"], "details")
    assert run["details"]["subtasks"] is None and run["details"]["reason"] is None
    assert run["details"]["submission_time"] <= run["details"]["start_time"] <= run["details"]["end_time"]
    assert list(run["task_details"]) == ["cloud", "shadow", "merge"]
    for name, task in run["task_details"].items():
        check_details(task, name)
        assert task["status"] == "done" and len(task["subtasks"]) == 1
        check_details(task["subtasks"][0], name + "[0]")
        assert task["subtasks"][0]["subtasks"] is None

    assert list(run["output"]) == ["mask"] and len(run["output"]["mask"]) == 1
    item = run["output"]["mask"][0]
    assert item["type"] == "Feature" and item["stac_version"] == "1.0.0" and item["links"] == []
    assert item["terravibes_data_type"] == "Sentinel2CloudMask"
    assert item["geometry"] == run["user_input"]["s2_raster"]["geometry"]
    assert item["bbox"] == [13.5, 52.2, 14.0, 52.6]
    props = item["properties"]
    for key, value in run["user_input"]["s2_raster"]["properties"].items():
        if key != "bands":
            assert props[key] == value, key
    assert props["bands"] == {"cloud": 0} and props["categories"] == ["Clear", "Cloud"]
    (asset_id, asset), = item["assets"].items()
    assert asset["type"] == "image/tiff" and os.path.isabs(asset["href"])
    assert os.path.basename(asset["href"]) == f"{asset_id}.tif"
    assert str(server.data_dir.resolve()) in asset["href"]  # outputs only under the data directory

    out = tmp_path / "run"
    args = ["run", WORKFLOW, "--input", f"s2_raster={scene['s2']}", "--input", f"product_mask={scene['product_mask']}",
            "--out-dir", out, "--no-cache", "--param", "cloud_thr=0.4"]
    for k, v in EMBEDDED.items():
        args += ["--param", f"{k}={v}"]
    run_nimbus(nimbus_bin, *args, check=True)
    with rasterio.open(asset["href"]) as served, rasterio.open(out / "mask.tif") as direct:
        np.testing.assert_array_equal(served.read(), direct.read())
        assert served.transform == direct.transform and served.crs == direct.crs

    r = client.request("GET", f"v0/runs?ids={run_id}&fields=task_details")
    assert list(r.json()[0]) == ["task_details"] and r.json()[0]["task_details"] == run["task_details"]
    assert client.request("GET", f"v0/runs?ids={run_id}&fields=details.reason").json() == [{"details.reason": None}]
    assert client.request("GET", "v0/runs").json() == before + [run_id]  # creation order
    everything = client.request("GET", "v0/runs?fields=id").json()
    assert [x["id"] for x in everything] == before + [run_id]
    assert client.request("GET", "v0/runs?fields=id&page=0&items=1").json() == everything[:1]
    r = client.request("GET", f"v0/runs?ids={run_id}&fields=details.nothing")
    assert r.status_code == 404 and "details.nothing" in r.json()["message"]
    r = client.request("GET", f"v0/runs?ids={run_id}&fields=output.nothing")
    assert r.status_code == 404


def test_lists_of_scenes_are_paired(client, scene):
    body = run_body(scene)
    body["user_input"]["s2_raster"] = [stac_item("a", scene["s2"], "Sentinel2Raster"),
                                       stac_item("b", scene["s2"], "Sentinel2Raster")]
    run_id = client.submit(body)  # the single product mask is used with both
    assert client.wait(run_id) == "done"
    run = client.request("GET", f"v0/runs/{run_id}").json()
    assert len(run["output"]["mask"]) == 2
    assert all(len(t["subtasks"]) == 2 for t in run["task_details"].values())
    a, b = (next(iter(i["assets"].values()))["href"] for i in run["output"]["mask"])
    assert a != b
    with rasterio.open(a) as x, rasterio.open(b) as y:
        np.testing.assert_array_equal(x.read(), y.read())


def _bad_bodies(scene, root):
    outside_link = root / "link-to-passwd.tif"
    if not outside_link.exists():
        outside_link.symlink_to("/etc/passwd")
    body = lambda: run_body(scene)  # noqa: E731

    def edit(fn):
        b = body()
        fn(b)
        return b

    return [
        ("extra field", edit(lambda b: b.update(colour="blue")), 422, "colour"),
        ("name type", edit(lambda b: b.update(name=3)), 422, "name"),
        ("no user_input", edit(lambda b: b.pop("user_input")), 422, "user_input"),
        ("parameters list", edit(lambda b: b.update(parameters=[1])), 422, "parameters"),
        ("unknown workflow", edit(lambda b: b.update(workflow="x/y")), 400, 'Workflow "x/y" unknown'),
        ("workflow path", edit(lambda b: b.update(workflow="../../etc/passwd")), 400, "unknown"),
        ("inline workflow", edit(lambda b: b.update(workflow={"name": "x"})), 400, "workflow"),
        ("unknown parameter", edit(lambda b: b.update(parameters={"cloud_tr": 0.5})), 400, "cloud_tr"),
        ("parameter type", edit(lambda b: b.update(parameters={"cloud_thr": "high"})), 400, "cloud_thr"),
        ("model outside roots", edit(lambda b: b.update(parameters={"cloud_model": "/etc/passwd"})), 400,
         "outside the server's input roots"),
        ("geometry", edit(lambda b: b.update(user_input={
            "start_date": "2021-02-01T00:00:00+00:00", "end_date": "2021-02-11T00:00:00+00:00",
            "geojson": {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {
                "type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}]}})), 400, "geometry"),
        ("missing source", edit(lambda b: b["user_input"].pop("product_mask")), 400, "multiple sources"),
        ("unknown source", edit(lambda b: b["user_input"].update(clouds={})), 400, "user_input.clouds"),
        ("wrong type", edit(lambda b: b["user_input"]["product_mask"].update(terravibes_data_type="CloudMask")), 400,
         "user_input.product_mask.terravibes_data_type"),
        ("missing property", edit(lambda b: b["user_input"]["s2_raster"]["properties"].pop("orbit_number")), 400,
         "user_input.s2_raster.properties.orbit_number"),
        ("no image asset", edit(lambda b: b["user_input"]["s2_raster"]["assets"]["s2-asset"].update(
            type="application/json")), 400, "user_input.s2_raster.assets"),
        ("/etc/shadow", run_body(scene, s2_href="/etc/shadow"), 400, "outside the server's input roots"),
        ("dot-dot", run_body(scene, s2_href=f"{root}/../../../../etc/passwd"), 400, "outside the server's input roots"),
        ("symlink out", run_body(scene, s2_href=outside_link), 400, "outside the server's input roots"),
        ("relative", run_body(scene, s2_href="s2.tif"), 400, "not an absolute path"),
        ("missing file", run_body(scene, s2_href=root / "nothing.tif"), 400, "does not exist"),
        ("ftp", run_body(scene, s2_href="ftp://example.org/s2.tif"), 400, "unsupported URL scheme"),
        ("remote file URI", run_body(scene, s2_href="file://otherhost/s2.tif"), 400, "remote host"),
        ("unpaired lists", edit(lambda b: b["user_input"].update(
            s2_raster=[b["user_input"]["s2_raster"]] * 2, product_mask=[b["user_input"]["product_mask"]] * 3)), 400,
         "paired by index"),
    ]


def test_bad_requests_name_the_field_and_queue_nothing(client, scene):
    before = client.request("GET", "v0/runs").json()
    for label, body, status, text in _bad_bodies(scene, scene["s2"].parent):
        r = client.request("POST", "v0/runs", body)
        assert r.status_code == status, (label, r.text)
        assert text in r.json()["message"], (label, r.json()["message"])
        if status == 400:
            assert r.json()["message"].startswith("Unable to run workflow with provided parameters. "), label
    r = client.session.post(client.base + "v0/runs", data="{not json", headers=client.headers)
    assert r.status_code == 422 and "not valid JSON" in r.json()["message"]
    r = client.request("POST", "v0/runs", [1, 2])
    assert r.status_code == 422
    assert client.request("GET", "v0/runs").json() == before  # nothing queued


def test_file_uri_is_accepted(client, scene):
    from urllib.parse import quote
    run_id = client.submit(run_body(scene, s2_href="file://" + quote(str(scene["s2"]))))
    assert client.wait(run_id) == "done"


def test_unknown_and_malformed_run_ids(client):
    missing = str(uuid.uuid4())
    for method, path, message in [("GET", f"v0/runs/{missing}", f'Workflow execution "{missing}" not found'),
                                  ("POST", f"v0/runs/{missing}/cancel", f"Workflow execution {missing} not found"),
                                  ("DELETE", f"v0/runs/{missing}", f"Workflow execution {missing} not found"),
                                  ("POST", f"v0/runs/{missing}/resubmit", f"Workflow run {missing} not found")]:
        r = client.request(method, path)
        assert r.status_code == 404 and r.json()["message"] == message, (method, path)
        r = client.request(method, path.replace(missing, "not-a-uuid"))
        assert r.status_code == 422 and "detail" in r.json(), (method, path)
    r = client.request("GET", f"v0/runs?ids={missing}")
    assert r.status_code == 404 and missing in r.json()["message"]
    assert client.request("GET", "v0/runs?ids=nope").status_code == 422
    assert client.request("GET", "v0/runs?fields=id&items=x").status_code == 422


def test_cancel_delete_resubmit(client, server, scene):
    gate = GatedFileServer([scene["s2"]])
    try:
        slow = run_body(scene, name="slow", s2_href=gate.url(scene["s2"]))
        executing = client.submit(slow)
        assert gate.requested.wait(30)  # the run is downloading its input: executing
        waiting = client.submit(run_body(scene, name="waiting"))
        assert client.status(waiting) == "pending"
        assert client.status(executing) in ("queued", "running")
        r = client.request("DELETE", f"v0/runs/{executing}")
        assert r.status_code == 400 and r.json()["message"] == "Cannot delete an unfinished workflow run."

        r = client.request("POST", f"v0/runs/{waiting}/cancel")
        assert r.status_code == 202
        assert r.json() == {"message": f"Requested cancellation of workflow run {waiting}", "id": None,
                            "location": None}
        assert client.status(waiting) == "cancelled"  # a pending run is cancelled at once
        client.request("POST", f"v0/runs/{executing}/cancel")
        assert client.wait(executing, until=("cancelled",), timeout=30) == "cancelled"
        run = client.request("GET", f"v0/runs/{executing}").json()
        assert run["output"] == {} and run["details"]["reason"] == "Cancellation requested by user"
        for task in run["task_details"].values():
            assert task["status"] == "cancelled" and task["subtasks"][0]["reason"] == "Cancellation requested by user"
        assert not list((server.data_dir / "runs").glob(f"{executing}*"))  # nothing partial left

        # Resubmit: a new run with the same body; the old one is untouched.
        r = client.request("POST", f"v0/runs/{executing}/resubmit")
        assert r.status_code == 201
        again = r.json()["id"]
        assert again != executing and client.status(executing) == "cancelled"
        gate.release()
        assert client.wait(again) == "done"
        resubmitted = client.request("GET", f"v0/runs/{again}").json()
        assert resubmitted["user_input"] == slow["user_input"] and resubmitted["name"] == "slow"
        href = next(iter(resubmitted["output"]["mask"][0]["assets"].values()))["href"]
        assert os.path.exists(href)
        assert client.request("POST", f"v0/runs/{again}/cancel").status_code == 202  # finished: no change
        assert client.status(again) == "done"

        r = client.request("DELETE", f"v0/runs/{again}")
        assert r.status_code == 200 and r.json()["message"] == f"Requested deletion of workflow run {again}"
        assert client.wait(again, until=("deleted",), timeout=10) == "deleted"
        run = client.request("GET", f"v0/runs/{again}").json()
        assert run["output"] == {} and run["details"]["reason"] == "Deletion requested by user"
        assert run["task_details"]["merge"]["status"] == "done"  # kept
        assert not os.path.exists(href)
        assert client.request("DELETE", f"v0/runs/{again}").status_code == 400  # already deleted
        assert again in client.request("GET", "v0/runs").json()  # still listed
    finally:
        gate.close()


def test_failed_run_has_a_reason(client, scene, tmp_path_factory):
    from synthetic_scene import make_scene, write_scene
    small = write_scene(make_scene(200, 180, seed=1), scene["s2"].parent / "small")
    run_id = client.submit(run_body(small))
    assert client.wait(run_id) == "failed"
    r = client.request("GET", f"v0/runs?ids={run_id}&fields=details.reason").json()
    assert r[0]["details.reason"].startswith("InputError: ") and "chip" in r[0]["details.reason"]
    run = client.request("GET", f"v0/runs/{run_id}").json()
    statuses = {t["status"] for t in run["task_details"].values()}
    assert "failed" in statuses and statuses <= {"failed", "cancelled"}
    assert run["output"] == {}


def test_bearer_token(nimbus_bin, scene, tmp_path):
    token = "s3cret-token"
    srv = NimbusServer(nimbus_bin, tmp_path / "data", [scene["s2"].parent], env={"NIMBUS_SERVER_TOKEN": token}).start()
    try:
        r = srv.client().request("GET", "v0/workflows")
        assert r.status_code == 401 and "Bearer" in r.json()["message"]
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert srv.client("wrong-token-x").request("GET", "v0/runs").status_code == 401
        assert srv.client(token).request("GET", "v0/workflows").status_code == 200
        r = srv.client().request("POST", "v0/runs", run_body(scene))
        assert r.status_code == 401
        assert srv.client(token).request("GET", "v0/runs").json() == []
    finally:
        srv.stop()


def test_body_size_limit(nimbus_bin, scene, tmp_path):
    srv = NimbusServer(nimbus_bin, tmp_path / "data", [scene["s2"].parent], ["--max-body-bytes", "4000"]).start()
    try:
        body = run_body(scene)
        body["user_input"]["s2_raster"]["properties"]["extra_info"] = {"padding": "x" * 5000}
        r = srv.client().request("POST", "v0/runs", body)
        assert r.status_code == 413 and "4000" in r.json()["message"]
        assert srv.client().request("GET", "v0/runs").json() == []
    finally:
        srv.stop()


def test_no_input_root_refuses_local_paths(nimbus_bin, scene, tmp_path):
    srv = NimbusServer(nimbus_bin, tmp_path / "data").start()
    try:
        r = srv.client().request("POST", "v0/runs", run_body(scene))
        assert r.status_code == 400 and "--input-root" in r.json()["message"]
    finally:
        srv.stop()


def test_bad_server_options(nimbus_bin, tmp_path):
    p = run_nimbus(nimbus_bin, "serve", "--data-dir", tmp_path / "d", "--input-root", tmp_path / "missing")
    assert p.returncode == 2 and "--input-root" in p.stderr
    p = run_nimbus(nimbus_bin, "serve", "--data-dir", tmp_path / "d", "--input-root", "/")
    assert p.returncode == 2 and "whole file system" in p.stderr


def test_bounded_queue(nimbus_bin, scene, tmp_path):
    gate = GatedFileServer([scene["s2"]])
    srv = NimbusServer(nimbus_bin, tmp_path / "data", [scene["s2"].parent], ["--max-queued", "1"]).start()
    try:
        c = srv.client()
        executing = c.submit(run_body(scene, s2_href=gate.url(scene["s2"])))
        assert gate.requested.wait(30)
        waiting = c.submit(run_body(scene))
        r = c.request("POST", "v0/runs", run_body(scene))
        assert r.status_code == 503 and "queue is full" in r.json()["message"]
        assert c.request("GET", "v0/runs").json() == [executing, waiting]  # the refused run was not stored
        gate.release()
        assert c.wait(waiting) == "done"
    finally:
        srv.stop()
        gate.close()
