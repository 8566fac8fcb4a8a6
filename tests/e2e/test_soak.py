"""Churn soak, short version (perf/soak.sh runs the same for minutes): real TCP and UDP
traffic while Services, endpoints, drains and weights change every 100 ms (perf/soak.py).
No established flow is misrouted, nothing reaches a removed backend after its grace,
ferryd stays up with flat memory and a bounded connection table.

FERRY_SOAK_SECONDS (default 75) sets the traffic time; FERRY_SOAK_OUT, a file for the JSON
summary."""
import json
import os
import subprocess
import time

from conftest import POD_IPS, PODS, PYTHON, POD_SERVER, ROOT, stop

GRACE = int(os.environ.get("FERRY_SOAK_GRACE", "2"))
FERRY_CONNTRACK = {"removed_backend_grace": GRACE}
SECONDS = float(os.environ.get("FERRY_SOAK_SECONDS", "75"))
SERVICES = 6
PORT_BASE = 9401
SNIFF = ROOT / "scripts" / "pod_sniff.py"
DRIVER = ROOT / "perf" / "soak.py"


def test_churn_soak(ferry):
    ports = ",".join(str(PORT_BASE + k) for k in range(SERVICES))
    procs = []
    try:
        sniff = {}
        for i, name in enumerate(sorted(PODS), start=1):
            ns = ferry.ns(f"pod{i}")
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, PYTHON, str(POD_SERVER), "--name", name,
                 "--http", ports, "--udp", ports],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            sniff[name] = ferry.tmp / f"sniff-{name}.txt"
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, PYTHON, str(SNIFF), "--out", str(sniff[name])]))
        deadline = time.time() + 10
        for i in range(1, len(PODS) + 1):
            while True:
                last = f"sport = :{PORT_BASE + SERVICES - 1}"
                r = ferry.netns(ferry.ns(f"pod{i}"), ["ss", "-Hltn", last])
                if r.stdout.strip():
                    break
                assert time.time() < deadline, "pod servers did not start"
                time.sleep(0.05)
        pid = ferry.proc.pid  # ip netns exec execs ferryd: the same process
        assert open(f"/proc/{pid}/comm").read().strip().startswith("ferryd"), pid
        out = os.environ.get("FERRY_SOAK_OUT") or str(ferry.tmp / "soak.json")
        cmd = ["ip", "netns", "exec", ferry.client_ns, PYTHON, str(DRIVER),
               "--socket", str(ferry.socket), "--ferryd-pid", str(pid),
               "--duration", str(SECONDS), "--warmup", str(min(20.0, SECONDS / 3)),
               "--grace", str(GRACE), "--services", str(SERVICES), "--port-base", str(PORT_BASE),
               "--out", out]
        if os.environ.get("FERRY_SOAK_ASSUME_GRACE"):  # to see the checks fail
            cmd += ["--assume-grace", os.environ["FERRY_SOAK_ASSUME_GRACE"]]
        for name in sorted(PODS):
            cmd += ["--pod", f"{name}={POD_IPS[name]}={sniff[name]}"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 120)
        assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{ferry.log()}"
    finally:
        for p in procs:
            stop(p, term_wait=2)
    s = json.loads(open(out).read())
    print(json.dumps(s, indent=1))
    c = s["counts"]
    # It did what it says: changes every 100 ms of each kind, traffic of each kind.
    assert s["changes_per_second"] >= 5, s
    for kind in ("add_endpoint", "remove_endpoint", "drain", "undrain", "weight",
                 "delete_service", "create_service"):
        assert c.get(f"changes_{kind}", 0) > 0, (kind, c)
    assert c.get("changes_refused", 0) == 0, s["examples"]
    # (Low floors: a loaded 2-core CI machine serves far less than an idle one.)
    assert c.get("long_requests", 0) > 300 and c.get("short_ok", 0) > 50, c
    assert c.get("udp_answers", 0) > 200, c
    assert c.get("long_reset_after_removal", 0) > 0, c  # the grace did flush flows
    # The checks.
    assert s["misroutes"] == 0, s["examples"]
    assert s["broken_connections"] == 0, s["examples"]
    assert s["new_flows_to_removed_backend"] == 0, s["examples"]
    assert s["packets_recorded"] > 300, s
    assert s["late_packets"] == 0, s["late_examples"]
    assert s["ferryd_alive"] and ferry.alive() and ferry.proc.pid == pid, ferry.log()
    assert s["rss_growth_pct"] is not None and s["rss_growth_pct"] < 5, s
    assert s["flows_active_max"] is not None and s["flows_active_max"] <= s["flows_bound"], s
