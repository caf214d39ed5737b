//! What changed between two repaired documents, operation by operation, in the terms a tool's
//! user sees: its arguments (parameters and request body fields, with their types and whether
//! they are required), its request and reply content types, and the fields of its success
//! reply. Each change says whether it breaks a model's calls or reading: a required argument
//! added, an argument removed, a type narrowed, a reply field removed or retyped.
//!
//! Operations are matched by their rule-derived id (method and path, see
//! [`crate::repair::operation_id_for`]), the id the tool allowlist names. Schemas are compared
//! flattened: every field path (`orders[].conid`) with its type, after `$ref`s are followed
//! (cycles and depth bounded). Descriptions and examples are not compared: they are IBKR's
//! words, and they do not change what a call sends or receives.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::repair::{self, operation_id_for};

/// Deepest schema nesting compared (IBKR's schemas are shallow; a cycle stops here).
const MAX_DEPTH: usize = 8;

/// One kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An operation is in NEW only.
    OperationAdded,
    /// An operation is in OLD only.
    OperationRemoved,
    /// An argument (parameter or body field) is new.
    ArgumentAdded,
    /// An argument is gone.
    ArgumentRemoved,
    /// An argument became required.
    ArgumentRequired,
    /// An argument became optional.
    ArgumentOptional,
    /// An argument's type changed.
    ArgumentType,
    /// A request body appeared or disappeared, or its content types changed.
    RequestContent,
    /// The success reply's content types or status changed.
    ReplyContent,
    /// A reply field is new.
    ReplyFieldAdded,
    /// A reply field is gone.
    ReplyFieldRemoved,
    /// A reply field's type changed.
    ReplyFieldType,
}

impl Kind {
    /// Every kind, in order.
    pub const ALL: [Kind; 12] = [
        Kind::OperationAdded,
        Kind::OperationRemoved,
        Kind::ArgumentAdded,
        Kind::ArgumentRemoved,
        Kind::ArgumentRequired,
        Kind::ArgumentOptional,
        Kind::ArgumentType,
        Kind::RequestContent,
        Kind::ReplyContent,
        Kind::ReplyFieldAdded,
        Kind::ReplyFieldRemoved,
        Kind::ReplyFieldType,
    ];
}

/// One change of one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The rule-derived operation id.
    pub operation: String,
    /// `GET /iserver/accounts`.
    pub endpoint: String,
    /// What changed.
    pub kind: Kind,
    /// Where (`query accountId`, `body orders[].conid`, `reply [].order_id`); empty for a
    /// whole operation.
    pub at: String,
    /// Before → after, in words (`string → integer`, `optional → required`).
    pub detail: String,
    /// Whether a model's existing calls or reading of the reply break.
    pub breaking: bool,
}

/// A field's type and requiredness, flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    ty: String,
    required: bool,
}

/// What a diff compares of one operation.
#[derive(Debug, Clone, Default)]
struct OpShape {
    endpoint: String,
    /// `query accountId`, `body orders[].conid`, ... → field.
    arguments: BTreeMap<String, Field>,
    request_content: BTreeSet<String>,
    has_body: bool,
    reply_status: String,
    reply_content: BTreeSet<String>,
    /// `[].order_id`, ... → field.
    reply: BTreeMap<String, Field>,
}

/// Every operation of a repaired document, by rule-derived id.
fn shapes(doc: &Value) -> BTreeMap<String, OpShape> {
    let mut out = BTreeMap::new();
    for op in repair::operations(doc) {
        let Some(item) = doc.pointer(&format!(
            "/paths/{}/{}",
            repair::ptr_token(&op.path),
            op.method
        )) else {
            continue;
        };
        let path_item = doc
            .pointer(&format!("/paths/{}", repair::ptr_token(&op.path)))
            .cloned()
            .unwrap_or(Value::Null);
        out.insert(
            operation_id_for(&op.method, &op.path),
            shape(doc, &op.method, &op.path, item, &path_item),
        );
    }
    out
}

