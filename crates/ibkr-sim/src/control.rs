//! Test control of a running simulator: [`SimControl`] (in-process, no HTTP) and the same
//! operations as JSON over HTTP under `/sim/` (outside `/v1/api`, never paced, logged or
//! faulted), so that tests in any language can read state and the request log, set faults,
//! drive the session, choose the order questions, switch pacing and trigger restarts.
//!
//! Routes (JSON bodies; every answer is JSON):
//! - `GET /sim/state` → [`SimState`]
//! - `GET /sim/requests` → `{"entries": [RequestLogEntry], "counters": Counters}`;
//!   `DELETE /sim/requests` clears both
//! - `GET|PUT /sim/faults` ([`Faults`]); `POST /sim/faults/drop-after-accept` arms the trap
//! - `POST /sim/session/expire`, `POST /sim/session/logout`,
//!   `POST /sim/session/login` (`{"authenticated": bool}`, default false),
//!   `PUT /sim/session/competing` (`{"competing": bool}`),
//!   `PUT /sim/session/idle-timeout` (`{"ms": n}`)
//! - `PUT /sim/questions` ([`QuestionPolicy`], e.g. `{"mode": "chain", "message_ids": ["o163"]}`)
//! - `PUT /sim/pacing` (`{"enabled": bool}`), `POST /sim/pacing/reset`
//! - `PUT /sim/snapshot-preflight` (`{"enabled": bool}`)
//! - `GET|PUT /sim/market/{conid}` (`{"price": x}` sets the last price)
//! - `POST /sim/restart` (`{"down_ms": n}`): answers at once; the listener goes down about
//!   100 ms later for `down_ms`.
//! - OAuth mode: `GET /sim/oauth/stats` → [`OAuthStats`]; `POST /sim/oauth/expire` expires the
//!   current live session token now (`{"ok": true, "expired": bool}`). Both answer 404
//!   `{"error": "OAuth is not configured"}` in gateway mode.
//! - `GET /sim/ws` → [`WsStats`]; `POST /sim/ws/drop` closes every open WebSocket at once,
//!   without a close frame (`{"ok": true, "dropped": n}`).
//! - `GET /sim` (HTML): the login page of the demo (`serve --demo` names it as the page where a
//!   person logs in); its button (`POST /sim/login`) logs the gateway in with an open brokerage
//!   session.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::oneshot;

use crate::config::{Faults, QuestionPolicy};
use crate::log::{Counters, RequestLogEntry};
use crate::oauth::OAuthStats;
use crate::oauth::verify::Now;
use crate::state::accounts::Side;
use crate::state::{RestartCmd, Sim};
use crate::ws::WsStats;

/// Session state as the control API reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The SSO login (`connected`).
    pub logged_in: bool,
    /// The brokerage session is open and not taken over (`authenticated`).
    pub authenticated: bool,
    /// Another session competes for the brokerage session.
    pub competing: bool,
    /// `/iserver/accounts` was called in this brokerage session.
    pub accounts_queried: bool,
    /// Suppressed question ids.
    pub suppressed: Vec<String>,
    /// Conids with a market-data subscription.
    pub subscriptions: Vec<i64>,
    /// Brokerage sessions opened since start.
    pub generation: u64,
    /// Times the brokerage session timed out.
    pub idle_expiries: u64,
    /// Simulated restarts.
    pub restarts: u64,
    /// Idle timeout in milliseconds.
    pub idle_timeout_ms: u64,
    /// Questions waiting for a reply.
    pub pending_questions: usize,
    /// Account selected with `/iserver/account`.
    pub selected_account: String,
}

/// A position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionInfo {
    /// Contract id.
    pub conid: i64,
    /// Symbol or description.
    pub symbol: String,
    /// Signed quantity.
    pub quantity: f64,
    /// Average price per unit.
    pub avg_price: f64,
    /// Realized P&L on this position since start.
    pub realized_pnl: f64,
}

