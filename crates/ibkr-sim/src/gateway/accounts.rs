//! `/iserver/account*` endpoints that are not orders or alerts: the account list (which every
//! order needs first), account selection and search, partitioned P&L, the four summary views,
//! and financial-advisor allocation groups and presets.

use serde_json::{Map, Value, json};

use super::{Reply, Req, err, ok};
use crate::state::accounts::{ACCOUNT_IDS, Valuation, cents, grouped};
use crate::state::misc::Group;
use crate::state::{Sim, State};

fn usd(x: f64) -> String {
    format!("{} USD", grouped(x))
}

/// The valuation of an account, or a 400 reply for unknown accounts.
pub(crate) fn valuation(sim: &Sim, st: &State, account: &str) -> Result<Valuation, Reply> {
    match st.accounts.get(account) {
        Some(a) => Ok(a.value(&sim.universe, &st.market)),
        None => Err(err(
            400,
            format!("Bad Request: account {account} not found"),
        )),
    }
}

/// `GET /iserver/accounts`: also marks the accounts as queried for this brokerage session.
pub(crate) fn iserver_accounts(sim: &Sim, _r: &Req) -> Reply {
    let mut st = sim.lock();
    st.session.accounts_queried = true;
    let props: Map<String, Value> = ACCOUNT_IDS
        .iter()
        .map(|a| {
            (a.to_string(), json!({
                "hasChildAccounts": false, "supportsCashQty": true, "liteUnderPro": false, "noFXConv": false,
                "isProp": false, "supportsFractions": false, "allowCustomerTime": false, "autoFx": false,
            }))
        })
        .collect();
    let aliases: Map<String, Value> = ACCOUNT_IDS
        .iter()
        .map(|a| (a.to_string(), json!(a)))
        .collect();
    let star = json!(["*"]);
    let opt_periods = json!(["2h", "1d", "2d", "1w", "1m"]);
    ok(json!({
        "accounts": ACCOUNT_IDS,
        "acctProps": props,
        "aliases": aliases,
        "allowFeatures": {
            "showGFIS": true, "showEUCostReport": false, "allowEventContract": false, "allowFXConv": true,
            "allowFinancialLens": false, "allowMTA": true, "allowTypeAhead": true, "allowEventTrading": false,
            "snapshotRefreshTimeout": 30, "liteUser": false, "showWebNews": true, "research": true,
            "debugPnl": true, "showTaxOpt": true, "showImpactDashboard": true, "allowDynAccount": false,
            "allowCrypto": false, "allowFA": false, "allowLiteUnderPro": false,
            "allowedAssetTypes": "STK,CFD,OPT,FOP,WAR,FUT,BAG,PDC,CASH,IND,BOND,BILL,FUND,SLB,News,CMDTY,IOPT,ICU,ICS,PHYSS,CRYPTO",
            "restrictTradeSubscription": false, "showUkUserLabels": false, "sideBySide": true,
        },
        "chartPeriods": {
            "STK": star, "CFD": star, "OPT": opt_periods, "FOP": opt_periods, "WAR": star, "IOPT": star,
            "FUT": star, "CASH": star, "IND": star, "BOND": star, "FUND": star, "CMDTY": star, "PHYSS": star,
            "CRYPTO": star,
        },
        "groups": [],
        "profiles": [],
        "selectedAccount": st.session.selected_account,
        "serverInfo": { "serverName": "SimGw1", "serverVersion": "Build 10.40.0s, simulated ibkr-sim gateway" },
        "sessionId": st.session.brokerage_session,
        "isFT": false,
        "isPaper": true,
    }))
}

fn select(sim: &Sim, r: &Req, dynamic: bool) -> Reply {
    let Some(acct) = r.field("acctId").and_then(Value::as_str) else {
        return err(400, "Bad Request: acctId is required");
    };
    let mut st = sim.lock();
    if !st.accounts.contains_key(acct) {
        return err(400, format!("Bad Request: account {acct} not found"));
    }
    if !dynamic && st.session.selected_account == acct {
        return ok(json!({ "success": "Account already set" }));
    }
    st.session.selected_account = acct.to_string();
    ok(json!({ "set": true, "acctId": acct }))
}

/// `POST /iserver/account`.
pub(crate) fn set_account(sim: &Sim, r: &Req) -> Reply {
    select(sim, r, false)
}

