#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/ (see fuzz/README.md).

Payloads are made by the Python reference client (clients/python/inferscope_client.py:
encode_payload, request_event, gauge_event) plus hand-encoded variants of what the C++ client
writes (fixed uint64 seq, array32 event count) and of what the protocol rejects. Topologies are the
ones in topologies/, query strings are the documented ones (README.md, docs/ALERTS.md), CSVs are
small excerpts of /work/shared/traces (when present) and hand-written series.

Seeds are small, deterministic and committed; rerun this script only to change them:
    /usr/bin/python3 fuzz/make_seeds.py
Files named "regression-*" are inputs on which a fuzzer found a bug (kept after the fix, each
with a unit test); this script writes the ones it knows, other files are left alone.
"""

import os
import random
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))

import msgpack  # noqa: E402
import inferscope_client as client  # noqa: E402

CORPUS = os.path.join(ROOT, "fuzz", "corpus")
T0 = 1718000000123  # 2024-06-10T06:13:20.123Z: the fuzz targets' clocks are set near it


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def packb(obj):
    return msgpack.packb(obj, use_bin_type=True)


def request(i=0, **kw):
    args = dict(ttft_ms=95.0, tpot_ms=14.2, prompt_tokens=1200, output_tokens=50,
                cached_tokens=512, cost_usd=0.0031, quality=0.92, time_ms=T0 + i)
    args.update(kw)
    return client.request_event("vllm-3", "llama-3-70b", 812.5 + i, **args)


def gauge(i=0, name="kv_cache_usage", value=0.71):
    return client.gauge_event("vllm-3", "llama-3-70b", name, value, time_ms=T0 + i)


def cpp_style(pub, seq, events):
    """The C++ client's encoding: seq as uint64 (0xcf) and the event count as array32 (0xdd)."""
    out = bytearray(b"\x84")
    out += packb("v") + packb(1) + packb("pub") + packb(pub)
    out += packb("seq") + b"\xcf" + struct.pack(">Q", seq)
    out += packb("events") + b"\xdd" + struct.pack(">I", len(events))
    for e in events:
        out += packb(e)
    return bytes(out)


def wire_decoder_seeds():
    t = "wire_decoder"
    # docs/PROTOCOL.md §6.
    write(t, "protocol-example", client.encode_payload("gateway-eu-1", 41, [request(), gauge()]))
    write(t, "batch-8", client.encode_payload(
        "sim", 0, [request(i) for i in range(4)] + [gauge(i, "num_requests_waiting", i) for i in range(4)]))
    write(t, "heartbeat", client.encode_payload("sim", 7, []))
    write(t, "minimal-request", client.encode_payload(
        "me", 0, [client.request_event("node-1", "llama", 120.0, time_ms=T0)]))
    write(t, "errors", client.encode_payload("me", 3, [
        request(0, error="timeout"), request(1, error="rate_limited"), request(2, error="weird")]))
    write(t, "cpp-encoding", cpp_style("cpp-pub", 12345, [request(), gauge()]))
    # Fields in another order, float32 and integer numbers, unknown keys, envelope after events.
    write(t, "reordered", packb({"events": [{"t": T0, "e2e": 5, "m": "m", "i": "i", "k": "r",
                                              "x": [1, {"y": None}], "pt": 3.0}],
                                  "seq": 2**40, "pub": "p", "v": 1, "extra": b"bin"}))
    f32 = bytearray(packb({"v": 1, "pub": "p", "seq": 0, "events": []}))
    write(t, "float32", bytes(f32[:-1]) + b"\x91\x85" + packb("k") + packb("g") + packb("i") +
          packb("a") + packb("m") + packb("b") + packb("t") + packb(T0) + packb("val") +
          b"\xca" + struct.pack(">f", 1.5))
    # Rejected events: negative latency, NaN, empty and long names, unknown kind, wrong types.
    write(t, "bad-events", packb({"v": 1, "pub": "p", "seq": 1, "events": [
        {"k": "r", "i": "a", "m": "b", "t": T0, "e2e": -1},
        {"k": "r", "i": "a", "m": "b", "t": T0, "e2e": float("nan")},
        {"k": "g", "i": "", "m": "b", "t": T0, "n": "x", "val": 1},
        {"k": "g", "i": "a" * 300, "m": "b", "t": T0, "n": "x", "val": 1},
        {"k": "z", "i": "a", "m": "b", "t": T0},
        {"k": "r", "i": b"bin", "m": "b", "t": T0, "e2e": 1},
        {"k": "r", "i": "a", "m": "b", "t": 0, "e2e": 1},
        {"k": "r", "i": "a", "m": "b", "t": T0, "e2e": 1, "q": 2.0, "pt": 1.5},
        [1, 2],
    ]}))
    # Rejected messages.
    write(t, "unknown-version", packb({"v": 2, "pub": "p", "seq": 0, "events": []}))
    write(t, "not-a-map", packb([1, "pub", 0, []]))
    write(t, "truncated", client.encode_payload("p", 1, [request()])[:-7])
    write(t, "trailing", client.encode_payload("p", 1, []) + b"\xc0")
    write(t, "deep", b"\x91" * 40 + b"\xc0")
    write(t, "regression-seq-max", packb({"v": 1, "pub": "p", "seq": 2**64 - 1, "events": [
        client.request_event("node-1", "llama", 1.0, time_ms=T0)]}))


