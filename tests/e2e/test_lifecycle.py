"""ferryd's life: a second ferryd cannot take over a running one's control socket or EAL
file prefix, SIGTERM stops it cleanly, a restarted ferryd picks up connections that were open
before, and a reload (ferryctl reload, SIGHUP) follows the manifest files without dropping
established connections."""
import json
import os
import re
import signal
import stat
import subprocess
import time

from conftest import (FERRYCTL, PODS, POD_IPS, SEED_SERVICE, VIP, curl_names,
                      my_service_slice, run, slow_stream)

RELOAD_VIP = "198.19.0.30"
RELOAD_SERVICE = f"""\
apiVersion: v1
kind: Service
metadata:
  name: reloaded
spec:
  clusterIP: {RELOAD_VIP}
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
---
apiVersion: v1
kind: Endpoints
metadata:
  name: reloaded
subsets:
  - addresses:
      - ip: 198.18.1.11
    ports:
      - port: 9376
        protocol: TCP
"""


def test_second_ferryd_refused_first_keeps_serving(ferry):
    # Same config (socket, ports), its own EAL file prefix so EAL itself does not object.
    _, r = ferry.run_second(prefix_suffix="b")
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
    """A stream open across a ferryd restart: the new ferryd has no flow entry, sends the
    client's ACKs by Maglev (the same pick, since the endpoints are the same) without making
    one, un-NATs the backend's data statelessly and makes the entry from that answer (an ACK
    from the backend proves the connection; a client's ACK alone could be spoofed)."""
    with slow_stream(ferry) as pod:
        time.sleep(0.5)
        assert ferry.stop_ferryd() == 0
        ferry.start_ferryd()
        time.sleep(1)
        mine = [f for f in ferry.flows()["items"]
                if f["service"] == f"{VIP}:80" and f["backend"].startswith(POD_IPS[pod] + ":")]
        assert [f["state"] for f in mine] == ["ESTABLISHED"], mine
    s = ferry.stats()["flows"]
    assert s["picked_up"] >= 1, s
    assert s["stateless_replies"] >= 1, s


def services(ferry):
    r = ferry.ferryctl("get", "svc", "-o", "json")
    assert r.returncode == 0, r.stderr
    return {i["name"]: i for i in json.loads(r.stdout)["items"]}


def test_reload_follows_files_and_keeps_established_connection(ferry):
    """While a stream runs, the manifests change (a pod other than the stream's leaves
    my-service, a new Service arrives) and the config asks for a restart-only change:
    `ferryctl reload` applies the files in one go, lists the config key, and the stream ends
    on the pod it started on."""
    config_before = ferry.config.read_text()
    try:
        with slow_stream(ferry) as first:
            gone = sorted(p for p in PODS if p != first)[0]
            kept = [ip for name, ip in POD_IPS.items() if name != gone]
            ferry.write_manifests({"10-my-service.yaml": SEED_SERVICE + "---\n" +
                                   my_service_slice(kept),
                                   "40-reloaded.yaml": RELOAD_SERVICE})
            ferry.config.write_text(
                config_before.replace("capacity = 65536", "capacity = 131072"))
            r = ferry.ferryctl("-o", "json", "reload")
            assert r.returncode == 0, r.stderr + ferry.log()
            result = json.loads(r.stdout)
            assert result["config"] == str(ferry.config)
            assert result["restart_needed"] == ["conntrack"], result
            actions = {(c["kind"], c["name"]): c["action"] for c in result["changes"]}
            assert actions[("Service", "reloaded")] == "created", actions
            assert actions[("EndpointSlice", "my-service-abc12")] == "configured", actions
            assert actions[("Service", "my-service")] == "unchanged", actions
            # The human form says the same.
            r = ferry.ferryctl("reload")
            assert r.returncode == 0, r.stderr
            assert "restart needed: conntrack changed" in r.stdout, r.stdout
    finally:
        ferry.config.write_text(config_before)
    assert "reloaded" in services(ferry)
    r = ferry.curl(f"http://{RELOAD_VIP}/")
    assert r.returncode == 0 and r.stdout.strip() == "my-app-1", r.stdout + r.stderr
    assert gone not in set(curl_names(ferry, 12))
    log = ferry.log()
    assert "change: service default/reloaded created (source: file)" in log, log
    assert "conntrack changed; restart ferryd to apply it" in log, log
    # Back to the start: all three pods, no extra Service (the file is gone: deleted).
    (ferry.manifests / "40-reloaded.yaml").unlink()
    ferry.write_manifests({"10-my-service.yaml": SEED_SERVICE + "---\n" + my_service_slice()})
    r = ferry.ferryctl("-o", "json", "reload")
    assert r.returncode == 0, r.stderr
    actions = {(c["kind"], c["name"]): c["action"] for c in json.loads(r.stdout)["changes"]}
    assert actions[("Service", "reloaded")] == "deleted", actions
    assert json.loads(r.stdout)["restart_needed"] == []
    assert "reloaded" not in services(ferry)
    assert set(curl_names(ferry, 30)) == PODS


