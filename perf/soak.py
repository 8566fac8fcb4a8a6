#!/usr/bin/python3
"""Churn soak driver: real traffic through a running ferryd while its Services change every
--interval seconds; prints (and writes, --out) a JSON summary of what it checked.

Run it in the client's network namespace of a test topology (tests/e2e/test_soak.py does
that; perf/soak.sh runs that test for as long as asked). The pods must serve HTTP and UDP
echo on ports PORT_BASE..PORT_BASE+services-1 (scripts/pod_server.py) and record the
packets they receive (scripts/pod_sniff.py).

Service k (soak-k, ClusterIP 198.19.0.(100+k)) has TCP port 80 and UDP port 53, both to
target port PORT_BASE+k, so a backend (pod address, port) belongs to one Service only and a
packet seen at it says which Service it came through. Every --interval one change, through
one persistent control-socket connection: an endpoint added to or removed from a slice, a
drain or undrain (weight 0 / null), a weight 1-5, a whole Service (with its slice) deleted
or created again.

Traffic:
- long-lived TCP connections (--long): HTTP/1.1 keep-alive, a request every --period s;
  each answer must name the pod of the first. A different pod is a misroute. A broken
  connection is expected only when its backend left the Service at least the grace before
  (the flow is flushed; the next segment reaches a live pod, which resets it); any other
  break counts as broken.
- short connections (--short-rate per second): a new connection per request; the answer
  must come from a pod that is (or was within --slack s) an endpoint of that Service.
- UDP flows (--udp): one socket each, a datagram every --period s; the answering pod may
  change only after its backend left the Service (UDP flows of a removed backend are
  flushed at once).
Checks at the end: the above counts, no packet at a removed backend more than grace + 3 s
after its removal (the pods' packet records), ferryd's pid alive and unchanged, its RSS
after the warm-up vs at the end, and the connection table's size against a bound.
"""
import argparse
import json
import os
import random
import socket
import sys
import threading
import time

VIP_BASE = (198, 19, 0, 100)


def vip(k):
    return f"{VIP_BASE[0]}.{VIP_BASE[1]}.{VIP_BASE[2]}.{VIP_BASE[3] + k}"


class Control:
    """One persistent connection to ferryd's control socket (JSON + newline each way)."""

    def __init__(self, path):
        self.path = path
        self.sock = None
        self.buf = b""

    def request(self, req):
        for attempt in range(2):
            try:
                if self.sock is None:
                    self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    self.sock.settimeout(30)
                    self.sock.connect(self.path)
                    self.buf = b""
                self.sock.sendall(json.dumps(req).encode() + b"\n")
                while b"\n" not in self.buf:
                    chunk = self.sock.recv(1 << 16)
                    if not chunk:
                        raise ConnectionError("control socket closed")
                    self.buf += chunk
                line, self.buf = self.buf.split(b"\n", 1)
                return json.loads(line)
            except (OSError, ConnectionError):
                if self.sock:
                    self.sock.close()
                self.sock = None
                if attempt:
                    raise
        return None


def service_yaml(k, port):
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: soak-{k}}}\nspec:\n"
            f"  clusterIP: {vip(k)}\n  ports:\n"
            f"    - {{name: http, protocol: TCP, port: 80, targetPort: {port}}}\n"
            f"    - {{name: dns, protocol: UDP, port: 53, targetPort: {port}}}\n")


def slice_yaml(k, port, ips):
    eps = "".join(f"  - {{addresses: [\"{ip}\"], conditions: {{ready: true}}}}\n"
                  for ip in sorted(ips))
    return ("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
            f"metadata: {{name: soak-{k}-1, labels: {{kubernetes.io/service-name: soak-{k}}}}}\n"
            "addressType: IPv4\n"
            f"ports: [{{name: http, protocol: TCP, port: {port}}}, "
            f"{{name: dns, protocol: UDP, port: {port}}}]\n"
            + (f"endpoints:\n{eps}" if ips else "endpoints: []\n"))


