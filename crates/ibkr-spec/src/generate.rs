//! Client generation with progenitor, one operation at a time when it has to be.
//!
//! Used by `build.rs` and by `ibkr-mcp spec report --spec OTHER` (feature `codegen`).
//!
//! progenitor handles a narrower OpenAPI than IBKR writes, and it panics on some shapes. So:
//! 1. [`generation_view`] adapts the repaired document to what progenitor can express without
//!    lying about the wire format (see its docs);
//! 2. every operation is generated alone, with only the component schemas it references, inside
//!    `catch_unwind`: an operation that fails is excluded with the generator's own reason;
//! 3. the survivors are generated together; should that fail, the set is bisected.
//!
//! The generated code is only as true as the document: it is parsed back with `syn` before it
//! is accepted, and type names that would collide are caught.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::repair::{METHODS, normalize_path, ptr_token};

/// An operation left out of the generated client, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Exclusion {
    /// operationId.
    pub operation_id: String,
    /// Upper-case method.
    pub method: String,
    /// Path template.
    pub path: String,
    /// Why it cannot be generated.
    pub reason: String,
}

/// A change [`generation_view`] made for progenitor's sake.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Adaptation {
    /// operationId (or `*` for document-wide changes).
    pub operation_id: String,
    /// What was changed and why.
    pub note: String,
}

/// One generated operation: how the Rust client exposes it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct GeneratedOperation {
    /// operationId.
    pub operation_id: String,
    /// Upper-case method.
    pub method: String,
    /// Path template.
    pub path: String,
    /// Name of the `Client` method (snake_case of the operationId).
    pub rust_method: String,
    /// The success type: `types::X`, `()` or `ByteStream`.
    pub response_type: String,
}

/// The result of generation.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// Formatted Rust source of the client (empty when nothing could be generated).
    #[serde(skip)]
    pub code: String,
    /// Operations in the client.
    pub generated: Vec<GeneratedOperation>,
    /// Operations left out, with reasons.
    pub excluded: Vec<Exclusion>,
    /// Adaptations made for the generator.
    pub adaptations: Vec<Adaptation>,
    /// A problem that stopped generation as a whole (the client is then empty).
    pub fatal: Option<String>,
}

/// Makes the repaired document something progenitor can generate from, without changing what
/// is sent on the wire:
/// - **error responses are dropped.** progenitor wants one body type for all error statuses of
///   an operation and IBKR documents several (`text/plain` 401 beside JSON 400/500, problem+json);
///   without them every error status comes back as `Error::UnexpectedResponse`, which keeps the
///   whole response, so IBKR's error text is never lost;
/// - **one success body.** When an operation documents several 2xx responses with different
///   bodies, the first 2xx with a JSON body is kept and the others dropped; those statuses also
///   arrive as `UnexpectedResponse` with their bodies intact;
/// - **component names that collide** once turned into Rust type names (`User` and `user`) are
///   renamed (`user` → `user_2`) with every `$ref` to them;
/// - operation-level `servers` are dropped (progenitor ignores them; the client takes its base
///   URL from configuration).
pub fn generation_view(doc: &Value) -> (Value, Vec<Adaptation>) {
    let mut view = doc.clone();
    let mut notes = Vec::new();
    if let Some(paths) = view.get_mut("paths").and_then(Value::as_object_mut) {
        for (_, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            item.remove("servers");
            for method in METHODS {
                let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) else {
                    continue;
                };
                let id = op
                    .get("operationId")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                op.remove("servers");
                let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                    continue;
                };
                let mut dropped_errors = Vec::new();
                let mut success_kept: Option<String> = None;
                let mut dropped_success = Vec::new();
                let codes: Vec<String> = responses.keys().cloned().collect();
                // Prefer the first 2xx whose body is JSON; otherwise the first 2xx.
                let first_json_2xx = codes
                    .iter()
                    .filter(|c| c.starts_with('2'))
                    .find(|c| has_json_body(responses.get(c.as_str())))
                    .or_else(|| codes.iter().find(|c| c.starts_with('2')))
                    .cloned();
                for code in codes {
                    if code.starts_with('2') {
                        if Some(&code) == first_json_2xx.as_ref() {
                            success_kept = Some(code);
                        } else {
                            responses.remove(&code);
                            dropped_success.push(code);
                        }
                    } else if code != "101" {
                        responses.remove(&code);
                        dropped_errors.push(code);
                    }
                }
                if responses.is_empty() {
                    // progenitor needs at least one response to know the call succeeded.
                    responses.insert(
                        "default".into(),
                        serde_json::json!({"description": "any response (body not typed)"}),
                    );
                }
                if !dropped_success.is_empty() {
                    notes.push(Adaptation {
                        operation_id: id.clone(),
                        note: format!(
                            "kept success response {} as the typed result; {} arrive untyped",
                            success_kept.unwrap_or_default(),
                            dropped_success.join(", ")
                        ),
                    });
                }
                let _ = dropped_errors;
            }
        }
    }
    notes.push(Adaptation {
        operation_id: "*".into(),
        note: "error responses are not typed: every non-2xx status returns the raw response \
               (progenitor needs one error type per operation; IBKR documents several)"
            .into(),
    });
    notes.extend(rename_colliding_components(&mut view));
    notes.extend(drop_colliding_properties(&mut view));
    (view, notes)
}

