#!/usr/bin/python3
"""A fake Kubernetes API server for ferry's tests: HTTPS, bearer-token or client-certificate
auth, and list + watch of Services, EndpointSlices and Nodes on the real wire protocol.

It mimics what a client such as client-go sees from a kube-apiserver backed by etcd:

- one global resourceVersion counter bumped by every write, an event history for watches and
  a compaction point before which history (and old continue tokens) are gone (410 Expired);
- lists: items in etcd key order without kind/apiVersion, paging with limit/continue over a
  consistent snapshot, label and field selectors;
- watches: a chunked HTTP/1.1 stream with one JSON event per chunk, replay from a
  resourceVersion, synthetic ADDED events without one, selector transitions turned into
  ADDED/DELETED, BOOKMARK events, timeoutSeconds, and the ERROR 410 event.

Use it from a test:

    api = FakeKubeAPI(make_pki(tmpdir), token="t0ken")
    api.start()
    rv = api.apply(service("web", cluster_ip="198.19.0.10"))
    ...
    api.stop()

or by hand: /usr/bin/python3 tests/e2e/kubeapi.py --dir /tmp/kube [--port 6443] [--token T]

Where it is not faithful: HTTP/1.1 and JSON only (no HTTP/2, no protobuf, no writes over
HTTP); no single-object watch or /api/v1/watch/ paths; a resourceVersion newer than the
current one is accepted rather than answered "too large"; watches without timeoutSeconds
never time out; limit is honoured even on resourceVersion=0 lists; only metadata.name and
metadata.namespace field selectors; no TLS close_notify on stop() (like a killed process).
"""
import argparse
import base64
import datetime
import http.server
import itertools
import json
import queue
import random
import re
import secrets
import select
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

DEFAULT_TOKEN = "ferry-test-token"
START_RV = 1000
DEEP_ERROR_DEPTH = 100000  # misbehave "deep_error": deep enough to overflow a recursive dump

# ---- Resources -------------------------------------------------------------------------------


class Resource:
    """One API resource: where it lives in the URL space and what its objects are called."""

    def __init__(self, kind, api_version, plural, namespaced):
        self.kind = kind
        self.api_version = api_version
        self.plural = plural
        self.namespaced = namespaced
        self.list_kind = kind + "List"
        # Fields a real server accepts in a fieldSelector for every resource of this scope.
        self.fields = ("metadata.name", "metadata.namespace") if namespaced else ("metadata.name",)


RESOURCES = {r.kind: r for r in (
    Resource("Service", "v1", "services", True),
    Resource("EndpointSlice", "discovery.k8s.io/v1", "endpointslices", True),
    Resource("Node", "v1", "nodes", False),
)}


def resource(kind):
    """The Resource for a kind ("Service") or plural ("services"), case-insensitively."""
    for r in RESOURCES.values():
        if kind.lower() in (r.kind.lower(), r.plural):
            return r
    raise KeyError(f"unknown kind {kind!r}")


def route(path):
    """(Resource, namespace or None, name or None) for an API path, or None (a 404).

    Accepts the cluster-wide form (/api/v1/services), the namespaced form
    (/api/v1/namespaces/NS/services) and either followed by /NAME, like the real server."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1] + "/" + parts[2], parts[3:]
    else:
        return None
    ns = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    if not 1 <= len(rest) <= 2:
        return None
    for r in RESOURCES.values():
        if r.api_version == group and r.plural == rest[0]:
            if ns is not None and not r.namespaced:
                return None
            return r, ns, (rest[1] if len(rest) == 2 else None)
    return None


def etcd_key(obj):
    """The object's key below its resource prefix in etcd ("ns/name", or "name" for
    cluster-scoped kinds): lists come back in this order and continue tokens point into it."""
    meta = obj["metadata"]
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else meta["name"]


def without_type(obj):
    """An object as it appears in a list's items: the real server drops kind and apiVersion."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


# ---- Status objects --------------------------------------------------------------------------

REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 422: "Invalid",
    429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}

EXPIRED_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list."
)


def status(code, message, reason=None, details=None):
    """A metav1.Status failure, field for field as the real server writes it."""
    obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason or REASONS.get(code, "Unknown")}
    if details is not None:
        obj["details"] = details
    obj["code"] = code
    return obj


UNAUTHORIZED = status(401, "Unauthorized")
NOT_FOUND = status(404, "the server could not find the requested resource", details={})


def too_old(requested, oldest):
    """The 410 a watch from a compacted resourceVersion gets (the watch cache's wording)."""
    return status(410, f"too old resource version: {requested} ({oldest})")


def encode_continue(rv, start):
    """A continue token like the real one: URL-safe base64 of {"v","rv","start"}."""
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token):
    """(rv, start key) from a continue token; ValueError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError("wrong version")
        return int(data["rv"]), str(data["start"])
    except Exception as e:
        raise ValueError(f"continue key is not valid: {e}") from None


def parse_bool(value):
    """Go's strconv.ParseBool, which the real server uses for query flags."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


def dumps(obj):
    """Compact JSON plus a newline, as Go's json.Encoder writes it."""
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def now_timestamp():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- Selectors -------------------------------------------------------------------------------

