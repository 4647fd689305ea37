#!/usr/bin/python3
"""`inferscope detect` shows its progress line when stderr is a terminal (a pty here) and stays
quiet when stderr is a pipe; both runs end with the same summary line.

Usage: progress_pty_test.py INFERSCOPE_BINARY
"""

import os
import pty
import subprocess
import sys
import tempfile


def main():
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="inferscope-pty.") as work:
        csv = os.path.join(work, "series.csv")
        with open(csv, "w") as f:
            f.write("timestamp,value\n")
            for i in range(200000):
                f.write(f"{1700000000000 + i * 1000},{100 + (i % 17)}\n")
        args = [binary, "detect", "--input", csv, "--output", os.path.join(work, "out.csv")]

        # stderr at a terminal: the pty's other end collects what the command drew.
        leader, follower = pty.openpty()
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=follower)
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command closed its end
                break
            if not chunk:
                break
            drawn += chunk
        os.close(leader)
        if proc.wait(timeout=120) != 0:
            sys.exit(f"FAIL: detect at a terminal exited {proc.returncode}: {drawn!r}")
        text = drawn.decode("utf-8", "replace")
        if "% read" not in text or "\r" not in text:
            sys.exit(f"FAIL: no progress line at a terminal: {text[-500:]!r}")
        if "detect: 200000 points" not in text:
            sys.exit(f"FAIL: no summary at a terminal: {text[-500:]!r}")

        # stderr a pipe: the summary only.
        piped = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, timeout=120)
        if piped.returncode != 0:
            sys.exit(f"FAIL: detect in a pipe exited {piped.returncode}: {piped.stderr}")
        if "% read" in piped.stderr or "\r" in piped.stderr or "\x1b" in piped.stderr:
            sys.exit(f"FAIL: progress drawn into a pipe: {piped.stderr!r}")
        if not piped.stderr.startswith("detect: 200000 points"):
            sys.exit(f"FAIL: unexpected stderr in a pipe: {piped.stderr!r}")
        print(f"progress pty test: ok ({text.count('% read')} progress draws at a terminal, "
              "none in a pipe)")


if __name__ == "__main__":
    main()
