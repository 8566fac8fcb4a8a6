"""Two dataplane workers (two lcores on CPU 1): ferryd gives each af_packet port one queue pair
per worker and the kernel's PACKET_FANOUT hash spreads packets over them. A flow's reply often
lands on the other worker, which must still find the flow (shared conntrack)."""
from conftest import POD_IPS, PODS, curl_names, endpoint_slice

# Main lcore 0 on CPU 0, workers 1 and 2 both on CPU 1: works on a 2-CPU machine.
FERRY_LCORES = "0@0,1@1,2@1"


def test_two_workers_serve_and_share_flows(ferry):
    s = ferry.stats()
    assert len(s["workers"]) == 2, s["workers"]
    names = curl_names(ferry, 40)
    assert set(names) == PODS, names
    s = ferry.stats()
    workers = s["workers"]
    assert all(w["rx_packets"] > 0 for w in workers), workers
    assert s["flows"]["foreign_hits"] > 0, s["flows"]
    assert sum(w["foreign_flow_hits"] for w in workers) == s["flows"]["foreign_hits"], s
    assert s["flows"]["created"] >= 40, s["flows"]
    # Flows made by both workers.
    lcores = {f["lcore"] for f in ferry.flows()["items"]}
    assert len(lcores) == 2, lcores
    r = ferry.ferryctl("get", "svc")
    assert r.returncode == 0


def test_two_workers_udp(ferry):
    code = """
import socket
names = set()
for i in range(12):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.connect(("198.19.0.20", 53))
    s.send(b"hi")
    data, peer = s.recvfrom(2048)
    assert peer == ("198.19.0.20", 53), peer
    names.add(data.split()[0].decode())
print(" ".join(sorted(names)))
"""
    r = ferry.client_py(code, timeout=40)
    assert r.returncode == 0, r.stderr + ferry.log()
    assert len(r.stdout.split()) > 1 and set(r.stdout.split()) <= PODS, r.stdout


# sessionAffinity: ClientIP across workers: the client's connections land on both workers
# (their SYNs hash to different queues), and all reach one pod, after its backend set grows.
def test_two_workers_client_ip_affinity(ferry):
    svc = """\
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  clusterIP: 198.19.0.80
  sessionAffinity: ClientIP
  ports: [{name: http, port: 80, targetPort: 9376}]
---
"""
    ips = list(POD_IPS.values())
    ferry.apply(svc + endpoint_slice("sticky-1", "sticky", ips[:2], port_name="http"))
    before = {w["worker"]: w["rx_packets"] for w in ferry.stats()["workers"]}
    first = curl_names(ferry, 20, url="http://198.19.0.80/")
    assert len(set(first)) == 1, first
    after = ferry.stats()["workers"]
    assert all(w["rx_packets"] > before[w["worker"]] for w in after), (before, after)
    ferry.apply(endpoint_slice("sticky-1", "sticky", ips, port_name="http"))
    again = curl_names(ferry, 20, url="http://198.19.0.80/")
    assert set(again) == set(first), (first, again)
    assert ferry.stats()["flows"]["affinity_reused"] >= 38
