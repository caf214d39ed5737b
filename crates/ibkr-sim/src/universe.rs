//! The contract universe: the instruments the simulator knows, with their static reference
//! data (symbol, name, exchange, currency, multiplier, tick size, sector) and how each one is
//! priced (its own random walk, or derived from an underlying).
//!
//! US stocks and ETFs use their real, well-known IBKR conids. Futures and option conids are
//! made up by formula from symbol, expiry and strike (stable for a given day). Expiries are
//! computed from today's date: the next two quarterly ES expiries and the next three monthly
//! option expiries. The universe never changes after start; prices live in `market`.

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate, Weekday};

/// Asset class of a contract, as IBKR spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SecType {
    Stk,
    Opt,
    Fut,
    Cash,
    Ind,
    /// A combo (spread) order's stand-in contract; never part of the universe.
    Bag,
}

impl SecType {
    /// IBKR's code: `STK`, `OPT`, `FUT`, `CASH`, `IND`, `BAG`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SecType::Stk => "STK",
            SecType::Opt => "OPT",
            SecType::Fut => "FUT",
            SecType::Cash => "CASH",
            SecType::Ind => "IND",
            SecType::Bag => "BAG",
        }
    }
}

/// How a contract's price is produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Pricing {
    /// Its own seeded random walk around `base`, with per-step volatility `vol`.
    Walk { base: f64, vol: f64 },
    /// Black-Scholes from the underlying's price with this annual implied volatility.
    Option { underlying: i64, iv: f64 },
    /// The underlying's price plus a fixed carry.
    Future { underlying: i64, carry: f64 },
}

/// One instrument with its reference data.
#[derive(Debug, Clone)]
pub(crate) struct Contract {
    pub conid: i64,
    pub symbol: String,
    pub local_symbol: String,
    pub sec_type: SecType,
    pub name: String,
    /// Primary listing exchange as shown in contract details (`NASDAQ`, `NYSE`, `ARCA`, `CME`).
    pub listing_exchange: String,
    /// Exchange as shown in order descriptions (`NASDAQ.NMS`, `NYSE`, `ARCA`).
    pub order_exchange: String,
    pub trading_class: String,
    pub currency: String,
    /// `COMMON`, `ETF`, `FUT`, `OPT`, `CASH` or `IND`.
    pub kind: &'static str,
    pub sector: Option<String>,
    pub group: Option<String>,
    pub multiplier: f64,
    pub tick: f64,
    pub underlying: Option<i64>,
    pub expiry: Option<NaiveDate>,
    pub strike: f64,
    pub right: Option<char>,
    pub pricing: Pricing,
    pub valid_exchanges: String,
    pub has_options: bool,
}

impl Contract {
    /// `true` for contracts that trade (not indices).
    pub(crate) fn tradable(&self) -> bool {
        self.sec_type != SecType::Ind
    }

    /// Description used in order texts, e.g. `AAPL NASDAQ.NMS` or `ES DEC'26 CME`.
    pub(crate) fn order_text(&self) -> String {
        match self.sec_type {
            SecType::Fut => format!(
                "{} {} {}",
                self.symbol,
                month_label(self.expiry),
                self.order_exchange
            ),
            SecType::Opt => format!(
                "{} {} {} {} {}",
                self.symbol,
                month_label(self.expiry),
                fmt_strike(self.strike),
                if self.right == Some('C') {
                    "Call"
                } else {
                    "Put"
                },
                self.order_exchange
            ),
            _ => format!("{} {}", self.local_symbol, self.order_exchange),
        }
    }

    /// Short description (`contractDesc`), e.g. `AAPL`, `ES DEC2026`, `AAPL JAN2027 230 C`.
    pub(crate) fn description(&self) -> String {
        match self.sec_type {
            SecType::Fut => format!("{} {}", self.symbol, month_year(self.expiry)),
            SecType::Opt => format!(
                "{} {} {} {}",
                self.symbol,
                month_year(self.expiry),
                fmt_strike(self.strike),
                self.right.unwrap_or('C')
            ),
            _ => self.local_symbol.clone(),
        }
    }
}

/// `230` for whole strikes, `232.5` otherwise.
pub(crate) fn fmt_strike(strike: f64) -> String {
    if strike.fract() == 0.0 {
        format!("{strike:.0}")
    } else {
        format!("{strike}")
    }
}

/// `DEC'26` style month label.
pub(crate) fn month_label(date: Option<NaiveDate>) -> String {
    date.map(|d| format!("{}'{:02}", month_code(d.month()), d.year() % 100))
        .unwrap_or_default()
}

