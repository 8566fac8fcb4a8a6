#!/usr/bin/python3
"""DNS queries per second of ferryd's DNS responder beside NSD and Knot, same zone, same client.

N Services svc-<i> in namespace default (ClusterIP 198.19.0.0 + 10 + i) make the zone
cluster.local: ferryd reads them as Service manifests ([dns] zone = "cluster.local",
ttl = 5); NSD 4.6 and Knot 3.2 load the equivalent zone file (SOA minimum and TTLs 5, NS,
and svc-<i>.default.svc A records). Each server answers on 198.18.53.53 port 53:

  fdp-cli: eth0 198.18.53.1/24 --veth-- fdp-srv: eth0 198.18.53.53/24  nsd | knotd (CPU 1)
                                        fdp-srv: fe0 (no address)      ferryd, af_packet port
                                                 198.18.53.254/24, worker lcore on CPU 1,
                                                 answers ARP and DNS for 198.18.53.53

dnsperf (one thread, pinned to CPU 0) runs in fdp-cli for --duration seconds per run with
--clients sockets and --outstanding queries in flight, on two query files: `hit`
(svc-<i>.default.svc.cluster.local A, i random) and `miss` (the same names with the pod's
first ndots:5 search suffix appended, svc-<i>.default.svc.cluster.local.default.svc.cluster.
local A: NXDOMAIN inside the zone). NSD and Knot run single-threaded on CPU 1 (nsd
server-count 1; knotd udp-workers 1), as ferryd's one worker does; ferryd's main lcore
(control threads) shares CPU 0 with dnsperf. Response rate limiting is off in NSD and
ferryd (one client asks for everything).

--runs rounds; a round runs every server in turn (the order rotating): namespaces built,
server started, checked with dig (hits: NOERROR, authoritative, the address, TTL 5; misses:
NXDOMAIN with the SOA; one hit over TCP, reported as tcp_check), one hit run and one miss
run (each must see only NOERROR, resp. NXDOMAIN), everything torn down. Prints one JSON line
per (server, query kind): median qps of the rounds, every run, lost queries, response codes
and sizes, CPU use; then, when ferry and another server ran, one line with the median over
rounds of ferry's qps over the other's in the same round. All traffic stays in the fdp-*
namespaces, addresses in 198.18.0.0/15; the namespaces are removed on exit, stale ones (and
what runs in them) at start.

On a 2-core machine the client's core is the limit for NSD and Knot (~70-85k qps; their
process uses ~40-50% of CPU 1: server_process_cpu_percent): a ratio near 1 there means
"as fast as one dnsperf core can drive", not parity at saturation.

usage (root): perf/dns_perf.py [--services 1000] [--runs 3] [--duration 5]
              [--only nsd|knot|ferry[,...]] [--ferryd build/tools/ferryd]
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "perf"))
from apply_latency import request  # noqa: E402

CLI_NS, SRV_NS = "fdp-cli", "fdp-srv"
CLI_VETH, SRV_VETH = "fdp-c0", "fdp-s0"   # root-namespace names before the move
CLIENT_ADDR = "198.18.53.1/24"
DNS_ADDR = "198.18.53.53"
FERRY_PORT_ADDR = "198.18.53.254/24"
SERVICE_CIDR = "198.19.0.0/16"
CLIENT_CPU, SERVER_CPU = 0, 1
ZONE = "cluster.local"
SERVERS = ("nsd", "knot", "ferry")
KINDS = ("hit", "miss")
NSD, KNOTD, DNSPERF, DIG = "/usr/sbin/nsd", "/usr/sbin/knotd", "/usr/bin/dnsperf", "/usr/bin/dig"


def sh(*cmd, check=True, timeout=30, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       **kw)
    if check and r.returncode != 0:
        raise SystemExit(f"dns_perf: {' '.join(map(str, cmd))} failed ({r.returncode}): "
                         f"{r.stdout}{r.stderr}")
    return r


def in_ns(ns, *cmd, **kw):
    return sh("ip", "netns", "exec", ns, *cmd, **kw)


# ---- Zone data -------------------------------------------------------------------------------

def cluster_ip(i):
    x = 10 + i
    return f"198.19.{x >> 8}.{x & 255}"


def hit_name(i):
    return f"svc-{i}.default.svc.{ZONE}"


def miss_name(i):
    return f"{hit_name(i)}.default.svc.{ZONE}"


def zone_file(n):
    lines = [f"$ORIGIN {ZONE}.", "$TTL 5",
             f"@ IN SOA ns.dns.{ZONE}. hostmaster.{ZONE}. 1 7200 1800 86400 5",
             f"@ IN NS ns.dns.{ZONE}.", f"ns.dns IN A {DNS_ADDR}"]
    lines += [f"svc-{i}.default.svc IN A {cluster_ip(i)}" for i in range(n)]
    return "\n".join(lines) + "\n"


def service_manifests(n):
    return "".join(
        f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default}}\n"
        f"spec:\n  type: ClusterIP\n  clusterIP: {cluster_ip(i)}\n"
        "  ports: [{name: http, protocol: TCP, port: 80, targetPort: 80}]\n"
        for i in range(n))


def query_file(path, n, kind, count, seed):
    rnd = random.Random(seed)
    name = hit_name if kind == "hit" else miss_name
    path.write_text("".join(f"{name(rnd.randrange(n))} A\n" for _ in range(count)))


# ---- Network ---------------------------------------------------------------------------------

def cleanup():
    """Removes this benchmark's namespaces (ending what runs in them) and veths."""
    for ns in (CLI_NS, SRV_NS):
        r = sh("ip", "netns", "pids", ns, check=False)
        for pid in r.stdout.split() if r.returncode == 0 else []:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", ns, check=False)
    for dev in (CLI_VETH, SRV_VETH):
        sh("ip", "link", "del", dev, check=False)
    for d in Path("/var/run/dpdk").glob("fdp-*"):
        shutil.rmtree(d, ignore_errors=True)


