//! One WebSocket: the session handshake, the greeting and ready gate, heartbeats, `tic`, the
//! subscriptions of this socket and their pushes.
//!
//! The socket's logic is [`Conn`], whose handlers are synchronous: each takes the state lock
//! for a moment and returns the messages to send; [`run`] owns the socket and the timers and
//! does the sending. Per topic:
//!
//! - `sor+{}` (optionally `{"filters":["Submitted",...]}`): at once the working orders of every
//!   account (if there are any), then every booked or changed order as
//!   `{"topic":"sor","args":[row]}` in the order of the changes (placed, triggered, filled,
//!   cancelled, modified). Rows have the shape of `/iserver/account/orders`. `uor+{}` ends it.
//! - `str+{"realtimeUpdatesOnly":false,"days":1}`: unless `realtimeUpdatesOnly`, at once the
//!   executions of the last `days` days (if any), then each new execution as
//!   `{"topic":"str","args":[row]}` (the `/iserver/account/trades` shape). `utr` ends it.
//! - `spl+{}`: at once `{"topic":"spl","args":{"<acct>.Core":{rowType,dpl,nl,upl,uel,mv}}}`,
//!   then again whenever a value changed, checked every [`WsConfig::update_interval`].
//!   `upl+{}` ends it.
//! - `smd+<conid>[@exchange]+{"fields":["31","84",...]}`: the first message at once. For a
//!   contract without market-data subscription in the brokerage session, with the snapshot
//!   pre-flight on, it carries no field values (only `conid`, `conidEx`, `_updated`,
//!   `server_id`), like the first REST snapshot. The first message with values adds
//!   `server_id`, `6119` and `6509`; after it only changed fields are sent (with `conid`,
//!   `conidEx` and `_updated`), checked every [`WsConfig::update_interval`]. Field ids must be
//!   JSON strings; other entries are ignored. Sending `smd` again for the same conid adds fields
//!   and restarts the lifetime; after [`WsConfig::smd_lifetime`] the stream ends silently.
//!   `umd+<conid>+{}` ends it at once, silently. An unknown conid gets an `error`. The stream
//!   is also the contract's market-data subscription of the brokerage session (REST snapshots
//!   of it skip the pre-flight afterwards).
//!
//! [`WsConfig::update_interval`]: super::WsConfig::update_interval
//! [`WsConfig::smd_lifetime`]: super::WsConfig::smd_lifetime

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message, WebSocket};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::feed::{self, FeedEvent, StatusFilter};
use super::protocol::{self, ClientMsg};
use super::{Hub, bump};
use crate::gateway::session::{USER_NAME, auth_status_body};
use crate::state::Sim;

/// Where a socket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Opened without a cookie: waiting for `{"session":...}`.
    AwaitSession,
    /// Login frame sent; `act` and `sts` follow at this instant.
    Greeting(Instant),
    /// Greeted, but there is no brokerage session: the gate is shut.
    NotAuthenticated,
    /// The gate is open.
    Ready,
}

/// One market-data stream of this socket.
#[derive(Debug, Clone)]
struct Smd {
    conidex: String,
    fields: BTreeSet<String>,
    /// Field values as last sent (empty until the first message with values).
    last: Map<String, Value>,
    server_id: String,
    until: Instant,
}

/// The subscriptions of one socket.
#[derive(Debug, Default)]
struct Subs {
    sor: Option<StatusFilter>,
    str: bool,
    /// The P&L as last sent.
    spl: Option<Value>,
    smd: BTreeMap<i64, Smd>,
}

/// The logic of one socket.
#[derive(Debug)]
pub(crate) struct Conn {
    sim: Arc<Sim>,
    phase: Phase,
    subs: Subs,
    /// Gated messages kept until the gate opens ([`super::WsConfig::drop_before_ready`] off).
    held: Vec<ClientMsg>,
    /// Close the socket (with a close frame) after sending what is queued.
    close: bool,
}

impl Conn {
    fn new(sim: Arc<Sim>, await_session: bool) -> Self {
        let phase = if await_session {
            Phase::AwaitSession
        } else {
            Phase::Greeting(Instant::now() + sim.hub.config.ready_delay)
        };
        Self {
            sim,
            phase,
            subs: Subs::default(),
            held: Vec::new(),
            close: false,
        }
    }

