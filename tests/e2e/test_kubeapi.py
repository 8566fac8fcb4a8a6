"""Tests of the fake kube-apiserver (kubeapi.py) itself, with real clients: curl for TLS,
tokens and chunked watches, and a raw TLS socket where chunk framing has to be seen.

No root, no DPDK: /usr/bin/python3 -m pytest -q tests/e2e/test_kubeapi.py
"""
import http.client
import json
import queue
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kubeapi  # noqa: E402
from kubeapi import FakeKubeAPI, endpoint_slice, node, service  # noqa: E402

TOKEN = "s3cret-token"
SERVICES = "/api/v1/services"


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="ferry-kubeapi-")
    yield kubeapi.make_pki(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def api(pki):
    a = FakeKubeAPI(pki, token=TOKEN, bookmark_interval=None)
    a.start()
    yield a
    a.stop()


# ---- Clients ---------------------------------------------------------------------------------

def curl(api, path, *extra, token=TOKEN, cacert=True, timeout=5):
    """curl the fake; returns (exit status, HTTP status, body)."""
    cmd = ["curl", "-sS", "--noproxy", "*", "-m", str(timeout), "-w", "\n%{http_code}"]
    if cacert:
        cmd += ["--cacert", api.pki["ca_crt"]]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    r = subprocess.run(cmd + list(extra) + [api.url + path], capture_output=True, text=True,
                       timeout=timeout + 5)
    body, _, code = r.stdout.rpartition("\n")
    return r.returncode, int(code or 0), body


def get(api, path, token=TOKEN):
    """GET with http.client: (status, parsed JSON body)."""
    ctx = ssl.create_default_context(cafile=api.pki["ca_crt"])
    conn = http.client.HTTPSConnection("127.0.0.1", api.port, context=ctx, timeout=5)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        r = conn.getresponse()
        assert r.getheader("Content-Type") == "application/json"
        return r.status, json.loads(r.read())
    finally:
        conn.close()


class RawStream:
    """A watch read off a TLS socket with the chunked framing parsed by hand, so a test can
    see that every event is a chunk of its own and how the response ends."""

    def __init__(self, api, path, token=TOKEN):
        ctx = ssl.create_default_context(cafile=api.pki["ca_crt"])
        raw = socket.create_connection(("127.0.0.1", api.port), timeout=5)
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          f"Authorization: Bearer {token}\r\n\r\n".encode())
        self.f = self.sock.makefile("rb")
        self.status = int(self.f.readline().split()[1])
        self.headers = {}
        while (line := self.f.readline().strip()):
            k, _, v = line.decode().partition(":")
            self.headers[k.lower()] = v.strip()

    def chunk(self):
        """The next chunk's data; b"" for the terminating chunk; EOFError if the connection
        ends instead."""
        size_line = self.f.readline()
        if not size_line:
            raise EOFError("connection closed without a terminating chunk")
        size = int(size_line.strip(), 16)
        data = self.f.read(size)
        assert self.f.read(2) == b"\r\n"
        return data

    def event(self):
        data = self.chunk()
        assert data.endswith(b"\n") and data.count(b"\n") == 1, data  # one event per chunk
        return json.loads(data)

    def close(self):
        self.f.close()
        self.sock.close()


def watch_path(rv=None, **params):
    q = {"watch": "1", **params}
    if rv is not None:
        q["resourceVersion"] = str(rv)
    return SERVICES + "?" + "&".join(f"{k}={quote(str(v))}" for k, v in q.items())


def wait_for(cond, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


# ---- TLS and authentication ------------------------------------------------------------------

def test_auth(api):
    rc, code, body = curl(api, "/version", token=None)
    assert (rc, code) == (0, 401)
    assert json.loads(body) == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "message": "Unauthorized",
                                "reason": "Unauthorized", "code": 401}
    assert curl(api, SERVICES, token="wrong")[1] == 401
    rc, code, body = curl(api, "/version")
    assert (rc, code) == (0, 200)
    assert json.loads(body)["gitVersion"] == "v1.31.0-ferry-fake"
    assert curl(api, "/healthz")[1:] == (200, "ok")
    # A client certificate signed by the CA authenticates without a token.
    rc, code, body = curl(api, SERVICES, "--cert", api.pki["client_crt"],
                          "--key", api.pki["client_key"], token=None)
    assert (rc, code) == (0, 200) and json.loads(body)["kind"] == "ServiceList"
    assert [r["authorized"] for r in api.requests] == [False, False, True, True, True]
    assert [r["status"] for r in api.requests] == [401, 401, 200, 200, 200]


