#!/usr/bin/python3
"""Event-to-dataplane latency, and the watch's memory and CPU, of ferryd following a
Kubernetes API server (tests/e2e/kubeapi.py, over HTTPS on loopback) at N services.

For each N: the fake API server holds N Services (every 16th a NodePort) with one
EndpointSlice of 10 endpoints each, and this node's Node. ferryd (on two DPDK null ports:
only the control path is measured) starts with a kubeconfig and lists them; the initial
sync is timed to the publish that holds every Service. Then, one at a time, an
EndpointSlice changes on the server: latency is from just before the server writes the
watch event to ferryd's publish of the snapshot with the change (ferryd reports the wall
clock of each publish in `stats`; one change is in flight at a time, so the last publish is
that change's). Last, one endpoint change per second for --watch-seconds: ferryd's
resident memory, and the CPU time of its control and watch threads (not the poll-mode
workers, which spin by design). Prints one JSON line per N.

usage: perf/api_latency.py [--services 1000,10000] [--changes 50] [--watch-seconds 60]
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "perf"))
import kubeapi  # noqa: E402
from apply_latency import request, rss_kib, start_ferryd, stop_ferryd, summary  # noqa: E402

NODE = "node-0"


def service(i):
    svc = kubeapi.service(
        f"svc-{i}", ns="bench", cluster_ip=f"198.19.{(i + 1) >> 8}.{(i + 1) & 255}",
        type="NodePort" if i % 16 == 0 else "ClusterIP",
        ports=[{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}])
    for p in svc["spec"]["ports"]:
        p.pop("nodePort", None)  # ferryd allocates it, as the API server would
    return svc


def endpoint_slice(i, generation):
    eps = [{"ip": f"10.{(i >> 12) & 255}.{(i >> 4) & 255}.{(i & 15) * 16 + e}",
            "node": f"node-{(i + e + generation) % 7}", "ready": True} for e in range(10)]
    return kubeapi.endpoint_slice(f"svc-{i}", ns="bench", name=f"svc-{i}-x", endpoints=eps,
                                  ports=[{"name": "http", "port": 8080, "protocol": "TCP"}])


def stats(sock):
    return request(sock, {"op": "stats"})["result"]


def thread_cpu_seconds(pid):
    """CPU seconds of ferryd's threads other than the DPDK workers, by thread name."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if name.startswith(("lcore-worker", "rte-worker")):
            continue
        out[name] = out.get(name, 0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def run_one(build, n, changes, watch_seconds, tmp):
    api = kubeapi.FakeKubeAPI(tmp / "pki", token="bench-token", bookmark_interval=None)
    api.start()
    prefix = f"ferry-api-{os.getpid()}"
    proc = None
    try:
        api.apply(kubeapi.node(NODE, zone="zone-a"))
        for i in range(n):
            api.apply(service(i))
            api.apply(endpoint_slice(i, 0))
        kubeconfig = api.write_kubeconfig(tmp / "kubeconfig")
        t0 = time.time()
        proc, sock = start_ferryd(build, tmp, prefix,
                                  f'[kubernetes]\nkubeconfig = "{kubeconfig}"\n')
        # Synced: both kinds listed and every Service port in the published snapshot.
        deadline = time.time() + 600
        while True:
            s = stats(sock)
            sources = {r["kind"]: r for r in s["sources"]["kubernetes"]["resources"]}
            if (all(r["synced"] for r in sources.values())
                    and len(s["services"]) >= n + (n + 15) // 16):
                break
            if time.time() > deadline:
                raise SystemExit(f"ferryd did not sync {n} services: {sources}")
            time.sleep(0.05)
        sync_s = s["snapshot"]["published_unix_ns"] / 1e9 - t0
        sync_cpu = thread_cpu_seconds(proc.pid)
        time.sleep(0.5)
        rss_synced = rss_kib(proc.pid)

        latency_ms = []
        for c in range(1, changes + 1):
            i = c * 7919 % n
            before = stats(sock)["snapshot"]["generation"]
            t_event = time.time_ns()
            api.apply(endpoint_slice(i, c))
            deadline = time.time() + 10
            time.sleep(0.1)  # no stats call while the change is on its way: it would delay it
            while True:
                snap = stats(sock)["snapshot"]
                if snap["generation"] > before:
                    break
                time.sleep(0.02)
                if time.time() > deadline:
                    raise SystemExit(f"change {c} was not published")
            latency_ms.append((snap["published_unix_ns"] - t_event) / 1e6)

        cpu_before = thread_cpu_seconds(proc.pid)
        t_start = time.time()
        for c in range(watch_seconds):
            api.apply(endpoint_slice(c * 31 % n, changes + c + 1))
            time.sleep(max(0.0, t_start + c + 1 - time.time()))
        elapsed = time.time() - t_start
        cpu_after = thread_cpu_seconds(proc.pid)
        cpu = {k: round((cpu_after.get(k, 0) - v) / elapsed * 100, 2)
               for k, v in cpu_before.items() if cpu_after.get(k, 0) - v > 0}
        events = sum(r["events"] for r in stats(sock)["sources"]["kubernetes"]["resources"])
        return {"bench": "api", "case": "ferryd_watch", "services": n,
                "endpoints_per_service": 10, "initial_sync_s": round(sync_s, 2),
                "initial_sync_cpu_s": {k: round(v, 2) for k, v in sync_cpu.items() if v >= 0.01},
                "rss_synced_mib": round(rss_synced / 1024, 1),
                "rss_after_watch_mib": round(rss_kib(proc.pid) / 1024, 1),
                "event_to_publish_ms": summary(latency_ms),
                "watch_seconds": round(elapsed, 1), "changes_per_second": 1,
                "cpu_percent_by_thread": cpu,
                "cpu_percent_control_and_watch": round(sum(cpu.values()), 2),
                "events_seen": events}
    finally:
        if proc:
            stop_ferryd(proc, prefix)
        api.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", default="1000,10000")
    ap.add_argument("--changes", type=int, default=50)
    ap.add_argument("--watch-seconds", type=int, default=60)
    ap.add_argument("--build", default=str(ROOT / "build"))
    args = ap.parse_args()
    for n in (int(x) for x in args.services.split(",")):
        with tempfile.TemporaryDirectory(prefix="ferry-api-") as tmp:
            print(json.dumps(run_one(Path(args.build), n, args.changes, args.watch_seconds,
                                     Path(tmp))), flush=True)


if __name__ == "__main__":
    sys.exit(main())