/// `POST /iserver/dynaccount`.
pub(crate) fn dynaccount(sim: &Sim, r: &Req) -> Reply {
    select(sim, r, true)
}

/// `GET /iserver/account/search/{searchPattern}`.
pub(crate) fn search(_sim: &Sim, r: &Req) -> Reply {
    let pattern = r.param("searchPattern").to_ascii_uppercase();
    let matched: Vec<Value> = ACCOUNT_IDS
        .iter()
        .filter(|a| a.contains(pattern.as_str()))
        .map(|a| json!({ "accountId": a, "alias": a, "allocationId": a }))
        .collect();
    ok(json!({ "matchedAccounts": matched, "pattern": r.param("searchPattern") }))
}

/// `GET /iserver/account/pnl/partitioned`.
pub(crate) fn pnl_partitioned(sim: &Sim, _r: &Req) -> Reply {
    let st = sim.lock();
    let mut upnl = Map::new();
    for a in st.accounts.values() {
        let v = a.value(&sim.universe, &st.market);
        upnl.insert(
            format!("{}.Core", a.id),
            json!({
                "rowType": 1,
                "dpl": cents(v.daily_pnl),
                "nl": cents(v.nlv),
                "upl": cents(v.upnl),
                "el": cents(v.excess),
                "mv": cents(v.stock + v.options),
            }),
        );
    }
    ok(json!({ "upnl": upnl }))
}

/// `GET /iserver/account/{accountId}/summary`.
pub(crate) fn summary(sim: &Sim, r: &Req) -> Reply {
    let st = sim.lock();
    let acct = r.param("accountId");
    let v = match valuation(sim, &st, acct) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let cash_balances: Vec<Value> = st.accounts[acct]
        .cash
        .iter()
        .map(|(ccy, bal)| json!({ "currency": ccy, "balance": cents(*bal), "settledCash": cents(*bal) }))
        .collect();
    ok(json!({
        "accountType": "INDIVIDUAL",
        "status": "",
        "balance": cents(v.cash),
        "SMA": cents(v.available.max(0.0)),
        "buyingPower": cents(v.buying_power),
        "availableFunds": cents(v.available),
        "excessLiquidity": cents(v.excess),
        "netLiquidationValue": cents(v.nlv),
        "equityWithLoanValue": cents(v.elv),
        "regTLoan": 0.0,
        "securitiesGVP": cents(v.gross),
        "totalCashValue": cents(v.cash),
        "accruedInterest": cents(st.accounts[acct].interest_mtd),
        "regTMargin": cents(v.init),
        "initialMargin": cents(v.init),
        "maintenanceMargin": cents(v.maint),
        "cashBalances": cash_balances,
    }))
}

