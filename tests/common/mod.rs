//! Shared test helpers: where the team's shared material lives, and loading recorded samples.

#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` beside the checkout. Tests that need it fail (never skip) when it is missing.
pub fn shared_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared");
    assert!(
        dir.is_dir(),
        "{} is missing: the tests read IBKR's documents and recorded samples from the team's \
         shared folder beside the checkout",
        dir.display()
    );
    dir
}

/// A recorded gateway response from `../shared/ibkr-samples`.
#[derive(Debug, Clone)]
pub struct Sample {
    /// `<dir>/<file>` relative to the samples folder.
    pub name: String,
    /// Upper-case method.
    pub method: String,
    /// Path template, relative to `/v1/api`.
    pub endpoint: String,
    /// HTTP status.
    pub status: u64,
    /// Response body.
    pub body: serde_json::Value,
    /// `likely-live`, `unclear` or `hand-written`.
    pub captured: String,
    /// The grader's note.
    pub note: String,
}

/// Every sample, sorted by name.
pub fn samples() -> Vec<Sample> {
    let root = shared_dir().join("ibkr-samples");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).expect("read ibkr-samples") {
        let dir = dir.expect("dir entry").path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).expect("read sample dir") {
            let f = f.expect("file entry").path();
            if f.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&f).expect("read sample"))
                    .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            out.push(Sample {
                name: format!(
                    "{}/{}",
                    dir.file_name().unwrap().to_string_lossy(),
                    f.file_name().unwrap().to_string_lossy()
                ),
                method: s("method").to_uppercase(),
                endpoint: s("endpoint"),
                status: v["status"].as_u64().unwrap_or(0),
                body: v["body"].clone(),
                captured: v["source"]["captured"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                note: v["source"]["note"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Server state for tests: the MCP server pointed at `gateway_url` (a mock or the simulator),
/// with `extra` command-line flags of `ibkr-mcp serve`.
pub fn server_state(
    gateway_url: &str,
    extra: &[&str],
) -> std::sync::Arc<ibkr_mcp::mcp::ServerState> {
    use clap::Parser as _;
    let mut argv = vec!["ibkr-mcp", "serve", "--gateway-url", gateway_url];
    argv.extend_from_slice(extra);
    // Tests never write into the user's home: the audit log goes to the temp folder.
    let default_audit = std::env::temp_dir()
        .join(format!("ibkr-mcp-test-audit-{}.jsonl", std::process::id()))
        .to_string_lossy()
        .into_owned();
    if !extra.contains(&"--audit-log") {
        argv.extend(["--audit-log", default_audit.as_str()]);
    }
    // Nor do they read the user's kill switch: each test server has its own (absent) one.
    let default_switch = std::env::temp_dir()
        .join(format!(
            "ibkr-mcp-test-halt-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ))
        .to_string_lossy()
        .into_owned();
    if !extra.contains(&"--kill-switch-file") {
        argv.extend(["--kill-switch-file", default_switch.as_str()]);
    }
    // The tests drive the generated tools as much as the task tools: every toolset is on
    // unless a test chooses (the default, task tools only, is tested where it matters).
    if !extra.contains(&"--toolsets") {
        argv.extend(["--toolsets", "all"]);
    }
    // Against a mock gateway nothing manages a session; tests against the simulator turn the
    // session manager on explicitly.
    if !extra.contains(&"--session-keepalive") {
        argv.extend(["--session-keepalive", "false"]);
    }
    let cli = ibkr_mcp::cli::Cli::try_parse_from(argv).expect("serve flags parse");
    let ibkr_mcp::cli::Command::Serve(cfg) = cli.command else {
        unreachable!("serve")
    };
    std::sync::Arc::new(ibkr_mcp::server::build_state(&cfg).expect("server state"))
}

/// An in-process MCP handler over `server_state`.
pub fn server(gateway_url: &str, extra: &[&str]) -> ibkr_mcp::mcp::IbkrServer {
    ibkr_mcp::mcp::IbkrServer::new(server_state(gateway_url, extra))
}

/// `arguments` of a tool call from a JSON object literal.
pub fn args(v: serde_json::Value) -> Option<serde_json::Map<String, serde_json::Value>> {
    match v {
        serde_json::Value::Object(m) => Some(m),
        other => panic!("arguments must be an object, not {other}"),
    }
}

/// The concatenated text blocks of a tool result.
pub fn text_of(r: &rmcp::model::CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Compares `actual` with the golden file, or rewrites it under `EXPECTORATE=overwrite`.
pub fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var("EXPECTORATE").as_deref() == Ok("overwrite") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing; run with EXPECTORATE=overwrite",
            path.display()
        )
    });
    assert_eq!(
        expected,
        actual,
        "{} differs (EXPECTORATE=overwrite to accept)",
        path.display()
    );
}

/// A simulator and an MCP server (with its session manager running) pointed at it.
pub struct SimServer {
    /// The simulator.
    pub sim: ibkr_sim::SimHandle,
    /// The handler.
    pub server: ibkr_mcp::mcp::IbkrServer,
    /// Shared state (session manager, policy).
    pub state: std::sync::Arc<ibkr_mcp::mcp::ServerState>,
    /// Stops the session manager when dropped.
    _stop: tokio_util::sync::DropGuard,
}

impl SimServer {
    /// The session manager.
    pub fn session(&self) -> &ibkr_mcp::ibkr::session::SessionManager {
        self.state.session.as_ref().expect("session manager on")
    }

    /// Waits (polling, up to `limit`) until the session state is `want`.
    pub async fn wait_for(&self, want: ibkr_mcp::ibkr::session::State, limit: std::time::Duration) {
        let start = std::time::Instant::now();
        while self.session().state() != want {
            assert!(
                start.elapsed() < limit,
                "session did not reach {want:?} within {limit:?}: {:#?}",
                self.session().status()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Simulator requests seen for `METHOD /template` (as the simulator's counters name them).
    pub fn hits(&self, endpoint: &str) -> u64 {
        self.sim
            .control()
            .counters()
            .per_endpoint
            .get(endpoint)
            .copied()
            .unwrap_or(0)
    }
}

/// Starts `config` as a simulator (HTTPS, self-signed, like the real gateway) and a server with
/// the session manager running and `extra` flags.
pub async fn sim_server(config: ibkr_sim::SimConfig, extra: &[&str]) -> SimServer {
    let sim = ibkr_sim::start(
        config,
        "127.0.0.1:0".parse().unwrap(),
        ibkr_sim::Tls::SelfSigned,
    )
    .await
    .expect("simulator starts");
    let mut flags = vec!["--session-keepalive", "true"];
    flags.extend_from_slice(extra);
    let state = server_state(&sim.base_url(), &flags);
    let cancel = tokio_util::sync::CancellationToken::new();
    state
        .session
        .as_ref()
        .expect("session manager on")
        .spawn(cancel.clone());
    SimServer {
        server: ibkr_mcp::mcp::IbkrServer::new(state.clone()),
        state,
        sim,
        _stop: cancel.drop_guard(),
    }
}

/// The lookups the trading policy may make for a write, besides the tool's own endpoint (path
/// templates as the simulator's request log names them).
pub const POLICY_LOOKUPS: &[&str] = &[
    "/iserver/accounts",
    "/portfolio/accounts",
    "/iserver/contract/{conid}/info",
    "/iserver/marketdata/snapshot",
    "/iserver/account/order/status/{orderId}",
];

/// The mock gateway's account list: `accounts`, and whether the login is a paper login (every
/// account of a paper login is a paper account).
pub async fn paper_login(gateway: &httpmock::MockServer, accounts: &[&str], paper: bool) {
    let accounts: Vec<String> = accounts.iter().map(|s| s.to_string()).collect();
    gateway
        .mock_async(move |when, then| {
            when.method(httpmock::Method::GET)
                .path("/v1/api/iserver/accounts");
            then.status(200)
                .json_body(serde_json::json!({"accounts": accounts, "isPaper": paper}));
        })
        .await;
}

/// Starts a plain-HTTP simulator with pacing off on a free loopback port.
pub async fn plain_sim() -> ibkr_sim::SimHandle {
    ibkr_sim::start(
        ibkr_sim::SimConfig::default().with_pacing(false),
        "127.0.0.1:0".parse().unwrap(),
        ibkr_sim::Tls::None,
    )
    .await
    .expect("simulator starts")
}

/// What checking answers against the repaired document found.
#[derive(Debug, Default)]
pub struct DocumentFit {
    /// Answers that validate against their documented response schema.
    pub validated: usize,
    /// Answers that deserialize into their generated type.
    pub typed: usize,
    /// What did not fit, one line each.
    pub failures: Vec<String>,
}

impl DocumentFit {
    /// Checks the 2xx answer `body` of `operation_id` (HTTP `status`) against `doc`'s response
    /// schema for that status and against the generated type; `at` names the request in
    /// failures. An operation whose document describes no JSON body for any status is only
    /// type-checked; an undocumented status of a described operation fails the test.
    pub fn check(
        &mut self,
        doc: &serde_json::Value,
        operation_id: &str,
        status: u16,
        body: &serde_json::Value,
        at: &str,
    ) {
        use ibkr_mcp::spec::tool_schema::response_schema;
        match response_schema(doc, operation_id, Some(status)) {
            Some(schema) => {
                let validator = jsonschema::options()
                    .should_validate_formats(false)
                    .build(&schema)
                    .unwrap_or_else(|e| panic!("{operation_id}: schema does not compile: {e}"));
                let errors: Vec<String> = validator
                    .iter_errors(body)
                    .take(3)
                    .map(|e| format!("{} at {}", e, e.instance_path()))
                    .collect();
                if errors.is_empty() {
                    self.validated += 1;
                } else {
                    self.failures.push(format!("{at}: {}", errors.join("; ")));
                }
            }
            None => assert!(
                response_schema(doc, operation_id, None).is_none(),
                "{at}: HTTP {status} is not a documented status of {operation_id}"
            ),
        }
        if let Some(decoded) =
            ibkr_mcp::ibkr::operations::decode_success(operation_id, body.clone())
        {
            match decoded {
                Ok(_) => self.typed += 1,
                Err(e) => self
                    .failures
                    .push(format!("{at}: does not fit the generated type: {e}")),
            }
        }
    }
}

/// The structured result of a successful call, checked against the tool's own output schema.
pub fn ok(tool: &str, r: &rmcp::model::CallToolResult) -> serde_json::Value {
    assert_eq!(r.is_error, Some(false), "{tool}: {}", text_of(r));
    let v = r.structured_content.clone().expect("structured content");
    let def = ibkr_mcp::mcp::catalog::all()
        .iter()
        .find(|t| t.name == tool)
        .unwrap();
    let validator = jsonschema::validator_for(def.output_schema.as_ref().unwrap()).unwrap();
    let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{tool}: {errors:?}\n{v}");
    v
}

/// A task tool's table (`columns`, `rows`) as one object per row.
pub fn objects(v: &serde_json::Value) -> Vec<serde_json::Value> {
    let columns: Vec<&str> = v["columns"]
        .as_array()
        .unwrap_or_else(|| panic!("no columns: {v}"))
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let r = r.as_array().unwrap();
            assert_eq!(r.len(), columns.len(), "{r:?}");
            serde_json::Value::Object(
                columns
                    .iter()
                    .zip(r)
                    .map(|(c, x)| (c.to_string(), x.clone()))
                    .collect(),
            )
        })
        .collect()
}

/// The kind of an `isError` result (`invalid_arguments`, `unresolved`, `policy_refused`...).
pub fn err_kind(r: &rmcp::model::CallToolResult) -> String {
    assert_eq!(r.is_error, Some(true), "{}", text_of(r));
    r.structured_content.as_ref().unwrap()["error"]["kind"]
        .as_str()
        .unwrap_or("")
        .to_string()
}
