#!/usr/bin/python3
"""Query benchmark (issue 13): the query node under wrk while the engine ingests.

Starts the engine on the default topology (free ports, temporary state directory) and a query node
(`inferscope query-node`) on the same state directory; a publisher thread (pyzmq, batched protocol
v1 messages) keeps the engine ingesting request outcomes of INSTANCES x MODELS series at a steady
rate; once the panes of the sampled series are readable from the query node, it measures:

  1. the engine's ingest rate without query load (inferscope_source_events_total of the engine's
     /metrics over --phase seconds),
  2. for each of the summary, series and performance endpoints: wrk (--threads, --connections, a
     Lua script picking a random instance and model per request) against the query node for
     --phase seconds: requests/s, p50/p99 latency, non-2xx answers, and the engine's ingest rate
     during it,
  3. for each endpoint of --open-loop-endpoints (summary by default) and each rate of
     --open-loop-rates (20000 by default): bench/http_load (open loop: requests due at that fixed
     rate, each one's latency counted from when it was due, so no coordinated omission) against
     the query node for --phase seconds after a 1 s warm-up: achieved requests/s, p50/p99/p99.9
     latency, the generator's own send lag, and the engine's ingest rate during it,
  4. the ingest rate without query load again;

and prints one table: ingest ratio = ingest during the wrk phase / mean of the two quiet phases (same
run, same machine load). Everything shares the machine's cores: engine, query node, publisher and
wrk; --wrk-cpus pins wrk (taskset) and --server-cpus pins engine + query node + publisher.
--fifo N runs the query node and bench/http_load at SCHED_FIFO priority N (chrt): the
generator's own run-queue delays are then out of its figures (on a real deployment the clients
are elsewhere), and the node is served before the engine's bursts (as a latency-critical reader
would be run beside the engine, e.g. systemd CPUSchedulingPolicy=fifo).

wrk saturates the machine (closed loop: each connection sends when its last answer arrived), so its
latencies are those of a machine at 100 % CPU; the open-loop phases measure latency at a given rate,
which is what a target such as "p99 < 2 ms at 20,000 requests/s" asks.

Needs /usr/bin/python3 with python3-zmq and python3-msgpack (Debian), wrk, and the build's
bench/http_load (`make bench-query` builds it).
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))

import zmq  # noqa: E402
from inferscope_client import encode_payload  # noqa: E402

WRK_LUA = r"""
local instances = %(instances)d
local models = %(models)d
local kind = "%(kind)s"
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end
function init(args)
  math.randomseed(seed * 7919 + os.time())
end
request = function()
  local i = math.random(0, instances - 1)
  local m = math.random(0, models - 1)
  local path
  if kind == "summary" then
    path = string.format("/v1/instances/inst-%%d/summary?model=model-%%d&metric=ttft_ms&window=1m", i, m)
  elseif kind == "series" then
    path = string.format("/v1/series?instance=inst-%%d&model=model-%%d&metric=ttft_ms&step=10s", i, m)
  else
    path = "/v1/performance/metrics?window=1m"
  end
  return wrk.format("GET", path)
