//! Tool calls through the MCP handler against an HTTP mock gateway on loopback: arguments
//! arrive where IBKR's document puts them, replies come back as IBKR sent them, and every kind
//! of failure becomes an `isError` result that says what to do. Bad arguments never reach the
//! gateway.

mod common;

use std::time::Duration;

use common::{args, server, text_of};
use httpmock::prelude::*;
use serde_json::json;

fn gw(server: &MockServer) -> String {
    format!("{}/v1/api", server.base_url())
}

const TRADING: &[&str] = &["--allow-trading", "--toolsets", "all"];

#[tokio::test]
async fn snapshot_sends_conids_and_fields_as_query_and_wraps_the_array() {
    let gateway = MockServer::start_async().await;
    let m = gateway
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/api/iserver/marketdata/snapshot")
                .query_param("conids", "265598,8314")
                // The server adds 6509 (availability) to say whether data is live or delayed.
                .query_param("fields", "31,84,6509")
                .header_missing("api-version");
            then.status(200).json_body(json!([
                {"conid": 265598, "conidEx": "265598", "_updated": 1700000000000i64, "31": "189.10", "84": "189.05", "6509": "RpB"},
                {"conid": 8314, "conidEx": "8314", "_updated": 1700000000000i64, "31": "C140.02", "6509": "DPB"}
            ]));
        })
        .await;
    let s = server(&gw(&gateway), &[]);
    let r = s
        .call(
            "get_market_data_snapshot",
            args(json!({"conids": "265598,8314", "fields": "31,84"})),
        )
        .await
        .unwrap();
    m.assert_async().await;
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    let sc = r.structured_content.clone().unwrap();
    assert_eq!(sc["items"][0]["31"], "189.10");
    assert_eq!(sc["items"][1]["conid"], 8314);
    assert!(
        text_of(&r).contains("conid 8314: market data is delayed"),
        "{}",
        text_of(&r)
    );
}

#[tokio::test]
async fn positions_put_account_and_page_in_the_path_and_options_in_the_query() {
    let gateway = MockServer::start_async().await;
    let m = gateway
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/api/portfolio/DU1234567/positions/0")
                .query_param("direction", "d")
                .query_param("sort", "marketValue");
            then.status(200)
                .json_body(json!([{"acctId": "DU1234567", "conid": 265598, "position": 10.0}]));
        })
        .await;
    let r = server(&gw(&gateway), &[])
        .call(
            "list_positions",
            args(json!({"accountId": "DU1234567", "pageId": 0, "sort": "marketValue", "direction": "d"})),
        )
        .await
        .unwrap();
    m.assert_async().await;
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
}

#[tokio::test]
async fn place_orders_posts_the_orders_object_to_the_account_path() {
    let gateway = MockServer::start_async().await;
    common::paper_login(&gateway, &["DU1234567", "DU1"], true).await;
    let order = json!({"conid": 265598, "orderType": "LMT", "price": 150.25, "side": "BUY", "tif": "DAY", "quantity": 3, "cOID": "my-1"});
    let m = gateway
        .mock_async(|when, then| {
            when.method(POST)
                .path("/v1/api/iserver/account/DU1234567/orders")
                .header("content-type", "application/json")
                .json_body(json!({"orders": [{"conid": 265598, "orderType": "LMT", "price": 150.25, "side": "BUY", "tif": "DAY", "quantity": 3, "cOID": "my-1"}]}));
            then.status(200).json_body(json!([{"order_id": "1234", "order_status": "Submitted", "encrypt_message": "1"}]));
        })
        .await;
    let r = server(&gw(&gateway), TRADING)
        .call(
            "place_orders",
            args(json!({"accountId": "DU1234567", "body": {"orders": [order]}})),
        )
        .await
        .unwrap();
    m.assert_async().await;
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    assert_eq!(
        r.structured_content.unwrap()["items"][0]["order_id"],
        "1234"
    );
}

#[tokio::test]
async fn body_less_post_sends_an_empty_json_object() {
    let gateway = MockServer::start_async().await;
    let m = gateway
        .mock_async(|when, then| {
            when.method(POST)
                .path("/v1/api/iserver/auth/status")
                .body("{}");
            then.status(200)
                .json_body(json!({"authenticated": true, "connected": true, "competing": false}));
        })
        .await;
    let r = server(&gw(&gateway), &[])
        .call("get_auth_status", None)
        .await
        .unwrap();
    m.assert_async().await;
    assert_eq!(r.structured_content.unwrap()["authenticated"], true);
}

