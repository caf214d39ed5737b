//! The repaired IBKR OpenAPI document: the pipeline (the `ibkr-spec` crate, shared with
//! `build.rs`), the artifacts the build embedded, and the `ibkr-mcp spec patch|report` commands.
//!
//! It owns reading and repairing documents and describing the result; it does not own the
//! generated client (see [`crate::ibkr`]). Client generation for another document (`spec report
//! --spec OTHER`) needs the `codegen` feature (on by default); without it the binary links no
//! code generator and that one command says how to get it.

#[cfg(feature = "codegen")]
pub use ibkr_spec::{generate, toolgen};
pub use ibkr_spec::{model, pin, repair, tool_schema};

/// `spec diff`: what a new document changes for the tools (needs the generator).
#[cfg(feature = "codegen")]
pub mod diff;

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The repaired document the client was generated from (pretty JSON).
pub const REPAIRED_SPEC: &str = include_str!(concat!(env!("OUT_DIR"), "/repaired_openapi.json"));

/// The build's report (JSON): input, patches, passes, inventory, generation.
pub const BUILD_REPORT: &str = include_str!(concat!(env!("OUT_DIR"), "/build_report.json"));

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/patches.rs"));
}

/// The patch files this binary was built with, parsed.
pub fn embedded_patches() -> Vec<repair::PatchFile> {
    embedded::PATCHES
        .iter()
        .map(|(name, text)| repair::PatchFile {
            name: (*name).to_string(),
            ops: repair::parse_patch(name, text.as_bytes()),
        })
        .collect()
}

pub use repair::normalize_path as normalize_template;

/// Where a report's document came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportInput {
    /// File path.
    pub path: String,
    /// `env`, `argument`, `download` or `shared`.
    pub origin: String,
}

/// A full report: the repair and the generation of one document.
#[cfg(feature = "codegen")]
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where the document came from.
    pub input: ReportInput,
    /// Patch, pass, inventory and check results.
    pub repair: repair::Repaired,
    /// Generated and excluded operations.
    pub generation: generate::Generation,
}

/// Repairs and generates a document read from `path`, with `patches`.
#[cfg(feature = "codegen")]
pub fn report_for_file(
    path: &std::path::Path,
    patches: &[repair::PatchFile],
) -> Result<Report, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let repaired =
        repair::repair(&bytes, patches).map_err(|e| format!("{}: {e}", path.display()))?;
    let generation = generate::generate(&repaired.doc, None);
    Ok(Report {
        input: ReportInput {
            path: path.display().to_string(),
            origin: "argument".into(),
        },
        repair: repaired,
        generation,
    })
}

/// Renders a report (as JSON: the build's embedded one, or a `Report` serialized) as text.
pub fn render_report(report: &serde_json::Value) -> String {
    use serde_json::Value;
    let mut s = String::new();
    let r = &report["repair"];
    let g = &report["generation"];
    let str_of = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let _ = writeln!(s, "IBKR OpenAPI document {}", str_of(&r["version"]));
    let pinned = if r["pinned"].as_bool() == Some(true) {
        "the pinned version".to_string()
    } else {
        format!("NOT the pinned {} document", pin::pinned().version)
    };
    let _ = writeln!(s, "  sha256  {} ({pinned})", str_of(&r["sha256"]));
    let _ = writeln!(
        s,
        "  source  {} ({})",
        str_of(&report["input"]["path"]),
        str_of(&report["input"]["origin"])
    );

    let patches = r["patches"].as_array().cloned().unwrap_or_default();
    let count = |st: &str| patches.iter().filter(|p| p["status"] == st).count();
    let _ = writeln!(
        s,
        "\nPatches: {} applied, {} skipped, {} failed (of {})",
        count("applied"),
        count("skipped"),
        count("failed"),
        patches.len()
    );
    for p in &patches {
        let status = str_of(&p["status"]);
        let reason = p["reason"]
            .as_str()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let _ = writeln!(s, "  {:<8} {}{}", status, str_of(&p["name"]), reason);
    }

    let _ = writeln!(s, "\nBuilt-in passes:");
    for p in r["passes"].as_array().into_iter().flatten() {
        let _ = writeln!(s, "  {:<14} {} changes", str_of(&p["name"]), p["changes"]);
        for n in p["notes"].as_array().into_iter().flatten() {
            let _ = writeln!(s, "    - {}", str_of(n));
        }
    }

    let _ = writeln!(s, "\nInventory       before   after");
    for key in ["operations", "parameters", "examples", "schemas"] {
        let _ = writeln!(
            s,
            "  {:<12} {:>7} {:>7}",
            key,
            r["before"][key].as_u64().unwrap_or(0),
            r["after"][key].as_u64().unwrap_or(0)
        );
    }

    let generated = g["generated"].as_array().map_or(0, Vec::len);
    let excluded = g["excluded"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        s,
        "\nGeneration: {generated} operations generated, {} excluded",
        excluded.len()
    );
    if let Some(f) = g["fatal"].as_str() {
        let _ = writeln!(s, "  FATAL: {f}");
    }
    for e in &excluded {
        let _ = writeln!(
            s,
            "  excluded {} ({} {}): {}",
            str_of(&e["operation_id"]),
            str_of(&e["method"]),
            str_of(&e["path"]),
            str_of(&e["reason"])
        );
    }
    let adaptations = g["adaptations"].as_array().cloned().unwrap_or_default();
    if !adaptations.is_empty() {
        let _ = writeln!(
            s,
            "\nAdaptations for the generator (the repaired document keeps the original):"
        );
        for a in &adaptations {
            let _ = writeln!(
                s,
                "  [{}] {}",
                str_of(&a["operation_id"]),
                str_of(&a["note"])
            );
        }
    }

    let problem_counts = |v: &Value| {
        let mut m = std::collections::BTreeMap::<String, usize>::new();
        for p in v.as_array().into_iter().flatten() {
            *m.entry(str_of(&p["check"])).or_default() += 1;
        }
        m
    };
    let before = problem_counts(&r["problems_before"]);
    let after = problem_counts(&r["problems_after"]);
    let total = |m: &std::collections::BTreeMap<String, usize>| m.values().sum::<usize>();
    let _ = writeln!(
        s,
        "\nOur checks: {} problems in the input, {} after repair",
        total(&before),
        total(&after)
    );
    let checks: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for c in checks {
        let _ = writeln!(
            s,
            "  {:<28} {:>4} -> {}",
            c,
            before.get(c).copied().unwrap_or(0),
            after.get(c).copied().unwrap_or(0)
        );
    }
    for p in r["problems_after"]
        .as_array()
        .into_iter()
        .flatten()
        .take(20)
    {
        let _ = writeln!(
            s,
            "    {} at {}: {}",
            str_of(&p["check"]),
            str_of(&p["pointer"]),
            str_of(&p["message"])
        );
    }
    s
}
