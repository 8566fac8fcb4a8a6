"""Kubernetes Service types and policies through ferryd, with real clients and pods:
NodePort on the node's addresses, LoadBalancer addresses announced on the client's subnet
and filtered by loadBalancerSourceRanges, externalIPs, ClientIP session affinity,
externalTrafficPolicy Local/Cluster (does the pod see the client?), standalone selector mode
following pods, service deletion draining, and a real `kubectl get -o yaml` List."""
import json
import subprocess
import time
from pathlib import Path

from conftest import POD_IPS, endpoint_slice

NODE0 = "198.18.0.254"  # ferryd's address on the client's subnet
NODE1 = "198.18.1.254"  # ferryd's address on the pods' subnet
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def service(name, spec_lines, ports="[{name: http, protocol: TCP, port: 80, targetPort: 9376}]"):
    body = "".join(f"  {line}\n" for line in spec_lines)
    return (f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{body}"
            f"  ports: {ports}\n")


def slice_on_nodes(name, service_name, pods):
    """EndpointSlice with (ip, nodeName) pairs, port named http."""
    eps = "".join(f"- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n  nodeName: {node}\n"
                  for ip, node in pods)
    return ("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n"
            f"  name: {name}\n  labels: {{kubernetes.io/service-name: {service_name}}}\n"
            "addressType: IPv4\nports: [{name: http, protocol: TCP, port: 9376}]\n"
            f"endpoints:\n{eps}")


def get_service(ferry, name, ns="default"):
    r = ferry.ferryctl("get", "services", "-n", ns, "-o", "json")
    assert r.returncode == 0, r.stderr
    for item in json.loads(r.stdout)["items"]:
        if item["name"] == name:
            return item
    raise AssertionError(f"no service {name}: {r.stdout}")


def whoami(ferry, url, source=None, ok=True):
    """(pod name, address the pod saw) of one request from the client namespace."""
    opts = ["--interface", source] if source else []
    r = ferry.curl(url + "/whoami", *opts, max_time=3)
    if not ok:
        return r
    assert r.returncode == 0, f"{url} from {source}: {r.stderr}\n{ferry.log()}"
    name, peer = r.stdout.split()
    return name, peer.rsplit(":", 1)[0]


def add_client_addresses(ferry, count):
    """More clients: extra addresses 198.18.0.2.. on the client's interface."""
    addrs = [f"198.18.0.{i}" for i in range(2, 2 + count)]
    for a in addrs:
        ferry.client(["ip", "addr", "replace", f"{a}/24", "dev", "eth0"], check=True)
    return addrs


def drops(ferry, reason):
    return ferry.stats()["drops"].get(reason, 0)


def test_node_port_on_the_node_address_snats_to_a_remote_pod(ferry):
    # Endpoints on another node, policy Cluster: the pod sees ferryd's address, not the client.
    ferry.apply(service("web-np", ["type: NodePort"],
                        "[{name: http, protocol: TCP, port: 80, targetPort: 9376, nodePort: 30080}]")
                + "---\n" + slice_on_nodes("web-np-1", "web-np",
                                           [(ip, "other-node") for ip in POD_IPS.values()]))
    # 30 requests: 12 missed one of the three pods 2.3% of the time.
    seen = {whoami(ferry, f"http://{NODE0}:30080") for _ in range(30)}
    assert {name for name, _ in seen} == set(POD_IPS), seen
    assert {peer for _, peer in seen} == {NODE1}, seen
    assert ferry.stats()["flows"]["snat"] >= 30
    svc = get_service(ferry, "web-np")
    assert svc["type"] == "NodePort" and svc["ports"][0]["node_port"] == 30080
    r = ferry.ferryctl("get", "svc")
    assert "80:30080/TCP" in r.stdout, r.stdout


def test_node_port_is_allocated_from_the_range(ferry):
    ferry.apply(service("web-alloc", ["type: NodePort"]) + "---\n"
                + slice_on_nodes("web-alloc-1", "web-alloc", [(POD_IPS["my-app-2"], "x")]))
    node_port = get_service(ferry, "web-alloc")["ports"][0]["node_port"]
    assert 30000 <= node_port <= 32767, node_port
    assert whoami(ferry, f"http://{NODE0}:{node_port}")[0] == "my-app-2"
    # Re-applying without the nodePort keeps it.
    ferry.apply(service("web-alloc", ["type: NodePort"]))
    assert get_service(ferry, "web-alloc")["ports"][0]["node_port"] == node_port


