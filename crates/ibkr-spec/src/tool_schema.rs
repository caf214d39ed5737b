//! MCP tool input schemas derived from the repaired OpenAPI document.
//!
//! A tool's arguments are its operation's path, query and header parameters by name, plus
//! `body` for a JSON request body. The schema is JSON Schema 2020-12 as strict MCP clients
//! want it: every `$ref` inlined (many clients do not resolve them), no `nullable` and no
//! `type: [T, "null"]` arrays, OpenAPI-only keywords removed or translated (`example` →
//! `examples`, boolean `exclusiveMinimum` → numeric), descriptions, enums, defaults and
//! examples carried over, `required` as the document says. Objects with declared properties
//! are closed (`additionalProperties: false`), at the top level and inside request bodies. A
//! parameter the document leaves untyped is a string (it travels as text).

use serde_json::{Map, Value, json};

use crate::repair::{METHODS, resolve};

/// The JSON Schema dialect of every schema here: input schemas are written in it without
/// saying so (it is MCP's default); response schemas name it.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// How deep `$ref`s are inlined before a recursive schema is cut off (as an open object).
const MAX_DEPTH: usize = 12;

/// The input schema of the operation with `operation_id`, or why there is none.
pub fn input_schema(doc: &Value, operation_id: &str) -> Result<Value, String> {
    let (path, method) = find_operation(doc, operation_id)
        .ok_or_else(|| format!("operation `{operation_id}` is not in the document"))?;
    let item = &doc["paths"][path.as_str()];
    let op = &item[method];

    // Path-level parameters, overridden by operation-level ones with the same name and place.
    let mut params: Vec<&Map<String, Value>> = Vec::new();
    for p in crate::repair::parameter_list(item, op) {
        let p = resolve(doc, p)
            .ok_or_else(|| format!("{operation_id}: a parameter does not resolve"))?;
        let key = |q: &Map<String, Value>| (q.get("name").cloned(), q.get("in").cloned());
        params.retain(|q| key(q) != key(p));
        params.push(p);
    }

    let mut properties = Map::new();
    let mut required = Vec::new();
    for p in params {
        let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
        let location = p.get("in").and_then(Value::as_str).unwrap_or_default();
        if !matches!(location, "path" | "query" | "header") {
            return Err(format!(
                "{operation_id}: `{location}` parameter `{name}` cannot be a tool argument"
            ));
        }
        let mut schema = match p.get("schema") {
            Some(s) => convert(doc, s, 0),
            None => json!({}),
        };
        let obj = schema
            .as_object_mut()
            .expect("converted schemas are objects");
        // A parameter the document leaves untyped travels as text in the URL or a header.
        if !["type", "enum", "const", "anyOf", "oneOf", "allOf"]
            .iter()
            .any(|k| obj.contains_key(*k))
        {
            obj.insert("type".into(), Value::String("string".into()));
        }
        if let Some(d) = p.get("description").and_then(Value::as_str) {
            obj.entry("description")
                .or_insert_with(|| Value::String(d.trim().to_string()));
        }
        if let Some(ex) = p.get("example") {
            obj.insert("examples".into(), json!([ex]));
        }
        // A path parameter becomes one URL segment: only characters that cannot start a dot
        // segment or encode a separator, so no argument can change which endpoint is called.
        if location == "path" && obj.get("type").and_then(Value::as_str) == Some("string") {
            obj.insert(
                "pattern".into(),
                Value::String(path_param_pattern(name).into()),
            );
        }
        if p.get("required") == Some(&Value::Bool(true)) || location == "path" {
            required.push(Value::String(name.to_string()));
        }
        properties.insert(name.to_string(), schema);
    }

    if let Some(body) = op.get("requestBody").and_then(|b| resolve(doc, b)) {
        let content = body.get("content").and_then(Value::as_object);
        let json_schema = content.and_then(|c| {
            c.iter()
                .find(|(ct, _)| {
                    ct.as_str() == "application/json" || ct.starts_with("application/json;")
                })
                .map(|(_, media)| media)
        });
        let Some(media) = json_schema else {
            return Err(format!("{operation_id}: the request body is not JSON"));
        };
        let mut schema = media
            .get("schema")
            .map_or_else(|| json!({}), |s| convert(doc, s, 0));
        let obj = schema
            .as_object_mut()
            .expect("converted schemas are objects");
        if let Some(d) = body.get("description").and_then(Value::as_str) {
            obj.entry("description")
                .or_insert_with(|| Value::String(d.trim().to_string()));
        }
        if let Some(ex) = media.get("example") {
            obj.entry("examples").or_insert_with(|| json!([ex]));
        }
        if body.get("required") == Some(&Value::Bool(true)) {
            required.push(Value::String("body".into()));
        }
        properties.insert("body".into(), schema);
    }

    // No `$schema`: 2020-12 is MCP's default dialect, and the line would cost every tool's
    // schema tokens in every conversation.
    let mut out = Map::new();
    out.insert("type".into(), Value::String("object".into()));
    out.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        out.insert("required".into(), Value::Array(required));
    }
    out.insert("additionalProperties".into(), Value::Bool(false));
    Ok(Value::Object(out))
}

