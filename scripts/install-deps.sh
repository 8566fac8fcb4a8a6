#!/usr/bin/env bash
# Installs the Debian 12 packages ferry needs to build, test and run its demo. Idempotent:
# only missing packages are installed. Run as root.
#   --perf: also what perf/run.sh needs beyond the tests (matplotlib for the plots).
set -euo pipefail

packages=(
  g++ meson ninja-build pkg-config clang-format git
  libdpdk-dev dpdk libtoml11-dev libspdlog-dev libgtest-dev libgmock-dev libyaml-cpp-dev
  nlohmann-json3-dev libcli11-dev libbenchmark-dev libcurl4-openssl-dev openssl
  iproute2 ethtool curl python3 python3-scapy python3-pytest netcat-openbsd redis-server redis-tools procps
  python3-prometheus-client  # the metrics test checks /metrics with the reference parser
  dnsutils knot-dnsutils dnsperf  # dig, kdig, dnsperf: DNS clients of the tests, demo, perf smoke
  dpdk-dev iptables nftables  # dpdk-testpmd and the kernel loaders the benchmarks compare with
  # dpdk-dev also ships dpdk-dumpcap, dpdk-pdump and dpdk-telemetry.py (tests/e2e/test_capture.py);
  # python3-yaml reads deploy/kubernetes/ in tests/e2e/test_deploy_files.py.
  python3-yaml
  libhyperscan-dev  # the payload signature filter ([[filter]])
  iputils-ping  # the demo pings the node and a ClusterIP
)
# NSD and Knot: the reference DNS servers perf/dns_perf.py measures ferryd beside.
[[ ${1:-} == --perf ]] && packages+=(python3-matplotlib nsd knot)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Install without starting any service (nsd and knot would start system-wide daemons;
  # the benchmark runs its own copies in a namespace).
  policy=/usr/sbin/policy-rc.d
  [ -e "$policy" ] || { printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1; }
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -z "${made_policy:-}" ] || rm -f "$policy"
fi
