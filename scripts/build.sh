#!/usr/bin/env bash
# Configures and builds one flavour into build/ (default: Release).
# Usage: scripts/build.sh [Release|Debug|Asan] [ninja targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
FLAVOUR="${1:-Release}"
shift || true
case "$FLAVOUR" in
  Release) DIR=build; ARGS=(-DCMAKE_BUILD_TYPE=Release) ;;
  Debug)   DIR=build/debug; ARGS=(-DCMAKE_BUILD_TYPE=Debug) ;;
  Asan)    DIR=build/asan; ARGS=(-DCMAKE_BUILD_TYPE=RelWithDebInfo
             "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -fno-omit-frame-pointer") ;;
  *) echo "build.sh: unknown flavour $FLAVOUR (Release, Debug, Asan)" >&2; exit 2 ;;
esac
if [ ! -f "$DIR/build.ninja" ]; then
  cmake -S . -B "$DIR" -G Ninja "${ARGS[@]}" >/dev/null
fi
JOBS="${BUILD_JOBS:-$(nproc)}"
cmake --build "$DIR" -j "$JOBS" ${1:+--target "$@"}
