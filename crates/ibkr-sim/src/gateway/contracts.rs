//! Contract endpoints: symbol and name search, security-definition info and option strikes,
//! bond filters, contract info and trading rules, algos, `/trsrv/*` lookups (secdef, stocks,
//! futures, trading schedule, all conids) and FX pairs and rates. Data comes from the
//! simulator's universe; bonds are not simulated (bond searches find nothing).

use chrono::{Datelike, Duration, Weekday};
use serde_json::{Map, Value, json};

use super::{Reply, Req, err, ok};
use crate::market::tick_decimals;
use crate::state::Sim;
use crate::state::accounts::ACCOUNT_IDS;
use crate::universe::{Contract, SecType, Universe, fmt_strike, month_param};

fn months(universe: &Universe, conid: i64, sec_type: SecType) -> Vec<String> {
    let mut m: Vec<(chrono::NaiveDate, String)> = universe
        .derivatives_of(conid, sec_type)
        .filter_map(|c| c.expiry.map(|e| (e, month_param(e))))
        .collect();
    m.sort();
    m.dedup_by(|a, b| a.1 == b.1);
    m.into_iter().map(|(_, s)| s).collect()
}

fn search_item(universe: &Universe, c: &Contract) -> Value {
    let mut sections = vec![json!({ "secType": c.sec_type.as_str() })];
    if c.sec_type == SecType::Cash {
        sections[0]["exchange"] = json!("IDEALPRO");
    }
    let opt_months = months(universe, c.conid, SecType::Opt);
    if !opt_months.is_empty() {
        sections.push(json!({ "secType": "OPT", "months": opt_months.join(";"), "exchange": "SMART;AMEX;CBOE;PHLX;ISE" }));
    }
    let fut_months = months(universe, c.conid, SecType::Fut);
    if !fut_months.is_empty() {
        sections
            .push(json!({ "secType": "FUT", "months": fut_months.join(";"), "exchange": "CME" }));
    }
    let opt_dates: Vec<String> = {
        let mut d: Vec<String> = universe
            .derivatives_of(c.conid, SecType::Opt)
            .filter_map(|o| o.expiry.map(|e| e.format("%Y%m%d").to_string()))
            .collect();
        d.sort();
        d.dedup();
        d
    };
    json!({
        "conid": c.conid.to_string(),
        "companyHeader": format!("{} - {}", c.name, c.listing_exchange),
        "companyName": c.name,
        "symbol": c.symbol,
        "description": c.listing_exchange,
        "restricted": Value::Null,
        "fop": Value::Null,
        "opt": if opt_dates.is_empty() { Value::Null } else { json!(opt_dates.join(";")) },
        "war": Value::Null,
        "sections": sections,
    })
}

/// `GET|POST /iserver/secdef/search` (symbol, or name with `name=true`).
pub(crate) fn search(sim: &Sim, r: &Req) -> Reply {
    let get = |k: &str| -> Option<String> {
        r.q(k).map(str::to_string).or_else(|| {
            r.field(k).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        })
    };
    let Some(symbol) = get("symbol").filter(|s| !s.trim().is_empty()) else {
        return err(400, "Bad Request: symbol is required");
    };
    let by_name = get("name").is_some_and(|v| v == "true");
    let sec_type = get("secType");
    if sec_type.as_deref() == Some("BOND") {
        return ok(json!([]));
    }
    let items: Vec<Value> = sim
        .universe
        .search(&symbol, by_name)
        .into_iter()
        .filter(|c| sec_type.as_deref().is_none_or(|t| t == c.sec_type.as_str()))
        .map(|c| search_item(&sim.universe, c))
        .collect();
    ok(Value::Array(items))
}

