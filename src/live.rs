//! Live events: IBKR's WebSocket (`/v1/api/ws`) behind a hub of shared topics.
//!
//! One socket per server (so per gateway or OAuth session), opened when the first topic is
//! wanted ([`Live::subscribe`]), kept alive (`tic`, and a watchdog on IBKR's heartbeats) and
//! reopened with backoff ([`socket`]). Each topic ([`Topic`]: working orders, the day's
//! executions, P&L, one contract's quote) is one IBKR subscription however many MCP
//! subscribers and waiting tools hold a [`Lease`] on it; the last lease dropped unsubscribes it.
//!
//! The hub keeps each topic's current state, not a log of messages: IBKR never replays what a
//! socket missed, so after every gap (a new socket, or a brokerage session that ended and came
//! back) the state is read again over REST before the stream's events are applied on top of it.
//! Subscribers are told *that* a topic changed (a `watch` version); they read the state.

pub mod socket;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::ibkr::Client;

/// What can be streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Working orders and their status changes (`sor`).
    Orders,
    /// Executions of the day (`str`).
    Trades,
    /// P&L per account (`spl`).
    Pnl,
    /// One contract's quote (`smd+<conid>`).
    Quote(i64),
}

/// The quote fields a quote stream asks for: last, bid, ask, change, change %, volume, prior
/// close, open, high, low, bid/ask size, mark, short volume, and the data availability.
pub const QUOTE_FIELDS: &[&str] = &[
    "31", "84", "86", "82", "83", "7762", "7741", "7295", "70", "71", "88", "85", "7635", "87",
    "6509",
];

impl Topic {
    /// The subscription's key, as IBKR's messages and the simulator's statistics name it.
    pub fn key(&self) -> String {
        match self {
            Topic::Orders => "sor".into(),
            Topic::Trades => "str".into(),
            Topic::Pnl => "spl".into(),
            Topic::Quote(c) => format!("smd+{c}"),
        }
    }

    /// The message that starts it. Built from the topic alone (a conid is a number): nothing a
    /// caller writes reaches the socket.
    pub fn subscribe_message(&self) -> String {
        match self {
            Topic::Orders => "sor+{}".into(),
            Topic::Trades => r#"str+{"realtimeUpdatesOnly":false,"days":1}"#.into(),
            Topic::Pnl => "spl+{}".into(),
            Topic::Quote(c) => format!("smd+{c}+{}", json!({ "fields": QUOTE_FIELDS })),
        }
    }

    /// The message that ends it.
    pub fn unsubscribe_message(&self) -> String {
        match self {
            Topic::Orders => "uor+{}".into(),
            Topic::Trades => "utr".into(),
            Topic::Pnl => "upl+{}".into(),
            Topic::Quote(c) => format!("umd+{c}+{{}}"),
        }
    }
}

/// Settings of the live events.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// `ws://` or `wss://` URL of `/v1/api/ws`.
    pub ws_url: String,
    /// Accept the gateway's self-signed certificate.
    pub accept_invalid_certs: bool,
    /// Most quote streams at once (IBKR bounds them by the account's market data lines).
    pub max_quotes: usize,
    /// How often `tic` is sent (IBKR wants one at least every minute).
    pub tic_every: Duration,
    /// The socket is taken for dead after this long without any message (IBKR sends a
    /// heartbeat every 10 s).
    pub dead_after: Duration,
    /// A quote stream is asked for again after this long (IBKR ends them after 10 minutes).
    pub quote_renew: Duration,
    /// Most time to wait for the socket to connect.
    pub connect_timeout: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
}

impl LiveConfig {
    /// Settings for the gateway at `base_url` (its `/v1/api` URL).
    pub fn for_base_url(base_url: &str, accept_invalid_certs: bool) -> Result<Self, String> {
        Ok(Self {
            ws_url: ws_url(base_url)?,
            accept_invalid_certs,
            max_quotes: 50,
            tic_every: Duration::from_secs(30),
            dead_after: Duration::from_secs(35),
            quote_renew: Duration::from_secs(9 * 60),
            connect_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
        })
    }
}

