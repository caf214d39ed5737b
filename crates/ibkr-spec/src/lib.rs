//! IBKR's OpenAPI document as ibkr-mcp uses it.
//!
//! - [`pin`]: which document the project builds from (`spec/ibkr-openapi.lock`);
//! - [`diff`]: what changed between two repaired documents, operation by operation;
//! - [`repair`]: locate a document, apply our RFC 6902 patches and the built-in passes, count
//!   and check what it holds;
//! - [`tool_schema`]: OpenAPI 3.0 parameters and bodies as JSON Schema 2020-12 tool inputs;
//! - [`model`]: the MCP tool model the server runs on (`spec/tools.toml`, `spec/internal.toml`,
//!   and the typed table the build writes);
//! - with the `codegen` feature, `generate` (progenitor, one operation at a time when it has
//!   to be) and `toolgen` (the tool table joined from the allowlist, the document and the
//!   generated client).
//!
//! Nothing here panics on a document: every defect becomes a report entry.

pub mod diff;
pub mod model;
pub mod pin;
pub mod repair;
pub mod tool_schema;

#[cfg(feature = "codegen")]
pub mod generate;
#[cfg(feature = "codegen")]
pub mod toolgen;