fn secdef_info_item(c: &Contract) -> Value {
    let desc2 = match (c.sec_type, c.expiry) {
        (SecType::Opt, Some(e)) => format!(
            "{} '{} {} {}",
            e.format("%b %d").to_string().to_uppercase(),
            e.format("%y"),
            fmt_strike(c.strike),
            if c.right == Some('C') { "Call" } else { "Put" }
        ),
        (SecType::Fut, Some(e)) => e.format("%b%y").to_string().to_uppercase(),
        _ => c.name.clone(),
    };
    json!({
        "conid": c.conid,
        "symbol": c.symbol,
        "secType": c.sec_type.as_str(),
        "exchange": if c.sec_type == SecType::Opt { "SMART".to_string() } else { c.listing_exchange.clone() },
        "listingExchange": Value::Null,
        "right": c.right.map(|r| r.to_string()).unwrap_or_else(|| "?".into()),
        "strike": c.strike,
        "currency": c.currency,
        "cusip": Value::Null,
        "coupon": "No Coupon",
        "desc1": c.symbol,
        "desc2": desc2,
        "maturityDate": c.expiry.map(|e| e.format("%Y%m%d").to_string()),
        "multiplier": fmt_strike(c.multiplier),
        "tradingClass": c.trading_class,
        "validExchanges": c.valid_exchanges,
    })
}

/// `GET /iserver/secdef/info`: derivatives of an underlying by month, strike and right, or the
/// contract itself for stocks.
pub(crate) fn secdef_info(sim: &Sim, r: &Req) -> Reply {
    let Some(conid) = r.q("conid").and_then(|c| c.parse::<i64>().ok()) else {
        return err(400, "Bad Request: conid is required");
    };
    let Some(und) = sim.universe.get(conid) else {
        return err(400, format!("Bad Request: contract {conid} not found"));
    };
    let sectype = r
        .q("sectype")
        .unwrap_or(und.sec_type.as_str())
        .to_ascii_uppercase();
    let items: Vec<Value> = match sectype.as_str() {
        "OPT" | "FUT" => {
            let st = if sectype == "OPT" {
                SecType::Opt
            } else {
                SecType::Fut
            };
            let Some(month) = r.q("month").map(str::to_ascii_uppercase) else {
                return err(400, "Bad Request: month is required for derivatives");
            };
            let strike = r.q("strike").and_then(|s| s.parse::<f64>().ok());
            let right = r.q("right").map(str::to_ascii_uppercase);
            sim.universe
                .derivatives_of(conid, st)
                .filter(|c| c.expiry.map(month_param).as_deref() == Some(month.as_str()))
                .filter(|c| strike.is_none_or(|s| (c.strike - s).abs() < 1e-9))
                .filter(|c| {
                    right
                        .as_deref()
                        .is_none_or(|rt| c.right.map(|x| x.to_string()).as_deref() == Some(rt))
                })
                .map(secdef_info_item)
                .collect()
        }
        t if t == und.sec_type.as_str() => vec![secdef_info_item(und)],
        _ => Vec::new(),
    };
    ok(Value::Array(items))
}

/// `GET /iserver/secdef/strikes`.
pub(crate) fn strikes(sim: &Sim, r: &Req) -> Reply {
    let Some(conid) = r.q("conid").and_then(|c| c.parse::<i64>().ok()) else {
        return err(400, "Bad Request: conid is required");
    };
    let Some(month) = r.q("month").map(str::to_ascii_uppercase) else {
        return err(400, "Bad Request: month is required");
    };
    if sim.universe.get(conid).is_none() {
        return err(400, format!("Bad Request: contract {conid} not found"));
    }
    let mut call = Vec::new();
    let mut put = Vec::new();
    for c in sim.universe.derivatives_of(conid, SecType::Opt) {
        if c.expiry.map(month_param).as_deref() != Some(month.as_str()) {
            continue;
        }
        if c.right == Some('C') {
            call.push(c.strike)
        } else {
            put.push(c.strike)
        }
    }
    call.sort_by(f64::total_cmp);
    call.dedup();
    put.sort_by(f64::total_cmp);
    put.dedup();
    ok(json!({ "call": call, "put": put }))
}