def topology_up(server):
    """Client and server namespaces joined by one veth; the server side is a kernel interface
    with DNS_ADDR (nsd, knot) or a bare fe0 for ferryd's af_packet port."""
    cleanup()
    for ns in (CLI_NS, SRV_NS):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "link", "add", CLI_VETH, "type", "veth", "peer", "name", SRV_VETH)
    sh("ip", "link", "set", CLI_VETH, "netns", CLI_NS)
    sh("ip", "link", "set", SRV_VETH, "netns", SRV_NS)
    srv_dev = "fe0" if server == "ferry" else "eth0"
    for ns, old, new in ((CLI_NS, CLI_VETH, "eth0"), (SRV_NS, SRV_VETH, srv_dev)):
        sh("ip", "-n", ns, "link", "set", old, "name", new)
        in_ns(ns, "sysctl", "-qw", f"net.ipv6.conf.{new}.disable_ipv6=1")
    sh("ip", "-n", CLI_NS, "addr", "add", CLIENT_ADDR, "dev", "eth0")
    in_ns(CLI_NS, "ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off")
    if server != "ferry":
        sh("ip", "-n", SRV_NS, "addr", "add", f"{DNS_ADDR}/24", "dev", "eth0")
        in_ns(SRV_NS, "ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off")
    sh("ip", "-n", CLI_NS, "link", "set", "eth0", "up")
    sh("ip", "-n", SRV_NS, "link", "set", srv_dev, "up")


# ---- Servers ---------------------------------------------------------------------------------

def stop(proc, wait=10):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def spawn(tmp, name, cmd):
    log = open(tmp / f"{name}.log", "w")
    proc = subprocess.Popen(["ip", "netns", "exec", SRV_NS, *map(str, cmd)], stdout=log,
                            stderr=subprocess.STDOUT)
    log.close()
    return proc


def log_tail(tmp, name):
    try:
        return f"--- {name} log ---\n" + (tmp / f"{name}.log").read_text(errors="replace")[-3000:]
    except OSError:
        return ""