    fn hub(&self) -> &Hub {
        &self.sim.hub
    }

    /// The first messages of the socket.
    fn opening(&self) -> Vec<Value> {
        match self.phase {
            Phase::AwaitSession => vec![protocol::waiting_for_session()],
            _ => vec![protocol::system_login(USER_NAME)],
        }
    }

    /// When the greeting's second half is due.
    fn greeting_due(&self) -> Option<Instant> {
        match self.phase {
            Phase::Greeting(at) => Some(at),
            _ => None,
        }
    }

    /// The second half of the greeting: `act`, `sts` and the first heartbeat; opens the gate
    /// when the brokerage session is open.
    fn finish_greeting(&mut self) -> Vec<Value> {
        let (act, sts, authenticated) = {
            let mut st = self.sim.lock();
            st.session.expire_if_idle(Instant::now());
            let accounts: Vec<String> = st.accounts.keys().cloned().collect();
            let act = protocol::act(
                &accounts,
                &st.session.selected_account,
                &st.session.brokerage_session,
            );
            let sts = protocol::sts(&auth_status_body(&st), USER_NAME);
            (act, sts, st.session.authenticated())
        };
        let mut out = vec![act, sts, protocol::heartbeat(now_ms())];
        if authenticated {
            out.extend(self.open_gate());
        } else {
            self.phase = Phase::NotAuthenticated;
        }
        out
    }

    /// Opens the gate and handles what was held.
    fn open_gate(&mut self) -> Vec<Value> {
        self.phase = Phase::Ready;
        let held = std::mem::take(&mut self.held);
        held.into_iter().flat_map(|m| self.on_msg(m)).collect()
    }

    /// Handles one text message from the client.
    fn on_text(&mut self, text: &str) -> Vec<Value> {
        self.on_msg(protocol::parse(text))
    }

    fn on_msg(&mut self, msg: ClientMsg) -> Vec<Value> {
        match (self.phase, msg) {
            (Phase::AwaitSession, ClientMsg::Session(id)) => self.on_session(&id),
            (Phase::AwaitSession, m) if m.is_gated() => self.gate(m),
            (Phase::AwaitSession, ClientMsg::Tic) => Vec::new(),
            (_, ClientMsg::Tic) => self.on_tic(),
            (_, ClientMsg::Session(_)) => Vec::new(),
            (
                Phase::Ready,
                ClientMsg::Topic {
                    name,
                    targets,
                    args,
                },
            ) => self.on_topic(&name, &targets, &args),
            (_, m) if m.is_gated() => self.gate(m),
            (_, ClientMsg::Topic { name, targets, .. }) => {
                self.error(format!("Topic unknown {name}+{}", targets.join("+")))
            }
            (_, ClientMsg::Unknown(text)) => self.error(format!("Topic unknown {text}")),
        }
    }

    /// A gated message while the gate is shut: dropped (IBKR's quirk) or held.
    fn gate(&mut self, m: ClientMsg) -> Vec<Value> {
        if self.hub().config.drop_before_ready {
            self.hub().stats().dropped_before_ready += 1;
        } else {
            self.held.push(m);
        }
        Vec::new()
    }

    fn on_session(&mut self, id: &str) -> Vec<Value> {
        let ok = id == self.sim.lock().session.sso_session;
        if !ok {
            self.close = true;
            return self.error("invalid session");
        }
        self.phase = Phase::Greeting(Instant::now() + self.hub().config.ready_delay);
        vec![protocol::system_login(USER_NAME)]
    }

    fn on_tic(&mut self) -> Vec<Value> {
        self.hub().stats().tics += 1;
        let session = self.sim.lock().session.sso_session.clone();
        let reply = protocol::tic_reply(&session, now_ms());
        (0..self.hub().config.tic_replies.max(1))
            .map(|_| reply.clone())
            .collect()
    }

    fn error(&self, text: impl Into<String>) -> Vec<Value> {
        self.hub().stats().errors += 1;
        vec![protocol::error(text)]
    }

