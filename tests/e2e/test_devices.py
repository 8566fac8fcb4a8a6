"""DPDK devices other than af_packet: ferryd's port setup is device-agnostic.

- net_tap: the client's link reaches ferryd through a kernel TAP interface (bridged to fe0).
- net_af_xdp: ferryd drives fe0 through an AF_XDP socket instead of an af_packet one.
- net_null / net_ring: ports without any kernel side; ferryd starts, answers and stops cleanly.
- a device DPDK cannot probe is refused, naming the config file, the port and the device.

Each test builds its own namespace network (prefix "fdev..."), with its own EAL file prefix,
and tears it down even when the test fails. All traffic stays inside 198.18.0.0/15.
"""
import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (FERRYD, PODS, Ferry, _preflight, config_toml, curl_names,
                      default_manifests, run)

ETH0_AF_PACKET = '"net_af_packet0,iface=fe0"'
ETH1_AF_PACKET = '"net_af_packet1,iface=fe1"'
BRIDGE = "fdevbr"
# The TAP PMD gives its kernel interface the port's own MAC. Enslaved as is, the bridge would
# take frames to that MAC as its own (a "permanent" local fdb entry) and never hand them to
# ftap0, so the kernel side gets another address before it joins the bridge.
TAP_KERNEL_MAC = "02:00:00:fd:e0:01"

_counter = itertools.count(1)


def device_prefix():
    # topology.sh makes interface names like PREFIX-fe0: at most 15 characters.
    return f"fdev{os.getpid() % 1000}{next(_counter)}"


def device_config(f, eth0=None, eth1=None):
    """conftest's config for f with the devices of eth0/eth1 replaced (TOML strings)."""
    text = config_toml(f.prefix, f.tmp, f.manifests)
    for old, new in ((ETH0_AF_PACKET, eth0), (ETH1_AF_PACKET, eth1)):
        if new is not None:
            assert old in text, old
            text = text.replace(old, f'"{new}"')
    return text


@contextlib.contextmanager
def device_ferry(network=True):
    """A Ferry (conftest's class) with its own prefix and temp dir, ferryd not yet started.
    network=True: the full topology and pod servers; False: only an empty PREFIX-node
    namespace for ferryd to run in (for devices without a kernel side)."""
    _preflight()
    tmp = tempfile.mkdtemp(prefix="fdev-")
    f = Ferry(device_prefix(), tmp)
    try:
        f.write_manifests(default_manifests())
        if network:
            f.topology_up()
            f.start_pods()
        else:
            run(["ip", "netns", "del", f.node_ns], timeout=10)
            run(["ip", "netns", "add", f.node_ns], timeout=10, check=True)
            run(["ip", "-n", f.node_ns, "link", "set", "lo", "up"], timeout=10, check=True)
        yield f
    finally:
        try:
            f.teardown()  # stops ferryd and pods, removes the namespaces and the EAL run dir
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def node_ip(f, *args, check=True):
    r = run(["ip", "-n", f.node_ns, *args], timeout=10)
    if check:
        assert r.returncode == 0, f"ip {' '.join(args)}: {r.stderr}"
    return r


def port_stats(f, name):
    ports = {p["name"]: p for p in f.stats()["ports"]}
    assert name in ports, ports
    return ports[name]


def start_or_explain(f, config_text):
    """Starts ferryd; None when it serves. When setting up port eth0 failed, why: ferryd's
    error plus what the PMD and libbpf/libxdp printed before it. Other failures raise."""
    try:
        f.start_ferryd(config_text)
        return None
    except AssertionError:
        lines = f.log_path.read_text(errors="replace").splitlines()
        error = [l for l in lines if 'port "eth0"' in l]
        pmd = [l.strip() for l in lines
               if l.strip() and not l.startswith("[") and not l.startswith(("TELEMETRY", "EAL"))]
        if not error:
            raise  # not a device problem: a real failure
        return "; ".join(pmd[-6:] + [error[-1].split("] ", 2)[-1]])


def clean_stop(f):
    rc = f.stop_ferryd()
    assert rc == 0, f"ferryd exit status {rc} after SIGTERM\n{f.log()}"
    assert not f.socket.exists()


# ---- net_tap --------------------------------------------------------------------------------

