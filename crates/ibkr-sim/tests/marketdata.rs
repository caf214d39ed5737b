//! Market data over real HTTP: the snapshot pre-flight (per brokerage session and after
//! unsubscribing), field values as strings, history bar/period validation, determinism.

mod common;

use ibkr_sim::SimConfig;
use serde_json::{Value, json};

const SNAP: &str = "/iserver/marketdata/snapshot?conids=265598&fields=31,55,84,86,7295";

fn has_values(v: &Value) -> bool {
    v[0].get("31").is_some()
}

#[tokio::test]
async fn snapshot_first_request_is_a_preflight_without_values() {
    let sim = common::start(common::unpaced()).await;
    let (s, v) = common::get(&sim, SNAP).await;
    assert_eq!(s, 200);
    let keys: Vec<&str> = v[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["conid", "conidEx", "_updated", "server_id"], "{v}");
    let (_, v) = common::get(&sim, SNAP).await;
    assert!(has_values(&v), "{v}");
    assert_eq!(v[0]["55"], "AAPL");
    for f in ["31", "84", "86", "7295"] {
        let s = v[0][f]
            .as_str()
            .unwrap_or_else(|| panic!("field {f} is a string: {v}"));
        assert!(s.parse::<f64>().unwrap() > 0.0);
    }
    assert!(
        v[0]["84"].as_str().unwrap().parse::<f64>().unwrap()
            < v[0]["86"].as_str().unwrap().parse::<f64>().unwrap()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn snapshot_preflight_returns_after_unsubscribe_and_new_session() {
    let sim = common::start(common::unpaced()).await;
    common::get(&sim, SNAP).await;
    assert!(has_values(&common::get(&sim, SNAP).await.1));
    assert_eq!(
        common::post(
            &sim,
            "/iserver/marketdata/unsubscribe",
            json!({ "conid": 265598 })
        )
        .await
        .1,
        json!({ "success": true })
    );
    assert!(
        !has_values(&common::get(&sim, SNAP).await.1),
        "pre-flight again after unsubscribe"
    );
    assert!(has_values(&common::get(&sim, SNAP).await.1));
    assert_eq!(
        common::get(&sim, "/iserver/marketdata/unsubscribeall")
            .await
            .1,
        json!({ "unsubscribed": true })
    );
    assert!(
        !has_values(&common::get(&sim, SNAP).await.1),
        "pre-flight again after unsubscribeall"
    );
    assert!(has_values(&common::get(&sim, SNAP).await.1));
    sim.control().expire_session();
    common::post(&sim, "/iserver/auth/ssodh/init", json!({ "compete": true })).await;
    assert!(
        !has_values(&common::get(&sim, SNAP).await.1),
        "pre-flight again in a new brokerage session"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn snapshot_without_preflight_and_without_conids() {
    let sim = common::start(common::unpaced().with_snapshot_preflight(false)).await;
    assert!(has_values(&common::get(&sim, SNAP).await.1));
    let (s, v) = common::get(&sim, "/iserver/marketdata/snapshot?fields=31").await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("Conid"));
    sim.shutdown().await;
}

#[tokio::test]
async fn history_accepts_documented_bars_and_rejects_invalid_combinations() {
    let sim = common::start(common::unpaced()).await;
    for (bar, period, bars) in [
        ("1min", "1h", 60),
        ("5min", "1d", 288),
        ("1h", "2d", 48),
        ("1d", "1m", 22),
        ("1w", "1y", 53),
        ("1m", "5y", 61),
    ] {
        let (s, v) = common::get(
            &sim,
            &format!("/iserver/marketdata/history?conid=265598&bar={bar}&period={period}"),
        )
        .await;
        assert_eq!(s, 200, "{bar}/{period}: {v}");
        let data = v["data"].as_array().unwrap();
        assert!(
            !data.is_empty() && data.len() <= bars,
            "{bar}/{period}: {} bars",
            data.len()
        );
        assert!(
            data.windows(2)
                .all(|w| w[0]["t"].as_i64() < w[1]["t"].as_i64()),
            "bars in time order"
        );
    }
    for (bar, period) in [
        ("1d", "1h"),
        ("7min", "1d"),
        ("1min", "1y"),
        ("1h", "abc"),
        ("", "1d"),
        ("5min", "0d"),
    ] {
        let (s, v) = common::get(
            &sim,
            &format!("/iserver/marketdata/history?conid=265598&bar={bar}&period={period}"),
        )
        .await;
        assert_eq!(s, 400, "{bar}/{period} must be rejected: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let (s, v) = common::get(
        &sim,
        "/hmds/history?conid=756733&bar=5mins&period=1d&direction=-1&startTime=20200102-14:30:00",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["startTimeVal"].as_i64().unwrap() < v["endTimeVal"].as_i64().unwrap());
    sim.shutdown().await;
}

async fn last_prices(seed: u64) -> Vec<String> {
    let sim = common::start(SimConfig::default().with_seed(seed).with_pacing(false)).await;
    let mut out = Vec::new();
    for _ in 0..8 {
        let (_, v) = common::get(
            &sim,
            "/iserver/marketdata/snapshot?conids=265598,756733,12087792&fields=31",
        )
        .await;
        for item in v.as_array().unwrap() {
            if let Some(p) = item["31"].as_str() {
                out.push(p.to_string());
            }
        }
    }
    sim.shutdown().await;
    out
}

#[tokio::test]
async fn same_seed_and_requests_give_the_same_prices() {
    let a = last_prices(7).await;
    let b = last_prices(7).await;
    let c = last_prices(8).await;
    assert_eq!(a.len(), 21);
    assert_eq!(a, b);
    assert_ne!(a, c);
    let distinct: std::collections::BTreeSet<_> = a.iter().step_by(3).collect();
    assert!(distinct.len() > 1, "prices move between requests: {a:?}");
}
