#!/usr/bin/python3
"""Publishes known events through the Python AckedPublisher (for acked_python_test.cc).

Usage: publish_acked.py ENDPOINT PUBLISHER_ID MODE COUNT [options]

Event i (0-based) is a successful request of instance "node-a", model "m1", time now, ttft_ms i+1,
sent in messages of 7 events. MODE:
  publish      connect (hello), publish COUNT events, wait until all are acknowledged.
  lose-first   the same, but the first message is not sent the first time (as if the network lost
               it): the engine holds the later ones back as out of order, and the publisher's
               resend timer sends everything again in order.
  lose-second  the same with the second message lost.
  resend-acked connect with --spool (restoring the incarnation of an earlier run that published
               with that spool and saw everything acknowledged), then publish COUNT events from
               seq 0 again: every message repeats an acknowledged sequence number of that
               incarnation, so the engine must drop them all and answer with its ack.
  spool        publish events next_seq*7 .. COUNT-1 with --spool, where next_seq is what the spool
               restored (0 at first): a process killed with SIGKILL and started again with the same
               arguments resends its unacknowledged messages and continues with the events after
               the last message it had written, so the engine receives every event exactly once.
Options:
  --expect-first-seq N  exit 1 unless the first message had seq N
  --spool PATH          the AckedPublisher's spool file
  --sent-file PATH      written once every message is flushed (before waiting for acks)
  --progress PATH       rewritten with next_seq after every message
  --delay-ms N          sleep N ms after each message (so that a kill lands mid-stream)
  --wait-s N            how long to wait for the acknowledgements (default 60)
Prints one JSON line (incarnation, hello_next, hello_ack, hello_latest, first_seq, next_seq,
acked_seq, resends, restored) and exits 0 when every message was acknowledged.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from inferscope_client import AckedPublisher  # noqa: E402

BATCH = 7


def write_file(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("publisher_id")
    parser.add_argument("mode", choices=["publish", "lose-first", "lose-second", "resend-acked",
                                         "spool"])
    parser.add_argument("count", type=int)
    parser.add_argument("--expect-first-seq", type=int)
    parser.add_argument("--spool")
    parser.add_argument("--sent-file")
    parser.add_argument("--progress")
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--wait-s", type=float, default=60.0)
    args = parser.parse_args()

    resend_ms = 1500 if args.mode.startswith("lose-") else 3000
    pub = AckedPublisher(args.endpoint, args.publisher_id, batch_size=BATCH, max_unacked=16,
                         block_timeout_ms=int(args.wait_s * 1000), resend_timeout_ms=resend_ms,
                         spool_path=args.spool)
    pub.connect()
    if not pub.hello_answered and not args.sent_file:
        print("no answer to the hello", file=sys.stderr)
        return 2
    hello_next = pub.hello_next
    hello_ack = pub.acked_seq
    hello_latest = getattr(pub, "hello_latest", None)
    start = 0
    if args.mode == "resend-acked":
        if hello_ack is None or (args.count + BATCH - 1) // BATCH > hello_ack + 1:
            print(f"resend-acked: {args.count} events do not fit in acked seqs 0..{hello_ack}",
                  file=sys.stderr)
            return 2
        pub.next_seq = 0  # as if the process had lost track of its position in the incarnation
    if args.mode == "spool":
        start = pub.next_seq * BATCH
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
    for i in range(start, args.count):
        if not pub.request("node-a", "m1", e2e_ms=100.0 + i, ttft_ms=float(i + 1)):
            print(f"back-pressure: {pub.last_error}", file=sys.stderr)
            return 1
        if (i + 1) % BATCH == 0:
            if args.progress:
                write_file(args.progress, str(pub.next_seq))
            if args.delay_ms:
                time.sleep(args.delay_ms / 1000.0)
                pub.poll(0)
    if not pub.flush():
        print(f"back-pressure: {pub.last_error}", file=sys.stderr)
        return 1
    if args.sent_file:
        write_file(args.sent_file, str(pub.next_seq))
    ok = pub.wait_acked(args.wait_s)
    result = {"incarnation": pub.incarnation, "hello_next": hello_next, "hello_ack": hello_ack,
              "hello_latest": hello_latest, "first_seq": first_seq, "next_seq": pub.next_seq,
              "acked_seq": pub.acked_seq, "resends": pub.resends, "unacked": pub.unacked,
              "restored": pub.restored_from_spool, "rejected": pub.rejected_messages,
              "error": pub.last_error}
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
