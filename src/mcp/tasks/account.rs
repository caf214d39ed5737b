//! Accounts: the overview, positions, open orders and recent trades.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Answer, Ctx, Run, Task, iso_ms, num, table, table_schema, text};
use crate::error::ToolError;
use crate::ibkr::gateway::{self, ops};
use crate::ibkr::market::number;

/// Order statuses after which nothing more happens to an order.
const DONE: &[&str] = &["filled", "cancelled", "inactive", "apicancelled", "expired"];
/// The columns of the summary, position, order and trade tables.
const SUMMARY_COLUMNS: &[&str] = &[
    "account",
    "currency",
    "net_liquidation",
    "cash",
    "buying_power",
    "available_funds",
    "excess_liquidity",
    "gross_position_value",
    "init_margin",
    "maint_margin",
    "daily_pnl",
    "unrealized_pnl",
];
const POSITION_COLUMNS: &[&str] = &[
    "account",
    "symbol",
    "asset_class",
    "quantity",
    "price",
    "market_value",
    "notional",
    "avg_price",
    "unrealized_pnl",
    "realized_pnl",
    "currency",
    "conid",
];
const ORDER_COLUMNS: &[&str] = &[
    "order_id",
    "account",
    "symbol",
    "side",
    "quantity",
    "filled",
    "order_type",
    "limit_price",
    "stop_price",
    "tif",
    "status",
    "avg_fill_price",
    "updated",
    "parent_id",
    "conid",
];
const TRADE_COLUMNS: &[&str] = &[
    "time",
    "account",
    "symbol",
    "side",
    "quantity",
    "price",
    "commission",
    "net_amount",
    "exchange",
    "order_ref",
    "sec_type",
    "conid",
    "execution_id",
];
/// Positions pages IBKR sends (100 positions each) that a call reads at most.
const MAX_PAGES: usize = 10;

pub(super) fn tasks() -> Vec<Task> {
    let account = json!({ "type": "string", "description": "One account id; default: every account of the login" });
    vec![
        Task {
            name: "get_account_summary",
            description: "Overview of every account of the login (or one), as a table: \
                          account, currency, net_liquidation, cash, buying_power, \
                          available_funds, excess_liquidity, gross_position_value, init_margin, \
                          maint_margin, daily_pnl, unrealized_pnl.",
            input: json!({ "type": "object", "properties": { "account": account } }),
            output: table_schema(&[]),
            run: Run::Read(|c| Box::pin(summary(c))),
        },
        Task {
            name: "get_account_positions",
            description: "Positions of every account of the login (or one), largest first, as a \
                          table: account, symbol (the contract: AAPL, ES DEC2026, AAPL JAN2027 \
                          200 C), asset_class, quantity, price, market_value, notional, \
                          avg_price, unrealized_pnl, realized_pnl, currency, conid. For futures \
                          market_value is what the position adds to net liquidation (its \
                          unrealized P&L) and notional is quantity x price x multiplier.",
            input: json!({ "type": "object", "properties": {
                "account": account,
                "limit": { "type": "integer", "minimum": 1, "maximum": 500, "default": 50 },
            } }),
            output: table_schema(&[("total", json!({ "type": "integer" }))]),
            run: Run::Read(|c| Box::pin(positions(c))),
        },
        Task {
            name: "get_account_orders",
            description: "Working orders of the login's accounts (or one; status all: today's \
                          filled and cancelled too), as a table: order_id, account, symbol, \
                          side, quantity, filled, order_type, limit_price, stop_price, tif, \
                          status, avg_fill_price, updated, parent_id (bracket legs), conid.",
            input: json!({ "type": "object", "properties": {
                "account": account,
                "status": { "type": "string", "enum": ["working", "all"], "default": "working" },
            } }),
            output: table_schema(&[]),
            run: Run::Read(|c| Box::pin(orders(c))),
        },
        Task {
            name: "get_account_trades",
            description: "Fills of the last days (default 1, at most 7), newest first, as a \
                          table: time, account, symbol, side, quantity, price, commission, \
                          net_amount, exchange, order_ref, sec_type, conid, execution_id.",
            input: json!({ "type": "object", "properties": {
                "account": account,
                "days": { "type": "integer", "minimum": 1, "maximum": 7, "default": 1 },
            } }),
            output: table_schema(&[]),
            run: Run::Read(|c| Box::pin(trades(c))),
        },
    ]
}

