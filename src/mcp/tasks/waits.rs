//! Waiting for something to happen, for clients that do not subscribe to resources: an order's
//! next change, a price crossing a level. Both answer from IBKR's WebSocket stream (sharing its
//! subscriptions with the live resources), are bounded (at most 60 s), and send progress
//! notifications while they wait when the client gave a progress token. A wait that ends
//! without the event is an answer (`changed: false` / `met: false`), not an error: the model
//! calls again to keep waiting.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Answer, Ctx, Run, Task, object};
use crate::error::ToolError;
use crate::live::{Data, Topic};
use crate::mcp::live::Progress;

/// The waiting tools (toolset `live`).
pub(super) const NAMES: &[&str] = &["wait_for_order_update", "wait_for_price"];
/// Longest wait of one call.
const MAX_WAIT: u64 = 60;
/// How long a wait's stream outlives the call (the model often calls again).
const LINGER: Duration = Duration::from_secs(60);
/// How long a current order book may lack the order before the wait says there is none.
const ABSENT_GRACE: Duration = Duration::from_secs(3);
/// Time between progress notifications.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub(super) fn tasks() -> Vec<Task> {
    let timeout = json!({ "type": "integer", "minimum": 1, "maximum": MAX_WAIT, "default": 30,
                          "description": "Seconds to wait at most (1-60)" });
    vec![
        Task {
            name: "wait_for_order_update",
            description: "Waits until an order changes (status or filled quantity) and returns \
                          it, from IBKR's live order stream; returns at once if it is already \
                          filled or cancelled. changed=false after timeout_seconds: call again \
                          to keep waiting.",
            input: json!({ "type": "object", "required": ["order_id"], "properties": {
                "order_id": { "type": "string", "pattern": "^[0-9]{1,20}$",
                              "description": "IBKR's order id (from the order's answer or get_account_orders)" },
                "timeout_seconds": timeout.clone(),
            } }),
            output: with_optional(
                object(&[
                    ("order_id", json!({ "type": "string" })),
                    ("changed", json!({ "type": "boolean" })),
                    ("final", json!({ "type": "boolean" })),
                    ("waited_seconds", json!({ "type": "number" })),
                ]),
                &[("status", json!({ "type": "string" }))],
            ),
            run: Run::Read(|c| Box::pin(wait_order(c))),
        },
        Task {
            name: "wait_for_price",
            description: "Waits until a symbol's last price is at or above / at or below a \
                          level, from IBKR's live market data; returns the price when it is. \
                          met=false after timeout_seconds (with the last price): call again to \
                          keep waiting.",
            input: json!({ "type": "object", "required": ["symbol", "condition", "price"], "properties": {
                "symbol": { "type": "string", "description": "A symbol (AAPL; SPY@ARCA), a conid, a future (ES Mar27) or an option (AAPL 2027-01-15 200 C)" },
                "condition": { "type": "string", "enum": ["above", "below"],
                               "description": "above: last >= price; below: last <= price" },
                "price": { "type": "number", "exclusiveMinimum": 0 },
                "timeout_seconds": timeout,
            } }),
            output: with_optional(
                object(&[
                    ("symbol", json!({ "type": "string" })),
                    ("conid", json!({ "type": "integer" })),
                    ("met", json!({ "type": "boolean" })),
                    ("waited_seconds", json!({ "type": "number" })),
                ]),
                &[("last", json!({ "type": "number" }))],
            ),
            run: Run::Read(|c| Box::pin(wait_price(c))),
        },
    ]
}

/// An output schema with properties that may be absent.
fn with_optional(mut schema: Value, props: &[(&str, Value)]) -> Value {
    for (name, s) in props {
        schema["properties"][*name] = s.clone();
    }
    schema
}

fn without_nulls(mut v: Value) -> Answer {
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, x| !x.is_null());
    }
    Answer::new(v)
}

fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

/// What makes an order "changed": its status and filled quantity.
fn mark(row: Option<&serde_json::Map<String, Value>>) -> Option<(Value, Value)> {
    row.map(|r| {
        (
            r.get("status").cloned().unwrap_or(Value::Null),
            r.get("filledQuantity")
                .and_then(crate::ibkr::market::number)
                .map_or(Value::Null, |x| json!(x)),
        )
    })
}

