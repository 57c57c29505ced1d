#!/usr/bin/env bash
# Builds and runs every test: installs missing Debian packages, builds the
# Release flavour into build/, then runs the whole suite through ctest (unit
# tests, the sandbox's tests, and end-to-end tests that start their own Redis,
# PSP sandbox and gateway on free loopback ports). Exits non-zero on any failure.
#
# Environment: TEST_JOBS (ctest parallelism, default 2), CTEST_ARGS (extra
# ctest arguments, e.g. "-R e2e"). Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
./scripts/build.sh Release
cd build
# shellcheck disable=SC2086
ctest -j "${TEST_JOBS:-2}" --output-on-failure --timeout 600 ${CTEST_ARGS:-}
