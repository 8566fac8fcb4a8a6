#!/usr/bin/python3
"""Turns the benchmark suite's JSON lines into docs/performance.md and its PNG plots.

    perf/report.py RESULTS.jsonl "COMMAND" [NOTES.md] > docs/performance.md

Rows come from `ferry-perf pipeline|maglev|sync|gen` and perf/kernel_sync.py. Tables show
medians of the runs with min and max; the targets table compares them with the performance
issue's targets. NOTES.md (hand-written analysis: where the time goes, what limits a missed
target) is appended as is. Plots go to docs/perf/ (matplotlib, from Debian).
"""
import json
import os
import platform
import subprocess
import sys

PLOTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "perf")


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def pick(rows, bench, **match):
    return [r for r in rows if r.get("bench") == bench and
            all(r.get(k) == v for k, v in match.items())]


def one(rows, bench, **match):
    found = pick(rows, bench, **match)
    return found[0] if found else None


def med(r, key):
    return r[key]["median"] if r and key in r else None


def fmt(v, digits=1, unit=""):
    if v is None:
        return "not run"
    return f"{v:,.{digits}f}" + (f" {unit}" if unit else "")


def verdict(ok):
    return "not run" if ok is None else ("met" if ok else "**missed**")


def targets(rows):
    out = ["## Targets (the performance issue, one worker core)\n",
           "| target | measured | |", "|---|---|---|"]
    est = one(rows, "pipeline", case="established", flows=1_000_000, workers=1)
    v = med(est, "ns_per_packet")
    out.append(f"| established flows at 1M: <= 40 ns/packet | {fmt(v, 1, 'ns')} | "
               f"{verdict(None if v is None else v <= 40)} |")
    f, t = gen_fraction(rows, "tcp", "64")
    out.append(f"| memif, 64 B, 1M flows: ferryd >= 0.95 x testpmd | "
               f"{'not run' if f is None else f'{f:.2f} ({t})'} | "
               f"{verdict(None if f is None else f >= 0.95)} |")
    check = (one(rows, "gen", case="summary") or {}).get("check_90pct")
    if check:
        out.append(f"| zero loss at 90% of testpmd for 60 s | {check['offered_mpps']:.2f} Mpps of "
                   f"clients offered ({check['mpps']:.2f} Mpps through ferryd) for "
                   f"{check['duration_s']:.0f} s: {check['lost']:,} lost | "
                   f"{verdict(check['zero_loss'])} |")
    else:
        out.append("| zero loss at 90% of testpmd for 60 s | not run | not run |")
    conn = one(rows, "gen", case="conn", target="ferryd")
    c = med(conn, "conn_per_s")
    out.append(f"| >= 2M new TCP connections/s per worker | {fmt(c and c / 1e6, 2, 'M/s')} | "
               f"{verdict(None if c is None else c >= 2e6)} |")
    s10 = one(rows, "sync", case="ferry", services=10_000)
    p99 = s10 and s10.get("endpoint_change_p99_ms")
    out.append(f"| one endpoint change at 10k services: < 1 ms p99 | {fmt(p99, 2, 'ms')} | "
               f"{verdict(None if p99 is None else p99 < 1)} |")
    load = med(s10, "full_load_ms")
    applied = med(s10, "apply_decoded_ms")
    out.append(f"| load 10k services x 10 endpoints: < 100 ms | {fmt(load, 0, 'ms')} from YAML "
               f"({fmt(applied, 0, 'ms')} of it after decoding) | "
               f"{verdict(None if load is None else load < 100)} |")
    mg = one(rows, "maglev", table_size=65537, backends=1000)
    b = med(mg, "build_ms")
    out.append(f"| Maglev build M=65537 N=1000: < 1 ms | {fmt(b, 2, 'ms')} | "
               f"{verdict(None if b is None else b < 1)} |")
    big = one(rows, "pipeline", case="established", flows=10_000_000, workers=1)
    if big and "table_bytes" in big:
        per = big["table_bytes"] / big["flows"]
        gib = big["table_bytes"] / 2**30
        out.append(f"| <= 128 B per tracked flow; 10M flows in 1.5 GiB | {per:.0f} B per flow "
                   f"(table for {big['table_capacity']:,} entries holding 10M flows): "
                   f"{gib:.2f} GiB | {verdict(per <= 128 and gib <= 1.5)} |")
    else:
        out.append("| <= 128 B per tracked flow; 10M flows in 1.5 GiB | not run | not run |")
    return out + [""]