/// `GET /iserver/secdef/bond-filters`: static filter lists (bonds are not simulated).
pub(crate) fn bond_filters(sim: &Sim, r: &Req) -> Reply {
    if r.q("issueId").is_none() {
        return err(400, "Bad Request: issueId is required");
    }
    let year = sim.universe.today.year();
    let maturities: Vec<Value> = (1..=4)
        .map(|i| json!({ "text": format!("Jun {}", year + i * 2), "value": format!("{}06", year + i * 2) }))
        .collect();
    ok(json!({ "bondFilters": [
        { "displayText": "Maturity Date", "columnId": 27, "options": maturities },
        { "displayText": "Issue Date", "columnId": 28, "options": [{ "text": format!("Jan {}", year - 3), "value": format!("{}0115", year - 3) }] },
        { "displayText": "Coupon", "columnId": 25, "options": [{ "text": "3.75", "value": "3.75" }, { "text": "4.5", "value": "4.5" }] },
        { "displayText": "Currency", "columnId": 5, "options": [{ "value": "USD" }] },
    ] }))
}

fn info_json(c: &Contract) -> Value {
    let mut v = json!({
        "cfi_code": "",
        "symbol": c.symbol,
        "cusip": Value::Null,
        "expiry_full": c.expiry.map(|e| e.format("%Y%m").to_string()),
        "con_id": c.conid,
        "maturity_date": c.expiry.map(|e| e.format("%Y%m%d").to_string()),
        "instrument_type": c.sec_type.as_str(),
        "trading_class": c.trading_class,
        "valid_exchanges": c.valid_exchanges,
        "allow_sell_long": false,
        "is_zero_commission_security": false,
        "local_symbol": c.local_symbol,
        "contract_clarification_type": Value::Null,
        "classifier": Value::Null,
        "currency": c.currency,
        "text": if c.sec_type == SecType::Fut { json!(format!("{} {}", c.symbol, crate::universe::month_label(c.expiry))) } else { Value::Null },
        "underlying_con_id": c.underlying.unwrap_or(0),
        "r_t_h": c.sec_type != SecType::Fut,
        "multiplier": if c.multiplier == 1.0 { Value::Null } else { json!(fmt_strike(c.multiplier)) },
        "underlying_issuer": Value::Null,
        "contract_month": c.expiry.map(|e| e.format("%Y%m").to_string()),
        "company_name": c.name,
        "smart_available": matches!(c.sec_type, SecType::Stk | SecType::Opt),
        "exchange": if matches!(c.sec_type, SecType::Stk | SecType::Opt) { "SMART".to_string() } else { c.listing_exchange.clone() },
        "has_related_contracts": c.has_options,
    });
    if let Some(g) = &c.group {
        v["industry"] = json!(g);
        v["category"] = json!(g);
    }
    v
}

fn contract_param(sim: &Sim, r: &Req) -> Result<i64, Reply> {
    let raw = r.param("conid");
    let conid = raw
        .parse::<i64>()
        .map_err(|_| err(400, format!("Bad Request: invalid conid '{raw}'")))?;
    if sim.universe.get(conid).is_none() {
        return Err(err(400, format!("Bad Request: contract {conid} not found")));
    }
    Ok(conid)
}

fn rules_json(sim: &Sim, c: &Contract) -> Value {
    let last = sim
        .lock()
        .market
        .last(&sim.universe, c.conid)
        .unwrap_or(0.0);
    let tick = if c.sec_type == SecType::Opt {
        0.01
    } else {
        c.tick
    };
    let digits = tick_decimals(tick);
    json!({
        "algoEligible": matches!(c.sec_type, SecType::Stk | SecType::Opt),
        "overnightEligible": false,
        "costReport": false,
        "canTradeAcctIds": ACCOUNT_IDS,
        "error": Value::Null,
        "orderTypes": ["limit", "midprice", "market", "stop", "stop_limit"],
        "ibAlgoTypes": ["limit", "stop_limit"],
        "fraqTypes": [],
        "forceOrderPreview": false,
        "cqtTypes": ["limit", "market", "stop", "stop_limit"],
        "orderDefaults": { "LMT": { "LP": format!("{last:.digits$}") } },
        "orderTypesOutside": ["limit", "stop_limit"],
        "defaultSize": match c.sec_type { SecType::Stk => 100, SecType::Cash => 25_000, _ => 1 },
        "cashSize": 0.0,
        "sizeIncrement": 1,
        "tifTypes": ["IOC/MARKET,LIMIT,MIDPRICE,a", "GTC/o,a", "OPG/LIMIT,MARKET,a", "DAY/o,a"],
        "tifDefaults": { "TIF": "DAY", "SIZE": "100.00", "PMALGO": true },
        "limitPrice": last,
        "stopprice": last,
        "orderOrigination": Value::Null,
        "preview": true,
        "displaySize": Value::Null,
        "fraqInt": 0,
        "cashCcy": c.currency,
        "cashQtyIncr": 500,
        "priceMagnifier": Value::Null,
        "negativeCapable": false,
        "incrementType": 1,
        "incrementRules": [{ "lowerEdge": 0.0, "increment": tick }],
        "hasSecondary": true,
        "modTypes": [],
        "increment": tick,
        "incrementDigits": digits,
    })
}

