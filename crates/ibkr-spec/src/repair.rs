//! The spec repair pipeline: locate IBKR's OpenAPI document, apply our RFC 6902 patches, run the
//! built-in passes, count what the document holds and check it for the defects we know of.
//!
//! Used by `build.rs` and by the server's `spec patch|report` commands, so the build and the
//! commands never disagree. It needs no code generator. It never panics on a document: every
//! defect becomes a report entry.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

/// The HTTP methods an OpenAPI path item can hold, in the order we report them.
pub const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Environment variable naming the document to build from (a file path).
pub const SPEC_ENV: &str = "IBKR_OPENAPI_SPEC";

/// Where the document we build from came from.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SpecOrigin {
    /// Named by the `IBKR_OPENAPI_SPEC` environment variable.
    Env,
    /// Named by a `--spec` command-line argument.
    Argument,
    /// Downloaded by `scripts/fetch-spec` into `spec/downloads/`.
    Download,
    /// The team's shared copy beside the checkout (`../shared/ibkr-spec/<pinned>/`).
    Shared,
}

/// A located document.
#[derive(Debug, Clone, Serialize)]
pub struct SpecInput {
    /// Path of the document.
    pub path: PathBuf,
    /// How it was found.
    pub origin: SpecOrigin,
}

/// Finds the document to build from: `IBKR_OPENAPI_SPEC` (a path), then the gitignored download
/// location `spec/downloads/openapi.json`, then the shared copy of the pinned version beside the
/// checkout. The error is a paragraph telling the user how to get a document.
pub fn locate_spec(manifest_dir: &Path, env_value: Option<&str>) -> Result<SpecInput, String> {
    if let Some(value) = env_value.filter(|v| !v.trim().is_empty()) {
        let path = PathBuf::from(value);
        let path = if path.is_relative() {
            manifest_dir.join(path)
        } else {
            path
        };
        if path.is_file() {
            return Ok(SpecInput {
                path,
                origin: SpecOrigin::Env,
            });
        }
        return Err(format!(
            "{SPEC_ENV} is set to `{value}`, but there is no file at {}. Point {SPEC_ENV} at \
             IBKR's OpenAPI document (JSON or YAML), or unset it to use the pinned {} \
             document.",
            path.display(),
            crate::pin::pinned().version
        ));
    }
    let download = manifest_dir
        .join("spec")
        .join("downloads")
        .join("openapi.json");
    if download.is_file() {
        return Ok(SpecInput {
            path: download,
            origin: SpecOrigin::Download,
        });
    }
    let shared = manifest_dir
        .join("..")
        .join("shared")
        .join("ibkr-spec")
        .join(&crate::pin::pinned().version)
        .join("openapi.json");
    if shared.is_file() {
        return Ok(SpecInput {
            path: shared,
            origin: SpecOrigin::Shared,
        });
    }
    Err(format!(
        "IBKR's OpenAPI document was not found, and it is not part of this repository (it is \
         IBKR's text). The build looks, in order, for: the file named by the {SPEC_ENV} \
         environment variable; {}; {}. To get it, run `scripts/fetch-spec` (downloads the live \
         document from IBKR into spec/downloads/ and tells you whether it is the pinned version \
         {}), or set {SPEC_ENV}=/path/to/openapi.json and build again.",
        download.display(),
        shared.display(),
        crate::pin::pinned().version
    ))
}

/// Parses a document given as JSON or YAML text.
pub fn parse_document(bytes: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("the document is not UTF-8: {e}"))?;
    let json_error = match serde_json::from_str::<Value>(text) {
        Ok(v) => return check_root(v),
        Err(e) => e,
    };
    if text.trim_start().starts_with('{') {
        return Err(format!("the document is not valid JSON: {json_error}"));
    }
    match yaml_serde::from_str::<Value>(text) {
        Ok(v) => check_root(v),
        Err(e) => Err(format!(
            "the document is neither JSON ({json_error}) nor YAML ({e})"
        )),
    }
}

