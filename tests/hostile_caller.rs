//! Tool arguments written by an attacker (a prompt injection in data the model read) must not
//! change which endpoint, account or limit applies. Each test here is named after the finding
//! it closes (issue 10, items 1–7, 10 and 11) and failed on the code before the fix.

mod common;

use ibkr_mcp::spec::model::{ArgLocation, Method};
use std::path::PathBuf;
use std::sync::Arc;

use common::{POLICY_LOOKUPS, args, paper_login, server, server_state, text_of};
use httpmock::prelude::*;
use ibkr_mcp::mcp::catalog::{self, ToolDef};
use serde_json::{Map, Value, json};

fn gw(s: &MockServer) -> String {
    format!("{}/v1/api", s.base_url())
}

fn temp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ibkr-mcp-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn kind(r: &rmcp::model::CallToolResult) -> String {
    r.structured_content
        .as_ref()
        .and_then(|s| s["error"]["kind"].as_str())
        .unwrap_or("")
        .to_string()
}

fn rule(r: &rmcp::model::CallToolResult) -> String {
    r.structured_content
        .as_ref()
        .and_then(|s| s["error"]["rule"].as_str())
        .unwrap_or("")
        .to_string()
}

/// Traversal payloads: dot segments, separators, their escapes (single and double), the
/// separators reqwest's URL parser honours (`\`), look-alike dots and slashes, other
/// delimiters, control characters, empty and overlong values.
fn traversal_corpus() -> Vec<String> {
    let mut v: Vec<String> = [
        ".",
        "..",
        "...",
        "\\",
        "..\\",
        "\\..",
        "..\\..",
        "../..",
        "./",
        "/",
        "//",
        "%2e",
        "%2e%2e",
        "%2E%2E",
        "%2e%2e%2f",
        "%2e%2e%5c",
        "%5c",
        "%5C",
        "%2f",
        "%252e%252e",
        "..%2f..",
        "..%5c..",
        ".%2e",
        "%2e.",
        "DU1234567\\..\\U7654321",
        "DU1234567/../U7654321",
        "..\\..\\DU7654321\\order\\1",
        "..\\..\\..\\logout",
        "../../../logout",
        "..\\..\\marketdata\\unsubscribeall",
        "..\\..\\..\\..\\..",
        "\u{2024}\u{2024}",
        "\u{FF0E}\u{FF0E}",
        "\u{FF0E}\u{FF0E}\u{FF0F}",
        "\u{3002}\u{3002}",
        "..\u{FF0F}",
        "\u{2215}..",
        "..;",
        "..;/",
        "a/../b",
        "?accountId=U7654321",
        "#",
        "a#b",
        "x\u{0}y",
        "\t",
        " ",
        "",
        "\u{FF35}\u{FF17}\u{FF16}\u{FF15}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("A".repeat(5000));
    v.push("../".repeat(400));
    v.push("9".repeat(200));
    v
}

/// A valid value for a path parameter of this name.
fn valid_path_value(name: &str, schema: &Value) -> Value {
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    json!(match name {
        "accountId" | "acctId" => "DU1234567",
        "searchPattern" => "DU",
        "conid" => "265598",
        "pageId" => "0",
        "orderId" | "alertId" | "notificationId" => "1",
        _ => "abc",
    })
}

/// A value that fits `schema` (required members only, first enum value, an example if any).
fn sample(schema: &Value) -> Value {
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    if let Some(ex) = schema["examples"].as_array().and_then(|e| e.first()) {
        return ex.clone();
    }
    match schema["type"].as_str() {
        Some("object") | None if schema.get("properties").is_some() => {
            let mut m = Map::new();
            for r in schema["required"].as_array().into_iter().flatten() {
                let k = r.as_str().unwrap_or_default();
                m.insert(k.to_string(), sample(&schema["properties"][k]));
            }
            // An order ticket names its contract by conid or conidex (neither is required
            // alone, for combos); a valid one names one.
            if schema["properties"].get("conidex").is_some() && !m.contains_key("conid") {
                m.insert("conid".into(), sample(&schema["properties"]["conid"]));
            }
            Value::Object(m)
        }
        Some("object") => json!({}),
        Some("array") => json!([]),
        Some("integer") => json!(1),
        Some("number") => json!(1.0),
        Some("boolean") => json!(true),
        _ => json!("x"),
    }
}

/// Valid arguments for `def`: every path parameter, every required argument.
fn valid_args(def: &ToolDef) -> Map<String, Value> {
    let props = &def.input_schema["properties"];
    let mut m = Map::new();
    for a in &def.args {
        let schema = &props[a.name.as_str()];
        if a.location == ArgLocation::Path {
            m.insert(a.name.clone(), valid_path_value(&a.name, schema));
        } else if a.required {
            m.insert(a.name.clone(), sample(schema));
        }
    }
    m
}

fn tools_with_path_parameters() -> Vec<&'static ToolDef> {
    let tools: Vec<&'static ToolDef> = catalog::all()
        .iter()
        .filter(|t| t.args.iter().any(|a| a.location == ArgLocation::Path))
        .collect();
    // A lower bound, so this can never pass by finding nothing to test.
    assert!(
        tools.len() >= 30,
        "only {} tools with path parameters",
        tools.len()
    );
    tools
}

