"""DNS over TCP against hostile clients (issue 16, items 4 and 5), with real sockets in the
client namespace and the limits lowered so that each case takes seconds:

- clients that pipeline queries for a big headless Service and never read: ferryd's RSS
  stays put (one query at a time, the next read only once the answer is with the kernel);
- clients that drip a byte at a time: closed by the per-query deadline, and while they
  hold every slot `dig +tcp` still answers;
- a full table: a new connection evicts the oldest idle one instead of being refused;
- one address gets at most tcp_connections_per_source connections.

The client namespace gets extra addresses so that the attackers come from several sources.
"""
import json
import subprocess
import time

import pytest

from conftest import PYTHON

DNS = "198.19.0.53"
ZONE = "cluster.local"
MAX_CONNECTIONS = 12
PER_SOURCE = 4
IDLE_TIMEOUT = 4
MESSAGE_TIMEOUT = 1
MEMORY = 4 * 65535 + 4  # four largest queries

FERRY_TOML = f"""
[dns]
addresses = ["{DNS}"]
tcp_connections = {MAX_CONNECTIONS}
tcp_connections_per_source = {PER_SOURCE}
tcp_idle_timeout = {IDLE_TIMEOUT}
tcp_message_timeout = {MESSAGE_TIMEOUT}
tcp_memory = {MEMORY}
"""