def test_reload_with_a_broken_manifest_changes_nothing(ferry):
    before = services(ferry)
    ferry.write_manifests({"40-reloaded.yaml": RELOAD_SERVICE,
                           "50-broken.yaml": "apiVersion: v1\nkind: Service\nmetadata: "
                                             "{name: broken}\nspec: {ports: 7}\n"})
    try:
        r = ferry.ferryctl("reload")
        assert r.returncode == 1, r.stdout
        assert "50-broken.yaml" in r.stderr, r.stderr
        assert services(ferry) == before  # not even the good new file was applied
        assert "reload refused, nothing changed" in ferry.log()
        # A config file that does not parse is refused the same way.
        good = ferry.config.read_text()
        ferry.config.write_text(good + "\n[log]\nlevel = \"loud\"\n")
        try:
            r = ferry.ferryctl("reload")
        finally:
            ferry.config.write_text(good)
        assert r.returncode == 1
        assert "log.level" in r.stderr, r.stderr
        assert services(ferry) == before
    finally:
        for name in ("40-reloaded.yaml", "50-broken.yaml"):
            (ferry.manifests / name).unlink()
    assert ferry.alive()
    assert set(curl_names(ferry, 30)) == PODS


def test_sighup_reloads(ferry):
    ferry.write_manifests({"40-reloaded.yaml": RELOAD_SERVICE})
    try:
        ferry.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 5
        while "reloaded" not in services(ferry):
            assert time.time() < deadline, ferry.log()
            time.sleep(0.1)
        assert ferry.curl(f"http://{RELOAD_VIP}/").stdout.strip() == "my-app-1"
        assert "SIGHUP: reloading" in ferry.log()
    finally:
        (ferry.manifests / "40-reloaded.yaml").unlink()
    ferry.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 5
    while "reloaded" in services(ferry):
        assert time.time() < deadline, ferry.log()
        time.sleep(0.1)
    assert ferry.alive()


def test_sigterm_stops_ferryd_while_the_control_thread_is_busy(ferry):
    """Issue 16, 9: a flood of Services (20,000, each with endpoints, in one manifest file)
    keeps the control thread busy for many seconds after a SIGHUP; SIGTERM still stops
    ferryd within a few seconds (before, it waited for the reload to finish)."""
    flood = "".join(
        f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: flood-{i}}}\n"
        f"spec: {{ports: [{{port: 80, targetPort: 9376}}], selector: {{app: flood-{i}}}}}\n"
        f"---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: flood-{i}}}\n"
        f"subsets: [{{addresses: [{{ip: 198.18.1.11}}, {{ip: 198.18.1.12}}], "
        f"ports: [{{port: 9376}}]}}]\n"
        for i in range(20000))
    ferry.write_manifests({"60-flood.yaml": flood})
    try:
        ferry.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while "SIGHUP: reloading" not in ferry.log():
            assert time.time() < deadline, ferry.log()
            time.sleep(0.05)
        time.sleep(0.5)
        t0 = time.monotonic()
        ferry.proc.send_signal(signal.SIGTERM)
        try:
            ferry.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        took = time.monotonic() - t0
        rc = ferry.stop_ferryd()  # SIGKILL if it is still there
        print(f"SIGTERM during a busy reload: ferryd gone in {took:.2f} s, status {rc}")
        assert took < 4, f"{took:.1f} s\n{ferry.log()}"
        assert rc == 0, ferry.log()
    finally:
        (ferry.manifests / "60-flood.yaml").unlink()
        if not ferry.alive():
            ferry.start_ferryd()
    assert set(curl_names(ferry, 30)) == PODS


