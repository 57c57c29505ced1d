#!/usr/bin/env bash
# Installs the Debian 12 packages the gateway needs to build, run and test.
# Installs only what is missing; safe to run any number of times.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libboost-dev libssl-dev openssl libsqlite3-dev sqlite3
  libyaml-cpp-dev libhiredis-dev nlohmann-json3-dev libabsl-dev
  libpq-dev postgresql-15
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev
  redis-server redis-tools
  python3 python3-grpcio python3-protobuf python3-prometheus-client
  nghttp2-client curl
  libjemalloc-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
