"""Operator ops on a live ferryd, through its control socket, with real traffic: status,
get nodeports/neighbors/routes, flow filters, describe, trace (agrees with what the packet
path then does, and creates nothing), weight/drain (a drained pod keeps its open stream and
gets no new flows) and flush (the next datagram of a flushed flow is a new flow)."""
import json
import socket
import subprocess
import time

from conftest import POD_IPS, UDP_VIP, VIP, curl_names, endpoint_slice, slow_stream

NODE0 = "198.18.0.254"  # ferryd's address on the client's subnet

FERRY_MANIFESTS = {
    "40-web-np.yaml": (
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web-np\nspec:\n  type: NodePort\n"
        "  clusterIP: 198.19.0.30\n"
        "  ports: [{name: http, protocol: TCP, port: 80, targetPort: 9376, nodePort: 30080}]\n"
        "---\n" + endpoint_slice("web-np-1", "web-np", list(POD_IPS.values()), port_name="http")),
}


def op(ferry, request, ok=True):
    """One request on the control socket; the result (ok) or the error message."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(ferry.socket))
        s.sendall((json.dumps(request) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data)
    assert answer["ok"] == ok, f"{request}: {answer}"
    return answer["result"] if ok else answer["error"]


def udp_conversation(ferry, count, sport, pause=0.0):
    """count datagrams from one fixed source port to the UDP service; the pods that answered."""
    code = f"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.18.0.1", {sport}))
s.settimeout(2)
for i in range({count}):
    s.sendto(b"x%d" % i, ("{UDP_VIP}", 53))
    print(s.recvfrom(2048)[0].decode().split()[0])
    time.sleep({pause})
"""
    r = ferry.client_py(code, timeout=10 + count * (2 + pause))
    assert r.returncode == 0, r.stderr + ferry.log()
    return r.stdout.split()


def test_status(ferry):
    curl_names(ferry, 5)
    time.sleep(1.3)  # a busy-ratio sampling window
    st = op(ferry, {"op": "status"})
    assert st["version"] == "0.1.0"
    assert st["node"] and st["pid"] > 0 and st["uptime_seconds"] > 0
    assert st["config"].endswith(".toml")
    assert st["log_level"] in ("info", "debug")
    assert st["metrics"] == "127.0.0.1:9100", st
    roles = [l["role"] for l in st["lcores"]]
    assert roles[0] == "control" and roles.count("worker") >= 1
    for w in st["lcores"][1:]:
        assert 0.0 <= w["busy_ratio"] <= 1.0, w
        assert w["rx_packets"] > 0
    assert st["snapshot"]["generation"] >= 1
    assert st["snapshot"]["services"] >= 4 and st["snapshot"]["service_ports"] >= 4
    for p in st["ports"][:2]:
        assert p["link_up"] is True, p
        assert len(p["mac"]) == 17 and p["rx_queues"] >= 1 and p["tx_queues"] >= 1
        assert "/" in p["address"] and p["device"].startswith("net_af_packet")
    files = [s for s in st["sources"] if s["kind"] == "files"]
    assert files and files[0]["objects"] >= 8 and files[0]["healthy"], st["sources"]
    assert st["dns"] is None
    workers = ferry.stats()["workers"]
    for w in workers:
        assert w["poll_seconds"] > 0 and 0 <= w["busy_seconds"] <= w["poll_seconds"], w


def test_get_nodeports_neighbors_routes(ferry):
    items = op(ferry, {"op": "get", "resource": "nodeports"})["items"]
    np = [i for i in items if i["name"] == "web-np"]
    assert np == [{"protocol": "TCP", "node_port": 30080, "namespace": "default",
                   "name": "web-np", "port_name": "http", "port": 80,
                   "cluster_ip": "198.19.0.30", "external_traffic_policy": "Cluster",
                   "backends": 3}], items
    curl_names(ferry, 6)
    neigh = op(ferry, {"op": "get", "resource": "neighbors"})["items"]
    by_addr = {n["address"]: n for n in neigh}
    for ip in POD_IPS.values():
        assert by_addr[ip]["state"] == "reachable", neigh
        assert len(by_addr[ip]["mac"]) == 17 and by_addr[ip]["age_seconds"] >= 0
    assert by_addr["198.18.0.1"]["state"] == "reachable", neigh
    routes = op(ferry, {"op": "get", "resource": "routes"})["items"]
    connected = {r["destination"] for r in routes if r["kind"] == "connected"}
    assert {"198.18.0.0/24", "198.18.1.0/24"} <= connected, routes
    assert all(r["via"] == "" for r in routes if r["kind"] == "connected")
    r = op(ferry, {"op": "get", "resource": "nope"}, ok=False)
    assert "nope" in r


