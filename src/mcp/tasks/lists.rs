//! Watchlists and alerts: read, create, edit, delete; price alerts on and off.
//!
//! The changes plan calls of the generated tools (see [`super::writes`]). IBKR has no call that
//! edits a watchlist: an edit writes the list again under its id (what `POST /iserver/watchlist`
//! does with an id it knows).

use serde_json::{Map, Value, json};

use super::writes::{Plan, Shape};
use super::{Answer, Ctx, Run, Task, id_text, row, table, table_schema, text};
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
            run: Run::Read(|c| Box::pin(watchlists(c))),
        },
        Task {
            name: "get_alerts",
            description: "Alerts of every account of the login (or one), as a table: alert_id, \\
                          account, name, active, triggered, repeatable.",
            input: json!({ "type": "object", "properties": {
                "account": { "type": "string", "description": "One account id; default: every account" },
            } }),
            output: table_schema(&[]),
            run: Run::Read(|c| Box::pin(alerts(c))),
        },
        Task {
            name: "create_watchlist",
            description: "Creates a watchlist of symbols.",
            input: json!({ "type": "object", "required": ["name", "symbols"], "properties": {
                "name": { "type": "string", "minLength": 1, "maxLength": 64 },
                "symbols": symbols(),
            } }),
            output: done_output(),
            run: Run::Write {
                plan: |c| Box::pin(create_watchlist(c)),
                destructive: false,
            },
        },
        Task {
            name: "edit_watchlist",
            description: "Adds symbols to, removes symbols from, or renames a watchlist (id or \
                          name).",
            input: json!({ "type": "object", "required": ["watchlist"], "properties": {
                "watchlist": { "type": "string", "maxLength": 64 },
                "add": symbols(),
                "remove": symbols(),
                "name": { "type": "string", "minLength": 1, "maxLength": 64 },
            } }),
            output: done_output(),
            run: Run::Write {
                plan: |c| Box::pin(edit_watchlist(c)),
                destructive: true,
            },
        },
        Task {
            name: "delete_watchlist",
            description: "Deletes a watchlist (id or name).",
            input: json!({ "type": "object", "required": ["watchlist"], "properties": {
                "watchlist": { "type": "string", "maxLength": 64 },
            } }),
            output: done_output(),
            run: Run::Write {
                plan: |c| Box::pin(delete_watchlist(c)),
                destructive: true,
            },
        },
        Task {
            name: "create_alert",
            description: "A price alert: notifies when symbol's last price goes above or below a \
                          level. With alert_id, replaces that alert.",
            input: json!({ "type": "object", "required": ["symbol"], "properties": {
                "symbol": { "type": "string" },
                "above": { "type": "number" },
                "below": { "type": "number" },
                "name": { "type": "string", "maxLength": 64 },
                "repeatable": { "type": "boolean" },
                "account": { "type": "string" },
                "alert_id": { "type": "string" },
            } }),
            output: done_output(),
            run: Run::Write {
                plan: |c| Box::pin(create_alert(c)),
                destructive: false,
            },
        },
        Task {
            name: "activate_alert",
            description: "Turns an alert on (active true) or off.",
            input: json!({ "type": "object", "required": ["alert_id", "active"], "properties": {
                "alert_id": { "type": "string" },
                "active": { "type": "boolean" },
                "account": { "type": "string" },
            } }),
            output: done_output(),
            run: Run::Write {
                plan: |c| Box::pin(activate_alert(c)),
                destructive: false,
            },
        },
        Task {
            name: "delete_alert",
            description: "Deletes an alert.",
            input: json!({ "type": "object", "required": ["alert_id"], "properties": {
                "alert_id": { "type": "string" },
                "account": { "type": "string" },
            } }),
            output: done_output(),
            run: Run::Write {
                plan: |c| Box::pin(delete_alert(c)),
                destructive: true,
            },
        },
    ]
}

/// Most symbols on one watchlist this server writes.
const MAX_SYMBOLS: usize = 100;