/// Properties whose Rust field names would collide (`bgColor` beside `bg_color`) make a struct
/// that does not compile. The later one is left out of the generated struct; its values are
/// still kept, in the struct's map of undeclared keys (the open-objects pass).
fn drop_colliding_properties(doc: &mut Value) -> Vec<Adaptation> {
    fn walk(v: &mut Value, ptr: &str, notes: &mut Vec<Adaptation>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Object(props)) = m.get_mut("properties") {
                    let mut seen = BTreeSet::new();
                    let dups: Vec<String> = props
                        .keys()
                        .filter(|k| !seen.insert(type_name_key(k)))
                        .cloned()
                        .collect();
                    for d in dups {
                        props.shift_remove(&d);
                        notes.push(Adaptation {
                            operation_id: "*".into(),
                            note: format!(
                                "property `{d}` of {ptr} not declared in the Rust type: its field \
                                 name collides with another property's (its values are kept with \
                                 the undeclared keys)"
                            ),
                        });
                    }
                }
                for (k, c) in m.iter_mut() {
                    if k != "example" && k != "examples" {
                        walk(c, &format!("{ptr}/{}", ptr_token(k)), notes);
                    }
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter_mut().enumerate() {
                    walk(c, &format!("{ptr}/{i}"), notes);
                }
            }
            _ => {}
        }
    }
    let mut notes = Vec::new();
    for key in ["paths", "components"] {
        if let Some(v) = doc.get_mut(key) {
            walk(v, &format!("/{key}"), &mut notes);
        }
    }
    notes
}

fn has_json_body(resp: Option<&Value>) -> bool {
    resp.and_then(|r| r.get("content"))
        .and_then(Value::as_object)
        .is_some_and(|c| {
            c.keys()
                .any(|k| k == "application/json" || k.starts_with("application/json;"))
        })
}

/// The key two names collide on once made into Rust type names.
fn type_name_key(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn rename_colliding_components(doc: &mut Value) -> Vec<Adaptation> {
    let Some(schemas) = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut renames: Vec<(String, String)> = Vec::new();
    let existing: BTreeSet<String> = schemas.keys().cloned().collect();
    for name in schemas.keys() {
        let key = type_name_key(name);
        if seen.contains_key(&key) {
            let mut n = 2;
            let mut new = format!("{name}_{n}");
            while existing.contains(&new) || seen.contains_key(&type_name_key(&new)) {
                n += 1;
                new = format!("{name}_{n}");
            }
            seen.insert(type_name_key(&new), new.clone());
            renames.push((name.clone(), new));
        } else {
            seen.insert(key, name.clone());
        }
    }
    if renames.is_empty() {
        return Vec::new();
    }
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .unwrap();
    let mut rebuilt = Map::new();
    for (k, v) in std::mem::take(schemas) {
        let new = renames
            .iter()
            .find(|(old, _)| *old == k)
            .map_or(k, |(_, n)| n.clone());
        rebuilt.insert(new, v);
    }
    *schemas = rebuilt;
    let map: BTreeMap<String, String> = renames
        .iter()
        .map(|(o, n)| {
            (
                format!("#/components/schemas/{}", ptr_token(o)),
                format!("#/components/schemas/{}", ptr_token(n)),
            )
        })
        .collect();
    rewrite_refs(doc, &map);
    renames
        .into_iter()
        .map(|(o, n)| Adaptation {
            operation_id: "*".into(),
            note: format!(
                "component schema `{o}` renamed to `{n}`: its Rust type name collides with another"
            ),
        })
        .collect()
}

fn rewrite_refs(v: &mut Value, map: &BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref")
                && let Some(new) = map.get(r.as_str())
            {
                *r = new.clone();
            }
            m.values_mut().for_each(|c| rewrite_refs(c, map));
        }
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite_refs(c, map)),
        _ => {}
    }
}