fn check_root(doc: Value) -> Result<Value, String> {
    let Some(obj) = doc.as_object() else {
        return Err("the document is not a JSON/YAML object".into());
    };
    match obj.get("openapi").and_then(Value::as_str) {
        Some(v) if v.starts_with("3.0.") => Ok(doc),
        Some(v) => Err(format!(
            "the document says `openapi: {v}`; the pipeline (and progenitor) handle OpenAPI 3.0.x only"
        )),
        None => {
            Err("the document has no `openapi` version field; is it an OpenAPI document?".into())
        }
    }
}

/// Lower-case hex sha256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// One patch file of `patches/`.
#[derive(Debug, Clone)]
pub struct PatchFile {
    /// File name, e.g. `0003-add-missing-parameter-schemas.json`.
    pub name: String,
    /// The operations, or why the file could not be read as an RFC 6902 patch.
    pub ops: Result<Vec<json_patch::PatchOperation>, String>,
}

/// Reads every `NNNN-*.json|yaml|yml` file of a folder, sorted by name. Other files (README.md)
/// are ignored. A file that is not a valid patch is returned with its error, not dropped.
pub fn load_patches(dir: &Path) -> Result<Vec<PatchFile>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the patch folder {}: {e}", dir.display()))?;
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, _)| is_patch_file_name(name))
        .collect();
    files.sort();
    Ok(files
        .into_iter()
        .map(|(name, path)| {
            let ops = std::fs::read(&path)
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|bytes| parse_patch(&name, &bytes));
            PatchFile { name, ops }
        })
        .collect())
}

/// Whether a file name is a patch: four digits, a dash, and a `.json`/`.yaml`/`.yml` extension.
pub fn is_patch_file_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() > 5
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && (name.ends_with(".json") || name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Parses one patch file (JSON, or YAML when the name says so).
pub fn parse_patch(name: &str, bytes: &[u8]) -> Result<Vec<json_patch::PatchOperation>, String> {
    let value: Value = if name.ends_with(".json") {
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?
    } else {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
        yaml_serde::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?
    };
    let ops: Vec<json_patch::PatchOperation> = serde_json::from_value(value)
        .map_err(|e| format!("not an RFC 6902 patch (an array of operations): {e}"))?;
    if ops.is_empty() {
        return Err("the patch is empty".into());
    }
    if !matches!(ops[0], json_patch::PatchOperation::Test(_)) {
        return Err(
            "the patch does not start with a `test` guard proving its defect is present".into(),
        );
    }
    if ops
        .iter()
        .all(|op| matches!(op, json_patch::PatchOperation::Test(_)))
    {
        return Err("the patch has a guard but no fix operations".into());
    }
    Ok(ops)
}

/// What happened to one patch.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PatchStatus {
    /// Guard held and every fix operation applied.
    Applied,
    /// A guard `test` failed: the defect is gone (or moved) in this document, so the patch is no
    /// longer needed or no longer applies. Nothing was changed.
    Skipped {
        /// Which guard failed.
        reason: String,
    },
    /// The guard held but a fix operation failed, or the file is not a valid patch. The document
    /// was left as it was before this patch.
    Failed {
        /// What went wrong.
        reason: String,
    },
}

/// The outcome of one patch file.
#[derive(Debug, Clone, Serialize)]
pub struct PatchOutcome {
    /// File name.
    pub name: String,
    /// Number of operations in the file (guard included).
    pub operations: usize,
    /// What happened.
    #[serde(flatten)]
    pub status: PatchStatus,
}

/// Applies patches in order. Each is all-or-nothing: guard first, then the fix, atomically.
pub fn apply_patches(doc: &mut Value, patches: &[PatchFile]) -> Vec<PatchOutcome> {
    patches
        .iter()
        .map(|p| {
            let (operations, status) = match &p.ops {
                Err(e) => (
                    0,
                    PatchStatus::Failed {
                        reason: format!("invalid patch file: {e}"),
                    },
                ),
                Ok(ops) => (ops.len(), apply_one(doc, ops)),
            };
            PatchOutcome {
                name: p.name.clone(),
                operations,
                status,
            }
        })
        .collect()
}

