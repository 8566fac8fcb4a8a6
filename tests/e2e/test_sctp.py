"""SCTP Services: an association to diameter (198.19.0.30:3868 -> my-app-1:3869) is forwarded
and tracked, its CRC32c right on both ends. This kernel has no SCTP sockets, so both ends are
raw IP sockets (protocol 132: the kernel hands them every SCTP packet and sends no protocol
unreachable) with scapy building and checking the packets: the client in its namespace sends
INIT, COOKIE ECHO, DATA, SHUTDOWN, SHUTDOWN COMPLETE; a responder in pod1's namespace answers
INIT ACK, COOKIE ACK, SACK + DATA, SHUTDOWN ACK, and records what reached it. Also the
Service's variables from `ferryctl env` (kubelet's SCTP forms)."""
import json
import subprocess
import time

from conftest import PYTHON, endpoint_slice, stop

SCTP_VIP = "198.19.0.30"
POD = "198.18.1.11"  # my-app-1, in namespace pod1

FERRY_MANIFESTS = {
    "40-diameter.yaml": f"""\
apiVersion: v1
kind: Service
metadata:
  name: diameter
spec:
  clusterIP: {SCTP_VIP}
  ports:
    - name: diameter
      protocol: SCTP
      port: 3868
      targetPort: 3869
---
""" + endpoint_slice("diameter-x1", "diameter", [POD], protocol="SCTP", port=3869,
                     port_name="diameter"),
}

# Shared by both ends: scapy, the checksum check (scapy sums it again over the packet as it
# arrived, checksum field aside), and a raw socket for SCTP.
COMMON = r"""
import json, socket, sys, time
from scapy.all import IP, SCTP, raw, conf
from scapy.layers.sctp import (SCTPChunkInit, SCTPChunkInitAck, SCTPChunkCookieEcho,
    SCTPChunkCookieAck, SCTPChunkData, SCTPChunkSACK, SCTPChunkShutdown, SCTPChunkShutdownAck,
    SCTPChunkShutdownComplete, SCTPChunkParamStateCookie)
conf.verb = 0

def crc_ok(sctp_bytes):
    p = SCTP(sctp_bytes)
    got = p.chksum
    p.chksum = None
    return SCTP(raw(p)).chksum == got

def sock():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 132)
    s.settimeout(0.2)
    return s

def recv(s, deadline, want_src=None):
    while time.time() < deadline:
        try:
            data, peer = s.recvfrom(65535)
        except socket.timeout:
            continue
        ip = IP(data)
        if want_src and ip.src != want_src:
            continue
        body = data[(data[0] & 15) * 4:]
        return ip, body
    return None, None
"""

RESPONDER = COMMON + r"""
out = open(sys.argv[1], "w", buffering=1)
s = sock()
deadline = time.time() + float(sys.argv[2])
out.write(json.dumps({"ready": True}) + "\n")
while time.time() < deadline:
    ip, body = recv(s, deadline)
    if ip is None:
        break
    p = SCTP(body)
    chunk = p.payload
    kinds = []
    c = chunk
    while c is not None and c.name != "NoPayload" and len(kinds) < 8:
        kinds.append(type(c).__name__)
        c = c.payload
    out.write(json.dumps({"src": ip.src, "sport": p.sport, "dport": p.dport, "tag": p.tag,
                          "crc_ok": crc_ok(body), "chunks": kinds}) + "\n")
    hdr = SCTP(sport=p.dport, dport=p.sport)
    if isinstance(chunk, SCTPChunkInit):
        hdr.tag = chunk.init_tag
        answer = hdr / SCTPChunkInitAck(init_tag=0x0A0B0C0D, a_rwnd=65535, n_out_streams=1,
            n_in_streams=1, init_tsn=100,
            params=[SCTPChunkParamStateCookie(cookie=b"cookie-of-pod1")])
        peer_tag = chunk.init_tag
    elif isinstance(chunk, SCTPChunkCookieEcho):
        hdr.tag = peer_tag
        answer = hdr / SCTPChunkCookieAck()
    elif isinstance(chunk, SCTPChunkData):
        hdr.tag = peer_tag
        answer = hdr / SCTPChunkSACK(cumul_tsn_ack=chunk.tsn, a_rwnd=65535) / SCTPChunkData(
            tsn=100, stream_id=0, stream_seq=0, proto_id=46, beginning=1, ending=1,
            data=b"pod1 got " + bytes(chunk.data))
    elif isinstance(chunk, SCTPChunkShutdown):
        hdr.tag = peer_tag
        answer = hdr / SCTPChunkShutdownAck()
    else:
        continue
    s.sendto(raw(answer), (ip.src, 0))
"""