def start_nsd(tmp, n):
    d = tmp / "nsd"
    d.mkdir()
    (d / f"{ZONE}.zone").write_text(zone_file(n))
    sh("/usr/sbin/nsd-checkzone", ZONE, d / f"{ZONE}.zone")
    (d / "nsd.conf").write_text(f"""\
server:
    ip-address: {DNS_ADDR}
    port: 53
    do-ip6: no
    server-count: 1
    reuseport: no
    username: ""
    chroot: ""
    zonesdir: "{d}"
    database: ""
    zonelistfile: "{d}/zone.list"
    xfrdfile: "{d}/xfrd.state"
    xfrdir: "{d}"
    pidfile: "{d}/nsd.pid"
    logfile: "{d}/nsd.log"
    verbosity: 1
    hide-version: yes
    minimal-responses: yes
    refuse-any: yes
    # Debian's NSD has response rate limiting on (200 qps per source /24 and "kind":
    # every NXDOMAIN of a zone is one kind); a benchmark from one client must turn it off.
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: {ZONE}
    zonefile: "{d}/{ZONE}.zone"
""")
    sh("/usr/sbin/nsd-checkconf", d / "nsd.conf")
    # -d: stay in the foreground (main, xfrd and one server process, all on SERVER_CPU).
    return spawn(tmp, "nsd", ["taskset", "-c", SERVER_CPU, NSD, "-d", "-c", d / "nsd.conf"])


def start_knot(tmp, n):
    d = tmp / "knot"
    d.mkdir()
    (d / f"{ZONE}.zone").write_text(zone_file(n))
    (d / "knot.conf").write_text(f"""\
server:
    rundir: "{d}"
    pidfile: "{d}/knot.pid"
    listen: {DNS_ADDR}@53
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{d}/db"
control:
    listen: "{d}/knot.sock"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "{d}"
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
zone:
  - domain: {ZONE}
""")
    return spawn(tmp, "knot", ["taskset", "-c", SERVER_CPU, KNOTD, "-c", d / "knot.conf"])


def ferry_config(tmp, prefix, manifests):
    return f"""\
[node]
name = "node-0"

[dataplane]
eal_args = ["-l", "{CLIENT_CPU},{SERVER_CPU}", "--no-huge", "-m", "512", "--no-pci",
            "--file-prefix", "{prefix}", "--log-level", "*:warning"]
mbufs = 8191
idle_sleep_us = 0

[[port]]
name = "eth0"
device = "net_af_packet0,iface=fe0"
address = "{FERRY_PORT_ADDR}"

[control]
socket = "{tmp}/ferry.sock"

[services]
service_cidr = "{SERVICE_CIDR}"

[sources]
manifests = ["{manifests}"]

[dns]
addresses = ["{DNS_ADDR}"]   # in eth0's subnet: ferryd answers ARP for it
zone = "{ZONE}"
ttl = 5
rate_limit = 0   # response rate limiting off, as for NSD: one client asks for everything

[metrics]
address = ""   # runs beside other ferryds on the host's loopback
"""


def start_ferry(tmp, n, ferryd):
    if not Path(ferryd).exists():
        raise SystemExit(f"dns_perf: {ferryd} is missing: build first (ninja -C build)")
    manifests = tmp / "manifests"
    manifests.mkdir()
    (manifests / "services.yaml").write_text(service_manifests(n))
    prefix = f"fdp-{os.getpid()}"
    (tmp / "ferry.toml").write_text(ferry_config(tmp, prefix, manifests))
    proc = spawn(tmp, "ferryd", [ferryd, "--config", tmp / "ferry.toml"])
    proc.cleanup_dir = f"/var/run/dpdk/{prefix}"
    sock = str(tmp / "ferry.sock")
    deadline = time.time() + 60
    while True:  # the control socket answers and every Service is loaded
        if proc.poll() is not None:
            raise SystemExit(f"dns_perf: ferryd exited with {proc.returncode}\n"
                             + log_tail(tmp, "ferryd"))
        if os.path.exists(sock):
            try:
                got = request(sock, {"op": "get", "resource": "services", "namespace": "default"},
                              timeout=5).get("result", {}).get("items", [])
                if len(got) >= n:
                    return proc
            except (OSError, ValueError):
                pass
        if time.time() > deadline:
            raise SystemExit("dns_perf: ferryd did not load the Services in 60 s\n"
                             + log_tail(tmp, "ferryd"))
        time.sleep(0.2)


def version(server, ferryd):
    if server == "nsd":
        return sh(NSD, "-v", check=False).stderr.splitlines()[0].strip()
    if server == "knot":
        return sh(KNOTD, "--version", check=False).stdout.strip()
    # ferryd has no --version: the commit of the tree it (normally) was built from.
    r = sh("git", "-C", ROOT, "rev-parse", "--short", "HEAD", check=False)
    return f"ferryd {r.stdout.strip()}" if r.returncode == 0 else "ferryd"


# ---- Checks and runs -------------------------------------------------------------------------