fn apply_one(doc: &mut Value, ops: &[json_patch::PatchOperation]) -> PatchStatus {
    let guard_len = ops
        .iter()
        .take_while(|op| matches!(op, json_patch::PatchOperation::Test(_)))
        .count();
    let (guard, fix) = ops.split_at(guard_len);
    if let Err(e) = json_patch::patch(doc, guard) {
        return PatchStatus::Skipped {
            reason: format!("guard failed: {e}"),
        };
    }
    // Fix operations run one at a time on a copy, committed only if all succeed. A `test`
    // cannot prove that something is absent, and RFC 6902 `add` silently replaces an existing
    // object member; so an `add` whose target already exists means the document now has what
    // the patch meant to add (IBKR fixed or changed it) and the patch no longer applies. Fixes
    // that mean to replace use `replace`.
    let mut work = doc.clone();
    for (i, op) in fix.iter().enumerate() {
        let n = i + guard_len;
        if let json_patch::PatchOperation::Add(add) = op
            && adds_over_existing_member(&work, add.path.as_str())
        {
            return PatchStatus::Skipped {
                reason: format!(
                    "operation #{n} would overwrite `{}`, which the document already defines",
                    add.path
                ),
            };
        }
        if let Err(e) = json_patch::patch(&mut work, std::slice::from_ref(op)) {
            return PatchStatus::Failed {
                reason: format!("fix operation #{n} failed: {e}"),
            };
        }
    }
    *doc = work;
    PatchStatus::Applied
}

/// Whether `pointer` names an existing member of an object (array `add`s insert, never replace).
fn adds_over_existing_member(doc: &Value, pointer: &str) -> bool {
    let Some((parent, _)) = pointer.rsplit_once('/') else {
        return false;
    };
    doc.pointer(parent).is_some_and(Value::is_object) && doc.pointer(pointer).is_some()
}

/// Counts of what a document holds; compared before and after repair to prove nothing was lost.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Inventory {
    /// Operations (method + path).
    pub operations: usize,
    /// Parameters of operations and path items (references counted once where used).
    pub parameters: usize,
    /// `example` values and entries of `examples` maps, anywhere in the document.
    pub examples: usize,
    /// Component schemas.
    pub schemas: usize,
}

/// Counts operations, parameters, examples and component schemas.
pub fn inventory(doc: &Value) -> Inventory {
    let mut inv = Inventory::default();
    for (_, item) in path_items(doc) {
        if let Some(params) = item.get("parameters").and_then(Value::as_array) {
            inv.parameters += params.len();
        }
        for method in METHODS {
            if let Some(op) = item.get(method).filter(|o| o.is_object()) {
                inv.operations += 1;
                inv.parameters += op
                    .get("parameters")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
            }
        }
    }
    inv.examples = count_examples(doc, false);
    inv.schemas = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .map_or(0, Map::len);
    inv
}

fn count_examples(v: &Value, in_properties: bool) -> usize {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, child)| {
                // A property *named* `example` inside `properties` is not an example.
                let here = if in_properties {
                    0
                } else {
                    match (k.as_str(), child) {
                        ("example", _) => 1,
                        ("examples", Value::Object(ex)) => ex.len(),
                        ("examples", Value::Array(ex)) => ex.len(),
                        _ => 0,
                    }
                };
                let nested = if !in_properties && (k == "example" || k == "examples") {
                    0
                } else {
                    count_examples(child, k == "properties" && !in_properties)
                };
                here + nested
            })
            .sum(),
        Value::Array(a) => a.iter().map(|c| count_examples(c, false)).sum(),
        _ => 0,
    }
}

fn path_items(doc: &Value) -> impl Iterator<Item = (&String, &Map<String, Value>)> {
    doc.get("paths")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|paths| paths.iter())
        .filter_map(|(p, item)| item.as_object().map(|i| (p, i)))
}

/// One operation of a document.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct OperationRef {
    /// Lower-case HTTP method.
    pub method: String,
    /// Path template as written in the document.
    pub path: String,
    /// `operationId`, if the document has one.
    pub operation_id: Option<String>,
}

/// Lists every operation in document order.
pub fn operations(doc: &Value) -> Vec<OperationRef> {
    let mut out = Vec::new();
    for (path, item) in path_items(doc) {
        for method in METHODS {
            if let Some(op) = item.get(method).and_then(Value::as_object) {
                out.push(OperationRef {
                    method: method.to_string(),
                    path: path.clone(),
                    operation_id: op
                        .get("operationId")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                });
            }
        }
    }
    out
}