fn symbols() -> Value {
    json!({ "type": "array", "items": { "type": "string" } })
}

fn done_output() -> Value {
    let mut o = row(&[
        ("done", json!({ "type": "string" })),
        ("id", json!({ "type": "string" })),
    ]);
    o["required"] = json!(["done"]);
    o
}

/// Resolves the symbols of list argument `field`: (conids, labels), every problem at once.
async fn resolve_all(c: &Ctx<'_>, field: &str) -> Result<(Vec<i64>, Vec<String>), ToolError> {
    let mut conids = Vec::new();
    let mut labels = Vec::new();
    let mut problems = Vec::new();
    let given = c.args.get(field).and_then(Value::as_array);
    if given.is_some_and(|g| g.len() > MAX_SYMBOLS) {
        return Err(c.invalid(format!("`{field}`: at most {MAX_SYMBOLS} symbols")));
    }
    for (i, s) in given.into_iter().flatten().enumerate() {
        match c
            .resolve(&format!("{field}[{i}]"), s.as_str().unwrap_or(""))
            .await
        {
            Ok(r) if !conids.contains(&r.conid) => {
                conids.push(r.conid);
                labels.push(r.label);
            }
            Ok(_) => {}
            Err(ToolError::Unresolved { problems: p, .. }) => problems.extend(p),
            Err(e) => return Err(e),
        }
    }
    if !problems.is_empty() {
        return Err(ToolError::Unresolved {
            tool: c.def.name.clone(),
            problems,
            usage: crate::mcp::results::usage(c.def),
        });
    }
    Ok((conids, labels))
}

fn watchlist_args(id: &str, name: &str, conids: &[i64]) -> Map<String, Value> {
    let rows: Vec<Value> = conids.iter().map(|c| json!({ "C": c })).collect();
    let mut args = Map::new();
    args.insert(
        "body".into(),
        json!({ "id": id, "name": name, "rows": rows }),
    );
    args
}

