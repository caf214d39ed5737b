//! Market data: quotes for many symbols at once, price history, contract search.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::symbols::section_months;
use super::{Answer, Ctx, Run, Task, iso_ms, table, table_schema, text};
use crate::error::ToolError;
use crate::ibkr::gateway::ops;
use crate::ibkr::market::number;
use crate::mcp::quotes;

/// Named quote fields and IBKR's snapshot field codes for them.
const FIELDS: &[(&str, &str)] = &[
    ("last", "31"),
    ("bid", "84"),
    ("ask", "86"),
    ("change", "82"),
    ("change_pct", "83"),
    ("volume", "7762"),
    ("prior_close", "7741"),
    ("open", "7295"),
    ("high", "70"),
    ("low", "71"),
    ("bid_size", "88"),
    ("ask_size", "85"),
    ("mark", "7635"),
    ("iv", "7633"),
    ("delta", "7308"),
    ("gamma", "7309"),
    ("theta", "7310"),
    ("vega", "7311"),
];
/// The fields of a quote when none are named.
pub(super) const DEFAULT_FIELDS: &[&str] = &[
    "last",
    "bid",
    "ask",
    "change",
    "change_pct",
    "volume",
    "prior_close",
];
/// The short volume field, read when the full one is absent (`12.3M`).
const SHORT_VOLUME: &str = "87";
/// Most symbols per quote call.
const MAX_SYMBOLS: usize = 50;
/// Bar sizes: ours, IBKR's, seconds.
const BARS: &[(&str, &str, i64)] = &[
    ("1min", "1min", 60),
    ("5min", "5min", 300),
    ("15min", "15min", 900),
    ("30min", "30min", 1800),
    ("1h", "1h", 3600),
    ("4h", "4h", 4 * 3600),
    ("1d", "1d", 86_400),
    ("1w", "1w", 7 * 86_400),
    ("1month", "1m", 30 * 86_400),
];
/// Periods: ours (IBKR's too), seconds.
const PERIODS: &[(&str, i64)] = &[
    ("1d", 86_400),
    ("2d", 2 * 86_400),
    ("5d", 5 * 86_400),
    ("1w", 7 * 86_400),
    ("2w", 14 * 86_400),
    ("1m", 30 * 86_400),
    ("3m", 90 * 86_400),
    ("6m", 180 * 86_400),
    ("1y", 365 * 86_400),
    ("2y", 730 * 86_400),
    ("5y", 1825 * 86_400),
];
/// Scans: ours, IBKR's scan code, what its value is.
const SCANS: &[(&str, &str, &str)] = &[
    ("top_gainers", "TOP_PERC_GAIN", "change_pct"),
    ("top_losers", "TOP_PERC_LOSE", "change_pct"),
    ("most_active", "MOST_ACTIVE", "volume"),
    ("hot_by_price", "HOT_BY_PRICE", "last"),
];
/// Universes: ours, IBKR's instrument and location.
const UNIVERSES: &[(&str, &str, &str)] = &[
    ("us_stocks", "STK", "STK.US.MAJOR"),
    ("nasdaq", "STK", "STK.NASDAQ"),
    ("nyse", "STK", "STK.NYSE"),
    ("us_etfs", "ETF.EQ.US", "ETF.EQ.US.MAJOR"),
];
/// What each history bar row holds.
const BAR_COLUMNS: [&str; 6] = ["time", "open", "high", "low", "close", "volume"];
/// Most contracts a search returns.
const MAX_FOUND: usize = 20;

