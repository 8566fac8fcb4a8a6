"""ICMP through ferryd, with real clients and pods: ping of the node (answered, rate limited),
ping of a ClusterIP (not answered: a named drop), a pod kernel's port unreachable translated
back to the client (a connected UDP socket sees ECONNREFUSED), time exceeded for TTL 1 to a
service, and path MTU discovery through a narrower port towards the pods (a large POST gets
through because the client learns the MTU from ferryd's fragmentation needed)."""
import time

import pytest

from conftest import PODS, PYTHON, VIP, endpoint_slice

pytest.importorskip("scapy.all")

CLIENT_IP = "198.18.0.1"
NODE_IP = "198.18.0.254"
CLOSED_VIP = "198.19.0.30"  # UDP 5353 -> pod port 9999, where nothing listens
ECHO_RATE = 20  # per second per worker (one worker here)
POD_MTU = 1000  # [[port]] mtu of eth1, the port towards the pods

FERRY_TOML = f"[icmp]\necho_rate = {ECHO_RATE}\n"
FERRY_MANIFESTS = {
    "40-closed-udp.yaml": f"""\
apiVersion: v1
kind: Service
metadata:
  name: closed-udp
spec:
  clusterIP: {CLOSED_VIP}
  ports:
    - name: dns
      protocol: UDP
      port: 5353
      targetPort: 9999
---
""" + endpoint_slice("closed-udp-x1", "closed-udp", ["198.18.1.11"], protocol="UDP",
                     port=9999, port_name="dns"),
}


@pytest.fixture(scope="module")
def icmp_ferry(ferry):
    """The module's ferryd, restarted with eth1 (towards the pods) at a smaller MTU than the
    pods' own links, as an overlay or a narrower hop would have."""
    text = ferry.config.read_text()
    pod_port = 'address = "198.18.1.254/24"\n'
    assert pod_port in text
    ferry.stop_ferryd()
    ferry.start_ferryd(text.replace(pod_port, pod_port + f"mtu = {POD_MTU}\n"))
    assert f"port eth1: dpdk port 1, 1 RX / 1 TX queues, MTU {POD_MTU}" in ferry.log(), ferry.log()
    return ferry


REFUSED = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect(("%s", 5353))
result = "timeout"
for i in range(3):
    try:
        s.send(b"anyone?")
        s.recv(100)
        result = "answered"
    except ConnectionRefusedError:
        result = "refused"
        break
    except socket.timeout:
        pass
print(result)
""" % CLOSED_VIP


def drops(ferry, name):
    return ferry.stats()["drops"][name]


def l2(ferry, name):
    return ferry.stats()["l2"][name]


def scapy(ferry, body, timeout=20):
    """Runs scapy code in the client namespace; returns its stdout lines."""
    r = ferry.client_py("from scapy.all import *\nconf.verb = 0\n" + body, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.split("\n")


def test_ping_node_answered_and_a_flood_is_rate_limited(icmp_ferry):
    ferry = icmp_ferry
    out = scapy(ferry, f"""
r = sr1(IP(dst="{NODE_IP}")/ICMP(id=9, seq=1)/b"hello", timeout=2)
print(r[IP].src, r[ICMP].type, bytes(r[ICMP].payload).decode())
""")
    assert out[0] == f"{NODE_IP} 0 hello", out
    time.sleep(1.2)  # the bucket refills
    before = ferry.stats()
    # 200 echo requests in well under a second, on one raw socket; count the replies.
    out = scapy(ferry, f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(0.5)
t0 = time.time()
for i in range(200):
    s.sendto(bytes(ICMP(id=77, seq=i)/b"flood"), ("{NODE_IP}", 0))
sent_in = time.time() - t0
got = 0
try:
    while True:
        pkt = IP(s.recv(2048))
        if pkt.src == "{NODE_IP}" and pkt[ICMP].type == 0 and pkt[ICMP].id == 77:
            got += 1
except socket.timeout:
    pass
print(got, sent_in)
""")
    got, sent_in = int(out[0].split()[0]), float(out[0].split()[1])
    after = ferry.stats()
    limited = after["drops"]["icmp_echo_rate_limited"] - before["drops"]["icmp_echo_rate_limited"]
    answered = after["l2"]["icmp_echo_replies"] - before["l2"]["icmp_echo_replies"]
    # A full bucket (ECHO_RATE) plus what refills while the flood lasts; the rest is counted.
    assert ECHO_RATE <= got <= answered, (got, answered)
    assert answered <= ECHO_RATE * (1.5 + sent_in), (answered, sent_in)
    assert 150 <= limited <= 200 - answered, (limited, answered)


