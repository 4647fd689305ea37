#!/usr/bin/python3
"""Prints the Python client's topic prefixes for names given in hex (for python_topics_test.cc).

Usage: topic_prefixes.py OUTPUT HEXNAME...
For each name (hex-encoded bytes), writes one line to OUTPUT: the hex of
summary_topic_prefix(name, name), a space, the hex of alert_topic_prefix("critical", name, name),
and "ok" when parse_topic() of both gives the name back. Exits 0.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from inferscope_client import alert_topic_prefix, parse_topic, summary_topic_prefix  # noqa: E402


def main():
    lines = []
    for hexname in sys.argv[2:]:
        name = bytes.fromhex(hexname)
        summary = summary_topic_prefix(name, name)
        alert = alert_topic_prefix("critical", name, name)
        text = name.decode("utf-8", "surrogateescape")
        ok = parse_topic(summary) == ["summaries", text, text] and \
            parse_topic(alert) == ["alerts", "critical", text, text]
        lines.append(f"{summary.hex()} {alert.hex()} {'ok' if ok else 'bad'}")
    with open(sys.argv[1], "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