pub(super) fn tasks() -> Vec<Task> {
    let symbol = "A symbol (AAPL; SPY@ARCA for one exchange), a conid, a future (ES Mar27) or an \
                  option (AAPL 2027-01-15 200 C)";
    let field_names: Vec<&str> = FIELDS.iter().map(|(n, _)| *n).collect();
    vec![
        Task {
            name: "get_price_snapshot",
            description: "Quotes for up to 50 symbols in one call, as a table: symbol, conid, \
                          data_status (live, delayed, frozen, none), then the fields asked for, \
                          as numbers (default last, bid, ask, change, change_pct, volume, \
                          prior_close; options also iv in percent and greeks).",
            input: json!({ "type": "object", "required": ["symbols"], "properties": {
                "symbols": { "type": "array", "minItems": 1, "maxItems": MAX_SYMBOLS,
                             "items": { "type": "string", "description": symbol } },
                "fields": { "type": "array", "items": { "type": "string", "enum": field_names } },
            } }),
            output: table_schema(&[]),
            run: Run::Read(|c| Box::pin(snapshot(c))),
        },
        Task {
            name: "get_price_history",
            description: "Price bars of one symbol, oldest first, as a table: time (ISO 8601 \
                          UTC), open, high, low, close, volume. Period units: d, w, m (months), \
                          y. At most 1000 bars.",
            input: json!({ "type": "object", "required": ["symbol", "period", "bar"], "properties": {
                "symbol": { "type": "string", "description": symbol },
                "period": { "type": "string", "enum": PERIODS.iter().map(|p| p.0).collect::<Vec<_>>() },
                "bar": { "type": "string", "enum": BARS.iter().map(|b| b.0).collect::<Vec<_>>() },
                "outside_rth": { "type": "boolean", "default": false,
                                 "description": "Include bars outside regular trading hours" },
            } }),
            output: table_schema(&[
                ("symbol", json!({ "type": "string" })),
                ("conid", json!({ "type": "integer" })),
                ("period", json!({ "type": "string" })),
                ("bar", json!({ "type": "string" })),
            ]),
            run: Run::Read(|c| Box::pin(history(c))),
        },
        Task {
            name: "scan_market",
            description: "Runs one of IBKR's market scans; the top rows as a table: rank, \
                          symbol, name, exchange, value (what `value` names: change in percent, \
                          volume or price), conid.",
            input: json!({ "type": "object", "required": ["scan"], "properties": {
                "scan": { "type": "string", "enum": SCANS.iter().map(|s| s.0).collect::<Vec<_>>() },
                "universe": { "type": "string", "enum": UNIVERSES.iter().map(|u| u.0).collect::<Vec<_>>(),
                              "default": "us_stocks" },
                "limit": { "type": "integer", "minimum": 1, "maximum": 50, "default": 10 },
                "min_price": { "type": "number", "minimum": 0 },
                "max_price": { "type": "number", "minimum": 0 },
            } }),
            output: table_schema(&[
                ("scan", json!({ "type": "string" })),
                ("value", json!({ "type": "string" })),
            ]),
            run: Run::Read(|c| Box::pin(scan(c))),
        },
        Task {
            name: "search_contracts",
            description: "Finds contracts by symbol (or company name with by_name), as a \
                          table: conid, symbol, name, exchange, sec_type, option_months, \
                          future_months.",
            input: json!({ "type": "object", "required": ["query"], "properties": {
                "query": { "type": "string", "minLength": 1, "maxLength": 40 },
                "by_name": { "type": "boolean", "default": false },
            } }),
            output: table_schema(&[]),
            run: Run::Read(|c| Box::pin(search(c))),
        },
    ]
}

/// A quote field's value as a number: `"189.10"`, `"C189.10"` (a close), `"1.25%"`, `"12.3M"`.
pub(super) fn field_number(v: &Value) -> Option<f64> {
    if let Some(x) = number(v) {
        return Some(x);
    }
    let s = v.as_str()?.trim();
    let (digits, scale) = match s.chars().last()? {
        '%' => (&s[..s.len() - 1], 1.0),
        'K' => (&s[..s.len() - 1], 1e3),
        'M' => (&s[..s.len() - 1], 1e6),
        'B' => (&s[..s.len() - 1], 1e9),
        _ => return None,
    };
    number(&Value::String(digits.to_string())).map(|x| x * scale)
}

/// Field 6509 in words.
fn data_status(v: Option<&Value>) -> &'static str {
    match v.and_then(Value::as_str).and_then(|s| s.chars().next()) {
        Some('R') => "live",
        Some('D') => "delayed",
        Some('Z') => "frozen",
        Some('Y') => "frozen_delayed",
        Some('N') => "none",
        _ => "unknown",
    }
}

/// One quote from a snapshot entry, with the named fields asked for.
pub(super) fn quote_row(
    label: &str,
    conid: i64,
    entry: Option<&Map<String, Value>>,
    names: &[&str],
) -> Value {
    let mut row = Map::new();
    row.insert("symbol".into(), json!(label));
    row.insert("conid".into(), json!(conid));
    row.insert(
        "data_status".into(),
        json!(data_status(entry.and_then(|e| e.get(quotes::AVAILABILITY)))),
    );
    for name in names {
        let Some((_, code)) = FIELDS.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let mut v = entry.and_then(|e| e.get(*code)).and_then(field_number);
        if *name == "volume" && v.is_none() {
            v = entry
                .and_then(|e| e.get(SHORT_VOLUME))
                .and_then(field_number);
        }
        row.insert(
            (*name).into(),
            v.map_or(Value::Null, |x| json!(super::round(x))),
        );
    }
    Value::Object(row)
}