/// Collects every local `$ref` reachable from `v`, following references transitively.
fn ref_closure(doc: &Value, roots: &[&Value]) -> BTreeSet<String> {
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    out.push(r.to_string());
                }
                m.values().for_each(|c| collect(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| collect(c, out)),
            _ => {}
        }
    }
    let mut todo = Vec::new();
    roots.iter().for_each(|r| collect(r, &mut todo));
    let mut seen = BTreeSet::new();
    while let Some(r) = todo.pop() {
        if !seen.insert(r.clone()) {
            continue;
        }
        if let Some(target) = r.strip_prefix('#').and_then(|p| doc.pointer(p)) {
            collect(target, &mut todo);
        }
    }
    seen
}

/// An operation of the generation view, with what is needed to build a sub-document for it.
#[derive(Debug, Clone)]
struct ViewOp {
    id: String,
    method: &'static str,
    path: String,
}

fn view_ops(view: &Value) -> Vec<ViewOp> {
    let mut out = Vec::new();
    if let Some(paths) = view.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            for method in METHODS {
                if let Some(op) = item.get(method).and_then(Value::as_object) {
                    out.push(ViewOp {
                        id: op
                            .get("operationId")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        method,
                        path: path.clone(),
                    });
                }
            }
        }
    }
    out
}

/// A document with only `ops`, and only the components they reference.
fn sub_document(view: &Value, ops: &[&ViewOp]) -> Value {
    let mut doc = Map::new();
    for key in ["openapi", "info"] {
        if let Some(v) = view.get(key) {
            doc.insert(key.into(), v.clone());
        }
    }
    let mut paths = Map::new();
    let mut roots: Vec<&Value> = Vec::new();
    for op in ops {
        let item = &view["paths"][&op.path];
        let entry = paths
            .entry(op.path.clone())
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .unwrap();
        entry.insert(op.method.into(), item[op.method].clone());
        roots.push(&item[op.method]);
        if let Some(p) = item.get("parameters") {
            entry.insert("parameters".into(), p.clone());
            roots.push(p);
        }
    }
    doc.insert("paths".into(), Value::Object(paths));
    let refs = ref_closure(view, &roots);
    let mut components = Map::new();
    for r in refs {
        let Some(rest) = r.strip_prefix("#/components/") else {
            continue;
        };
        let Some((kind, name)) = rest.split_once('/') else {
            continue;
        };
        let name = name.replace("~1", "/").replace("~0", "~");
        if let Some(item) = view.pointer(&format!("/components/{kind}/{}", ptr_token(&name))) {
            components
                .entry(kind.to_string())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .unwrap()
                .insert(name, item.clone());
        }
    }
    doc.insert("components".into(), Value::Object(components));
    Value::Object(doc)
}

/// The progenitor settings we generate with: builder interface, merged tags, and our own
/// `ClientHooks` implementation (required, so forgetting it is a compile error) over the inner
/// type `crate::ibkr::hooks::Hooks`: every request passes through one place for pacing, logging
/// and keeping the gateway's raw reply.
pub fn settings() -> progenitor::GenerationSettings {
    let mut s = progenitor::GenerationSettings::default();
    s.with_interface(progenitor::InterfaceStyle::Builder)
        .with_tag(progenitor::TagStyle::Merged)
        .with_inner_type(quote::quote!(crate::ibkr::hooks::Hooks))
        .with_hooks(progenitor::HooksMode::Expected);
    s
}