def test_policy_local_keeps_the_client_address(ferry):
    # ferryd's node name is the test prefix: endpoints with that nodeName are local.
    ferry.apply(service("web-local", ["type: NodePort", "externalTrafficPolicy: Local"],
                        "[{name: http, protocol: TCP, port: 80, targetPort: 9376, nodePort: 30081}]")
                + "---\n" + slice_on_nodes("web-local-1", "web-local",
                                           [(POD_IPS["my-app-1"], ferry.prefix),
                                            (POD_IPS["my-app-2"], "other-node")]))
    seen = {whoami(ferry, f"http://{NODE0}:30081") for _ in range(8)}
    assert seen == {("my-app-1", "198.18.0.1")}, seen
    # A local endpoint under policy Cluster is not SNATed either.
    ferry.apply(service("web-mixed", ["type: NodePort"],
                        "[{name: http, protocol: TCP, port: 80, targetPort: 9376, nodePort: 30082}]")
                + "---\n" + slice_on_nodes("web-mixed-1", "web-mixed",
                                           [(POD_IPS["my-app-1"], ferry.prefix),
                                            (POD_IPS["my-app-2"], "other-node")]))
    seen = {whoami(ferry, f"http://{NODE0}:30082") for _ in range(16)}
    assert seen == {("my-app-1", "198.18.0.1"), ("my-app-2", NODE1)}, seen


def test_policy_local_without_local_endpoints_drops(ferry):
    ferry.apply(service("web-nolocal", ["type: NodePort", "externalTrafficPolicy: Local"],
                        "[{name: http, protocol: TCP, port: 80, targetPort: 9376, nodePort: 30083}]")
                + "---\n" + slice_on_nodes("web-nolocal-1", "web-nolocal",
                                           [(POD_IPS["my-app-3"], "other-node")]))
    before = drops(ferry, "no_local_endpoints")
    r = ferry.curl(f"http://{NODE0}:30083/", max_time=2)
    assert r.returncode == 28, (r.returncode, r.stderr)  # timed out: dropped, not refused
    assert drops(ferry, "no_local_endpoints") > before
    # Its ClusterIP (internalTrafficPolicy Cluster) still works.
    cip = get_service(ferry, "web-nolocal")["cluster_ip"]
    assert whoami(ferry, f"http://{cip}")[0] == "my-app-3"


def test_load_balancer_address_from_the_pool_reached_from_outside(ferry):
    ferry.apply(service("shop-lb", ["type: LoadBalancer", "externalTrafficPolicy: Local"])
                + "---\n" + slice_on_nodes("shop-lb-1", "shop-lb",
                                           [(POD_IPS["my-app-3"], ferry.prefix)]))
    svc = get_service(ferry, "shop-lb")
    assert svc["load_balancer_allocated"] and len(svc["load_balancer"]) == 1, svc
    lb = svc["load_balancer"][0]
    assert lb.startswith("198.18.0.24"), lb  # from 198.18.0.240/29
    # The client has no route for it: it ARPs on its own subnet and ferryd answers.
    assert whoami(ferry, f"http://{lb}") == ("my-app-3", "198.18.0.1")
    r = ferry.client(["ip", "neigh", "show", lb])
    assert "lladdr" in r.stdout, r.stdout
    r = ferry.ferryctl("get", "svc", "-o", "wide")
    assert lb in r.stdout, r.stdout


def test_load_balancer_source_ranges_filter_the_lb_address_only(ferry):
    (other,) = add_client_addresses(ferry, 1)
    ferry.apply(service("ranged", ["type: LoadBalancer", "loadBalancerIP: 198.18.0.247",
                                   "loadBalancerSourceRanges: [198.18.0.1/32]"],
                        "[{name: http, protocol: TCP, port: 80, targetPort: 9376, nodePort: 30084}]")
                + "---\n" + slice_on_nodes("ranged-1", "ranged", [(POD_IPS["my-app-2"], "x")]))
    # Asked for in the node's pool (198.18.0.240/29): announced like an allocated one.
    assert whoami(ferry, "http://198.18.0.247", source="198.18.0.1")[0] == "my-app-2"
    before = drops(ferry, "source_denied")
    r = whoami(ferry, "http://198.18.0.247", source=other, ok=False)
    assert r.returncode == 28, (r.returncode, r.stdout, r.stderr)
    assert drops(ferry, "source_denied") > before
    # The NodePort is not filtered (kube-proxy does the same).
    assert whoami(ferry, f"http://{NODE0}:30084", source=other)[0] == "my-app-2"


