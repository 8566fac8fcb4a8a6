"""Packet capture and telemetry against a running ferryd: dpdk-dumpcap and dpdk-pdump attach
as DPDK secondary processes (rte_pdump) and see each port's traffic, the client's SYN to the
VIP on the client port and its DNATed copy on the pod port; the EAL telemetry socket answers.

Secondary processes map the primary's memory, which --no-huge memory cannot be: this module
runs ferryd on hugepages, reserving a few if the machine has too few free, and gives back
what it reserved and the page files ferryd and the capture tools leave behind."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from scapy.all import IP, TCP, rdpcap

from conftest import POD_IPS, VIP

FERRY_EAL_MEMORY = ["-m", "128"]  # 64 x 2 MiB pages up front; the tools' pools come on top
PAGES = 160                       # free 2 MiB pages wanted for ferryd plus the tools
DUMPCAP = shutil.which("dpdk-dumpcap")
PDUMP = shutil.which("dpdk-pdump")
NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")

_prefixes = set()  # EAL file prefixes whose page files are removed at the end


def _hugetlbfs():
    """Mount points of 2 MiB hugetlbfs."""
    out = []
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mnt, fstype, opts, *_ = line.split()
        if fstype == "hugetlbfs" and ("pagesize=2M" in opts or "pagesize" not in opts):
            out.append(mnt)
    return out


def _free_pages():
    m = re.search(r"^HugePages_Free:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)
    return int(m.group(1))


@pytest.fixture(scope="module", autouse=True)
def hugepages():
    """Enough free 2 MiB hugepages and a hugetlbfs mount (as perf/hugepages.sh makes), put
    back as they were afterwards. Runs before the ferry fixture and ends after it."""
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root (network namespaces, af_packet)")
    before = int(NR_HUGEPAGES.read_text())
    short = PAGES - _free_pages()
    if short > 0:
        NR_HUGEPAGES.write_text(str(before + short))
        if _free_pages() < PAGES:
            NR_HUGEPAGES.write_text(str(before))
            pytest.skip(f"cannot reserve {PAGES} free 2 MiB hugepages for ferryd and the "
                        "capture tools (memory too fragmented or too small)")
    mounted = None
    if not _hugetlbfs():
        mounted = Path("/dev/hugepages")
        mounted.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "nodev", str(mounted)],
                       check=True)
    mounts = _hugetlbfs()
    try:
        yield
    finally:
        # DPDK leaves its page files behind (a restarted primary reuses them); ours go.
        for mnt in mounts:
            for prefix in _prefixes:
                for f in Path(mnt).glob(f"{prefix}map_*"):
                    f.unlink(missing_ok=True)
        if mounted:
            subprocess.run(["umount", str(mounted)], check=False)
        if short > 0:
            NR_HUGEPAGES.write_text(str(before))


@pytest.fixture(autouse=True)
def _remember_prefix(ferry):
    _prefixes.add(ferry.prefix)


def need(tool, name):
    if not tool:
        pytest.skip(f"{name} is missing: scripts/install-deps.sh installs it (Debian package "
                    "dpdk-dev)")


def curl_until(ferry, procs, deadline_s=25):
    """Requests to the VIP, one after another, until every process in procs has exited."""
    deadline = time.time() + deadline_s
    while any(p.poll() is None for p in procs):
        assert time.time() < deadline, f"capture did not finish within {deadline_s} s"
        r = ferry.curl(f"http://{VIP}/", max_time=3)
        assert r.returncode == 0, f"curl failed during capture: {r.stderr}\n{ferry.log()}"
        time.sleep(0.1)


def syns(packets, dst=None, dport=None):
    """(src ip, src port, dst ip, dst port) of each TCP SYN (no ACK) in packets."""
    out = []
    for p in packets:
        if IP in p and TCP in p and p[TCP].flags & 0x12 == 0x02:
            t = (p[IP].src, p[TCP].sport, p[IP].dst, p[TCP].dport)
            if (dst is None or t[2] == dst) and (dport is None or t[3] == dport):
                out.append(t)
    return out


def test_dumpcap_sees_the_vip_on_the_client_port_and_the_pod_on_the_other(ferry, tmp_path):
    need(DUMPCAP, "dpdk-dumpcap")
    # dumpcap 22.11 captures one interface per run (of several -i the last wins): one each.
    files, procs = {}, []
    for port in ("net_af_packet0", "net_af_packet1"):
        files[port] = tmp_path / f"{port}.pcapng"
        procs.append(subprocess.Popen(
            [DUMPCAP, f"--file-prefix={ferry.prefix}", "-i", port, "-p", "-q",
             "-c", "40", "-a", "duration:30", "-w", str(files[port])],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        curl_until(ferry, procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p in procs:
        out = p.stdout.read()
        assert p.wait() == 0, f"dpdk-dumpcap failed: {out}\n{ferry.log()}"

    client_side = rdpcap(str(files["net_af_packet0"]))
    pod_side = rdpcap(str(files["net_af_packet1"]))
    assert len(client_side) >= 40 and len(pod_side) >= 40
    to_vip = syns(client_side, dst=VIP, dport=80)
    to_pods = syns(pod_side, dport=9376)
    assert to_vip, [p.summary() for p in client_side]
    assert to_pods, [p.summary() for p in pod_side]
    # The client port never shows pod addresses, the pod port never the VIP (DNAT).
    assert not syns(client_side, dport=9376) and not syns(pod_side, dst=VIP)
    assert {d for _, _, d, _ in to_pods} <= set(POD_IPS.values())
    # The same connections, seen before and after the DNAT.
    assert {(s, sp) for s, sp, _, _ in to_vip} & {(s, sp) for s, sp, _, _ in to_pods}

    # Capture over: the callbacks are gone and ferryd forwards on.
    assert ferry.alive(), ferry.log()
    assert ferry.curl(f"http://{VIP}/").returncode == 0


def test_pdump_writes_rx_and_tx_pcaps(ferry):
    need(PDUMP, "dpdk-pdump")
    # dpdk-pdump cuts rx-dev/tx-dev paths at 63 characters: a short directory.
    rx, tx = ferry.tmp / "rx.pcap", ferry.tmp / "tx.pcap"
    assert len(str(rx)) < 64
    p = subprocess.Popen(
        [PDUMP, f"--file-prefix={ferry.prefix}", "--",
         "--pdump", f"port=0,queue=*,rx-dev={rx},tx-dev={tx}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # pdump says nothing when it is attached; a few seconds of requests cover its start.
        end = time.time() + 4
        while time.time() < end:
            assert p.poll() is None, p.stdout.read()
            assert ferry.curl(f"http://{VIP}/", max_time=3).returncode == 0
            time.sleep(0.2)
    finally:
        p.send_signal(signal.SIGINT)  # it flushes and closes the files on SIGINT
        try:
            out, _ = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
    assert p.returncode == 0, out
    received, sent = rdpcap(str(rx)), rdpcap(str(tx))
    assert syns(received, dst=VIP, dport=80), [x.summary() for x in received]
    synacks = [x for x in sent if TCP in x and x[TCP].flags & 0x12 == 0x12]
    assert synacks and all(x[IP].src == VIP and x[TCP].sport == 80 for x in synacks)


def telemetry(sock, cmd):
    sock.send(cmd.encode())
    return json.loads(sock.recv(1 << 16))


def test_telemetry_socket_answers(ferry):
    path = f"/var/run/dpdk/{ferry.prefix}/dpdk_telemetry.v2"
    assert ferry.curl(f"http://{VIP}/").returncode == 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(5)
        s.connect(path)
        hello = json.loads(s.recv(1 << 16))
        assert hello["version"].startswith("DPDK 22.11")
        assert hello["pid"] == ferry.proc.pid  # ip netns exec execs ferryd in place
        assert telemetry(s, "/ethdev/list") == {"/ethdev/list": [0, 1]}
        info = telemetry(s, "/ethdev/info,0")["/ethdev/info"]
        assert info["name"] == "net_af_packet0" and info["dev_started"] == 1
        stats = telemetry(s, "/ethdev/stats,0")["/ethdev/stats"]
        assert stats["ipackets"] > 0 and stats["opackets"] > 0
        ours = {p["name"]: p for p in ferry.stats()["ports"]}["eth0"]
        again = telemetry(s, "/ethdev/stats,0")["/ethdev/stats"]
        # The same device counters ferryctl shows (read between the two telemetry reads).
        assert stats["ipackets"] <= ours["rx_packets"] <= again["ipackets"]
        assert "/ethdev/xstats" in telemetry(s, "/")["/"]

    # The stock client finds the socket from the file prefix.
    tool = shutil.which("dpdk-telemetry.py")
    if tool:
        r = subprocess.run([tool, "-f", ferry.prefix], input="/ethdev/list\n",
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and '"/ethdev/list": [' in r.stdout, r.stdout + r.stderr