/// The operationId naming rule for operations that have none: the lower-case HTTP method, then
/// every path segment, joined with `_` and put in snake_case; a template variable `{accountId}`
/// contributes its name (`account_id`). Examples: `GET /iserver/marketdata/snapshot` →
/// `get_iserver_marketdata_snapshot`; `POST /iserver/account/{accountId}/orders/whatif` →
/// `post_iserver_account_account_id_orders_whatif`. The ids become Rust method names; tool names
/// are chosen separately (spec/tools.toml), so they stay stable even if IBKR renames a path.
pub fn operation_id_for(method: &str, path: &str) -> String {
    let mut parts = vec![method.to_ascii_lowercase()];
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let seg = seg.trim_start_matches('{').trim_end_matches('}');
        let snake = to_snake(seg);
        if !snake.is_empty() {
            parts.push(snake);
        }
    }
    parts.join("_")
}

/// snake_case: splits on non-alphanumerics and on lower→upper case changes.
pub fn to_snake(s: &str) -> String {
    let mut out = String::new();
    let mut prev: Option<char> = None;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase()
                && prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
                && !out.ends_with('_')
            {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
        prev = Some(c);
    }
    out.trim_end_matches('_').to_string()
}

/// What one built-in pass changed.
#[derive(Debug, Clone, Serialize)]
pub struct PassOutcome {
    /// Pass name.
    pub name: &'static str,
    /// Number of places changed.
    pub changes: usize,
    /// Notable details (e.g. renamed duplicates).
    pub notes: Vec<String>,
}

/// The built-in passes, run after the patches on every document. They are rules, not
/// version-specific fixes, so they live in code:
/// - `operation-ids`: gives every operation without an `operationId` one by
///   [`operation_id_for`]; a duplicate id is made unique with a numeric suffix (and noted);
/// - `open-objects`: every object schema with `properties` and `additionalProperties` absent or
///   `true` gets `additionalProperties: {}`, so generated types keep keys the schema does not
///   declare instead of silently dropping them (typify drops them for `true`);
/// - `null-values`: a `null` where the OpenAPI model wants a string, an object or a list
///   (a summary, a parameter in a list, a response in a map, a property schema) is removed, so
///   one stray null cannot make the whole document unreadable to the generator; nulls in data
///   (`example`, `examples`, `default`, `enum`, `const`, `x-*`) are values and stay;
/// - `dangling-refs`: a `$ref` to a component that does not exist (a renamed schema) becomes an
///   open schema `{}` (any JSON) when it stands for a schema, and is removed when it stands for
///   a parameter, response, request body or header, each noted with where it was;
/// - `text-parameters`: a path, query or header parameter whose schema says nothing about its
///   type gets `type: string`. It travels as text anyway; left untyped, the generated client
///   takes any JSON value and writes it into the URL as JSON (`"1"` with its quotes).
pub fn builtin_passes(doc: &mut Value) -> Vec<PassOutcome> {
    vec![
        pass_null_values(doc),
        pass_dangling_refs(doc),
        pass_operation_ids(doc),
        pass_open_objects(doc),
        pass_text_parameters(doc),
    ]
}

/// Keys whose values are data (any JSON, null included), not parts of the OpenAPI model.
fn is_data_key(k: &str) -> bool {
    matches!(
        k,
        "example" | "examples" | "default" | "enum" | "const" | "value"
    ) || k.starts_with("x-")
}

fn pass_null_values(doc: &mut Value) -> PassOutcome {
    fn walk(v: &mut Value, at: &str, notes: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                let nulls: Vec<String> = m
                    .iter()
                    .filter(|(k, v)| v.is_null() && !is_data_key(k))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in nulls {
                    m.remove(&k);
                    notes.push(format!("{at}/{}: null removed", ptr_token(&k)));
                }
                for (k, child) in m.iter_mut() {
                    if !is_data_key(k) {
                        walk(child, &format!("{at}/{}", ptr_token(k)), notes);
                    }
                }
            }
            Value::Array(a) => {
                let before = a.len();
                let mut i = 0;
                a.retain(|item| {
                    let keep = !item.is_null();
                    if !keep {
                        notes.push(format!("{at}/{i}: null removed from the list"));
                    }
                    i += 1;
                    keep
                });
                debug_assert!(a.len() <= before);
                for (i, child) in a.iter_mut().enumerate() {
                    walk(child, &format!("{at}/{i}"), notes);
                }
            }
            _ => {}
        }
    }
    let mut notes = Vec::new();
    walk(doc, "", &mut notes);
    PassOutcome {
        name: "null-values",
        changes: notes.len(),
        notes,
    }
}

