//! Shared helpers for the simulator's integration tests: start a simulator on a loopback
//! port and build reqwest clients for it.

#![allow(dead_code)]

use std::time::Duration;

use ibkr_sim::{SimConfig, SimHandle, Tls};
use serde_json::Value;

/// Starts a plain-HTTP simulator on 127.0.0.1 with `config`.
pub async fn start(config: SimConfig) -> SimHandle {
    ibkr_sim::start(config, "127.0.0.1:0".parse().unwrap(), Tls::None)
        .await
        .expect("simulator starts")
}

/// The default config with pacing off (most tests send faster than IBKR allows).
pub fn unpaced() -> SimConfig {
    SimConfig::default().with_pacing(false)
}

/// A client that accepts the simulator's self-signed certificate and never retries.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client builds")
}

/// GET `path` (under `/v1/api`), returning status and JSON body.
pub async fn get(sim: &SimHandle, path: &str) -> (u16, Value) {
    let resp = client()
        .get(format!("{}{}", sim.base_url(), path))
        .send()
        .await
        .expect("request succeeds");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// POST `body` to `path` (under `/v1/api`), returning status and JSON body.
pub async fn post(sim: &SimHandle, path: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(format!("{}{}", sim.base_url(), path))
        .json(&body)
        .send()
        .await
        .expect("request succeeds");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// DELETE `path` (under `/v1/api`), returning status and JSON body.
pub async fn delete(sim: &SimHandle, path: &str) -> (u16, Value) {
    let resp = client()
        .delete(format!("{}{}", sim.base_url(), path))
        .send()
        .await
        .expect("request succeeds");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// PUT `body` to `path` (under `/v1/api`), returning status and JSON body.
pub async fn put(sim: &SimHandle, path: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .put(format!("{}{}", sim.base_url(), path))
        .json(&body)
        .send()
        .await
        .expect("request succeeds");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}