/// The one watchlist `watchlist` names.
async fn one_list(c: &Ctx<'_>) -> Result<(String, String), ToolError> {
    let w = c.str_arg("watchlist").unwrap_or("");
    let lists = user_lists(c).await?;
    match pick(c, &lists, w)?.as_slice() {
        [one] => Ok((*one).clone()),
        many => Err(c.unresolved(format!(
            "`watchlist`: {} watchlists are named {w:?} (ids {}); give the id",
            many.len(),
            many.iter()
                .map(|(i, _)| i.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

async fn create_watchlist(c: &Ctx<'_>) -> Result<Plan, ToolError> {
    let name = c.str_arg("name").unwrap_or("").trim().to_string();
    let (conids, labels) = resolve_all(c, "symbols").await?;
    if conids.is_empty() || conids.len() > MAX_SYMBOLS {
        return Err(c.invalid(format!("`symbols`: give 1 to {MAX_SYMBOLS} symbols")));
    }
    let lists = user_lists(c).await?;
    if let Some((id, _)) = lists.iter().find(|(_, n)| n.eq_ignore_ascii_case(&name)) {
        return Err(c.invalid(format!(
            "`name`: there is already a watchlist {name:?} (id {id}); use edit_watchlist to \
             change it, or another name"
        )));
    }
    // IBKR wants a new id of digits; one above the login's largest.
    let id = lists
        .iter()
        .filter_map(|(i, _)| i.parse::<u64>().ok())
        .max()
        .map_or(1001, |m| m + 1)
        .to_string();
    let words = format!("watchlist {name:?} (id {id}) with {}", labels.join(", "));
    Ok(Plan::one(
        Shape::Done,
        "create_iserver_watchlist",
        watchlist_args(&id, &name, &conids),
        words,
    ))
}

async fn edit_watchlist(c: &Ctx<'_>) -> Result<Plan, ToolError> {
    let (id, old_name) = one_list(c).await?;
    let (add, added) = resolve_all(c, "add").await?;
    let (remove, removed) = resolve_all(c, "remove").await?;
    let name = c
        .str_arg("name")
        .map(str::trim)
        .unwrap_or(&old_name)
        .to_string();
    if add.is_empty() && remove.is_empty() && name == old_name {
        return Err(c.invalid("nothing to change: give add, remove or a new name"));
    }
    let current = c
        .fetch(
            format!("watchlist {old_name}"),
            ops::WATCHLIST,
            json!({ "id": id }),
        )
        .await?;
    // The list as it is, headers included; edits touch only the contracts named.
    let Some(instruments) = current.get("instruments").and_then(Value::as_array) else {
        return Err(ToolError::BadReply {
            status: 200,
            write: false,
            detail: format!(
                "IBKR's watchlist {id} came without its instruments, so it cannot be edited \
                 without losing them; nothing was changed"
            ),
        });
    };
    let mut rows: Vec<Value> = instruments
        .iter()
        .filter_map(
            |i| match (i.get("H"), i.get("conid").or(i.get("C")).and_then(number)) {
                (_, Some(conid)) => Some(json!({ "C": conid as i64 })),
                (Some(h), None) => Some(json!({ "H": h })),
                _ => None,
            },
        )
        .collect();
    let held = |rows: &[Value], conid: i64| rows.iter().any(|r| r["C"] == json!(conid));
    let removed: Vec<String> = remove
        .iter()
        .zip(&removed)
        .filter(|(x, _)| held(&rows, **x))
        .map(|(_, l)| l.clone())
        .collect();
    rows.retain(|r| !r["C"].as_i64().is_some_and(|x| remove.contains(&x)));
    for a in add {
        if !held(&rows, a) {
            rows.push(json!({ "C": a }));
        }
    }
    if rows.len() > MAX_SYMBOLS {
        return Err(c.invalid(format!(
            "the watchlist would hold {} rows; this server writes at most {MAX_SYMBOLS}",
            rows.len()
        )));
    }
    let mut said = Vec::new();
    if !added.is_empty() {
        said.push(format!("added {}", added.join(", ")));
    }
    if !removed.is_empty() {
        said.push(format!("removed {}", removed.join(", ")));
    }
    if name != old_name {
        said.push(format!("renamed to {name:?}"));
    }
    if said.is_empty() {
        said.push("nothing on it changed".into());
    }
    let words = format!("watchlist {old_name:?} (id {id}): {}", said.join("; "));
    let mut args = Map::new();
    args.insert(
        "body".into(),
        json!({ "id": id, "name": name, "rows": rows }),
    );
    Ok(Plan::one(
        Shape::Done,
        "create_iserver_watchlist",
        args,
        words,
    ))
}

async fn delete_watchlist(c: &Ctx<'_>) -> Result<Plan, ToolError> {
    let (id, name) = one_list(c).await?;
    let mut args = Map::new();
    args.insert("id".into(), json!(id));
    Ok(Plan::one(
        Shape::Done,
        "delete_iserver_watchlist",
        args,
        format!("deleted watchlist {name:?} (id {id})"),
    ))
}

/// An alert id as given: digits (it goes into a path).
fn alert_id(c: &Ctx<'_>) -> Result<Option<u64>, ToolError> {
    match c.str_arg("alert_id").map(str::trim) {
        None => Ok(None),
        Some(id) => id
            .parse::<u64>()
            .ok()
            .filter(|x| *x > 0)
            .map(Some)
            .ok_or_else(|| {
                c.invalid(format!(
                    "`alert_id`: {id:?} is not an alert id (digits, as get_alerts lists them)"
                ))
            }),
    }
}

async fn create_alert(c: &Ctx<'_>) -> Result<Plan, ToolError> {
    let id = alert_id(c)?;
    let (operator, level) = match (
        c.args.get("above").and_then(Value::as_f64),
        c.args.get("below").and_then(Value::as_f64),
    ) {
        (Some(p), None) => (">=", p),
        (None, Some(p)) => ("<=", p),
        _ => return Err(c.invalid("give one of `above` or `below` (the price level)")),
    };
    if level <= 0.0 {
        return Err(c.invalid("the price level must be greater than 0"));
    }
    let account = c.one_account("of the alert").await?;
    let r = c
        .resolve("symbol", c.str_arg("symbol").unwrap_or(""))
        .await?;
    let level_text = crate::ibkr::market::plain_number(level);
    let what = format!("{} {operator} {level_text}", r.label);
    let name = c
        .str_arg("name")
        .map(str::to_string)
        .unwrap_or_else(|| what.clone());
    let repeatable = c
        .args
        .get("repeatable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut body = json!({
        "alertName": name,
        "alertMessage": format!("{what} (last price)"),
        "alertRepeatable": i32::from(repeatable),
        "outsideRth": 0,
        "tif": "GTC",
        "conditions": [{
            "type": 1,
            "conidex": format!("{}@SMART", r.conid),
            "operator": operator,
            "triggerMethod": "0",
            "value": level_text,
            "logicBind": "n",
        }],
    });
    if let Some(id) = id {
        body["orderId"] = json!(id);
    }
    let mut args = Map::new();
    args.insert("accountId".into(), json!(account));
    args.insert("body".into(), body);
    let words = match (id, c.str_arg("name")) {
        (Some(id), _) => format!("alert {id} replaced: {what}"),
        (None, Some(n)) => format!("alert {n:?}: {what}"),
        (None, None) => format!("alert {what}"),
    };
    Ok(Plan::one(Shape::Done, "create_iserver_alert", args, words))
}

async fn activate_alert(c: &Ctx<'_>) -> Result<Plan, ToolError> {
    let id = alert_id(c)?.ok_or_else(|| c.invalid("`alert_id` is required"))?;
    let active = c
        .args
        .get("active")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let account = c.one_account("of the alert").await?;
    let mut args = Map::new();
    args.insert("accountId".into(), json!(account));
    args.insert(
        "body".into(),
        json!({ "alertId": id, "alertActive": i32::from(active) }),
    );
    let words = format!("alert {id} {}", if active { "on" } else { "off" });
    Ok(Plan::one(Shape::Done, "set_alert_active", args, words))
}

async fn delete_alert(c: &Ctx<'_>) -> Result<Plan, ToolError> {
    let id = alert_id(c)?.ok_or_else(|| c.invalid("`alert_id` is required"))?;
    let account = c.one_account("of the alert").await?;
    let mut args = Map::new();
    args.insert("accountId".into(), json!(account));
    args.insert("alertId".into(), json!(id.to_string()));
    args.insert("body".into(), json!({}));
    Ok(Plan::one(
        Shape::Done,
        "delete_iserver_alert",
        args,
        format!("deleted alert {id}"),
    ))
}

/// The login's watchlists: (id, name).
async fn user_lists(c: &Ctx<'_>) -> Result<Vec<(String, String)>, ToolError> {
    let v = c
        .fetch(
            "watchlists",
            ops::WATCHLISTS,
            json!({ "SC": "USER_WATCHLIST" }),
        )
        .await?;
    Ok(v.pointer("/data/user_lists")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| {
            Some((
                id_text(l.get("id"))?,
                text(l.get("name")).as_str()?.to_string(),
            ))
        })
        .collect())
}

/// The watchlists named `w` (an id or a name), or an error listing the login's.
fn pick<'a>(
    c: &Ctx<'_>,
    lists: &'a [(String, String)],
    w: &str,
) -> Result<Vec<&'a (String, String)>, ToolError> {
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
    Ok(hit)
}

async fn watchlists(c: &Ctx<'_>) -> Result<Answer, ToolError> {
    let lists = user_lists(c).await?;
    let wanted: Vec<&(String, String)> = match c.str_arg("watchlist") {
        Some(w) => pick(c, &lists, w)?,
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