/// How long the login's account list is reused. IBKR allows `/portfolio/accounts` once per
/// 5 s, and it must have been read before the other `/portfolio` requests of a session.
const ACCOUNTS_TTL: Duration = Duration::from_secs(300);

/// The login's accounts, as last read, and whether a new session made them stale.
#[derive(Debug, Default)]
pub(super) struct AccountList(Mutex<Option<(Instant, Vec<String>, bool)>>);

impl AccountList {
    /// The list, when it is fresh.
    pub(super) fn get(&self) -> Option<Vec<String>> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref()
            .filter(|(at, _, stale)| !stale && at.elapsed() < ACCOUNTS_TTL)
            .map(|(_, ids, _)| ids.clone())
    }

    /// The list even when stale, if it was read within IBKR's pacing window (so reading it
    /// again now would be refused).
    fn recent(&self) -> Option<Vec<String>> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref()
            .filter(|(at, _, _)| at.elapsed() < Duration::from_secs(6))
            .map(|(_, ids, _)| ids.clone())
    }

    /// A new brokerage session: read the list again before the next `/portfolio` request.
    pub(super) fn clear(&self) {
        if let Some(entry) = self.0.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            entry.2 = true;
        }
    }

    fn put(&self, ids: &[String]) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), ids.to_vec(), false));
    }
}

impl Ctx<'_> {
    /// The one account a change applies to: the one named by `account`, or the login's only
    /// one; with several and none named, an error saying to name the one `for_what`.
    pub(super) async fn one_account(&self, for_what: &str) -> Result<String, ToolError> {
        match self.accounts().await?.as_slice() {
            [one] => Ok(one.clone()),
            many => Err(self.invalid(format!(
                "`account`: this login has {} accounts ({}); name the one {for_what}",
                many.len(),
                many.join(", ")
            ))),
        }
    }

    /// The login's accounts, or the one named by `account` when it is one of them.
    pub(super) async fn accounts(&self) -> Result<Vec<String>, ToolError> {
        let cache = &self.server.state.tasks.accounts;
        let ids = match cache.get() {
            Some(ids) => ids,
            None => {
                let v = match crate::ibkr::fetch_portfolio_accounts(self.client()).await {
                    Ok(v) => v,
                    // Read moments ago (before the session was re-opened): IBKR allows it
                    // once per 5 s, and the list read then is the login's.
                    Err(e) if e.retry_after().is_some() && cache.recent().is_some() => {
                        let ids = cache.recent().unwrap_or_default();
                        Value::Array(
                            ids.into_iter()
                                .map(|id| json!({ "accountId": id }))
                                .collect(),
                        )
                    }
                    Err(e) => return Err(self.lookup(e)),
                };
                let ids: Vec<String> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.get("accountId").or_else(|| a.get("id")))
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect();
                if ids.is_empty() {
                    return Err(ToolError::Rejected {
                        status: 200,
                        message: "IBKR lists no accounts for this login (/portfolio/accounts is \
                                  empty); check the login in the gateway"
                            .into(),
                    });
                }
                cache.put(&ids);
                ids
            }
        };
        match self.str_arg("account") {
            None => Ok(ids),
            Some(want) if ids.iter().any(|a| a == want) => Ok(vec![want.to_string()]),
            Some(want) => Err(self.unresolved(format!(
                "`account`: {want:?} is not an account of this login; its accounts are {}",
                ids.join(", ")
            ))),
        }
    }
}