/// `DEC2026` style month label.
pub(crate) fn month_year(date: Option<NaiveDate>) -> String {
    date.map(|d| format!("{}{}", month_code(d.month()), d.year()))
        .unwrap_or_default()
}

/// `DEC26` style month, as used by `/iserver/secdef/strikes` and `/secdef/info`.
pub(crate) fn month_param(date: NaiveDate) -> String {
    format!("{}{:02}", month_code(date.month()), date.year() % 100)
}

fn month_code(month: u32) -> &'static str {
    [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ][(month.clamp(1, 12) - 1) as usize]
}

/// Third Friday of a month.
pub(crate) fn third_friday(year: i32, month: u32) -> NaiveDate {
    let first = NaiveDate::from_ymd_opt(year, month, 1).expect("valid month");
    let offset =
        (Weekday::Fri.num_days_from_monday() + 7 - first.weekday().num_days_from_monday()) % 7;
    first + Duration::days(offset as i64 + 14)
}

fn next_month(year: i32, month: u32) -> (i32, u32) {
    if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    }
}

/// The next `count` monthly option expiries strictly after `today`.
pub(crate) fn option_expiries(today: NaiveDate, count: usize) -> Vec<NaiveDate> {
    let mut out = Vec::new();
    let (mut y, mut m) = (today.year(), today.month());
    while out.len() < count {
        let d = third_friday(y, m);
        if d > today {
            out.push(d);
        }
        (y, m) = next_month(y, m);
    }
    out
}

/// The next `count` quarterly (Mar/Jun/Sep/Dec) futures expiries strictly after `today`.
pub(crate) fn future_expiries(today: NaiveDate, count: usize) -> Vec<NaiveDate> {
    let mut out = Vec::new();
    let (mut y, mut m) = (today.year(), today.month());
    while out.len() < count {
        if m % 3 == 0 {
            let d = third_friday(y, m);
            if d > today {
                out.push(d);
            }
        }
        (y, m) = next_month(y, m);
    }
    out
}

/// Conid of the ES future expiring in `expiry`'s month.
pub(crate) fn future_conid(expiry: NaiveDate) -> i64 {
    620_000_000 + i64::from(expiry.year() % 100) * 100 + i64::from(expiry.month())
}

/// Conid of an option: stable for (underlying, expiry, strike, right).
pub(crate) fn option_conid(
    underlying_symbol: &str,
    expiry: NaiveDate,
    strike: f64,
    right: char,
) -> i64 {
    let base = match underlying_symbol {
        "AAPL" => 710_000_000,
        "MSFT" => 730_000_000,
        _ => 720_000_000,
    };
    let days = (expiry - NaiveDate::from_ymd_opt(2024, 1, 1).expect("valid date")).num_days();
    base + days * 4_000 + (strike * 2.0).round() as i64 * 2 + i64::from(right == 'P')
}

/// Strikes listed for an optionable underlying.
pub(crate) fn option_strikes(underlying_symbol: &str) -> Vec<f64> {
    // Thirteen strikes around each underlying's base price.
    let (lo, hi, step) = match underlying_symbol {
        "AAPL" => (200, 260, 5),
        "MSFT" => (390, 450, 5),
        _ => (550, 610, 5),
    };
    (lo..=hi).step_by(step).map(f64::from).collect()
}

const NASDAQ_VENUES: &str =
    "SMART,AMEX,NYSE,CBOE,PHLX,ISE,CHX,ARCA,NASDAQ,DRCTEDGE,BEX,BATS,EDGEA,BYX,IEX,EDGX,PEARL,MEMX";
const NYSE_VENUES: &str =
    "SMART,AMEX,NYSE,CBOE,PHLX,ISE,CHX,ARCA,NASDAQ,DRCTEDGE,BEX,BATS,EDGEA,BYX,IEX,EDGX,PEARL,MEMX";
const OPT_VENUES: &str = "SMART,AMEX,CBOE,PHLX,PSE,ISE,BOX,BATS,NASDAQOM,CBOE2,NASDAQBX,MIAX,GEMINI,EDGX,MERCURY,PEARL,EMERALD";

/// All contracts, by conid.
#[derive(Debug, Clone)]
pub(crate) struct Universe {
    pub contracts: BTreeMap<i64, Contract>,
    pub today: NaiveDate,
}

