"""End-to-end fixtures: a namespace network (scripts/topology.sh), pod servers, and a ferryd
with its own config, control socket and EAL file prefix, torn down even when a test fails.

Every test module gets its own network (prefix "e<pid><n>") and its own ferryd; a module can
tune that ferryd with module-level variables:

    FERRY_LCORES = "0@0,1@1,2@1"   # EAL --lcores instead of -l 0,1 (two workers on 2 CPUs)
    FERRY_CONNTRACK = {"udp_timeout": 2}   # keys of the [conntrack] table
    FERRY_TOML = "[neighbor]\\ntimeout = 60\\n"  # extra TOML appended to the config
    FERRY_MANIFESTS = {"extra.yaml": "..."}        # extra manifest files in the sources dir
    FERRY_EAL_MEMORY = ["-m", "128"]   # instead of --no-huge -m 512 (hugepages: the module
                                       # reserves them; needed by secondary processes)

All traffic stays inside 198.18.0.0/15 and the namespaces made here.
"""
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FERRYD = ROOT / "build" / "tools" / "ferryd"
FERRYCTL = ROOT / "build" / "tools" / "ferryctl"
TOPOLOGY = ROOT / "scripts" / "topology.sh"
POD_SERVER = ROOT / "scripts" / "pod_server.py"
PYTHON = "/usr/bin/python3"

VIP = "198.19.0.10"       # my-service, TCP 80 -> 9376
UDP_VIP = "198.19.0.20"   # dns-like, UDP 53 -> 9376
REDIS_VIP = "198.19.0.11"  # redis-master, TCP 6379
LB_POOL = "198.18.0.240/29"  # LoadBalancer addresses ferryd hands out, on the client's subnet
POD_IPS = {"my-app-1": "198.18.1.11", "my-app-2": "198.18.1.12", "my-app-3": "198.18.1.13"}
PODS = set(POD_IPS)

_counter = itertools.count(1)


def unique_prefix():
    # Short: topology.sh makes interface names like PREFIX-fe0 (at most 15 characters).
    return f"e{os.getpid() % 100000}{next(_counter)}"


# ---- Manifests -------------------------------------------------------------------------------

SEED_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  clusterIP: 198.19.0.10
  selector:
    app: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
"""


def endpoint_slice(name, service, ips, protocol="TCP", port=9376, port_name=""):
    """An EndpointSlice manifest for `service` with the given pod addresses (ready)."""
    eps = "".join(
        f"  - addresses: [\"{ip}\"]\n    conditions: {{ready: true}}\n" for ip in ips
    )
    return (
        "apiVersion: discovery.k8s.io/v1\n"
        "kind: EndpointSlice\n"
        "metadata:\n"
        f"  name: {name}\n"
        f"  labels: {{kubernetes.io/service-name: {service}}}\n"
        "addressType: IPv4\n"
        f"ports: [{{name: \"{port_name}\", protocol: {protocol}, port: {port}}}]\n"
        + (f"endpoints:\n{eps}" if ips else "endpoints: []\n")
    )


def my_service_slice(ips=tuple(POD_IPS.values())):
    return endpoint_slice("my-service-abc12", "my-service", ips)


UDP_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: dns-like
spec:
  clusterIP: 198.19.0.20
  ports:
    - name: dns
      protocol: UDP
      port: 53
      targetPort: 9376
"""


def udp_slice(ips=tuple(POD_IPS.values())):
    return endpoint_slice("dns-like-x1", "dns-like", ips, protocol="UDP", port_name="dns")


REDIS = """\
apiVersion: v1
kind: Service
metadata:
  name: redis-master
spec:
  clusterIP: 198.19.0.11
  ports:
    - protocol: TCP
      port: 6379
      targetPort: 6379
---
apiVersion: v1
kind: Endpoints
metadata:
  name: redis-master
subsets:
  - addresses:
      - ip: 198.18.1.21
    ports:
      - port: 6379
        protocol: TCP
"""