_LABEL_KEY = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_SET_TERM = re.compile(r"^(\S+)\s+(in|notin)\s*\(([^()]*)\)$")
_FIELD_TERM = re.compile(r"^([^=!]+?)\s*(==|!=|=)\s*(.*)$")


def _split_terms(text):
    """Split a selector on the commas that are not inside "in (a,b)" parentheses."""
    terms, depth, cur = [], 0, ""
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    return [t.strip() for t in terms if t.strip()]


class LabelSelector:
    """A labelSelector query parameter: comma-joined (ANDed) requirements `key`, `!key`,
    `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`."""

    def __init__(self, text=""):
        self.terms = [self._parse(t) for t in _split_terms(text or "")]

    @staticmethod
    def _parse(term):
        m = _SET_TERM.match(term)
        if m:
            op, key, values = m.group(2), m.group(1), {v.strip() for v in m.group(3).split(",")}
        elif term.startswith("!"):
            op, key, values = "!", term[1:].strip(), set()
        elif "!=" in term:
            op, (key, value) = "!=", term.split("!=", 1)
            values = {value.strip()}
        elif "=" in term:
            op, (key, value) = "=", term.replace("==", "=", 1).split("=", 1)
            values = {value.strip()}
        else:
            op, key, values = "exists", term, set()
        key = key.strip()
        if not _LABEL_KEY.match(key) or not all(_LABEL_VALUE.match(v) for v in values):
            raise ValueError(f"unable to parse requirement: invalid label selector term {term!r}")
        return op, key, values

    def matches(self, labels):
        labels = labels or {}
        for op, key, values in self.terms:
            has, value = key in labels, labels.get(key)
            ok = {
                "exists": has,
                "!": not has,
                "=": has and value in values,
                "in": has and value in values,
                "!=": not has or value not in values,
                "notin": not has or value not in values,
            }[op]
            if not ok:
                return False
        return True


class FieldSelector:
    """A fieldSelector query parameter: comma-joined `field=value`, `field==value`,
    `field!=value` over the fields the real server supports for every resource."""

    def __init__(self, text, res):
        self.terms = []
        for term in _split_terms(text or ""):
            m = _FIELD_TERM.match(term)
            if not m:
                raise ValueError(f"invalid selector: '{text}'; can't understand '{term}'")
            field, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
            if field not in res.fields:
                only = ", ".join(f'"{f}"' for f in res.fields)
                raise ValueError(f'"{field}" is not a known field selector: only {only}')
            self.terms.append((field, op != "!=", value))

    def matches(self, obj):
        meta = obj["metadata"]
        got = {"metadata.name": meta.get("name", ""),
               "metadata.namespace": meta.get("namespace", "")}
        return all((got[field] == value) == equal for field, equal, value in self.terms)


class Filter:
    """What one list or watch selects: a resource, maybe a namespace, and its selectors."""

    def __init__(self, res, ns=None, label_selector="", field_selector=""):
        self.res = res
        self.ns = ns
        self.labels = LabelSelector(label_selector)
        self.fields = FieldSelector(field_selector, res)

    @property
    def empty(self):
        """No selectors: the real server only estimates remainingItemCount then."""
        return not self.labels.terms and not self.fields.terms

    def matches(self, obj):
        meta = obj["metadata"]
        if self.ns is not None and meta.get("namespace") != self.ns:
            return False
        return self.labels.matches(meta.get("labels")) and self.fields.matches(obj)


# ---- Store and watches -----------------------------------------------------------------------


class Event:
    """One write in the history: what a watch from an older resourceVersion replays."""

    __slots__ = ("rv", "kind", "type", "key", "obj", "prev")

    def __init__(self, rv, kind, type, key, obj, prev):
        self.rv, self.kind, self.type, self.key, self.obj, self.prev = (
            rv, kind, type, key, obj, prev)

    def __iter__(self):  # (rv, resource, type, object), as the history is described
        return iter((self.rv, self.kind, self.type, self.obj))


class Watcher:
    """An open watch stream: its filter and a queue of what its thread still has to send."""

    def __init__(self, flt, bookmarks):
        self.filter = flt
        self.bookmarks = bookmarks
        self.queue = queue.Queue()
        self.last_rv = 0

    def translate(self, ev):
        """The events this watcher sees for a write. As on the real server, an object that
        stops matching the selectors is DELETED for it and one that starts matching ADDED."""
        if ev.kind != self.filter.res.kind:
            return []
        new_ok = self.filter.matches(ev.obj)
        old_ok = ev.prev is not None and self.filter.matches(ev.prev)
        if ev.type == "ADDED":
            return [("ADDED", ev.obj)] if new_ok else []
        if ev.type == "DELETED":
            return [("DELETED", ev.obj)] if old_ok else []
        if old_ok and new_ok:
            return [("MODIFIED", ev.obj)]
        if old_ok:
            return [("DELETED", ev.obj)]
        return [("ADDED", ev.obj)] if new_ok else []


# ---- TLS material ----------------------------------------------------------------------------