async fn summary(c: &Ctx<'_>) -> Result<Answer, ToolError> {
    let accounts = c.accounts().await?;
    let mut notes = Vec::new();
    let pnl = match gateway::call_json(c.client(), "P&L", ops::PNL, json!({})).await {
        Ok(v) => v,
        // A lapsed session is re-opened and the whole task asked again (see `task`).
        Err(e) if e.unauthorized() => return Err(c.lookup(e)),
        Err(e) => {
            notes.push(format!("P&L is missing: {}", c.lookup(e).message()));
            Value::Null
        }
    };
    let mut rows = Vec::new();
    for a in &accounts {
        let s = c
            .fetch(
                format!("summary of {a}"),
                ops::PORTFOLIO_SUMMARY,
                json!({ "accountId": a }),
            )
            .await?;
        rows.push(summary_row(a, &s, &pnl));
    }
    let loaded = pnl.get("upnl").and_then(Value::as_object);
    if !pnl.is_null() && loaded.is_none_or(|m| m.is_empty()) {
        notes.push(
            "IBKR has not loaded the P&L of this session yet (its first answer is empty): \
             daily_pnl and unrealized_pnl are null; ask again in 5 seconds."
                .into(),
        );
    }
    Ok(Answer {
        value: table(SUMMARY_COLUMNS, &rows),
        notes,
    })
}

/// One account's overview from `/portfolio/{id}/summary` and the partitioned P&L.
fn summary_row(account: &str, s: &Value, pnl: &Value) -> Value {
    let amount = |k: &str| num(s.get(k).and_then(|f| f.get("amount")));
    let p = pnl.get("upnl").and_then(Value::as_object).and_then(|m| {
        m.iter()
            .find(|(k, _)| k.split('.').next() == Some(account))
            .map(|(_, v)| v)
    });
    json!({
        "account": account,
        "currency": text(s.get("netliquidation").and_then(|f| f.get("currency"))),
        "net_liquidation": amount("netliquidation"),
        "cash": amount("totalcashvalue"),
        "buying_power": amount("buyingpower"),
        "available_funds": amount("availablefunds"),
        "excess_liquidity": amount("excessliquidity"),
        "gross_position_value": amount("grosspositionvalue"),
        "init_margin": amount("initmarginreq"),
        "maint_margin": amount("maintmarginreq"),
        "daily_pnl": num(p.and_then(|p| p.get("dpl"))),
        "unrealized_pnl": num(p.and_then(|p| p.get("upl"))),
    })
}

async fn positions(c: &Ctx<'_>) -> Result<Answer, ToolError> {
    let accounts = c.accounts().await?;
    let limit = c.count_arg("limit", 50, 500);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for a in &accounts {
        for page in 0..MAX_PAGES {
            let v = c
                .fetch(
                    format!("positions of {a}"),
                    ops::POSITIONS,
                    json!({ "accountId": a, "pageId": page.to_string() }),
                )
                .await?;
            let items = v.as_array().cloned().unwrap_or_default();
            let full = items.len() >= 100;
            rows.extend(
                items
                    .iter()
                    .filter(|p| p.get("position").and_then(number) != Some(0.0))
                    .map(|p| position_row(a, p)),
            );
            if !full {
                break;
            }
            if page + 1 == MAX_PAGES {
                notes.push(format!(
                    "{a} has more than {} positions; only the first {} pages were read.",
                    MAX_PAGES * 100,
                    MAX_PAGES
                ));
            }
        }
    }
    let size = |r: &Value| {
        r["notional"]
            .as_f64()
            .or_else(|| r["market_value"].as_f64())
            .unwrap_or(0.0)
            .abs()
    };
    rows.sort_by(|x, y| size(y).total_cmp(&size(x)));
    let total = rows.len();
    if total > limit {
        rows.truncate(limit);
        notes.push(format!(
            "{limit} of {total} positions shown (largest first); raise `limit` for more."
        ));
    }
    Ok(Answer {
        value: {
            let mut t = table(POSITION_COLUMNS, &rows);
            t["total"] = json!(total);
            t
        },
        notes,
    })
}

