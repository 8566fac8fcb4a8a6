"""IPv4 fragments: datagrams larger than the 1500 MTU cross ferryd both ways.

The client's kernel fragments a 4000-byte UDP datagram to dns-like (198.19.0.20:53); ferryd
reassembles it, translates it, and fragments it again for fe1; the pod's echo answers 4000+
bytes, which its kernel fragments, and the client gets the whole answer from the service
address. Broken trains (overlapping fragments, trains that never complete) are counted under
their own drop reasons, and valid traffic flows afterwards.

ferryd's ports here are net_pcap on fe0/fe1: the af_packet PMD joins a PACKET_FANOUT group
with the DEFRAG flag, so the kernel reassembles before ferryd sees anything (and cuts frames
longer than its 2048-byte ring frames); pcap hands ferryd the fragments as the wire has them.
"""
import json
import shutil
import tempfile
import time

import pytest

from conftest import (PODS, PYTHON, UDP_VIP, Ferry, _preflight, config_toml, default_manifests,
                      unique_prefix)

scapy = pytest.importorskip("scapy.all")

CLIENT_IP = "198.18.0.1"
TIMEOUT_MS = 500
MAX_HELD = 128
FRAGMENTS_TOML = f"[fragments]\ntimeout_ms = {TIMEOUT_MS}\nmax_held = {MAX_HELD}\n"


def pcap_config(f):
    text = config_toml(f.prefix, f.tmp, f.manifests, extra=FRAGMENTS_TOML)
    for i in (0, 1):
        old = f'"net_af_packet{i},iface=fe{i}"'
        assert old in text
        text = text.replace(old, f'"net_pcap{i},iface=fe{i},phy_mac=1"')
    return text


@pytest.fixture(scope="module")
def pferry():
    _preflight()
    tmp = tempfile.mkdtemp(prefix="ferry-frag-")
    f = Ferry(unique_prefix(), tmp)
    try:
        f.write_manifests(default_manifests())
        f.topology_up()
        f.start_pods()
        f.start_ferryd(pcap_config(f))
        yield f
        assert f.alive(), f"ferryd is not running after the tests\n{f.log()}"
    finally:
        f.teardown()
        shutil.rmtree(tmp, ignore_errors=True)


# n sockets, each sending `per` datagrams of `size` bytes and reading the answers.
EXCHANGE = """
import json, socket
out = []
for i in range({n}):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("{client}", 0))
    s.settimeout(3)
    got = []
    for j in range({per}):
        msg = (b"%d-%d:" % (i, j)) + bytes((k * 7 + i) % 251 for k in range({size}))
        msg = msg[:{size}]
        s.sendto(msg, ("{vip}", 53))
        try:
            data, peer = s.recvfrom(65535)
            name, _, echoed = data.partition(b" ")
            got.append({{"peer": "%s:%d" % peer, "name": name.decode(), "len": len(data),
                         "whole": echoed == msg}})
        except socket.timeout:
            got.append(None)
    out.append(got)
    s.close()
print(json.dumps(out))
"""


def exchange(f, n=1, per=1, size=4000):
    code = EXCHANGE.format(n=n, per=per, size=size, vip=UDP_VIP, client=CLIENT_IP)
    r = f.client_py(code, timeout=10 + 4 * n * per)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def frag_stats(f):
    s = f.stats()
    return s["fragments"], s["drops"]


def test_big_datagram_crosses_both_ways(pferry):
    before, _ = frag_stats(pferry)
    [[got]] = exchange(pferry)
    assert got is not None, f"no answer\n{pferry.log()}"
    assert got["peer"] == f"{UDP_VIP}:53", got
    assert got["name"] in PODS, got
    assert got["whole"] and got["len"] == 4000 + len(got["name"]) + 1, got
    after, drops = frag_stats(pferry)
    # Request (3 fragments in) and answer (3 in): two datagrams reassembled, both fragmented
    # again on their way out.
    assert after["received"] - before["received"] == 6, after
    assert after["reassembled"] - before["reassembled"] == 2, after
    assert after["fragmented"] - before["fragmented"] == 2, after
    assert after["fragments_sent"] - before["fragments_sent"] == 6, after
    assert after["held"] == 0, after


def test_several_clients_each_stay_on_one_backend(pferry):
    results = exchange(pferry, n=6, per=3, size=3000)
    names = set()
    for got in results:
        assert None not in got, f"lost answers: {got}\n{pferry.log()}"
        assert all(g["whole"] and g["peer"] == f"{UDP_VIP}:53" for g in got), got
        # One flow (one client socket): one backend for all of its datagrams.
        assert len({g["name"] for g in got}) == 1, got
        names.add(got[0]["name"])
    assert names <= PODS


