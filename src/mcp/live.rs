//! Live resources: what a trader watches, as MCP resources that can be subscribed to.
//!
//! | URI | what | IBKR stream |
//! |---|---|---|
//! | `ibkr://orders` | working and recent orders, and their status changes | `sor` |
//! | `ibkr://trades` | the day's executions | `str` |
//! | `ibkr://pnl` | daily and unrealized P&L, net liquidity per account | `spl` |
//! | `ibkr://account/{id}/summary` | one account's overview | `spl` (a change triggers) |
//! | `ibkr://quote/{symbol-or-conid}` | one contract's quote | `smd+<conid>` |
//!
//! `resources/read` answers from the stream's state when a subscription holds it (and it is
//! re-synced), else over REST. A subscription (`resources/subscribe` on 2025-11-25 sessions,
//! `subscriptions/listen` on 2026-07-28) takes a [`Lease`] on the topic — one IBKR
//! subscription however many clients watch it — and sends `notifications/resources/updated` at
//! most once per `--live-coalesce-ms`: changes in between fold into the next notification, and
//! reading gives the latest state.
//!
//! A URI is written by whoever the model listens to: it only selects one of these topics, a
//! symbol goes through IBKR's contract search like any task tool's, and an account must be one
//! of the login's. Nothing of it is sent on the socket.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::Peer;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::IbkrServer;
use super::catalog;
use crate::error::ToolError;
use crate::live::{Data, Lease, Source, Topic, View};

/// Working orders.
pub const ORDERS: &str = "ibkr://orders";
/// The day's executions.
pub const TRADES: &str = "ibkr://trades";
/// P&L per account.
pub const PNL: &str = "ibkr://pnl";
/// `ibkr://quote/{symbol}`.
pub const QUOTE_TEMPLATE: &str = "ibkr://quote/{symbol}";
/// `ibkr://account/{account}/summary`.
pub const SUMMARY_TEMPLATE: &str = "ibkr://account/{account}/summary";
const QUOTE_PREFIX: &str = "ibkr://quote/";
const ACCOUNT_PREFIX: &str = "ibkr://account/";
/// Most subscriptions of one MCP session (different spellings of one quote count apart).
const MAX_SUBSCRIPTIONS: usize = 100;
/// Most changes a read of `ibkr://orders` lists.
const CHANGES_SHOWN: usize = 30;

/// A live resource, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveUri {
    /// `ibkr://orders`
    Orders,
    /// `ibkr://trades`
    Trades,
    /// `ibkr://pnl`
    Pnl,
    /// `ibkr://account/{id}/summary`
    Summary(String),
    /// `ibkr://quote/{symbol}` (percent-decoded)
    Quote(String),
}

/// Parses a live resource URI; the error says what the server has.
pub fn parse(uri: &str) -> Result<LiveUri, String> {
    let known = format!(
        "this server has {ORDERS}, {TRADES}, {PNL}, {SUMMARY_TEMPLATE} and {QUOTE_TEMPLATE} \
         (a symbol as the task tools take it: AAPL, SPY@ARCA, ES Mar27, a conid)"
    );
    match uri {
        ORDERS => return Ok(LiveUri::Orders),
        TRADES => return Ok(LiveUri::Trades),
        PNL => return Ok(LiveUri::Pnl),
        _ => {}
    }
    if let Some(rest) = uri.strip_prefix(QUOTE_PREFIX) {
        let symbol = percent_decode(rest)
            .ok_or_else(|| format!("`{uri}`: the symbol is not valid percent-encoded UTF-8"))?;
        let symbol = symbol.trim();
        if symbol.is_empty()
            || symbol.len() > 64
            || !symbol
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || " .@:/-".contains(c))
        {
            return Err(format!(
                "`{uri}`: a quote URI names one symbol or conid (letters, digits, space, . @ : / -; \
                 at most 64 characters), e.g. ibkr://quote/AAPL or ibkr://quote/265598"
            ));
        }
        return Ok(LiveUri::Quote(symbol.to_string()));
    }
    if let Some(rest) = uri.strip_prefix(ACCOUNT_PREFIX)
        && let Some(account) = rest.strip_suffix("/summary")
    {
        if account.is_empty()
            || account.len() > 32
            || !account.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(format!(
                "`{uri}`: the account is an IBKR account id (letters and digits), e.g. \
                 ibkr://account/DU1234567/summary"
            ));
        }
        return Ok(LiveUri::Summary(account.to_string()));
    }
    Err(format!("unknown resource `{uri}`; {known}"))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A subscription of one MCP client to one resource: the lease on its topic and the task that