# Attackers' addresses beside the client's own 198.18.0.1 (which dig uses).
SOURCES = [f"198.18.0.{i}" for i in range(100, 100 + MAX_CONNECTIONS // PER_SOURCE + 4)]


def big_slices(n=1000, per_slice=100):
    out = []
    for s in range(n // per_slice):
        eps = "".join(
            f'  - addresses: ["198.18.{8 + (s * per_slice + i) // 250}.'
            f'{1 + (s * per_slice + i) % 250}"]\n    conditions: {{ready: true}}\n'
            for i in range(per_slice))
        out.append("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
                   f"metadata: {{name: big-{s}, namespace: data, "
                   "labels: {kubernetes.io/service-name: big}}\n"
                   "addressType: IPv4\nports: [{name: pg, protocol: TCP, port: 5432}]\n"
                   f"endpoints:\n{eps}")
    return out


FERRY_MANIFESTS = {
    "40-dns.yaml": "\n---\n".join([
        """apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 198.19.0.30
  ports: [{name: http, port: 80, protocol: TCP}]
""",
        # 1000 ready endpoints: every A answer is about 16 KB.
        """apiVersion: v1
kind: Service
metadata: {name: big, namespace: data}
spec: {clusterIP: None, ports: [{name: pg, port: 5432}]}
""",
        *big_slices(),
    ]),
}

# Runs in the client namespace: argv[1] is a JSON spec (see each test). Prints JSON lines.
HELPER = r"""
import json, select, socket, struct, sys, time
spec = json.loads(sys.argv[1])
DNS = spec["dns"]

def query(name, qid=1):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", 1, 1)
    return struct.pack(">H", len(q)) + q

def connect(src, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((src, 0))
    s.settimeout(5)
    s.connect((DNS, 53))
    return s

def recvn(s, n):
    data = b""
    while len(data) < n:
        part = s.recv(n - len(data))
        if not part:
            raise EOFError
        data += part
    return data

def ask(s, name):
    s.sendall(query(name))
    return recvn(s, struct.unpack(">H", recvn(s, 2))[0])

def closed(s):
    # True when the server closed (EOF or RST); s has nothing unread otherwise.
    try:
        if not select.select([s], [], [], 0)[0]:
            return False
        return s.recv(1) == b""
    except OSError:
        return True

socks = []
mode = spec["mode"]
if mode == "pipeline":
    # Many pipelined queries per connection, answers never read.
    block = query(spec["name"]) * spec["queries"]
    sent = 0
    for src in spec["sources"]:
        for _ in range(spec["per_source"]):
            s = connect(src, rcvbuf=4096)
            s.settimeout(0.3)
            try:
                s.sendall(block)
                sent += len(block)
            except socket.timeout:
                pass
            socks.append(s)
    print(json.dumps({"ready": True, "connections": len(socks)}), flush=True)
    time.sleep(spec["hold"])
elif mode == "idle":
    # Connections that asked once and then wait, opened oldest first.
    for src in spec["sources"]:
        for _ in range(spec["per_source"]):
            s = connect(src)
            ask(s, spec["name"])
            socks.append(s)
            time.sleep(0.05)
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # the test has done its part
    time.sleep(0.3)
    print(json.dumps({"closed": [i for i, s in enumerate(socks) if closed(s)]}), flush=True)
elif mode == "drip":
    # Each connection sends its query one byte every `every` seconds.
    q = query(spec["name"])
    for src in spec["sources"]:
        for _ in range(spec["per_source"]):
            s = connect(src)
            s.sendall(q[:1])
            socks.append(s)
    start = time.time()
    print(json.dumps({"ready": True}), flush=True)
    done = {}
    sent = [1] * len(socks)
    while time.time() - start < spec["seconds"] and len(done) < len(socks):
        time.sleep(spec["every"])
        for i, s in enumerate(socks):
            if i in done:
                continue
            if closed(s):
                done[i] = round(time.time() - start, 2)
                continue
            try:
                s.send(q[sent[i] % len(q):sent[i] % len(q) + 1])
                sent[i] += 1
            except OSError:
                done[i] = round(time.time() - start, 2)
    print(json.dumps({"closed_after": sorted(done.values()), "open": len(socks) - len(done)}),
          flush=True)
elif mode == "partial":
    # Queries of the largest size that never arrive whole.
    for src in spec["sources"]:
        for _ in range(spec["per_source"]):
            s = connect(src)
            s.sendall(b"\xff\xff" + b"x" * 100)
            socks.append(s)
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
elif mode == "per_source":
    first = []
    for _ in range(spec["per_source"]):
        s = connect(spec["source"])
        ask(s, spec["name"])
        first.append(s)
    extra = connect(spec["source"])
    extra.settimeout(3)
    try:
        extra.sendall(query(spec["name"]))
        refused = extra.recv(2) == b""
    except (OSError, socket.timeout) as e:
        refused = not isinstance(e, socket.timeout)
    still = sum(1 for s in first if len(ask(s, spec["name"])) > 12)
    print(json.dumps({"refused": refused, "still_answering": still}), flush=True)
"""


def helper(ferry, spec, timeout=60):
    spec = dict(spec, dns=DNS)
    r = ferry.client([PYTHON, "-c", HELPER, json.dumps(spec)], timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr + ferry.log()
    return [json.loads(line) for line in r.stdout.splitlines()]


class Background:
    """The helper in the background: started, waited for its "ready" line."""

    def __init__(self, ferry, spec):
        spec = dict(spec, dns=DNS)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ferry.client_ns, PYTHON, "-c", HELPER, json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        self.ready = json.loads(line)

    def finish(self, timeout=60):
        out, err = self.proc.communicate("go\n", timeout=timeout)
        assert self.proc.returncode == 0, err
        return [json.loads(line) for line in out.splitlines()]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture(scope="module")
def sources(ferry):
    batch = "".join(f"addr add {a}/24 dev eth0\n" for a in SOURCES)
    r = ferry.client(["ip", "-batch", "-"], input=batch)
    assert r.returncode == 0, r.stderr
    return SOURCES


def rss_kib(ferry):
    with open(f"/proc/{ferry.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def tcp_stats(ferry):
    return ferry.stats()["dns"]["tcp"]


def dig_tcp(ferry, name=f"web.shop.svc.{ZONE}"):
    r = ferry.client(["dig", f"@{DNS}", "+tcp", "+time=3", "+tries=1", "+short", name],
                     timeout=20)
    return r.stdout.split()


def wait_idle_server(ferry):
    # The connections of an earlier test are gone: its client was killed or closed them, and
    # the server sees that within a poll round.
    time.sleep(1)


def test_pipelined_queries_never_read_keep_memory_bounded(ferry, sources):
    assert len(dig_tcp(ferry, f"big.data.svc.{ZONE}")) == 1000
    before = rss_kib(ferry)
    # 8 connections, each with 4000 pipelined queries (~200 KB) whose answers (~16 KB each,
    # 64 MB per connection) are never read. Before the fix every answer was queued in ferryd.
    bg = Background(ferry, {"mode": "pipeline", "name": f"big.data.svc.{ZONE}",
                            "queries": 4000, "sources": sources[:2], "per_source": PER_SOURCE,
                            "hold": 3})
    try:
        time.sleep(2)
        grown = (rss_kib(ferry) - before) // 1024
        # Other clients are still answered meanwhile.
        assert dig_tcp(ferry) == ["198.19.0.30"], ferry.log()
    finally:
        bg.kill()
    print(f"ferryd RSS grew {grown} MiB")  # shown by pytest -s
    assert grown < 32, f"ferryd RSS grew {grown} MiB\n{ferry.log()}"
    st = tcp_stats(ferry)
    assert st["noerror"] >= 8, st


def test_slow_drip_is_cut_by_the_deadline_and_dig_still_answers(ferry, sources):
    wait_idle_server(ferry)
    before = tcp_stats(ferry)
    n = MAX_CONNECTIONS // PER_SOURCE
    # Every slot held by a client sending one byte every 0.3 s (each byte used to reset
    # the idle timer, so they held their slots for ever).
    bg = Background(ferry, {"mode": "drip", "name": f"web.shop.svc.{ZONE}", "every": 0.3,
                            "seconds": MESSAGE_TIMEOUT + IDLE_TIMEOUT + 2,
                            "sources": sources[:n], "per_source": PER_SOURCE})
    try:
        assert dig_tcp(ferry) == ["198.19.0.30"], ferry.log()
        out = bg.finish()[-1]
    finally:
        bg.kill()
    # All closed, each within its deadline (plus the server's 0.2 s poll and our 0.3 s).
    assert out["open"] == 0, out
    assert max(out["closed_after"]) < MESSAGE_TIMEOUT + 1.5, out
    after = tcp_stats(ferry)
    closed = (after["message_timeouts"] - before["message_timeouts"]
              + after["evicted"] - before["evicted"])
    assert closed >= MAX_CONNECTIONS and after["message_timeouts"] > before["message_timeouts"]


def test_full_table_evicts_the_oldest_idle_connection(ferry, sources):
    wait_idle_server(ferry)
    before = tcp_stats(ferry)
    n = MAX_CONNECTIONS // PER_SOURCE
    bg = Background(ferry, {"mode": "idle", "name": f"web.shop.svc.{ZONE}",
                            "sources": sources[:n], "per_source": PER_SOURCE})
    try:
        # Every slot taken by an idle connection: the new one is served, the oldest goes.
        assert dig_tcp(ferry) == ["198.19.0.30"], ferry.log()
        out = bg.finish()[-1]
    finally:
        bg.kill()
    assert out["closed"] == [0], out
    assert tcp_stats(ferry)["evicted"] == before["evicted"] + 1


def test_one_source_gets_at_most_its_share(ferry, sources):
    wait_idle_server(ferry)
    before = tcp_stats(ferry)
    out = helper(ferry, {"mode": "per_source", "name": f"web.shop.svc.{ZONE}",
                         "source": sources[-1], "per_source": PER_SOURCE})[-1]
    assert out == {"refused": True, "still_answering": PER_SOURCE}, out
    assert tcp_stats(ferry)["refused_connections"] == before["refused_connections"] + 1


def test_memory_budget_holds_partial_queries_not_whole_ones(ferry, sources):
    wait_idle_server(ferry)
    before = tcp_stats(ferry)
    # Five 64 KiB queries begun, never finished: four fit tcp_memory, the fifth waits.
    bg = Background(ferry, {"mode": "partial", "sources": sources[:2], "per_source": 3})
    try:
        time.sleep(0.5)
        # A query that arrives whole needs no buffer: answered at once meanwhile.
        assert dig_tcp(ferry) == ["198.19.0.30"], ferry.log()
        mid = tcp_stats(ferry)
        # Then each is closed by its deadline (the waiting ones too).
        time.sleep(MESSAGE_TIMEOUT + 0.7)
        after = tcp_stats(ferry)
        bg.finish()
    finally:
        bg.kill()
    assert mid["memory_limited"] >= before["memory_limited"] + 2, mid
    assert after["message_timeouts"] >= before["message_timeouts"] + 6, after
