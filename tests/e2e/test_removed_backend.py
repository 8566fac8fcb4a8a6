"""Removed-backend grace ([conntrack] removed_backend_grace, 2 s here): a stream to a pod
whose endpoint is deleted keeps flowing for the grace, then its flow is flushed and nothing
more reaches that pod (seen by a packet recorder in the pod's namespace); a UDP flow of a
removed pod moves to a live pod at once."""
import json
import subprocess
import time
from pathlib import Path

from conftest import PODS, POD_IPS, PYTHON, ROOT, UDP_VIP, VIP, my_service_slice, udp_slice

GRACE = 2
FERRY_CONNTRACK = {"removed_backend_grace": GRACE}
SNIFF = ROOT / "scripts" / "pod_sniff.py"
POD_NS = {name: f"pod{i}" for i, name in enumerate(sorted(PODS), start=1)}


def sniff(ferry, pod, out):
    proc = subprocess.Popen(["ip", "netns", "exec", ferry.ns(POD_NS[pod]), PYTHON, str(SNIFF),
                             "--out", str(out), "--every", "0.01"])
    deadline = time.time() + 5
    while not (out.exists() and out.read_text().strip()):
        assert time.time() < deadline, "pod_sniff did not start"
        time.sleep(0.05)
    return proc


def arrivals(out, proto, port):
    times = []
    for line in Path(out).read_text().splitlines():
        t, p, dport = line.split()
        if p == proto and int(dport) == port:
            times.append(float(t))
    return times


def test_stream_to_a_deleted_endpoint_flows_for_the_grace_then_stops(ferry):
    ferry.apply(my_service_slice())
    stream = subprocess.Popen(
        ["ip", "netns", "exec", ferry.client_ns, "curl", "-sS", "-N", "-m", "20",
         f"http://{VIP}/slow/12"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    recorder = None
    try:
        pod = stream.stdout.readline().strip()
        assert pod in PODS, f"{pod!r}\n{ferry.log()}"
        out = ferry.tmp / f"sniff-{pod}.txt"
        recorder = sniff(ferry, pod, out)
        removed = time.time()
        ferry.apply(my_service_slice([POD_IPS[n] for n in sorted(PODS - {pod})]))
        # Lines keep coming from the same pod through the grace.
        lines = []
        while time.time() < removed + GRACE - 0.3:
            line = stream.stdout.readline().strip()
            if not line:
                break
            lines.append((time.time(), line))
        assert lines and lines[-1][0] > removed + GRACE - 0.8, (lines, ferry.log())
        assert {name for _, name in lines} == {pod}, lines
        # Past the grace (plus the control loop's 0.2 s tick) the flow is gone: the client's
        # next segments go to a live pod, which resets them; none reaches the removed pod.
        time.sleep(GRACE + 3)
        flows = ferry.ferryctl("get", "flows", "--backend", f"{POD_IPS[pod]}:9376", "-o", "json")
        assert flows.returncode == 0, flows.stderr
        assert json.loads(flows.stdout)["matched"] == 0, flows.stdout
    finally:
        if stream.poll() is None:
            stream.kill()
        stream.wait()
        if recorder:
            recorder.terminate()
            recorder.wait(timeout=5)
    seen = arrivals(out, "tcp", 9376)
    assert seen and seen[0] < removed + GRACE, seen  # it did flow during the grace
    late = [t - removed for t in seen if t > removed + GRACE + 1]
    assert not late, f"packets reached the removed pod {late} s after its removal\n{ferry.log()}"
    assert "removed backend" in ferry.log(), ferry.log()
    ferry.apply(my_service_slice())


def test_udp_flow_of_a_removed_pod_moves_at_once(ferry):
    ferry.apply(udp_slice())
    code = f"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
def ask():
    s.sendto(b"q", ("{UDP_VIP}", 53))
    return s.recv(100).split()[0].decode()
first = ask()
print(first, flush=True)
sys.stdin.readline()          # the endpoint is removed now
print(ask(), flush=True)
"""
    proc = subprocess.Popen(["ip", "netns", "exec", ferry.client_ns, PYTHON, "-c", code],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().strip()
        assert first in PODS, first
        ferry.apply(udp_slice([POD_IPS[n] for n in sorted(PODS - {first})]))
        proc.stdin.write("\n")
        proc.stdin.flush()
        second = proc.stdout.readline().strip()
        # The same 5-tuple, well within udp_timeout: only the flush moves it.
        assert second in PODS - {first}, (first, second, ferry.log())
    finally:
        proc.kill()
        proc.wait()
        ferry.apply(udp_slice())
