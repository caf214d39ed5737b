//! `ibkr-mcp spec diff OLD NEW`: what a new IBKR document changes for the tools.
//!
//! Both documents are repaired with the same patches, then compared operation by operation
//! ([`ibkr_spec::diff`]); each change is mapped to the tools of the allowlist that use the
//! operation. The report adds the patches that apply to one document and not the other (a
//! defect IBKR fixed, or one that moved), and the operations the client generation keeps or
//! excludes on each side.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{generate, pin, repair};
use ibkr_spec::diff::{self, Change};

/// One document of a diff.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// Where it was read.
    pub path: String,
    /// `info.version`.
    pub version: String,
    /// sha256 of its bytes.
    pub sha256: String,
    /// Operations after repair.
    pub operations: usize,
    /// Operations the client generation keeps.
    pub generated: usize,
}

/// A change and the tools it affects.
#[derive(Debug, Clone, Serialize)]
pub struct ToolChange {
    /// The change.
    #[serde(flatten)]
    pub change: Change,
    /// Allowlisted tools that use the operation (empty: no tool does).
    pub tools: Vec<String>,
}

/// A patch whose outcome differs between the two documents.
#[derive(Debug, Clone, Serialize)]
pub struct PatchDelta {
    /// File name.
    pub name: String,
    /// On OLD: `applied`, `skipped: why`, `failed: why`.
    pub old: String,
    /// On NEW.
    pub new: String,
}

/// What `spec diff` reports.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// The older document.
    pub old: Side,
    /// The newer document.
    pub new: Side,
    /// Every change, operation by operation.
    pub changes: Vec<ToolChange>,
    /// Patches that apply differently.
    pub patches: Vec<PatchDelta>,
    /// Operations generated on OLD and excluded on NEW: (id, NEW's reason).
    pub newly_excluded: Vec<(String, String)>,
    /// Operations excluded on OLD and generated on NEW.
    pub no_longer_excluded: Vec<String>,
}

impl DiffReport {
    /// Whether anything changed that a tool of the allowlist uses.
    pub fn affects_tools(&self) -> bool {
        self.changes.iter().any(|c| !c.tools.is_empty()) || !self.newly_excluded.is_empty()
    }
}

/// A document argument: a path, or `pinned` (the shared copy of the pinned document, or
/// `IBKR_OPENAPI_SPEC`, checked against the pin's sha256).
pub fn resolve_document(arg: &str) -> Result<PathBuf, String> {
    if arg != "pinned" {
        return Ok(PathBuf::from(arg));
    }
    let env = std::env::var("IBKR_OPENAPI_SPEC").ok();
    let input = repair::locate_spec(Path::new(env!("CARGO_MANIFEST_DIR")), env.as_deref())?;
    let bytes = std::fs::read(&input.path)
        .map_err(|e| format!("cannot read {}: {e}", input.path.display()))?;
    let want = &pin::pinned().sha256;
    if &repair::sha256_hex(&bytes) != want {
        return Err(format!(
            "{} is not the pinned document (sha256 {want}); give its path instead of `pinned`",
            input.path.display()
        ));
    }
    Ok(input.path)
}

/// Repairs and generates `path`: the repaired document, its side and its patch outcomes.
fn load(
    path: &Path,
    patches: &[repair::PatchFile],
) -> Result<
    (
        serde_json::Value,
        Side,
        Vec<repair::PatchOutcome>,
        generate::Generation,
    ),
    String,
> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let repaired =
        repair::repair(&bytes, patches).map_err(|e| format!("{}: {e}", path.display()))?;
    let generation = generate::generate(&repaired.doc, None);
    let side = Side {
        path: path.display().to_string(),
        version: repaired.version.clone(),
        sha256: repair::sha256_hex(&bytes),
        operations: repaired.after.operations,
        generated: generation.generated.len(),
    };
    Ok((repaired.doc, side, repaired.patches, generation))
}

fn status_words(s: &repair::PatchStatus) -> String {
    match s {
        repair::PatchStatus::Applied => "applied".into(),
        repair::PatchStatus::Skipped { reason } => format!("skipped: {reason}"),
        repair::PatchStatus::Failed { reason } => format!("failed: {reason}"),
    }
}

/// The tools of the allowlist by the operation they call (this build's table, plus the tools
/// its document could not provide).
fn tools_by_operation() -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in crate::mcp::catalog::all()
        .iter()
        .filter(|t| !t.operation_id.is_empty())
    {
        m.entry(t.operation_id.clone())
            .or_default()
            .push(t.name.clone());
    }
    for u in crate::mcp::catalog::unavailable() {
        m.entry(u.operation_id).or_default().push(u.name);
    }
    m
}