/// `https://host:5000/v1/api` → `wss://host:5000/v1/api/ws`.
pub fn ws_url(base_url: &str) -> Result<String, String> {
    let mut u = url::Url::parse(base_url).map_err(|e| format!("gateway URL {base_url}: {e}"))?;
    let scheme = match u.scheme() {
        "https" => "wss",
        "http" => "ws",
        other => return Err(format!("gateway URL scheme {other} has no WebSocket")),
    };
    u.set_scheme(scheme)
        .map_err(|()| format!("cannot make a WebSocket URL of {base_url}"))?;
    let path = format!("{}/ws", u.path().trim_end_matches('/'));
    u.set_path(&path);
    u.set_query(None);
    Ok(u.to_string())
}

/// What the socket is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketState {
    /// Nothing has asked for live events yet: no socket.
    Idle,
    /// Opening the socket.
    Connecting,
    /// Open, waiting for IBKR's ready signal (an authenticated `sts`).
    WaitingForReady,
    /// Events flow.
    Ready,
    /// The socket failed or closed; waiting before the next attempt.
    Reconnecting,
}

/// The socket as `get_session_status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SocketStatus {
    /// Where it stands.
    pub state: SocketState,
    /// The WebSocket URL.
    pub url: String,
    /// Since when it is in this state (RFC 3339).
    pub since: String,
    /// Sockets opened since start.
    pub connections: u64,
    /// Gaps since start (socket lost, or IBKR ended the brokerage session under it); each one
    /// is followed by a REST re-sync of every topic.
    pub gaps: u64,
    /// REST re-syncs done.
    pub resyncs: u64,
    /// Messages received.
    pub messages: u64,
    /// The last heartbeat from IBKR (RFC 3339).
    pub last_heartbeat: Option<String>,
    /// The last problem (socket, re-sync, or an `error` message from IBKR), with when.
    pub last_error: Option<String>,
    /// The topics streamed now, with how many subscribers each has.
    pub topics: Vec<TopicStatus>,
    /// What the state means, in words.
    pub explanation: String,
}

/// One streamed topic.
#[derive(Debug, Clone, Serialize)]
pub struct TopicStatus {
    /// `sor`, `str`, `spl`, `smd+<conid>`.
    pub key: String,
    /// Leases held (MCP subscriptions and waiting tools).
    pub subscribers: usize,
    /// Its state is current (re-synced since the last gap).
    pub synced: bool,
}

/// Commands to the socket task.
#[derive(Debug)]
enum Cmd {
    Subscribe(Topic),
    Unsubscribe(Topic),
}

/// One topic's state.
#[derive(Debug)]
struct Entry {
    leases: usize,
    synced: bool,
    data: Data,
    version: watch::Sender<u64>,
    /// When its subscription message was last sent (quotes are renewed).
    sent: Option<Instant>,
    /// The last error IBKR sent about it.
    error: Option<String>,
}

/// What a topic holds.
#[derive(Debug, Clone)]
pub enum Data {
    /// Orders by id, and the recent changes.
    Orders(OrderBook),
    /// Executions by id, in arrival order.
    Trades(Vec<Value>),
    /// P&L rows by `<account>.Core`.
    Pnl(Map<String, Value>),
    /// The quote's fields as IBKR sent them (merged).
    Quote(Map<String, Value>),
}

/// Most status changes kept per order book.
const MAX_CHANGES: usize = 100;
/// Most orders and executions kept (the oldest go first): a server that runs for weeks does
/// not grow without bound.
const MAX_ROWS: usize = 1000;