#[tokio::test]
async fn bad_arguments_are_reported_by_field_and_never_sent() {
    let gateway = MockServer::start_async().await;
    let any = gateway
        .mock_async(|when, then| {
            when.any_request();
            then.status(200).json_body(json!({}));
        })
        .await;
    let s = server(&gw(&gateway), TRADING);
    let cases = [
        ("get_market_data_snapshot", json!({}), "conids"),
        (
            "get_market_data_snapshot",
            json!({"conids": "1", "feilds": "31"}),
            "`feilds`: unknown argument",
        ),
        (
            "get_market_data_history",
            json!({"conid": "265598", "period": "1d", "bar": "1h", "outsideRth": "maybe"}),
            "`outsideRth`",
        ),
        (
            "place_orders",
            json!({"accountId": "DU1", "body": {"orders": [{"conid": 265598, "side": "BUY", "orderType": "MKT", "quantity": "lots"}]}}),
            "`body.orders[0].quantity`",
        ),
        (
            "place_orders",
            json!({"accountId": "DU1", "body": {"orders": [{"conid": 265598, "side": "BUY", "orderType": "MKT", "quantity": 1, "outsideRth": true}]}}),
            "outsideRth",
        ),
    ];
    for (tool, a, expected) in cases {
        let r = s.call(tool, args(a.clone())).await.unwrap();
        let text = text_of(&r);
        assert_eq!(r.is_error, Some(true), "{tool} {a}: {text}");
        assert!(text.contains(expected), "{tool} {a}: {text}");
        assert!(text.contains("nothing was sent"), "{text}");
        assert_eq!(
            r.structured_content.unwrap()["error"]["kind"],
            "invalid_arguments"
        );
    }
    assert_eq!(
        any.calls_async().await,
        0,
        "no request may reach the gateway"
    );
}

#[tokio::test]
async fn reply_that_does_not_fit_the_generated_type_is_returned_as_sent_with_a_note() {
    let gateway = MockServer::start_async().await;
    // `accounts` should be an array of strings; IBKR sending a number must not hide the data.
    gateway
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/iserver/accounts");
            then.status(200).json_body(json!({"accounts": ["DU1234567", 42], "selectedAccount": "DU1234567", "brandNew": null}));
        })
        .await;
    let r = server(&gw(&gateway), &[])
        .call("list_accounts", None)
        .await
        .unwrap();
    let text = text_of(&r);
    assert_eq!(r.is_error, Some(false), "{text}");
    let sc = r.structured_content.unwrap();
    assert_eq!(sc["accounts"], json!(["DU1234567", 42]));
    assert_eq!(sc["brandNew"], json!(null), "nulls are kept as sent");
    assert!(
        text.contains("does not match its documented shape") && text.contains("accounts"),
        "{text}"
    );
}

#[tokio::test]
async fn gateway_statuses_become_actionable_errors() {
    let gateway = MockServer::start_async().await;
    gateway
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/iserver/accounts");
            then.status(401).body("not authenticated");
        })
        .await;
    gateway
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/iserver/contract/1/info");
            then.status(400)
                .json_body(json!({"error": "Invalid conid: 1"}));
        })
        .await;
    gateway
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/portfolio/accounts");
            then.status(503).body("Service Unavailable");
        })
        .await;
    gateway
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/portfolio/DU1/ledger");
            then.status(200)
                .header("content-type", "application/json")
                .body("<html>gateway restarting");
        })
        .await;
    gateway
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/iserver/account/orders");
            then.status(429).body("Too Many Requests");
        })
        .await;
    let s = server(
        &gw(&gateway),
        &["--gateway-login-url", "https://localhost:5000/sso/Login"],
    );
    let check = |r: rmcp::model::CallToolResult, kind: &str, words: &[&str]| {
        let text = text_of(&r);
        assert_eq!(r.is_error, Some(true), "{text}");
        assert_eq!(
            r.structured_content.as_ref().unwrap()["error"]["kind"],
            kind,
            "{text}"
        );
        for w in words {
            assert!(text.contains(w), "`{w}` missing from: {text}");
        }
    };
    check(
        s.call("list_accounts", None).await.unwrap(),
        "not_authenticated",
        &[
            "log in at https://localhost:5000/sso/Login",
            "not authenticated",
        ],
    );
    check(
        s.call("get_contract_info", args(json!({"conid": "1"})))
            .await
            .unwrap(),
        "rejected",
        &["HTTP 400", "Invalid conid: 1"],
    );
    check(
        s.call("list_portfolio_accounts", None).await.unwrap(),
        "gateway_error",
        &["HTTP 503", "Service Unavailable", "try again"],
    );
    check(
        s.call("get_portfolio_ledger", args(json!({"accountId": "DU1"})))
            .await
            .unwrap(),
        "bad_reply",
        &["not the JSON", "gateway restarting"],
    );
    check(
        s.call("list_orders", None).await.unwrap(),
        "rate_limited",
        &["429", "penalty box"],
    );
}

