//! The trading policy and the audit log, against a mock gateway: every limit refuses with a
//! clear `isError` and no order request reaches the gateway; allowed orders go through once; the
//! audit log holds one masked line per write attempt.

mod common;

use std::path::PathBuf;

use common::{args, paper_login, server, text_of};
use httpmock::prelude::*;
use serde_json::{Value, json};

fn gw(s: &MockServer) -> String {
    format!("{}/v1/api", s.base_url())
}

fn audit_path(test: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ibkr-mcp-{test}-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn audit_lines(p: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
        .collect()
}

fn order(conid: i64, order_type: &str, quantity: f64, price: Option<f64>) -> Value {
    let mut o = json!({"conid": conid, "orderType": order_type, "side": "BUY", "tif": "DAY", "quantity": quantity});
    if let Some(p) = price {
        o["price"] = json!(p);
    }
    o
}

fn place(account: &str, orders: Vec<Value>) -> Option<serde_json::Map<String, Value>> {
    args(json!({"accountId": account, "body": {"orders": orders}}))
}

async fn contract(gateway: &MockServer, conid: i64, sec_type: &str, multiplier: Value) {
    gateway
        .mock_async(|when, then| {
            when.method(GET)
                .path(format!("/v1/api/iserver/contract/{conid}/info"));
            then.status(200).json_body(json!({"con_id": conid, "symbol": "X", "instrument_type": sec_type, "multiplier": multiplier, "currency": "USD"}));
        })
        .await;
}

async fn accept_orders(gateway: &MockServer) -> httpmock::Mock<'_> {
    gateway
        .mock_async(|when, then| {
            when.method(POST).path_includes("/orders");
            then.status(200)
                .json_body(json!([{"order_id": "1", "order_status": "Submitted"}]));
        })
        .await
}

/// A snapshot of `conid` with last, bid and ask.
async fn quote(gateway: &MockServer, conid: i64, last: f64, bid: f64, ask: f64) {
    gateway
        .mock_async(move |when, then| {
            when.method(GET)
                .path("/v1/api/iserver/marketdata/snapshot")
                .query_param("conids", conid.to_string());
            then.status(200).json_body(json!([{"conid": conid, "31": last.to_string(), "84": bid.to_string(), "86": ask.to_string()}]));
        })
        .await;
}

/// The result lines of the audit log (one per attempt; intent lines and the start line left out).
fn results(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["phase"] == "result").collect()
}

fn refused(r: &rmcp::model::CallToolResult, rule: &str, words: &[&str]) {
    let text = text_of(r);
    assert_eq!(r.is_error, Some(true), "{text}");
    let sc = r.structured_content.as_ref().unwrap();
    assert_eq!(sc["error"]["kind"], "policy_refused", "{text}");
    assert_eq!(sc["error"]["rule"], rule, "{text}");
    assert!(text.contains("nothing was sent"), "{text}");
    for w in words {
        assert!(text.contains(w), "`{w}` missing: {text}");
    }
}

