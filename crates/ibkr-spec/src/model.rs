//! The MCP tool model the server runs on: the allowlist (`spec/tools.toml`), the operations the
//! server calls for itself (`spec/internal.toml`), and the typed tool table the build writes
//! (`tools.json`) and the server reads back. No code generator is needed to use it.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An HTTP method of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `PATCH`.
    Patch,
    /// `HEAD`.
    Head,
    /// `OPTIONS`.
    Options,
    /// `TRACE`.
    Trace,
}

impl Method {
    /// The method as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
        }
    }

    /// Parses a method in any case (`get`, `GET`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            _ => return None,
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a tool argument goes in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgLocation {
    /// A path parameter (percent-encoded into one segment).
    Path,
    /// A query parameter.
    Query,
    /// A request header.
    Header,
    /// The JSON request body (the argument named `body`).
    Body,
}

impl ArgLocation {
    /// From an OpenAPI 3 parameter's `in` (`path`, `query`, `header`); `cookie` is not sent.
    /// The body is not a parameter: it is the argument named `body`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "path" => ArgLocation::Path,
            "query" => ArgLocation::Query,
            "header" => ArgLocation::Header,
            _ => return None,
        })
    }
}

/// What a successful reply of an operation holds, as the generated client types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyKind {
    /// A typed JSON body.
    Json,
    /// No described body (`()`).
    Empty,
    /// A raw byte stream (an undescribed or non-JSON body).
    Bytes,
}

impl ReplyKind {
    /// From the generated success type (`types::X`, `()`, `ByteStream`, `Upgraded`).
    pub fn of_response_type(rust_type: &str) -> Self {
        if rust_type == "()" {
            ReplyKind::Empty
        } else if rust_type.ends_with("ByteStream") || rust_type.ends_with("Upgraded") {
            ReplyKind::Bytes
        } else {
            ReplyKind::Json
        }
    }
}

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

/// One `[[internal]]` entry of `spec/internal.toml`: an operation the server calls for itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalEntry {
    /// Name of the constant in `ibkr::gateway::ops` (SCREAMING_SNAKE_CASE).
    pub name: String,
    /// operationId in the repaired document; it must be an allowlisted tool's operation too.
    pub operation: String,
    /// The feature that needs it, in words (what a document without it loses).
    pub feature: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InternalFile {
    internal: Vec<InternalEntry>,
}

/// Parses `spec/internal.toml` and checks every entry names an operation of `allow`.
pub fn parse_internal(text: &str, allow: &[AllowEntry]) -> Result<Vec<InternalEntry>, String> {
    let entries = toml::from_str::<InternalFile>(text)
        .map(|f| f.internal)
        .map_err(|e| format!("spec/internal.toml: {e}"))?;
    let mut seen = std::collections::BTreeSet::new();
    for e in &entries {
        let valid = !e.name.is_empty()
            && e.name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !valid || !seen.insert(e.name.as_str()) {
            return Err(format!(
                "spec/internal.toml: `{}` must be a unique SCREAMING_SNAKE_CASE name",
                e.name
            ));
        }
        if !allow.iter().any(|a| a.operation == e.operation) {
            return Err(format!(
                "spec/internal.toml: `{}` names {}, which no [[tool]] of spec/tools.toml has \
                 (every operation the server calls must be one a user could call)",
                e.name, e.operation
            ));
        }
    }
    Ok(entries)
}

/// How one tool argument reaches the generated client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolArg {
    /// Argument name (the OpenAPI parameter name, or `body`).
    pub name: String,
    /// Where the argument goes in the request.
    pub location: ArgLocation,
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
    /// HTTP method; `None` for a tool the server answers itself.
    pub method: Option<Method>,
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
    /// What a success reply holds.
    pub reply: ReplyKind,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_locations_round_trip_through_their_wire_forms() {
        for m in [
            "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE",
        ] {
            let parsed = Method::parse(&m.to_ascii_lowercase()).unwrap();
            assert_eq!(parsed.as_str(), m);
            assert_eq!(serde_json::to_value(parsed).unwrap(), m);
        }
        assert_eq!(Method::parse("FETCH"), None);
        assert_eq!(ArgLocation::parse("cookie"), None);
        assert_eq!(ArgLocation::parse("body"), None);
        assert_eq!(
            serde_json::to_value(ArgLocation::Body).unwrap(),
            serde_json::json!("body")
        );
    }

    #[test]
    fn reply_kinds_follow_the_generated_success_type() {
        assert_eq!(ReplyKind::of_response_type("()"), ReplyKind::Empty);
        assert_eq!(ReplyKind::of_response_type("ByteStream"), ReplyKind::Bytes);
        assert_eq!(
            ReplyKind::of_response_type("types::IserverAccountResponse"),
            ReplyKind::Json
        );
        assert_eq!(
            ReplyKind::of_response_type("::std::vec::Vec<types::X>"),
            ReplyKind::Json
        );
    }
}
