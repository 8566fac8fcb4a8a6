"""Cluster DNS answered by ferryd's workers, asked by real clients (dig from bind9's dnsutils,
kdig from knot-dnsutils) in the client namespace: A, SRV, PTR, headless, ExternalName,
NXDOMAIN with the SOA, TC and the retry over TCP (served by the kernel behind ferryd's TAP
port), and a name that follows a Service update.

Names outside the zone go to an upstream (a stub resolver in a pod's namespace), with the
node's address as their source. Two DNS addresses: 198.19.0.53 in the ClusterIP range (routed to ferryd, as kube-dns's
Service address is) and 198.18.0.53 on the client's own subnet (ferryd answers ARP for it).
"""
import os
import shutil
import subprocess
import time

import pytest

from conftest import PYTHON, VIP, stop

DNS = "198.19.0.53"
DNS_ONLINK = "198.18.0.53"
ZONE = "cluster.local"

# Names outside the zone go to an upstream resolver: a stub in pod1's namespace on 5353.
UPSTREAM = "198.18.1.11"

FERRY_TOML = f"""
[dns]
addresses = ["{DNS}", "{DNS_ONLINK}"]
ttl = 7
upstreams = ["{UPSTREAM}:5353"]
external_ttl_max = 30
"""

STUB = """
import socket, sys
from scapy.all import DNS, DNSRR
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(4096)
    q = DNS(data)
    print("from", peer[0], q.qd.qname.decode(), flush=True)
    if q.qd.qname.startswith(b"silent."):
        continue  # never answers: the resolver times out
    a = DNS(id=q.id, qr=1, aa=0, rd=q.rd, ra=1, qd=q.qd,
            an=DNSRR(rrname=q.qd.qname, type="A", ttl=60, rdata="198.18.9.9"))
    s.sendto(bytes(a), peer)
"""


def headless_slice(name, service, endpoints, port_name="pg", port=5432):
    eps = ""
    for ip, hostname, ready in endpoints:
        eps += f'  - addresses: ["{ip}"]\n    conditions: {{ready: {str(ready).lower()}}}\n'
        if hostname:
            eps += f"    hostname: {hostname}\n"
    return (
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        f"metadata: {{name: {name}, namespace: data, "
        f"labels: {{kubernetes.io/service-name: {service}}}}}\n"
        f"addressType: IPv4\nports: [{{name: {port_name}, protocol: TCP, port: {port}}}]\n"
        f"endpoints:\n{eps}"
    )


FERRY_MANIFESTS = {
    "40-dns.yaml": "\n---\n".join([
        """apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 198.19.0.30
  ports:
    - {name: http, port: 80, protocol: TCP}
    - {name: stats, port: 8125, protocol: UDP}
""",
        """apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432}]
""",
        headless_slice("db-1", "db", [("198.18.1.11", "db-0", True),
                                      ("198.18.1.12", "", True),
                                      ("198.18.1.13", "db-2", False)]),
        """apiVersion: v1
kind: Service
metadata: {name: nobody, namespace: data}
spec: {clusterIP: None}
""",
        """apiVersion: v1
kind: Service
metadata: {name: ext, namespace: shop}
spec: {type: ExternalName, externalName: api.example.org}
""",
        # ExternalName into the zone (a chain of two), and to a name nobody answers.
        """apiVersion: v1
kind: Service
metadata: {name: alias, namespace: shop}
spec: {type: ExternalName, externalName: web.shop.svc.cluster.local}
""",
        """apiVersion: v1
kind: Service
metadata: {name: alias2, namespace: data}
spec: {type: ExternalName, externalName: alias.shop.svc.cluster.local}
""",
        """apiVersion: v1
kind: Service
metadata: {name: mute, namespace: shop}
spec: {type: ExternalName, externalName: silent.example.org}
""",
        # 80 ready endpoints: the A answer does not fit 512 bytes.
        """apiVersion: v1
kind: Service
metadata: {name: big, namespace: data}
spec: {clusterIP: None}
""",
        headless_slice("big-1", "big",
                       [(f"198.18.2.{i}", "", True) for i in range(1, 81)]),
    ]),
}


