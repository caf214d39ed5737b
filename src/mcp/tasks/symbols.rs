//! From what a person writes to a conid: `AAPL`, `SPY@ARCA`, `265598`, `ES Mar27`,
//! `AAPL 2027-01-15 200 C`. Resolved through IBKR's own search (the same requests as the
//! generated `search_secdef`, `get_futures_by_symbol` and `get_secdef_info` tools) and kept in
//! a cache, so a symbol costs its lookups once.
//!
//! A symbol listed on several exchanges resolves to its one US stock listing when there is
//! exactly one; otherwise the answer is an error that lists the candidates and how to name one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate};
use serde_json::{Value, json};

use super::Ctx;
use crate::error::ToolError;
use crate::ibkr::gateway::ops;
use crate::ibkr::market::number;

/// How long a resolution is reused. Conids do not change; a day bounds what a delisting or a
/// new listing can leave stale.
const TTL: Duration = Duration::from_secs(24 * 3600);
/// Most resolutions kept.
const CAPACITY: usize = 4096;

/// Exchanges where a symbol's US stock listing is.
const US_EXCHANGES: &[&str] = &[
    "NASDAQ",
    "NYSE",
    "ARCA",
    "AMEX",
    "BATS",
    "NYSEARCA",
    "NASDAQ.NMS",
    "IEX",
    "PINK",
];

/// A contract a symbol stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// IBKR's contract id.
    pub conid: i64,
    /// How the model named it (normalized): `AAPL`, `ES MAR27`, `AAPL 2027-01-15 200 C`.
    pub label: String,
    /// Underlying symbol.
    pub symbol: String,
    /// `STK`, `FUT`, `OPT`, `IND`, ...
    pub sec_type: String,
    /// Listing exchange or description, when IBKR says.
    pub exchange: Option<String>,
    /// Option months, when the contract was found by a search (which lists them).
    pub option_months: Option<Vec<String>>,
}

/// Resolutions of this server, shared by its sessions.
#[derive(Debug, Default)]
pub(crate) struct SymbolCache {
    map: Mutex<HashMap<String, (Instant, Resolved)>>,
}

impl SymbolCache {
    fn get(&self, key: &str) -> Option<Resolved> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, r)| r.clone())
    }

    fn put(&self, key: String, r: &Resolved) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CAPACITY {
            map.retain(|_, (at, _)| at.elapsed() < TTL);
            if map.len() >= CAPACITY {
                map.clear();
            }
        }
        map.insert(key, (Instant::now(), r.clone()));
    }
}

/// What the model wrote, parsed.
#[derive(Debug, Clone, PartialEq)]
enum Spec {
    Conid(i64),
    Stock {
        symbol: String,
        exchange: Option<String>,
    },
    Future {
        symbol: String,
        year: i32,
        month: u32,
    },
    Option {
        underlying: String,
        expiry: NaiveDate,
        strike: f64,
        right: char,
    },
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// How to write a symbol, for error messages.
pub const FORMS: &str = "a symbol (AAPL, BRK B, SPY@ARCA for one exchange; a numeric ticker with \
                         its exchange, 7203@TSEJ), a conid (265598), a future as SYMBOL MonYY (ES \
                         Mar27) or an option as SYMBOL YYYY-MM-DD STRIKE C|P (AAPL 2027-01-15 \
                         200 C)";

fn valid_symbol(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 20
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '/' | ' '))
}

/// `MAR27`, `2027-03` or `202703` as (year, month).
fn month_year(s: &str) -> Option<(i32, u32)> {
    if !s.is_ascii() {
        return None;
    }
    if s.len() == 5 {
        let m = MONTHS.iter().position(|m| *m == &s[..3])? as u32 + 1;
        let y: i32 = s[3..].parse().ok()?;
        return Some((2000 + y, m));
    }
    let digits: String = s.chars().filter(|c| *c != '-').collect();
    if digits.len() == 6 && digits.chars().all(|c| c.is_ascii_digit()) {
        let y: i32 = digits[..4].parse().ok()?;
        let m: u32 = digits[4..].parse().ok()?;
        return (1..=12).contains(&m).then_some((y, m));
    }
    None
}

