//! Options and futures: expiries and strikes, an option chain slice around the money with
//! prices, IV and greeks in one call, and the futures of a symbol.

use chrono::NaiveDate;
use serde_json::{Value, json};

use super::symbols::{future_name, section_months};
use super::{Answer, Ctx, Run, Task, object, table, table_schema};
use crate::error::ToolError;
use crate::ibkr::gateway::{self, ops};
use crate::ibkr::market::number;

/// Columns of an option chain row.
const CHAIN_COLUMNS: [&str; 12] = [
    "strike", "right", "conid", "bid", "ask", "last", "volume", "iv", "delta", "gamma", "theta",
    "vega",
];
/// Snapshot codes of the chain's market columns (from `bid` on), in order.
const CHAIN_CODES: [&str; 9] = [
    "84", "86", "31", "7762", "7633", "7308", "7309", "7310", "7311",
];
/// Most futures months `search_futures` reads.
const MAX_FUTURE_MONTHS: usize = 8;
/// Most strikes a chain slice covers.
const MAX_STRIKES: u64 = 20;

pub(super) fn tasks() -> Vec<Task> {
    let underlying = json!({ "type": "string", "description": "Underlying symbol or conid (AAPL, SPX, 265598)" });
    vec![
        Task {
            name: "get_option_parameters",
            description: "Option expiry months of an underlying, and for one month (default: \
                          the nearest) its expiry dates and strikes.",
            input: json!({ "type": "object", "required": ["symbol"], "properties": {
                "symbol": underlying,
                "month": { "type": "string", "pattern": "^[A-Za-z]{3}[0-9]{2}$",
                           "description": "MMMYY, e.g. JAN27" },
            } }),
            output: object(&[
                ("symbol", json!({ "type": "string" })),
                ("conid", json!({ "type": "integer" })),
                (
                    "months",
                    json!({ "type": "array", "items": { "type": "string" } }),
                ),
                ("month", json!({ "type": "string" })),
                (
                    "expiries",
                    json!({ "type": "array", "items": { "type": "string" } }),
                ),
                (
                    "strikes",
                    json!({ "type": "array", "items": { "type": "number" } }),
                ),
            ]),
            run: Run::Read(|c| Box::pin(parameters(c))),
        },
        Task {
            name: "get_option_data",
            description: "An option chain slice in one call: the strikes nearest the \
                          underlying's price for one expiry (default: the nearest), calls and/or \
                          puts, each row [strike, right, conid, bid, ask, last, volume, iv \
                          (percent), delta, gamma, theta, vega] as `columns` says.",
            input: json!({ "type": "object", "required": ["symbol"], "properties": {
                "symbol": underlying,
                "expiry": { "type": "string", "format": "date", "description": "YYYY-MM-DD" },
                "right": { "type": "string", "enum": ["C", "P", "both"], "default": "both" },
                "strikes": { "type": "integer", "minimum": 1, "maximum": MAX_STRIKES, "default": 6,
                             "description": "How many strikes around the money" },
            } }),
            output: table_schema(&[
                ("symbol", json!({ "type": "string" })),
                ("underlying_price", json!({ "type": "number" })),
                ("expiry", json!({ "type": "string" })),
            ]),
            run: Run::Read(|c| Box::pin(chain(c))),
        },
        Task {
            name: "search_futures",
            description: "Futures of a root symbol (ES, CL, GC), nearest first, as a table: \
                          name (by contract month, as other tools accept it: ES Mar27), conid, \
                          expiry, last_trading_day.",
            input: json!({ "type": "object", "required": ["symbol"], "properties": {
                "symbol": { "type": "string", "pattern": "^[A-Za-z0-9]{1,10}$" },
            } }),
            output: table_schema(&[("symbol", json!({ "type": "string" }))]),
            run: Run::Read(|c| Box::pin(futures(c))),
        },
    ]
}

