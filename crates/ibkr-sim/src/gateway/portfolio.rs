//! `/portfolio/*` and portfolio analyst (`/pa/*`) endpoints: account lists and metadata, the
//! summary keyed like the live service, ledger per currency, allocation, positions (long form),
//! and performance, all-periods and transaction reports derived from the seeded accounts and
//! the session's fills. These work without a brokerage session.

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use serde_json::{Map, Value, json};

use super::{Reply, Req, err, jnum, ok};
use crate::market::Market;
use crate::rng::Rng;
use crate::state::accounts::{Account, Position, cents};
use crate::state::{Sim, State};
use crate::universe::{SecType, Universe};

/// One account object as `/portfolio/accounts` lists it.
pub(crate) fn account_json(a: &Account) -> Value {
    json!({
        "id": a.id,
        "PrepaidCrypto-Z": false,
        "PrepaidCrypto-P": false,
        "brokerageAccess": true,
        "accountId": a.id,
        "accountVan": a.id,
        "accountTitle": a.title,
        "displayName": a.title,
        "accountAlias": Value::Null,
        "accountStatus": a.opened_ms,
        "currency": "USD",
        "type": "DEMO",
        "tradingType": "STKNOPT",
        "businessType": "INDEPENDENT",
        "category": "",
        "ibEntity": "IBLLC-US",
        "faclient": false,
        "clearingStatus": "O",
        "covestor": false,
        "noClientTrading": false,
        "trackVirtualFXPortfolio": false,
        "acctCustType": "INDIVIDUAL",
        "parent": { "mmc": [], "accountId": "", "isMParent": false, "isMChild": false, "isMultiplex": false },
        "desc": a.id,
    })
}

/// A position in the long form the portfolio endpoints use.
pub(crate) fn position_json(
    universe: &Universe,
    market: &Market,
    acct: &str,
    p: &Position,
) -> Value {
    let Some(c) = universe.get(p.conid) else {
        return json!({ "acctId": acct, "conid": p.conid });
    };
    let price = market.last(universe, p.conid).unwrap_or(p.avg_price);
    let fx = market.fx_rate(universe, &c.currency, "USD").unwrap_or(1.0);
    let mv = p.qty * price * c.multiplier;
    let upnl = (price - p.avg_price) * p.qty * c.multiplier;
    let decimals = crate::market::tick_decimals(c.tick) as i32;
    json!({
        "acctId": acct,
        "conid": p.conid,
        "contractDesc": c.description(),
        "position": p.qty,
        "mktPrice": price,
        "mktValue": cents(mv),
        "currency": c.currency,
        "avgCost": p.avg_price * c.multiplier,
        "avgPrice": p.avg_price,
        "realizedPnl": cents(p.realized),
        "unrealizedPnl": cents(upnl),
        "exchs": Value::Null,
        "expiry": c.expiry.map(|d| d.format("%Y%m%d").to_string()),
        "putOrCall": c.right.map(|r| r.to_string()),
        "multiplier": if c.multiplier == 1.0 { json!(0.0) } else { json!(c.multiplier) },
        "strike": crate::universe::fmt_strike(c.strike),
        "exerciseStyle": if c.sec_type == SecType::Opt { json!("AMERICAN") } else { Value::Null },
        "conExchMap": [],
        "assetClass": c.sec_type.as_str(),
        "undConid": c.underlying.unwrap_or(0),
        "model": "",
        "baseMktValue": cents(mv * fx),
        "baseMktPrice": price * fx,
        "baseAvgCost": p.avg_price * c.multiplier * fx,
        "baseAvgPrice": p.avg_price * fx,
        "baseRealizedPnl": cents(p.realized * fx),
        "baseUnrealizedPnl": cents(upnl * fx),
        "incrementRules": [{ "lowerEdge": 0.0, "increment": c.tick }],
        "displayRule": { "magnification": 0, "displayRuleStep": [{ "decimalDigits": decimals, "lowerEdge": 0.0, "wholeDigits": 4 }] },
        "time": 12,
        "allExchanges": c.valid_exchanges,
        "listingExchange": c.listing_exchange,
        "countryCode": "US",
        "name": c.name,
        "lastTradingDay": c.expiry.map(|d| d.format("%Y-%m-%d").to_string()),
        "group": c.group,
        "sector": c.sector,
        "sectorGroup": c.group,
        "ticker": c.symbol,
        "type": c.kind,
        "hasOptions": c.has_options,
        "fullName": c.description(),
        "isUS": c.currency == "USD",
        "isEventContract": false,
        "pageSize": 100,
    })
}

