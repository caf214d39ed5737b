//! Session lifecycle over real HTTP: idle timeout and `ssodh/init` recovery, tickle keep-alive,
//! competing sessions, logout and the control-API login, the `/iserver/accounts` prerequisite.

mod common;

use std::time::Duration;

use serde_json::json;

#[tokio::test]
async fn idle_timeout_loses_brokerage_session_and_ssodh_init_recovers() {
    let sim = common::start(common::unpaced().with_idle_timeout(Duration::from_millis(800))).await;
    let (s, v) = common::post(&sim, "/iserver/auth/status", json!({})).await;
    assert_eq!((s, v["authenticated"].as_bool()), (200, Some(true)));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (s, v) = common::post(&sim, "/iserver/auth/status", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(v["authenticated"], false);
    assert_eq!(v["connected"], true);
    let (s, v) = common::get(&sim, "/iserver/accounts").await;
    assert_eq!(s, 401, "{v}");
    let (s, _) = common::get(&sim, "/portfolio/accounts").await;
    assert_eq!(
        s, 200,
        "portfolio endpoints keep working without a brokerage session"
    );
    let (s, v) = common::post(
        &sim,
        "/iserver/auth/ssodh/init",
        json!({ "publish": true, "compete": true }),
    )
    .await;
    assert_eq!((s, v["authenticated"].as_bool()), (200, Some(true)), "{v}");
    let (s, _) = common::get(&sim, "/iserver/accounts").await;
    assert_eq!(s, 200);
    assert_eq!(sim.control().state().session.idle_expiries, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn tickle_keeps_the_brokerage_session_alive() {
    let sim =
        common::start(common::unpaced().with_idle_timeout(Duration::from_millis(1_500))).await;
    // 8 tickles 300 ms apart span 2.4 s, well past the 1.5 s timeout.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (s, v) = common::post(&sim, "/tickle", json!({})).await;
        assert_eq!(s, 200);
        assert_eq!(v["iserver"]["authStatus"]["authenticated"], true, "{v}");
        assert!(v["session"].as_str().is_some_and(|s| s.len() == 32));
    }
    assert_eq!(sim.control().state().session.idle_expiries, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn get_variants_of_auth_status_tickle_and_logout_work() {
    let sim = common::start(common::unpaced()).await;
    let (s, v) = common::get(&sim, "/iserver/auth/status").await;
    assert_eq!((s, v["authenticated"].as_bool()), (200, Some(true)));
    assert_eq!(v["serverInfo"]["serverName"], "SimGw1");
    let (s, v) = common::get(&sim, "/tickle").await;
    assert_eq!(s, 200);
    assert!(
        v.get("ssoExpires").is_some() && v.get("collission").is_some() && v.get("userId").is_some()
    );
    let (s, v) = common::get(&sim, "/logout").await;
    assert_eq!((s, v), (200, json!({ "status": true })));
    assert!(!sim.control().state().session.logged_in);
    sim.shutdown().await;
}

#[tokio::test]
async fn competing_session_blocks_iserver_until_ssodh_init_with_compete() {
    let sim = common::start(common::unpaced()).await;
    sim.control().set_competing(true);
    let (_, v) = common::post(&sim, "/iserver/auth/status", json!({})).await;
    assert_eq!(v["competing"], true);
    assert_eq!(v["authenticated"], false);
    assert_eq!(v["connected"], true);
    let (s, _) = common::get(&sim, "/iserver/accounts").await;
    assert_eq!(s, 401);
    let (s, v) = common::post(
        &sim,
        "/iserver/auth/ssodh/init",
        json!({ "publish": true, "compete": false }),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        v["competing"], true,
        "compete=false must not take the session over"
    );
    let (s, _) = common::get(&sim, "/iserver/reauthenticate").await;
    assert_eq!(s, 200);
    assert_eq!(
        common::get(&sim, "/iserver/accounts").await.0,
        401,
        "reauthenticate does not compete"
    );
    let (_, v) = common::post(
        &sim,
        "/iserver/auth/ssodh/init",
        json!({ "publish": true, "compete": true }),
    )
    .await;
    assert_eq!(v["authenticated"], true);
    assert_eq!(v["competing"], false);
    assert_eq!(common::get(&sim, "/iserver/accounts").await.0, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn logout_answers_401_everywhere_until_the_control_api_logs_in() {
    let sim = common::start(common::unpaced()).await;
    let (s, v) = common::post(&sim, "/logout", json!({})).await;
    assert_eq!((s, v), (200, json!({ "status": true })));
    for path in ["/portfolio/accounts", "/iserver/accounts", "/sso/validate"] {
        assert_eq!(common::get(&sim, path).await.0, 401, "{path}");
    }
    assert_eq!(
        common::post(&sim, "/iserver/auth/status", json!({}))
            .await
            .0,
        401
    );
    assert_eq!(
        common::post(&sim, "/iserver/auth/ssodh/init", json!({ "compete": true }))
            .await
            .0,
        401
    );
    sim.control().login(false);
    let (s, v) = common::post(&sim, "/iserver/auth/status", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(
        (v["connected"].as_bool(), v["authenticated"].as_bool()),
        (Some(true), Some(false))
    );
    let (_, v) = common::post(
        &sim,
        "/iserver/auth/ssodh/init",
        json!({ "publish": true, "compete": true }),
    )
    .await;
    assert_eq!(v["authenticated"], true);
    sim.shutdown().await;
}

#[tokio::test]
async fn orders_need_accounts_query_in_each_brokerage_session() {
    let sim =
        common::start(common::unpaced().with_questions(ibkr_sim::QuestionPolicy::Never)).await;
    let order = json!({ "orders": [{ "conid": 8314, "orderType": "LMT", "price": 100.0, "side": "BUY", "tif": "DAY", "quantity": 1 }] });
    let (s, v) = common::post(&sim, "/iserver/account/DU1234567/orders", order.clone()).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"], "Please query /accounts first");
    assert!(sim.control().state().orders.is_empty());
    assert_eq!(common::get(&sim, "/iserver/accounts").await.0, 200);
    let (s, v) = common::post(&sim, "/iserver/account/DU1234567/orders", order.clone()).await;
    assert_eq!(s, 200);
    assert!(v[0]["order_id"].is_string(), "{v}");
    sim.control().expire_session();
    common::post(
        &sim,
        "/iserver/auth/ssodh/init",
        json!({ "publish": true, "compete": true }),
    )
    .await;
    let (s, _) = common::post(&sim, "/iserver/account/DU1234567/orders", order).await;
    assert_eq!(
        s, 400,
        "a new brokerage session needs /iserver/accounts again"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn control_http_api_drives_session_and_reports_state() {
    let sim = common::start(common::unpaced()).await;
    let c = common::client();
    let ctl = sim.control_url();
    let r = c
        .put(format!("{ctl}/session/competing"))
        .json(&json!({ "competing": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let state: serde_json::Value = c
        .get(format!("{ctl}/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["session"]["competing"], true);
    assert_eq!(state["accounts"].as_array().unwrap().len(), 2);
    c.post(format!("{ctl}/session/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(common::get(&sim, "/portfolio/accounts").await.0, 401);
    c.post(format!("{ctl}/session/login"))
        .json(&json!({ "authenticated": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(common::get(&sim, "/iserver/accounts").await.0, 200);
    let log: serde_json::Value = c
        .get(format!("{ctl}/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "control calls are not logged: {log}");
    assert_eq!(entries[0]["status"], 401);
    assert_eq!(entries[1]["path"], "/iserver/accounts");
    assert_eq!(log["counters"]["per_endpoint"]["GET /iserver/accounts"], 1);
    assert_eq!(
        c.delete(format!("{ctl}/requests"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(sim.control().requests().is_empty());
    let bad = c
        .put(format!("{ctl}/faults"))
        .body("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    sim.shutdown().await;
}
