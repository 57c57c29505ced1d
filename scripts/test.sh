#!/usr/bin/env bash
# Builds and runs every test: installs missing Debian packages, then
#  1. the Release flavour (build/): the whole suite through ctest — unit
#     tests, the sandbox's tests, and end-to-end tests that start their own
#     Redis, PSP sandbox and gateway on free loopback ports;
#  2. the sanitizer flavour (build/asan, ASan + UBSan): the unit, integration
#     and end-to-end tests again, against the instrumented code.
# Prints ctest's summary for each and exits non-zero on any failure.
#
# Environment: TEST_JOBS (ctest parallelism, default 2), CTEST_ARGS (extra
# ctest arguments, e.g. "-R e2e"), SKIP_ASAN=1 to run the Release flavour only.
# Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${TEST_JOBS:-2}"

./scripts/install-deps.sh

echo "== Release flavour ==" >&2
./scripts/build.sh Release
status=0
# shellcheck disable=SC2086
(cd build && ctest -j "$JOBS" --output-on-failure --timeout 600 ${CTEST_ARGS:-}) || status=1

if [ "${SKIP_ASAN:-0}" != 1 ]; then
  echo "== ASan/UBSan flavour ==" >&2
  ./scripts/build.sh Asan unit_tests integration_tests recharge-gateway recharge_proto_py
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  # shellcheck disable=SC2086
  (cd build/asan && ctest -j "$JOBS" --output-on-failure --timeout 600 -L 'unit|integration|e2e' ${CTEST_ARGS:-}) || status=1
fi
exit "$status"