/// Working and recent orders and their status changes.
#[derive(Debug, Clone, Default)]
pub struct OrderBook {
    /// Rows merged from REST and the stream, by order id.
    pub orders: BTreeMap<String, Map<String, Value>>,
    /// Status changes, oldest first, the last 100.
    pub changes: VecDeque<Value>,
    seq: u64,
}

/// Where an order row came from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// The WebSocket.
    Stream,
    /// A REST re-sync after a gap.
    Rest,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Stream => "stream",
            Source::Rest => "rest_resync",
        }
    }
}

/// Whether an order status is final (filled, cancelled, inactive).
pub fn is_terminal(status: &str) -> bool {
    matches!(
        status.to_ascii_lowercase().as_str(),
        "filled" | "cancelled" | "inactive"
    )
}

/// An id sent as a number or as text, as text.
pub fn id_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl OrderBook {
    /// Merges `rows` (IBKR order rows, partial or whole); records status and fill changes.
    /// A finished order (filled, cancelled) never goes back to working: a late or replayed
    /// row cannot undo what was already seen. Returns whether anything changed.
    pub fn apply(&mut self, rows: &[Value], source: Source) -> bool {
        let mut changed = false;
        for row in rows {
            let Some(obj) = row.as_object() else { continue };
            let Some(id) = id_text(obj.get("orderId")) else {
                continue;
            };
            let entry = self.orders.entry(id.clone()).or_default();
            let before_status = entry
                .get("status")
                .and_then(Value::as_str)
                .map(str::to_string);
            let before_filled = entry.get("filledQuantity").cloned();
            let keep_terminal = before_status.as_deref().is_some_and(is_terminal);
            for (k, v) in obj {
                // The id is the key (IBKR sends it as a number or as text).
                if k == "orderId" && entry.contains_key(k) {
                    continue;
                }
                if k == "status" && keep_terminal && !v.as_str().is_some_and(is_terminal) {
                    continue;
                }
                if entry.get(k) != Some(v) {
                    entry.insert(k.clone(), v.clone());
                    changed = true;
                }
            }
            let status = entry
                .get("status")
                .and_then(Value::as_str)
                .map(str::to_string);
            let filled = entry.get("filledQuantity").cloned();
            if status != before_status || (filled != before_filled && before_status.is_some()) {
                self.seq += 1;
                let change = json!({
                    "seq": self.seq,
                    "at": crate::audit::now(),
                    "order_id": id,
                    "symbol": entry.get("ticker").cloned().unwrap_or(Value::Null),
                    "status": status,
                    "filled": entry.get("filledQuantity").and_then(crate::ibkr::market::number),
                    "remaining": entry.get("remainingQuantity").and_then(crate::ibkr::market::number),
                    "source": source.name(),
                });
                self.changes.push_back(change);
                while self.changes.len() > MAX_CHANGES {
                    self.changes.pop_front();
                }
            }
        }
        // Ids grow with time: the smallest are the oldest.
        while self.orders.len() > MAX_ROWS {
            let oldest = self
                .orders
                .keys()
                .min_by_key(|k| k.parse::<u64>().unwrap_or(0))
                .cloned();
            match oldest {
                Some(k) => self.orders.remove(&k),
                None => break,
            };
        }
        changed
    }
}

impl Data {
    /// Nothing yet, for `topic`.
    pub fn empty(topic: Topic) -> Self {
        match topic {
            Topic::Orders => Data::Orders(OrderBook::default()),
            Topic::Trades => Data::Trades(Vec::new()),
            Topic::Pnl => Data::Pnl(Map::new()),
            Topic::Quote(_) => Data::Quote(Map::new()),
        }
    }