class World:
    """What the driver made the Services be, and when each backend joined or left."""

    def __init__(self, pods, services, port_base):
        self.lock = threading.Lock()
        self.pods = pods  # name -> ip
        self.ip_of = dict(pods)
        self.port_base = port_base
        self.present = {k: True for k in range(services)}
        self.members = {k: set(pods) for k in range(services)}
        self.drained = {k: set() for k in range(services)}
        self.sports = {}  # (service, client port) -> (pod, time) of its last connection
        # (ip, port) -> [(time, joined: bool)], joined at start.
        self.timeline = {}
        t = time.time()
        for k in range(services):
            for name in pods:
                self.timeline[(pods[name], port_base + k)] = [(t, True)]

    def used(self, k, sport, pod):
        """Notes that a connection from sport went to Service k's pod (None: not known yet);
        returns the previous (pod, time) of that source port."""
        with self.lock:
            previous = self.sports.get((k, sport))
            if pod is not None or previous is None:
                self.sports[(k, sport)] = (pod, time.time())
            return previous

    def port(self, k):
        return self.port_base + k

    def backends(self, k):
        return {self.pods[n] for n in self.members[k]} if self.present[k] else set()

    def note(self, k, before, after, t):
        for ip in before - after:
            self.timeline[(ip, self.port(k))].append((t, False))
        for ip in after - before:
            self.timeline[(ip, self.port(k))].append((t, True))

    def removed_between(self, ip, port, start, end):
        """The first removal of (ip, port) in [start, end], or None."""
        with self.lock:
            for t, joined in self.timeline.get((ip, port), []):
                if not joined and start <= t <= end:
                    return t
        return None

    def member_between(self, ip, port, start, end):
        """Whether (ip, port) was a backend at some time in [start, end]."""
        with self.lock:
            state = False
            for et, joined in self.timeline.get((ip, port), []):
                if et <= start:
                    state = joined
                elif et <= end and joined:
                    return True
                elif et > end:
                    break
            return state

    def last_removal(self, ip, port, before):
        """The last removal of (ip, port) at or before `before`, or None."""
        with self.lock:
            last = None
            for et, joined in self.timeline.get((ip, port), []):
                if et > before:
                    break
                if not joined:
                    last = et
            return last


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}
        self.examples = {}

    def add(self, key, n=1, example=None):
        with self.lock:
            self.c[key] = self.c.get(key, 0) + n
            if example is not None and len(self.examples.setdefault(key, [])) < 5:
                self.examples[key].append(example)


def http_get(sock, keep_alive=True):
    req = b"GET / HTTP/1.1\r\nHost: soak\r\n" + (b"" if keep_alive else b"Connection: close\r\n")
    sock.sendall(req + b"\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the answer")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return body.decode().strip()


def pick_present(world, rnd):
    with world.lock:
        ks = [k for k, p in world.present.items() if p]
    return rnd.choice(ks) if ks else None


def long_lived(world, stats, stop, args, seed):
    rnd = random.Random(seed)
    while not stop.is_set():
        k = pick_present(world, rnd)
        if k is None:
            time.sleep(0.2)
            continue
        t0 = time.time()  # before the SYN: a removal after it can end this connection
        try:
            s = socket.create_connection((vip(k), 80), timeout=1)
            s.settimeout(2)
            world.used(k, s.getsockname()[1], None)
            pod = http_get(s)
        except OSError:
            stats.add("long_connect_failed")
            time.sleep(0.2)
            continue
        world.used(k, s.getsockname()[1], pod)
        ip, port = world.ip_of.get(pod), world.port(k)
        if ip is None:
            stats.add("long_bad_answer", example=pod)
            s.close()
            continue
        stats.add("long_connections")
        while not stop.is_set():
            time.sleep(args.period * (0.5 + rnd.random()))
            try:
                name = http_get(s)
            except (OSError, ConnectionError, ValueError) as e:
                now = time.time()
                r = world.removed_between(ip, port, t0 - args.slack,
                                          now - args.check_grace + args.slack)
                if r is not None:
                    stats.add("long_reset_after_removal")
                else:
                    stats.add("long_broken", example={"service": k, "pod": pod, "error": str(e),
                                                      "age": round(now - t0, 2), "at": now})
                break
            stats.add("long_requests")
            if name != pod:
                stats.add("misroutes", example={"service": k, "first": pod, "now": name,
                                                "at": time.time()})
                break
        s.close()


