//! The `/sim/*` control API with the JSON bodies the README documents, as a Python test would
//! use it.

mod common;

use serde_json::{Value, json};

async fn ctl(
    sim: &ibkr_sim::SimHandle,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = common::client().request(m, format!("{}{}", sim.control_url(), path));
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn control_api_json_bodies_take_effect() {
    let sim = common::start(common::unpaced()).await;
    common::get(&sim, "/iserver/accounts").await;

    // Questions: a fixed chain, then never, then rules with a custom size limit.
    assert_eq!(
        ctl(
            &sim,
            "PUT",
            "/questions",
            Some(json!({ "mode": "chain", "message_ids": ["o10164"] }))
        )
        .await
        .0,
        200
    );
    let order = json!({ "orders": [{ "conid": 8314, "orderType": "LMT", "price": 100.0, "side": "BUY", "tif": "DAY", "quantity": 20 }] });
    let (_, v) = common::post(&sim, "/iserver/account/DU1234567/orders", order.clone()).await;
    assert_eq!(v[0]["messageIds"], json!(["o10164"]));
    ctl(&sim, "PUT", "/questions", Some(json!({ "mode": "never" }))).await;
    let (_, v) = common::post(&sim, "/iserver/account/DU1234567/orders", order.clone()).await;
    assert!(v[0]["order_id"].is_string());
    ctl(
        &sim,
        "PUT",
        "/questions",
        Some(json!({ "mode": "rules", "price_percent": null, "size_limit": 10.0 })),
    )
    .await;
    let (_, v) = common::post(&sim, "/iserver/account/DU1234567/orders", order.clone()).await;
    assert_eq!(v[0]["messageIds"], json!(["o383"]));
    assert_eq!(
        ctl(
            &sim,
            "PUT",
            "/questions",
            Some(json!({ "mode": "sometimes" }))
        )
        .await
        .0,
        400
    );

    // Faults.
    let faults = json!({ "error_rate": 1.0, "only_prefixes": ["/trsrv"], "latency_by_prefix": [["/fyi", 1]] });
    assert_eq!(ctl(&sim, "PUT", "/faults", Some(faults)).await.0, 200);
    let (_, f) = ctl(&sim, "GET", "/faults", None).await;
    assert_eq!(f["error_rate"], 1.0);
    assert_eq!(f["latency_by_prefix"], json!([["/fyi", 1]]));
    assert!(common::get(&sim, "/trsrv/stocks?symbols=IBM").await.0 >= 500);
    ctl(&sim, "PUT", "/faults", Some(json!({}))).await;
    assert_eq!(common::get(&sim, "/trsrv/stocks?symbols=IBM").await.0, 200);

    // Market price.
    assert_eq!(
        ctl(
            &sim,
            "PUT",
            "/market/8314",
            Some(json!({ "price": 123.45 }))
        )
        .await
        .0,
        200
    );
    let (_, p) = ctl(&sim, "GET", "/market/8314", None).await;
    assert_eq!(p["price"], 123.45);
    assert_eq!(
        ctl(&sim, "PUT", "/market/1", Some(json!({ "price": 1.0 })))
            .await
            .0,
        400
    );

    // Pacing, pre-flight, idle timeout, expiry, drop-after-accept.
    ctl(&sim, "PUT", "/pacing", Some(json!({ "enabled": true }))).await;
    assert!(
        ctl(&sim, "GET", "/state", None).await.1["pacing"]
            .as_bool()
            .unwrap()
    );
    assert_eq!(ctl(&sim, "POST", "/pacing/reset", None).await.0, 200);
    ctl(&sim, "PUT", "/pacing", Some(json!({ "enabled": false }))).await;
    ctl(
        &sim,
        "PUT",
        "/snapshot-preflight",
        Some(json!({ "enabled": false })),
    )
    .await;
    let (_, snap) = common::get(&sim, "/iserver/marketdata/snapshot?conids=8314&fields=31").await;
    // The walk takes a step per request, so the price has moved a little from the one set.
    let last: f64 = snap[0]["31"].as_str().unwrap().parse().unwrap();
    assert!((last / 123.45 - 1.0).abs() < 0.02, "{last}");
    ctl(
        &sim,
        "PUT",
        "/session/idle-timeout",
        Some(json!({ "ms": 60000 })),
    )
    .await;
    assert_eq!(
        ctl(&sim, "GET", "/state", None).await.1["session"]["idle_timeout_ms"],
        60000
    );
    ctl(&sim, "POST", "/session/expire", None).await;
    assert_eq!(common::get(&sim, "/iserver/accounts").await.0, 401);
    common::post(&sim, "/iserver/auth/ssodh/init", json!({ "compete": true })).await;
    common::get(&sim, "/iserver/accounts").await;
    ctl(&sim, "PUT", "/questions", Some(json!({ "mode": "never" }))).await;
    ctl(&sim, "POST", "/faults/drop-after-accept", None).await;
    assert!(
        ctl(&sim, "GET", "/state", None).await.1["drop_after_accept_armed"]
            .as_bool()
            .unwrap()
    );
    let res = common::client().post(format!("{}/iserver/account/DU1234567/orders", sim.base_url())).json(&json!({ "orders": [{ "conid": 8314, "orderType": "MKT", "side": "BUY", "tif": "DAY", "quantity": 1 }] })).send().await;
    assert!(res.is_err());
    let (_, state) = ctl(&sim, "GET", "/state", None).await;
    let orders = state["orders"].as_array().unwrap();
    assert_eq!(
        orders
            .iter()
            .filter(|o| o["order_type"] == "MARKET")
            .count(),
        1
    );
    let (_, log) = ctl(&sim, "GET", "/requests", None).await;
    let last = log["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["outcome"].as_str(), last["status"].as_u64()),
        (Some("dropped_after_accept"), Some(0))
    );
    assert_eq!(last["template"], "/iserver/account/{accountId}/orders");
    sim.shutdown().await;
}
