//! Market data endpoints: snapshots with IBKR's pre-flight behaviour (the first request for a
//! contract in a brokerage session only subscribes and returns no field values), historical
//! bars (`/iserver/marketdata/history` and the `/hmds/history` shape), the regulatory snapshot
//! and unsubscribing. Field values are strings keyed by IBKR's numeric field codes.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};

use super::{Reply, Req, err, ok};
use crate::market::{self, Quote, tick_decimals};
use crate::state::{Sim, State};
use crate::universe::{Contract, SecType};

/// Fields returned when the request names none.
const DEFAULT_FIELDS: [&str; 4] = ["31", "55", "84", "86"];

fn px(c: &Contract, x: f64) -> String {
    let tick = if c.sec_type == SecType::Opt {
        0.01
    } else {
        c.tick
    };
    format!("{x:.prec$}", prec = tick_decimals(tick))
}

/// `10.2K` / `1.23M` style volume.
fn short_volume(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}B", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}K", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// The value of field `code` of contract `c` at quote `q` (`None`: no value for it).
pub(crate) fn field_value(
    st: &State,
    sim: &Sim,
    c: &Contract,
    q: &Quote,
    code: &str,
) -> Option<Value> {
    let change = q.last - q.prior_close;
    let s = |x: String| Some(Value::String(x));
    let position = st
        .accounts
        .get(&st.session.selected_account)
        .and_then(|a| a.positions.get(&c.conid));
    let greeks = || st.market.greeks(&sim.universe, c.conid);
    match code {
        "31" => s(px(c, q.last)),
        "55" => s(c.symbol.clone()),
        "58" => s(String::new()),
        "70" => s(px(c, q.high)),
        "71" => s(px(c, q.low)),
        "82" => s(px(c, change)),
        "83" => s(format!(
            "{:.2}%",
            if q.prior_close > 0.0 {
                change / q.prior_close * 100.0
            } else {
                0.0
            }
        )),
        "84" => s(px(c, q.bid)),
        "85" => s(format!("{:.0}", q.ask_size)),
        "86" => s(px(c, q.ask)),
        "87" => (c.sec_type != SecType::Cash).then(|| Value::String(short_volume(q.volume))),
        "88" => s(format!("{:.0}", q.bid_size)),
        "6004" => s(c.listing_exchange.clone()),
        "6008" => s(c.conid.to_string()),
        "6070" => s(c.sec_type.as_str().to_string()),
        "6119" => None,
        "6457" => s(c.underlying.unwrap_or(c.conid).to_string()),
        "6509" => s("RpB".into()),
        "7051" => s(c.name.clone()),
        "7059" => s(format!("{:.0}", q.last_size)),
        "7094" => s(format!("{}@SMART", c.conid)),
        "7184" => s(if c.tradable() { "1" } else { "0" }.into()),
        "7219" => s(c.description()),
        "7220" => s(c.order_text()),
        "7221" => s(c.listing_exchange.clone()),
        "7280" => c.sector.clone().map(Value::String),
        "7281" => c.group.clone().map(Value::String),
        "7282" => (c.sec_type == SecType::Stk).then(|| Value::String(short_volume(q.volume * 1.1))),
        "7289" => (c.kind == "COMMON")
            .then(|| Value::String(short_volume(q.last * 4.0e9 * (1.0 + (c.conid % 7) as f64)))),
        "7290" => (c.kind == "COMMON")
            .then(|| Value::String(format!("{:.2}", 18.0 + (c.conid % 23) as f64))),
        "7291" => (c.kind == "COMMON")
            .then(|| Value::String(format!("{:.2}", q.last / (18.0 + (c.conid % 23) as f64)))),
        "7293" => s(px(c, q.prior_close * 1.28)),
        "7294" => s(px(c, q.prior_close * 0.74)),
        "7295" => s(px(c, q.open)),
        "7296" | "7741" => s(px(c, q.prior_close)),
        "7308" => greeks().map(|g| Value::String(format!("{:.3}", g.delta))),
        "7309" => greeks().map(|g| Value::String(format!("{:.3}", g.gamma))),
        "7310" => greeks().map(|g| Value::String(format!("{:.3}", g.theta))),
        "7311" => greeks().map(|g| Value::String(format!("{:.3}", g.vega))),
        "7633" => greeks().map(|g| Value::String(format!("{:.1}%", g.iv * 100.0))),
        "7635" => s(px(c, q.mid())),
        "7682" => s(px(c, q.last - q.open)),
        "7762" => (c.sec_type != SecType::Cash).then(|| Value::String(format!("{:.0}", q.volume))),
        "73" => position.map(|p| Value::String(format!("{:.2}", p.qty * q.last * c.multiplier))),
        "74" => position.map(|p| Value::String(px(c, p.avg_price))),
        "75" => position.map(|p| {
            Value::String(format!(
                "{:.2}",
                (q.last - p.avg_price) * p.qty * c.multiplier
            ))
        }),
        "76" => position.map(|p| Value::String(crate::state::orders::fmt_qty(p.qty))),
        "77" => position.map(|p| {
            Value::String(crate::state::accounts::grouped(
                (q.last - p.avg_price) * p.qty * c.multiplier,
            ))
        }),
        "78" => position.map(|p| {
            Value::String(format!(
                "{:.2}",
                (q.last - q.prior_close) * p.qty * c.multiplier
            ))
        }),
        "79" => position.map(|p| Value::String(format!("{:.2}", p.realized))),
        "80" => position.map(|p| {
            Value::String(format!(
                "{:.2}%",
                (q.last / p.avg_price - 1.0) * 100.0 * p.qty.signum()
            ))
        }),
        "7292" => {
            position.map(|p| Value::String(format!("{:.2}", p.avg_price * p.qty * c.multiplier)))
        }
        _ => None,
    }
}

