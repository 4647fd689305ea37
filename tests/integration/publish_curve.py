#!/usr/bin/python3
"""Publishes COUNT requests through the Python client with CurveZMQ keys (for curve_test.cc).

Usage: publish_curve.py ENDPOINT PUBLISHER_ID SECRET_KEY_FILE SERVER_PUBLIC_KEY_FILE COUNT

A refused key cannot complete the handshake, so sends time out (after 1 s) and are dropped; the
script then exits 0 all the same: the engine's metrics are what the test checks.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from inferscope_client import CurveKeys, Publisher  # noqa: E402


def main():
    endpoint, publisher_id, secret_file, server_file, count = sys.argv[1:6]
    keys = CurveKeys.from_files(secret_file, server_file)
    pub = Publisher(endpoint, publisher_id, batch_size=16, send_timeout_ms=1000, curve=keys)
    for i in range(int(count)):
        pub.request("node-a", "m1", e2e_ms=10.0 + i)
    pub.close(linger_ms=1000)


if __name__ == "__main__":
    main()
