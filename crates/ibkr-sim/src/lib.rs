//! A simulated IBKR Client Portal Gateway (the REST "Web API" under `/v1/api`), used as the
//! no-account demo backend and the stateful test double of ibkr-mcp.
//!
//! It serves every operation of ibkr-mcp's tool allowlist over HTTPS (self-signed) or HTTP,
//! with seeded, consistent state: two paper accounts, cash and positions, a contract universe
//! of US stocks and ETFs (real conids), ES futures, AAPL, MSFT and SPY options and FX pairs, prices
//! that move on every request, IBKR's order question/reply flow, the snapshot pre-flight, the
//! two-level session (SSO login and brokerage session) with idle timeout and competing
//! sessions, pacing (429), and fault injection (latency, 5xx, dropped connections, garbage
//! bodies, drop-after-accept, restarts). Tests steer it through [`SimControl`] or the `/sim/*`
//! HTTP control API.
//!
//! The streaming WebSocket (`/v1/api/ws`) greets like IBKR's (login, accounts, auth status,
//! ready gate, heartbeats, `tic`) and streams live orders, executions, P&L and market data from
//! the same state ([`WsConfig`], [`WsStats`]).
//!
//! With [`SimConfig::with_oauth`] it plays `api.ibkr.com` with IBKR's first-party OAuth 1.0a
//! instead of the gateway: live session tokens, HMAC-SHA256 signed requests, and IBKR's
//! refusals (see [`oauth`]). [`oauth::DemoOAuth`] makes matching client credentials.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let sim = ibkr_sim::start(ibkr_sim::SimConfig::default(), "127.0.0.1:0".parse().unwrap(), ibkr_sim::Tls::SelfSigned).await?;
//! println!("gateway at {}", sim.base_url());
//! sim.control().set_pacing(false);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![recursion_limit = "256"]

mod config;
mod control;
mod examples;
mod faults;
mod gateway;
mod log;
mod market;
pub mod oauth;
mod pacing;
mod rng;
mod server;
mod state;
mod universe;
mod ws;

use std::sync::Arc;

pub use config::{Faults, QuestionPolicy, QuestionRules, SimConfig, Tls};
pub use control::{
    AccountInfo, ExecutionInfo, OrderInfo, PositionInfo, SessionInfo, SimControl, SimState,
};
pub use examples::{Capture, ExampleRequest, example_requests};
pub use log::{Counters, RequestLogEntry};
pub use oauth::{OAuthStats, SimOAuth};
pub use pacing::{PacingRule, PacingTable, pacing_table};
pub use server::{SimHandle, start};
pub use ws::{WsConfig, WsStats};

/// The whole HTTP application: the gateway under `/v1/api`, its WebSocket at `/v1/api/ws`
/// and the control API under `/sim`.
pub(crate) fn app(sim: Arc<state::Sim>) -> axum::Router {
    gateway::router(sim.clone())
        .merge(ws::router(sim.clone()))
        .merge(control::router(sim))
}