fn parse(input: &str) -> Result<Spec, String> {
    let s = input.trim().to_ascii_uppercase();
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.is_empty() {
        return Err(format!("empty; write {FORMS}"));
    }
    if s.chars().all(|c| c.is_ascii_digit()) {
        return s
            .parse::<i64>()
            .ok()
            .filter(|c| *c > 0)
            .map(Spec::Conid)
            .ok_or_else(|| format!("`{input}` is not a conid"));
    }
    let parts: Vec<&str> = s.split(' ').collect();
    if parts.len() == 4 {
        let expiry = NaiveDate::parse_from_str(parts[1], "%Y-%m-%d")
            .or_else(|_| NaiveDate::parse_from_str(parts[1], "%Y%m%d"))
            .map_err(|_| {
                format!(
                    "`{input}`: `{}` is not an expiry date (YYYY-MM-DD)",
                    parts[1]
                )
            })?;
        let strike = parts[2]
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| format!("`{input}`: `{}` is not a strike price", parts[2]))?;
        let right = match parts[3] {
            "C" | "CALL" => 'C',
            "P" | "PUT" => 'P',
            other => return Err(format!("`{input}`: `{other}` is not C or P")),
        };
        if !valid_symbol(parts[0]) {
            return Err(format!("`{input}`: `{}` is not a symbol", parts[0]));
        }
        return Ok(Spec::Option {
            underlying: parts[0].into(),
            expiry,
            strike,
            right,
        });
    }
    if parts.len() == 2
        && let Some((year, month)) = month_year(parts[1])
    {
        if !valid_symbol(parts[0]) {
            return Err(format!("`{input}`: `{}` is not a symbol", parts[0]));
        }
        return Ok(Spec::Future {
            symbol: parts[0].into(),
            year,
            month,
        });
    }
    let (symbol, exchange) = match s.split_once('@') {
        Some((sym, ex)) => (sym.trim().to_string(), Some(ex.trim().to_string())),
        None => (s.clone(), None),
    };
    if !valid_symbol(&symbol) || exchange.as_deref().is_some_and(|e| !valid_symbol(e)) {
        return Err(format!("`{input}` is not {FORMS}"));
    }
    Ok(Spec::Stock { symbol, exchange })
}

/// The months a secdef search listing offers for `sec_type` (`OPT`, `FUT`), upper case, or
/// `None` when it has no such section.
pub(crate) fn section_months(listing: &Value, sec_type: &str) -> Option<Vec<String>> {
    let section = section(listing, sec_type)?;
    Some(
        section
            .get("months")
            .and_then(Value::as_str)
            .unwrap_or("")
            .split(';')
            .map(|m| m.trim().to_ascii_uppercase())
            .filter(|m| !m.is_empty())
            .collect(),
    )
}

/// The first exchange the listing's `sec_type` section names.
fn section_exchange(listing: &Value, sec_type: &str) -> Option<String> {
    section(listing, sec_type)?
        .get("exchange")
        .and_then(Value::as_str)
        .and_then(|e| e.split(';').map(str::trim).find(|e| !e.is_empty()))
        .map(str::to_owned)
}

fn section<'a>(listing: &'a Value, sec_type: &str) -> Option<&'a Value> {
    listing
        .get("sections")
        .and_then(Value::as_array)?
        .iter()
        .find(|s| s.get("secType").and_then(Value::as_str) == Some(sec_type))
}

/// `ES` and `MAR27` as people write a future: `ES Mar27`.
pub(crate) fn future_name(symbol: &str, month: &str) -> String {
    let mut m = month.to_ascii_lowercase();
    if let Some(first) = m.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    format!("{symbol} {m}")
}

impl From<ToolError> for Failure {
    fn from(e: ToolError) -> Self {
        Failure::Call(e)
    }
}

/// Why a symbol did not resolve.
pub(crate) enum Failure {
    /// The model can fix it (unknown, ambiguous, malformed): one line naming what to do.
    Fix(String),
    /// A request failed.
    Call(ToolError),
}

