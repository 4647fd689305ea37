#!/usr/bin/python3
"""Publishes a few hundred synthetic request outcomes and gauges to an inferscope zmq source.

    /usr/bin/python3 clients/python/example.py --endpoint tcp://127.0.0.1:5555 --requests 300
"""

import argparse
import random

from inferscope import Publisher


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5555")
    parser.add_argument("--publisher", default="example-gateway")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--socket", choices=["push", "pub"], default="push")
    args = parser.parse_args()

    rng = random.Random(7)
    instances = ["vllm-0", "vllm-1", "tgi-0"]
    with Publisher(args.endpoint, args.publisher, batch_size=args.batch_size,
                   socket=args.socket) as pub:
        for n in range(args.requests):
            instance = instances[n % len(instances)]
            ttft = rng.uniform(40, 400)
            output_tokens = rng.randint(20, 800)
            tpot = rng.uniform(8, 40)
            error = "timeout" if rng.random() < 0.02 else None
            pub.request(instance, "llama-3-70b", e2e_ms=ttft + tpot * output_tokens, ttft_ms=ttft,
                        tpot_ms=tpot, prompt_tokens=rng.randint(50, 4000),
                        output_tokens=output_tokens, cached_tokens=rng.randint(0, 50),
                        error=error, cost_usd=output_tokens * 2e-6, quality=rng.uniform(0.6, 1.0))
            if n % 10 == 0:
                pub.gauge(instance, "llama-3-70b", "kv_cache_usage", rng.uniform(0.2, 0.95))
                pub.gauge(instance, "llama-3-70b", "num_requests_waiting", rng.randint(0, 30))
        pub.flush()
        print(f"sent {pub.events_sent} events in {pub.messages_sent} messages "
              f"(last seq {pub.seq - 1}) to {args.endpoint}")


if __name__ == "__main__":
    main()
