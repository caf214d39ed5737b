//! Fault injection and pacing over real HTTP: latency, 5xx, dropped connections, garbage
//! bodies, path restrictions, drop-after-accept for orders, restarts, and 429 pacing with
//! `Retry-After`. Timing assertions are loose lower bounds only (shared 2-core machines).

mod common;

use std::time::{Duration, Instant};

use ibkr_sim::{Faults, QuestionPolicy, SimConfig};
use serde_json::{Value, json};

fn order(coid: &str) -> Value {
    json!({ "orders": [{ "conid": 8314, "orderType": "MKT", "side": "BUY", "tif": "DAY", "quantity": 1, "cOID": coid }] })
}

#[tokio::test]
async fn latency_is_added_per_path_prefix() {
    let sim = common::start(common::unpaced()).await;
    sim.control().set_faults(Faults {
        latency_by_prefix: vec![("/portfolio".into(), 400)],
        ..Faults::default()
    });
    let t = Instant::now();
    assert_eq!(common::get(&sim, "/portfolio/accounts").await.0, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(380),
        "slow path took {:?}",
        t.elapsed()
    );
    sim.control().set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let t = Instant::now();
    assert_eq!(common::get(&sim, "/iserver/accounts").await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(280));
    sim.shutdown().await;
}

#[tokio::test]
async fn server_errors_at_rate_one_and_none_after_reset() {
    let sim = common::start(common::unpaced()).await;
    sim.control().set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    for _ in 0..5 {
        let (s, v) = common::get(&sim, "/portfolio/accounts").await;
        assert!(s == 500 || s == 503, "{s}");
        assert!(v["error"].is_string());
    }
    assert_eq!(sim.control().counters().server_errors, 5);
    sim.control().set_faults(Faults::default());
    assert_eq!(common::get(&sim, "/portfolio/accounts").await.0, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn error_rate_half_is_seeded_and_partial() {
    let run = || async {
        let sim = common::start(SimConfig::default().with_pacing(false).with_faults(Faults {
            error_rate: 0.5,
            ..Faults::default()
        }))
        .await;
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(common::get(&sim, "/portfolio/accounts").await.0);
        }
        sim.shutdown().await;
        statuses
    };
    let a = run().await;
    assert_eq!(a, run().await, "same seed, same faults");
    let errors = a.iter().filter(|s| **s >= 500).count();
    assert!(errors > 0 && errors < 20, "{a:?}");
}

#[tokio::test]
async fn dropped_connection_gives_a_client_error_and_changes_nothing() {
    let sim = common::start(common::unpaced().with_questions(QuestionPolicy::Never)).await;
    assert_eq!(common::get(&sim, "/iserver/accounts").await.0, 200);
    sim.control().set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let res = common::client()
        .post(format!(
            "{}/iserver/account/DU1234567/orders",
            sim.base_url()
        ))
        .json(&order("dropped-1"))
        .send()
        .await;
    let err = res.expect_err("the connection is closed without a response");
    assert!(!err.is_timeout(), "{err:?}");
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    assert!(
        sim.control().state().orders.is_empty(),
        "a dropped request is not handled"
    );
    assert_eq!(sim.control().counters().dropped, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn garbage_bodies_are_200_and_not_json() {
    let sim = common::start(common::unpaced()).await;
    sim.control().set_faults(Faults {
        garbage_rate: 1.0,
        ..Faults::default()
    });
    for _ in 0..4 {
        let resp = common::client()
            .get(format!("{}/portfolio/accounts", sim.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    }
    assert_eq!(sim.control().counters().garbage, 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn only_prefixes_limit_rate_faults() {
    let sim = common::start(common::unpaced()).await;
    sim.control().set_faults(Faults {
        error_rate: 1.0,
        only_prefixes: vec!["/iserver/marketdata".into()],
        ..Faults::default()
    });
    assert_eq!(common::get(&sim, "/portfolio/accounts").await.0, 200);
    assert!(
        common::get(&sim, "/iserver/marketdata/snapshot?conids=265598")
            .await
            .0
            >= 500
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn drop_after_accept_books_exactly_one_order_and_the_client_sees_an_error() {
    let sim = common::start(common::unpaced().with_questions(QuestionPolicy::Never)).await;
    assert_eq!(common::get(&sim, "/iserver/accounts").await.0, 200);
    sim.control().arm_drop_after_accept();
    let res = common::client()
        .post(format!(
            "{}/iserver/account/DU1234567/orders",
            sim.base_url()
        ))
        .json(&order("daa-1"))
        .send()
        .await;
    let err = res.expect_err("no response after the order was booked");
    assert!(!err.is_timeout(), "{err:?}");
    let st = sim.control().state();
    assert_eq!(st.orders.len(), 1, "booked once, never re-sent");
    assert_eq!(st.orders[0].coid.as_deref(), Some("daa-1"));
    assert!(!st.drop_after_accept_armed, "one-shot");
    assert_eq!(st.requests_dropped(), 1);
    let (s, v) = common::post(&sim, "/iserver/account/DU1234567/orders", order("daa-2")).await;
    assert_eq!(s, 200);
    assert!(v[0]["order_id"].is_string());
    sim.shutdown().await;
}

trait Dropped {
    fn requests_dropped(&self) -> u64;
}

impl Dropped for ibkr_sim::SimState {
    fn requests_dropped(&self) -> u64 {
        self.counters.dropped
    }
}

#[tokio::test]
async fn drop_after_accept_on_the_reply_that_completes_an_order() {
    let sim = common::start(common::unpaced().with_questions(QuestionPolicy::Chain {
        message_ids: vec!["o403".into(), "o10153".into()],
    }))
    .await;
    assert_eq!(common::get(&sim, "/iserver/accounts").await.0, 200);
    sim.control().arm_drop_after_accept();
    let (_, v) = common::post(&sim, "/iserver/account/DU1234567/orders", order("daa-r")).await;
    let first = v[0]["id"].as_str().unwrap().to_string();
    let (s, v) = common::post(
        &sim,
        &format!("/iserver/reply/{first}"),
        json!({ "confirmed": true }),
    )
    .await;
    assert_eq!(
        s, 200,
        "a reply that only asks the next question is answered"
    );
    let second = v[0]["id"].as_str().unwrap().to_string();
    let res = common::client()
        .post(format!("{}/iserver/reply/{second}", sim.base_url()))
        .json(&json!({ "confirmed": true }))
        .send()
        .await;
    assert!(res.is_err());
    assert_eq!(sim.control().state().orders.len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn restart_refuses_connections_then_recovers_with_ssodh_init() {
    let sim = common::start(common::unpaced()).await;
    assert_eq!(common::get(&sim, "/iserver/accounts").await.0, 200);
    sim.control().restart(Duration::from_millis(1_000)).await;
    let down = common::client()
        .get(format!("{}/iserver/auth/status", sim.base_url()))
        .send()
        .await;
    let err = down.expect_err("listener is down");
    assert!(err.is_connect(), "{err:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        match common::client()
            .post(format!("{}/iserver/auth/status", sim.base_url()))
            .json(&json!({}))
            .send()
            .await
        {
            Ok(r) => break r.json::<Value>().await.unwrap(),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("no recovery: {e:?}"),
        }
    };
    assert_eq!(v["connected"], true, "the SSO login survives a restart");
    assert_eq!(v["authenticated"], false, "the brokerage session does not");
    assert_eq!(common::get(&sim, "/iserver/accounts").await.0, 401);
    let (_, v) = common::post(
        &sim,
        "/iserver/auth/ssodh/init",
        json!({ "publish": true, "compete": true }),
    )
    .await;
    assert_eq!(v["authenticated"], true);
    assert_eq!(sim.control().state().session.restarts, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn restart_through_the_http_control_api() {
    let sim = common::start(common::unpaced()).await;
    let r = common::client()
        .post(format!("{}/restart", sim.control_url()))
        .json(&json!({ "down_ms": 600 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_refusal = false;
    loop {
        match common::client()
            .get(format!("{}/tickle", sim.base_url()))
            .send()
            .await
        {
            Ok(_) if saw_refusal => break,
            Ok(_) => {}
            Err(e) => {
                // Refused, or reset when the listener closed with the connection in its backlog.
                assert!(e.is_connect() || e.is_request(), "{e:?}");
                assert!(!e.is_timeout(), "{e:?}");
                saw_refusal = true;
            }
        }
        assert!(
            Instant::now() < deadline,
            "restart did not happen and recover in time"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(sim.control().state().session.restarts, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn pacing_answers_429_with_retry_after_and_can_be_switched_off() {
    let sim = common::start(SimConfig::default()).await;
    let mut paced = 0;
    for _ in 0..25 {
        let resp = common::client()
            .get(format!("{}/portfolio/{}/meta", sim.base_url(), "DU1234567"))
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            paced += 1;
            let retry: u64 = resp.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                (1..=1).contains(&retry),
                "global window is one second: {retry}"
            );
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["statusCode"], 429);
        }
    }
    assert!(paced >= 1, "at most 10 per second pass: {paced} paced");
    assert_eq!(sim.control().counters().paced, paced);
    sim.control().reset_pacing();
    let first = common::get(&sim, "/iserver/account/orders").await.0;
    let second = common::client()
        .get(format!("{}/iserver/account/orders", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(first, 200);
    assert_eq!(second.status(), 429, "1 request per 5 s on live orders");
    let retry: u64 = second.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry), "{retry}");
    sim.control().set_pacing(false);
    for _ in 0..15 {
        assert_eq!(common::get(&sim, "/iserver/account/orders").await.0, 200);
    }
    sim.shutdown().await;
}
