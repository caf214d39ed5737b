//! The running server's side of the kill switch (`crate::halt`): it notices the switch being
//! thrown or lifted (within a second), records both in the audit log, and when the user asked
//! for it (`ibkr-mcp halt --cancel-orders`) cancels the working orders of every account the
//! server may act on, once per halt, each cancellation sent once and recorded. Refusing write
//! tools does not depend on this task: every write attempt reads the switch itself.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::ServerState;
use crate::audit;

/// Order statuses that are finished: nothing to cancel.
const DONE: &[&str] = &[
    "Filled",
    "Cancelled",
    "ApiCancelled",
    "PendingCancel",
    "Inactive",
];

/// Watches the kill switch until `stop`.
pub async fn watch(state: Arc<ServerState>, stop: CancellationToken) {
    let Some(switch) = state.policy.kill_switch().cloned() else {
        return;
    };
    let mut seen: Option<String> = None;
    loop {
        match switch.engaged() {
            Some(h) => {
                let key = format!("{}|{}", h.id, h.since);
                if seen.as_deref() != Some(key.as_str()) {
                    seen = Some(key);
                    state.void_pending();
                    tracing::warn!(reason = %h.reason, cancel_orders = h.cancel_orders, "kill switch thrown: every tool that changes anything is refused");
                    event(
                        &state,
                        json!({ "event": "kill_switch_engaged", "since": h.since, "reason": h.reason, "cancel_orders": h.cancel_orders }),
                    )
                    .await;
                    if h.cancel_orders {
                        cancel_working_orders(&state).await;
                    }
                }
            }
            None => {
                if seen.take().is_some() {
                    tracing::warn!("kill switch lifted: write tools work again");
                    event(&state, json!({ "event": "kill_switch_lifted" })).await;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
    }
}

async fn event(state: &ServerState, mut v: Value) {
    v["time"] = json!(audit::now());
    v["phase"] = json!("event");
    audit::mask_accounts(&mut v);
    if let Err(e) = state.audit.record_value(v).await {
        tracing::error!(error = %e, "audit log write failed (kill switch event)");
    }
}

/// Cancels every working order of the accounts the policy lets this server act on.
async fn cancel_working_orders(state: &ServerState) {
    if let Some(session) = &state.session
        && let Err(p) = session.ensure_ready(true).await
    {
        tracing::error!(problem = ?p, "kill switch: cannot cancel orders, the session is not usable");
        event(
            state,
            json!({ "event": "kill_switch_cancel_failed", "reason": format!("session: {p:?}") }),
        )
        .await;
        return;
    }
    if !state.policy.book().is_loaded() {
        let _ = crate::ibkr::fetch_accounts(&state.client).await;
    }
    let (paper, live) = state.policy.book().summary();
    let accounts: Vec<String> = paper
        .into_iter()
        .chain(live)
        .filter(|a| state.policy.check_accounts(std::slice::from_ref(a)).is_ok())
        .collect();
    for account in accounts {
        let orders = match list_with_patience(state, &account).await {
            Ok(v) => v,
            Err(e) => {
                event(
                    state,
                    json!({ "event": "kill_switch_cancel_failed", "account": account, "reason": e.to_string() }),
                )
                .await;
                continue;
            }
        };
        for o in orders["orders"].as_array().into_iter().flatten() {
            let status = o["status"].as_str().unwrap_or_default();
            let order_id = match &o["orderId"] {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => continue,
            };
            let owner = o["acct"].as_str().unwrap_or(&account);
            if DONE.contains(&status) || owner != account {
                continue;
            }
            let outcome = crate::ibkr::cancel_order(&state.client, &account, &order_id).await;
            tracing::warn!(order_id, ok = outcome.is_ok(), "kill switch: cancel sent");
            event(
                state,
                json!({
                    "event": "kill_switch_cancel",
                    "account": account,
                    "order_id": order_id,
                    "status_before": status,
                    "result": match &outcome { Ok(v) => v.clone(), Err(e) => json!({ "error": e.to_string() }) },
                }),
            )
            .await;
        }
    }
}

/// The live orders of `account`, waiting out IBKR's pacing (1 request per 5 s) if needed.
async fn list_with_patience(
    state: &ServerState,
    account: &str,
) -> Result<Value, crate::ibkr::LookupError> {
    let mut last = None;
    for _ in 0..4 {
        match crate::ibkr::fetch_live_orders(&state.client, account).await {
            Ok(v) => return Ok(v),
            Err(e) if e.retry_after().is_some() => {
                tokio::time::sleep(e.retry_after().unwrap_or_default()).await;
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("set in the loop"))
}