def test_external_ip(ferry):
    ferry.apply(service("ext", ["externalIPs: [198.18.0.77]"]) + "---\n"
                + slice_on_nodes("ext-1", "ext", [(POD_IPS["my-app-1"], "x")]))
    # externalIPs are the administrator's to route (ferryd does not answer ARP for them: some
    # other host may own the address), here with a host route on the client.
    r = ferry.client_py("from scapy.all import *; conf.verb=0; "
                        "print(srp1(Ether(dst='ff:ff:ff:ff:ff:ff')/ARP(pdst='198.18.0.77'), "
                        "iface='eth0', timeout=1) is None)")
    assert r.stdout.strip() == "True", r.stdout + r.stderr
    ferry.client(["ip", "route", "replace", "198.18.0.77/32", "via", NODE0], check=True)
    assert whoami(ferry, "http://198.18.0.77")[0] == "my-app-1"
    # Another Service claiming the same address:port/protocol is refused, both named.
    r = ferry.ferryctl("apply", "-f", "-", input=service("ext-thief", ["externalIPs: [198.18.0.77]"]))
    assert r.returncode == 1
    assert "Service default/ext-thief: spec.externalIPs[0]: 198.18.0.77:80/TCP is already used " \
           "by Service default/ext" in r.stderr, r.stderr


def test_client_ip_affinity(ferry):
    ferry.apply(service("sticky", ["clusterIP: 198.19.0.70", "sessionAffinity: ClientIP",
                                   "sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}"])
                + "---\n" + endpoint_slice("sticky-1", "sticky", list(POD_IPS.values()),
                                           port_name="http"))
    script = "for i in $(seq 20); do curl -sS -m 3 http://198.19.0.70/; done"
    r = ferry.client(script, timeout=60)
    names = r.stdout.split()
    assert len(names) == 20 and len(set(names)) == 1, (names, r.stderr)
    # Other clients are spread over the pods.
    others = add_client_addresses(ferry, 8)
    picks = {}
    for a in others:
        got = {whoami(ferry, "http://198.19.0.70", source=a)[0] for _ in range(3)}
        assert len(got) == 1, (a, got)  # each sticks too
        picks[a] = got.pop()
    assert len(set(picks.values())) >= 2, picks
    assert ferry.stats()["flows"]["affinity_reused"] >= 19


def pod(name, ip, ready=True, labels="app: replaced"):
    return (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\n"
            "spec:\n  containers:\n  - name: web\n    ports: [{name: http, containerPort: 9376}]\n"
            f"status:\n  podIP: {ip}\n  conditions: [{{type: Ready, status: \"{ready}\"}}]\n")


def test_standalone_selector_follows_a_replaced_pod(ferry):
    # No EndpointSlices: ferry computes the endpoints from Pods, as the endpoints controller
    # would (targetPort by container port name).
    svc = service("replaced", ["clusterIP: 198.19.0.71", "selector: {app: replaced}"],
                  "[{name: http, protocol: TCP, port: 80, targetPort: http}]")
    ferry.apply(svc + "---\n" + pod("replaced-a", POD_IPS["my-app-1"]))
    assert whoami(ferry, "http://198.19.0.71")[0] == "my-app-1"
    # The pod dies and comes back with a new address, same labels.
    r = ferry.ferryctl("delete", "-f", "-", input=pod("replaced-a", POD_IPS["my-app-1"]))
    assert r.returncode == 0, r.stderr
    ferry.apply(pod("replaced-b", POD_IPS["my-app-2"]))
    assert {whoami(ferry, "http://198.19.0.71")[0] for _ in range(5)} == {"my-app-2"}
    # Not ready: no endpoint left, so the client is refused at once.
    ferry.apply(pod("replaced-b", POD_IPS["my-app-2"], ready=False))
    r = ferry.curl("http://198.19.0.71/", max_time=2)
    assert r.returncode == 7, (r.returncode, r.stderr)  # connection refused (ICMP)
    # A relabelled pod leaves the Service; one that gains the label joins it.
    ferry.apply(pod("replaced-b", POD_IPS["my-app-2"], labels="app: other") + "---\n"
                + pod("replaced-c", POD_IPS["my-app-3"]))
    assert whoami(ferry, "http://198.19.0.71")[0] == "my-app-3"


