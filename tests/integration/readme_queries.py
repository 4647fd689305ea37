#!/usr/bin/env python3
"""Runs the README's example GET queries against a running demo and checks that each returns data.

Called by scripts/demo.sh through DEMO_CHECK (tests/integration/demo_test.cc) once the table is
printed, while the engine (ENGINE_URL) and the query node (NODE_URL) still serve. Every
`curl '<url>'` / `curl <url>` line of README.md that GETs http://127.0.0.1:8080, localhost:8080
(the engine) or :8081 (the query node) is run with the host replaced by the demo's; a query fails
when it is not 200 JSON or holds no data (an empty list, windows without values, no requests).
"""

import json
import os
import re
import sys
import urllib.error
import urllib.request

CURL = re.compile(r"^\s*curl\s+(?:-s\s+)?'?(https?://(?:127\.0\.0\.1|localhost):(8080|8081)(/[^'\s]*))'?")


def has_data(path, body):
    route = path.split("?")[0]
    if route.endswith("/summary"):
        return any(w.get("count", 0) > 0 for w in body.get("windows", [])), "a window with values"
    if route == "/v1/series":
        return any(p.get("count", 0) > 0 for p in body.get("points", [])), "a point with values"
    if route == "/v1/performance/metrics":
        m = body.get("metrics", {})
        return m.get("requests", 0) > 0 and m.get("active_instances", 0) > 0, "requests"
    if route == "/v1/health":
        return body.get("status") == "ok", "status ok"
    lists = [v for v in body.values() if isinstance(v, list)]
    return bool(lists) and all(lists), "non-empty lists"


def main():
    readme = sys.argv[1]
    urls = {"8080": os.environ["ENGINE_URL"].rstrip("/"), "8081": os.environ["NODE_URL"].rstrip("/")}
    queries = []
    with open(readme, encoding="utf-8") as f:
        for line in f:
            m = CURL.match(line)
            if m and "-X" not in line and " -d" not in line and "$" not in m.group(1):
                queries.append((m.group(2), m.group(3)))
    if len(queries) < 4:
        print("FAIL: found only %d example queries in %s" % (len(queries), readme))
        return 1
    failed = 0
    for port, path in queries:
        url = urls[port] + path
        try:
            with urllib.request.urlopen(url, timeout=10) as res:
                status, text = res.status, res.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        ok, what = False, "200 JSON"
        if status == 200:
            try:
                ok, what = has_data(path, json.loads(text))
            except ValueError:
                ok = False
        print("%s  %s -> %d (%s)" % ("ok  " if ok else "FAIL", url, status, what))
        if not ok:
            print("      " + text[:400])
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
