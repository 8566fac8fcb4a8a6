"""A Service without endpoints: ferryd answers ICMP port unreachable from the VIP, so clients
fail fast with "connection refused" instead of timing out."""
import time

import pytest

from conftest import endpoint_slice

EMPTY_VIP = "198.19.0.30"
EMPTY = f"""\
apiVersion: v1
kind: Service
metadata:
  name: empty
spec:
  clusterIP: {EMPTY_VIP}
  ports:
    - {{name: web, protocol: TCP, port: 80, targetPort: 9376}}
    - {{name: dns, protocol: UDP, port: 53, targetPort: 9376}}
---
""" + endpoint_slice("empty-1", "empty", [], port_name="web")

# No EndpointSlice, no Endpoints, a selector no pod matches.
LONELY_VIP = "198.19.0.31"
LONELY = f"""\
apiVersion: v1
kind: Service
metadata:
  name: lonely
spec:
  clusterIP: {LONELY_VIP}
  selector: {{app: nobody}}
  ports:
    - {{protocol: TCP, port: 8080, targetPort: 9376}}
"""


@pytest.fixture(scope="module")
def empty(ferry):
    ferry.apply(EMPTY)
    ferry.apply(LONELY)
    r = ferry.ferryctl("get", "svc")
    assert "empty" in r.stdout and "lonely" in r.stdout, r.stdout
    return ferry


@pytest.mark.parametrize("host,port", [(EMPTY_VIP, 80), (LONELY_VIP, 8080)],
                         ids=["empty-slice", "no-slice"])
def test_tcp_connection_refused_fast(empty, host, port):
    ferry = empty
    url = f"http://{host}:{port}/"
    before = ferry.stats()
    t0 = time.monotonic()
    r = ferry.curl(url, max_time=5)
    elapsed = time.monotonic() - t0
    assert r.returncode == 7, f"curl exit {r.returncode}: {r.stderr}"
    assert elapsed < 2.0, elapsed
    after = ferry.stats()
    assert after["drops"]["no_endpoints"] > before["drops"]["no_endpoints"], after["drops"]
    assert after["l2"]["icmp_unreachable_sent"] > before["l2"]["icmp_unreachable_sent"], after["l2"]
    assert after["drops"]["no_endpoints"] >= 1 and after["l2"]["icmp_unreachable_sent"] >= 1
    # The kernel's own error, without curl's wording in between.
    code = f"""
import socket
s = socket.socket(); s.settimeout(2)
try:
    s.connect(("{host}", {port})); print("connected")
except ConnectionRefusedError: print("refused")
except OSError as e: print("error", e)
"""
    r = ferry.client_py(code)
    assert r.stdout.strip() == "refused", r.stdout + r.stderr
    # No flow was made for a refused connection.
    assert not [f for f in ferry.flows()["items"] if f["service"].startswith(host + ":")]


def test_udp_gets_connection_refused(empty):
    ferry = empty
    before = ferry.stats()
    code = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect(("{EMPTY_VIP}", 53))
s.send(b"anyone?")
try:
    s.recv(2048); print("answered")
except ConnectionRefusedError: print("refused")
except socket.timeout: print("timeout")
"""
    r = empty.client_py(code)
    assert r.stdout.strip() == "refused", r.stdout + r.stderr
    after = ferry.stats()
    assert after["drops"]["no_endpoints"] > before["drops"]["no_endpoints"]
    assert after["l2"]["icmp_unreachable_sent"] > before["l2"]["icmp_unreachable_sent"]


def test_icmp_error_quotes_the_vip(empty):
    """The ICMP error comes from the VIP and quotes the client's packet as it was sent."""
    code = f"""
from scapy.all import IP, TCP, ICMP, IPerror, TCPerror, sr1, conf
conf.verb = 0
a = sr1(IP(dst="{EMPTY_VIP}")/TCP(sport=40001, dport=80, flags="S", seq=1234), timeout=2)
if a is None:
    print("none")
else:
    print(a[IP].src, a[ICMP].type, a[ICMP].code, a[IPerror].dst, a[TCPerror].sport,
          a[TCPerror].dport, a[TCPerror].seq)
"""
    r = empty.client_py(code)
    assert r.stdout.split() == [EMPTY_VIP, "3", "3", EMPTY_VIP, "40001", "80", "1234"], \
        r.stdout + r.stderr