def dig(ferry, *args, server=DNS):
    r = ferry.client(["dig", f"@{server}", "+time=2", "+tries=2", *args], timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr + ferry.log()
    return r.stdout


def short(ferry, *args, server=DNS):
    return sorted(dig(ferry, "+short", *args, server=server).split("\n")[:-1])


def status(out):
    for line in out.splitlines():
        if "status:" in line:
            return line.split("status:")[1].split(",")[0].strip()
    raise AssertionError(out)


def section(out, name):
    """The records of one section of dig's output, as (name, ttl, class, type, data) tuples."""
    rows, inside = [], False
    for line in out.splitlines():
        if line.startswith(";; "):
            inside = line.startswith(f";; {name} SECTION")
            continue
        if inside and line.strip():
            parts = line.split(None, 4)
            rows.append(tuple(parts))
    return rows


@pytest.fixture(scope="module", autouse=True)
def _tools():
    if not shutil.which("dig"):
        pytest.skip("dig (dnsutils) is not installed: run scripts/install-deps.sh")


@pytest.fixture(scope="module")
def upstream(ferry):
    """The stub resolver; yields the file its log goes to (one "from ADDRESS" per query)."""
    log = ferry.tmp / "upstream.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["ip", "netns", "exec", ferry.ns("pod1"), PYTHON, "-c", STUB],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 10
        while "ready" not in log.read_text():
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.05)
        yield log
    finally:
        stop(proc)


def test_clusterip_a_record(ferry):
    out = dig(ferry, f"web.shop.svc.{ZONE}", "A")
    assert status(out) == "NOERROR"
    assert "flags: qr aa rd" in out
    assert section(out, "ANSWER") == [(f"web.shop.svc.{ZONE}.", "7", "IN", "A", "198.19.0.30")]
    # The seed's services, and the on-link DNS address (ferryd answers ARP for it).
    assert short(ferry, f"my-service.default.svc.{ZONE}") == [VIP]
    assert short(ferry, f"redis-master.default.svc.{ZONE}", server=DNS_ONLINK) == ["198.19.0.11"]


def test_case_is_kept_and_ignored(ferry):
    out = dig(ferry, f"WEB.Shop.svc.{ZONE.upper()}", "A")
    assert section(out, "ANSWER")[0][0] == f"WEB.Shop.svc.{ZONE.upper()}."
    assert section(out, "ANSWER")[0][4] == "198.19.0.30"


def test_srv_for_named_ports(ferry):
    assert short(ferry, f"_http._tcp.web.shop.svc.{ZONE}", "SRV") == [
        f"0 100 80 web.shop.svc.{ZONE}."]
    assert short(ferry, f"_stats._udp.web.shop.svc.{ZONE}", "SRV") == [
        f"0 100 8125 web.shop.svc.{ZONE}."]
    out = dig(ferry, f"_pg._tcp.db.data.svc.{ZONE}", "SRV")
    assert sorted(r[4] for r in section(out, "ANSWER")) == [
        f"0 50 5432 198-18-1-12.db.data.svc.{ZONE}.",
        f"0 50 5432 db-0.db.data.svc.{ZONE}."]
    # The targets' addresses ride along in the additional section.
    assert sorted(r[4] for r in section(out, "ADDITIONAL") if r[3] == "A") == [
        "198.18.1.11", "198.18.1.12"]


def test_ptr(ferry):
    assert short(ferry, "-x", "198.19.0.30") == [f"web.shop.svc.{ZONE}."]
    assert short(ferry, "-x", "198.18.1.11") == [f"db-0.db.data.svc.{ZONE}."]
    assert short(ferry, "-x", "198.18.1.12") == [f"198-18-1-12.db.data.svc.{ZONE}."]


