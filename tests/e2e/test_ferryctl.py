"""ferryctl against a running ferryd: a refused apply changes nothing, usage errors exit 2,
and apply/delete really add and remove a service from the dataplane."""
import json

import pytest

from conftest import POD_IPS, PODS, SEED_SERVICE, VIP, curl_names, endpoint_slice

WEB_VIP = "198.19.0.40"
WEB = f"""\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: {WEB_VIP}
  ports:
    - {{protocol: TCP, port: 8080, targetPort: 9376}}
---
""" + endpoint_slice("web-1", "web", list(POD_IPS.values()))


def get_json(ferry, what):
    r = ferry.ferryctl("get", what, "-o", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_broken_apply_changes_nothing(ferry, tmpdir_path):
    svc_before = get_json(ferry, "svc")
    ep_before = get_json(ferry, "ep")
    # A valid new Service and an update of my-service with a bad port in one file: all or
    # nothing.
    broken = (WEB + "---\n" + SEED_SERVICE.replace("targetPort: 9376", "targetPort: 9377")
              .replace("port: 80", 'port: "abc"'))
    path = tmpdir_path / "broken.yaml"
    path.write_text(broken)
    r = ferry.ferryctl("apply", "-f", str(path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "my-service" in r.stderr and "spec.ports[0].port" in r.stderr, r.stderr
    assert str(path) in r.stderr, r.stderr
    assert r.stdout == ""
    assert get_json(ferry, "svc") == svc_before
    assert get_json(ferry, "ep") == ep_before
    # And the dataplane still does what it did.
    assert set(curl_names(ferry, 30)) == PODS
    assert ferry.curl(f"http://{WEB_VIP}:8080/", max_time=1).returncode != 0


def test_broken_yaml_from_stdin(ferry):
    before = get_json(ferry, "svc")
    r = ferry.ferryctl("apply", "-f", "-", input="apiVersion: v1\nkind: Service\nmetadata: [\n")
    assert r.returncode == 1
    assert "<stdin>" in r.stderr and "YAML" in r.stderr, r.stderr
    assert get_json(ferry, "svc") == before


@pytest.mark.parametrize("args", [
    ["get", "bogus"], ["frobnicate"], [], ["get"], ["get", "flows", "-o", "xml"],
    ["get", "svc", "--limit", "3"], ["get", "svc", "--state", "udp"],
    ["get", "flows", "--state", "open"], ["get", "flows", "some-name"],
    # Flushing every flow needs --all, in so many words.
    ["flush", "flows"], ["flush", "services", "--all"],
    ["trace", "198.18.0.2", "198.19.0.10:80"], ["trace", "198.18.0.2:1", "198.19.0.10:80", "icmp"],
    ["weight", "default/my-service", "198.18.1.11"],
    ["weight", "default/my-service", "198.18.1.11", "1001"],
    ["weight", "default/my-service", "198.18.1.11", "3", "--reset"],
    ["drain", "default/my-service", "not-an-ip"], ["drain", "a/b/c", "198.18.1.11"],
    ["describe", "pod", "default/x"], ["stats", "--interval", "2"]])
def test_usage_errors_exit_2(ferry, args):
    r = ferry.ferryctl(*args)
    assert r.returncode == 2, (args, r.returncode, r.stdout, r.stderr)
    assert r.stderr.strip(), args


def test_unreachable_ferryd_exits_1(ferry, tmpdir_path):
    r = ferry.ferryctl("--socket", str(tmpdir_path / "none.sock"), "get", "svc")
    assert r.returncode == 1 and "none.sock" in r.stderr, r.stderr


def test_apply_then_delete_service(ferry, tmpdir_path):
    path = tmpdir_path / "web.yaml"
    path.write_text(WEB)
    r = ferry.ferryctl("apply", "-f", str(path))
    assert r.returncode == 0, r.stderr
    assert "service/web created" in r.stdout, r.stdout
    names = {x["name"]: x for x in get_json(ferry, "svc")["items"]}
    assert names["web"]["cluster_ip"] == WEB_VIP and names["web"]["ready_endpoints"] == 3
    names = curl_names(ferry, 9, url=f"http://{WEB_VIP}:8080/")
    assert set(names) <= PODS and len(set(names)) > 1, names
    # Applying the same file again changes nothing.
    r = ferry.ferryctl("apply", "-f", str(path))
    assert r.returncode == 0 and "service/web unchanged" in r.stdout, r.stdout

    r = ferry.ferryctl("delete", "-f", str(path))
    assert r.returncode == 0, r.stderr
    assert "service/web" in r.stdout, r.stdout
    assert "web" not in {x["name"] for x in get_json(ferry, "svc")["items"]}
    assert "web" not in {x["name"] for x in get_json(ferry, "ep")["items"]}
    # The VIP stops answering (new connections; nothing serves it any more).
    r = ferry.curl(f"http://{WEB_VIP}:8080/", max_time=2)
    assert r.returncode != 0, r.stdout
    assert not [s for s in ferry.stats()["services"] if s["vip"] == WEB_VIP]
    # my-service is untouched.
    assert set(curl_names(ferry, 30)) == PODS


def test_get_tables(ferry):
    r = ferry.ferryctl("get", "svc")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "PORT(S)",
                                "ENDPOINTS"]
    row = next(l.split() for l in lines if " my-service " in l)
    assert row == ["default", "my-service", "ClusterIP", VIP, "80/TCP", "3"], row
    assert max(len(l) for l in lines) <= 80, r.stdout
    r = ferry.ferryctl("get", "svc", "-o", "wide")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP",
                                "PORT(S)", "AFFINITY", "POLICY", "ENDPOINTS"]
    row = next(l.split() for l in lines if " my-service " in l)
    assert row == ["default", "my-service", "ClusterIP", VIP, "<none>", "80/TCP", "None",
                   "ext=Cluster,int=Cluster", "3"], row
    r = ferry.ferryctl("get", "ep")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "ENDPOINT", "CONDITIONS", "WEIGHT",
                                "NODE"], r.stdout
    assert ["default", "my-service", "198.18.1.11:9376", "ready,serving"] in \
        [l.split()[:4] for l in lines], r.stdout
    r = ferry.ferryctl("get", "ep", "-o", "wide")
    lines = r.stdout.splitlines()
    assert lines[0].split()[:7] == ["NAMESPACE", "NAME", "PORT-NAME", "ENDPOINT", "READY",
                                    "SERVING", "TERMINATING"], r.stdout
    assert ["default", "my-service", "<none>", "198.18.1.11:9376", "True", "True", "False"] in \
        [l.split()[:7] for l in lines], r.stdout
    r = ferry.ferryctl("stats")
    assert r.returncode == 0 and "Drops:" in r.stdout and "default/my-service" in r.stdout


def test_get_by_name(ferry):
    r = ferry.ferryctl("get", "svc", "my-service")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and lines[1].split()[1] == "my-service", r.stdout
    # A name that is not there: kubectl's message, status 1; the names found are still shown.
    r = ferry.ferryctl("get", "svc", "my-service", "nope")
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'services "nope" not found' in r.stderr and "my-service" in r.stdout, r.stderr
    r = ferry.ferryctl("get", "svc", "nope", "-o", "json")
    assert r.returncode == 1 and r.stdout == "", r.stdout


def test_yaml_is_the_json_result(ferry):
    yaml = pytest.importorskip("yaml")
    as_json = get_json(ferry, "svc")
    r = ferry.ferryctl("get", "svc", "-o", "yaml")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout) == as_json
