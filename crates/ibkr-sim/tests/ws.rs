//! The streaming WebSocket over loopback with a real client (tokio-tungstenite): admission and
//! refusals, the greeting and ready gate, heartbeats and `tic`, live orders and executions
//! from REST placements, market data from price moves (`umd` and the lifetime end it), P&L,
//! session loss, `/sim/ws/drop`, and `wss://` with the self-signed certificate. OAuth mode's
//! admission is tested in `tests/oauth.rs` (it needs a live session token).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use ibkr_sim::{QuestionPolicy, SimConfig, SimHandle, Tls, WsConfig, WsStats};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const AAPL: i64 = 265598;
const ACCT: &str = "DU1234567";
/// How long any expected message may take (generous: the assertions are about content).
const WAIT: Duration = Duration::from_secs(10);

/// Fast timings for tests: heartbeat every 100 ms, updates every 50 ms, ready after 100 ms.
fn fast() -> WsConfig {
    WsConfig {
        heartbeat: Duration::from_millis(100),
        ready_delay: Duration::from_millis(100),
        update_interval: Duration::from_millis(50),
        // Prices only move when a test moves them.
        market_clock: false,
        ..WsConfig::default()
    }
}

fn config(ws: WsConfig) -> SimConfig {
    common::unpaced()
        .with_questions(QuestionPolicy::Never)
        .with_ws(ws)
}

/// The `/tickle` session id.
async fn session(sim: &SimHandle) -> String {
    let (s, v) = common::get(sim, "/tickle").await;
    assert_eq!(s, 200);
    v["session"]
        .as_str()
        .expect("tickle has a session")
        .to_string()
}

/// The gateway-mode cookie header value.
async fn cookie(sim: &SimHandle) -> String {
    format!(r#"api={{"session":"{}"}}"#, session(sim).await)
}

/// Opens a socket with an optional `Cookie` header; `Err` carries the refusal.
async fn try_connect(sim: &SimHandle, cookie: Option<&str>) -> Result<Ws, WsError> {
    let mut req = format!("ws://{}/v1/api/ws", sim.addr())
        .into_client_request()
        .unwrap();
    if let Some(c) = cookie {
        req.headers_mut()
            .insert("Cookie", HeaderValue::from_str(c).unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// Opens a socket with the session cookie.
async fn connect(sim: &SimHandle) -> Ws {
    let c = cookie(sim).await;
    try_connect(sim, Some(&c)).await.expect("upgrade accepted")
}

/// The next JSON message (text or binary frame); panics on timeout or end of the socket.
async fn next<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("socket still open")
            .expect("no socket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON text"),
            Message::Binary(b) => return serde_json::from_slice(&b).expect("JSON binary"),
            Message::Close(f) => panic!("socket closed: {f:?}"),
            _ => {}
        }
    }
}

/// Reads until a message satisfies `pred`, returning it and everything skipped before it.
async fn until<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    pred: impl Fn(&Value) -> bool,
) -> (Value, Vec<Value>) {
    let mut skipped = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "no matching message; got {skipped:?}"
        );
        let v = next(ws).await;
        if pred(&v) {
            return (v, skipped);
        }
        skipped.push(v);
    }
}

fn topic_is(v: &Value, topic: &str) -> bool {
    v["topic"].as_str() == Some(topic)
}

fn is_hb(v: &Value) -> bool {
    topic_is(v, "system") && v["hb"].is_i64()
}

/// Reads past the greeting; returns once `sts` arrived (the gate is open when it says so).
async fn ready(ws: &mut Ws) -> Value {
    until(ws, |v| topic_is(v, "sts")).await.0
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.expect("send");
}