fn pass_dangling_refs(doc: &mut Value) -> PassOutcome {
    fn dangling(doc: &Value, v: &Value) -> Option<String> {
        let r = v.get("$ref")?.as_str()?;
        let target = r.strip_prefix('#')?;
        doc.pointer(target).is_none().then(|| r.to_string())
    }
    // Pointers of every object holding a dangling `$ref`, found on an unchanged document.
    fn find(doc: &Value, v: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = dangling(doc, v) {
                    out.push((at.to_string(), r));
                    return;
                }
                for (k, child) in m {
                    if !is_data_key(k) {
                        find(doc, child, &format!("{at}/{}", ptr_token(k)), out);
                    }
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    find(doc, child, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    find(doc, doc, "", &mut found);
    let mut notes = Vec::new();
    // Deepest and last first, so removing a list element does not shift the others' pointers.
    found.sort_by(|a, b| b.0.cmp(&a.0));
    for (at, r) in found {
        let is_schema = r.starts_with("#/components/schemas/");
        if is_schema {
            if let Some(slot) = doc.pointer_mut(&at) {
                *slot = Value::Object(Map::new());
            }
            notes.push(format!(
                "{at}: `{r}` does not exist; any JSON accepted instead"
            ));
            continue;
        }
        let (parent, last) = at.rsplit_once('/').unwrap_or(("", &at));
        match doc.pointer_mut(parent) {
            Some(Value::Array(a)) => {
                if let Ok(i) = last.parse::<usize>()
                    && i < a.len()
                {
                    a.remove(i);
                }
            }
            Some(Value::Object(m)) => {
                m.remove(&last.replace("~1", "/").replace("~0", "~"));
            }
            _ => continue,
        }
        notes.push(format!("{at}: `{r}` does not exist; removed"));
    }
    PassOutcome {
        name: "dangling-refs",
        changes: notes.len(),
        notes,
    }
}

fn pass_text_parameters(doc: &mut Value) -> PassOutcome {
    const TYPED_BY: &[&str] = &[
        "type", "$ref", "enum", "const", "anyOf", "oneOf", "allOf", "not",
    ];
    fn fix(list: &mut Value, at: &str, changes: &mut usize, notes: &mut Vec<String>) {
        let params: Box<dyn Iterator<Item = &mut Value>> = match list {
            Value::Array(a) => Box::new(a.iter_mut()),
            Value::Object(m) => Box::new(m.values_mut()),
            _ => return,
        };
        for p in params {
            let Some(p) = p.as_object_mut() else {
                continue;
            };
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let in_text = matches!(
                p.get("in").and_then(Value::as_str),
                Some("path" | "query" | "header")
            );
            let Some(schema) = p.get_mut("schema").and_then(Value::as_object_mut) else {
                continue;
            };
            if in_text && !TYPED_BY.iter().any(|k| schema.contains_key(*k)) {
                schema.insert("type".into(), Value::String("string".into()));
                *changes += 1;
                notes.push(format!("{at}: parameter `{name}` typed as string"));
            }
        }
    }
    let mut changes = 0;
    let mut notes = Vec::new();
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            if let Some(list) = item.get_mut("parameters") {
                fix(list, path, &mut changes, &mut notes);
            }
            for method in METHODS {
                if let Some(list) = item.get_mut(method).and_then(|op| op.get_mut("parameters")) {
                    fix(
                        list,
                        &format!("{} {path}", method.to_uppercase()),
                        &mut changes,
                        &mut notes,
                    );
                }
            }
        }
    }
    if let Some(list) = doc.pointer_mut("/components/parameters") {
        fix(list, "components/parameters", &mut changes, &mut notes);
    }
    PassOutcome {
        name: "text-parameters",
        changes,
        notes,
    }
}

fn pass_operation_ids(doc: &mut Value) -> PassOutcome {
    let mut seen = BTreeSet::new();
    let mut changes = 0;
    let mut notes = Vec::new();
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return PassOutcome {
            name: "operation-ids",
            changes,
            notes,
        };
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for method in METHODS {
            let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) else {
                continue;
            };
            let existing = op
                .get("operationId")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let base = existing
                .clone()
                .unwrap_or_else(|| operation_id_for(method, path));
            let mut id = base.clone();
            let mut n = 2;
            while !seen.insert(id.clone()) {
                id = format!("{base}_{n}");
                n += 1;
            }
            if existing.as_deref() != Some(id.as_str()) {
                if let Some(old) = &existing {
                    notes.push(format!(
                        "{} {path}: duplicate operationId `{old}` renamed to `{id}`",
                        method.to_uppercase()
                    ));
                }
                op.insert("operationId".into(), Value::String(id));
                changes += 1;
            }
        }
    }
    PassOutcome {
        name: "operation-ids",
        changes,
        notes,
    }
}