def test_server_cert_needs_the_ca(api):
    rc, code, _ = curl(api, "/version", cacert=False)
    assert rc == 60 and code == 0  # curl: SSL certificate problem
    assert curl(api, "/version")[:2] == (0, 200)


def test_rotate_token_keeps_open_watches(api):
    stream = RawStream(api, watch_path(api.resource_version))
    api.rotate_token("new-token")
    assert curl(api, "/version")[1] == 401
    assert curl(api, "/version", token="new-token")[1] == 200
    api.apply(service("after-rotation"))
    assert stream.event()["object"]["metadata"]["name"] == "after-rotation"
    api.accept_tokens({"a", "b"})
    assert [curl(api, "/healthz", token=t)[1] for t in ("a", "b", "new-token")] == [200, 200, 401]
    stream.close()


def test_unknown_path_and_injected_failures(api):
    code, body = get(api, "/api/v1/pods/x/y/z")
    assert code == 404 and body["reason"] == "NotFound" and body["code"] == 404
    api.fail_next(2, code=503)
    assert curl(api, SERVICES)[1] == 503
    code, body = get(api, SERVICES)
    assert code == 503 and body["reason"] == "ServiceUnavailable"
    assert get(api, SERVICES)[0] == 200


# ---- Lists -----------------------------------------------------------------------------------

def test_list_pages_are_one_snapshot(api):
    for i in range(5):
        api.apply(service(f"svc-{i}", ns="ns-b" if i % 2 else "ns-a", cluster_ip=f"10.0.0.{i}"))
    code, page = get(api, SERVICES + "?limit=2")
    rv = page["metadata"]["resourceVersion"]
    assert code == 200 and page["kind"] == "ServiceList" and page["apiVersion"] == "v1"
    assert rv == str(api.resource_version)
    pages = [page]
    api.apply(service("late-comer"))  # after the first page: not in this list
    while "continue" in pages[-1]["metadata"]:
        token = quote(pages[-1]["metadata"]["continue"])
        code, page = get(api, f"{SERVICES}?limit=2&continue={token}")
        assert code == 200 and page["metadata"]["resourceVersion"] == rv
        pages.append(page)
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert [p["metadata"].get("remainingItemCount") for p in pages] == [3, 1, None]
    items = [i for p in pages for i in p["items"]]
    keys = [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items]
    assert keys == sorted(keys) and len(keys) == 5
    assert {k[1] for k in keys} == {f"svc-{i}" for i in range(5)}
    assert all("kind" not in i and "apiVersion" not in i for i in items)
    assert all(i["metadata"]["uid"] and i["metadata"]["resourceVersion"] for i in items)

    # A continue token from before a compaction is expired.
    code, first = get(api, SERVICES + "?limit=2")
    api.apply(service("svc-0", ns="ns-a", cluster_ip="10.0.0.100"))
    api.compact()
    code, body = get(api, f"{SERVICES}?limit=2&continue={quote(first['metadata']['continue'])}")
    assert code == 410
    assert body == kubeapi.status(410, kubeapi.EXPIRED_CONTINUE)
    assert body["reason"] == "Expired" and body["message"].startswith("The provided continue")