    /// Applies one message's payload; returns whether anything changed.
    pub fn apply(&mut self, payload: &Value, source: Source) -> bool {
        match self {
            Data::Orders(book) => {
                book.apply(payload.as_array().map_or(&[][..], Vec::as_slice), source)
            }
            Data::Trades(rows) => {
                let mut changed = false;
                for r in payload.as_array().into_iter().flatten() {
                    // Without an id it cannot be told from a repeat: not kept.
                    let Some(id) = id_text(r.get("execution_id")) else {
                        continue;
                    };
                    if !rows
                        .iter()
                        .any(|x| id_text(x.get("execution_id")).as_deref() == Some(id.as_str()))
                    {
                        rows.push(r.clone());
                        changed = true;
                    }
                }
                if rows.len() > MAX_ROWS {
                    rows.drain(..rows.len() - MAX_ROWS);
                }
                changed
            }
            Data::Pnl(map) => merge(map, payload),
            Data::Quote(map) => merge(map, payload),
        }
    }
}

/// Merges an object's fields into `map`, each key's object merged field by field.
fn merge(map: &mut Map<String, Value>, payload: &Value) -> bool {
    let mut changed = false;
    for (k, v) in payload.as_object().into_iter().flatten() {
        match (map.get_mut(k), v) {
            (Some(Value::Object(old)), Value::Object(new)) => {
                for (f, x) in new {
                    if old.get(f) != Some(x) {
                        old.insert(f.clone(), x.clone());
                        changed = true;
                    }
                }
            }
            _ => {
                if map.get(k) != Some(v) {
                    map.insert(k.clone(), v.clone());
                    changed = true;
                }
            }
        }
    }
    changed
}

/// A topic's state as read by a subscriber.
#[derive(Debug, Clone)]
pub struct View {
    /// The data.
    pub data: Data,
    /// Re-synced since the last gap: the data is current.
    pub synced: bool,
    /// The socket's state.
    pub socket: SocketState,
    /// The last error IBKR sent about the topic.
    pub error: Option<String>,
}

/// Why a topic cannot be streamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Too many quote streams.
    QuoteLimit(usize),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::QuoteLimit(n) => write!(
                f,
                "this server already streams {n} quotes, its limit (--live-max-quotes, which \
                 should stay within the account's market data lines); unsubscribe from a quote \
                 first, or read ibkr://quote/... without subscribing"
            ),
        }
    }
}

/// The hub (see the module docs).
pub struct Live {
    config: LiveConfig,
    client: Client,
    oauth: Option<Arc<crate::ibkr::oauth::OAuth>>,
    session: Option<Arc<crate::ibkr::session::SessionManager>>,
    inner: Mutex<Inner>,
    commands: mpsc::UnboundedSender<Cmd>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Cmd>>>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("url", &self.config.ws_url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Inner {
    topics: HashMap<Topic, Entry>,
    state: SocketState,
    since: String,
    connections: u64,
    gaps: u64,
    resyncs: u64,
    messages: u64,
    last_heartbeat: Option<String>,
    last_error: Option<String>,
    started: bool,
}

/// A hold on a topic: while any lease on it lives, IBKR streams it.
pub struct Lease {
    live: Arc<Live>,
    topic: Topic,
    linger: Duration,
    /// Bumped on every change of the topic's state.
    pub changes: watch::Receiver<u64>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("topic", &self.topic).finish()
    }
}

impl Lease {
    /// The topic's state now.
    pub fn view(&self) -> Option<View> {
        self.live.view(self.topic)
    }

    /// Keeps the topic streamed for `linger` after this lease is dropped: a tool a model calls
    /// again and again (waiting for an order) does not restart the stream, and its REST
    /// re-sync, each time.
    pub fn lingering(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.linger.is_zero()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (live, topic, linger) = (self.live.clone(), self.topic, self.linger);
            rt.spawn(async move {
                tokio::time::sleep(linger).await;
                live.release(topic);
            });
            return;
        }
        self.live.release(self.topic);
    }
}