fn pass_open_objects(doc: &mut Value) -> PassOutcome {
    // `names` is true for maps whose keys are names, not schema keywords (`properties`,
    // `components/schemas`, ...): such a map is never itself a schema.
    fn walk(v: &mut Value, names: bool, changes: &mut usize) {
        match v {
            Value::Object(m) => {
                if !names {
                    let has_props = m.get("properties").is_some_and(Value::is_object);
                    let object_typed = m.get("type").is_none_or(|t| t == "object");
                    if has_props && object_typed && !m.contains_key("$ref") {
                        match m.get("additionalProperties") {
                            None | Some(Value::Bool(true)) => {
                                m.insert("additionalProperties".into(), Value::Object(Map::new()));
                                *changes += 1;
                            }
                            _ => {}
                        }
                    }
                }
                for (k, child) in m.iter_mut() {
                    // Examples are data, not schemas.
                    if !names && (k == "example" || k == "examples" || k.starts_with("x-")) {
                        continue;
                    }
                    let child_names = !names
                        && matches!(
                            k.as_str(),
                            "properties"
                                | "schemas"
                                | "responses"
                                | "parameters"
                                | "paths"
                                | "content"
                                | "requestBodies"
                                | "headers"
                                | "callbacks"
                        );
                    walk(child, child_names, changes);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|c| walk(c, false, changes)),
            _ => {}
        }
    }
    let mut changes = 0;
    if let Some(paths) = doc.get_mut("paths") {
        walk(paths, true, &mut changes);
    }
    if let Some(components) = doc.get_mut("components").and_then(Value::as_object_mut) {
        for (kind, items) in components.iter_mut() {
            // `examples` hold data, not schemas; `x-*` keys are extensions.
            if kind == "examples" || kind.starts_with("x-") {
                continue;
            }
            walk(items, true, &mut changes);
        }
    }
    PassOutcome {
        name: "open-objects",
        changes,
        notes: Vec::new(),
    }
}

/// A problem found by our own checks.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// Check name, e.g. `path-parameter-mismatch`.
    pub check: &'static str,
    /// JSON pointer of the offending node.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// Escapes one JSON pointer token.
pub fn ptr_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Our own structural checks: the defect kinds that stop code generators or make a document
/// invalid, as measured on IBKR's documents. Standard validators (run by CI) are the authority;
/// these give a fast, dependency-free answer in `spec report` and in the build.
pub fn check(doc: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    for (path, item) in path_items(doc) {
        let item_ptr = format!("/paths/{}", ptr_token(path));
        let template: BTreeSet<String> = template_vars(path);
        let path_level = item
            .get("parameters")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for method in METHODS {
            let Some(op) = item.get(method).and_then(Value::as_object) else {
                continue;
            };
            let op_ptr = format!("{item_ptr}/{method}");
            match op.get("operationId").and_then(Value::as_str) {
                None => out.push(Problem {
                    check: "missing-operation-id",
                    pointer: op_ptr.clone(),
                    message: "operation has no operationId".into(),
                }),
                Some(id) => {
                    if let Some(first) = ids.insert(id.to_string(), op_ptr.clone()) {
                        out.push(Problem {
                            check: "duplicate-operation-id",
                            pointer: op_ptr.clone(),
                            message: format!("operationId `{id}` is also used by {first}"),
                        });
                    }
                }
            }
            let own = op
                .get("parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut declared = BTreeSet::new();
            for (i, p) in path_level.iter().chain(own.iter()).enumerate() {
                let p_ptr = if i < path_level.len() {
                    format!("{item_ptr}/parameters/{i}")
                } else {
                    format!("{op_ptr}/parameters/{}", i - path_level.len())
                };
                let Some(p) = resolve(doc, p) else {
                    out.push(Problem {
                        check: "unresolved-ref",
                        pointer: p_ptr,
                        message: "parameter reference does not resolve".into(),
                    });
                    continue;
                };
                let name = p.get("name").and_then(Value::as_str).unwrap_or("");
                let location = p.get("in").and_then(Value::as_str).unwrap_or("");
                if !p.contains_key("schema") && !p.contains_key("content") {
                    out.push(Problem {
                        check: "parameter-without-schema",
                        pointer: p_ptr.clone(),
                        message: format!("parameter `{name}` has neither `schema` nor `content`"),
                    });
                }
                if location == "path" {
                    declared.insert(name.to_string());
                    if p.get("required") != Some(&Value::Bool(true)) {
                        out.push(Problem {
                            check: "path-parameter-not-required",
                            pointer: p_ptr.clone(),
                            message: format!("path parameter `{name}` is not `required: true`"),
                        });
                    }
                    if !template.contains(name) {
                        out.push(Problem {
                            check: "path-parameter-mismatch",
                            pointer: p_ptr.clone(),
                            message: format!("path parameter `{name}` is not in the path template"),
                        });
                    }
                }
                if location == "cookie" {
                    out.push(Problem {
                        check: "cookie-parameter",
                        pointer: p_ptr.clone(),
                        message: format!(
                            "cookie parameter `{name}` (code generators skip the operation)"
                        ),
                    });
                }
            }
            for var in template.difference(&declared) {
                out.push(Problem {
                    check: "path-parameter-mismatch",
                    pointer: op_ptr.clone(),
                    message: format!("template variable `{{{var}}}` has no path parameter"),
                });
            }
        }
    }
    walk_schemas(doc, "", doc, &mut out);
    out.sort();
    out
}

fn template_vars(path: &str) -> BTreeSet<String> {
    path.split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(v, _)| v.to_string()))
        .collect()
}