fn account<'a>(st: &'a State, r: &Req) -> Result<&'a Account, Reply> {
    let id = r.param("accountId");
    st.accounts
        .get(id)
        .ok_or_else(|| err(400, format!("Bad Request: account {id} not found")))
}

/// `GET /portfolio/accounts`.
pub(crate) fn accounts(sim: &Sim, _r: &Req) -> Reply {
    let st = sim.lock();
    ok(Value::Array(
        st.accounts.values().map(account_json).collect(),
    ))
}

/// `GET /portfolio/subaccounts`.
pub(crate) fn subaccounts(sim: &Sim, r: &Req) -> Reply {
    accounts(sim, r)
}

/// `GET /portfolio/{accountId}/meta`.
pub(crate) fn meta(sim: &Sim, r: &Req) -> Reply {
    let st = sim.lock();
    match account(&st, r) {
        Ok(a) => ok(account_json(a)),
        Err(e) => e,
    }
}

/// `GET /portfolio/{accountId}/summary`.
pub(crate) fn summary(sim: &Sim, r: &Req) -> Reply {
    let st = sim.lock();
    let a = match account(&st, r) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let v = a.value(&sim.universe, &st.market);
    let ts = chrono::Utc::now().timestamp_millis();
    let amount = |x: f64| json!({ "amount": cents(x), "currency": "USD", "isNull": false, "timestamp": ts, "value": Value::Null, "severity": 0 });
    let text = |s: &str| json!({ "amount": 0.0, "currency": Value::Null, "isNull": false, "timestamp": ts, "value": s, "severity": 0 });
    let fut_init = 0.06 * v.futures_notional;
    let mut out = Map::new();
    out.insert("accountcode".into(), text(&a.id));
    out.insert("accountready".into(), text("true"));
    out.insert("accounttype".into(), text("INDIVIDUAL"));
    // (key, total, commodities, securities)
    let rows: [(&str, f64, f64, f64); 22] = [
        ("accruedcash", a.interest_mtd, 0.0, a.interest_mtd),
        ("accrueddividend", 0.0, 0.0, 0.0),
        (
            "availablefunds",
            v.available,
            v.futures_upnl - fut_init,
            v.available - v.futures_upnl + fut_init,
        ),
        ("billable", 0.0, 0.0, 0.0),
        (
            "equitywithloanvalue",
            v.elv,
            v.futures_upnl,
            v.elv - v.futures_upnl,
        ),
        (
            "excessliquidity",
            v.excess,
            v.futures_upnl - fut_init * 0.85,
            v.excess - v.futures_upnl + fut_init * 0.85,
        ),
        (
            "fullavailablefunds",
            v.available,
            v.futures_upnl - fut_init,
            v.available - v.futures_upnl + fut_init,
        ),
        (
            "fullexcessliquidity",
            v.excess,
            v.futures_upnl - fut_init * 0.85,
            v.excess - v.futures_upnl + fut_init * 0.85,
        ),
        ("fullinitmarginreq", v.init, fut_init, v.init - fut_init),
        (
            "fullmaintmarginreq",
            v.maint,
            fut_init * 0.85,
            v.maint - fut_init * 0.85,
        ),
        ("guarantee", 0.0, 0.0, 0.0),
        ("indianstockhaircut", 0.0, 0.0, 0.0),
        ("initmarginreq", v.init, fut_init, v.init - fut_init),
        (
            "lookaheadavailablefunds",
            v.available,
            v.futures_upnl - fut_init,
            v.available - v.futures_upnl + fut_init,
        ),
        (
            "lookaheadexcessliquidity",
            v.excess,
            v.futures_upnl - fut_init * 0.85,
            v.excess - v.futures_upnl + fut_init * 0.85,
        ),
        (
            "lookaheadinitmarginreq",
            v.init,
            fut_init,
            v.init - fut_init,
        ),
        (
            "lookaheadmaintmarginreq",
            v.maint,
            fut_init * 0.85,
            v.maint - fut_init * 0.85,
        ),
        (
            "maintmarginreq",
            v.maint,
            fut_init * 0.85,
            v.maint - fut_init * 0.85,
        ),
        (
            "netliquidation",
            v.nlv,
            v.futures_upnl,
            v.nlv - v.futures_upnl,
        ),
        ("postexpirationexcess", v.excess, 0.0, v.excess),
        ("totalcashvalue", v.cash, 0.0, v.cash),
        ("totaldebitcardpendingcharges", 0.0, 0.0, 0.0),
    ];
    for (key, total, c, s) in rows {
        out.insert(key.into(), amount(total));
        out.insert(format!("{key}-c"), amount(c));
        out.insert(format!("{key}-s"), amount(s));
    }
    out.insert("buyingpower".into(), amount(v.buying_power));
    out.insert("cushion".into(), json!({ "amount": 0.0, "currency": Value::Null, "isNull": false, "timestamp": ts, "value": format!("{:.4}", if v.nlv > 0.0 { v.excess / v.nlv } else { 0.0 }), "severity": 0 }));
    out.insert("daytradesremaining".into(), json!({ "amount": -1.0, "currency": Value::Null, "isNull": false, "timestamp": ts, "value": Value::Null, "severity": 0 }));
    out.insert("grosspositionvalue".into(), amount(v.gross));
    out.insert("grosspositionvalue-s".into(), amount(v.gross));
    out.insert("highestseverity".into(), json!({ "amount": 0.0, "currency": Value::Null, "isNull": false, "timestamp": ts, "value": Value::Null, "severity": 0 }));
    out.insert("leverage-s".into(), json!({ "amount": if v.nlv > 0.0 { (v.gross / v.nlv * 100.0).round() / 100.0 } else { 0.0 }, "currency": Value::Null, "isNull": false, "timestamp": ts, "value": Value::Null, "severity": 0 }));
    out.insert("lookaheadnextchange".into(), json!({ "amount": 0.0, "currency": Value::Null, "isNull": false, "timestamp": ts, "value": Value::Null, "severity": 0 }));
    out.insert("netliquidationuncertainty".into(), amount(0.0));
    out.insert("nlvandmargininreview".into(), text("false"));
    out.insert("previousdayequitywithloanvalue".into(), amount(a.prev_nav));
    out.insert(
        "previousdayequitywithloanvalue-s".into(),
        amount(a.prev_nav),
    );
    out.insert("regtequity".into(), amount(v.elv));
    out.insert("regtequity-s".into(), amount(v.elv));
    out.insert("regtmargin".into(), amount(v.init));
    out.insert("regtmargin-s".into(), amount(v.init));
    out.insert("segmenttitle-c".into(), text("Commodities"));
    out.insert("segmenttitle-s".into(), text("Securities"));
    out.insert("sma".into(), amount(v.available.max(0.0)));
    out.insert("sma-s".into(), amount(v.available.max(0.0)));
    out.insert("tradingtype-s".into(), text("STKNOPT"));
    ok(Value::Object(out))
}