/// `GET /iserver/contract/{conid}/info`.
pub(crate) fn info(sim: &Sim, r: &Req) -> Reply {
    match contract_param(sim, r) {
        Ok(conid) => ok(info_json(sim.universe.get(conid).expect("checked"))),
        Err(e) => e,
    }
}

/// `GET /iserver/contract/{conid}/info-and-rules`.
pub(crate) fn info_and_rules(sim: &Sim, r: &Req) -> Reply {
    match contract_param(sim, r) {
        Ok(conid) => {
            let c = sim.universe.get(conid).expect("checked");
            let mut v = info_json(c);
            v["rules"] = rules_json(sim, c);
            ok(v)
        }
        Err(e) => e,
    }
}

/// `POST /iserver/contract/rules`.
pub(crate) fn rules(sim: &Sim, r: &Req) -> Reply {
    let Some(conid) = r
        .field("conid")
        .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
    else {
        return err(400, "Bad Request: conid is required");
    };
    match sim.universe.get(conid) {
        Some(c) => ok(rules_json(sim, c)),
        None => err(400, format!("Bad Request: contract {conid} not found")),
    }
}

/// `GET /iserver/contract/{conid}/algos`.
pub(crate) fn algos(sim: &Sim, r: &Req) -> Reply {
    if let Err(e) = contract_param(sim, r) {
        return e;
    }
    let with_params = r.q("addParams") == Some("1");
    let with_desc = r.q("addDescription") == Some("1");
    let wanted: Vec<String> = r
        .q("algos")
        .map(|a| a.split(';').map(str::to_string).collect())
        .unwrap_or_default();
    let all = [
        (
            "Adaptive",
            "Adaptive",
            "Works the order between the bid and the ask with the chosen urgency.",
            json!([{ "id": "adaptivePriority", "name": "Adaptive order priority/urgency", "valueClassName": "String", "legalStrings": ["Urgent", "Normal", "Patient"], "defaultValue": "Normal", "required": "true", "guiRank": 1 }]),
        ),
        (
            "VWAP",
            "Vwap",
            "Aims at the volume-weighted average price between start and end time.",
            json!([{ "id": "maxPctVol", "name": "Max Percentage", "valueClassName": "Double", "minValue": 0.01, "maxValue": 50, "guiRank": 1 }]),
        ),
        (
            "TWAP",
            "Twap",
            "Spreads the order evenly over the time window.",
            json!([{ "id": "startTime", "name": "Start Time", "valueClassName": "Time", "guiRank": 1 }]),
        ),
    ];
    let items: Vec<Value> = all
        .iter()
        .filter(|(_, id, _, _)| wanted.is_empty() || wanted.iter().any(|w| w == id))
        .map(|(name, id, desc, params)| {
            let mut v = json!({ "name": name, "id": id });
            if with_desc {
                v["description"] = json!(desc);
            }
            if with_params {
                v["parameters"] = params.clone();
            }
            v
        })
        .collect();
    ok(json!({ "algos": items }))
}