/// An operation's parameters as written: its path item's first, then its own (an operation's
/// parameter overrides a path item's with the same name and place).
pub fn parameter_list<'a>(path_item: &'a Value, op: &'a Value) -> impl Iterator<Item = &'a Value> {
    let list = |v: &'a Value| {
        v.get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    };
    list(path_item).chain(list(op))
}

/// Resolves a `$ref` (local references only); non-references are returned as they are.
pub fn resolve<'a>(doc: &'a Value, v: &'a Value) -> Option<&'a Map<String, Value>> {
    let mut cur = v;
    for _ in 0..16 {
        match cur.get("$ref").and_then(Value::as_str) {
            Some(r) => cur = doc.pointer(r.strip_prefix('#')?)?,
            None => return cur.as_object(),
        }
    }
    None
}

fn walk_schemas(doc: &Value, ptr: &str, v: &Value, out: &mut Vec<Problem>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                let siblings: Vec<&str> = m
                    .keys()
                    .filter(|k| *k != "$ref")
                    .map(String::as_str)
                    .collect();
                if !siblings.is_empty() {
                    out.push(Problem {
                        check: "ref-with-siblings",
                        pointer: ptr.to_string(),
                        message: format!(
                            "`$ref` has sibling keys ignored by OpenAPI 3.0: {}",
                            siblings.join(", ")
                        ),
                    });
                }
                let resolves = r
                    .strip_prefix('#')
                    .is_some_and(|p| doc.pointer(p).is_some());
                if !resolves && r.starts_with('#') {
                    out.push(Problem {
                        check: "unresolved-ref",
                        pointer: ptr.to_string(),
                        message: format!("`$ref: {r}` does not resolve"),
                    });
                }
            }
            let ty = m.get("type").and_then(Value::as_str);
            if ty == Some("array") && !m.contains_key("items") && !m.contains_key("$ref") {
                out.push(Problem {
                    check: "array-without-items",
                    pointer: ptr.to_string(),
                    message: "`type: array` without `items`".into(),
                });
            }
            if ty == Some("array") && m.contains_key("properties") {
                out.push(Problem {
                    check: "array-with-properties",
                    pointer: ptr.to_string(),
                    message: "`type: array` carries `properties` (object members on an array)"
                        .into(),
                });
            }
            if m.get("nullable") == Some(&Value::Bool(true))
                && ty.is_none()
                && !m.contains_key("$ref")
                && !m.contains_key("oneOf")
                && !m.contains_key("anyOf")
                && !m.contains_key("allOf")
            {
                out.push(Problem {
                    check: "nullable-without-type",
                    pointer: ptr.to_string(),
                    message: "`nullable: true` without `type`".into(),
                });
            }
            if let (Some(ty), Some(Value::Array(values))) = (ty, m.get("enum")) {
                for val in values {
                    let ok = match ty {
                        "string" => val.is_string(),
                        "integer" => val.is_i64() || val.is_u64(),
                        "number" => val.is_number(),
                        "boolean" => val.is_boolean(),
                        _ => true,
                    } || val.is_null();
                    if !ok {
                        out.push(Problem {
                            check: "enum-type-mismatch",
                            pointer: ptr.to_string(),
                            message: format!("enum value {val} is not of type `{ty}`"),
                        });
                        break;
                    }
                }
            }
            for (k, child) in m {
                if k == "example" || k == "examples" || k.starts_with("x-") {
                    continue;
                }
                walk_schemas(doc, &format!("{ptr}/{}", ptr_token(k)), child, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                walk_schemas(doc, &format!("{ptr}/{i}"), c, out);
            }
        }
        _ => {}
    }
}

