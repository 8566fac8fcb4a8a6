"""ferryd's life: a second ferryd cannot take over a running one's control socket, SIGTERM
stops it cleanly, and a restarted ferryd picks up connections that were open before."""
import subprocess
import time

from conftest import FERRYD, PODS, VIP, curl_names


def test_second_ferryd_refused_first_keeps_serving(ferry):
    # Same config (socket, ports), its own EAL file prefix so EAL itself does not object.
    text = ferry.config.read_text().replace(f'"--file-prefix", "{ferry.prefix}"',
                                            f'"--file-prefix", "{ferry.prefix}b"')
    second = ferry.tmp / "second.toml"
    second.write_text(text)
    try:
        r = subprocess.run(["ip", "netns", "exec", ferry.node_ns, str(FERRYD), "--config",
                            str(second)], capture_output=True, text=True, timeout=20)
    finally:
        subprocess.run(["rm", "-rf", f"/var/run/dpdk/{ferry.prefix}b"], timeout=10)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "control.socket" in out and "in use" in out, out
    assert ferry.alive()
    assert ferry.ferryctl("get", "svc").returncode == 0
    assert set(curl_names(ferry, 30)) == PODS


def test_sigterm_stops_cleanly_and_restart_serves(ferry):
    t0 = time.monotonic()
    rc = ferry.stop_ferryd()
    assert rc == 0, f"exit status {rc}\n{ferry.log()}"
    assert time.monotonic() - t0 < 3
    assert not ferry.socket.exists()
    r = ferry.curl(f"http://{VIP}/", max_time=1)
    assert r.returncode != 0  # nothing forwards any more
    ferry.start_ferryd()
    assert set(curl_names(ferry, 30)) == PODS


def test_restart_keeps_established_connection(ferry):
    """A stream open across a ferryd restart: the new ferryd has no flow entry, un-NATs the
    backend's data statelessly and re-creates the entry from the client's next ACK (the
    same Maglev pick, since the endpoints are the same)."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ferry.client_ns, "curl", "-sS", "-N", "-m", "20",
         f"http://{VIP}/slow/6"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().strip()
        assert first in PODS, first
        time.sleep(0.5)
        assert ferry.stop_ferryd() == 0
        ferry.start_ferryd()
        out, err = proc.communicate(timeout=25)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    body = [first] + out.split()
    assert proc.returncode == 0, f"curl exit {proc.returncode}: {err}\n{ferry.log()}"
    assert set(body) == {first}, body
    s = ferry.stats()["flows"]
    assert s["picked_up"] >= 1, s
    assert s["stateless_replies"] >= 1, s