/// Compares `old` with `new`, both repaired with `patches`.
pub fn diff_files(
    old: &Path,
    new: &Path,
    patches: &[repair::PatchFile],
) -> Result<DiffReport, String> {
    let (old_doc, old_side, old_patches, old_gen) = load(old, patches)?;
    let (new_doc, new_side, new_patches, new_gen) = load(new, patches)?;
    let tools = tools_by_operation();
    let changes = diff::diff(&old_doc, &new_doc)
        .into_iter()
        .map(|change| ToolChange {
            tools: tools.get(&change.operation).cloned().unwrap_or_default(),
            change,
        })
        .collect();
    let patches = old_patches
        .iter()
        .zip(&new_patches)
        .filter(|(a, b)| a.status != b.status)
        .map(|(a, b)| PatchDelta {
            name: a.name.clone(),
            old: status_words(&a.status),
            new: status_words(&b.status),
        })
        .collect();
    let generated = |g: &generate::Generation| -> Vec<String> {
        g.generated.iter().map(|o| o.operation_id.clone()).collect()
    };
    let (old_ok, new_ok) = (generated(&old_gen), generated(&new_gen));
    let newly_excluded = new_gen
        .excluded
        .iter()
        .filter(|e| old_ok.contains(&e.operation_id))
        .map(|e| (e.operation_id.clone(), e.reason.clone()))
        .collect();
    let no_longer_excluded = old_gen
        .excluded
        .iter()
        .filter(|e| new_ok.contains(&e.operation_id))
        .map(|e| e.operation_id.clone())
        .collect();
    Ok(DiffReport {
        old: old_side,
        new: new_side,
        changes,
        patches,
        newly_excluded,
        no_longer_excluded,
    })
}

/// The report for people.
pub fn render(r: &DiffReport) -> String {
    let mut s = String::new();
    let short = |h: &str| h.chars().take(12).collect::<String>();
    let _ = writeln!(
        s,
        "spec diff {} (sha256 {}…) → {} (sha256 {}…)",
        r.old.version,
        short(&r.old.sha256),
        r.new.version,
        short(&r.new.sha256)
    );
    let count = |k: diff::Kind| r.changes.iter().filter(|c| c.change.kind == k).count();
    let changed: std::collections::BTreeSet<&str> = r
        .changes
        .iter()
        .filter(|c| {
            !matches!(
                c.change.kind,
                diff::Kind::OperationAdded | diff::Kind::OperationRemoved
            )
        })
        .map(|c| c.change.operation.as_str())
        .collect();
    let _ = writeln!(
        s,
        "operations {} → {}: {} added, {} removed, {} changed",
        r.old.operations,
        r.new.operations,
        count(diff::Kind::OperationAdded),
        count(diff::Kind::OperationRemoved),
        changed.len()
    );
    let _ = writeln!(s, "generated {} → {}", r.old.generated, r.new.generated);
    let (for_tools, others): (Vec<&ToolChange>, Vec<&ToolChange>) =
        r.changes.iter().partition(|c| !c.tools.is_empty());
    let tool_names: std::collections::BTreeSet<&str> = for_tools
        .iter()
        .flat_map(|c| c.tools.iter().map(String::as_str))
        .collect();
    let breaking = for_tools.iter().filter(|c| c.change.breaking).count();
    let _ = writeln!(
        s,
        "\nchanges to tools: {} in {} tools, {breaking} breaking for a model",
        for_tools.len(),
        tool_names.len()
    );
    let line = |s: &mut String, c: &ToolChange| {
        let mark = if c.change.breaking { "BREAKING " } else { "" };
        let who = if c.tools.is_empty() {
            c.change.operation.clone()
        } else {
            c.tools.join(", ")
        };
        let mut text = format!("  {mark}{who} ({}): {:?}", c.change.endpoint, c.change.kind);
        if !c.change.at.is_empty() {
            text.push_str(&format!(" {}", c.change.at));
        }
        if !c.change.detail.is_empty() {
            text.push_str(&format!(": {}", c.change.detail));
        }
        let _ = writeln!(s, "{text}");
    };
    for c in &for_tools {
        line(&mut s, c);
    }
    // Operations no tool uses are summed up per operation (IBKR's account-management
    // schemas have thousands of fields); `--format json` lists every change.
    let mut per_op: BTreeMap<(&str, &str), (usize, usize, Vec<String>)> = BTreeMap::new();
    for c in &others {
        let e = per_op
            .entry((c.change.operation.as_str(), c.change.endpoint.as_str()))
            .or_default();
        e.0 += 1;
        e.1 += usize::from(c.change.breaking);
        let kind = format!("{:?}", c.change.kind);
        if !e.2.contains(&kind) {
            e.2.push(kind);
        }
    }
    let _ = writeln!(
        s,
        "\nchanges to operations no tool uses: {} in {} operations (--format json lists them)",
        others.len(),
        per_op.len()
    );
    for ((id, endpoint), (n, broken, kinds)) in &per_op {
        let _ = writeln!(
            s,
            "  {id} ({endpoint}): {n} changes, {broken} breaking: {}",
            kinds.join(", ")
        );
    }
    let _ = writeln!(s, "\npatches that apply differently: {}", r.patches.len());
    for p in &r.patches {
        let _ = writeln!(s, "  {}: {} → {}", p.name, p.old, p.new);
    }
    let _ = writeln!(
        s,
        "\ngenerated on {} and excluded on {}: {}",
        r.old.version,
        r.new.version,
        r.newly_excluded.len()
    );
    for (id, why) in &r.newly_excluded {
        let _ = writeln!(s, "  {id}: {why}");
    }
    let _ = writeln!(
        s,
        "excluded on {} and generated on {}: {}",
        r.old.version,
        r.new.version,
        r.no_longer_excluded.len()
    );
    for id in &r.no_longer_excluded {
        let _ = writeln!(s, "  {id}");
    }
    let _ = writeln!(
        s,
        "\n{}",
        if r.affects_tools() {
            "Tools are affected: read the changes above before moving the pin (exit code 1)."
        } else {
            "No tool is affected (exit code 0)."
        }
    );
    s
}
