#!/usr/bin/env bash
# Runs the benchmark suite on hugepages and rewrites docs/performance.md from its JSON lines.
# Run as root:  sudo ./perf/run.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
./scripts/install-deps.sh
./scripts/build.sh >/dev/null
./perf/hugepages.sh 2048
out=$(mktemp)
trap 'rm -f "$out"' EXIT
build/perf/ferry-perf pipeline --flows 1000,1000000,10000000 --runs "$runs" | tee -a "$out"
build/perf/ferry-perf maglev --runs "$runs" | tee -a "$out"
build/perf/ferry-perf sync --services 1000,10000 --runs "$runs" | tee -a "$out"
/usr/bin/python3 perf/report.py "$out" "./perf/run.sh $runs" > docs/performance.md
echo "wrote docs/performance.md"
