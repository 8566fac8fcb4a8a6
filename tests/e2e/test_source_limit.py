"""Per-source new-flow limit ([limits] new_flows_per_source): a client opening connections
fast from one address gets some of them refused (drop reason source_rate_limited) while a
second address of the same client namespace, and the first one's established connection,
are unaffected."""
import subprocess

from conftest import PYTHON, VIP

RATE = 5
FERRY_TOML = f"[limits]\nnew_flows_per_source = {RATE}\nnew_flows_burst = {RATE}\n"
SECOND = "198.18.0.2"

# Opens `n` connections to VIP:80 from `source` as fast as it can, each with a short
# timeout (a refused SYN is dropped: without an answer the connect times out); prints how
# many connected. With keep=1 it first opens one connection and after the burst sends a
# request on it, printing "kept <pod>" when the answer came.
CLIENT = """
import socket, sys
source, n, keep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def conn(timeout):
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(timeout)
    s.connect(("{vip}", 80))
    return s
kept = conn(2) if keep else None
ok = 0
for _ in range(n):
    try:
        conn(0.15).close()
        ok += 1
    except OSError:
        pass
print("connected", ok, flush=True)
if kept:
    kept.settimeout(3)
    kept.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    got = b""
    while b"my-app" not in got or not got.endswith(b"\\n"):
        chunk = kept.recv(1000)
        if not chunk:
            break
        got += chunk
    print("kept", got.split()[-1].decode(), flush=True)
""".format(vip=VIP)


def drops(ferry):
    return ferry.stats()["drops"].get("source_rate_limited", 0)


def run_client(ferry, source, n, keep=0):
    r = ferry.client([PYTHON, "-c", CLIENT, source, str(n), str(keep)], timeout=60)
    assert r.returncode == 0, r.stderr
    out = dict(line.split(None, 1) for line in r.stdout.splitlines())
    return int(out["connected"]), out.get("kept")


def test_fast_source_is_limited_and_others_are_not(ferry):
    r = ferry.client(["ip", "addr", "add", f"{SECOND}/24", "dev", "eth0"])
    assert r.returncode == 0, r.stderr
    before = drops(ferry)
    # 40 connections in well under the time 40 tokens take to come back (8 s at 5/s).
    connected, kept = run_client(ferry, "198.18.0.1", 40, keep=1)
    refused = drops(ferry) - before
    assert refused > 0, ferry.log()
    assert connected <= 32, connected
    # Its established connection was never limited.
    assert kept and kept.startswith("my-app"), kept
    # The other address has a bucket of its own: its burst all connects.
    before = drops(ferry)
    connected, _ = run_client(ferry, SECOND, RATE)
    assert connected == RATE, (connected, ferry.log())
    assert drops(ferry) == before