fn shape(doc: &Value, method: &str, path: &str, op: &Value, path_item: &Value) -> OpShape {
    let mut s = OpShape {
        endpoint: format!("{} {path}", method.to_ascii_uppercase()),
        ..OpShape::default()
    };
    // Path-level parameters first; the operation's own override them by (in, name).
    for p in repair::parameter_list(path_item, op) {
        let Some(p) = repair::resolve(doc, p) else {
            continue;
        };
        let name = p.get("name").and_then(Value::as_str).unwrap_or("?");
        let location = p.get("in").and_then(Value::as_str).unwrap_or("?");
        let required = location == "path" || p.get("required") == Some(&Value::Bool(true));
        let ty = p
            .get("schema")
            .map_or_else(|| "any".to_string(), |sch| type_name(doc, sch));
        s.arguments
            .insert(format!("{location} {name}"), Field { ty, required });
    }
    if let Some(body) = op.get("requestBody").and_then(|b| repair::resolve(doc, b)) {
        s.has_body = true;
        let body_required = body.get("required") == Some(&Value::Bool(true));
        if let Some(content) = body.get("content").and_then(Value::as_object) {
            s.request_content = content.keys().cloned().collect();
            if let Some(schema) = content.values().find_map(|c| c.get("schema")) {
                flatten(doc, schema, "body", body_required, 0, &mut s.arguments);
            }
        }
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object)
        && let Some((status, reply)) = responses.iter().find(|(k, _)| k.starts_with('2'))
    {
        s.reply_status = status.clone();
        if let Some(reply) = repair::resolve(doc, reply)
            && let Some(content) = reply.get("content").and_then(Value::as_object)
        {
            s.reply_content = content.keys().cloned().collect();
            if let Some(schema) = content.values().find_map(|c| c.get("schema")) {
                flatten(doc, schema, "", true, 0, &mut s.reply);
            }
        }
    }
    s
}

/// A schema's type in a few words: `string`, `integer/int64`, `enum(A|B)`, `array<object>`,
/// `object`, `oneOf(2)`.
fn type_name(doc: &Value, schema: &Value) -> String {
    let Some(m) = repair::resolve(doc, schema) else {
        return "any".into();
    };
    if let Some(e) = m.get("enum").and_then(Value::as_array) {
        let mut values: Vec<String> = e
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect();
        values.sort();
        return format!("enum({})", values.join("|"));
    }
    for alt in ["oneOf", "anyOf"] {
        if let Some(a) = m.get(alt).and_then(Value::as_array) {
            return format!("{alt}({})", a.len());
        }
    }
    let ty = m
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or(if m.contains_key("properties") {
            "object"
        } else {
            "any"
        });
    match ty {
        "array" => format!(
            "array<{}>",
            m.get("items")
                .map_or_else(|| "any".to_string(), |i| type_name(doc, i))
        ),
        _ => match m.get("format").and_then(Value::as_str) {
            Some(f) => format!("{ty}/{f}"),
            None => ty.to_string(),
        },
    }
}

/// Every field below `schema` as `prefix.name` (arrays as `prefix[]`), with its type and
/// whether it is required (a field is required only if its parents are).
fn flatten(
    doc: &Value,
    schema: &Value,
    prefix: &str,
    required: bool,
    depth: usize,
    out: &mut BTreeMap<String, Field>,
) {
    let Some(m) = repair::resolve(doc, schema) else {
        return;
    };
    if depth >= MAX_DEPTH {
        return;
    }
    let join = |name: &str| {
        if prefix.is_empty() {
            name.to_string()
        } else if prefix == "body" {
            format!("body {name}")
        } else {
            format!("{prefix}.{name}")
        }
    };
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        let req: BTreeSet<&str> = m
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for (name, sub) in props {
            let key = join(name);
            let r = required && req.contains(name.as_str());
            out.insert(
                key.clone(),
                Field {
                    ty: type_name(doc, sub),
                    required: r,
                },
            );
            flatten(doc, sub, &key, r, depth + 1, out);
        }
    }
    if m.get("type").and_then(Value::as_str) == Some("array")
        && let Some(items) = m.get("items")
    {
        let key = if prefix == "body" {
            "body []".to_string()
        } else {
            format!("{prefix}[]")
        };
        flatten(doc, items, &key, required, depth + 1, out);
    }
    // Alternatives: their fields are all possible, none required.
    for alt in ["oneOf", "anyOf", "allOf"] {
        for branch in m.get(alt).and_then(Value::as_array).into_iter().flatten() {
            flatten(
                doc,
                branch,
                prefix,
                alt == "allOf" && required,
                depth + 1,
                out,
            );
        }
    }
}