def dig(name, tcp=False):
    cmd = [DIG, "+time=1", "+tries=1", "+norec", f"@{DNS_ADDR}", name, "A"]
    if tcp:
        cmd.insert(1, "+tcp")
    r = in_ns(CLI_NS, *cmd, check=False, timeout=10)
    status = re.search(r"status: (\w+)", r.stdout)
    flags = re.search(r";; flags: ([\w ]*);", r.stdout)
    answers = re.findall(r"^(\S+)\s+(\d+)\s+IN\s+(\w+)\s+(\S+)", r.stdout, re.M)
    return {"status": status.group(1) if status else None,
            "aa": bool(flags and "aa" in flags.group(1).split()), "answers": answers,
            "text": r.stdout + r.stderr}


def check_answers(server, n, tmp, wait_s):
    """One dig per kind (after the server comes up), plus a few more hits; raises on a wrong
    answer. Returns the TCP check's outcome (reported, not fatal)."""
    deadline = time.time() + wait_s
    while True:
        d = dig(hit_name(0))
        if d["status"] is not None or time.time() > deadline:
            break
        time.sleep(0.3)
    logname = "ferryd" if server == "ferry" else server
    for i in sorted({0, n // 2, n - 1}):
        d = dig(hit_name(i))
        a = [x for x in d["answers"] if x[2] == "A"]
        if (d["status"] != "NOERROR" or not d["aa"] or len(a) != 1
                or a[0][0] != hit_name(i) + "." or a[0][3] != cluster_ip(i) or a[0][1] != "5"):
            raise SystemExit(f"dns_perf: {server}: {hit_name(i)} A should be NOERROR, aa, "
                             f"{cluster_ip(i)} TTL 5; got:\n{d['text']}\n"
                             + log_tail(tmp, logname))
    d = dig(miss_name(0))
    if d["status"] != "NXDOMAIN" or not d["aa"] or not any(x[2] == "SOA" for x in d["answers"]):
        raise SystemExit(f"dns_perf: {server}: {miss_name(0)} A should be NXDOMAIN, aa, with "
                         f"the SOA; got:\n{d['text']}\n" + log_tail(tmp, logname))
    t = dig(hit_name(n - 1), tcp=True)
    ok = t["status"] == "NOERROR" and any(x[3] == cluster_ip(n - 1) for x in t["answers"])
    return "ok" if ok else f"failed: {t['status'] or t['text'].strip().splitlines()[-1:]}"


def parse_dnsperf(text):
    def num(pattern, cast=float):
        m = re.search(pattern, text)
        return cast(m.group(1)) if m else None
    rcodes = {}
    m = re.search(r"Response codes:\s+(.*)", text)
    if m:
        rcodes = {k: int(v) for k, v in re.findall(r"(\w+) (\d+) \(", m.group(1))}
    return {"sent": num(r"Queries sent:\s+(\d+)", int),
            "completed": num(r"Queries completed:\s+(\d+)", int),
            "lost": num(r"Queries lost:\s+(\d+)", int) or 0,
            "interrupted": num(r"Queries interrupted:\s+(\d+)", int) or 0,
            "rcodes": rcodes,
            "qps": num(r"Queries per second:\s+([\d.]+)"),
            "run_s": num(r"Run time \(s\):\s+([\d.]+)"),
            "request_bytes": num(r"Average packet size:\s+request (\d+)", int),
            "response_bytes": num(r"Average packet size:\s+request \d+, response (\d+)", int),
            "latency_ms": (num(r"Average Latency \(s\):\s+([\d.]+)") or 0) * 1000}


def cpu_ticks():
    """{cpu: (busy, total)} jiffies from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        f = line.split()
        if f[0].startswith("cpu") and f[0] != "cpu":
            v = [int(x) for x in f[1:9]]
            out[int(f[0][3:])] = (sum(v) - v[3] - v[4], sum(v))
    return out


def tree_cpu_seconds(pid):
    """CPU seconds (user + system, all threads) of process pid and its descendants."""
    stats = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                t = (d / "stat").read_text()
            except OSError:
                continue
            f = t[t.rindex(")") + 2:].split()
            stats[int(d.name)] = (int(f[1]), int(f[11]) + int(f[12]))
    tree, grew = {pid}, True
    while grew:
        more = {p for p, (ppid, _) in stats.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(stats[p][1] for p in tree if p in stats) / os.sysconf("SC_CLK_TCK")


def dnsperf(qfile, args, server_pid=None):
    cmd = ["taskset", "-c", CLIENT_CPU, DNSPERF, "-s", DNS_ADDR, "-d", qfile,
           "-l", args.duration, "-c", args.clients, "-q", args.outstanding, "-T", "1",
           "-t", args.timeout]
    before, srv_before, t0 = cpu_ticks(), tree_cpu_seconds(server_pid), time.time()
    r = in_ns(CLI_NS, *cmd, check=False, timeout=args.duration + args.timeout + 60)
    after, srv_after, t1 = cpu_ticks(), tree_cpu_seconds(server_pid), time.time()
    res = parse_dnsperf(r.stdout)
    # CPU of the server's processes over the run, in % of one CPU (softirq work done on their
    # behalf is not in it): well below 100, nsd or knotd waited for queries, so the client
    # on its one core was the limit. ferryd's worker polls: its share counts empty polls.
    res["server_cpu_percent"] = round(100.0 * (srv_after - srv_before) / (t1 - t0), 1)
    # Busy share of each CPU over the run (everything on it: the server or dnsperf, softirqs,
    # and whatever else the machine runs; 100 on SERVER_CPU with ferryd: its worker polls).
    res["cpu_busy"] = {c: round(100.0 * (after[c][0] - before[c][0])
                                / max(1, after[c][1] - before[c][1]), 1)
                       for c in (CLIENT_CPU, SERVER_CPU) if c in before and c in after}
    if r.returncode != 0 or res["qps"] is None or not res["completed"]:
        raise SystemExit(f"dns_perf: dnsperf failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return res


def summary(values, digits=1):
    v = sorted(values)
    return {"median": round(statistics.median(v), digits), "min": round(v[0], digits),
            "max": round(v[-1], digits)}


def start_server(server, args, tmp):
    if server == "nsd":
        proc = start_nsd(tmp, args.services)
    elif server == "knot":
        proc = start_knot(tmp, args.services)
    else:
        proc = start_ferry(tmp, args.services, args.ferryd)
    time.sleep(0.2)
    if proc.poll() is not None:
        raise SystemExit(f"dns_perf: {server} exited with {proc.returncode}\n"
                         + log_tail(tmp, "ferryd" if server == "ferry" else server))
    return proc


def one_round(server, args, tmp, qfiles):
    """Network and server up, answers checked, one hit run and one miss run, all down again.
    Returns ({kind: dnsperf result}, TCP check)."""
    topology_up(server)
    proc = None
    try:
        proc = start_server(server, args, tmp)
        tcp = check_answers(server, args.services, tmp, wait_s=20)
        out = {}
        for kind in KINDS:
            res = dnsperf(qfiles[kind], args, proc.pid)
            want = "NOERROR" if kind == "hit" else "NXDOMAIN"
            if any(k != want for k in res["rcodes"]):
                raise SystemExit(f"dns_perf: {server} {kind}: answers other than {want}: "
                                 f"{res['rcodes']}")
            if proc.poll() is not None:
                raise SystemExit(f"dns_perf: {server} died during the run\n"
                                 + log_tail(tmp, "ferryd" if server == "ferry" else server))
            if res["sent"] and res["lost"] > res["sent"] / 200:
                print(f"dns_perf: {server} {kind}: {res['lost']} of {res['sent']} queries lost "
                      "(each holds an outstanding slot for --timeout: qps is understated; "
                      "try a lower --outstanding)", file=sys.stderr)
            out[kind] = res
        return out, tcp
    finally:
        stop(proc)
        if proc is not None and hasattr(proc, "cleanup_dir"):
            shutil.rmtree(proc.cleanup_dir, ignore_errors=True)
        cleanup()


def row(server, kind, rs, tcp, args):
    rcodes = {}
    for r in rs:
        for k, v in r["rcodes"].items():
            rcodes[k] = rcodes.get(k, 0) + v
    lost = [100.0 * r["lost"] / r["sent"] if r["sent"] else 0.0 for r in rs]
    return {
        "bench": "dns", "case": server, "query": kind, "services": args.services,
        "version": version(server, args.ferryd),
        "qps": summary([r["qps"] for r in rs]),
        "qps_runs": [round(r["qps"], 1) for r in rs],
        "lost_percent": summary(lost, 3), "lost_runs": [r["lost"] for r in rs],
        "interrupted_runs": [r["interrupted"] for r in rs],
        "rcodes": rcodes,
        "latency_ms": summary([r["latency_ms"] for r in rs], 3),
        "cpu_busy_percent": {f"cpu{c}": summary([r["cpu_busy"][c] for r in rs])["median"]
                             for c in rs[0]["cpu_busy"]},
        "server_process_cpu_percent": summary([r["server_cpu_percent"] for r in rs]),
        "request_bytes": rs[0]["request_bytes"], "response_bytes": rs[0]["response_bytes"],
        "tcp_check": tcp, "duration_s": args.duration, "runs": len(rs),
        "clients": args.clients, "outstanding": args.outstanding, "timeout_s": args.timeout,
        "client_cpu": CLIENT_CPU, "server_cpu": SERVER_CPU}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3, help="rounds; medians are over these")
    ap.add_argument("--duration", type=int, default=5, help="seconds per dnsperf run")
    ap.add_argument("--only", default=",".join(SERVERS),
                    help="comma-separated subset of nsd,knot,ferry (default: all)")
    ap.add_argument("--ferryd", default=str(ROOT / "build" / "tools" / "ferryd"))
    ap.add_argument("--clients", type=int, default=16, help="dnsperf -c (sockets)")
    ap.add_argument("--outstanding", type=int, default=100, help="dnsperf -q")
    ap.add_argument("--timeout", type=int, default=1, help="dnsperf -t (s): later is lost")
    ap.add_argument("--queries", type=int, default=100000, help="lines per query file")
    args = ap.parse_args()
    servers = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in servers if s not in SERVERS]
    if bad or not servers or len(set(servers)) != len(servers):
        ap.error(f"--only: choose from {', '.join(SERVERS)}, each once")
    if not 1 <= args.services <= 65000:
        ap.error("--services: 1 .. 65000")
    if args.runs < 1 or args.duration < 1:
        ap.error("--runs and --duration: at least 1")
    if os.geteuid() != 0:
        raise SystemExit("dns_perf: needs root (network namespaces)")
    for tool in (DNSPERF, DIG, *([NSD] if "nsd" in servers else []),
                 *([KNOTD] if "knot" in servers else [])):
        if not os.path.exists(tool):
            raise SystemExit(f"dns_perf: {tool} is missing (apt install dnsperf bind9-dnsutils "
                             "nsd knot)")
    # SIGTERM unwinds like Ctrl-C, through the finally blocks that stop servers and remove
    # the namespaces.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("dns_perf: terminated"))
    runs = {(s, k): [] for s in servers for k in KINDS}
    tcp = {}
    try:
        with tempfile.TemporaryDirectory(prefix="ferry-dns-") as tmp:
            tmp = Path(tmp)
            qfiles = {}
            for seed, kind in enumerate(KINDS):
                qfiles[kind] = tmp / f"{kind}.txt"
                query_file(qfiles[kind], args.services, kind, args.queries, seed)
            # Rounds: every server once per round, the order rotating, so that the drift of
            # this shared machine falls on all of them alike.
            for r in range(args.runs):
                for server in servers[r % len(servers):] + servers[:r % len(servers)]:
                    sdir = tmp / f"{server}-{r}"
                    sdir.mkdir()
                    out, tcp[server] = one_round(server, args, sdir, qfiles)
                    for kind, res in out.items():
                        runs[(server, kind)].append(res)
    finally:
        cleanup()
    for server in servers:
        for kind in KINDS:
            print(json.dumps(row(server, kind, runs[(server, kind)], tcp[server], args)),
                  flush=True)
    if "ferry" in servers and len(servers) > 1:
        # Median over rounds of ferry's qps over the other server's in the same round.
        line = {"bench": "dns", "case": "ratio", "services": args.services, "runs": args.runs}
        for other in ("nsd", "knot"):
            if other in servers:
                per = {k: [f["qps"] / o["qps"] for f, o in
                           zip(runs[("ferry", k)], runs[(other, k)])] for k in KINDS}
                line[f"ferry_over_{other}"] = {k: round(statistics.median(v), 3)
                                               for k, v in per.items()}
                line[f"ferry_over_{other}_runs"] = {k: [round(x, 3) for x in v]
                                                    for k, v in per.items()}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    sys.exit(main())
