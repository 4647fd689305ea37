#!/usr/bin/env bash
# Installs the Debian 12 packages inferscope needs to build, test and run, when any is missing.
# Usage: scripts/install-deps.sh [--sanitizers]
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libzmq3-dev cppzmq-dev libmsgpack-cxx-dev librocksdb-dev libspdlog-dev nlohmann-json3-dev
  libcpp-httplib-dev libyaml-cpp-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-zmq python3-msgpack curl
)

# `--sanitizers`: also clang with its sanitizer and libFuzzer runtimes and llvm-symbolizer, for
# scripts/fuzz.sh, scripts/sanitize.sh and scripts/tsan.sh.
if [ "${1:-}" = "--sanitizers" ]; then
  packages+=(clang libclang-rt-14-dev llvm-14)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
