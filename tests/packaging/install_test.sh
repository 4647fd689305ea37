#!/usr/bin/env bash
# `cmake --install` into a temporary prefix, then from there:
#  (a) a separate CMake project (find_package_project/) finds the package, links inferscope::client
#      and its program publishes one event to the installed binary running an engine, which
#      acknowledges it;
#  (b) the man page is installed and names every subcommand the binary's --help lists;
#  (c) the systemd unit: `systemd-analyze verify` without any warning (when systemd-analyze exists),
#      its hardening keys, and its ExecStart flags exist in the installed binary's `run --help`.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR   (needs the targets inferscope, inferscope_client and
# inferscope_manpage built)
set -euo pipefail
build_dir=$(realpath "$1") src=$(realpath "$2")
work=$(mktemp -d /tmp/inferscope-pkg.XXXXXX)
engine_pid=
cleanup() {
  if [ -n "$engine_pid" ]; then kill "$engine_pid" 2>/dev/null || true; wait "$engine_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

prefix=$work/prefix
cmake --install "$build_dir" --prefix "$prefix" >/dev/null
bin=$prefix/bin/inferscope

# (a) find_package(inferscope) from a separate project, built with the compiler of the build.
cxx=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build_dir/CMakeCache.txt")
cmake -S "$src/tests/packaging/find_package_project" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=Release >"$work/consumer.log" 2>&1 ||
  { cat "$work/consumer.log"; fail "find_package(inferscope) project did not configure"; }
cmake --build "$work/consumer" -j2 >>"$work/consumer.log" 2>&1 ||
  { cat "$work/consumer.log"; fail "find_package(inferscope) project did not build"; }
cat >"$work/topology.yaml" <<YAML
name: find-package
engine:
  checkpoint_interval: 200ms
state:
  path: $work/state
query:
  listen: 127.0.0.1:0
sources:
  - name: ingest
    type: zmq
    options:
      endpoint: tcp://127.0.0.1:*
      mode: router
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options:
      pane: 1s
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
YAML
"$bin" run -t "$work/topology.yaml" --ready-file "$work/ready.json" >"$work/engine.log" 2>&1 &
engine_pid=$!
for _ in $(seq 300); do [ -s "$work/ready.json" ] && break; sleep 0.1; done
[ -s "$work/ready.json" ] || { cat "$work/engine.log"; fail "the installed engine did not become ready"; }
endpoint=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["endpoints"]["ingest"])' "$work/ready.json")
"$work/consumer/publish_one" "$endpoint" | grep -q "^acknowledged seq 0$" || fail "publish_one was not acknowledged"
kill "$engine_pid"; wait "$engine_pid" || true; engine_pid=

# (b) the man page names every subcommand (and sub-subcommand) of the installed binary.
man_page=$prefix/share/man/man1/inferscope.1
[ -s "$man_page" ] || fail "no man page at $man_page"
subcommands=$("$bin" --help | sed -n '/^Subcommands:/,$p' | sed -n 's/^  \([a-z][a-z0-9-]*\).*/\1/p')
[ -n "$subcommands" ] || fail "no subcommands in --help"
if command -v man >/dev/null 2>&1; then
  rendered=$(MANWIDTH=200 man -l "$man_page" 2>/dev/null | col -b)
else
  rendered=$(cat "$man_page")
fi
for sub in $subcommands; do
  grep -q "^ *inferscope $sub\$" <<<"$rendered" || fail "the man page has no section for '$sub'"
done
grep -q "^ *inferscope query table\$" <<<"$rendered" || fail "the man page misses 'query table'"

# (c) the unit.
unit=$prefix/lib/systemd/system/inferscope.service
[ -s "$unit" ] || fail "no unit at $unit"
for key in DynamicUser=yes StateDirectory=inferscope ProtectSystem=strict ProtectHome=yes \
  NoNewPrivileges=yes PrivateTmp=yes; do
  grep -qx "$key" "$unit" || fail "the unit lacks $key"
done
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
read -r -a argv <<<"$exec_start"
[ "${argv[0]}" = "$bin" ] || fail "ExecStart runs ${argv[0]}, not the installed $bin"
[ "${argv[1]}" = run ] || fail "ExecStart is not 'inferscope run'"
run_help=$("$bin" run --help)
for word in "${argv[@]:2}"; do
  case "$word" in
    --*) grep -q -- "$word" <<<"$run_help" || fail "ExecStart flag $word is not in 'run --help'" ;;
  esac
done
topology=$(sed -n 's/.*--topology \([^ ]*\).*/\1/p' <<<"$exec_start")
"$bin" check-topology "$topology" >/dev/null || fail "the unit's topology $topology does not check"
grep -q -- "--state-dir /var/lib/inferscope/" <<<"$exec_start" || fail "state not in /var/lib/inferscope"
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify exits 0 on unknown keys and bad values; any message is a failure here.
  verify=$(systemd-analyze verify --man=no "$unit" 2>&1) || fail "systemd-analyze verify: $verify"
  [ -z "$verify" ] || fail "systemd-analyze verify: $verify"
  exposure=$(systemd-analyze security --offline=yes "$unit" 2>/dev/null |
    sed -n 's/.*Overall exposure level for inferscope.service: \([0-9.]*\).*/\1/p')
  echo "systemd-analyze security exposure: ${exposure:-unknown}"
  [ -n "$exposure" ] && awk -v e="$exposure" 'BEGIN { exit !(e <= 2.5) }' ||
    fail "unit exposure ${exposure:-unknown} > 2.5"
else
  echo "systemd-analyze not found: unit keys checked by the parse above only"
fi
echo "install test: ok (find_package consumer acknowledged, man page names: $(echo $subcommands), unit verified)"