/// An account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountInfo {
    /// Account id (`DU…`).
    pub id: String,
    /// Cash per currency.
    pub cash: BTreeMap<String, f64>,
    /// Open positions.
    pub positions: Vec<PositionInfo>,
    /// Net liquidation value in USD at current prices.
    pub net_liquidation: f64,
}

/// An order ever accepted (booked) by the simulator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderInfo {
    /// Order id.
    pub order_id: i64,
    /// Account.
    pub account: String,
    /// Contract id (the spread template 28812380 for combos).
    pub conid: i64,
    /// The conid as text, or a combo's `28812380;;;{conid}/{ratio},...`.
    #[serde(default)]
    pub conidex: String,
    /// `BUY` or `SELL`.
    pub side: String,
    /// `MARKET`, `LIMIT`, `STOP`, `STOP_LIMIT`, `MIDPRICE`, `TRAIL`, `MARKETONCLOSE` or
    /// `LIMITONCLOSE`.
    pub order_type: String,
    /// Ordered quantity.
    pub quantity: f64,
    /// Limit (or stop) price.
    pub price: Option<f64>,
    /// Stop price of stop-limit orders.
    pub aux_price: Option<f64>,
    /// Current stop of a trailing stop (it follows the market until triggered).
    #[serde(default)]
    pub stop_price: Option<f64>,
    /// Trailing distance of a trailing stop.
    #[serde(default)]
    pub trailing_amount: Option<f64>,
    /// `amt` or `%` for trailing stops.
    #[serde(default)]
    pub trailing_type: Option<String>,
    /// Part of a one-cancels-all group (`isSingleGroup`).
    #[serde(default)]
    pub single_group: bool,
    /// Time in force.
    pub tif: String,
    /// Client order id.
    pub coid: Option<String>,
    /// `PreSubmitted`, `Submitted`, `Filled` or `Cancelled`.
    pub status: String,
    /// Filled quantity.
    pub filled: f64,
    /// Average fill price (0 when unfilled).
    pub avg_fill_price: f64,
    /// Parent order id of bracket children.
    pub parent_id: Option<i64>,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// Question ids confirmed before the order was booked.
    pub confirmed_questions: Vec<String>,
}

/// An execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionInfo {
    /// Execution id.
    pub execution_id: String,
    /// Order id.
    pub order_id: i64,
    /// Account.
    pub account: String,
    /// Contract id.
    pub conid: i64,
    /// `BUY` or `SELL`.
    pub side: String,
    /// Quantity.
    pub quantity: f64,
    /// Price.
    pub price: f64,
    /// Commission.
    pub commission: f64,
}

/// Everything a test usually wants to assert on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimState {
    /// Session.
    pub session: SessionInfo,
    /// Accounts with cash and positions.
    pub accounts: Vec<AccountInfo>,
    /// Every order ever booked, by id.
    pub orders: Vec<OrderInfo>,
    /// Every execution.
    pub executions: Vec<ExecutionInfo>,
    /// Request counters.
    pub counters: Counters,
    /// Market steps taken (one per handled `/v1/api` request).
    pub market_steps: u64,
    /// Questions asked so far.
    pub questions_asked: u64,
    /// Whether pacing is on.
    pub pacing: bool,
    /// Current faults.
    pub faults: Faults,
    /// Whether drop-after-accept is armed.
    pub drop_after_accept_armed: bool,
    /// OAuth counters (`None` in gateway mode).
    #[serde(default)]
    pub oauth: Option<OAuthStats>,
}

/// In-process control of a running simulator. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SimControl {
    sim: Arc<Sim>,
}

impl SimControl {
    pub(crate) fn new(sim: Arc<Sim>) -> Self {
        Self { sim }
    }