end
done = function(summary, latency, requests)
  io.write(string.format(
    "WRKJSON {\"requests\":%%d,\"duration_us\":%%d,\"p50_us\":%%d,\"p99_us\":%%d,\"max_us\":%%d," ..
    "\"non2xx\":%%d,\"connect\":%%d,\"read\":%%d,\"write\":%%d,\"timeout\":%%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout))
end
"""


def http_get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode("utf-8", "replace")


def wait_ready_file(path, proc, log, what, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            with open(path) as f:
                return json.load(f)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    sys.exit(f"{what} did not become ready; its log:\n" + open(log).read())


def ingest_events(engine_url):
    _, text = http_get(engine_url + "/metrics")
    total = 0.0
    for line in text.splitlines():
        if line.startswith("inferscope_source_events_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def written_bytes(pid):
    """Bytes the process passed to write(2) and friends (/proc/PID/io wchar: files, not sockets
    written with send; for the engine, mostly RocksDB's WAL and tables)."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SteadyPublisher(threading.Thread):
    """Request outcomes of every (instance, model) in turn at `rate` events/s, in batches."""

    def __init__(self, endpoint, instances, models, rate, batch):
        super().__init__(daemon=True)
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PUSH)
        self.socket.setsockopt(zmq.SNDHWM, 4)  # "sent" ~ what the engine took in
        self.socket.connect(endpoint)
        self.names = [(f"inst-{i}", f"model-{m}") for i in range(instances) for m in range(models)]
        self.rate = rate
        self.batch = batch
        self.sent = 0
        self.skipped = 0
        self.stopping = threading.Event()

    def run(self):
        seq = 0
        next_series = 0
        start = time.monotonic()
        n = len(self.names)
        while not self.stopping.is_set():
            due = int((time.monotonic() - start) * self.rate) - self.sent - self.skipped
            if due > self.rate / 2:  # starved of CPU: a steady rate, no catching up with bursts
                self.skipped += due - self.batch
                due = self.batch
            if due < self.batch:
                time.sleep(self.batch / self.rate / 4)
                continue
            now_ms = time.time_ns() // 1_000_000
            events = []
            for k in range(self.batch):
                inst, model = self.names[next_series]
                next_series = (next_series + 1) % n
                v = 40.0 + (seq * 31 + k * 17) % 200
                events.append({"k": "r", "i": inst, "m": model, "t": now_ms, "e2e": v * 8.0,
                               "ttft": v, "tpot": v / 10.0, "pt": 400, "ot": 120})
            self.socket.send_multipart([b"metrics", encode_payload("query-load", seq, events)])
            seq += 1
            self.sent += len(events)

    def stop(self):
        self.stopping.set()
        self.join()
        self.socket.close(linger=0)
        self.context.term()


def run_wrk(args, url, kind, workdir):
    script = os.path.join(workdir, f"{kind}.lua")
    with open(script, "w") as f:
        f.write(WRK_LUA % {"instances": args.instances, "models": args.models, "kind": kind})
    return run_load(args, ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d",
                           f"{args.phase}s", "--timeout", "5s", "-s", script, url], "WRKJSON")


def fifo(args):
    """The command prefix that runs a process at SCHED_FIFO --fifo (none when 0)."""
    return ["chrt", "-f", str(args.fifo)] if args.fifo > 0 else []


def run_load(args, cmd, tag):
    """Runs a load generator (pinned with --wrk-cpus) and returns the JSON of its `tag` line."""
    name = os.path.basename(cmd[0])
    if tag == "HTTPLOADJSON":
        cmd = fifo(args) + cmd  # the open-loop generator (wrk saturates: its policy stays)
    if args.wrk_cpus:
        cmd = ["taskset", "-c", args.wrk_cpus] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1:])
    sys.exit(f"{name} printed no result:\n" + out)


def target_of(kind, i, m):
    if kind == "summary":
        return f"/v1/instances/inst-{i}/summary?model=model-{m}&metric=ttft_ms&window=1m"
    if kind == "series":
        return f"/v1/series?instance=inst-{i}&model=model-{m}&metric=ttft_ms&step=10s"
    return "/v1/performance/metrics?window=1m"


def run_open_loop(args, url, kind, rate, workdir):
    paths = os.path.join(workdir, f"{kind}.paths")
    with open(paths, "w") as f:
        for i in range(args.instances):
            for m in range(args.models):
                f.write(target_of(kind, i, m) + "\n")
    port = url.rsplit(":", 1)[1]
    cmd = [args.http_load, "--port", port, "--paths", paths,
           "--rate", str(rate), "--duration", str(args.phase), "--warmup", "1",
           "--connections", str(args.open_loop_connections), "--threads",
           str(args.open_loop_threads)]
    if args.timeline_dir:
        os.makedirs(args.timeline_dir, exist_ok=True)
        cmd += ["--timeline", os.path.join(args.timeline_dir, f"{kind}-{rate:.0f}.txt")]
    return run_load(args, cmd, "HTTPLOADJSON")


