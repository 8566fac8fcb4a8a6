#!/usr/bin/env bash
# Line-rate benchmark: ferryd against dpdk-testpmd on the same memif link, driven by
# `ferry-perf gen` (perf/gen.cpp says what it measures). Prints one JSON line per result
# on stdout, then a summary line with ferryd as a fraction of testpmd and the targets.
#
#   gen (lcore --gen-lcore)  A: net_memif client of $RUN/a.sock  <->  DUT eth0 198.18.0.254/24
#                            B: net_memif client of $RUN/b.sock  <->  DUT eth1 198.18.1.254/24
#   DUT: dpdk-testpmd (io forwarding) first, then ferryd (control on the first of --dut-lcores,
#        one worker on the second), each the memif server of both sockets.
#
# Run as root:  sudo perf/linerate.sh [options]
#   --quick           short everything: 100k flows, 1 run of 2 s, 10 s zero-loss check
#   --flows N         client flows (default 1000000)
#   --backends K      backend pods 198.18.1.1..K (default 16)
#   --duration S      seconds per run and per zero-loss trial (default 5)
#   --runs R          runs per throughput case (default 3)
#   --check S         length of the zero-loss check at 90% of testpmd's rate (default 60)
#   --cases LIST      comma list of: testpmd,tcp,imix,udp,conn,dns,zero_loss,check,synflood
#                     (default all but synflood)
#   --synflood-rate R synflood: established client packets, Mpps, or max (default 0.5); the
#                     SYN flood beside them is 5 times that (gen --case synflood; run it alone,
#                     so that the summary's ferryd_flows are its own)
#   --syn-max N       ferryd's [conntrack] syn_max (default: its own, capacity / 8)
#   --gen-lcore N     gen's core (default 0)
#   --dut-lcores A,B  the DUT's main and worker cores (default 0,1)
#   --no-huge         no hugepages (slower; memif still works): CI smoke, see linerate_smoke.sh
#   --zero-copy       memif zero-copy on gen's side (hugepages only)
#   --rsize N         memif rings of 2^N slots (gen, the client, sets them; default 10)
# Environment: RUN=DIR for the memif sockets (default /run/ferry-perf), KEEP_LOGS=DIR to keep
# the DUTs' logs, ferryd's config and the raw results, TESTPMD=PATH (default dpdk-testpmd).
# Busy-polling threads need their cores to themselves: other load on them shows up as noise
# (the summary records the load average). Default run time is about 4 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

flows=1000000 backends=16 duration=5 runs=3 check=60 huge=1 zero_copy=0 rsize=10 synflood_rate=0.5 syn_max=
cases=testpmd,tcp,imix,udp,conn,dns,zero_loss,check
gen_lcore=0 dut_lcores=0,1
while (($#)); do
  case $1 in
    --quick) flows=100000 runs=1 duration=2 check=10 ;;
    --flows) flows=$2; shift ;;
    --backends) backends=$2; shift ;;
    --duration) duration=$2; shift ;;
    --runs) runs=$2; shift ;;
    --check) check=$2; shift ;;
    --cases) cases=$2; shift ;;
    --synflood-rate) synflood_rate=$2; shift ;;
    --syn-max) syn_max=$2; shift ;;
    --gen-lcore) gen_lcore=$2; shift ;;
    --dut-lcores) dut_lcores=$2; shift ;;
    --no-huge) huge=0 ;;
    --zero-copy) zero_copy=1 ;;
    --rsize) rsize=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "linerate.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
has() { [[ ",$cases," == *",$1,"* ]]; }

perf=build/perf/ferry-perf ferryd=build/tools/ferryd testpmd=${TESTPMD:-dpdk-testpmd}
for b in "$perf" "$ferryd"; do
  [[ -x $b ]] || { echo "linerate.sh: $b missing: build first (ninja -C build)" >&2; exit 1; }
done
if ! command -v "$testpmd" >/dev/null; then
  echo "linerate.sh: $testpmd missing (apt-get install dpdk-dev)" >&2
  exit 1
fi

