//! Alert endpoints: list, detail, the MTA (mobile trading assistant) alert, create or modify,
//! activate or deactivate, delete. Price conditions are checked after every market step (see
//! `State::step_market`).

use serde_json::{Value, json};

use super::{Reply, Req, err, ok};
use crate::state::Sim;
use crate::state::misc::{Alert, Condition};

fn stamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y%m%d-%H:%M:%S").to_string())
        .unwrap_or_default()
}

fn summary_json(a: &Alert) -> Value {
    json!({
        "order_id": a.id,
        "account": a.account,
        "alert_name": a.name,
        "alert_active": i32::from(a.active),
        "order_time": stamp(a.created_ms),
        "alert_triggered": a.triggered,
        "alert_repeatable": i32::from(a.repeatable),
    })
}

fn detail_json(sim: &Sim, a: &Alert) -> Value {
    let conditions: Vec<Value> = a
        .conditions
        .iter()
        .map(|c| {
            let conid: i64 = c.conidex.split('@').next().and_then(|s| s.parse().ok()).unwrap_or(0);
            json!({
                "condition_type": c.ctype,
                "conidex": c.conidex,
                "contract_description_1": sim.universe.get(conid).map(|k| k.description()).unwrap_or_default(),
                "condition_operator": c.operator,
                "condition_trigger_method": c.trigger_method,
                "condition_value": c.value,
                "condition_logic_bind": c.logic_bind,
                "condition_time_zone": c.time_zone,
            })
        })
        .collect();
    json!({
        "account": a.account,
        "order_id": a.id,
        "alertName": a.name,
        "alert_name": a.name,
        "tif": a.tif,
        "expire_time": a.expire_time,
        "alert_active": i32::from(a.active),
        "alert_repeatable": i32::from(a.repeatable),
        "alert_email": a.email,
        "alert_send_message": i32::from(a.send_message),
        "alert_message": a.message,
        "alert_show_popup": i32::from(a.show_popup),
        "alert_play_audio": Value::Null,
        "order_status": if a.active { "Submitted" } else { "Presubmitted" },
        "alert_triggered": a.triggered,
        "fg_color": "#FFFFFF",
        "bg_color": "#0000CC",
        "order_not_editable": false,
        "itws_orders_only": i32::from(a.itws_only),
        "alert_mta_currency": if a.mta { json!("USD") } else { Value::Null },
        "alert_mta_defaults": if a.mta { json!("9:0:50,10:0:50,11:0:50,12:0:50") } else { Value::Null },
        "tool_id": Value::Null,
        "time_zone": "US/Eastern",
        "alert_default_type": if a.mta { json!(1) } else { Value::Null },
        "condition_size": a.conditions.len(),
        "condition_outside_rth": i32::from(a.outside_rth),
        "conditions": conditions,
    })
}

/// `GET /iserver/account/{accountId}/alerts` (not the MTA alert).
pub(crate) fn list(sim: &Sim, r: &Req) -> Reply {
    let acct = r.param("accountId");
    let st = sim.lock();
    if !st.accounts.contains_key(acct) {
        return err(400, format!("Bad Request: account {acct} not found"));
    }
    let items: Vec<Value> = st
        .alerts
        .items
        .values()
        .filter(|a| a.account == acct && !a.mta)
        .map(summary_json)
        .collect();
    ok(Value::Array(items))
}

/// `GET /iserver/account/alert/{alertId}?type=Q`.
pub(crate) fn get_one(sim: &Sim, r: &Req) -> Reply {
    let Ok(id) = r.param("alertId").parse::<i64>() else {
        return err(400, "Bad Request: alertId must be a number");
    };
    let st = sim.lock();
    match st.alerts.items.get(&id) {
        Some(a) => ok(detail_json(sim, a)),
        None => err(400, format!("Bad Request: alert {id} not found")),
    }
}

/// `GET /iserver/account/mta`: the MTA alert of the selected account.
pub(crate) fn mta(sim: &Sim, _r: &Req) -> Reply {
    let st = sim.lock();
    let acct = st.session.selected_account.clone();
    match st
        .alerts
        .items
        .values()
        .find(|a| a.mta && a.account == acct)
    {
        Some(a) => ok(detail_json(sim, a)),
        None => err(400, "Bad Request: no MTA alert"),
    }
}

fn int_field(r: &Req, name: &str) -> Option<i64> {
    r.field(name)
        .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
}

