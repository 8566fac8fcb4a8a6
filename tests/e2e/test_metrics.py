"""GET /metrics: the Prometheus text of ferryd's counters, scraped from inside the node's
namespace while traffic runs, and the HTTP server's answers to everything else.

The module's ferryd keeps the default [metrics] address, 127.0.0.1:9100: it runs in its own
network namespace (PREFIX-node, loopback up), so the port is its own even while other
modules' ferryds run, and the default is what the last tests check."""
import re
import subprocess

import pytest

from conftest import SEED_SERVICE, curl_names, endpoint_slice

ADDRESS = "127.0.0.1:9100"
URL = f"http://{ADDRESS}/metrics"

# ---- parsing -------------------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def _unescape(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse(text):
    """Strict reader of text format 0.0.4 as ferryd writes it: every family's HELP and TYPE
    first, its samples together. Returns ({(name, frozenset(labels)): value}, {family: type})."""
    samples, types, done, current = {}, {}, set(), None
    assert text.endswith("\n"), "the exposition ends with a newline"
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in done and name not in types, f"family {name} twice"
            if current:
                done.add(current)
            current = name
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current, f"TYPE {name} without its HELP"
            assert kind in ("counter", "gauge", "histogram"), line
            types[name] = kind
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels_text, value = m.groups()
        family = name
        if types.get(current) == "histogram":
            family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert family == current, f"{name} outside its family ({current})"
        labels = {}
        rest = labels_text or ""
        while rest:
            lm = _LABEL.match(rest)
            assert lm, f"bad labels in {line!r}"
            labels[lm.group(1)] = _unescape(lm.group(2))
            rest = rest[lm.end():]
        key = (name, frozenset(labels.items()))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return samples, types


def scrape(ferry, url=URL):
    r = ferry.netns(ferry.node_ns, ["curl", "-sS", "-m", "5", "--fail", url])
    assert r.returncode == 0, f"curl {url}: {r.stderr}\n{ferry.log()}"
    return r.stdout


def value(samples, name, **labels):
    key = (name, frozenset((k, str(v)) for k, v in labels.items()))
    assert key in samples, f"no {name}{labels}; have: " + "; ".join(
        str(dict(l)) for n, l in samples if n == name)
    return samples[key]


def http_code(ferry, *args, url=URL):
    r = ferry.netns(ferry.node_ns, ["curl", "-s", "-m", "5", "-o", "/dev/null",
                                    "-w", "%{http_code}", *args, url])
    return r.stdout.strip()


SERVICE = dict(service="default/my-service", vip="198.19.0.10", port=80, protocol="TCP")

# ---- tests ---------------------------------------------------------------------------------


def test_counters_follow_traffic(ferry):
    before, types = parse(scrape(ferry))
    assert types["ferry_port_rx_packets_total"] == "counter"
    assert types["ferry_conntrack_flows"] == "gauge"
    assert types["ferry_change_to_dataplane_seconds"] == "histogram"
    n = 20
    curl_names(ferry, n)
    after, _ = parse(scrape(ferry))

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    # Each HTTP exchange is several packets each way: client -> eth0 -> pod (eth1) and back.
    assert delta("ferry_port_rx_packets_total", port="eth0") >= 4 * n
    assert delta("ferry_port_tx_packets_total", port="eth1") >= 4 * n
    assert delta("ferry_port_rx_packets_total", port="eth1") >= 4 * n
    assert delta("ferry_port_tx_packets_total", port="eth0") >= 4 * n
    assert delta("ferry_port_rx_bytes_total", port="eth0") > 60 * 4 * n
    assert delta("ferry_worker_rx_packets_total", worker=0, lcore=1) >= 8 * n
    assert delta("ferry_service_new_flows_total", **SERVICE) == n
    assert delta("ferry_service_packets_total", **SERVICE) >= 4 * n
    assert delta("ferry_service_bytes_total", **SERVICE) > 0
    assert delta("ferry_conntrack_created_total") == n
    # Closed connections stay in the table for tcp_closing_timeout (30 s).
    assert value(after, "ferry_conntrack_flows") >= n
    assert value(after, "ferry_conntrack_capacity") == 65536

    # The same numbers as `ferryctl stats` (no traffic between the two reads).
    stats = ferry.stats()
    svc = ferry.service_stats("default/my-service", port=80)
    assert value(after, "ferry_service_packets_total", **SERVICE) == svc["packets"]
    assert value(after, "ferry_service_new_flows_total", **SERVICE) == svc["new_flows"]
    assert value(after, "ferry_conntrack_flows") == stats["flows"]["active"]
    for p in stats["ports"]:
        assert value(after, "ferry_port_tx_packets_total", port=p["name"]) == p["tx_packets"]
    # Every drop reason, zeros included.
    reasons = {dict(l)["reason"] for n_, l in after if n_ == "ferry_drops_total"}
    assert reasons == set(stats["drops"])
    assert value(after, "ferry_snapshot_generation") == stats["snapshot"]["generation"]


