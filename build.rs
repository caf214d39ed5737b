//! Build script: IBKR's OpenAPI document → our patches → built-in passes → progenitor → OUT_DIR.
//!
//! It is a thin orchestrator over the `ibkr-spec` crate (`crates/ibkr-spec`, feature `codegen`),
//! which the server uses too (for `ibkr-mcp spec patch|report`), so the build and the commands
//! can never disagree. Outputs in `OUT_DIR`:
//! - `ibkr_api.rs`: the generated client (included by `src/ibkr.rs`);
//! - `operations.rs`: a table of generated operations and a typed-decoding function per
//!   operation (used by tests and the tool layer);
//! - `repaired_openapi.json`: the document the client was generated from;
//! - `build_report.json`: what was patched, skipped, excluded and why;
//! - `tools.json` and `tool_specs.rs`: the MCP tool table (`spec/tools.toml` joined with the
//!   document and the client) as data, and as an invocation of the `ibkr_tools!` macro;
//! - `internal_ops.rs`: the operations the server calls for itself (`spec/internal.toml`) as
//!   constants of `ibkr::gateway::ops`.
//!
//! A defect in the document never fails the build: patches that no longer apply are skipped,
//! operations progenitor cannot generate are excluded, and both are reported as
//! `cargo:warning`s. Only a missing or unreadable document stops it, with instructions.

use ibkr_spec::{generate, repair, toolgen};

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    if let Err(e) = run() {
        // A paragraph, not a backtrace: this is what a user sees when the document is missing.
        eprintln!("\nerror: {e}\n");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env("OUT_DIR")?);
    // Changes to crates/ibkr-spec rebuild this script through cargo's dependency tracking.
    for f in ["build.rs", "patches", "spec"] {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-env-changed={}", repair::SPEC_ENV);

    let env_spec = std::env::var(repair::SPEC_ENV).ok();
    let input = repair::locate_spec(&manifest, env_spec.as_deref())?;
    println!("cargo:rerun-if-changed={}", input.path.display());
    let bytes = std::fs::read(&input.path)
        .map_err(|e| format!("cannot read {}: {e}", input.path.display()))?;

    let patch_dir = manifest.join("patches");
    let patches = repair::load_patches(&patch_dir)?;
    for p in &patches {
        println!(
            "cargo:rerun-if-changed={}",
            patch_dir.join(&p.name).display()
        );
    }
    let repaired = repair::repair(&bytes, &patches)
        .map_err(|e| format!("cannot use {}: {e}", input.path.display()))?;
    for p in &repaired.patches {
        match &p.status {
            repair::PatchStatus::Applied => {}
            repair::PatchStatus::Skipped { reason } => {
                println!(
                    "cargo:warning=patch {} skipped (no longer needed or no longer applies): {reason}",
                    p.name
                )
            }
            repair::PatchStatus::Failed { reason } => {
                println!(
                    "cargo:warning=patch {} FAILED and was not applied: {reason}",
                    p.name
                )
            }
        }
    }

    let generation = generate::generate(&repaired.doc, None);
    if let Some(fatal) = &generation.fatal {
        println!("cargo:warning=client generation failed as a whole: {fatal}");
    }
    if !repaired.pinned {
        for e in &generation.excluded {
            println!(
                "cargo:warning=operation {} ({} {}) excluded from the client: {}",
                e.operation_id, e.method, e.path, e.reason
            );
        }
    }

    let allow_path = manifest.join("spec").join("tools.toml");
    let allow_text = std::fs::read_to_string(&allow_path)
        .map_err(|e| format!("cannot read {}: {e}", allow_path.display()))?;
    let allowlist = ibkr_spec::model::parse_allowlist(&allow_text)?;
    let tools = toolgen::build_table(&allowlist, &repaired.doc, &generation);
    for u in &tools.unavailable {
        println!(
            "cargo:warning=tool {} is not available from this document ({}): {}",
            u.name, u.operation_id, u.reason
        );
    }
    write(&out.join("tool_specs.rs"), &toolgen::render_macro(&tools))?;

    let internal_path = manifest.join("spec").join("internal.toml");
    let internal_text = std::fs::read_to_string(&internal_path)
        .map_err(|e| format!("cannot read {}: {e}", internal_path.display()))?;
    let internal = ibkr_spec::model::parse_internal(&internal_text, &allowlist)?;
    for e in &internal {
        if !tools.tools.iter().any(|t| t.operation_id == e.operation) {
            println!(
                "cargo:warning=internal operation {} is not available from this document: {} will not work",
                e.operation, e.feature
            );
        }
    }
    write(
        &out.join("internal_ops.rs"),
        &toolgen::render_internal(&internal),
    )?;
    write(
        &out.join("tools.json"),
        &serde_json::to_string(&tools).map_err(|e| e.to_string())?,
    )?;

    write(&out.join("ibkr_api.rs"), &banner(&repaired, &input))?;
    append(&out.join("ibkr_api.rs"), &generation.code)?;
    write(&out.join("operations.rs"), &operations_table(&generation))?;
    write(
        &out.join("patches.rs"),
        &embedded_patches(&patch_dir, &patches),
    )?;
    let doc_text = serde_json::to_string_pretty(&repaired.doc).map_err(|e| e.to_string())?;
    write(&out.join("repaired_openapi.json"), &doc_text)?;
    let report = serde_json::json!({
        "input": input,
        "repair": repaired,
        "generation": generation,
    });
    write(
        &out.join("build_report.json"),
        &serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?,
    )?;
    Ok(())
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set (is this running under cargo?)"))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn banner(repaired: &repair::Repaired, input: &repair::SpecInput) -> String {
    format!(
        "// Generated by build.rs with progenitor from IBKR's OpenAPI document {} (sha256 {}),\n\
         // read from {} and repaired by patches/. Do not edit: change a patch instead.\n\n",
        repaired.version,
        repaired.sha256,
        input.path.display()
    )
}