    /// A snapshot of the session, accounts, order book, executions and counters.
    pub fn state(&self) -> SimState {
        let sim = &self.sim;
        let mut st = sim.lock();
        st.session.expire_if_idle(std::time::Instant::now());
        let s = &st.session;
        let session = SessionInfo {
            logged_in: s.logged_in,
            authenticated: s.authenticated(),
            competing: s.competing,
            accounts_queried: s.accounts_queried,
            suppressed: s.suppressed.iter().cloned().collect(),
            subscriptions: s.subscriptions.keys().copied().collect(),
            generation: s.generation,
            idle_expiries: s.idle_expiries,
            restarts: st.restarts,
            idle_timeout_ms: s.idle_timeout.as_millis() as u64,
            pending_questions: st.orders.pending_count(),
            selected_account: s.selected_account.clone(),
        };
        let accounts = st
            .accounts
            .values()
            .map(|a| AccountInfo {
                id: a.id.clone(),
                cash: a.cash.clone(),
                positions: a
                    .positions
                    .values()
                    .map(|p| PositionInfo {
                        conid: p.conid,
                        symbol: sim
                            .universe
                            .get(p.conid)
                            .map(|c| c.description())
                            .unwrap_or_default(),
                        quantity: p.qty,
                        avg_price: p.avg_price,
                        realized_pnl: p.realized,
                    })
                    .collect(),
                net_liquidation: a.value(&sim.universe, &st.market).nlv,
            })
            .collect();
        let orders = st
            .orders
            .book
            .values()
            .map(|o| OrderInfo {
                order_id: o.id,
                account: o.req.account.clone(),
                conid: o.req.conid,
                conidex: o.req.conidex(),
                side: o.req.side.as_str().into(),
                order_type: o.req.order_type.upper_name().into(),
                quantity: o.req.qty,
                price: o.req.price,
                aux_price: o.req.aux,
                stop_price: o.stop,
                trailing_amount: o.req.trailing.map(|t| t.amount),
                trailing_type: o.req.trailing.map(|t| t.type_name().to_string()),
                single_group: o.req.single_group,
                tif: o.req.tif.clone(),
                coid: o.req.coid.clone(),
                status: o.status.as_str().into(),
                filled: o.filled,
                avg_fill_price: o.avg_fill,
                parent_id: o.parent,
                created_ms: o.created_ms,
                confirmed_questions: o.confirmed_questions.clone(),
            })
            .collect();
        let executions = st
            .orders
            .executions
            .iter()
            .map(|e| ExecutionInfo {
                execution_id: e.exec_id.clone(),
                order_id: e.order_id,
                account: e.account.clone(),
                conid: e.conid,
                side: if e.side == Side::Buy {
                    "BUY".into()
                } else {
                    "SELL".into()
                },
                quantity: e.qty,
                price: e.price,
                commission: e.commission,
            })
            .collect();
        SimState {
            session,
            accounts,
            orders,
            executions,
            counters: st.log.counters.clone(),
            market_steps: st.market.steps(),
            questions_asked: st.orders.questions_asked,
            pacing: st.pacer.enabled,
            faults: st.faults.config.clone(),
            drop_after_accept_armed: st.faults.drop_after_accept,
            oauth: sim.oauth.as_ref().map(|_| st.oauth.stats(Now::wall())),
        }
    }

    /// OAuth counters: tokens issued, accepted signed requests, refusals by reason and the
    /// current token's times. `None` in gateway mode.
    pub fn oauth_stats(&self) -> Option<OAuthStats> {
        let sim = &self.sim;
        sim.oauth
            .as_ref()
            .map(|_| sim.lock().oauth.stats(Now::wall()))
    }

    /// Expires the current live session token now: the next signed request is refused with
    /// `expired_token` until the client gets a new token. Returns `false` in gateway mode or
    /// when no token has been issued.
    pub fn oauth_expire(&self) -> bool {
        self.sim.oauth.is_some() && self.sim.lock().oauth.expire_now(Now::wall())
    }

    /// WebSocket counters: open sockets, active subscriptions per key, messages sent per
    /// topic, subscriptions dropped before the ready gate, and more (see [`WsStats`]).
    pub fn ws_stats(&self) -> WsStats {
        self.sim.hub.stats().clone()
    }