def test_apply_is_timed_to_its_publish(ferry):
    def histogram(samples, source):
        buckets = sorted((float(dict(l)["le"]), v) for (n, l), v in samples.items()
                         if n == "ferry_change_to_dataplane_seconds_bucket"
                         and dict(l)["source"] == source)
        count = value(samples, "ferry_change_to_dataplane_seconds_count", source=source)
        total = value(samples, "ferry_change_to_dataplane_seconds_sum", source=source)
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), "buckets are cumulative"
        assert buckets[-1] == (float("inf"), count)
        return count, total

    s0, _ = parse(scrape(ferry))
    # The start read the manifest files once; no Kubernetes source.
    assert histogram(s0, "file")[0] == 1
    assert histogram(s0, "kubernetes") == (0, 0)
    count0, sum0 = histogram(s0, "socket")
    gen0 = value(s0, "ferry_snapshot_generation")

    extra = SEED_SERVICE.replace("my-service", "timed").replace("198.19.0.10", "198.19.0.77")
    extra += "---\n" + endpoint_slice("timed-1", "timed", ["198.18.1.11"])
    ferry.apply(extra)
    s1, _ = parse(scrape(ferry))
    count1, sum1 = histogram(s1, "socket")
    assert count1 == count0 + 1
    assert sum0 < sum1 < sum0 + 5
    assert value(s1, "ferry_snapshot_generation") == gen0 + 1
    assert value(s1, "ferry_service_new_flows_total", service="default/timed",
                 vip="198.19.0.77", port=80, protocol="TCP") == 0

    # Applied again unchanged: nothing published, nothing observed. A read is not a change.
    ferry.apply(extra)
    assert ferry.ferryctl("get", "svc").returncode == 0
    s2, _ = parse(scrape(ferry))
    assert histogram(s2, "socket")[0] == count1
    assert value(s2, "ferry_snapshot_generation") == gen0 + 1


def test_reference_parser_reads_it(ferry):
    parser = pytest.importorskip("prometheus_client.parser")
    families = {f.name: f for f in parser.text_string_to_metric_families(scrape(ferry))}
    # The client strips _total from counter family names.
    assert families["ferry_port_rx_packets"].type == "counter"
    assert families["ferry_change_to_dataplane_seconds"].type == "histogram"
    assert families["ferry_build_info"].samples[0].labels["version"]
    assert {s.labels["reason"] for s in families["ferry_drops"].samples} == \
        set(ferry.stats()["drops"])


def test_http_answers(ferry):
    r = ferry.netns(ferry.node_ns, ["curl", "-sS", "-m", "5", "-D", "-", "-o", "/dev/null", URL])
    headers = r.stdout.splitlines()
    assert headers[0] == "HTTP/1.1 200 OK", r.stdout
    assert "Content-Type: text/plain; version=0.0.4; charset=utf-8" in headers
    assert http_code(ferry, "-I") == "200"  # HEAD
    assert http_code(ferry, url=f"http://{ADDRESS}/metrics?name[]=x") == "200"
    assert http_code(ferry, url=f"http://{ADDRESS}/nope") == "404"
    assert http_code(ferry, url=f"http://{ADDRESS}/metrics/") == "404"
    assert http_code(ferry, "-X", "POST", "-d", "x=1") == "405"
    assert http_code(ferry, "-X", "DELETE") == "405"
    r = ferry.netns(ferry.node_ns, ["curl", "-sS", "-m", "5", f"http://{ADDRESS}/healthz"])
    assert r.stdout == "ok\n"
    r = ferry.netns(ferry.node_ns, ["curl", "-sS", "-m", "5", f"http://{ADDRESS}/"])
    assert 'href="/metrics"' in r.stdout
    # A request that never ends does not hold the control thread: ferryctl still answers.
    hold = subprocess.Popen(["ip", "netns", "exec", ferry.node_ns, "nc", "-q", "10",
                             *ADDRESS.split(":")], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        hold.stdin.write(b"GET /metr")
        hold.stdin.flush()
        assert ferry.ferryctl("get", "svc", timeout=3).returncode == 0
        assert http_code(ferry) == "200"
    finally:
        hold.kill()
        hold.wait()


def test_loopback_only_by_default(ferry):
    r = ferry.netns(ferry.node_ns, ["ss", "-Hltn", "sport = :9100"])
    assert r.stdout.split()[3] == ADDRESS, r.stdout
    # An address of another interface in the same namespace: nothing listens there.
    ip = ["ip", "-n", ferry.node_ns]
    subprocess.run([*ip, "link", "add", "mtest0", "type", "veth", "peer", "name", "mtest1"],
                   check=True, timeout=10)
    try:
        subprocess.run([*ip, "addr", "add", "198.18.9.1/32", "dev", "mtest0"], check=True,
                       timeout=10)
        subprocess.run([*ip, "link", "set", "mtest0", "up"], check=True, timeout=10)
        r = ferry.netns(ferry.node_ns, ["curl", "-sS", "-m", "3", "http://198.18.9.1:9100/metrics"])
        assert r.returncode == 7, (r.returncode, r.stderr)  # connection refused
        assert scrape(ferry)  # while loopback answers
    finally:
        subprocess.run([*ip, "link", "del", "mtest0"], timeout=10)


def test_taken_metrics_address_refuses_start(ferry):
    # Its own socket and EAL prefix, the same (default) metrics address as the running one.
    second, r = ferry.run_second(prefix_suffix="m", socket=ferry.tmp / "second.sock")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert (f"{second}: metrics.address: cannot listen on {ADDRESS}: Address already in use"
            in out), out
    assert "EAL" not in out  # refused before it touched any device
    assert not (ferry.tmp / "second.sock").exists()
    assert ferry.alive()
    assert scrape(ferry)
