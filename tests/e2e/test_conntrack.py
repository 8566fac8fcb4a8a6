"""Flow entries follow the protocol state and expire after the configured (here: short)
timeouts; an expired flow is simply made again by the next packet."""
import time

from conftest import PODS, UDP_VIP, VIP, endpoint_slice

FERRY_CONNTRACK = {"udp_timeout": 2, "tcp_closing_timeout": 2, "tcp_syn_timeout": 2}

UDP_SAME_PORT = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.0.1", 40053))
s.settimeout(2)
s.sendto(b"hello", ("{vip}", 53))
data, peer = s.recvfrom(2048)
print(peer[0], peer[1], data.split()[0].decode())
"""


def flows_to(ferry, service):
    return [f for f in ferry.flows()["items"] if f["service"] == service]


def wait_until(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return pred()


def test_stats_show_the_table_size_and_its_memory(ferry):
    flows = ferry.stats()["flows"]
    # capacity = 65536 in the test config: 64-byte entries plus 32768 buckets of 64 bytes.
    assert flows["capacity"] == 65536, flows
    assert flows["memory_bytes"] == 65536 * 64 + 32768 * 64, flows


def test_udp_flow_expires_and_is_recreated(ferry):
    before = ferry.stats()["flows"]
    r = ferry.client_py(UDP_SAME_PORT.format(vip=UDP_VIP))
    assert r.returncode == 0, r.stderr
    ip, port, name = r.stdout.split()
    assert (ip, port) == (UDP_VIP, "53") and name in PODS
    mine = [f for f in flows_to(ferry, f"{UDP_VIP}:53") if f["client"] == "198.18.0.1:40053"]
    assert len(mine) == 1 and mine[0]["state"] == "UDP" and mine[0]["protocol"] == "UDP", mine
    # udp_timeout = 2 s; the sweep looks at every entry within 2 s after that.
    assert wait_until(lambda: not [f for f in flows_to(ferry, f"{UDP_VIP}:53")
                                   if f["client"] == "198.18.0.1:40053"], 8), \
        flows_to(ferry, f"{UDP_VIP}:53")
    after = ferry.stats()["flows"]
    assert after["expired"] > before["expired"], after
    # Same 5-tuple again: a new flow, and it is answered.
    r = ferry.client_py(UDP_SAME_PORT.format(vip=UDP_VIP))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[:2] == [UDP_VIP, "53"]
    assert ferry.stats()["flows"]["created"] > after["created"]


def test_tcp_flow_closing_then_expired(ferry):
    before = ferry.stats()["flows"]
    r = ferry.curl(f"http://{VIP}/", "--local-port", "40080")
    assert r.returncode == 0 and r.stdout.strip() in PODS, r.stderr
    mine = [f for f in flows_to(ferry, f"{VIP}:80") if f["client"] == "198.18.0.1:40080"]
    assert len(mine) == 1, mine
    # The connection is over (FIN both ways): the entry is closing, not established.
    assert mine[0]["state"] == "CLOSING", mine
    assert wait_until(lambda: not [f for f in flows_to(ferry, f"{VIP}:80")
                                   if f["client"] == "198.18.0.1:40080"], 8)
    assert ferry.stats()["flows"]["expired"] > before["expired"]


GHOST_VIP = "198.19.0.50"
GHOST = f"""\
apiVersion: v1
kind: Service
metadata:
  name: ghost
spec:
  clusterIP: {GHOST_VIP}
  ports:
    - {{protocol: TCP, port: 80, targetPort: 9376}}
---
""" + endpoint_slice("ghost-1", "ghost", ["198.18.1.99"])  # no such host on the pod network


def test_syn_to_dead_backend_expires(ferry):
    """A backend that never answers: the SYN waits for ARP and is dropped as
    neighbor_timeout, and the SYN_SENT entry goes away after tcp_syn_timeout."""
    ferry.apply(GHOST)
    before = ferry.stats()
    r = ferry.curl(f"http://{GHOST_VIP}/", "--local-port", "40090", max_time=1)
    assert r.returncode == 28, r.stderr  # timed out: nobody answers, nobody refuses
    mine = [f for f in flows_to(ferry, f"{GHOST_VIP}:80") if f["client"] == "198.18.0.1:40090"]
    assert len(mine) == 1 and mine[0]["state"] == "SYN_SENT", mine
    assert mine[0]["backend"] == "198.18.1.99:9376", mine
    assert wait_until(lambda: not flows_to(ferry, f"{GHOST_VIP}:80"), 8), \
        flows_to(ferry, f"{GHOST_VIP}:80")
    after = ferry.stats()
    assert after["flows"]["expired"] > before["flows"]["expired"]
    assert after["drops"]["neighbor_timeout"] > before["drops"]["neighbor_timeout"], after["drops"]
    assert after["l2"]["arp_requests_sent"] > before["l2"]["arp_requests_sent"], after["l2"]