/// One position of `/portfolio/{id}/positions/{page}`, named and in numbers.
fn position_row(account: &str, p: &Value) -> Value {
    let f = |k: &str| p.get(k).and_then(number);
    let class = p.get("assetClass").and_then(Value::as_str).unwrap_or("");
    let qty = f("position");
    let price = f("mktPrice");
    // IBKR often sends `multiplier: null` even for derivatives; average cost is the average
    // price times the multiplier, so their ratio is the multiplier when it is missing.
    let mult = f("multiplier").filter(|m| *m > 0.0).or_else(|| {
        let (cost, px) = (f("avgCost")?, f("avgPrice").filter(|p| *p != 0.0)?);
        Some((cost / px).round()).filter(|m| *m >= 1.0)
    });
    let (market_value, notional) = match class {
        "FUT" => (
            f("unrealizedPnl"),
            qty.zip(price).zip(mult).map(|((q, p), m)| q * p * m),
        ),
        _ => (f("mktValue"), None),
    };
    let symbol = match text(p.get("contractDesc")) {
        Value::Null => text(p.get("ticker")),
        d => d,
    };
    let n = |x: Option<f64>| x.map_or(Value::Null, |x| json!(super::round(x)));
    json!({
        "account": account,
        "symbol": symbol,
        "asset_class": text(p.get("assetClass")),
        "conid": p.get("conid").and_then(number).map_or(0, |c| c as i64),
        "quantity": n(qty),
        "price": n(price),
        "market_value": n(market_value),
        "notional": n(notional),
        "avg_price": num(p.get("avgPrice")),
        "unrealized_pnl": num(p.get("unrealizedPnl")),
        "realized_pnl": num(p.get("realizedPnl")),
        "currency": text(p.get("currency")),
    })
}

async fn orders(c: &Ctx<'_>) -> Result<Answer, ToolError> {
    let accounts = c.accounts().await?;
    let args = match c.str_arg("account") {
        Some(a) => json!({ "accountId": a }),
        None => json!({}),
    };
    let v = c.fetch("open orders", ops::LIVE_ORDERS, args).await?;
    let working_only = c.str_arg("status") != Some("all");
    // `{"orders": [...], "snapshot": ...}`, or (as some gateways answer) the bare array.
    let listed = v.get("orders").or(Some(&v)).and_then(Value::as_array);
    let rows: Vec<Value> = listed
        .into_iter()
        .flatten()
        .filter(|o| {
            let acct = o.get("acct").or_else(|| o.get("account"));
            acct.and_then(Value::as_str)
                .is_none_or(|a| accounts.iter().any(|x| x == a))
        })
        .filter(|o| {
            let status = o
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_ascii_lowercase();
            !working_only || !DONE.contains(&status.as_str())
        })
        .map(order_row)
        .collect();
    let mut answer = Answer::new(table(ORDER_COLUMNS, &rows));
    if rows.is_empty() && v.get("snapshot") != Some(&Value::Bool(true)) {
        answer.notes.push(
            "IBKR's first order list of a brokerage session can be empty while it loads \
             (snapshot false): call again in 5 seconds before concluding there are no orders."
                .into(),
        );
    }
    Ok(answer)
}

