//! From the simulator's state to WebSocket payloads: the feed of order and execution events
//! that the order book publishes as it changes (a broadcast channel, so every socket hears
//! every event in the order it happened), and the builders of `sor`, `str`, `spl` and `smd`
//! payloads from the current state.
//!
//! Publishing happens under the state lock and never blocks: a broadcast send only queues.
//! Nothing is built while no socket listens.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::gateway::marketdata::field_value;
use crate::gateway::orders::{live_order_json, trade_json};
use crate::state::accounts::cents;
use crate::state::{Sim, State};
use crate::universe::Universe;

/// Events queued per socket before a slow one starts losing them.
const FEED_CAPACITY: usize = 4096;

/// One change of the order book.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FeedEvent {
    /// An order was booked or changed: its row as `/iserver/account/orders` lists it.
    Order(Value),
    /// An execution was booked: its row as `/iserver/account/trades` lists it.
    Execution(Value),
}

/// The sending side of the feed, held by the state.
#[derive(Debug, Clone)]
pub(crate) struct Feed {
    tx: broadcast::Sender<FeedEvent>,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(FEED_CAPACITY).0,
        }
    }
}

impl Feed {
    /// A receiver of every event from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<FeedEvent> {
        self.tx.subscribe()
    }

    /// Whether any socket listens.
    fn active(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    fn send(&self, ev: FeedEvent) {
        let _ = self.tx.send(ev);
    }
}

impl State {
    /// Publishes order `id` as it is now (after a status or content change).
    pub(crate) fn publish_order(&self, universe: &Universe, id: i64) {
        if !self.ws_feed.active() {
            return;
        }
        if let Some(o) = self.orders.book.get(&id) {
            self.ws_feed
                .send(FeedEvent::Order(live_order_json(universe, o)));
        }
    }

    /// Publishes the last booked execution.
    pub(crate) fn publish_last_execution(&self, universe: &Universe) {
        if !self.ws_feed.active() {
            return;
        }
        if let Some(row) = self
            .orders
            .executions
            .last()
            .and_then(|e| trade_json(universe, e))
        {
            self.ws_feed.send(FeedEvent::Execution(row));
        }
    }
}

/// Rows of the working orders of every account, oldest first, whose status passes `filter`.
pub(crate) fn working_orders(sim: &Sim, st: &State, filter: &StatusFilter) -> Vec<Value> {
    st.orders
        .book
        .values()
        .filter(|o| o.status.working())
        .map(|o| live_order_json(&sim.universe, o))
        .filter(|row| filter.passes(row))
        .collect()
}

/// Rows of the executions of the last `days` days, oldest first.
pub(crate) fn recent_executions(sim: &Sim, st: &State, days: i64) -> Vec<Value> {
    let since = chrono::Utc::now().timestamp_millis() - days.clamp(1, 7) * 86_400_000;
    st.orders
        .executions
        .iter()
        .filter(|e| e.time_ms >= since)
        .filter_map(|e| trade_json(&sim.universe, e))
        .collect()
}

/// The `spl` arguments: one `<account>.Core` row per account.
pub(crate) fn pnl(sim: &Sim, st: &State) -> Value {
    let rows: Map<String, Value> = st
        .accounts
        .values()
        .map(|a| {
            let v = a.value(&sim.universe, &st.market);
            (
                format!("{}.Core", a.id),
                json!({
                    "rowType": 1,
                    "dpl": cents(v.daily_pnl),
                    "nl": cents(v.nlv),
                    "upl": cents(v.upnl),
                    "uel": cents(v.excess),
                    "mv": cents(v.stock + v.options),
                }),
            )
        })
        .collect();
    Value::Object(rows)
}

/// The current values of `fields` for `conid` (fields without a value are left out); `None`
/// for contracts without a price.
pub(crate) fn market_fields(
    sim: &Sim,
    st: &State,
    conid: i64,
    fields: &BTreeSet<String>,
) -> Option<Map<String, Value>> {
    let c = sim.universe.get(conid)?;
    let q = st.market.quote(&sim.universe, conid)?;
    Some(
        fields
            .iter()
            .filter_map(|f| field_value(st, sim, c, &q, f).map(|v| (f.clone(), v)))
            .collect(),
    )
}

/// Which order statuses a `sor` subscription wants (`filters`, case-insensitive; empty: all).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct StatusFilter(Vec<String>);

impl StatusFilter {
    /// The filter of `sor` arguments (`{"filters":["Submitted"]}`; a comma-separated string is
    /// read too).
    pub(crate) fn from_args(args: &Value) -> Self {
        let list = match args.get("filters") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
            _ => Vec::new(),
        };
        Self(
            list.into_iter()
                .map(|s| s.trim().to_ascii_lowercase().replace('_', ""))
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }

    /// Whether an order row passes.
    pub(crate) fn passes(&self, row: &Value) -> bool {
        let status = row["status"].as_str().unwrap_or("").to_ascii_lowercase();
        self.0.is_empty() || self.0.contains(&status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_filter_matches_case_insensitively() {
        let f = StatusFilter::from_args(&json!({ "filters": ["Submitted", "pre_submitted"] }));
        assert!(f.passes(&json!({ "status": "Submitted" })));
        assert!(f.passes(&json!({ "status": "PreSubmitted" })));
        assert!(!f.passes(&json!({ "status": "Filled" })));
        assert!(StatusFilter::from_args(&json!({})).passes(&json!({ "status": "Filled" })));
    }

    #[test]
    fn feed_without_listeners_is_inactive_and_sends_to_listeners() {
        let feed = Feed::default();
        assert!(!feed.active());
        let mut rx = feed.subscribe();
        assert!(feed.active());
        feed.send(FeedEvent::Order(json!({ "orderId": 1 })));
        assert_eq!(
            rx.try_recv().unwrap(),
            FeedEvent::Order(json!({ "orderId": 1 }))
        );
    }
}
