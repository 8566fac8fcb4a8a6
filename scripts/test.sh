#!/usr/bin/env bash
# Builds ferry and runs every test: formatting, unit tests (release and ASan/UBSan builds),
# and the end-to-end tests that send real traffic through ferryd in network namespaces.
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
FUZZ_SEED=1 ./scripts/fuzz.sh 10