#[tokio::test]
async fn account_allowlist_and_live_accounts_are_enforced() {
    let gateway = MockServer::start_async().await;
    let orders = accept_orders(&gateway).await;
    let audit = audit_path("accounts");
    let a = audit.to_str().unwrap();
    // An older gateway: the account list does not say whether the login is a paper one, the
    // portfolio accounts do (`type: DEMO`).
    gateway
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/iserver/accounts");
            then.status(200)
                .json_body(json!({"accounts": ["DU1111111", "U2222222", "DU9999999"]}));
        })
        .await;
    gateway
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/portfolio/accounts");
            then.status(200).json_body(json!([
                {"accountId": "DU1111111", "type": "DEMO"},
                {"accountId": "DU9999999", "type": "DEMO"},
                {"accountId": "U2222222", "type": "INDIVIDUAL"}
            ]));
        })
        .await;
    let s = server(
        &gw(&gateway),
        &[
            "--allow-trading",
            "--trading-accounts",
            "DU1111111,U2222222",
            "--audit-log",
            a,
        ],
    );
    let one = || vec![order(265598, "LMT", 1.0, Some(1.0))];
    refused(
        &s.call("place_orders", place("DU9999999", one()))
            .await
            .unwrap(),
        "account",
        &["DU****999", "IBKR_MCP_TRADING_ACCOUNTS"],
    );
    refused(
        &s.call("place_orders", place("U2222222", one()))
            .await
            .unwrap(),
        "live_account",
        &["live", "IBKR_MCP_ALLOW_LIVE_TRADING"],
    );
    // The account inside an order counts too.
    let mut inner = one();
    inner[0]["acctId"] = json!("DU9999999");
    refused(
        &s.call("place_orders", place("DU1111111", inner))
            .await
            .unwrap(),
        "account",
        &[],
    );
    assert_eq!(orders.calls_async().await, 0);
    let ok = s
        .call("place_orders", place("DU1111111", one()))
        .await
        .unwrap();
    assert_eq!(ok.is_error, Some(false), "{}", text_of(&ok));
    assert_eq!(orders.calls_async().await, 1);

    let live = server(
        &gw(&gateway),
        &["--allow-trading", "--allow-live-trading", "--audit-log", a],
    );
    let ok = live
        .call("place_orders", place("U2222222", one()))
        .await
        .unwrap();
    assert_eq!(ok.is_error, Some(false), "{}", text_of(&ok));

    let lines = audit_lines(&audit);
    let results = results(&lines);
    assert_eq!(
        results.len(),
        5,
        "one result line per write attempt: {lines:?}"
    );
    let decisions: Vec<&str> = results
        .iter()
        .map(|l| l["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["refused", "refused", "refused", "sent", "sent"]);
    let intents: Vec<&Value> = lines.iter().filter(|l| l["phase"] == "intent").collect();
    assert_eq!(intents.len(), 2, "an intent line before each order sent");
    assert_eq!(intents[0]["id"], results[3]["id"]);
    assert_eq!(
        lines.iter().filter(|l| l["phase"] == "start").count(),
        2,
        "each server with trading allowed writes a start line"
    );
    let all = std::fs::read_to_string(&audit).unwrap();
    assert!(
        !all.contains("DU1111111") && !all.contains("U2222222"),
        "account ids are masked"
    );
    assert!(all.contains("DU****111"));
    assert_eq!(results[3]["result"]["status"], 200);
}

#[tokio::test]
async fn quantity_notional_and_security_type_limits_refuse_before_sending() {
    let gateway = MockServer::start_async().await;
    let orders = accept_orders(&gateway).await;
    contract(&gateway, 265598, "STK", json!(null)).await;
    contract(&gateway, 495512563, "FUT", json!("50")).await;
    contract(&gateway, 700000001, "OPT", json!("100")).await;
    paper_login(&gateway, &["DU1"], true).await;
    quote(&gateway, 265598, 189.10, 189.05, 189.15).await;
    quote(&gateway, 495512563, 3990.0, 3989.75, 3990.25).await;
    let audit = audit_path("limits");
    let s = server(
        &gw(&gateway),
        &[
            "--allow-trading",
            "--max-order-quantity",
            "100",
            "--max-order-notional",
            "10000",
            "--allowed-sec-types",
            "STK,FUT",
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    refused(
        &s.call(
            "place_orders",
            place("DU1", vec![order(265598, "LMT", 150.0, Some(1.0))]),
        )
        .await
        .unwrap(),
        "quantity",
        &["150", "100", "IBKR_MCP_MAX_ORDER_QUANTITY"],
    );
    refused(
        &s.call(
            "place_orders",
            place("DU1", vec![order(265598, "LMT", 60.0, Some(200.0))]),
        )
        .await
        .unwrap(),
        "notional",
        &["12000.00 USD", "IBKR_MCP_MAX_ORDER_NOTIONAL"],
    );
    // One ES contract at 4000 is worth 200000 with its multiplier of 50.
    refused(
        &s.call(
            "place_orders",
            place("DU1", vec![order(495512563, "LMT", 1.0, Some(4000.0))]),
        )
        .await
        .unwrap(),
        "notional",
        &["200000.00"],
    );
    refused(
        &s.call(
            "place_orders",
            place("DU1", vec![order(700000001, "LMT", 1.0, Some(1.0))]),
        )
        .await
        .unwrap(),
        "sec_type",
        &["OPT", "IBKR_MCP_ALLOWED_SEC_TYPES"],
    );
    // Modifying an order is held to the same limits.
    let m = s
        .call(
            "modify_iserver_order",
            args(json!({"accountId": "DU1", "orderId": "5", "body": order(265598, "LMT", 500.0, Some(1.0))})),
        )
        .await
        .unwrap();
    refused(&m, "quantity", &[]);
    assert_eq!(
        orders.calls_async().await,
        0,
        "no order reached the gateway"
    );
    let ok = s
        .call(
            "place_orders",
            place("DU1", vec![order(265598, "LMT", 10.0, Some(189.0))]),
        )
        .await
        .unwrap();
    assert_eq!(ok.is_error, Some(false), "{}", text_of(&ok));
    assert_eq!(orders.calls_async().await, 1);
    assert_eq!(results(&audit_lines(&audit)).len(), 6);
}

#[tokio::test]
async fn market_orders_are_valued_at_a_fresh_quote_after_the_preflight() {
    let gateway = MockServer::start_async().await;
    let orders = accept_orders(&gateway).await;
    contract(&gateway, 265598, "STK", json!(null)).await;
    paper_login(&gateway, &["DU1"], true).await;
    // The first snapshot for a contract carries no values (the gateway starts a subscription).
    let cold = gateway
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/iserver/marketdata/snapshot");
            then.status(200)
                .json_body(json!([{"conid": 265598, "conidEx": "265598"}]));
        })
        .await;
    let s = server(
        &gw(&gateway),
        &[
            "--allow-trading",
            "--max-order-notional",
            "5000",
            "--audit-log",
            audit_path("mkt").to_str().unwrap(),
        ],
    );
    let call = s.call(
        "place_orders",
        place("DU1", vec![order(265598, "MKT", 30.0, None)]),
    );
    let flip = async {
        while cold.calls_async().await == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        cold.delete_async().await;
        gateway
            .mock_async(|when, then| {
                when.method(GET).path("/v1/api/iserver/marketdata/snapshot");
                then.status(200).json_body(
                    json!([{"conid": 265598, "31": "189.10", "84": "189.05", "86": "189.15"}]),
                );
            })
            .await
    };
    let (r, warm) = tokio::join!(call, flip);
    // 30 × 189.15 (the ask, for a buy) = 5674.50 > 5000.
    refused(&r.unwrap(), "notional", &["5674.50"]);
    assert!(warm.calls_async().await >= 1);
    assert_eq!(orders.calls_async().await, 0);
}

#[tokio::test]
async fn orders_per_minute_are_limited_across_calls() {
    let gateway = MockServer::start_async().await;
    let orders = accept_orders(&gateway).await;
    paper_login(&gateway, &["DU1"], true).await;
    let s = server(
        &gw(&gateway),
        &[
            "--allow-trading",
            "--max-orders-per-minute",
            "2",
            "--audit-log",
            audit_path("rate").to_str().unwrap(),
        ],
    );
    for _ in 0..2 {
        let r = s
            .call(
                "place_orders",
                place("DU1", vec![order(265598, "LMT", 1.0, Some(1.0))]),
            )
            .await
            .unwrap();
        assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    }
    refused(
        &s.call(
            "place_orders",
            place("DU1", vec![order(265598, "LMT", 1.0, Some(1.0))]),
        )
        .await
        .unwrap(),
        "rate",
        &["2 orders per minute", "IBKR_MCP_MAX_ORDERS_PER_MINUTE"],
    );
    assert_eq!(orders.calls_async().await, 2);
}

#[tokio::test]
async fn placing_requires_a_preview_of_the_identical_order_when_configured() {
    let gateway = MockServer::start_async().await;
    let orders = gateway
        .mock_async(|when, then| {
            when.method(POST).path("/v1/api/iserver/account/DU1/orders");
            then.status(200)
                .json_body(json!([{"order_id": "1", "order_status": "Submitted"}]));
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
    let s = server(
        &gw(&gateway),
        &[
            "--allow-trading",
            "--require-preview",
            "--audit-log",
            audit_path("preview").to_str().unwrap(),
        ],
    );
    let the_order = vec![order(265598, "LMT", 2.0, Some(100.0))];
    refused(
        &s.call("place_orders", place("DU1", the_order.clone()))
            .await
            .unwrap(),
        "preview",
        &["get_order_preview"],
    );
    let preview = s
        .call("get_order_preview", place("DU1", the_order.clone()))
        .await
        .unwrap();
    let text = text_of(&preview);
    let token = text
        .split("previewToken ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no token in {text}"))
        .to_string();
    // A different order cannot use the token (and uses it up).
    let mut different = place("DU1", vec![order(265598, "LMT", 3.0, Some(100.0))]).unwrap();
    different.insert("previewToken".into(), json!(token));
    refused(
        &s.call("place_orders", Some(different)).await.unwrap(),
        "preview",
        &["differs"],
    );
    let preview = s
        .call("get_order_preview", place("DU1", the_order.clone()))
        .await
        .unwrap();
    let token = text_of(&preview)
        .split("previewToken ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let mut same = place("DU1", the_order.clone()).unwrap();
    same.insert("previewToken".into(), json!(token));
    let ok = s.call("place_orders", Some(same.clone())).await.unwrap();
    assert_eq!(ok.is_error, Some(false), "{}", text_of(&ok));
    refused(
        &s.call("place_orders", Some(same)).await.unwrap(),
        "preview",
        &["already used"],
    );
    assert_eq!(orders.calls_async().await, 1);
    let tools = s.tools();
    let place_tool = tools.iter().find(|t| t.name == "place_orders").unwrap();
    assert!(
        place_tool.input_schema["required"]
            .as_array()
            .unwrap()
            .contains(&json!("previewToken"))
    );
}

#[tokio::test]
async fn hidden_write_called_by_name_is_refused_and_audited() {
    let gateway = MockServer::start_async().await;
    let any = gateway
        .mock_async(|when, then| {
            when.any_request();
            then.status(200).json_body(json!({}));
        })
        .await;
    let audit = audit_path("hidden");
    let s = server(
        &gw(&gateway),
        &["--toolsets", "all", "--audit-log", audit.to_str().unwrap()],
    );
    let r = s
        .call("delete_iserver_watchlist", args(json!({"id": "1"})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert_eq!(
        r.structured_content.unwrap()["error"]["kind"],
        "trading_disabled"
    );
    assert_eq!(any.calls_async().await, 0);
    let lines = audit_lines(&audit);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["tool"], "delete_iserver_watchlist");
    assert_eq!(lines[0]["decision"], "refused");
}

#[tokio::test]
async fn unwritable_audit_log_refuses_to_start_with_trading() {
    // A path below a regular file cannot be created; /dev/full takes the open but no write.
    let file = audit_path("blocker");
    std::fs::write(&file, "x").unwrap();
    for bad in [file.join("audit.jsonl"), PathBuf::from("/dev/full")] {
        let e = build(&["--allow-trading", "--audit-log", bad.to_str().unwrap()])
            .expect_err("a server that cannot record writes must not start with trading");
        let text = format!("{e:#}");
        assert!(
            text.contains("audit log") && text.contains("IBKR_MCP_AUDIT_LOG"),
            "{text}"
        );
        // Read-only servers write nothing there and start.
        build(&["--audit-log", bad.to_str().unwrap()]).expect("read-only starts");
    }
}

/// `build_state` for `ibkr-mcp serve` with `extra` flags against an unused gateway URL.
fn build(extra: &[&str]) -> anyhow::Result<ibkr_mcp::mcp::ServerState> {
    use clap::Parser as _;
    let mut argv = vec![
        "ibkr-mcp",
        "serve",
        "--gateway-url",
        "http://127.0.0.1:9/v1/api",
        "--session-keepalive",
        "false",
    ];
    argv.extend_from_slice(extra);
    let ibkr_mcp::cli::Command::Serve(cfg) = ibkr_mcp::cli::Cli::try_parse_from(argv)
        .expect("flags parse")
        .command
    else {
        unreachable!()
    };
    ibkr_mcp::server::build_state(&cfg)
}
