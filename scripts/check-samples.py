#!/usr/bin/env python3
"""Check recorded IBKR responses against the (patched) OpenAPI document.

Reads IBKR's document and the recorded samples from ../shared at run time (nothing of either is
kept in this repository), applies patches/NNNN-*.json in name order (RFC 6902, each file
atomically; a failing leading `test` op skips the file), and checks each selected sample's body
against its operation's first 2xx response schema with the rules of serde + typify-generated Rust
types, which are stricter than JSON Schema:

  integer  -> i64 (int32 -> i32, uint32 -> u32, minimum 0 -> u64, minimum 1 -> NonZeroU64);
              a JSON number with a fraction part or written `1.0` is not an integer
  number   -> f64 (integers accepted);  string -> strings only;  boolean -> booleans only
  format date-time -> RFC 3339; date -> YYYY-MM-DD; uuid -> UUID
  minLength / maxLength / pattern on strings are enforced (typify makes validating newtypes)
  null     -> only where `nullable: true`
  required properties must be present; unknown keys are kept (the build adds
  `additionalProperties: {}` to every object schema with properties, unless it says `false`)
  enum     -> value must be listed; oneOf/anyOf -> some branch matches; allOf -> all match
  additionalProperties: <schema> -> values of keys not in `properties` checked against it

It also warns (without failing) when a value fits more than one `oneOf` branch, or fits only a
branch that declares none of its keys: serde's untagged enum takes the first branch that fits,
and with open objects a catch-all branch can swallow a reply meant for another variant.

Selected samples: `source.captured == "likely-live"`, status 2xx, `source.note` not mentioning
FRAGMENT or TRUNCATED, and method + endpoint present in the document (path templates compared
with parameter names ignored).

Usage: scripts/check-samples.py [--spec PATH] [--patches DIR | --no-patches] [--samples DIR]
                                [--write-patched PATH] [-v] [--where] [--max-problems N]
Exit status 0 when every selected sample passes, 1 otherwise.
"""
import argparse
import copy
import datetime
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.path.normpath(os.path.join(REPO, "..", "shared"))

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


# ---------------------------------------------------------------- RFC 6902 (no dependencies)
class PatchTestFailed(Exception):
    pass


class PatchError(Exception):
    pass


def _unescape(tok):
    return tok.replace("~1", "/").replace("~0", "~")


def _split(ptr):
    if ptr == "":
        return []
    if not ptr.startswith("/"):
        raise PatchError("bad pointer %r" % ptr)
    return [_unescape(t) for t in ptr[1:].split("/")]


