"""Load on `nimbus serve` (127.0.0.1 only, bounded in time): N runs queued on a small
scene while C clients poll run status as FarmVibes' client does (GET /v0/runs?ids=<id>).
Checks that every run finishes done, each executed exactly once (the server's log), and
reports the status latency percentiles and the server's peak RSS.

Used by bench/bench_server_load.py (20 runs, 200 clients) and, small, by
tests/python/test_server_load.py."""
import json
import multiprocessing as mp
import random
import re
import time

import requests

from nimbus_server import NimbusServer, run_body


def _poller(base, run_ids, stop_at, queue):
    """One process of client threads; each thread has its own keep-alive session."""
    import threading
    lat, errors = [], []
    lock = threading.Lock()

    def client():
        s = requests.Session()
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        mine, bad = [], []
        while time.monotonic() < stop_at.value:
            rid = random.choice(run_ids)
            t0 = time.perf_counter()
            try:
                r = s.get(f"{base}v0/runs?ids={rid}", headers=headers, timeout=30)
                ok = r.status_code == 200 and r.json()[0]["details.status"]
            except Exception as e:  # noqa: BLE001 - every failure is counted
                ok, r = False, e
            mine.append(time.perf_counter() - t0)
            if not ok:
                bad.append(str(r))
            time.sleep(0.05)  # a polling client, not a flood
        with lock:
            lat.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=client) for _ in range(queue[1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue[0].put((lat, errors))


def run_load(binary, scene, data_dir, runs=20, clients=200, processes=8, timeout=300, server_args=()):
    srv = NimbusServer(binary, data_dir, [scene["s2"].parent], server_args).start()
    try:
        c = srv.client()
        t0 = time.monotonic()
        ids = [c.submit(run_body(scene, name=f"load-{i}", parameters={"cloud_thr": 0.3 + 0.01 * i}))
               for i in range(runs)]
        stop_at = mp.Value("d", time.monotonic() + timeout)
        results = mp.Queue()
        per = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
        procs = [mp.Process(target=_poller, args=(srv.url, ids, stop_at, (results, n))) for n in per if n]
        for p in procs:
            p.start()
        statuses = {}
        while time.monotonic() < t0 + timeout:
            statuses = {i: c.status(i) for i in ids}
            if all(s in ("done", "failed") for s in statuses.values()):
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - t0
        with stop_at.get_lock():
            stop_at.value = 0
        lat, errors = [], []
        for _ in procs:
            l, e = results.get(timeout=120)
            lat += l
            errors += e
        for p in procs:
            p.join()
        with open(f"/proc/{srv.proc.pid}/status") as f:
            peak_rss = int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) * 1024
        srv.stop()
        log = "".join(srv.log)
        started = {i: len(re.findall(rf"run {i} started", log)) for i in ids}
        lat.sort()
        pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
        return {"runs": runs, "clients": clients, "seconds": round(elapsed, 1), "statuses": statuses,
                "executions": started, "requests": len(lat), "errors": errors[:5], "error_count": len(errors),
                "p50_ms": round(pct(0.50), 2), "p99_ms": round(pct(0.99), 2), "max_ms": round(pct(1.0), 2),
                "peak_rss_mib": round(peak_rss / 2**20, 1)}
    finally:
        srv.stop()


def summary(result):
    return json.dumps({k: v for k, v in result.items() if k not in ("statuses", "executions")})
