//! Market scanners: `/iserver/scanner/params|run` and the HMDS flavour `/hmds/scanner/params`
//! and `/hmds/scanner/run`. Scans rank the simulated stocks and ETFs by the live quotes.

use serde_json::{Value, json};

use super::{Reply, Req, err, ok};
use crate::market::Quote;
use crate::state::Sim;
use crate::universe::{Contract, SecType};

const SCANS: [(&str, &str); 5] = [
    ("TOP_PERC_GAIN", "Top % Gainers"),
    ("TOP_PERC_LOSE", "Top % Losers"),
    ("MOST_ACTIVE", "Most Active"),
    ("HOT_BY_PRICE", "Hot Contracts by Price"),
    ("HIGH_VS_52W_HL", "Closest to 52 Week High"),
];

fn instruments() -> Value {
    json!([
        { "display_name": "US Stocks", "type": "STK", "filters": ["priceAbove", "priceBelow", "volumeAbove", "changePercAbove"] },
        { "display_name": "US Equity ETFs", "type": "ETF.EQ.US", "filters": ["priceAbove", "priceBelow", "volumeAbove"] },
    ])
}

fn locations() -> Value {
    json!([
        { "display_name": "US Stocks", "type": "STK.US", "locations": [
            { "display_name": "US Major", "type": "STK.US.MAJOR", "locations": [] },
            { "display_name": "NASDAQ", "type": "STK.NASDAQ", "locations": [] },
            { "display_name": "NYSE", "type": "STK.NYSE", "locations": [] },
        ] },
        { "display_name": "US ETFs", "type": "ETF.EQ.US", "locations": [
            { "display_name": "US Major ETFs", "type": "ETF.EQ.US.MAJOR", "locations": [] },
        ] },
    ])
}

fn scan_types() -> Vec<Value> {
    SCANS.iter().map(|(code, name)| json!({ "display_name": name, "code": code, "instruments": ["STK", "ETF.EQ.US"] })).collect()
}

/// `GET /iserver/scanner/params`.
pub(crate) fn params(_sim: &Sim, _r: &Req) -> Reply {
    ok(json!({
        "scan_type_list": scan_types(),
        "instrument_list": instruments(),
        "filter_list": [
            { "group": "Price", "display_name": "Price Above", "code": "priceAbove", "type": "non-range" },
            { "group": "Price", "display_name": "Price Below", "code": "priceBelow", "type": "non-range" },
            { "group": "Volume", "display_name": "Volume Above", "code": "volumeAbove", "type": "non-range" },
            { "group": "Change", "display_name": "Change % Above", "code": "changePercAbove", "type": "non-range" },
        ],
        "location_tree": locations(),
    }))
}

/// `GET /hmds/scanner/params`.
pub(crate) fn hmds_params(_sim: &Sim, _r: &Req) -> Reply {
    ok(
        json!({ "scan_type_list": scan_types(), "instrument_list": instruments(), "location_tree": locations() }),
    )
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str()?.parse().ok())
}