fn trsrv_item(sim: &Sim, c: &Contract) -> Value {
    json!({
        "conid": c.conid,
        "currency": c.currency,
        "time": 12,
        "allExchanges": c.valid_exchanges,
        "listingExchange": c.listing_exchange,
        "countryCode": "US",
        "name": c.name,
        "assetClass": c.sec_type.as_str(),
        "expiry": c.expiry.map(|e| e.format("%Y%m%d").to_string()),
        "lastTradingDay": c.expiry.map(|e| e.format("%Y%m%d").to_string()),
        "group": c.group,
        "putOrCall": c.right.map(|x| x.to_string()),
        "sector": c.sector,
        "sectorGroup": c.group,
        "strike": fmt_strike(c.strike),
        "ticker": c.symbol,
        "undConid": c.underlying.unwrap_or(0),
        "multiplier": if c.multiplier == 1.0 { 0.0 } else { c.multiplier },
        "type": c.kind,
        "hasOptions": c.has_options,
        "fullName": c.description(),
        "isUS": c.currency == "USD",
        "isEventContract": false,
        "incrementRules": [{ "lowerEdge": 0.0, "increment": c.tick }],
        "displayRule": { "magnification": 0, "displayRuleStep": [{ "decimalDigits": tick_decimals(c.tick), "lowerEdge": 0.0, "wholeDigits": 4 }] },
        "underlyingListingExchange": sim.universe.get(c.underlying.unwrap_or(0)).map(|u| u.listing_exchange.clone()),
    })
}

/// `GET /trsrv/secdef?conids=...`.
pub(crate) fn trsrv_secdef(sim: &Sim, r: &Req) -> Reply {
    let ids: Vec<i64> = r
        .q("conids")
        .unwrap_or("")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    if ids.is_empty() {
        return err(400, "Bad Request: conids is required");
    }
    let items: Vec<Value> = ids
        .iter()
        .filter_map(|id| sim.universe.get(*id))
        .map(|c| trsrv_item(sim, c))
        .collect();
    ok(json!({ "secdef": items }))
}

/// `GET /trsrv/stocks?symbols=...`.
pub(crate) fn trsrv_stocks(sim: &Sim, r: &Req) -> Reply {
    let Some(symbols) = r.q("symbols").filter(|s| !s.trim().is_empty()) else {
        return err(400, "Bad Request: symbols is required");
    };
    let mut out = Map::new();
    for s in symbols.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let items: Vec<Value> = sim
            .universe
            .by_symbol(s)
            .filter(|c| c.sec_type == SecType::Stk)
            .map(|c| {
                json!({
                    "name": c.name,
                    "chineseName": Value::Null,
                    "assetClass": "STK",
                    "contracts": [{ "conid": c.conid, "exchange": c.listing_exchange, "isUS": true }],
                })
            })
            .into_iter()
            .collect();
        out.insert(s.to_ascii_uppercase(), Value::Array(items));
    }
    ok(Value::Object(out))
}

/// `GET /trsrv/futures?symbols=...`.
pub(crate) fn trsrv_futures(sim: &Sim, r: &Req) -> Reply {
    let Some(symbols) = r.q("symbols").filter(|s| !s.trim().is_empty()) else {
        return err(400, "Bad Request: symbols is required");
    };
    let mut out = Map::new();
    for s in symbols
        .split(',')
        .map(|s| s.trim().to_ascii_uppercase())
        .filter(|s| !s.is_empty())
    {
        let mut futs: Vec<&Contract> = sim
            .universe
            .contracts
            .values()
            .filter(|c| c.sec_type == SecType::Fut && c.symbol == s)
            .collect();
        futs.sort_by_key(|c| c.expiry);
        let items: Vec<Value> = futs
            .iter()
            .map(|c| {
                let exp = c.expiry.expect("futures have expiries");
                let ltd: i64 = (exp - Duration::days(1))
                    .format("%Y%m%d")
                    .to_string()
                    .parse()
                    .unwrap_or(0);
                json!({
                    "symbol": c.symbol,
                    "conid": c.conid,
                    "underlyingConid": c.underlying.unwrap_or(0),
                    "expirationDate": exp.format("%Y%m%d").to_string().parse::<i64>().unwrap_or(0),
                    "ltd": ltd,
                    "shortFuturesCutOff": ltd,
                    "longFuturesCutOff": ltd,
                })
            })
            .collect();
        out.insert(s, Value::Array(items));
    }
    ok(Value::Object(out))
}