    fn on_topic(&mut self, name: &str, targets: &[String], args: &Value) -> Vec<Value> {
        match name {
            "sor" => self.sub_orders(args),
            "uor" => {
                let was = self.subs.sor.take().is_some();
                self.count_unsub("sor", was);
                Vec::new()
            }
            "str" => self.sub_trades(args),
            "utr" => {
                let was = std::mem::take(&mut self.subs.str);
                self.count_unsub("str", was);
                Vec::new()
            }
            "spl" => self.sub_pnl(),
            "upl" => {
                let was = self.subs.spl.take().is_some();
                self.count_unsub("spl", was);
                Vec::new()
            }
            "smd" => self.sub_market(targets, args),
            "umd" => self.unsub_market(targets),
            _ => {
                let mut text = name.to_string();
                for t in targets {
                    text.push('+');
                    text.push_str(t);
                }
                self.error(format!("Topic unknown {text}"))
            }
        }
    }

    fn count_sub(&self, key: &str, was_active: bool) {
        let mut s = self.hub().stats();
        bump(&mut s.subscribes, key, true);
        if !was_active {
            bump(&mut s.active, key, true);
        }
    }

    fn count_unsub(&self, key: &str, was_active: bool) {
        let mut s = self.hub().stats();
        bump(&mut s.unsubscribes, key, true);
        if was_active {
            bump(&mut s.active, key, false);
        }
    }

    fn sub_orders(&mut self, args: &Value) -> Vec<Value> {
        let filter = StatusFilter::from_args(args);
        let rows = {
            let st = self.sim.lock();
            feed::working_orders(&self.sim, &st, &filter)
        };
        let was = self.subs.sor.replace(filter).is_some();
        self.count_sub("sor", was);
        if rows.is_empty() {
            Vec::new()
        } else {
            vec![json!({ "topic": "sor", "args": rows })]
        }
    }

    fn sub_trades(&mut self, args: &Value) -> Vec<Value> {
        let realtime_only = args
            .get("realtimeUpdatesOnly")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let days = args.get("days").and_then(Value::as_i64).unwrap_or(1);
        let was = std::mem::replace(&mut self.subs.str, true);
        self.count_sub("str", was);
        if realtime_only {
            return Vec::new();
        }
        let rows = {
            let st = self.sim.lock();
            feed::recent_executions(&self.sim, &st, days)
        };
        if rows.is_empty() {
            Vec::new()
        } else {
            vec![json!({ "topic": "str", "args": rows })]
        }
    }

    fn sub_pnl(&mut self) -> Vec<Value> {
        let pnl = {
            let st = self.sim.lock();
            feed::pnl(&self.sim, &st)
        };
        let was = self.subs.spl.replace(pnl.clone()).is_some();
        self.count_sub("spl", was);
        vec![json!({ "topic": "spl", "args": pnl })]
    }

    fn sub_market(&mut self, targets: &[String], args: &Value) -> Vec<Value> {
        let Some(conidex) = targets.first() else {
            return self.error("Topic unknown smd: a conid is required");
        };
        let conid = conidex
            .split('@')
            .next()
            .and_then(|c| c.parse::<i64>().ok());
        let Some(conid) = conid.filter(|c| self.sim.universe.get(*c).is_some()) else {
            return self.error(format!("smd+{conidex}: unknown contract"));
        };
        let fields: BTreeSet<String> = args
            .get("fields")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let until = Instant::now() + self.hub().config.smd_lifetime;
        let key = format!("smd+{conid}");
        if let Some(s) = self.subs.smd.get_mut(&conid) {
            s.fields.extend(fields);
            s.until = until;
            self.count_sub(&key, true);
            return Vec::new();
        }
        self.count_sub(&key, false);
        let (server_id, preflight) = {
            let mut st = self.sim.lock();
            let first = !st.session.subscriptions.contains_key(&conid);
            if first {
                let id = format!("q{}", st.session.next_server_id);
                st.session.next_server_id += 1;
                st.session.subscriptions.insert(conid, id);
            }
            (
                st.session.subscriptions[&conid].clone(),
                first && st.snapshot_preflight,
            )
        };
        let mut s = Smd {
            conidex: conidex.clone(),
            fields,
            last: Map::new(),
            server_id,
            until,
        };
        let out = if preflight {
            let mut m = Map::new();
            m.insert("server_id".into(), json!(s.server_id));
            Some(smd_frame(conid, &s.conidex, m))
        } else {
            self.market_update(conid, &mut s)
        };
        self.subs.smd.insert(conid, s);
        out.into_iter().collect()
    }

