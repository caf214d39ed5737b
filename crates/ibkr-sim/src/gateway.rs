//! The simulated Client Portal Gateway REST API under `/v1/api`: the route table, the request
//! plumbing shared by every handler, and the middleware that applies, in this order, request
//! logging, added latency, dropped-connection and 5xx faults, the OAuth signature check (OAuth
//! mode only, 401), pacing (429), the idle timeout, one market step, the session checks (401
//! in gateway mode, 400 "no bridge" in OAuth mode), the handler, and garbage bodies.
//!
//! Handlers are plain functions `fn(&Sim, &Req) -> Reply` grouped by API area in the
//! submodules; they lock the state once and never await. The OAuth token request is the one
//! async handler (`oauth::live_session_token`), because it reads headers and does its
//! cryptography off the async threads.

mod accounts;
mod alerts;
mod contracts;
mod fyi;
pub(crate) mod marketdata;
mod oauth;
pub(crate) mod orders;
mod portfolio;
mod scanner;
pub(crate) mod session;
mod watchlists;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde_json::{Value, json};

use crate::faults::Before;
use crate::log::RequestLogEntry;
use crate::oauth::LIVE_SESSION_TOKEN_PATH;
use crate::server::ConnCtl;
use crate::state::Sim;

/// A parsed API request.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub params: HashMap<String, String>,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Req {
    /// A path parameter (empty when absent).
    pub(crate) fn param(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or("")
    }

    /// A query parameter (first occurrence, case-sensitive name).
    pub(crate) fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A body field.
    pub(crate) fn field(&self, name: &str) -> Option<&Value> {
        self.body.as_ref().and_then(|b| b.get(name))
    }
}

/// What a handler answers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    /// A JSON body with this status.
    Json(u16, Value),
    /// The request was handled (an order was booked); close the connection without a response.
    DropAfterAccept,
}

/// 200 with a JSON body.
pub(crate) fn ok(v: Value) -> Reply {
    Reply::Json(200, v)
}

/// An error status with the gateway's `{"error", "statusCode"}` body.
pub(crate) fn err(status: u16, msg: impl Into<String>) -> Reply {
    Reply::Json(status, json!({ "error": msg.into(), "statusCode": status }))
}

type HandlerFn = fn(&Sim, &Req) -> Reply;
type BoxedResponse = Pin<Box<dyn Future<Output = Response> + Send>>;

/// Sequence number of the logged request, for handlers that finish it themselves.
#[derive(Debug, Clone, Copy)]
struct Seq(u64);

fn json_response(status: u16, v: &Value) -> Response {
    let mut resp = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Closes the request's connection without a response (never returns while a connection
/// exists).
async fn drop_connection(ctl: Option<ConnCtl>) -> Response {
    match ctl {
        Some(c) => {
            c.0.cancel();
            std::future::pending::<Response>().await
        }
        None => json_response(
            500,
            &json!({ "error": "connection dropped", "statusCode": 500 }),
        ),
    }
}

fn h(
    f: HandlerFn,
) -> impl Fn(State<Arc<Sim>>, Request) -> BoxedResponse + Clone + Send + Sync + 'static {
    move |State(sim): State<Arc<Sim>>, req: Request| Box::pin(run(sim, req, f))
}

async fn run(sim: Arc<Sim>, req: Request, f: HandlerFn) -> Response {
    let (mut parts, body) = req.into_parts();
    use axum::extract::FromRequestParts;
    let params: HashMap<String, String> = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .map(|p| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let query: Vec<(String, String)> =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|q| q.0)
            .unwrap_or_default();
    let bytes = match axum::body::to_bytes(body, 4 << 20).await {
        Ok(b) => b,
        Err(_) => {
            return json_response(
                400,
                &json!({ "error": "Bad Request: unreadable body", "statusCode": 400 }),
            );
        }
    };
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => Some(v),
            Err(_) => {
                return json_response(
                    400,
                    &json!({ "error": "Bad Request: the body is not valid JSON", "statusCode": 400 }),
                );
            }
        }
    };
    let r = Req {
        params,
        query,
        body,
    };
    match f(&sim, &r) {
        Reply::Json(status, v) => json_response(status, &v),
        Reply::DropAfterAccept => {
            if let Some(Seq(seq)) = parts.extensions.get::<Seq>() {
                sim.lock().log.finish(*seq, 0, "dropped_after_accept");
            }
            drop_connection(parts.extensions.get::<ConnCtl>().cloned()).await
        }
    }
}