fn is_final(status: &Value) -> bool {
    status.as_str().is_some_and(crate::live::is_terminal)
}

fn order_answer(
    id: &str,
    row: Option<&serde_json::Map<String, Value>>,
    history: Vec<Value>,
    changed: bool,
    waited: Duration,
) -> Answer {
    let r = row.cloned().unwrap_or_default();
    let status = r.get("status").cloned().unwrap_or(Value::Null);
    without_nulls(json!({
        "order_id": id,
        "changed": changed,
        "final": is_final(&status),
        "status": status,
        "symbol": r.get("ticker").cloned().unwrap_or(Value::Null),
        "side": r.get("side").cloned().unwrap_or(Value::Null),
        "filled": r.get("filledQuantity").and_then(crate::ibkr::market::number),
        "remaining": r.get("remainingQuantity").and_then(crate::ibkr::market::number),
        "price": r.get("price").and_then(crate::ibkr::market::number),
        "waited_seconds": seconds(waited),
        "history": history,
    }))
}

async fn wait_order(c: &Ctx<'_>) -> Result<Answer, ToolError> {
    let live = c.server.live()?.clone();
    let id = c.str_arg("order_id").unwrap_or_default().to_string();
    let limit = Duration::from_secs(c.count_arg("timeout_seconds", 30, MAX_WAIT) as u64);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    let lease = live
        .subscribe(Topic::Orders)
        .map_err(|e| ToolError::LiveUnavailable(e.to_string()))?
        .lingering(LINGER);
    let mut changes = lease.changes.clone();
    let mut baseline: Option<Option<(Value, Value)>> = None;
    // When a current book was first seen without the order.
    let mut absent_since: Option<Instant> = None;
    let mut next_progress = tokio::time::Instant::now() + PROGRESS_EVERY;
    loop {
        let view = lease.view();
        let mut current = None;
        if let Some(v) = view.as_ref().filter(|v| v.synced)
            && let Data::Orders(book) = &v.data
        {
            let row = book.orders.get(&id);
            let now = mark(row);
            let history: Vec<Value> = book
                .changes
                .iter()
                .filter(|ch| ch.get("order_id").and_then(Value::as_str) == Some(id.as_str()))
                .cloned()
                .collect();
            let answer =
                |changed: bool| order_answer(&id, row, history.clone(), changed, started.elapsed());
            match &baseline {
                None => {
                    baseline = Some(now.clone());
                    if let Some((status, _)) = &now
                        && is_final(status)
                    {
                        let mut a = answer(false);
                        let waited = started.elapsed();
                        a.notes.push(if waited < Duration::from_secs(1) {
                            format!(
                                "Order {id} is already {}: it will not change any more.",
                                status.as_str().unwrap_or("final")
                            )
                        } else {
                            format!(
                                "Order {id} is {} (final); the order stream became current {:.1} \
                                 s into this wait (its REST read is paced), so whether that \
                                 happened during the wait is not known: `history` has the times.",
                                status.as_str().unwrap_or("final"),
                                waited.as_secs_f64()
                            )
                        });
                        return Ok(a);
                    }
                }
                Some(before) if *before != now && now.is_some() => return Ok(answer(true)),
                Some(_) => {}
            }
            // Not in a current book for a few seconds (an order placed just now shows within
            // them): no such order, said now rather than at the end of the wait.
            if now.is_none() {
                let since = *absent_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= ABSENT_GRACE {
                    return Err(c.unresolved(format!(
                        "`order_id`: no order {id} among this session's orders (working and \
                         today's); check the id with get_account_orders"
                    )));
                }
            }
            current = Some((now, row.cloned(), history));
        }
        let mut wake = deadline.min(next_progress);
        if let Some(since) = absent_since {
            wake = wake.min(tokio::time::Instant::from_std(since + ABSENT_GRACE));
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() {
                return Err(ToolError::Internal("the live order stream ended".into()));
            },
            () = tokio::time::sleep_until(wake) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            let status = live.status();
            return match current {
                Some((Some(_), row, history)) => {
                    let mut a = order_answer(&id, row.as_ref(), history, false, started.elapsed());
                    a.notes.push(format!(
                        "No change of order {id} in {} s; call again to keep waiting.",
                        limit.as_secs()
                    ));
                    Ok(a)
                }
                Some((None, _, _)) => Err(c.unresolved(format!(
                    "`order_id`: no order {id} among this session's orders (working and \
                     today's); check the id with get_account_orders"
                ))),
                None => Err(ToolError::LiveUnavailable(format!(
                    "the order stream is not ready after {} s (socket: {:?}; the current \
                     orders are read over REST before events count, and IBKR allows that once \
                     per 5 s{}); call again, or read them with get_account_orders",
                    limit.as_secs(),
                    status.state,
                    status
                        .last_error
                        .map(|e| format!(", last problem: {e}"))
                        .unwrap_or_default()
                ))),
            };
        }
        if tokio::time::Instant::now() >= next_progress {
            next_progress += PROGRESS_EVERY;
            let what = match &current {
                Some((Some((status, _)), _, _)) => {
                    format!("order {id} is {}", status.as_str().unwrap_or("?"))
                }
                Some((None, _, _)) => format!("order {id} not seen yet"),
                None => "waiting for the live order stream".into(),
            };
            Progress::report(
                seconds(started.elapsed()),
                limit.as_secs_f64(),
                format!("{what}; waiting for its next change"),
            )
            .await;
        }
    }
}