# hello and ack target ops (see fuzz/targets/hello_fuzzer.cc and ack_fuzzer.cc; same encoding, the
# ack target reads the sender's peer from bits 6-7 of a message op and an incarnation from bits 4-5
# of a durable op).
def frame(data):
    if isinstance(data, str):
        data = data.encode()
    if len(data) < 255:
        return bytes([len(data)]) + data
    return b"\xff" + struct.pack("<H", len(data)) + data


def op_hello(pub, extra=None, peer=0):
    m = {"v": 1, "pub": pub}
    if extra:
        m.update(extra)
    return bytes([0x04 | (peer << 6)]) + frame(packb(m))  # 2 frames, topic "hello"


def op_data(pub, seq, n=1, peer=0, inc=None):
    events = [client.request_event("node-1", "llama", 10.0 + i, time_ms=T0 + i) for i in range(n)]
    payload = client.encode_payload(pub, seq, events)
    if inc is not None:
        m = msgpack.unpackb(payload, raw=False)
        m["inc"] = inc
        payload = packb(m)
    return bytes([0x14 | (peer << 6)]) + frame(payload)  # 2 frames, "metrics"


def op_durable(k, seq, inc=0):
    return bytes([0x02 | (k << 2) | (inc << 4), seq])


OP_DRAIN = b"\x03"
OP_DRAIN_LATER = b"\x07"  # ack target: flush the acks, then 50 ms pass


def ack_seeds():
    hello_seeds("ack")
    t = "ack"
    # A publisher that reconnects (new routing id): acks follow its latest message.
    write(t, "reconnect", op_hello("p0", peer=0) + op_data("p0", 0, peer=0) +
          op_data("p0", 1, peer=1) + op_durable(0, 1) + OP_DRAIN + op_hello("p0", peer=2) +
          op_durable(0, 1) + OP_DRAIN)
    # Resends of applied messages: the resend hint at most every 50 ms.
    write(t, "resend-hints", op_hello("p1") + op_data("p1", 0) + op_data("p1", 0) +
          op_data("p1", 0) + OP_DRAIN_LATER + op_data("p1", 0) + op_data("p1", 4) + OP_DRAIN_LATER +
          op_data("p1", 4) + OP_DRAIN)
    # Incarnations: a restart at 2, the old one's messages then stale.
    write(t, "incarnations", op_data("p2", 0, inc=1) + op_data("p2", 1, inc=1) +
          op_durable(2, 1, inc=1) + op_hello("p2", {"inc": 2}, peer=1) +
          op_data("p2", 0, inc=2, peer=1) + op_data("p2", 2, inc=1) + op_durable(2, 0, inc=2) +
          OP_DRAIN)


