"""ferryctl's side of the new verbs against a stand-in ferryd (a Unix socket that records each
request and answers from tests/golden/): the request fields of the contract, exit statuses,
what is printed, and stats --watch (blocks per interval off a terminal, Ctrl-C exits 0).
Needs no root and no DPDK."""
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FERRYCTL = ROOT / "build" / "tools" / "ferryctl"
GOLDEN = ROOT / "tests" / "golden"


def golden(name):
    return json.loads((GOLDEN / f"{name}.json").read_text())


class FakeFerryd:
    """Answers each request with answer(request) -> (ok, result or error)."""

    def __init__(self, path, answer):
        self.path, self.answer, self.requests = str(path), answer, []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                request = json.loads(data)
                self.requests.append(request)
                ok, value = self.answer(request)
                reply = {"ok": True, "result": value} if ok else {"ok": False, "error": value}
                try:
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    pass  # the client gave up waiting; serve the next one

    def close(self):
        # shutdown wakes the accept() in the thread; a bare close would leave it waiting on a
        # descriptor number the next test's socket may reuse.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(5)
        self.sock.close()


def default_answer(request):
    op = request["op"]
    if op == "status":
        return True, golden("status")
    if op == "get":
        return True, golden({"services": "get-services", "flows": "get-flows",
                             "nodeports": "get-nodeports", "neighbors": "get-neighbors",
                             "routes": "get-routes"}.get(request["resource"], "get-pods"))
    if op == "describe":
        if request["name"] != "my-service":
            return False, f'service "{request["namespace"]}/{request["name"]}" not found'
        return True, golden("describe-service")
    if op == "trace":
        return True, golden("trace")
    if op == "weight":
        return True, dict(golden("weight-drain"), weight=request["weight"])
    if op == "flush":
        return True, golden("flush")
    if op == "stats":
        return True, golden("stats")
    if op == "filter_list":
        return True, golden("filter-list")
    if op == "filter_add":
        if request["pattern"] == "(":
            return False, 'filter "bad": pattern "(": Missing close parenthesis for group started at index 0.'
        return True, golden("filter-add")
    if op == "filter_del":
        return True, golden("filter-del")
    return False, f"unknown op {op}"


@pytest.fixture
def fake(tmp_path):
    if not FERRYCTL.exists():
        pytest.fail(f"{FERRYCTL} is missing: build first (ninja -C build)")
    f = FakeFerryd(tmp_path / "ferry.sock", default_answer)
    yield f
    f.close()


def ctl(fake, *args, **kw):
    return subprocess.run([str(FERRYCTL), "--socket", fake.path, *args], capture_output=True,
                          text=True, timeout=10, **kw)


def test_status_request_and_table(fake):
    r = ctl(fake, "status")
    assert r.returncode == 0, r.stderr
    assert fake.requests == [{"op": "status"}]
    # The same as the golden file but for the snapshot's age: the clock is the real one here.
    same = [l for l in r.stdout.splitlines() if not l.startswith("Snapshot:")]
    expected = [l for l in (GOLDEN / "status.table.txt").read_text().splitlines()
                if not l.startswith("Snapshot:")]
    assert same == expected, r.stdout


