#!/usr/bin/python3
"""Publishes known events through the Python AckedPublisher (for acked_python_test.cc).

Usage: publish_acked.py ENDPOINT PUBLISHER_ID MODE COUNT [--expect-first-seq N]

Every event is a successful request of instance "node-a", model "m1", time now, ttft_ms 1..COUNT,
sent in messages of 7 events. MODE:
  publish      connect (hello), publish COUNT events, wait until all are acknowledged.
  lose-first   the same, but the first message is not sent the first time (as if the network lost
               it): the engine holds the later ones back as out of order, and the publisher's
               resend timer sends everything again in order.
  lose-second  the same with the second message lost.
  resend-acked connect, then ignore the hello's "next" and publish COUNT events from seq 0: every
               message repeats an acknowledged sequence number (COUNT must fit in the messages
               acknowledged so far), so the engine must drop them all and answer with its ack.
Prints one JSON line (hello_next, first_seq, next_seq, acked_seq, resends) and exits 0 when every
message was acknowledged (and, with --expect-first-seq, the first message had that seq).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from inferscope_client import AckedPublisher  # noqa: E402

BATCH = 7


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("publisher_id")
    parser.add_argument("mode", choices=["publish", "lose-first", "lose-second", "resend-acked"])
    parser.add_argument("count", type=int)
    parser.add_argument("--expect-first-seq", type=int)
    args = parser.parse_args()

    resend_ms = 1500 if args.mode.startswith("lose-") else 3000
    pub = AckedPublisher(args.endpoint, args.publisher_id, batch_size=BATCH, max_unacked=16,
                         block_timeout_ms=30000, resend_timeout_ms=resend_ms)
    pub.connect()
    if not pub.hello_answered:
        print("no answer to the hello", file=sys.stderr)
        return 2
    hello_next = pub.hello_next
    hello_ack = pub.acked_seq
    if args.mode == "resend-acked":
        if hello_ack is None or (args.count + BATCH - 1) // BATCH > hello_ack + 1:
            print(f"resend-acked: {args.count} events do not fit in acked seqs 0..{hello_ack}",
                  file=sys.stderr)
            return 2
        pub.next_seq = 0  # as if the publisher had lost its state and ignored the hello
    if args.mode.startswith("lose-"):
        real_send = pub._send
        lose_seq = pub.next_seq + (0 if args.mode == "lose-first" else 1)
        lost = []

        def lossy_send(message):
            if message[0] == lose_seq and not lost:
                lost.append(message[0])
                return
            real_send(message)
        pub._send = lossy_send
    first_seq = pub.next_seq
    for i in range(args.count):
        if not pub.request("node-a", "m1", e2e_ms=100.0 + i, ttft_ms=float(i + 1)):
            print(f"back-pressure: {pub.last_error}", file=sys.stderr)
            return 1
    ok = pub.wait_acked(60.0)
    result = {"hello_next": hello_next, "hello_ack": hello_ack, "first_seq": first_seq,
              "next_seq": pub.next_seq, "acked_seq": pub.acked_seq, "resends": pub.resends,
              "unacked": pub.unacked, "error": pub.last_error}
    print(json.dumps(result))
    pub.close()
    if not ok:
        return 1
    if args.expect_first_seq is not None and first_seq != args.expect_first_seq:
        print(f"first seq {first_seq}, expected {args.expect_first_seq}", file=sys.stderr)
        return 1
    if args.mode == "resend-acked" and pub.acked_seq != hello_ack:
        print(f"ack moved from {hello_ack} to {pub.acked_seq}", file=sys.stderr)
        return 1
    if args.mode.startswith("lose-") and pub.resends == 0:
        print("nothing was resent", file=sys.stderr)
        return 1
    if args.mode != "resend-acked" and pub.acked_seq != pub.next_seq - 1:
        print(f"acked {pub.acked_seq}, last sent {pub.next_seq - 1}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
