//! The repair pipeline on IBKR's real documents: every patch applies to the pinned document,
//! nothing is lost, the built-in passes hold, regeneration against older and newer documents is
//! reported (golden files), and defects of unseen kinds give a report instead of a panic.
// These tests generate clients for documents: they need the `codegen` feature (the default).
#![cfg(feature = "codegen")]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::golden;
use ibkr_mcp::spec::{self, generate, pin, repair};
use serde_json::{Value, json};

fn doc_path(version: &str) -> PathBuf {
    common::shared_dir()
        .join("ibkr-spec")
        .join(version)
        .join("openapi.json")
}

fn repo_patches() -> Vec<repair::PatchFile> {
    repair::load_patches(&Path::new(env!("CARGO_MANIFEST_DIR")).join("patches")).expect("patches")
}

#[test]
fn pinned_document_every_patch_applies() {
    let bytes = std::fs::read(doc_path(&pin::pinned().version)).expect("pinned document");
    assert_eq!(repair::sha256_hex(&bytes), pin::pinned().sha256);
    let r = repair::repair(&bytes, &repo_patches()).expect("repair");
    assert!(r.pinned);
    let not_applied: Vec<_> = r
        .patches
        .iter()
        .filter(|p| p.status != repair::PatchStatus::Applied)
        .collect();
    assert!(
        not_applied.is_empty(),
        "patches that do not apply to the pinned document: {not_applied:#?}"
    );
    assert!(
        r.patches.len() >= 20,
        "expected the patch set, found {}",
        r.patches.len()
    );
}

#[test]
fn pinned_document_repair_keeps_every_operation_parameter_and_example() {
    let bytes = std::fs::read(doc_path(&pin::pinned().version)).expect("pinned document");
    let r = repair::repair(&bytes, &repo_patches()).expect("repair");
    assert_eq!(r.before.operations, 141);
    assert_eq!(r.after.operations, r.before.operations);
    // Only parameters a patch removes on purpose (named in patches/README.md) may go.
    const REMOVED_ON_PURPOSE: usize = 1; // 0201: /pa/allperiods `param0`
    assert_eq!(
        r.after.parameters + REMOVED_ON_PURPOSE,
        r.before.parameters,
        "{:?} -> {:?}",
        r.before,
        r.after
    );
    assert!(
        r.after.examples >= r.before.examples,
        "{:?} -> {:?}",
        r.before,
        r.after
    );
    assert!(
        r.after.schemas >= r.before.schemas,
        "{:?} -> {:?}",
        r.before,
        r.after
    );
}

#[test]
fn pinned_document_after_repair_has_unique_operation_ids_and_no_structural_problems() {
    let bytes = std::fs::read(doc_path(&pin::pinned().version)).expect("pinned document");
    let r = repair::repair(&bytes, &repo_patches()).expect("repair");
    let ops = repair::operations(&r.doc);
    let ids: BTreeSet<_> = ops
        .iter()
        .map(|o| o.operation_id.clone().expect("operationId"))
        .collect();
    assert_eq!(ids.len(), ops.len());
    assert_eq!(
        r.problems_after
            .iter()
            .filter(|p| p.check != "cookie-parameter")
            .cloned()
            .collect::<Vec<_>>(),
        vec![],
        "our checks still find problems"
    );
    assert!(
        !r.problems_before.is_empty(),
        "the raw document is known to be broken"
    );
}

#[test]
fn pinned_document_open_objects_pass_leaves_no_additional_properties_true() {
    let bytes = std::fs::read(doc_path(&pin::pinned().version)).expect("pinned document");
    let r = repair::repair(&bytes, &repo_patches()).expect("repair");
    let text = serde_json::to_string(&r.doc).unwrap();
    assert!(!text.contains("\"additionalProperties\":true"));
}

