#!/usr/bin/python3
"""The demo's last part: ferryd following a Kubernetes API server. No real cluster runs
here, so the API server is the tests' fake one (tests/e2e/kubeapi.py: HTTPS with a test CA
and a bearer token, list + watch as kube-apiserver serves them), reached over a management
link into ferryd's namespace. The seed's my-service comes from it; scaling it, the server
going away and coming back, and deleting the Service are followed live.

Run by scripts/demo.sh after its ferryd has stopped:  demo_kube.py PREFIX SOCKET
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import kubeapi  # noqa: E402

API_HOST, NODE_SIDE = "198.18.254.1", "198.18.254.2"
PODS = ["198.18.1.11", "198.18.1.12", "198.18.1.13"]


def say(text):
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def my_service_slice(ips):
    return kubeapi.endpoint_slice(
        "my-service", name="my-service-abc12",
        endpoints=[{"ip": ip, "node": "ferry-demo", "pod": f"my-app-{PODS.index(ip) + 1}"}
                   for ip in ips],
        ports=[{"name": "", "port": 9376, "protocol": "TCP"}])


def main():
    prefix, sock = sys.argv[1], sys.argv[2]
    node_ns, client_ns = f"{prefix}-node", f"{prefix}-client"
    env = dict(os.environ, FERRY_SOCKET=sock)

    def ferryctl(*args):
        r = subprocess.run([str(ROOT / "build/tools/ferryctl"), *args], env=env,
                           capture_output=True, text=True)
        return r.stdout + r.stderr

    def curls(n, url="http://198.19.0.10/"):
        for _ in range(n):
            r = sh("ip", "netns", "exec", client_ns, "curl", "-sS", "-m", "2", url, check=False)
            print(f"  curl {url} -> {(r.stdout or r.stderr).strip()}", flush=True)

    def publish_ns():
        return json.loads(ferryctl("stats", "-o", "json"))["snapshot"]["published_unix_ns"]

    tmp = Path(tempfile.mkdtemp(prefix="ferry-demo-kube-"))
    link = f"{prefix}-api"
    api = ferryd = None
    try:
        sh("ip", "link", "add", link, "type", "veth", "peer", "name", "api0", "netns", node_ns)
        sh("ip", "addr", "add", f"{API_HOST}/30", "dev", link)
        sh("ip", "link", "set", link, "up")
        sh("ip", "netns", "exec", node_ns, "ip", "addr", "add", f"{NODE_SIDE}/30", "dev", "api0")
        sh("ip", "netns", "exec", node_ns, "ip", "link", "set", "api0", "up")

        api = kubeapi.FakeKubeAPI(kubeapi.make_pki(tmp / "pki", ips=(API_HOST,)),
                                  token="demo-token", host=API_HOST)
        api.start()
        api.apply(kubeapi.node("ferry-demo", zone="zone-a"))
        api.apply(kubeapi.service("my-service", cluster_ip="198.19.0.10",
                                  selector={"app": "MyApp"},
                                  ports=[{"name": "", "port": 80, "targetPort": 9376,
                                          "protocol": "TCP"}]))
        api.apply(my_service_slice(PODS[:2]))
        kubeconfig = api.write_kubeconfig(tmp / "kubeconfig")
        config = tmp / "node.toml"
        default = sh(str(ROOT / "build/tools/ferryd"), "--print-default-config").stdout
        config.write_text(default + f'\n[kubernetes]\nkubeconfig = "{kubeconfig}"\n')

        say(f"ferryd follows a Kubernetes API server ({api.url}, the tests' fake one): "
            "config = the default + [kubernetes] kubeconfig")
        print(f"  [kubernetes]\n  kubeconfig = \"{kubeconfig}\"", flush=True)
        ferryd = subprocess.Popen(["ip", "netns", "exec", node_ns, str(ROOT / "build/tools/ferryd"),
                                   "--config", str(config)])
        for _ in range(100):
            if "my-service" in ferryctl("get", "services"):
                break
            time.sleep(0.1)
        print(ferryctl("get", "services"), end="")
        curls(4)

        say("scaled on the API server: my-service gets a third endpoint")
        t0 = time.time_ns()
        api.apply(my_service_slice(PODS))
        time.sleep(0.3)
        print(f"  (watch event to dataplane: {(publish_ns() - t0) / 1e6:.1f} ms)", flush=True)
        curls(6)

        say("the API server goes away: forwarding goes on from the last state")
        api.stop()
        time.sleep(1.5)
        table = ferryctl("stats")
        print(table[table.find("Kubernetes API:"):], end="", flush=True)
        curls(3)

        say("it comes back; my-service is deleted there, and ferryd stops serving it")
        api.start()
        api.delete("Service", "default", "my-service")
        for _ in range(100):
            if "my-service" not in ferryctl("get", "services"):
                break
            time.sleep(0.1)
        print(ferryctl("get", "services"), end="")
        curls(1)
    finally:
        if ferryd:
            ferryd.terminate()
            ferryd.wait(timeout=10)
        if api:
            api.stop()
        sh("ip", "link", "del", link, check=False)
        subprocess.run(["rm", "-rf", str(tmp)])


if __name__ == "__main__":
    main()