def test_namespaced_lists_and_kinds(api):
    api.apply(service("web", ns="shop"))
    api.apply(service("web", ns="blog"))
    api.apply(endpoint_slice("web", ns="shop", endpoints=[{"ip": "198.18.1.11", "node": "n1"}]))
    api.apply(node("n1"))
    code, body = get(api, "/api/v1/namespaces/shop/services")
    assert [i["metadata"]["namespace"] for i in body["items"]] == ["shop"]
    code, body = get(api, "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices")
    assert body["kind"] == "EndpointSliceList" and body["apiVersion"] == "discovery.k8s.io/v1"
    ep = body["items"][0]
    assert ep["endpoints"][0] == {**ep["endpoints"][0], "addresses": ["198.18.1.11"],
                                  "conditions": {"ready": True}, "nodeName": "n1"}
    assert ep["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
    assert get(api, "/apis/discovery.k8s.io/v1/namespaces/blog/endpointslices")[1]["items"] == []
    code, body = get(api, "/api/v1/nodes")
    assert body["kind"] == "NodeList" and "namespace" not in body["items"][0]["metadata"]
    assert get(api, "/api/v1/namespaces/shop/nodes")[0] == 404


def test_selectors(api):
    api.apply(service("plain"))
    api.apply(service("other-proxy", labels={"service.kubernetes.io/service-proxy-name": "x"}))
    api.apply(service("headless", cluster_ip="None", labels={"tier": "db"}))
    sel = quote("!service.kubernetes.io/service-proxy-name")
    code, body = get(api, f"{SERVICES}?labelSelector={sel}")
    assert code == 200 and [i["metadata"]["name"] for i in body["items"]] == ["headless", "plain"]
    sel = quote("!service.kubernetes.io/service-proxy-name,tier in (db,cache)")
    assert [i["metadata"]["name"] for i in get(api, f"{SERVICES}?labelSelector={sel}")[1]
            ["items"]] == ["headless"]
    sel = quote("tier!=db")
    assert len(get(api, f"{SERVICES}?labelSelector={sel}")[1]["items"]) == 2
    assert get(api, f"{SERVICES}?labelSelector={quote('a in (b')}")[0] == 400

    api.apply(node("node-a"))
    api.apply(node("node-b", zone="z1"))
    code, body = get(api, "/api/v1/nodes?fieldSelector=metadata.name%3Dnode-b")
    assert [i["metadata"]["name"] for i in body["items"]] == ["node-b"]
    assert body["items"][0]["metadata"]["labels"]["topology.kubernetes.io/zone"] == "z1"
    code, body = get(api, "/api/v1/nodes?fieldSelector=metadata.name!%3Dnode-b")
    assert [i["metadata"]["name"] for i in body["items"]] == ["node-a"]
    assert get(api, "/api/v1/nodes?fieldSelector=spec.foo%3Dx")[0] == 400


# ---- Watches ---------------------------------------------------------------------------------

def test_watch_events_in_order_one_per_chunk(api):
    api.apply(service("before", cluster_ip="10.0.0.1"))
    rv = int(get(api, SERVICES)[1]["metadata"]["resourceVersion"])
    stream = RawStream(api, watch_path(rv))
    assert stream.status == 200
    assert stream.headers["transfer-encoding"] == "chunked"
    assert stream.headers["content-type"] == "application/json"
    assert wait_for(lambda: api.open_watches() == 1)
    api.apply(service("web", cluster_ip="10.0.0.2"))
    api.apply(service("web", cluster_ip="10.0.0.2", selector={"app": "web"}))
    api.apply(node("n1"))  # another resource: not on this stream
    api.delete("Service", "default", "web")
    events = [stream.event() for _ in range(3)]
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rv < rvs[0] < rvs[1] < rvs[2]
    assert all(e["object"]["kind"] == "Service" and e["object"]["apiVersion"] == "v1"
               for e in events)
    assert events[1]["object"]["spec"]["selector"] == {"app": "web"}
    assert events[1]["object"]["metadata"]["generation"] == 2
    assert len({e["object"]["metadata"]["uid"] for e in events}) == 1
    stream.close()
    assert wait_for(lambda: api.open_watches() == 0)

    # Replay: a new watch from the same rv gets the same events from the history.
    stream = RawStream(api, watch_path(rv))
    assert [stream.event()["type"] for _ in range(3)] == ["ADDED", "MODIFIED", "DELETED"]
    stream.close()
    # No resourceVersion: a synthetic ADDED per current object, then live events.
    stream = RawStream(api, watch_path())
    first = stream.event()
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "before")
    stream.close()


def test_watch_with_curl(api):
    rv = api.resource_version
    proc = subprocess.Popen(
        ["curl", "-sSN", "--noproxy", "*", "--cacert", api.pki["ca_crt"],
         "-H", f"Authorization: Bearer {TOKEN}", api.url + watch_path(rv, timeoutSeconds=2)],
        stdout=subprocess.PIPE, text=True)
    assert wait_for(lambda: api.open_watches() == 1)
    api.apply(service("a"))
    api.apply(service("a", cluster_ip="10.9.9.9"))
    api.delete("Service", "default", "a")
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0  # timeoutSeconds: a clean end of the chunked response
    assert [json.loads(line)["type"] for line in out.splitlines()] == [
        "ADDED", "MODIFIED", "DELETED"]
    r = api.requests[-1]
    assert r["query"]["resourceVersion"] == str(rv) and r["query"]["watch"] == "1"


