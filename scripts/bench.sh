#!/usr/bin/env bash
# `make bench`: the end-to-end throughput harness, then the micro-benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
echo "== end to end (ratios are to raw libzmq measured in the same run)"
"$BUILD_DIR/bench/e2e_throughput" "$@"
echo "== small_messages (engine CPU per message and per million requests; ratios to raw libzmq, same run)"
"$BUILD_DIR/bench/small_messages" --seconds 6
echo "== idle_cost (engine with no input: CPU-s per 100 s against an idle libzmq receiver, same run)"
"$BUILD_DIR/bench/idle_cost" --seconds 30
echo "== alert_latency (virtual time: closed panes and early evaluation against an exact per-second evaluation, same run)"
"$BUILD_DIR/bench/alert_latency" --scenarios-only 1
echo "== scrape_cost (prometheus_scrape source CPU, 1,000 targets every 5 s; ratio to a bare httplib loop, same run)"
"$BUILD_DIR/bench/scrape_cost" --intervals 4
if [ -x "$BUILD_DIR/bench/jetstream_nodes" ]; then
  # Built with INFERSCOPE_JETSTREAM only; needs /usr/sbin/nats-server. ~1 min.
  echo "== jetstream_nodes (1 and 2 engine nodes, results stream + query node; ratios to JetStream publish/consume, same run)"
  "$BUILD_DIR/bench/jetstream_nodes" --events 2000000 --reps 1
fi
for b in "$BUILD_DIR"/bench/*_bench; do
  # checkpoint_bench is a driver with its own flags, not a Google Benchmark binary: run below.
  [ "$(basename "$b")" = checkpoint_bench ] && continue
  echo "== $(basename "$b")"
  "$b" --benchmark_min_time=0.2
done
echo "== checkpoint_bench (memory per series vs the 1 KiB target, checkpoint and restore, acked vs fire-and-forget)"
"$BUILD_DIR/bench/checkpoint_bench"
echo "== routing_eval (synthetic arrivals; add --trace FILE --arrivals both for the trace)"
"$BUILD_DIR/bench/routing_eval" --arrivals synthetic | tail -n 14
echo "== routing_select (routing learner: select latency and rate, update cost)"
"$BUILD_DIR/bench/routing_select"
echo "== routing_failover (failed outcome -> weights moving traffic off; raw libzmq round trip)"
"$BUILD_DIR/bench/routing_failover" --trials 100 | grep -v '^\['
echo "== query_load (query node under wrk while the engine ingests; same-run ingest ratio)"
/usr/bin/python3 bench/query_load.py --build-dir "$BUILD_DIR"