def default_manifests():
    return {
        "10-my-service.yaml": SEED_SERVICE + "---\n" + my_service_slice(),
        "20-dns-like.yaml": UDP_SERVICE + "---\n" + udp_slice(),
        "30-redis.yaml": REDIS,
    }


def config_toml(prefix, tmp, manifests_dir, lcores=None, extra="", conntrack=None,
                eal_memory=None):
    memory = ", ".join(f'"{a}"' for a in (eal_memory or ["--no-huge", "-m", "512"]))
    if lcores:
        cores = f'"--lcores", "{lcores}"'
    else:
        cores = '"-l", "0,1"'
    conntrack_lines = "".join(f"{k} = {v}\n" for k, v in (conntrack or {}).items())
    return f"""\
[node]
name = "{prefix}"

[dataplane]
eal_args = [{cores}, {memory}, "--no-pci", "--file-prefix", "{prefix}",
            "--log-level", "*:notice"]
mbufs = 8191
idle_sleep_us = 20

[[port]]
name = "eth0"
device = "net_af_packet0,iface=fe0"
address = "198.18.0.254/24"

[[port]]
name = "eth1"
device = "net_af_packet1,iface=fe1"
address = "198.18.1.254/24"

[control]
socket = "{tmp}/ferry.sock"

[services]
service_cidr = "198.19.0.0/16"
load_balancer_pool = ["{LB_POOL}"]

[sources]
manifests = ["{manifests_dir}"]

[conntrack]
capacity = 65536
{conntrack_lines}
{extra}"""


# ---- Processes -------------------------------------------------------------------------------

def run(cmd, timeout=10, check=False, input=None, **kw):
    """subprocess.run with a timeout, text output captured."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check,
                          input=input, **kw)


def stop(proc, term_wait=5.0):
    """SIGTERM, then SIGKILL if it lingers; returns the exit status."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=term_wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=5)