_OPENSSL_CNF = """\
[req]
distinguished_name = dn
[dn]
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {san}
[v3_client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

PKI_FILES = {"ca_crt": "ca.crt", "ca_key": "ca.key", "server_crt": "server.crt",
             "server_key": "server.key", "client_crt": "client.crt", "client_key": "client.key"}


def pki_paths(directory):
    """The dict make_pki returns, for a directory it already filled."""
    d = Path(directory)
    return {key: str(d / name) for key, name in PKI_FILES.items()}


def make_pki(directory, ips=()):
    """A test CA, a server certificate for 127.0.0.1/localhost (and `ips`) and a client certificate
    (CN ferry-test) it signed, all EC P-256 and valid for 2 days, made with the openssl CLI
    like a kubeadm cluster's PKI. Returns {"ca_crt", "ca_key", "server_crt", "server_key",
    "client_crt", "client_key"} -> path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cnf = d / "openssl-fake.cnf"
    san = ",".join([f"IP:{ip}" for ip in ("127.0.0.1", *ips)] + ["DNS:localhost"])
    cnf.write_text(_OPENSSL_CNF.replace("{san}", san))

    def openssl(*args):
        r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)} failed:\n{r.stderr}")

    def key(name):
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", str(d / name))
        (d / name).chmod(0o600)

    try:
        key("ca.key")
        openssl("req", "-new", "-x509", "-sha256", "-days", "2", "-key", str(d / "ca.key"),
                "-subj", "/CN=ferry-test-ca", "-config", str(cnf), "-extensions", "v3_ca",
                "-out", str(d / "ca.crt"))
        for name, subj, ext in (("server", "/CN=kube-apiserver", "v3_server"),
                                ("client", "/CN=ferry-test", "v3_client")):
            key(f"{name}.key")
            csr = d / f"{name}.csr"
            openssl("req", "-new", "-key", str(d / f"{name}.key"), "-subj", subj,
                    "-config", str(cnf), "-out", str(csr))
            openssl("x509", "-req", "-sha256", "-days", "2", "-in", str(csr),
                    "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
                    "-set_serial", str(secrets.randbits(62) + 1),
                    "-extfile", str(cnf), "-extensions", ext, "-out", str(d / f"{name}.crt"))
            csr.unlink()
    finally:
        cnf.unlink(missing_ok=True)
    return pki_paths(d)


