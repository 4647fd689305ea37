#!/usr/bin/env bash
# Installs the Debian 12 packages inferscope needs to build, test and run, when any is missing.
# (The packaging tests also use systemd-analyze when the systemd package is there; not installed here.)
# Usage: scripts/install-deps.sh [--sanitizers] [--browser]
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libzmq3-dev cppzmq-dev libmsgpack-cxx-dev librocksdb-dev libspdlog-dev nlohmann-json3-dev
  libcpp-httplib-dev libyaml-cpp-dev libcli11-dev libsnappy-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libnats-dev nats-server
  python3 python3-zmq python3-msgpack python3-jsonschema curl
  python3-venv python3-pip python3-setuptools python3-wheel dpkg-dev file man-db
)

# `--sanitizers`: also clang with its sanitizer and libFuzzer runtimes and llvm-symbolizer, for
# scripts/fuzz.sh, scripts/sanitize.sh and scripts/tsan.sh.
# `--browser` (`make test`): headless Chromium, its WebDriver and Selenium, for the dashboard's
# browser test (tests/integration/dashboard_browser_test.py; it skips when they are missing).
for arg in "$@"; do
  case "$arg" in
    --sanitizers) packages+=(clang libclang-rt-14-dev llvm-14) ;;
    --browser) packages+=(chromium chromium-driver python3-selenium) ;;
    *) echo "install-deps.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# promtool (the tests run `promtool check metrics` on a live engine) and prometheus (the
# remote-write integration test runs a real Prometheus that scrapes a fixture server and
# remote-writes into the engine) come with Debian's `prometheus` package, which would also install
# and start a Prometheus service: take only the two binaries (~48 + ~100 MB) from the package, into
# /usr/local/bin.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "Installing promtool and prometheus (from Debian's prometheus package) into /usr/local/bin"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && apt-get download -qq prometheus); then
    $SUDO apt-get update -qq
    (cd "$tmp" && apt-get download -qq prometheus)
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
  $SUDO install -m 0755 "$tmp/root/usr/bin/promtool" /usr/local/bin/promtool
  $SUDO install -m 0755 "$tmp/root/usr/bin/prometheus" /usr/local/bin/prometheus
fi
