#!/usr/bin/python3
"""Records when TCP/UDP packets arrive at a pod: run inside the pod's network namespace, it
reads every IPv4 packet the interface receives for this host (AF_PACKET, no tcpdump needed)
and writes "TIME PROTO DPORT" lines (wall clock, "tcp"/"udp", destination port), at most one
per (proto, port) every --every seconds, so a long run stays small. The tests use it to
prove that nothing reached a removed backend after its grace. Stops on SIGTERM/SIGINT."""
import argparse
import signal
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800
PACKET_HOST = 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", default="eth0")
    ap.add_argument("--out", required=True)
    ap.add_argument("--every", type=float, default=0.02, help="seconds between lines per port")
    args = ap.parse_args()
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    s.bind((args.iface, 0))
    s.settimeout(0.5)
    out = open(args.out, "w", buffering=1)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    last = {}
    out.write(f"{time.time():.3f} start 0\n")
    while not stop:
        try:
            frame, addr = s.recvfrom(256)
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        if addr[2] != PACKET_HOST or len(frame) < 14 + 20:
            continue
        ip = frame[14:]
        proto = ip[9]
        ihl = (ip[0] & 0x0F) * 4
        if proto not in (6, 17) or len(ip) < ihl + 4:
            continue
        (dport,) = struct.unpack_from("!H", ip, ihl + 2)
        now = time.time()
        key = (proto, dport)
        if now - last.get(key, 0.0) < args.every:
            continue
        last[key] = now
        out.write(f"{now:.3f} {'tcp' if proto == 6 else 'udp'} {dport}\n")
    out.write(f"{time.time():.3f} stop 0\n")
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