/// `GET /trsrv/secdef/schedule`: the next seven days' sessions (09:30-16:00 New York for US
/// stocks, nearly round the clock for futures and FX).
pub(crate) fn schedule(sim: &Sim, r: &Req) -> Reply {
    let (Some(asset), Some(symbol)) = (r.q("assetClass"), r.q("symbol")) else {
        return err(400, "Bad Request: assetClass and symbol are required");
    };
    let c = sim.universe.contracts.values().find(|c| {
        c.symbol.eq_ignore_ascii_case(symbol) && c.sec_type.as_str() == asset.to_ascii_uppercase()
    });
    let Some(c) = c else {
        return ok(json!([]));
    };
    let (open, close, ext_open, ext_close) = match c.sec_type {
        SecType::Fut | SecType::Cash => ("1800", "1700", "1800", "1700"),
        _ => ("0930", "1600", "0400", "2000"),
    };
    let days: Vec<Value> = (0..7)
        .map(|i| {
            let d = sim.universe.today + Duration::days(i);
            let weekend = matches!(d.weekday(), Weekday::Sat | Weekday::Sun);
            json!({
                "clearingCycleEndTime": "2000",
                "tradingScheduleDate": d.format("%Y%m%d").to_string(),
                "sessions": if weekend { json!([]) } else { json!([{ "openingTime": open, "closingTime": close, "prop": "LIQUID" }]) },
                "tradingtimes": if weekend { json!([]) } else { json!([{ "openingTime": ext_open, "closingTime": ext_close, "cancelDayOrders": "Y" }]) },
            })
        })
        .collect();
    ok(json!([{
        "id": format!("p{}", c.conid % 1_000_000),
        "tradeVenueId": format!("v{}", c.conid % 100_000),
        "exchange": c.listing_exchange,
        "description": c.listing_exchange,
        "timezone": if c.sec_type == SecType::Fut { "America/Chicago" } else { "America/New_York" },
        "schedules": days,
    }]))
}

/// `GET /trsrv/all-conids?exchange=...`.
pub(crate) fn all_conids(sim: &Sim, r: &Req) -> Reply {
    let Some(exchange) = r.q("exchange").map(str::to_ascii_uppercase) else {
        return err(400, "Bad Request: exchange is required");
    };
    let class = r.q("assetClass").unwrap_or("STK").to_ascii_uppercase();
    let items: Vec<Value> = sim
        .universe
        .contracts
        .values()
        .filter(|c| c.listing_exchange == exchange && c.sec_type.as_str() == class)
        .map(|c| json!({ "ticker": c.symbol, "conid": c.conid, "exchange": c.listing_exchange }))
        .collect();
    ok(Value::Array(items))
}

/// `GET /iserver/currency/pairs?currency=...`.
pub(crate) fn currency_pairs(sim: &Sim, r: &Req) -> Reply {
    let Some(ccy) = r.q("currency").map(str::to_ascii_uppercase) else {
        return err(400, "Bad Request: currency is required");
    };
    let items: Vec<Value> = sim
        .universe
        .contracts
        .values()
        .filter(|c| c.sec_type == SecType::Cash && (c.symbol == ccy || c.currency == ccy))
        .map(|c| {
            let other = if c.symbol == ccy {
                &c.currency
            } else {
                &c.symbol
            };
            json!({ "symbol": c.local_symbol, "conid": c.conid, "ccyPair": other })
        })
        .collect();
    let mut out = Map::new();
    out.insert(ccy, Value::Array(items));
    ok(Value::Object(out))
}

/// `GET /iserver/exchangerate?source=...&target=...`.
pub(crate) fn exchange_rate(sim: &Sim, r: &Req) -> Reply {
    let (Some(source), Some(target)) = (r.q("source"), r.q("target")) else {
        return err(400, "Bad Request: source and target are required");
    };
    let st = sim.lock();
    match st.market.fx_rate(
        &sim.universe,
        &source.to_ascii_uppercase(),
        &target.to_ascii_uppercase(),
    ) {
        Some(rate) => ok(json!({ "rate": (rate * 1e8).round() / 1e8 })),
        None => err(
            400,
            format!("Bad Request: no rate for {source} to {target}"),
        ),
    }
}