    fn unsub_market(&mut self, targets: &[String]) -> Vec<Value> {
        let conid = targets
            .first()
            .and_then(|t| t.split('@').next())
            .and_then(|c| c.parse::<i64>().ok());
        let Some(conid) = conid else {
            return self.error("Topic unknown umd: a conid is required");
        };
        let was = self.subs.smd.remove(&conid).is_some();
        self.count_unsub(&format!("smd+{conid}"), was);
        Vec::new()
    }

    /// The changed fields of one stream as a message (`None` when nothing changed).
    fn market_update(&self, conid: i64, s: &mut Smd) -> Option<Value> {
        let now = {
            let st = self.sim.lock();
            feed::market_fields(&self.sim, &st, conid, &s.fields)?
        };
        let first = s.last.is_empty();
        let mut changed: Map<String, Value> = now
            .into_iter()
            .filter(|(k, v)| s.last.get(k) != Some(v))
            .collect();
        if changed.is_empty() && !first {
            return None;
        }
        for (k, v) in &changed {
            s.last.insert(k.clone(), v.clone());
        }
        if first {
            changed.insert("server_id".into(), json!(s.server_id));
            changed.insert("6119".into(), json!(s.server_id));
            changed.insert("6509".into(), json!("RpB"));
        }
        Some(smd_frame(conid, &s.conidex, changed))
    }

    /// The periodic work: session changes, market data, P&L and `smd` lifetimes.
    fn on_update(&mut self) -> Vec<Value> {
        if matches!(self.phase, Phase::AwaitSession | Phase::Greeting(_)) {
            return Vec::new();
        }
        let (authenticated, sts) = {
            let mut st = self.sim.lock();
            st.session.expire_if_idle(Instant::now());
            (
                st.session.authenticated(),
                protocol::sts(&auth_status_body(&st), USER_NAME),
            )
        };
        match (self.phase, authenticated) {
            (Phase::Ready, false) => {
                self.end_all();
                self.phase = Phase::NotAuthenticated;
                return vec![sts];
            }
            (Phase::NotAuthenticated, true) => {
                let mut out = vec![sts];
                out.extend(self.open_gate());
                return out;
            }
            (Phase::NotAuthenticated, false) => return Vec::new(),
            _ => {}
        }
        self.expire_market();
        if !self.subs.smd.is_empty() || self.subs.spl.is_some() || self.subs.sor.is_some() {
            // A streamed market moves on its own, not only when a REST request steps it.
            if self.hub().market_due() {
                let mut st = self.sim.lock();
                st.step_market(&self.sim.universe);
            }
        }
        let mut out = Vec::new();
        let conids: Vec<i64> = self.subs.smd.keys().copied().collect();
        for conid in conids {
            let mut s = self.subs.smd.remove(&conid).expect("listed");
            out.extend(self.market_update(conid, &mut s));
            self.subs.smd.insert(conid, s);
        }
        if self.subs.spl.is_some() {
            let pnl = {
                let st = self.sim.lock();
                feed::pnl(&self.sim, &st)
            };
            if self.subs.spl.as_ref() != Some(&pnl) {
                out.push(json!({ "topic": "spl", "args": pnl }));
                self.subs.spl = Some(pnl);
            }
        }
        out
    }

    /// Ends the `smd` streams whose lifetime is over (silently).
    fn expire_market(&mut self) {
        let now = Instant::now();
        let expired: Vec<i64> = self
            .subs
            .smd
            .iter()
            .filter(|(_, s)| s.until <= now)
            .map(|(c, _)| *c)
            .collect();
        let mut stats = self.sim.hub.stats();
        for conid in expired {
            self.subs.smd.remove(&conid);
            stats.smd_expired += 1;
            bump(&mut stats.active, &format!("smd+{conid}"), false);
        }
    }

    /// Handles an order-book event.
    fn on_feed(&mut self, ev: FeedEvent) -> Vec<Value> {
        if self.phase != Phase::Ready {
            return Vec::new();
        }
        match ev {
            FeedEvent::Order(row) => match &self.subs.sor {
                Some(f) if f.passes(&row) => vec![json!({ "topic": "sor", "args": [row] })],
                _ => Vec::new(),
            },
            FeedEvent::Execution(row) if self.subs.str => {
                vec![json!({ "topic": "str", "args": [row] })]
            }
            FeedEvent::Execution(_) => Vec::new(),
        }
    }

