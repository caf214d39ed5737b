//! Property tests (proptest): malformed JSON-RPC messages and arbitrary tool arguments thrown
//! at the server must never panic it or stop it serving.
//!
//! 1. In-process: random JSON for every tool's arguments through the whole call path (schema
//!    check, policy, the generated client against a mock gateway) — a result or a protocol
//!    error every time, never a panic.
//! 2. Over HTTP: random bytes, random JSON, random JSON-RPC envelopes and random `tools/call`
//!    requests posted to `/mcp` of a real server on loopback; after every case the server must
//!    still answer `/healthz`, and at the end a well-formed `tools/list` must still work.
//!
//! The numbers of cases run are printed (`--nocapture`) and were recorded in the closing note.

mod common;

use std::sync::Arc;

use httpmock::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-zA-Z0-9 ._/{}\\-]{0,12}".prop_map(Value::String),
        // Names the schemas know, so objects sometimes look almost right.
        prop::sample::select(vec![
            "accountId",
            "conid",
            "conids",
            "body",
            "orders",
            "quantity",
            "side",
            "BUY",
            "MKT",
            "DU1234567",
            "265598",
            "fields",
            "replyId",
            "confirmed",
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "accountId",
                        "conid",
                        "conids",
                        "body",
                        "orders",
                        "quantity",
                        "side",
                        "orderType",
                        "price",
                        "fields",
                        "replyId",
                        "confirmed",
                        "x",
                        "",
                    ]),
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

