//! `ibkr-mcp spec diff` on IBKR's real documents (2.7.0, 2.20.0 and 2.27.0 from ../shared, every
//! pair, pinned as golden reports) and through the binary (exit codes 0, 1 and 2). The change
//! kinds themselves are proved one by one on a hand-written pair in `ibkr_spec::diff`'s tests,
//! and here on the pinned document against the mutation test's mutations of it.

mod common;
mod mutations;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use ibkr_mcp::spec;
use ibkr_spec::diff::Kind;

fn document(version: &str) -> PathBuf {
    common::shared_dir()
        .join("ibkr-spec")
        .join(version)
        .join("openapi.json")
}

fn report(old: &str, new: &str) -> spec::diff::DiffReport {
    spec::diff::diff_files(&document(old), &document(new), &spec::embedded_patches())
        .unwrap_or_else(|e| panic!("{old} → {new}: {e}"))
}

#[test]
fn every_pair_of_real_documents_gives_a_pinned_report() {
    let mut breaking = Vec::new();
    let mut harmless = Vec::new();
    let allowlisted: Vec<&str> = ibkr_mcp::mcp::catalog::all()
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    for (old, new) in [
        ("2.7.0", "2.20.0"),
        ("2.20.0", "2.27.0"),
        ("2.7.0", "2.27.0"),
    ] {
        let r = report(old, new);
        common::golden(
            &format!("spec-diff-{old}-{new}.txt"),
            &spec::diff::render(&r),
        );
        assert_eq!(r.old.version, old);
        assert_eq!(r.new.version, new);
        assert!(
            r.changes
                .iter()
                .any(|c| c.change.kind == Kind::OperationAdded),
            "{old} → {new} adds operations"
        );
        // Every change names its endpoint; tool names are the allowlist's.
        for c in &r.changes {
            assert!(c.change.endpoint.contains(" /"), "{c:?}");
            for t in &c.tools {
                assert!(allowlisted.contains(&t.as_str()), "{t}");
            }
        }
        for c in r.changes.iter().filter(|c| !c.tools.is_empty()) {
            if c.change.breaking {
                breaking.push(c.clone());
            } else {
                harmless.push(c.clone());
            }
        }
    }
    // The real documents hold at least one change of each sort for the tools (2.20.0 → 2.27.0
    // has both; 2.7.0 → 2.20.0 changed only operations no tool uses).
    assert!(!breaking.is_empty(), "no breaking change found");
    assert!(!harmless.is_empty(), "no harmless change found");
}

#[test]
fn the_binary_answers_with_exit_codes_and_json() {
    let bin = env!("CARGO_BIN_EXE_ibkr-mcp");
    let run = |args: &[&str]| {
        Command::new(bin)
            .args(["spec", "diff"])
            .args(args)
            .output()
            .unwrap()
    };
    let (a, b) = (document("2.20.0"), document("2.27.0"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let same = run(&[a, a]);
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    assert!(String::from_utf8_lossy(&same.stdout).contains("No tool is affected"));
    let changed = run(&[a, b, "--json"]);
    assert_eq!(
        changed.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&changed.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&changed.stdout).unwrap();
    assert_eq!(v["new"]["version"], "2.27.0");
    assert!(v["changes"].as_array().is_some_and(|c| !c.is_empty()));
    let missing = run(&[a, "/nonexistent/openapi.json"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

/// The mutation test's mutations (tests/mutations), each applied alone to the pinned document:
/// the diff finds exactly the kinds of change it made (none for a defect the repair fixes),
/// and together they exercise every kind. All of them at once give a pinned report.
#[test]
fn the_mutation_tests_mutations_are_found_as_exactly_their_kinds_of_change() {
    let pinned_path = document(&spec::pin::pinned().version);
    let pinned: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&pinned_path).unwrap()).unwrap();
    let patches = spec::embedded_patches();
    let repaired = |doc: &serde_json::Value| {
        spec::repair::repair(&serde_json::to_vec(doc).unwrap(), &patches)
            .expect("the repair takes any parseable document")
            .doc
    };
    let base = repaired(&pinned);
    let mut combined = pinned.clone();
    let mut seen = BTreeSet::new();
    for m in mutations::mutations() {
        let mut doc = pinned.clone();
        (m.apply)(&mut doc);
        (m.apply)(&mut combined);
        let changes = ibkr_spec::diff::diff(&base, &repaired(&doc));
        let kinds: BTreeSet<Kind> = changes.iter().map(|c| c.kind).collect();
        let want: BTreeSet<Kind> = m.diff_kinds.iter().copied().collect();
        assert_eq!(kinds, want, "{}: {changes:#?}", m.name);
        seen.extend(kinds);
    }
    for k in Kind::ALL {
        assert!(seen.contains(&k), "no mutation makes a {k:?} change");
    }
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("diff-mutated-openapi.json");
    std::fs::write(&path, serde_json::to_vec(&combined).unwrap()).unwrap();
    let r = spec::diff::diff_files(&pinned_path, &path, &patches).unwrap();
    assert!(r.affects_tools());
    let mut text = spec::diff::render(&r);
    // The report names the temporary file's sha256; the golden pins everything else.
    text = text.replace(&r.new.sha256[..12], "MUTATED");
    common::golden("spec-diff-mutated.txt", &text);
}
