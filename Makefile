# inferscope: the two commands a user needs, `make demo` and `make test`, plus build helpers.
# Everything works on a fresh Debian 12 machine as root: missing packages are installed first.

BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
DURATION ?= 30
# Extra CMake arguments for the first configure, e.g. CMAKE_ARGS=-DINFERSCOPE_WERROR=ON (as CI does).
CMAKE_ARGS ?=

.PHONY: all deps deps-test build build-engine test test-unit test-asan test-tsan fuzz demo bench bench-query clean format format-check

all: build

deps:
	@bash scripts/install-deps.sh

# What the tests need beyond the build: also Chromium, chromium-driver and Selenium (the
# dashboard's browser test).
deps-test:
	@bash scripts/install-deps.sh --browser

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)

build: deps $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

# Only the `inferscope` binary: what `make demo` runs (tests and benchmarks are not compiled).
build-engine: deps $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS) --target inferscope

# Every test: unit and integration (real sockets, real RocksDB, real subprocesses).
test: deps-test build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 300

test-unit: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L unit

# The unit tests under ASan + UBSan (clang, build-asan/); the integration tests under TSan
# (build-tsan/); every libFuzzer target for FUZZ_SECONDS each (build-fuzz/). See fuzz/README.md.
FUZZ_SECONDS ?= 60
test-asan:
	@bash scripts/sanitize.sh

test-tsan:
	@bash scripts/tsan.sh

fuzz:
	@bash scripts/fuzz.sh $(FUZZ_SECONDS)

# Engine on the default topology + the fleet simulator; prints a table read from the query API.
# DURATION=0 keeps it serving until Ctrl-C.
demo: build-engine
	@BUILD_DIR=$(BUILD_DIR) DURATION=$(DURATION) bash scripts/demo.sh

bench: build
	@BUILD_DIR=$(BUILD_DIR) bash scripts/bench.sh

# The query benchmark alone (issue 13; bench/README.md): engine + query node + wrk + http_load, ~2 min.
bench-query: build-engine
	cmake --build $(BUILD_DIR) -j $(JOBS) --target http_load
	/usr/bin/python3 bench/query_load.py --build-dir $(BUILD_DIR) $(BENCH_ARGS)

format:
	clang-format -i $$(git ls-files '*.h' '*.cc')

format-check:
	@bash scripts/check-format.sh

clean:
	rm -rf $(BUILD_DIR)
