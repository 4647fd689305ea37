#!/usr/bin/env bash
# `make demo`: the engine on the default topology, a query node beside it (its own process, reading
# the engine's state directory as a RocksDB secondary instance), the fleet simulator publishing
# into the engine, and a table of per-instance latency, throughput, errors and primary bottleneck
# read back from the query node.
#
# DURATION=N (wall seconds, default 30) runs the simulator that long, prints the table and exits.
# DURATION=0 keeps everything serving (the table is reprinted every 10 s) until Ctrl-C.
# SPEED=N (default 10; 1 with DURATION=0): simulated seconds per wall second, so that 30 s show 5
# minutes of fleet, long enough for the bottleneck classifier (30 s of evidence, 20 s to raise).
# FAULT=kind:instance:START-END[:factor] (default: vllm-0's KV cache at 2 % from 60 s simulated,
# which the table shows as MEMORY_PRESSURE); FAULT= (empty) runs a fault-free fleet.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
DURATION=${DURATION:-30}
RATE=${RATE:-30}  # simulated requests per second, whole fleet (12 instance-models)
# Faster than real time only with an end: without one the simulator cannot place its events in
# the past, and events ahead of the clock are refused (sim/README.md, "Time").
if [ "$DURATION" = 0 ]; then SPEED=${SPEED:-1}; else SPEED=${SPEED:-10}; fi
FAULT=${FAULT-kv_cache_small:vllm-0:60s-24h:0.02}
bin="$BUILD_DIR/cli/inferscope"
topology=topologies/inference-fleet.yaml
work=$(mktemp -d /tmp/inferscope-demo.XXXXXX)
engine_pid=""
node_pid=""
sim_pid=""

cleanup() {
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill -TERM "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  if [ -n "$engine_pid" ] && kill -0 "$engine_pid" 2>/dev/null; then
    kill -TERM "$engine_pid" 2>/dev/null || true
    wait "$engine_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== starting the engine on $topology (state in $work/state)"
"$bin" run --topology "$topology" --state-dir "$work/state" --ready-file "$work/ready.json" \
  >"$work/engine.log" 2>&1 &
engine_pid=$!
for _ in $(seq 1 100); do
  [ -s "$work/ready.json" ] && break
  if ! kill -0 "$engine_pid" 2>/dev/null; then
    echo "the engine did not start:"; cat "$work/engine.log"; exit 1
  fi
  sleep 0.1
done
[ -s "$work/ready.json" ] || { echo "the engine did not become ready:"; cat "$work/engine.log"; exit 1; }

json_field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" "$work/ready.json"; }
url=$(json_field http)
ingest=$(json_field ingest)
summaries=$(json_field summaries)
echo "== engine ready: ingest $ingest, summaries stream $summaries, built-in query API $url"

# The query node: the same API from the engine's state, in its own process (127.0.0.1:8081 unless
# NODE_LISTEN says otherwise); the table below reads from it.
"$bin" query-node --state-dir "$work/state" --listen "${NODE_LISTEN:-127.0.0.1:8081}" \
  --engine-url "$url" --ready-file "$work/node.json" >"$work/node.log" 2>&1 &
node_pid=$!
for _ in $(seq 1 100); do
  [ -s "$work/node.json" ] && break
  if ! kill -0 "$node_pid" 2>/dev/null; then
    echo "the query node did not start:"; cat "$work/node.log"; exit 1
  fi
  sleep 0.1
done
[ -s "$work/node.json" ] || { echo "the query node did not become ready:"; cat "$work/node.log"; exit 1; }
engine_url=$url
url=$(sed -n 's/.*"http":"\([^"]*\)".*/\1/p' "$work/node.json")
echo "== query node ready: $url (read-only, catching up with the engine every 500 ms)"

echo "== simulating a fleet: 6 instances x 2 models, $RATE requests/s, ${SPEED}x real time$( [ "$DURATION" != 0 ] && echo ", ${DURATION} s")"
fault_args=()
if [ -n "$FAULT" ]; then
  echo "== injecting a fault: $FAULT (times simulated, from the end of the 60 s warm-up)"
  fault_args=(--fault "$FAULT")
fi
"$bin" simulate --endpoint "$ingest" --instances 6 --models 2 --rate "$RATE" --duration "$DURATION" \
  --speed "$SPEED" "${fault_args[@]}" >"$work/simulate.log" 2>&1 &
sim_pid=$!

if [ "$DURATION" = 0 ]; then
  echo "== serving until Ctrl-C. Try: curl $url/v1/instances, curl $url/v1/health (the query"
  echo "   node, its lag), curl $engine_url/metrics (the engine)"
  while kill -0 "$sim_pid" 2>/dev/null; do
    sleep 10
    "$bin" query table --url "$url" || true
  done
  exit 0
fi

wait "$sim_pid" || { echo "the simulator failed:"; cat "$work/simulate.log"; exit 1; }
sim_pid=""
# The last events fall in a pane that closes only when the watermark passes its end (the engine
# advances it with processing time once the publisher is idle): wait until the stored watermark
# says every pane of the run is in the state store (as the query node sees it, after a catch-up),
# so the table covers the whole run.
end_ms=$(date +%s%3N)
pane_ms=10000  # the default topology's pane (operators[windows].options.pane)
want=$(( (end_ms / pane_ms + 1) * pane_ms ))
echo "== waiting for the last panes to be stored (watermark >= $want)"
stored=0
for _ in $(seq 1 600); do
  wm=$(curl -s "$url/v1/health" | sed -n 's/.*"watermark_ms":\([0-9]*\).*/\1/p')
  if [ -n "$wm" ] && [ "$wm" -ge "$want" ]; then stored=1; break; fi
  sleep 0.1
done
[ "$stored" = 1 ] || echo "warning: the stored watermark did not reach the end of the run within 60 s"
echo
"$bin" query table --url "$url"
echo
# For tests/integration/demo_test.cc: a command run while everything still serves (the README's
# example queries), with ENGINE_URL and NODE_URL set; its failure fails the demo.
if [ -n "${DEMO_CHECK:-}" ]; then
  echo "== checking: $DEMO_CHECK"
  ENGINE_URL=$engine_url NODE_URL=$url bash -c "$DEMO_CHECK"
fi
echo "The query node was at $url (e.g. $url/v1/instances, $url/v1/bottlenecks?primary=true,"
echo "$url/v1/health for its lag); the engine's built-in API at $engine_url."
echo "Run 'DURATION=0 make demo' to keep it serving until Ctrl-C."