def test_flow_filters(ferry):
    with slow_stream(ferry, 3) as pod:
        everything = op(ferry, {"op": "get", "resource": "flows", "limit": 10000})
        assert everything["matched"] == everything["total"] >= 1
        mine = op(ferry, {"op": "get", "resource": "flows", "service": "default/my-service",
                          "state": "established", "backend": POD_IPS[pod],
                          "client": "198.18.0.1", "protocol": "tcp"})
        assert mine["matched"] >= 1, mine
        for f in mine["items"]:
            assert f["service"] == f"{VIP}:80" and f["state"] == "ESTABLISHED"
            assert f["backend"] == f"{POD_IPS[pod]}:9376" and f["client"].startswith("198.18.0.1:")
            assert f["service_name"] == "default/my-service"
        by_vip = op(ferry, {"op": "get", "resource": "flows", "service": f"{VIP}:80"})
        assert by_vip["matched"] >= mine["matched"]
        none = op(ferry, {"op": "get", "resource": "flows", "service": f"{VIP}:81"})
        assert none["matched"] == 0 and none["items"] == []
        limited = op(ferry, {"op": "get", "resource": "flows", "limit": 0})
        assert limited["items"] == [] and limited["matched"] == limited["total"]
    for bad, word in [({"state": "open"}, "state"), ({"backend": "1.2.3"}, "backend"),
                      ({"client": "1.2.3.4:99999"}, "client"), ({"protocol": "icmp"}, "protocol"),
                      ({"service": "default/nope"}, "service"), ({"limit": -1}, "limit")]:
        msg = op(ferry, {"op": "get", "resource": "flows", **bad}, ok=False)
        assert word in msg, (bad, msg)
        msg = op(ferry, {"op": "flush", **bad}, ok=False)
        assert word in msg, (bad, msg)


def test_describe(ferry):
    curl_names(ferry, 30)
    d = op(ferry, {"op": "describe", "kind": "service", "namespace": "default",
                   "name": "my-service"})
    assert d["name"] == "my-service" and d["source"] == "file" and d["type"] == "ClusterIP"
    assert len(d["ports"]) == 1
    p = d["ports"][0]
    assert p["vip"] == VIP and p["port"] == 80 and p["protocol"] == "TCP"
    assert p["target_port"] == "9376" and p["maglev_size"] >= 251
    assert p["counters"]["new_flows"] >= 30 and p["counters"]["packets"] > 0
    backends = p["backends"]
    assert {b["address"] for b in backends} == set(POD_IPS.values())
    assert sum(b["slots"] for b in backends) == p["maglev_size"]
    for b in backends:
        assert abs(b["share"] - 1 / 3) < 0.05, b
        assert b["weight"] == 1 and b["configured_weight"] == 1 and b["override"] is None
        assert b["ready"] and b["serving"] and not b["terminating"]
        assert b["active_flows"] >= 0
    # NodePort Service: ClusterIP and NodePort frontends, each its own item.
    d = op(ferry, {"op": "describe", "kind": "service", "namespace": "default", "name": "web-np"})
    assert sorted(p["vip"] for p in d["ports"]) == ["0.0.0.0", "198.19.0.30"], d["ports"]
    msg = op(ferry, {"op": "describe", "kind": "service", "namespace": "default",
                     "name": "nope"}, ok=False)
    assert msg == 'service "default/nope" not found'


def flow_count(ferry):
    return ferry.stats()["flows"]["created"]


def test_trace_matches_the_packet_path_and_creates_nothing(ferry):
    before = ferry.stats()
    # A client port no earlier connection of this module left a flow on (curl's ephemeral
    # ports may have used it: its entry then lingers in CLOSING).
    for src_port in range(41234, 41334):
        t = op(ferry, {"op": "trace", "protocol": "tcp", "source": f"198.18.0.1:{src_port}",
                       "destination": f"{VIP}:80"})
        if t["decision"] != "existing_flow":
            break
    assert t["match"] == "cluster_ip" and t["decision"] == "maglev" and t["verdict"] == "forward"
    assert t["service"]["name"] == "my-service" and t["service"]["vip"] == VIP
    assert t["flow"] is None and t["maglev"]["table_size"] >= 251
    assert t["nat"]["destination"] == t["backend"] and t["nat"]["source"] == f"198.18.0.1:{src_port}"
    after = ferry.stats()
    assert after["flows"]["created"] == before["flows"]["created"]
    assert after["flows"]["active"] == before["flows"]["active"]
    # The same tuple for real: the pod the trace named answers.
    r = ferry.curl(f"http://{VIP}/whoami", "--local-port", str(src_port), max_time=3)
    assert r.returncode == 0, r.stderr
    name = r.stdout.split()[0]
    assert POD_IPS[name] + ":9376" == t["backend"], (t, r.stdout)
    # NodePort on the node address: backends elsewhere, policy Cluster: masqueraded.
    t = op(ferry, {"op": "trace", "protocol": "tcp", "source": "198.18.0.1:40000",
                   "destination": f"{NODE0}:30080"})
    assert t["match"] == "node_port" and t["verdict"] == "forward", t
    assert t["nat"]["source"] == "198.18.1.254:*", t
    # Nothing there, a node address without a NodePort, a malformed request.
    t = op(ferry, {"op": "trace", "protocol": "udp", "source": "198.18.0.1:40000",
                   "destination": "198.19.9.9:53"})
    assert t["match"] == "none" and t["verdict"] == "drop" and t["decision"] == "not_a_service"
    t = op(ferry, {"op": "trace", "protocol": "tcp", "source": "198.18.0.1:40000",
                   "destination": f"{NODE0}:22"})
    assert t["match"] == "node_address" and t["verdict"] == "drop"
    msg = op(ferry, {"op": "trace", "protocol": "tcp", "source": "198.18.0.1",
                     "destination": f"{VIP}:80"}, ok=False)
    assert "source" in msg