impl Ctx<'_> {
    /// Resolves `input` (field `field`, for messages) to a contract.
    pub(crate) async fn resolve(&self, field: &str, input: &str) -> Result<Resolved, ToolError> {
        self.resolve_inner(input)
            .await
            .map_err(|f| self.failed(field, f))
    }

    /// The error for a lookup about argument `field` that did not succeed.
    pub(crate) fn failed(&self, field: &str, f: Failure) -> ToolError {
        match f {
            Failure::Fix(why) => self.unresolved(format!("`{field}`: {why}")),
            Failure::Call(e) => e,
        }
    }

    async fn resolve_inner(&self, input: &str) -> Result<Resolved, Failure> {
        let spec = parse(input).map_err(Failure::Fix)?;
        let key = format!("{spec:?}");
        let cache = &self.server.state.tasks.symbols;
        if let Some(r) = cache.get(&key) {
            return Ok(r);
        }
        let r = match spec {
            Spec::Conid(c) => self.by_conid(c).await?,
            Spec::Stock { symbol, exchange } => self.stock(&symbol, exchange.as_deref()).await?,
            Spec::Future {
                symbol,
                year,
                month,
            } => self.future(&symbol, year, month).await?,
            Spec::Option {
                underlying,
                expiry,
                strike,
                right,
            } => self.option(&underlying, expiry, strike, right).await?,
        };
        cache.put(key, &r);
        Ok(r)
    }

    async fn by_conid(&self, conid: i64) -> Result<Resolved, Failure> {
        match crate::ibkr::market::contract_facts(self.client(), conid).await {
            Ok(f) => Ok(Resolved {
                conid,
                label: f.symbol.clone().unwrap_or_else(|| conid.to_string()),
                symbol: f.symbol.unwrap_or_default(),
                sec_type: f.sec_type.unwrap_or_default(),
                exchange: None,
                option_months: None,
            }),
            // Only "bad request" / "not found" mean no such contract; a 429 or 403 does not.
            Err(e) if matches!(e.status(), Some(400 | 404)) => Err(Failure::Fix(format!(
                "IBKR knows no contract with conid {conid}"
            ))),
            Err(e) => Err(Failure::Call(self.lookup(e))),
        }
    }

    async fn stock(&self, symbol: &str, exchange: Option<&str>) -> Result<Resolved, Failure> {
        let found = self
            .fetch(
                format!("searching for {symbol}"),
                ops::SECDEF_SEARCH,
                json!({ "symbol": symbol }),
            )
            .await?;
        let all: Vec<Listing> = found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Listing::from_search)
            .filter(|l| l.symbol.eq_ignore_ascii_case(symbol))
            .collect();
        if all.is_empty() {
            return Err(Failure::Fix(format!(
                "IBKR has no contract with symbol {symbol}; search_contracts finds symbols by \
                 name"
            )));
        }
        let pick: Vec<&Listing> = match exchange {
            Some(ex) => all
                .iter()
                .filter(|l| l.exchange.eq_ignore_ascii_case(ex))
                .collect(),
            None => {
                let us: Vec<&Listing> = all
                    .iter()
                    .filter(|l| l.sec_type == "STK" && US_EXCHANGES.contains(&l.exchange.as_str()))
                    .collect();
                if us.len() == 1 {
                    us
                } else {
                    all.iter().collect()
                }
            }
        };
        match pick.as_slice() {
            [one] => Ok(Resolved {
                conid: one.conid,
                label: symbol.to_string(),
                symbol: symbol.to_string(),
                sec_type: one.sec_type.clone(),
                exchange: Some(one.exchange.clone()).filter(|e| !e.is_empty()),
                option_months: Some(one.option_months.clone()),
            }),
            _ => {
                let list: Vec<String> = all.iter().take(10).map(Listing::describe).collect();
                let what = match exchange {
                    Some(ex) => format!("{symbol} is not listed on {ex}"),
                    None => format!("{symbol} matches {} listings", all.len()),
                };
                Err(Failure::Fix(format!(
                    "{what}: {}. Name one as {symbol}@EXCHANGE or by its conid",
                    list.join("; ")
                )))
            }
        }
    }

    /// The futures months IBKR lists for a root symbol (`DEC26`, `MAR27`: contract months, not
    /// expiry months: a CL Jan27 contract expires in December), the underlying's conid and
    /// the exchange to ask.
    pub(crate) async fn futures_months(
        &self,
        symbol: &str,
    ) -> Result<(i64, Vec<String>, Option<String>), Failure> {
        let found = self
            .fetch(
                format!("futures months of {symbol}"),
                ops::SECDEF_SEARCH,
                json!({ "symbol": symbol }),
            )
            .await?;
        for listing in found.as_array().into_iter().flatten() {
            let same = listing
                .get("symbol")
                .and_then(Value::as_str)
                .is_some_and(|s| s.eq_ignore_ascii_case(symbol));
            let Some(conid) = listing.get("conid").and_then(number) else {
                continue;
            };
            if same && let Some(months) = section_months(listing, "FUT") {
                return Ok((conid as i64, months, section_exchange(listing, "FUT")));
            }
        }
        Err(Failure::Fix(format!(
            "IBKR lists no futures with symbol {symbol}; search_contracts shows which \
             contracts have futures months"
        )))
    }

    /// The derivatives of `underlying` (`secdef/info`) of type `sectype` (`OPT`, `FUT`) in
    /// contract month `month` (`MAR27`), at `strike` and `right` for options: (conid, YYYYMMDD
    /// maturity) each.
    pub(crate) async fn derivatives(
        &self,
        underlying: i64,
        sectype: &str,
        month: &str,
        option: Option<(f64, char)>,
        exchange: Option<&str>,
    ) -> Result<Vec<(i64, String)>, ToolError> {
        let mut args =
            json!({ "conid": underlying.to_string(), "sectype": sectype, "month": month });
        let mut what = format!("{sectype} {month}");
        if let Some((strike, right)) = option {
            let strike = crate::ibkr::market::plain_number(strike);
            what = format!("{what} {strike} {right}");
            args["strike"] = json!(strike);
            args["right"] = json!(right.to_string());
        }
        if let Some(e) = exchange {
            args["exchange"] = json!(e);
        }
        let found = self.fetch(what, ops::SECDEF_INFO, args).await?;
        Ok(found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some((
                    c.get("conid").and_then(number)? as i64,
                    c.get("maturityDate")?.as_str()?.to_string(),
                ))
            })
            .collect())
    }

    async fn future(&self, symbol: &str, year: i32, month: u32) -> Result<Resolved, Failure> {
        let wanted = format!("{}{:02}", MONTHS[month as usize - 1], year % 100);
        let label = format!("{symbol} {wanted}");
        let (underlying, months, exchange) = self.futures_months(symbol).await?;
        if !months.contains(&wanted) {
            let listed: Vec<String> = months.iter().map(|m| future_name(symbol, m)).collect();
            return Err(Failure::Fix(format!(
                "no {} future; listed: {}",
                future_name(symbol, &wanted),
                listed.join(", ")
            )));
        }
        let found = self
            .derivatives(underlying, "FUT", &wanted, None, exchange.as_deref())
            .await?;
        match found.as_slice() {
            [(conid, _)] => Ok(Resolved {
                conid: *conid,
                label,
                symbol: symbol.to_string(),
                sec_type: "FUT".into(),
                exchange,
                option_months: None,
            }),
            [] => Err(Failure::Fix(format!(
                "IBKR lists {label} but returned no contract for it; name it by conid \
                 (search_futures)"
            ))),
            many => {
                let list: Vec<String> = many
                    .iter()
                    .map(|(c, d)| format!("conid {c} expiring {d}"))
                    .collect();
                Err(Failure::Fix(format!(
                    "{label} matches {} contracts: {}. Name one by its conid",
                    many.len(),
                    list.join("; ")
                )))
            }
        }
    }

    async fn option(
        &self,
        underlying: &str,
        expiry: NaiveDate,
        strike: f64,
        right: char,
    ) -> Result<Resolved, Failure> {
        let und = Box::pin(self.resolve_inner(underlying)).await?;
        let month = format!(
            "{}{:02}",
            MONTHS[expiry.month0() as usize],
            expiry.year() % 100
        );
        let strike_text = crate::ibkr::market::plain_number(strike);
        let label = format!(
            "{underlying} {} {strike_text} {right}",
            expiry.format("%Y-%m-%d")
        );
        let listed = self
            .derivatives(und.conid, "OPT", &month, Some((strike, right)), None)
            .await?;
        let want = expiry.format("%Y%m%d").to_string();
        match listed.iter().find(|(_, d)| *d == want) {
            Some((conid, _)) => Ok(Resolved {
                conid: *conid,
                label,
                symbol: underlying.to_string(),
                sec_type: "OPT".into(),
                exchange: None,
                option_months: None,
            }),
            None if listed.is_empty() => Err(Failure::Fix(format!(
                "no {underlying} {month} option at strike {strike_text} {right}; \
                 get_option_parameters lists the expiries and strikes"
            ))),
            None => {
                let mut dates: Vec<&str> = listed.iter().map(|(_, d)| d.as_str()).collect();
                dates.sort_unstable();
                dates.dedup();
                Err(Failure::Fix(format!(
                    "no {label}; that strike expires in {month} on {}",
                    dates.join(", ")
                )))
            }
        }
    }
}