# Scapy on the client's wire: fragment trains ferryd must refuse, with their counts.
BAD_TRAINS = """
from scapy.all import Ether, IP, UDP, Raw, sendp, conf, getmacbyip
conf.verb = 0
node = getmacbyip("198.18.0.254")
def frag(id, off, payload, more):
    return (Ether(dst=node) / IP(src="198.18.0.1", dst="{vip}", id=id, frag=off // 8,
            flags="MF" if more else 0, proto=17) / Raw(payload))
udp = bytes(UDP(sport=45000, dport=53, len=8 + 2992)) + b"o" * 2992
frames = []
for t in range({overlapping}):
    # 1480 bytes at 0, 1480 at 992 (overlapping the first), the last 528 at 2472.
    frames += [frag(1000 + t, 0, udp[:1480], True), frag(1000 + t, 992, udp[992:2472], True),
               frag(1000 + t, 2472, udp[2472:], False)]
for t in range({incomplete}):
    frames += [frag(2000 + t, 0, udp[:1480], True)]   # the rest never comes
sendp(frames, iface="eth0")
print("sent", len(frames))
"""


def test_overlapping_and_incomplete_trains_are_counted_drops(pferry):
    _, before = frag_stats(pferry)
    code = BAD_TRAINS.format(vip=UDP_VIP, overlapping=20, incomplete=30)
    r = pferry.client_py(code, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "sent 90", r.stdout + r.stderr
    deadline = time.monotonic() + 5
    while True:
        frags, drops = frag_stats(pferry)
        grown = {k: drops[k] - before[k] for k in drops if drops[k] != before[k]}
        if grown.get("frag_timeout", 0) >= 30 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # Each overlapping train is dropped whole when its last fragment shows the overlap; the
    # first fragments alone time out (timeout_ms = 500) in the worker's sweep.
    assert grown.get("frag_overlap") == 60, grown
    assert grown.get("frag_timeout") == 30, grown
    assert frags["held"] == 0, frags
    # Nothing was forwarded for them, and big datagrams still cross.
    [[got]] = exchange(pferry)
    assert got is not None and got["whole"], f"{got}\n{pferry.log()}"
    assert pferry.alive()


FLOOD = """
from scapy.all import Ether, IP, UDP, Raw, sendp, conf, getmacbyip
conf.verb = 0
node = getmacbyip("198.18.0.254")
udp = bytes(UDP(sport=46000, dport=53, len=3008)) + b"f" * 1472
frames = [Ether(dst=node) / IP(src="198.18.0.1", dst="{vip}", id=3000 + i, flags="MF",
          proto=17) / Raw(udp[:1480]) for i in range({n})]
sendp(frames, iface="eth0")
print("sent", len(frames))
"""

SMALL = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
s.sendto(b"small", ("{vip}", 53))
print(s.recvfrom(2048)[0].decode())
"""


def test_a_flood_of_incomplete_fragments_is_capped(pferry):
    """max_held caps the mbufs held for reassembly: the rest of a flood of first fragments is
    dropped (frag_no_room), unfragmented traffic flows meanwhile, and the held ones time out."""
    _, before = frag_stats(pferry)
    r = pferry.client_py(FLOOD.format(vip=UDP_VIP, n=400), timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "sent 400", r.stdout + r.stderr
    frags, _ = frag_stats(pferry)
    assert frags["held"] <= MAX_HELD and frags["max_held"] == MAX_HELD, frags
    r = pferry.client_py(SMALL.format(vip=UDP_VIP))
    assert r.returncode == 0 and r.stdout.split()[0] in PODS, r.stdout + r.stderr
    deadline = time.monotonic() + 5
    while True:
        frags, drops = frag_stats(pferry)
        grown = {k: drops[k] - before[k] for k in drops if drops[k] != before[k]}
        if grown.get("frag_no_room", 0) + grown.get("frag_timeout", 0) >= 400:
            break
        assert time.monotonic() < deadline, (grown, frags)
        time.sleep(0.1)
    # Every fragment of the flood is accounted for: refused for room, or held and timed out.
    assert grown["frag_no_room"] >= 400 - MAX_HELD - 50, grown
    assert grown["frag_no_room"] + grown["frag_timeout"] == 400, grown
    assert frags["held"] == 0, frags
    [[got]] = exchange(pferry)
    assert got is not None and got["whole"], f"{got}\n{pferry.log()}"