#[test]
fn operation_id_rule_is_method_then_snake_case_path() {
    assert_eq!(
        repair::operation_id_for("GET", "/iserver/marketdata/snapshot"),
        "get_iserver_marketdata_snapshot"
    );
    assert_eq!(
        repair::operation_id_for("post", "/iserver/account/{accountId}/orders/whatif"),
        "post_iserver_account_account_id_orders_whatif"
    );
    assert_eq!(
        repair::operation_id_for("get", "/trsrv/all-conids"),
        "get_trsrv_all_conids"
    );
}

#[test]
fn built_client_generates_every_pinned_operation_but_unexpressible_ones() {
    let report: Value = serde_json::from_str(spec::BUILD_REPORT).unwrap();
    let generated = report["generation"]["generated"].as_array().unwrap().len();
    let excluded = report["generation"]["excluded"].as_array().unwrap();
    assert_eq!(generated + excluded.len(), 141);
    // Only what progenitor cannot send faithfully: application/jwt bodies, the WebSocket's
    // cookie, and objects serialized into query strings (form style, not exploded).
    for e in excluded {
        let reason = e["reason"].as_str().unwrap();
        assert!(
            reason.contains("`application/jwt`, which progenitor cannot send")
                || reason.contains("cookie parameter `api`") && e["path"] == "/ws"
                || reason.contains("is an object (style form, explode false)"),
            "unexpected exclusion: {e}"
        );
    }
    assert_eq!(excluded.len(), 10, "{excluded:#?}");
}

/// The stable parts of a report: patch statuses, generated count, exclusions.
fn summary(r: &spec::Report) -> String {
    let mut s = format!(
        "version {}\nsha256 {}\noperations {} -> {}\n",
        r.repair.version, r.repair.sha256, r.repair.before.operations, r.repair.after.operations
    );
    for p in &r.repair.patches {
        let status = match &p.status {
            repair::PatchStatus::Applied => "applied",
            repair::PatchStatus::Skipped { .. } => "skipped",
            repair::PatchStatus::Failed { .. } => "FAILED",
        };
        s.push_str(&format!("patch {status} {}\n", p.name));
    }
    s.push_str(&format!("generated {}\n", r.generation.generated.len()));
    for e in &r.generation.excluded {
        s.push_str(&format!(
            "excluded {} {} {}: {}\n",
            e.operation_id, e.method, e.path, e.reason
        ));
    }
    s
}

fn regenerate(version: &str) -> spec::Report {
    let r = spec::report_for_file(&doc_path(version), &repo_patches()).expect("report");
    assert!(r.generation.fatal.is_none(), "{:?}", r.generation.fatal);
    assert!(!r.generation.code.is_empty());
    assert_eq!(
        r.generation.generated.len() + r.generation.excluded.len(),
        r.repair.after.operations,
        "every operation is either generated or excluded with a reason"
    );
    r
}

#[test]
fn older_document_2_7_0_regenerates_with_report() {
    let r = regenerate("2.7.0");
    assert!(
        r.generation.generated.len() >= 100,
        "{}",
        r.generation.generated.len()
    );
    golden("report-2.7.0.txt", &summary(&r));
}

#[test]
fn newer_document_2_27_0_regenerates_with_report() {
    let r = regenerate("2.27.0");
    assert!(
        r.generation.generated.len() >= 120,
        "{}",
        r.generation.generated.len()
    );
    golden("report-2.27.0.txt", &summary(&r));
}

