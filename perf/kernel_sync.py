#!/usr/bin/env python3
"""Kernel baseline for `ferry-perf sync`: ferry's synthetic services, loaded as kube-proxy does.

Runs in a throwaway network namespace (as root) and prints one JSON line per mode and size:
  iptables  the nat table kube-proxy writes: KUBE-SERVICES, KUBE-MARK-MASQ, KUBE-POSTROUTING,
            KUBE-NODEPORTS, a KUBE-SVC-<hash> per service, a KUBE-SEP-<hash> per endpoint.
            Full load = one iptables-restore. A change or add = one ">=1.27 partial sync"
            restore --noflush: the top-level chains in full (KUBE-SERVICES lists every
            service), the changed service's SVC/SEP chains, and -X of the stale SEP chain.
  nft       kube-proxy's `table ip kube-proxy`: service-ips verdict map, a service chain with
            `numgen random mod N vmap`, endpoint chains with `dnat to`. Full load = one
            `nft -f`; a change or add = one transaction like kube-proxy's incremental sync.
  iptables-legacy  the iptables model through iptables-legacy-restore (Debian 12's plain
            iptables-restore is iptables-nft, whose restore time grows faster than quadratically
            with the ruleset: 3k services x 10 endpoints took 96 s, 10k over 30 minutes).
Services match ferry-perf's: svc-<i> in namespace bench, ClusterIP 10.96.0.0+10+i, TCP 80 ->
8080, endpoint e at 10.192.0.0+i*16+e; change c moves endpoint 0 of service c*7919%n by
c*4096; add c creates service n+c. A timing is the wall time of one `ip netns exec <ns> <tool>`
(netns_exec_ms: what `ip netns exec <ns> true` alone costs). Not modelled: the iptables-save /
`nft list` kube-proxy runs to find stale chains, the filter table, kube-proxy's own Go time.

  sudo perf/kernel_sync.py [--services 1000,10000] [--endpoints 10] [--runs 5] \\
                           [--changes 20] [--mode iptables,nft,iptables-legacy]
"""
import argparse
import base64
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time

POD_CIDR = "10.192.0.0/10"  # "local" sources for the masquerade rule; holds every endpoint
TOOLS = {"iptables": [("iptables-restore", "iptables"), ("iptables-save", "iptables")],
         "iptables-legacy": [("iptables-legacy-restore", "iptables"),
                             ("iptables-legacy-save", "iptables")],
         "nft": [("nft", "nftables")]}
IPT_TOP_CHAINS = [f":{c} - [0:0]" for c in
                  ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ")]
IPT_TOP_RULES = """-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" \
-j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"""
IPT_NODEPORTS = ('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this '
                 'must be the last rule in this chain" -m addrtype --dst-type LOCAL '
                 "-j KUBE-NODEPORTS")
NFT_BASE = """table ip kube-proxy {
  comment "rules for kube-proxy"
  set cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, \
ExternalIP and LoadBalancer IP traffic" ; }
  map service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }
  chain mark-for-masquerade { mark set mark or 0x4000 ; }
  chain masquerading { mark and 0x4000 == 0 return ; mark set mark xor 0x4000 ;
                       masquerade fully-random ; }
  chain services { ip daddr . meta l4proto . th dport vmap @service-ips ;
                   fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport \
vmap @service-nodeports ; }
  chain cluster-ips-check { ip daddr @cluster-ips reject ; }
  chain nat-prerouting { type nat hook prerouting priority -100 ; jump services ; }
  chain nat-output { type nat hook output priority -100 ; jump services ; }
  chain nat-postrouting { type nat hook postrouting priority 100 ; jump masquerading ; }
  chain filter-forward { type filter hook forward priority -110 ; ct state new jump \
cluster-ips-check ; }
}"""


def ipv4(x):
    return ".".join(str(x >> s & 255) for s in (24, 16, 8, 0))


def cluster_ip(i):
    return ipv4(0x0A600000 + 10 + i)


def b32sha(s):  # kube-proxy's chain-name hash: base32 of sha256
    return base64.b32encode(hashlib.sha256(s.encode()).digest()).decode()


def run_in(ns, argv, data=b""):
    """Runs argv in ns with data on stdin; returns (milliseconds, stdout). Raises on failure."""
    t0 = time.perf_counter()
    p = subprocess.run(["ip", "netns", "exec", ns, *argv], input=data, capture_output=True)
    ms = (time.perf_counter() - t0) * 1e3
    if p.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.decode()[:2000]}")
    return ms, p.stdout.decode()