fn object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec(
        (
            prop::sample::select(vec![
                "accountId",
                "conid",
                "conids",
                "body",
                "fields",
                "replyId",
                "pageId",
                "orderId",
                "period",
                "bar",
                "symbol",
                "junk",
            ]),
            json_value(),
        ),
        0..5,
    )
    .prop_map(|kv| kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_tool_arguments_never_panic_the_call_path() {
    let gateway = MockServer::start_async().await;
    gateway
        .mock_async(|when, then| {
            when.any_request();
            then.status(200).json_body(json!({}));
        })
        .await;
    let url = format!("{}/v1/api", gateway.base_url());
    let server = Arc::new(common::server(
        &url,
        &["--allow-trading", "--toolsets", "all"],
    ));
    let names: Vec<String> = server.tools().iter().map(|t| t.name.to_string()).collect();
    let mut runner = TestRunner::new(Config {
        cases: 1500,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let cases = std::sync::atomic::AtomicUsize::new(0);
    let strategy = (prop::sample::select(names), object());
    tokio::task::block_in_place(|| {
        runner
            .run(&strategy, |(name, arguments)| {
                cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let s = server.clone();
                let outcome = handle.block_on(async move {
                    tokio::spawn(async move { s.call(&name, Some(arguments)).await.is_ok() }).await
                });
                prop_assert!(outcome.is_ok(), "the call path panicked");
                Ok(())
            })
            .unwrap();
    });
    println!(
        "fuzz: {} arbitrary tool calls through the call path, no panic",
        cases.into_inner()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_over_http_never_stop_the_server() {
    let gateway = MockServer::start_async().await;
    gateway
        .mock_async(|when, then| {
            when.any_request();
            then.status(200).json_body(json!([]));
        })
        .await;
    let url = format!("{}/v1/api", gateway.base_url());
    let state = common::server_state(&url, &["--allow-trading", "--toolsets", "all"]);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let app = ibkr_mcp::http::app(
        state,
        &ibkr_mcp::http::HttpOptions {
            allowed_hosts: vec!["127.0.0.1".into()],
            allowed_origins: vec![],
            token: None,
            max_request_bytes: 64 * 1024,
            client_timeout: std::time::Duration::from_secs(5),
            max_sessions: 64,
            session_idle_timeout: std::time::Duration::from_secs(60),
            shutdown: shutdown.clone(),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(ibkr_mcp::http::serve(
        listener,
        app,
        shutdown.clone(),
        std::time::Duration::from_secs(5),
    ));
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let post = |body: Vec<u8>, session: Option<String>| {
        let mut rb = http
            .post(format!("{base}/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(s) = session {
            rb = rb.header("mcp-session-id", s);
        }
        rb.send()
    };
    // A session to aim tool calls at.
    let init = post(
        serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}}))
        .unwrap(),
        None,
    )
    .await
    .unwrap();
    let session = init
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    post(
        br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec(),
        session.clone(),
    )
    .await
    .unwrap();

    let message = prop_oneof![
        // Raw bytes.
        prop::collection::vec(any::<u8>(), 0..300),
        // Any JSON.
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        // JSON-RPC envelopes with odd methods, ids and params.
        (
            prop::sample::select(vec![
                "tools/call",
                "tools/list",
                "initialize",
                "resources/read",
                "ping",
                "nope",
                "",
            ]),
            json_value(),
            json_value()
        )
            .prop_map(|(m, id, params)| serde_json::to_vec(
                &json!({"jsonrpc": "2.0", "id": id, "method": m, "params": params})
            )
            .unwrap()),
        // Tool calls with arbitrary names and arguments.
        (
            prop::sample::select(vec![
                "place_orders",
                "get_market_data_snapshot",
                "reply_order_question",
                "list_positions",
                "get_session_status",
                "no_such_tool",
            ]),
            json_value()
        )
            .prop_map(|(name, args)| serde_json::to_vec(&json!({
                "jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": name, "arguments": args}
            }))
            .unwrap()),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 600,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let cases = std::sync::atomic::AtomicUsize::new(0);
    tokio::task::block_in_place(|| {
        runner
            .run(&(message, any::<bool>()), |(body, in_session)| {
                cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let sid = if in_session { session.clone() } else { None };
                let healthy = handle.block_on(async {
                    let answered = post(body, sid).await.is_ok();
                    let health = http
                        .get(format!("{base}/healthz"))
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false);
                    answered && health
                });
                prop_assert!(healthy, "the server stopped answering");
                Ok(())
            })
            .unwrap();
    });
    // Still serving MCP properly.
    let list = post(
        br#"{"jsonrpc":"2.0","id":99,"method":"tools/list"}"#.to_vec(),
        session.clone(),
    )
    .await
    .unwrap();
    assert!(list.status().is_success());
    let text = list.text().await.unwrap();
    assert!(
        text.contains("place_orders"),
        "{}",
        &text[..text.len().min(300)]
    );
    println!(
        "fuzz: {} malformed messages over HTTP, server kept serving",
        cases.into_inner()
    );
    shutdown.cancel();
    serving.await.unwrap().unwrap();
}

/// Pieces of path-traversal payloads: dot segments, separators and their escapes, look-alikes.
fn traversal_value() -> impl Strategy<Value = String> {
    let atom = prop::sample::select(vec![
        ".",
        "..",
        "/",
        "\\",
        "%2e",
        "%2E",
        "%2f",
        "%5c",
        "%25",
        ";",
        "?",
        "#",
        "\u{FF0E}",
        "\u{2024}",
        "\u{FF0F}",
        "\u{0}",
        " ",
        "DU1234567",
        "U7654321",
        "order",
        "logout",
        "iserver",
        "1",
    ]);
    prop::collection::vec(atom, 1..12).prop_map(|parts| parts.concat())
}

/// Random traversal payloads in random path parameters of random tools: the simulator never
/// sees a request that is not the tool's own endpoint (nor the policy's lookups).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_payloads_in_path_parameters_never_reach_another_endpoint() {
    let sim = ibkr_sim::start(
        ibkr_sim::SimConfig::default().with_pacing(false),
        "127.0.0.1:0".parse().unwrap(),
        ibkr_sim::Tls::SelfSigned,
    )
    .await
    .expect("simulator starts");
    let server = Arc::new(common::server(
        &sim.base_url(),
        &[
            "--allow-trading",
            "--allow-live-trading",
            "--toolsets",
            "all",
            "--pacing",
            "false",
        ],
    ));
    let targets: Vec<(String, String, String)> = ibkr_mcp::mcp::catalog::all()
        .iter()
        .flat_map(|t| {
            t.args
                .iter()
                .filter(|a| a.location == ibkr_mcp::spec::model::ArgLocation::Path)
                .map(|a| (t.name.clone(), a.name.clone(), t.path.clone()))
        })
        .collect();
    assert!(targets.len() >= 30, "{}", targets.len());
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let cases = std::sync::atomic::AtomicUsize::new(0);
    tokio::task::block_in_place(|| {
        runner
            .run(
                &(prop::sample::select(targets), traversal_value(), object()),
                |((tool, param, template), payload, mut arguments)| {
                    cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    arguments.insert(param, Value::String(payload));
                    sim.control().clear_requests();
                    let s = server.clone();
                    let name = tool.clone();
                    handle
                        .block_on(async move {
                            tokio::spawn(async move { s.call(&name, Some(arguments)).await }).await
                        })
                        .expect("no panic")
                        .ok();
                    for e in sim.control().requests() {
                        let t = e.template.clone().unwrap_or_default();
                        prop_assert!(
                            t == template || common::POLICY_LOOKUPS.contains(&t.as_str()),
                            "{tool} reached {} {}",
                            e.method,
                            e.path
                        );
                    }
                    Ok(())
                },
            )
            .unwrap();
    });
    println!(
        "fuzz: {} traversal payloads in path parameters, none left the tool's endpoint",
        cases.into_inner()
    );
}