/// Splits a valuation into the securities and commodities (futures) segments.
fn segments(v: &Valuation) -> [(&'static str, f64, f64, f64, f64); 3] {
    // (segment, equity, initial, maintenance, cash)
    let fut_init = 0.06 * v.futures_notional;
    [
        (
            "securities",
            v.elv - v.futures_upnl,
            v.init - fut_init,
            (v.init - fut_init) * 0.85,
            v.cash,
        ),
        (
            "commodities",
            v.futures_upnl,
            fut_init,
            fut_init * 0.85,
            0.0,
        ),
        ("Crypto at Paxos", 0.0, 0.0, 0.0, 0.0),
    ]
}

/// `GET /iserver/account/{accountId}/summary/available_funds`.
pub(crate) fn available_funds(sim: &Sim, r: &Req) -> Reply {
    let st = sim.lock();
    let v = match valuation(sim, &st, r.param("accountId")) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let leverage = if v.nlv > 0.0 { v.gross / v.nlv } else { 0.0 };
    let mut out = Map::new();
    out.insert(
        "total".into(),
        json!({
            "current_available": usd(v.available), "current_excess": usd(v.excess),
            "Prdctd Pst-xpry Excss": usd(v.excess), "Lk Ahd Avlbl Fnds": usd(v.available),
            "Lk Ahd Excss Lqdty": usd(v.excess), "overnight_available": usd(v.available),
            "overnight_excess": usd(v.excess), "buying_power": usd(v.buying_power),
            "leverage": format!("{leverage:.2}"), "Lk Ahd Nxt Chng": "@ 16:00:00", "day_trades_left": "Unlimited",
        }),
    );
    for (seg, eq, init, maint, _) in segments(&v) {
        out.insert(
            seg.into(),
            json!({
                "current_available": usd(eq - init), "current_excess": usd(eq - maint),
                "Prdctd Pst-xpry Excss": usd(eq - maint), "Lk Ahd Avlbl Fnds": usd(eq - init),
                "overnight_available": usd(eq - init), "overnight_excess": usd(eq - maint),
            }),
        );
    }
    ok(Value::Object(out))
}

/// `GET /iserver/account/{accountId}/summary/balances`.
pub(crate) fn balances(sim: &Sim, r: &Req) -> Reply {
    let st = sim.lock();
    let acct = r.param("accountId");
    let v = match valuation(sim, &st, acct) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let prev = st.accounts[acct].prev_nav;
    let interest = st.accounts[acct].interest_mtd;
    let mut out = Map::new();
    out.insert(
        "total".into(),
        json!({
            "net_liquidation": usd(v.nlv), "Nt Lqdtn Uncrtnty": "0 USD", "equity_with_loan": usd(v.elv),
            "Prvs Dy Eqty Wth Ln Vl": usd(prev), "sec_gross_pos_val": usd(v.gross), "cash": usd(v.cash),
            "MTD Interest": usd(interest), "Pndng Dbt Crd Chrgs": "0 USD",
        }),
    );
    for (seg, eq, _, _, cash) in segments(&v) {
        out.insert(
            seg.into(),
            json!({
                "net_liquidation": usd(eq), "equity_with_loan": usd(eq), "cash": usd(cash),
                "MTD Interest": usd(if seg == "securities" { interest } else { 0.0 }), "Pndng Dbt Crd Chrgs": "0 USD",
            }),
        );
    }
    ok(Value::Object(out))
}

/// `GET /iserver/account/{accountId}/summary/margins`.
pub(crate) fn margins(sim: &Sim, r: &Req) -> Reply {
    let st = sim.lock();
    let v = match valuation(sim, &st, r.param("accountId")) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let block = |init: f64, maint: f64| {
        json!({
            "current_initial": usd(init), "Prdctd Pst-xpry Mrgn @ Opn": usd(init), "current_maint": usd(maint),
            "projected_liquidity_inital_margin": usd(init), "Prjctd Lk Ahd Mntnnc Mrgn": usd(maint),
            "projected_overnight_initial_margin": usd(init), "Prjctd Ovrnght Mntnnc Mrgn": usd(maint),
        })
    };
    let mut out = Map::new();
    out.insert("total".into(), block(v.init, v.maint));
    for (seg, _, init, maint, _) in segments(&v) {
        out.insert(seg.into(), block(init, maint));
    }
    ok(Value::Object(out))
}

/// `GET /iserver/account/{accountId}/summary/market_value`: one entry per currency.
pub(crate) fn market_value(sim: &Sim, r: &Req) -> Reply {
    let st = sim.lock();
    let acct = r.param("accountId");
    let v = match valuation(sim, &st, acct) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let mut out = Map::new();
    for (ccy, c) in &v.by_ccy {
        let nl = c.cash + c.stock + c.options + c.futures_upnl;
        out.insert(
            ccy.clone(),
            json!({
                "total_cash": grouped(c.cash), "settled_cash": grouped(c.cash),
                "MTD Interest": grouped(if ccy == "USD" { st.accounts[acct].interest_mtd } else { 0.0 }),
                "stock": grouped(c.stock), "options": grouped(c.options), "futures": grouped(c.futures_upnl),
                "future_options": "0", "funds": "0", "dividends_receivable": "0", "mutual_funds": "0",
                "money_market": "0", "bonds": "0", "Govt Bonds": "0", "t_bills": "0", "warrants": "0",
                "issuer_option": "0", "commodity": "0", "Notional CFD": "0", "cfd": "0",
                "net_liquidation": grouped(nl), "unrealized_pnl": grouped(c.upnl), "realized_pnl": grouped(c.realized),
                "Exchange Rate": format!("{:.5}", c.fx_to_base),
            }),
        );
    }
    ok(Value::Object(out))
}

/// `GET /iserver/account/allocation/accounts`.
pub(crate) fn allocation_accounts(sim: &Sim, _r: &Req) -> Reply {
    let st = sim.lock();
    let accounts: Vec<Value> = st
        .accounts
        .values()
        .map(|a| {
            let v = a.value(&sim.universe, &st.market);
            json!({
                "name": a.id,
                "data": [
                    { "key": "NetLiquidation", "value": format!("{:.2}", v.nlv) },
                    { "key": "AvailableEquity", "value": format!("{:.2}", v.available) },
                    { "key": "PreviousDayEquityWithLoanValue", "value": format!("{:.2}", a.prev_nav) },
                    { "key": "MarketValue", "value": format!("{:.2}", v.stock + v.options) },
                ],
            })
        })
        .collect();
    ok(json!({ "accounts": accounts }))
}

/// `GET /iserver/account/allocation/group`.
pub(crate) fn groups(sim: &Sim, _r: &Req) -> Reply {
    let st = sim.lock();
    let data: Vec<Value> = st
        .allocation
        .groups
        .values()
        .map(|g| json!({ "allocation_method": g.method, "size": g.accounts.len(), "name": g.name }))
        .collect();
    ok(json!({ "data": data }))
}

fn group_from(r: &Req) -> Result<Group, Reply> {
    let name = r
        .field("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let accounts = r.field("accounts").and_then(Value::as_array);
    let method = r.field("default_method").and_then(Value::as_str);
    match (name, accounts, method) {
        (Some(n), Some(a), Some(m)) if ["A", "E", "N", "C", "P", "R", "S"].contains(&m) => {
            Ok(Group {
                name: n.into(),
                accounts: a.clone(),
                method: m.into(),
            })
        }
        _ => Err(err(
            400,
            "Bad Request: name, accounts and default_method (A, E, N, C, P, R or S) are required",
        )),
    }
}

/// `POST /iserver/account/allocation/group/single`.
pub(crate) fn group_single(sim: &Sim, r: &Req) -> Reply {
    let name = r.field("name").and_then(Value::as_str).unwrap_or("");
    let st = sim.lock();
    match st.allocation.groups.get(name) {
        Some(g) => {
            ok(json!({ "name": g.name, "accounts": g.accounts, "default_method": g.method }))
        }
        None => err(
            400,
            format!("Bad Request: allocation group '{name}' not found"),
        ),
    }
}

/// `POST /iserver/account/allocation/group`.
pub(crate) fn group_add(sim: &Sim, r: &Req) -> Reply {
    let g = match group_from(r) {
        Ok(g) => g,
        Err(e) => return e,
    };
    let mut st = sim.lock();
    if st.allocation.groups.contains_key(&g.name) {
        return ok(json!({ "success": false }));
    }
    st.allocation.groups.insert(g.name.clone(), g);
    ok(json!({ "success": true }))
}

/// `PUT /iserver/account/allocation/group` (`prev_name` renames).
pub(crate) fn group_modify(sim: &Sim, r: &Req) -> Reply {
    let g = match group_from(r) {
        Ok(g) => g,
        Err(e) => return e,
    };
    let prev = r
        .field("prev_name")
        .and_then(Value::as_str)
        .unwrap_or(&g.name)
        .to_string();
    let mut st = sim.lock();
    if st.allocation.groups.remove(&prev).is_none() {
        return ok(json!({ "success": false }));
    }
    st.allocation.groups.insert(g.name.clone(), g);
    ok(json!({ "success": true }))
}

/// `POST /iserver/account/allocation/group/delete`.
pub(crate) fn group_delete(sim: &Sim, r: &Req) -> Reply {
    let name = r.field("name").and_then(Value::as_str).unwrap_or("");
    let removed = sim.lock().allocation.groups.remove(name).is_some();
    ok(json!({ "success": removed }))
}

/// `GET /iserver/account/allocation/presets`.
pub(crate) fn presets(sim: &Sim, _r: &Req) -> Reply {
    ok(sim.lock().allocation.presets.clone())
}

/// `POST /iserver/account/allocation/presets`: merges the given keys.
pub(crate) fn presets_set(sim: &Sim, r: &Req) -> Reply {
    let Some(body) = r.body.as_ref().and_then(Value::as_object) else {
        return err(400, "Bad Request: the body must be a JSON object");
    };
    let mut st = sim.lock();
    if let Some(p) = st.allocation.presets.as_object_mut() {
        for (k, v) in body {
            p.insert(k.clone(), v.clone());
        }
    }
    ok(json!({ "success": true }))
}
