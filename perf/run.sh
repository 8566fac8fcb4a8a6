#!/usr/bin/env bash
# Runs the whole benchmark suite and rewrites docs/performance.md (and docs/perf/*.png) from
# its JSON lines. Run as root on an otherwise idle machine:
#   sudo ./perf/run.sh [RUNS]          (RUNS per measurement, default 5; about 15 minutes)
# Steps: packages, build, 2048 x 2 MiB hugepages, then each benchmark pinned to its cores
# (docs/operations.md, "Performance runs"). The raw lines are kept in docs/perf/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
./scripts/install-deps.sh --perf
./scripts/build.sh >/dev/null
./perf/hugepages.sh 2048
mkdir -p docs/perf
out=docs/perf/results.jsonl
: > "$out"
perf=build/perf/ferry-perf
taskset -c 0 $perf pipeline --flows 1000,1000000,10000000 --runs "$runs" | tee -a "$out"
$perf pipeline --flows 1000,1000000 --runs "$runs" --workers 2 | tee -a "$out"
# Payload signature filter: 0/10/100/1000 rules, 64- and 512-byte payloads, side by side.
taskset -c 0 $perf pipeline --filter-rules 0,10,100,1000 --payload 64,512 --runs "$runs" \
  | tee -a "$out"
taskset -c 0 $perf maglev --runs "$runs" | tee -a "$out"
taskset -c 0 $perf sync --services 1000,10000,30000 --runs "$runs" | tee -a "$out"
taskset -c 0 $perf sync --services 10000 --runs "$runs" --dns | tee -a "$out"  # + the DNS zone
/usr/bin/python3 perf/apply_latency.py --services 1000,10000,30000 --changes 20 | tee -a "$out"
/usr/bin/python3 perf/ops_latency.py --services 1000,10000 --runs 30 | tee -a "$out"
/usr/bin/python3 perf/api_latency.py --services 1000,10000 --changes 50 --watch-seconds 60 \
  | tee -a "$out"
# The kernel loading the same services. Debian's iptables-restore (iptables-nft) needs
# minutes for a full load beyond 1k services and did not finish 10k in 30 minutes, so it
# stops at 1k; iptables-legacy and nft go to 10k (nft: 2.5 minutes per full load there).
/usr/bin/python3 perf/kernel_sync.py --services 1000 --runs 3 --changes 10 \
  --mode iptables,iptables-legacy,nft | tee -a "$out"
/usr/bin/python3 perf/kernel_sync.py --services 10000 --runs 1 --changes 10 \
  --mode iptables-legacy,nft | tee -a "$out"
taskset -c 0 $perf dns --services 1000,10000 --runs "$runs" | tee -a "$out"
/usr/bin/python3 perf/dns_perf.py --services 1000 --runs "$runs" | tee -a "$out"
perf/linerate.sh --runs "$runs" | tee -a "$out"
/usr/bin/python3 perf/report.py "$out" "./perf/run.sh $runs" perf/notes.md > docs/performance.md
echo "wrote docs/performance.md"