@pytest.mark.parametrize("args,request_", [
    (["get", "np"], {"op": "get", "resource": "nodeports"}),
    (["get", "neigh"], {"op": "get", "resource": "neighbors"}),
    (["get", "rt", "-n", "x"], {"op": "get", "resource": "routes"}),
    (["get", "flows", "--service", "default/my-service", "--backend", "198.18.1.11",
      "--client", "198.18.0.2:40000", "--state", "ESTABLISHED", "--protocol", "TCP",
      "--limit", "5"],
     {"op": "get", "resource": "flows", "limit": 5, "service": "default/my-service",
      "backend": "198.18.1.11", "client": "198.18.0.2:40000", "state": "established",
      "protocol": "tcp"}),
    (["describe", "svc", "default/my-service"],
     {"op": "describe", "kind": "service", "namespace": "default", "name": "my-service"}),
    (["describe", "service", "my-service", "-n", "shop"],
     {"op": "describe", "kind": "service", "namespace": "shop", "name": "my-service"}),
    (["trace", "198.18.0.2:40000", "198.19.0.10:80"],
     {"op": "trace", "protocol": "tcp", "source": "198.18.0.2:40000",
      "destination": "198.19.0.10:80"}),
    (["trace", "198.18.0.2:40000", "198.19.0.53:53", "UDP"],
     {"op": "trace", "protocol": "udp", "source": "198.18.0.2:40000",
      "destination": "198.19.0.53:53"}),
    (["drain", "default/my-service", "198.18.1.11"],
     {"op": "weight", "namespace": "default", "name": "my-service", "address": "198.18.1.11",
      "weight": 0}),
    (["weight", "my-service", "198.18.1.11", "7"],
     {"op": "weight", "namespace": "default", "name": "my-service", "address": "198.18.1.11",
      "weight": 7}),
    (["weight", "default/my-service", "198.18.1.11", "--reset"],
     {"op": "weight", "namespace": "default", "name": "my-service", "address": "198.18.1.11",
      "weight": None}),
    (["flush", "flows", "--backend", "198.18.1.12:9376", "--state", "syn_sent"],
     {"op": "flush", "backend": "198.18.1.12:9376", "state": "syn_sent"}),
    (["flush", "flows", "--all"], {"op": "flush"}),
    # Payload signature filter.
    (["filter", "list"], {"op": "filter_list"}),
    (["filter", "del", "evil"], {"op": "filter_del", "name": "evil"}),
    (["filter", "add", "evil", "--pattern", "/evil"],
     {"op": "filter_add", "name": "evil", "pattern": "/evil", "action": "drop", "depth": 512,
      "flags": []}),
    (["filter", "add", "sqli", "--pattern", "GET /[a-z]+\\.php", "--action", "count", "--depth",
      "128", "--service", "web", "--protocol", "TCP", "--port", "80", "--caseless"],
     {"op": "filter_add", "name": "sqli", "pattern": "GET /[a-z]+\\.php", "action": "count",
      "depth": 128, "flags": ["caseless"], "service": "default/web", "protocol": "TCP",
      "port": 80}),
    (["filter", "add", "v", "--pattern", "x", "--vip", "198.19.0.10", "--dotall"],
     {"op": "filter_add", "name": "v", "pattern": "x", "action": "drop", "depth": 512,
      "flags": ["dotall"], "vip": "198.19.0.10"}),
])
def test_requests_follow_the_contract(fake, args, request_):
    r = ctl(fake, *args)
    assert r.returncode == 0, r.stderr
    assert fake.requests == [request_]


def test_outputs(fake):
    r = ctl(fake, "drain", "default/my-service", "198.18.1.11")
    assert r.stdout == (GOLDEN / "weight-drain.table.txt").read_text(), r.stdout
    r = ctl(fake, "flush", "flows", "--all")
    assert r.stdout == "flushed 57 flows\n", r.stdout
    r = ctl(fake, "trace", "198.18.0.2:40000", "198.19.0.10:80", "-o", "json")
    assert json.loads(r.stdout) == golden("trace")
    r = ctl(fake, "get", "flows")
    assert r.stdout.endswith("(showing 4 of 4 matching flows, 1234 active)\n"), r.stdout
    r = ctl(fake, "describe", "svc", "default/my-service", "-o", "wide")
    assert r.stdout == (GOLDEN / "describe-service.wide.txt").read_text(), r.stdout
    for fmt in ("table", "wide", "json", "yaml"):
        r = ctl(fake, "filter", "list", "-o", fmt)
        assert r.stdout == (GOLDEN / f"filter-list.{fmt}.txt").read_text(), r.stdout
    r = ctl(fake, "filter", "add", "sqli", "--pattern", "x")
    assert r.stdout == (GOLDEN / "filter-add.table.txt").read_text(), r.stdout
    r = ctl(fake, "filter", "del", "evil")
    assert r.stdout == (GOLDEN / "filter-del.table.txt").read_text(), r.stdout


def test_refusals_exit_1_with_the_reason(fake):
    r = ctl(fake, "describe", "svc", "default/nope")
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr == 'error: service "default/nope" not found\n', r.stderr
    r = ctl(fake, "filter", "add", "bad", "--pattern", "(")
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr.startswith('error: filter "bad": pattern "(": Missing close'), r.stderr


@pytest.mark.parametrize("args", [
    ["flush", "flows"], ["trace", "198.18.0.2:0", "198.19.0.10:80"],
    ["trace", "198.18.0.2:1", "198.19.0.300:80"], ["weight", "default/x", "198.18.1.11"],
    ["get", "routes", "default"], ["get", "np", "--client", "1.2.3.4"],
    ["stats", "--watch", "--interval", "0"],
    ["filter"], ["filter", "add", "x"], ["filter", "add", "x", "--pattern", "y", "--depth", "0"],
    ["filter", "add", "x", "--pattern", "y", "--action", "block"],
    ["filter", "add", "x", "--pattern", "y", "--vip", "1.2.3"],
    ["filter", "add", "x", "--pattern", "y", "--vip", "1.2.3.4", "--service", "a/b"],
    ["--timeout", "-1", "status"], ["--timeout", "soon", "status"]])