/// Account and allocation-group ids: letters, digits, `_`, `-` and inner dots (IBKR's FA
/// group and model names contain them), never a leading dot.
pub const ACCOUNT_ID_PATTERN: &str = "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$";
/// Contract, page and alert ids: digits.
pub const NUMERIC_ID_PATTERN: &str = "^[0-9]{1,19}$";
/// Order ids: digits, optionally negative (IBKR uses negative ids for some orders).
pub const ORDER_ID_PATTERN: &str = "^-?[0-9]{1,19}$";
/// Any other path parameter (reply ids, notification and device ids, type codes).
pub const TOKEN_PATTERN: &str = "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$";

/// The pattern a string path parameter named `name` must match. Every pattern is a subset of
/// what the request guard in `ibkr::hooks` lets through as a path segment.
pub fn path_param_pattern(name: &str) -> &'static str {
    match name {
        "accountId" | "acctId" | "searchPattern" => ACCOUNT_ID_PATTERN,
        "conid" | "pageId" | "alertId" => NUMERIC_ID_PATTERN,
        "orderId" => ORDER_ID_PATTERN,
        _ => TOKEN_PATTERN,
    }
}

fn find_operation(doc: &Value, operation_id: &str) -> Option<(String, &'static str)> {
    let paths = doc.get("paths")?.as_object()?;
    for (path, item) in paths {
        for method in METHODS {
            if item
                .pointer(&format!("/{method}/operationId"))
                .and_then(Value::as_str)
                == Some(operation_id)
            {
                return Some((path.clone(), method));
            }
        }
    }
    None
}

/// Converts one OpenAPI 3.0 schema (object) to JSON Schema 2020-12 with references inlined.
fn convert(doc: &Value, schema: &Value, depth: usize) -> Value {
    let Some(obj) = schema.as_object() else {
        return json!({});
    };
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        if depth >= MAX_DEPTH {
            return json!({"type": "object", "description": "(nested too deeply to describe here)"});
        }
        return match r.strip_prefix('#').and_then(|p| doc.pointer(p)) {
            Some(target) => convert(doc, target, depth + 1),
            None => json!({}),
        };
    }
    let mut out = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            // OpenAPI-only or output-only keywords.
            "nullable" | "discriminator" | "xml" | "externalDocs" | "readOnly" | "writeOnly" => {}
            k if k.starts_with("x-") => {}
            "example" => {
                out.insert("examples".into(), json!([v]));
            }
            "properties" => {
                let props: Map<String, Value> = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    // Properties the server fills in are not arguments.
                    .filter(|(_, p)| {
                        resolve(doc, p)
                            .is_none_or(|p| p.get("readOnly") != Some(&Value::Bool(true)))
                    })
                    .map(|(name, p)| (name.clone(), convert(doc, p, depth + 1)))
                    .collect();
                out.insert(k.to_string(), Value::Object(props));
            }
            "items" | "not" => {
                out.insert(k.to_string(), convert(doc, v, depth + 1));
            }
            "additionalProperties" => match v {
                Value::Object(m) if m.is_empty() => {} // same as absent
                Value::Object(_) => {
                    out.insert(k.to_string(), convert(doc, v, depth + 1));
                }
                other => {
                    out.insert(k.to_string(), other.clone());
                }
            },
            "allOf" | "anyOf" | "oneOf" => {
                let list: Vec<Value> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| convert(doc, s, depth + 1))
                    .collect();
                out.insert(k.to_string(), Value::Array(list));
            }
            "exclusiveMinimum" | "exclusiveMaximum" => {
                // OpenAPI 3.0: a boolean modifying minimum/maximum; 2020-12: the bound itself.
                let bound = if k == "exclusiveMinimum" {
                    "minimum"
                } else {
                    "maximum"
                };
                if v == &Value::Bool(true) {
                    if let Some(b) = obj.get(bound) {
                        out.insert(k.to_string(), b.clone());
                    }
                } else if v.is_number() {
                    out.insert(k.to_string(), v.clone());
                }
            }
            "minimum" | "maximum" => {
                let exclusive = if k == "minimum" {
                    "exclusiveMinimum"
                } else {
                    "exclusiveMaximum"
                };
                if obj.get(exclusive) != Some(&Value::Bool(true)) {
                    out.insert(k.to_string(), v.clone());
                }
            }
            _ => {
                out.insert(k.to_string(), v.clone());
            }
        }
    }
    // An enum that lists `null` (allowed by `nullable`) keeps only the values a caller sends.
    if let Some(Value::Array(values)) = out.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    // An argument object with declared properties takes nothing else: a misspelt field of an
    // order ticket must be an error, not a key the gateway silently ignores.
    if out.contains_key("properties") && !out.contains_key("additionalProperties") {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    // `required` names only properties that remain (server-filled ones were removed).
    if let Some(Value::Object(props)) = out.get("properties") {
        let names: Vec<String> = props.keys().cloned().collect();
        if let Some(Value::Array(req)) = out.get_mut("required") {
            req.retain(|r| r.as_str().is_some_and(|r| names.iter().any(|n| n == r)));
        }
    }
    Value::Object(out)
}