def test_tap_port_serves_clusterip():
    with device_ferry() as f:
        f.start_ferryd(device_config(f, eth0="net_tap0,iface=ftap0"))
        # The PMD made ftap0 in ferryd's namespace (and set it up when the port started).
        deadline = time.monotonic() + 10
        while node_ip(f, "link", "show", "ftap0", check=False).returncode != 0:
            assert time.monotonic() < deadline, f"no ftap0 in {f.node_ns}\n{f.log()}"
            time.sleep(0.1)
        ns = ["ip", "netns", "exec", f.node_ns]
        node_ip(f, "link", "set", "ftap0", "address", TAP_KERNEL_MAC)
        node_ip(f, "link", "add", BRIDGE, "type", "bridge")
        for dev in ("ftap0", BRIDGE):
            r = run([*ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"], timeout=10)
            assert r.returncode == 0, r.stderr
        for dev in ("fe0", "ftap0"):
            node_ip(f, "link", "set", dev, "master", BRIDGE)
        for dev in ("fe0", "ftap0", BRIDGE):
            node_ip(f, "link", "set", dev, "up")
        # The bridge forwards at once (no STP); the client learns the port's MAC by ARP.
        f.client(["ip", "neigh", "flush", "dev", "eth0"])

        names = curl_names(f, 10)
        assert len(set(names)) > 1 and set(names) <= PODS, names
        eth0 = port_stats(f, "eth0")
        assert eth0["rx_packets"] > 0 and eth0["tx_packets"] > 0, eth0
        assert eth0["rx_errors"] == 0, eth0
        assert f.service_stats("default/my-service", 80)["new_flows"] >= 10

        clean_stop(f)
        # Closing the port removes the TAP interface.
        assert node_ip(f, "link", "show", "ftap0", check=False).returncode != 0


# ---- net_af_xdp -----------------------------------------------------------------------------

def test_af_xdp_port_serves_clusterip():
    if not list(Path("/usr/lib").glob("*/dpdk/pmds-*/librte_net_af_xdp.so*")):
        pytest.skip("the DPDK af_xdp PMD is not installed")
    with device_ferry() as f:
        # One worker (-l 0,1): one queue, so fe0 needs only its one channel.
        why = start_or_explain(f, device_config(f, eth0="net_af_xdp0,iface=fe0"))
        if why is not None:
            pytest.skip(f"af_xdp port cannot start here: {why}")
        r = node_ip(f, "link", "show", "fe0")
        assert "xdp" in r.stdout, r.stdout  # the PMD's XDP program sits on fe0
        f.client(["ip", "neigh", "flush", "dev", "eth0"])

        names = curl_names(f, 10)
        assert len(set(names)) > 1 and set(names) <= PODS, names
        eth0 = port_stats(f, "eth0")
        assert eth0["rx_packets"] > 0 and eth0["tx_packets"] > 0, eth0
        assert f.service_stats("default/my-service", 80)["new_flows"] >= 10

        clean_stop(f)
        # Closing the port takes the XDP program off fe0 again.
        r = node_ip(f, "link", "show", "fe0")
        assert "xdp" not in r.stdout, r.stdout


# ---- net_null and net_ring ------------------------------------------------------------------

def test_null_and_ring_ports_start_answer_and_stop():
    with device_ferry(network=False) as f:
        f.start_ferryd(device_config(f, eth0="net_null0", eth1="net_ring0"))
        r = f.ferryctl("get", "svc")
        assert r.returncode == 0 and "my-service" in r.stdout, r.stdout + r.stderr
        s = f.stats()
        names = [p["name"] for p in s["ports"]]
        assert sorted(names) == ["eth0", "eth1"], s["ports"]
        # The null PMD's RX hands out a full burst of blank frames on every poll: the worker
        # polls it (and drops them) while the control socket keeps answering.
        deadline = time.monotonic() + 5
        while port_stats(f, "eth0")["rx_packets"] == 0:
            assert time.monotonic() < deadline, f"net_null0 never polled\n{f.log()}"
            time.sleep(0.05)
        assert f.ferryctl("get", "svc").returncode == 0
        assert f.alive()
        clean_stop(f)


# ---- a device DPDK cannot probe -------------------------------------------------------------

@pytest.mark.parametrize("port,eth0,eth1,bad", [
    ("eth0", "net_bogus0", "net_null1", "net_bogus0"),
    # The first port is up already when the second fails.
    ("eth1", "net_null0", "net_bogus1", "net_bogus1"),
    # A real driver with an argument it does not know.
    ("eth0", "net_null0,no_such_arg=1", "net_null1", "net_null0,no_such_arg=1"),
])
def test_bad_device_refused(tmpdir_path, port, eth0, eth1, bad):
    _preflight()
    d = tmpdir_path
    f = Ferry(d.name, d)  # EAL file prefix = the dir's name: tmpdir_path removes its run dir
    f.write_manifests(default_manifests())
    # In the host's namespace, where 127.0.0.1:9100 may be someone else's: metrics off.
    f.config.write_text(device_config(f, eth0=eth0, eth1=eth1) + '[metrics]\naddress = ""\n')
    # No kernel interface is involved: run ferryd as is, bounded.
    t0 = time.monotonic()
    try:
        r = subprocess.run([str(FERRYD), "--config", str(f.config)], capture_output=True,
                           text=True, timeout=20)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"ferryd kept running with device {bad!r}: {e.stdout}{e.stderr}")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert time.monotonic() - t0 < 10
    for word in (str(f.config), f'"{port}"', bad):
        assert word in out, f"{word!r} not in: {out}"
    assert not f.socket.exists(), os.listdir(d)