class Model:
    """One kube-proxy backend: builds restore/transaction text and tracks what it has written."""

    def __init__(self, ns, eps):
        self.ns, self.eps, self.gen, self.services = ns, eps, {}, []

    def endpoints(self, i):
        gen = self.gen.get(i, 0)
        return [ipv4(0x0AC00000 + i * 16 + e + (gen * 4096 if e == 0 else 0))
                for e in range(self.eps)]

    def apply(self, data):
        return run_in(self.ns, self.cmd, data)[0]

    def full(self, n):
        self.services = list(range(n))
        return self.payload(self.services, full=True)

    def change(self, i, gen):
        stale = self.sep_chain(i, self.endpoints(i)[0])
        self.gen[i] = gen
        return self.payload([i], stale=[stale])

    def add(self, i):
        self.services.append(i)
        return self.payload([i])

    def verify(self, n, changed, when):
        """Fails loudly unless the kernel holds n services, their endpoints and changed's new ep."""
        seps, svcs, found = self.check(self.endpoints(changed)[0])
        if seps != n * self.eps or svcs != n or not found:
            raise RuntimeError(f"{self.case} {when}: kernel holds {seps} endpoint chains, {svcs} "
                               f"services (want {n * self.eps}, {n}); svc-{changed} endpoint 0 "
                               f"{'present' if found else 'missing'}")


class IptablesModel(Model):
    def __init__(self, ns, eps, restore, save):
        super().__init__(ns, eps)
        self.case, self.save = restore, save
        self.cmd = [restore, "-w", "5", "-W", "100000", "--noflush", "--counters"]

    def svc_chain(self, i):
        return "KUBE-SVC-" + b32sha(f"bench/svc-{i}:http" + "tcp")[:16]

    def sep_chain(self, i, ep):
        return "KUBE-SEP-" + b32sha(f"bench/svc-{i}:http" + "tcp" + f"{ep}:8080")[:16]

    def setup(self):  # kube-proxy links the built-in chains with iptables -N/-I, not the restore
        portal = '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
        post = '-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING'
        self.apply(f"*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n-A PREROUTING "
                   f"{portal}\n-A OUTPUT {portal}\n-A POSTROUTING {post}\nCOMMIT\n".encode())

    def payload(self, changed, stale=(), full=False):
        # Every sync rewrites the top-level chains; chain lines must precede all rules.
        chains = []
        rules = [f'-A KUBE-SERVICES -m comment --comment "bench/svc-{i}:http cluster IP" -m tcp '
                 f"-p tcp -d {cluster_ip(i)}/32 --dport 80 -j {self.svc_chain(i)}"
                 for i in self.services] + [IPT_NODEPORTS]
        for i in changed:
            svc, name, eps = self.svc_chain(i), f"bench/svc-{i}:http", self.endpoints(i)
            chains += [f":{c} - [0:0]" for c in [svc] + [self.sep_chain(i, ep) for ep in eps]]
            rules.append(f'-A {svc} -m comment --comment "{name} cluster IP" -m tcp -p tcp '
                         f"-d {cluster_ip(i)}/32 --dport 80 ! -s {POD_CIDR} -j KUBE-MARK-MASQ")
            for k, ep in enumerate(eps):
                odds = 1.0 / (len(eps) - k)
                stat = f"-m statistic --mode random --probability {odds:.10f} " if odds < 1 else ""
                rules.append(f'-A {svc} -m comment --comment "{name} -> {ep}:8080" {stat}'
                             f"-j {self.sep_chain(i, ep)}")
            for ep in eps:
                sep = self.sep_chain(i, ep)
                rules += [f"-A {sep} -m comment --comment {name} -s {ep}/32 -j KUBE-MARK-MASQ",
                          f"-A {sep} -m comment --comment {name} -m tcp -p tcp "
                          f"-j DNAT --to-destination {ep}:8080"]
        chains += [f":{c} - [0:0]" for c in stale]
        rules += [f"-X {c}" for c in stale]
        body = ["*nat", *IPT_TOP_CHAINS, *chains, IPT_TOP_RULES, *rules, "COMMIT\n"]
        return "\n".join(body).encode()

    def check(self, ep):
        out = run_in(self.ns, [self.save, "-t", "nat"])[1]
        seps = sum(line.startswith(":KUBE-SEP-") for line in out.splitlines())
        return seps, out.count("-A KUBE-SERVICES -d "), f"--to-destination {ep}:8080" in out


