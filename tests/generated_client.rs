//! One real call through the generated client against an HTTP mock gateway on loopback.

use httpmock::prelude::*;
use ibkr_mcp::ibkr::{Client, ClientOptions, build_client};

/// The generated client, pointed at the mock gateway's `/v1/api`.
fn client_for(server: &MockServer) -> Client {
    build_client(&ClientOptions {
        base_url: format!("{}/v1/api", server.base_url()),
        ..ClientOptions::default()
    })
    .expect("client")
}

#[tokio::test]
async fn portfolio_accounts_over_http_returns_typed_accounts_and_keeps_undeclared_fields() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/portfolio/accounts");
            then.status(200).header("content-type", "application/json").json_body(serde_json::json!([
                {
                    "id": "DU1234567",
                    "accountId": "DU1234567",
                    "currency": "USD",
                    "type": "DEMO",
                    "desc": "DU1234567",
                    "covestor": false,
                    "brokerageAccess": true,
                    // A key IBKR's schema does not declare (IBKR adds keys without notice): the
                    // typed value must keep it.
                    "newlyAddedByIbkr": {"nested": [1, 2.5]},
                    "parent": {"mmc": [], "accountId": "", "isMParent": false, "isMChild": false, "isMultiplex": false}
                }
            ]));
        })
        .await;

    let client = client_for(&server);
    let accounts = client
        .get_portfolio_accounts()
        .send()
        .await
        .expect("typed response")
        .into_inner();

    mock.assert_async().await;
    assert_eq!(accounts.len(), 1);
    let account = &accounts[0];
    assert_eq!(account.id.as_deref(), Some("DU1234567"));
    assert_eq!(account.currency.as_deref(), Some("USD"));
    assert_eq!(account.brokerage_access, Some(true));
    let undeclared = serde_json::json!({"nested": [1, 2.5]});
    assert_eq!(account.extra.get("newlyAddedByIbkr"), Some(&undeclared));
    // And it serializes back with the undeclared key.
    let back = serde_json::to_value(account).expect("serialize");
    assert_eq!(back["newlyAddedByIbkr"], undeclared);
}

#[tokio::test]
async fn gateway_error_status_keeps_ibkr_error_text() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/portfolio/accounts");
            then.status(401)
                .header("content-type", "text/plain")
                .body("not authenticated");
        })
        .await;
    let client = client_for(&server);
    let err = client
        .get_portfolio_accounts()
        .send()
        .await
        .expect_err("401 is an error");
    mock.assert_async().await;
    match err {
        progenitor_client::Error::UnexpectedResponse(resp) => {
            assert_eq!(resp.status().as_u16(), 401);
            assert_eq!(resp.text().await.expect("body"), "not authenticated");
        }
        other => panic!("expected the raw response, got {other:?}"),
    }
}

#[tokio::test]
async fn place_order_sends_the_orders_object_the_gateway_expects_and_reads_a_question() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/v1/api/iserver/account/DU1234567/orders")
                // The live gateway wants {"orders": [...]}; IBKR's document said a bare array
                // (patch 0200).
                .body_includes(r#"{"orders":[{"#)
                .body_includes(r#""conid":265598"#);
            then.status(200)
                .header("content-type", "application/json")
                .json_body(serde_json::json!([
                    {
                        "id": "07a13a5a-4a48-44a5-bb25-5ab37b79186c",
                        "message": ["The following order exceeds the price percentage limit"],
                        "isSuppressed": false,
                        "messageIds": ["o163"]
                    }
                ]));
        })
        .await;
    let client = client_for(&server);
    let body: ibkr_mcp::ibkr::generated::types::OrdersSubmissionRequest = serde_json::from_value(serde_json::json!({
        "orders": [{"conid": 265598, "orderType": "LMT", "price": 150.25, "side": "BUY", "tif": "DAY", "quantity": 1}]
    }))
    .expect("order body");
    let reply = client
        .post_iserver_account_account_id_orders()
        .account_id("DU1234567")
        .body(body)
        .send()
        .await
        .expect("typed reply")
        .into_inner();
    mock.assert_async().await;
    let reply = serde_json::to_value(reply).expect("serialize");
    assert_eq!(reply[0]["messageIds"][0], "o163", "{reply}");
}
