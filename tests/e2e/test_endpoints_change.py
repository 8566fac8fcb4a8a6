"""Endpoint changes: an established connection to a removed pod keeps flowing (its flow entry
pins the backend), new connections never pick the removed pod, and a pod added back is picked
again."""
import subprocess
import time

from conftest import PODS, POD_IPS, VIP, curl_names, my_service_slice


def endpoints_of(ferry, service="my-service"):
    import json
    r = ferry.ferryctl("get", "endpoints", "-o", "json")
    assert r.returncode == 0, r.stderr
    for item in json.loads(r.stdout)["items"]:
        if item["name"] == service:
            return set(item["endpoints"])
    raise AssertionError(f"no endpoints for {service}: {r.stdout}")


def set_pods(ferry, names):
    ferry.apply(my_service_slice([POD_IPS[n] for n in sorted(names)]))
    assert endpoints_of(ferry) == {f"{POD_IPS[n]}:9376" for n in names}


def test_established_connection_survives_endpoint_removal(ferry):
    set_pods(ferry, PODS)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ferry.client_ns, "curl", "-sS", "-N", "-m", "15",
         f"http://{VIP}/slow/6"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().strip()
        assert first in PODS, f"first line {first!r}\n{ferry.log()}"
        # Remove exactly the pod that is streaming to us, mid-stream.
        set_pods(ferry, PODS - {first})
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    body = [first] + out.split()
    assert proc.returncode == 0, f"curl exit {proc.returncode}: {err}\n{ferry.log()}"
    assert set(body) == {first}, body
    # 6 s at one line per 0.2 s: about 30 lines; a stream cut short would have far fewer.
    assert len(body) >= 25, len(body)
    set_pods(ferry, PODS)


def test_removed_endpoint_gets_no_new_connections(ferry):
    gone = "my-app-2"
    set_pods(ferry, PODS - {gone})
    try:
        names = curl_names(ferry, 20)
        assert gone not in names, names
        assert set(names) == PODS - {gone}, names
    finally:
        set_pods(ferry, PODS)


def test_endpoint_added_back_is_reachable(ferry):
    back = "my-app-3"
    set_pods(ferry, PODS - {back})
    names = curl_names(ferry, 10)
    assert back not in names, names
    set_pods(ferry, PODS)
    names = curl_names(ferry, 30)
    assert back in names, names
    assert set(names) == PODS, names
