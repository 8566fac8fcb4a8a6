#!/usr/bin/env bash
# The long churn soak: the same driver and checks as CI's short one (tests/e2e/test_soak.py,
# perf/soak.py) for --duration seconds (default 600): real TCP/UDP traffic through ferryd
# while Services, endpoints, drains and weights change every 100 ms. Writes the JSON summary
# to --out (default soak-<date>.json) and fails when a check fails. Run as root, after
# building (ninja -C build):
#   sudo ./perf/soak.sh --duration 600 [--grace 2] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=600
grace=2
out="soak-$(date -u +%Y%m%dT%H%M%SZ).json"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --grace) grace=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--duration SECONDS] [--grace SECONDS] [--out FILE]" >&2; exit 2 ;;
  esac
done
out=$(realpath -m "$out")
FERRY_SOAK_SECONDS=$duration FERRY_SOAK_GRACE=$grace FERRY_SOAK_OUT=$out \
  /usr/bin/python3 -m pytest -q -s -p no:cacheprovider tests/e2e/test_soak.py
echo "summary: $out"