def hello_seeds(t="hello"):
    write(t, "hello", op_hello("p0") + OP_DRAIN)
    write(t, "session", op_hello("p0") + op_data("p0", 0, 2) + op_data("p0", 1) +
          op_durable(0, 1) + OP_DRAIN + op_data("p0", 2) + op_data("p0", 1) + OP_DRAIN)
    write(t, "gap-and-resend", op_hello("p1") + op_data("p1", 0) + op_data("p1", 5) + OP_DRAIN +
          op_data("p1", 1) + op_data("p1", 2) + op_durable(1, 2) + op_hello("p1") + OP_DRAIN)
    write(t, "first-not-zero", op_data("p2", 7) + op_hello("p2") + OP_DRAIN)
    write(t, "two-publishers", op_hello("p0") + op_hello("p3") + op_data("p0", 0) +
          op_data("p3", 0) + op_durable(0, 0) + op_durable(3, 0) + OP_DRAIN)
    write(t, "bad-hellos", bytes([0x04]) + frame(b"\xc1") + bytes([0x04]) +
          frame(packb({"v": 1, "pub": ""})) + bytes([0x04]) + frame(packb({"pub": "x" * 300})) +
          bytes([0x04]) + frame(packb([1, 2])) + op_hello("p0", {"x": [1, 2]}) + OP_DRAIN)
    # 1, 3 and 4 frames; an empty topic frame.
    write(t, "bad-frames", bytes([0x20]) + frame("lonely") + bytes([0x18]) + frame("x") +
          frame("y") + bytes([0x3c]) + frame("a") + frame("b") + frame("c") + frame("d") +
          bytes([0x24]) + frame("") + frame(packb({"v": 1})) + OP_DRAIN)
    write(t, "batch-too-large", op_hello("p0") + op_data("p0", 0, 9) + op_data("p0", 0, 1) +
          OP_DRAIN)


def topology_seeds():
    t = "topology"
    topo_dir = os.path.join(ROOT, "topologies")
    for name in sorted(os.listdir(topo_dir)):
        if name.endswith(".yaml"):
            with open(os.path.join(topo_dir, name), "rb") as f:
                write(t, name, f.read())
    minimal = """name: minimal
sources:
  - {name: in, type: zmq, options: {endpoint: "tcp://127.0.0.1:*"}}
operators:
  - {name: w, type: window_aggregate, inputs: in, options: {pane: 10s}}
sinks:
  - {name: out, type: zmq_pub, inputs: [w], options: {endpoint: "tcp://127.0.0.1:*"}}
"""
    write(t, "minimal.yaml", minimal)
    write(t, "bad-values.yaml", """name: bad
state: {path: /nonexistent/x, tiers: [{resolution: 10s, retention: forever}, {resolution: 7s}]}
query: {listen: "abc"}
engine: {queue_capacity: -1, batch_pool: 99999999999999999999, checkpoint_interval: 1y}
sources:
  - {name: in, type: zmq, options: {endpoint: not-an-endpoint, mode: router, rcvhwm: abc, topics: [a]}}
operators:
  - {name: in, type: nope, inputs: [in, in]}
sinks: 7
""")
    write(t, "anchors.yaml", """x: &a {name: s, type: zmq, options: {endpoint: "tcp://127.0.0.1:*"}}
sources: [*a, *a]
operators: [{name: w, type: window_aggregate, inputs: [s], options: {pane: 1m, allowed_lateness: 5s}}]
sinks: [{name: k, type: rocksdb_state, inputs: w}]
""")


def query_seeds():
    t = "query_params"
    # Route indexes of query/handlers.h Routes() when the seeds were made.
    routes = {"health": 0, "capabilities": 1, "instances": 2, "summary": 3, "series": 4,
              "performance": 5, "alerts": 6, "alert": 7, "create_silence": 8, "silences": 9,
              "delete_silence": 10, "metrics": 11}

    def q(name, route, path="", query="", body=""):
        write(t, name, bytes([routes[route]]) + f"{path}\n{query}\n{body}".encode())

    q("summary", "summary", "node-1", "window=1m&model=llama&metric=ttft_ms")
    q("summary-range", "summary", "node-1",
      "window=10s&from=2024-06-10T06:13:20Z&to=2024-06-10T06:20:00.500%2B01:00&resolution=10s")
    q("summary-epoch", "summary", "node%2D1", "window=5m&from=1718000000000&to=1718001200000")
    q("series", "series", "", "instance=node-1&model=llama&metric=e2e_ms&step=1m&resolution=1m")
    q("series-default", "series", "", "instance=node-2")
    q("performance", "performance", "", "window=5m")
    q("alerts", "alerts", "", "state=firing&severity=warning&instance=node-*&since=0&limit=10")
    q("alerts-since", "alerts", "", "since=2024-06-10T06:13:20.123Z&limit=10000")
    q("alert", "alert", "0123456789abcdef")
    q("silence-create", "create_silence", "", "",
      '{"matchers": {"instance": "vllm-3", "rule": "high_*"}, "duration": "2h", '
      '"created_by": "ops", "comment": "maintenance"}')
    q("silence-create-list", "create_silence", "", "",
      '{"matchers": [{"field": "severity", "pattern": "warn?ng"}], "starts_at": 1718000000000, '
      '"ends_at": 1718003600000}')
    q("silences", "silences", "", "status=active")
    q("silence-delete", "delete_silence", "9f2c000000000000")
    q("instances", "instances")
    q("health", "health")
    q("metrics", "metrics")