/// `POST /iserver/account/{accountId}/alert` (a non-zero `orderId` modifies that alert).
pub(crate) fn create(sim: &Sim, r: &Req) -> Reply {
    let acct = r.param("accountId").to_string();
    let name = r.field("alertName").and_then(Value::as_str);
    let conditions = r.field("conditions").and_then(Value::as_array);
    let tif = r.field("tif").and_then(Value::as_str);
    let (Some(name), Some(conditions), Some(tif)) = (name, conditions, tif) else {
        return err(
            400,
            "Bad Request: alertName, alertMessage, alertRepeatable, conditions, outsideRth and tif are required",
        );
    };
    if !["GTC", "GTD"].contains(&tif) || conditions.is_empty() {
        return err(
            400,
            "Bad Request: tif must be GTC or GTD and conditions must not be empty",
        );
    }
    let mut parsed = Vec::new();
    for c in conditions {
        let conidex = match c.get("conidex") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return err(400, "Bad Request: each condition needs a conidex"),
        };
        let conid: i64 = conidex
            .split('@')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let ctype = c.get("type").and_then(Value::as_i64).unwrap_or(1);
        if ctype == 1 && sim.universe.get(conid).is_none() {
            return err(400, format!("Bad Request: contract {conidex} not found"));
        }
        let value = match c.get("value") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return err(400, "Bad Request: each condition needs a value"),
        };
        parsed.push(Condition {
            ctype,
            conidex,
            operator: c
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or(">=")
                .to_string(),
            trigger_method: c
                .get("triggerMethod")
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .unwrap_or_else(|| "0".into()),
            value,
            logic_bind: c
                .get("logicBind")
                .and_then(Value::as_str)
                .unwrap_or("n")
                .to_string(),
            time_zone: c
                .get("timeZone")
                .and_then(Value::as_str)
                .map(str::to_string),
        });
    }
    let mut st = sim.lock();
    if !st.accounts.contains_key(&acct) {
        return err(400, format!("Bad Request: account {acct} not found"));
    }
    let existing = int_field(r, "orderId").filter(|id| *id != 0);
    let id = match existing {
        Some(id) if st.alerts.items.get(&id).is_some_and(|a| a.account == acct) => id,
        Some(id) => return err(400, format!("Bad Request: alert {id} not found")),
        None => {
            let id = st.alerts.next_id;
            st.alerts.next_id += 1;
            id
        }
    };
    let alert = Alert {
        id,
        account: acct,
        name: name.to_string(),
        message: r
            .field("alertMessage")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        active: true,
        repeatable: int_field(r, "alertRepeatable").unwrap_or(0) != 0,
        tif: tif.to_string(),
        expire_time: r
            .field("expireTime")
            .and_then(Value::as_str)
            .map(str::to_string),
        email: r
            .field("email")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        send_message: int_field(r, "sendMessage").unwrap_or(0) != 0,
        show_popup: int_field(r, "showPopup").unwrap_or(0) != 0,
        itws_only: int_field(r, "iTWSOrdersOnly").unwrap_or(0) != 0,
        outside_rth: int_field(r, "outsideRth").unwrap_or(0) != 0,
        conditions: parsed,
        created_ms: chrono::Utc::now().timestamp_millis(),
        triggered: false,
        mta: false,
    };
    st.alerts.items.insert(id, alert);
    let request_id = st.alerts.next_request;
    st.alerts.next_request += 1;
    ok(json!({
        "request_id": request_id,
        "order_id": id,
        "success": true,
        "text": if existing.is_some() { "Alert has been modified." } else { "Alert has been submitted." },
        "order_status": "Submitted",
        "warning_message": Value::Null,
    }))
}

/// `POST /iserver/account/{accountId}/alert/activate` (`alertId` 0 applies to all alerts).
pub(crate) fn activate(sim: &Sim, r: &Req) -> Reply {
    let (Some(id), Some(active)) = (int_field(r, "alertId"), int_field(r, "alertActive")) else {
        return err(400, "Bad Request: alertId and alertActive are required");
    };
    let acct = r.param("accountId");
    let mut st = sim.lock();
    let mut hit = false;
    for a in st
        .alerts
        .items
        .values_mut()
        .filter(|a| a.account == acct && !a.mta && (id == 0 || a.id == id))
    {
        a.active = active != 0;
        if a.active {
            a.triggered = false;
        }
        hit = true;
    }
    if !hit {
        return err(400, format!("Bad Request: alert {id} not found"));
    }
    let request_id = st.alerts.next_request;
    st.alerts.next_request += 1;
    ok(json!({
        "request_id": request_id,
        "order_id": id,
        "success": true,
        "text": if active != 0 { "Alert has been activated." } else { "Alert has been deactivated." },
        "failure_list": Value::Null,
    }))
}

/// `DELETE /iserver/account/{accountId}/alert/{alertId}` (0 deletes every alert).
pub(crate) fn remove(sim: &Sim, r: &Req) -> Reply {
    let Ok(id) = r.param("alertId").parse::<i64>() else {
        return err(400, "Bad Request: alertId must be a number");
    };
    let acct = r.param("accountId").to_string();
    let mut st = sim.lock();
    let before = st.alerts.items.len();
    st.alerts
        .items
        .retain(|_, a| !(a.account == acct && !a.mta && (id == 0 || a.id == id)));
    if st.alerts.items.len() == before {
        return err(400, format!("Bad Request: alert {id} not found"));
    }
    let request_id = st.alerts.next_request;
    st.alerts.next_request += 1;
    ok(json!({
        "request_id": request_id,
        "order_id": id,
        "success": true,
        "text": "Alert has been deleted.",
        "failure_list": Value::Null,
    }))
}