/// The `/v1/api` router.
pub(crate) fn router(sim: Arc<Sim>) -> Router {
    let api = Router::new()
        // OAuth mode's token request (a 404 in gateway mode)
        .route(LIVE_SESSION_TOKEN_PATH, post(oauth::live_session_token))
        // session
        .route(
            "/iserver/auth/status",
            post(h(session::auth_status)).get(h(session::auth_status)),
        )
        .route("/tickle", post(h(session::tickle)).get(h(session::tickle)))
        .route("/sso/validate", get(h(session::sso_validate)))
        .route("/iserver/auth/ssodh/init", post(h(session::ssodh_init)))
        .route(
            "/iserver/reauthenticate",
            get(h(session::reauthenticate)).post(h(session::reauthenticate)),
        )
        .route("/logout", post(h(session::logout)).get(h(session::logout)))
        // accounts
        .route("/iserver/accounts", get(h(accounts::iserver_accounts)))
        .route("/iserver/account", post(h(accounts::set_account)))
        .route(
            "/iserver/account/search/{searchPattern}",
            get(h(accounts::search)),
        )
        .route("/iserver/dynaccount", post(h(accounts::dynaccount)))
        .route(
            "/iserver/account/pnl/partitioned",
            get(h(accounts::pnl_partitioned)),
        )
        .route(
            "/iserver/account/{accountId}/summary",
            get(h(accounts::summary)),
        )
        .route(
            "/iserver/account/{accountId}/summary/available_funds",
            get(h(accounts::available_funds)),
        )
        .route(
            "/iserver/account/{accountId}/summary/balances",
            get(h(accounts::balances)),
        )
        .route(
            "/iserver/account/{accountId}/summary/margins",
            get(h(accounts::margins)),
        )
        .route(
            "/iserver/account/{accountId}/summary/market_value",
            get(h(accounts::market_value)),
        )
        .route(
            "/iserver/account/allocation/accounts",
            get(h(accounts::allocation_accounts)),
        )
        .route(
            "/iserver/account/allocation/group",
            get(h(accounts::groups))
                .post(h(accounts::group_add))
                .put(h(accounts::group_modify)),
        )
        .route(
            "/iserver/account/allocation/group/single",
            post(h(accounts::group_single)),
        )
        .route(
            "/iserver/account/allocation/group/delete",
            post(h(accounts::group_delete)),
        )
        .route(
            "/iserver/account/allocation/presets",
            get(h(accounts::presets)).post(h(accounts::presets_set)),
        )
        // portfolio and portfolio analyst
        .route("/portfolio/accounts", get(h(portfolio::accounts)))
        .route("/portfolio/subaccounts", get(h(portfolio::subaccounts)))
        .route("/portfolio/{accountId}/meta", get(h(portfolio::meta)))
        .route("/portfolio/{accountId}/summary", get(h(portfolio::summary)))
        .route("/portfolio/{accountId}/ledger", get(h(portfolio::ledger)))
        .route(
            "/portfolio/{accountId}/allocation",
            get(h(portfolio::allocation)),
        )
        .route(
            "/portfolio/{accountId}/positions/{pageId}",
            get(h(portfolio::positions_page)),
        )
        .route(
            "/portfolio/{accountId}/position/{conid}",
            get(h(portfolio::position)),
        )
        .route(
            "/portfolio/positions/{conid}",
            get(h(portfolio::positions_by_conid)),
        )
        .route(
            "/portfolio/{accountId}/positions/invalidate",
            post(h(portfolio::invalidate)),
        )
        .route("/pa/performance", post(h(portfolio::pa_performance)))
        .route("/pa/allperiods", post(h(portfolio::pa_allperiods)))
        .route("/pa/transactions", post(h(portfolio::pa_transactions)))
        // market data
        .route("/iserver/marketdata/snapshot", get(h(marketdata::snapshot)))
        .route("/iserver/marketdata/history", get(h(marketdata::history)))
        .route("/hmds/history", get(h(marketdata::hmds_history)))
        .route("/md/regsnapshot", get(h(marketdata::regsnapshot)))
        .route(
            "/iserver/marketdata/unsubscribe",
            post(h(marketdata::unsubscribe)),
        )
        .route(
            "/iserver/marketdata/unsubscribeall",
            get(h(marketdata::unsubscribe_all)),
        )
        // contracts
        .route(
            "/iserver/secdef/search",
            get(h(contracts::search)).post(h(contracts::search)),
        )
        .route("/iserver/secdef/info", get(h(contracts::secdef_info)))
        .route("/iserver/secdef/strikes", get(h(contracts::strikes)))
        .route(
            "/iserver/secdef/bond-filters",
            get(h(contracts::bond_filters)),
        )
        .route("/iserver/contract/{conid}/info", get(h(contracts::info)))
        .route(
            "/iserver/contract/{conid}/info-and-rules",
            get(h(contracts::info_and_rules)),
        )
        .route("/iserver/contract/rules", post(h(contracts::rules)))
        .route("/iserver/contract/{conid}/algos", get(h(contracts::algos)))
        .route("/trsrv/secdef", get(h(contracts::trsrv_secdef)))
        .route("/trsrv/stocks", get(h(contracts::trsrv_stocks)))
        .route("/trsrv/futures", get(h(contracts::trsrv_futures)))
        .route("/trsrv/secdef/schedule", get(h(contracts::schedule)))
        .route("/trsrv/all-conids", get(h(contracts::all_conids)))
        .route("/iserver/currency/pairs", get(h(contracts::currency_pairs)))
        .route("/iserver/exchangerate", get(h(contracts::exchange_rate)))
        // orders
        .route("/iserver/account/orders", get(h(orders::live_orders)))
        .route(
            "/iserver/account/order/status/{orderId}",
            get(h(orders::status)),
        )
        .route("/iserver/account/trades", get(h(orders::trades)))
        .route(
            "/iserver/account/{accountId}/orders/whatif",
            post(h(orders::whatif)),
        )
        .route(
            "/iserver/account/{accountId}/orders",
            post(h(orders::place)),
        )
        .route("/iserver/reply/{replyId}", post(h(orders::reply)))
        .route(
            "/iserver/account/{accountId}/order/{orderId}",
            post(h(orders::modify)).delete(h(orders::cancel)),
        )
        .route("/iserver/questions/suppress", post(h(orders::suppress)))
        .route(
            "/iserver/questions/suppress/reset",
            post(h(orders::suppress_reset)),
        )
        .route("/iserver/notification", post(h(orders::notification)))
        // alerts
        .route("/iserver/account/{accountId}/alerts", get(h(alerts::list)))
        .route("/iserver/account/alert/{alertId}", get(h(alerts::get_one)))
        .route("/iserver/account/mta", get(h(alerts::mta)))
        .route(
            "/iserver/account/{accountId}/alert",
            post(h(alerts::create)),
        )
        .route(
            "/iserver/account/{accountId}/alert/activate",
            post(h(alerts::activate)),
        )
        .route(
            "/iserver/account/{accountId}/alert/{alertId}",
            delete(h(alerts::remove)),
        )
        // watchlists
        .route("/iserver/watchlists", get(h(watchlists::list)))
        .route(
            "/iserver/watchlist",
            get(h(watchlists::get_one))
                .post(h(watchlists::create))
                .delete(h(watchlists::remove)),
        )
        // scanners
        .route("/iserver/scanner/params", get(h(scanner::params)))
        .route("/iserver/scanner/run", post(h(scanner::run)))
        .route("/hmds/scanner/params", get(h(scanner::hmds_params)))
        .route("/hmds/scanner/run", post(h(scanner::hmds_run)))
        // Older clients post HMDS scans to /hmds/scanner.
        .route("/hmds/scanner", post(h(scanner::hmds_run)))
        // FYI
        .route("/fyi/notifications", get(h(fyi::notifications)))
        .route("/fyi/unreadnumber", get(h(fyi::unread)))
        .route(
            "/fyi/notifications/{notificationId}",
            put(h(fyi::mark_read)),
        )
        .route("/fyi/settings", get(h(fyi::settings)))
        .route("/fyi/settings/{typecode}", post(h(fyi::set_setting)))
        .route(
            "/fyi/disclaimer/{typecode}",
            get(h(fyi::disclaimer)).put(h(fyi::disclaimer_read)),
        )
        .route("/fyi/deliveryoptions", get(h(fyi::delivery_options)))
        .route("/fyi/deliveryoptions/email", put(h(fyi::email)))
        .route("/fyi/deliveryoptions/device", post(h(fyi::device)))
        .route(
            "/fyi/deliveryoptions/{deviceId}",
            delete(h(fyi::delete_device)),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(sim.clone(), gateway_layer))
        .with_state(sim);
    Router::new().nest("/v1/api", api)
}

