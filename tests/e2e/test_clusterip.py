"""ClusterIP over TCP: connections to the VIP are spread over the pods, the client only ever sees
the service address, and flows and per-service counters show the traffic."""
import shutil

import pytest

from conftest import POD_IPS, PODS, REDIS_VIP, VIP, curl_names, endpoint_slice


def test_requests_spread_over_all_pods(ferry):
    before = ferry.service_stats("default/my-service", 80)["new_flows"]
    names = curl_names(ferry, 30)
    assert set(names) == PODS, f"answers: {names}"
    after = ferry.service_stats("default/my-service", 80)
    assert after["new_flows"] - before >= 30, after
    assert after["packets"] > 0 and after["bytes"] > 0, after


def test_client_sees_only_the_service_address(ferry):
    r = ferry.curl(f"http://{VIP}/", "-o", "/dev/null", "-w", "%{remote_ip}:%{remote_port}")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{VIP}:80"
    # And the packets on the client's wire: every IPv4 source is the VIP or ferryd, never a pod.
    code = f"""
import subprocess, threading
from scapy.all import AsyncSniffer, IP, TCP
s = AsyncSniffer(iface="eth0", store=True,
                 lfilter=lambda p: IP in p and TCP in p and p[IP].dst == "198.18.0.1")
s.start()
import time; time.sleep(0.3)
subprocess.run(["curl", "-s", "-m", "3", "-o", "/dev/null", "http://{VIP}/"], check=True)
time.sleep(0.3)
pkts = s.stop()
print(sorted({{(p[IP].src, p[TCP].sport) for p in pkts if IP in p and TCP in p}}))
"""
    r = ferry.client_py(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"[('{VIP}', 80)]", r.stdout


def test_flows_list_service_and_backends(ferry):
    curl_names(ferry, 5)
    flows = ferry.flows()
    assert flows["total"] >= 5, flows
    mine = [f for f in flows["items"] if f["service"] == f"{VIP}:80"]
    assert len(mine) >= 5, flows
    for f in mine:
        assert f["protocol"] == "TCP", f
        assert f["client"].startswith("198.18.0.1:"), f
        ip, port = f["backend"].rsplit(":", 1)
        assert port == "9376", f
        assert ip in {"198.18.1.11", "198.18.1.12", "198.18.1.13"}, f
    # The human table shows them too.
    r = ferry.ferryctl("get", "flows")
    assert r.returncode == 0 and f"{VIP}:80" in r.stdout, r.stdout + r.stderr


def test_redis_through_clusterip(ferry):
    if not (shutil.which("redis-cli") and shutil.which("redis-server")):
        pytest.skip("redis-server/redis-cli not installed")
    r = ferry.client(["redis-cli", "-h", REDIS_VIP, "-p", "6379", "set", "greeting", "hi ferry"])
    assert r.stdout.strip() == "OK", r.stdout + r.stderr
    r = ferry.client(["redis-cli", "-h", REDIS_VIP, "-p", "6379", "get", "greeting"])
    assert r.stdout.strip() == "hi ferry", r.stdout + r.stderr
    assert ferry.service_stats("default/redis-master")["new_flows"] >= 2


def one_pod_service(name, vip, pod_ip):
    return f"""\
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  clusterIP: {vip}
  ports:
    - {{protocol: TCP, port: 80, targetPort: 9376}}
---
""" + endpoint_slice(f"{name}-1", name, [pod_ip])


# A pod reaching a Service whose backend shares its subnet: ferryd masquerades the pod to
# the node's address (198.18.1.254) so the backend's answer comes back through ferryd.
def test_pod_to_service_on_other_pod(ferry):
    ferry.apply(one_pod_service("to-pod2", "198.19.0.61", POD_IPS["my-app-2"]))
    r = ferry.netns(ferry.ns("pod1"), ["curl", "-sS", "-m", "2", "http://198.19.0.61/"])
    assert r.returncode == 0 and r.stdout.strip() == "my-app-2", (r.returncode, r.stderr)
    assert any(f["client"].startswith("198.18.1.11:") and f["backend"].startswith("198.18.1.12:")
               and f["masquerade"].startswith("198.18.1.254:") for f in ferry.flows()["items"])


# Hairpin: a pod reaching itself through its own Service (masqueraded too).
def test_pod_to_service_hairpin(ferry):
    ferry.apply(one_pod_service("to-pod1", "198.19.0.62", POD_IPS["my-app-1"]))
    r = ferry.netns(ferry.ns("pod1"), ["curl", "-sS", "-m", "2", "http://198.19.0.62/"])
    assert r.returncode == 0 and r.stdout.strip() == "my-app-1", (r.returncode, r.stderr)
