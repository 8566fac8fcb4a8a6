"""The README's demo command runs end to end and shows what it promises."""
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_demo_script():
    r = subprocess.run([os.path.join(ROOT, "scripts", "demo.sh")], capture_output=True,
                       text=True, timeout=480, cwd=ROOT)
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]
    answered = re.findall(r"answered by: (\S+)", out)
    # 9 connections before the endpoint change, 6 after.
    assert len(answered) == 15, out
    assert set(answered[:9]) <= {"my-app-1", "my-app-2", "my-app-3"}
    assert len(set(answered[:9])) >= 2, answered
    assert "my-app-3" not in answered[9:], answered
    assert "hello through ferry" in out
    assert "198.19.0.10:80" in out and "198.19.0.11:6379" in out  # the flows table
    assert "endpointslice/my-service-abc12 configured" in out
    # Metrics: the 9 + 6 connections to my-service, the one apply timed from the socket.
    assert ('ferry_service_new_flows_total{service="default/my-service",vip="198.19.0.10",'
            'port="80",protocol="TCP"} 15') in out, out
    assert 'ferry_change_to_dataplane_seconds_count{source="socket"} 1' in out
    # Operating it: status, Maglev's shares, a trace, and a drained pod that gets no new flow.
    assert re.search(r"Lcores:\n +LCORE +ROLE", out), out
    assert re.search(r"198\.18\.1\.12:9376 +1 +ready,serving +\S+ +\d+ +\d+\.\d%", out), out
    assert re.search(r"Verdict: +forward", out), out
    drained = re.findall(r"while drained: (\S+)", out)
    assert drained == ["my-app-1"] * 4, drained
    # Edge hardening: ping of the node answered, of a ClusterIP not; a filter rule's hit.
    assert "ping 198.18.0.254 (the node) -> answered" in out, out
    assert "ping 198.19.0.10 (a ClusterIP) -> no answer" in out, out
    assert "curl http://198.19.0.10/admin -> no answer (filtered)" in out, out
    assert re.search(r"curl http://198\.19\.0\.10/ -> my-app-\d", out), out
    assert re.search(r"block-admin +drop +.+? +64 +[1-9]\d* +socket ", out), out
    # Service discovery: kubelet's variables, a command run with them, and DNS names.
    assert "REDIS_MASTER_SERVICE_HOST=198.19.0.11" in out
    assert "REDIS_MASTER_PORT=tcp://198.19.0.11:6379" in out
    assert out.count("hello through ferry") >= 2
    assert re.search(r"dig my-service.default.svc.cluster.local A +-> 198.19.0.10", out), out
    assert "-> my-service.default.svc.cluster.local." in out
    assert "-> status: NXDOMAIN" in out
    # NodePort on the node's address: answered by a pod that saw ferryd's address (SNAT).
    node_port = re.findall(r"31002/whoami -> (\S+) (\S+)", out)
    assert len(node_port) == 4, out
    assert all(peer.startswith("198.18.1.254:") for _, peer in node_port), node_port
    # LoadBalancer from the pool, sticky for this client.
    lb = re.findall(r"curl http://(198\.18\.0\.24\d)/ -> (\S+)", out)
    assert len(lb) == 4 and len({pod for _, pod in lb}) == 1, out
    # The demo cleans up after itself.
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "ferry-demo" not in ns
