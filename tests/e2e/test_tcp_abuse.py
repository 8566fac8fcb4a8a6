"""TCP abuse: a SYN flood from spoofed sources fills no more than syn_max entries
while real connections (a curl loop, a long stream) go on; a flood of ACKs without state
makes no entries at all. Floods are sent with scapy from the client namespace, to the VIP,
from sources in 198.18.128.0/17 (no route back: the pods' answers die at ferryd)."""
import subprocess
import time

from conftest import PYTHON, VIP, curl_names, slow_stream

SYN_MAX = 256
FERRY_CONNTRACK = {"syn_max": SYN_MAX}

# Sends `count` TCP packets with `flags` to VIP:80 from spoofed sources (198.18.first.0/18),
# as fast as scapy manages: frames are built first, then "ready" is printed and a line on
# stdin starts the sending on one L2 socket; prints the count and the rate.
FLOOD = """
import random, sys, time
from scapy.all import Ether, IP, TCP, conf, getmacbyip
count, flags, first = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
mac = getmacbyip("198.18.0.254")
rnd = random.Random(first)
frames = []
for i in range(count):
    src = "198.18.%d.%d" % (first + (i >> 8) % 64, 1 + i % 254)
    p = Ether(dst=mac) / IP(src=src, dst="{vip}") / TCP(
        sport=rnd.randrange(1024, 65535), dport=80, flags=flags,
        seq=rnd.randrange(1 << 32), ack=rnd.randrange(1 << 32) if "A" in flags else 0)
    frames.append(bytes(p))
s = conf.L2socket(iface="eth0")
print("ready", flush=True)
sys.stdin.readline()
t0 = time.monotonic()
for f in frames:
    s.send(f)
dt = time.monotonic() - t0
s.close()
print(count, int(count / dt))
"""


def flood(ferry, count, flags, first):
    """Starts the flood script and waits until its frames are built."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ferry.client_ns, PYTHON, "-c", FLOOD.format(vip=VIP),
         str(count), flags, str(first)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "ready", line + proc.stderr.read()
    return proc


def go(proc):
    proc.stdin.write("go\n")
    proc.stdin.flush()


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    sent, rate = map(int, out.split())
    return sent, rate


def spoofed(flows, first):
    """Entries whose client is one of the flood's sources (198.18.first.0 and up, /18)."""
    def third(f):
        return int(f["client"].split(":")[0].split(".")[2])
    return [f for f in flows["items"] if first <= third(f) < first + 64]


def test_syn_flood_keeps_embryonic_entries_at_the_cap_and_connections_working(ferry):
    before = ferry.stats()["flows"]
    assert before["syn_max"] == SYN_MAX, before
    proc = flood(ferry, 40000, "S", 128)
    with slow_stream(ferry, seconds=8):
        go(proc)
        peak = 0
        names = []
        while proc.poll() is None:
            peak = max(peak, ferry.stats()["flows"]["embryonic"])
            names += curl_names(ferry, 3)  # new connections while the flood runs
        sent, rate = finish(proc)
        peak = max(peak, ferry.stats()["flows"]["embryonic"])
    after = ferry.stats()["flows"]
    print(f"SYN flood: {sent} SYNs at {rate}/s; embryonic peak {peak}; "
          f"syn_stateless {after['syn_stateless'] - before['syn_stateless']}")
    assert len(names) >= 3
    # The cap held (the count is exact up to moves in flight on the other worker).
    assert peak <= SYN_MAX, (peak, after)
    assert peak >= SYN_MAX * 9 // 10, (peak, after)  # the flood did reach it
    # Most of the flood went by Maglev without an entry (scapy outruns the af_packet ring,
    # so how many arrive varies with the host's load; those lost are the port's rx_missed).
    assert after["syn_stateless"] - before["syn_stateless"] >= 10 * SYN_MAX, (sent, after)
    assert after["table_full"] == before["table_full"], after
    # Nothing of the flood got past the handshake.
    flows = ferry.flows(limit=100000)
    states = {f["state"] for f in spoofed(flows, 128)}
    assert states <= {"SYN_SENT", "SYN_RECV", "RESET"}, states
    assert len(spoofed(flows, 128)) <= SYN_MAX


