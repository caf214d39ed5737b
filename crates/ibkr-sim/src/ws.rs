//! The streaming WebSocket of the Web API, `GET /v1/api/ws`, over the same listener as the REST
//! API (plain `ws://` or `wss://` with the self-signed certificate).
//!
//! What a client sees, in order:
//!
//! 1. **Admission** (before the upgrade). Gateway mode needs the SSO login (`connected`);
//!    without it the upgrade is refused with 401 `{"error":"not authenticated","statusCode":401}`,
//!    like REST. OAuth mode needs `?oauth_token=<access token>` and a live session token that
//!    has not expired; refusals are the OAuth 401 bodies (`invalid token`,
//!    `no live session token`, `live session token expired`), and a missing `User-Agent` is
//!    refused with 403. The handshake itself is never OAuth-signed.
//! 2. **Session cookie.** Gateway mode takes `Cookie: api={"session":"<id>"}` (the JSON form,
//!    raw or percent-encoded); OAuth mode takes `Cookie: api=<id>` (the plain form). `<id>` is
//!    the `session` field of `/tickle`. The other mode's form, or a wrong id, is refused with
//!    401. Without an `api` cookie the socket opens and says `{"message":"waiting for
//!    session"}`; the client then sends the text `{"session":"<id>"}` (a wrong id gets an
//!    `error` message and the socket closes).
//! 3. **Greeting and the ready gate.** `{"topic":"system","success":"<user>",...}` at once,
//!    then after [`WsConfig::ready_delay`] `act` (accounts) and `sts` (auth status), then the
//!    first heartbeat. The gate opens with an `sts` that says `authenticated: true`; until
//!    then every subscribe or unsubscribe message is dropped without an answer and counted
//!    ([`WsStats::dropped_before_ready`]); `tic` is answered. Without a brokerage session the
//!    `sts` says `authenticated: false` and the gate stays shut until a brokerage session opens
//!    (then a new `sts`). When the brokerage session is lost (idle timeout, competing session,
//!    logout, restart) an `sts` with `authenticated: false` goes out, every subscription of the
//!    socket ends (nothing is replayed later) and the gate shuts again.
//! 4. **Heartbeats**: `{"topic":"system","hb":<ms>}` every [`WsConfig::heartbeat`] (10 s).
//!    `tic` is answered with `{"topic":"tic","alive":true,"id":"<session>","lastAccessed":<ms>}`
//!    ([`WsConfig::tic_replies`] times, 1 by default). Sockets are never closed for idleness.
//! 5. **Topics** (see `conn` for the details): `sor` / `uor` live orders, `str` / `utr`
//!    executions, `spl` / `upl` P&L, `smd+<conid>+{"fields":[...]}` / `umd+<conid>+{}` market
//!    data, all driven by the simulator's own order book and prices. Other topics (`ssd`, `sld`,
//!    `smh`, `sbd`, ...) and anything unparsable are answered with
//!    `{"error":"Topic unknown <message>","code":1}`.
//!
//! Choices where IBKR's behaviour is not documented: the upgrade is logged in the request log
//! (`GET /ws`, status 101 or the refusal) but never paced or faulted, and it is not session
//! activity (it does not keep the brokerage session alive, and neither does `tic`). Orders and
//! executions of every account are streamed. Frames are text unless
//! [`WsConfig::binary_frames`] asks for binary ones (IBKR sends some JSON as binary); binary
//! client frames are read as UTF-8 text.
//!
//! Control: [`crate::SimControl::ws_stats`] / `GET /sim/ws` ([`WsStats`]) and
//! [`crate::SimControl::ws_drop`] / `POST /sim/ws/drop`, which closes every socket at once
//! without a close frame. A simulated restart or shutdown also cuts every socket.

mod conn;
pub(crate) mod feed;
mod protocol;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::log::RequestLogEntry;
use crate::oauth::OAuthRefusal;
use crate::oauth::verify::Now;
use crate::server::ConnCtl;
use crate::state::Sim;
pub(crate) use feed::Feed;