impl Universe {
    /// Builds the universe for `today`.
    pub(crate) fn new(today: NaiveDate) -> Self {
        let mut contracts = BTreeMap::new();
        let mut add = |c: Contract| {
            contracts.insert(c.conid, c);
        };
        // symbol, conid, name, listing exchange, kind, sector, group, base price, step vol
        type Row<'a> = (
            &'a str,
            i64,
            &'a str,
            &'a str,
            &'a str,
            &'a str,
            &'a str,
            f64,
            f64,
        );
        let stocks: [Row; 19] = [
            (
                "AAPL",
                265598,
                "APPLE INC",
                "NASDAQ",
                "COMMON",
                "Technology",
                "Computers",
                230.0,
                0.0009,
            ),
            (
                "MSFT",
                272093,
                "MICROSOFT CORP",
                "NASDAQ",
                "COMMON",
                "Technology",
                "Software",
                420.0,
                0.0008,
            ),
            (
                "IBM",
                8314,
                "INTL BUSINESS MACHINES CORP",
                "NYSE",
                "COMMON",
                "Technology",
                "Computers",
                240.0,
                0.0007,
            ),
            (
                "AMZN",
                3691937,
                "AMAZON.COM INC",
                "NASDAQ",
                "COMMON",
                "Communications",
                "Internet",
                200.0,
                0.0010,
            ),
            (
                "GOOGL",
                208813719,
                "ALPHABET INC-CL A",
                "NASDAQ",
                "COMMON",
                "Communications",
                "Internet",
                170.0,
                0.0009,
            ),
            (
                "META",
                107113386,
                "META PLATFORMS INC-CLASS A",
                "NASDAQ",
                "COMMON",
                "Communications",
                "Internet",
                580.0,
                0.0011,
            ),
            (
                "NVDA",
                4815747,
                "NVIDIA CORP",
                "NASDAQ",
                "COMMON",
                "Technology",
                "Semiconductors",
                130.0,
                0.0015,
            ),
            (
                "AMD",
                4391,
                "ADVANCED MICRO DEVICES",
                "NASDAQ",
                "COMMON",
                "Technology",
                "Semiconductors",
                140.0,
                0.0014,
            ),
            (
                "INTC",
                270639,
                "INTEL CORP",
                "NASDAQ",
                "COMMON",
                "Technology",
                "Semiconductors",
                22.0,
                0.0012,
            ),
            (
                "TSLA",
                76792991,
                "TESLA INC",
                "NASDAQ",
                "COMMON",
                "Consumer, Cyclical",
                "Auto Manufacturers",
                250.0,
                0.0018,
            ),
            (
                "NFLX",
                15124833,
                "NETFLIX INC",
                "NASDAQ",
                "COMMON",
                "Communications",
                "Internet",
                800.0,
                0.0012,
            ),
            (
                "JPM",
                1520593,
                "JPMORGAN CHASE & CO",
                "NYSE",
                "COMMON",
                "Financial",
                "Banks",
                230.0,
                0.0008,
            ),
            (
                "KO",
                8894,
                "COCA-COLA CO/THE",
                "NYSE",
                "COMMON",
                "Consumer, Non-cyclical",
                "Beverages",
                63.0,
                0.0005,
            ),
            (
                "SPY",
                756733,
                "SPDR S&P 500 ETF TRUST",
                "ARCA",
                "ETF",
                "",
                "",
                580.0,
                0.0006,
            ),
            (
                "QQQ",
                320227571,
                "INVESCO QQQ TRUST SERIES 1",
                "NASDAQ",
                "ETF",
                "",
                "",
                500.0,
                0.0007,
            ),
            (
                "VOO",
                136155102,
                "VANGUARD S&P 500 ETF",
                "ARCA",
                "ETF",
                "",
                "",
                530.0,
                0.0006,
            ),
            (
                "IWM",
                9579970,
                "ISHARES RUSSELL 2000 ETF",
                "ARCA",
                "ETF",
                "",
                "",
                220.0,
                0.0009,
            ),
            (
                "GLD",
                51529211,
                "SPDR GOLD SHARES",
                "ARCA",
                "ETF",
                "",
                "",
                240.0,
                0.0006,
            ),
            (
                "TLT",
                15547841,
                "ISHARES 20+ YEAR TREASURY BO",
                "NASDAQ",
                "ETF",
                "",
                "",
                92.0,
                0.0005,
            ),
        ];
        for (symbol, conid, name, exch, kind, sector, group, base, vol) in stocks {
            let order_exchange = if exch == "NASDAQ" { "NASDAQ.NMS" } else { exch };
            let venues = if exch == "NASDAQ" {
                NASDAQ_VENUES
            } else {
                NYSE_VENUES
            };
            add(Contract {
                conid,
                symbol: symbol.into(),
                local_symbol: symbol.into(),
                sec_type: SecType::Stk,
                name: name.into(),
                listing_exchange: exch.into(),
                order_exchange: order_exchange.into(),
                trading_class: if exch == "NASDAQ" && kind == "COMMON" {
                    "NMS".into()
                } else {
                    symbol.into()
                },
                currency: "USD".into(),
                kind,
                sector: (!sector.is_empty()).then(|| sector.into()),
                group: (!group.is_empty()).then(|| group.into()),
                multiplier: 1.0,
                tick: 0.01,
                underlying: None,
                expiry: None,
                strike: 0.0,
                right: None,
                pricing: Pricing::Walk { base, vol },
                valid_exchanges: venues.into(),
                has_options: true,
            });
        }
        // Indices: S&P 500 and the E-mini underlying.
        for (symbol, conid, name, exch, base) in [
            ("SPX", 416904, "S&P 500 Stock Index", "CBOE", 5830.0),
            ("ES", 11004968, "E-mini S&P 500", "CME", 5840.0),
        ] {
            add(Contract {
                conid,
                symbol: symbol.into(),
                local_symbol: symbol.into(),
                sec_type: SecType::Ind,
                name: name.into(),
                listing_exchange: exch.into(),
                order_exchange: exch.into(),
                trading_class: symbol.into(),
                currency: "USD".into(),
                kind: "IND",
                sector: None,
                group: None,
                multiplier: 1.0,
                tick: 0.01,
                underlying: None,
                expiry: None,
                strike: 0.0,
                right: None,
                pricing: Pricing::Walk { base, vol: 0.0006 },
                valid_exchanges: exch.into(),
                has_options: symbol == "SPX",
            });
        }
        // E-mini S&P 500 futures: the next two quarterly expiries.
        for (i, expiry) in future_expiries(today, 2).into_iter().enumerate() {
            let code = ["H", "M", "U", "Z"][((expiry.month() / 3) - 1) as usize];
            add(Contract {
                conid: future_conid(expiry),
                symbol: "ES".into(),
                local_symbol: format!("ES{code}{}", expiry.year() % 10),
                sec_type: SecType::Fut,
                name: "E-mini S&P 500".into(),
                listing_exchange: "CME".into(),
                order_exchange: "CME".into(),
                trading_class: "ES".into(),
                currency: "USD".into(),
                kind: "FUT",
                sector: None,
                group: None,
                multiplier: 50.0,
                tick: 0.25,
                underlying: Some(11004968),
                expiry: Some(expiry),
                strike: 0.0,
                right: None,
                pricing: Pricing::Future {
                    underlying: 11004968,
                    carry: 10.0 + 50.0 * i as f64,
                },
                valid_exchanges: "CME".into(),
                has_options: false,
            });
        }
        // FX pairs on IDEALPRO: symbol is the base currency, currency the quote currency.
        for (pair, conid, base, tick) in [
            ("EUR.USD", 12087792, 1.085, 0.00005),
            ("GBP.USD", 12087797, 1.27, 0.00005),
            ("USD.JPY", 15016059, 150.0, 0.005),
        ] {
            let (b, q) = pair.split_once('.').expect("pair has a dot");
            add(Contract {
                conid,
                symbol: b.into(),
                local_symbol: pair.into(),
                sec_type: SecType::Cash,
                name: format!("{b} {q}"),
                listing_exchange: "IDEALPRO".into(),
                order_exchange: "IDEALPRO".into(),
                trading_class: pair.into(),
                currency: q.into(),
                kind: "CASH",
                sector: None,
                group: None,
                multiplier: 1.0,
                tick,
                underlying: None,
                expiry: None,
                strike: 0.0,
                right: None,
                pricing: Pricing::Walk { base, vol: 0.0002 },
                valid_exchanges: "IDEALPRO".into(),
                has_options: false,
            });
        }
        // Option chains for AAPL, MSFT and SPY: three monthly expiries, 13 strikes, calls and
        // puts.
        for (und_symbol, und_conid, iv, und_exchange) in [
            ("AAPL", 265598_i64, 0.28, "NASDAQ"),
            ("MSFT", 272093_i64, 0.25, "NASDAQ"),
            ("SPY", 756733_i64, 0.17, "ARCA"),
        ] {
            for expiry in option_expiries(today, 3) {
                for strike in option_strikes(und_symbol) {
                    for right in ['C', 'P'] {
                        let conid = option_conid(und_symbol, expiry, strike, right);
                        add(Contract {
                            conid,
                            symbol: und_symbol.into(),
                            local_symbol: format!(
                                "{und_symbol:<6}{}{right}{:08}",
                                expiry.format("%y%m%d"),
                                (strike * 1000.0).round() as i64
                            ),
                            sec_type: SecType::Opt,
                            name: format!("{und_symbol} option"),
                            listing_exchange: und_exchange.into(),
                            order_exchange: "SMART".into(),
                            trading_class: und_symbol.into(),
                            currency: "USD".into(),
                            kind: "OPT",
                            sector: None,
                            group: None,
                            multiplier: 100.0,
                            tick: 0.01,
                            underlying: Some(und_conid),
                            expiry: Some(expiry),
                            strike,
                            right: Some(right),
                            pricing: Pricing::Option {
                                underlying: und_conid,
                                iv,
                            },
                            valid_exchanges: OPT_VENUES.into(),
                            has_options: false,
                        });
                    }
                }
            }
        }
        Self { contracts, today }
    }

    /// The contract with this conid.
    pub(crate) fn get(&self, conid: i64) -> Option<&Contract> {
        self.contracts.get(&conid)
    }

    /// Stocks, ETFs, indices and FX pairs (everything but derivatives).
    pub(crate) fn primaries(&self) -> impl Iterator<Item = &Contract> {
        self.contracts
            .values()
            .filter(|c| matches!(c.sec_type, SecType::Stk | SecType::Ind | SecType::Cash))
    }

    /// Derivatives (futures or options) whose underlying is `conid`.
    pub(crate) fn derivatives_of(
        &self,
        conid: i64,
        sec_type: SecType,
    ) -> impl Iterator<Item = &Contract> {
        self.contracts
            .values()
            .filter(move |c| c.underlying == Some(conid) && c.sec_type == sec_type)
    }

    /// Primary contracts whose symbol (or FX pair) matches `pattern`, or whose name contains it
    /// when `by_name` is set. Exact symbol matches come first.
    pub(crate) fn search(&self, pattern: &str, by_name: bool) -> Vec<&Contract> {
        let p = pattern.trim().to_ascii_uppercase();
        if p.is_empty() {
            return Vec::new();
        }
        let mut exact = Vec::new();
        let mut other = Vec::new();
        for c in self.primaries() {
            if c.symbol == p || c.local_symbol == p {
                exact.push(c);
            } else if (!by_name && (c.symbol.starts_with(&p) || c.local_symbol.starts_with(&p)))
                || (by_name && c.name.to_ascii_uppercase().contains(&p))
            {
                other.push(c);
            }
        }
        exact.extend(other);
        exact
    }

    /// The stock, ETF or index with this symbol.
    pub(crate) fn by_symbol(&self, symbol: &str) -> Option<&Contract> {
        let s = symbol.trim().to_ascii_uppercase();
        self.contracts
            .values()
            .find(|c| matches!(c.sec_type, SecType::Stk | SecType::Ind) && c.symbol == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn universe() -> Universe {
        Universe::new(NaiveDate::from_ymd_opt(2026, 12, 2).unwrap())
    }

    #[test]
    fn universe_has_at_least_twenty_primary_instruments() {
        assert!(universe().primaries().filter(|c| c.tradable()).count() >= 20);
    }

    #[test]
    fn third_friday_of_december_2026_is_the_18th() {
        assert_eq!(
            third_friday(2026, 12),
            NaiveDate::from_ymd_opt(2026, 12, 18).unwrap()
        );
    }

    #[test]
    fn future_expiries_are_quarterly_and_after_today() {
        let e = future_expiries(NaiveDate::from_ymd_opt(2026, 12, 2).unwrap(), 2);
        assert_eq!(e, vec![third_friday(2026, 12), third_friday(2027, 3)]);
    }

    #[test]
    fn option_conids_are_unique() {
        let u = universe();
        let opts: Vec<_> = u
            .contracts
            .values()
            .filter(|c| c.sec_type == SecType::Opt)
            .collect();
        assert_eq!(opts.len(), 3 * 3 * 13 * 2);
        assert!(opts.iter().all(|c| c.conid < i64::from(i32::MAX)));
    }

    #[test]
    fn msft_and_spy_chains_bracket_their_base_price() {
        let u = universe();
        for (conid, base) in [(272093, 420.0), (756733, 580.0)] {
            let strikes: Vec<f64> = u
                .derivatives_of(conid, SecType::Opt)
                .map(|c| c.strike)
                .collect();
            assert!(strikes.iter().any(|s| *s < base) && strikes.iter().any(|s| *s > base));
        }
    }

    #[test]
    fn search_by_symbol_and_by_name() {
        let u = universe();
        assert_eq!(u.search("aapl", false)[0].conid, 265598);
        assert!(u.search("apple", true).iter().any(|c| c.conid == 265598));
        assert!(u.search("apple", false).is_empty());
    }
}