    /// Ends every subscription of the socket (brokerage session lost, socket closed).
    fn end_all(&mut self) {
        let mut keys: Vec<String> = Vec::new();
        if self.subs.sor.is_some() {
            keys.push("sor".into());
        }
        if self.subs.str {
            keys.push("str".into());
        }
        if self.subs.spl.is_some() {
            keys.push("spl".into());
        }
        keys.extend(self.subs.smd.keys().map(|c| format!("smd+{c}")));
        self.subs = Subs::default();
        let mut stats = self.sim.hub.stats();
        for k in keys {
            bump(&mut stats.active, &k, false);
        }
    }
}

/// An `smd+<conid>` message with `fields` and the stream's identification.
fn smd_frame(conid: i64, conidex: &str, mut fields: Map<String, Value>) -> Value {
    fields.insert("conid".into(), json!(conid));
    fields.insert("conidEx".into(), json!(conidex));
    fields.insert("_updated".into(), json!(now_ms()));
    fields.insert("topic".into(), json!(format!("smd+{conid}")));
    Value::Object(fields)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The statistics key of an outgoing message: its topic, or `message` / `error`.
fn sent_key(v: &Value) -> String {
    match v.get("topic").and_then(Value::as_str) {
        Some(t) => t.to_string(),
        None if v.get("error").is_some() => "error".into(),
        None => "message".into(),
    }
}

/// Sends `out`; `false` when the socket is gone.
async fn send_all(socket: &mut WebSocket, hub: &Hub, out: Vec<Value>) -> bool {
    for v in out {
        let text = v.to_string();
        let msg = if hub.config.binary_frames {
            Message::Binary(text.into_bytes().into())
        } else {
            Message::Text(text.into())
        };
        if socket.send(msg).await.is_err() {
            return false;
        }
        bump(&mut hub.stats().sent, &sent_key(&v), true);
    }
    true
}

/// Waits for `at`, or forever.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Waits for the next tick of `i`, or forever.
async fn tick(i: &mut Option<Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn every(period: std::time::Duration) -> Interval {
    let period = period.max(std::time::Duration::from_millis(1));
    let mut i = tokio::time::interval_at((Instant::now() + period).into(), period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

/// Serves one socket until the client leaves, the socket is cut (`cut`: `/sim/ws/drop`;
/// `conn`: restart or shutdown) or a send fails. A cut closes without a close frame.
pub(crate) async fn run(
    sim: Arc<Sim>,
    mut socket: WebSocket,
    await_session: bool,
    conn: CancellationToken,
    cut: CancellationToken,
) {
    {
        let mut s = sim.hub.stats();
        s.connections_open += 1;
        s.connections_total += 1;
    }
    let mut c = Conn::new(sim.clone(), await_session);
    let mut events = sim.hub.feed.subscribe();
    serve(&mut c, &mut socket, &mut events, &conn, &cut).await;
    c.end_all();
    let mut s = sim.hub.stats();
    s.connections_open = s.connections_open.saturating_sub(1);
}

async fn serve(
    c: &mut Conn,
    socket: &mut WebSocket,
    events: &mut broadcast::Receiver<FeedEvent>,
    conn: &CancellationToken,
    cut: &CancellationToken,
) {
    let hub_cfg = c.hub().config.clone();
    let mut heartbeat: Option<Interval> = None;
    let mut update = every(hub_cfg.update_interval);
    if !send_all(socket, c.hub(), c.opening()).await {
        return;
    }
    loop {
        let out = tokio::select! {
            _ = conn.cancelled() => return,
            _ = cut.cancelled() => {
                c.hub().stats().dropped_sockets += 1;
                return;
            }
            _ = until(c.greeting_due()) => {
                heartbeat = Some(every(hub_cfg.heartbeat));
                c.finish_greeting()
            }
            _ = tick(&mut heartbeat) => vec![protocol::heartbeat(now_ms())],
            _ = update.tick() => c.on_update(),
            ev = events.recv() => match ev {
                Ok(ev) => c.on_feed(ev),
                Err(broadcast::error::RecvError::Lagged(_)) => Vec::new(),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => c.on_text(t.as_str()),
                Some(Ok(Message::Binary(b))) => c.on_text(&String::from_utf8_lossy(&b)),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => Vec::new(),
            },
        };
        if !send_all(socket, c.hub(), out).await {
            return;
        }
        if c.close {
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    }
}