class Ferry:
    """One topology plus one ferryd, and the helpers tests use to drive them."""

    def __init__(self, prefix, tmp):
        self.prefix = prefix
        self.tmp = Path(tmp)
        self.socket = self.tmp / "ferry.sock"
        self.manifests = self.tmp / "manifests"
        self.config = self.tmp / "ferry.toml"
        self.log_path = self.tmp / "ferryd.log"
        self.proc = None
        self.pods = []
        self._log = None

    # -- names
    def ns(self, what):
        return f"{self.prefix}-{what}"

    @property
    def client_ns(self):
        return self.ns("client")

    @property
    def node_ns(self):
        return self.ns("node")

    # -- helpers for tests
    def netns(self, ns, cmd, timeout=10, **kw):
        """Runs cmd (a list, or a string for sh -c) in namespace ns."""
        if isinstance(cmd, str):
            cmd = ["sh", "-c", cmd]
        return run(["ip", "netns", "exec", ns, *cmd], timeout=timeout, **kw)

    def client(self, cmd, timeout=10, **kw):
        return self.netns(self.client_ns, cmd, timeout=timeout, **kw)

    def client_py(self, code, timeout=15):
        """Runs Python code (scapy available) in the client namespace; returns CompletedProcess."""
        return self.netns(self.client_ns, [PYTHON, "-c", code], timeout=timeout)

    def ferryctl(self, *args, input=None, timeout=10):
        env = dict(os.environ, FERRY_SOCKET=str(self.socket))
        return run([str(FERRYCTL), *args], timeout=timeout, input=input, env=env)

    def apply(self, text):
        r = self.ferryctl("apply", "-f", "-", input=text)
        assert r.returncode == 0, f"ferryctl apply failed: {r.stderr}"
        return r

    def stats(self):
        r = self.ferryctl("stats", "-o", "json")
        assert r.returncode == 0, f"ferryctl stats failed: {r.stderr}\n{self.log()}"
        return json.loads(r.stdout)

    def flows(self, limit=10000):
        r = self.ferryctl("get", "flows", "-o", "json", "--limit", str(limit))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def service_stats(self, name, port=None):
        """The stats entry of a service port; named "ns/name" or "ns/name:portname"."""
        for s in self.stats()["services"]:
            if s["name"].split(":")[0] == name and (port is None or s["port"] == port):
                return s
        raise AssertionError(f"no service {name} in stats")

    def curl(self, url, *opts, timeout=10, max_time=5):
        return self.client(["curl", "-sS", "-m", str(max_time), *opts, url], timeout=timeout)

    def log(self):
        """ferryd's log tail, and while it runs its counters and flows: what a failure shows."""
        try:
            text = "--- ferryd log ---\n" + self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            text = ""
        if self.alive():
            for what in (["stats"], ["get", "flows", "--limit", "40"]):
                try:
                    r = self.ferryctl(*what, timeout=3)
                    text += f"\n--- ferryctl {' '.join(what)} ---\n{r.stdout}{r.stderr}"
                except subprocess.TimeoutExpired:
                    text += f"\n--- ferryctl {' '.join(what)}: timed out ---\n"
        return text

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # -- lifecycle
    def write_manifests(self, files):
        self.manifests.mkdir(exist_ok=True)
        for name, text in files.items():
            (self.manifests / name).write_text(text)

    def topology_up(self):
        r = run(["bash", str(TOPOLOGY), "up", self.prefix], timeout=60)
        assert r.returncode == 0, f"topology up failed: {r.stdout}{r.stderr}"

    def start_pods(self):
        for i, name in enumerate(sorted(PODS), start=1):
            self.pods.append(subprocess.Popen(
                ["ip", "netns", "exec", self.ns(f"pod{i}"), PYTHON, str(POD_SERVER),
                 "--name", name, "--http", "9376", "--udp", "9376"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if shutil.which("redis-server"):
            redis = ["redis-server", "--port", "6379", "--bind", "0.0.0.0", "--save", "",
                     "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no"]
        else:
            redis = [PYTHON, str(POD_SERVER), "--name", "redis", "--http", "6379"]
        self.pods.append(subprocess.Popen(["ip", "netns", "exec", self.ns("redis"), *redis],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        # Wait until every pod listens (checked inside each pod's namespace).
        deadline = time.time() + 10
        for ns, port in [("pod1", 9376), ("pod2", 9376), ("pod3", 9376), ("redis", 6379)]:
            while True:
                r = self.netns(self.ns(ns), ["ss", "-Hltn", f"sport = :{port}"], timeout=5)
                if r.stdout.strip():
                    break
                assert time.time() < deadline, f"{ns} server did not start"
                time.sleep(0.05)

    def start_ferryd(self, config_text=None):
        if config_text is not None:
            self.config.write_text(config_text)
        if self._log:
            self._log.close()
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.node_ns, str(FERRYD), "--config", str(self.config)],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"ferryd exited with {self.proc.returncode}\n{self.log()}")
            if self.socket.exists():
                r = self.ferryctl("get", "svc", timeout=5)
                if r.returncode == 0:
                    break
            if time.time() > deadline:
                raise AssertionError(f"ferryd did not answer within 20 s\n{self.log()}")
            time.sleep(0.1)

    def run_second(self, prefix_suffix="", socket=None):
        """Another ferryd, run to its exit in the node namespace, with this one's config but
        its own EAL file prefix (this prefix + prefix_suffix) and/or control socket path; for
        tests of what a second instance is refused. Returns (its config path, the result)."""
        text = self.config.read_text()
        if prefix_suffix:
            text = text.replace(f'"--file-prefix", "{self.prefix}"',
                                f'"--file-prefix", "{self.prefix}{prefix_suffix}"')
        if socket:
            text = text.replace(str(self.socket), str(socket))
        second = self.tmp / "second.toml"
        second.write_text(text)
        try:
            return second, subprocess.run(
                ["ip", "netns", "exec", self.node_ns, str(FERRYD), "--config", str(second)],
                capture_output=True, text=True, timeout=20)
        finally:
            if prefix_suffix:
                subprocess.run(["rm", "-rf", f"/var/run/dpdk/{self.prefix}{prefix_suffix}"],
                               timeout=10)

    def stop_ferryd(self):
        """SIGTERM; returns ferryd's exit status (SIGKILL after 5 s gives a negative one)."""
        rc = stop(self.proc)
        self.proc = None
        return rc

    def teardown(self):
        try:
            stop(self.proc)
        finally:
            if self._log:
                self._log.close()
            for p in self.pods:
                try:
                    stop(p, term_wait=2)
                except Exception:
                    pass
            run(["bash", str(TOPOLOGY), "down", self.prefix], timeout=60)
            shutil.rmtree(f"/var/run/dpdk/{self.prefix}", ignore_errors=True)


def _preflight():
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root (network namespaces, af_packet)")
    for path in (FERRYD, FERRYCTL):
        if not path.exists():
            pytest.fail(f"{path} is missing: build first (ninja -C build)")


@pytest.fixture(scope="module")
def ferry(request):
    """A running ferryd in its own topology, configured from the test module's variables."""
    _preflight()
    mod = request.module
    tmp = tempfile.mkdtemp(prefix="ferry-e2e-")
    f = Ferry(unique_prefix(), tmp)
    try:
        manifests = default_manifests()
        manifests.update(getattr(mod, "FERRY_MANIFESTS", {}))
        f.write_manifests(manifests)
        f.topology_up()
        f.start_pods()
        f.start_ferryd(config_toml(f.prefix, tmp, f.manifests,
                                   lcores=getattr(mod, "FERRY_LCORES", None),
                                   extra=getattr(mod, "FERRY_TOML", ""),
                                   conntrack=getattr(mod, "FERRY_CONNTRACK", None),
                                   eal_memory=getattr(mod, "FERRY_EAL_MEMORY", None)))
        yield f
        assert f.alive(), f"ferryd is not running after the tests\n{f.log()}"
    finally:
        f.teardown()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def tmpdir_path():
    """A temp dir; a ferryd started with its name as EAL --file-prefix is cleaned up too."""
    d = Path(tempfile.mkdtemp(prefix="ferry-e2e-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(f"/var/run/dpdk/{d.name}", ignore_errors=True)


# ---- Shared checks ---------------------------------------------------------------------------

def curl_names(ferry, n, url=f"http://{VIP}/"):
    """n sequential requests; asserts each succeeds and returns the answering pod names."""
    script = (
        f"for i in $(seq {n}); do curl -sS -m 3 {url} || echo \"FAILED $?\"; done"
    )
    r = ferry.client(script, timeout=5 + n * 4)
    lines = r.stdout.split()
    failed = [l for l in r.stdout.splitlines() if l.startswith("FAILED")]
    assert not failed, f"{len(failed)} of {n} requests failed: {r.stderr}\n{ferry.log()}"
    assert len(lines) == n, r.stdout
    return lines


@contextlib.contextmanager
def slow_stream(ferry, seconds=6):
    """A curl from the client reading my-service's /slow/<seconds> (the pod's name every
    0.2 s for that long); yields the pod that answers. On leaving, the stream must have run
    to its end, every line from that same pod; curl is killed if the with's body failed."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ferry.client_ns, "curl", "-sS", "-N", "-m", "20",
         f"http://{VIP}/slow/{seconds}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().strip()
        assert first in PODS, first
        yield first
        out, err = proc.communicate(timeout=25)
        body = [first] + out.split()
        assert proc.returncode == 0, f"curl exit {proc.returncode}: {err}\n{ferry.log()}"
        assert set(body) == {first} and len(body) >= seconds, body
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
