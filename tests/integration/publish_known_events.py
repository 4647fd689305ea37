#!/usr/bin/python3
"""Publishes a known set of events through the Python client (for end_to_end_test.cc).

Usage: publish_known_events.py ENDPOINT PANE_START_MS

Into the pane [PANE_START_MS, PANE_START_MS + 10 s) of instance "node-a", model "m1":
  - 100 successful requests with ttft_ms 1..100, tpot_ms 20, e2e_ms 1000 + ttft, 50 prompt tokens
    of which 25 cached, 10 output tokens;
  - 10 failed requests (error "timeout", e2e_ms 5000, no ttft);
  - gauge kv_cache_usage = 0.25, 0.5, 0.75 (last is 0.75).
Then one request 13 s later, which moves the watermark (max event time - 2 s) past the pane's end.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from inferscope_client import Publisher  # noqa: E402


def main():
    endpoint, start = sys.argv[1], int(sys.argv[2])
    with Publisher(endpoint, "e2e-test", batch_size=32) as pub:
        for i in range(100):
            pub.request("node-a", "m1", e2e_ms=1000.0 + i + 1, ttft_ms=float(i + 1), tpot_ms=20.0,
                        prompt_tokens=50, output_tokens=10, cached_tokens=25, time_ms=start + 50 * i)
        for i in range(10):
            pub.request("node-a", "m1", e2e_ms=5000.0, error="timeout", time_ms=start + 100 + i)
        for i, v in enumerate((0.25, 0.5, 0.75)):
            pub.gauge("node-a", "m1", "kv_cache_usage", v, time_ms=start + 1000 * (i + 1))
        pub.flush()
        pub.request("node-a", "m1", e2e_ms=1.0, ttft_ms=1.0, time_ms=start + 13_000)
        pub.flush()


if __name__ == "__main__":
    main()
