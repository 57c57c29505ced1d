#!/usr/bin/env bash
# Builds and runs every test: installs missing Debian packages, then
#  1. the Release flavour (build/): the whole suite through ctest — unit
#     tests, the sandbox's tests, and end-to-end tests that start their own
#     Redis, PSP sandbox and gateway on free loopback ports;
#  2. the sanitizer flavour (build/asan, ASan + UBSan): the unit, integration,
#     sandbox and end-to-end tests again, against the instrumented code;
#  3. the fuzz flavour (build/fuzz, clang + libFuzzer): each fuzz target of
#     tests/fuzz for a bounded time (FUZZ_SECONDS each, default 60).
# Prints ctest's summary for each and exits non-zero on any failure.
#
# Environment: TEST_JOBS (ctest parallelism, default 2), CTEST_ARGS (extra
# ctest arguments, e.g. "-R e2e"), SKIP_ASAN=1 / SKIP_FUZZ=1 to leave a flavour out.
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
  ./scripts/build.sh Asan unit_tests integration_tests ledger_tests redis_tests recharge-gateway rechargectl recharge_proto_py psp-sandbox
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  # shellcheck disable=SC2086
  (cd build/asan && ctest -j "$JOBS" --output-on-failure --timeout 600 -L 'unit|integration|e2e|sandbox' ${CTEST_ARGS:-}) || status=1
fi
if [ "${SKIP_FUZZ:-0}" != 1 ]; then
  echo "== Fuzz flavour ==" >&2
  if [ ! -f build/fuzz/build.ninja ]; then
    cmake -S tests/fuzz -B build/fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ >/dev/null
  fi
  cmake --build build/fuzz -j "${BUILD_JOBS:-$(nproc)}"
  for target in rule_parser_fuzz rule_expression_fuzz recharge_request_fuzz webhook_fuzz; do
    corpus="build/fuzz/corpus-$target"
    mkdir -p "$corpus"
    seeds="tests/fuzz/corpus/${target%_fuzz}"
    [ -d "$seeds" ] || seeds="tests/fuzz/corpus"
    # The rule dictionary is for the rule targets; the others have their own.
    case "$target" in
      rule_*) dict=tests/fuzz/rules.dict ;;
      *) dict="tests/fuzz/${target%_fuzz}.dict" ;;
    esac
    if build/fuzz/$target -max_total_time="${FUZZ_SECONDS:-60}" -dict="$dict" \
        -print_final_stats=1 "$corpus" "$seeds" > "build/fuzz/$target.log" 2>&1; then
      echo "fuzz: $target: $(grep -E 'stat::number_of_executed_units' "build/fuzz/$target.log" | awk '{print $2}') runs, no crash" >&2
    else
      echo "fuzz: $target FAILED (build/fuzz/$target.log):" >&2
      tail -40 "build/fuzz/$target.log" >&2
      status=1
    fi
  done
fi
echo "test.sh: $([ "$status" = 0 ] && echo "all flavours passed" || echo "FAILURES above")" >&2
exit "$status"