def test_usage_errors_send_nothing(fake, args):
    r = ctl(fake, *args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.strip() and fake.requests == []


def test_timeout_says_the_request_may_still_be_carried_out(tmp_path):
    """A slow answer (a large apply): ferryctl gives up after --timeout, and says that the
    request was sent, so ferryd may still commit it (it did, in issue 16). --timeout 0 waits."""
    def slow(request):
        time.sleep(1.5)
        return True, {"changes": []}
    f = FakeFerryd(tmp_path / "ferry.sock", slow)
    try:
        manifest = tmp_path / "svc.yaml"
        manifest.write_text("kind: Service\n")
        t0 = time.monotonic()
        r = ctl(f, "--timeout", "0.3", "apply", "-f", str(manifest))
        assert time.monotonic() - t0 < 1.3
        assert r.returncode == 1 and r.stdout == "", (r.returncode, r.stdout)
        assert r.stderr.startswith("error: timed out after 0.3 s waiting for ferryd at "), r.stderr
        assert "the request was sent, so ferryd may still carry it out" in r.stderr, r.stderr
        time.sleep(1.5)  # the fake finishes the first request
        assert [q["op"] for q in f.requests] == ["apply"]  # it arrived whole
        r = ctl(f, "--timeout", "0", "apply", "-f", str(manifest))
        assert r.returncode == 0, r.stderr
    finally:
        f.close()


def counting_stats(fake_state):
    """stats answers whose counters grow by a known amount per call."""
    def answer(request):
        if request["op"] == "status":
            return True, {"node": "node-x"}
        n = fake_state["calls"]
        fake_state["calls"] += 1
        s = golden("stats")
        s["ports"][0]["rx_packets"] += 1000 * n
        s["drops"]["no_route"] += 5 * n
        return True, s
    return answer


def test_stats_watch_prints_blocks_and_exits_0_on_ctrl_c(tmp_path):
    state = {"calls": 0}
    fake = FakeFerryd(tmp_path / "ferry.sock", counting_stats(state))
    try:
        p = subprocess.Popen([str(FERRYCTL), "--socket", fake.path, "stats", "--watch",
                              "--interval", "0.2"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(1.2)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=5)
    finally:
        fake.close()
    assert p.returncode == 0, err
    blocks = out.split("ferry on node-x")[1:]
    assert len(blocks) >= 2, out
    assert "\x1b" not in out, "no terminal control sequences into a pipe"
    # 1000 packets and 5 no_route drops per interval of 0.2 s (a little more on a busy
    # machine): about 5000 pps and 25/s.
    eth0 = next(l for l in blocks[1].splitlines() if l.startswith("eth0"))
    assert 2000 <= float(eth0.split()[1]) <= 5100, blocks[1]
    assert "no_route" in blocks[1], blocks[1]
    assert fake.requests[0] == {"op": "status"}
    assert all(r == {"op": "stats"} for r in fake.requests[1:])


def test_stats_watch_json_lines(tmp_path):
    state = {"calls": 0}
    fake = FakeFerryd(tmp_path / "ferry.sock", counting_stats(state))
    try:
        p = subprocess.Popen([str(FERRYCTL), "--socket", fake.path, "stats", "-w", "-o", "json",
                              "--interval", "0.2"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.7)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=5)
    finally:
        fake.close()
    assert p.returncode == 0
    docs = [json.loads(d) for d in out.strip().split("\n\n")]
    assert docs and set(docs[0]) == {"interval_seconds", "ports", "workers", "flows", "drops"}
    assert docs[0]["drops"][0]["reason"] == "no_route"


def test_stats_watch_yaml_is_a_document_stream(tmp_path):
    yaml = pytest.importorskip("yaml")
    fake = FakeFerryd(tmp_path / "ferry.sock", counting_stats({"calls": 0}))
    try:
        p = subprocess.Popen([str(FERRYCTL), "--socket", fake.path, "stats", "-w", "-o", "yaml",
                              "--interval", "0.2"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.7)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=5)
    finally:
        fake.close()
    assert p.returncode == 0
    docs = list(yaml.safe_load_all(out))
    assert docs and all(d["flows"]["active"] == 1234 for d in docs), out
