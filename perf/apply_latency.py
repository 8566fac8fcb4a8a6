#!/usr/bin/python3
"""Apply time and memory of a running ferryd, through its control socket, at N services.

For each N: starts ferryd on two null ports (DPDK net_null: no traffic, so nothing but the
control path is measured), applies N Services x 10 endpoints (every 16th a NodePort with
its nodePort allocated) in one request, reads ferryd's resident memory before and after,
then applies one changed EndpointSlice at a time and times each from the request to
ferryd's answer (sent after the new snapshot is published, so the workers' next poll uses
it), both over the socket directly and as `ferryctl apply -f FILE` (process start
included). Prints one JSON line per N.

usage: perf/apply_latency.py [--services 1000,10000,30000] [--changes 20] [--build build]
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def service_docs(n, endpoints=10):
    docs = []
    for i in range(n):
        name = f"svc-{i}"
        cip = f"198.19.{(i + 1) >> 8}.{(i + 1) & 255}"
        node_port = i % 16 == 0
        docs.append(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: bench}}\n"
            f"spec:\n  type: {'NodePort' if node_port else 'ClusterIP'}\n  clusterIP: {cip}\n"
            "  ports: [{name: http, port: 80, targetPort: 8080}]\n---\n" + slice_doc(i, endpoints, 0))
    return "---\n".join(docs)


def slice_doc(i, endpoints, generation):
    eps = "".join(
        f"  - addresses: [\"10.{(i >> 12) & 255}.{(i >> 4) & 255}.{(i & 15) * 16 + e}\"]\n"
        f"    conditions: {{ready: true}}\n    nodeName: node-{(i + e + generation) % 7}\n"
        for e in range(endpoints))
    return ("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n"
            f"  name: svc-{i}-x\n  namespace: bench\n  labels: {{kubernetes.io/service-name: svc-{i}}}\n"
            "addressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n" + eps)


def request(sock_path, req, timeout=600):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall((json.dumps(req) + "\n").encode())
        s.shutdown(socket.SHUT_WR)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise SystemExit(f"ferryd refused: {reply.get('error')}")
    return reply


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def summary(values):
    v = sorted(values)
    return {"median": round(statistics.median(v), 3), "min": round(v[0], 3),
            "max": round(v[-1], 3), "p99": round(v[min(len(v) - 1, len(v) * 99 // 100)], 3)}


def start_ferryd(build, tmp, prefix, extra="", metrics=""):
    """ferryd on two DPDK null ports with its socket in tmp; returns (process, socket path)
    once it answers. `extra`: TOML appended to the config; `metrics`: the metrics address
    (off by default: several benchmark ferryds may share the host's loopback)."""
    sock = str(tmp / "ferry.sock")
    config = tmp / "ferry.toml"
    config.write_text(f"""\
[node]
name = "node-0"
[dataplane]
eal_args = ["-l", "0,1", "--no-huge", "-m", "1024", "--no-pci", "--file-prefix", "{prefix}",
            "--vdev", "net_null0", "--vdev", "net_null1", "--log-level", "*:warning"]
mbufs = 4095
idle_sleep_us = 100
[[port]]
name = "eth0"
device = "net_null0"
address = "198.18.0.254/24"
[[port]]
name = "eth1"
device = "net_null1"
address = "198.18.1.254/24"
[control]
socket = "{sock}"
# One request loads up to 30,000 Services (~27 MB): above the default cap (4 MiB, which bounds
# the control thread's time on one request), kept so load_ms stays comparable across runs.
max_request_bytes = 67108864
[services]
service_cidr = "198.19.0.0/16"
[conntrack]
capacity = 65536
[metrics]
address = "{metrics}"
{extra}""")
    log = open(tmp / "ferryd.log", "w")
    proc = subprocess.Popen([str(build / "tools" / "ferryd"), "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.time() + 30
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"ferryd exited: {(tmp / 'ferryd.log').read_text()}")
        if os.path.exists(sock):
            try:
                request(sock, {"op": "get", "resource": "pods"}, timeout=5)
                return proc, sock
            except (OSError, ValueError):
                pass
        if time.time() > deadline:
            stop_ferryd(proc, prefix)
            raise SystemExit("ferryd did not start")
        time.sleep(0.1)


def stop_ferryd(proc, prefix):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    subprocess.run(["rm", "-rf", f"/var/run/dpdk/{prefix}"])


def run_one(build, n, changes, tmp):
    prefix = f"ferry-apply-{os.getpid()}"
    proc, sock = start_ferryd(build, tmp, prefix)
    try:
        text = service_docs(n)
        rss_before = rss_kib(proc.pid)
        t0 = time.perf_counter()
        request(sock, {"op": "apply", "documents": [{"origin": "bench", "text": text}]})
        load_ms = (time.perf_counter() - t0) * 1000
        time.sleep(0.5)  # let freed parser memory settle
        rss_after = rss_kib(proc.pid)

        socket_ms, ferryctl_ms = [], []
        env = dict(os.environ, FERRY_SOCKET=sock)
        for c in range(1, changes + 1):
            i = c * 7919 % n
            t0 = time.perf_counter()
            request(sock, {"op": "apply",
                           "documents": [{"origin": "change", "text": slice_doc(i, 10, 2 * c)}]})
            socket_ms.append((time.perf_counter() - t0) * 1000)
            f = tmp / "change.yaml"
            f.write_text(slice_doc(i, 10, 2 * c + 1))
            t0 = time.perf_counter()
            r = subprocess.run([str(build / "tools" / "ferryctl"), "apply", "-f", str(f)], env=env,
                               capture_output=True, text=True)
            ferryctl_ms.append((time.perf_counter() - t0) * 1000)
            if r.returncode != 0 or "configured" not in r.stdout:
                raise SystemExit(f"ferryctl apply: {r.stdout}{r.stderr}")
        return {"bench": "apply", "case": "ferryd_socket", "services": n,
                "endpoints_per_service": 10, "load_ms": round(load_ms, 1),
                "rss_before_mib": round(rss_before / 1024, 1),
                "rss_after_mib": round(rss_after / 1024, 1),
                "memory_per_service_kib": round((rss_after - rss_before) / n, 2),
                "slice_change_socket_ms": summary(socket_ms),
                "slice_change_ferryctl_ms": summary(ferryctl_ms)}
    finally:
        stop_ferryd(proc, prefix)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", default="1000,10000,30000")
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--build", default=str(ROOT / "build"))
    args = ap.parse_args()
    for n in (int(x) for x in args.services.split(",")):
        with tempfile.TemporaryDirectory(prefix="ferry-apply-") as tmp:
            print(json.dumps(run_one(Path(args.build), n, args.changes, Path(tmp))), flush=True)


if __name__ == "__main__":
    sys.exit(main())