/// Generates code for a document, catching progenitor's panics. Returns formatted Rust source.
fn try_generate(doc: &Value) -> Result<String, String> {
    let spec: openapiv3::OpenAPI = {
        let text = serde_json::to_string(doc).map_err(|e| e.to_string())?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            format!(
                "document shape not understood at `{}`: {}",
                e.path(),
                e.inner()
            )
        })?
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        progenitor::Generator::new(&settings()).generate_tokens(&spec)
    }));
    let tokens = match result {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(format!("progenitor error: {}", first_line(&e.to_string()))),
        Err(panic) => return Err(format!("progenitor panicked: {}", panic_message(&panic))),
    };
    let file: syn::File =
        syn::parse2(tokens).map_err(|e| format!("generated code does not parse: {e}"))?;
    if let Some(dup) = duplicate_type(&file) {
        return Err(format!("generated code defines type `{dup}` twice"));
    }
    if let Some(dup) = duplicate_field(&file) {
        return Err(format!(
            "generated struct `{}` declares field `{}` twice",
            dup.0, dup.1
        ));
    }
    Ok(prettyplease::unparse(&file))
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    first_line(&msg)
}

/// The first line, at most 300 characters: progenitor's messages can dump whole schemas.
fn first_line(msg: &str) -> String {
    let first = msg
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches([' ', '{']);
    match first.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &first[..i]),
        None => first.to_string(),
    }
}

fn duplicate_field(file: &syn::File) -> Option<(String, String)> {
    fn in_items(items: &[syn::Item]) -> Option<(String, String)> {
        for item in items {
            match item {
                syn::Item::Struct(st) => {
                    let mut seen = BTreeSet::new();
                    for f in &st.fields {
                        if let Some(id) = &f.ident
                            && !seen.insert(id.to_string())
                        {
                            return Some((st.ident.to_string(), id.to_string()));
                        }
                    }
                }
                syn::Item::Mod(m) => {
                    if let Some(found) = m.content.as_ref().and_then(|(_, items)| in_items(items)) {
                        return Some(found);
                    }
                }
                _ => {}
            }
        }
        None
    }
    in_items(&file.items)
}

fn duplicate_type(file: &syn::File) -> Option<String> {
    for item in &file.items {
        if let syn::Item::Mod(m) = item
            && m.ident == "types"
        {
            let mut seen = BTreeSet::new();
            for it in m.content.iter().flat_map(|(_, items)| items) {
                let name = match it {
                    syn::Item::Struct(s) => s.ident.to_string(),
                    syn::Item::Enum(e) => e.ident.to_string(),
                    syn::Item::Type(t) => t.ident.to_string(),
                    _ => continue,
                };
                if !seen.insert(name.clone()) {
                    return Some(name);
                }
            }
        }
    }
    None
}

/// Generates the client for `repaired` (already patched), keeping only operations whose id is
/// in `allow` when given. Never panics: everything that goes wrong is in the result.
pub fn generate(repaired: &Value, allow: Option<&BTreeSet<String>>) -> Generation {
    QUIET_PANICS.with(|q| q.set(true));
    let result = generate_inner(repaired, allow);
    QUIET_PANICS.with(|q| q.set(false));
    result
}

