#!/usr/bin/python3
"""A pod for ferry's demo and tests: answers HTTP GET with its own name (TCP; GET /whoami adds
the address the request came from, as the pod sees it), HTTP POST with its name and the size
of the body it read, and echoes UDP datagrams prefixed with its name. Runs inside a network
namespace until killed. --http and --udp take one port or a comma-separated list (the soak
test's pods serve on several)."""
import argparse
import http.server
import socket
import socketserver
import threading


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ports = lambda text: [int(p) for p in text.split(",") if p and int(p)]  # noqa: E731
    ap.add_argument("--http", type=ports, default=[], help="TCP port(s) for HTTP: N[,N...]")
    ap.add_argument("--udp", type=ports, default=[], help="UDP port(s) for echo: N[,N...]")
    args = ap.parse_args()
    body = (args.name + "\n").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path.startswith("/whoami"):
                text = f"{args.name} {self.client_address[0]}:{self.client_address[1]}\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
                return
            if self.path.startswith("/slow"):
                # A long-lived response: a chunk every 0.2 s for as many seconds as asked.
                import time
                seconds = float(self.path.split("/")[-1] or 5)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                end = time.time() + seconds
                while time.time() < end:
                    self.wfile.write(body)
                    self.wfile.flush()
                    time.sleep(0.2)
                self.close_connection = True
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            # Reads the whole body and answers with its size (large uploads: path MTU tests).
            n = int(self.headers.get("Content-Length", 0))
            got = 0
            while got < n:
                chunk = self.rfile.read(min(65536, n - got))
                if not chunk:
                    break
                got += len(chunk)
            text = f"{args.name} {got}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *a):
            pass

    threads = []
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    for port in args.http:
        srv = socketserver.ThreadingTCPServer(("0.0.0.0", port), Handler)
        srv.daemon_threads = True
        threads.append(threading.Thread(target=srv.serve_forever, daemon=True))
    for port in args.udp:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", port))

        def echo(sock=sock):
            while True:
                data, peer = sock.recvfrom(65535)
                sock.sendto(args.name.encode() + b" " + data, peer)

        threads.append(threading.Thread(target=echo, daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
