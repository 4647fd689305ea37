#!/usr/bin/env bash
# A local 3-server NATS cluster with JetStream, on loopback, for the engine's `jetstream` source
# (README, "Running more than one engine"). Debian's nats-server (2.9) and python3 (standard
# library only: the JetStream API requests are made over the plain NATS text protocol).
#
#   scripts/nats-cluster.sh start  [DIR]   starts n1, n2, n3; waits for a JetStream meta leader;
#                                          prints the client URLs, comma-separated (the source's
#                                          and the publisher's `url`)
#   scripts/nats-cluster.sh stream [DIR]   creates the stream the source expects (R3, limits
#                                          retention, file storage, subjects "<prefix>.*"), or
#                                          checks the one that exists
#   scripts/nats-cluster.sh status [DIR]   each server's state, the meta leader, the URLs
#   scripts/nats-cluster.sh urls   [DIR]   the client URLs only
#   scripts/nats-cluster.sh stop   [DIR]   SIGTERM to the three servers (SIGKILL after 10 s)
#
# DIR (default /tmp/inferscope-nats) holds the configurations, logs, pid files and each server's
# file store (DIR/n<i>/jetstream); a restart on the same DIR keeps the streams.
# Ports: NATS_PORT (default 4222) client ports NATS_PORT..+2; NATS_CLUSTER_PORT (default 6222)
# route ports; NATS_HTTP_PORT (default 8222) monitoring ports. Stream: STREAM (default
# "inferscope"), SUBJECT_PREFIX (default "inferscope.in"), REPLICAS (default 3), MAX_AGE (default
# 0: no limit; e.g. 24h as nanoseconds is 86400000000000).
set -euo pipefail

cmd=${1:-}
dir=${2:-/tmp/inferscope-nats}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)  # absolute: running() matches it in the server's command line
NATS_PORT=${NATS_PORT:-4222}
NATS_CLUSTER_PORT=${NATS_CLUSTER_PORT:-6222}
NATS_HTTP_PORT=${NATS_HTTP_PORT:-8222}
STREAM=${STREAM:-inferscope}
SUBJECT_PREFIX=${SUBJECT_PREFIX:-inferscope.in}
REPLICAS=${REPLICAS:-3}
MAX_AGE=${MAX_AGE:-0}

