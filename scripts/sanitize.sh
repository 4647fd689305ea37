#!/usr/bin/env bash
# Builds the unit tests with AddressSanitizer + UndefinedBehaviorSanitizer (INFERSCOPE_SANITIZE;
# UBSan halts on the first error, LeakSanitizer on) and runs `ctest -L unit`. Exit status 1 when
# a test fails or a sanitizer reports anything (a report aborts the test that triggered it).
#
# Usage: scripts/sanitize.sh [extra ctest arguments, e.g. -R WireDecoder]
# Environment:
#   BUILD_DIR      build directory (default build-asan)
#   CXX_COMPILER   clang++ (default) or g++: both work
#   JOBS           build and test jobs (default 2)
#   CMAKE_ARGS     extra CMake arguments; CI passes -DINFERSCOPE_FUZZ=ON with BUILD_DIR=build-fuzz so
#                  that scripts/fuzz.sh reuses the same instrumented libraries
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build-asan}
CXX_COMPILER=${CXX_COMPILER:-clang++}
JOBS=${JOBS:-2}
CMAKE_ARGS=${CMAKE_ARGS:-}

bash scripts/install-deps.sh --sanitizers

launcher=()
if command -v ccache >/dev/null 2>&1; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
# shellcheck disable=SC2086
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DCMAKE_CXX_COMPILER="$CXX_COMPILER" -DINFERSCOPE_SANITIZE=ON -DINFERSCOPE_TESTS=ON \
  -DINFERSCOPE_BENCH=OFF "${launcher[@]}" $CMAKE_ARGS >/dev/null
start=$(date +%s)
# One unit-test executable per module folder of tests/ (tests/CMakeLists.txt), integration aside.
targets=()
for dir in tests/*/; do
  module=$(basename "$dir")
  [ "$module" = integration ] && continue
  compgen -G "${dir}*_test.cc" >/dev/null && targets+=("${module}_test")
done
cmake --build "$BUILD_DIR" -j "$JOBS" --target "${targets[@]}"
echo "sanitize: unit tests built in $(($(date +%s) - start)) s"

# alloc_dealloc_mismatch=0: the allocation-counting tests (tests/sources/wire_decoder_test.cc,
# tests/operators/window_aggregate_test.cc) replace operator new/delete with malloc/free but not the
# nothrow forms that libzmq calls, so ASan would see libzmq's `new (std::nothrow)` freed by the
# replaced delete; every other check stays on.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1:check_initialization_order=1:alloc_dealloc_mismatch=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for s in /usr/lib/llvm-14/bin/llvm-symbolizer; do
  if [ -x "$s" ]; then export ASAN_SYMBOLIZER_PATH="$s"; fi
done
start=$(date +%s)
(cd "$BUILD_DIR" && ctest -L unit --output-on-failure -j "$JOBS" --timeout 600 "$@")
echo "sanitize: unit tests passed under ASan + UBSan in $(($(date +%s) - start)) s"