CLIENT = COMMON + r"""
steps = json.loads(sys.argv[1])
s = sock()
vip, sport = "{vip}", {sport}
seen = []
state = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {{}}
for step in steps:
    hdr = SCTP(sport=sport, dport=3868, tag=state.get("peer_tag", 0))
    if step == "init":
        pkt = hdr / SCTPChunkInit(init_tag=0x01020304, a_rwnd=65535, n_out_streams=1,
                                  n_in_streams=1, init_tsn=1)
    elif step == "cookie":
        pkt = hdr / SCTPChunkCookieEcho(cookie=b"cookie-of-pod1")
    elif step == "data":
        pkt = hdr / SCTPChunkData(tsn=1, stream_id=0, stream_seq=0, proto_id=46, beginning=1,
                                  ending=1, data=b"CER")
    elif step == "shutdown":
        pkt = hdr / SCTPChunkShutdown(cumul_tsn_ack=100)
    elif step == "complete":
        pkt = hdr / SCTPChunkShutdownComplete()
    s.sendto(raw(pkt), (vip, 0))
    if step == "complete":
        seen.append({{"sent": step}})
        continue
    ip, body = recv(s, time.time() + 3, want_src=vip)
    if ip is None:
        seen.append({{"sent": step, "answer": None}})
        break
    p = SCTP(body)
    kinds, c = [], p.payload
    while c is not None and c.name != "NoPayload" and len(kinds) < 8:
        kinds.append(type(c).__name__)
        c = c.payload
    if isinstance(p.payload, SCTPChunkInitAck):
        state["peer_tag"] = p.payload.init_tag
    c, texts = p.payload, []
    while c is not None and c.name != "NoPayload":
        if isinstance(c, SCTPChunkData):
            texts.append(bytes(c.data).decode())
        c = c.payload
    seen.append({{"sent": step, "src": ip.src, "sport": p.sport, "dport": p.dport,
                  "tag": p.tag, "crc_ok": crc_ok(body), "chunks": kinds, "data": texts}})
print(json.dumps({{"seen": seen, "state": state}}))
"""


def sctp_flow(ferry, sport):
    items = ferry.flows()["items"]
    mine = [f for f in items if f["protocol"] == "SCTP" and f["client"] == f"198.18.0.1:{sport}"]
    return mine[0] if mine else None


def client_steps(ferry, steps, sport, state=None):
    code = CLIENT.format(vip=SCTP_VIP, sport=sport)
    args = [PYTHON, "-c", code, json.dumps(steps)]
    if state is not None:
        args.append(json.dumps(state))
    r = ferry.netns(ferry.client_ns, args, timeout=30)
    assert r.returncode == 0, f"{r.stderr}\n{ferry.log()}"
    return json.loads(r.stdout)


def test_sctp_association_is_forwarded_with_checksums_right(ferry):
    record = ferry.tmp / "pod1-sctp.jsonl"
    responder = subprocess.Popen(
        ["ip", "netns", "exec", ferry.ns("pod1"), PYTHON, "-c", RESPONDER, str(record), "40"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 15
        while not (record.exists() and record.read_text().strip()):
            assert responder.poll() is None, responder.stderr.read()
            assert time.time() < deadline, "the SCTP responder did not start"
            time.sleep(0.1)
        sport = 40000
        first = client_steps(ferry, ["init", "cookie", "data"], sport)
        seen = first["seen"]
        assert [x.get("chunks") for x in seen] == [
            ["SCTPChunkInitAck"], ["SCTPChunkCookieAck"], ["SCTPChunkSACK", "SCTPChunkData"]], (
            f"{seen}\n{ferry.log()}")
        for x in seen:
            # Un-NATed: from the service address and port, CRC32c summed again (3869 -> 3868).
            assert x["src"] == SCTP_VIP and x["sport"] == 3868 and x["dport"] == sport, x
            assert x["crc_ok"], x
        assert seen[2]["data"] == ["pod1 got CER"], seen
        flow = sctp_flow(ferry, sport)
        assert flow and flow["state"] == "SCTP_ESTABLISHED", flow
        assert flow["backend"] == f"{POD}:3869" and flow["service"] == f"{SCTP_VIP}:3868", flow

        second = client_steps(ferry, ["shutdown", "complete"], sport, first["state"])
        assert second["seen"][0].get("chunks") == ["SCTPChunkShutdownAck"], second
        assert second["seen"][0]["crc_ok"], second
        flow = sctp_flow(ferry, sport)
        assert flow and flow["state"] == "SCTP_CLOSING", flow

        # What reached the pod: every packet at port 3869, from the client, CRC32c right.
        time.sleep(0.3)
        got = [json.loads(line) for line in record.read_text().splitlines()[1:]]
        assert [g["chunks"][0] for g in got] == [
            "SCTPChunkInit", "SCTPChunkCookieEcho", "SCTPChunkData", "SCTPChunkShutdown",
            "SCTPChunkShutdownComplete"], got
        for g in got:
            assert g["src"] == "198.18.0.1" and g["sport"] == sport and g["dport"] == 3869, g
            assert g["crc_ok"], g
        st = ferry.service_stats("default/diameter")
        assert st["protocol"] == "SCTP" and st["new_flows"] >= 1, st
        assert ferry.stats()["drops"].get("l4_bad_checksum", 0) == 0
    finally:
        stop(responder, term_wait=2)


def test_sctp_service_variables(ferry):
    r = ferry.ferryctl("env", "-n", "default")
    assert r.returncode == 0, r.stderr
    lines = set(r.stdout.splitlines())
    for want in ["DIAMETER_SERVICE_HOST=198.19.0.30", "DIAMETER_SERVICE_PORT=3868",
                 "DIAMETER_SERVICE_PORT_DIAMETER=3868", "DIAMETER_PORT=sctp://198.19.0.30:3868",
                 "DIAMETER_PORT_3868_SCTP=sctp://198.19.0.30:3868",
                 "DIAMETER_PORT_3868_SCTP_PROTO=sctp", "DIAMETER_PORT_3868_SCTP_PORT=3868",
                 "DIAMETER_PORT_3868_SCTP_ADDR=198.19.0.30"]:
        assert want in lines, (want, r.stdout)