def test_watch_label_selector_transitions(api):
    sel = "!service.kubernetes.io/service-proxy-name"
    stream = RawStream(api, watch_path(api.resource_version, labelSelector=sel))
    api.apply(service("s"))
    api.apply(service("s", labels={"service.kubernetes.io/service-proxy-name": "x"}))
    api.apply(service("s", labels={"service.kubernetes.io/service-proxy-name": "y"}))
    api.apply(service("s"))
    assert [stream.event()["type"] for _ in range(3)] == ["ADDED", "DELETED", "ADDED"]
    stream.close()


def test_bookmarks(pki):
    with FakeKubeAPI(pki, token=TOKEN, bookmark_interval=0.2) as api:
        api.apply(service("x"))
        rv = api.resource_version
        with_bm = RawStream(api, watch_path(rv, allowWatchBookmarks="true"))
        without = RawStream(api, watch_path(rv, timeoutSeconds=1))
        ev = with_bm.event()
        assert ev == {"type": "BOOKMARK", "object": {
            "kind": "Service", "apiVersion": "v1", "metadata": {"resourceVersion": str(rv)}}}
        assert without.chunk() == b""  # ended by timeoutSeconds=1 without any BOOKMARK
        with_bm.close()
        without.close()
    with FakeKubeAPI(pki, token=TOKEN, bookmark_interval=None) as api:
        stream = RawStream(api, watch_path(api.resource_version, allowWatchBookmarks="1"))
        assert wait_for(lambda: api.open_watches() == 1)
        api.apply(service("y"))
        api.send_bookmarks()
        assert stream.event()["type"] == "ADDED"
        ev = stream.event()
        assert ev["type"] == "BOOKMARK"
        assert ev["object"]["metadata"]["resourceVersion"] == str(api.resource_version)
        stream.close()


def test_watch_from_compacted_rv(api):
    old = api.resource_version
    api.apply(service("x"))
    api.compact()
    stream = RawStream(api, watch_path(old))
    assert stream.status == 200
    ev = stream.event()
    assert ev == {"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: {old} ({api.resource_version})",
        "reason": "Expired", "code": 410}}
    assert stream.chunk() == b""
    stream.close()
    api.expired_as_http = True
    code, body = get(api, watch_path(old))
    assert code == 410 and body["reason"] == "Expired" and body["code"] == 410
    # Watching from the compaction point itself is fine.
    stream = RawStream(api, watch_path(api.resource_version))
    assert stream.status == 200
    stream.close()


def test_expire_and_close_watches(api):
    stream = RawStream(api, watch_path(api.resource_version))
    assert wait_for(lambda: api.open_watches() == 1)
    api.apply(service("x"))
    assert stream.event()["type"] == "ADDED"
    api.expire_watches()
    ev = stream.event()
    assert ev["type"] == "ERROR" and ev["object"]["code"] == 410
    assert ev["object"]["reason"] == "Expired"
    assert stream.chunk() == b""
    stream.close()

    stream = RawStream(api, watch_path(api.resource_version))
    assert wait_for(lambda: api.open_watches() == 1)
    api.close_watches()
    assert stream.chunk() == b""
    assert wait_for(lambda: api.open_watches() == 0)
    stream.close()


def test_timeout_seconds_ends_cleanly(api):
    start = time.monotonic()
    stream = RawStream(api, watch_path(api.resource_version, timeoutSeconds=1))
    assert stream.chunk() == b""
    assert 0.9 < time.monotonic() - start < 2.5
    stream.close()


