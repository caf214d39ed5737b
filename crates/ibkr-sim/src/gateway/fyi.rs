//! FYI (notifications) endpoints: notification list, unread count, mark read, settings per
//! type code, disclaimers, and delivery options (email and devices).

use serde_json::{Value, json};

use super::{Reply, Req, err, ok};
use crate::state::Sim;
use crate::state::misc::{Device, FYI_CODES};

fn ack() -> Reply {
    ok(json!({ "V": 1, "T": 10 }))
}

fn known_code(code: &str) -> bool {
    FYI_CODES.iter().any(|(c, _, _)| *c == code)
}

/// `GET /fyi/notifications?max=...` (`include`/`exclude` type codes; `id` pages past a
/// notification).
pub(crate) fn notifications(sim: &Sim, r: &Req) -> Reply {
    let Some(max) = r.q("max").and_then(|m| m.parse::<usize>().ok()) else {
        return err(400, "Bad Request: max is required");
    };
    let include: Vec<&str> = r
        .q("include")
        .map(|s| s.split(',').collect())
        .unwrap_or_default();
    let exclude: Vec<&str> = r
        .q("exclude")
        .map(|s| s.split(',').collect())
        .unwrap_or_default();
    let st = sim.lock();
    let mut notes: Vec<_> = st.fyi.notifications.iter().collect();
    notes.sort_by_key(|n| std::cmp::Reverse(n.date_s));
    if let Some(after) = r.q("id")
        && let Some(pos) = notes.iter().position(|n| n.id == after)
    {
        notes.drain(..=pos);
    }
    let items: Vec<Value> = notes
        .into_iter()
        .filter(|n| include.is_empty() || include.contains(&n.code.as_str()))
        .filter(|n| !exclude.contains(&n.code.as_str()))
        .take(max)
        .map(|n| json!({ "R": i32::from(n.read), "D": format!("{}.0", n.date_s), "MS": n.title, "MD": n.body, "ID": n.id, "HT": 0, "FC": n.code }))
        .collect();
    ok(Value::Array(items))
}

/// `GET /fyi/unreadnumber`.
pub(crate) fn unread(sim: &Sim, _r: &Req) -> Reply {
    let n = sim
        .lock()
        .fyi
        .notifications
        .iter()
        .filter(|n| !n.read)
        .count();
    ok(json!({ "BN": n }))
}

/// `PUT /fyi/notifications/{notificationId}`: marks it read.
pub(crate) fn mark_read(sim: &Sim, r: &Req) -> Reply {
    let id = r.param("notificationId");
    let mut st = sim.lock();
    match st.fyi.notifications.iter_mut().find(|n| n.id == id) {
        Some(n) => {
            n.read = true;
            ok(json!({ "V": 1, "T": 5, "P": { "R": 1, "ID": id } }))
        }
        None => err(400, format!("Bad Request: notification {id} not found")),
    }
}

/// `GET /fyi/settings`.
pub(crate) fn settings(sim: &Sim, _r: &Req) -> Reply {
    let st = sim.lock();
    let items: Vec<Value> = st
        .fyi
        .settings
        .iter()
        .map(|s| json!({ "FC": s.code, "H": 0, "A": i32::from(s.enabled), "FD": s.description, "FN": s.name }))
        .collect();
    ok(Value::Array(items))
}

/// `POST /fyi/settings/{typecode}` with `{"enabled": bool}`.
pub(crate) fn set_setting(sim: &Sim, r: &Req) -> Reply {
    let code = r.param("typecode");
    let Some(enabled) = r.field("enabled").and_then(Value::as_bool) else {
        return err(400, "Bad Request: enabled is required");
    };
    let mut st = sim.lock();
    match st.fyi.settings.iter_mut().find(|s| s.code == code) {
        Some(s) => {
            s.enabled = enabled;
            ack()
        }
        None => err(400, format!("Bad Request: unknown typecode {code}")),
    }
}

/// `GET /fyi/disclaimer/{typecode}`.
pub(crate) fn disclaimer(_sim: &Sim, r: &Req) -> Reply {
    let code = r.param("typecode");
    if !known_code(code) {
        return err(400, format!("Bad Request: unknown typecode {code}"));
    }
    ok(json!({
        "FC": code,
        "DT": "This notification is for information only. It is not a recommendation or an offer to buy or sell any product, and it does not take your circumstances into account.",
    }))
}

/// `PUT /fyi/disclaimer/{typecode}`: marks the disclaimer read.
pub(crate) fn disclaimer_read(sim: &Sim, r: &Req) -> Reply {
    let code = r.param("typecode");
    let mut st = sim.lock();
    match st.fyi.settings.iter_mut().find(|s| s.code == code) {
        Some(s) => {
            s.disclaimer_read = true;
            ack()
        }
        None => err(400, format!("Bad Request: unknown typecode {code}")),
    }
}

/// `GET /fyi/deliveryoptions`.
pub(crate) fn delivery_options(sim: &Sim, _r: &Req) -> Reply {
    let st = sim.lock();
    let devices: Vec<Value> = st
        .fyi
        .devices
        .iter()
        .map(|d| json!({ "NM": d.name, "I": d.id, "UI": d.ui_name, "A": i32::from(d.enabled) }))
        .collect();
    ok(json!({ "M": i32::from(st.fyi.email), "E": devices }))
}

/// `PUT /fyi/deliveryoptions/email?enabled=...`.
pub(crate) fn email(sim: &Sim, r: &Req) -> Reply {
    let enabled = match r.q("enabled") {
        Some("true") => true,
        Some("false") => false,
        _ => return err(400, "Bad Request: enabled must be true or false"),
    };
    sim.lock().fyi.email = enabled;
    ack()
}

/// `POST /fyi/deliveryoptions/device` with `{deviceName, deviceId, uiName, enabled}`.
pub(crate) fn device(sim: &Sim, r: &Req) -> Reply {
    let Some(id) = r.field("deviceId").and_then(Value::as_str) else {
        return err(400, "Bad Request: deviceId is required");
    };
    let d = Device {
        id: id.to_string(),
        name: r
            .field("deviceName")
            .and_then(Value::as_str)
            .unwrap_or(id)
            .to_string(),
        ui_name: r
            .field("uiName")
            .and_then(Value::as_str)
            .unwrap_or(id)
            .to_string(),
        enabled: r.field("enabled").and_then(Value::as_bool).unwrap_or(true),
    };
    let mut st = sim.lock();
    st.fyi.devices.retain(|x| x.id != d.id);
    st.fyi.devices.push(d);
    ack()
}

/// `DELETE /fyi/deliveryoptions/{deviceId}`.
pub(crate) fn delete_device(sim: &Sim, r: &Req) -> Reply {
    let id = r.param("deviceId");
    let mut st = sim.lock();
    let before = st.fyi.devices.len();
    st.fyi.devices.retain(|d| d.id != id);
    if st.fyi.devices.len() == before {
        return err(400, format!("Bad Request: device {id} not found"));
    }
    ack()
}