/// Whether a type change `old → new` of an argument still accepts every value a model sent
/// before (a widening): integer → number, an enum to its base type or to a larger enum, a
/// format dropped.
fn widens(old: &str, new: &str) -> bool {
    let base = |t: &str| t.split('/').next().unwrap_or(t).to_string();
    let enum_values = |t: &str| -> Option<BTreeSet<String>> {
        t.strip_prefix("enum(")?
            .strip_suffix(')')
            .map(|v| v.split('|').map(str::to_owned).collect())
    };
    match (enum_values(old), enum_values(new)) {
        (Some(a), Some(b)) => a.is_subset(&b),
        (Some(_), None) => new == "string" || new == "any",
        (None, Some(_)) => false,
        (None, None) => {
            new == "any"
                || (base(old) == "integer" && base(new) == "number")
                || (base(old) == base(new) && !new.contains('/'))
        }
    }
}

fn change(
    id: &str,
    endpoint: &str,
    kind: Kind,
    at: &str,
    detail: String,
    breaking: bool,
) -> Change {
    Change {
        operation: id.to_string(),
        endpoint: endpoint.to_string(),
        kind,
        at: at.to_string(),
        detail,
        breaking,
    }
}

fn req_word(r: bool) -> &'static str {
    if r { "required" } else { "optional" }
}