async fn quiet_sim() -> ibkr_sim::SimHandle {
    ibkr_sim::start(
        ibkr_sim::SimConfig::default().with_pacing(false),
        "127.0.0.1:0".parse().unwrap(),
        ibkr_sim::Tls::SelfSigned,
    )
    .await
    .expect("simulator starts")
}

const EVERYTHING: &[&str] = &[
    "--allow-trading",
    "--allow-live-trading",
    "--allow-question-suppression",
    "--toolsets",
    "all",
    "--read-retries",
    "0",
];

/// Item 1 (through MCP): every traversal payload in every path parameter of every tool is
/// refused before anything leaves the server, with the parameter named; a valid value (the
/// control) reaches the tool's own endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_in_path_parameters_never_leaves_the_tools_own_endpoint() {
    let sim = quiet_sim().await;
    let s = server(&sim.base_url(), EVERYTHING);
    let corpus = traversal_corpus();
    let mut refused = 0;
    let mut controls = 0;
    for def in tools_with_path_parameters() {
        let base = valid_args(def);
        for param in def.args.iter().filter(|a| a.location == ArgLocation::Path) {
            for payload in &corpus {
                sim.control().clear_requests();
                let mut a = base.clone();
                a.insert(param.name.clone(), json!(payload));
                let r = s.call(&def.name, Some(a)).await.unwrap();
                assert_eq!(
                    r.is_error,
                    Some(true),
                    "{} {}={payload:?}",
                    def.name,
                    param.name
                );
                assert_eq!(
                    kind(&r),
                    "invalid_arguments",
                    "{}: {}",
                    def.name,
                    text_of(&r)
                );
                assert!(text_of(&r).contains(&param.name), "{}", text_of(&r));
                let seen = sim.control().requests();
                assert!(
                    seen.is_empty(),
                    "{} {}={payload:?} reached the gateway: {seen:?}",
                    def.name,
                    param.name
                );
                refused += 1;
            }
        }
        // The control: valid arguments reach this tool's own endpoint (and only the lookups
        // the policy makes for orders).
        sim.control().clear_requests();
        let r = s.call(&def.name, Some(base.clone())).await.unwrap();
        if rule(&r) == "reply_id" {
            continue; // only ids of questions this server asked can be answered
        }
        let seen = sim.control().requests();
        assert!(
            seen.iter()
                .any(|e| e.template.as_deref() == Some(def.path.as_str())
                    && def.method.map(Method::as_str) == Some(e.method.as_str())),
            "{} with valid arguments did not reach {:?} {}: {} / {seen:?}",
            def.name,
            def.method,
            def.path,
            text_of(&r)
        );
        for e in &seen {
            let t = e.template.as_deref().unwrap_or("(unknown)");
            assert!(
                t == def.path || POLICY_LOOKUPS.contains(&t),
                "{} also reached {} {}",
                def.name,
                e.method,
                e.path
            );
        }
        controls += 1;
    }
    println!(
        "traversal: {refused} hostile calls refused, {controls} controls reached their endpoint"
    );
    assert!(controls >= 30, "{controls}");
}

