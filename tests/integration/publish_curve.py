#!/usr/bin/python3
"""Publishes COUNT requests through the Python client with CurveZMQ keys (for curve_test.cc).

Usage: publish_curve.py ENDPOINT PUBLISHER_ID SECRET_KEY_FILE SERVER_PUBLIC_KEY_FILE COUNT [acked]

A refused key cannot complete the handshake, so sends time out (after 1 s) and are dropped; the
script then exits 0 all the same: the engine's metrics are what the test checks. With "acked" it
publishes through AckedPublisher (a `mode: router` source) and exits 0 only once every message is
acknowledged (1 when not within 20 s).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from inferscope_client import AckedPublisher, CurveKeys, Publisher  # noqa: E402


def main():
    endpoint, publisher_id, secret_file, server_file, count = sys.argv[1:6]
    keys = CurveKeys.from_files(secret_file, server_file)
    if len(sys.argv) > 6 and sys.argv[6] == "acked":
        pub = AckedPublisher(endpoint, publisher_id, batch_size=16, curve=keys)
        pub.connect()
        for i in range(int(count)):
            pub.request("node-a", "m1", e2e_ms=10.0 + i)
        acked = pub.wait_acked(20.0)
        pub.close()
        sys.exit(0 if acked else 1)
    pub = Publisher(endpoint, publisher_id, batch_size=16, send_timeout_ms=1000, curve=keys)
    for i in range(int(count)):
        pub.request("node-a", "m1", e2e_ms=10.0 + i)
    pub.close(linger_ms=1000)


if __name__ == "__main__":
    main()
