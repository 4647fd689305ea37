#!/usr/bin/python3
"""Publishes the seeded events of jetstream_python_test.cc through the Python JetStreamPublisher.

Usage: publish_jetstream.py URL STREAM SUBJECT_PREFIX PARTITIONS MESSAGES T0_MS [PAUSE_AT DIR]

Event n (0 <= n < MESSAGES * 50) is defined by formulas that the C++ test repeats (SeededEvent):
instance node-<n % 8>, model "llama" when n % 3 == 0 else "qwen", time T0_MS + n * 7; every fifth
event a kv_cache_usage gauge, the others request outcomes with e2e, ttft, output tokens and, every
37th, error "timeout". Published in messages of 20 events per partition, publisher id "seeded".
With PAUSE_AT and DIR: after event PAUSE_AT * 50 the publisher flushes, creates DIR/paused and
waits for DIR/go (the test stops the server meanwhile, and restarts it a moment after creating
DIR/go), so that the next messages are published into a stopped server and must be resent.
Prints one JSON line (messages, events, failed, resent) and exits 0 when every message was stored.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from inferscope.jetstream import JetStreamPublisher  # noqa: E402

EVENTS_PER_MESSAGE = 50


def main():
    url, stream, prefix, partitions, messages, t0 = sys.argv[1:7]
    partitions, messages, t0 = int(partitions), int(messages), int(t0)
    pause_at = int(sys.argv[7]) * EVENTS_PER_MESSAGE if len(sys.argv) > 8 else -1
    pub = JetStreamPublisher(url, stream, "seeded", partitions=partitions, subject_prefix=prefix,
                             batch_size=20, ack_timeout_ms=1000)
    pub.connect()
    ok = True
    for n in range(messages * EVENTS_PER_MESSAGE):
        if n == pause_at:
            ok = pub.flush() and ok
            open(os.path.join(sys.argv[8], "paused"), "w").close()
            while not os.path.exists(os.path.join(sys.argv[8], "go")):
                time.sleep(0.01)
        instance = f"node-{n % 8}"
        model = "llama" if n % 3 == 0 else "qwen"
        t = t0 + n * 7
        if n % 5 == 0:
            ok = pub.gauge(instance, model, "kv_cache_usage", (n % 97) / 97.0, time_ms=t) and ok
            continue
        ok = pub.request(instance, model, e2e_ms=float(200 + (n * 37) % 3800),
                         ttft_ms=float(20 + (n * 13) % 380), output_tokens=(n * 7) % 500,
                         error="timeout" if n % 37 == 0 else None, time_ms=t) and ok
    ok = pub.flush() and ok
    print(json.dumps({"messages": pub.messages_published, "events": pub.events_published,
                      "failed": pub.failed_messages, "resent": pub.resent_messages,
                      "reconnects": pub.reconnects, "error": pub.last_error}))
    pub.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
