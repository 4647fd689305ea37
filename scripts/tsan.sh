#!/usr/bin/env bash
# Builds the engine and the integration tests with ThreadSanitizer (INFERSCOPE_TSAN) and runs
# `ctest -L integration`. The engine subprocesses the tests start are TSan builds too. Every
# report of every process is written to $BUILD_DIR/tsan-reports/ (TSAN_OPTIONS log_path) and
# summarised at the end, one line per distinct race (the two racing frames). Exit status 1 when a
# test fails or TSan reported anything.
#
# Usage: scripts/tsan.sh [extra ctest arguments, e.g. -R EndToEnd]
# Environment: BUILD_DIR (default build-tsan), CXX_COMPILER (clang++ default; g++ works), JOBS (2).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build-tsan}
CXX_COMPILER=${CXX_COMPILER:-clang++}
JOBS=${JOBS:-2}

bash scripts/install-deps.sh --sanitizers

launcher=()
if command -v ccache >/dev/null 2>&1; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DCMAKE_CXX_COMPILER="$CXX_COMPILER" -DINFERSCOPE_TSAN=ON -DINFERSCOPE_TESTS=ON \
  -DINFERSCOPE_BENCH=OFF "${launcher[@]}" >/dev/null
start=$(date +%s)
cmake --build "$BUILD_DIR" -j "$JOBS" --target integration_test inferscope
echo "tsan: built in $(($(date +%s) - start)) s"

reports="$(pwd)/$BUILD_DIR/tsan-reports"
rm -rf "$reports"
mkdir -p "$reports"
# exitcode=0: a report does not change a process's exit status (the tests judge behaviour); the
# reports are judged here.
export TSAN_OPTIONS=${TSAN_OPTIONS:-log_path=$reports/tsan:exitcode=0:second_deadlock_stack=1:history_size=4:suppressions=$(pwd)/scripts/tsan.supp}
for s in /usr/lib/llvm-14/bin/llvm-symbolizer; do
  if [ -x "$s" ]; then export TSAN_SYMBOLIZER_PATH="$s"; fi
done
set +e
(cd "$BUILD_DIR" && ctest -L integration --output-on-failure -j "$JOBS" --timeout 900 "$@")
tests_rc=$?
set -e

count=$(cat "$reports"/tsan.* 2>/dev/null | grep -c '^WARNING: ThreadSanitizer' || true)
echo "tsan: $count report(s) in $reports"
if [ "$count" -gt 0 ]; then
  echo "tsan: distinct reports (kind | first frame of each access):"
  # For each report: its kind, then the first stack frame of each of its first two stacks.
  cat "$reports"/tsan.* | awk '
    /^WARNING: ThreadSanitizer/ { if (key != "") print key; key = $0; sub(/ \(pid=.*/, "", key); n = 0; grab = 0; next }
    /^  (Write|Read|Previous|Atomic|Mutex|Thread|Location)/ { grab = 1; next }
    grab && /^    #0 / { if (n < 2) { f = $0; sub(/^ *#0 (0x[0-9a-f]+ )?/, "", f); sub(/ \([^ ]*\+0x[0-9a-f]+\)$/, "", f); key = key " | " f; n++ } grab = 0 }
    END { if (key != "") print key }' | sed "s|$(pwd)/||g" | sort | uniq -c | sort -rn
fi
if [ $tests_rc -ne 0 ]; then echo "tsan: integration tests failed (exit $tests_rc)" >&2; exit 1; fi
if [ "$count" -gt 0 ]; then exit 1; fi
echo "tsan: no report"