/// `GET /iserver/marketdata/snapshot`.
pub(crate) fn snapshot(sim: &Sim, r: &Req) -> Reply {
    let conids: Vec<&str> = r
        .q("conids")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if conids.is_empty() {
        return err(400, "Bad Request: Conid(s) missing");
    }
    let mut parsed = Vec::new();
    for c in conids {
        let id = c.split('@').next().unwrap_or(c);
        match id.parse::<i64>() {
            Ok(n) => parsed.push(n),
            Err(_) => return err(400, format!("Bad Request: invalid conid '{c}'")),
        }
    }
    let fields: Vec<String> = match r.q("fields") {
        Some(f) if !f.trim().is_empty() => f
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        _ => DEFAULT_FIELDS.iter().map(|s| s.to_string()).collect(),
    };
    let mut st = sim.lock();
    let now = Utc::now().timestamp_millis();
    let mut out = Vec::new();
    for conid in parsed {
        let mut item = Map::new();
        item.insert("conid".into(), json!(conid));
        item.insert("conidEx".into(), json!(conid.to_string()));
        let (Some(c), Some(q)) = (
            sim.universe.get(conid),
            st.market.quote(&sim.universe, conid),
        ) else {
            item.insert("_updated".into(), json!(now));
            out.push(Value::Object(item));
            continue;
        };
        let first = !st.session.subscriptions.contains_key(&conid);
        if first {
            let id = format!("q{}", st.session.next_server_id);
            st.session.next_server_id += 1;
            st.session.subscriptions.insert(conid, id);
        }
        let server_id = st.session.subscriptions[&conid].clone();
        item.insert("_updated".into(), json!(now));
        item.insert("server_id".into(), json!(server_id));
        if first && st.snapshot_preflight {
            out.push(Value::Object(item));
            continue;
        }
        item.insert("6119".into(), json!(server_id));
        item.insert("6509".into(), json!("RpB"));
        for f in &fields {
            if let Some(v) = field_value(&st, sim, c, &q, f) {
                item.insert(f.clone(), v);
                if f == "87" {
                    item.insert("87_raw".into(), json!(q.volume));
                }
            }
        }
        out.push(Value::Object(item));
    }
    ok(Value::Array(out))
}

/// `GET /md/regsnapshot`.
pub(crate) fn regsnapshot(sim: &Sim, r: &Req) -> Reply {
    let Some(conid) = r.q("conid").and_then(|c| c.parse::<i64>().ok()) else {
        return err(400, "Bad Request: conid is required");
    };
    let st = sim.lock();
    let (Some(c), Some(q)) = (
        sim.universe.get(conid),
        st.market.quote(&sim.universe, conid),
    ) else {
        return err(400, format!("Bad Request: contract {conid} not found"));
    };
    ok(json!({
        "conid": conid,
        "conidEx": conid.to_string(),
        "sizeMinTick": 1.0,
        "BboExchange": "9c0001",
        "HasDelayed": false,
        "84": px(c, q.bid),
        "86": px(c, q.ask),
        "88": q.bid_size as i64,
        "85": q.ask_size as i64,
        "BestBidExch": 1,
        "BestAskExch": 1,
        "31": px(c, q.last),
        "7059": q.last_size,
        "LastExch": 1,
        "7057": "Q",
        "7068": "Q",
        "7058": "Q",
    }))
}

/// `POST /iserver/marketdata/unsubscribe`.
pub(crate) fn unsubscribe(sim: &Sim, r: &Req) -> Reply {
    let Some(conid) = r
        .field("conid")
        .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
    else {
        return err(400, "Bad Request: conid is required");
    };
    sim.lock().session.subscriptions.remove(&conid);
    ok(json!({ "success": true }))
}

/// `GET /iserver/marketdata/unsubscribeall`.
pub(crate) fn unsubscribe_all(sim: &Sim, _r: &Req) -> Reply {
    sim.lock().session.subscriptions.clear();
    ok(json!({ "unsubscribed": true }))
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, "%Y%m%d-%H:%M:%S")
        .ok()
        .map(|n| n.and_utc())
}