/// One listing of a secdef search.
struct Listing {
    conid: i64,
    option_months: Vec<String>,
    symbol: String,
    name: String,
    exchange: String,
    sec_type: String,
}

impl Listing {
    fn from_search(v: &Value) -> Option<Self> {
        let conid = v.get("conid").and_then(number)? as i64;
        let sec_type = v
            .get("sections")
            .and_then(Value::as_array)
            .and_then(|s| s.first())
            .and_then(|s| s.get("secType"))
            .and_then(Value::as_str)
            .unwrap_or("STK")
            .to_string();
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        Some(Self {
            conid,
            option_months: section_months(v, "OPT").unwrap_or_default(),
            symbol: s("symbol"),
            name: s("companyName"),
            exchange: s("description"),
            sec_type,
        })
    }

    fn describe(&self) -> String {
        format!(
            "{}@{} ({} {}, conid {})",
            self.symbol, self.exchange, self.name, self.sec_type, self.conid
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_person_writes_is_parsed() {
        assert_eq!(parse(" 265598 "), Ok(Spec::Conid(265598)));
        assert_eq!(
            parse("aapl"),
            Ok(Spec::Stock {
                symbol: "AAPL".into(),
                exchange: None
            })
        );
        assert_eq!(
            parse("BRK B"),
            Ok(Spec::Stock {
                symbol: "BRK B".into(),
                exchange: None
            })
        );
        assert_eq!(
            parse("spy@arca"),
            Ok(Spec::Stock {
                symbol: "SPY".into(),
                exchange: Some("ARCA".into())
            })
        );
        assert_eq!(
            parse("7203@tsej"),
            Ok(Spec::Stock {
                symbol: "7203".into(),
                exchange: Some("TSEJ".into())
            })
        );
        assert_eq!(
            parse("ES Mar27"),
            Ok(Spec::Future {
                symbol: "ES".into(),
                year: 2027,
                month: 3
            })
        );
        assert_eq!(
            parse("ES 2027-03"),
            Ok(Spec::Future {
                symbol: "ES".into(),
                year: 2027,
                month: 3
            })
        );
        assert_eq!(
            parse("AAPL 2027-01-15 200 C"),
            Ok(Spec::Option {
                underlying: "AAPL".into(),
                expiry: NaiveDate::from_ymd_opt(2027, 1, 15).unwrap(),
                strike: 200.0,
                right: 'C'
            })
        );
    }

    #[test]
    fn hostile_or_malformed_input_is_refused_with_the_forms() {
        for bad in [
            "",
            "../logout",
            "AAPL/../../x?y",
            "BRK/../logout",
            "AAPL&conid=1",
            "0",
            "A 2027-13-40 1 C",
            "AAPL 2027-01-15 -5 C",
            "AAPL 2027-01-15 200 X",
            "ES A€1",
            "ES ÉÉ1",
            "ÄAPL",
            "AAPL 2027-01-15 2€0 C",
        ] {
            let e = parse(bad);
            assert!(e.is_err(), "{bad}: {e:?}");
        }
        assert!(
            parse("AAPL;DROP")
                .unwrap_err()
                .contains("AAPL 2027-01-15 200 C")
        );
    }

    #[test]
    fn listings_come_from_the_search_reply() {
        let l = Listing::from_search(&json!({
            "conid": "756733", "symbol": "SPY", "companyName": "SPDR S&P 500 ETF TRUST",
            "description": "ARCA", "sections": [{"secType": "STK"}]
        }))
        .unwrap();
        assert_eq!(l.conid, 756733);
        assert_eq!(future_name("CL", "JAN27"), "CL Jan27");
        assert_eq!(
            l.describe(),
            "SPY@ARCA (SPDR S&P 500 ETF TRUST STK, conid 756733)"
        );
    }
}