/// Waits until `cond` holds for the simulator's WebSocket counters.
async fn stats_until(sim: &SimHandle, what: &str, cond: impl Fn(&WsStats) -> bool) -> WsStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = sim.control().ws_stats();
        if cond(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads `n` heartbeats, returning every other message seen meanwhile.
async fn through_heartbeats(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut others = Vec::new();
    for _ in 0..n {
        let (_, skipped) = until(ws, is_hb).await;
        others.extend(skipped);
    }
    others
}

#[tokio::test]
async fn the_greeting_is_system_act_sts_then_heartbeats_and_tic_is_answered() {
    let sim = common::start(config(fast())).await;
    let id = session(&sim).await;
    let mut ws = connect(&sim).await;
    let login = next(&mut ws).await;
    assert!(topic_is(&login, "system"), "{login}");
    assert_eq!(login["success"], "simtrader1");
    let act = next(&mut ws).await;
    assert!(topic_is(&act, "act"), "{act}");
    assert!(
        act["args"]["accounts"]
            .as_array()
            .unwrap()
            .contains(&json!(ACCT))
    );
    assert_eq!(act["args"]["selectedAccount"], ACCT);
    let sts = next(&mut ws).await;
    assert!(topic_is(&sts, "sts"), "{sts}");
    assert_eq!(sts["args"]["authenticated"], true);
    assert_eq!(sts["args"]["connected"], true);
    // Heartbeats follow at the configured interval, with rising timestamps.
    let mut beats = Vec::new();
    while beats.len() < 3 {
        let v = next(&mut ws).await;
        assert!(is_hb(&v), "only heartbeats on an idle socket: {v}");
        beats.push(v["hb"].as_i64().unwrap());
    }
    assert!(beats.windows(2).all(|w| w[1] >= w[0]), "{beats:?}");
    send(&mut ws, "tic").await;
    let (tic, _) = until(&mut ws, |v| topic_is(v, "tic")).await;
    assert_eq!(tic["alive"], true);
    assert_eq!(tic["id"], id.as_str());
    assert!(tic["lastAccessed"].is_i64());
    let s = sim.control().ws_stats();
    assert_eq!((s.connections_open, s.connections_total, s.tics), (1, 1, 1));
    assert!(s.sent["system"] >= 4, "{s:?}");
    assert_eq!((s.sent["act"], s.sent["sts"], s.sent["tic"]), (1, 1, 1));
    // The upgrade is in the request log.
    let log = sim.control().requests();
    assert!(
        log.iter()
            .any(|e| e.path == "/ws" && e.status == 101 && e.outcome == "ws"),
        "{log:?}"
    );
    drop(ws);
    stats_until(&sim, "socket closed", |s| s.connections_open == 0).await;
}

#[tokio::test]
async fn subscriptions_before_ready_are_dropped_and_counted() {
    let sim = common::start(config(WsConfig {
        ready_delay: Duration::from_millis(400),
        ..fast()
    }))
    .await;
    let mut ws = connect(&sim).await;
    // Sent at once, long before `sts`.
    send(&mut ws, "sor+{}").await;
    send(&mut ws, "spl+{}").await;
    let login = next(&mut ws).await;
    assert!(topic_is(&login, "system"));
    let s = stats_until(&sim, "pre-ready messages dropped", |s| {
        s.dropped_before_ready == 2
    })
    .await;
    assert!(s.active.is_empty(), "{s:?}");
    assert!(s.subscribes.is_empty(), "{s:?}");
    let (sts, skipped) = until(&mut ws, |v| topic_is(v, "sts")).await;
    assert_eq!(sts["args"]["authenticated"], true);
    assert!(
        skipped.iter().all(|v| !topic_is(v, "spl")),
        "dropped means no answer: {skipped:?}"
    );
    // After the gate opens the same message works.
    send(&mut ws, "spl+{}").await;
    let (spl, _) = until(&mut ws, |v| topic_is(v, "spl")).await;
    let core = &spl["args"][format!("{ACCT}.Core")];
    assert_eq!(core["rowType"], 1);
    assert!(core["nl"].as_f64().unwrap() > 0.0, "{spl}");
    for key in ["dpl", "upl", "uel", "mv"] {
        assert!(core[key].is_number(), "{key} in {spl}");
    }
    let s = sim.control().ws_stats();
    assert_eq!(s.active.get("spl"), Some(&1));
    assert_eq!(s.dropped_before_ready, 2);
    send(&mut ws, "upl+{}").await;
    stats_until(&sim, "upl ends spl", |s| s.active.is_empty()).await;
}

#[tokio::test]
async fn sor_streams_a_market_order_submitted_then_filled_and_str_its_execution() {
    let sim = common::start(config(fast())).await;
    assert_eq!(common::get(&sim, "/iserver/accounts").await.0, 200);
    let mut ws = connect(&sim).await;
    ready(&mut ws).await;
    send(&mut ws, "sor+{}").await;
    send(&mut ws, r#"str+{"realtimeUpdatesOnly":true}"#).await;
    stats_until(&sim, "sor and str active", |s| {
        s.active.get("sor") == Some(&1) && s.active.get("str") == Some(&1)
    })
    .await;
    let (s, v) = common::post(
        &sim,
        &format!("/iserver/account/{ACCT}/orders"),
        json!({ "orders": [{ "conid": AAPL, "orderType": "MKT", "side": "BUY", "tif": "DAY", "quantity": 7 }] }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let order_id: i64 = v[0]["order_id"].as_str().unwrap().parse().unwrap();
    let mut statuses = Vec::new();
    let mut execution = None;
    while statuses.last().map(String::as_str) != Some("Filled") {
        let v = next(&mut ws).await;
        if topic_is(&v, "sor") {
            for row in v["args"].as_array().unwrap() {
                assert_eq!(row["orderId"], order_id, "{row}");
                assert_eq!(row["acct"], ACCT);
                assert_eq!(row["conid"], AAPL);
                assert_eq!(row["side"], "BUY");
                statuses.push(row["status"].as_str().unwrap().to_string());
                if row["status"] == "Filled" {
                    assert_eq!(row["filledQuantity"], 7.0);
                    assert_eq!(row["remainingQuantity"], 0.0);
                }
            }
        } else if topic_is(&v, "str") {
            execution = Some(v["args"][0].clone());
        }
    }
    assert_eq!(statuses, ["Submitted", "Filled"]);
    let exec = match execution {
        Some(e) => e,
        None => until(&mut ws, |v| topic_is(v, "str")).await.0["args"][0].clone(),
    };
    assert_eq!(exec["order_id"], order_id);
    assert_eq!(exec["size"], 7.0);
    assert_eq!(exec["side"], "B");
    assert_eq!(exec["conid"], AAPL);
    let state = sim.control().state();
    assert_eq!(
        exec["execution_id"],
        state.executions[0].execution_id.as_str()
    );
    // A resting limit order: its snapshot on a new `sor`, then its cancellation.
    let (_, v) = common::post(
        &sim,
        &format!("/iserver/account/{ACCT}/orders"),
        json!({ "orders": [{ "conid": AAPL, "orderType": "LMT", "price": 1.0, "side": "BUY", "tif": "GTC", "quantity": 1 }] }),
    )
    .await;
    let resting: i64 = v[0]["order_id"].as_str().unwrap().parse().unwrap();
    let (submitted, _) = until(&mut ws, |v| {
        topic_is(v, "sor") && v["args"][0]["orderId"] == resting
    })
    .await;
    assert_eq!(submitted["args"][0]["status"], "Submitted");
    let mut second = connect(&sim).await;
    ready(&mut second).await;
    send(&mut second, r#"sor+{"filters":["Submitted"]}"#).await;
    let (snapshot, _) = until(&mut second, |v| topic_is(v, "sor")).await;
    let rows = snapshot["args"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "only the working order: {snapshot}");
    assert_eq!(rows[0]["orderId"], resting);
    assert_eq!(
        common::delete(&sim, &format!("/iserver/account/{ACCT}/order/{resting}"))
            .await
            .0,
        200
    );
    let (cancelled, _) = until(&mut ws, |v| topic_is(v, "sor")).await;
    assert_eq!(cancelled["args"][0]["orderId"], resting);
    assert_eq!(cancelled["args"][0]["status"], "Cancelled");
    // The filtered subscription does not hear the cancellation.
    let others = through_heartbeats(&mut second, 3).await;
    assert!(others.iter().all(|v| !topic_is(v, "sor")), "{others:?}");
    assert_eq!(sim.control().ws_stats().active.get("sor"), Some(&2));
}

#[tokio::test]
async fn a_resting_limit_order_is_pushed_when_a_price_move_fills_it() {
    let sim = common::start(config(fast())).await;
    assert_eq!(common::get(&sim, "/iserver/accounts").await.0, 200);
    let mut ws = connect(&sim).await;
    ready(&mut ws).await;
    send(&mut ws, "sor+{}").await;
    send(&mut ws, "str+{}").await;
    stats_until(&sim, "sor and str active", |s| s.active.len() == 2).await;
    let last = sim.control().price(AAPL).unwrap();
    let limit = (last * 0.9 * 100.0).round() / 100.0;
    let (_, v) = common::post(
        &sim,
        &format!("/iserver/account/{ACCT}/orders"),
        json!({ "orders": [{ "conid": AAPL, "orderType": "LMT", "price": limit, "side": "BUY", "tif": "GTC", "quantity": 3 }] }),
    )
    .await;
    let id: i64 = v[0]["order_id"].as_str().unwrap().parse().unwrap();
    let (placed, _) = until(&mut ws, |v| topic_is(v, "sor")).await;
    assert_eq!(placed["args"][0]["orderId"], id);
    assert_eq!(placed["args"][0]["status"], "Submitted");
    assert!(sim.control().set_price(AAPL, limit - 1.0));
    let (filled, skipped) = until(&mut ws, |v| topic_is(v, "sor")).await;
    assert_eq!(filled["args"][0]["orderId"], id);
    assert_eq!(filled["args"][0]["status"], "Filled");
    assert_eq!(filled["args"][0]["filledQuantity"], 3.0);
    // The execution comes before the order's new status, as it is booked first.
    let exec = skipped
        .iter()
        .find(|v| topic_is(v, "str"))
        .unwrap_or_else(|| panic!("an execution before the fill: {skipped:?}"));
    assert_eq!(exec["args"][0]["order_id"], id);
    assert_eq!(exec["args"][0]["size"], 3.0);
}

#[tokio::test]
async fn without_the_quirk_early_subscriptions_wait_for_the_gate() {
    let sim = common::start(config(WsConfig {
        drop_before_ready: false,
        ready_delay: Duration::from_millis(300),
        ..fast()
    }))
    .await;
    let mut ws = connect(&sim).await;
    send(&mut ws, "spl+{}").await;
    let (sts, skipped) = until(&mut ws, |v| topic_is(v, "sts")).await;
    assert_eq!(sts["args"]["authenticated"], true);
    assert!(skipped.iter().all(|v| !topic_is(v, "spl")), "{skipped:?}");
    let (spl, _) = until(&mut ws, |v| topic_is(v, "spl")).await;
    assert!(spl["args"][format!("{ACCT}.Core")]["nl"].is_number());
    let s = sim.control().ws_stats();
    assert_eq!((s.dropped_before_ready, s.active.get("spl")), (0, Some(&1)));
}

#[tokio::test]
async fn smd_pushes_price_moves_and_umd_stops_the_stream() {
    let sim = common::start(config(fast())).await;
    let mut ws = connect(&sim).await;
    ready(&mut ws).await;
    send(
        &mut ws,
        &format!(r#"smd+{AAPL}+{{"fields":["31","84","86"]}}"#),
    )
    .await;
    // First message after the pre-flight: identification only.
    let key = format!("smd+{AAPL}");
    let (first, _) = until(&mut ws, |v| topic_is(v, &key)).await;
    assert_eq!(first["conid"], AAPL);
    assert_eq!(first["conidEx"], AAPL.to_string());
    assert!(first["server_id"].is_string(), "{first}");
    assert!(
        first.get("31").is_none(),
        "pre-flight carries no values: {first}"
    );
    // Then the values, with the field ids as string keys.
    let (full, _) = until(&mut ws, |v| topic_is(v, &key)).await;
    for f in ["31", "84", "86", "6119", "6509", "server_id", "_updated"] {
        assert!(full.get(f).is_some(), "{f} in {full}");
    }
    assert!(full["31"].is_string());
    // Three price moves, three updates with the new last price.
    for price in [201.25, 203.5, 199.75] {
        assert!(sim.control().set_price(AAPL, price));
        let want = format!("{price:.2}");
        let (update, _) = until(&mut ws, |v| topic_is(v, &key) && v.get("31").is_some()).await;
        assert_eq!(update["31"], want.as_str(), "{update}");
        assert_eq!(update["conid"], AAPL);
        assert!(
            update.get("6509").is_none(),
            "only changed fields: {update}"
        );
    }
    let s = sim.control().ws_stats();
    assert_eq!(s.active.get(&key), Some(&1));
    assert!(s.sent[&key] >= 5, "{s:?}");
    // Sending the same `smd` again is still one subscription.
    send(
        &mut ws,
        &format!(r#"smd+{AAPL}+{{"fields":["31","7059"]}}"#),
    )
    .await;
    let (more, _) = until(&mut ws, |v| topic_is(v, &key) && v.get("7059").is_some()).await;
    assert!(
        more.get("31").is_none(),
        "unchanged fields are not repeated: {more}"
    );
    let s = sim.control().ws_stats();
    assert_eq!(
        (s.active.get(&key), s.subscribes.get(&key)),
        (Some(&1), Some(&2))
    );
    // umd: the subscription ends and price moves are no longer pushed.
    send(&mut ws, &format!("umd+{AAPL}+{{}}")).await;
    let s = stats_until(&sim, "umd ends the stream", |s| s.active.is_empty()).await;
    assert_eq!(s.unsubscribes.get(&key), Some(&1));
    let sent = s.sent[&key];
    assert!(sim.control().set_price(AAPL, 210.0));
    let others = through_heartbeats(&mut ws, 4).await;
    assert!(others.iter().all(|v| !topic_is(v, &key)), "{others:?}");
    assert_eq!(sim.control().ws_stats().sent[&key], sent);
}

#[tokio::test]
async fn smd_ends_after_its_lifetime_unless_sent_again() {
    let sim = common::start(config(WsConfig {
        smd_lifetime: Duration::from_millis(400),
        ..fast()
    }))
    .await;
    sim.control().set_snapshot_preflight(false);
    let mut ws = connect(&sim).await;
    ready(&mut ws).await;
    send(&mut ws, &format!(r#"smd+{AAPL}+{{"fields":["31"]}}"#)).await;
    let key = format!("smd+{AAPL}");
    let (first, _) = until(&mut ws, |v| topic_is(v, &key)).await;
    assert!(
        first["31"].is_string(),
        "no pre-flight when it is off: {first}"
    );
    let s = stats_until(&sim, "the stream expires", |s| s.smd_expired == 1).await;
    assert!(s.active.is_empty(), "{s:?}");
    assert!(sim.control().set_price(AAPL, 222.22));
    let others = through_heartbeats(&mut ws, 4).await;
    assert!(others.iter().all(|v| !topic_is(v, &key)), "{others:?}");
    // A fresh `smd` starts it again.
    send(&mut ws, &format!(r#"smd+{AAPL}+{{"fields":["31"]}}"#)).await;
    let (again, _) = until(&mut ws, |v| topic_is(v, &key)).await;
    assert_eq!(again["31"], "222.22");
}

#[tokio::test]
async fn unknown_topics_and_contracts_get_an_error() {
    let sim = common::start(config(fast())).await;
    let mut ws = connect(&sim).await;
    ready(&mut ws).await;
    send(&mut ws, "ssd+DU1234567+{}").await;
    let (e, _) = until(&mut ws, |v| v.get("error").is_some()).await;
    assert_eq!(e["code"], 1);
    assert!(
        e["error"].as_str().unwrap().starts_with("Topic unknown"),
        "{e}"
    );
    send(&mut ws, r#"smd+999999999+{"fields":["31"]}"#).await;
    let (e, _) = until(&mut ws, |v| v.get("error").is_some()).await;
    assert!(e["error"].as_str().unwrap().contains("999999999"), "{e}");
    assert_eq!(sim.control().ws_stats().errors, 2);
    assert!(sim.control().ws_stats().active.is_empty());
}

#[tokio::test]
async fn without_a_cookie_the_socket_waits_for_the_session_message() {
    let sim = common::start(config(fast())).await;
    let id = session(&sim).await;
    let mut ws = try_connect(&sim, None).await.expect("upgrade accepted");
    let first = next(&mut ws).await;
    assert_eq!(first, json!({ "message": "waiting for session" }));
    send(&mut ws, "sor+{}").await;
    send(&mut ws, &json!({ "session": id }).to_string()).await;
    let login = next(&mut ws).await;
    assert!(topic_is(&login, "system"), "{login}");
    let sts = ready(&mut ws).await;
    assert_eq!(sts["args"]["authenticated"], true);
    assert_eq!(sim.control().ws_stats().dropped_before_ready, 1);
    // A wrong in-band session gets an error and the socket closes.
    let mut bad = try_connect(&sim, None).await.expect("upgrade accepted");
    next(&mut bad).await;
    send(&mut bad, r#"{"session":"not-the-session"}"#).await;
    let e = next(&mut bad).await;
    assert!(e["error"].is_string(), "{e}");
    let end = tokio::time::timeout(WAIT, bad.next())
        .await
        .expect("closes");
    assert!(
        matches!(end, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
        "{end:?}"
    );
}

#[tokio::test]
async fn the_upgrade_is_refused_without_login_or_with_a_wrong_session() {
    let sim = common::start(config(fast())).await;
    let wrong = try_connect(&sim, Some(r#"api={"session":"0000"}"#)).await;
    match wrong {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    // The OAuth (plain) cookie form is not the gateway's.
    let plain = format!("api={}", session(&sim).await);
    assert!(matches!(
        try_connect(&sim, Some(&plain)).await,
        Err(WsError::Http(r)) if r.status() == 401
    ));
    let good = cookie(&sim).await;
    sim.control().logout();
    assert!(matches!(
        try_connect(&sim, Some(&good)).await,
        Err(WsError::Http(r)) if r.status() == 401
    ));
    let s = sim.control().ws_stats();
    assert_eq!((s.refused, s.connections_total), (3, 0));
    let log = sim.control().requests();
    assert_eq!(
        log.iter()
            .filter(|e| e.path == "/ws" && e.status == 401)
            .count(),
        3
    );
}

#[tokio::test]
async fn losing_the_brokerage_session_ends_subscriptions_and_shuts_the_gate() {
    let sim = common::start(config(fast())).await;
    let mut ws = connect(&sim).await;
    ready(&mut ws).await;
    send(&mut ws, "sor+{}").await;
    stats_until(&sim, "sor active", |s| s.active.get("sor") == Some(&1)).await;
    sim.control().expire_session();
    let (sts, _) = until(&mut ws, |v| topic_is(v, "sts")).await;
    assert_eq!(sts["args"]["authenticated"], false);
    assert!(sim.control().ws_stats().active.is_empty());
    send(&mut ws, "sor+{}").await;
    stats_until(&sim, "dropped while shut", |s| s.dropped_before_ready == 1).await;
    sim.control().login(true);
    let (sts, _) = until(&mut ws, |v| topic_is(v, "sts")).await;
    assert_eq!(sts["args"]["authenticated"], true);
    send(&mut ws, "sor+{}").await;
    stats_until(&sim, "sor active again", |s| {
        s.active.get("sor") == Some(&1)
    })
    .await;
}

#[tokio::test]
async fn sim_ws_drop_cuts_every_socket_without_a_close_frame() {
    let sim = common::start(config(fast())).await;
    let mut a = connect(&sim).await;
    let mut b = connect(&sim).await;
    ready(&mut a).await;
    ready(&mut b).await;
    send(&mut a, &format!(r#"smd+{AAPL}+{{"fields":["31"]}}"#)).await;
    stats_until(&sim, "two open", |s| {
        s.connections_open == 2 && !s.active.is_empty()
    })
    .await;
    let over_http: Value = common::client()
        .get(format!("{}/ws", sim.control_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http["connections_open"], 2);
    assert_eq!(over_http["active"][format!("smd+{AAPL}")], 1);
    let resp = common::client()
        .post(format!("{}/ws/drop", sim.control_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({ "ok": true, "dropped": 2 }));
    for ws in [&mut a, &mut b] {
        loop {
            let end = tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("socket ends");
            match end {
                Some(Ok(Message::Close(f))) => panic!("a drop sends no close frame: {f:?}"),
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => break,
            }
        }
    }
    let s = stats_until(&sim, "all closed", |s| s.connections_open == 0).await;
    assert_eq!(s.dropped_sockets, 2);
    assert!(s.active.is_empty(), "{s:?}");
    // New sockets are not affected.
    let mut c = connect(&sim).await;
    assert_eq!(ready(&mut c).await["args"]["authenticated"], true);
    // The same through SimControl.
    assert_eq!(sim.control().ws_drop(), 1);
    stats_until(&sim, "dropped again", |s| {
        s.connections_open == 0 && s.dropped_sockets == 3
    })
    .await;
}

#[tokio::test]
async fn binary_frames_carry_the_same_json() {
    let sim = common::start(config(WsConfig {
        binary_frames: true,
        tic_replies: 4,
        ..fast()
    }))
    .await;
    let mut ws = connect(&sim).await;
    let first = ws.next().await.unwrap().unwrap();
    assert!(first.is_binary(), "{first:?}");
    ready(&mut ws).await;
    ws.send(Message::Binary(b"tic".to_vec().into()))
        .await
        .unwrap();
    let mut replies = 0;
    while replies < 4 {
        let (tic, _) = until(&mut ws, |v| topic_is(v, "tic")).await;
        assert_eq!(tic["alive"], true);
        replies += 1;
    }
    assert_eq!(sim.control().ws_stats().sent["tic"], 4);
}

#[tokio::test]
async fn wss_works_with_the_self_signed_certificate() {
    let sim = ibkr_sim::start(
        config(fast()),
        "127.0.0.1:0".parse().unwrap(),
        Tls::SelfSigned,
    )
    .await
    .unwrap();
    let id = session(&sim).await;
    let pem = sim.certificate_pem().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(sim.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let mut req = format!("wss://localhost:{}/v1/api/ws", sim.addr().port())
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Cookie",
        HeaderValue::from_str(&format!(r#"api={{"session":"{id}"}}"#)).unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::client_async(req, stream)
        .await
        .expect("upgrade over TLS");
    assert_eq!(resp.status(), 101);
    let login = next(&mut ws).await;
    assert!(topic_is(&login, "system"), "{login}");
    let (sts, _) = until(&mut ws, |v| topic_is(v, "sts")).await;
    assert_eq!(sts["args"]["authenticated"], true);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_restart_cuts_the_socket() {
    let sim = common::start(config(fast())).await;
    let mut ws = connect(&sim).await;
    ready(&mut ws).await;
    sim.control().restart(Duration::from_millis(200)).await;
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("socket ends")
        {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        }
    }
    stats_until(&sim, "closed by the restart", |s| s.connections_open == 0).await;
}

#[tokio::test]
async fn a_streamed_market_moves_on_its_own() {
    let sim = common::start(config(WsConfig {
        market_clock: true,
        ..fast()
    }))
    .await;
    sim.control().set_snapshot_preflight(false);
    let mut ws = connect(&sim).await;
    ready(&mut ws).await;
    let rest = || {
        sim.control()
            .requests()
            .into_iter()
            .map(|r| r.path)
            .filter(|p| !p.ends_with("/ws"))
            .collect::<Vec<_>>()
    };
    let before = rest();
    send(&mut ws, &format!(r#"smd+{AAPL}+{{"fields":["31"]}}"#)).await;
    let key = format!("smd+{AAPL}");
    // No REST request and no set_price: the clock moves the last price, and each move is pushed.
    let mut prices = std::collections::BTreeSet::new();
    while prices.len() < 4 {
        let (m, _) = until(&mut ws, |v| topic_is(v, &key) && v.get("31").is_some()).await;
        prices.insert(m["31"].as_str().unwrap().to_string());
    }
    assert_eq!(rest(), before, "no REST request was made meanwhile");
}
