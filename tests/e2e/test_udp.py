"""ClusterIP over UDP: datagrams to dns-like (198.19.0.20:53) reach the pods' UDP echo on 9376
and the replies come back from the service address."""
import json

from conftest import PODS, UDP_VIP

EXCHANGE = """
import json, socket
out = []
for i in range({n}):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("198.18.0.1", 0))
    s.settimeout(2)
    msg = b"ping-%d" % i
    s.sendto(msg, ("{vip}", 53))
    try:
        data, peer = s.recvfrom(2048)
        out.append({{"sport": s.getsockname()[1], "peer": "%s:%d" % peer,
                     "data": data.decode(errors="replace"), "sent": msg.decode()}})
    except socket.timeout:
        out.append({{"sport": s.getsockname()[1], "peer": None, "data": None, "sent": msg.decode()}})
    s.close()
print(json.dumps(out))
"""


def exchange(ferry, n):
    r = ferry.client_py(EXCHANGE.format(n=n, vip=UDP_VIP), timeout=5 + 2 * n)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_udp_request_reply_from_service_address(ferry):
    before = ferry.service_stats("default/dns-like", 53)
    results = exchange(ferry, 12)
    lost = [x for x in results if x["peer"] is None]
    assert not lost, f"no reply for {lost}\n{ferry.log()}"
    names = set()
    for x in results:
        assert x["peer"] == f"{UDP_VIP}:53", x
        name, _, rest = x["data"].partition(" ")
        assert name in PODS, x
        assert rest == x["sent"], x
        names.add(name)
    # Twelve source ports over three pods: more than one pod answers.
    assert len(names) > 1, results
    after = ferry.service_stats("default/dns-like", 53)
    assert after["protocol"] == "UDP"
    assert after["new_flows"] - before["new_flows"] >= 12, after
    assert after["packets"] - before["packets"] >= 24, after


def test_udp_flow_is_sticky(ferry):
    # One socket, several datagrams: the same pod answers all of them (one flow).
    code = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect(("{UDP_VIP}", 53))
names = []
for i in range(8):
    s.send(b"x%d" % i)
    names.append(s.recv(2048).split()[0].decode())
print(" ".join(names))
"""
    r = ferry.client_py(code)
    assert r.returncode == 0, r.stderr
    names = r.stdout.split()
    assert len(names) == 8 and len(set(names)) == 1 and names[0] in PODS, names
    flows = [f for f in ferry.flows()["items"] if f["service"] == f"{UDP_VIP}:53"]
    assert flows and all(f["protocol"] == "UDP" and f["backend"].endswith(":9376")
                         for f in flows), flows