def measure_ingest(engine_url, pids, publisher, seconds, during=None):
    """Events/s ingested by the engine, CPU cores used by `pids` (and "sent": events/s the
    publisher sent) over `seconds` (or while `during` runs)."""
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    w0 = written_bytes(pids["engine"])
    e0, s0, t0 = ingest_events(engine_url), publisher.sent, time.monotonic()
    result = during() if during else time.sleep(seconds)
    e1, s1, t1 = ingest_events(engine_url), publisher.sent, time.monotonic()
    cpu = {name: (cpu_seconds(pid) - cpu0[name]) / (t1 - t0) for name, pid in pids.items()}
    cpu["sent"] = (s1 - s0) / (t1 - t0)
    cpu["written_mb"] = (written_bytes(pids["engine"]) - w0) / (t1 - t0) / 1e6
    return (e1 - e0) / (t1 - t0), cpu, result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--models", type=int, default=10, help="series = instances x models")
    p.add_argument("--rate", type=float, default=20000, help="events/s published during the run")
    p.add_argument("--batch", type=int, default=500, help="events per message")
    p.add_argument("--phase", type=int, default=10, help="seconds per measured phase")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--connections", type=int, default=16, help="wrk connections")
    p.add_argument("--endpoints", default="summary,series,performance")
    p.add_argument("--open-loop-endpoints", default="summary",
                   help="endpoints measured at fixed rates by bench/http_load ('' for none)")
    p.add_argument("--open-loop-rates", default="20000", help="requests/s, comma-separated")
    p.add_argument("--open-loop-connections", type=int, default=32)
    p.add_argument("--open-loop-threads", type=int, default=1)
    p.add_argument("--timeline-dir", default="",
                   help="write each open-loop phase's per-100 ms latency timeline here")
    p.add_argument("--http-load", default="", help="the http_load binary (default: the build's)")
    p.add_argument("--wrk-cpus", default="", help="taskset CPU list for wrk and http_load, e.g. 1")
    p.add_argument("--server-cpus", default="", help="taskset CPU list for engine + query node")
    p.add_argument("--fifo", type=int, default=0,
                   help="run the query node and the open-loop generator at SCHED_FIFO with this "
                        "priority (chrt; root or CAP_SYS_NICE), the engine and the publisher "
                        "as usual; 0: every process at the default policy")
    p.add_argument("--checkpoint-interval", default="",
                   help="the engine's checkpoint_interval (default: the topology's, 1s)")
    p.add_argument("--catch-up-interval", default="",
                   help="the query node's --catch-up-interval (default: the node's)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()

    binary = os.path.join(args.build_dir, "cli", "inferscope")
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} not found: build the `inferscope` target first")
    if not shutil.which("wrk"):
        sys.exit("wrk not found (Debian package wrk)")
    open_loop = [(kind, float(rate)) for kind in filter(None, args.open_loop_endpoints.split(","))
                 for rate in args.open_loop_rates.split(",")]
    args.http_load = args.http_load or os.path.join(args.build_dir, "bench", "http_load")
    if open_loop and not os.access(args.http_load, os.X_OK):
        sys.exit(f"{args.http_load} not found: build the `http_load` target (make bench-query does)")
    work = tempfile.mkdtemp(prefix="inferscope-qload.")
    procs = []
    publisher = None
    try:
        topology = open(os.path.join(ROOT, "topologies", "inference-fleet.yaml")).read()
        topology = re.sub(r"tcp://127\.0\.0\.1:\d+", "tcp://127.0.0.1:*", topology)
        topology = re.sub(r"listen: 127\.0\.0\.1:\d+", "listen: 127.0.0.1:0", topology)
        if args.checkpoint_interval:
            topology, n = re.subn(r"checkpoint_interval: \S+", "checkpoint_interval: "
                                  + args.checkpoint_interval, topology)
            if n != 1:
                sys.exit("the default topology has no single checkpoint_interval to replace")
        with open(os.path.join(work, "topology.yaml"), "w") as f:
            f.write(topology)
        pin = ["taskset", "-c", args.server_cpus] if args.server_cpus else []
        engine_log = os.path.join(work, "engine.log")
        engine = subprocess.Popen(
            pin + [binary, "run", "--topology", os.path.join(work, "topology.yaml"), "--state-dir",
                   os.path.join(work, "state"), "--ready-file", os.path.join(work, "engine.json")],
            stdout=open(engine_log, "w"), stderr=subprocess.STDOUT)
        procs.append(engine)
        ready = wait_ready_file(os.path.join(work, "engine.json"), engine, engine_log, "the engine")
        engine_url, ingest = ready["http"], ready["endpoints"]["ingest"]
        node_log = os.path.join(work, "node.log")
        node = subprocess.Popen(
            pin + fifo(args) + [binary, "query-node", "--state-dir", os.path.join(work, "state"), "--listen",
                   "127.0.0.1:0", "--engine-url", engine_url, "--ready-file",
                   os.path.join(work, "node.json")] +
                  (["--catch-up-interval", args.catch_up_interval] if args.catch_up_interval else []),
            stdout=open(node_log, "w"), stderr=subprocess.STDOUT)
        procs.append(node)
        node_url = wait_ready_file(os.path.join(work, "node.json"), node, node_log,
                                   "the query node")["http"]
        series = args.instances * args.models
        print(f"engine {engine_url} (ingest {ingest}), query node {node_url}; {series} series "
              f"({args.instances} instances x {args.models} models), {args.rate:.0f} events/s "
              f"in messages of {args.batch}")
        print(f"machine: {os.cpu_count()} cores, loadavg {open('/proc/loadavg').read().strip()}")

        publisher = SteadyPublisher(ingest, args.instances, args.models, args.rate, args.batch)
        publisher.start()
        # Filled when a closed pane of a few sampled series is readable from the query node.
        t0 = time.time()
        samples = [(0, 0), (args.instances - 1, args.models - 1), (args.instances // 2, 1 % args.models)]
        while True:
            ok = 0
            for i, m in samples:
                try:
                    _, body = http_get(f"{node_url}/v1/instances/inst-{i}/summary?model=model-{m}"
                                       "&metric=ttft_ms&window=10s")
                    windows = json.loads(body).get("windows", [])
                    ok += any(w.get("count", 0) > 0 for w in windows)
                except OSError:
                    pass
            if ok == len(samples):
                break
            if time.time() - t0 > 120:
                sys.exit("no stored panes after 120 s; engine log:\n" + open(engine_log).read())
            time.sleep(1)
        print(f"filled: panes of {series} series readable from the query node after "
              f"{time.time() - t0:.1f} s (publisher sent {publisher.sent} events)")
        _, body = http_get(f"{node_url}/v1/instances/inst-0/summary?model=model-0&metric=ttft_ms"
                           "&window=1m")
        print(f"sample summary response: {len(body)} bytes")

        pids = {"engine": engine.pid, "node": node.pid}
        quiet1, cpu1, _ = measure_ingest(engine_url, pids, publisher, args.phase)
        rows = []
        for kind in filter(None, args.endpoints.split(",")):
            rate, cpu, wrk = measure_ingest(engine_url, pids, publisher, args.phase,
                                            lambda k=kind: run_wrk(args, node_url, k, work))
            rows.append((kind, rate, cpu, wrk))
        open_rows = []
        for kind, offered in open_loop:
            rate, cpu, result = measure_ingest(
                engine_url, pids, publisher, args.phase,
                lambda k=kind, r=offered: run_open_loop(args, node_url, k, r, work))
            open_rows.append((kind, offered, rate, cpu, result))
        quiet2, cpu2, _ = measure_ingest(engine_url, pids, publisher, args.phase)
        quiet = (quiet1 + quiet2) / 2
        print(f"\ningest without query load: {quiet1:.0f} and {quiet2:.0f} events/s (offered "
              f"{args.rate:.0f}; sent {cpu1['sent']:.0f}/{cpu2['sent']:.0f}); engine CPU {cpu1['engine']:.2f}/{cpu2['engine']:.2f} cores, "
              f"query node {cpu1['node']:.2f}/{cpu2['node']:.2f}; engine writes (WAL and tables) "
              f"{cpu1['written_mb']:.1f}/{cpu2['written_mb']:.1f} MB/s")
        print(f"wrk: {args.threads} threads, {args.connections} connections, {args.phase} s per "
              f"endpoint" + (f", pinned to CPU {args.wrk_cpus}" if args.wrk_cpus else "")
              + (f"; engine + node pinned to CPU {args.server_cpus}" if args.server_cpus else "")
              + (f"; query node at SCHED_FIFO {args.fifo}" if args.fifo else ""))
        print("| endpoint | req/s | p50 ms | p99 ms | max ms | non-2xx | ingest ev/s | "
              "ingest ratio | sent ev/s | engine CPU | node CPU |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for kind, rate, cpu, wrk in rows:
            rps = wrk["requests"] / (wrk["duration_us"] / 1e6)
            errors = wrk["non2xx"] + wrk["connect"] + wrk["read"] + wrk["write"] + wrk["timeout"]
            print(f"| {kind} | {rps:.0f} | {wrk['p50_us'] / 1000:.3f} | {wrk['p99_us'] / 1000:.3f} "
                  f"| {wrk['max_us'] / 1000:.1f} | {errors} | {rate:.0f} | {rate / quiet:.3f} | "
                  f"{cpu['sent']:.0f} | {cpu['engine']:.2f} | {cpu['node']:.2f} |")
        if open_rows:
            print(f"\nopen loop (bench/http_load): requests due at a fixed rate, latency from when "
                  f"each was due; {args.open_loop_connections} connections, "
                  f"{args.open_loop_threads} thread(s), {args.phase} s after a 1 s warm-up"
                  + (f"; query node and generator at SCHED_FIFO {args.fifo}" if args.fifo else ""))
            print("| endpoint | offered req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms | "
                  "send lag p99 ms | non-2xx + errors | ingest ratio | sent ev/s | engine CPU | "
                  "node CPU | load CPU |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for kind, offered, rate, cpu, r in open_rows:
                print(f"| {kind} | {offered:.0f} | {r['achieved_rps']:.0f} | {r['p50_us'] / 1000:.3f} "
                      f"| {r['p99_us'] / 1000:.3f} | {r['p999_us'] / 1000:.3f} | "
                      f"{r['max_us'] / 1000:.1f} | {r['lag_p99_us'] / 1000:.3f} | "
                      f"{r['non2xx'] + r['errors']} | {rate / quiet:.3f} | {cpu['sent']:.0f} | "
                      f"{cpu['engine']:.2f} | "
                      f"{cpu['node']:.2f} | {r['cpu_s'] / (args.phase + 1):.2f} |")
        # The query node's response cache over the whole run (older nodes: not all counters).
        try:
            _, text = http_get(f"{node_url}/metrics")
            found = re.findall(r'^inferscope_query_cache_(lookups_total\{result="(\w+)"\}|carried_total) '
                               r'(\S+)$', text, re.M)
            if found:
                print("query node response cache: " + ", ".join(
                    f"{result or 'carried'} {float(value):.0f}" for _, result, value in found))
        except OSError:
            pass
        print(f"loadavg at the end: {open('/proc/loadavg').read().strip()}")
    finally:
        if publisher:
            publisher.stop()
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