/// notifies. Dropping it ends both (and, for the last one, IBKR's subscription).
pub struct Subscription {
    _lease: Lease,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One MCP session's subscriptions (2025-11-25 `resources/subscribe`), by URI.
#[derive(Default, Clone)]
pub struct Subscriptions(Arc<Mutex<HashMap<String, Subscription>>>);

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|m| m.len()).unwrap_or_default();
        f.debug_struct("Subscriptions").field("count", &n).finish()
    }
}

/// Sends `send()` whenever the topic changed, at most once per `coalesce`; stops when `send`
/// says the client is gone.
fn notifier<F, Fut>(
    mut changes: watch::Receiver<u64>,
    coalesce: Duration,
    mut send: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    changes.mark_unchanged();
    tokio::spawn(async move {
        loop {
            if changes.changed().await.is_err() {
                return;
            }
            if !send().await {
                return;
            }
            tokio::time::sleep(coalesce).await;
        }
    })
}

/// A request's progress token and the peer to report to (set around a tool call).
#[derive(Clone)]
pub struct Progress {
    peer: Peer<RoleServer>,
    token: ProgressToken,
}

tokio::task_local! {
    /// The running tool call's progress reporter, when its client asked for progress.
    pub static PROGRESS: Progress;
}

impl Progress {
    /// For a request that carries a progress token.
    pub fn of(ctx: &rmcp::service::RequestContext<RoleServer>) -> Option<Self> {
        ctx.meta.get_progress_token().map(|token| Self {
            peer: ctx.peer.clone(),
            token,
        })
    }

    /// Reports progress of the running call, if its client asked; never fails the call.
    pub async fn report(progress: f64, total: f64, message: String) {
        let Ok(p) = PROGRESS.try_with(Clone::clone) else {
            return;
        };
        let mut param = ProgressNotificationParam::new(p.token, progress).with_total(total);
        param.message = Some(message);
        if let Err(e) = p.peer.notify_progress(param).await {
            tracing::debug!(error = %e, "progress notification not delivered");
        }
    }
}

impl IbkrServer {
    /// The live hub, or why there is none.
    pub(crate) fn live(&self) -> Result<&Arc<crate::live::Live>, ToolError> {
        self.state.live.as_ref().ok_or_else(|| {
            ToolError::LiveUnavailable(
                "they are off on this server (--live false / IBKR_MCP_LIVE=false); \
                 read the state with get_account_orders, get_account_trades or \
                 get_price_snapshot instead"
                    .into(),
            )
        })
    }

    /// The topic a live resource is streamed by; checks what it names (the symbol resolves at
    /// IBKR, the account is the login's).
    async fn topic_of(&self, uri: &LiveUri) -> Result<Topic, ToolError> {
        Ok(match uri {
            LiveUri::Orders => Topic::Orders,
            LiveUri::Trades => Topic::Trades,
            LiveUri::Pnl => Topic::Pnl,
            LiveUri::Summary(account) => {
                self.summary(account).await?;
                Topic::Pnl
            }
            LiveUri::Quote(symbol) => Topic::Quote(self.resolve_symbol(symbol).await?.conid),
        })
    }

    /// Starts streaming `uri` for a subscriber: a lease on its topic.
    pub(crate) async fn open_live(&self, uri: &str) -> Result<Lease, ToolError> {
        let live = self.live()?.clone();
        let parsed = parse(uri).map_err(|e| ToolError::Unresolved {
            tool: "resources/subscribe".into(),
            problems: vec![e],
            usage: String::new(),
        })?;
        let topic = self.topic_of(&parsed).await?;
        live.subscribe(topic)
            .map_err(|e| ToolError::LiveUnavailable(e.to_string()))
    }