#[tokio::test]
async fn order_rejected_with_http_200_error_body_is_an_error_with_ibkrs_words() {
    let gateway = MockServer::start_async().await;
    common::paper_login(&gateway, &["DU1234567", "DU1"], true).await;
    let m = gateway
        .mock_async(|when, then| {
            when.method(POST).path("/v1/api/iserver/account/DU1/orders");
            then.status(200)
                .json_body(json!({"error": "Invalid time-in-force for at-the-closing order."}));
        })
        .await;
    let r = server(&gw(&gateway), TRADING)
        .call(
            "place_orders",
            args(json!({"accountId": "DU1", "body": {"orders": [{"conid": 265598, "side": "BUY", "orderType": "MOC", "tif": "GTC", "quantity": 1}]}})),
        )
        .await
        .unwrap();
    assert_eq!(m.calls_async().await, 1);
    let text = text_of(&r);
    assert_eq!(r.is_error, Some(true), "{text}");
    assert!(text.contains("Invalid time-in-force"), "{text}");
}

#[tokio::test]
async fn unreachable_gateway_names_the_url_and_the_setting() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1/api");
    let r = server(&url, &[]).call("list_accounts", None).await.unwrap();
    let text = text_of(&r);
    assert_eq!(r.is_error, Some(true));
    assert!(
        text.contains(&url) && text.contains("IBKR_MCP_GATEWAY_URL"),
        "{text}"
    );
}

#[tokio::test]
async fn write_that_times_out_is_sent_once_and_says_check_before_retrying() {
    let gateway = MockServer::start_async().await;
    common::paper_login(&gateway, &["DU1234567", "DU1"], true).await;
    let m = gateway
        .mock_async(|when, then| {
            when.method(DELETE)
                .path("/v1/api/iserver/account/DU1/order/77");
            then.status(200)
                .delay(Duration::from_secs(3))
                .json_body(json!({"msg": "Request was submitted"}));
        })
        .await;
    let mut flags = TRADING.to_vec();
    flags.extend(["--request-timeout", "1"]);
    let r = server(&gw(&gateway), &flags)
        .call(
            "cancel_iserver_order",
            args(json!({"accountId": "DU1", "orderId": "77"})),
        )
        .await
        .unwrap();
    let text = text_of(&r);
    assert_eq!(r.is_error, Some(true), "{text}");
    assert_eq!(r.structured_content.unwrap()["error"]["kind"], "timeout");
    assert!(
        text.contains("NOT retried") && text.contains("list_orders"),
        "{text}"
    );
    assert_eq!(m.calls_async().await, 1, "a write is never retried");
}

#[tokio::test]
async fn large_results_are_cut_with_a_note_naming_narrowing_arguments() {
    let gateway = MockServer::start_async().await;
    let trades: Vec<_> = (0..500)
        .map(|i| json!({"execution_id": format!("0000e0d5.{i:08}.01.01"), "symbol": "AAPL", "side": "B", "size": 1, "price": "189.10"}))
        .collect();
    gateway
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/iserver/account/trades");
            then.status(200).json_body(json!(trades));
        })
        .await;
    let r = server(&gw(&gateway), &["--max-result-bytes", "4000"])
        .call("list_trades", None)
        .await
        .unwrap();
    let text = text_of(&r);
    assert_eq!(r.is_error, Some(false), "{text}");
    let shown = r.structured_content.unwrap()["items"]
        .as_array()
        .unwrap()
        .len();
    assert!(shown > 0 && shown < 500, "{shown}");
    assert!(
        text.contains(&format!("shows {shown} of 500 items")),
        "{text}"
    );
    assert!(
        text.contains("days") && text.contains("IBKR_MCP_MAX_RESULT_BYTES"),
        "{text}"
    );
}

#[tokio::test]
async fn write_tools_are_hidden_and_refused_by_name_when_trading_is_off() {
    let gateway = MockServer::start_async().await;
    let any = gateway
        .mock_async(|when, then| {
            when.any_request();
            then.status(200).json_body(json!([]));
        })
        .await;
    let s = server(&gw(&gateway), &["--toolsets", "all"]);
    let r = s
        .call(
            "place_orders",
            args(json!({"accountId": "DU1", "body": {"orders": []}})),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text_of(&r).contains("--allow-trading"));
    assert_eq!(any.calls_async().await, 0);
    let e = s.call("no_such_tool", None).await.unwrap_err();
    assert!(e.message.contains("unknown tool"), "{}", e.message);
    let e = server(&gw(&gateway), &["--toolsets", "default"])
        .call("list_alerts", None)
        .await
        .unwrap_err();
    assert!(e.message.contains("toolset `alerts`"), "{}", e.message);
}