/// `GET /portfolio/{accountId}/ledger`: one entry per currency plus `BASE`.
pub(crate) fn ledger(sim: &Sim, r: &Req) -> Reply {
    let st = sim.lock();
    let a = match account(&st, r) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let v = a.value(&sim.universe, &st.market);
    let ts = chrono::Utc::now().timestamp();
    let entry = |ccy: &str,
                 cash: f64,
                 stock: f64,
                 opt: f64,
                 fut: f64,
                 upnl: f64,
                 realized: f64,
                 rate: f64,
                 interest: f64| {
        json!({
            "acctcode": a.id, "cashbalance": cents(cash), "cashbalancefxsegment": 0.0, "commoditymarketvalue": 0.0,
            "corporatebondsmarketvalue": 0.0, "cryptocurrencyvalue": 0.0, "currency": ccy, "dividends": 0.0,
            "exchangerate": rate, "funds": 0.0, "futuremarketvalue": cents(fut), "futureoptionmarketvalue": 0.0,
            "futuresonlypnl": cents(fut), "interest": cents(interest), "issueroptionsmarketvalue": 0.0, "key": "LedgerList",
            "moneyfunds": 0.0, "netliquidationvalue": cents(cash + stock + opt + fut), "realizedpnl": cents(realized),
            "secondkey": ccy, "sessionid": 1, "settledcash": cents(cash), "severity": 0, "stockmarketvalue": cents(stock),
            "stockoptionmarketvalue": cents(opt), "tbillsmarketvalue": 0.0, "tbondsmarketvalue": 0.0, "timestamp": ts,
            "unrealizedpnl": cents(upnl), "warrantsmarketvalue": 0.0,
        })
    };
    let mut out = Map::new();
    for (ccy, c) in &v.by_ccy {
        let mut e = entry(
            ccy,
            c.cash,
            c.stock,
            c.options,
            c.futures_upnl,
            c.upnl,
            c.realized,
            c.fx_to_base,
            if ccy == "USD" { a.interest_mtd } else { 0.0 },
        );
        if ccy == "USD" {
            e["endofbundle"] = json!(1);
        }
        out.insert(ccy.clone(), e);
    }
    out.insert(
        "BASE".into(),
        entry(
            "BASE",
            v.cash,
            v.stock,
            v.options,
            v.futures_upnl,
            v.upnl,
            v.realized,
            1.0,
            a.interest_mtd,
        ),
    );
    ok(Value::Object(out))
}

