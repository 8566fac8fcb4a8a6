"""ferryctl env and exec against a running ferryd: the Service variables kubelet would give a pod,
computed from ferryd's store, in each output form, and a command run with them."""
import json
import os
import stat

from conftest import FERRYCTL, REDIS_VIP, run

API_VIP = "198.19.0.1"
KUBERNETES = f"""\
apiVersion: v1
kind: Service
metadata:
  name: kubernetes
  namespace: default
spec:
  clusterIP: {API_VIP}
  ports:
    - {{name: https, protocol: TCP, port: 443, targetPort: 6443}}
"""
FERRY_MANIFESTS = {"40-kubernetes.yaml": KUBERNETES}

# As the seed writes it, with the demo's ClusterIP (198.19.0.11: the demo's service CIDR is
# 198.19.0.0/16).
REDIS_VARS = [
    f"REDIS_MASTER_SERVICE_HOST={REDIS_VIP}",
    "REDIS_MASTER_SERVICE_PORT=6379",
    f"REDIS_MASTER_PORT=tcp://{REDIS_VIP}:6379",
    f"REDIS_MASTER_PORT_6379_TCP=tcp://{REDIS_VIP}:6379",
    "REDIS_MASTER_PORT_6379_TCP_PROTO=tcp",
    "REDIS_MASTER_PORT_6379_TCP_PORT=6379",
    f"REDIS_MASTER_PORT_6379_TCP_ADDR={REDIS_VIP}",
]
KUBERNETES_VARS = [
    f"KUBERNETES_SERVICE_HOST={API_VIP}",
    "KUBERNETES_SERVICE_PORT=443",
    "KUBERNETES_SERVICE_PORT_HTTPS=443",
    f"KUBERNETES_PORT=tcp://{API_VIP}:443",
    f"KUBERNETES_PORT_443_TCP=tcp://{API_VIP}:443",
    "KUBERNETES_PORT_443_TCP_PROTO=tcp",
    "KUBERNETES_PORT_443_TCP_PORT=443",
    f"KUBERNETES_PORT_443_TCP_ADDR={API_VIP}",
]

CART = """\
apiVersion: v1
kind: Service
metadata:
  name: cart
  namespace: shop
spec:
  clusterIP: 198.19.0.60
  ports:
    - {name: http, protocol: TCP, port: 8080, targetPort: 9376}
"""


def env_lines(ferry, *args):
    r = ferry.ferryctl("env", *args)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return r.stdout.splitlines()


def test_default_namespace(ferry):
    lines = env_lines(ferry)  # -n defaults to "default"
    assert lines == env_lines(ferry, "-n", "default")
    # Services by name: dns-like, kubernetes, my-service, redis-master.
    prefixes = []
    for line in lines:
        prefix = line.split("_SERVICE_HOST=")[0]
        if "_SERVICE_HOST=" in line:
            prefixes.append(prefix)
    assert prefixes == ["DNS_LIKE", "KUBERNETES", "MY_SERVICE", "REDIS_MASTER"], lines
    start = lines.index(REDIS_VARS[0])
    assert lines[start:] == REDIS_VARS, lines
    start = lines.index(KUBERNETES_VARS[0])
    assert lines[start:start + len(KUBERNETES_VARS)] == KUBERNETES_VARS, lines
    assert "DNS_LIKE_SERVICE_PORT_DNS=53" in lines
    assert "DNS_LIKE_PORT=udp://198.19.0.20:53" in lines
    assert "DNS_LIKE_PORT_53_UDP_PROTO=udp" in lines


def test_json_and_docker(ferry):
    lines = env_lines(ferry)
    r = ferry.ferryctl("env", "-o", "json")
    assert r.returncode == 0, r.stderr
    env = json.loads(r.stdout)
    assert [f"{v['name']}={v['value']}" for v in env] == lines
    assert all(set(v) == {"name", "value"} for v in env)
    # The global -o json asks for it too.
    r = ferry.ferryctl("-o", "json", "env")
    assert r.returncode == 0 and json.loads(r.stdout) == env, r.stderr

    docker = env_lines(ferry, "-o", "docker")
    assert docker == [f"--env={line}" for line in lines]
    assert f"--env=REDIS_MASTER_SERVICE_HOST={REDIS_VIP}" in docker
    assert not any(" " in line for line in docker)