def short_conns(world, stats, stop, args, seed):
    rnd = random.Random(seed)
    gap = 1.0 / args.short_rate if args.short_rate else 1e9
    while not stop.is_set():
        start = time.time()
        k = pick_present(world, rnd)
        if k is not None:
            try:
                with socket.create_connection((vip(k), 80), timeout=1) as s:
                    s.settimeout(2)
                    sport = s.getsockname()[1]
                    previous = world.used(k, sport, None)
                    name = http_get(s, keep_alive=False)
                    world.used(k, sport, name)
                end = time.time()
                ip = world.ip_of.get(name)
                port = world.port(k)
                removed = world.last_removal(ip, port, end) if ip else None
                if ip and world.member_between(ip, port, start - args.slack, end):
                    stats.add("short_ok")
                elif (removed is not None and previous and previous[0] == name and
                      start <= removed + args.check_grace + args.slack):
                    # The client reused the source port of a connection to that pod whose
                    # flow is still in its grace: ferry keeps a reused 5-tuple's backend.
                    stats.add("short_reused_flow_in_grace")
                else:
                    stats.add("short_wrong_backend", example={"service": k, "pod": name,
                                                              "sport": sport, "at": end,
                                                              "removed": removed,
                                                              "previous": previous})
            except (OSError, ConnectionError, ValueError):
                stats.add("short_failed")  # a Service without endpoints, or just deleted
        time.sleep(max(0.0, gap - (time.time() - start)))


def udp_flow(world, stats, stop, args, seed):
    rnd = random.Random(seed)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    k = None
    pod = None
    t0 = 0.0
    n = 0
    while not stop.is_set():
        if k is None or not world.present.get(k):
            k, pod = pick_present(world, rnd), None
            if k is None:
                time.sleep(0.2)
                continue
        n += 1
        try:
            s.sendto(f"soak {n}".encode(), (vip(k), 53))
            while True:
                data = s.recv(200)
                if data.split()[-1] == str(n).encode():
                    break  # older answers (a timeout's late reply) are skipped
            name = data.split()[0].decode()
        except OSError:
            stats.add("udp_timeouts")
            time.sleep(args.period)
            continue
        stats.add("udp_answers")
        if pod is None:
            pod, t0 = name, time.time()
            stats.add("udp_flows")
        elif name != pod:
            ip = world.ip_of.get(pod)

            def removed():
                return ip and world.removed_between(ip, world.port(k), t0, time.time()) is not None

            # The churn thread notes a removal once ferryd has answered the request, and the
            # UDP flow is flushed (and moves) before that answer: give the note time to land
            # before calling the move a misroute.
            if not removed():
                time.sleep(2)
            if removed():
                stats.add("udp_moved_after_removal")
            else:
                stats.add("udp_misroutes", example={"service": k, "first": pod, "now": name,
                                                    "at": time.time()})
            pod, t0 = name, time.time()
        time.sleep(args.period * (0.5 + rnd.random()))