class NftModel(Model):
    case = "nft"
    cmd = ["nft", "-f", "-"]

    def svc_chain(self, i):  # kube-proxy's hashAndTruncate (it never truncates at this length)
        name = f"bench/svc-{i}/tcp/http"
        return f"service-{b32sha(name)[:8]}-{name}"

    def sep_chain(self, i, ep):
        name = f"bench/svc-{i}/tcp/http__{ep}/8080"
        return f"endpoint-{b32sha(name)[:8]}-{name}"

    def setup(self):
        pass  # the table itself is part of the full load, as in kube-proxy's first sync

    def payload(self, changed, stale=(), full=False):
        t = "ip kube-proxy"
        out = [NFT_BASE] if full else []
        for i in changed:  # kube-proxy adds, flushes and rewrites every chain of a changed service
            svc, eps = self.svc_chain(i), self.endpoints(i)
            seps = [self.sep_chain(i, ep) for ep in eps]
            out += [f"{verb} chain {t} {c}" for c in [svc] + seps for verb in ("add", "flush")]
            vmap = " , ".join(f"{k} : goto {c}" for k, c in enumerate(seps))
            out += [f"add rule {t} {svc} ip daddr {cluster_ip(i)} tcp dport 80 "
                    f"ip saddr != {POD_CIDR} jump mark-for-masquerade",
                    f"add rule {t} {svc} numgen random mod {len(seps)} vmap {{ {vmap} }}"]
            for ep, sep in zip(eps, seps):
                out += [f"add rule {t} {sep} ip saddr {ep} jump mark-for-masquerade",
                        f"add rule {t} {sep} meta l4proto tcp dnat to {ep}:8080"]
            if not stale:  # map elements are only written when they differ from the last sync
                ip = cluster_ip(i)
                out += [f"add element {t} cluster-ips {{ {ip} }}",
                        f"add element {t} service-ips {{ {ip} . tcp . 80 : goto {svc} }}"]
        # kube-proxy flushes a stale chain now and deletes it a sync later; both happen here.
        out += [f"{verb} chain {t} {c}" for c in stale for verb in ("flush", "delete")]
        return ("\n".join(out) + "\n").encode()

    def check(self, ep):
        out = run_in(self.ns, ["nft", "list", "table", "ip", "kube-proxy"])[1]
        seps = sum(line.strip().startswith("chain endpoint-") for line in out.splitlines())
        return seps, out.count(": goto service-"), f"dnat to {ep}:8080" in out


def stats(v):
    s = sorted(v)
    return {"median": round(s[len(s) // 2], 3), "min": round(s[0], 3), "max": round(s[-1], 3)}


def p99(v):
    s = sorted(v)
    return round(s[min(len(s) - 1, len(s) * 99 // 100)], 3)


def bench(mode, n, args, ns, backend, netns_ms):
    load, change, add = [], [], []
    for r in range(args.runs):
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            m = (NftModel(ns, args.endpoints) if mode == "nft" else
                 IptablesModel(ns, args.endpoints, *(tool for tool, _ in TOOLS[mode])))
            m.setup()
            load.append(m.apply(m.full(n)))
            if r == 0:
                m.verify(n, 0, "after full load")
            for c in range(1, args.changes + 1):
                change.append(m.apply(m.change(c * 7919 % n, c)))
                add.append(m.apply(m.add(n + c)))
            if r == 0 and args.changes:
                m.verify(n + args.changes, args.changes * 7919 % n, "after changes and adds")
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
    out = {"bench": "sync", "case": m.case, "services": n,
           "endpoints_per_service": args.endpoints, "runs": args.runs, "backend": backend,
           "kernel": platform.release(), "netns_exec_ms": round(netns_ms, 3),
           "full_load_ms": stats(load)}
    if args.changes:
        out.update(endpoint_change_ms=stats(change), endpoint_change_p99_ms=p99(change),
                   service_add_ms=stats(add), service_add_p99_ms=p99(add))
    print(json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", default="1000,10000")
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--mode", default="iptables,nft")
    args = ap.parse_args()
    counts, modes = [int(s) for s in args.services.split(",")], args.mode.split(",")
    if (any(m not in TOOLS for m in modes) or min(counts) < 1 or args.runs < 1
            or not 1 <= args.endpoints <= 16 or args.changes < 0):  # 16: addresses are i*16+e
        sys.exit(f"kernel_sync: --mode takes {','.join(TOOLS)}; --services, --runs >= 1; "
                 "--endpoints 1..16")
    if os.geteuid() != 0:
        sys.exit("kernel_sync: must run as root (it creates a network namespace)")
    for tool, pkg in [("ip", "iproute2")] + [t for m in modes for t in TOOLS[m]]:
        if not shutil.which(tool):
            sys.exit(f"kernel_sync: {tool} not found; install the Debian package '{pkg}' "
                     f"(apt-get install -y {pkg}, or run scripts/install-deps.sh)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks still run
    ns = f"ferry-ksync-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        netns_ms = sorted(run_in(ns, ["true"])[0] for _ in range(9))[4]
        backends = {m: run_in(ns, [TOOLS[m][0][0], "--version"])[1].strip() for m in modes}
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    for mode in modes:
        for n in counts:
            bench(mode, n, args, ns, backends[mode], netns_ms)


if __name__ == "__main__":
    main()