    /// Closes every open WebSocket at once, without a close frame (a fault: the client sees
    /// the connection end). Returns how many sockets were open.
    pub fn ws_drop(&self) -> u64 {
        self.sim.hub.drop_all()
    }

    /// The request log (oldest first).
    pub fn requests(&self) -> Vec<RequestLogEntry> {
        self.sim.lock().log.entries.iter().cloned().collect()
    }

    /// Request counters.
    pub fn counters(&self) -> Counters {
        self.sim.lock().log.counters.clone()
    }

    /// Clears the request log and counters.
    pub fn clear_requests(&self) {
        self.sim.lock().log.clear();
    }

    /// Replaces the fault configuration.
    pub fn set_faults(&self, faults: Faults) {
        self.sim.lock().faults.config = faults;
    }

    /// The current fault configuration.
    pub fn faults(&self) -> Faults {
        self.sim.lock().faults.config.clone()
    }

    /// Arms the one-shot trap: the next order placement, reply or modification that books an
    /// order is applied, then its connection is closed without a response.
    pub fn arm_drop_after_accept(&self) {
        self.sim.lock().faults.drop_after_accept = true;
    }

    /// Ends the brokerage session now, as an idle timeout would.
    pub fn expire_session(&self) {
        let mut st = self.sim.lock();
        if st.session.brokerage {
            st.session.idle_expiries += 1;
        }
        st.lose_brokerage();
    }

    /// Sets or clears a competing session. While competing, `/iserver/*` answers 401 and only
    /// `ssodh/init` with `compete: true` takes the session back.
    pub fn set_competing(&self, competing: bool) {
        let mut st = self.sim.lock();
        st.session.competing = competing;
        if competing {
            st.orders.clear_pending();
        }
    }

    /// The human login step: `connected: true` again; with `authenticated` also opens a
    /// brokerage session (otherwise the client must call `ssodh/init`).
    pub fn login(&self, authenticated: bool) {
        let mut st = self.sim.lock();
        st.session.logged_in = true;
        st.session.competing = false;
        st.session.last_activity = std::time::Instant::now();
        if authenticated {
            st.open_brokerage();
        }
    }

    /// Logs out (as `/logout` does): everything answers 401 until [`SimControl::login`].
    pub fn logout(&self) {
        let mut st = self.sim.lock();
        st.lose_brokerage();
        st.session.logged_in = false;
        st.session.competing = false;
    }

    /// Changes the idle timeout of the brokerage session.
    pub fn set_idle_timeout(&self, timeout: Duration) {
        self.sim.lock().session.idle_timeout = timeout;
    }

    /// Chooses which questions orders get.
    pub fn set_question_policy(&self, policy: QuestionPolicy) {
        self.sim.lock().orders.policy = policy;
    }

    /// Switches pacing on or off.
    pub fn set_pacing(&self, enabled: bool) {
        self.sim.lock().pacer.enabled = enabled;
    }

    /// Forgets all pacing windows.
    pub fn reset_pacing(&self) {
        self.sim.lock().pacer.reset();
    }

    /// Switches the snapshot pre-flight on or off.
    pub fn set_snapshot_preflight(&self, enabled: bool) {
        self.sim.lock().snapshot_preflight = enabled;
    }

    /// Sets the last price of a stock, ETF, index or FX pair (derivatives follow their
    /// underlying); then fills whatever the new price makes marketable. Returns `false` for
    /// contracts that are not walk-priced.
    pub fn set_price(&self, conid: i64, price: f64) -> bool {
        let mut st = self.sim.lock();
        let ok = st.market.set_price(conid, price);
        if ok {
            st.process_working(&self.sim.universe);
        }
        ok
    }

    /// Last price of a contract.
    pub fn price(&self, conid: i64) -> Option<f64> {
        self.sim.lock().market.last(&self.sim.universe, conid)
    }