/// `20270115` as `2027-01-15`.
fn iso_date(yyyymmdd: &str) -> Option<String> {
    NaiveDate::parse_from_str(yyyymmdd.trim(), "%Y%m%d")
        .ok()
        .map(|d| d.format("%Y-%m-%d").to_string())
}

/// The underlying of an option question: resolved, with its option months.
struct Underlying {
    symbol: String,
    conid: i64,
    months: Vec<String>,
}

impl Ctx<'_> {
    async fn underlying(&self) -> Result<Underlying, ToolError> {
        let input = self.str_arg("symbol").unwrap_or_default();
        let r = self.resolve("symbol", input).await?;
        if r.sec_type == "FUT" {
            return Err(self.unresolved(format!(
                "`symbol`: {input} is a future; options on futures are not covered by this tool \
                 (the generated get_secdef_info with sectype FOP lists them, with --toolsets \
                 contracts)"
            )));
        }
        if r.sec_type == "OPT" || r.sec_type == "FOP" {
            return Err(self.unresolved(format!(
                "`symbol`: {input} is an option; name its underlying (e.g. {})",
                r.symbol
            )));
        }
        // A symbol was resolved through a search, which lists the option months; a conid
        // was not, so its listing is searched for them.
        let months = match r.option_months {
            Some(m) => m,
            None => self
                .fetch(
                    format!("option months of {}", r.symbol),
                    ops::SECDEF_SEARCH,
                    json!({ "symbol": r.symbol }),
                )
                .await?
                .as_array()
                .into_iter()
                .flatten()
                .find(|l| l.get("conid").and_then(number).map(|c| c as i64) == Some(r.conid))
                .and_then(|l| section_months(l, "OPT"))
                .unwrap_or_default(),
        };
        if months.is_empty() {
            return Err(self.unresolved(format!(
                "`symbol`: IBKR lists no options on {} (conid {})",
                r.label, r.conid
            )));
        }
        Ok(Underlying {
            symbol: r.label,
            conid: r.conid,
            months,
        })
    }

    /// Call and put strikes of `month`, together, ascending.
    async fn strikes(&self, u: &Underlying, month: &str) -> Result<Vec<f64>, ToolError> {
        let v = self
            .fetch(
                format!("strikes of {} {month}", u.symbol),
                ops::STRIKES,
                json!({ "conid": u.conid.to_string(), "sectype": "OPT", "month": month }),
            )
            .await?;
        let mut all: Vec<f64> = ["call", "put"]
            .iter()
            .flat_map(|k| {
                v.get(*k)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|x| number(&x))
            .collect();
        all.sort_by(f64::total_cmp);
        all.dedup();
        Ok(all)
    }

    /// The option contracts of `month` at `strike` and `right`: (conid, YYYYMMDD).
    async fn options_at(
        &self,
        u: &Underlying,
        month: &str,
        strike: f64,
        right: char,
    ) -> Result<Vec<(i64, String)>, ToolError> {
        self.derivatives(u.conid, "OPT", month, Some((strike, right)), None)
            .await
    }

    fn month_arg(&self, u: &Underlying, wanted: Option<String>) -> Result<String, ToolError> {
        match wanted {
            None => Ok(u.months[0].clone()),
            Some(m) if u.months.contains(&m) => Ok(m),
            Some(m) => Err(self.unresolved(format!(
                "no {} options expire in {m}; months listed: {}",
                u.symbol,
                u.months.join(", ")
            ))),
        }
    }
}