fn fmt_time(t_ms: i64) -> String {
    DateTime::from_timestamp_millis(t_ms)
        .map(|d| d.format("%Y%m%d-%H:%M:%S").to_string())
        .unwrap_or_default()
}

struct History<'a> {
    contract: &'a Contract,
    bars: Vec<market::Bar>,
    bar_secs: i64,
}

fn history_bars<'a>(sim: &'a Sim, r: &Req, forward: bool) -> Result<History<'a>, Reply> {
    let conid = r
        .q("conid")
        .and_then(|c| c.parse::<i64>().ok())
        .ok_or_else(|| err(400, "Bad Request: conid is required"))?;
    let contract = sim
        .universe
        .get(conid)
        .ok_or_else(|| err(400, format!("Bad Request: contract {conid} not found")))?;
    let (bar, period, _) =
        market::check_history(r.q("bar").unwrap_or(""), r.q("period").unwrap_or(""))
            .map_err(|e| err(400, e))?;
    let now = Utc::now();
    let start = match r.q("startTime") {
        Some(s) => Some(parse_time(s).ok_or_else(|| {
            err(
                400,
                format!("Bad Request: startTime '{s}' is not YYYYMMDD-hh:mm:ss"),
            )
        })?),
        None => None,
    };
    let end = match (start, forward) {
        (Some(s), true) => (s + chrono::Duration::seconds(period.seconds)).min(now),
        (Some(s), false) => s.min(now),
        (None, _) => now,
    };
    let st = sim.lock();
    let last = st.market.last(&sim.universe, conid).unwrap_or(1.0);
    let bars = market::bars(sim.seed, contract, last, bar, period, end);
    Ok(History {
        contract,
        bars,
        bar_secs: bar.seconds,
    })
}

fn bars_json(bars: &[market::Bar]) -> Vec<Value> {
    bars.iter()
        .map(|b| json!({ "o": b.o, "c": b.c, "h": b.h, "l": b.l, "v": b.v, "t": b.t_ms }))
        .collect()
}

/// `GET /iserver/marketdata/history`.
pub(crate) fn history(sim: &Sim, r: &Req) -> Reply {
    let h = match history_bars(sim, r, false) {
        Ok(h) => h,
        Err(e) => return e,
    };
    let c = h.contract;
    let factor = if c.sec_type == SecType::Cash {
        100_000.0
    } else {
        100.0
    };
    let first_t = h.bars.first().map(|b| b.t_ms).unwrap_or(0);
    let hi = h
        .bars
        .iter()
        .cloned()
        .fold(None::<market::Bar>, |m, b| match m {
            Some(x) if x.h >= b.h => Some(x),
            _ => Some(b),
        });
    let lo = h
        .bars
        .iter()
        .cloned()
        .fold(None::<market::Bar>, |m, b| match m {
            Some(x) if x.l <= b.l => Some(x),
            _ => Some(b),
        });
    let mark = |b: Option<market::Bar>, price: fn(&market::Bar) -> f64| {
        b.map(|b| {
            format!(
                "{:.0}/{}/{}",
                price(&b) * factor,
                b.v,
                (b.t_ms - first_t) / 60_000
            )
        })
        .unwrap_or_default()
    };
    ok(json!({
        "serverId": format!("{}", 20_000 + c.conid % 9_973),
        "symbol": c.symbol,
        "text": c.name,
        "priceFactor": factor as i64,
        "startTime": fmt_time(first_t),
        "high": mark(hi, |b| b.h),
        "low": mark(lo, |b| b.l),
        "timePeriod": r.q("period").unwrap_or(""),
        "barLength": h.bar_secs,
        "mdAvailability": "S",
        "mktDataDelay": 0,
        "outsideRth": r.q("outsideRth") == Some("true"),
        "tradingDayDuration": 1440,
        "volumeFactor": 1,
        "priceDisplayRule": 1,
        "priceDisplayValue": tick_decimals(c.tick).to_string(),
        "negativeCapable": false,
        "messageVersion": 2,
        "data": bars_json(&h.bars),
        "points": h.bars.len().saturating_sub(1),
        "travelTime": 12,
    }))
}

/// `GET /hmds/history`.
pub(crate) fn hmds_history(sim: &Sim, r: &Req) -> Reply {
    let forward = r.q("direction") == Some("-1");
    let h = match history_bars(sim, r, forward) {
        Ok(h) => h,
        Err(e) => return e,
    };
    let start = h.bars.first().map(|b| b.t_ms).unwrap_or(0);
    let end = h
        .bars
        .last()
        .map(|b| b.t_ms + h.bar_secs * 1000)
        .unwrap_or(0);
    ok(json!({
        "startTime": fmt_time(start),
        "startTimeVal": start,
        "endTime": fmt_time(end),
        "endTimeVal": end,
        "data": bars_json(&h.bars),
        "points": h.bars.len(),
        "mktDataDelay": 0,
    }))
}