/// The changes from `old` to `new` (both repaired documents), by operation id then kind.
pub fn diff(old: &Value, new: &Value) -> Vec<Change> {
    let (a, b) = (shapes(old), shapes(new));
    let mut out = Vec::new();
    for (id, o) in &a {
        let Some(n) = b.get(id) else {
            out.push(change(
                id,
                &o.endpoint,
                Kind::OperationRemoved,
                "",
                String::new(),
                true,
            ));
            continue;
        };
        let ep = &n.endpoint;
        for (at, of) in &o.arguments {
            match n.arguments.get(at) {
                None => out.push(change(
                    id,
                    ep,
                    Kind::ArgumentRemoved,
                    at,
                    of.ty.clone(),
                    true,
                )),
                Some(nf) => {
                    if of.required != nf.required {
                        let kind = if nf.required {
                            Kind::ArgumentRequired
                        } else {
                            Kind::ArgumentOptional
                        };
                        let detail =
                            format!("{} → {}", req_word(of.required), req_word(nf.required));
                        out.push(change(id, ep, kind, at, detail, nf.required));
                    }
                    if of.ty != nf.ty {
                        let detail = format!("{} → {}", of.ty, nf.ty);
                        let breaking = !widens(&of.ty, &nf.ty);
                        out.push(change(id, ep, Kind::ArgumentType, at, detail, breaking));
                    }
                }
            }
        }
        for (at, nf) in &n.arguments {
            if !o.arguments.contains_key(at) {
                let detail = format!("{} ({})", nf.ty, req_word(nf.required));
                out.push(change(id, ep, Kind::ArgumentAdded, at, detail, nf.required));
            }
        }
        if o.has_body != n.has_body || o.request_content != n.request_content {
            let words = |has: bool, c: &BTreeSet<String>| {
                if has {
                    c.iter().cloned().collect::<Vec<_>>().join(", ")
                } else {
                    "no body".into()
                }
            };
            let detail = format!(
                "{} → {}",
                words(o.has_body, &o.request_content),
                words(n.has_body, &n.request_content)
            );
            // A model sends JSON: losing the JSON body (or the body) breaks its calls; another
            // content type beside JSON does not.
            let json = "application/json";
            let breaking = o.request_content.contains(json) && !n.request_content.contains(json);
            out.push(change(
                id,
                ep,
                Kind::RequestContent,
                "body",
                detail,
                breaking,
            ));
        }
        if o.reply_status != n.reply_status || o.reply_content != n.reply_content {
            let words = |s: &str, c: &BTreeSet<String>| {
                format!("{s} {}", c.iter().cloned().collect::<Vec<_>>().join(", "))
            };
            let detail = format!(
                "{} → {}",
                words(&o.reply_status, &o.reply_content),
                words(&n.reply_status, &n.reply_content)
            );
            // A model reads JSON; another content type it cannot read the same way.
            let breaking = o.reply_content.contains("application/json")
                && !n.reply_content.contains("application/json");
            out.push(change(
                id,
                ep,
                Kind::ReplyContent,
                "reply",
                detail,
                breaking,
            ));
        }
        for (at, of) in &o.reply {
            let shown = if at.is_empty() { "(reply)" } else { at };
            match n.reply.get(at) {
                None => out.push(change(
                    id,
                    ep,
                    Kind::ReplyFieldRemoved,
                    shown,
                    of.ty.clone(),
                    true,
                )),
                Some(nf) if nf.ty != of.ty => out.push(change(
                    id,
                    ep,
                    Kind::ReplyFieldType,
                    shown,
                    format!("{} → {}", of.ty, nf.ty),
                    // A reply that widens (an enum with more values) can surprise a reader;
                    // one that changes base type breaks it.
                    !widens(&of.ty, &nf.ty),
                )),
                Some(_) => {}
            }
        }
        for (at, nf) in &n.reply {
            if !o.reply.contains_key(at) {
                out.push(change(
                    id,
                    ep,
                    Kind::ReplyFieldAdded,
                    at,
                    nf.ty.clone(),
                    false,
                ));
            }
        }
    }
    for (id, n) in &b {
        if !a.contains_key(id) {
            out.push(change(
                id,
                &n.endpoint,
                Kind::OperationAdded,
                "",
                String::new(),
                false,
            ));
        }
    }
    out.sort_by(|x, y| (&x.operation, x.kind, &x.at).cmp(&(&y.operation, y.kind, &y.at)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(paths: Value, schemas: Value) -> Value {
        json!({ "openapi": "3.0.0", "info": { "title": "t", "version": "1" },
                "paths": paths, "components": { "schemas": schemas } })
    }

    /// A pair of documents with one change of every kind.
    fn pair() -> (Value, Value) {
        let order = |extra: Value| {
            let mut o = json!({ "type": "object", "required": ["conid"], "properties": {
                "conid": { "type": "integer" },
                "side": { "type": "string", "enum": ["BUY", "SELL"] },
                "tif": { "type": "string" },
            } });
            if let Value::Object(e) = extra {
                o.as_object_mut().unwrap().extend(e);
            }
            o
        };
        let old = doc(
            json!({
                "/orders": { "post": {
                    "parameters": [
                        { "name": "accountId", "in": "query", "schema": { "type": "string" } },
                        { "name": "gone", "in": "query", "schema": { "type": "string" } },
                        { "name": "page", "in": "query", "required": true, "schema": { "type": "integer" } },
                    ],
                    "requestBody": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/order" } } } },
                    "responses": { "200": { "content": { "application/json": { "schema": {
                        "type": "array", "items": { "type": "object", "properties": {
                            "order_id": { "type": "string" }, "status": { "type": "string" },
                            "kept": { "type": "integer" } } } } } } } }
                } },
                "/old": { "get": { "responses": { "200": { "description": "x" } } } },
            }),
            json!({ "order": order(json!({})) }),
        );
        let new = doc(
            json!({
                "/orders": { "post": {
                    "parameters": [
                        { "name": "accountId", "in": "query", "required": true, "schema": { "type": "string" } },
                        { "name": "page", "in": "query", "schema": { "type": "number" } },
                        { "name": "new", "in": "query", "schema": { "type": "boolean" } },
                    ],
                    "requestBody": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/order" } },
                                                  "text/plain": { "schema": { "type": "string" } } } },
                    "responses": { "201": { "content": { "application/json": { "schema": {
                        "type": "array", "items": { "type": "object", "properties": {
                            "order_id": { "type": "integer" }, "kept": { "type": "integer" },
                            "extra": { "type": "boolean" } } } } } } } }
                } },
                "/new": { "get": { "responses": { "200": { "description": "x" } } } },
            }),
            json!({ "order": order(json!({ "properties": {
                "conid": { "type": "integer" },
                "side": { "type": "string", "enum": ["BUY"] },
                "qty": { "type": "number" },
            } })) }),
        );
        (old, new)
    }

    #[test]
    fn every_kind_of_change_is_found_with_whether_it_breaks_a_model() {
        let (old, new) = pair();
        let changes = diff(&old, &new);
        let kinds: BTreeSet<Kind> = changes.iter().map(|c| c.kind).collect();
        for k in Kind::ALL {
            assert!(kinds.contains(&k), "{k:?} missing from {changes:#?}");
        }
        let find = |at: &str, kind: Kind| {
            changes
                .iter()
                .find(|c| c.at == at && c.kind == kind)
                .unwrap_or_else(|| panic!("{at} {kind:?} in {changes:#?}"))
        };
        // Breaking: a required argument added, an argument removed, an enum narrowed, a
        // reply field removed or retyped.
        assert!(find("query accountId", Kind::ArgumentRequired).breaking);
        assert!(find("query gone", Kind::ArgumentRemoved).breaking);
        assert!(find("body side", Kind::ArgumentType).breaking);
        assert!(find("[].status", Kind::ReplyFieldRemoved).breaking);
        assert!(
            !find("body", Kind::RequestContent).breaking,
            "text/plain beside JSON"
        );
        assert!(find("[].order_id", Kind::ReplyFieldType).breaking);
        assert!(find("body tif", Kind::ArgumentRemoved).breaking);
        // Not breaking: an optional argument added, integer widened to number, a required
        // argument made optional, a reply field added, a new operation.
        assert!(!find("query new", Kind::ArgumentAdded).breaking);
        assert!(!find("query page", Kind::ArgumentType).breaking);
        assert!(!find("query page", Kind::ArgumentOptional).breaking);
        assert!(!find("[].extra", Kind::ReplyFieldAdded).breaking);
        assert!(!find("body qty", Kind::ArgumentAdded).breaking);
        assert_eq!(find("", Kind::OperationAdded).operation, "get_new");
        assert!(find("", Kind::OperationRemoved).breaking);
        assert_eq!(
            find("[].order_id", Kind::ReplyFieldType).detail,
            "string → integer"
        );
    }

    #[test]
    fn a_document_against_itself_has_no_changes() {
        let (old, _) = pair();
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn widening_keeps_old_calls_valid_and_narrowing_does_not() {
        assert!(widens("integer/int32", "number"));
        assert!(widens("enum(A|B)", "enum(A|B|C)"));
        assert!(widens("enum(A|B)", "string"));
        assert!(widens("string/date", "string"));
        assert!(!widens("number", "integer"));
        assert!(!widens("string", "enum(A)"));
        assert!(!widens("enum(A|B)", "enum(A)"));
        assert!(!widens("string", "integer"));
    }

    #[test]
    fn cyclic_schemas_stop_at_the_depth_bound() {
        let d = doc(
            json!({ "/n": { "get": { "responses": { "200": { "content": { "application/json": {
                "schema": { "$ref": "#/components/schemas/node" } } } } } } } }),
            json!({ "node": { "type": "object", "properties": {
                "child": { "$ref": "#/components/schemas/node" } } } }),
        );
        let s = shapes(&d);
        let reply = &s["get_n"].reply;
        assert!(reply.len() <= MAX_DEPTH + 1, "{reply:?}");
        assert!(reply.contains_key("child.child"));
    }
}
