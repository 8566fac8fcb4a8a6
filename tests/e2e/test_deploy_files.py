"""The deployment files in deploy/ are consistent with ferryd: the Kubernetes manifests parse,
the RBAC grants exactly what control/kube.cpp watches, the ConfigMap's ferry.toml passes
`ferryd --check` once the pod's placeholders are filled in, the DaemonSet mounts what that
config names, and systemd accepts the unit. Needs no root and no network."""
import os
import re
import shutil
import subprocess
import tomllib

import pytest
import yaml

from conftest import FERRYD, ROOT

DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"


def docs():
    out = []
    for path in sorted(KUBE.glob("*.yaml")):
        for d in yaml.safe_load_all(path.read_text()):
            assert d is not None, f"{path.name}: empty document"
            out.append(d)
    return out


def one(kind, name=None):
    found = [d for d in docs() if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"want one {kind} {name or ''}, got {len(found)}"
    return found[0]


def watched():
    """(apiGroup, resource) pairs ferryd lists and watches, read from watched_resources()."""
    src = (ROOT / "control" / "kube.cpp").read_text()
    body = src[src.index("watched_resources(const std::string& node_name) {"):]
    body = body[:body.index("\n}\n")]
    pairs = set()
    for path in re.findall(r'"(/apis?/[^"]+)"', body):
        parts = path.strip("/").split("/")
        if parts[0] == "api":      # /api/v1/RESOURCE
            pairs.add(("", parts[2]))
        else:                      # /apis/GROUP/VERSION/RESOURCE
            pairs.add((parts[1], parts[3]))
    assert len(pairs) >= 3, body
    return pairs


def test_manifests_parse_and_kinds():
    kinds = sorted(d["kind"] for d in docs())
    assert kinds == sorted(["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                            "ConfigMap", "ConfigMap", "DaemonSet"])
    ns = one("Namespace")["metadata"]["name"]
    for d in docs():
        if d["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"]["namespace"] == ns, d["metadata"]


def test_rbac_matches_what_ferryd_watches():
    granted = {}
    for rule in one("ClusterRole", "ferry")["rules"]:
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                granted[(g, r)] = set(rule["verbs"])
    want = watched()
    assert want == {("", "services"), ("discovery.k8s.io", "endpointslices"), ("", "nodes")}
    for pair in want:
        assert {"list", "watch"} <= granted.get(pair, set()), f"{pair} not granted list+watch"
    # Nothing beyond that: ferryd never writes to the API.
    assert set(granted) == want, f"extra grants: {set(granted) - want}"
    assert all(v <= {"get", "list", "watch"} for v in granted.values()), granted

    sa = one("ServiceAccount")
    binding = one("ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": "ferry"}
    assert {"kind": "ServiceAccount", "name": sa["metadata"]["name"],
            "namespace": sa["metadata"]["namespace"]} in binding["subjects"]
    pod = one("DaemonSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]


def rendered_config(tmp_path):
    """The ConfigMap's ferry.toml as the pod's start command renders it for the first node."""
    template = one("ConfigMap", "ferry-config")["data"]["ferry.toml"]
    nodes = one("ConfigMap", "ferry-nodes")["data"]
    node, address = next(iter(nodes.items()))
    text = template.replace("@NODE_NAME@", node).replace("@ADDRESS@", address)
    assert "@" not in text, "an unfilled placeholder is left"
    return node, address, text


def test_configmap_config_passes_check(tmp_path):
    if not FERRYD.exists():
        pytest.fail(f"{FERRYD} is missing: build first (ninja -C build)")
    node, address, text = rendered_config(tmp_path)
    cfg = tomllib.loads(text)
    assert cfg["node"]["name"] == node
    assert cfg["port"][0]["address"] == address
    assert cfg["kubernetes"] == {"in_cluster": True}
    eal = cfg["dataplane"]["eal_args"]
    assert "--no-telemetry" not in eal and "--no-huge" not in eal  # telemetry, capture
    assert eal[eal.index("--file-prefix") + 1] == "ferry"
    # In a pod the service account files are at the default path; here, a stand-in dir.
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t0ken\n")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    text = text.replace("in_cluster = true", f'in_cluster = true\nservice_account_dir = "{sa}"')
    path = tmp_path / "ferry.toml"
    path.write_text(text)
    env = dict(os.environ, KUBERNETES_SERVICE_HOST="10.96.0.1", KUBERNETES_SERVICE_PORT="443")
    r = subprocess.run([str(FERRYD), "--check", "--config", str(path)], env=env,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == f"{path}: ok"
    # Outside a pod the same config is refused with the reason.
    env.pop("KUBERNETES_SERVICE_HOST")
    r = subprocess.run([str(FERRYD), "--check", "--config", str(path)], env=env,
                       capture_output=True, text=True, timeout=20)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "KUBERNETES_SERVICE_HOST" in out, out


def test_pod_start_command_renders_the_config(tmp_path):
    """The DaemonSet's shell command, run here with its directories moved under tmp_path
    and ferryd replaced by cat, writes the config rendered_config() checks."""
    node, _, want = rendered_config(tmp_path)
    (c,) = one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["/bin/sh", "-c"]
    script = c["args"][0]
    for d in ("/etc/ferry/config", "/etc/ferry/nodes", "/run/ferry"):
        assert d in script
        (tmp_path / d.strip("/")).mkdir(parents=True)
        script = script.replace(d, str(tmp_path / d.strip("/")))
    exec_ferryd = "exec /usr/local/bin/ferryd --config"
    assert exec_ferryd in script
    script = script.replace(exec_ferryd, "exec cat")
    (tmp_path / "etc/ferry/config/ferry.toml").write_text(
        one("ConfigMap", "ferry-config")["data"]["ferry.toml"])
    for name, address in one("ConfigMap", "ferry-nodes")["data"].items():
        (tmp_path / "etc/ferry/nodes" / name).write_text(address)
    path = "/usr/bin:/bin"
    r = subprocess.run(["/bin/sh", "-c", script], env={"NODE_NAME": node, "PATH": path},
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout == want
    # A node missing from ferry-nodes: the pod fails to start instead of running unconfigured.
    r = subprocess.run(["/bin/sh", "-c", script], env={"NODE_NAME": "nope", "PATH": path},
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "nope" in r.stderr


def test_daemonset_mounts_what_the_config_names(tmp_path):
    _, _, text = rendered_config(tmp_path)
    cfg = tomllib.loads(text)
    ds = one("DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= \
        ds["spec"]["template"]["metadata"]["labels"].items()
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["nodeSelector"] and pod["tolerations"]
    (c,) = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts.values()) == set(volumes), "every mount has a volume and back"

    # The start command reads the ConfigMaps where they are mounted and writes the config
    # beside the socket.
    script = " ".join(c["args"])
    cfg_dir = next(p for p, n in mounts.items()
                   if volumes[n].get("configMap", {}).get("name") == "ferry-config")
    nodes_dir = next(p for p, n in mounts.items()
                     if volumes[n].get("configMap", {}).get("name") == "ferry-nodes")
    assert f"{cfg_dir}/ferry.toml" in script and f"{nodes_dir}/$NODE_NAME" in script
    sock_dir = os.path.dirname(cfg["control"]["socket"])
    assert sock_dir in mounts and f"--config {sock_dir}/ferry.toml" in script
    assert volumes[mounts[sock_dir]]["hostPath"]["path"] == sock_dir
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["FERRY_SOCKET"]["value"] == cfg["control"]["socket"]

    # Hugepages: requested = limited (Guaranteed QoS), backed by a HugePages-2Mi volume
    # at the path the EAL finds; integer CPUs for the static CPU manager.
    res = c["resources"]
    assert res["requests"] == res["limits"]
    assert "hugepages-2Mi" in res["limits"] and "memory" in res["limits"]
    assert str(res["limits"]["cpu"]).isdigit() and int(res["limits"]["cpu"]) >= 2
    assert volumes[mounts["/dev/hugepages"]]["emptyDir"]["medium"] == "HugePages-2Mi"
    assert "/var/run/dpdk" in mounts  # telemetry and capture rendezvous

    sc = c["securityContext"]
    assert sc["privileged"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == {"NET_RAW", "NET_ADMIN", "IPC_LOCK"}

    probe = c["livenessProbe"]["exec"]["command"]
    assert probe[0].endswith("/ferryctl") and probe[1:] == ["status", "-o", "json"]


def test_systemd_unit_verifies(tmp_path):
    unit = (DEPLOY / "ferryd.service").read_text()
    fields = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert fields["Type"] == "simple"
    assert fields["ExecStart"] == "/usr/local/bin/ferryd --config /etc/ferry/ferry.toml"
    assert fields["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert fields["Restart"] == "on-failure"
    assert fields["RuntimeDirectory"] == "ferry"
    assert fields["LimitMEMLOCK"] == "infinity"
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed")
    if not FERRYD.exists():
        pytest.fail(f"{FERRYD} is missing: build first (ninja -C build)")
    # verify checks that ExecStart's binary exists: point it at the build's.
    path = tmp_path / "ferryd.service"
    path.write_text(unit.replace("/usr/local/bin/ferryd", str(FERRYD)))
    r = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stdout + r.stderr
