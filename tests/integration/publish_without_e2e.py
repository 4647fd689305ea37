#!/usr/bin/python3
"""Publishes requests with and without e2e through the Python client (for end_to_end_test.cc).

Usage: publish_without_e2e.py ENDPOINT PANE_START_MS

Into the pane [PANE_START_MS, PANE_START_MS + 10 s) of instance "node-b", model "m1":
  - 40 requests with e2e_ms 2000..2039 and ttft_ms 10..49;
  - 60 requests reported at first-token time: ttft_ms 100..159 and no e2e_ms (e2e_ms=None), of
    which the first 5 failed (error "timeout").
Then one request 13 s later (with e2e), which moves the watermark past the pane's end.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from inferscope_client import Publisher  # noqa: E402


def main():
    endpoint, start = sys.argv[1], int(sys.argv[2])
    with Publisher(endpoint, "no-e2e-test", batch_size=32) as pub:
        for i in range(40):
            pub.request("node-b", "m1", e2e_ms=2000.0 + i, ttft_ms=10.0 + i,
                        time_ms=start + 100 * i)
        for i in range(60):
            pub.request("node-b", "m1", ttft_ms=100.0 + i, error="timeout" if i < 5 else None,
                        time_ms=start + 50 + 100 * i)
        pub.flush()
        pub.request("node-b", "m1", e2e_ms=1.0, ttft_ms=1.0, time_ms=start + 13_000)
        pub.flush()


if __name__ == "__main__":
    main()
