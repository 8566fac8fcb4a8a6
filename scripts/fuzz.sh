#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for SECONDS (default
# 20) from its seed corpus in tests/fuzz/corpus/<target>. Exits non-zero on any finding.
# FUZZ_SEED fixes libFuzzer's random seed (scripts/test.sh sets it so a test run repeats);
# unset, each run explores afresh. A finding goes into the corpus once it is fixed.
# usage: [FUZZ_SEED=N] scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(packet manifest config request dns metrics control)
if [ ! -f build-fuzz/build.ninja ]; then
  CXX=clang++ meson setup build-fuzz -Dfuzz=true -Dtests=false -Dbuildtype=debugoptimized \
    -Db_sanitize=address,undefined -Db_lundef=false \
    -Dcpp_args=-fsanitize=fuzzer-no-link >/dev/null
fi
ninja -C build-fuzz $(printf 'tests/fuzz/fuzz_%s ' "${targets[@]}")
for t in "${targets[@]}"; do
  corpus=$(mktemp -d)
  cp -r "tests/fuzz/corpus/$t/." "$corpus/" 2>/dev/null || true
  echo "fuzz_$t: ${seconds}s"
  status=0
  build-fuzz/tests/fuzz/fuzz_$t -max_total_time="$seconds" -max_len=2048 -print_final_stats=1 \
    ${FUZZ_SEED:+-seed="$FUZZ_SEED"} \
    -artifact_prefix="build-fuzz/crash-$t-" "$corpus" > "$corpus.log" 2>&1 || status=$?
  grep -E "stat::number_of_executed_units|ERROR|SUMMARY|crash-" "$corpus.log" || true
  rm -rf "$corpus"
  # A target that cannot start (a bad harness) must fail too, not pass with zero runs.
  if [ "$status" -ne 0 ] || ! grep -q "stat::number_of_executed_units" "$corpus.log"; then
    echo "fuzz_$t exited with status $status:" >&2
    tail -20 "$corpus.log" >&2
    rm -f "$corpus.log"
    exit 1
  fi
  rm -f "$corpus.log"
  if ls build-fuzz/crash-"$t"-* >/dev/null 2>&1; then
    echo "fuzz_$t found a crash: $(ls build-fuzz/crash-"$t"-*)" >&2
    exit 1
  fi
done
