//! The MCP tool table: the allowlist (`spec/tools.toml`) joined with the repaired document and
//! the generated client.
//!
//! Compiled by `build.rs` (through `#[path]`) and by the library, like its siblings `repair`,
//! `generate` and `tool_schema`. For every allowlisted operation that the client generated, it
//! records what the MCP layer needs: the tool's name, toolset, annotations and description, its
//! input schema (from [`super::tool_schema`]), a tolerant output schema, and how each argument
//! maps onto a setter of progenitor's builder and the Rust type that setter takes. `build.rs`
//! turns the table into data (`tools.json`) and into an invocation of the `ibkr_tools!` macro
//! (`tool_specs.rs`), so a tool whose operation, setter or type does not exist in the generated
//! client is a compile error, and an allowlisted operation missing from a document is reported,
//! not fatal.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::generate::Generation;
use super::repair::{resolve, to_snake};
use super::tool_schema;

/// One `[[tool]]` entry of `spec/tools.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    /// Stable snake_case tool name.
    pub name: String,
    /// operationId in the repaired document.
    pub operation: String,
    /// Toolset the tool belongs to.
    pub toolset: String,
    /// MCP `readOnlyHint`.
    pub read_only: bool,
    /// MCP `destructiveHint`.
    pub destructive: bool,
    /// MCP `idempotentHint`.
    pub idempotent: bool,
    /// MCP `openWorldHint`.
    pub open_world: bool,
    /// Our own description (the document's summary is used when absent).
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowFile {
    tool: Vec<AllowEntry>,
}

/// Parses `spec/tools.toml`.
pub fn parse_allowlist(text: &str) -> Result<Vec<AllowEntry>, String> {
    toml::from_str::<AllowFile>(text)
        .map(|f| f.tool)
        .map_err(|e| format!("spec/tools.toml: {e}"))
}

/// How one tool argument reaches the generated client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolArg {
    /// Argument name (the OpenAPI parameter name, or `body`).
    pub name: String,
    /// `path`, `query`, `header` or `body`.
    pub location: String,
    /// Whether the input schema requires it.
    pub required: bool,
    /// Builder setter method in the generated client.
    pub setter: String,
    /// Rust type the setter takes, as a path usable from outside the generated module.
    pub rust_type: String,
}

/// Everything the MCP layer knows about one tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    /// Tool name.
    pub name: String,
    /// operationId.
    pub operation_id: String,
    /// Upper-case HTTP method.
    pub method: String,
    /// Path template under the base URL.
    pub path: String,
    /// Toolset.
    pub toolset: String,
    /// MCP `readOnlyHint`.
    pub read_only: bool,
    /// MCP `destructiveHint`.
    pub destructive: bool,
    /// MCP `idempotentHint`.
    pub idempotent: bool,
    /// MCP `openWorldHint`.
    pub open_world: bool,
    /// Description shown to the model.
    pub description: String,
    /// JSON Schema 2020-12 of the arguments.
    pub input_schema: Value,
    /// Tolerant JSON Schema of `structuredContent`, when the response is described.
    pub output_schema: Option<Value>,
    /// Arguments, in the order the builder is called.
    pub args: Vec<ToolArg>,
    /// Method of the generated `Client`.
    pub rust_method: String,
    /// Generated success type (`types::X`, `()` or `ByteStream`).
    pub response_type: String,
}

/// An allowlisted tool that the document being built cannot provide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unavailable {
    /// Tool name.
    pub name: String,
    /// operationId it needs.
    pub operation_id: String,
    /// Why it is missing.
    pub reason: String,
}

/// The tool table of one build.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ToolTable {
    /// Tools available, in allowlist order.
    pub tools: Vec<ToolDef>,
    /// Allowlisted tools left out, with reasons.
    pub unavailable: Vec<Unavailable>,
}

/// Joins the allowlist with the repaired document and the generation result.
pub fn build_table(allow: &[AllowEntry], doc: &Value, generation: &Generation) -> ToolTable {
    let setters = match syn::parse_file(&generation.code) {
        Ok(file) => builder_setters(&file),
        Err(_) => BTreeMap::new(),
    };
    let mut table = ToolTable::default();
    for entry in allow {
        match tool_def(entry, doc, generation, &setters) {
            Ok(def) => table.tools.push(def),
            Err(reason) => table.unavailable.push(Unavailable {
                name: entry.name.clone(),
                operation_id: entry.operation.clone(),
                reason,
            }),
        }
    }
    table
}