def _parent(doc, ptr):
    toks = _split(ptr)
    if not toks:
        raise PatchError("operation on the document root is not supported")
    cur = doc
    for t in toks[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise PatchError("missing %r in %s" % (t, ptr))
            cur = cur[t]
        elif isinstance(cur, list):
            try:
                cur = cur[int(t)]
            except (ValueError, IndexError):
                raise PatchError("bad index %r in %s" % (t, ptr))
        else:
            raise PatchError("cannot descend into scalar at %s" % ptr)
    return cur, toks[-1]


def _get(doc, ptr):
    cur = doc
    for t in _split(ptr):
        if isinstance(cur, dict):
            if t not in cur:
                raise KeyError(ptr)
            cur = cur[t]
        elif isinstance(cur, list):
            try:
                i = int(t)
            except ValueError:
                raise KeyError(ptr)
            if not 0 <= i < len(cur):
                raise KeyError(ptr)
            cur = cur[i]
        else:
            raise KeyError(ptr)
    return cur


def _json_equal(a, b):
    # JSON equality: 1 == 1.0 is fine but True != 1
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return a == b


def _add(doc, ptr, value):
    par, key = _parent(doc, ptr)
    if isinstance(par, dict):
        par[key] = value
    elif isinstance(par, list):
        if key == "-":
            par.append(value)
        else:
            i = int(key)
            if not 0 <= i <= len(par):
                raise PatchError("index out of range at %s" % ptr)
            par.insert(i, value)
    else:
        raise PatchError("cannot add into scalar at %s" % ptr)


def _remove(doc, ptr):
    par, key = _parent(doc, ptr)
    if isinstance(par, dict):
        if key not in par:
            raise PatchError("nothing to remove at %s" % ptr)
        return par.pop(key)
    if isinstance(par, list):
        i = int(key)
        if not 0 <= i < len(par):
            raise PatchError("nothing to remove at %s" % ptr)
        return par.pop(i)
    raise PatchError("cannot remove from scalar at %s" % ptr)


def apply_patch(doc, ops):
    """Apply one patch file's operations to a copy of doc.

    Returns (new_doc, "applied") or (doc, "skipped: ...") when a leading test op fails, or
    (doc, "failed: ...") when any later op fails (the document is left unchanged)."""
    new = copy.deepcopy(doc)
    leading = True
    for n, op in enumerate(ops):
        kind = op.get("op")
        path = op.get("path")
        try:
            if kind == "test":
                try:
                    cur = _get(new, path)
                except KeyError:
                    raise PatchTestFailed("%s absent" % path)
                if not _json_equal(cur, op["value"]):
                    raise PatchTestFailed("%s differs" % path)
                continue
            leading = False
            if kind == "add":
                _add(new, path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                _remove(new, path)
            elif kind == "replace":
                try:
                    _get(new, path)
                except KeyError:
                    raise PatchError("nothing to replace at %s" % path)
                par, key = _parent(new, path)
                if isinstance(par, list):
                    par[int(key)] = copy.deepcopy(op["value"])
                else:
                    par[key] = copy.deepcopy(op["value"])
            elif kind == "move":
                frm = op["from"]
                if path.startswith(frm + "/"):
                    raise PatchError("cannot move %s into itself" % frm)
                _add(new, path, _remove(new, frm))
            elif kind == "copy":
                try:
                    v = _get(new, op["from"])
                except KeyError:
                    raise PatchError("nothing to copy at %s" % op["from"])
                _add(new, path, copy.deepcopy(v))
            else:
                raise PatchError("unknown op %r" % kind)
        except PatchTestFailed as e:
            if leading:
                return doc, "skipped: guard op %d: %s" % (n, e)
            return doc, "failed: test op %d: %s" % (n, e)
        except (PatchError, KeyError, ValueError, TypeError) as e:
            return doc, "failed: op %d (%s %s): %s" % (n, kind, path, e)
    return new, "applied"


def apply_patch_dir(doc, patch_dir, log=None):
    results = []
    for f in sorted(glob.glob(os.path.join(patch_dir, "[0-9][0-9][0-9][0-9]-*.json"))):
        with open(f) as fh:
            ops = json.load(fh)
        doc, status = apply_patch(doc, ops)
        results.append((os.path.basename(f), status))
        if log:
            log("%-60s %s" % (os.path.basename(f), status))
    return doc, results


# ---------------------------------------------------------------- document helpers
def resolve(doc, node, seen=None):
    """Follow $ref chains; returns the target node."""
    seen = seen or set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if ref in seen or not ref.startswith("#"):
            raise ValueError("unresolvable $ref %s" % ref)
        seen.add(ref)
        node = _get(doc, ref[1:])
    return node


def template_key(path):
    return re.sub(r"\{[^}]*\}", "{}", path.rstrip("/") or "/")


def find_operation(doc, method, endpoint):
    key = template_key(endpoint)
    for p, item in doc.get("paths", {}).items():
        if template_key(p) == key and isinstance(item, dict):
            op = item.get(method.lower())
            if isinstance(op, dict):
                return p, op
    return None, None


def success_schema(doc, op):
    """First 2xx response with a body; returns (code, media type, schema) or Nones."""
    for code in sorted((op.get("responses") or {}).keys(), key=str):
        if not str(code).startswith("2"):
            continue
        resp = resolve(doc, op["responses"][code])
        content = resp.get("content") or {}
        if not content:
            continue
        if "application/json" in content:
            return code, "application/json", content["application/json"].get("schema", {})
        mt = next(iter(content))
        return code, mt, None
    return None, None, None


# ---------------------------------------------------------------- serde/typify-like checker
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")

INT_RANGES = {
    "int8": (-2**7, 2**7 - 1), "int16": (-2**15, 2**15 - 1), "int32": (-2**31, 2**31 - 1),
    "int64": (-2**63, 2**63 - 1), "uint8": (0, 2**8 - 1), "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1), "uint64": (0, 2**64 - 1),
}


def jtype(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def short(v):
    s = json.dumps(v)
    return s if len(s) <= 40 else s[:37] + "..."


class Checker:
    def __init__(self, doc):
        self.doc = doc
        self.ambiguous = []  # (json path, schema pointer, chosen branch, other fitting branches)

    def _declared(self, schema, depth=0):
        """Property names a (branch) schema declares, through $ref and allOf."""
        try:
            schema = resolve(self.doc, schema)
        except (ValueError, KeyError):
            return set()
        if not isinstance(schema, dict) or depth > 10:
            return set()
        names = set(schema.get("properties") or {})
        for sub in schema.get("allOf") or []:
            names |= self._declared(sub, depth + 1)
        return names

    def check(self, schema, value, path="$", sptr="?"):
        """Returns a list of (json path, message, schema pointer)."""
        return self._check(schema, value, path, False, sptr)

    def _check(self, schema, value, path, nullable, sptr):
        return [p if len(p) == 3 else (p[0], p[1], sptr)
                for p in self._check1(schema, value, path, nullable, sptr)]

    def _check1(self, schema, value, path, nullable, sptr):
        if schema is True or schema is None:
            return []
        if schema is False:
            return [(path, "schema false")]
        if not isinstance(schema, dict):
            return [(path, "bad schema node")]
        if "$ref" in schema:
            try:
                target = resolve(self.doc, schema)
            except (ValueError, KeyError) as e:
                return [(path, str(e))]
            # OpenAPI 3.0: siblings of $ref are ignored
            return self._check(target, value, path, nullable, _ref_ptr(schema))

        nullable = nullable or schema.get("nullable") is True
        if value is None:
            if nullable:
                return []
            # a null is still fine when the schema lists null in its enum or a branch allows it
            if "enum" in schema and None in schema["enum"]:
                return []
            for k in ("oneOf", "anyOf"):
                if k in schema and any(not self._check(s, None, path, False, sptr) for s in schema[k]):
                    return []
            if "allOf" in schema and schema["allOf"] and all(
                    not self._check(s, None, path, False, sptr) for s in schema["allOf"]):
                return []
            if not schema_constrains(schema):
                return []  # `{}` -> serde_json::Value
            return [(path, "null where not nullable")]

        problems = []
        if "allOf" in schema:
            for i, s in enumerate(schema["allOf"]):
                problems += self._check(s, value, path, nullable, "%s/allOf/%d" % (sptr, i))
        for k in ("oneOf", "anyOf"):
            if k in schema:
                branch_problems = []
                for i, s in enumerate(schema[k]):
                    bp = self._check(s, value, path, nullable, "%s/%s/%d" % (sptr, k, i))
                    if not bp:
                        if isinstance(value, dict) and value and not (set(value) & self._declared(s)):
                            self.ambiguous.append((path, sptr, i, None))
                        if k == "oneOf":
                            # serde's untagged enum takes the first branch that fits; note when a
                            # later one fits too (the value may land in the wrong variant)
                            also = [j for j, s2 in enumerate(schema[k]) if j > i and not self._check(
                                s2, value, path, nullable, "%s/%s/%d" % (sptr, k, j))]
                            if also:
                                self.ambiguous.append((path, sptr, i, also))
                        break
                    branch_problems.append((i, bp))
                else:
                    first = "; ".join("#%d %s: %s" % (i, bp[0][0], bp[0][1]) for i, bp in branch_problems[:4])
                    problems.append((path, "no %s branch matches (%s)" % (k, first)))
        if problems:
            return problems

        t = schema.get("type")
        if t is None:
            if "properties" in schema or "additionalProperties" in schema or "required" in schema:
                t = "object"
            elif "items" in schema:
                t = "array"
        if "enum" in schema and schema["enum"] is not None:
            if not any(_json_equal(value, e) and jtype(value) == jtype(e) or
                       (t == "number" and isinstance(value, (int, float)) and not isinstance(value, bool)
                        and isinstance(e, (int, float)) and value == e)
                       for e in schema["enum"]):
                return [(path, "%s not in enum %s" % (short(value), short(schema["enum"])))]
        if t is None:
            return []
        return self._check_typed(t, schema, value, path, nullable, sptr)

    def _check_typed(self, t, schema, value, path, nullable, sptr):
        jt = jtype(value)
        if t == "integer":
            if jt != "integer":
                return [(path, "expected integer, got %s %s" % (jt, short(value)))]
            fmt = schema.get("format")
            mn = schema.get("minimum")
            if schema.get("exclusiveMinimum") is True and mn is not None:
                mn = mn + 1
            if fmt in INT_RANGES:
                lo, hi = INT_RANGES[fmt]
                name = {"int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64"}.get(fmt, fmt.replace("uint", "u"))
                if mn == 1:
                    lo, name = 1, "NonZero " + name
            elif mn == 1:
                lo, hi, name = 1, 2**64 - 1, "NonZeroU64"
            elif mn == 0:
                lo, hi, name = 0, 2**64 - 1, "u64"
            else:
                lo, hi, name = -2**63, 2**63 - 1, "i64"
            if not lo <= value <= hi:
                return [(path, "%d does not fit %s" % (value, name))]
            return []
        if t == "number":
            if jt not in ("integer", "float"):
                return [(path, "expected number, got %s %s" % (jt, short(value)))]
            return []
        if t == "boolean":
            if jt != "boolean":
                return [(path, "expected boolean, got %s %s" % (jt, short(value)))]
            return []
        if t == "string":
            if jt != "string":
                return [(path, "expected string, got %s %s" % (jt, short(value)))]
            fmt = schema.get("format")
            if fmt == "date-time" and not _is_rfc3339(value):
                return [(path, "not an RFC 3339 date-time: %s" % short(value))]
            if fmt == "date" and not _is_date(value):
                return [(path, "not a YYYY-MM-DD date: %s" % short(value))]
            if fmt == "uuid" and not UUID.match(value):
                return [(path, "not a UUID: %s" % short(value))]
            if "minLength" in schema and len(value) < schema["minLength"]:
                return [(path, "shorter than minLength %s" % schema["minLength"])]
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                return [(path, "longer than maxLength %s" % schema["maxLength"])]
            if "pattern" in schema:
                try:
                    if not re.search(schema["pattern"], value):
                        return [(path, "does not match pattern %s" % short(schema["pattern"]))]
                except re.error:
                    pass
            return []
        if t == "array":
            if jt != "array":
                return [(path, "expected array, got %s %s" % (jt, short(value)))]
            items = schema.get("items")
            problems = []
            if items is not None:
                for i, v in enumerate(value):
                    problems += self._check(items, v, "%s[%d]" % (path, i), False, sptr + "/items")
                    if len(problems) >= 10:
                        break
            return problems
        if t == "object":
            if jt != "object":
                return [(path, "expected object, got %s %s" % (jt, short(value)))]
            props = schema.get("properties") or {}
            problems = []
            for r in schema.get("required") or []:
                if r not in value:
                    problems.append((path, "missing required property %r" % r))
            for k, v in value.items():
                sub = "%s.%s" % (path, k) if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k) else "%s[%s]" % (path, json.dumps(k))
                if k in props:
                    sub_ptr = "%s/properties/%s" % (sptr, _esc(k))
                    problems += self._check(props[k], v, sub, False, sub_ptr)
                else:
                    ap = schema.get("additionalProperties")
                    if ap is False:
                        problems.append((sub, "unknown key where additionalProperties is false"))
                    elif isinstance(ap, dict):
                        problems += self._check(ap, v, sub, False, sptr + "/additionalProperties")
                if len(problems) >= 10:
                    break
            return problems
        return [(path, "unknown schema type %r" % (t,))]


def _esc(k):
    return k.replace("~", "~0").replace("/", "~1")


def _ref_ptr(schema):
    ref = schema.get("$ref", "")
    return ref[1:] if ref.startswith("#") else ref


def schema_constrains(schema):
    keys = set(schema) - {"description", "example", "examples", "title", "externalDocs",
                          "deprecated", "readOnly", "writeOnly", "xml", "default", "nullable"}
    return any(not k.startswith("x-") for k in keys)


def _is_rfc3339(s):
    if not RFC3339.match(s):
        return False
    try:
        datetime.date.fromisoformat(s[:10])
        h, m, sec = int(s[11:13]), int(s[14:16]), int(s[17:19])
    except ValueError:
        return False
    return h < 24 and m < 60 and sec < 61


def _is_date(s):
    if not DATE.match(s):
        return False
    try:
        datetime.date.fromisoformat(s)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- samples
def load_samples(samples_dir):
    out = []
    for f in sorted(glob.glob(os.path.join(samples_dir, "*", "*.json"))):
        with open(f) as fh:
            out.append((os.path.relpath(f, samples_dir), json.load(fh)))
    return out


def select(doc, samples):
    """Yields (name, sample, reason) where reason is None for selected samples."""
    for name, s in samples:
        src = s.get("source") or {}
        note = src.get("note") or ""
        status = s.get("status")
        if src.get("captured") != "likely-live":
            yield name, s, "not likely-live"
        elif not (isinstance(status, int) and 200 <= status < 300):
            yield name, s, "status %s" % status
        elif "FRAGMENT" in note or "TRUNCATED" in note:
            yield name, s, "fragment/truncated"
        elif find_operation(doc, s["method"], s["endpoint"])[1] is None:
            yield name, s, "no operation %s %s in document" % (s["method"], s["endpoint"])
        else:
            yield name, s, None


def run(doc, samples, verbose=False, max_problems=3, out=print, show_schema=False):
    checker = Checker(doc)
    passed = failed = 0
    excluded = []
    warned = set()
    for name, s, reason in select(doc, samples):
        if reason:
            excluded.append((name, reason))
            continue
        op_path, op = find_operation(doc, s["method"], s["endpoint"])
        code, mt, schema = success_schema(doc, op)
        if schema is None:
            problems = [("$", "no JSON 2xx response schema (first 2xx body: %s)" % mt, "")]
        else:
            ptr = "/paths/%s/%s/responses/%s/content/application~1json/schema" % (
                _esc(op_path), s["method"].lower(), code)
            checker.ambiguous = []
            problems = checker.check(schema, s["body"], sptr=ptr)
            for apath, aptr, chosen, also in checker.ambiguous[:max_problems]:
                warned.add(name)
                if also is None:
                    out("warn %s: %s fits branch %d only, which declares none of its keys   [schema %s]"
                        % (name, apath, chosen, aptr))
                else:
                    out("warn %s: %s fits oneOf branches %d and %s   [schema %s]"
                        % (name, apath, chosen, ",".join(map(str, also)), aptr))
        if problems:
            failed += 1
            out("FAIL %s" % name)
            for p, m, where in problems[:max_problems]:
                out("       %s: %s" % (p, m) + ("   [schema %s]" % where if show_schema else ""))
            if len(problems) > max_problems:
                out("       ... %d more" % (len(problems) - max_problems))
        else:
            passed += 1
            if verbose:
                out("pass %s" % name)
    if verbose:
        for name, reason in excluded:
            out("skip %s (%s)" % (name, reason))
    if warned:
        out("%d samples fit a oneOf/anyOf ambiguously (they deserialize, maybe as the wrong variant)"
            % len(warned))
    return passed, failed, excluded


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # spec/ibkr-openapi.lock holds the pin (a `version = "X.Y.Z"` line); no TOML parser needed.
    with open(os.path.join(REPO, "spec", "ibkr-openapi.lock"), encoding="utf-8") as f:
        found = re.search(r'^\s*version\s*=\s*"([^"]+)"', f.read(), re.M)
    if not found:
        sys.exit("cannot read the pinned version from spec/ibkr-openapi.lock")
    pinned = found.group(1)
    ap.add_argument("--spec", default=os.path.join(SHARED, "ibkr-spec", pinned, "openapi.json"))
    ap.add_argument("--patches", default=os.path.join(REPO, "patches"))
    ap.add_argument("--no-patches", action="store_true")
    ap.add_argument("--samples", default=os.path.join(SHARED, "ibkr-samples"))
    ap.add_argument("--write-patched", metavar="PATH", help="write the patched document here")
    ap.add_argument("--max-problems", type=int, default=3)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--where", action="store_true", help="show the schema pointer of each problem")
    args = ap.parse_args()

    with open(args.spec) as fh:
        doc = json.load(fh)
    if not args.no_patches:
        doc, results = apply_patch_dir(doc, args.patches,
                                       log=(lambda m: print("patch " + m)) if args.verbose else None)
        bad = [r for r in results if r[1].startswith("failed")]
        for f, st in bad:
            print("patch %s %s" % (f, st), file=sys.stderr)
    if args.write_patched:
        with open(args.write_patched, "w") as fh:
            json.dump(doc, fh, indent=1)
    samples = load_samples(args.samples)
    passed, failed, excluded = run(doc, samples, args.verbose, args.max_problems,
                                   show_schema=args.where)
    print("selected %d: %d pass, %d fail; %d samples not selected"
          % (passed + failed, passed, failed, len(excluded)))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