/// One order of `/iserver/account/orders`.
fn order_row(o: &Value) -> Value {
    // A plain stop order carries its trigger in `price` (there is no limit); a stop-limit
    // carries the limit in `price` and the trigger in `auxPrice`.
    let kind = |k: &str| {
        o.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_uppercase()
            .replace(['_', ' '], "")
    };
    let order_type = match kind("orderType") {
        t if t.is_empty() => kind("origOrderType"),
        t => t,
    };
    let stop_only = order_type == "STOP" || order_type == "STP";
    let id = super::id_text(o.get("orderId")).unwrap_or_default();
    let mut symbol = match text(o.get("ticker")) {
        Value::Null => text(o.get("description1")),
        t => t,
    };
    let mut conid = o.get("conid").and_then(number).map(|c| c as i64);
    // A combo: its conid is IBKR's spread template; its legs are in conidex.
    if let Some(legs) = o
        .get("conidex")
        .and_then(Value::as_str)
        .and_then(|x| x.split_once(";;;"))
        .map(|(_, legs)| legs)
    {
        let under = symbol.as_str().unwrap_or("").to_string();
        symbol = json!(
            format!("{under} combo (conid/ratio {legs})")
                .trim()
                .to_string()
        );
        conid = None;
    }
    json!({
        "order_id": id,
        "account": text(o.get("acct").or_else(|| o.get("account"))),
        "symbol": symbol,
        "conid": conid,
        "side": text(o.get("side")),
        "quantity": match num(o.get("totalSize")) {
            Value::Null => {
                let f = |k: &str| o.get(k).and_then(number);
                f("filledQuantity")
                    .zip(f("remainingQuantity"))
                    .map_or(Value::Null, |(a, b)| json!(super::round(a + b)))
            }
            q => q,
        },
        "filled": num(o.get("filledQuantity")),
        "order_type": text(o.get("orderType").or_else(|| o.get("origOrderType"))),
        "limit_price": if stop_only { Value::Null } else { num(o.get("price")) },
        "stop_price": if stop_only {
            num(o.get("price").or_else(|| o.get("auxPrice")))
        } else {
            num(o.get("auxPrice").or_else(|| o.get("stop_price")))
        },
        "tif": text(o.get("timeInForce")),
        "status": text(o.get("status")),
        "avg_fill_price": num(o.get("avgPrice")),
        "updated": o.get("lastExecutionTime_r").and_then(number).and_then(|t| iso_ms(t as i64)),
        "parent_id": o.get("parentId").and_then(number).map(|p| (p as i64).to_string()),
    })
}

async fn trades(c: &Ctx<'_>) -> Result<Answer, ToolError> {
    let accounts = c.accounts().await?;
    let days = c.count_arg("days", 1, 7);
    let v = c
        .fetch("trades", ops::TRADES, json!({ "days": days.to_string() }))
        .await?;
    let mut rows: Vec<Value> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| {
            t.get("account")
                .and_then(Value::as_str)
                .is_none_or(|a| accounts.iter().any(|x| x == a))
        })
        .map(trade_row)
        .collect();
    rows.sort_by(|a, b| b["time"].as_str().cmp(&a["time"].as_str()));
    Ok(Answer::new(table(TRADE_COLUMNS, &rows)))
}

