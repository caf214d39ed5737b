//! The simulator against the repaired document: every example request of every operation the
//! tool allowlist exposes, run in order against a fresh simulator, answers 2xx with a body that
//! validates against the repaired document's JSON Schema for that operation and status, and
//! that deserializes into the generated client's type for it.

mod common;

use std::collections::{BTreeSet, HashMap};

use ibkr_mcp::spec::{REPAIRED_SPEC, tool_schema};
use serde_json::Value;

#[tokio::test]
async fn every_simulated_reply_validates_against_the_repaired_document() {
    let doc: Value = serde_json::from_str(REPAIRED_SPEC).unwrap();
    let sim = common::plain_sim().await;
    let root = sim.base_url().trim_end_matches("/v1/api").to_string();
    let http = reqwest::Client::new();
    let mut vars = HashMap::new();
    let mut covered = BTreeSet::new();
    let mut fit = common::DocumentFit::default();
    for example in ibkr_sim::example_requests() {
        let req = example.resolve(&vars);
        let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
        let mut rb = http
            .request(method, format!("{root}{}", req.path))
            .query(&req.query);
        if let Some(b) = &req.body {
            rb = rb.json(b);
        }
        let resp = rb.send().await.expect("simulator answers");
        let status = resp.status().as_u16();
        let body: Value = match resp.json().await {
            Ok(v) => v,
            Err(e) => {
                fit.failures
                    .push(format!("{} {}: not JSON: {e}", req.method, req.path));
                continue;
            }
        };
        example.capture(&body, &mut vars);
        if !(200..300).contains(&status) {
            fit.failures.push(format!(
                "{} {} -> HTTP {status}: {body}",
                req.method, req.path
            ));
            continue;
        }
        covered.insert(req.operation_id.clone());
        let at = format!("{} ({})", req.path, req.operation_id);
        fit.check(&doc, &req.operation_id, status, &body, &at);
    }
    let tools: BTreeSet<String> = ibkr_mcp::mcp::catalog::all()
        .iter()
        .filter(|t| !ibkr_mcp::mcp::catalog::is_server_tool(t))
        .map(|t| t.operation_id.clone())
        .collect();
    let missing: Vec<&String> = tools.difference(&covered).collect();
    println!(
        "simulator conformance: {} operations answered 2xx, {} replies validate against \
         the repaired document, {} deserialize into generated types",
        covered.len(),
        fit.validated,
        fit.typed
    );
    assert!(
        missing.is_empty(),
        "tool operations without a 2xx example: {missing:?}"
    );
    assert!(fit.failures.is_empty(), "{}", fit.failures.join("\n"));
    assert!(
        fit.validated >= 90,
        "only {} replies were checked against a schema",
        fit.validated
    );
    sim.shutdown().await;
}

#[test]
fn response_schemas_reject_replies_of_the_wrong_shape() {
    let doc: Value = serde_json::from_str(REPAIRED_SPEC).unwrap();
    let schema = tool_schema::response_schema(&doc, "get_iserver_accounts", Some(200)).unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    assert!(v.is_valid(&serde_json::json!({"accounts": ["DU1"], "selectedAccount": "DU1"})));
    assert!(!v.is_valid(&serde_json::json!({"accounts": 5})));
    // `nullable` fields take null, others do not.
    let pos = tool_schema::response_schema(
        &doc,
        "get_portfolio_account_id_positions_page_id",
        Some(200),
    )
    .unwrap();
    let v = jsonschema::validator_for(&pos).unwrap();
    assert!(v.is_valid(&serde_json::json!([{"conid": 1, "putOrCall": null}])));
    assert!(!v.is_valid(&serde_json::json!([{"conid": "not a number"}])));
}