load_start=$(cut -d' ' -f1 /proc/loadavg)
RUN=${RUN:-/run/ferry-perf}
pfx=lr-$(basename "$RUN")  # EAL file prefixes: one run per RUN directory at a time
mkdir -p "$RUN"
tmp=$(mktemp -d)
out=$tmp/results.jsonl
: > "$out"
dut_pid= dut_log=

stop_dut() {
  if [[ -n $dut_pid ]]; then
    kill -INT "$dut_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$dut_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$dut_pid" 2>/dev/null || true
    wait "$dut_pid" 2>/dev/null || true
    dut_pid=
  fi
  rm -f "$RUN/a.sock" "$RUN/b.sock"
}
cleanup() {
  stop_dut
  # KEEP_LOGS=DIR keeps the DUT's log, its config and the results there.
  [[ -n ${KEEP_LOGS:-} ]] && { mkdir -p "$KEEP_LOGS"; cp -r "$tmp"/. "$KEEP_LOGS"/; }
  rm -rf "$tmp" /var/run/dpdk/"$pfx"-*  # and the EAL runtime directories of this run
  rmdir "$RUN" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ((huge)); then
  perf/hugepages.sh 2048 >&2
  eal_mem=() gen_mem=()
else
  eal_mem=(--no-huge -m 1536) gen_mem=(--no-huge)
  zero_copy=0
fi
gen_zc=()
((zero_copy)) && gen_zc=(--zero-copy)

server() { echo "net_memif$1,role=server,socket=$RUN/$2.sock,socket-abstract=no"; }
client() { echo "net_memif$1,role=client,socket=$RUN/$2.sock,socket-abstract=no,rsize=$rsize"; }

# Waits for a file (socket) to appear, or for the DUT to die.
wait_for() {
  for _ in $(seq 600); do
    [[ -e $1 ]] && return 0
    if ! kill -0 "$dut_pid" 2>/dev/null; then
      echo "linerate.sh: the DUT exited; its log:" >&2
      cat "$dut_log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "linerate.sh: $1 never appeared; the DUT's log:" >&2
  cat "$dut_log" >&2
  exit 1
}

dut= crashes=0
start_dut() {
  dut=$1
  rm -f "$RUN/a.sock" "$RUN/b.sock"
  if [[ $dut == testpmd ]]; then
    "$testpmd" -l "$dut_lcores" --file-prefix "$pfx-testpmd" --no-pci --log-level '*:error' \
      "${eal_mem[@]}" --vdev "$(server 0 a)" --vdev "$(server 1 b)" -- \
      --forward-mode=io --auto-start --nb-cores=1 --stats-period 3600 --disable-link-check \
      >> "$tmp/testpmd.log" 2>&1 &
    dut_pid=$! dut_log=$tmp/testpmd.log
  else
    "$ferryd" --config "$tmp/ferryd.toml" >> "$tmp/ferryd.log" 2>&1 &
    dut_pid=$! dut_log=$tmp/ferryd.log
    wait_for "$tmp/ferry.sock"
  fi
  wait_for "$RUN/a.sock"
  wait_for "$RUN/b.sock"
}

# Runs gen once against the DUT with one case per line of stdin (gen --steps -): a single
# memif connection for all of them, since DPDK 22.11's memif server can crash when a client
# disconnects (it unmaps the shared memory under its polling data path).
gen() {
  if ! "$perf" gen --lcore "$gen_lcore" --file-prefix "$pfx-gen" --a "$(client 0 a)" \
    --b "$(client 1 b)" --backends "$backends" --flows "$flows" --duration "$duration" \
    --runs "$runs" "${gen_mem[@]}" "${gen_zc[@]}" --steps - "$@" | tee -a "$out"; then
    echo "linerate.sh: gen against $dut failed (its message above; $dut log: $dut_log)" >&2
  fi
}

# True when the DUT survived gen's disconnect; says so when it did not.
dut_alive() {
  sleep 0.5
  kill -0 "$dut_pid" 2>/dev/null && return 0
  echo "linerate.sh: $dut exited when gen disconnected (a DPDK memif race; see $dut_log)" >&2
  crashes=$((crashes + 1))
  return 1
}

# ---- testpmd: the I/O ceiling of this link and these cores ----------------------------------
if has testpmd; then
  start_dut testpmd
  printf '%s\n' "--frame 64" "--frame imix" | gen --target testpmd
  dut_alive || true
  stop_dut
fi

# ---- ferryd ---------------------------------------------------------------------------------
ferryd_cases=(tcp imix udp conn dns zero_loss check synflood)
run_ferryd=0
for c in "${ferryd_cases[@]}"; do has "$c" && run_ferryd=1; done
if ((run_ferryd)); then
  {
    for svc in "web 198.19.0.10 80 TCP" "dns 198.19.0.20 53 UDP"; do
      read -r name vip port proto <<< "$svc"
      printf 'apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: default}\n' "$name"
      printf 'spec:\n  clusterIP: %s\n' "$vip"
      printf '  ports: [{port: %s, targetPort: 9376, protocol: %s}]\n---\n' "$port" "$proto"
      printf 'apiVersion: v1\nkind: Endpoints\nmetadata: {name: %s, namespace: default}\n' "$name"
      printf 'subsets:\n- ports: [{port: 9376, protocol: %s}]\n  addresses:\n' "$proto"
      for i in $(seq "$backends"); do printf '  - ip: 198.18.1.%d\n' "$i"; done
      printf -- '---\n'
    done
  } > "$tmp/services.yaml"
  # Flows: the stream flows stay ESTABLISHED (or UDP for 30 s); closed connections of the conn
  # case leave after tcp_closing_timeout = 1 s (plus up to 2 s of sweep), so at C conn/s about
  # 3C more entries are live.
  capacity=8388608
  ((huge)) || capacity=1048576
  eal=$(printf '"%s", ' -l "$dut_lcores" --file-prefix "$pfx-ferryd" --no-pci \
    --log-level '*:error' "${eal_mem[@]}")
  cat > "$tmp/ferryd.toml" <<EOF
[node]
name = "linerate"

[dataplane]
eal_args = [${eal%, }]
mbufs = 32767
idle_sleep_us = 0

[[port]]
name = "eth0"
device = "$(server 0 a)"
address = "198.18.0.254/24"

[[port]]
name = "eth1"
device = "$(server 1 b)"
address = "198.18.1.254/24"

[[route]]
to = "198.18.128.0/17"
via = "198.18.0.1"
port = "eth0"

[control]
socket = "$tmp/ferry.sock"

[sources]
manifests = ["$tmp/services.yaml"]

[services]
service_cidr = "198.19.0.0/16"

[conntrack]
capacity = $capacity
tcp_closing_timeout = 1
${syn_max:+syn_max = $syn_max}

[dns]
addresses = ["198.19.0.53"]
rate_limit = 0   # response rate limiting off: one generator asks at line rate from one /24

[metrics]
address = ""   # in the host namespace: leave 127.0.0.1:9100 to whatever else runs there
EOF
  start_dut ferryd

  steps=()
  has tcp && steps+=("--proto tcp --frame 64")
  has imix && steps+=("--proto tcp --frame imix")
  has udp && steps+=("--proto udp --frame 64")
  has conn && steps+=("--case conn")
  # DNS answered by the worker: names that exist, then a pod's first search-list miss.
  has dns && steps+=("--proto dns --flows 65536" "--proto dns-nx --flows 65536")
  has zero_loss && steps+=("--case zero_loss --proto tcp --frame 64")
  if has check; then
    # 90% of what testpmd forwards (both directions) is 45% of it as a client rate.
    rate=$(python3 -c '
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
t = [x for x in r if x["target"] == "testpmd" and x["case"] == "throughput" and x["frame"] == "64"]
print(0.9 * t[0]["mpps"]["median"] / 2 if t else 0)' "$out")
    if [[ $rate != 0 ]]; then
      steps+=("--case zero_loss --proto tcp --frame 64 --rate $rate --duration $check")
    else
      echo "linerate.sh: no testpmd result: skipping the zero-loss check" >&2
    fi
  fi
  # TCP abuse: established flows at a fixed rate, then the same with 5 times as many SYNs
  # from spoofed sources beside them.
  has synflood && steps+=("--case synflood --proto tcp --frame 64 --rate $synflood_rate --flood 5")
  printf '%s\n' "${steps[@]}" | gen --target ferryd
  if dut_alive; then
    build/tools/ferryctl --socket "$tmp/ferry.sock" -o json stats > "$tmp/stats.json" \
      2>/dev/null || true
  fi
  stop_dut
fi

# ---- summary --------------------------------------------------------------------------------
CRASHES=$crashes LOAD_START=$load_start python3 - "$out" "$tmp/stats.json" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def find(target, case, frame=None, proto=None):
    for r in rows:
        if r.get("target") == target and r["case"] == case and \
           frame in (None, r.get("frame")) and proto in (None, r.get("proto")):
            return r
    return None
s = {"bench": "gen", "case": "summary"}
tp, fd = find("testpmd", "throughput", "64"), find("ferryd", "throughput", "64", "tcp")
if tp and fd:
    s["testpmd_mpps"] = tp["mpps"]["median"]
    s["ferryd_mpps"] = fd["mpps"]["median"]
    s["ferryd_fraction"] = fd["mpps"]["median"] / tp["mpps"]["median"]
    s["target_fraction_0_95"] = s["ferryd_fraction"] >= 0.95
    s["gen_idle"] = {"testpmd": tp["gen_idle"], "ferryd": fd["gen_idle"]}
ti, fi = find("testpmd", "throughput", "imix"), find("ferryd", "throughput", "imix")
if ti and fi:
    s["imix_fraction"] = fi["mpps"]["median"] / ti["mpps"]["median"]
c = find("ferryd", "conn")
if c:
    s["conn_per_s_per_worker"] = c["conn_per_s"]["median"]
    s["target_conn_2M"] = c["conn_per_s"]["median"] >= 2e6
z = [r for r in rows if r.get("target") == "ferryd" and r["case"] == "zero_loss"]
if z:
    search = [r for r in z if r["rate"] == "search"]
    check = [r for r in z if r["rate"] != "search"]
    if search:
        s["zero_loss_mpps"] = search[0]["mpps"]["median"]
        if tp:
            s["zero_loss_fraction"] = search[0]["mpps"]["median"] / tp["mpps"]["median"]
    if check:
        t = check[0]["trials"][0]
        s["check_90pct"] = {"duration_s": check[0]["duration_s"], "offered_mpps": t["offered_mpps"],
                            "mpps": t["mpps"], "lost": t["lost"],
                            "zero_loss": check[0]["zero_loss"]}
        s["target_zero_loss_90pct_60s"] = check[0]["zero_loss"] and check[0]["duration_s"] >= 60
sf = find("ferryd", "synflood")
if sf:
    s["synflood"] = {"rate": sf["rate"], "flood_mpps": sf["flood"]["flood_mpps"],
                     "baseline_mpps": sf["baseline"]["mpps"]["median"],
                     "flood_run_mpps": sf["flood"]["mpps"]["median"],
                     "baseline_lost": sf["baseline"]["lost"], "flood_lost": sf["flood"]["lost"]}
s["misdirected"] = sum(r.get("misdirected", 0) for r in rows)
s["bad_checksum"] = sum(r.get("bad_checksum", 0) for r in rows)
if os.path.getsize(sys.argv[2]) if os.path.exists(sys.argv[2]) else 0:
    st = json.load(open(sys.argv[2]))
    st = st.get("result", st)
    s["ferryd_drops"] = {k: v for k, v in st.get("drops", {}).items() if v}
    s["ferryd_flows"] = st.get("flows", {})
s["cpu"] = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                 if l.startswith("model name")), "")
s["cpus"] = os.cpu_count()
s["dut_crashed_on_disconnect"] = int(os.environ.get("CRASHES", "0"))
# Busy polling needs its cores to itself: other load on the machine shows up here.
s["loadavg_start"] = float(os.environ.get("LOAD_START", "0"))
s["loadavg_end"] = float(open("/proc/loadavg").read().split()[0])
print(json.dumps(s))
PY