# ---- HTTP ------------------------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    """One listening socket's life (start() to stop()); a thread per connection."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, api, address):
        self.api = api
        self.stopped = False
        super().__init__(address, _Handler)

    def server_bind(self):
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        # Clients that go away, failed handshakes, stop(): all expected here.
        if self.api.verbose:
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    """One TLS connection: HTTP/1.1 keep-alive requests until the client or stop() ends it."""

    protocol_version = "HTTP/1.1"

    # -- connection --

    def setup(self):
        api = self.server.api
        # The handshake runs here, in the connection's thread, not in the accept loop.
        sock = api._ssl.wrap_socket(self.request, server_side=True,
                                    do_handshake_on_connect=False)
        self.request = sock
        api._track(sock)
        try:
            sock.settimeout(10)
            sock.do_handshake()
            sock.settimeout(None)
        except BaseException:
            api._untrack(sock)
            sock.close()
            raise
        super().setup()

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.api._untrack(self.request)
            try:
                self.request.close()
            except OSError:
                pass

    def log_message(self, format, *args):
        if self.server.api.verbose:
            sys.stderr.write("kubeapi: %s %s\n" % (self.address_string(), format % args))

    def send_response(self, code, message=None):
        # No Server header: the real apiserver sends none.
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    # -- requests --

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method):
        api = self.server.api
        if self.server.stopped:
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        authorized = api._authenticate(self.headers.get("Authorization"),
                                       self.connection.getpeercert())
        self._rec = {"method": method, "path": url.path, "query": query,
                     "authorized": authorized, "status": None}
        failure = api._take_failure()
        if failure:
            msg = "Internal error occurred: injected failure" if failure == 500 else "injected"
            return self._send_json(failure, status(failure, msg))
        if not authorized:
            return self._send_json(401, UNAUTHORIZED)
        if url.path in ("/healthz", "/livez", "/readyz"):
            return self._send_text(200, "ok")
        if url.path == "/version":
            return self._send_json(200, VERSION, indent=True)
        found = route(url.path)
        if found is None:
            return self._send_json(404, NOT_FOUND)
        res, ns, name = found
        if method != "GET":
            return self._send_json(405, status(
                405, "the server does not allow this method on the requested resource",
                details={}))
        try:
            flt = Filter(res, ns, query.get("labelSelector"), query.get("fieldSelector"))
        except ValueError as e:
            return self._send_json(400, status(400, str(e)))
        if name is not None:
            return self._send_json(*api._get_one(res, ns, name))
        how = api.misbehave.get(res.plural)
        if how:
            return self._misbehave(how, res, query)
        if parse_bool(query.get("watch", "")):
            return self._watch(flt, query)
        return self._send_json(*api._list(flt, query))

    # -- plain responses --

    def _record(self, code):
        self._rec["status"] = code
        self.server.api.requests.append(self._rec)

    def _common_headers(self, content_type):
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", content_type)

    def _send_body(self, code, content_type, body):
        self._record(code)
        self.send_response(code)
        self._common_headers(content_type)
        if code == 429:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, code, obj, indent=False):
        body = (json.dumps(obj, indent=2) + "\n").encode() if indent else dumps(obj)
        self._send_body(code, "application/json", body)

    def _send_text(self, code, text):
        self._send_body(code, "text/plain; charset=utf-8", text.encode())

    # -- misbehaviour (FakeKubeAPI.misbehave) --

    def _misbehave(self, how, res, query):
        watch = parse_bool(query.get("watch", ""))
        if not watch:
            if how != "endless_list":
                return self._send_json(*self.server.api._list(Filter(res), query))
            n = int(query.get("continue") or 0)
            item = {"metadata": {"name": f"endless-{n}", "namespace": "default",
                                 "resourceVersion": str(START_RV)},
                    "spec": {"clusterIP": "None"}}
            return self._send_json(200, {
                "kind": res.list_kind, "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(START_RV), "continue": str(n + 1)},
                "items": [item]})
        if how == "watch_gone":
            return self._send_json(410, too_old(0, self.server.api._compacted))
        self._record(200)
        self.send_response(200)
        self._common_headers("application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if how == "watch_bad_line":
            data = b"{this is not json\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        elif how == "deep_error":
            d = DEEP_ERROR_DEPTH
            data = (b'{"type":"ERROR","object":{"kind":"Status","code":500,"details":'
                    + b"[" * d + b"]" * d + b"}}\n")
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        elif how == "wrong_types":
            self._chunk({"type": "ADDED", "object": {
                "kind": res.kind, "apiVersion": res.api_version,
                "metadata": {"name": "poison", "namespace": "default", "resourceVersion": 1}}})
            while not self.server.stopped and not self._client_gone():
                time.sleep(0.1)
            self.close_connection = True
            return
        elif how == "endless_line":
            piece = b'{"type":"ADDED","object":{"x":"' + b"x" * 65536
            try:
                while not self.server.stopped:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    piece = b"x" * 65536
            except OSError:
                pass
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")  # watch_closes, and the end of the others

    # -- watch --

    def _chunk(self, event):
        """One event, one chunk, written at once (a single send: one TLS record)."""
        data = dumps(event)
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _watch(self, flt, query):
        """A watch stream: replay or synthetic ADDED events, then live ones, until
        timeoutSeconds, close_watches()/expire_watches(), the client leaving or stop()."""
        api = self.server.api
        rv_param = query.get("resourceVersion", "")
        try:
            if rv_param:
                int(rv_param)
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        except ValueError as e:
            return self._send_json(400, status(400, f"invalid watch parameter: {e}"))
        bookmarks = parse_bool(query.get("allowWatchBookmarks", ""))
        initial_end = parse_bool(query.get("sendInitialEvents", ""))
        watcher, expired = api._open_watch(flt, rv_param, bookmarks, initial_end)
        if expired is not None and api.expired_as_http:
            return self._send_json(410, expired)

        self._record(200)
        self.send_response(200)
        self._common_headers("application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if expired is not None:
            self._chunk({"type": "ERROR", "object": expired})
            self.wfile.write(b"0\r\n\r\n")
            return
        try:
            if self._pump(watcher, timeout):
                self.wfile.write(b"0\r\n\r\n")  # the clean end of the response
            else:
                self.close_connection = True
        except OSError:
            self.close_connection = True
        finally:
            api._close_watch(watcher)

    def _pump(self, w, timeout):
        """Send what arrives on the watcher's queue. True: end the response cleanly;
        False: drop the connection (stop(), or the client went away)."""
        api = self.server.api
        res = w.filter.res
        now = time.monotonic()
        deadline = now + timeout if timeout else None
        interval = api.bookmark_interval if w.bookmarks else None
        next_bookmark = now + interval if interval else None
        while True:
            waits = [0.2] + [t - now for t in (deadline, next_bookmark) if t is not None]
            try:
                item = w.queue.get(timeout=max(0.0, min(waits)))
            except queue.Empty:
                item = None
            if self.server.stopped or (item is not None and item[0] == "stop"):
                return False
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return True
            if item is None:
                if next_bookmark is not None and now >= next_bookmark:
                    api._queue_bookmark(w)
                    next_bookmark = now + interval
                elif self._client_gone():
                    return False
                continue
            what = item[0]
            if what == "event":
                _, type_, obj = item
                self._chunk({"type": type_, "object": obj})
                w.last_rv = int(obj["metadata"]["resourceVersion"])
            elif what == "bookmark":
                _, rv, annotations = item
                meta = {"resourceVersion": str(rv)}
                if annotations:
                    meta["annotations"] = annotations
                self._chunk({"type": "BOOKMARK", "object": {
                    "kind": res.kind, "apiVersion": res.api_version, "metadata": meta}})
                w.last_rv = rv
            elif what == "expire":
                self._chunk({"type": "ERROR", "object": too_old(w.last_rv, api._compacted)})
                return True
            elif what == "close":
                return True

    def _client_gone(self):
        """Whether the client closed (EOF, TLS close_notify): it sends nothing on a watch."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable)
        except (OSError, ValueError):
            return True


VERSION = {
    "major": "1", "minor": "31", "gitVersion": "v1.31.0-ferry-fake",
    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z", "goVersion": "go1.22.5", "compiler": "gc",
    "platform": "linux/amd64",
}


# ---- The server ------------------------------------------------------------------------------


class FakeKubeAPI:
    """A kube-apiserver stand-in. Every control method is thread-safe: tests call them while
    the server's threads serve clients.

    Attributes tests may read or set:
      requests          list of {method, path, query, authorized, status}, in answer order
      expired_as_http   a watch from a compacted resourceVersion gets HTTP 410 (True) instead
                        of 200 + an ERROR event (False, the default)
      bookmark_interval seconds between BOOKMARKs on watches that allow them; None: never
      verbose           log requests and handler errors to stderr
      misbehave         {plural: how}: a hostile or broken server, per resource ("services"):
                          "watch_gone"      every watch gets HTTP 410 (the client relists)
                          "watch_closes"    every watch is answered 200 and closed at once
                          "watch_bad_line"  every watch sends one line that is not JSON
                          "deep_error"      every watch sends an ERROR event whose object
                                            nests DEEP_ERROR_DEPTH levels
                          "wrong_types"     every watch sends an event whose resourceVersion
                                            is a number, then stays open
                          "endless_line"    every watch sends a line that never ends
                          "endless_list"    every list page carries one more made-up object
                                            and a continue token, forever
    """

    def __init__(self, pki, token=DEFAULT_TOKEN, host="127.0.0.1", port=0,
                 bookmark_interval=1.0):
        """pki: make_pki()'s dict, or a directory holding its files (made if missing)."""
        if not isinstance(pki, dict):
            d = Path(pki)
            pki = pki_paths(d) if (d / "server.crt").exists() else make_pki(d)
        self.pki = {k: str(v) for k, v in pki.items()}
        self.host = host
        self.port = port
        self.bookmark_interval = bookmark_interval
        self.expired_as_http = False
        self.verbose = False
        self.misbehave = {}
        self.requests = []
        self.token = token
        self._tokens = {token} if token else set()
        self._lock = threading.RLock()
        self._rv = START_RV
        self._compacted = START_RV
        self._objects = {}    # (kind, namespace or "", name) -> object with kind/apiVersion
        self._history = []    # Event, oldest first, all after self._compacted
        self._watchers = set()
        self._failures = []
        self._conns = set()
        self._server = None
        self._thread = None
        self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ssl.load_cert_chain(self.pki["server_crt"], self.pki["server_key"])
        self._ssl.load_verify_locations(self.pki["ca_crt"])
        self._ssl.verify_mode = ssl.CERT_OPTIONAL  # a client cert is optional but verified

    # -- lifecycle --

    @property
    def url(self):
        return f"https://{self.host}:{self.port}"

    def write_kubeconfig(self, path, token=None):
        """A kubeconfig (JSON is YAML) for this server: its CA and a bearer token (default:
        the server's token)."""
        Path(path).write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {
                "server": self.url, "certificate-authority": self.pki["ca_crt"]}}],
            "users": [{"name": "client", "user": {"token": token or self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "client"}}]}))
        return path

    def start(self):
        """Listen (on the same port again after a stop()) and serve in daemon threads."""
        if self._server is not None:
            raise RuntimeError("already started")
        server = _Server(self, (self.host, self.port))
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={
            "poll_interval": 0.05}, name="kubeapi", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Like killing the apiserver process: close the listening socket and cut every
        connection at the TCP level, open watch streams included, without final events,
        terminating chunks or TLS close_notify. The stored objects and history stay."""
        server = self._server
        if server is None:
            return
        server.stopped = True
        with self._lock:
            watchers = list(self._watchers)
            self._watchers.clear()
        for w in watchers:
            w.queue.put(("stop",))
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        for sock in conns:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the TCP socket, not TLS
            except OSError:
                pass
        self._thread.join(5)
        self._server = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- auth and failures --

    def rotate_token(self, new):
        """Accept only `new` from now on; open watch streams keep running."""
        self.accept_tokens({new})
        self.token = new

    def accept_tokens(self, tokens):
        """Accept exactly these bearer tokens from now on."""
        with self._lock:
            self._tokens = set(tokens)
            if self.token not in self._tokens:
                self.token = next(iter(self._tokens), None)

    def fail_next(self, n, code=500):
        """The next n requests, whatever they are, get HTTP `code` with a Status body."""
        with self._lock:
            self._failures.extend([code] * n)

    def _take_failure(self):
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _authenticate(self, authorization, peercert):
        """A verified client certificate, or "Bearer <token>" with an accepted token."""
        if peercert:
            return True
        parts = (authorization or "").strip().split(" ")
        if len(parts) != 2 or parts[0].lower() != "bearer" or not parts[1]:
            return False
        with self._lock:
            return parts[1] in self._tokens

    def _track(self, sock):
        with self._lock:
            self._conns.add(sock)

    def _untrack(self, sock):
        with self._lock:
            self._conns.discard(sock)

    # -- objects --

    @property
    def resource_version(self):
        """The current (last written) resourceVersion."""
        with self._lock:
            return self._rv

    def apply(self, obj):
        """Create or update by (kind, namespace, name); returns the object's resourceVersion.

        Fills metadata like the server: namespace "default" for namespaced kinds, uid and
        creationTimestamp (kept across updates), generation (bumped when anything but
        metadata/status changes) and resourceVersion. An update that changes nothing is a
        no-op, as on the real server: no new resourceVersion, no watch event."""
        res = resource(obj["kind"])
        obj = json.loads(json.dumps(obj))
        obj["apiVersion"] = res.api_version
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            ns = meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
            ns = ""
        key = (res.kind, ns, meta["name"])
        with self._lock:
            old = self._objects.get(key)
            if old is None:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", now_timestamp())
                meta["generation"] = 1
            else:
                old_meta = old["metadata"]
                for field in ("uid", "creationTimestamp", "generation"):
                    meta[field] = old_meta[field]
                meta["resourceVersion"] = old_meta["resourceVersion"]
                if obj == old:
                    return int(old_meta["resourceVersion"])
                if _spec(obj) != _spec(old):
                    meta["generation"] += 1
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            self._objects[key] = obj
            self._publish(Event(self._rv, res.kind, "MODIFIED" if old else "ADDED", key,
                                obj, old))
            return self._rv

    def delete(self, kind, namespace, name):
        """Delete an object (KeyError if absent); returns the deletion's resourceVersion.
        The DELETED event carries the last state with that resourceVersion."""
        res = resource(kind)
        key = (res.kind, (namespace or "") if res.namespaced else "", name)
        with self._lock:
            old = self._objects.pop(key)
            self._rv += 1
            obj = json.loads(json.dumps(old))
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self._publish(Event(self._rv, res.kind, "DELETED", key, obj, old))
            return self._rv

    def get(self, kind, namespace, name):
        """A copy of the stored object (with kind/apiVersion), or None."""
        res = resource(kind)
        key = (res.kind, (namespace or "") if res.namespaced else "", name)
        with self._lock:
            obj = self._objects.get(key)
            return json.loads(json.dumps(obj)) if obj is not None else None

    def objects(self, kind):
        """Copies of every stored object of a kind, in list order."""
        res = resource(kind)
        with self._lock:
            objs = [o for k, o in self._objects.items() if k[0] == res.kind]
        return json.loads(json.dumps(sorted(objs, key=etcd_key)))

    @property
    def history(self):
        """The event history since the compaction point: (rv, kind, type, object) tuples."""
        with self._lock:
            return [tuple(ev) for ev in self._history]

    def compact(self):
        """Forget the history up to the current resourceVersion, like etcd compaction: a
        watch from an older resourceVersion, or a continue token made before it, gets 410."""
        with self._lock:
            self._compacted = self._rv
            self._history.clear()

    def _publish(self, ev):
        self._history.append(ev)
        for w in self._watchers:
            for type_, obj in w.translate(ev):
                w.queue.put(("event", type_, obj))

    def _state_at(self, rv):
        """All objects as they were at `rv` (not older than the compaction point)."""
        state = dict(self._objects)
        for ev in reversed(self._history):
            if ev.rv <= rv:
                break
            if ev.type == "ADDED":
                state.pop(ev.key, None)
            else:
                state[ev.key] = ev.prev
        return state

    # -- lists --

    def _get_one(self, res, ns, name):
        obj = self.get(res.kind, ns, name)
        if obj is None:
            return 404, status(404, f'{res.plural} "{name}" not found',
                               details={"name": name, "kind": res.plural})
        return 200, obj

    def _list(self, flt, query):
        """(HTTP status, body) for a list: a page of a consistent snapshot."""
        try:
            limit = max(0, int(query.get("limit") or 0))
        except ValueError:
            return 400, status(400, f"invalid limit: {query.get('limit')!r}")
        cont = query.get("continue", "")
        rv_param = query.get("resourceVersion", "")
        match = query.get("resourceVersionMatch", "")
        if rv_param and not rv_param.isdigit():
            return 400, status(400, f"invalid resource version: {rv_param!r}")
        if match and (match not in ("Exact", "NotOlderThan") or not rv_param):
            return 422, status(422, f'ListOptions.meta.k8s.io "" is invalid: '
                               f'resourceVersionMatch: Forbidden: {match!r} needs a '
                               f'resourceVersion')
        start = ""
        with self._lock:
            if cont:
                try:
                    rv, start = decode_continue(cont)
                except ValueError as e:
                    return 400, status(400, str(e))
                if rv < self._compacted:
                    return 410, status(410, EXPIRED_CONTINUE)
                objs = self._state_at(rv)
            elif match == "Exact":
                rv = int(rv_param)
                if rv < self._compacted:
                    return 410, too_old(rv, self._compacted)
                objs = self._state_at(rv)
            else:
                rv, objs = self._rv, self._objects
            items = [o for k, o in objs.items() if k[0] == flt.res.kind and flt.matches(o)]
        items.sort(key=etcd_key)
        items = [o for o in items if etcd_key(o) >= start]
        meta = {"resourceVersion": str(rv)}
        if limit and len(items) > limit:
            remaining = len(items) - limit
            items = items[:limit]
            meta["continue"] = encode_continue(rv, etcd_key(items[-1]) + "\x00")
            if flt.empty:
                meta["remainingItemCount"] = remaining
        return 200, {"kind": flt.res.list_kind, "apiVersion": flt.res.api_version,
                     "metadata": meta, "items": [without_type(o) for o in items]}

    # -- watches --

    def open_watches(self):
        """How many watch streams are open now."""
        with self._lock:
            return len(self._watchers)

    def _open_watch(self, flt, rv_param, bookmarks, initial_end):
        """Register a watcher with its initial events queued: (watcher, None), or
        (None, Status) when the resourceVersion is older than the compaction point."""
        w = Watcher(flt, bookmarks)
        with self._lock:
            if rv_param in ("", "0"):
                current = sorted((o for k, o in self._objects.items()
                                  if k[0] == flt.res.kind and flt.matches(o)), key=etcd_key)
                for obj in current:
                    w.queue.put(("event", "ADDED", obj))
                if bookmarks and initial_end:
                    w.queue.put(("bookmark", self._rv, {"k8s.io/initial-events-end": "true"}))
                w.last_rv = self._rv
            else:
                rv = int(rv_param)
                if rv < self._compacted:
                    return None, too_old(rv, self._compacted)
                for ev in self._history:
                    if ev.rv > rv:
                        for type_, obj in w.translate(ev):
                            w.queue.put(("event", type_, obj))
                w.last_rv = rv
            self._watchers.add(w)
        return w, None

    def _close_watch(self, w):
        with self._lock:
            self._watchers.discard(w)

    def _queue_bookmark(self, w):
        # Queued under the lock, so it follows every event up to its resourceVersion.
        with self._lock:
            w.queue.put(("bookmark", self._rv, None))

    def send_bookmarks(self):
        """A BOOKMARK now on every open watch that allowed them."""
        with self._lock:
            for w in self._watchers:
                if w.bookmarks:
                    w.queue.put(("bookmark", self._rv, None))

    def close_watches(self):
        """End every open watch stream cleanly (terminating chunk), as timeoutSeconds does."""
        with self._lock:
            for w in self._watchers:
                w.queue.put(("close",))

    def expire_watches(self, compact=True):
        """Send every open watch stream an ERROR 410 Expired event and end it, as a real
        server does when a watcher falls too far behind. With compact (the default) the
        history is compacted first, so re-watching from the last seen resourceVersion gets
        410 again, as it would for real: the client has to list anew."""
        with self._lock:
            if compact:
                self.compact()
            for w in self._watchers:
                w.queue.put(("expire",))


def _spec(obj):
    """What metadata.generation tracks: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