def test_ping_cluster_ip_is_not_answered_and_counted(icmp_ferry):
    ferry = icmp_ferry
    before = drops(ferry, "icmp_to_service")
    out = scapy(ferry, f"""
r = sr1(IP(dst="{VIP}")/ICMP(id=10, seq=1), timeout=1)
print(r is None)
""")
    assert out[0] == "True", out
    assert drops(ferry, "icmp_to_service") == before + 1


def test_udp_to_a_closed_pod_port_is_refused(icmp_ferry):
    """The pod's kernel answers port unreachable about what it got (client -> pod:9999); ferryd
    translates it back to what the client sent (client -> VIP:5353), so the client's
    connected socket reports the refusal."""
    ferry = icmp_ferry
    before = l2(ferry, "icmp_errors_translated")
    r = ferry.client_py(REFUSED)
    assert r.stdout.strip() == "refused", r.stdout + r.stderr + ferry.log()
    assert l2(ferry, "icmp_errors_translated") >= before + 1


def test_udp_to_a_closed_port_is_refused_for_a_masqueraded_pod(icmp_ferry):
    """A pod on the backend's subnet is masqueraded to the node address: the backend's port
    unreachable comes to the node, about the node's packet, and reaches the pod as from the
    VIP about its own packet."""
    ferry = icmp_ferry
    before = ferry.stats()
    r = ferry.netns(ferry.ns("pod2"), [PYTHON, "-c", REFUSED], timeout=15)
    assert r.stdout.strip() == "refused", r.stdout + r.stderr + ferry.log()
    after = ferry.stats()
    assert after["flows"]["snat"] > before["flows"]["snat"]
    assert after["l2"]["icmp_errors_translated"] > before["l2"]["icmp_errors_translated"]


def test_ttl_1_to_a_service_gets_time_exceeded_from_the_node(icmp_ferry):
    ferry = icmp_ferry
    before = ferry.stats()
    out = scapy(ferry, f"""
r = sr1(IP(dst="{VIP}", ttl=1)/TCP(sport=41001, dport=80, flags="S"), timeout=2)
q = r[IPerror]
print(r[IP].src, r[ICMP].type, r[ICMP].code, q.src, q.dst, q.ttl, r[TCPerror].sport,
      r[TCPerror].dport)
""")
    assert out[0].split() == [NODE_IP, "11", "0", CLIENT_IP, VIP, "1", "41001", "80"], out
    after = ferry.stats()
    assert after["l2"]["icmp_time_exceeded_sent"] == before["l2"]["icmp_time_exceeded_sent"] + 1
    assert after["drops"]["ip_ttl_exceeded"] == before["drops"]["ip_ttl_exceeded"] + 1
    assert after["flows"]["created"] == before["flows"]["created"]


def test_large_post_succeeds_through_path_mtu_discovery(icmp_ferry):
    ferry = icmp_ferry
    ferry.client(["ip", "route", "flush", "cache"])
    before = ferry.stats()
    size = 200_000
    r = ferry.client(f"head -c {size} /dev/zero | curl -sS -m 10 --data-binary @- "
                     f"-H 'Content-Type: application/octet-stream' http://{VIP}/upload",
                     timeout=15)
    assert r.returncode == 0, r.stderr + ferry.log()
    name, got = r.stdout.split()
    assert name in PODS and int(got) == size, r.stdout
    after = ferry.stats()
    assert after["l2"]["icmp_frag_needed_sent"] > before["l2"]["icmp_frag_needed_sent"]
    assert after["drops"]["frag_needed"] > before["drops"]["frag_needed"]
    # The client kernel learnt the service address's path MTU from ferryd.
    route = ferry.client(["ip", "route", "get", VIP]).stdout
    assert f"mtu {POD_MTU}" in route, route


def test_frag_needed_quotes_the_clients_own_packet(icmp_ferry):
    """The quote is the packet as the client sent it (to the VIP, before NAT), the MTU is
    the pod port's, and the source is the node's address on the client's side."""
    ferry = icmp_ferry
    out = scapy(ferry, f"""
p = IP(dst="{VIP}", flags="DF", id=4242)/TCP(sport=41002, dport=80, flags="S")/(b"x" * 1200)
r = sr1(p, timeout=2)
q = r[IPerror]
print(r[IP].src, r[ICMP].type, r[ICMP].code, r[ICMP].nexthopmtu, q.src, q.dst, q.id, q.len,
      r[TCPerror].sport, r[TCPerror].dport)
""")
    assert out[0].split() == [NODE_IP, "3", "4", str(POD_MTU), CLIENT_IP, VIP, "4242",
                              str(20 + 20 + 1200), "41002", "80"], out