    /// `resources/subscribe` (2025-11-25): notifications through `peer`.
    pub(crate) async fn subscribe_legacy(
        &self,
        uri: &str,
        peer: Peer<RoleServer>,
    ) -> Result<(), ToolError> {
        {
            let subs = self.subs.0.lock().unwrap_or_else(|p| p.into_inner());
            if subs.contains_key(uri) {
                return Ok(());
            }
            if subs.len() >= MAX_SUBSCRIPTIONS {
                return Err(ToolError::LiveUnavailable(format!(
                    "this session already has {MAX_SUBSCRIPTIONS} subscriptions; unsubscribe \
                     from one first"
                )));
            }
        }
        let lease = self.open_live(uri).await?;
        let notify_uri = uri.to_string();
        let task = notifier(lease.changes.clone(), self.state.coalesce, move || {
            let peer = peer.clone();
            let uri = notify_uri.clone();
            async move {
                peer.notify_resource_updated(rmcp::model::ResourceUpdatedNotificationParam::new(
                    uri,
                ))
                .await
                .is_ok()
            }
        });
        self.subs
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                uri.to_string(),
                Subscription {
                    _lease: lease,
                    task,
                },
            );
        Ok(())
    }

    /// `resources/unsubscribe` (2025-11-25).
    pub(crate) fn unsubscribe_legacy(&self, uri: &str) -> bool {
        self.subs
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uri)
            .is_some()
    }

    /// `subscriptions/listen` (2026-07-28): streams every accepted URI until the client ends
    /// the request. A URI that cannot be streamed ends the listen with an error naming it.
    pub(crate) async fn listen_live(
        &self,
        ctx: rmcp::service::SubscriptionContext,
    ) -> Result<(), rmcp::ErrorData> {
        let uris = ctx
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        let mut held = Vec::new();
        for uri in uris.iter().filter(|u| parse(u).is_ok()) {
            let lease = self.open_live(uri).await.map_err(|e| {
                rmcp::ErrorData::invalid_params(
                    format!("cannot stream `{uri}`: {}", e.message()),
                    None,
                )
            })?;
            let sink = ctx.sink().clone();
            let notify_uri = uri.clone();
            let task = notifier(lease.changes.clone(), self.state.coalesce, move || {
                let sink = sink.clone();
                let uri = notify_uri.clone();
                async move { sink.notify_resource_updated(uri).await.is_ok() }
            });
            held.push(Subscription {
                _lease: lease,
                task,
            });
        }
        ctx.cancelled().await;
        drop(held);
        Ok(())
    }

    /// `resources/read` of a live resource: the stream's state when it is held and current,
    /// else REST.
    pub(crate) async fn read_live(&self, uri: &str) -> Result<Value, ToolError> {
        let parsed = parse(uri).map_err(|e| ToolError::Unresolved {
            tool: "resources/read".into(),
            problems: vec![e],
            usage: String::new(),
        })?;
        let held = |topic: Topic| -> Option<View> {
            self.state
                .live
                .as_ref()
                .and_then(|l| l.view(topic))
                .filter(|v| v.synced)
        };
        match parsed {
            LiveUri::Orders | LiveUri::Trades | LiveUri::Pnl => {
                let topic = self.topic_of(&parsed).await?;
                let view = self.state.live.as_ref().and_then(|l| l.view(topic));
                match view {
                    Some(v) if v.synced => Ok(render(uri, &v.data, "stream")),
                    // Held, but re-syncing after a gap: REST, or else the last state, marked.
                    Some(v) => match self.rest_state(topic).await {
                        Ok(data) => Ok(render(uri, &data, "rest")),
                        Err(e) => {
                            let mut out = render(uri, &v.data, "stream");
                            out["stale"] = json!(true);
                            out["note"] = json!(format!(
                                "the stream is re-syncing after a gap and a REST read failed \
                                 ({}); this is its last state",
                                e.message()
                            ));
                            Ok(out)
                        }
                    },
                    None => Ok(render(uri, &self.rest_state(topic).await?, "rest")),
                }
            }
            LiveUri::Summary(account) => {
                let mut v = self.summary(&account).await?;
                v["uri"] = json!(uri);
                Ok(v)
            }
            LiveUri::Quote(symbol) => {
                let r = self.resolve_symbol(&symbol).await?;
                if let Some(v) = held(Topic::Quote(r.conid))
                    && let Data::Quote(fields) = &v.data
                    && fields.len() > 4
                {
                    let mut row = super::tasks::quote_row(&r.label, r.conid, fields);
                    row["uri"] = json!(uri);
                    row["source"] = json!("stream");
                    row["updated"] = fields
                        .get("_updated")
                        .and_then(Value::as_i64)
                        .and_then(chrono::DateTime::from_timestamp_millis)
                        .map_or(Value::Null, |t| {
                            json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                        });
                    return Ok(row);
                }
                let mut v = self
                    .run_task("get_price_snapshot", json!({ "symbols": [symbol] }))
                    .await?;
                v["uri"] = json!(uri);
                v["source"] = json!("rest");
                Ok(v)
            }
        }
    }

    async fn summary(&self, account: &str) -> Result<Value, ToolError> {
        self.run_task("get_account_summary", json!({ "account": account }))
            .await
    }

    /// A topic's state read over REST. When the stream holds the topic and waits for its
    /// re-sync, the read serves as that re-sync too.
    async fn rest_state(&self, topic: Topic) -> Result<Data, ToolError> {
        let Some((what, op, args)) = crate::live::socket::rest_read(topic) else {
            return Err(ToolError::Internal(format!("{topic:?} has no REST read")));
        };
        if let Some(s) = &self.state.session {
            s.ensure_ready(true)
                .await
                .map_err(|p| self.session_error(p))?;
        }
        let asked = std::time::Instant::now();
        let v = crate::ibkr::gateway::call_json(&self.state.client, what, op, args)
            .await
            .map_err(|e| {
                // As the generated tool of that request would say it (paced, 401, down, ...).
                match catalog::all()
                    .iter()
                    .find(|d| d.operation_id == op.operation_id)
                {
                    Some(def) => super::results::call_error(def, e.error, &self.state.results),
                    None => ToolError::Internal(e.to_string()),
                }
            })?;
        if let Some(live) = &self.state.live {
            live.offer_rest(topic, v.clone(), asked);
        }
        let mut data = crate::live::Data::empty(topic);
        data.apply(&crate::live::socket::rest_payload(topic, v), Source::Rest);
        if let Data::Orders(b) = &mut data {
            // A first look has no changes to tell.
            b.changes.clear();
        }
        Ok(data)
    }

    /// Runs task tool `name` and returns its structured answer (or its error, as the model
    /// would see it).
    async fn run_task(&self, name: &str, args: Value) -> Result<Value, ToolError> {
        let def = catalog::all()
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| ToolError::Internal(format!("task `{name}` is missing")))?;
        let args = args.as_object().cloned().unwrap_or_default();
        let result = Box::pin(self.task(def, args)).await;
        if result.is_error == Some(true) {
            let text = result
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                .collect::<Vec<_>>()
                .join("\n");
            let kind = result
                .structured_content
                .as_ref()
                .and_then(|v| v.pointer("/error/kind"))
                .and_then(Value::as_str)
                .unwrap_or("failed")
                .to_string();
            // What the model can fix, as the problems alone (the task's usage line names the
            // task's arguments, not the resource).
            let problems: Vec<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix("- "))
                .map(str::to_string)
                .collect();
            if matches!(kind.as_str(), "unresolved" | "invalid_arguments") && !problems.is_empty() {
                return Err(ToolError::Unresolved {
                    tool: name.to_string(),
                    problems,
                    usage: String::new(),
                });
            }
            return Err(ToolError::Relayed {
                kind,
                message: text,
            });
        }
        Ok(result.structured_content.unwrap_or(Value::Null))
    }
}