async fn snapshot(c: &Ctx<'_>) -> Result<Answer, ToolError> {
    let inputs: Vec<&str> = c.args["symbols"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let names: Vec<&str> = match c.args.get("fields").and_then(Value::as_array) {
        Some(f) if !f.is_empty() => f.iter().filter_map(Value::as_str).collect(),
        _ => DEFAULT_FIELDS.to_vec(),
    };
    let mut resolved = Vec::new();
    let mut problems = Vec::new();
    for (i, s) in inputs.iter().enumerate() {
        match c.resolve(&format!("symbols[{i}]"), s).await {
            Ok(r) => resolved.push(r),
            Err(ToolError::Unresolved { problems: p, .. }) => problems.extend(p),
            Err(e) => return Err(e),
        }
    }
    if !problems.is_empty() {
        return Err(ToolError::Unresolved {
            tool: c.def.name.clone(),
            problems,
            usage: super::results::usage(c.def),
        });
    }
    let mut codes: Vec<&str> = names
        .iter()
        .filter_map(|n| FIELDS.iter().find(|(f, _)| f == n).map(|(_, code)| *code))
        .collect();
    if names.contains(&"volume") {
        codes.push(SHORT_VOLUME);
    }
    codes.push(quotes::AVAILABILITY);
    let mut conids: Vec<String> = resolved.iter().map(|r| r.conid.to_string()).collect();
    conids.dedup();
    let (entries, notes) = c.warm_snapshot(&conids, &codes).await?;
    let rows: Vec<Value> = resolved
        .iter()
        .map(|r| {
            let entry = entries
                .iter()
                .find(|e| quotes::conid_of(e).as_deref() == Some(r.conid.to_string().as_str()));
            quote_row(&r.label, r.conid, entry, &names)
        })
        .collect();
    let mut notes = notes;
    for (r, row) in resolved.iter().zip(&rows) {
        let missing: Vec<&str> = names
            .iter()
            .filter(|n| row.get(**n).is_none_or(Value::is_null))
            .copied()
            .collect();
        if !missing.is_empty() && missing.len() < names.len() {
            notes.push(format!(
                "{}: no value yet for {} (not sent by IBKR yet, or not available for this \
                 contract); ask again in a few seconds if needed.",
                r.label,
                missing.join(", ")
            ));
        }
    }
    let mut columns = vec!["symbol", "conid", "data_status"];
    columns.extend(names.iter().copied());
    Ok(Answer {
        value: table(&columns, &rows),
        notes,
    })
}

impl Ctx<'_> {
    /// Snapshot entries for `conids`, asked again while the gateway is still starting their
    /// subscriptions (its first answer has no values), within `--snapshot-wait`.
    pub(super) async fn warm_snapshot(
        &self,
        conids: &[String],
        codes: &[&str],
    ) -> Result<(Vec<Map<String, Value>>, Vec<String>), ToolError> {
        let joined = conids.join(",");
        let fields = codes.join(",");
        let wanted: Vec<String> = codes
            .iter()
            .filter(|c| **c != quotes::AVAILABILITY)
            .map(|c| c.to_string())
            .collect();
        let started = Instant::now();
        let mut pause = Duration::from_millis(150);
        let wait = self.server.state.snapshot_wait;
        loop {
            let entries = crate::ibkr::market::snapshot_once(self.client(), &joined, &fields)
                .await
                .map_err(|e| self.lookup(e))?;
            let reply = Value::Array(entries.iter().cloned().map(Value::Object).collect());
            let cold = quotes::cold(&reply, conids, &wanted);
            if let Some(session) = &self.server.state.session {
                for c in conids.iter().filter(|c| !cold.contains(c)) {
                    session.mark_warm(c);
                }
            }
            if cold.is_empty() {
                return Ok((entries, Vec::new()));
            }
            if started.elapsed() + pause > wait {
                let note = format!(
                    "No market values yet for conid {} after {:.1} s: the gateway is still \
                     starting the subscription, or there is no market data permission. Ask \
                     again in a few seconds.",
                    cold.join(", "),
                    started.elapsed().as_secs_f64()
                );
                return Ok((entries, vec![note]));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

async fn history(c: &Ctx<'_>) -> Result<Answer, ToolError> {
    let symbol = c.str_arg("symbol").unwrap_or_default();
    let period = c.str_arg("period").unwrap_or_default();
    let bar = c.str_arg("bar").unwrap_or_default();
    let (_, ibkr_bar, bar_secs) = BARS
        .iter()
        .find(|b| b.0 == bar)
        .copied()
        .ok_or_else(|| c.invalid(format!("`bar`: {bar:?} is not a bar size")))?;
    let period_secs = PERIODS
        .iter()
        .find(|p| p.0 == period)
        .map(|p| p.1)
        .ok_or_else(|| c.invalid(format!("`period`: {period:?} is not a period")))?;
    if bar_secs > period_secs {
        return Err(c.invalid(format!(
            "`bar`: a {bar} bar is longer than the period {period}; choose a smaller bar or a \
             longer period"
        )));
    }
    let r = c.resolve("symbol", symbol).await?;
    let mut args = json!({ "conid": r.conid.to_string(), "period": period, "bar": ibkr_bar });
    if c.args.get("outside_rth") == Some(&Value::Bool(true)) {
        args["outsideRth"] = json!(true);
    }
    let v = c
        .fetch(format!("history of {}", r.label), ops::HISTORY, args)
        .await?;
    let volume_factor = v
        .get("volumeFactor")
        .and_then(number)
        .filter(|f| *f > 0.0)
        .unwrap_or(1.0);
    let bars: Vec<Value> = v
        .get("data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|b| {
            let time = iso_ms(b.get("t").and_then(number)? as i64)?;
            let f = |k: &str| {
                b.get(k)
                    .and_then(number)
                    .map_or(Value::Null, |x| json!(super::round(x)))
            };
            let volume = b
                .get("v")
                .and_then(number)
                .map_or(Value::Null, |x| json!(super::round(x * volume_factor)));
            Some(json!([time, f("o"), f("h"), f("l"), f("c"), volume]))
        })
        .collect();
    let mut notes = Vec::new();
    if bars.is_empty() {
        notes.push(format!(
            "IBKR returned no bars for {} over {period}; the market may have been closed for \
             the whole period, or there is no market data permission.",
            r.label
        ));
    }
    Ok(Answer {
        value: json!({
            "symbol": r.label, "conid": r.conid, "period": period, "bar": bar,
            "columns": BAR_COLUMNS, "rows": bars,
        }),
        notes,
    })
}

async fn scan(c: &Ctx<'_>) -> Result<Answer, ToolError> {
    let name = c.str_arg("scan").unwrap_or_default();
    let (_, code, value) = SCANS
        .iter()
        .find(|s| s.0 == name)
        .copied()
        .ok_or_else(|| c.invalid(format!("`scan`: {name:?} is not a scan")))?;
    let universe = c.str_arg("universe").unwrap_or("us_stocks");
    let (_, instrument, location) = UNIVERSES
        .iter()
        .find(|u| u.0 == universe)
        .copied()
        .ok_or_else(|| c.invalid(format!("`universe`: {universe:?} is not a universe")))?;
    let price = |k: &str| c.args.get(k).and_then(Value::as_f64);
    if let (Some(lo), Some(hi)) = (price("min_price"), price("max_price"))
        && lo > hi
    {
        return Err(c.invalid(format!(
            "`min_price` ({lo}) is above `max_price` ({hi}); nothing can match"
        )));
    }
    let mut filter = Vec::new();
    if let Some(p) = price("min_price") {
        filter.push(json!({ "code": "priceAbove", "value": p }));
    }
    if let Some(p) = price("max_price") {
        filter.push(json!({ "code": "priceBelow", "value": p }));
    }
    let limit = c.count_arg("limit", 10, 50);
    let v = c
        .fetch(
            format!("the {name} scan"),
            ops::SCANNER_RUN,
            json!({ "body": { "instrument": instrument, "type": code, "location": location,
                          "filter": filter } }),
        )
        .await?;
    let rows: Vec<Value> = v
        .get("contracts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .take(limit)
        .enumerate()
        .map(|(i, r)| {
            json!({
                "rank": i + 1,
                "symbol": text(r.get("symbol")),
                "conid": r.get("con_id").or_else(|| r.get("conid")).and_then(number).map(|x| x as i64),
                "name": text(r.get("company_name")),
                "exchange": text(r.get("listing_exchange")),
                "value": r.get("scan_data").and_then(field_number)
                    .map_or(Value::Null, |x| json!(super::round(x))),
            })
        })
        .collect();
    let mut notes = Vec::new();
    if rows.is_empty() {
        notes.push(format!(
            "The {name} scan found nothing in {universe} with these filters."
        ));
    }
    Ok(Answer {
        value: {
            let mut t = table(
                &["rank", "symbol", "name", "exchange", "value", "conid"],
                &rows,
            );
            t["scan"] = json!(name);
            t["value"] = json!(value);
            t
        },
        notes,
    })
}

async fn search(c: &Ctx<'_>) -> Result<Answer, ToolError> {
    let query = c.str_arg("query").unwrap_or_default().trim();
    if !query
        .chars()
        .all(|ch| ch.is_alphanumeric() || " .&-'/".contains(ch))
        || query.contains("..")
        || query.is_empty()
    {
        return Err(c.invalid(
            "`query`: letters, digits, spaces and . & - ' / only (a symbol or a company name)",
        ));
    }
    let by_name = c.args.get("by_name") == Some(&Value::Bool(true));
    let mut args = json!({ "symbol": query });
    if by_name {
        args["name"] = json!(true);
    }
    let v = c
        .fetch(format!("searching for {query}"), ops::SECDEF_SEARCH, args)
        .await?;
    let all: Vec<Value> = v.as_array().cloned().unwrap_or_default();
    let rows: Vec<Value> = all.iter().take(MAX_FOUND).map(search_row).collect();
    let mut notes = Vec::new();
    if all.len() > MAX_FOUND {
        notes.push(format!(
            "{MAX_FOUND} of {} matches shown; search for something more specific.",
            all.len()
        ));
    }
    if rows.is_empty() {
        notes.push(format!(
            "Nothing matches {query:?}{}.",
            if by_name {
                ""
            } else {
                "; try by_name for a company name"
            }
        ));
    }
    Ok(Answer {
        value: table(
            &[
                "conid",
                "symbol",
                "name",
                "exchange",
                "sec_type",
                "option_months",
                "future_months",
            ],
            &rows,
        ),
        notes,
    })
}

/// One result of `/iserver/secdef/search`.
fn search_row(v: &Value) -> Value {
    let first = v
        .get("sections")
        .and_then(Value::as_array)
        .and_then(|s| s.first());
    let months = |t: &str| section_months(v, t).unwrap_or_default();
    json!({
        "conid": v.get("conid").and_then(number).map_or(0, |c| c as i64),
        "symbol": text(v.get("symbol")),
        "name": text(v.get("companyName")),
        "exchange": text(v.get("description")),
        "sec_type": text(first.and_then(|s| s.get("secType"))),
        "option_months": months("OPT"),
        "future_months": months("FUT"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_fields_become_numbers() {
        assert_eq!(field_number(&json!("1.25%")), Some(1.25));
        assert_eq!(field_number(&json!("-0.40%")), Some(-0.4));
        assert_eq!(field_number(&json!("12.3M")), Some(12_300_000.0));
        assert_eq!(field_number(&json!("C189.10")), Some(189.1));
        assert_eq!(field_number(&json!("")), None);
        let e = json!({"conid": 1, "31": "C189.10", "83": "1.5%", "87": "2.5K", "6509": "DPB"});
        let row = quote_row(
            "AAPL",
            1,
            e.as_object(),
            &["last", "change_pct", "volume", "bid"],
        );
        assert_eq!(row["last"], 189.1);
        assert_eq!(row["change_pct"], 1.5);
        assert_eq!(row["volume"], 2500.0);
        assert_eq!(row["bid"], Value::Null);
        assert_eq!(row["data_status"], "delayed");
    }

    #[test]
    fn a_search_row_lists_derivative_months() {
        let r = search_row(&json!({
            "conid": "756733", "symbol": "SPY", "companyName": "SPDR S&P 500 ETF TRUST",
            "description": "ARCA",
            "sections": [{"secType": "STK"}, {"secType": "OPT", "months": "APR26;MAY26"}],
        }));
        assert_eq!(r["conid"], 756733);
        assert_eq!(r["sec_type"], "STK");
        assert_eq!(r["option_months"], json!(["APR26", "MAY26"]));
        assert_eq!(r["future_months"], json!([]));
    }

    #[test]
    fn every_bar_and_period_is_one_ibkr_accepts() {
        for (_, ibkr, _) in BARS {
            assert!(
                [
                    "1min", "5min", "15min", "30min", "1h", "4h", "1d", "1w", "1m"
                ]
                .contains(ibkr)
            );
        }
        assert!(PERIODS.iter().all(|(p, s)| !p.is_empty() && *s > 0));
    }
}
