//! Watchlist endpoints: list, read, create (or replace) and delete user watchlists.

use serde_json::{Value, json};

use super::{Reply, Req, err, ok};
use crate::state::Sim;
use crate::state::misc::{Row, Watchlist};

/// `GET /iserver/watchlists`.
pub(crate) fn list(sim: &Sim, _r: &Req) -> Reply {
    let mut st = sim.lock();
    st.watchlist_mid += 1;
    let lists: Vec<Value> = st
        .watchlists
        .values()
        .map(|w| json!({ "is_open": false, "read_only": false, "name": w.name, "modified": w.modified_ms, "id": w.id, "type": "watchlist" }))
        .collect();
    ok(json!({
        "data": { "scanners_only": false, "show_scanners": false, "bulk_delete": false, "user_lists": lists },
        "action": "content",
        "MID": st.watchlist_mid.to_string(),
    }))
}

/// `GET /iserver/watchlist?id=...`.
pub(crate) fn get_one(sim: &Sim, r: &Req) -> Reply {
    let id = r.q("id").unwrap_or("");
    let st = sim.lock();
    let Some(w) = st.watchlists.get(id) else {
        return err(400, format!("Bad Request: watchlist {id} not found"));
    };
    let instruments: Vec<Value> = w
        .rows
        .iter()
        .map(|row| match row {
            Row::Header(h) => json!({ "H": h }),
            Row::Contract(conid) => match sim.universe.get(*conid) {
                Some(c) => json!({
                    "ST": c.sec_type.as_str(), "C": conid.to_string(), "conid": conid, "name": c.name,
                    "fullName": c.description(), "assetClass": c.sec_type.as_str(), "ticker": c.symbol,
                }),
                None => json!({ "C": conid.to_string(), "conid": conid }),
            },
        })
        .collect();
    ok(
        json!({ "id": w.id, "hash": w.modified_ms.to_string(), "name": w.name, "readOnly": false, "instruments": instruments }),
    )
}

/// `POST /iserver/watchlist` with `{id, name, rows: [{C: conid} | {H: header}]}`.
pub(crate) fn create(sim: &Sim, r: &Req) -> Reply {
    let id = r.field("id").map(|v| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    });
    let name = r.field("name").and_then(Value::as_str);
    let rows = r.field("rows").and_then(Value::as_array);
    let (Some(id), Some(name), Some(rows)) = (id, name, rows) else {
        return err(400, "Bad Request: id, name and rows are required");
    };
    let mut parsed = Vec::new();
    for row in rows {
        if let Some(c) = row.get("C") {
            let Some(conid) = c.as_i64().or_else(|| c.as_str()?.parse().ok()) else {
                return err(400, "Bad Request: C must be a conid");
            };
            if sim.universe.get(conid).is_none() {
                return err(400, format!("Bad Request: contract {conid} not found"));
            }
            parsed.push(Row::Contract(conid));
        } else if let Some(h) = row.get("H") {
            parsed.push(Row::Header(h.as_str().unwrap_or("").to_string()));
        } else {
            return err(400, "Bad Request: each row needs C (conid) or H (header)");
        }
    }
    let now = chrono::Utc::now().timestamp_millis();
    sim.lock().watchlists.insert(
        id.clone(),
        Watchlist {
            id: id.clone(),
            name: name.to_string(),
            modified_ms: now,
            rows: parsed,
        },
    );
    ok(
        json!({ "id": id, "hash": now.to_string(), "name": name, "readOnly": false, "instruments": [] }),
    )
}

/// `DELETE /iserver/watchlist?id=...`.
pub(crate) fn remove(sim: &Sim, r: &Req) -> Reply {
    let id = r.q("id").unwrap_or("").to_string();
    let mut st = sim.lock();
    if st.watchlists.remove(&id).is_none() {
        return err(400, format!("Bad Request: watchlist {id} not found"));
    }
    st.watchlist_mid += 1;
    ok(
        json!({ "data": { "deleted": id }, "action": "context", "MID": st.watchlist_mid.to_string() }),
    )
}