def test_deleted_service_drains_existing_flows(ferry):
    svc = service("drain-me", ["clusterIP: 198.19.0.72"])
    ferry.apply(svc + "---\n" + endpoint_slice("drain-me-1", "drain-me", [POD_IPS["my-app-1"]],
                                               port_name="http"))
    proc = subprocess.Popen(["ip", "netns", "exec", ferry.client_ns, "curl", "-sS", "-m", "10",
                             "http://198.19.0.72/slow/3"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    r = ferry.ferryctl("delete", "-f", "-", input=svc)
    assert r.returncode == 0, r.stderr
    # New connections stop at once...
    r = ferry.curl("http://198.19.0.72/", max_time=2)
    assert r.returncode != 0
    # ...while the established one runs to its end.
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert out.count("my-app-1") >= 12, out


def test_kubectl_get_output_applies_and_forwards(ferry):
    text = (FIXTURES / "kubectl-get-svc-eps-pods.yaml").read_text()
    r = ferry.ferryctl("apply", "-f", "-", input=text)
    assert r.returncode == 0, r.stderr
    assert "service/frontend created" in r.stdout and "pod/frontend-7d9c6b5f4-x2k8p created" \
        in r.stdout, r.stdout
    # NodePort 30500 from the manifest; endpoints from the EndpointSlice, not the Pod.
    assert {whoami(ferry, f"http://{NODE0}:30500")[0] for _ in range(20)} == \
        {"my-app-1", "my-app-2"}
    assert whoami(ferry, "http://198.19.0.51:8080")[0] == "my-app-3"
    svc = get_service(ferry, "cart", "shop")
    assert svc["session_affinity"] == "ClientIP" and svc["affinity_timeout_seconds"] == 10800
    # Applying the same output again changes nothing.
    r = ferry.ferryctl("apply", "-f", "-", input=text)
    assert r.returncode == 0 and "created" not in r.stdout and "configured" not in r.stdout, r.stdout


def test_get_endpoints_shows_conditions_and_node(ferry):
    ferry.apply(service("conds", ["clusterIP: 198.19.0.73"]) + "---\n" + """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: conds-1
  labels: {kubernetes.io/service-name: conds}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 9376}]
endpoints:
- addresses: ["198.18.1.11"]
  conditions: {ready: true}
  nodeName: node-a
- addresses: ["198.18.1.12"]
  conditions: {ready: false, serving: true, terminating: true}
  nodeName: node-b
""")
    r = ferry.ferryctl("get", "endpoints", "-n", "default", "-o", "json")
    item = next(i for i in json.loads(r.stdout)["items"] if i["name"] == "conds")
    by_ip = {d["address"]: d for d in item["details"]}
    assert by_ip["198.18.1.11"]["ready"] and by_ip["198.18.1.11"]["node"] == "node-a"
    assert by_ip["198.18.1.12"]["terminating"] and not by_ip["198.18.1.12"]["ready"]
    assert by_ip["198.18.1.12"]["serving"] and by_ip["198.18.1.12"]["node"] == "node-b"
    # The ready one takes all new traffic; the terminating one only drains.
    assert {whoami(ferry, "http://198.19.0.73")[0] for _ in range(6)} == {"my-app-1"}
    r = ferry.ferryctl("get", "endpoints")
    assert "node-b" in r.stdout, r.stdout


def test_a_client_port_reused_for_another_service_of_the_same_pod(ferry):
    # Two ClusterIPs of one pod, reached from one client port in turn. Both flows would
    # have the same reply key (pod:9376 -> client:port): the second keeps the client's
    # address with another port, and each connection is answered by its own service.
    ferry.apply(service("twin-a", ["clusterIP: 198.19.0.81"]) + "---\n"
                + service("twin-b", ["clusterIP: 198.19.0.82"]) + "---\n"
                + slice_on_nodes("twin-a-1", "twin-a", [(POD_IPS["my-app-1"], "node-a")])
                + "---\n"
                + slice_on_nodes("twin-b-1", "twin-b", [(POD_IPS["my-app-1"], "node-a")]))
    before = ferry.stats()["flows"]["port_remapped"]
    # curl cannot bind a port its last connection left in TIME_WAIT: a client with
    # SO_REUSEADDR, as a busy proxy would reuse ports.
    code = """
import socket
for vip in ("198.19.0.81", "198.19.0.82", "198.19.0.81"):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(3)
    s.bind(("198.18.0.1", 41234))
    s.connect((vip, 80))
    s.sendall(b"GET /whoami HTTP/1.0\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    s.close()
    print(vip, data.split(b"\\r\\n\\r\\n", 1)[1].decode().strip().replace("\\n", " "))
"""
    r = ferry.client_py(code)
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{ferry.log()}"
    answers = [line.split() for line in r.stdout.splitlines()]
    assert [a[:2] for a in answers] == [["198.19.0.81", "my-app-1"], ["198.19.0.82", "my-app-1"],
                                       ["198.19.0.81", "my-app-1"]], r.stdout
    peers = [a[2] for a in answers]
    assert peers[0] == "198.18.0.1:41234", peers
    assert peers[1].startswith("198.18.0.1:") and peers[1] != peers[0], peers
    assert ferry.stats()["flows"]["port_remapped"] >= before + 1
