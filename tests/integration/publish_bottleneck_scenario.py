#!/usr/bin/python3
"""Publishes a memory-pressure scenario through the Python client (for bottlenecks_test.cc).

Usage: publish_bottleneck_scenario.py ENDPOINT START_MS PANES

Three instances of model "m" (vllm-0, vllm-1, vllm-2), PANES 10 s panes from START_MS: per second
each instance reports 3 requests (ttft 150 ms, tpot 20 ms, e2e 1500 ms) and one sample of every
gauge of the metric contract. vllm-1's KV cache is full (0.97) and preempts 3 requests per second;
the others are healthy (0.4, no preemption).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from inferscope_client import Publisher  # noqa: E402


def main():
    endpoint, start, panes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with Publisher(endpoint, "bottleneck-test", batch_size=64) as pub:
        for second in range(panes * 10):
            t = start + second * 1000
            for instance in ("vllm-0", "vllm-1", "vllm-2"):
                full = instance == "vllm-1"
                for r in range(3):
                    pub.request(instance, "m", e2e_ms=1500.0 + r, ttft_ms=150.0 + r, tpot_ms=20.0,
                                prompt_tokens=1000, output_tokens=70, cached_tokens=500,
                                time_ms=t + 100 * r)
                gauges = {
                    "num_requests_running": 8.0,
                    "num_requests_waiting": 0.0,
                    "kv_cache_usage": 0.97 if full else 0.4,
                    "num_preemptions": 3.0 if full else 0.0,
                    "prefix_cache_hit_rate": 0.5,
                    "generation_tokens_per_s": 320.0,
                    "prompt_tokens_per_s": 3000.0,
                    "max_num_seqs": 64.0,
                    "kv_cache_capacity_tokens": 100000.0,
                }
                for name, value in gauges.items():
                    pub.gauge(instance, "m", name, value, time_ms=t + 500)
        pub.flush()


if __name__ == "__main__":
    main()
