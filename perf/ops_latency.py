#!/usr/bin/python3
"""What the operator verbs and a metrics scrape cost a running ferryd, at N services.

For each N: starts ferryd on two null ports (as perf/apply_latency.py does) with the metrics
endpoint on a free loopback port, applies N Services x 10 endpoints, then times each request
from send to answer, `runs` times: status, stats, get services, describe, trace, get flows,
and GET /metrics (the scrape renders the same numbers as stats, on the control thread).
Then the control socket under load: `stalled` clients connect and send half a request (they
never finish it; ferryd drops them after 5 s) while `busy` threads send status requests back
to back; the time of a small request (get pods) is measured beside the same request with no
other client. Prints one JSON line per N.

usage: perf/ops_latency.py [--services 1000,10000] [--runs 30] [--build build]
"""
import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apply_latency import request, service_docs, start_ferryd, stop_ferryd, summary  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(fn, runs):
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1000)
    return summary(ms)


def under_load(sock, runs, stalled, busy):
    """Latency of get pods while `stalled` clients hold half-sent requests and `busy` threads
    send status requests without pause."""
    held = []
    for _ in range(stalled):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock)
        s.sendall(b'{"op": "sta')
        held.append(s)
    stop = threading.Event()
    answered = [0] * busy

    def hammer(i):
        while not stop.is_set():
            request(sock, {"op": "status"})
            answered[i] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(busy)]
    for t in threads:
        t.start()
    try:
        t0 = time.perf_counter()
        result = timed(lambda: request(sock, {"op": "get", "resource": "pods"}), runs)
        elapsed = time.perf_counter() - t0
    finally:
        stop.set()
        for t in threads:
            t.join()
        for s in held:
            s.close()
    return result, round(sum(answered) / elapsed)


def run_one(build, n, runs, stalled, busy, tmp):
    prefix = f"ferry-ops-{os.getpid()}"
    port = free_port()
    proc, sock = start_ferryd(build, tmp, prefix, metrics=f"127.0.0.1:{port}")
    try:
        request(sock, {"op": "apply", "documents": [{"origin": "bench", "text": service_docs(n)}]})
        url = f"http://127.0.0.1:{port}/metrics"
        scrape_bytes = len(urllib.request.urlopen(url, timeout=60).read())
        ops = {
            "status": {"op": "status"},
            "stats": {"op": "stats"},
            "get_services": {"op": "get", "resource": "services"},
            "describe": {"op": "describe", "kind": "service", "namespace": "bench",
                         "name": "svc-0"},
            "trace": {"op": "trace", "protocol": "tcp", "source": "198.18.0.2:40000",
                      "destination": "198.19.0.1:80"},
            "get_flows": {"op": "get", "resource": "flows", "limit": 100},
        }
        out = {"bench": "ops", "services": n, "runs": runs}
        for name, req in ops.items():
            out[f"{name}_ms"] = timed(lambda req=req: request(sock, req), runs)
        out["metrics_scrape_ms"] = timed(
            lambda: urllib.request.urlopen(url, timeout=60).read(), runs)
        out["metrics_scrape_bytes"] = scrape_bytes
        out["get_pods_idle_ms"] = timed(
            lambda: request(sock, {"op": "get", "resource": "pods"}), runs)
        loaded, rate = under_load(sock, runs, stalled, busy)
        out["get_pods_loaded_ms"] = loaded
        out["load"] = {"stalled_clients": stalled, "busy_clients": busy,
                       "busy_status_per_s": rate}
        return out
    finally:
        stop_ferryd(proc, prefix)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", default="1000,10000")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--stalled", type=int, default=40)
    ap.add_argument("--busy", type=int, default=4)
    ap.add_argument("--build", default=str(ROOT / "build"))
    args = ap.parse_args()
    for n in [int(x) for x in args.services.split(",")]:
        with tempfile.TemporaryDirectory(prefix="ferry-ops-") as d:
            print(json.dumps(run_one(Path(args.build), n, args.runs, args.stalled, args.busy,
                                     Path(d))), flush=True)


if __name__ == "__main__":
    main()