    /// Takes the listener down for `down_for` (connections refused, open connections closed,
    /// brokerage session lost; the SSO login survives). Returns once the listener is closed.
    pub async fn restart(&self, down_for: Duration) {
        let (tx, rx) = oneshot::channel();
        if self
            .sim
            .restart_tx
            .send(RestartCmd {
                down_for,
                done: Some(tx),
            })
            .is_ok()
        {
            let _ = rx.await;
        }
    }
}

#[derive(Deserialize)]
struct Enabled {
    enabled: bool,
}

#[derive(Deserialize)]
struct Competing {
    competing: bool,
}

#[derive(Deserialize)]
struct Millis {
    ms: u64,
}

#[derive(Deserialize, Default)]
struct Login {
    #[serde(default)]
    authenticated: bool,
}

#[derive(Deserialize)]
struct Restart {
    down_ms: u64,
}

#[derive(Deserialize)]
struct Price {
    price: f64,
}

fn done() -> Response {
    axum::Json(json!({ "ok": true })).into_response()
}

fn oauth_off() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({ "error": "OAuth is not configured" })),
    )
        .into_response()
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "error": format!("invalid body: {e}") })),
            )
                .into_response(),
        )
    })
}

/// The login page a person opens in the browser (like the real gateway's, without a password):
/// it says whether the simulated gateway is logged in, and one button logs it in.
fn login_page(c: &SimControl, just_logged_in: bool) -> Response {
    let s = c.state().session;
    let status = if just_logged_in {
        "Logged in. The brokerage session is open: go back to your assistant and try again."
    } else if s.authenticated {
        "The simulated gateway is logged in and its brokerage session is open."
    } else if s.logged_in {
        "Logged in, but the brokerage session is closed (the MCP server re-opens it)."
    } else {
        "Nobody is logged in."
    };
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ibkr-sim login</title></head>\
         <body><h1>IBKR gateway simulator</h1><p>{status}</p>\
         <p>This is the demo's stand-in for the Client Portal Gateway's login page: paper \
         accounts and made-up prices, no IBKR account, no password.</p>\
         <form method=\"post\" action=\"/sim/login\"><button type=\"submit\">Log in</button></form>\
         </body></html>"
    );
    (
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

/// The `/sim` router.
pub(crate) fn router(sim: Arc<Sim>) -> Router {
    let c = SimControl::new(sim);
    Router::new()
        .route("/sim", get(|State(c): State<SimControl>| async move { login_page(&c, false) }))
        .route("/sim/", get(|State(c): State<SimControl>| async move { login_page(&c, false) }))
        .route(
            "/sim/login",
            post(|State(c): State<SimControl>| async move {
                c.login(true);
                login_page(&c, true)
            }),
        )
        .route("/sim/state", get(|State(c): State<SimControl>| async move { axum::Json(c.state()) }))
        .route(
            "/sim/requests",
            get(|State(c): State<SimControl>| async move {
                axum::Json(json!({ "entries": c.requests(), "counters": c.counters() }))
            })
            .delete(|State(c): State<SimControl>| async move {
                c.clear_requests();
                done()
            }),
        )
        .route(
            "/sim/faults",
            get(|State(c): State<SimControl>| async move { axum::Json(c.faults()) }).put(
                |State(c): State<SimControl>, body: axum::body::Bytes| async move {
                    match parse::<Faults>(&body) {
                        Ok(f) => {
                            c.set_faults(f);
                            done()
                        }
                        Err(e) => *e,
                    }
                },
            ),
        )
        .route(
            "/sim/faults/drop-after-accept",
            post(|State(c): State<SimControl>| async move {
                c.arm_drop_after_accept();
                done()
            }),
        )
        .route(
            "/sim/session/expire",
            post(|State(c): State<SimControl>| async move {
                c.expire_session();
                done()
            }),
        )
        .route(
            "/sim/session/logout",
            post(|State(c): State<SimControl>| async move {
                c.logout();
                done()
            }),
        )
        .route(
            "/sim/session/login",
            post(|State(c): State<SimControl>, body: axum::body::Bytes| async move {
                let login = if body.is_empty() { Ok(Login::default()) } else { parse::<Login>(&body) };
                match login {
                    Ok(l) => {
                        c.login(l.authenticated);
                        done()
                    }
                    Err(e) => *e,
                }
            }),
        )
        .route(
            "/sim/session/competing",
            put(|State(c): State<SimControl>, body: axum::body::Bytes| async move {
                match parse::<Competing>(&body) {
                    Ok(v) => {
                        c.set_competing(v.competing);
                        done()
                    }
                    Err(e) => *e,
                }
            }),
        )
        .route(
            "/sim/session/idle-timeout",
            put(|State(c): State<SimControl>, body: axum::body::Bytes| async move {
                match parse::<Millis>(&body) {
                    Ok(v) => {
                        c.set_idle_timeout(Duration::from_millis(v.ms));
                        done()
                    }
                    Err(e) => *e,
                }
            }),
        )
        .route(
            "/sim/questions",
            put(|State(c): State<SimControl>, body: axum::body::Bytes| async move {
                match parse::<QuestionPolicy>(&body) {
                    Ok(p) => {
                        c.set_question_policy(p);
                        done()
                    }
                    Err(e) => *e,
                }
            }),
        )
        .route(
            "/sim/pacing",
            put(|State(c): State<SimControl>, body: axum::body::Bytes| async move {
                match parse::<Enabled>(&body) {
                    Ok(v) => {
                        c.set_pacing(v.enabled);
                        done()
                    }
                    Err(e) => *e,
                }
            }),
        )
        .route(
            "/sim/pacing/reset",
            post(|State(c): State<SimControl>| async move {
                c.reset_pacing();
                done()
            }),
        )
        .route(
            "/sim/snapshot-preflight",
            put(|State(c): State<SimControl>, body: axum::body::Bytes| async move {
                match parse::<Enabled>(&body) {
                    Ok(v) => {
                        c.set_snapshot_preflight(v.enabled);
                        done()
                    }
                    Err(e) => *e,
                }
            }),
        )
        .route(
            "/sim/market/{conid}",
            get(|State(c): State<SimControl>, Path(conid): Path<i64>| async move {
                match c.price(conid) {
                    Some(p) => axum::Json(json!({ "conid": conid, "price": p })).into_response(),
                    None => (StatusCode::NOT_FOUND, axum::Json(json!({ "error": "unknown conid" }))).into_response(),
                }
            })
            .put(|State(c): State<SimControl>, Path(conid): Path<i64>, body: axum::body::Bytes| async move {
                match parse::<Price>(&body) {
                    Ok(p) if c.set_price(conid, p.price) => done(),
                    Ok(_) => (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": "not a walk-priced contract or bad price" }))).into_response(),
                    Err(e) => *e,
                }
            }),
        )
        .route(
            "/sim/oauth/stats",
            get(|State(c): State<SimControl>| async move {
                match c.oauth_stats() {
                    Some(stats) => axum::Json(stats).into_response(),
                    None => oauth_off(),
                }
            }),
        )
        .route(
            "/sim/oauth/expire",
            post(|State(c): State<SimControl>| async move {
                if c.oauth_stats().is_none() {
                    return oauth_off();
                }
                let expired = c.oauth_expire();
                axum::Json(json!({ "ok": true, "expired": expired })).into_response()
            }),
        )
        .route("/sim/ws", get(|State(c): State<SimControl>| async move { axum::Json(c.ws_stats()) }))
        .route(
            "/sim/ws/drop",
            post(|State(c): State<SimControl>| async move {
                let dropped = c.ws_drop();
                axum::Json(json!({ "ok": true, "dropped": dropped })).into_response()
            }),
        )
        .route(
            "/sim/restart",
            post(|State(c): State<SimControl>, body: axum::body::Bytes| async move {
                match parse::<Restart>(&body) {
                    Ok(r) => {
                        let down = Duration::from_millis(r.down_ms);
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            c.restart(down).await;
                        });
                        let mut resp = done();
                        resp.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
                        resp
                    }
                    Err(e) => *e,
                }
            }),
        )
        .with_state(c)
}