/// Item 1 (below the schemas): the request guard alone, fed the generated client directly
/// with the corpus, lets no request leave whose URL is not the operation's own endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_guard_alone_stops_traversal_that_skips_argument_checks() {
    use ibkr_mcp::ibkr::gateway::{self, Error};
    use ibkr_mcp::ibkr::hooks::Refusal;
    let sim = quiet_sim().await;
    let state = server_state(&sim.base_url(), EVERYTHING);
    let mut stopped = 0;
    for def in tools_with_path_parameters() {
        let base = valid_args(def);
        for param in def.args.iter().filter(|a| a.location == ArgLocation::Path) {
            for payload in traversal_corpus() {
                sim.control().clear_requests();
                let mut a = base.clone();
                a.insert(param.name.clone(), json!(payload));
                // `send` skips the schema checks a model's arguments get.
                let outcome = gateway::send(&state.client, &def.name, &a).await;
                let seen = sim.control().requests();
                for e in &seen {
                    assert_eq!(
                        e.template.as_deref(),
                        Some(def.path.as_str()),
                        "{} {}={payload:?} reached {} {}",
                        def.name,
                        param.name,
                        e.method,
                        e.path
                    );
                }
                if let Err(e) = &outcome
                    && !e.reached_gateway()
                {
                    assert!(
                        matches!(
                            e,
                            Error::Refused(Refusal::UnsafePath { .. }) | Error::Argument { .. }
                        ),
                        "{} {}={payload:?}: not sent, but neither refused nor a bad argument: {e:?}",
                        def.name,
                        param.name
                    );
                    assert!(seen.is_empty(), "{} {payload:?}: {seen:?}", def.name);
                    stopped += 1;
                }
            }
        }
    }
    println!("guard: {stopped} requests stopped before the network");
    assert!(stopped > 1000, "{stopped}");
}

async fn accept_orders(gateway: &MockServer) -> httpmock::Mock<'_> {
    gateway
        .mock_async(|when, then| {
            when.method(POST).path_includes("/order");
            then.status(200)
                .json_body(json!([{"order_id": "1", "order_status": "Submitted"}]));
        })
        .await
}

fn place(account: &str, order: Value) -> Option<Map<String, Value>> {
    args(json!({"accountId": account, "body": {"orders": [order]}}))
}

fn limit(conid: i64, side: &str, qty: f64, price: f64) -> Value {
    json!({"conid": conid, "orderType": "LMT", "side": side, "tif": "DAY", "quantity": qty, "price": price})
}