/// WebSocket timing and quirks. `Default` follows what IBKR's gateway was seen doing: a
/// heartbeat every 10 s, market data every 500 ms for 10 minutes, the ready frames 200 ms after
/// the login frame, subscriptions before them dropped, one `tic` reply, text frames.
#[derive(Debug, Clone, PartialEq)]
pub struct WsConfig {
    /// Interval of the `{"topic":"system","hb":<ms>}` heartbeats.
    pub heartbeat: Duration,
    /// Time between the `system` login frame and the `act` and `sts` frames that open the
    /// ready gate.
    pub ready_delay: Duration,
    /// Whether subscribe and unsubscribe messages sent before the ready gate opens are dropped
    /// (IBKR's quirk); when `false` they are kept and handled once the gate opens.
    pub drop_before_ready: bool,
    /// How often market data (`smd`) and P&L (`spl`) changes are pushed, and how often the
    /// socket looks at the session state.
    pub update_interval: Duration,
    /// How long an `smd` stream lasts unless the client sends the same `smd` again.
    pub smd_lifetime: Duration,
    /// How many identical replies each `tic` gets (one live gateway was seen sending four).
    pub tic_replies: u32,
    /// Send every JSON message as a binary frame instead of a text frame.
    pub binary_frames: bool,
    /// While anything is streamed, step the market every `update_interval` (prices move and
    /// working orders fill without REST requests, as a real market does). Off: prices move only
    /// on REST requests and `SimControl::set_price`, so a test can expect exact values.
    pub market_clock: bool,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(10),
            ready_delay: Duration::from_millis(200),
            drop_before_ready: true,
            update_interval: Duration::from_millis(500),
            smd_lifetime: Duration::from_secs(10 * 60),
            tic_replies: 1,
            binary_frames: false,
            market_clock: true,
        }
    }
}

/// WebSocket counters since start ([`crate::SimControl::ws_stats`], `GET /sim/ws`).
///
/// Subscription keys are `sor`, `str`, `spl` and `smd+<conid>`. A key counts once per socket
/// that holds it: a socket that sends the same `smd` twice holds one subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WsStats {
    /// Sockets open now.
    pub connections_open: u64,
    /// Sockets opened since start.
    pub connections_total: u64,
    /// Upgrade requests refused (not logged in, bad cookie, OAuth refusals).
    pub refused: u64,
    /// Subscriptions active now, by key (keys at zero are removed).
    pub active: BTreeMap<String, u64>,
    /// Subscribe messages accepted, by key (a repeated `smd` counts again).
    pub subscribes: BTreeMap<String, u64>,
    /// Unsubscribe messages accepted, by key (also when nothing was subscribed).
    pub unsubscribes: BTreeMap<String, u64>,
    /// Messages sent, by topic (`system`, `act`, `sts`, `tic`, `sor`, `str`, `spl`,
    /// `smd+<conid>`; `message` for the topic-less session prompt, `error` for errors).
    pub sent: BTreeMap<String, u64>,
    /// Subscribe or unsubscribe messages dropped because the ready gate was shut.
    pub dropped_before_ready: u64,
    /// `smd` streams ended by their lifetime.
    pub smd_expired: u64,
    /// `tic` messages received.
    pub tics: u64,
    /// Messages answered with an `error` (unknown topic, bad arguments, wrong session).
    pub errors: u64,
    /// Sockets closed by [`crate::SimControl::ws_drop`].
    pub dropped_sockets: u64,
}

/// The WebSocket side of a simulator: configuration, counters, the feed of order events and
/// the token that cuts every socket.
#[derive(Debug)]
pub(crate) struct Hub {
    pub config: WsConfig,
    pub feed: Feed,
    stats: Mutex<WsStats>,
    cut: Mutex<CancellationToken>,
    /// When a socket last stepped the market (one clock for all sockets).
    market_clock: Mutex<Option<std::time::Instant>>,
}

impl Hub {
    /// Whether the market is due for a step (at most one per `update_interval`, however many
    /// sockets stream): while anything is streamed, prices move and working orders fill
    /// without REST requests, as a real market does.
    pub(crate) fn market_due(&self) -> bool {
        if !self.config.market_clock {
            return false;
        }
        let mut last = self.market_clock.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let step = self.config.update_interval.mul_f64(0.9);
        if last.is_some_and(|t| now.duration_since(t) < step) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// A hub for `config` that hears the state's `feed`.
    pub(crate) fn new(config: WsConfig, feed: Feed) -> Self {
        Self {
            config,
            feed,
            stats: Mutex::new(WsStats::default()),
            cut: Mutex::new(CancellationToken::new()),
            market_clock: Mutex::new(None),
        }
    }

    /// Locks the counters (never held across an `.await`).
    pub(crate) fn stats(&self) -> MutexGuard<'_, WsStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token that [`Hub::drop_all`] cancels next.
    fn cut_token(&self) -> CancellationToken {
        self.cut.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Closes every open socket at once (no close frame); later sockets are not affected.
    pub(crate) fn drop_all(&self) -> u64 {
        let old = std::mem::replace(
            &mut *self.cut.lock().unwrap_or_else(|e| e.into_inner()),
            CancellationToken::new(),
        );
        old.cancel();
        self.stats().connections_open
    }
}

/// Counts `map[key]` up or down by one, removing the key when it reaches zero.
pub(crate) fn bump(map: &mut BTreeMap<String, u64>, key: &str, up: bool) {
    let v = map.entry(key.to_string()).or_default();
    if up {
        *v += 1;
    } else {
        *v = v.saturating_sub(1);
        if *v == 0 {
            map.remove(key);
        }
    }
}

/// How an upgrade request is let in.
#[derive(Debug, Clone, PartialEq)]
enum Admission {
    /// The cookie named the session: greet at once.
    Session,
    /// No cookie: ask for the session in-band.
    AwaitSession,
    /// Refused with this status and body, and this log outcome.
    Refused(u16, Value, String),
}

/// The `/v1/api/ws` route (outside the REST middleware: no pacing, faults or OAuth signature).
pub(crate) fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/v1/api/ws", get(upgrade))
        .with_state(sim)
}

async fn upgrade(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    let (mut parts, _body) = req.into_parts();
    let ctl = parts.extensions.get::<ConnCtl>().cloned();
    let query = parts.uri.query().map(str::to_string);
    let seq = sim.lock().log.record(RequestLogEntry {
        seq: 0,
        at_ms: chrono::Utc::now().timestamp_millis(),
        method: "GET".into(),
        path: "/ws".into(),
        query: query.clone(),
        template: Some("/ws".into()),
        status: 0,
        outcome: "ok".into(),
    });
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(rejection) => {
            let resp = rejection.into_response();
            sim.lock()
                .log
                .finish(seq, resp.status().as_u16(), "ws_not_upgrade");
            return resp;
        }
    };
    let admission = admit(&sim, &parts.headers, query.as_deref());
    if let Admission::Refused(status, body, outcome) = admission {
        sim.lock().log.finish(seq, status, &outcome);
        sim.hub.stats().refused += 1;
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
        return (code, axum::Json(body)).into_response();
    }
    sim.lock().log.finish(seq, 101, "ws");
    let await_session = admission == Admission::AwaitSession;
    let conn_token = ctl.map(|c| c.0).unwrap_or_default();
    let cut = sim.hub.cut_token();
    ws.on_upgrade(move |socket| conn::run(sim, socket, await_session, conn_token, cut))
}

