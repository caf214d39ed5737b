//! Watchlists and alerts, read.

use serde_json::{Value, json};

use super::{Answer, Ctx, Task, id_text, table, table_schema, text};
use crate::error::ToolError;
use crate::ibkr::gateway::ops;
use crate::ibkr::market::number;

/// Most watchlists whose contents one call reads.
const MAX_LISTS: usize = 10;

pub(super) fn tasks() -> Vec<Task> {
    vec![
        Task {
            name: "get_watchlists",
            description: "The login's watchlists with what is on them, as a table: id, name, \\
                          symbols, conids (one watchlist by id or name, or the first ten).",
            input: json!({ "type": "object", "properties": {
                "watchlist": { "type": "string", "maxLength": 64, "description": "Id or name" },
            } }),
            output: table_schema(&[]),
            run: |c| Box::pin(watchlists(c)),
        },
        Task {
            name: "get_alerts",
            description: "Alerts of every account of the login (or one), as a table: alert_id, \\
                          account, name, active, triggered, repeatable.",
            input: json!({ "type": "object", "properties": {
                "account": { "type": "string", "description": "One account id; default: every account" },
            } }),
            output: table_schema(&[]),
            run: |c| Box::pin(alerts(c)),
        },
    ]
}

async fn watchlists(c: &Ctx<'_>) -> Result<Answer, ToolError> {
    let v = c
        .fetch(
            "watchlists",
            ops::WATCHLISTS,
            json!({ "SC": "USER_WATCHLIST" }),
        )
        .await?;
    let lists: Vec<(String, String)> = v
        .pointer("/data/user_lists")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| {
            Some((
                id_text(l.get("id"))?,
                text(l.get("name")).as_str()?.to_string(),
            ))
        })
        .collect();
    let wanted: Vec<&(String, String)> = match c.str_arg("watchlist") {
        Some(w) => {
            let hit: Vec<_> = lists
                .iter()
                .filter(|(id, name)| id == w || name.eq_ignore_ascii_case(w))
                .collect();
            if hit.is_empty() {
                let names: Vec<String> = lists.iter().map(|(i, n)| format!("{n} ({i})")).collect();
                return Err(c.unresolved(format!(
                    "`watchlist`: no watchlist {w:?}; the login has {}",
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                )));
            }
            hit
        }
        None => lists.iter().take(MAX_LISTS).collect(),
    };
    let mut rows = Vec::new();
    for (id, name) in &wanted {
        let w = c
            .fetch(
                format!("watchlist {name}"),
                ops::WATCHLIST,
                json!({ "id": id }),
            )
            .await?;
        let instruments: Vec<&Value> = w
            .get("instruments")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|i| i.get("conid").or(i.get("C")).is_some())
            .collect();
        let symbols: Vec<Value> = instruments
            .iter()
            .map(|i| text(i.get("ticker").or(i.get("fullName"))))
            .collect();
        let conids: Vec<Value> = instruments
            .iter()
            .map(|i| {
                i.get("conid")
                    .or(i.get("C"))
                    .and_then(number)
                    .map_or(Value::Null, |x| json!(x as i64))
            })
            .collect();
        rows.push(json!({ "id": id, "name": name, "symbols": symbols, "conids": conids }));
    }
    let mut answer = Answer::new(table(&["id", "name", "symbols", "conids"], &rows));
    if c.str_arg("watchlist").is_none() && lists.len() > MAX_LISTS {
        answer.notes.push(format!(
            "{MAX_LISTS} of {} watchlists shown; name one with `watchlist`.",
            lists.len()
        ));
    }
    Ok(answer)
}

async fn alerts(c: &Ctx<'_>) -> Result<Answer, ToolError> {
    let accounts = c.accounts().await?;
    let mut rows = Vec::new();
    for a in &accounts {
        let v = c
            .fetch(
                format!("alerts of {a}"),
                ops::ALERTS,
                json!({ "accountId": a }),
            )
            .await?;
        let flag = |x: Option<&Value>| match x {
            Some(Value::Bool(b)) => json!(b),
            Some(v) => number(v).map_or(Value::Null, |n| json!(n != 0.0)),
            None => Value::Null,
        };
        rows.extend(v.as_array().into_iter().flatten().map(|al| {
            json!({
                "alert_id": id_text(al.get("order_id")),
                "account": al.get("account").cloned().unwrap_or_else(|| json!(a)),
                "name": text(al.get("alert_name")),
                "active": flag(al.get("alert_active")),
                "triggered": flag(al.get("alert_triggered")),
                "repeatable": flag(al.get("alert_repeatable")),
            })
        }));
    }
    Ok(Answer::new(table(
        &[
            "alert_id",
            "account",
            "name",
            "active",
            "triggered",
            "repeatable",
        ],
        &rows,
    )))
}
