"""Summarise the outputs of the three validators run by scripts/validate-spec.

Usage: python report.py --label NAME --spec FILE --dir OUTDIR [--locations N] [--summary-json FILE]

OUTDIR holds osv.json (written by osv.py), redocly.json (`redocly lint --format json`),
spectral.json (`spectral lint -f json`) and the *.err stderr logs of each tool.
Prints a compact report and exits 1 if any validator reported an error (or crashed), else 0.
"""

import argparse
import json
import os
from collections import Counter, OrderedDict

WIDTH = 160
SPECTRAL_SEVERITY = {0: "error", 1: "warn", 2: "info", 3: "hint"}


def pointer(parts):
    return "#/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def clip(text, width=WIDTH):
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def stderr_tail(outdir, name, lines=5):
    path = os.path.join(outdir, name + ".err")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            content = [ln.rstrip() for ln in f if ln.strip() and "═" not in ln and "║" not in ln]
    except OSError:
        return ""
    return " | ".join(content[-lines:])


def crashed(tool, outdir, name, why):
    tail = stderr_tail(outdir, name)
    return {
        "tool": tool,
        "version": "?",
        "problems": [
            {
                "severity": "error",
                "rule": "validator-crashed",
                "location": "",
                "message": f"{why}; stderr: {tail}" if tail else why,
            }
        ],
        "totals": None,
    }


def load(outdir, name):
    path = os.path.join(outdir, name + ".json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_osv(outdir, versions):
    try:
        data = load(outdir, "osv")
    except (OSError, ValueError) as exc:
        return crashed("openapi-spec-validator", outdir, "osv", f"no usable output ({exc})")
    data["totals"] = None
    data["label"] = f"openapi-spec-validator {data.get('version', '?')}"
    return data


def read_redocly(outdir, versions):
    try:
        data = load(outdir, "redocly")
        raw = data["problems"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        out = crashed("redocly", outdir, "redocly", f"no usable output ({exc})")
        out["label"] = f"redocly {versions.get('redocly', '?')} lint (recommended)"
        return out
    problems = []
    for p in raw:
        loc = (p.get("location") or [{}])[0]
        problems.append(
            {
                "severity": "error" if p.get("severity") == "error" else "warn",
                "rule": p.get("ruleId", "?"),
                "location": loc.get("pointer", ""),
                "message": p.get("message", ""),
            }
        )
    return {
        "tool": "redocly",
        "label": f"redocly {versions.get('redocly', '?')} lint (recommended)",
        "problems": problems,
        "totals": data.get("totals"),
    }


def read_spectral(outdir, versions):
    try:
        raw = load(outdir, "spectral")
        if not isinstance(raw, list):
            raise ValueError("not a list")
    except (OSError, ValueError) as exc:
        out = crashed("spectral", outdir, "spectral", f"no usable output ({exc})")
        out["label"] = f"spectral {versions.get('spectral', '?')} lint (spectral:oas)"
        return out
    problems = [
        {
            # a document Spectral does not recognise as OpenAPI gets no OpenAPI rule at all:
            # that must not pass as "0 errors"
            "severity": "error" if p.get("code") == "unrecognized-format"
            else SPECTRAL_SEVERITY.get(p.get("severity"), "warn"),
            "rule": p.get("code", "?"),
            "location": pointer(p.get("path") or []),
            "message": p.get("message", ""),
        }
        for p in raw
    ]
    return {
        "tool": "spectral",
        "label": f"spectral {versions.get('spectral', '?')} lint (spectral:oas)",
        "problems": problems,
        "totals": None,
    }


def summarise(result, n_locations):
    problems = result["problems"]
    by_sev = Counter(p["severity"] for p in problems)
    errors, warnings = by_sev.get("error", 0), by_sev.get("warn", 0)
    totals = result.get("totals")
    if totals:  # redocly's own totals (identical to the per-problem counts with --max-problems)
        errors, warnings = totals.get("errors", errors), totals.get("warnings", warnings)
    others = by_sev.get("info", 0) + by_sev.get("hint", 0)
    head = f"[{result['label']}] {errors} errors, {warnings} warnings"
    if others:
        head += f", {others} info/hints"
    lines = [head]
    for sev in ("error", "warn", "info", "hint"):
        rules = Counter(p["rule"] for p in problems if p["severity"] == sev)
        for rule, count in sorted(rules.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {sev:<5} {count:>4}  {rule}")
            if sev != "error":
                continue
            shown = [p for p in problems if p["severity"] == sev and p["rule"] == rule]
            for p in shown[:n_locations]:
                where = p["location"]
                text = f"{where}  {p['message']}" if where else p["message"]
                lines.append("               - " + clip(text, WIDTH - 17))
            if len(shown) > n_locations:
                lines.append(f"               … {len(shown) - n_locations} more")
    return errors, warnings, lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--locations", type=int, default=3)
    ap.add_argument("--summary-json")
    ap.add_argument("--version", action="append", default=[], help="tool=version")
    args = ap.parse_args()
    versions = dict(v.split("=", 1) for v in args.version)

    results = [
        read_osv(args.dir, versions),
        read_redocly(args.dir, versions),
        read_spectral(args.dir, versions),
    ]
    print(f"== validate-spec: {args.label} ({args.spec})")
    summary = OrderedDict()
    for result in results:
        errors, warnings, lines = summarise(result, args.locations)
        summary[result["tool"]] = {"errors": errors, "warnings": warnings}
        print("\n".join(lines))
    failed = [tool for tool, s in summary.items() if s["errors"]]
    counts = " | ".join(f"{tool} {s['errors']}E/{s['warnings']}W" for tool, s in summary.items())
    verdict = "FAIL" if failed else "OK"
    print(f"== {args.label}: {counts} => {verdict}")
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as f:
            json.dump({"label": args.label, "spec": args.spec, "validators": summary,
                       "ok": not failed}, f, indent=2)
            f.write("\n")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