fn tool_def(
    entry: &AllowEntry,
    doc: &Value,
    generation: &Generation,
    setters: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<ToolDef, String> {
    let generated = generation
        .generated
        .iter()
        .find(|g| g.operation_id == entry.operation)
        .ok_or_else(|| {
            match generation
                .excluded
                .iter()
                .find(|e| e.operation_id == entry.operation)
            {
                Some(e) => format!("excluded from the client: {}", e.reason),
                None => "the document has no such operation".to_string(),
            }
        })?;
    let input_schema = tool_schema::input_schema(doc, &entry.operation)?;
    let method_setters = setters.get(&generated.rust_method).ok_or_else(|| {
        format!(
            "the generated client has no builder for `{}`",
            generated.rust_method
        )
    })?;
    let required: Vec<&str> = input_schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let locations = argument_locations(doc, &generated.method, &generated.path);
    let mut args = Vec::new();
    for name in input_schema["properties"]
        .as_object()
        .into_iter()
        .flat_map(Map::keys)
    {
        let setter = setter_for(name, method_setters).ok_or_else(|| {
            format!(
                "argument `{name}` has no setter on the builder of `{}`",
                generated.rust_method
            )
        })?;
        let location = if name == "body" {
            "body".to_string()
        } else {
            locations
                .get(name.as_str())
                .cloned()
                .unwrap_or_else(|| "query".into())
        };
        args.push(ToolArg {
            name: name.clone(),
            location,
            required: required.contains(&name.as_str()),
            rust_type: method_setters[&setter].clone(),
            setter,
        });
    }
    let op = operation(doc, &generated.method, &generated.path).unwrap_or(&Value::Null);
    let description = entry
        .description
        .clone()
        .or_else(|| {
            op.get("summary")
                .and_then(Value::as_str)
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| format!("{} {}", generated.method, generated.path));
    Ok(ToolDef {
        name: entry.name.clone(),
        operation_id: entry.operation.clone(),
        method: generated.method.clone(),
        path: generated.path.clone(),
        toolset: entry.toolset.clone(),
        read_only: entry.read_only,
        destructive: entry.destructive,
        idempotent: entry.idempotent,
        open_world: entry.open_world,
        description,
        input_schema,
        output_schema: output_schema(doc, op),
        args,
        rust_method: generated.rust_method.clone(),
        response_type: generated.response_type.clone(),
    })
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> Option<&'a Value> {
    doc.get("paths")?
        .get(path)?
        .get(method.to_ascii_lowercase())
}

/// Where each parameter of an operation goes (`path`, `query`, `header`), by name.
fn argument_locations(doc: &Value, method: &str, path: &str) -> BTreeMap<String, String> {
    let item = doc.get("paths").and_then(|p| p.get(path));
    let op = operation(doc, method, path);
    [item, op]
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("parameters").and_then(Value::as_array))
        .flatten()
        .filter_map(|p| resolve(doc, p))
        .filter_map(|p| {
            Some((
                p.get("name")?.as_str()?.to_string(),
                p.get("in")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The setter progenitor generated for argument `name`: its snake_case form, with the `_`
/// progenitor appends to Rust keywords, or the one setter equal to it once underscores and
/// case are ignored.
fn setter_for(name: &str, setters: &BTreeMap<String, String>) -> Option<String> {
    let snake = to_snake(name);
    for candidate in [snake.clone(), format!("{snake}_")] {
        if setters.contains_key(&candidate) {
            return Some(candidate);
        }
    }
    let squash = |s: &str| {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase()
    };
    let mut found = setters.keys().filter(|s| squash(s) == squash(name));
    match (found.next(), found.next()) {
        (Some(one), None) => Some(one.clone()),
        _ => None,
    }
}

/// For every `Client` method, the setters of the builder it returns and the type each takes
/// (the `T` of its `V: TryInto<T>` bound), written so it resolves outside `generated`.
pub fn builder_setters(file: &syn::File) -> BTreeMap<String, BTreeMap<String, String>> {
    use quote::ToTokens as _;

    // Client method -> builder struct name.
    let mut builders = BTreeMap::new();
    for item in &file.items {
        let syn::Item::Impl(imp) = item else { continue };
        if imp.trait_.is_some() || imp.self_ty.to_token_stream().to_string() != "Client" {
            continue;
        }
        for it in &imp.items {
            let syn::ImplItem::Fn(f) = it else { continue };
            if let syn::ReturnType::Type(_, ty) = &f.sig.output
                && let syn::Type::Path(p) = ty.as_ref()
                && p.path.segments.len() == 2
                && p.path.segments[0].ident == "builder"
            {
                builders.insert(
                    p.path.segments[1].ident.to_string(),
                    f.sig.ident.to_string(),
                );
            }
        }
    }

    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let Some(builder_mod) = file.items.iter().find_map(|i| match i {
        syn::Item::Mod(m) if m.ident == "builder" => m.content.as_ref().map(|(_, items)| items),
        _ => None,
    }) else {
        return out;
    };
    for item in builder_mod {
        let syn::Item::Impl(imp) = item else { continue };
        if imp.trait_.is_some() {
            continue;
        }
        let syn::Type::Path(self_ty) = imp.self_ty.as_ref() else {
            continue;
        };
        let Some(last) = self_ty.path.segments.last() else {
            continue;
        };
        let Some(client_method) = builders.get(&last.ident.to_string()) else {
            continue;
        };
        let entry = out.entry(client_method.clone()).or_default();
        for it in &imp.items {
            let syn::ImplItem::Fn(f) = it else { continue };
            if let Some(ty) = try_into_target(&f.sig) {
                entry.insert(f.sig.ident.to_string(), qualify(&ty));
            }
        }
    }
    out
}

/// `T` in `fn x<V>(self, value: V) -> Self where V: std::convert::TryInto<T>`.
fn try_into_target(sig: &syn::Signature) -> Option<String> {
    use quote::ToTokens as _;
    let wc = sig.generics.where_clause.as_ref()?;
    for pred in &wc.predicates {
        let syn::WherePredicate::Type(pt) = pred else {
            continue;
        };
        if pt.bounded_ty.to_token_stream().to_string() != "V" {
            continue;
        }
        for bound in &pt.bounds {
            let syn::TypeParamBound::Trait(tb) = bound else {
                continue;
            };
            let seg = tb.path.segments.last()?;
            if seg.ident != "TryInto" {
                continue;
            }
            if let syn::PathArguments::AngleBracketed(args) = &seg.arguments
                && let Some(syn::GenericArgument::Type(t)) = args.args.first()
            {
                return Some(t.to_token_stream().to_string());
            }
        }
    }
    None
}

/// Makes a type written inside the generated module usable from the rest of the crate.
fn qualify(ty: &str) -> String {
    let compact = ty.replace(" :: ", "::").replace(":: ", "::");
    let mut out = String::new();
    let mut rest = compact.as_str();
    // `types::X` (possibly nested in generics) -> `crate::ibkr::types::X`.
    while let Some(i) = rest.find("types::") {
        let before = &rest[..i];
        let prefixed = before.ends_with("::") || before.ends_with(|c: char| c.is_alphanumeric());
        out.push_str(before);
        if !prefixed {
            out.push_str("crate::ibkr::");
        }
        out.push_str("types::");
        rest = &rest[i + "types::".len()..];
    }
    out.push_str(rest);
    out
}

/// A tolerant output schema for the operation's first JSON 2xx response: only the shape of
/// `structuredContent` that holds whatever IBKR sends (an object; an array reply under `items`).
/// IBKR's response schemas are too often wrong to promise more: a declared property type that
/// the live gateway contradicts would make strict clients reject a good result.
pub fn output_schema(doc: &Value, op: &Value) -> Option<Value> {
    let responses = op.get("responses")?.as_object()?;
    let (_, response) = responses
        .iter()
        .find(|(code, _)| code.starts_with('2') && code.len() == 3)?;
    let response = resolve(doc, response)?;
    let schema = response
        .get("content")?
        .as_object()?
        .iter()
        .find(|(ct, _)| ct.starts_with("application/json"))?
        .1
        .get("schema")?;
    let schema = resolve(doc, schema)?;
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => Some(json!({
            "type": "object",
            "properties": { "items": { "type": "array" } },
        })),
        Some("object") | None
            if schema.contains_key("properties") || schema.contains_key("additionalProperties") =>
        {
            Some(json!({ "type": "object" }))
        }
        _ => None,
    }
}

/// Renders the table as an invocation of `ibkr_tools!` (see `src/mcp/dispatch.rs`).
pub fn render_macro(table: &ToolTable) -> String {
    let mut s = String::from(
        "// Generated by build.rs from spec/tools.toml and the generated client. Do not edit.\n\
         ibkr_tools! {\n",
    );
    for t in &table.tools {
        let args: Vec<String> = t
            .args
            .iter()
            .map(|a| format!("{:?} => {}: {}", a.name, a.setter, a.rust_type))
            .collect();
        let reply = if t.response_type == "()" || t.response_type.ends_with("ByteStream") {
            "raw".to_string()
        } else {
            format!("json({})", qualify(&t.response_type))
        };
        s.push_str(&format!(
            "    {:?} => {}({}) -> {};\n",
            t.name,
            t.rust_method,
            args.join(", "),
            reply
        ));
    }
    s.push_str("}\n");
    s
}