async fn parameters(c: &Ctx<'_>) -> Result<Answer, ToolError> {
    let u = c.underlying().await?;
    let month = c.month_arg(&u, c.str_arg("month").map(str::to_ascii_uppercase))?;
    let strikes = c.strikes(&u, &month).await?;
    // Expiries of the month: weeklies may not list every strike, so three strikes across the
    // range are asked.
    let mut picks: Vec<f64> = [strikes.len() / 4, strikes.len() / 2, strikes.len() * 3 / 4]
        .iter()
        .filter_map(|i| strikes.get(*i).copied())
        .collect();
    picks.dedup();
    let mut expiries: Vec<String> = Vec::new();
    for k in picks {
        expiries.extend(
            c.options_at(&u, &month, k, 'C')
                .await?
                .into_iter()
                .filter_map(|(_, d)| iso_date(&d)),
        );
    }
    expiries.sort();
    expiries.dedup();
    let mut answer_notes = Vec::new();
    if strikes.is_empty() || expiries.is_empty() {
        answer_notes.push(format!(
            "IBKR listed no strikes or expiries for {} in {month}; try another month.",
            u.symbol
        ));
    }
    Ok(Answer {
        value: json!({
            "symbol": u.symbol, "conid": u.conid, "months": u.months, "month": month,
            "expiries": expiries, "strikes": strikes,
        }),
        notes: answer_notes,
    })
}

/// The `n` strikes nearest `price`, ascending.
fn around(strikes: &[f64], price: f64, n: usize) -> Vec<f64> {
    let mut by_distance = strikes.to_vec();
    by_distance.sort_by(|a, b| (a - price).abs().total_cmp(&(b - price).abs()));
    by_distance.truncate(n);
    by_distance.sort_by(f64::total_cmp);
    by_distance
}

async fn chain(c: &Ctx<'_>) -> Result<Answer, ToolError> {
    let expiry = match c.str_arg("expiry") {
        Some(s) => Some(
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| c.invalid(format!("`expiry`: {s:?} is not a date (YYYY-MM-DD)")))?,
        ),
        None => None,
    };
    let u = c.underlying().await?;
    let month = c.month_arg(
        &u,
        expiry.map(|d| d.format("%b%y").to_string().to_ascii_uppercase()),
    )?;
    let rights: &[char] = match c.str_arg("right") {
        Some("C") => &['C'],
        Some("P") => &['P'],
        _ => &['C', 'P'],
    };
    let n = c.count_arg("strikes", 6, MAX_STRIKES);
    let (under, mut notes) = c
        .warm_snapshot(&[u.conid.to_string()], &["31", "84", "86"])
        .await?;
    let market_price = under.first().and_then(|e| {
        let f = |k: &str| e.get(k).and_then(number).filter(|x| *x > 0.0);
        f("31").or_else(|| f("84").zip(f("86")).map(|(b, a)| (a + b) / 2.0))
    });
    let strikes = c.strikes(&u, &month).await?;
    let Some(price) = market_price.or_else(|| strikes.get(strikes.len() / 2).copied()) else {
        return Err(c.unresolved(format!("no {} strikes listed for {month}", u.symbol)));
    };
    if market_price.is_none() {
        notes.push(format!(
            "No price for {} yet: the strikes are the middle of the listed range.",
            u.symbol
        ));
    }
    let chosen = around(&strikes, price, n);
    // Which expiry: the one asked for, or the nearest of the month that is not past.
    let mut wanted = expiry.map(|d| d.format("%Y%m%d").to_string());
    let today = chrono::Utc::now().format("%Y%m%d").to_string();
    let mut rows = Vec::new();
    let mut contracts: Vec<(f64, char, i64)> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for strike in &chosen {
        for right in rights {
            let listed = c.options_at(&u, &month, *strike, *right).await?;
            seen.extend(listed.iter().filter_map(|(_, d)| iso_date(d)));
            if wanted.is_none() {
                wanted = listed
                    .iter()
                    .map(|(_, d)| d.clone())
                    .filter(|d| *d >= today)
                    .min();
            }
            if let Some(w) = &wanted
                && let Some((conid, _)) = listed.iter().find(|(_, d)| d == w)
            {
                contracts.push((*strike, *right, *conid));
            }
        }
    }
    seen.sort();
    seen.dedup();
    let expiry_text = match (wanted.as_deref().and_then(iso_date), expiry) {
        (Some(e), _) if !contracts.is_empty() => e,
        (_, Some(d)) => {
            return Err(c.unresolved(format!(
                "`expiry`: no {} option expires on {d}; {month} expiries: {}",
                u.symbol,
                seen.join(", ")
            )));
        }
        _ => {
            return Err(c.unresolved(format!(
                "no {} option of {month} expires today or later; get_option_parameters lists \
                 the months",
                u.symbol
            )));
        }
    };
    {
        let conids: Vec<String> = contracts.iter().map(|(_, _, c)| c.to_string()).collect();
        let (entries, more) = c.warm_snapshot(&conids, &CHAIN_CODES).await?;
        notes.extend(more);
        for (strike, right, conid) in &contracts {
            let e = entries
                .iter()
                .find(|e| e.get("conid").and_then(number).map(|x| x as i64) == Some(*conid));
            let mut r = vec![json!(strike), json!(right.to_string()), json!(conid)];
            r.extend(CHAIN_CODES.iter().map(|code| {
                e.and_then(|e| e.get(*code))
                    .and_then(super::market::field_number)
                    .map_or(Value::Null, |x| json!(super::round(x)))
            }));
            rows.push(Value::Array(r));
        }
    }
    Ok(Answer {
        value: json!({
            "symbol": u.symbol, "underlying_price": super::round(price), "expiry": expiry_text,
            "columns": CHAIN_COLUMNS, "rows": rows,
        }),
        notes,
    })
}