thread_local! {
    /// Set while this thread runs the generator, whose panics are expected and reported.
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once per process) a panic hook that keeps progenitor's expected panics off stderr
/// on the generating thread only; every other panic goes to the previous hook. Setting
/// `IBKR_MCP_SHOW_GENERATOR_PANICS` shows them too (with their source location).
fn install_quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        let show = std::env::var_os("IBKR_MCP_SHOW_GENERATOR_PANICS").is_some();
        std::panic::set_hook(Box::new(move |info| {
            if show || !QUIET_PANICS.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
}

fn generate_inner(repaired: &Value, allow: Option<&BTreeSet<String>>) -> Generation {
    install_quiet_hook();
    let (view, adaptations) = generation_view(repaired);
    let all = view_ops(&view);
    let wanted: Vec<&ViewOp> = all
        .iter()
        .filter(|o| allow.is_none_or(|a| a.contains(&o.id)))
        .collect();
    let mut excluded = Vec::new();
    let mut ok: Vec<&ViewOp> = Vec::new();
    for op in &wanted {
        if let Some(reason) = unexpressible(&view, op) {
            excluded.push(exclusion(op, reason));
            continue;
        }
        match try_generate(&sub_document(&view, &[op])) {
            Ok(_) => ok.push(op),
            Err(reason) => excluded.push(exclusion(op, reason)),
        }
    }
    let (code, ok) = generate_together(&view, ok, &mut excluded);
    let fatal = (code.is_empty() && !wanted.is_empty())
        .then(|| "no operation could be generated".to_string());
    // Whatever the document, the crate needs a `Client` to compile against: with no operation
    // left, it is the client of an empty document (every tool is then reported unavailable).
    let code = if code.is_empty() {
        try_generate(&json!({
            "openapi": "3.0.3",
            "info": { "title": "no usable operation", "version": "0" },
            "paths": {}
        }))
        .unwrap_or_default()
    } else {
        code
    };
    let generated = describe(&code, &ok);
    excluded.sort();
    Generation {
        code,
        generated,
        excluded,
        adaptations,
        fatal,
    }
}

/// Wire formats progenitor cannot produce faithfully. These operations are excluded up front
/// with a precise reason, rather than generated to send something IBKR does not expect.
fn unexpressible(view: &Value, op: &ViewOp) -> Option<String> {
    let item = &view["paths"][&op.path];
    let operation = &item[op.method];
    let body = operation
        .get("requestBody")
        .and_then(|b| crate::repair::resolve(view, b));
    if let Some(content) = body
        .and_then(|b| b.get("content"))
        .and_then(Value::as_object)
    {
        let supported = |ct: &str| {
            ct == "application/json"
                || ct.starts_with("application/json;")
                || ct == "application/x-www-form-urlencoded"
                || ct == "text/plain"
                || ct == "application/octet-stream"
        };
        if let Some(ct) = content.keys().find(|ct| !supported(ct)) {
            return Some(format!(
                "request body is `{ct}`, which progenitor cannot send (it would send a different \
                 content type)"
            ));
        }
    }
    let params = item
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(
            operation
                .get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        );
    for p in params {
        let Some(p) = crate::repair::resolve(view, p) else {
            continue;
        };
        let name = p.get("name").and_then(Value::as_str).unwrap_or("?");
        match p.get("in").and_then(Value::as_str) {
            Some("cookie") => {
                return Some(format!(
                    "cookie parameter `{name}`: progenitor does not send cookie parameters"
                ));
            }
            Some("query") => {
                let schema = p
                    .get("schema")
                    .and_then(|s| crate::repair::resolve(view, s));
                let is_object = schema.is_some_and(|s| {
                    s.get("type").and_then(Value::as_str) == Some("object")
                        || (s.get("type").is_none() && s.contains_key("properties"))
                });
                if is_object {
                    return Some(format!(
                        "query parameter `{name}` is an object (style form, explode {}): \
                         progenitor cannot serialize an object into a query string that way",
                        p.get("explode").and_then(Value::as_bool).unwrap_or(true)
                    ));
                }
            }
            _ => {}
        }
    }
    None
}

fn exclusion(op: &ViewOp, reason: String) -> Exclusion {
    Exclusion {
        operation_id: op.id.clone(),
        method: op.method.to_uppercase(),
        path: op.path.clone(),
        reason,
    }
}

/// Generates `ok` together; on failure, bisects to find the operations that fail in company.
fn generate_together<'a>(
    view: &Value,
    ok: Vec<&'a ViewOp>,
    excluded: &mut Vec<Exclusion>,
) -> (String, Vec<&'a ViewOp>) {
    if ok.is_empty() {
        return (String::new(), ok);
    }
    match try_generate(&sub_document(view, &ok)) {
        Ok(code) => (code, ok),
        Err(reason) if ok.len() == 1 => {
            excluded.push(exclusion(ok[0], reason));
            (String::new(), Vec::new())
        }
        Err(_) => {
            let mid = ok.len() / 2;
            let (left, right) = ok.split_at(mid);
            let (_, mut keep) = generate_together(view, left.to_vec(), excluded);
            let (_, right_keep) = generate_together(view, right.to_vec(), excluded);
            // Add the right half's survivors one at a time, so a clash between halves excludes
            // only the operation that causes it.
            for op in right_keep {
                let mut trial = keep.clone();
                trial.push(op);
                match try_generate(&sub_document(view, &trial)) {
                    Ok(_) => keep = trial,
                    Err(reason) => excluded.push(exclusion(
                        op,
                        format!("conflicts with other operations: {reason}"),
                    )),
                }
            }
            match try_generate(&sub_document(view, &keep)) {
                Ok(code) => (code, keep),
                Err(_) => (String::new(), Vec::new()),
            }
        }
    }
}

/// Reads the generated source back: which `Client` method serves which operation, and its
/// success type. Builders are matched to operations by the method and path progenitor writes in
/// each `send()` doc comment, so no guess about its naming rules is needed.
fn describe(code: &str, ops: &[&ViewOp]) -> Vec<GeneratedOperation> {
    let Ok(file) = syn::parse_file(code) else {
        return Vec::new();
    };
    // (METHOD, normalized path) -> (builder struct name, success type)
    let mut builders: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
    // builder struct name -> client method name
    let mut methods: BTreeMap<String, String> = BTreeMap::new();
    for item in &file.items {
        match item {
            syn::Item::Mod(m) if m.ident == "builder" => {
                for it in m.content.iter().flat_map(|(_, items)| items) {
                    let syn::Item::Impl(imp) = it else { continue };
                    let syn::Type::Path(tp) = &*imp.self_ty else {
                        continue;
                    };
                    let Some(name) = tp.path.segments.last().map(|s| s.ident.to_string()) else {
                        continue;
                    };
                    for ii in &imp.items {
                        let syn::ImplItem::Fn(f) = ii else { continue };
                        if f.sig.ident != "send" {
                            continue;
                        }
                        let syn::ReturnType::Type(_, ty) = &f.sig.output else {
                            continue;
                        };
                        let (Some(t), Some((m, p))) = (response_value_arg(ty), send_doc(&f.attrs))
                        else {
                            continue;
                        };
                        builders.insert((m, normalize_path(&p)), (name.clone(), t));
                    }
                }
            }
            syn::Item::Impl(imp) if imp.trait_.is_none() => {
                let syn::Type::Path(tp) = &*imp.self_ty else {
                    continue;
                };
                if tp.path.segments.last().is_none_or(|s| s.ident != "Client") {
                    continue;
                }
                for ii in &imp.items {
                    let syn::ImplItem::Fn(f) = ii else { continue };
                    let syn::ReturnType::Type(_, ty) = &f.sig.output else {
                        continue;
                    };
                    let syn::Type::Path(p) = &**ty else { continue };
                    if p.path.segments.len() == 2 && p.path.segments[0].ident == "builder" {
                        methods.insert(
                            p.path.segments[1].ident.to_string(),
                            f.sig.ident.to_string(),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    let mut out: Vec<GeneratedOperation> = ops
        .iter()
        .filter_map(|op| {
            let key = (op.method.to_uppercase(), normalize_path(&op.path));
            let (builder, response_type) = builders.get(&key)?;
            Some(GeneratedOperation {
                operation_id: op.id.clone(),
                method: op.method.to_uppercase(),
                path: op.path.clone(),
                rust_method: methods.get(builder)?.clone(),
                response_type: response_type.clone(),
            })
        })
        .collect();
    out.sort();
    out
}

/// "Sends a `GET` request to `/x`" → ("GET", "/x").
fn send_doc(attrs: &[syn::Attribute]) -> Option<(String, String)> {
    attrs.iter().find_map(|a| {
        let syn::Meta::NameValue(nv) = &a.meta else {
            return None;
        };
        let syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) = &nv.value
        else {
            return None;
        };
        let text = s.value();
        let rest = text.trim().strip_prefix("Sends a `")?;
        let (method, rest) = rest.split_once('`')?;
        let path = rest.strip_prefix(" request to `")?.split('`').next()?;
        Some((method.to_string(), path.to_string()))
    })
}

/// `Result<ResponseValue<T>, Error<..>>` → the text of `T`.
fn response_value_arg(ty: &syn::Type) -> Option<String> {
    fn generic_args(seg: &syn::PathSegment) -> Vec<&syn::Type> {
        match &seg.arguments {
            syn::PathArguments::AngleBracketed(a) => a
                .args
                .iter()
                .filter_map(|g| {
                    if let syn::GenericArgument::Type(t) = g {
                        Some(t)
                    } else {
                        None
                    }
                })
                .collect(),
            _ => Vec::new(),
        }
    }
    let syn::Type::Path(p) = ty else { return None };
    let result = p.path.segments.last()?;
    let ok = *generic_args(result).first()?;
    let syn::Type::Path(rv) = ok else { return None };
    let rv_seg = rv.path.segments.last()?;
    if rv_seg.ident != "ResponseValue" {
        return None;
    }
    let inner = *generic_args(rv_seg).first()?;
    Some(
        quote_type(inner)
            .replace(' ', "")
            .trim_start_matches("::")
            .to_string(),
    )
}

fn quote_type(t: &syn::Type) -> String {
    use quote::ToTokens as _;
    t.to_token_stream().to_string()
}