async fn wait_price(c: &Ctx<'_>) -> Result<Answer, ToolError> {
    let live = c.server.live()?.clone();
    let input = c.str_arg("symbol").unwrap_or_default().to_string();
    let above = c.str_arg("condition") == Some("above");
    let level = c.args.get("price").and_then(Value::as_f64).unwrap_or(0.0);
    let limit = Duration::from_secs(c.count_arg("timeout_seconds", 30, MAX_WAIT) as u64);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    let r = c.resolve("symbol", &input).await?;
    let lease = live
        .subscribe(Topic::Quote(r.conid))
        .map_err(|e| ToolError::LiveUnavailable(e.to_string()))?
        .lingering(LINGER);
    let mut changes = lease.changes.clone();
    let mut next_progress = tokio::time::Instant::now() + PROGRESS_EVERY;
    let answer = |met: bool, last: Option<f64>, at: Option<i64>| {
        // No price yet: the fields are left out rather than null (the output schema types them).
        without_nulls(json!({
            "symbol": r.label,
            "conid": r.conid,
            "condition": if above { "above" } else { "below" },
            "price": level,
            "met": met,
            "last": last,
            "at": at.and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            "waited_seconds": seconds(started.elapsed()),
        }))
    };
    let mut last = None;
    let mut at = None;
    loop {
        if let Some(v) = lease.view() {
            if let Some(e) = v.error {
                return Err(c.unresolved(format!("`symbol`: IBKR refused its market data: {e}")));
            }
            // Only a current stream's price (a gap empties it until the stream is back).
            if v.synced
                && let Data::Quote(fields) = &v.data
                && let Some(x) = fields.get("31").and_then(super::market::field_number)
            {
                last = Some(x);
                at = fields.get("_updated").and_then(Value::as_i64);
            }
        }
        if let Some(x) = last
            && ((above && x >= level) || (!above && x <= level))
        {
            return Ok(answer(true, last, at));
        }
        let wake = deadline.min(next_progress);
        tokio::select! {
            r = changes.changed() => if r.is_err() {
                return Err(ToolError::Internal("the live quote stream ended".into()));
            },
            () = tokio::time::sleep_until(wake) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            let mut a = answer(false, last, at);
            a.notes.push(match last {
                Some(x) => format!(
                    "{} is at {x}, not yet {} {level} after {} s; call again to keep waiting.",
                    r.label,
                    if above { "at or above" } else { "at or below" },
                    limit.as_secs()
                ),
                None => format!(
                    "No last price for {} in {} s (no market data permission, or the market \
                     is closed); get_price_snapshot shows what IBKR has.",
                    r.label,
                    limit.as_secs()
                ),
            });
            return Ok(a);
        }
        if tokio::time::Instant::now() >= next_progress {
            next_progress += PROGRESS_EVERY;
            Progress::report(
                seconds(started.elapsed()),
                limit.as_secs_f64(),
                format!(
                    "{} last {}; waiting for {} {level}",
                    r.label,
                    last.map_or("unknown".into(), |x| x.to_string()),
                    if above { "≥" } else { "≤" }
                ),
            )
            .await;
        }
    }
}