/// `OPERATIONS` (one row per generated operation) and `decode_success`, which deserializes a
/// JSON value into an operation's generated success type and serializes it back.
fn operations_table(g: &generate::Generation) -> String {
    let mut s = String::from(
        "// Generated by build.rs. Do not edit.\n\n\
         /// Every operation of the generated client.\n\
         pub static OPERATIONS: &[GeneratedOperation] = &[\n",
    );
    for op in &g.generated {
        let _ = writeln!(
            s,
            "    GeneratedOperation {{ operation_id: {:?}, method: {:?}, path: {:?}, rust_method: {:?}, response_type: {:?} }},",
            op.operation_id, op.method, op.path, op.rust_method, op.response_type
        );
    }
    s.push_str(
        "];\n\n\
         /// Deserializes `value` into the generated success type of `operation_id` and back.\n\
         /// `None` when the operation is unknown or its success body is not typed JSON.\n\
         pub fn decode_success(operation_id: &str, value: serde_json::Value) \
         -> Option<Result<serde_json::Value, serde_json::Error>> {\n    match operation_id {\n",
    );
    for op in &g.generated {
        if ibkr_spec::model::ReplyKind::of_response_type(&op.response_type)
            != ibkr_spec::model::ReplyKind::Json
        {
            continue;
        }
        let rust_type = op
            .response_type
            .replace("types::", "super::generated::types::");
        let _ = writeln!(
            s,
            "        {:?} => Some(serde_json::from_value::<{rust_type}>(value).and_then(serde_json::to_value)),",
            op.operation_id
        );
    }
    s.push_str("        _ => None,\n    }\n}\n");
    s
}

/// The patch files, embedded so `ibkr-mcp spec patch|report --spec OTHER` works anywhere.
fn embedded_patches(dir: &Path, patches: &[repair::PatchFile]) -> String {
    let mut s = String::from(
        "// Generated by build.rs. Do not edit.\n\n\
         /// The patch files of `patches/` as (file name, contents), in application order.\n\
         pub static PATCHES: &[(&str, &str)] = &[\n",
    );
    for p in patches {
        let _ = writeln!(
            s,
            "    ({:?}, include_str!({:?})),",
            p.name,
            dir.join(&p.name)
        );
    }
    s.push_str("];\n");
    s
}
