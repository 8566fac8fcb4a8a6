#!/usr/bin/env bash
# CI smoke mode: every benchmark runs once on small inputs without hugepages, and its JSON
# lines are checked for sanity (parseable, positive timings, no drops, Maglev balanced).
# Numbers from here mean nothing; perf/run.sh measures.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
build/perf/ferry-perf pipeline --no-huge --flows 1000 --runs 1 >> "$out"
build/perf/ferry-perf pipeline --no-huge --flows 1000 --runs 1 --workers 2 >> "$out"
build/perf/ferry-perf pipeline --no-huge --filter-rules 0,10 --payload 64 --runs 1 >> "$out"
build/perf/ferry-perf maglev --runs 1 >> "$out"
build/perf/ferry-perf sync --services 200 --runs 1 >> "$out"
build/perf/ferry-perf sync --services 200 --runs 1 --dns >> "$out"
/usr/bin/python3 perf/apply_latency.py --services 200 --changes 3 >> "$out"
/usr/bin/python3 perf/api_latency.py --services 200 --changes 3 --watch-seconds 2 >> "$out"
/usr/bin/python3 perf/ops_latency.py --services 200 --runs 3 --stalled 5 --busy 1 >> "$out"
build/perf/ferry-perf dns --no-huge --services 100 --runs 1 >> "$out"
/usr/bin/python3 perf/dns_perf.py --services 50 --runs 1 --duration 1 --only ferry >> "$out"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["bench"], []).append(r)
assert sorted(r["workers"] for r in by.get("pipeline", [])) == [1] * 4 + [2] * 4, by.keys()
for r in by["pipeline"]:
    assert r["ns_per_packet"]["median"] > 0 and r["drops"] == 0 and r["table_full"] == 0, r
    assert 64 * r["table_capacity"] < r["table_bytes"] <= 128 * r["table_capacity"], r
f = by.get("filter", [])
assert sorted(r["rules"] for r in f) == [0, 10], by.keys()
assert all(r["ns_per_packet"]["median"] > 0 and r["drops"] == 0 and r["hits"] == 0 for r in f), f
assert by["filter_compile"][0]["rules"] == 10 and by["filter_compile"][0]["database_bytes"] > 0
c = by["filter_check"][0]  # the measured packets were scanned: a matching rule counts each
assert c["hits"] == c["packets"] > 0, c
assert len(by.get("maglev", [])) == 4
for r in by["maglev"]:
    assert r["build_ms"]["median"] > 0 and r["max_over_mean"] < 1.01, r
    assert r["ideal_remove"] <= r["moved_on_remove"] < 10 * r["ideal_remove"], r
assert sorted(r["case"] for r in by.get("sync", [])) == ["ferry", "ferry + DNS zone"], by.keys()
s = by["sync"][0]
assert 0 < s["endpoint_change_ms"]["median"] <= s["endpoint_change_p99_ms"], s
assert 0 < s["yaml_decode_ms"]["median"] < s["full_load_ms"]["median"], s
a = by["apply"][0]
assert a["services"] == 200 and a["load_ms"] > 0 and a["rss_after_mib"] > a["rss_before_mib"], a
assert 0 < a["slice_change_socket_ms"]["median"] <= a["slice_change_socket_ms"]["p99"], a
k = by["api"][0]
assert k["services"] == 200 and k["initial_sync_s"] > 0 and k["rss_synced_mib"] > 0, k
assert 0 < k["event_to_publish_ms"]["median"] <= k["event_to_publish_ms"]["p99"] < 1000, k
assert k["events_seen"] >= 5, k
o = by["ops"][0]
assert o["services"] == 200 and o["metrics_scrape_bytes"] > 0, o
assert all(0 < o[k]["median"] <= o[k]["max"] for k in o if k.endswith("_ms")), o
d = by["dns_pipeline"]
assert sorted(r["case"] for r in d) == ["hit", "nxdomain"], d
assert all(r["answered_as_expected"] and r["ns_per_query"]["median"] > 0 for r in d), d
q = {r["query"]: r for r in by["dns"] if r["case"] == "ferry"}
assert q["hit"]["rcodes"].keys() == {"NOERROR"} and q["miss"]["rcodes"].keys() == {"NXDOMAIN"}, q
assert q["hit"]["qps"]["median"] > 0 and q["hit"]["tcp_check"] == "ok", q
print(f"perf smoke: {len(rows)} results sane")
PY
