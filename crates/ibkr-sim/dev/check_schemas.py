#!/usr/bin/env python3
"""Check recorded simulator answers against the repaired OpenAPI document's 2xx schemas.

Usage:
  IBKR_SIM_DUMP=/tmp/dump.jsonl cargo test -p ibkr-sim --test examples
  python3 crates/ibkr-sim/dev/check_schemas.py /tmp/ibkr-repaired-2.20.0.json /tmp/dump.jsonl

Each dump line is {operation_id, method, path, status, body}. The body is validated with
OpenAPI 3.0 semantics (openapi-schema-validator's OAS30Validator, formats checked) against the
schema of the operation's answered status (or its first 2xx response). Exits non-zero on any
failure. The document itself is IBKR's and is never committed.
"""
import json
import sys

from openapi_schema_validator import OAS30Validator, oas30_format_checker


def resolve(node, root, seen=()):
    if isinstance(node, dict):
        if "$ref" in node:
            ref = node["$ref"]
            if ref in seen:
                return {}
            target = root
            for part in ref.lstrip("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            return resolve(target, root, seen + (ref,))
        return {k: resolve(v, root, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, root, seen) for v in node]
    return node


def main():
    spec = json.load(open(sys.argv[1]))
    ops = {}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if isinstance(op, dict) and "operationId" in op:
                ops[op["operationId"]] = op
    passed, failed, checked_ops = 0, 0, set()
    for line in open(sys.argv[2]):
        rec = json.loads(line)
        op = ops.get(rec["operation_id"])
        if op is None:
            print(f"SKIP {rec['operation_id']}: not in the document")
            continue
        responses = op.get("responses", {})
        resp = responses.get(str(rec["status"])) or next(
            (r for c, r in responses.items() if c.startswith("2")), None
        )
        resp = resolve(resp or {}, spec)
        schema = resp.get("content", {}).get("application/json", {}).get("schema")
        checked_ops.add(rec["operation_id"])
        if schema is None:
            print(f"NOSCHEMA {rec['operation_id']} {rec['method']} {rec['path']}")
            passed += 1
            continue
        errors = list(OAS30Validator(schema, format_checker=oas30_format_checker).iter_errors(rec["body"]))
        if errors:
            failed += 1
            print(f"FAIL {rec['operation_id']} {rec['method']} {rec['path']}")
            for e in errors[:5]:
                print(f"   at {list(e.absolute_path)}: {e.message[:300]}")
        else:
            passed += 1
    print(f"{passed} passed, {failed} failed ({len(checked_ops)} operations)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