def test_trace_existing_flow(ferry):
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ferry.client_ns, "curl", "-sS", "-N", "-m", "20",
         "--local-port", "42345", f"http://{VIP}/slow/2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pod = proc.stdout.readline().strip()
        t = op(ferry, {"op": "trace", "protocol": "tcp", "source": "198.18.0.1:42345",
                       "destination": f"{VIP}:80"})
        assert t["decision"] == "existing_flow" and t["flow"]["state"] == "ESTABLISHED", t
        assert t["backend"] == f"{POD_IPS[pod]}:9376"
        proc.communicate(timeout=25)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_flush_udp_flow_makes_a_new_flow(ferry):
    sport = 45678
    assert len(set(udp_conversation(ferry, 3, sport))) == 1  # one flow, one pod
    flt = {"client": f"198.18.0.1:{sport}", "service": f"{UDP_VIP}:53"}
    listed = op(ferry, {"op": "get", "resource": "flows", **flt})
    assert listed["matched"] == 1, listed
    created = flow_count(ferry)
    assert op(ferry, {"op": "flush", **flt}) == {"flushed": 1}
    assert op(ferry, {"op": "get", "resource": "flows", **flt})["matched"] == 0
    assert op(ferry, {"op": "flush", **flt}) == {"flushed": 0}  # already gone
    udp_conversation(ferry, 1, sport)
    assert flow_count(ferry) == created + 1  # the next datagram made a new flow
    assert op(ferry, {"op": "get", "resource": "flows", **flt})["matched"] == 1
    # No filter but the protocol: every UDP flow goes, TCP ones stay.
    tcp_before = op(ferry, {"op": "get", "resource": "flows", "protocol": "tcp"})["matched"]
    assert op(ferry, {"op": "flush", "protocol": "udp"})["flushed"] >= 1
    assert op(ferry, {"op": "get", "resource": "flows", "protocol": "udp"})["matched"] == 0
    assert op(ferry, {"op": "get", "resource": "flows", "protocol": "tcp"})["matched"] == tcp_before
    # The flushed entries go back to their workers on the next sweep pass (2 s); new flows
    # keep being made.
    time.sleep(2.5)
    assert len(udp_conversation(ferry, 2, sport + 1)) == 2


def endpoint_detail(ferry, ip):
    items = op(ferry, {"op": "get", "resource": "endpoints", "namespace": "default"})["items"]
    svc = next(i for i in items if i["name"] == "my-service")
    return next(d for d in svc["details"] if d["address"] == ip)


def test_drain_keeps_established_stream_and_gets_no_new_flows(ferry):
    with slow_stream(ferry, 4) as pod:
        ip = POD_IPS[pod]
        r = op(ferry, {"op": "weight", "namespace": "default", "name": "my-service",
                       "address": ip, "weight": 0})
        assert r == {"namespace": "default", "name": "my-service", "address": ip, "weight": 0,
                     "previous": None, "ports": 1}
        d = endpoint_detail(ferry, ip)
        assert d["weight"] == 0 and d["drained"] is True
        names = curl_names(ferry, 20)
        assert pod not in names, names
    # The override survives an endpoint update (a re-applied slice).
    ferry.apply(endpoint_slice("my-service-abc12", "my-service", list(POD_IPS.values())))
    assert pod not in curl_names(ferry, 15)
    desc = op(ferry, {"op": "describe", "namespace": "default", "name": "my-service"})
    b = next(b for b in desc["ports"][0]["backends"] if b["address"] == ip)
    assert b["weight"] == 0 and b["override"] == 0 and b["configured_weight"] == 1
    assert b["slots"] == 0
    r = op(ferry, {"op": "weight", "namespace": "default", "name": "my-service",
                   "address": ip, "weight": None})
    assert r["previous"] == 0 and r["weight"] is None
    assert endpoint_detail(ferry, ip)["drained"] is False
    assert pod in curl_names(ferry, 30)


def test_weight_refusals(ferry):
    base = {"op": "weight", "namespace": "default", "name": "my-service"}
    assert "not found" in op(ferry, {**base, "name": "nope", "address": "198.18.1.11",
                                     "weight": 1}, ok=False)
    assert "not an endpoint" in op(ferry, {**base, "address": "198.18.1.99", "weight": 1},
                                   ok=False)
    assert "weight" in op(ferry, {**base, "address": "198.18.1.11", "weight": 1001}, ok=False)
    assert "address" in op(ferry, {**base, "address": "x", "weight": 1}, ok=False)