usage() {
  sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

binary() {
  for b in /usr/sbin/nats-server /usr/bin/nats-server /usr/local/bin/nats-server; do
    if [ -x "$b" ]; then
      echo "$b"
      return
    fi
  done
  command -v nats-server || {
    echo "nats-server is not installed (Debian: apt-get install nats-server)" >&2
    exit 1
  }
}

urls() {
  echo "nats://127.0.0.1:$NATS_PORT,nats://127.0.0.1:$((NATS_PORT + 1)),nats://127.0.0.1:$((NATS_PORT + 2))"
}

# Ports of a running cluster are those written at start (so stop/status/stream need no env).
load_ports() {
  if [ -f "$dir/ports.env" ]; then
    # shellcheck disable=SC1091
    . "$dir/ports.env"
  fi
}

# running <i>: the server's pid file names a live nats-server started with this cluster's n<i>.conf
# (a stale pid file naming another server, or another process, is not taken for it).
running() {
  local pid
  [ -f "$dir/n$1.pid" ] || return 1
  pid=$(cat "$dir/n$1.pid")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$dir/n$1.conf"
}

# The meta leader's name from a server's /jsz, or nothing.
meta_leader() {
  curl -s --max-time 2 "http://127.0.0.1:$((NATS_HTTP_PORT + $1 - 1))/jsz" 2>/dev/null |
    python3 -c 'import json,sys
try:
    print(json.load(sys.stdin).get("meta_cluster", {}).get("leader", ""))
except Exception:
    pass' || true
}

port_free() {
  python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

start() {
  local bin i routes
  # A start that fails (any exit before the cluster is up) stops the servers it started.
  started=()
  start_done=0
  trap stop_started EXIT
  bin=$(binary)
  mkdir -p "$dir"
  for i in 1 2 3; do
    if running "$i"; then
      echo "n$i is already running in $dir (scripts/nats-cluster.sh stop $dir first)" >&2
      exit 1
    fi
  done
  for i in 0 1 2; do
    for port in $((NATS_PORT + i)) $((NATS_CLUSTER_PORT + i)) $((NATS_HTTP_PORT + i)); do
      if ! port_free "$port"; then
        echo "port $port on 127.0.0.1 is in use: choose others with NATS_PORT," \
          "NATS_CLUSTER_PORT, NATS_HTTP_PORT" >&2
        exit 1
      fi
    done
  done
  printf 'NATS_PORT=%s\nNATS_CLUSTER_PORT=%s\nNATS_HTTP_PORT=%s\n' "$NATS_PORT" \
    "$NATS_CLUSTER_PORT" "$NATS_HTTP_PORT" >"$dir/ports.env"
  routes=""
  for i in 0 1 2; do
    routes="$routes nats-route://127.0.0.1:$((NATS_CLUSTER_PORT + i))"
  done
  for i in 1 2 3; do
    mkdir -p "$dir/n$i"
    cat >"$dir/n$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:$((NATS_PORT + i - 1))
http: 127.0.0.1:$((NATS_HTTP_PORT + i - 1))
pid_file: "$dir/n$i.pid"
jetstream {
  store_dir: "$dir/n$i"
}
cluster {
  name: inferscope
  listen: 127.0.0.1:$((NATS_CLUSTER_PORT + i - 1))
  routes: [$(echo "$routes" | sed 's/^ //; s/ /, /g')]
}
EOF
    nohup "$bin" -c "$dir/n$i.conf" >"$dir/n$i.log" 2>&1 &
    started+=("$!")
  done
  # A meta leader (elected once the servers see each other) is what stream creation needs.
  local leader="" tries=0
  while [ -z "$leader" ]; do
    for i in 1 2 3; do
      if ! running "$i" && [ $tries -gt 20 ]; then
        echo "n$i did not start; its log, $dir/n$i.log:" >&2
        tail -20 "$dir/n$i.log" >&2
        exit 1
      fi
    done
    leader=$(meta_leader 1)
    [ -n "$leader" ] && break
    tries=$((tries + 1))
    if [ $tries -ge 300 ]; then
      echo "no JetStream meta leader after 60 s; logs in $dir/n*.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  start_done=1
  echo "NATS cluster up in $dir (JetStream meta leader $leader)" >&2
  urls
}

stop_started() {  # the EXIT trap of start: stops what it started unless the cluster came up
  local p
  [ "$start_done" = 1 ] && return
  for p in "${started[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
}

stop() {
  local i pid
  for i in 1 2 3; do
    if running "$i"; then
      pid=$(cat "$dir/n$i.pid")
      kill -TERM "$pid" 2>/dev/null || true  # it may have exited since
      for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "$pid" 2>/dev/null || true
      echo "n$i stopped" >&2
    fi
    rm -f "$dir/n$i.pid"
  done
}

status() {
  local i up=0 leader=""
  for i in 1 2 3; do
    if running "$i"; then
      echo "n$i: running (pid $(cat "$dir/n$i.pid"), client port $((NATS_PORT + i - 1)))"
      up=$((up + 1))
      [ -z "$leader" ] && leader=$(meta_leader "$i")
    else
      echo "n$i: not running"
    fi
  done
  echo "JetStream meta leader: ${leader:-none}"
  urls
  [ "$up" -gt 0 ]
}

# Creates the stream through $JS.API.STREAM.CREATE (retried while the cluster cannot place the
# replicas yet), or checks the existing one has what the source requires.
stream() {
  python3 - "$NATS_PORT" "$STREAM" "$SUBJECT_PREFIX" "$REPLICAS" "$MAX_AGE" <<'EOF'
import json, socket, sys, time

port, stream, prefix, replicas, max_age = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])

def request(subject, payload, timeout=5.0):
    """One request/reply over the NATS text protocol, to any of the three servers."""
    last = None
    for p in (int(port), int(port) + 1, int(port) + 2):
        try:
            s = socket.create_connection(("127.0.0.1", p), timeout=timeout)
        except OSError as e:
            last = e
            continue
        try:
            f = s.makefile("rb")
            f.readline()  # INFO
            body = json.dumps(payload).encode()
            s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.cluster 1\r\n' +
                      b"PUB " + subject.encode() + b" _INBOX.cluster " + str(len(body)).encode() +
                      b"\r\n" + body + b"\r\n")
            while True:
                line = f.readline()
                if not line:
                    raise OSError("connection closed")
                if line.startswith(b"PING"):
                    s.sendall(b"PONG\r\n")
                elif line.startswith(b"MSG"):
                    n = int(line.split()[-1])
                    data = f.read(n + 2)[:n]
                    return json.loads(data)
                elif line.startswith(b"-ERR"):
                    raise OSError(line.decode().strip())
        except (OSError, socket.timeout) as e:
            last = e
        finally:
            s.close()
    raise SystemExit(f"no server answered {subject}: {last}")

config = {
    "name": stream,
    "subjects": [prefix + ".*"],
    "retention": "limits",
    "storage": "file",
    "num_replicas": replicas,
    "max_age": max_age,
    "duplicate_window": 120_000_000_000,
}
deadline = time.time() + 60
while True:
    reply = request("$JS.API.STREAM.CREATE." + stream, config)
    err = reply.get("error")
    if not err:
        break
    if err.get("err_code") == 10058:  # stream name already in use
        reply = request("$JS.API.STREAM.INFO." + stream, {})
        if reply.get("error"):
            raise SystemExit(f"stream {stream}: {reply['error']}")
        have = reply["config"]
        problems = []
        if have.get("retention", "limits") != "limits":
            problems.append(f"retention {have.get('retention')} (the source needs limits)")
        if prefix + ".*" not in have.get("subjects", []):
            problems.append(f"subjects {have.get('subjects')} (expected {prefix}.*)")
        if have.get("num_replicas", 1) != replicas:
            problems.append(f"{have.get('num_replicas', 1)} replicas (expected {replicas})")
        if problems:
            raise SystemExit(f"stream {stream} exists with " + "; ".join(problems))
        break
    if time.time() > deadline:
        raise SystemExit(f"stream {stream}: {err}")
    time.sleep(0.5)  # e.g. "insufficient resources" while peers are still joining
cluster = reply.get("cluster", {})
print(f"stream {stream}: subjects {prefix}.*, limits retention, file storage, "
      f"{replicas} replicas, leader {cluster.get('leader', '?')}", file=sys.stderr)
EOF
}

case "$cmd" in
start) start ;;
stop)
  load_ports
  stop
  ;;
status)
  load_ports
  status
  ;;
urls)
  load_ports
  urls
  ;;
stream)
  load_ports
  stream
  ;;
*) usage ;;
esac