/// One execution of `/iserver/account/trades`.
fn trade_row(t: &Value) -> Value {
    let side = match t.get("side").and_then(Value::as_str) {
        Some("B") => json!("BUY"),
        Some("S") => json!("SELL"),
        other => text(other.map(|s| Value::String(s.into())).as_ref()),
    };
    json!({
        "time": t.get("trade_time_r").and_then(number).and_then(|x| iso_ms(x as i64)),
        "account": text(t.get("account")),
        "symbol": text(t.get("symbol")),
        "conid": t.get("conid").and_then(number).map(|c| c as i64),
        "sec_type": text(t.get("sec_type")),
        "side": side,
        "quantity": num(t.get("size")),
        "price": num(t.get("price")),
        "commission": num(t.get("commission")),
        "net_amount": num(t.get("net_amount")),
        "exchange": text(t.get("exchange")),
        "order_ref": text(t.get("order_ref")),
        "execution_id": text(t.get("execution_id")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_row_reads_amounts_and_the_accounts_pnl() {
        let s = json!({
            "netliquidation": { "amount": 1000.5, "currency": "USD" },
            "totalcashvalue": { "amount": 200.0, "currency": "USD" },
            "buyingpower": { "amount": 4000.0, "currency": "USD" },
        });
        let pnl = json!({ "upnl": {
            "DU1.Core": { "dpl": 12.5, "upl": -3.0 },
            "DU12.Core": { "dpl": 99.0, "upl": 99.0 },
        } });
        let r = summary_row("DU1", &s, &pnl);
        assert_eq!(r["net_liquidation"], 1000.5);
        assert_eq!(r["currency"], "USD");
        assert_eq!(r["daily_pnl"], 12.5);
        assert_eq!(r["unrealized_pnl"], -3.0);
        assert_eq!(r["maint_margin"], Value::Null);
    }

    #[test]
    fn a_futures_position_shows_notional_apart_from_market_value() {
        let p = json!({
            "conid": 1, "contractDesc": "ES DEC26", "assetClass": "FUT", "position": 2,
            "mktPrice": 6000.0, "mktValue": 600000.0, "multiplier": 50, "unrealizedPnl": 1500.0,
        });
        let r = position_row("DU1", &p);
        assert_eq!(r["market_value"], 1500.0);
        assert_eq!(r["notional"], 600000.0);
        assert_eq!(r["symbol"], "ES DEC26");
        let s = position_row(
            "DU1",
            &json!({"conid": 2, "contractDesc": "AAPL", "assetClass": "STK", "position": 10,
                    "mktPrice": 200.5, "mktValue": 2005.0, "multiplier": 0.0}),
        );
        assert_eq!(s["market_value"], 2005.0);
        assert_eq!(s["notional"], Value::Null);
        // A null multiplier (as IBKR sends it) is the ratio of average cost to average price.
        let n = position_row(
            "DU1",
            &json!({"conid": 3, "contractDesc": "ES DEC26", "assetClass": "FUT", "position": 1,
                    "mktPrice": 6000.0, "multiplier": null, "avgCost": 299500.0,
                    "avgPrice": 5990.0, "unrealizedPnl": 500.0}),
        );
        assert_eq!(n["notional"], 300000.0);
    }

    #[test]
    fn orders_and_trades_have_numbers_and_iso_times() {
        let o = order_row(&json!({
            "acct": "U1", "conid": 265598, "orderId": 1234568790, "ticker": "AAPL",
            "side": "SELL", "totalSize": 5.0, "filledQuantity": 5.0, "orderType": "Market",
            "status": "Filled", "avgPrice": "192.26", "timeInForce": "GTC",
            "lastExecutionTime_r": 1702317649000_i64,
        }));
        assert_eq!(o["order_id"], "1234568790");
        assert_eq!(o["avg_fill_price"], 192.26);
        assert_eq!(o["updated"], "2023-12-11T18:00:49Z");
        let t = trade_row(&json!({
            "side": "B", "size": 255.0, "price": "23.25", "commission": "1.27",
            "trade_time_r": 1697745361000_i64, "symbol": "IOT", "conid": 532274461,
        }));
        assert_eq!(t["side"], "BUY");
        // IBKR's stop order: the trigger is `price`, and there is no limit.
        let stop = order_row(&json!({"orderId": 7, "orderType": "Stop", "price": "0.50"}));
        assert_eq!(stop["stop_price"], 0.5);
        assert_eq!(stop["limit_price"], Value::Null);
        let stop_limit = order_row(
            &json!({"orderId": 8, "orderType": "Stop Limit", "price": "10.5", "auxPrice": "10"}),
        );
        assert_eq!(stop_limit["limit_price"], 10.5);
        assert_eq!(stop_limit["stop_price"], 10.0);
        assert_eq!(t["price"], 23.25);
        assert_eq!(t["time"], "2023-10-19T19:56:01Z");
    }
}