def test_second_ferryd_on_the_same_file_prefix_refused(ferry):
    _, r = ferry.run_second(socket=ferry.tmp / "second.sock")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert (f'dataplane.eal_args: EAL file prefix "{ferry.prefix}" is in use by another DPDK '
            f"process (pid {ferry.proc.pid})") in out, out
    assert not (ferry.tmp / "second.sock").exists()
    assert ferry.alive()
    assert set(curl_names(ferry, 30)) == PODS  # 9 missed a pod 8% of the time


def test_log_level_round_trip(ferry):
    r = ferry.ferryctl("log-level")
    assert r.returncode == 0 and r.stdout == "log level: info\n", r.stdout + r.stderr
    r = ferry.ferryctl("log-level", "debug")
    assert r.returncode == 0 and r.stdout == "log level: debug (was info)\n", r.stdout
    r = ferry.ferryctl("-o", "json", "log-level")
    assert json.loads(r.stdout) == {"level": "debug", "previous": "debug"}
    # status names the level as log-level does (spdlog's own name for warn is "warning").
    assert ferry.ferryctl("log-level", "warn").returncode == 0
    st = json.loads(ferry.ferryctl("-o", "json", "status").stdout)
    assert st["log_level"] == "warn", st
    ferry.ferryctl("log-level", "debug")
    r = ferry.ferryctl("log-level", "loud")
    assert r.returncode == 2, r.stdout + r.stderr
    r = ferry.ferryctl("log-level", "info")
    assert r.stdout == "log level: info (was debug)\n", r.stdout
    assert "change: log level debug (was info) (source: socket)" in ferry.log()


def as_user(ferry, uid, gid, *args):
    """ferryctl run as another user (no supplementary groups)."""
    env = dict(os.environ, FERRY_SOCKET=str(ferry.socket))
    return run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", str(FERRYCTL),
                *args], env=env)


def test_socket_mode_group_and_peer_credentials(ferry):
    st = os.stat(ferry.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert (st.st_uid, st.st_gid) == (0, 0)
    # A group for operators: the file's group, and members may use the socket.
    config = ferry.config.read_text()
    ferry.stop_ferryd()
    ferry.start_ferryd(re.sub(r'(socket = "[^"]*")', r'\1\nsocket_group = "65534"', config))
    os.chmod(ferry.tmp, 0o755)  # let other users reach the socket file
    st = os.stat(ferry.socket)
    assert stat.S_IMODE(st.st_mode) == 0o660 and (st.st_uid, st.st_gid) == (0, 65534)
    r = as_user(ferry, 65534, 65534, "get", "svc")
    assert r.returncode == 0 and "my-service" in r.stdout, r.stderr
    # Not in the group: the file mode already says no ...
    r = as_user(ferry, 65533, 65533, "get", "svc")
    assert r.returncode == 1 and "Permission denied" in r.stderr, r.stderr
    # ... and with the file opened up, ferryd's own check still does.
    os.chmod(ferry.socket, 0o666)
    r = as_user(ferry, 65533, 65533, "get", "svc")
    assert r.returncode == 1, r.stdout
    assert "permission denied: uid 65533 is not root" in r.stderr, r.stderr
    assert "control socket: refused a client: permission denied: uid 65533" in ferry.log()
    r = ferry.ferryctl("-o", "json", "reload")
    assert json.loads(r.stdout)["restart_needed"] == [], r.stdout  # the file still says 65534
    assert ferry.alive()