/// A table: column names once, then rows of values.
fn table(columns: &[&str], rows: impl Iterator<Item = Vec<Value>>) -> Value {
    json!({ "columns": columns, "rows": rows.collect::<Vec<_>>() })
}

use super::tasks::{num as n, text as t};

/// The columns of `changes` in a read of `ibkr://orders`, as the change records name them.
const CHANGE_COLUMNS: [&str; 8] = [
    "seq",
    "at",
    "order_id",
    "symbol",
    "status",
    "filled",
    "remaining",
    "source",
];

/// A live resource's state as the client reads it.
pub fn render(uri: &str, data: &Data, source: &str) -> Value {
    let mut out = json!({ "uri": uri, "source": source, "as_of": crate::audit::now() });
    match data {
        Data::Orders(book) => {
            out["orders"] = table(
                &[
                    "order_id",
                    "account",
                    "symbol",
                    "side",
                    "type",
                    "price",
                    "filled",
                    "remaining",
                    "status",
                ],
                book.orders.iter().map(|(id, o)| {
                    vec![
                        json!(id),
                        t(o.get("acct")),
                        t(o.get("ticker")),
                        t(o.get("side")),
                        t(o.get("orderType").or(o.get("origOrderType"))),
                        n(o.get("price")),
                        n(o.get("filledQuantity")),
                        n(o.get("remainingQuantity")),
                        t(o.get("status")),
                    ]
                }),
            );
            let skip = book.changes.len().saturating_sub(CHANGES_SHOWN);
            out["changes"] = table(
                &CHANGE_COLUMNS,
                book.changes.iter().skip(skip).map(|c| {
                    CHANGE_COLUMNS
                        .iter()
                        .map(|k| c.get(*k).cloned().unwrap_or(Value::Null))
                        .collect()
                }),
            );
        }
        Data::Trades(rows) => {
            out["trades"] = table(
                &[
                    "execution_id",
                    "time",
                    "order_id",
                    "account",
                    "symbol",
                    "side",
                    "size",
                    "price",
                    "conid",
                ],
                rows.iter().map(|r| {
                    vec![
                        t(r.get("execution_id")),
                        r.get("trade_time_r")
                            .and_then(Value::as_i64)
                            .and_then(chrono::DateTime::from_timestamp_millis)
                            .map_or(t(r.get("trade_time")), |x| {
                                json!(x.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                            }),
                        t(r.get("order_id")),
                        t(r.get("account").or(r.get("accountCode"))),
                        t(r.get("symbol")),
                        t(r.get("side")),
                        n(r.get("size")),
                        n(r.get("price")),
                        r.get("conid")
                            .and_then(crate::ibkr::market::number)
                            .map_or(Value::Null, |c| json!(c as i64)),
                    ]
                }),
            );
        }
        Data::Pnl(m) => {
            out["pnl"] = table(
                &[
                    "account",
                    "daily_pnl",
                    "unrealized_pnl",
                    "net_liquidity",
                    "excess_liquidity",
                    "market_value",
                ],
                m.iter().map(|(k, r)| {
                    vec![
                        json!(k.trim_end_matches(".Core")),
                        n(r.get("dpl")),
                        n(r.get("upl")),
                        n(r.get("nl")),
                        // The stream says `uel`, the REST reply `el`.
                        n(r.get("uel").or(r.get("el"))),
                        n(r.get("mv")),
                    ]
                }),
            );
        }
        Data::Quote(m) => out["fields"] = Value::Object(m.clone()),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_select_a_topic_and_nothing_else() {
        assert_eq!(parse("ibkr://orders"), Ok(LiveUri::Orders));
        assert_eq!(
            parse("ibkr://quote/ES%20Mar27"),
            Ok(LiveUri::Quote("ES Mar27".into()))
        );
        assert_eq!(
            parse("ibkr://account/DU1234567/summary"),
            Ok(LiveUri::Summary("DU1234567".into()))
        );
        for bad in [
            "ibkr://quote/",
            "ibkr://quote/AAPL%0A+smd+1",
            "ibkr://quote/%ZZ",
            "ibkr://quote/AAPL\"}",
            "ibkr://account/../summary",
            "ibkr://account/DU1/../../x/summary",
            "ibkr://orders/../session",
            "ibkr://ORDERS",
            "file:///etc/passwd",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let long = format!("ibkr://quote/{}", "A".repeat(65));
        assert!(parse(&long).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn notifications_are_coalesced() {
        let (tx, rx) = watch::channel(0u64);
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = sent.clone();
        let task = notifier(rx, Duration::from_millis(100), move || {
            let c = counter.clone();
            async move {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                true
            }
        });
        // Ten changes within one coalescing window: one notification now, one for the rest.
        for i in 1..=10 {
            tx.send_replace(i);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Nothing changes: nothing is sent.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 2);
        task.abort();
    }
}