def test_headless(ferry):
    assert short(ferry, f"db.data.svc.{ZONE}") == ["198.18.1.11", "198.18.1.12"]
    assert short(ferry, f"db-0.db.data.svc.{ZONE}") == ["198.18.1.11"]
    # db-2 is not ready: not served.
    assert status(dig(ferry, f"db-2.db.data.svc.{ZONE}")) == "NXDOMAIN"
    # A headless Service without ready endpoints: NXDOMAIN.
    assert status(dig(ferry, f"nobody.data.svc.{ZONE}")) == "NXDOMAIN"


@pytest.fixture
def resolv_conf(ferry):
    """The client namespace's resolver pointed at ferry (`ip netns exec` bind-mounts
    /etc/netns/<ns>/resolv.conf over /etc/resolv.conf), for glibc's getaddrinfo."""
    d = f"/etc/netns/{ferry.client_ns}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/resolv.conf", "w") as f:
        f.write(f"nameserver {DNS}\noptions timeout:3 attempts:2\n")
    yield
    shutil.rmtree(d, ignore_errors=True)


def getent(ferry, name):
    r = ferry.client(["getent", "ahostsv4", name], timeout=30)
    return r.returncode, sorted({line.split()[0] for line in r.stdout.splitlines()})


def test_external_name_into_the_zone_is_followed(ferry, resolv_conf):
    """RFC 1034 4.3.2, as CoreDNS answers: the CNAME, then its target's records."""
    out = dig(ferry, f"alias2.data.svc.{ZONE}", "A")
    assert status(out) == "NOERROR" and "aa" in out.split("flags:")[1].split(";")[0]
    assert section(out, "ANSWER") == [
        (f"alias2.data.svc.{ZONE}.", "7", "IN", "CNAME", f"alias.shop.svc.{ZONE}."),
        (f"alias.shop.svc.{ZONE}.", "7", "IN", "CNAME", f"web.shop.svc.{ZONE}."),
        (f"web.shop.svc.{ZONE}.", "7", "IN", "A", "198.19.0.30")]
    # glibc's resolver, as an application in a pod asks.
    assert getent(ferry, f"alias.shop.svc.{ZONE}") == (0, ["198.19.0.30"])
    assert getent(ferry, f"alias2.data.svc.{ZONE}") == (0, ["198.19.0.30"])


def test_external_name_outside_is_resolved_upstream(ferry, upstream, resolv_conf):
    """The target outside the zone is asked of the upstream by ferryd and appended, its TTL
    capped at external_ttl_max (the stub says 60); answers are cached."""
    before = ferry.stats()["dns"]
    asked = upstream.read_text().count("api.example.org")
    out = dig(ferry, f"ext.shop.svc.{ZONE}", "A")
    assert status(out) == "NOERROR", out
    assert section(out, "ANSWER") == [
        (f"ext.shop.svc.{ZONE}.", "7", "IN", "CNAME", "api.example.org."),
        ("api.example.org.", "30", "IN", "A", "198.18.9.9")], out
    assert getent(ferry, f"ext.shop.svc.{ZONE}") == (0, ["198.18.9.9"])
    # One upstream query for both (the second from the cache), from the DNS address.
    assert upstream.read_text().count("api.example.org") == asked + 1
    assert f"from {DNS} api.example.org." in upstream.read_text()
    after = ferry.stats()["dns"]
    assert after["cname_upstream"] >= before["cname_upstream"] + 2
    ext = after["external"]
    assert ext["cache_hits"] >= before["external"]["cache_hits"] + 1, ext
    assert ext["ttl_capped"] >= before["external"]["ttl_capped"] + 1, ext
    # Asked for the CNAME itself: nothing to resolve.
    assert section(dig(ferry, f"ext.shop.svc.{ZONE}", "CNAME"), "ANSWER") == [
        (f"ext.shop.svc.{ZONE}.", "7", "IN", "CNAME", "api.example.org.")]
    # Over TCP too (as a client asks after a truncated answer): the chain and the target's
    # records, here from the cache.
    out = dig(ferry, "+tcp", f"ext.shop.svc.{ZONE}", "A")
    assert status(out) == "NOERROR", out
    assert [(r[0], r[3], r[4]) for r in section(out, "ANSWER")] == [
        (f"ext.shop.svc.{ZONE}.", "CNAME", "api.example.org."),
        ("api.example.org.", "A", "198.18.9.9")], out
    assert ferry.stats()["dns"]["tcp"]["cname_upstream"] >= 1
    # An upstream that never answers: SERVFAIL, counted, over UDP and over TCP.
    out = dig(ferry, "+tries=1", "+time=5", f"mute.shop.svc.{ZONE}", "A")
    assert status(out) == "SERVFAIL", out
    assert ferry.stats()["dns"]["external"]["servfail"] >= ext["servfail"] + 1
    out = dig(ferry, "+tcp", "+tries=1", "+time=5", f"mute.shop.svc.{ZONE}", "A")
    assert status(out) == "SERVFAIL", out
    assert ferry.stats()["dns"]["external"]["servfail"] >= ext["servfail"] + 2