# ---- Object builders -------------------------------------------------------------------------

_cluster_ips = itertools.count(16)
# The alphabet of the apiserver's generateName suffixes (no vowels, no 0/1/3).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def random_suffix(n=5):
    return "".join(random.choice(_SUFFIX_ALPHABET) for _ in range(n))


def service(name, ns="default", cluster_ip=None, ports=None, type="ClusterIP", selector=None,
            labels=None, annotations=None, **spec_extra):
    """A v1 Service as `kubectl get -o json` shows it. cluster_ip None allocates one from
    10.96.0.0/12 as the server would, "None" makes it headless. ports default to
    [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]; NodePort and
    LoadBalancer ports without a nodePort get one. spec_extra keys (camelCase) go into spec."""
    if ports is None:
        ports = [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
    if cluster_ip is None:
        n = next(_cluster_ips)
        cluster_ip = f"10.96.{n >> 8 & 255}.{n & 255}"
    spec_ports = []
    for p in ports:
        p = dict(p)
        p.setdefault("protocol", "TCP")
        p.setdefault("targetPort", p["port"])
        if type in ("NodePort", "LoadBalancer"):
            p.setdefault("nodePort", random.randint(30000, 32767))
        spec_ports.append(p)
    meta = {"name": name, "namespace": ns}
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    if type == "ExternalName":
        spec = {"sessionAffinity": "None", "type": type}
        if ports:
            spec["ports"] = spec_ports
    else:
        spec = {
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv6" if ":" in cluster_ip else "IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": spec_ports,
            "sessionAffinity": "None",
            "type": type,
        }
        if type in ("NodePort", "LoadBalancer"):
            spec["externalTrafficPolicy"] = "Cluster"
        if type == "LoadBalancer":
            spec["allocateLoadBalancerNodePorts"] = True
    if selector:
        spec["selector"] = dict(selector)
    spec.update(spec_extra)
    return {"kind": "Service", "apiVersion": "v1", "metadata": meta, "spec": spec,
            "status": {"loadBalancer": {}}}


def endpoint_slice(service_name, ns="default", endpoints=None, ports=None, name=None,
                   address_type=None, labels=None, service_uid=None):
    """A discovery.k8s.io/v1 EndpointSlice as the endpointslice controller writes it.

    endpoints: dicts with "ip" (or "addresses"), and optionally "node", "zone", "pod",
    "hostname", "ready" (default True), "serving", "terminating", "for_zones" and
    "for_nodes" (lists of names for hints). Conditions left None are omitted.
    ports default to [{"name": "http", "port": 8080, "protocol": "TCP"}]."""
    if ports is None:
        ports = [{"name": "http", "port": 8080, "protocol": "TCP"}]
    endpoints = endpoints or []
    eps = []
    for e in endpoints:
        addresses = list(e["addresses"]) if "addresses" in e else [e["ip"]]
        conditions = {k: e.get(k, True if k == "ready" else None)
                      for k in ("ready", "serving", "terminating")}
        ep = {"addresses": addresses,
              "conditions": {k: v for k, v in conditions.items() if v is not None}}
        if e.get("hostname"):
            ep["hostname"] = e["hostname"]
        if e.get("node"):
            ep["nodeName"] = e["node"]
        ep["targetRef"] = {"kind": "Pod", "namespace": ns,
                           "name": e.get("pod") or f"{service_name}-{random_suffix()}",
                           "uid": str(uuid.uuid4())}
        if e.get("zone"):
            ep["zone"] = e["zone"]
        hints = {}
        if e.get("for_zones"):
            hints["forZones"] = [{"name": z} for z in e["for_zones"]]
        if e.get("for_nodes"):
            hints["forNodes"] = [{"name": n} for n in e["for_nodes"]]
        if hints:
            ep["hints"] = hints
        eps.append(ep)
    if address_type is None:
        first = eps[0]["addresses"][0] if eps else ""
        address_type = "IPv6" if ":" in first else "IPv4"
    all_labels = {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                  "kubernetes.io/service-name": service_name}
    all_labels.update(labels or {})
    meta = {
        "name": name or f"{service_name}-{random_suffix()}",
        "generateName": f"{service_name}-",
        "namespace": ns,
        "labels": all_labels,
        "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service_name,
                             "uid": service_uid or str(uuid.uuid4()),
                             "controller": True, "blockOwnerDeletion": True}],
    }
    slice_ports = [{"name": p.get("name", ""), "port": p["port"],
                    "protocol": p.get("protocol", "TCP"),
                    **({"appProtocol": p["appProtocol"]} if "appProtocol" in p else {})}
                   for p in ports]
    return {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "metadata": meta,
            "addressType": address_type, "endpoints": eps, "ports": slice_ports}