/// `GET /portfolio/{accountId}/allocation`.
pub(crate) fn allocation(sim: &Sim, r: &Req) -> Reply {
    let st = sim.lock();
    let a = match account(&st, r) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let v = a.value(&sim.universe, &st.market);
    let m = |x: &std::collections::BTreeMap<String, f64>| -> Value {
        Value::Object(
            x.iter()
                .map(|(k, v)| (k.clone(), json!(cents(*v))))
                .collect(),
        )
    };
    ok(json!({
        "assetClass": { "long": m(&v.by_class), "short": m(&v.short_by_class) },
        "sector": { "long": m(&v.long_by_sector), "short": m(&v.short_by_sector) },
        "group": { "long": m(&v.long_by_group), "short": m(&v.short_by_group) },
    }))
}

fn sorted_positions(sim: &Sim, st: &State, a: &Account, r: &Req) -> Vec<Value> {
    let mut items: Vec<Value> = a
        .positions
        .values()
        .map(|p| position_json(&sim.universe, &st.market, &a.id, p))
        .collect();
    if let Some(key) = r.q("sort") {
        items.sort_by(|x, y| {
            let (vx, vy) = (&x[key], &y[key]);
            match (vx.as_f64(), vy.as_f64()) {
                (Some(a), Some(b)) => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
                _ => vx.to_string().cmp(&vy.to_string()),
            }
        });
        if r.q("direction") == Some("d") {
            items.reverse();
        }
    }
    items
}

/// `GET /portfolio/{accountId}/positions/{pageId}` (100 per page).
pub(crate) fn positions_page(sim: &Sim, r: &Req) -> Reply {
    let st = sim.lock();
    let a = match account(&st, r) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let Ok(page) = r.param("pageId").parse::<usize>() else {
        return err(400, "Bad Request: pageId must be a number");
    };
    let items = sorted_positions(sim, &st, a, r);
    ok(Value::Array(
        items.into_iter().skip(page * 100).take(100).collect(),
    ))
}

/// `GET /portfolio/{accountId}/position/{conid}`.
pub(crate) fn position(sim: &Sim, r: &Req) -> Reply {
    let st = sim.lock();
    let a = match account(&st, r) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let Ok(conid) = r.param("conid").parse::<i64>() else {
        return err(400, "Bad Request: conid must be a number");
    };
    let items: Vec<Value> = a
        .positions
        .get(&conid)
        .map(|p| position_json(&sim.universe, &st.market, &a.id, p))
        .into_iter()
        .collect();
    ok(Value::Array(items))
}

/// `GET /portfolio/positions/{conid}`: the position in every account that holds it.
pub(crate) fn positions_by_conid(sim: &Sim, r: &Req) -> Reply {
    let st = sim.lock();
    let Ok(conid) = r.param("conid").parse::<i64>() else {
        return err(400, "Bad Request: conid must be a number");
    };
    let mut out = Map::new();
    for a in st.accounts.values() {
        if let Some(p) = a.positions.get(&conid) {
            out.insert(
                a.id.clone(),
                json!([position_json(&sim.universe, &st.market, &a.id, p)]),
            );
        }
    }
    ok(Value::Object(out))
}

/// `POST /portfolio/{accountId}/positions/invalidate`.
pub(crate) fn invalidate(sim: &Sim, r: &Req) -> Reply {
    let st = sim.lock();
    match account(&st, r) {
        Ok(_) => ok(json!({ "message": "success" })),
        Err(e) => e,
    }
}

fn weekdays_back(end: NaiveDate, count: usize) -> Vec<NaiveDate> {
    let mut out = Vec::new();
    let mut d = end;
    while out.len() < count {
        if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
            out.push(d);
        }
        d -= Duration::days(1);
    }
    out.reverse();
    out
}

