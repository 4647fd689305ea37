#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (clang, ASan + UBSan, INFERSCOPE_FUZZ) and runs each for
# the given time on its seed corpus (fuzz/corpus/<target>/). Exit status 1 on any finding (crash,
# sanitizer report, leak, timeout, out-of-memory); the input that caused it is saved and the
# command that reproduces it printed.
#
# Usage: scripts/fuzz.sh [seconds-per-target] [target...]     (default 60 s; every target)
# Targets: wire_decoder ack hello topology query_params detect_csv prom_text remote_write raw_request (fuzz/README.md).
# Environment:
#   BUILD_DIR   build directory (default build-fuzz; may be shared with scripts/sanitize.sh run
#               with CMAKE_ARGS=-DINFERSCOPE_FUZZ=ON, so the libraries are built once)
#   JOBS        build jobs (default 2)
#   FUZZ_NICE   niceness of the fuzzers (default 0; use 19 for long runs on a shared machine)
#   FUZZ_WORK   where the grown corpora, crash inputs and logs go (default $BUILD_DIR/fuzz-work;
#               the seed corpora in the repository are only read)
#   FUZZ_ARGS   extra libFuzzer flags (e.g. "-jobs=2 -workers=2")
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-60}
shift || true
ALL_TARGETS=(wire_decoder ack hello topology query_params detect_csv prom_text remote_write raw_request
  checkpoint_restore)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi
BUILD_DIR=${BUILD_DIR:-build-fuzz}
JOBS=${JOBS:-2}
FUZZ_NICE=${FUZZ_NICE:-0}
FUZZ_WORK=${FUZZ_WORK:-$BUILD_DIR/fuzz-work}
FUZZ_ARGS=${FUZZ_ARGS:-}

bash scripts/install-deps.sh --sanitizers

launcher=()
if command -v ccache >/dev/null 2>&1; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
# -O1 -g1 (no NDEBUG: asserts stay on): quick to build, line numbers in reports.
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DCMAKE_CXX_COMPILER=clang++ -DINFERSCOPE_FUZZ=ON -DINFERSCOPE_BENCH=OFF "${launcher[@]}" >/dev/null
build_targets=()
for t in "${TARGETS[@]}"; do build_targets+=("fuzz_$t"); done
start=$(date +%s)
cmake --build "$BUILD_DIR" -j "$JOBS" --target "${build_targets[@]}"
echo "fuzz: built ${build_targets[*]} in $(($(date +%s) - start)) s"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]; then
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
fi

failed=()
summary=()
for t in "${TARGETS[@]}"; do
  work="$FUZZ_WORK/$t"
  artifacts="$FUZZ_WORK/artifacts/$t"
  log="$FUZZ_WORK/$t.log"
  mkdir -p "$work" "$artifacts"
  echo "fuzz: $t for ${SECONDS_PER_TARGET} s (log: $log)"
  # raw_request's limits (8192-byte lines) lie beyond libFuzzer's default 4096-byte inputs.
  max_len=()
  [ "$t" = raw_request ] && max_len=(-max_len=20000)
  set +e
  # shellcheck disable=SC2086
  nice -n "$FUZZ_NICE" "$BUILD_DIR/fuzz/fuzz_$t" -max_total_time="$SECONDS_PER_TARGET" \
    -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$artifacts/" \
    "${max_len[@]}" $FUZZ_ARGS "$work" "fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s += $2} END {print s + 0}')
  rate=$(grep -h 'stat::average_exec_per_sec' "$log" | awk '{s += $2} END {print s + 0}')
  if [ $rc -eq 0 ]; then
    result=ok
  else
    result="FINDING (exit $rc)"
    failed+=("$t")
    echo "---- $t: last lines of $log"
    tail -n 60 "$log"
    for a in "$artifacts"/*; do
      [ -e "$a" ] || continue
      echo "---- reproduce: $BUILD_DIR/fuzz/fuzz_$t $a"
    done
  fi
  summary+=("$(printf '%-18s %4s s %14s execs %10s exec/s  %s' "$t" "$SECONDS_PER_TARGET" "$execs" "$rate" "$result")")
done

echo "fuzz summary:"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in: ${failed[*]}" >&2
  exit 1
fi
