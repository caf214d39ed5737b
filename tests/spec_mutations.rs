//! Regeneration that cannot break the build: the pinned document with defect kinds the patches
//! have never seen, injected one at a time and all together. For each, the pipeline the build
//! runs (repair → passes → generation → tool table → macro) completes, the report names what was
//! lost and why, and every operation the mutation did not touch is still generated. The
//! combined document is written to `target/tmp/mutated-openapi.json`, and CI builds the crate
//! against it (`.ci/run`, regeneration step), so rustc has the last word too.
// These tests generate clients for documents: they need the `codegen` feature (the default).
#![cfg(feature = "codegen")]

mod common;
mod mutations;

use std::collections::BTreeSet;

use ibkr_mcp::spec::{generate, model, pin, repair, toolgen};
use mutations::mutations;
use serde_json::{Value, json};

fn pinned_bytes() -> Vec<u8> {
    let path = common::shared_dir()
        .join("ibkr-spec")
        .join(&pin::pinned().version)
        .join("openapi.json");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What one run of the pipeline gives.
struct Run {
    fatal: Option<String>,
    generated: BTreeSet<String>,
    report: String,
    unavailable: Vec<model::Unavailable>,
}

fn pipeline(doc: &Value) -> Run {
    let bytes = serde_json::to_vec(doc).unwrap();
    let repaired = repair::repair(&bytes, &ibkr_mcp::spec::embedded_patches())
        .expect("repair never refuses a parseable document");
    let generation = generate::generate(&repaired.doc, None);
    let file = syn::parse_file(&generation.code).expect("the generated client parses");
    assert!(
        file.items
            .iter()
            .any(|i| matches!(i, syn::Item::Struct(s) if s.ident == "Client")),
        "the generated code has a Client (fatal: {:?})",
        generation.fatal
    );
    let allow = model::parse_allowlist(include_str!("../spec/tools.toml")).unwrap();
    let table = toolgen::build_table(&allow, &repaired.doc, &generation);
    syn::parse_str::<syn::File>(&format!(
        "macro_rules! ibkr_tools {{ ($($t:tt)*) => {{}} }}\n{}",
        toolgen::render_macro(&table)
    ))
    .expect("the tool table renders as Rust");
    let report = serde_json::to_string(&json!({
        "passes": repaired.passes,
        "patches": repaired.patches,
        "generation": generation,
        "unavailable": table.unavailable,
    }))
    .unwrap();
    Run {
        fatal: generation.fatal.clone(),
        generated: generation
            .generated
            .iter()
            .map(|o| o.operation_id.clone())
            .collect(),
        report,
        unavailable: table.unavailable,
    }
}

#[test]
fn every_mutation_builds_reports_what_it_cost_and_keeps_every_other_operation() {
    let pinned: Value = serde_json::from_slice(&pinned_bytes()).unwrap();
    let baseline = pipeline(&pinned);
    assert!(
        baseline.generated.len() > 90,
        "{}",
        baseline.generated.len()
    );
    let mut combined = pinned.clone();
    let mut touched_all = BTreeSet::new();
    for m in mutations() {
        let mut doc = pinned.clone();
        (m.apply)(&mut doc);
        (m.apply)(&mut combined);
        let run = pipeline(&doc);
        assert_eq!(run.fatal, None, "{}: generation failed as a whole", m.name);
        let touched: BTreeSet<String> = m.touches.iter().map(|s| s.to_string()).collect();
        touched_all.extend(touched.iter().cloned());
        let lost: Vec<&String> = baseline
            .generated
            .difference(&run.generated)
            .filter(|id| !touched.contains(*id))
            .collect();
        assert!(
            lost.is_empty(),
            "{}: untouched operations lost: {lost:?}",
            m.name
        );
        for t in &touched {
            if !run.generated.contains(t) {
                assert!(
                    run.report.contains(t.as_str()),
                    "{}: {t} was lost without a word in the report",
                    m.name
                );
            }
        }
        for words in &m.report_says {
            assert!(
                run.report.contains(words),
                "{}: the report does not say {words:?}",
                m.name
            );
        }
        println!(
            "{}: {} operations generated ({} lost of {:?}); unavailable tools: {:?}",
            m.name,
            run.generated.len(),
            touched.difference(&run.generated).count(),
            m.touches,
            run.unavailable
                .iter()
                .map(|u| format!("{} ({})", u.name, u.reason))
                .collect::<Vec<_>>()
        );
    }
    let run = pipeline(&combined);
    let lost: Vec<&String> = baseline
        .generated
        .difference(&run.generated)
        .filter(|id| !touched_all.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "combined: untouched operations lost: {lost:?}"
    );
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("mutated-openapi.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&combined).unwrap()).unwrap();
    println!(
        "combined: {} operations generated; written to {}",
        run.generated.len(),
        out.display()
    );
}

/// The worst case: no operation survives (here: every path item is null, so the null pass
/// leaves an empty document). The client is then the empty one, every tool is reported
/// unavailable with its reason, and the crate still has a `Client` to compile against.
#[test]
fn a_document_with_no_usable_operation_still_gives_a_client_and_a_full_report() {
    let mut doc: Value = serde_json::from_slice(&pinned_bytes()).unwrap();
    for item in doc["paths"].as_object_mut().unwrap().values_mut() {
        *item = Value::Null;
    }
    let run = pipeline(&doc);
    assert!(run.generated.is_empty(), "{:?}", run.generated);
    let allow = model::parse_allowlist(include_str!("../spec/tools.toml")).unwrap();
    assert_eq!(run.unavailable.len(), allow.len());
    assert!(
        run.unavailable
            .iter()
            .all(|u| u.reason == "the document has no such operation"),
        "{:?}",
        run.unavailable.first()
    );
    assert!(run.report.contains("null-values"));
}