def gen_fraction(rows, proto, frame):
    """ferryd's throughput over testpmd's, same case, same run."""
    f = one(rows, "gen", case="throughput", target="ferryd", proto=proto, frame=frame)
    t = one(rows, "gen", case="throughput", target="testpmd", proto=proto, frame=frame)
    if not f or not t or not med(t, "mpps"):
        return None, None
    return med(f, "mpps") / med(t, "mpps"), f"{med(f, 'mpps'):.2f} / {med(t, 'mpps'):.2f} Mpps"


def pipeline(rows):
    out = ["## Packet path (`ferry-perf pipeline`)\n",
           "The worker's packet path (`process_burst`: parse, flow lookup, Maglev on a miss, "
           "NAT with incremental checksums, TTL, route, neighbor, TX batch) plus the worker "
           "loop's paced conntrack sweep, on 32-packet bursts of 60-byte TCP frames built in "
           "memory, no I/O, one core. The service has 100 backends; the connection table is "
           "sized for the flows it holds (capacity n + n/16 + 1024; new_flow adds room for "
           "the flows it creates). `established`: ACKs of random existing flows; `reply`: "
           "the backends' packets of random flows (un-NAT); `new_flow`: SYNs of flows not in "
           "the table (Maglev pick and connection insert). Writing the test frames into the "
           "mbufs is measured separately and subtracted.\n",
           "| case | concurrent flows | ns/packet (median) | min | max | Mpps/core | table memory |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in pick(rows, "pipeline", workers=1):
        ns = r["ns_per_packet"]
        mem = f"{r['table_bytes'] / 2**20:,.1f} MiB" if "table_bytes" in r else ""
        out.append(f"| {r['case']} | {r['flows']:,} | {ns['median']:.1f} | {ns['min']:.1f} | "
                   f"{ns['max']:.1f} | {r['mpps']:.2f} | {mem} |")
    out.append("\n![ns per packet](perf/pipeline.png)\n")
    multi = [r for r in pick(rows, "pipeline") if r.get("workers", 1) > 1]
    if multi:
        out += ["### Several workers (`--workers W`)\n",
                "W workers, one thread each pinned to its own CPU, on one shared connection "
                "table; worker t owns (inserted, and is sent by RSS) the flows with id % W == t. "
                "Mpps is the sum over workers; ns/packet the workers' mean. Speedup is against "
                "the one-worker row of the same case and flow count in this run.\n",
                "| case | concurrent flows | workers | ns/packet per worker | Mpps total | speedup |",
                "|---|---:|---:|---:|---:|---:|"]
        for r in multi:
            base = one(rows, "pipeline", case=r["case"], flows=r["flows"], workers=1)
            speed = f"{r['mpps'] / base['mpps']:.2f}x" if base else ""
            out.append(f"| {r['case']} | {r['flows']:,} | {r['workers']} | "
                       f"{med(r, 'ns_per_packet'):.1f} | {r['mpps']:.2f} | {speed} |")
        out.append("")
    return out


def filters(rows):
    """Payload signature filter."""
    found = pick(rows, "filter")
    if not found:
        return []
    out = ["## Payload signature filter (`ferry-perf pipeline --filter-rules`)\n",
           "Established-flow TCP packets (1,000 flows, one worker) carrying the start of an HTTP "
           "request of the payload size shown, with 0, 10, 100 and 1,000 `[[filter]]` rules "
           "(a quarter each: literal paths, caseless literals, `GET /[a-z]+N\\.php\\?id=[0-9]+'`-"
           "shaped regexes, caseless header regexes; depth 512), none matching: the common "
           "case. Every run measures every combination in turn, so the columns are side by "
           "side; the added cost is against 0 rules of the same payload in the same run.\n",
           "| payload bytes | rules | ns/packet (median) | min | max | added ns | Mpps/core |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in found:
        ns = r["ns_per_packet"]
        out.append(f"| {r['payload']} | {r['rules']:,} | {ns['median']:.1f} | {ns['min']:.1f} | "
                   f"{ns['max']:.1f} | {r['added_ns']:.1f} | {r['mpps']:.2f} |")
    for c in pick(rows, "filter_check"):
        out.append(f"\nCheck that these packets are scanned: with one more rule (count) matching "
                   f"the requests' path, {c['hits']:,} of {c['packets']:,} packets "
                   f"({c['payload']}-byte payload, {c['rules']:,} rules) counted a hit.")
    comp = pick(rows, "filter_compile")
    if comp:
        out += ["\nCompiling the rules into one Hyperscan block-mode database (control thread; "
                "one scratch):\n", "| rules | compile ms (median) | database bytes |",
                "|---:|---:|---:|"]
        for r in comp:
            out.append(f"| {r['rules']:,} | {med(r, 'ms'):.1f} | {r['database_bytes']:,} |")
    out.append("")
    return out


def maglev(rows):
    out = ["## Maglev (`ferry-perf maglev`)\n",
           "Table build time for M slots and N backends (the Maglev paper reports 1.8 ms for "
           "M=65537, N=1000), balance (largest backend share / mean share), and disruption: "
           "the fraction of table slots (so of flows) that move to another backend when one "
           "of N backends is removed or one is added, against the ideal 1/N.\n",
           "| M | N | build ms (median) | min | max | max/mean | moved on remove | ideal | "
           "moved on add | ideal |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in pick(rows, "maglev"):
        b = r["build_ms"]
        out.append(f"| {r['table_size']:,} | {r['backends']:,} | {b['median']:.2f} | "
                   f"{b['min']:.2f} | {b['max']:.2f} | {r['max_over_mean']:.4f} | "
                   f"{r['moved_on_remove']:.4f} | {r['ideal_remove']:.4f} | "
                   f"{r['moved_on_add']:.4f} | {r['ideal_add']:.4f} |")
    out.append("\nferryd sizes each service port's table itself: the smallest prime M >= 100 x N "
               "(at least 251), capped by `[maglev] max_table_size` (default 655373), which "
               "keeps max/mean under 1.01 whenever the cap is not reached.\n")
    return out


def sync(rows):
    out = ["## Control plane (`ferry-perf sync`, `perf/kernel_sync.py`)\n",
           "N Services with one EndpointSlice of 10 endpoints each. **ferry**, in process: the "
           "whole set as one multi-document YAML (decode, store, endpoints, every Maglev "
           "table, lookup tables, RCU publish), then single changes, each timed from the "
           "request (its YAML text) to the snapshot published: one endpoint of one Service "
           "replaced, and one new Service with its slice. **iptables-restore** and **nft**: "
           "the same Services as kube-proxy's iptables and nftables modes lay them out, loaded "
           "into a throwaway network namespace (full load: the whole ruleset; a change: "
           "kube-proxy's partial sync of the Service's chains), timed around the command.\n",
           "| services | loader | full load ms | endpoint change ms (median) | p99 | "
           "service add ms (median) | p99 |",
           "|---:|---|---:|---:|---:|---:|---:|"]
    sync_rows = sorted(pick(rows, "sync"), key=lambda r: (r["services"], r["case"] != "ferry"))
    for r in sync_rows:
        load = med(r, "full_load_ms")
        extra = ""
        if "yaml_decode_ms" in r:
            extra = (f" ({med(r, 'yaml_decode_ms'):,.0f} decode + "
                     f"{med(r, 'apply_decoded_ms'):,.0f} apply)")
        out.append(f"| {r['services']:,} | {r['case']} | {fmt(load, 0)}{extra} | "
                   f"{fmt(med(r, 'endpoint_change_ms'), 2)} | "
                   f"{fmt(r.get('endpoint_change_p99_ms'), 2)} | "
                   f"{fmt(med(r, 'service_add_ms'), 2)} | {fmt(r.get('service_add_p99_ms'), 2)} |")
    out.append("\n![sync](perf/sync.png)\n")
    return out


def applied(rows):
    a = sorted(pick(rows, "apply"), key=lambda r: r["services"])
    if not a:
        return []
    out = ["### A running ferryd, through its control socket (`perf/apply_latency.py`)\n",
           "ferryd on two DPDK null ports, N Services (every 16th a NodePort, its nodePort "
           "allocated) with one EndpointSlice of 10 endpoints each (conditions and nodeName "
           "set, as a cluster writes them), applied in one request; then single changed "
           "EndpointSlices, each timed from the request to ferryd's answer, which it sends "
           "once the new snapshot is published (the workers' next poll uses it): over the "
           "socket, and as `ferryctl apply -f FILE` including the process start. Memory: "
           "ferryd's resident size before and after the load.\n",
           "| services | load through the socket ms | RSS before → after MiB | KiB per service | "
           "slice change ms (median) | p99 | with ferryctl ms (median) | p99 |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in a:
        sc, fc = r["slice_change_socket_ms"], r["slice_change_ferryctl_ms"]
        out.append(f"| {r['services']:,} | {r['load_ms']:,.0f} | {r['rss_before_mib']:.0f} → "
                   f"{r['rss_after_mib']:.0f} | {r['memory_per_service_kib']:.1f} | "
                   f"{sc['median']:.2f} | {sc['p99']:.2f} | {fc['median']:.2f} | {fc['p99']:.2f} |")
    return out + [""]


def ops(rows):
    o = sorted(pick(rows, "ops"), key=lambda r: r["services"])
    if not o:
        return []
    out = ["### Operator verbs and the metrics scrape (`perf/ops_latency.py`)\n",
           "The same ferryd (null ports, N Services x 10 endpoints); each request timed from "
           "send to answer over the control socket, and `GET /metrics` over HTTP. Everything "
           "runs on the control thread, so this is also how long each one holds it. The last two rows: "
           "`get pods` (a small answer) while 40 clients hold half-sent requests and 4 others "
           "send `status` back to back, beside the same request alone.\n",
           "| request | " + " | ".join(f"{r['services']:,} services ms (median) | p99"
                                       for r in o) + " |",
           "|---|" + "---:|---:|" * len(o)]
    names = [("status", "status"), ("stats", "stats"), ("get_services", "get services"),
             ("describe", "describe service"), ("trace", "trace"),
             ("get_flows", "get flows (100)"), ("metrics_scrape", "GET /metrics"),
             ("get_pods_idle", "get pods, alone"), ("get_pods_loaded", "get pods, loaded")]
    for key, label in names:
        cells = " | ".join(f"{r[key + '_ms']['median']:.2f} | {r[key + '_ms']['p99']:.2f}"
                           for r in o)
        out.append(f"| {label} | {cells} |")
    out.append("")
    out.append("Scrape size: " + ", ".join(
        f"{r['metrics_scrape_bytes'] / 1e6:.1f} MB at {r['services']:,} services" for r in o) +
        ". Requests per second the 4 busy clients got answered while loaded: " +
        ", ".join(f"{r['load']['busy_status_per_s']:,}" for r in o) + ".")
    return out + [""]


def api(rows):
    a = sorted(pick(rows, "api"), key=lambda r: r["services"])
    if not a:
        return []
    out = ["### Following a Kubernetes API server (`perf/api_latency.py`)\n",
           "ferryd on two DPDK null ports follows the test API server (`tests/e2e/kubeapi.py`, "
           "Python, HTTPS on loopback, on the same two cores) holding N Services with one "
           "EndpointSlice of 10 endpoints each. Initial sync: ferryd's start to the publish "
           "holding every Service (the paged lists of both kinds, decoding, one apply), and the "
           "CPU seconds of the threads that did it. Event to publish: from just before the "
           "server writes one changed EndpointSlice to its watch stream to ferryd publishing "
           "the snapshot with it (ferryd reports each publish's wall clock). Watch cost: one "
           "endpoint change per second, CPU of ferryd's control and watch threads (the "
           "poll-mode workers spin by design and are left out) and resident memory.\n",
           "| services | initial sync s | sync CPU s (control / Service watch / slice watch) | "
           "RSS MiB | event to publish ms (median) | p99 | max | watch CPU % at 1 change/s | "
           "RSS after MiB |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in a:
        e, c = r["event_to_publish_ms"], r["initial_sync_cpu_s"]
        cpu = " / ".join(f"{c.get(k, 0):.2f}" for k in ("ferryd", "kube-Service", "kube-EndpointSl"))
        out.append(f"| {r['services']:,} | {r['initial_sync_s']:.2f} | {cpu} | "
                   f"{r['rss_synced_mib']:.0f} | {e['median']:.2f} | {e['p99']:.2f} | "
                   f"{e['max']:.2f} | {r['cpu_percent_control_and_watch']:.2f} | "
                   f"{r['rss_after_watch_mib']:.0f} |")
    return out + [""]


def dns(rows):
    pipe = pick(rows, "dns_pipeline")
    real = pick(rows, "dns")
    if not pipe and not real and not any(str(r.get("proto", "")).startswith("dns")
                                         for r in pick(rows, "gen")):
        return []
    out = ["## Cluster DNS\n"]
    if pipe:
        out += ["### In the packet path (`ferry-perf dns`, one worker core, no I/O)\n",
                "A UDP query to the DNS address through the whole worker path: parse, zone "
                "lookup, the answer written into the query's own buffer, IP and UDP checksums, "
                "route, neighbor, TX batch. Hits ask `svc-N.default.svc.cluster.local` A; misses "
                "ask what a pod's resolver with `ndots:5` sends first "
                "(`svc-N.default.svc.cluster.local.default.svc.cluster.local`), NXDOMAIN with "
                "the SOA.\n",
                "| services | zone names | hit ns/query | hit Mqps | NXDOMAIN ns/query | NXDOMAIN Mqps | NXDOMAIN / hit time |",
                "|---:|---:|---:|---:|---:|---:|---:|"]
        for n in sorted({r["services"] for r in pipe}):
            h, x = one(pipe, "dns_pipeline", services=n, case="hit"), one(
                pipe, "dns_pipeline", services=n, case="nxdomain")
            if not h or not x:
                continue
            out.append(f"| {n:,} | {h['zone_names']:,} | {med(h, 'ns_per_query'):.0f} | "
                       f"{h['mqps']:.2f} | {med(x, 'ns_per_query'):.0f} | {x['mqps']:.2f} | "
                       f"{med(x, 'ns_per_query') / med(h, 'ns_per_query'):.2f} |")
        out.append("")
    memif = [r for r in pick(rows, "gen") if str(r.get("proto", "")).startswith("dns")]
    if memif:
        out += ["### Over memif (`ferry-perf gen --proto dns|dns-nx`, `perf/linerate.sh`)\n",
                "Real I/O: gen on one core asks over a memif link, ferryd's one worker answers on "
                "the other; every answer is checked (source, the flow's DNS ID, response code, "
                "checksums).\n",
                "| query | Mqps (median) | min | max | lost | p50 us | p99 us |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for r in memif:
            m, lat = r["mpps"], r.get("latency_us", {})
            out.append(f"| {'hit' if r['proto'] == 'dns' else 'NXDOMAIN'} | {m['median']:.2f} | "
                       f"{m['min']:.2f} | {m['max']:.2f} | {r['lost']:,} | "
                       f"{fmt(lat.get('p50'))} | {fmt(lat.get('p99'))} |")
        out.append("")
    if real:
        n = real[0]["services"]
        out += ["### Beside NSD and Knot (`perf/dns_perf.py`, dnsperf through namespaces)\n",
                f"The same zone ({n:,} Services) served by ferryd (one worker, af_packet port), "
                "NSD and Knot (one server process each, pinned to the other core), asked by one "
                "dnsperf pinned to core 0 from a client namespace over a veth pair. Each round "
                "starts every server in turn, in rotating order; medians over the rounds. "
                "On these 2-core machines the one dnsperf core is the limit: NSD and Knot "
                "do not fill theirs (server CPU % below), so these numbers are near the "
                "client's ceiling and the ratios say how close each server comes to it, not "
                "what it could do on a core of its own; the packet-path and memif numbers "
                "above are ferry's own capacity. ferryd's CPU reads 100% because its worker "
                "polls; ferryd's main lcore (control) shares core 0 with dnsperf.\n",
                "| server | hit qps | NXDOMAIN qps | lost % | server CPU % | response bytes (hit / miss) |",
                "|---|---:|---:|---:|---:|---:|"]
        for server in ("ferry", "nsd", "knot"):
            h, x = one(real, "dns", case=server, query="hit"), one(real, "dns", case=server,
                                                                  query="miss")
            if not h or not x:
                continue
            out.append(f"| {h['version']} | {med(h, 'qps'):,.0f} | {med(x, 'qps'):,.0f} | "
                       f"{max(med(h, 'lost_percent'), med(x, 'lost_percent')):.2f} | "
                       f"{med(h, 'server_process_cpu_percent'):.0f} | "
                       f"{h['response_bytes']} / {x['response_bytes']} |")
        ratio = one(real, "dns", case="ratio")
        if ratio:
            parts = [f"{k.replace('_', ' ')}: {v:.2f}" for k, v in ratio.items()
                     if k.startswith("ferry_over") and isinstance(v, (int, float))]
            nested = [f"{k.replace('_', ' ')} ({q}): {v2:.2f}" for k, v in ratio.items()
                      if k.startswith("ferry_over") and isinstance(v, dict)
                      for q, v2 in v.items() if isinstance(v2, (int, float))]
            out.append("\nRatios, median of per-round ratios: " + "; ".join(parts + nested) + ".")
        out.append("")
    return out


def gen(rows):
    g = pick(rows, "gen")
    out = ["## Through real ports (`ferry-perf gen` over memif, `perf/linerate.sh`)\n"]
    if not g:
        return out + ["Not run in this report (`perf/linerate.sh`).\n"]
    out += ["ferryd (one worker lcore) and `dpdk-testpmd` (io forwarding, one forwarding "
            "lcore) between the same two memif links, with `ferry-perf gen` on the other "
            "core playing the clients on one link and the backends on the other. Mpps counts "
            "packets through the device under test, both directions summed; every DNATed "
            "packet and every reply is checked (a wrong address is a failure, not a number). "
            "Latency: client send to answer back, two passes through the device plus gen's "
            "turnaround. Rows `dns`/`dns-nx`: DNS queries to ferryd's DNS address (a name that "
            "exists / a pod's first search-list miss), answered by the worker itself: Mpps is "
            "answers per second, one pass, each answer checked.\n",
            "| case | proto | frame | target | Mpps (median) | min | max | lost | misdirected "
            "| p50 us | p99 us | p99.9 us |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in g:
        if r["case"] in ("conn", "summary"):
            continue
        lat = r.get("latency_us", {})
        m = r.get("mpps", {})
        if not isinstance(m, dict):
            m = {"median": m, "min": m, "max": m}
        case = r["case"]
        if case == "zero_loss":
            case = ("zero-loss search" if r.get("rate") == "search" else
                    f"check at {r.get('offered_mpps', 0):.2f} Mpps offered, {r['duration_s']:.0f} s")
        out.append(f"| {case} | {r.get('proto')} | "
                   f"{r.get('frame')} | {r['target']} | {fmt(m.get('median'), 2)} | "
                   f"{fmt(m.get('min'), 2)} | {fmt(m.get('max'), 2)} | {r.get('lost', 0):,} | "
                   f"{r.get('misdirected', 0):,} | {fmt(lat.get('p50'))} | {fmt(lat.get('p99'))} | "
                   f"{fmt(lat.get('p999'))} |")
    conns = [r for r in g if r["case"] == "conn"]
    if conns:
        out += ["", "| new TCP connections | conn/s (median) | completed | failed | p50 us | p99 us |",
                "|---|---:|---:|---:|---:|---:|"]
        for r in conns:
            lat = r.get("latency_us", {})
            out.append(f"| {r['target']} | {fmt(med(r, 'conn_per_s'), 0)} | {r['completed']:,} | "
                       f"{r['failed']:,} | {fmt(lat.get('p50'))} | {fmt(lat.get('p99'))} |")
    out.append("\n![gen](perf/gen.png)\n")
    return out


def plots(rows):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report.py: no matplotlib (apt install python3-matplotlib); plots skipped",
              file=sys.stderr)
        return
    os.makedirs(PLOTS, exist_ok=True)

    fig, ax = plt.subplots(figsize=(6, 4))
    for case in ("established", "reply", "new_flow"):
        rs = sorted(pick(rows, "pipeline", case=case, workers=1), key=lambda r: r["flows"])
        if rs:
            ax.plot([r["flows"] for r in rs], [med(r, "ns_per_packet") for r in rs], "o-",
                    label=case)
    ax.axhline(40, color="grey", linestyle="--", label="target (established, 1M)")
    ax.set_xscale("log")
    ax.set_xlabel("concurrent flows")
    ax.set_ylabel("ns per packet (one core)")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(PLOTS, "pipeline.png"), dpi=100)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for case in sorted({r["case"] for r in pick(rows, "sync")}):
        rs = sorted(pick(rows, "sync", case=case), key=lambda r: r["services"])
        a1.plot([r["services"] for r in rs], [med(r, "full_load_ms") for r in rs], "o-", label=case)
        a2.plot([r["services"] for r in rs], [r.get("endpoint_change_p99_ms") for r in rs], "o-",
                label=case)
    for ax, title in ((a1, "full load (ms)"), (a2, "one endpoint change, p99 (ms)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("services (x 10 endpoints)")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(PLOTS, "sync.png"), dpi=100)
    plt.close(fig)

    tp = [r for r in pick(rows, "gen", case="throughput")]
    if tp:
        labels = sorted({(r.get("proto"), r.get("frame")) for r in tp})
        fig, ax = plt.subplots(figsize=(6, 4))
        width = 0.38
        for k, target in enumerate(("testpmd", "ferryd")):
            vals = []
            for proto, frame in labels:
                r = one(rows, "gen", case="throughput", target=target, proto=proto, frame=frame)
                vals.append(med(r, "mpps") or 0)
            ax.bar([i + k * width for i in range(len(labels))], vals, width, label=target)
        ax.set_xticks([i + width / 2 for i in range(len(labels))])
        ax.set_xticklabels([f"{p} {f}" for p, f in labels])
        ax.set_ylabel("Mpps through the device (both directions)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(PLOTS, "gen.png"), dpi=100)
        plt.close(fig)


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
    command = sys.argv[2]
    notes = open(sys.argv[3]).read() if len(sys.argv) > 3 else ""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    out = ["# Performance\n",
           f"Produced by `{command}` (commit {commit}) on {cpu_model()}, {nproc} cores, one "
           "worker core, 2 MiB hugepages. Medians of the runs shown, with min and max; these "
           "shared machines drift, so compare numbers from one run only.\n"]
    out += (targets(rows) + pipeline(rows) + filters(rows) + maglev(rows) + sync(rows) + applied(rows) +
            ops(rows) + api(rows) + dns(rows) + gen(rows))
    if notes:
        out.append(notes)
    plots(rows)
    print("\n".join(out))


if __name__ == "__main__":
    main()