async fn futures(c: &Ctx<'_>) -> Result<Answer, ToolError> {
    let symbol = c.str_arg("symbol").unwrap_or_default().to_ascii_uppercase();
    let (underlying, months, exchange) = c
        .futures_months(&symbol)
        .await
        .map_err(|f| c.failed("symbol", f))?;
    // Last trading days, by conid (one request for every month).
    let ltd: std::collections::HashMap<i64, String> = match gateway::call_json(
        c.client(),
        format!("futures of {symbol}"),
        ops::FUTURES,
        json!({ "symbols": symbol }),
    )
    .await
    {
        Ok(v) => v
            .get(&symbol)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| {
                let conid = f.get("conid").and_then(number)? as i64;
                let ltd = f.get("ltd").and_then(number)?;
                Some((conid, iso_date(&(ltd as i64).to_string())?))
            })
            .collect(),
        Err(e) if e.unauthorized() => return Err(c.lookup(e)),
        Err(_) => Default::default(),
    };
    let mut rows = Vec::new();
    for month in months.iter().take(MAX_FUTURE_MONTHS) {
        let found = c
            .derivatives(underlying, "FUT", month, None, exchange.as_deref())
            .await?;
        for (conid, expiry) in found {
            rows.push(json!({
                "name": future_name(&symbol, month),
                "conid": conid,
                "expiry": iso_date(&expiry),
                "last_trading_day": ltd.get(&conid),
            }));
        }
    }
    let mut answer = Answer::new({
        let mut t = table(&["name", "conid", "expiry", "last_trading_day"], &rows);
        t["symbol"] = json!(symbol);
        t
    });
    if months.len() > MAX_FUTURE_MONTHS {
        answer.notes.push(format!(
            "The nearest {MAX_FUTURE_MONTHS} of {} months are shown; name a later one as \
             {symbol} MonYY.",
            months.len()
        ));
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strikes_around_the_money_are_the_nearest_ascending() {
        let s = [90.0, 95.0, 100.0, 105.0, 110.0, 115.0];
        assert_eq!(around(&s, 103.0, 3), vec![100.0, 105.0, 110.0]);
        assert_eq!(around(&s, 50.0, 2), vec![90.0, 95.0]);
        assert_eq!(around(&s, 100.0, 10).len(), 6);
        assert_eq!(iso_date("20270115").as_deref(), Some("2027-01-15"));
        assert_eq!(iso_date("2027"), None);
    }
}