def test_ack_flood_makes_no_entries(ferry):
    before = ferry.stats()["flows"]
    proc = flood(ferry, 10000, "A", 192)
    go(proc)
    sent, rate = finish(proc)
    time.sleep(0.5)
    after = ferry.stats()["flows"]
    print(f"ACK flood: {sent} ACKs at {rate}/s")
    # Each went to Maglev's pod without an entry; the pods' RSTs made none either. (Not all
    # arrive: scapy outruns the af_packet ring; those are the port's rx_missed.)
    assert after["ack_stateless"] - before["ack_stateless"] >= 1000, (sent, after)
    assert after["created"] == before["created"], after
    assert not spoofed(ferry.flows(limit=100000), 192)
    assert after["stateless_replies"] > before["stateless_replies"], after  # the RSTs


# Watches one segment of the live connection from VIP:80 to the client (in the client
# namespace), then sends RSTs to VIP:80 as the client: `n` with sequence numbers far from the
# client's (off-path guesses), or one with the client's own ("right": the ACK the pod sent).
# Prints the client's port.
BLIND_RST = """
import random, sys
from scapy.all import Ether, IP, TCP, conf, getmacbyip, sniff
mode, n = sys.argv[1], int(sys.argv[2])
seen = sniff(iface="eth0", filter="tcp and src host {vip} and src port 80", count=1, timeout=10)
assert seen, "no segment of the stream seen"
seg = seen[0][TCP]
cport, mine = seg.dport, seg.ack
mac = getmacbyip("198.18.0.254")
me = seen[0][IP].dst
rnd = random.Random(n)
seqs = [mine] if mode == "right" else [
    (mine + rnd.randrange(1 << 20, (1 << 32) - (1 << 20))) % (1 << 32) for _ in range(n)]
s = conf.L2socket(iface="eth0")
for q in seqs:
    s.send(Ether(dst=mac) / IP(src=me, dst="{vip}") / TCP(sport=cport, dport=80, flags="R", seq=q))
s.close()
print(cport)
"""


def blind_rst(ferry, mode, n=1):
    r = ferry.netns(ferry.client_ns, [PYTHON, "-c", BLIND_RST.format(vip=VIP), mode, str(n)],
                    timeout=30)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1])


def entry_of(ferry, cport):
    items = [f for f in ferry.flows()["items"]
             if f["client"].endswith(f":{cport}") and f["service"] == f"{VIP}:80"]
    assert len(items) == 1, items
    return items[0]


def test_off_path_rsts_leave_a_live_connection_established(ferry):
    """Issue 16, 17: RSTs with guessed sequence numbers are dropped and counted; the entry
    stays ESTABLISHED and the stream runs to its end. One with the client's own sequence
    number still resets the entry."""
    before = ferry.stats()["drops"]["tcp_rst_out_of_window"]
    with slow_stream(ferry, seconds=4):
        cport = blind_rst(ferry, "wrong", 200)
        assert entry_of(ferry, cport)["state"] == "ESTABLISHED"
        after = ferry.stats()["drops"]["tcp_rst_out_of_window"]
        print(f"blind RSTs: 200 sent, {after - before} dropped as tcp_rst_out_of_window")
        assert after - before >= 150, (before, after)  # scapy may outrun the af_packet ring
    # The right sequence number: the entry goes to RESET and the pod drops the connection
    # (it sends nothing more: curl gives up at -m 8 with part of the stream).
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ferry.client_ns, "curl", "-sS", "-N", "-m", "8",
         f"http://{VIP}/slow/6"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        cport = blind_rst(ferry, "right")
        assert entry_of(ferry, cport)["state"] == "RESET"
        out, _ = proc.communicate(timeout=25)
        assert len(out.split()) < 25, out  # cut short (a whole stream is 30 lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
