"""Malformed and unforwardable packets, written straight onto the client's wire towards ferryd's
fe0: each is dropped under its own reason in `ferryctl stats`, and ferryd keeps serving."""
import json
import time

import pytest

scapy = pytest.importorskip("scapy.all")
from scapy.all import ICMP, IP, TCP, UDP, Ether, IPOption_NOP, Raw  # noqa: E402

from conftest import PODS, PYTHON, UDP_VIP, VIP

CLIENT_IP = "198.18.0.1"
NODE_IP = "198.18.0.254"

SEND = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
try:
    s.send(bytes.fromhex(sys.argv[1]))
    print("sent")
except OSError as e:
    print("errno", e.errno, e.strerror)
"""


def link_mac(ferry, ns, dev):
    r = ferry.netns(ns, ["ip", "-j", "link", "show", dev])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]["address"]


@pytest.fixture(scope="module")
def wire(ferry):
    """(ferry, eth) where eth() makes an Ethernet header from the client to ferryd's fe0."""
    node_mac = link_mac(ferry, ferry.node_ns, "fe0")
    client_mac = link_mac(ferry, ferry.client_ns, "eth0")
    # ferryd answers ARP and ICMP echo for its own address; check that its MAC is fe0's, so
    # the frames below are addressed exactly as a real client's would be.
    code = f"""
from scapy.all import ARP, Ether, IP, ICMP, srp1, conf
conf.verb = 0
a = srp1(Ether(dst="ff:ff:ff:ff:ff:ff")/ARP(pdst="{NODE_IP}", psrc="{CLIENT_IP}"),
         iface="eth0", timeout=2)
e = srp1(Ether(dst=a.hwsrc)/IP(src="{CLIENT_IP}", dst="{NODE_IP}")/ICMP(id=7, seq=1)/b"ferry",
         iface="eth0", timeout=2)
print(a.hwsrc, e[IP].src, e[ICMP].type, bytes(e[ICMP].payload).decode())
"""
    before = ferry.stats()["l2"]
    r = ferry.client_py(code)
    assert r.stdout.split() == [node_mac, NODE_IP, "0", "ferry"], r.stdout + r.stderr
    after = ferry.stats()["l2"]
    assert after["icmp_echo_replies"] > before["icmp_echo_replies"], after
    assert after["arp_replies_sent"] > before["arp_replies_sent"], after

    def eth():
        return Ether(src=client_mac, dst=node_mac)
    return ferry, eth


def send_raw(ferry, frame):
    data = frame if isinstance(frame, bytes) else bytes(frame)
    r = ferry.netns(ferry.client_ns, [PYTHON, "-c", SEND, data.hex()])
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def wait_counter(ferry, section, name, above, timeout=3.0):
    deadline = time.monotonic() + timeout
    while True:
        s = ferry.stats()
        if s[section][name] > above or time.monotonic() > deadline:
            return s
        time.sleep(0.05)


def assert_still_serves(ferry):
    r = ferry.curl(f"http://{VIP}/", max_time=3)
    assert r.returncode == 0 and r.stdout.strip() in PODS, r.stdout + r.stderr + ferry.log()


def ip(**kw):
    return IP(**{"src": CLIENT_IP, "dst": VIP, **kw})


def udp_ip(**kw):
    return IP(**{"src": CLIENT_IP, "dst": UDP_VIP, **kw})


def bad_ip_checksum(frame):
    """The frame with its IPv4 header checksum wrong (every bit of it flipped)."""
    b = bytearray(bytes(frame))
    b[14 + 10] ^= 0xff
    b[14 + 11] ^= 0xff
    return bytes(b)


def vlan_tagged(frame, tpid):
    """The frame with a VLAN tag (TPID tpid, VLAN 5) after its MAC addresses."""
    b = bytes(frame)
    return b[:12] + tpid.to_bytes(2, "big") + b"\x00\x05" + b[12:]