def churn(world, stats, stop, args, ctl):
    rnd = random.Random(args.seed)
    services = len(world.present)
    next_at = time.time()
    while not stop.is_set():
        next_at += args.interval
        delay = next_at - time.time()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.time()
        with world.lock:
            present = [k for k in range(services) if world.present[k]]
            absent = [k for k in range(services) if not world.present[k]]
        roll = rnd.random()
        if absent and (roll < 0.12 or not present):
            k = rnd.choice(absent)
            members = set(rnd.sample(sorted(world.pods), rnd.randint(1, len(world.pods))))
            text = service_yaml(k, world.port(k)) + "---\n" + slice_yaml(
                k, world.port(k), {world.pods[n] for n in members})
            r = ctl.request({"op": "apply", "documents": [{"origin": "soak", "text": text}]})
            with world.lock:
                before = world.backends(k)
                world.present[k], world.members[k] = True, members
                world.note(k, before, world.backends(k), time.time())
            kind = "create_service"
        elif roll < 0.22 and len(present) > services // 2:
            k = rnd.choice(present)
            text = service_yaml(k, world.port(k)) + "---\n" + slice_yaml(k, world.port(k), set())
            r = ctl.request({"op": "delete", "documents": [{"origin": "soak", "text": text}]})
            with world.lock:
                before = world.backends(k)
                world.present[k] = False
                world.note(k, before, set(), time.time())
            kind = "delete_service"
        elif roll < 0.60:
            k = rnd.choice(present)
            name = rnd.choice(sorted(world.pods))
            with world.lock:
                members = set(world.members[k])
            if name in members and len(members) > 1:
                members.discard(name)
                kind = "remove_endpoint"
            else:
                members.add(name)
                kind = "add_endpoint"
            text = slice_yaml(k, world.port(k), {world.pods[n] for n in members})
            r = ctl.request({"op": "apply", "documents": [{"origin": "soak", "text": text}]})
            with world.lock:
                before = world.backends(k)
                world.members[k] = members
                world.note(k, before, world.backends(k), time.time())
        else:
            k = rnd.choice(present)
            with world.lock:
                name = rnd.choice(sorted(world.members[k]))
                drained = name in world.drained[k]
            if roll < 0.82:
                weight, kind = (None, "undrain") if drained else (0, "drain")
            else:
                weight, kind = rnd.randint(1, 5), "weight"
            r = ctl.request({"op": "weight", "namespace": "default", "name": f"soak-{k}",
                             "address": world.pods[name], "weight": weight})
            if r and r.get("ok"):
                with world.lock:
                    if weight == 0:
                        world.drained[k].add(name)
                    else:
                        world.drained[k].discard(name)
        if r and r.get("ok"):
            stats.add("changes")
            stats.add(f"changes_{kind}")
        else:
            stats.add("changes_refused", example={"kind": kind, "answer": r})


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sampler(stats, stop, args, ctl, samples):
    while not stop.wait(args.sample_every):
        row = {"t": time.time(), "alive": os.path.exists(f"/proc/{args.ferryd_pid}")}
        if row["alive"]:
            row["rss_kib"] = rss_kib(args.ferryd_pid)
            try:
                st = ctl.request({"op": "stats"})["result"]
                row["flows_active"] = st["flows"]["active"]
            except (OSError, ConnectionError, KeyError, TypeError):
                row["flows_active"] = None
        samples.append(row)