/// Item 2: "paper" is what the login says, not an id that starts with DU.
#[tokio::test]
async fn paper_means_a_paper_account_of_the_login_not_an_id_starting_with_du() {
    let gateway = MockServer::start_async().await;
    let orders = accept_orders(&gateway).await;
    // A live login with an allocation group whose name starts with DU.
    paper_login(&gateway, &["U1234567", "DU_GROUP"], false).await;
    let s = server(&gw(&gateway), &["--allow-trading"]);
    for account in ["DU_GROUP", "DUMMY", "U1234567"] {
        let r = s
            .call(
                "place_orders",
                place(account, limit(265598, "BUY", 1.0, 1.0)),
            )
            .await
            .unwrap();
        assert_eq!(rule(&r), "live_account", "{account}: {}", text_of(&r));
        assert!(text_of(&r).contains("IBKR_MCP_ALLOW_LIVE_TRADING"));
    }
    // An allocation group with a live member, created from a paper login, is refused too.
    let paper = MockServer::start_async().await;
    let groups = paper
        .mock_async(|when, then| {
            when.path_includes("/allocation/group");
            then.status(200).json_body(json!({"success": true}));
        })
        .await;
    paper_login(&paper, &["DU1234567"], true).await;
    let p = server(&gw(&paper), &["--allow-trading", "--toolsets", "all"]);
    let r = p
        .call(
            "create_allocation_group",
            args(
                json!({"body": {"name": "G", "default_method": "N", "accounts": [
                    {"name": "DU1234567"}, {"name": "U7654321"}
                ]}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(rule(&r), "live_account", "{}", text_of(&r));
    let ok = p
        .call(
            "create_allocation_group",
            args(json!({"body": {"name": "G", "default_method": "N", "accounts": [{"name": "DU1234567"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(ok.is_error, Some(false), "{}", text_of(&ok));
    assert_eq!(groups.calls_async().await, 1);
    assert_eq!(orders.calls_async().await, 0);
}

async fn contract(gateway: &MockServer, conid: i64) {
    gateway
        .mock_async(move |when, then| {
            when.method(GET)
                .path(format!("/v1/api/iserver/contract/{conid}/info"));
            then.status(200).json_body(json!({"con_id": conid, "symbol": "NFLX", "instrument_type": "STK", "currency": "USD"}));
        })
        .await;
}

/// Item 3: an order is valued at the worse of its own price and the market's.
#[tokio::test]
async fn marketable_orders_are_valued_at_the_market_not_their_stated_price() {
    let gateway = MockServer::start_async().await;
    let orders = accept_orders(&gateway).await;
    paper_login(&gateway, &["DU1"], true).await;
    contract(&gateway, 15124833).await;
    gateway
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/api/iserver/marketdata/snapshot")
                .query_param("conids", "15124833");
            then.status(200).json_body(
                json!([{"conid": 15124833, "31": "801.80", "84": "801.75", "86": "801.85"}]),
            );
        })
        .await;
    let s = server(
        &gw(&gateway),
        &["--allow-trading", "--max-order-notional", "5000"],
    );
    // SELL 10 LMT 1 fills at the bid: 10 × 801.75.
    let r = s
        .call(
            "place_orders",
            place("DU1", limit(15124833, "SELL", 10.0, 1.0)),
        )
        .await
        .unwrap();
    assert_eq!(rule(&r), "notional", "{}", text_of(&r));
    assert!(text_of(&r).contains("8017.50"), "{}", text_of(&r));
    // BUY STP 1: valued at the ask.
    let stp = json!({"conid": 15124833, "orderType": "STP", "side": "BUY", "tif": "DAY", "quantity": 10, "price": 1});
    let r = s.call("place_orders", place("DU1", stp)).await.unwrap();
    assert_eq!(rule(&r), "notional", "{}", text_of(&r));
    assert!(text_of(&r).contains("8018.50"), "{}", text_of(&r));
    // Both cashQty and quantity, or a conidex naming another contract: refused as they are.
    let both = json!({"conid": 15124833, "orderType": "MKT", "side": "BUY", "tif": "DAY", "quantity": 1, "cashQty": 100});
    let r = s.call("place_orders", place("DU1", both)).await.unwrap();
    assert_eq!(rule(&r), "order_shape", "{}", text_of(&r));
    let two = json!({"conid": 15124833, "conidex": "265598@SMART", "orderType": "LMT", "side": "BUY", "tif": "DAY", "quantity": 1, "price": 1});
    let r = s.call("place_orders", place("DU1", two)).await.unwrap();
    assert_eq!(rule(&r), "order_shape", "{}", text_of(&r));
    // No quote: the order cannot be valued, so it is refused (fail closed).
    contract(&gateway, 999).await;
    gateway
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/api/iserver/marketdata/snapshot")
                .query_param("conids", "999");
            then.status(200).json_body(json!([{"conid": 999}]));
        })
        .await;
    let r = s
        .call("place_orders", place("DU1", limit(999, "BUY", 1.0, 1.0)))
        .await
        .unwrap();
    assert_eq!(rule(&r), "notional", "{}", text_of(&r));
    assert_eq!(orders.calls_async().await, 0);
    // Control: a limit order that stays under the limit at the market price goes through.
    let r = s
        .call(
            "place_orders",
            place("DU1", limit(15124833, "BUY", 2.0, 800.0)),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    assert_eq!(orders.calls_async().await, 1);
}

/// Item 4: concurrent orders cannot overbook the per-minute limit; a refused order gives its
/// slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_orders_cannot_exceed_the_orders_per_minute_limit() {
    let gateway = MockServer::start_async().await;
    let orders = gateway
        .mock_async(|when, then| {
            when.method(POST).path_includes("/orders");
            then.status(200)
                .delay(std::time::Duration::from_millis(200))
                .json_body(json!([{"order_id": "1", "order_status": "Submitted"}]));
        })
        .await;
    paper_login(&gateway, &["DU1"], true).await;
    let s = Arc::new(server(
        &gw(&gateway),
        &["--allow-trading", "--max-orders-per-minute", "2"],
    ));
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                s.call("place_orders", place("DU1", limit(265598, "BUY", 1.0, 1.0)))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut placed = 0;
    for c in calls {
        let r = c.await.unwrap();
        if r.is_error == Some(false) {
            placed += 1;
        } else {
            assert_eq!(rule(&r), "rate", "{}", text_of(&r));
        }
    }
    assert_eq!(placed, 2);
    assert_eq!(orders.calls_async().await, 2);
}

/// Item 4: a slot taken by an order that was then refused (nothing sent) is given back.
#[tokio::test]
async fn an_order_refused_after_its_rate_slot_gives_the_slot_back() {
    let gateway = MockServer::start_async().await;
    let orders = accept_orders(&gateway).await;
    paper_login(&gateway, &["DU1"], true).await;
    let s = server(
        &gw(&gateway),
        &[
            "--allow-trading",
            "--max-orders-per-minute",
            "1",
            "--max-order-quantity",
            "10",
        ],
    );
    for _ in 0..3 {
        let r = s
            .call(
                "place_orders",
                place("DU1", limit(265598, "BUY", 50.0, 1.0)),
            )
            .await
            .unwrap();
        assert_eq!(rule(&r), "quantity", "{}", text_of(&r));
    }
    let r = s
        .call("place_orders", place("DU1", limit(265598, "BUY", 1.0, 1.0)))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    assert_eq!(orders.calls_async().await, 1);
}

/// Item 5: a write whose 2xx reply cannot be read may have been carried out; the result says
/// so and the request is not sent again.
#[tokio::test]
async fn an_unreadable_reply_to_an_order_says_it_may_have_reached_ibkr() {
    let gateway = MockServer::start_async().await;
    let orders = gateway
        .mock_async(|when, then| {
            when.method(POST).path("/v1/api/iserver/account/DU1/orders");
            then.status(200).body("<html>proxy hiccup");
        })
        .await;
    paper_login(&gateway, &["DU1"], true).await;
    let s = server(&gw(&gateway), &["--allow-trading"]);
    let r = s
        .call("place_orders", place("DU1", limit(265598, "BUY", 1.0, 1.0)))
        .await
        .unwrap();
    let text = text_of(&r);
    assert_eq!(r.is_error, Some(true), "{text}");
    assert!(
        text.contains("may have reached IBKR") && text.contains("NOT retried"),
        "{text}"
    );
    assert!(
        text.contains("list_orders") && !text.contains("try again shortly"),
        "{text}"
    );
    assert_eq!(orders.calls_async().await, 1);
}

/// Item 6: the intent is on disk before the request leaves; the result follows under the same
/// id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_intent_is_on_disk_before_the_order_is_sent() {
    let gateway = MockServer::start_async().await;
    let orders = gateway
        .mock_async(|when, then| {
            when.method(POST).path("/v1/api/iserver/account/DU1/orders");
            then.status(200)
                .delay(std::time::Duration::from_millis(1500))
                .json_body(json!([{"order_id": "1", "order_status": "Submitted"}]));
        })
        .await;
    paper_login(&gateway, &["DU1"], true).await;
    let audit = temp("intent.jsonl");
    let s = Arc::new(server(
        &gw(&gateway),
        &["--allow-trading", "--audit-log", audit.to_str().unwrap()],
    ));
    let call = {
        let s = s.clone();
        tokio::spawn(async move {
            s.call("place_orders", place("DU1", limit(265598, "BUY", 1.0, 1.0)))
                .await
                .unwrap()
        })
    };
    while orders.calls_async().await == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The gateway has the order and has not answered: the intent is already on disk.
    let lines: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let intent = lines
        .iter()
        .find(|l| l["phase"] == "intent")
        .expect("intent line");
    assert_eq!(intent["tool"], "place_orders");
    assert_eq!(intent["arguments"]["accountId"], "DU1");
    assert!(lines.iter().all(|l| l["phase"] != "result"));
    let r = call.await.unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    let text = std::fs::read_to_string(&audit).unwrap();
    let result: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["phase"] == "result")
        .expect("result line");
    assert_eq!(result["id"], intent["id"]);
    assert_eq!(result["decision"], "sent");
}

/// Item 7: the model cannot switch IBKR's order questions off.
#[tokio::test]
async fn question_suppression_is_not_a_model_tool_unless_the_user_allows_it() {
    let gateway = MockServer::start_async().await;
    let any = gateway
        .mock_async(|when, then| {
            when.any_request();
            then.status(200).json_body(json!({"status": "submitted"}));
        })
        .await;
    let s = server(&gw(&gateway), &["--allow-trading", "--toolsets", "all"]);
    let names: Vec<String> = s.tools().iter().map(|t| t.name.to_string()).collect();
    assert!(names.contains(&"place_orders".to_string()));
    for tool in [
        "suppress_order_questions",
        "reset_order_question_suppression",
    ] {
        assert!(!names.contains(&tool.to_string()), "{tool} is listed");
        let r = s
            .call(tool, args(json!({"body": {"messageIds": ["o163"]}})))
            .await
            .unwrap();
        assert_eq!(rule(&r), "question_suppression", "{}", text_of(&r));
        assert!(text_of(&r).contains("--allow-question-suppression"));
    }
    assert_eq!(any.calls_async().await, 0);
}

/// Item 10: with previews required, a modification needs a preview of the modified order.
#[tokio::test]
async fn require_preview_covers_modify_order() {
    let gateway = MockServer::start_async().await;
    let modify = gateway
        .mock_async(|when, then| {
            when.method(POST)
                .path("/v1/api/iserver/account/DU1/order/7");
            then.status(200)
                .json_body(json!([{"order_id": "7", "order_status": "Submitted"}]));
        })
        .await;
    gateway
        .mock_async(|when, then| {
            when.method(POST)
                .path("/v1/api/iserver/account/DU1/orders/whatif");
            then.status(200)
                .json_body(json!({"amount": {"commission": "1 USD"}}));
        })
        .await;
    paper_login(&gateway, &["DU1"], true).await;
    let s = server(&gw(&gateway), &["--allow-trading", "--require-preview"]);
    let new_order = limit(265598, "BUY", 2.0, 101.0);
    let mut m = args(json!({"accountId": "DU1", "orderId": "7", "body": new_order})).unwrap();
    let r = s
        .call("modify_iserver_order", Some(m.clone()))
        .await
        .unwrap();
    assert_eq!(rule(&r), "preview", "{}", text_of(&r));
    assert_eq!(modify.calls_async().await, 0);
    let preview = s
        .call("get_order_preview", place("DU1", new_order.clone()))
        .await
        .unwrap();
    let token = text_of(&preview)
        .split("previewToken ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap()
        .to_string();
    m.insert("previewToken".into(), json!(token));
    let r = s.call("modify_iserver_order", Some(m)).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    assert_eq!(modify.calls_async().await, 1);
    let tool = s
        .tools()
        .into_iter()
        .find(|t| t.name == "modify_iserver_order")
        .unwrap();
    assert!(
        tool.input_schema["required"]
            .as_array()
            .unwrap()
            .contains(&json!("previewToken"))
    );
}

/// Item 11: the kill switch stops every write at once, is visible, cannot be lifted by any
/// tool, and `ibkr-mcp halt|resume` throw and lift it.
#[tokio::test]
async fn the_kill_switch_stops_every_write_and_only_the_user_lifts_it() {
    let gateway = MockServer::start_async().await;
    let orders = accept_orders(&gateway).await;
    paper_login(&gateway, &["DU1"], true).await;
    let switch = temp("HALT");
    let audit = temp("halt-audit.jsonl");
    let s = server(
        &gw(&gateway),
        &[
            "--allow-trading",
            "--toolsets",
            "all",
            "--kill-switch-file",
            switch.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    let bin = env!("CARGO_BIN_EXE_ibkr-mcp");
    let out = std::process::Command::new(bin)
        .args([
            "halt",
            "--reason",
            "markets gone wild",
            "--kill-switch-file",
        ])
        .arg(&switch)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(switch.exists());
    for (tool, a) in [
        ("place_orders", place("DU1", limit(265598, "BUY", 1.0, 1.0))),
        (
            "cancel_iserver_order",
            args(json!({"accountId": "DU1", "orderId": "1"})),
        ),
        ("delete_iserver_watchlist", args(json!({"id": "1"}))),
    ] {
        let r = s.call(tool, a).await.unwrap();
        assert_eq!(rule(&r), "kill_switch", "{tool}: {}", text_of(&r));
        assert!(text_of(&r).contains("markets gone wild"), "{}", text_of(&r));
    }
    // Reads still work, and the status shows the switch.
    let status = s.call("get_session_status", None).await.unwrap();
    let sc = status.structured_content.unwrap();
    assert_eq!(sc["kill_switch"]["engaged"], true, "{sc}");
    // No tool can lift it: nothing in the tool list mentions the switch or its file.
    for t in s.tools() {
        let d = t
            .description
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            !d.contains("kill switch") && !d.contains("resume"),
            "{}",
            t.name
        );
    }
    let out = std::process::Command::new(bin)
        .args(["resume", "--kill-switch-file"])
        .arg(&switch)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!switch.exists());
    let r = s
        .call("place_orders", place("DU1", limit(265598, "BUY", 1.0, 1.0)))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    assert_eq!(orders.calls_async().await, 1);
    let refusals = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .filter(|l| l.contains("kill switch"))
        .count();
    assert_eq!(refusals, 3, "each refused write is in the audit log");
}

/// Item 11: `halt --cancel-orders` has the running server cancel the working orders of the
/// accounts it may act on, and record each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halt_with_cancel_orders_cancels_working_orders_once() {
    let sim = quiet_sim().await;
    sim.control()
        .set_question_policy(ibkr_sim::QuestionPolicy::Never);
    let switch = temp("HALT-cancel");
    let audit = temp("cancel-audit.jsonl");
    let state = server_state(
        &sim.base_url(),
        &[
            "--allow-trading",
            "--kill-switch-file",
            switch.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    let s = ibkr_mcp::mcp::IbkrServer::new(state.clone());
    let price = sim.control().price(265598).unwrap();
    for _ in 0..2 {
        let r = s
            .call(
                "place_orders",
                place(
                    "DU1234567",
                    limit(265598, "BUY", 1.0, (price * 0.5).round()),
                ),
            )
            .await
            .unwrap();
        assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    }
    let working = |sim: &ibkr_sim::SimHandle| {
        sim.control()
            .state()
            .orders
            .iter()
            .filter(|o| o.status == "Submitted" || o.status == "PreSubmitted")
            .count()
    };
    assert_eq!(working(&sim), 2);
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(ibkr_mcp::mcp::halt::watch(state.clone(), stop.clone()));
    ibkr_mcp::halt::KillSwitch::new(switch.clone())
        .engage("test", true)
        .unwrap();
    let start = std::time::Instant::now();
    while working(&sim) > 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "orders still working"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    stop.cancel();
    watcher.await.unwrap();
    let log = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(log.matches("\"kill_switch_cancel\"").count(), 2, "{log}");
    assert_eq!(log.matches("\"kill_switch_engaged\"").count(), 1, "{log}");
    assert!(!log.contains("DU1234567"), "account ids are masked");
}

/// Found by attacking the fixes: a modification that leaves the price out keeps the working
/// order's (the gateway keeps it), so it is valued with it; it cannot move the order to another
/// contract or account.
#[tokio::test]
async fn a_modification_is_valued_as_the_order_it_leaves_at_the_gateway() {
    let gateway = MockServer::start_async().await;
    let orders = accept_orders(&gateway).await;
    paper_login(&gateway, &["DU1", "DU2"], true).await;
    contract(&gateway, 265598).await;
    gateway
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/api/iserver/marketdata/snapshot")
                .query_param("conids", "265598");
            then.status(200).json_body(
                json!([{"conid": 265598, "31": "229.00", "84": "228.95", "86": "229.05"}]),
            );
        })
        .await;
    gateway
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/api/iserver/account/order/status/77");
            then.status(200)
                .json_body(json!({"order_id": 77, "conid": 265598, "account": "DU1",
                "order_type": "STOP", "limit_price": "300.00", "total_size": "1.0", "side": "B"}));
        })
        .await;
    let s = server(
        &gw(&gateway),
        &["--allow-trading", "--max-order-notional", "5000"],
    );
    let modify = |account: &str, body: Value| {
        args(json!({"accountId": account, "orderId": "77", "body": body}))
    };
    // 21 × the kept stop of 300 = 6300, not 21 × the ask of 229.05.
    let no_price =
        json!({"conid": 265598, "side": "BUY", "orderType": "STP", "tif": "GTC", "quantity": 21});
    let r = s
        .call("modify_iserver_order", modify("DU1", no_price))
        .await
        .unwrap();
    assert_eq!(rule(&r), "notional", "{}", text_of(&r));
    assert!(text_of(&r).contains("6300.00"), "{}", text_of(&r));
    let other_contract = json!({"conid": 8314, "side": "BUY", "orderType": "STP", "tif": "GTC", "quantity": 1, "price": 1});
    let r = s
        .call("modify_iserver_order", modify("DU1", other_contract))
        .await
        .unwrap();
    assert_eq!(rule(&r), "order_shape", "{}", text_of(&r));
    let small = json!({"conid": 265598, "side": "BUY", "orderType": "STP", "tif": "GTC", "quantity": 2, "price": 250});
    let r = s
        .call("modify_iserver_order", modify("DU2", small.clone()))
        .await
        .unwrap();
    assert_eq!(rule(&r), "account", "{}", text_of(&r));
    assert_eq!(orders.calls_async().await, 0);
    // Control: a modification within the limit goes through.
    let r = s
        .call("modify_iserver_order", modify("DU1", small))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    assert_eq!(orders.calls_async().await, 1);
}

/// Found by attacking the fixes: orders that could not be valued were valued low.
#[tokio::test]
async fn orders_that_cannot_be_valued_are_refused_not_undervalued() {
    let gateway = MockServer::start_async().await;
    let orders = accept_orders(&gateway).await;
    let any = gateway
        .mock_async(|when, then| {
            when.method(GET).path_includes("/iserver/contract/");
            then.status(200).json_body(json!({"con_id": 1111, "symbol": "X", "instrument_type": "OPT", "currency": "USD", "multiplier": ""}));
        })
        .await;
    paper_login(&gateway, &["DU1"], true).await;
    gateway
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/iserver/marketdata/snapshot");
            then.status(200)
                .json_body(json!([{"conid": 1111, "31": "5.00", "84": "4.95", "86": "5.05"}]));
        })
        .await;
    let s = server(
        &gw(&gateway),
        &["--allow-trading", "--max-order-notional", "1000"],
    );
    // An option without a multiplier from the gateway.
    let r = s
        .call("place_orders", place("DU1", limit(1111, "BUY", 100.0, 5.0)))
        .await
        .unwrap();
    assert_eq!(rule(&r), "notional", "{}", text_of(&r));
    assert!(text_of(&r).contains("multiplier"), "{}", text_of(&r));
    // A combination order: its legs are not valued, so it is refused under the limit.
    let combo = json!({"conid": 28812380, "conidex": "28812380;;;265598/100,272093/-100", "orderType": "LMT", "side": "BUY", "tif": "DAY", "quantity": 1, "price": 1});
    let r = s.call("place_orders", place("DU1", combo)).await.unwrap();
    assert_eq!(rule(&r), "order_shape", "{}", text_of(&r));
    // Hundreds of orders in one call are refused before any lookup.
    let before = any.calls_async().await;
    let many: Vec<Value> = (0..300).map(|_| limit(1111, "BUY", 1.0, 5.0)).collect();
    let r = s
        .call(
            "place_orders",
            args(json!({"accountId": "DU1", "body": {"orders": many}})),
        )
        .await
        .unwrap();
    assert_eq!(rule(&r), "order_shape", "{}", text_of(&r));
    assert_eq!(
        any.calls_async().await,
        before,
        "no lookup for a refused batch"
    );
    assert_eq!(orders.calls_async().await, 0);
}

/// Found by attacking the fixes: a non-ASCII id in a refusal panicked the call (no answer, no
/// audit line).
#[tokio::test]
async fn a_non_ascii_account_id_is_refused_and_audited_not_a_panic() {
    let gateway = MockServer::start_async().await;
    paper_login(&gateway, &["DU1"], true).await;
    let audit = temp("unicode-audit.jsonl");
    let s = server(
        &gw(&gateway),
        &[
            "--allow-trading",
            "--toolsets",
            "all",
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    let r = s
        .call(
            "set_active_account",
            args(json!({"body": {"acctId": "x€yz"}})),
        )
        .await
        .unwrap();
    assert_eq!(rule(&r), "live_account", "{}", text_of(&r));
    let r = s
        .call(
            "place_orders",
            args(json!({"accountId": "DU1", "body": {"orders": [{"acctId": "a€bc", "conid": 1, "side": "BUY", "orderType": "LMT", "price": 1, "tif": "DAY", "quantity": 1}]}})),
        )
        .await
        .unwrap();
    assert_eq!(rule(&r), "live_account", "{}", text_of(&r));
    let log = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(log.matches("\"phase\":\"result\"").count(), 2, "{log}");
}

/// Found by attacking the fixes: a question waiting when the kill switch was thrown could be
/// confirmed after it was lifted; and the model could take the brokerage session over from the
/// user's other login without anyone asking the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_begun_before_a_halt_completes_after_it_and_take_over_needs_the_user() {
    let sim = quiet_sim().await;
    let switch = temp("HALT-pending");
    let s = server(
        &sim.base_url(),
        &[
            "--allow-trading",
            "--toolsets",
            "all",
            "--kill-switch-file",
            switch.to_str().unwrap(),
        ],
    );
    let price = sim.control().price(265598).unwrap();
    let r = s
        .call(
            "place_orders",
            place(
                "DU1234567",
                limit(265598, "BUY", 1.0, (price * 0.5).round()),
            ),
        )
        .await
        .unwrap();
    assert_eq!(kind(&r), "order_question", "{}", text_of(&r));
    let reply_id = r.structured_content.unwrap()["error"]["question"]["reply_id"]
        .as_str()
        .unwrap()
        .to_string();
    let ks = ibkr_mcp::halt::KillSwitch::new(switch.clone());
    ks.engage("test", false).unwrap();
    let reply = || args(json!({"replyId": reply_id, "body": {"confirmed": true}}));
    let r = s.call("reply_order_question", reply()).await.unwrap();
    assert_eq!(rule(&r), "kill_switch", "{}", text_of(&r));
    ks.release().unwrap();
    let r = s.call("reply_order_question", reply()).await.unwrap();
    assert_eq!(rule(&r), "reply_id", "{}", text_of(&r));
    assert!(
        sim.control().state().orders.is_empty(),
        "nothing was booked"
    );
    // Taking the session over needs the user: this client cannot ask, so it is refused.
    let r = s
        .call(
            "init_brokerage_session",
            args(json!({"body": {"compete": true, "publish": true}})),
        )
        .await
        .unwrap();
    assert_eq!(rule(&r), "take_over", "{}", text_of(&r));
    assert!(text_of(&r).contains("--take-over-competing"));
    let allowed = server(
        &sim.base_url(),
        &[
            "--allow-trading",
            "--toolsets",
            "all",
            "--take-over-competing",
        ],
    );
    let r = allowed
        .call(
            "init_brokerage_session",
            args(json!({"body": {"compete": true, "publish": true}})),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
}