fn ranked<'a>(
    sim: &'a Sim,
    instrument: &str,
    location: &str,
    scan: &str,
    filters: &[(String, f64)],
) -> Result<Vec<(&'a Contract, Quote, String)>, Reply> {
    if !SCANS.iter().any(|(c, _)| *c == scan) {
        return Err(err(400, format!("Bad Request: unknown scan type '{scan}'")));
    }
    let kind = match instrument {
        "STK" => "COMMON",
        "ETF.EQ.US" => "ETF",
        other => {
            return Err(err(
                400,
                format!("Bad Request: unknown instrument '{other}'"),
            ));
        }
    };
    let st = sim.lock();
    let mut rows: Vec<(&Contract, Quote)> = sim
        .universe
        .contracts
        .values()
        .filter(|c| c.sec_type == SecType::Stk && c.kind == kind)
        .filter(|c| match location {
            "STK.NASDAQ" => c.listing_exchange == "NASDAQ",
            "STK.NYSE" => c.listing_exchange == "NYSE",
            _ => true,
        })
        .filter_map(|c| st.market.quote(&sim.universe, c.conid).map(|q| (c, q)))
        .filter(|(_, q)| {
            filters.iter().all(|(code, v)| match code.as_str() {
                "priceAbove" => q.last > *v,
                "priceBelow" => q.last < *v,
                "volumeAbove" => q.volume > *v,
                "changePercAbove" => (q.last / q.prior_close - 1.0) * 100.0 > *v,
                _ => true,
            })
        })
        .collect();
    let chg = |q: &Quote| q.last / q.prior_close - 1.0;
    match scan {
        "TOP_PERC_GAIN" => rows.sort_by(|a, b| chg(&b.1).total_cmp(&chg(&a.1))),
        "TOP_PERC_LOSE" => rows.sort_by(|a, b| chg(&a.1).total_cmp(&chg(&b.1))),
        "MOST_ACTIVE" => rows.sort_by(|a, b| b.1.volume.total_cmp(&a.1.volume)),
        "HOT_BY_PRICE" => rows.sort_by(|a, b| b.1.last.total_cmp(&a.1.last)),
        _ => rows.sort_by(|a, b| (b.1.last / b.1.high).total_cmp(&(a.1.last / a.1.high))),
    }
    Ok(rows
        .into_iter()
        .map(|(c, q)| {
            let data = match scan {
                "MOST_ACTIVE" => format!("{:.3}M", q.volume / 1e6),
                "HOT_BY_PRICE" => format!("{:.2}", q.last),
                _ => format!("{:.2}%", chg(&q) * 100.0),
            };
            (c, q, data)
        })
        .collect())
}

/// `POST /iserver/scanner/run`.
pub(crate) fn run(sim: &Sim, r: &Req) -> Reply {
    let instrument = r.field("instrument").and_then(Value::as_str).unwrap_or("");
    let scan = r.field("type").and_then(Value::as_str).unwrap_or("");
    let location = r
        .field("location")
        .and_then(Value::as_str)
        .unwrap_or("STK.US.MAJOR");
    let filters: Vec<(String, f64)> = r
        .field("filter")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| Some((f.get("code")?.as_str()?.to_string(), num(f.get("value")?)?)))
                .collect()
        })
        .unwrap_or_default();
    let rows = match ranked(sim, instrument, location, scan, &filters) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let column = match scan {
        "MOST_ACTIVE" => "Volume",
        "HOT_BY_PRICE" => "Last",
        _ => "Chg%",
    };
    let contracts: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, (c, _, data))| {
            let mut v = json!({
                "server_id": i.to_string(), "symbol": c.symbol, "conidex": c.conid.to_string(), "con_id": c.conid,
                "available_chart_periods": "#R|1", "company_name": c.name, "scan_data": data,
                "contract_description_1": c.symbol, "listing_exchange": c.order_exchange, "sec_type": "STK",
            });
            if i == 0 {
                v["column_name"] = json!(column);
            }
            v
        })
        .collect();
    ok(json!({ "contracts": contracts, "scan_data_column_name": column }))
}

/// `POST /hmds/scanner/run`.
pub(crate) fn hmds_run(sim: &Sim, r: &Req) -> Reply {
    let instrument = r.field("instrument").and_then(Value::as_str).unwrap_or("");
    let scan = r.field("scanCode").and_then(Value::as_str).unwrap_or("");
    let location = r
        .field("locations")
        .and_then(Value::as_str)
        .unwrap_or("STK.US.MAJOR");
    let max = r
        .field("maxItems")
        .and_then(Value::as_u64)
        .unwrap_or(25)
        .clamp(1, 250) as usize;
    let rows = match ranked(sim, instrument, location, scan, &[]) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let now = chrono::Utc::now();
    let stamp = now.format("%Y%m%d-%H:%M:%S").to_string();
    let items: Vec<Value> = rows
        .iter()
        .take(max)
        .map(|(c, _, _)| json!({ "inScanTime": stamp, "contractID": c.conid }))
        .collect();
    ok(json!({
        "total": rows.len(),
        "size": items.len(),
        "offset": 0,
        "scanTime": stamp,
        "id": format!("scanner{}", now.timestamp() % 100_000),
        "position": "v1:AAAAAQ",
        "Contracts": { "Contract": items },
    }))
}
