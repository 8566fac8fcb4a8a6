"""ferryd following a Kubernetes API server (tests/e2e/kubeapi.py, a faithful fake: HTTPS
with a test CA, bearer tokens, paged lists, chunked watches, BOOKMARKs, 410 both ways).

ferryd runs in-cluster style (KUBERNETES_SERVICE_HOST/_PORT and a service account
directory) and reaches the API server over a management veth, as a real node's kernel
network would, while DPDK owns the data ports. Services created, scaled and deleted on the
server are checked with real clients through ferryd; so are a killed and restarted server,
a 410 mid-stream, and a token rotation, with an established connection kept across them.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kubeapi  # noqa: E402
from conftest import PYTHON, Ferry, _preflight, config_toml, run, unique_prefix  # noqa: E402

API_HOST = "198.18.254.1"  # the API server, on the management link (root namespace side)
MGMT_NODE = "198.18.254.2"  # ferryd's kernel side of that link
VIP = "198.19.0.10"
PODS = {"my-app-1": "198.18.1.11", "my-app-2": "198.18.1.12", "my-app-3": "198.18.1.13"}
REDIS_VIP, REDIS_POD = "198.19.0.11", "198.18.1.21"


def web_service():
    return kubeapi.service("web", cluster_ip=VIP, selector={"app": "web"},
                           ports=[{"name": "http", "port": 80, "targetPort": 9376,
                                   "protocol": "TCP"}])


def web_slice(pods, name="web-abcde"):
    return kubeapi.endpoint_slice(
        "web", name=name, endpoints=[{"ip": PODS[p], "node": "node-b", "pod": p} for p in pods],
        ports=[{"name": "http", "port": 9376, "protocol": "TCP"}])


def redis_objects():
    svc = kubeapi.service("redis-master", cluster_ip=REDIS_VIP,
                          ports=[{"name": "", "port": 6379, "targetPort": 6379,
                                  "protocol": "TCP"}])
    eps = kubeapi.endpoint_slice("redis-master", name="redis-master-xyzab",
                                 endpoints=[{"ip": REDIS_POD, "node": "node-b"}],
                                 ports=[{"name": "", "port": 6379, "protocol": "TCP"}])
    return svc, eps


class Cluster:
    """The fake API server, the service account files ferryd reads, and ferryd."""

    def __init__(self, ferry, api, sa_dir):
        self.ferry, self.api, self.sa_dir = ferry, api, sa_dir

    def source(self, kind):
        stats = self.ferry.stats()
        for r in stats["sources"]["kubernetes"]["resources"]:
            if r["kind"] == kind:
                return r
        raise AssertionError(f"no {kind} source in {stats['sources']}")

    def wait(self, what, check, timeout=10):
        deadline = time.time() + timeout
        while True:
            value = check()
            if value:
                return value
            assert time.time() < deadline, f"timed out waiting for {what}\n{self.ferry.log()}"
            time.sleep(0.05)

    def names(self, n=12, url=f"http://{VIP}/"):
        r = self.ferry.client(f"for i in $(seq {n}); do curl -sS -m 2 {url}; echo; done",
                              timeout=60)
        return {line.strip() for line in r.stdout.splitlines() if line.strip()}

    def serves(self, pods, timeout=20):
        return self.wait(f"web served by {pods}", lambda: self.names() == set(pods), timeout)

    def services(self):
        r = self.ferry.ferryctl("get", "services", "-A", "-o", "json")
        assert r.returncode == 0, r.stderr
        return {f"{i['namespace']}/{i['name']}": i for i in json.loads(r.stdout)["items"]}

    def generation(self):
        return self.ferry.stats()["snapshot"]["generation"]


def mgmt_link(prefix, node_ns, up):
    host_if = f"{prefix}-api"
    if not up:
        run(["ip", "link", "del", host_if])
        return
    for cmd in (["ip", "link", "add", host_if, "type", "veth", "peer", "name", "api0",
                 "netns", node_ns],
                ["ip", "addr", "add", f"{API_HOST}/30", "dev", host_if],
                ["ip", "link", "set", host_if, "up"],
                ["ip", "netns", "exec", node_ns, "ip", "addr", "add", f"{MGMT_NODE}/30",
                 "dev", "api0"],
                ["ip", "netns", "exec", node_ns, "ip", "link", "set", "api0", "up"],
                ["ip", "netns", "exec", node_ns, "ip", "link", "set", "lo", "up"]):
        r = run(cmd)
        assert r.returncode == 0, f"{cmd}: {r.stderr}"


@pytest.fixture(scope="module")
def cluster():
    _preflight()
    tmp = tempfile.mkdtemp(prefix="ferry-e2e-")
    f = Ferry(unique_prefix(), tmp)
    api = None
    try:
        f.write_manifests({})
        f.topology_up()
        f.start_pods()
        mgmt_link(f.prefix, f.node_ns, True)
        pki = kubeapi.make_pki(Path(tmp) / "pki", ips=(API_HOST,))
        api = kubeapi.FakeKubeAPI(pki, token="token-one", host=API_HOST, bookmark_interval=0.5)
        api.start()
        sa = Path(tmp) / "serviceaccount"
        sa.mkdir()
        (sa / "token").write_text("token-one\n")
        shutil.copy(pki["ca_crt"], sa / "ca.crt")
        # This node and its zone, the seed's services: all from the API.
        api.apply(kubeapi.node(f.prefix, addresses=[("InternalIP", "198.18.0.254")],
                               zone="zone-a"))
        api.apply(web_service())
        api.apply(web_slice(["my-app-1", "my-app-2"]))
        for obj in redis_objects():
            api.apply(obj)
        os.environ["KUBERNETES_SERVICE_HOST"] = API_HOST
        os.environ["KUBERNETES_SERVICE_PORT"] = str(api.port)
        f.start_ferryd(config_toml(
            f.prefix, tmp, f.manifests,
            extra=f'[kubernetes]\nin_cluster = true\nservice_account_dir = "{sa}"\n'
                  "watch_timeout = 30\npage_size = 1\n"
                  # The tests fail the server one after another: a short maximum keeps each
                  # recovery within seconds (client-go's 30 s would make them wait up to 60).
                  "backoff_max_ms = 4000\n"))
        c = Cluster(f, api, sa)
        for kind in ("Service", "EndpointSlice", "Node"):
            c.wait(f"{kind} synced", lambda kind=kind: c.source(kind)["synced"])
        yield c
        assert f.alive(), f"ferryd is not running after the tests\n{f.log()}"
    finally:
        os.environ.pop("KUBERNETES_SERVICE_HOST", None)
        os.environ.pop("KUBERNETES_SERVICE_PORT", None)
        if api:
            api.stop()
        f.teardown()
        mgmt_link(f.prefix, f.node_ns, False)
        shutil.rmtree(tmp, ignore_errors=True)


class RedisSession:
    """One TCP connection to redis-master's VIP from the client namespace, kept open across
    a test: ping() sends PING on it and returns the answer."""

    def __init__(self, ferry):
        code = (
            "import socket, sys\n"
            f"s = socket.create_connection(('{REDIS_VIP}', 6379), timeout=5)\n"
            "for line in sys.stdin:\n"
            "    s.sendall(b'PING\\r\\n')\n"
            "    print(s.recv(64).decode().strip(), flush=True)\n")
        self.proc = subprocess.Popen(["ip", "netns", "exec", ferry.client_ns, PYTHON, "-c", code],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ping(self):
        self.proc.stdin.write("x\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=5)


@pytest.fixture
def redis_session(cluster):
    s = RedisSession(cluster.ferry)
    assert s.ping() == "+PONG"
    yield s
    s.close()


def test_lists_and_watches_as_kube_proxy_does(cluster):
    reqs = [r for r in cluster.api.requests if r["authorized"]]
    lists = [r for r in reqs if "watch" not in r["query"]]
    watches = [r for r in reqs if r["query"].get("watch") in ("1", "true")]
    for path in ("/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices",
                 "/api/v1/nodes"):
        assert any(r["path"] == path and r["query"].get("limit") == "1" for r in lists), path
        assert any(r["path"] == path and r["query"].get("allowWatchBookmarks") == "true"
                   and r["query"].get("resourceVersion") for r in watches), path
    for r in lists + watches:
        if r["path"] != "/api/v1/nodes":
            assert r["query"]["labelSelector"] == "!service.kubernetes.io/service-proxy-name"
        else:
            assert r["query"]["fieldSelector"] == f"metadata.name={cluster.ferry.prefix}"
    # Two Services and two slices at page_size 1: the lists were paged.
    assert any(r["query"].get("continue") for r in lists
               if r["path"] == "/apis/discovery.k8s.io/v1/endpointslices"), lists
    assert set(cluster.services()) >= {"default/web", "default/redis-master"}
    cluster.serves(["my-app-1", "my-app-2"])


def test_services_created_scaled_and_deleted_on_the_server_are_forwarded(cluster):
    cluster.api.apply(web_slice(["my-app-1", "my-app-2", "my-app-3"]))
    cluster.serves(["my-app-1", "my-app-2", "my-app-3"])
    cluster.api.apply(web_slice(["my-app-3"]))
    cluster.serves(["my-app-3"])

    # A new Service with its slice, then deleted: forwarding follows both.
    extra = kubeapi.service("extra", cluster_ip="198.19.0.12",
                            ports=[{"name": "http", "port": 80, "targetPort": 9376,
                                    "protocol": "TCP"}])
    cluster.api.apply(extra)
    cluster.api.apply(kubeapi.endpoint_slice(
        "extra", name="extra-1", endpoints=[{"ip": PODS["my-app-2"], "node": "node-b"}],
        ports=[{"name": "http", "port": 9376, "protocol": "TCP"}]))
    cluster.wait("extra served",
                 lambda: cluster.names(2, "http://198.19.0.12/") == {"my-app-2"})
    cluster.api.delete("Service", "default", "extra")
    cluster.wait("extra gone", lambda: "default/extra" not in cluster.services())
    r = cluster.ferry.curl("http://198.19.0.12/", max_time=1)
    assert r.returncode != 0, "a deleted Service still answers"
    cluster.api.apply(web_slice(["my-app-1", "my-app-2"]))
    cluster.serves(["my-app-1", "my-app-2"])


def test_services_of_another_proxy_are_not_followed(cluster):
    other = kubeapi.service("not-mine", cluster_ip="198.19.0.13",
                            labels={"service.kubernetes.io/service-proxy-name": "other"})
    cluster.api.apply(other)
    marker = kubeapi.service("marker", cluster_ip="198.19.0.14")
    cluster.api.apply(marker)
    cluster.wait("marker", lambda: "default/marker" in cluster.services())
    assert "default/not-mine" not in cluster.services()
    cluster.api.delete("Service", "default", "marker")
    cluster.api.delete("Service", "default", "not-mine")


def test_headless_services_are_kept_but_not_forwarded(cluster):
    cluster.api.apply(kubeapi.service("db", cluster_ip="None", selector={"app": "db"}))
    svc = cluster.wait("headless db", lambda: cluster.services().get("default/db"))
    assert svc["cluster_ip"] in ("None", "")
    cluster.api.delete("Service", "default", "db")


def test_bookmarks_move_the_resource_version(cluster):
    before = int(cluster.source("Service")["resource_version"])
    cluster.api.apply(kubeapi.endpoint_slice("nothing", name="nothing-1"))  # a slice write
    cluster.wait("Service at the new resourceVersion via a BOOKMARK",
                 lambda: int(cluster.source("Service")["resource_version"]) > before)
    assert cluster.source("Service")["bookmarks"] > 0
    cluster.api.delete("EndpointSlice", "default", "nothing-1")


def test_a_local_apply_cannot_change_what_the_api_holds(cluster):
    r = cluster.ferry.ferryctl("apply", "-f", "-", input=json.dumps(web_service()))
    assert r.returncode == 1
    assert "Service default/web is held by the Kubernetes API source" in r.stderr


def test_an_api_server_restart_is_survived(cluster, redis_session):
    s = cluster.source("Service")
    errors, relists = s["errors"], s["relists"]
    cluster.api.stop()
    cluster.wait("disconnected", lambda: cluster.source("Service")["errors"] > errors)
    status = cluster.source("Service")
    assert not status["connected"] and status["last_error"]
    table = cluster.ferry.ferryctl("stats").stdout
    assert f"Kubernetes API: {cluster.api.url} (in-cluster" in table, table
    # The table wraps long errors to fit 80 columns.
    assert " ".join(status["last_error"].split()) in " ".join(table.split()), table
    # Forwarding goes on from the last known state.
    assert redis_session.ping() == "+PONG"
    cluster.serves(["my-app-1", "my-app-2"])
    cluster.api.start()
    cluster.api.apply(web_slice(["my-app-2"]))
    cluster.serves(["my-app-2"])
    # Back from the last resourceVersion: the server kept its history, so no re-list.
    assert cluster.source("Service")["relists"] == relists
    assert redis_session.ping() == "+PONG"
    cluster.api.apply(web_slice(["my-app-1", "my-app-2"]))
    cluster.serves(["my-app-1", "my-app-2"])


def test_410_mid_stream_relists_without_a_spurious_publish(cluster, redis_session):
    cluster.serves(["my-app-1", "my-app-2"])
    generation = cluster.generation()
    relists = cluster.source("EndpointSlice")["relists"]
    cluster.api.expire_watches()  # ERROR 410 on every open stream, history compacted
    cluster.wait("re-listed", lambda: cluster.source("EndpointSlice")["relists"] > relists)
    time.sleep(0.5)
    assert cluster.generation() == generation, "a re-list that found nothing new published"
    assert redis_session.ping() == "+PONG"

    # Changes made while the watch is gone arrive through the re-list; as HTTP 410 too.
    cluster.api.expired_as_http = True
    try:
        cluster.api.stop()
        cluster.api.apply(web_slice(["my-app-3"]))
        cluster.api.compact()
        relists = cluster.source("EndpointSlice")["relists"]
        cluster.api.start()
        cluster.serves(["my-app-3"])
        assert cluster.source("EndpointSlice")["relists"] > relists
    finally:
        cluster.api.expired_as_http = False
    assert redis_session.ping() == "+PONG"
    cluster.api.apply(web_slice(["my-app-1", "my-app-2"]))
    cluster.serves(["my-app-1", "my-app-2"])


def test_server_errors_back_off_and_recover(cluster, redis_session):
    errors = cluster.source("EndpointSlice")["errors"]
    cluster.api.fail_next(3, code=500)
    cluster.api.close_watches()
    cluster.api.apply(web_slice(["my-app-3"]))
    cluster.serves(["my-app-3"], timeout=30)
    total = sum(r["errors"] for r in cluster.ferry.stats()["sources"]["kubernetes"]["resources"])
    assert total >= 3 and cluster.source("EndpointSlice")["errors"] >= errors
    failed = [r for r in cluster.api.requests if r["status"] == 500]
    assert len(failed) == 3
    assert redis_session.ping() == "+PONG"
    cluster.api.apply(web_slice(["my-app-1", "my-app-2"]))
    cluster.serves(["my-app-1", "my-app-2"])


def test_a_rotated_service_account_token_is_picked_up(cluster, redis_session):
    errors = cluster.source("Service")["errors"]
    (cluster.sa_dir / "token").write_text("token-two\n")
    cluster.api.rotate_token("token-two")
    mark = len(cluster.api.requests)
    cluster.api.close_watches()  # as a watch timeout would: ferryd comes back with the new one
    cluster.api.apply(web_slice(["my-app-3"]))
    cluster.serves(["my-app-3"])
    later = cluster.api.requests[mark:]
    assert later and all(r["authorized"] for r in later), later
    assert cluster.source("Service")["errors"] == errors
    assert redis_session.ping() == "+PONG"
    cluster.api.apply(web_slice(["my-app-1", "my-app-2"]))
    cluster.serves(["my-app-1", "my-app-2"])


def test_a_wrong_token_is_an_error_in_stats_and_forwarding_goes_on(cluster):
    cluster.api.rotate_token("token-three")  # the file still says token-two
    cluster.api.close_watches()
    # The closed watch may first count as a very short watch; the 401 follows a back-off
    # later (up to twice backoff_max_ms).
    cluster.wait("401 seen", lambda: "401" in cluster.source("Service")["last_error"],
                 timeout=30)
    cluster.serves(["my-app-1", "my-app-2"])
    (cluster.sa_dir / "token").write_text("token-three\n")
    for kind in ("Service", "EndpointSlice", "Node"):
        cluster.wait(f"{kind} reconnected", lambda kind=kind: cluster.source(kind)["connected"],
                     timeout=40)


def test_zone_hints_follow_this_nodes_zone(cluster):
    hinted = kubeapi.endpoint_slice(
        "web", name="web-abcde",
        endpoints=[{"ip": PODS["my-app-1"], "node": "node-b", "for_zones": ["zone-a"]},
                   {"ip": PODS["my-app-2"], "node": "node-b", "for_zones": ["zone-b"]}],
        ports=[{"name": "http", "port": 9376, "protocol": "TCP"}])
    cluster.api.apply(hinted)
    cluster.serves(["my-app-1"])
    cluster.api.apply(kubeapi.node(cluster.ferry.prefix, zone="zone-b"))
    cluster.serves(["my-app-2"])
    cluster.api.apply(kubeapi.node(cluster.ferry.prefix, zone="zone-a"))
    cluster.api.apply(web_slice(["my-app-1", "my-app-2"]))
    cluster.serves(["my-app-1", "my-app-2"])


def test_a_kubeconfig_with_a_client_certificate_works_too(cluster):
    f, api = cluster.ferry, cluster.api
    kubeconfig = f.tmp / "kubeconfig"
    # Paths relative to the kubeconfig file, as kubectl reads them.
    shutil.copy(api.pki["client_crt"], f.tmp / "client.crt")
    shutil.copy(api.pki["client_key"], f.tmp / "client.key")
    kubeconfig.write_text(f"""\