async fn not_found(req: Request) -> Response {
    json_response(
        404,
        &json!({ "error": format!("Not Found: {} {}", req.method(), req.uri().path()), "statusCode": 404 }),
    )
}

/// Paths under `/iserver` that work without a brokerage session.
const ISERVER_OPEN: [&str; 3] = [
    "/iserver/auth/status",
    "/iserver/auth/ssodh/init",
    "/iserver/reauthenticate",
];

async fn gateway_layer(State(sim): State<Arc<Sim>>, mut req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let full = req.uri().path().to_string();
    let path = full.strip_prefix("/v1/api").unwrap_or(&full).to_string();
    let template = req.extensions().get::<MatchedPath>().map(|m| {
        m.as_str()
            .strip_prefix("/v1/api")
            .unwrap_or(m.as_str())
            .to_string()
    });
    let ctl = req.extensions().get::<ConnCtl>().cloned();
    let (seq, latency, before) = {
        let mut st = sim.lock();
        let seq = st.log.record(RequestLogEntry {
            seq: 0,
            at_ms: chrono::Utc::now().timestamp_millis(),
            method: method.clone(),
            path: path.clone(),
            query: req.uri().query().map(str::to_string),
            template: template.clone(),
            status: 0,
            outcome: "ok".into(),
        });
        (seq, st.faults.latency(&path), st.faults.before(&path))
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match before {
        Before::Drop => {
            sim.lock().log.finish(seq, 0, "dropped");
            return drop_connection(ctl).await;
        }
        Before::ServerError(code) => {
            sim.lock().log.finish(seq, code, "fault_5xx");
            let msg = if code == 503 {
                "Service Unavailable"
            } else {
                "Internal Server Error"
            };
            return json_response(code, &json!({ "error": msg, "statusCode": code }));
        }
        Before::Proceed => {}
    }
    let oauth_mode = sim.oauth.is_some();
    if oauth_mode && path != LIVE_SESSION_TOKEN_PATH {
        req = match oauth::gate(&sim, req).await {
            Ok(req) => req,
            Err(refusal) => {
                sim.lock()
                    .log
                    .finish(seq, refusal.status(), &oauth::outcome(refusal));
                return oauth::refusal_response(refusal);
            }
        };
    }
    let gate = {
        let mut st = sim.lock();
        let key = template.as_deref().unwrap_or(&path);
        if let Err(p) = st.pacer.admit(&method, key, Instant::now()) {
            st.log.finish(seq, 429, "paced");
            let secs = p.retry_after.as_secs_f64().ceil().max(1.0) as u64;
            let mut resp = json_response(
                429,
                &json!({ "error": format!("Too Many Requests: pacing limit of {} exceeded", p.limit), "statusCode": 429 }),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return resp;
        }
        let now = Instant::now();
        st.session.expire_if_idle(now);
        if st.session.logged_in {
            st.session.last_activity = now;
        }
        st.step_market(&sim.universe);
        let needs_brokerage =
            path.starts_with("/iserver/") && !ISERVER_OPEN.contains(&path.as_str());
        let no_bridge = needs_brokerage && !st.session.iserver_ready();
        if oauth_mode {
            // The signature check stands for the SSO login; a missing brokerage session is
            // IBKR's "no bridge" (a 401 would tell the client to get a new token).
            no_bridge.then_some((400, "Bad Request: no bridge", "no_bridge"))
        } else if !st.session.logged_in || no_bridge {
            Some((401, "not authenticated", "unauthorized"))
        } else {
            None
        }
    };
    if let Some((code, message, outcome)) = gate {
        sim.lock().log.finish(seq, code, outcome);
        return json_response(code, &json!({ "error": message, "statusCode": code }));
    }
    req.extensions_mut().insert(Seq(seq));
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    if status != 200 {
        let outcome = resp
            .extensions()
            .get::<oauth::LogOutcome>()
            .map_or("ok", |o| o.0.as_str());
        sim.lock().log.finish(seq, status, outcome);
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let garbage = sim.lock().faults.garbage(&path, &bytes);
    let mut st = sim.lock();
    match garbage {
        Some(g) => {
            st.log.finish(seq, 200, "garbage");
            Response::from_parts(parts, Body::from(g))
        }
        None => {
            st.log.finish(seq, 200, "ok");
            Response::from_parts(parts, Body::from(bytes))
        }
    }
}

/// A whole or fractional number as JSON (`5` stays an integer).
pub(crate) fn jnum(x: f64) -> Value {
    json!((x * 1e6).round() / 1e6)
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Reply::Json(s, v) => json_response(s, &v),
            Reply::DropAfterAccept => json_response(
                500,
                &json!({ "error": "connection dropped", "statusCode": 500 }),
            ),
        }
    }
}