/// Decides whether an upgrade request may open a socket (see the module docs).
fn admit(sim: &Sim, headers: &HeaderMap, query: Option<&str>) -> Admission {
    let cookie = api_cookie(headers);
    let mut st = sim.lock();
    st.session.expire_if_idle(std::time::Instant::now());
    let session = st.session.sso_session.clone();
    if let Some(cfg) = &sim.oauth {
        let token = query.and_then(|q| query_param(q, "oauth_token"));
        if token.as_deref() != Some(cfg.access_token()) {
            return oauth_refusal(OAuthRefusal::InvalidToken);
        }
        if let Err(r) = st.oauth.token_valid(Now::wall()) {
            return oauth_refusal(r);
        }
        if !headers.contains_key(header::USER_AGENT) {
            return Admission::Refused(
                403,
                json!({ "error": "Forbidden: a User-Agent header is required", "statusCode": 403 }),
                "ws_no_user_agent".into(),
            );
        }
        return match cookie {
            None => Admission::AwaitSession,
            Some(c) if c == session => Admission::Session,
            Some(_) => bad_session(),
        };
    }
    if !st.session.logged_in {
        return Admission::Refused(
            401,
            json!({ "error": "not authenticated", "statusCode": 401 }),
            "unauthorized".into(),
        );
    }
    match cookie {
        None => Admission::AwaitSession,
        Some(c) => match protocol::session_of(&c) {
            Some(id) if id == session => Admission::Session,
            _ => bad_session(),
        },
    }
}

fn oauth_refusal(r: OAuthRefusal) -> Admission {
    Admission::Refused(r.status(), r.body(), format!("oauth:{}", r.reason()))
}

fn bad_session() -> Admission {
    Admission::Refused(
        401,
        json!({ "error": "invalid session", "statusCode": 401 }),
        "ws_bad_session".into(),
    )
}

/// The value of the `api` cookie, percent-decoded.
fn api_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == "api")
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(v.trim())
                .decode_utf8_lossy()
                .into_owned()
        })
}

/// A query parameter, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn api_cookie_is_found_among_others_and_decoded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; api=%7B%22session%22%3A%22ab%22%7D; y=2"),
        );
        assert_eq!(api_cookie(&h).as_deref(), Some(r#"{"session":"ab"}"#));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("api=0123abcd"));
        assert_eq!(api_cookie(&h).as_deref(), Some("0123abcd"));
        assert_eq!(api_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn query_param_is_decoded() {
        assert_eq!(
            query_param("a=1&oauth_token=t%2Bk", "oauth_token").as_deref(),
            Some("t+k")
        );
        assert_eq!(query_param("a=1", "oauth_token"), None);
    }

    #[test]
    fn bump_removes_keys_at_zero() {
        let mut m = BTreeMap::new();
        bump(&mut m, "sor", true);
        bump(&mut m, "sor", true);
        bump(&mut m, "sor", false);
        assert_eq!(m.get("sor"), Some(&1));
        bump(&mut m, "sor", false);
        assert!(m.is_empty());
        bump(&mut m, "sor", false);
        assert!(m.is_empty());
    }
}
