"""The control socket against a hostile or careless client (issue 16, items 1, 11 and 12), on a
live ferryd: requests nested 60,000 deep (120 KB) are refused and ferryd lives, idle
connections do not lock ferryctl out, unfinished large requests are held within a memory
budget and given back, and a request over the cap is refused with the key to raise."""
import json
import socket
import time

import pytest

DEEP = 60000  # levels: a 120 KB request, far under the request cap


def rss_mib(ferry):
    for line in open(f"/proc/{ferry.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def raw(ferry, data, timeout=10):
    """Sends bytes as one request; returns the decoded answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(ferry.socket))
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # ferryd stopped reading once it knew; its answer says why
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
    assert out, f"no answer to a {len(data)}-byte request"
    return json.loads(out)


def control_stats(ferry):
    return ferry.stats()["control_socket"]


@pytest.mark.parametrize("shape", [
    '{"op":"get","resource":"flows","service":%s}',   # a non-string filter
    '{"op":"get","resource":"flows","limit":%s}',
    '{"op":"weight","name":"my-service","address":"198.18.1.11","weight":%s}',
    '{"op":"flush","all":true,"extra":%s}',           # flush --all, a nested extra field
])
def test_deeply_nested_requests_are_refused_and_ferryd_lives(ferry, shape):
    deep = "[" * DEEP + "]" * DEEP
    answer = raw(ferry, (shape % deep).encode() + b"\n")
    assert answer == {"ok": False, "error": "bad request: nested deeper than 32 levels of "
                                            "arrays and objects"}, answer
    assert ferry.alive(), ferry.log()
    assert ferry.ferryctl("status").returncode == 0
    assert control_stats(ferry)["too_deep"] >= 1


def test_idle_connections_do_not_lock_ferryctl_out(ferry):
    evicted = control_stats(ferry)["evicted"]
    idle = []
    try:
        for _ in range(700):  # an authorised client holding connections, sending nothing
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(ferry.socket))
            idle.append(s)
        t0 = time.monotonic()
        r = ferry.ferryctl("--timeout", "4", "status", timeout=10)
        assert r.returncode == 0, r.stderr + ferry.log()
        assert time.monotonic() - t0 < 4
        # Oldest first: the first idle connection was told why it was closed.
        idle[0].settimeout(5)
        said = json.loads(idle[0].recv(65536))
        assert "idle longest" in said["error"], said
    finally:
        for s in idle:
            s.close()
    assert control_stats(ferry)["evicted"] - evicted >= 600


def test_unfinished_large_requests_share_a_memory_budget(ferry):
    cap = 4 << 20  # the default control.max_request_bytes
    before = rss_mib(ferry)
    dropped = control_stats(ferry)["over_budget"]
    held = []
    try:
        part = b'{"op":"apply","documents":[{"origin":"x","text":"' + b"x" * (cap - 4096)
        peak = before
        for _ in range(16):  # 64 MiB of unfinished requests, each under the cap
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(ferry.socket))
            s.sendall(part)
            held.append(s)
            peak = max(peak, rss_mib(ferry))
        time.sleep(0.5)
        peak = max(peak, rss_mib(ferry))
        stats = control_stats(ferry)
        # Budget: 2 x the cap (8 MiB) of requests; a buffer may hold twice its bytes as it grows.
        assert stats["buffered_bytes"] <= 2 * cap, stats
        assert peak - before < 32, (before, peak)
        assert stats["over_budget"] - dropped >= 14, stats
    finally:
        for s in held:
            s.close()
    time.sleep(0.5)
    assert ferry.ferryctl("status").returncode == 0
    assert control_stats(ferry)["buffered_bytes"] < 64  # the stats request itself
    # Given back, not kept by malloc for next time.
    assert rss_mib(ferry) - before < 16, (before, rss_mib(ferry))


def test_a_request_over_the_cap_names_the_key(ferry):
    text = "x" * (4 << 20)
    r = ferry.ferryctl("apply", "-f", "-", input=text, timeout=30)
    assert r.returncode == 1
    assert "request larger than 4194304 bytes (control.max_request_bytes)" in r.stderr, r.stderr
    assert control_stats(ferry)["too_large"] >= 1
