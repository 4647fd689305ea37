#!/usr/bin/env python3
"""Compares two outputs of bench/detector_verdicts point by point.

    compare_verdicts.py BEFORE AFTER [--score-tol 1e-6]

Counts points whose warm-up flag, severity or type differ, and points whose score differs by more
than the tolerance (absolute), and prints the first few differences. Exit status 1 when any
verdict (warm-up flag, severity, type) differs."""
import argparse
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--score-tol", type=float, default=1e-6)
    p.add_argument("--show", type=int, default=10)
    a = p.parse_args()
    points = verdict_diff = score_diff = 0
    max_score = 0.0
    series = ""
    shown = 0
    # Per suite: [judged points, at >= warning before, after, score >= 0.95 before, after].
    suites = {}
    with open(a.before) as fb, open(a.after) as fa:
        for lb, la in zip(fb, fa):
            if lb.startswith("S "):
                if lb != la:
                    sys.exit(f"series differ: {lb.strip()} / {la.strip()}")
                series = lb[2:].strip()
                suite = suites.setdefault(series.split()[0], [0, 0, 0, 0, 0])
                continue
            points += 1
            b, f = lb.split(), la.split()
            if b[1] == "0":
                suite[0] += 1
                suite[1] += int(b[2]) >= 2  # Severity::kWarning
                suite[2] += int(f[2]) >= 2
                suite[3] += float(b[4]) >= 0.95
                suite[4] += float(f[4]) >= 0.95
            if b[:4] != f[:4]:
                verdict_diff += 1
                if shown < a.show:
                    print(f"verdict {series} point {b[0]}: {lb.strip()} | {la.strip()}")
                    shown += 1
            d = abs(float(b[4]) - float(f[4]))
            max_score = max(max_score, d)
            if d > a.score_tol:
                score_diff += 1
        if fb.readline() or fa.readline():
            sys.exit("outputs differ in length")
    print(f"{points} points; verdicts (warm-up, severity, type) differing: {verdict_diff}; "
          f"scores differing by > {a.score_tol:g}: {score_diff}; largest score difference "
          f"{max_score:.3g}")
    print("| suite | judged points | >= warning before | after | score >= 0.95 before | after |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, c in suites.items():
        print(f"| {name} | {c[0]} | {c[1]} | {c[2]} | {c[3]} | {c[4]} |")
    return 1 if verdict_diff else 0


if __name__ == "__main__":
    sys.exit(main())
