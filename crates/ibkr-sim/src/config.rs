//! Simulator configuration: [`SimConfig`] and the knobs it carries ([`Faults`],
//! [`QuestionPolicy`], [`QuestionRules`]), plus [`Tls`].
//!
//! Everything here can be set before start; faults, questions, pacing and the idle timeout can
//! also be changed at runtime through [`crate::SimControl`] or the `/sim/*` control API. This
//! module only holds values; the behaviour lives in `state`, `pacing`, `server` and `oauth`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::oauth::SimOAuth;
use crate::ws::WsConfig;

/// Whether the simulator speaks HTTPS (like the real gateway) or plain HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Plain HTTP.
    None,
    /// HTTPS with a self-signed certificate for `localhost`/`127.0.0.1`, generated at start.
    SelfSigned,
}

/// Fault injection knobs. Rates are probabilities in `0..=1`, drawn from a generator seeded by
/// [`SimConfig::seed`], so a fixed seed and request sequence give the same faults.
///
/// Rate-based faults (`error_rate`, `drop_rate`, `garbage_rate`) apply to `/v1/api` requests
/// whose path (relative to `/v1/api`) starts with one of `only_prefixes`, or to every request
/// when `only_prefixes` is empty. A 5xx or a dropped connection is decided *before* the request
/// is handled (nothing changes in state); a garbage body replaces the body of a request that
/// *was* handled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Delay added to every `/v1/api` response, in milliseconds.
    pub latency_ms: u64,
    /// Per path-prefix delays (prefix relative to `/v1/api`, e.g. `/iserver/marketdata`); the
    /// longest matching prefix wins over `latency_ms`.
    pub latency_by_prefix: Vec<(String, u64)>,
    /// Probability of answering 500 or 503 instead of handling the request.
    pub error_rate: f64,
    /// Probability of closing the TCP connection without any HTTP response.
    pub drop_rate: f64,
    /// Probability of replacing a handled response's body with a non-JSON or truncated body
    /// (status 200, `Content-Type: application/json`).
    pub garbage_rate: f64,
    /// Restrict the rate-based faults to these path prefixes (empty: all paths).
    pub only_prefixes: Vec<String>,
}

impl Faults {
    /// `true` when no fault is configured.
    pub fn is_none(&self) -> bool {
        *self == Faults::default()
    }
}

/// Which order questions ("are you sure?" warnings) the simulator asks before it accepts an
/// order or a modification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum QuestionPolicy {
    /// Ask what the rules say about each order (the default).
    Rules(QuestionRules),
    /// Ask exactly these message ids, in this order, for every order (e.g.
    /// `["o163", "o451", "o10153"]`), less the ids suppressed in the session.
    Chain {
        /// Message ids such as `o163`.
        message_ids: Vec<String>,
    },
    /// Never ask; every valid order is accepted at once.
    Never,
}

impl Default for QuestionPolicy {
    fn default() -> Self {
        QuestionPolicy::Rules(QuestionRules::default())
    }
}

/// The rule set of [`QuestionPolicy::Rules`]. Each rule that fires adds one question; they are
/// asked one after the other in the order of the fields below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QuestionRules {
    /// `o354`: the order's contract has no market-data subscription in this brokerage session
    /// (no snapshot was requested for it). Off by default.
    pub no_market_data: bool,
    /// `o403`: a market order will most likely fill at once.
    pub market_order: bool,
    /// `o163`: a limit price further than this many percent from the last price.
    pub price_percent: Option<f64>,
    /// `o383`: an order size above this many units.
    pub size_limit: Option<f64>,
    /// `o451`: an estimated order value above this many units of the contract's currency.
    pub value_limit: Option<f64>,
    /// `o10331`: a stop or stop-limit order.
    pub stop_order: bool,
}

impl Default for QuestionRules {
    fn default() -> Self {
        Self {
            no_market_data: false,
            market_order: true,
            price_percent: Some(3.0),
            size_limit: Some(500.0),
            value_limit: Some(100_000.0),
            stop_order: true,
        }
    }
}

/// Configuration of a simulated gateway. `Default` gives the demo setup: logged in and
/// authenticated, pacing on, no faults, 6-minute idle timeout, snapshot pre-flight on,
/// rule-based questions, seed 42, no OAuth (gateway mode).
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of every random choice (prices, ids, faults).
    pub seed: u64,
    /// Idle time after which the brokerage session times out (`authenticated: false`).
    pub idle_timeout: Duration,
    /// Whether the first snapshot of a contract in a brokerage session returns no field values.
    pub snapshot_preflight: bool,
    /// Whether IBKR's pacing limits answer 429.
    pub pacing: bool,
    /// Fault injection.
    pub faults: Faults,
    /// Order questions.
    pub questions: QuestionPolicy,
    /// Whether the simulator starts with the human SSO login done (`connected: true`).
    pub logged_in: bool,
    /// Whether the simulator starts with an open brokerage session (`authenticated: true`).
    pub authenticated: bool,
    /// OAuth 1.0a mode: `None` (the default) simulates the Client Portal Gateway; `Some`
    /// simulates `api.ibkr.com` for this consumer (see [`crate::oauth`]). In OAuth mode the
    /// SSO login is implied by a valid live session token and the simulator starts without a
    /// brokerage session, whatever [`SimConfig::logged_in`] and
    /// [`SimConfig::authenticated`] say.
    pub oauth: Option<SimOAuth>,
    /// The WebSocket's timing and quirks (heartbeat, ready gate, market-data interval and
    /// lifetime).
    pub ws: WsConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            idle_timeout: Duration::from_secs(6 * 60),
            snapshot_preflight: true,
            pacing: true,
            faults: Faults::default(),
            questions: QuestionPolicy::default(),
            logged_in: true,
            authenticated: true,
            oauth: None,
            ws: WsConfig::default(),
        }
    }
}

impl SimConfig {
    /// Sets [`SimConfig::seed`].
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets [`SimConfig::idle_timeout`].
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Sets [`SimConfig::snapshot_preflight`].
    pub fn with_snapshot_preflight(mut self, on: bool) -> Self {
        self.snapshot_preflight = on;
        self
    }

    /// Sets [`SimConfig::pacing`].
    pub fn with_pacing(mut self, on: bool) -> Self {
        self.pacing = on;
        self
    }

    /// Sets [`SimConfig::faults`].
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Sets [`SimConfig::questions`].
    pub fn with_questions(mut self, questions: QuestionPolicy) -> Self {
        self.questions = questions;
        self
    }

    /// Sets [`SimConfig::oauth`]: the simulator speaks IBKR's OAuth 1.0a side for this
    /// consumer.
    pub fn with_oauth(mut self, oauth: SimOAuth) -> Self {
        self.oauth = Some(oauth);
        self
    }

    /// Sets [`SimConfig::ws`].
    pub fn with_ws(mut self, ws: WsConfig) -> Self {
        self.ws = ws;
        self
    }

    /// Sets [`SimConfig::logged_in`] and [`SimConfig::authenticated`].
    pub fn with_session(mut self, logged_in: bool, authenticated: bool) -> Self {
        self.logged_in = logged_in;
        self.authenticated = authenticated && logged_in;
        self
    }
}