def late_packets(world, sniff, grace, margin):
    """Packets recorded at a backend more than grace + margin after it left its Service
    (and before it joined again)."""
    late = []
    seen = 0
    for name, path in sniff.items():
        ip = world.pods[name]
        with open(path) as f:
            for line in f:
                t, proto, port = line.split()
                if proto not in ("tcp", "udp"):
                    continue
                seen += 1
                t, port = float(t), int(port)
                events = world.timeline.get((ip, port))
                if not events:
                    continue
                # The membership in force at time t.
                state = None
                for et, joined in events:
                    if et > t:
                        break
                    state = (et, joined)
                if state and not state[1] and t > state[0] + grace + margin:
                    late.append({"pod": name, "proto": proto, "port": port,
                                 "after_removal_s": round(t - state[0], 3)})
    return late, seen


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--socket", required=True)
    ap.add_argument("--ferryd-pid", type=int, required=True)
    ap.add_argument("--duration", type=float, default=75)
    ap.add_argument("--warmup", type=float, default=20, help="seconds before the RSS baseline")
    ap.add_argument("--grace", type=float, required=True, help="ferryd's removed_backend_grace")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between changes")
    ap.add_argument("--services", type=int, default=6)
    ap.add_argument("--port-base", type=int, default=9401)
    ap.add_argument("--pod", action="append", default=[], help="NAME=IP[=SNIFF_FILE]")
    ap.add_argument("--long", type=int, default=24, help="long-lived TCP connections")
    ap.add_argument("--udp", type=int, default=12, help="UDP flows")
    ap.add_argument("--short-rate", type=float, default=20, help="new connections per second")
    ap.add_argument("--period", type=float, default=0.3, help="seconds between requests")
    ap.add_argument("--slack", type=float, default=1.0, help="seconds of timing slack")
    ap.add_argument("--sample-every", type=float, default=2.0)
    ap.add_argument("--closing-timeout", type=float, default=30,
                    help="ferryd's tcp_closing_timeout, for the flow-count bound")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--assume-grace", type=float,
                    help="check against this grace instead of --grace (to see the checks fail)")
    ap.add_argument("--out", help="write the JSON summary here too")
    args = ap.parse_args()
    args.check_grace = args.grace if args.assume_grace is None else args.assume_grace

    pods, sniff = {}, {}
    for spec in args.pod:
        parts = spec.split("=")
        pods[parts[0]] = parts[1]
        if len(parts) > 2:
            sniff[parts[0]] = parts[2]
    world = World(pods, args.services, args.port_base)
    stats = Stats()
    stop = threading.Event()
    ctl, ctl_stats = Control(args.socket), Control(args.socket)
    # Every Service with every pod, then traffic, then churn.
    docs = "---\n".join(service_yaml(k, world.port(k)) + "---\n" +
                        slice_yaml(k, world.port(k), set(pods.values()))
                        for k in range(args.services))
    r = ctl.request({"op": "apply", "documents": [{"origin": "soak", "text": docs}]})
    assert r and r.get("ok"), r
    start = time.time()
    samples = []
    threads = [threading.Thread(target=sampler, args=(stats, stop, args, ctl_stats, samples))]
    for i in range(args.long):
        threads.append(threading.Thread(target=long_lived,
                                        args=(world, stats, stop, args, args.seed * 1000 + i)))
    for i in range(args.udp):
        threads.append(threading.Thread(target=udp_flow,
                                        args=(world, stats, stop, args, args.seed * 2000 + i)))
    threads.append(threading.Thread(target=short_conns,
                                    args=(world, stats, stop, args, args.seed * 3000)))
    threads.append(threading.Thread(target=churn, args=(world, stats, stop, args, ctl)))
    for t in threads:
        t.daemon = True
        t.start()
    time.sleep(args.duration)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    ran = time.time() - start
    # Let the last removals' grace run out, so their packets count too.
    time.sleep(min(args.grace + 3.5, 10))

    late, recorded = late_packets(world, sniff, args.check_grace, 3.0)
    warm = [s for s in samples if s["t"] >= start + args.warmup and s.get("rss_kib")]
    rss_before = warm[0]["rss_kib"] if warm else None
    rss_after = warm[-1]["rss_kib"] if warm else None
    flows = [s["flows_active"] for s in samples if s.get("flows_active") is not None]
    half = len(flows) // 2
    short_total = stats.c.get("short_ok", 0) + stats.c.get("short_failed", 0) + \
        stats.c.get("short_wrong_backend", 0)
    # Bound: every long-lived connection and UDP flow, plus each short connection of the
    # last closing-timeout (+ 2 s sweep + 2 s slack) at the measured rate, plus the flushed
    # or reset long-lived ones of that window, doubled for the closing entries a reset leaves.
    short_rate = short_total / ran if ran else 0
    bound = int(args.long + args.udp + 2 * (short_rate + args.long / (args.grace + 1)) *
                (args.closing_timeout + 4))
    alive = os.path.exists(f"/proc/{args.ferryd_pid}")
    summary = {
        "bench": "soak",
        "seconds": round(ran, 1),
        "grace_s": args.grace,
        "checked_grace_s": args.check_grace,
        "change_interval_s": args.interval,
        "services": args.services,
        "pods": len(pods),
        "counts": dict(sorted(stats.c.items())),
        "changes_per_second": round(stats.c.get("changes", 0) / ran, 1) if ran else 0,
        "misroutes": stats.c.get("misroutes", 0) + stats.c.get("udp_misroutes", 0),
        "broken_connections": stats.c.get("long_broken", 0),
        "new_flows_to_removed_backend": stats.c.get("short_wrong_backend", 0),
        "late_packets": len(late),
        "late_examples": late[:5],
        "packets_recorded": recorded,
        "ferryd_alive": alive,
        "ferryd_pid": args.ferryd_pid,
        "rss_kib_after_warmup": rss_before,
        "rss_kib_end": rss_after,
        "rss_growth_pct": round(100.0 * (rss_after - rss_before) / rss_before, 2)
        if rss_before else None,
        "flows_active_max": max(flows) if flows else None,
        "flows_active_last": flows[-1] if flows else None,
        # Not growing: the second half's peak against the first's.
        "flows_active_max_halves": [max(flows[:half] or [0]), max(flows[half:] or [0])],
        "rss_kib_samples": [s.get("rss_kib") for s in samples][:: max(1, len(samples) // 20)],
        "flows_bound": bound,
        "examples": stats.examples,
    }
    text = json.dumps(summary)
    print(text, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