fn period_days(today: NaiveDate, period: &str) -> usize {
    match period {
        "1D" => 1,
        "7D" => 5,
        "MTD" => (today.day() as usize * 5 / 7).max(1),
        "1M" => 22,
        "3M" => 65,
        "6M" => 130,
        "12M" | "1Y" => 252,
        "YTD" => (today.ordinal() as usize * 5 / 7).max(1),
        _ => 22,
    }
}

/// A daily NAV series of `count` days ending yesterday at the account's previous NAV.
fn nav_series(seed: u64, a: &Account, dates: &[NaiveDate]) -> (f64, Vec<f64>) {
    let mut rng = Rng::derived(
        seed,
        a.id.bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
    );
    let mut navs = vec![a.prev_nav; dates.len()];
    for i in (0..dates.len().saturating_sub(1)).rev() {
        navs[i] = navs[i + 1] / (0.0002 + 0.006 * rng.normal()).exp();
    }
    let start = navs.first().copied().unwrap_or(a.prev_nav) / (0.0002 + 0.006 * rng.normal()).exp();
    (cents(start), navs.into_iter().map(cents).collect())
}

fn acct_ids(st: &State, r: &Req) -> Result<Vec<String>, Reply> {
    let ids: Vec<String> = r
        .field("acctIds")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        return Err(err(400, "Bad Request: acctIds is required"));
    }
    if let Some(bad) = ids.iter().find(|i| !st.accounts.contains_key(*i)) {
        return Err(err(400, format!("Bad Request: account {bad} not found")));
    }
    Ok(ids)
}

/// `POST /pa/performance`.
pub(crate) fn pa_performance(sim: &Sim, r: &Req) -> Reply {
    let st = sim.lock();
    let ids = match acct_ids(&st, r) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let period = r.field("period").and_then(Value::as_str).unwrap_or("1M");
    let today = sim.universe.today;
    let dates = weekdays_back(today - Duration::days(1), period_days(today, period));
    let fmt: Vec<String> = dates
        .iter()
        .map(|d| d.format("%Y%m%d").to_string())
        .collect();
    let (start, end) = (
        fmt.first().cloned().unwrap_or_default(),
        fmt.last().cloned().unwrap_or_default(),
    );
    let mut nav_data = Vec::new();
    let mut cps_data = Vec::new();
    let mut tpps_data = Vec::new();
    let mut months: Vec<String> = fmt.iter().map(|d| d[..6].to_string()).collect();
    months.dedup();
    for id in &ids {
        let (start_nav, navs) = nav_series(sim.seed, &st.accounts[id], &dates);
        let cps: Vec<Value> = navs
            .iter()
            .map(|n| jnum(((n / start_nav - 1.0) * 1e8).round() / 1e8))
            .collect();
        let tpps: Vec<Value> = months
            .iter()
            .map(|m| {
                let idx: Vec<usize> = fmt
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.starts_with(m.as_str()))
                    .map(|(i, _)| i)
                    .collect();
                let first = idx
                    .first()
                    .map(|i| if *i == 0 { start_nav } else { navs[*i - 1] })
                    .unwrap_or(start_nav);
                let last = idx.last().map(|i| navs[*i]).unwrap_or(start_nav);
                jnum(((last / first - 1.0) * 1e8).round() / 1e8)
            })
            .collect();
        nav_data.push(json!({ "idType": "acctid", "navs": navs, "start": start, "end": end, "id": id,
            "startNAV": { "date": (dates[0] - Duration::days(1)).format("%Y%m%d").to_string(), "val": start_nav }, "baseCurrency": "USD" }));
        cps_data.push(json!({ "idType": "acctid", "start": start, "end": end, "returns": cps, "id": id, "baseCurrency": "USD" }));
        tpps_data.push(json!({ "idType": "acctid", "start": start, "end": end, "returns": tpps, "id": id, "baseCurrency": "USD" }));
    }
    ok(json!({
        "currencyType": "base",
        "rc": 0,
        "nav": { "data": nav_data, "freq": "D", "dates": fmt },
        "nd": dates.len(),
        "cps": { "data": cps_data, "freq": "D", "dates": fmt },
        "tpps": { "data": tpps_data, "freq": "M", "dates": months },
        "id": "getPerformanceData",
        "included": ids,
        "pm": "TWR",
    }))
}

