#!/usr/bin/env bash
# Builds ferry and runs every test: unit tests (meson test) and the end-to-end tests that
# send real traffic through ferryd in network namespaces. Installs what it needs.
# Run as root on Debian 12:  sudo ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
meson test -C build --print-errorlogs
/usr/bin/python3 -m pytest -q tests/e2e
