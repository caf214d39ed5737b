//! Every example request runs against a fresh simulator, in order, and answers 2xx JSON:
//! with pacing off at full speed, and with pacing on when sent at 8 requests per second.
//!
//! With `IBKR_SIM_DUMP=<file>` the answers are also appended as JSON lines
//! (`{operation_id, method, path, status, body}`) for schema checks outside Rust
//! (`dev/check_schemas.py`).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

/// Runs every example in order, `gap` apart; returns the dump lines and the failures.
async fn run_examples(sim: &ibkr_sim::SimHandle, gap: Duration) -> (Vec<Value>, Vec<String>) {
    let client = common::client();
    let root = sim.base_url().trim_end_matches("/v1/api").to_string();
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut dump = Vec::new();
    let mut failures = Vec::new();
    for ex in ibkr_sim::example_requests() {
        tokio::time::sleep(gap).await;
        let req = ex.resolve(&vars);
        assert!(
            !req.path.contains('{'),
            "{}: unresolved placeholder in {}",
            req.operation_id,
            req.path
        );
        let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
        let mut rb = client
            .request(method, format!("{root}{}", req.path))
            .query(&req.query);
        if let Some(b) = &req.body {
            rb = rb.json(b);
        }
        let resp = rb.send().await.expect("request succeeds");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => {
                failures.push(format!("{} {}: not JSON: {text}", req.method, req.path));
                continue;
            }
        };
        if !(200..300).contains(&status) {
            failures.push(format!("{} {} -> {status}: {body}", req.method, req.path));
        }
        if body.get("error").is_some_and(|e| !e.is_null()) {
            failures.push(format!("{} {} -> error body: {body}", req.method, req.path));
        }
        let missing = req.capture(&body, &mut vars);
        assert!(
            missing.is_empty(),
            "{}: could not capture {missing:?} from {body}",
            req.operation_id
        );
        dump.push(json!({ "operation_id": req.operation_id, "method": req.method, "path": req.path, "status": status, "body": body }));
    }
    (dump, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_requests_all_answer_2xx_json_in_sequence() {
    let sim = common::start(common::unpaced()).await;
    let (dump, failures) = run_examples(&sim, Duration::ZERO).await;
    assert!(
        failures.is_empty(),
        "failed examples:\n{}",
        failures.join("\n")
    );
    let ops: BTreeSet<String> = ibkr_sim::example_requests()
        .into_iter()
        .map(|e| e.operation_id)
        .collect();
    assert_eq!(
        ops.len(),
        95,
        "one example per allowlisted operation at least"
    );
    if let Ok(path) = std::env::var("IBKR_SIM_DUMP") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for d in dump {
            writeln!(f, "{d}").unwrap();
        }
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_requests_pass_with_pacing_on_when_sent_at_eight_per_second() {
    let sim = common::start(ibkr_sim::SimConfig::default()).await;
    let (_, failures) = run_examples(&sim, Duration::from_millis(125)).await;
    assert!(
        failures.is_empty(),
        "failed examples:\n{}",
        failures.join("\n")
    );
    assert_eq!(sim.control().counters().paced, 0);
    sim.shutdown().await;
}
