"""Run by the interpreter of a venv into which `pip install ./clients/python` put the package
(python_package_test.sh): imports `inferscope` from there, checks its version against the
project's, publishes to a real `inferscope run` in acknowledged mode and receives a summary and an
alert through inferscope.Subscriber.

Usage: python_package_e2e.py INFERSCOPE_BINARY PROJECT_VERSION WORK_DIR
"""

import json
import os
import subprocess
import sys
import time

import inferscope

TOPOLOGY = """name: pip-package
engine:
  checkpoint_interval: 200ms
state:
  path: {state}
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
      out_of_orderness: 0s
      idle_timeout: 300ms
  - name: rules
    type: threshold_rules
    inputs: [windows]
    options:
      rules:
        - name: slow_first_token
          metric: ttft_ms
          stat: max
          op: ">"
          levels: {{warning: 100, critical: 1000}}
          for: 0s
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
  - name: summaries
    type: zmq_pub
    inputs: [windows]
    options:
      endpoint: tcp://127.0.0.1:*
  - name: alerts
    type: zmq_alerts
    inputs: [rules]
    options:
      endpoint: tcp://127.0.0.1:*
"""


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def main():
    binary, version, work = sys.argv[1], sys.argv[2], sys.argv[3]
    here = os.path.realpath(os.path.dirname(inferscope.__file__))
    if not here.startswith(os.path.realpath(sys.prefix)):
        fail(f"inferscope imported from {here}, not from the venv {sys.prefix}")
    if inferscope.__version__ != version:
        fail(f"inferscope.__version__ {inferscope.__version__} != project version {version}")
    if not os.path.exists(os.path.join(here, "py.typed")):
        fail("py.typed is not installed")
    import inferscope_client  # the compatibility name is installed too
    if inferscope_client.AckedPublisher is not inferscope.AckedPublisher:
        fail("inferscope_client is not inferscope.client")

    topology = os.path.join(work, "topology.yaml")
    with open(topology, "w") as f:
        f.write(TOPOLOGY.format(state=os.path.join(work, "state")))
    ready = os.path.join(work, "ready.json")
    log = open(os.path.join(work, "engine.log"), "w")
    engine = subprocess.Popen([binary, "run", "-t", topology, "--ready-file", ready],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(ready):
            if engine.poll() is not None or time.monotonic() > deadline:
                fail("the engine did not become ready; see engine.log")
            time.sleep(0.05)
        with open(ready) as f:
            endpoints = json.load(f)["endpoints"]
        summaries = inferscope.Subscriber.summaries(endpoints["summaries"], instance="node.a")
        alerts = inferscope.Subscriber.alerts(endpoints["alerts"], severity="warning")
        other = inferscope.Subscriber.summaries(endpoints["summaries"], instance="node")
        time.sleep(0.3)  # slow joiner: the subscriptions reach the PUB sockets

        pub = inferscope.AckedPublisher(endpoints["ingest"], "pip-test", batch_size=10)
        pub.connect()
        for i in range(20):  # ttft up to 500 ms: max > 100 fires the warning level
            pub.request("node.a", "m1", e2e_ms=600.0, ttft_ms=25.0 * (i + 1), output_tokens=10)
        if not pub.wait_acked(30.0):
            fail(f"not acknowledged: {pub.unacked} unacked, {pub.last_error}")
        pub.close()

        summary = alert = None
        deadline = time.monotonic() + 20
        while (summary is None or alert is None) and time.monotonic() < deadline:
            if summary is None:
                m = summaries.recv(timeout_ms=100)
                if m is not None and m.payload.get("metric") == "ttft_ms":
                    summary = m
            if alert is None:
                alert = alerts.recv(timeout_ms=100)
        if summary is None:
            fail("no ttft_ms summary of node.a received")
        if alert is None:
            fail("no warning alert received")
        if summary.names != ["summaries", "node.a", "m1"] or summary.topic != b"summaries.node%2Ea.m1.":
            fail(f"summary topic {summary.topic!r} names {summary.names}")
        if summary.payload["count"] != 20 or summary.payload["max"] != 500.0:
            fail(f"summary {summary.payload}")
        if not isinstance(summary.payload.get("topic_seq"), int) or summary.payload["topic_seq"] < 1:
            fail(f"summary without its topic_seq: {summary.payload}")
        if summaries.lost != 0 or summary.lost_before != 0:
            fail(f"messages lost on a subscriber that kept up: {summaries.lost}")
        if alert.names != ["alerts", "warning", "node.a", "m1"] or alert.kind != "alerts":
            fail(f"alert topic {alert.topic!r}")
        if other.recv(timeout_ms=200) is not None:
            fail("the prefix of instance 'node' matched instance 'node.a'")
        for sub in (summaries, alerts, other):
            sub.close()
        print(f"python package test: ok (inferscope {inferscope.__version__} from {here}; "
              f"summary count {summary.payload['count']}, alert {alert.payload.get('rule')} "
              f"{alert.payload.get('state')})")
    finally:
        engine.terminate()
        engine.wait(timeout=30)
        log.close()


def check_lost_messages() -> None:
    """Subscriber's count of lost messages from the gaps of topic_seq, on a PUB socket of the
    test's: a gap of 2, then numbers from 1 again (an engine restart), which lose nothing."""
    import zmq

    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    sub = inferscope.Subscriber(pub.getsockopt(zmq.LAST_ENDPOINT).decode(), [b"alerts."],
                                context=context)
    probe = 0
    while sub.recv(timeout_ms=50) is None:  # slow joiner: a probe topic until one arrives
        probe += 1
        if probe > 100:
            fail("the test's PUB socket reached no subscriber")
        pub.send_multipart([b"alerts.probe.", json.dumps({"v": 1, "topic_seq": probe}).encode()])
    sub.lost = 0
    for seq in (1, 2, 5, 6, 1, 2):
        pub.send_multipart([b"alerts.critical.a.m.", json.dumps({"v": 1, "topic_seq": seq}).encode()])
    got = []
    while len(got) < 6:
        m = sub.recv(timeout_ms=2000)
        if m is None:
            fail(f"only {len(got)} of 6 numbered messages received")
        if m.topic == b"alerts.critical.a.m.":
            got.append(m.lost_before)
    if got != [0, 0, 2, 0, 0, 0] or sub.lost != 2:
        fail(f"lost_before {got}, lost {sub.lost}: expected [0, 0, 2, 0, 0, 0] and 2")
    # Messages published while unsubscribed are not counted as lost.
    sub.unsubscribe(b"alerts.")
    time.sleep(0.2)
    pub.send_multipart([b"alerts.critical.a.m.", json.dumps({"v": 1, "topic_seq": 3}).encode()])
    sub.subscribe(b"alerts.")
    seq = 3
    while True:  # the subscription reaches the PUB socket again after a while
        seq += 1
        if seq > 100:
            fail("resubscribed, nothing received")
        pub.send_multipart([b"alerts.critical.a.m.", json.dumps({"v": 1, "topic_seq": seq}).encode()])
        m = sub.recv(timeout_ms=50)
        if m is not None:
            break
    if m.lost_before != 0 or sub.lost != 2:
        fail(f"after resubscribing: lost_before {m.lost_before}, lost {sub.lost}")
    sub.close()
    pub.close()
    context.term()


if __name__ == "__main__":
    main()
    check_lost_messages()