#[test]
fn unseen_defect_kinds_give_a_readable_report_not_a_panic() {
    // A small document with defects IBKR has not (yet) shipped.
    let doc = json!({
        "openapi": "3.0.3",
        "info": {"title": "t", "version": "9.9.9"},
        "paths": {
            "/fine": {"get": {"responses": {"200": {"description": "ok",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}}}}},
            "/list-type": {"get": {"responses": {"200": {"description": "ok",
                "content": {"application/json": {"schema": {"type": ["string", "null"]}}}}}}},
            "/two-media": {"post": {
                "requestBody": {"content": {
                    "application/json": {"schema": {"type": "object"}},
                    "application/xml": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "ok"}}}},
            "/deep": {"get": {"parameters": [{"name": "f", "in": "query", "style": "deepObject",
                "schema": {"type": "object"}}], "responses": {"200": {"description": "ok"}}}},
            "/missing-ref": {"get": {"responses": {"200": {"description": "ok",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Nope"}}}}}}},
            "/no-schema": {"get": {"responses": {"200": {"description": "ok",
                "content": {"application/json": {}}}}}}
        },
        "components": {"schemas": {"Thing": {"type": "object", "properties": {"a": {"type": "string"}}}}},
        "security": [{"x": null}]
    });
    let dir = std::env::temp_dir().join(format!("ibkr-mcp-unseen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("weird.json");
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    let r = spec::report_for_file(&path, &repo_patches()).expect("report");
    std::fs::remove_dir_all(&dir).ok();
    // Every IBKR patch's guard fails here: skipped, nothing corrupted.
    assert!(
        r.repair
            .patches
            .iter()
            .all(|p| matches!(p.status, repair::PatchStatus::Skipped { .. }))
    );
    let generated: Vec<_> = r
        .generation
        .generated
        .iter()
        .map(|g| g.path.as_str())
        .collect();
    // The dangling `$ref` is a defect kind the `dangling-refs` pass repairs (any JSON).
    assert_eq!(generated, vec!["/fine", "/missing-ref"]);
    let dangling = r
        .repair
        .passes
        .iter()
        .find(|p| p.name == "dangling-refs")
        .unwrap();
    assert_eq!(dangling.changes, 1, "{dangling:?}");
    assert!(
        dangling.notes[0].contains("~1missing-ref")
            && dangling.notes[0].contains("#/components/schemas/Nope"),
        "{dangling:?}"
    );
    let excluded: BTreeSet<_> = r
        .generation
        .excluded
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(
        excluded,
        BTreeSet::from(["/list-type", "/two-media", "/deep", "/no-schema"])
    );
    for e in &r.generation.excluded {
        assert!(!e.reason.is_empty() && e.reason.len() < 400, "{e:?}");
    }
    let text = spec::render_report(&serde_json::to_value(&r).unwrap());
    assert!(
        text.contains("Generation: 2 operations generated, 4 excluded"),
        "{text}"
    );
}

#[test]
fn openapi_3_1_document_is_refused_with_a_clear_message() {
    let err = repair::parse_document(
        br#"{"openapi":"3.1.0","info":{"title":"t","version":"1"},"paths":{}}"#,
    )
    .unwrap_err();
    assert!(err.contains("3.0.x only"), "{err}");
}

#[test]
fn missing_document_error_says_how_to_get_one() {
    let empty = std::env::temp_dir().join(format!("ibkr-mcp-nospec-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let err = repair::locate_spec(&empty.join("checkout"), None).unwrap_err();
    assert!(
        err.contains("scripts/fetch-spec") && err.contains("IBKR_OPENAPI_SPEC"),
        "{err}"
    );
    let err = repair::locate_spec(&empty, Some("/definitely/not/here.json")).unwrap_err();
    assert!(err.contains("/definitely/not/here.json"), "{err}");
    std::fs::remove_dir_all(&empty).ok();
}

#[test]
fn guard_failure_skips_and_fix_failure_leaves_document_unchanged() {
    let doc = json!({"a": {"type": "integer"}});
    let patch = |text: &str| repair::PatchFile {
        name: "0001-x.json".into(),
        ops: repair::parse_patch("0001-x.json", text.as_bytes()),
    };
    let mut d = doc.clone();
    let out = repair::apply_patches(
        &mut d,
        &[patch(
            r#"[{"op":"test","path":"/a/type","value":"string"},{"op":"replace","path":"/a/type","value":"number"}]"#,
        )],
    );
    assert!(matches!(out[0].status, repair::PatchStatus::Skipped { .. }));
    assert_eq!(d, doc);
    let out = repair::apply_patches(
        &mut d,
        &[patch(
            r#"[{"op":"test","path":"/a/type","value":"integer"},{"op":"replace","path":"/a/type","value":"number"},{"op":"remove","path":"/nope"}]"#,
        )],
    );
    assert!(
        matches!(out[0].status, repair::PatchStatus::Failed { .. }),
        "{out:?}"
    );
    assert_eq!(d, doc, "a failed patch must not leave half its changes");
    let out = repair::apply_patches(
        &mut d,
        &[patch(
            r#"[{"op":"replace","path":"/a/type","value":"number"}]"#,
        )],
    );
    assert!(
        matches!(&out[0].status, repair::PatchStatus::Failed { reason } if reason.contains("guard"))
    );
    let out = repair::apply_patches(
        &mut d,
        &[patch(
            r#"[{"op":"test","path":"/a/type","value":"integer"},{"op":"replace","path":"/a/type","value":"number"}]"#,
        )],
    );
    assert_eq!(out[0].status, repair::PatchStatus::Applied);
    assert_eq!(d, json!({"a": {"type": "number"}}));
}

#[test]
fn generation_view_keeps_one_success_type_and_drops_error_bodies_only_for_the_generator() {
    let doc = json!({"openapi": "3.0.0", "info": {"title": "t", "version": "1"}, "paths": {"/x": {"get": {
    "operationId": "x",
    "responses": {
        "200": {"description": "a", "content": {"application/json": {"schema": {"type": "object"}}}},
        "204": {"description": "none"},
        "401": {"description": "no", "content": {"text/plain": {"schema": {"type": "string"}}}},
        "500": {"description": "err", "content": {"application/json": {"schema": {"type": "string"}}}}
    }}}}});
    let (view, notes) = generate::generation_view(&doc);
    let responses = view["paths"]["/x"]["get"]["responses"].as_object().unwrap();
    assert_eq!(responses.keys().collect::<Vec<_>>(), vec!["200"]);
    assert!(
        notes
            .iter()
            .any(|n| n.operation_id == "x" && n.note.contains("204"))
    );
    // The input is untouched.
    assert_eq!(
        doc["paths"]["/x"]["get"]["responses"]
            .as_object()
            .unwrap()
            .len(),
        4
    );
    let g = generate::generate(&doc, None);
    assert_eq!(g.generated.len(), 1, "{:?}", g.excluded);
}

#[test]
fn yaml_patch_file_is_read_like_json() {
    let yaml = "- op: test\n  path: /a/type\n  value: integer\n- op: replace\n  path: /a/type\n  value: number\n";
    let ops = repair::parse_patch("0002-widen-a.yaml", yaml.as_bytes()).expect("yaml patch");
    let mut d = json!({"a": {"type": "integer"}});
    let out = repair::apply_patches(
        &mut d,
        &[repair::PatchFile {
            name: "0002-widen-a.yaml".into(),
            ops: Ok(ops),
        }],
    );
    assert_eq!(out[0].status, repair::PatchStatus::Applied);
    assert_eq!(d, json!({"a": {"type": "number"}}));
    assert!(repair::is_patch_file_name("0002-widen-a.yml"));
    assert!(!repair::is_patch_file_name("README.md"));
}

#[test]
fn add_over_an_existing_member_skips_the_patch_instead_of_overwriting() {
    let mut d =
        json!({"a": {"type": "array", "items": {"type": "string", "description": "IBKR's own"}}});
    let before = d.clone();
    let patch = repair::PatchFile {
        name: "0003-x.json".into(),
        ops: repair::parse_patch(
            "0003-x.json",
            br#"[{"op":"test","path":"/a/type","value":"array"},{"op":"add","path":"/a/items","value":{}}]"#,
        ),
    };
    let out = repair::apply_patches(&mut d, &[patch]);
    assert!(
        matches!(&out[0].status, repair::PatchStatus::Skipped { reason } if reason.contains("already defines")),
        "{out:?}"
    );
    assert_eq!(d, before);
}
