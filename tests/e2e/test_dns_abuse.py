"""Cluster DNS over UDP against a hostile sender (issue 16, items 6 and 18): a flood of
queries spoofed from a victim's address is answered only up to [dns] rate_limit, the rest
dropped or slipped (TC, question only, so a real client retries over TCP), while a real
`dig` from another /24 is answered in full; a query with IP options is answered without
them; a query spoofed from ferryd's own address is dropped (src_own_address).

The queries are built with scapy and sent through a raw socket from the client namespace;
what comes back is read from a packet socket there (the kernel would drop a source-routed
answer before any UDP socket saw it).
"""
import json
import time

from conftest import PYTHON

DNS = "198.19.0.53"
VICTIM = "198.18.0.77"  # an address of the client namespace: the answers are counted there
RATE = 10
FLOOD = 1000

FERRY_TOML = f"""
[dns]
addresses = ["{DNS}"]
rate_limit = {RATE}
"""

FERRY_MANIFESTS = {
    "40-big.yaml": """apiVersion: v1
kind: Service
metadata: {name: big, namespace: data}
spec: {clusterIP: None}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: big-1, namespace: data, labels: {kubernetes.io/service-name: big}}
addressType: IPv4
ports: [{name: pg, protocol: TCP, port: 5432}]
endpoints:
"""
    + "".join(f'  - addresses: ["198.18.2.{i}"]\n    conditions: {{ready: true}}\n'
              for i in range(1, 61)),
}

NAME = "big.data.svc.cluster.local"

# Sends queries from `src` (EDNS 4096: the whole 60-record answer fits) as fast as a raw
# socket takes them (one query built by scapy, its id and source port changed in place; no
# UDP checksum), and reads every answer from DNS to src on eth0 for `wait` seconds after;
# prints a JSON summary. IP options (a loose source route) when asked.
SENDER = r"""
import json, socket, sys, time
from scapy.all import DNS, DNSQR, DNSRROPT, IP, IPOption_LSRR, UDP, raw
src, count, options, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", float(sys.argv[4])
rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
rx.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root)
rx.bind(("eth0", 0))
rx.settimeout(0.05)
tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
opts = [IPOption_LSRR(routers=["198.18.0.1"])] if options else []
q = bytearray(raw(IP(src=src, dst="DNSADDR", options=opts) / UDP(sport=20000, dport=53, chksum=0) /
                  DNS(id=0, rd=1, qd=DNSQR(qname="QNAME"), ar=DNSRROPT(rclass=4096))))
at = (q[0] & 15) * 4
t0 = time.time()
for i in range(count):
    q[at:at + 2] = (20000 + i % 30000).to_bytes(2, "big")
    q[at + 8:at + 10] = (i % 65536).to_bytes(2, "big")
    tx.sendto(bytes(q), ("DNSADDR", 0))
elapsed = time.time() - t0
got = {"full": 0, "tc": 0, "full_bytes": 0, "tc_bytes": 0, "ihl": [], "query_bytes": len(q),
       "elapsed": elapsed}
end = time.time() + wait
while time.time() < end:
    try:
        frame = rx.recv(65535)
    except socket.timeout:
        continue
    ip = frame[14:]
    if len(ip) < 20 or ip[9] != 17 or socket.inet_ntoa(ip[12:16]) != "DNSADDR" or \
            socket.inet_ntoa(ip[16:20]) != src:
        continue
    ihl = (ip[0] & 15) * 4
    kind = "tc" if ip[ihl + 8 + 2] & 0x02 else "full"
    got[kind] += 1
    got[kind + "_bytes"] += len(ip)
    got["ihl"].append(ihl)
print(json.dumps(got), flush=True)
""".replace("DNSADDR", DNS).replace("QNAME", NAME)


def send(ferry, src, count, options=False, wait=2.0):
    r = ferry.client([PYTHON, "-c", SENDER, src, str(count), "1" if options else "0", str(wait)],
                     timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def drops(ferry, reason):
    return ferry.stats()["drops"].get(reason, 0)


def test_spoofed_flood_is_rate_limited_with_slip_and_others_are_answered(ferry):
    r = ferry.client(["ip", "addr", "add", f"{VICTIM}/24", "dev", "eth0"])
    assert r.returncode == 0, r.stderr
    before = ferry.stats()
    got = send(ferry, VICTIM, FLOOD)
    after = ferry.stats()

    def delta(get):
        return get(after) - get(before)

    answered = delta(lambda s: s["dns"]["noerror"])
    limited = delta(lambda s: s["drops"].get("dns_rate_limited", 0))
    slipped = delta(lambda s: s["dns"].get("slipped", 0))
    received = answered + limited + slipped
    print("flood", FLOOD, "queries:", {k: v for k, v in got.items() if k != "ihl"},
          "answered", answered, "slipped", slipped, "dropped", limited)
    assert received >= FLOOD // 2, (got, received, ferry.log())  # most reached ferryd
    # The burst (RATE) and what the rate gives back while the flood lasts are answered; of
    # the rest every second one (slip 2) gets TC and the question only, the others nothing.
    assert RATE <= answered <= RATE + RATE * (got["elapsed"] + 1.0) + 5, (got, answered)
    assert abs(slipped - limited) <= 1, (slipped, limited)
    assert got["full"] == answered and got["tc"] == slipped, (got, answered, slipped)
    # A full answer is many times the query; a slipped one is no bigger than it; so the
    # victim got back less than was sent in its name.
    assert got["full_bytes"] / got["full"] > 8 * got["query_bytes"], got
    assert got["tc_bytes"] <= got["tc"] * got["query_bytes"], got
    sent = FLOOD * got["query_bytes"]
    assert got["full_bytes"] + got["tc_bytes"] < sent, (got, sent)
    # A real client in another /24 (a pod) is answered in full, at once.
    out = ferry.netns(ferry.ns("pod1"),
                      ["dig", f"@{DNS}", "+time=2", "+tries=1", "+bufsize=4096", NAME],
                      timeout=20)
    assert out.returncode == 0, out.stdout + out.stderr + ferry.log()
    flags = out.stdout.split("flags:")[1].split(";")[0]
    assert "status: NOERROR" in out.stdout and " tc" not in flags, out.stdout
    assert "ANSWER: 60" in out.stdout, out.stdout


def test_answers_carry_no_ip_options(ferry):
    time.sleep(1.2)  # the flood's /24 (the client's too) has its whole bucket again
    got = send(ferry, "198.18.0.1", 1, options=True, wait=1.5)
    assert got["full"] == 1, (got, ferry.log())
    assert got["ihl"] == [20], got


def test_query_from_ferry_own_address_is_dropped(ferry):
    before = drops(ferry, "src_own_address")
    got = send(ferry, "198.18.0.254", 3, wait=1.0)
    assert got["full"] == 0 and got["tc"] == 0, got
    assert drops(ferry, "src_own_address") - before == 3, ferry.log()