/// `POST /pa/allperiods`.
pub(crate) fn pa_allperiods(sim: &Sim, r: &Req) -> Reply {
    let st = sim.lock();
    let ids = match acct_ids(&st, r) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let today = sim.universe.today;
    let periods = ["1D", "7D", "MTD", "1M", "YTD", "1Y"];
    let all_dates = weekdays_back(today - Duration::days(1), 252);
    let mut out = Map::new();
    out.insert("currencyType".into(), json!("base"));
    out.insert("rc".into(), json!(0));
    out.insert("view".into(), json!(ids));
    out.insert("nd".into(), json!(all_dates.len()));
    out.insert("id".into(), json!("getPerformanceAllPeriods"));
    out.insert("included".into(), json!(ids));
    out.insert("pm".into(), json!("TWR"));
    for id in &ids {
        let a = &st.accounts[id];
        let (start_nav, navs) = nav_series(sim.seed, a, &all_dates);
        let mut acct = Map::new();
        acct.insert(
            "lastSuccessfulUpdate".into(),
            json!(format!(
                "{} 20:00:00",
                (today - Duration::days(1)).format("%Y-%m-%d")
            )),
        );
        acct.insert(
            "start".into(),
            json!(all_dates[0].format("%Y%m%d").to_string()),
        );
        acct.insert(
            "end".into(),
            json!(all_dates[all_dates.len() - 1].format("%Y%m%d").to_string()),
        );
        acct.insert("periods".into(), json!(periods));
        acct.insert("baseCurrency".into(), json!("USD"));
        for p in periods {
            let n = period_days(today, p).min(all_dates.len());
            let from = all_dates.len() - n;
            let base = if from == 0 { start_nav } else { navs[from - 1] };
            let slice = &navs[from..];
            acct.insert(
                p.into(),
                json!({
                    "freq": "D",
                    "startNAV": { "date": if from == 0 { String::new() } else { all_dates[from - 1].format("%Y%m%d").to_string() }, "val": base },
                    "dates": all_dates[from..].iter().map(|d| d.format("%Y%m%d").to_string()).collect::<Vec<_>>(),
                    "nav": slice,
                    "cps": slice.iter().map(|x| jnum(((x / base - 1.0) * 1e8).round() / 1e8)).collect::<Vec<_>>(),
                }),
            );
        }
        out.insert(id.clone(), Value::Object(acct));
    }
    ok(Value::Object(out))
}

/// `POST /pa/transactions`: the seeded opening trades of each position plus the session's fills.
pub(crate) fn pa_transactions(sim: &Sim, r: &Req) -> Reply {
    let st = sim.lock();
    let ids = match acct_ids(&st, r) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let conids: Vec<i64> = r
        .field("conids")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    let days = r
        .field("days")
        .and_then(Value::as_i64)
        .unwrap_or(90)
        .clamp(1, 3650);
    let currency = r
        .field("currency")
        .and_then(Value::as_str)
        .unwrap_or("USD")
        .to_string();
    let now = chrono::Utc::now();
    let from_ms = (now - Duration::days(days)).timestamp_millis();
    let mut tx: Vec<(i64, Value)> = Vec::new();
    let mut push = |acct: &str, conid: i64, qty: f64, price: f64, when_ms: i64| {
        if (!conids.is_empty() && !conids.contains(&conid)) || when_ms < from_ms {
            return;
        }
        let Some(c) = sim.universe.get(conid) else {
            return;
        };
        let when = chrono::DateTime::from_timestamp_millis(when_ms).unwrap_or(now);
        tx.push((
            when_ms,
            json!({
                "date": when.format("%a %b %d 00:00:00 UTC %Y").to_string(),
                "rawDate": when.format("%Y%m%d").to_string(),
                "cur": c.currency, "fxRate": 1.0, "pr": price, "qty": qty, "acctid": acct,
                "amt": cents(-qty * price * c.multiplier), "conid": conid,
                "type": if qty >= 0.0 { "Buy" } else { "Sell" }, "desc": c.name,
            }),
        ));
    };
    for id in &ids {
        for p in st.accounts[id].positions.values() {
            let age = 3 + p.conid.rem_euclid(17);
            push(
                id,
                p.conid,
                p.qty,
                p.avg_price,
                (now - Duration::days(age)).timestamp_millis(),
            );
        }
        for e in st.orders.executions.iter().filter(|e| &e.account == id) {
            push(id, e.conid, e.side.sign() * e.qty, e.price, e.time_ms);
        }
    }
    tx.sort_by_key(|(t, _)| *t);
    ok(json!({
        "rc": 0,
        "nd": days,
        "rpnl": { "data": [], "amt": "0.0" },
        "currency": currency,
        "from": from_ms,
        "to": now.timestamp_millis(),
        "id": "getTransactions",
        "includesRealTime": true,
        "transactions": tx.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
    }))
}
