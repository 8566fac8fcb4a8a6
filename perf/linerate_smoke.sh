#!/usr/bin/env bash
# CI smoke mode of perf/linerate.sh: testpmd and ferryd on memif without hugepages, a few
# thousand flows, one 1-second run per case (about 30 s in all), DNS queries included. Checks that every result is
# sane: traffic came back, nothing misdirected or corrupted, nothing lost, connections
# complete, the zero-loss search ran. Numbers from here mean nothing. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
RUN=${RUN:-/run/ferry-perf-smoke} perf/linerate.sh --no-huge --flows 4096 --backends 4 \
  --runs 1 --duration 1 --check 1 --cases testpmd,tcp,udp,conn,dns,zero_loss,check > "$out"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def ok(cond, r):
    if not cond:
        sys.exit(f"linerate smoke: bad result: {json.dumps(r)}")
key = lambda r: (r.get("target"), r["case"], r.get("proto"), r.get("frame"))
got = {key(r) for r in rows}
want = {("testpmd", "throughput", "tcp", "64"), ("testpmd", "throughput", "tcp", "imix"),
        ("ferryd", "throughput", "tcp", "64"), ("ferryd", "throughput", "udp", "64"),
        ("ferryd", "conn", "tcp", None), ("ferryd", "zero_loss", "tcp", "64"),
        ("ferryd", "throughput", "dns", "64"), ("ferryd", "throughput", "dns-nx", "64"),
        (None, "summary", None, None)}
ok(want <= got, sorted(map(str, got)))
for r in rows:
    if r["case"] == "summary":
        ok(r["misdirected"] == 0 and r["bad_checksum"] == 0 and 0 < r["ferryd_fraction"], r)
        continue
    ok(r["misdirected"] == 0 and r["bad_checksum"] == 0 and r["failures"] == {}, r)
    if r.get("proto", "").startswith("dns"):
        # ferryd answers DNS itself: answers on A, nothing on B.
        ok(r["received_b"] == 0 and r["mpps"]["median"] > 0, r)
    elif r["case"] != "zero_loss":
        ok(r["received_b"] > 0 and r["mpps"]["median"] > 0, r)
    if r["case"] == "throughput":
        ok(r["received"] > 0 and r["lost"] == 0 and r["warmup"]["lost"] == 0, r)
        ok(r["latency_us"]["p50"] > 0, r)
    elif r["case"] == "conn":
        ok(r["completed"] > 0 and r["failed"] == 0 and r["conn_per_s"]["median"] > 0, r)
    elif r["case"] == "zero_loss":
        # Whether a rate passes depends on the machine; the search itself must have run.
        ok(len(r["trials"]) >= (2 if r["rate"] == "search" else 1), r)
print(f"linerate smoke: {len(rows)} results sane")
PY