impl Live {
    /// A hub over `client` (the socket starts with the first subscription).
    pub fn new(
        config: LiveConfig,
        client: Client,
        oauth: Option<Arc<crate::ibkr::oauth::OAuth>>,
        session: Option<Arc<crate::ibkr::session::SessionManager>>,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            config,
            client,
            oauth,
            session,
            inner: Mutex::new(Inner {
                topics: HashMap::new(),
                state: SocketState::Idle,
                since: crate::audit::now(),
                connections: 0,
                gaps: 0,
                resyncs: 0,
                messages: 0,
                last_heartbeat: None,
                last_error: None,
                started: false,
            }),
            commands: tx,
            receiver: Mutex::new(Some(rx)),
            cancel,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a lease on `topic`, starting its IBKR subscription (and the socket) if it is the
    /// first.
    pub fn subscribe(self: &Arc<Self>, topic: Topic) -> Result<Lease, Refusal> {
        let (changes, start) = {
            let mut inner = self.lock();
            let quotes = inner
                .topics
                .keys()
                .filter(|t| matches!(t, Topic::Quote(_)))
                .count();
            let changes = match inner.topics.get_mut(&topic) {
                Some(e) => {
                    e.leases += 1;
                    e.version.subscribe()
                }
                None => {
                    if matches!(topic, Topic::Quote(_)) && quotes >= self.config.max_quotes {
                        return Err(Refusal::QuoteLimit(self.config.max_quotes));
                    }
                    let (tx, rx) = watch::channel(0);
                    inner.topics.insert(
                        topic,
                        Entry {
                            leases: 1,
                            synced: false,
                            data: Data::empty(topic),
                            version: tx,
                            sent: None,
                            error: None,
                        },
                    );
                    let _ = self.commands.send(Cmd::Subscribe(topic));
                    rx
                }
            };
            let start = !inner.started;
            inner.started = true;
            (changes, start)
        };
        if start {
            let rx = self
                .receiver
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(rx) = rx {
                tokio::spawn(socket::run(self.clone(), rx));
            }
        }
        Ok(Lease {
            live: self.clone(),
            topic,
            linger: Duration::ZERO,
            changes,
        })
    }

    fn release(&self, topic: Topic) {
        let mut inner = self.lock();
        if let Some(e) = inner.topics.get_mut(&topic) {
            e.leases = e.leases.saturating_sub(1);
            if e.leases == 0 {
                inner.topics.remove(&topic);
                let _ = self.commands.send(Cmd::Unsubscribe(topic));
            }
        }
    }

    /// A topic's state, if someone holds it.
    pub fn view(&self, topic: Topic) -> Option<View> {
        let inner = self.lock();
        inner.topics.get(&topic).map(|e| View {
            data: e.data.clone(),
            synced: e.synced,
            socket: inner.state,
            error: e.error.clone(),
        })
    }

    /// The socket's status for `get_session_status`.
    pub fn status(&self) -> SocketStatus {
        let inner = self.lock();
        let mut topics: Vec<TopicStatus> = inner
            .topics
            .iter()
            .map(|(t, e)| TopicStatus {
                key: t.key(),
                subscribers: e.leases,
                synced: e.synced,
            })
            .collect();
        topics.sort_by(|a, b| a.key.cmp(&b.key));
        let explanation = match inner.state {
            SocketState::Idle => "no live subscription yet: the socket opens with the first one",
            SocketState::Connecting => "opening IBKR's WebSocket",
            SocketState::WaitingForReady => {
                "connected; waiting for IBKR to say the brokerage session is ready (subscriptions \
                 are sent then)"
            }
            SocketState::Ready => "events flow",
            SocketState::Reconnecting => {
                "the socket was lost; reconnecting with backoff (state is re-read over REST once \
                 it is back)"
            }
        };
        SocketStatus {
            state: inner.state,
            url: self.config.ws_url.clone(),
            since: inner.since.clone(),
            connections: inner.connections,
            gaps: inner.gaps,
            resyncs: inner.resyncs,
            messages: inner.messages,
            last_heartbeat: inner.last_heartbeat.clone(),
            last_error: inner.last_error.clone(),
            topics,
            explanation: explanation.into(),
        }
    }

    fn set_state(&self, state: SocketState) {
        let mut inner = self.lock();
        if inner.state != state {
            tracing::info!(from = ?inner.state, to = ?state, "live events socket");
            inner.state = state;
            inner.since = crate::audit::now();
        }
    }

    fn note_error(&self, e: impl Into<String>) {
        let e = e.into();
        tracing::warn!(error = %e, "live events");
        self.lock().last_error = Some(format!("{}: {e}", crate::audit::now()));
    }

    /// A gap: every topic's state is stale until re-synced; subscribers hear of it.
    fn gap(&self) {
        let mut inner = self.lock();
        inner.gaps += 1;
        for (t, e) in inner.topics.iter_mut() {
            if e.synced {
                e.synced = false;
                e.version.send_modify(|v| *v += 1);
            }
            e.sent = None;
            // A quote from before the gap is not a current price.
            if matches!(t, Topic::Quote(_)) {
                e.data = Data::empty(*t);
                e.error = None;
            }
        }
    }

    /// Topics held now.
    fn topics(&self) -> Vec<Topic> {
        let mut t: Vec<Topic> = self.lock().topics.keys().copied().collect();
        t.sort();
        t
    }

    /// Applies a payload to `topic`, if held; marks it synced when it comes from a re-sync (or
    /// a quote's own stream, which always starts with a full message).
    fn apply(&self, topic: Topic, payload: &Value, source: Source, syncs: bool) {
        let mut inner = self.lock();
        if matches!(source, Source::Rest) {
            inner.resyncs += 1;
        }
        if let Some(e) = inner.topics.get_mut(&topic) {
            if matches!(topic, Topic::Quote(_)) {
                // Data flows: an earlier refusal no longer holds.
                e.error = None;
            }
            let mut changed = e.data.apply(payload, source);
            if syncs && !e.synced {
                e.synced = true;
                changed = true;
            }
            if changed {
                e.version.send_modify(|v| *v += 1);
            }
        }
    }

    fn topic_error(&self, topic: Topic, error: String) {
        let mut inner = self.lock();
        if let Some(e) = inner.topics.get_mut(&topic) {
            e.error = Some(error);
            e.version.send_modify(|v| *v += 1);
        }
    }

    fn mark_sent(&self, topic: Topic) {
        if let Some(e) = self.lock().topics.get_mut(&topic) {
            e.sent = Some(Instant::now());
        }
    }

    fn held(&self, topic: Topic) -> bool {
        self.lock().topics.contains_key(&topic)
    }

    /// Held, subscribed on this socket, and not re-synced yet.
    fn needs_resync(&self, topic: Topic) -> bool {
        self.lock()
            .topics
            .get(&topic)
            .is_some_and(|e| e.sent.is_some() && !e.synced)
    }

    /// A REST read of `topic` made for a reader, asked at `asked`: when the topic waits for
    /// its re-sync on a ready socket and the read was asked after the subscription went out,
    /// this read is the re-sync.
    pub fn offer_rest(&self, topic: Topic, reply: serde_json::Value, asked: Instant) {
        let fits = {
            let inner = self.lock();
            inner.state == SocketState::Ready
                && inner
                    .topics
                    .get(&topic)
                    .is_some_and(|e| !e.synced && e.sent.is_some_and(|sent| sent <= asked))
        };
        if fits {
            self.apply(
                topic,
                &socket::rest_payload(topic, reply),
                Source::Rest,
                true,
            );
        }
    }

    /// Held, and not yet asked for on this socket.
    fn needs_start(&self, topic: Topic) -> bool {
        self.lock()
            .topics
            .get(&topic)
            .is_some_and(|e| e.sent.is_none())
    }

    /// Quote topics whose stream is due to be asked for again.
    fn due_for_renewal(&self) -> Vec<Topic> {
        let renew = self.config.quote_renew;
        self.lock()
            .topics
            .iter()
            .filter(|(t, e)| {
                matches!(t, Topic::Quote(_)) && e.sent.is_some_and(|s| s.elapsed() >= renew)
            })
            .map(|(t, _)| *t)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_url_follows_the_gateway_url() {
        assert_eq!(
            ws_url("https://localhost:5000/v1/api").unwrap(),
            "wss://localhost:5000/v1/api/ws"
        );
        assert_eq!(
            ws_url("http://127.0.0.1:5001/v1/api/").unwrap(),
            "ws://127.0.0.1:5001/v1/api/ws"
        );
        assert!(ws_url("ftp://x/v1/api").is_err());
    }

    #[test]
    fn messages_are_built_from_the_topic_alone() {
        assert_eq!(Topic::Orders.subscribe_message(), "sor+{}");
        assert_eq!(Topic::Trades.unsubscribe_message(), "utr");
        assert_eq!(Topic::Quote(265598).unsubscribe_message(), "umd+265598+{}");
        let m = Topic::Quote(265598).subscribe_message();
        assert!(m.starts_with("smd+265598+{\"fields\":[\"31\""), "{m}");
    }

    #[test]
    fn orders_merge_partial_rows_and_never_leave_a_final_status() {
        let mut b = OrderBook::default();
        assert!(b.apply(
            &[json!({"orderId": 1, "status": "Submitted", "ticker": "AAPL", "filledQuantity": 0, "remainingQuantity": 5})],
            Source::Rest,
        ));
        assert!(b.apply(
            &[json!({"orderId": "1", "status": "Filled", "filledQuantity": 5, "remainingQuantity": 0})],
            Source::Stream,
        ));
        // A late row from an older view: the order stays filled.
        assert!(!b.apply(
            &[json!({"orderId": 1, "status": "Submitted"})],
            Source::Rest
        ));
        assert_eq!(b.orders["1"]["status"], "Filled");
        assert_eq!(b.orders["1"]["ticker"], "AAPL");
        let statuses: Vec<&str> = b
            .changes
            .iter()
            .map(|c| c["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["Submitted", "Filled"]);
        assert_eq!(b.changes[1]["source"], "stream");
        // No change, no record.
        assert!(!b.apply(&[json!({"orderId": 1, "status": "Filled"})], Source::Stream));
        assert_eq!(b.changes.len(), 2);
    }

    #[test]
    fn quotes_and_pnl_merge_field_by_field() {
        let mut q = Data::Quote(Map::new());
        assert!(q.apply(&json!({"31": "10.0", "84": "9.9"}), Source::Stream));
        assert!(q.apply(&json!({"31": "10.1"}), Source::Stream));
        assert!(!q.apply(&json!({"31": "10.1"}), Source::Stream));
        let Data::Quote(m) = q else { unreachable!() };
        assert_eq!(m["31"], "10.1");
        assert_eq!(m["84"], "9.9");
        let mut p = Data::Pnl(Map::new());
        assert!(p.apply(
            &json!({"DU1.Core": {"dpl": 1.0, "nl": 5.0}}),
            Source::Stream
        ));
        assert!(p.apply(&json!({"DU1.Core": {"dpl": 2.0}}), Source::Stream));
        let Data::Pnl(m) = p else { unreachable!() };
        assert_eq!(m["DU1.Core"], json!({"dpl": 2.0, "nl": 5.0}));
    }

    #[test]
    fn trades_are_kept_once_per_execution() {
        let mut t = Data::Trades(Vec::new());
        assert!(t.apply(
            &json!([{"execution_id": "e1"}, {"execution_id": "e2"}]),
            Source::Rest
        ));
        assert!(!t.apply(&json!([{"execution_id": "e1"}]), Source::Stream));
        let Data::Trades(rows) = t else {
            unreachable!()
        };
        assert_eq!(rows.len(), 2);
    }
}