/// Everything the repair of one document produced.
#[derive(Debug, Clone, Serialize)]
pub struct Repaired {
    /// The repaired document.
    #[serde(skip)]
    pub doc: Value,
    /// `info.version` of the input document.
    pub version: String,
    /// sha256 of the input bytes.
    pub sha256: String,
    /// Whether this is the pinned version (by hash).
    pub pinned: bool,
    /// Counts before patching.
    pub before: Inventory,
    /// Counts after patching and passes.
    pub after: Inventory,
    /// One entry per patch file.
    pub patches: Vec<PatchOutcome>,
    /// One entry per built-in pass.
    pub passes: Vec<PassOutcome>,
    /// Problems our checks find in the input document.
    pub problems_before: Vec<Problem>,
    /// Problems our checks still find after repair.
    pub problems_after: Vec<Problem>,
}

/// Runs the whole repair: parse, patch, passes, inventory and checks.
pub fn repair(bytes: &[u8], patches: &[PatchFile]) -> Result<Repaired, String> {
    let mut doc = parse_document(bytes)?;
    let sha256 = sha256_hex(bytes);
    let version = doc
        .pointer("/info/version")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let before = inventory(&doc);
    let problems_before = check(&doc);
    let patches = apply_patches(&mut doc, patches);
    let passes = builtin_passes(&mut doc);
    let after = inventory(&doc);
    let problems_after = check(&doc);
    Ok(Repaired {
        pinned: sha256 == crate::pin::pinned().sha256,
        doc,
        version,
        sha256,
        before,
        after,
        patches,
        passes,
        problems_before,
        problems_after,
    })
}

/// Counts problems per check name.
pub fn count_by_check(problems: &[Problem]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for p in problems {
        *m.entry(p.check).or_insert(0) += 1;
    }
    m
}

/// `/a/{x}/b` → `/a/{}/b`: path templates compared without their parameter names.
pub fn normalize_path(p: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in p.chars() {
        match c {
            '{' => {
                depth += 1;
                out.push_str("{}");
            }
            '}' => depth -= 1,
            _ if depth > 0 => {}
            _ => out.push(c),
        }
    }
    out
}