apiVersion: v1
kind: Config
current-context: test
clusters:
- name: fake
  cluster:
    server: {api.url}
    certificate-authority: {api.pki['ca_crt']}
users:
- name: ferry
  user:
    client-certificate: client.crt
    client-key: client.key
contexts:
- name: test
  context: {{cluster: fake, user: ferry}}
""")
    assert f.stop_ferryd() == 0
    f.start_ferryd(config_toml(f.prefix, f.tmp, f.manifests,
                               extra=f'[kubernetes]\nkubeconfig = "{kubeconfig}"\n'))
    cluster.wait("synced", lambda: cluster.source("EndpointSlice")["synced"])
    cluster.serves(["my-app-1", "my-app-2"])


def test_metrics_time_api_changes(cluster):
    """/metrics (the default address, in the node's namespace): a watch change is timed as
    source kubernetes, and every watched resource has its counters."""
    from test_metrics import parse, scrape, value
    before, _ = parse(scrape(cluster.ferry))
    gen = cluster.generation()
    cluster.api.apply(web_slice(["my-app-2"]))
    cluster.wait("the change published", lambda: cluster.generation() > gen)
    cluster.serves(["my-app-2"])
    after, _ = parse(scrape(cluster.ferry))
    count = "ferry_change_to_dataplane_seconds_count"
    assert value(after, count, source="kubernetes") > value(before, count, source="kubernetes")
    assert value(after, count, source="socket") == value(before, count, source="socket")
    assert (value(after, "ferry_kubernetes_events_total", kind="EndpointSlice")
            > value(before, "ferry_kubernetes_events_total", kind="EndpointSlice"))
    for r in cluster.ferry.stats()["sources"]["kubernetes"]["resources"]:
        assert value(after, "ferry_kubernetes_synced", kind=r["kind"]) == 1
        assert value(after, "ferry_kubernetes_errors_total", kind=r["kind"]) == r["errors"]


def test_a_hostile_server_is_backed_off_from_and_cannot_crash_ferryd(cluster, redis_session):
    """A 410 on every watch, a watch answered 200 and closed at once, an ERROR event nested
    100,000 deep: ferryd lives on and asks each resource only a few times in 5 s (client-go's
    back-off: 0.8-1.6 s, then 1.6-3.2 s, ...), where it asked hundreds of times a second."""
    api = cluster.api
    api.misbehave = {"services": "watch_gone", "endpointslices": "deep_error",
                     "nodes": "watch_closes"}
    try:
        start = len(api.requests)
        api.close_watches()
        time.sleep(5)
        reqs = api.requests[start:]
        counts = {p: sum(r["path"] == p for r in reqs)
                  for p in ("/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices",
                            "/api/v1/nodes")}
        # Service: a list and a watch per try; the others a watch per try.
        assert counts["/api/v1/services"] <= 8 and counts["/api/v1/nodes"] <= 4, counts
        assert counts["/apis/discovery.k8s.io/v1/endpointslices"] <= 4, counts
        assert cluster.ferry.alive(), cluster.ferry.log()
        assert "nested deeper than 100" in cluster.source("EndpointSlice")["last_error"]
        assert "very short watch" in cluster.source("Node")["last_error"]
        for kind in ("Service", "EndpointSlice", "Node"):
            assert cluster.source(kind)["backoff_ms"] >= 800
        assert redis_session.ping() == "+PONG"
    finally:
        api.misbehave = {}
    for kind in ("Service", "EndpointSlice", "Node"):
        cluster.wait(f"{kind} watching again", lambda kind=kind: cluster.source(kind)["connected"],
                     timeout=30)