# name -> (drop reason, frame builder taking the Ethernet header)
CASES = {
    "ipv4-header-truncated": ("ip_truncated", lambda e: bytes(e()) [:12] + b"\x08\x00" + b"\x45" * 6),
    "ihl-below-5": ("ip_bad_ihl", lambda e: e() / ip(ihl=4) / TCP(dport=80, flags="S")),
    "ihl-beyond-frame": ("ip_bad_ihl", lambda e: bytes(e() / ip(ihl=15) / TCP(dport=80))[:14 + 40]),
    "version-6-in-ipv4": ("ip_bad_version", lambda e: e() / ip(version=6) / TCP(dport=80)),
    "total-length-beyond-frame": ("ip_bad_length", lambda e: e() / ip(len=400) / TCP(dport=80)),
    "total-length-below-header": ("ip_bad_length", lambda e: e() / ip(len=12) / TCP(dport=80)),
    "tcp-header-truncated": ("l4_truncated", lambda e: e() / ip(proto=6) / Raw(b"\x9c\x40\x00\x50" + b"\x00" * 6)),
    "udp-header-truncated": ("l4_truncated", lambda e: e() / ip(proto=17) / Raw(b"\x9c\x40\x00")),
    "tcp-data-offset-beyond-packet": (
        "l4_truncated", lambda e: e() / ip() / TCP(dport=80, flags="S", dataofs=15)),
    "ttl-1": ("ip_ttl_exceeded", lambda e: e() / ip(ttl=1) / TCP(sport=40999, dport=80, flags="S")),
    "icmp-to-vip": ("icmp_to_service", lambda e: e() / ip() / ICMP()),
    "ipv6-ethertype": ("eth_unsupported", lambda e: bytes(e())[:12] + b"\x86\xdd" + b"\x60" + b"\x00" * 39),
    # TCP header length below its 20 bytes: malformed, not merely cut short.
    "tcp-data-offset-4": ("l4_bad_length", lambda e: e() / ip() / TCP(dport=80, flags="S", dataofs=4)),
    "tcp-data-offset-0": ("l4_bad_length", lambda e: e() / ip() / TCP(dport=80, flags="S", dataofs=0)),
    # A corrupt IPv4 header is never forwarded (af_packet gives no checksum verdict, so
    # ferryd sums the header itself).
    "ip-header-checksum-wrong": (
        "ip_bad_checksum", lambda e: bad_ip_checksum(e() / ip() / TCP(sport=40998, dport=80, flags="S"))),
    "udp-length-0": ("l4_bad_length", lambda e: e() / udp_ip() / UDP(dport=53, len=0) / b"query"),
    "udp-length-7": ("l4_bad_length", lambda e: e() / udp_ip() / UDP(dport=53, len=7) / b"query"),
    "udp-length-beyond-ip-payload": (
        "l4_bad_length", lambda e: e() / udp_ip() / UDP(dport=53, len=200) / b"query"),
    "tcp-source-port-0": ("port_zero", lambda e: e() / ip() / TCP(sport=0, dport=80, flags="S")),
    "tcp-destination-port-0": ("port_zero", lambda e: e() / ip() / TCP(sport=40997, dport=0, flags="S")),
    "udp-source-port-0": ("port_zero", lambda e: e() / udp_ip() / UDP(sport=0, dport=53) / b"q"),
    "udp-destination-port-0": ("port_zero", lambda e: e() / udp_ip() / UDP(sport=40997, dport=0) / b"q"),
    # Linux's martian sources: none of them can be a client, so no flow is made for one.
    "source-0.0.0.0": ("src_martian", lambda e: e() / ip(src="0.0.0.0") / TCP(dport=80, flags="S")),
    "source-127.0.0.1": ("src_martian", lambda e: e() / ip(src="127.0.0.1") / TCP(dport=80, flags="S")),
    "source-multicast": ("src_martian", lambda e: e() / udp_ip(src="224.0.0.5") / UDP(dport=53) / b"q"),
    "source-limited-broadcast": (
        "src_martian", lambda e: e() / udp_ip(src="255.255.255.255") / UDP(dport=53) / b"q"),
    "source-subnet-broadcast": (
        "src_martian", lambda e: e() / ip(src="198.18.0.255") / TCP(dport=80, flags="S")),
    "ttl-0": ("ip_ttl_exceeded", lambda e: e() / ip(ttl=0) / TCP(sport=40996, dport=80, flags="S")),
    # Land: the source is the destination (the classic attack: a SYN from VIP:80 to VIP:80).
    "land-tcp": ("land", lambda e: e() / IP(src=VIP, dst=VIP) / TCP(sport=80, dport=80, flags="S")),
    "land-udp": ("land", lambda e: e() / IP(src=UDP_VIP, dst=UDP_VIP) / UDP(sport=53, dport=53) / b"q"),
    # fe0 is untagged. The veth's kernel side takes the tag off and the af_packet PMD puts it
    # back (or, with VLAN stripping, flags the mbuf): ferryd counts the frame either way.
    "vlan-8021q": ("vlan_unsupported",
                   lambda e: vlan_tagged(e() / ip() / TCP(sport=40995, dport=80, flags="S"), 0x8100)),
    "vlan-8021ad": ("vlan_unsupported",
                    lambda e: vlan_tagged(e() / ip() / TCP(sport=40994, dport=80, flags="S"), 0x88a8)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_packet_dropped_and_counted(wire, case):
    ferry, eth = wire
    reason, build = CASES[case]
    frame = build(eth)
    before = ferry.stats()
    flows_before = before["flows"]["created"]
    assert send_raw(ferry, frame) == "sent"
    after = wait_counter(ferry, "drops", reason, before["drops"][reason])
    # The namespaces' own IPv6 chatter (router solicitations, MLD) counts as eth_unsupported
    # at any time; every other counter must move only because of this frame.
    changed = {k: (before["drops"][k], v) for k, v in after["drops"].items()
               if v != before["drops"][k] and k != "eth_unsupported"}
    if reason == "eth_unsupported":
        assert after["drops"][reason] > before["drops"][reason], changed
    else:
        assert changed == {reason: (before["drops"][reason], before["drops"][reason] + 1)}, changed
    # Nothing else happened to it: no flow was made for it.
    assert after["flows"]["created"] == flows_before
    assert_still_serves(ferry)


# On af_packet ports the kernel reassembles fragments before ferryd sees them (DPDK's
# af_packet PMD joins a PACKET_FANOUT group with PACKET_FANOUT_FLAG_DEFRAG), so a lone
# fragment never arrives; ferryd's own reassembly is covered by the pipeline unit tests
# and test_fragments.py (net_pcap ports, which deliver fragments). Here: nothing is
# translated.
@pytest.mark.parametrize("frag", ["first", "later"])
def test_lone_fragment_to_vip_is_never_translated(wire, frag):
    ferry, eth = wire
    if frag == "first":
        frame = eth() / ip(flags="MF", id=777) / TCP(sport=40777, dport=80, flags="S")
    else:
        frame = eth() / ip(frag=100, id=778) / Raw(b"x" * 40)
    before = ferry.stats()
    assert send_raw(ferry, frame) == "sent"
    time.sleep(0.5)
    after = ferry.stats()
    assert after["flows"]["created"] == before["flows"]["created"]
    services = {s["name"]: s["packets"] for s in before["services"]}
    for s in after["services"]:
        assert s["packets"] == services.get(s["name"], 0), s
    assert_still_serves(ferry)


# A datagram over the MTU arrives reassembled (see above); translated, it no longer fits
# eth1's MTU: having no DF (fragments never do), it leaves in fragments (rte_ipv4_fragment_packet:
# multi-segment mbufs, which the af_packet PMD copies out segment by segment), and the pod's
# answer comes back the same way. (test_fragments.py covers ferryd's own reassembly.)
def test_datagram_over_the_mtu_is_fragmented_on_the_way_out(wire):
    ferry, _ = wire
    before = ferry.stats()
    code = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
s.connect(("198.19.0.20", 53))
s.send(b"F" * 1600)   # over the 1500 MTU: the client's kernel fragments it
try:
    print("answered", len(s.recv(65535)))
except OSError as e:
    print("lost", e)
"""
    r = ferry.client_py(code)
    after = ferry.stats()
    dropped = {k: v - before["drops"][k] for k, v in after["drops"].items()
               if v != before["drops"][k] and k != "eth_unsupported"}
    assert_still_serves(ferry)
    assert r.stdout.startswith("answered 1609"), r.stdout + ferry.log()
    assert dropped == {}, (dropped, after["ports"])
    # The request towards the pod and the answer towards the client: two datagrams, two
    # fragments each.
    assert after["fragments"]["fragmented"] - before["fragments"]["fragmented"] == 2
    assert after["fragments"]["fragments_sent"] - before["fragments"]["fragments_sent"] == 4


def test_truncated_ethernet_frame(wire):
    ferry, eth = wire
    before = ferry.stats()["drops"]["eth_truncated"]
    out = send_raw(ferry, bytes(eth())[:10])
    if out.startswith("errno 22"):
        # Linux refuses packet-socket frames shorter than the device's minimum header length
        # (dev_validate_header: ETH_HLEN for Ethernet), so no veth peer can ever deliver one.
        pytest.skip("the kernel refuses to send a frame shorter than 14 bytes on a veth")
    assert out == "sent"
    after = wait_counter(ferry, "drops", "eth_truncated", before)
    assert after["drops"]["eth_truncated"] == before + 1
    assert_still_serves(ferry)


def test_syn_with_ip_options_is_forwarded(wire):
    """IHL 6 (one word of NOP options): a valid packet; ferryd must translate it correctly,
    and the backend's SYN-ACK must come back to the client from the VIP."""
    ferry, eth = wire
    e = eth()
    syn = e / ip(options=[IPOption_NOP()] * 4) / TCP(sport=41234, dport=80, flags="S", seq=1000)
    syn = Ether(bytes(syn))
    assert syn[IP].ihl == 6
    before = ferry.stats()
    code = f"""
from scapy.all import Ether, IP, TCP, srp1, conf
conf.verb = 0
a = srp1(Ether(bytes.fromhex("{bytes(syn).hex()}")), iface="eth0", timeout=3)
if a is None or TCP not in a:
    print("no answer")
else:
    print(a[IP].src, a[TCP].sport, a[TCP].dport, a[TCP].flags, a[TCP].ack)
"""
    r = ferry.client_py(code)
    after = ferry.stats()
    assert after["drops"]["ip_bad_ihl"] == before["drops"]["ip_bad_ihl"]
    assert after["flows"]["created"] > before["flows"]["created"], after["flows"]
    assert r.stdout.split() == [VIP, "80", "41234", "SA", "1001"], \
        r.stdout + r.stderr + json.dumps(after["drops"])
    flows = [f for f in ferry.flows()["items"] if f["client"] == f"{CLIENT_IP}:41234"]
    assert len(flows) == 1 and flows[0]["service"] == f"{VIP}:80", flows
    assert_still_serves(ferry)


def udp_checksum_errors(ferry):
    """Udp InCsumErrors summed over the pods' namespaces (their kernels' own count)."""
    total = 0
    for pod in ("pod1", "pod2", "pod3"):
        r = ferry.netns(ferry.ns(pod), ["cat", "/proc/net/snmp"])
        udp = [line.split() for line in r.stdout.splitlines() if line.startswith("Udp:")]
        total += int(udp[1][udp[0].index("InCsumErrors")])
    return total


def test_wrong_udp_checksum_is_forwarded_and_the_backend_drops_it(wire):
    """ferryd does not verify TCP/UDP checksums in software (neither do IPVS and kube-proxy):
    it forwards the datagram, its incremental NAT keeps the checksum wrong, and the pod's
    kernel drops it, so the pod server never sees the data. (af_packet gives no L4 checksum
    verdict; a NIC that flags one bad gets it dropped under l4_bad_checksum, which the
    pipeline unit tests cover.) The same datagram with its checksum right is answered."""
    ferry, eth = wire
    e = eth()
    good = Ether(bytes(e / udp_ip() / UDP(sport=40561, dport=53) / b"checksum-right"))
    bad = Ether(bytes(e / udp_ip() / UDP(sport=40560, dport=53) / b"checksum-wrong"))
    bad[UDP].chksum ^= 0x00ff  # wrong, and still nonzero (0 would mean "no checksum")
    # Each frame goes out raw from a bound UDP socket's port; the socket takes any answer.
    code = """
import socket, sys
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
raw.bind(("eth0", 0))
for port, hexframe in zip((40560, 40561), sys.argv[1:]):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.settimeout(2)
    raw.send(bytes.fromhex(hexframe))
    try:
        print(s.recv(65535).decode())
    except OSError:
        print("no-answer")
"""
    before, csum_errors = ferry.stats(), udp_checksum_errors(ferry)
    r = ferry.netns(ferry.client_ns, [PYTHON, "-c", code, bytes(bad).hex(), bytes(good).hex()],
                    timeout=15)
    after = ferry.stats()
    # The backend's kernel is what dropped it, for its checksum.
    assert udp_checksum_errors(ferry) == csum_errors + 1
    answers = r.stdout.split("\n")
    assert answers[0] == "no-answer", r.stdout + r.stderr
    name, data = (answers[1].split(" ", 1) + [""])[:2]
    assert name in PODS and data == "checksum-right", r.stdout + r.stderr
    # Both were forwarded: two new flows, and no drop reason moved.
    assert after["flows"]["created"] == before["flows"]["created"] + 2, after["flows"]
    changed = {k: v for k, v in after["drops"].items()
               if v != before["drops"][k] and k != "eth_unsupported"}
    assert changed == {}, changed
    assert_still_serves(ferry)


def link_stats(ferry, ns, dev):
    r = ferry.netns(ns, ["ip", "-j", "-s", "link", "show", dev])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]["stats64"]


def test_jumbo_frame_beyond_the_port_mtu_is_not_forwarded(wire):
    """A 9000-byte IP packet from a client whose veth end allows it, towards fe0 (MTU 1500,
    as ferryd's port). The kernel drops it at the veth (is_skb_forwardable: longer than the
    peer's MTU), counted there as a TX drop on the client's end: it never reaches ferryd's
    af_packet socket. Were it to get through (a NIC taking bigger frames than the port's
    MTU), the pipeline would count it: mtu_exceeded on the way out. Either way nothing is
    forwarded, and service goes on."""
    ferry, eth = wire
    frame = eth() / udp_ip() / UDP(sport=40562, dport=53) / (b"J" * (9000 - 28))
    assert len(bytes(frame)) == 9014
    set_mtu = ["ip", "link", "set", "dev", "eth0", "mtu"]
    r = ferry.netns(ferry.client_ns, set_mtu + ["9000"])
    assert r.returncode == 0, r.stderr
    try:
        before, link_before = ferry.stats(), link_stats(ferry, ferry.client_ns, "eth0")
        sent = send_raw(ferry, frame)
        time.sleep(0.5)
        after, link_after = ferry.stats(), link_stats(ferry, ferry.client_ns, "eth0")
    finally:
        ferry.netns(ferry.client_ns, set_mtu + ["1500"])
    changed = {k: v - before["drops"][k] for k, v in after["drops"].items()
               if v != before["drops"][k] and k != "eth_unsupported"}
    services = {s["name"]: s["packets"] for s in before["services"]}
    for s in after["services"]:
        assert s["packets"] == services.get(s["name"], 0), s
    assert after["flows"]["created"] == before["flows"]["created"]
    kernel_dropped = link_after["tx"]["dropped"] - link_before["tx"]["dropped"]
    # Counted somewhere: by the veth, which refuses it at once (the packet socket's send gets
    # ENOBUFS: veth_xmit's NET_XMIT_DROP) as Linux does today; or else by ferryd.
    if sent.startswith("errno 105"):
        assert kernel_dropped == 1 and changed == {}, (kernel_dropped, changed, link_after)
    else:
        assert sent == "sent"
        assert set(changed) <= {"ip_bad_length", "mtu_exceeded"} and \
            sum(changed.values()) == 1, (kernel_dropped, changed, link_after)
    assert_still_serves(ferry)
