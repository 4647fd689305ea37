#!/usr/bin/env python3
"""Validates recorded API responses against the OpenAPI 3.1 document.

The servers started by the API tests record every response (query/response_log.h) as JSON lines
{"method", "route", "path", "status", "content_type", "body"} in --records. Each is matched to the
document's operation (by the route's path template, or by the path when no route matched), its
status must be listed in that operation's responses, its content type must be the documented one,
and a JSON body must validate against the documented schema (JSON Schema 2020-12, python3-jsonschema
from Debian). A response whose operation or status the document lacks fails the test, so the
document cannot drift from the code. A response identical to one already checked (same operation,
status, content type and body) is counted and not checked again. Usage:

  validate_openapi.py --document docs/openapi.json --records build/api-records
"""

import argparse
import collections
import glob
import hashlib
import json
import os
import re
import sys

import jsonschema

METHODS = ("get", "post", "put", "delete", "patch")


def compile_paths(doc):
    """[(regex, template)] of the document's path templates, literal templates first."""
    out = []
    for template in doc["paths"]:
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        out.append((re.compile(pattern), template))
    out.sort(key=lambda p: p[1].count("{"))
    return out


class Validators:
    """One compiled validator per (template, method, status), built on first use."""

    def __init__(self, doc):
        self.doc = doc
        self.cache = {}

    def schema_for(self, template, method, status):
        """(content map, None) or (None, problem)."""
        op = self.doc["paths"].get(template, {}).get(method.lower())
        if op is None:
            return None, "operation %s %s is not in the document" % (method, template)
        responses = op.get("responses", {})
        response = responses.get(str(status))
        if response is None:
            return None, "status %d of %s %s is not in the document (documented: %s)" % (
                status, method, template, ", ".join(sorted(responses)))
        while "$ref" in response:
            response = self.resolve(response["$ref"])
        return response.get("content", {}), None

    def resolve(self, ref):
        node = self.doc
        for part in ref.lstrip("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def validator(self, key, schema):
        if key not in self.cache:
            # The schema's $refs ("#/components/schemas/...") resolve against the wrapper's root,
            # which carries the document's components; no resolver API needed (works with
            # jsonschema 4.10 of Debian 12 and later).
            wrapper = dict(schema)
            wrapper["components"] = self.doc.get("components", {})
            wrapper.setdefault("$schema", "https://json-schema.org/draft/2020-12/schema")
            jsonschema.Draft202012Validator.check_schema(wrapper)
            self.cache[key] = jsonschema.Draft202012Validator(wrapper)
        return self.cache[key]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--document", required=True)
    parser.add_argument("--records", required=True)
    parser.add_argument("--max-examples", type=int, default=3)
    args = parser.parse_args()

    with open(args.document, encoding="utf-8") as f:
        text = f.read()
    doc = json.loads(text)
    problems = []
    if not doc.get("openapi", "").startswith("3.1"):
        problems.append("the document is not OpenAPI 3.1")
    paths = compile_paths(doc)
    validators = Validators(doc)
    error_schema = {"$ref": "#/components/schemas/Error"}

    files = sorted(glob.glob(os.path.join(args.records, "*.jsonl")))
    failures = collections.OrderedDict()  # (method, template, status, problem) -> [examples]
    seen = collections.Counter()  # (template, method, status)
    total = 0
    dropped = 0
    # A response identical to one checked before (same operation, status, content type and body:
    # a test polling until something changes records the same answer many times) is counted, not
    # checked again: the resolved template of each distinct one (None: no route).
    checked = {}
    duplicates = 0
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line_no, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    # A process killed in the middle of a write leaves a cut last line.
                    continue
                if "dropped" in rec:
                    dropped += rec["dropped"]
                    continue
                total += 1
                method, status = rec["method"], rec["status"]
                template = rec.get("route")
                digest = hashlib.blake2b(rec.get("body", "").encode("utf-8", "replace"),
                                         digest_size=16).digest()
                key = (method, template, rec["path"] if template is None else "", status,
                       rec.get("content_type"), digest)
                if key in checked:
                    duplicates += 1
                    if checked[key] is not None:
                        seen[(checked[key], method, status)] += 1
                    continue
                where = "%s:%d %s %s" % (os.path.basename(path), line_no, method, rec["path"])

                def fail(problem, template=template):
                    key = (method, template or rec["path"], status, problem)
                    failures.setdefault(key, []).append(where)

                if template is None:
                    # No route matched (404, or httplib's own 400s): the one error shape.
                    for regex, t in paths:
                        if regex.match(rec["path"]) and method.lower() in doc["paths"][t]:
                            template = t
                            break
                    checked[key] = template
                    if template is None:
                        if status < 400:
                            fail("a success without a route")
                        body = parse_json(rec, fail)
                        if body is not None:
                            check(validators.validator(("error",), error_schema), body, fail)
                        continue
                checked[key] = template
                seen[(template, method, status)] += 1
                # The HTTP layer's own behaviour on every GET, stated in the document's
                # description: HEAD answers as GET does (the body is not sent; the record holds
                # the handler's). Range headers are ignored, so 206 and 416 never appear.
                checked_method = "GET" if method == "HEAD" else method
                if status in (206, 416):
                    fail("a Range answer (%d), but the API ignores Range" % status)
                    continue
                content, problem = validators.schema_for(template, checked_method, status)
                if problem:
                    fail(problem)
                    continue
                ctype = (rec.get("content_type") or "").split(";")[0].strip()
                media = content.get(ctype)
                if media is None:
                    fail("content type '%s' not documented (documented: %s)" % (
                        ctype, ", ".join(sorted(content)) or "none"))
                    continue
                if ctype != "application/json" or "schema" not in media:
                    continue
                body = parse_json(rec, fail)
                if body is not None:
                    check(validators.validator((template, method, status), media["schema"]),
                          body, fail)

    if total == 0:
        problems.append("no recorded responses in %s (did the API tests run with "
                        "INFERSCOPE_API_RECORD_DIR set?)" % args.records)
    print("validated %d responses from %d files against %s (%d identical to an earlier one, "
          "checked once; %d not recorded: the per-process cap)"
          % (total, len(files), args.document, duplicates, dropped))
    documented = [(t, m.upper()) for t, item in doc["paths"].items() for m in item if m in METHODS]
    exercised = {(t, m) for (t, m, _s) in seen}
    untested = [op for op in documented if op not in exercised]
    print("%d of %d documented operations answered in the tests" % (
        len(documented) - len(untested), len(documented)))
    for t, m in untested:
        print("  no response recorded for %s %s" % (m, t))
    by_op = collections.defaultdict(list)
    for (t, m, s), n in sorted(seen.items()):
        by_op[(m, t)].append("%d x%d" % (s, n))
    for (m, t), statuses in sorted(by_op.items(), key=lambda kv: kv[0][1]):
        print("  %-7s %-40s %s" % (m, t, ", ".join(statuses)))

    for (method, template, status, problem), where in failures.items():
        problems.append("%s %s -> %d: %s\n    %d response(s), e.g. %s" % (
            method, template, status, problem, len(where), "; ".join(where[:args.max_examples])))
    for p in problems:
        print("FAIL: " + p)
    return 1 if problems else 0


def parse_json(rec, fail):
    try:
        return json.loads(rec["body"])
    except ValueError as e:
        fail("body is not JSON: %s" % e)
        return None


def check(validator, body, fail):
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    for e in errors[:3]:
        at = "/".join(str(p) for p in e.absolute_path) or "(root)"
        # The message names the value; keep it short so one problem groups many responses.
        fail("at %s: %s" % (at, truncate(e.message)))


def truncate(text, n=160):
    return text if len(text) <= n else text[:n] + "..."


if __name__ == "__main__":
    sys.exit(main())