def detect_seeds():
    t = "detect_csv"
    lines = ["timestamp,value"]
    for i in range(40):
        v = 100 + (i % 4) * 3 + (60 if i == 33 else 0)
        lines.append(f"{1718000000 + 60 * i},{v}")
    write(t, "epoch-seconds.csv", "\n".join(lines) + "\n")
    lines = ["# RFC 3339 times, offsets, fractions"]
    for i in range(12):
        lines.append(f"2024-06-10T06:{i:02d}:20.{i}Z, {i * 1.5}")
    lines += ["2024-06-10 07:00:00+02:00,3", "2024-06-10T07:00:01-0130,4",
              "2024-06-10T07:00:02,5e3", "bad line", "2024-13-10T07:00:02,1",
              "1718000000.5,inf", "1718000001,nan", "1718000000,-0"]
    write(t, "rfc3339.csv", "\r\n".join(lines) + "\r\n")
    trace = os.path.join("/work/shared/traces/azure-llm-inference-2023", "code.csv")
    if os.path.exists(trace):
        with open(trace, "rb") as f:
            head = f.read().split(b"\r\n")[:30]
        write(t, "azure-code-3cols.csv", b"\r\n".join(head) + b"\r\n")
        two = [b",".join(l.split(b",")[:2]) for l in head]
        write(t, "azure-code.csv", b"\r\n".join(two) + b"\r\n")


def prom_text_seeds():
    """Prometheus /metrics pages: the real fixture pages and the format's corner cases."""
    t = "prom_text"
    data = os.path.join(ROOT, "tests", "data", "prometheus")
    for name in sorted(os.listdir(data)):
        with open(os.path.join(data, name), "rb") as f:
            write(t, name, f.read())
    write(t, "escapes.txt",
          '# TYPE msdos gauge\nmsdos{path="C:\\\\DIR\\\\F.TXT",err="a\\n\\"b\\""} 1.458255915e9\n'
          'weird{problem="division by zero"} +Inf -3982045\nn NaN\nm -Inf 5\n')
    write(t, "openmetrics.txt",
          "# TYPE foo counter\n# UNIT foo seconds\n# HELP foo A counter.\n"
          'foo_total 17.0 1520879607.789 # {trace_id="oHg5SJYRHA0"} 9.8 1520879602.890\n'
          "foo_created 1520430000.123\n# TYPE bar histogram\n"
          'bar_bucket{le="0.1"} 8\nbar_bucket{le="+Inf"} 17\nbar_count 17\nbar_sum 324.3\n'
          '# TYPE s summary\ns{quantile="0.5"} 1\ns_sum 2\ns_count 3\n'
          '# TYPE g gaugehistogram\ng_bucket{le="1"} 3\ng_gcount 3\ng_gsum 2\n'
          '# TYPE i info\ni_info{v="1"} 1\n# EOF\n')
    write(t, "dcgm.txt",
          "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
          'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-1",modelName="NVIDIA A100"} 87\n'
          "# TYPE DCGM_FI_DEV_FB_USED gauge\n"
          'DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-1"} 40123\n')
    write(t, "tgi.txt",
          "# TYPE tgi_queue_size gauge\ntgi_queue_size 3\n# TYPE tgi_request_count counter\n"
          "tgi_request_count 120\n# TYPE tgi_request_duration histogram\n"
          'tgi_request_duration_bucket{le="1"} 100\ntgi_request_duration_sum 80.5\n'
          "tgi_request_duration_count 120\n")
    write(t, "malformed.txt",
          'good 1\n{no="name"} 1\nx{a="unterminated} 1\nx{a=b} 1\nx one\nx 1 12.5\n'
          "# TYPE x flavour\n# TYPE\nx{a=\"1\"}\t7\r\n")


def pb_varint(v):
    out = bytearray()
    v &= (1 << 64) - 1
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def pb_len(field, data):
    return pb_varint((field << 3) | 2) + pb_varint(len(data)) + data


def rw_series(labels, samples):
    out = b""
    for name, value in labels:
        out += pb_len(1, pb_len(1, name.encode()) + pb_len(2, value.encode()))
    for value, ts in samples:
        sample = pb_varint((1 << 3) | 1) + struct.pack("<d", value) + pb_varint(2 << 3) + pb_varint(ts)
        out += pb_len(2, sample)
    return pb_len(1, out)