def test_stop_cuts_streams_and_start_reuses_the_port(api):
    port = api.port
    raw = RawStream(api, watch_path(api.resource_version))
    lines = queue.Queue()
    proc = subprocess.Popen(
        ["curl", "-sSN", "--noproxy", "*", "--cacert", api.pki["ca_crt"],
         "-H", f"Authorization: Bearer {TOKEN}", api.url + watch_path(api.resource_version)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout], daemon=True).start()
    assert wait_for(lambda: api.open_watches() == 2)
    api.apply(service("x"))
    assert raw.event()["type"] == "ADDED"
    assert json.loads(lines.get(timeout=3))["type"] == "ADDED"

    api.stop()
    with pytest.raises((EOFError, ConnectionError, ssl.SSLError)):
        raw.chunk()
    raw.close()
    assert proc.wait(timeout=5) != 0  # curl: transfer closed with outstanding data
    assert api.open_watches() == 0
    assert curl(api, "/version", timeout=2)[0] == 7  # nothing listens

    api.start()
    assert api.port == port
    assert curl(api, "/version")[:2] == (0, 200)
    # The data survived the "restart", as etcd's would.
    assert [i["metadata"]["name"] for i in get(api, SERVICES)[1]["items"]] == ["x"]


# ---- Builders --------------------------------------------------------------------------------

def test_builders_have_real_shapes(api):
    svc = service("web", cluster_ip="None", selector={"app": "web"})
    assert svc["spec"]["clusterIPs"] == ["None"] and svc["spec"]["ipFamilies"] == ["IPv4"]
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 8080,
                                     "protocol": "TCP"}]
    eps = endpoint_slice("web", endpoints=[
        {"ip": "198.18.1.11", "node": "n1", "zone": "z1", "serving": True,
         "terminating": False, "for_zones": ["z1"], "for_nodes": ["n1"]}])
    assert eps["metadata"]["name"].startswith("web-") and len(eps["metadata"]["name"]) == 9
    assert eps["metadata"]["ownerReferences"][0]["kind"] == "Service"
    ep = eps["endpoints"][0]
    assert ep["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert ep["hints"] == {"forZones": [{"name": "z1"}], "forNodes": [{"name": "n1"}]}
    assert ep["targetRef"]["kind"] == "Pod" and ep["zone"] == "z1"
    n = node("n1", addresses=[("InternalIP", "198.18.0.1")])
    assert {"type": "InternalIP", "address": "198.18.0.1"} in n["status"]["addresses"]
    rv = api.apply(svc)
    assert api.apply(svc) == rv  # an unchanged update is a no-op, as on a real server
    stored = api.get("Service", "default", "web")
    assert stored["metadata"]["resourceVersion"] == str(rv)
    assert api.delete("Service", "default", "web") == rv + 1
    assert api.get("Service", "default", "web") is None


# ---- Misbehaviour switches (for ferryd's tests of a hostile server) ---------------------------

def test_misbehave_switches(api):
    api.apply(service("web", cluster_ip="10.96.0.10"))
    api.misbehave = {"services": "watch_gone"}
    assert get(api, watch_path(api.resource_version))[0] == 410
    assert get(api, SERVICES)[0] == 200  # lists stay normal
    api.misbehave = {"services": "watch_closes"}
    s = RawStream(api, watch_path(api.resource_version))
    assert s.status == 200 and s.chunk() == b""
    s.close()
    api.misbehave = {"services": "watch_bad_line"}
    s = RawStream(api, watch_path(api.resource_version))
    assert s.chunk() == b"{this is not json\n" and s.chunk() == b""
    s.close()
    api.misbehave = {"services": "deep_error"}
    s = RawStream(api, watch_path(api.resource_version))
    data = s.chunk()
    assert data.count(b"[") == kubeapi.DEEP_ERROR_DEPTH and data.endswith(b"}}\n")
    s.close()
    api.misbehave = {"services": "wrong_types"}
    s = RawStream(api, watch_path(api.resource_version))
    assert s.event()["object"]["metadata"]["resourceVersion"] == 1
    s.close()
    api.misbehave = {"services": "endless_line"}
    s = RawStream(api, watch_path(api.resource_version))
    assert b"\n" not in s.chunk() + s.chunk()
    s.close()
    api.misbehave = {"services": "endless_list"}
    code, page = get(api, SERVICES + "?limit=1&continue=41")
    assert code == 200 and page["metadata"]["continue"] == "42"
    assert page["items"][0]["metadata"]["name"] == "endless-41"
    api.misbehave = {}
    assert [o["metadata"]["name"] for o in get(api, SERVICES)[1]["items"]] == ["web"]
