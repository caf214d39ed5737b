//! Reality check: every likely-live recorded gateway response whose operation exists in the
//! document deserializes into the generated success type of that operation.
//!
//! The samples are read from `../shared/ibkr-samples` at test time (never committed). A sample
//! is selected when it is graded `likely-live`, has a 2xx status, and its note does not mark it a
//! FRAGMENT or TRUNCATED (a partial body cannot be expected to carry required fields).

mod common;

use ibkr_mcp::ibkr::operations;

fn selected(s: &common::Sample) -> bool {
    let note = s.note.to_ascii_uppercase();
    s.captured == "likely-live"
        && (200..300).contains(&s.status)
        && !note.contains("FRAGMENT")
        && !note.contains("TRUNCATED")
}

#[test]
fn likely_live_samples_deserialize_into_generated_types() {
    let all = common::samples();
    assert_eq!(all.len(), 215, "the shared folder should hold 215 samples");
    let mut pass = 0;
    let mut untyped = 0;
    let mut failures = Vec::new();
    let mut not_in_document = Vec::new();
    let mut considered = 0;
    for s in all.iter().filter(|s| selected(s)) {
        let Some(op) = operations::find(&s.method, &s.endpoint) else {
            not_in_document.push(format!("{} {}", s.method, s.endpoint));
            continue;
        };
        considered += 1;
        match operations::decode_success(op.operation_id, s.body.clone()) {
            Some(Ok(round_trip)) => {
                // Nothing IBKR sent may be lost: every key of the sample survives the round trip.
                match lost_keys(&s.body, &round_trip, "") {
                    None => pass += 1,
                    Some(path) => failures.push(format!(
                        "{} ({}): value at `{path}` lost in the typed round trip",
                        s.name, op.operation_id
                    )),
                }
            }
            Some(Err(e)) => failures.push(format!("{} ({}): {e}", s.name, op.operation_id)),
            None => {
                untyped += 1;
                failures.push(format!(
                    "{} ({}): success body is not typed ({})",
                    s.name, op.operation_id, op.response_type
                ))
            }
        }
    }
    not_in_document.sort();
    not_in_document.dedup();
    println!(
        "samples: {} selected; {considered} of operations in the document; {pass} deserialize, \
         {} fail ({untyped} untyped); not in the document: {}",
        all.iter().filter(|s| selected(s)).count(),
        failures.len(),
        not_in_document.join(", ")
    );
    assert!(
        considered > 100,
        "too few samples matched operations: {considered}"
    );
    assert!(
        failures.is_empty(),
        "samples that do not fit their generated types:\n{}",
        failures.join("\n")
    );
}

/// The first path where `original` has a value that `round_trip` lacks or changed. Numbers are
/// compared as numbers (`1.0` and `1` are the same value), and a `null` or an empty
/// collection may become absent.
fn lost_keys(
    original: &serde_json::Value,
    round_trip: &serde_json::Value,
    path: &str,
) -> Option<String> {
    use serde_json::Value;
    match (original, round_trip) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(k, v)| match b.get(k) {
            Some(w) => lost_keys(v, w, &format!("{path}/{k}")),
            // typify skips empty optional collections when serializing: nothing is lost.
            None if v.is_null() || v == &serde_json::json!([]) || v == &serde_json::json!({}) => {
                None
            }
            None => Some(format!("{path}/{k}")),
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| lost_keys(v, w, &format!("{path}/{i}"))),
        (Value::Number(a), Value::Number(b)) => {
            (a.as_f64() != b.as_f64()).then(|| path.to_string())
        }
        (a, b) => (a != b).then(|| path.to_string()),
    }
}

/// Every recorded 2xx response (any grade) of a tool's operation, shaped as the tool returns it
/// (`structuredContent`), validates against that tool's output schema: the schemas promise
/// nothing a real reply could break.
#[test]
fn recorded_replies_validate_against_tool_output_schemas() {
    use ibkr_mcp::mcp::{catalog, results};
    let mut checked = 0;
    let mut failures = Vec::new();
    for s in common::samples()
        .iter()
        .filter(|s| (200..300).contains(&s.status))
    {
        let Some(op) = operations::find(&s.method, &s.endpoint) else {
            continue;
        };
        let Some(tool) = catalog::all()
            .iter()
            .find(|t| t.operation_id == op.operation_id)
        else {
            continue;
        };
        let Some(schema) = &tool.output_schema else {
            continue;
        };
        let validator = jsonschema::validator_for(schema).expect("output schema compiles");
        let content = results::structured(s.body.clone());
        checked += 1;
        if let Some(e) = validator.iter_errors(&content).next() {
            failures.push(format!("{} ({}): {e}", s.name, tool.name));
        }
    }
    println!("output schemas: {checked} recorded replies checked");
    assert!(checked > 150, "only {checked} replies checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