def test_nxdomain_and_nodata_carry_the_soa(ferry):
    out = dig(ferry, f"missing.shop.svc.{ZONE}", "A")
    assert status(out) == "NXDOMAIN"
    assert "aa" in out.split("flags:")[1].split(";")[0]
    soa = section(out, "AUTHORITY")
    assert len(soa) == 1 and soa[0][0] == f"{ZONE}." and soa[0][3] == "SOA", out
    assert soa[0][4].startswith(f"ns.dns.{ZONE}. hostmaster.{ZONE}.")
    # A name that exists, asked for a type it has none of: NOERROR, no answer, the SOA.
    out = dig(ferry, f"web.shop.svc.{ZONE}", "AAAA")
    assert status(out) == "NOERROR" and not section(out, "ANSWER")
    assert section(out, "AUTHORITY")[0][3] == "SOA"
    # ndots:5 search-list expansion of a name, as a pod's resolver sends it first.
    assert status(dig(ferry, f"web.shop.svc.{ZONE}.shop.svc.{ZONE}")) == "NXDOMAIN"


def test_outside_the_zone_goes_upstream(ferry, upstream):
    before = ferry.stats()["dns"]["forwarded"]
    seen = len(upstream.read_text())
    out = dig(ferry, "www.example.org", "A")
    assert status(out) == "NOERROR", out
    # The upstream's answer, from the DNS address the client asked, not authoritative.
    assert section(out, "ANSWER") == [("www.example.org.", "60", "IN", "A", "198.18.9.9")]
    assert f"SERVER: {DNS}#53" in out and "aa" not in out.split("flags:")[1].split(";")[0]
    assert short(ferry, "example.net", server=DNS_ONLINK) == ["198.18.9.9"]
    # The upstream saw the node's address (SNAT), so its answer came back through ferryd.
    log = upstream.read_text()[seen:]
    assert {line.split()[1] for line in log.splitlines()} == {"198.18.1.254"}, log
    assert ferry.stats()["dns"]["forwarded"] == before + 2
    # Names of the zone never go there.
    assert short(ferry, f"web.shop.svc.{ZONE}") == ["198.19.0.30"]
    assert upstream.read_text()[seen:].count("from ") == 2


def test_other_classes_are_refused(ferry):
    assert status(dig(ferry, "version.bind", "CH", "TXT")) == "REFUSED"


def test_dns_version_and_edns(ferry):
    assert short(ferry, f"dns-version.{ZONE}", "TXT") == ['"1.1.0"']
    out = dig(ferry, "+bufsize=1400", f"web.shop.svc.{ZONE}")
    assert "; EDNS: version: 0" in out and "udp: 1232" in out, out
    out = dig(ferry, "+noedns", f"web.shop.svc.{ZONE}")
    assert "EDNS" not in out