/// The JSON Schema (2020-12) of an operation's JSON response for `status` (or the first 2xx
/// when `status` is `None`), for validating replies: OpenAPI 3.0's `nullable` becomes
/// `anyOf [.., null]`, every component schema is carried under `$defs` with `$ref`s rewritten
/// to point there, OpenAPI-only keywords are dropped. `None` when the document describes no
/// JSON body for it.
pub fn response_schema(doc: &Value, operation_id: &str, status: Option<u16>) -> Option<Value> {
    let (path, method) = find_operation(doc, operation_id)?;
    let responses = doc["paths"][path.as_str()][method]
        .get("responses")?
        .as_object()?;
    let (_, response) = responses.iter().find(|(code, _)| match status {
        Some(s) => code.as_str() == s.to_string(),
        None => code.starts_with('2') && code.len() == 3,
    })?;
    let response = resolve(doc, response)?;
    let media = response
        .get("content")?
        .as_object()?
        .iter()
        .find(|(ct, _)| ct.starts_with("application/json"))?
        .1;
    let mut root = response_node(media.get("schema")?);
    let defs: Map<String, Value> = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), response_node(v)))
        .collect();
    let obj = root.as_object_mut()?;
    obj.insert("$schema".into(), Value::String(DIALECT.into()));
    obj.insert("$defs".into(), Value::Object(defs));
    Some(root)
}

/// One OpenAPI 3.0 schema node to JSON Schema, keeping `$ref`s (rewritten to `$defs`).
fn response_node(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                let target = r.replace("#/components/schemas/", "#/$defs/");
                return json!({ "$ref": target });
            }
            let mut out = Map::new();
            for (k, x) in m {
                match k.as_str() {
                    "nullable" | "discriminator" | "xml" | "externalDocs" | "readOnly"
                    | "writeOnly" | "example" | "format" => {}
                    k if k.starts_with("x-") => {}
                    "properties" | "patternProperties" => {
                        let props = x
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(n, s)| (n.clone(), response_node(s)))
                            .collect();
                        out.insert(k.to_string(), Value::Object(props));
                    }
                    "exclusiveMinimum" | "exclusiveMaximum" => {
                        let bound = if k == "exclusiveMinimum" {
                            "minimum"
                        } else {
                            "maximum"
                        };
                        if x == &Value::Bool(true) {
                            if let Some(b) = m.get(bound) {
                                out.insert(k.to_string(), b.clone());
                            }
                        } else if x.is_number() {
                            out.insert(k.to_string(), x.clone());
                        }
                    }
                    "minimum" | "maximum" => {
                        let ex = if k == "minimum" {
                            "exclusiveMinimum"
                        } else {
                            "exclusiveMaximum"
                        };
                        if m.get(ex) != Some(&Value::Bool(true)) {
                            out.insert(k.to_string(), x.clone());
                        }
                    }
                    "enum" | "default" | "const" | "required" | "type" | "description" => {
                        out.insert(k.to_string(), x.clone());
                    }
                    _ => {
                        out.insert(k.to_string(), response_node(x));
                    }
                }
            }
            if m.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::Array(values)) = out.get_mut("enum")
                    && !values.contains(&Value::Null)
                {
                    values.push(Value::Null);
                }
                return json!({ "anyOf": [Value::Object(out), { "type": "null" }] });
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(response_node).collect()),
        other => other.clone(),
    }
}
