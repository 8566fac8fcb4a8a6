#!/usr/bin/env bash
# Builds ferry and runs every test: formatting, unit tests (release and ASan/UBSan builds,
# ThreadSanitizer on the concurrent ones), and the end-to-end tests that send real traffic
# through ferryd in network namespaces.
# Installs what it needs. Run as root on Debian 12:  sudo ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
./scripts/lint.sh
meson test -C build --print-errorlogs
./perf/smoke.sh
./perf/linerate_smoke.sh
/usr/bin/python3 perf/kernel_sync.py --services 200 --runs 1 --changes 3 --mode iptables,nft >/dev/null
/usr/bin/python3 -m pytest -q tests/e2e
if [ ! -f build-asan/build.ninja ]; then
  meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=debugoptimized >/dev/null
fi
ninja -C build-asan
meson test -C build-asan --suite unit --print-errorlogs
# ThreadSanitizer on the tests where threads share memory: RCU publication of snapshots
# (publish_test) and workers inserting into and looking up the shared flow table
# (conntrack_test). tests/tsan.supp says what may be suppressed (DPDK only) and why.
if [ ! -f build-tsan/build.ninja ]; then
  meson setup build-tsan -Db_sanitize=thread -Db_lundef=false \
    -Dbuildtype=debugoptimized >/dev/null
fi
ninja -C build-tsan control/publish_test dataplane/conntrack_test
export TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp halt_on_error=1 second_deadlock_stack=1"
build-tsan/control/publish_test
build-tsan/dataplane/conntrack_test
unset TSAN_OPTIONS
FUZZ_SEED=1 ./scripts/fuzz.sh 10