def test_truncation_then_tcp(ferry):
    name = f"big.data.svc.{ZONE}"
    # Without EDNS the 80 records do not fit 512 bytes: TC set, nothing answered.
    out = dig(ferry, "+noedns", "+ignore", name)
    assert "tc" in out.split("flags:")[1].split(";")[0], out
    assert not section(out, "ANSWER")
    # dig retries over TCP by itself on TC.
    out = dig(ferry, "+noedns", name)
    assert len(section(out, "ANSWER")) == 80, out
    assert "(TCP)" in out
    # And asked over TCP directly, by kdig too.
    assert len(short(ferry, "+tcp", name)) == 80
    if shutil.which("kdig"):
        r = ferry.client(["kdig", f"@{DNS}", "+tcp", "+short", name], timeout=20)
        assert r.returncode == 0 and len(r.stdout.split()) == 80, r.stdout + r.stderr
    st = ferry.stats()["dns"]
    assert st["truncated"] >= 1 and st["tcp"]["noerror"] >= 3, st


def test_kdig_over_udp(ferry):
    if not shutil.which("kdig"):
        pytest.skip("kdig (knot-dnsutils) is not installed")
    r = ferry.client(["kdig", f"@{DNS}", "+short", f"_http._tcp.web.shop.svc.{ZONE}", "SRV"],
                     timeout=20)
    assert r.stdout.split() == ["0", "100", "80", f"web.shop.svc.{ZONE}."], r.stdout + r.stderr


def test_name_follows_service_update(ferry):
    ferry.apply("""apiVersion: v1
kind: Service
metadata: {name: late, namespace: shop}
spec:
  clusterIP: 198.19.0.31
  ports: [{name: http, port: 80}]
""")
    assert short(ferry, f"late.shop.svc.{ZONE}") == ["198.19.0.31"]
    ferry.apply("""apiVersion: v1
kind: Service
metadata: {name: late, namespace: shop}
spec:
  clusterIP: 198.19.0.31
  ports: [{name: grpc, port: 9090}]
""")
    assert short(ferry, f"_grpc._tcp.late.shop.svc.{ZONE}", "SRV") == [
        f"0 100 9090 late.shop.svc.{ZONE}."]
    assert status(dig(ferry, f"_http._tcp.late.shop.svc.{ZONE}", "SRV")) == "NXDOMAIN"
    # A headless Service's names follow its endpoints.
    ferry.apply(headless_slice("db-1", "db", [("198.18.1.13", "db-2", True)]))
    assert short(ferry, f"db.data.svc.{ZONE}") == ["198.18.1.13"]
    assert short(ferry, f"db-2.db.data.svc.{ZONE}") == ["198.18.1.13"]
    r = ferry.ferryctl("delete", "-f", "-", input="apiVersion: v1\nkind: Service\n"
                       "metadata: {name: late, namespace: shop}\n")
    assert r.returncode == 0, r.stderr
    assert status(dig(ferry, f"late.shop.svc.{ZONE}")) == "NXDOMAIN"
    assert status(dig(ferry, "-x", "198.19.0.31")) == "NXDOMAIN"


def test_bad_queries_are_counted_not_fatal(ferry):
    """Crafted with scapy: garbage, a compression loop, a response; ferryd answers FORMERR
    or drops, and keeps answering."""
    before = ferry.stats()
    r = ferry.client_py(f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
junk = [b"\\x12",  # shorter than a header: dropped
        # a question that is a compression pointer to itself: FORMERR
        b"\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\xc0\\x0c\\x00\\x01\\x00\\x01",
        b"\\x12\\x34\\x81\\x80" + b"\\x00" * 8,  # a response: dropped
        # labels running past the end: FORMERR
        b"\\x12\\x34\\x01\\x00\\x00\\x01" + b"\\x00" * 6 + b"\\x3f" * 20]
for j in junk:
    s.sendto(j, ("{DNS}", 53))
rcodes = []
for _ in range(2):
    data, _ = s.recvfrom(4096)
    rcodes.append(data[3] & 15)
print("rcodes", rcodes)
""")
    assert "rcodes [1, 1]" in r.stdout, r.stdout + r.stderr
    after = ferry.stats()
    assert after["dns"]["formerr"] >= before["dns"]["formerr"] + 2
    assert after["drops"]["dns_not_query"] >= before["drops"]["dns_not_query"] + 2
    assert short(ferry, f"web.shop.svc.{ZONE}") == ["198.19.0.30"]