def test_no_service_links(ferry):
    assert env_lines(ferry, "--no-service-links") == KUBERNETES_VARS
    assert env_lines(ferry, "-n", "shop", "--no-service-links") == KUBERNETES_VARS


def test_namespace_without_services(ferry):
    # kubelet still gives such a pod the API server's Service.
    assert env_lines(ferry, "-n", "nothing-here") == KUBERNETES_VARS
    r = ferry.ferryctl("delete", "-f", "-", input=KUBERNETES)
    assert r.returncode == 0, r.stderr
    try:
        assert env_lines(ferry, "-n", "nothing-here") == []
        assert env_lines(ferry, "--no-service-links") == []
        assert "KUBERNETES_SERVICE_HOST" not in "\n".join(env_lines(ferry))
    finally:
        ferry.apply(KUBERNETES)
    assert env_lines(ferry, "-n", "nothing-here") == KUBERNETES_VARS


def test_env_follows_apply(ferry):
    assert env_lines(ferry, "-n", "shop") == KUBERNETES_VARS
    ferry.apply(CART)
    try:
        lines = env_lines(ferry, "-n", "shop")
        assert lines[:4] == ["CART_SERVICE_HOST=198.19.0.60", "CART_SERVICE_PORT=8080",
                             "CART_SERVICE_PORT_HTTP=8080", "CART_PORT=tcp://198.19.0.60:8080"]
        assert lines[-len(KUBERNETES_VARS):] == KUBERNETES_VARS
        assert not any(l.startswith("REDIS_MASTER_") for l in lines)  # only the pod's namespace
        assert not any(l.startswith("CART_") for l in env_lines(ferry))
    finally:
        r = ferry.ferryctl("delete", "-f", "-", input=CART)
        assert r.returncode == 0, r.stderr
    assert env_lines(ferry, "-n", "shop") == KUBERNETES_VARS


def test_exec(ferry):
    r = ferry.ferryctl("exec", "--", "sh", "-c", "echo $REDIS_MASTER_SERVICE_HOST")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{REDIS_VIP}\n", "")
    # The variables replace ones of the same name; the rest of the environment stays.
    env = dict(os.environ, FERRY_SOCKET=str(ferry.socket), REDIS_MASTER_SERVICE_HOST="old",
               KEEP_ME="yes")
    r = run([str(FERRYCTL), "exec", "--", "sh", "-c",
             'echo "$REDIS_MASTER_SERVICE_HOST $KEEP_ME"'], env=env)
    assert r.stdout == f"{REDIS_VIP} yes\n", r.stderr
    # Everything after -- is the command's, "--" and options included; its status is ours.
    r = ferry.ferryctl("exec", "-n", "shop", "--", "sh", "-c",
                       'echo "$# $*"; echo "${REDIS_MASTER_SERVICE_HOST-unset}"; exit 7',
                       "sh", "--", "-n", "x")
    assert r.returncode == 7, r.stderr
    assert r.stdout == "3 -- -n x\nunset\n"
    r = ferry.ferryctl("exec", "--no-service-links", "--", "sh", "-c",
                       "echo ${KUBERNETES_SERVICE_HOST}:${MY_SERVICE_SERVICE_HOST-none}")
    assert r.stdout == f"{API_VIP}:none\n", r.stderr


def test_exec_command_that_cannot_run(ferry, tmpdir_path):
    r = ferry.ferryctl("exec", "--", "no-such-command-ferry")
    assert r.returncode == 127, (r.returncode, r.stderr)
    assert "no-such-command-ferry" in r.stderr and r.stdout == ""
    # Found but not executable: 126, as env(1) and the shells say it.
    script = tmpdir_path / "not-executable"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    r = ferry.ferryctl("exec", "--", str(script))
    assert r.returncode == 126 and str(script) in r.stderr, (r.returncode, r.stderr)


def test_usage_and_refusals(ferry, tmpdir_path):
    for args in (["env", "-o", "yaml"], ["exec"], ["env", "extra"]):
        r = ferry.ferryctl(*args)
        assert r.returncode == 2 and r.stderr.strip(), (args, r.returncode, r.stderr)
    r = ferry.ferryctl("--socket", str(tmpdir_path / "none.sock"), "exec", "--", "true")
    assert r.returncode == 1 and "none.sock" in r.stderr, r.stderr