def node(name, addresses=(("InternalIP", "198.18.0.254"),), zone=None, labels=None,
         ready=True):
    """A v1 Node as the kubelet registers it: the usual well-known labels (zone when given),
    status.addresses (plus the Hostname one the kubelet adds) and a Ready condition."""
    all_labels = {"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name,
                  "kubernetes.io/os": "linux"}
    if zone:
        all_labels["topology.kubernetes.io/zone"] = zone
    all_labels.update(labels or {})
    addrs = [{"type": t, "address": a} for t, a in addresses]
    if not any(a["type"] == "Hostname" for a in addrs):
        addrs.append({"type": "Hostname", "address": name})
    stamp = now_timestamp()
    ready_condition = {
        "type": "Ready", "status": "True" if ready else "False",
        "reason": "KubeletReady" if ready else "KubeletNotReady",
        "message": "kubelet is posting ready status" if ready else "kubelet stopped posting",
        "lastHeartbeatTime": stamp, "lastTransitionTime": stamp,
    }
    return {"kind": "Node", "apiVersion": "v1",
            "metadata": {"name": name, "labels": all_labels},
            "spec": {},
            "status": {"addresses": addrs, "conditions": [ready_condition],
                       "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
                                    "kubeletVersion": "v1.31.0"}}}


# ---- CLI -------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description="A fake kube-apiserver (HTTPS, list + watch).")
    ap.add_argument("--dir", required=True, help="PKI directory (made if missing) and token")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=6443)
    ap.add_argument("--token", help="bearer token (default: DIR/token, else a random one)")
    ap.add_argument("--bookmark-interval", type=float, default=1.0)
    ap.add_argument("--load", action="append", default=[], metavar="FILE",
                    help="JSON object, list of objects or v1 List to apply at start")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)

    d = Path(args.dir)
    paths = pki_paths(d) if (d / "server.crt").exists() else make_pki(d)
    token_file = d / "token"
    token = args.token or (token_file.read_text().strip() if token_file.exists() else
                           secrets.token_urlsafe(24))
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)

    api = FakeKubeAPI(paths, token=token, host=args.host, port=args.port,
                      bookmark_interval=args.bookmark_interval)
    api.verbose = args.verbose
    for path in args.load:
        data = json.loads(Path(path).read_text())
        items = data.get("items", []) if isinstance(data, dict) and "items" in data else data
        for obj in items if isinstance(items, list) else [items]:
            api.apply(obj)
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    api.start()
    print(api.url, flush=True)
    while not done.wait(0.5):
        pass
    api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