def snappy_literal(raw):
    """A snappy block holding `raw` as literals (valid for the decoder; no compression)."""
    out = pb_varint(len(raw))
    for i in range(0, len(raw), 256):
        chunk = raw[i:i + 256]
        if len(chunk) <= 60:
            out += bytes([(len(chunk) - 1) << 2]) + chunk
        else:
            out += bytes([60 << 2, len(chunk) - 1]) + chunk
    return out


def remote_write_seeds():
    vllm = rw_series([("__name__", "vllm:num_requests_running"), ("instance", "10.0.0.1:8000"),
                      ("model_name", "m")], [(4.0, T0), (5.0, T0 + 1000)])
    counter = rw_series([("__name__", "vllm:num_preemptions_total"), ("instance", "a")],
                        [(3.0, T0), (1.0, T0 + 1000)])
    bucket = rw_series([("__name__", "vllm:time_to_first_token_seconds_bucket"), ("le", "+Inf"),
                        ("instance", "a")], [(float("nan"), -1)])
    request = vllm + counter + bucket + pb_len(3, b"metadata")
    write("remote_write", "request.pb", request)
    write("remote_write", "request.snappy", snappy_literal(request))
    write("remote_write", "empty.snappy", snappy_literal(b""))
    write("remote_write", "truncated.pb", request[:len(request) // 2])
    write("remote_write", "wrong-wire-type.pb", pb_varint(1 << 3) + pb_varint(5))
    write("remote_write", "huge-length.snappy", pb_varint(1 << 30) + b"\x00")


def raw_request_seeds():
    # Request heads as the fast path's reader gets them from the gate (query/raw_request.h).
    t = "raw_request"
    write(t, "summary-curl",
          "GET /v1/instances/node-1/summary?model=llama&metric=ttft_ms&window=1m HTTP/1.1\r\n"
          "Host: localhost:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n")
    write(t, "series-token-close",
          "GET /v1/series?instance=node-1&model=llama&metric=ttft_ms&step=10s HTTP/1.1\r\n"
          "Host: 127.0.0.1:8080\r\nAuthorization: Bearer reader-0123456789abcdef\r\n"
          "Connection: close\r\n\r\n")
    write(t, "series-repeated-case",
          "GET /v1/series?metric=ttft_ms&metric=e2e_ms&instance=a-1 HTTP/1.1\r\nhost: x\r\n"
          "authorization:  Bearer tok \r\nAUTHORIZATION: Bearer other\r\n"
          "Origin: https://ui.example\r\nContent-Length: 0\r\nconnection: keep-alive\r\n\r\n")
    write(t, "summary-empty-values",
          "GET /v1/instances/node-1/summary?model=&window= HTTP/1.1\r\nHost: x\r\n"
          "Accept-Encoding: gzip, deflate, br\r\nRange: bytes=0-9\r\n\r\n")
    write(t, "smuggle-framing",
          "GET /v1/instances/node-1/summary HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n"
          "Transfer-Encoding: chunked\r\n\r\nGET /v1/health HTTP/1.1\r\n\r\n")
    write(t, "target-bytes",
          "GET /v1/instances/a;b/summary?x=1;y=2&z=(a)*!$@:, HTTP/1.1\r\n\r\n")
    # The first line as "<pattern> <path>" for PathPattern::Compile.
    write(t, "pattern-summary", "/v1/instances/([^/]+)/summary /v1/instances/node-1/summary\n")


def checkpoint_restore_seeds():
    """FuzzedDataProvider reads integers from the input's end: the last byte picks the operator
    (bit 0: window_aggregate), the one before the form (bit 0: version-1 ring records), the next
    the number of edits; the edits' bytes come from both ends."""
    t = "checkpoint_restore"
    for window in (0, 1):
        for ring in (0, 1):
            name = ("window" if window else "sliding") + ("-ring-records" if ring else "-pane-records")
            write(t, name, bytes([ring, window]))
    rng = random.Random(13)
    for i in range(6):
        write(t, f"edits-{i}", bytes(rng.randrange(256) for _ in range(24 + 8 * i)) +
              bytes([i % 9, i % 2, (i // 2) % 2]))


if __name__ == "__main__":
    wire_decoder_seeds()
    hello_seeds()
    ack_seeds()
    topology_seeds()
    query_seeds()
    detect_seeds()
    prom_text_seeds()
    remote_write_seeds()
    raw_request_seeds()
    checkpoint_restore_seeds()
