"""Run openapi-spec-validator (OpenAPI 3.0) on one JSON document and write ALL its errors as JSON.

Usage: python osv.py SPEC.json OUT.json

OUT.json: {"tool": "openapi-spec-validator", "version": ..., "problems": [
    {"severity": "error", "rule": ..., "location": ..., "message": ...}, ...]}
Every error that `iter_errors` yields is recorded (not only the first one).
"""

import json
import sys
from importlib.metadata import version


def pointer(parts):
    return "#/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def leaves(err):
    """The innermost sub-errors of a oneOf/anyOf error (the reasons no branch matched)."""
    subs = list(getattr(err, "context", None) or [])
    if not subs:
        return [err]
    out = []
    for sub in subs:
        out.extend(leaves(sub))
    return out


def short_message(err):
    """A one-line message without the repr of the whole failing object."""
    keyword = getattr(err, "validator", None)
    if keyword in ("oneOf", "anyOf") and getattr(err, "context", None):
        reasons = []
        for leaf in leaves(err):
            text = leaf.message
            if text == "'$ref' is a required property" or text in reasons:
                continue
            if text[:1] in "{[":  # "<instance repr> is not valid under ..." of a nested branch
                continue
            reasons.append(text)
        return f"matches no {keyword} branch: " + "; ".join(reasons[:3] or ["(no detail)"])
    return str(getattr(err, "message", err))


def describe(err):
    """(rule, location) for one error of openapi-spec-validator."""
    keyword = getattr(err, "validator", None)
    if isinstance(keyword, str):  # a JSON Schema error against the OpenAPI 3.0 meta-schema
        parts = list(getattr(err, "absolute_path", []) or [])
        # oneOf/anyOf errors point at the parent; the first sub-error usually names the culprit
        for sub in getattr(err, "context", None) or []:
            sub_parts = list(sub.absolute_path)
            if len(sub_parts) > len(parts):
                parts = sub_parts
                break
        return "schema:" + keyword, pointer(parts)
    # semantic checks (e.g. UnresolvableParameterError): the message names the place
    return type(err).__name__, ""


def main():
    spec_path, out_path = sys.argv[1], sys.argv[2]
    problems = []
    try:
        from openapi_spec_validator import OpenAPIV30SpecValidator

        with open(spec_path, encoding="utf-8") as f:
            spec = json.load(f)
        for err in OpenAPIV30SpecValidator(spec).iter_errors():
            rule, location = describe(err)
            message = short_message(err).replace("\n", " ")
            problems.append(
                {"severity": "error", "rule": rule, "location": location, "message": message}
            )
    except Exception as exc:  # a crash is a finding too: report it as an error
        problems.append(
            {
                "severity": "error",
                "rule": "validator-crashed",
                "location": "",
                "message": f"{type(exc).__name__}: {exc}",
            }
        )
    result = {
        "tool": "openapi-spec-validator",
        "version": version("openapi-spec-validator"),
        "problems": problems,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
