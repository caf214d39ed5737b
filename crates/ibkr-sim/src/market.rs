//! Market data: seeded random walks, quotes, option and futures pricing, historical bars.
//!
//! Every stock, ETF, index and FX pair follows its own random walk (a log-normal step with a
//! weak pull back to its base price), seeded from the simulator seed and the conid. The market
//! advances one step on every `/v1/api` request the gateway handles, so a fixed seed and request
//! sequence give the same prices. Options are priced with Black-Scholes from their underlying;
//! futures are their underlying index plus a fixed carry. The simulated market is always open:
//! prices never carry IBKR's `C` (closed) prefix. This module owns no session or account state.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::rng::Rng;
use crate::universe::{Contract, Pricing, SecType, Universe};

const RATE: f64 = 0.04;

/// One instrument's random walk and day statistics.
#[derive(Debug, Clone)]
struct Walk {
    rng: Rng,
    base: f64,
    vol: f64,
    tick: f64,
    last: f64,
    open: f64,
    high: f64,
    low: f64,
    prior_close: f64,
    volume: f64,
    last_size: f64,
}

/// A price snapshot of one contract.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Quote {
    pub last: f64,
    pub bid: f64,
    pub ask: f64,
    pub bid_size: f64,
    pub ask_size: f64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub prior_close: f64,
    pub volume: f64,
    pub last_size: f64,
}

impl Quote {
    /// Mid price.
    pub(crate) fn mid(&self) -> f64 {
        (self.bid + self.ask) / 2.0
    }
}

/// Option greeks and implied volatility.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Greeks {
    pub delta: f64,
    pub gamma: f64,
    pub theta: f64,
    pub vega: f64,
    pub iv: f64,
}

/// All walks and the step counter.
#[derive(Debug, Clone)]
pub(crate) struct Market {
    walks: BTreeMap<i64, Walk>,
    steps: u64,
}

/// Rounds `x` to a multiple of `tick`.
pub(crate) fn round_tick(x: f64, tick: f64) -> f64 {
    let r = (x / tick).round() * tick;
    (r * 1e8).round() / 1e8
}

/// Number of decimals used to print prices with this tick size.
pub(crate) fn tick_decimals(tick: f64) -> usize {
    let mut d = 0;
    let mut t = tick;
    while d < 6 && (t - t.round()).abs() > 1e-9 {
        t *= 10.0;
        d += 1;
    }
    d.max(2)
}

impl Market {
    /// Fresh walks for every walk-priced contract, seeded from `seed`.
    pub(crate) fn new(universe: &Universe, seed: u64) -> Self {
        let mut walks = BTreeMap::new();
        for c in universe.contracts.values() {
            if let Pricing::Walk { base, vol } = c.pricing {
                let mut rng = Rng::derived(seed, c.conid as u64);
                let prior_close = round_tick(base * (1.0 + 0.01 * rng.normal()), c.tick);
                let open = round_tick(prior_close * (1.0 + 0.004 * rng.normal()), c.tick);
                let volume = match c.sec_type {
                    SecType::Stk => (2_000_000 + rng.below(30_000_000)) as f64,
                    SecType::Cash => 0.0,
                    _ => (100_000 + rng.below(900_000)) as f64,
                };
                walks.insert(
                    c.conid,
                    Walk {
                        rng,
                        base,
                        vol,
                        tick: c.tick,
                        last: open,
                        open,
                        high: open.max(prior_close.min(open * 1.002)),
                        low: open.min(prior_close.max(open * 0.998)),
                        prior_close,
                        volume,
                        last_size: 100.0,
                    },
                );
            }
        }
        Self { walks, steps: 0 }
    }

    /// Number of steps taken so far.
    pub(crate) fn steps(&self) -> u64 {
        self.steps
    }

    /// Advances every walk by one step.
    pub(crate) fn step(&mut self) {
        self.steps += 1;
        for w in self.walks.values_mut() {
            let z = w.rng.normal();
            let pull = 0.01 * (w.base.ln() - w.last.ln());
            let next = round_tick(w.last * (w.vol * z + pull).exp(), w.tick);
            if next > 0.0 {
                w.last = next;
            }
            w.high = w.high.max(w.last);
            w.low = w.low.min(w.last);
            let lots = 1 + w.rng.below(20);
            w.last_size = (lots * 100) as f64;
            if w.volume > 0.0 {
                w.volume += w.last_size * (1 + w.rng.below(50)) as f64;
            }
        }
    }

    /// Forces the last price of a walk-priced contract (control API). Returns `false` when the
    /// contract is not walk-priced.
    pub(crate) fn set_price(&mut self, conid: i64, price: f64) -> bool {
        match self.walks.get_mut(&conid) {
            Some(w) if price > 0.0 => {
                w.last = round_tick(price, w.tick);
                w.high = w.high.max(w.last);
                w.low = w.low.min(w.last);
                true
            }
            _ => false,
        }
    }

    /// The current quote of a contract.
    pub(crate) fn quote(&self, universe: &Universe, conid: i64) -> Option<Quote> {
        let c = universe.get(conid)?;
        match c.pricing {
            Pricing::Walk { .. } => {
                let w = self.walks.get(&conid)?;
                let spread = (w.last * 0.0002).max(w.tick);
                let bid = round_tick(w.last - spread / 2.0, w.tick);
                let ask = round_tick(bid + spread.max(w.tick), w.tick).max(bid + w.tick);
                let size_seed = (self.steps ^ conid as u64).wrapping_mul(0x9E37_79B9) >> 7;
                Some(Quote {
                    last: w.last,
                    bid,
                    ask: round_tick(ask, w.tick),
                    bid_size: (1 + size_seed % 9) as f64 * 100.0,
                    ask_size: (1 + (size_seed >> 5) % 9) as f64 * 100.0,
                    open: w.open,
                    high: w.high,
                    low: w.low,
                    prior_close: w.prior_close,
                    volume: w.volume,
                    last_size: w.last_size,
                })
            }
            Pricing::Future { underlying, carry } => {
                let u = self.walks.get(&underlying)?;
                let f = |x: f64| round_tick(x + carry, c.tick);
                let last = f(u.last);
                Some(Quote {
                    last,
                    bid: last - c.tick,
                    ask: last,
                    bid_size: 12.0,
                    ask_size: 9.0,
                    open: f(u.open),
                    high: f(u.high),
                    low: f(u.low),
                    prior_close: f(u.prior_close),
                    volume: (u.volume / 10.0).round(),
                    last_size: 1.0,
                })
            }
            Pricing::Option { underlying, iv } => {
                let u = self.walks.get(&underlying)?;
                let price = |s: f64| round_tick(option_price(universe, c, s, iv).max(0.01), 0.01);
                let last = price(u.last);
                let half = (last * 0.01).max(0.01);
                let bid = round_tick((last - half).max(0.01), 0.01);
                let a = price(u.high);
                let b = price(u.low);
                Some(Quote {
                    last,
                    bid,
                    ask: round_tick(last + half, 0.01),
                    bid_size: 10.0,
                    ask_size: 15.0,
                    open: price(u.open),
                    high: a.max(b).max(last),
                    low: a.min(b).min(last),
                    prior_close: price(u.prior_close),
                    volume: ((u.volume / 2_000.0)
                        * (1.0 / (1.0 + (u.last - c.strike).abs() / 10.0)))
                        .round(),
                    last_size: 1.0,
                })
            }
        }
    }

    /// Last price, if the contract is known.
    pub(crate) fn last(&self, universe: &Universe, conid: i64) -> Option<f64> {
        self.quote(universe, conid).map(|q| q.last)
    }

    /// Greeks of an option contract.
    pub(crate) fn greeks(&self, universe: &Universe, conid: i64) -> Option<Greeks> {
        let c = universe.get(conid)?;
        let Pricing::Option { underlying, iv } = c.pricing else {
            return None;
        };
        let s = self.walks.get(&underlying)?.last;
        let t = years_to(universe, c);
        let (_, delta, gamma, theta, vega) =
            black_scholes(s, c.strike, t, iv, c.right == Some('C'));
        Some(Greeks {
            delta,
            gamma,
            theta,
            vega,
            iv,
        })
    }

    /// EUR.USD-style conversion rate from `from` into `to` (1.0 for the same currency).
    pub(crate) fn fx_rate(&self, universe: &Universe, from: &str, to: &str) -> Option<f64> {
        if from == to {
            return Some(1.0);
        }
        let usd_per = |ccy: &str| -> Option<f64> {
            match ccy {
                "USD" => Some(1.0),
                "EUR" => self.last(universe, 12087792),
                "GBP" => self.last(universe, 12087797),
                "JPY" => self.last(universe, 15016059).map(|r| 1.0 / r),
                _ => None,
            }
        };
        Some(usd_per(from)? / usd_per(to)?)
    }
}

fn years_to(universe: &Universe, c: &Contract) -> f64 {
    let days = c
        .expiry
        .map(|e| (e - universe.today).num_days())
        .unwrap_or(0);
    (days.max(0) as f64 + 0.5) / 365.0
}

fn option_price(universe: &Universe, c: &Contract, s: f64, iv: f64) -> f64 {
    black_scholes(s, c.strike, years_to(universe, c), iv, c.right == Some('C')).0
}

/// Standard normal CDF (Abramowitz-Stegun 7.1.26 on erf).
fn norm_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

fn norm_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Black-Scholes price, delta, gamma, theta (per day) and vega (per 1 % of volatility).
fn black_scholes(s: f64, k: f64, t: f64, iv: f64, call: bool) -> (f64, f64, f64, f64, f64) {
    let sqrt_t = t.sqrt();
    let d1 = ((s / k).ln() + (RATE + iv * iv / 2.0) * t) / (iv * sqrt_t);
    let d2 = d1 - iv * sqrt_t;
    let disc = (-RATE * t).exp();
    let gamma = norm_pdf(d1) / (s * iv * sqrt_t);
    let vega = s * norm_pdf(d1) * sqrt_t / 100.0;
    if call {
        let price = s * norm_cdf(d1) - k * disc * norm_cdf(d2);
        let theta =
            (-s * norm_pdf(d1) * iv / (2.0 * sqrt_t) - RATE * k * disc * norm_cdf(d2)) / 365.0;
        (price, norm_cdf(d1), gamma, theta, vega)
    } else {
        let price = k * disc * norm_cdf(-d2) - s * norm_cdf(-d1);
        let theta =
            (-s * norm_pdf(d1) * iv / (2.0 * sqrt_t) + RATE * k * disc * norm_cdf(-d2)) / 365.0;
        (price, norm_cdf(d1) - 1.0, gamma, theta, vega)
    }
}

/// Bar width or period unit parsed from IBKR's `bar`/`period` syntax.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Span {
    pub seconds: i64,
}

/// Parses a `bar` value: `1min`..`30min` (or `mins`), `1h`..`8h` (or `hrs`), `1d`, `1w`, `1m`.
pub(crate) fn parse_bar(bar: &str) -> Option<Span> {
    let s = bar.trim().to_ascii_lowercase();
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: i64 = digits.parse().ok()?;
    let unit = &s[digits.len()..];
    let allowed: &[i64] = match unit {
        "min" | "mins" => &[1, 2, 3, 5, 10, 15, 30],
        "h" | "hr" | "hrs" | "hour" | "hours" => &[1, 2, 3, 4, 8],
        "d" | "w" | "m" => &[1],
        _ => return None,
    };
    if !allowed.contains(&n) {
        return None;
    }
    let unit_secs = match unit {
        "min" | "mins" => 60,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "m" => 30 * 86_400,
        _ => 3_600,
    };
    Some(Span {
        seconds: n * unit_secs,
    })
}

/// Parses a `period` value: `{n}{min|h|d|w|m|y}` with `n >= 1`.
pub(crate) fn parse_period(period: &str) -> Option<Span> {
    let s = period.trim().to_ascii_lowercase();
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: i64 = digits.parse().ok().filter(|n| *n >= 1)?;
    let unit_secs = match &s[digits.len()..] {
        "min" | "mins" => 60,
        "h" | "hr" | "hrs" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "m" => 30 * 86_400,
        "y" => 365 * 86_400,
        _ => return None,
    };
    Some(Span {
        seconds: n * unit_secs,
    })
}

/// Most bars one history request may return.
pub(crate) const MAX_BARS: i64 = 1_000;

/// Checks a bar/period combination the way the gateway does; returns the number of bars or the
/// error text.
pub(crate) fn check_history(bar: &str, period: &str) -> Result<(Span, Span, i64), String> {
    let b = parse_bar(bar).ok_or_else(|| format!("Bad Request: invalid bar size '{bar}'"))?;
    let p =
        parse_period(period).ok_or_else(|| format!("Bad Request: invalid period '{period}'"))?;
    if b.seconds > p.seconds {
        return Err(format!(
            "Bad Request: bar size {bar} is larger than period {period}"
        ));
    }
    let n = (p.seconds + b.seconds - 1) / b.seconds;
    if n > MAX_BARS {
        return Err(format!(
            "Bad Request: period {period} with bar {bar} needs {n} bars, more than {MAX_BARS}"
        ));
    }
    Ok((b, p, n))
}

/// One OHLCV bar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bar {
    pub t_ms: i64,
    pub o: f64,
    pub h: f64,
    pub l: f64,
    pub c: f64,
    pub v: f64,
}

/// The bars of width `bar` covering `period` up to `end` (aligned down to the bar width), whose
/// last close is `last`. Deterministic for (seed, conid, bar width, aligned end). Daily and
/// longer bars skip weekends; intraday bars run on calendar time (no trading-hours gaps).
pub(crate) fn bars(
    seed: u64,
    contract: &Contract,
    last: f64,
    bar: Span,
    period: Span,
    end: DateTime<Utc>,
) -> Vec<Bar> {
    let width = bar.seconds;
    let end_s = end.timestamp() - end.timestamp().rem_euclid(width.min(86_400));
    let mut rng = Rng::derived(
        seed ^ (end_s as u64).rotate_left(17),
        contract.conid as u64 ^ width as u64,
    );
    let daily_vol = match contract.sec_type {
        SecType::Cash => 0.005,
        SecType::Opt => 0.08,
        _ => 0.015,
    };
    let sigma = daily_vol * (width as f64 / 23_400.0).sqrt();
    let tick = if contract.sec_type == SecType::Opt {
        0.01
    } else {
        contract.tick
    };
    let mut out = Vec::new();
    let mut close = last;
    let mut t = end_s;
    while t > end_s - period.seconds && (out.len() as i64) < MAX_BARS {
        if width >= 86_400 {
            let wd = DateTime::from_timestamp(t, 0).map(|d| d.format("%u").to_string());
            if matches!(wd.as_deref(), Some("6") | Some("7")) {
                t -= 86_400;
                continue;
            }
        }
        let open = (close / (sigma * rng.normal()).exp()).max(tick);
        let high = open.max(close) * (1.0 + sigma * rng.normal().abs() / 2.0);
        let low = (open.min(close) * (1.0 - sigma * rng.normal().abs() / 2.0)).max(tick);
        let volume = match contract.sec_type {
            SecType::Cash => 0.0,
            _ => ((width as f64 / 60.0).sqrt() * (500.0 + rng.below(5_000) as f64)).round(),
        };
        out.push(Bar {
            t_ms: t * 1000,
            o: round_tick(open, tick),
            h: round_tick(high, tick),
            l: round_tick(low, tick),
            c: round_tick(close, tick),
            v: volume,
        });
        close = open;
        t -= width;
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn setup() -> (Universe, Market) {
        let u = Universe::new(NaiveDate::from_ymd_opt(2026, 12, 2).unwrap());
        let m = Market::new(&u, 42);
        (u, m)
    }

    #[test]
    fn market_same_seed_same_walk() {
        let (u, mut a) = setup();
        let mut b = Market::new(&u, 42);
        for _ in 0..50 {
            a.step();
            b.step();
        }
        assert_eq!(a.quote(&u, 265598), b.quote(&u, 265598));
    }

    #[test]
    fn market_walk_moves() {
        let (u, mut m) = setup();
        let start = m.last(&u, 265598).unwrap();
        let moved = (0..50).any(|_| {
            m.step();
            m.last(&u, 265598).unwrap() != start
        });
        assert!(moved);
    }

    #[test]
    fn quote_bid_below_ask() {
        let (u, m) = setup();
        for c in u.contracts.values().filter(|c| c.tradable()) {
            let q = m.quote(&u, c.conid).unwrap();
            assert!(q.bid < q.ask, "{} bid {} ask {}", c.symbol, q.bid, q.ask);
        }
    }

    #[test]
    fn call_delta_between_zero_and_one() {
        let (u, m) = setup();
        let call = u.contracts.values().find(|c| c.right == Some('C')).unwrap();
        let g = m.greeks(&u, call.conid).unwrap();
        assert!(g.delta > 0.0 && g.delta < 1.0);
    }

    #[test]
    fn check_history_rejects_bar_wider_than_period() {
        assert!(check_history("1d", "1h").is_err());
        assert!(check_history("1min", "1y").is_err());
        assert!(check_history("7min", "1d").is_err());
        assert_eq!(check_history("5mins", "1d").unwrap().2, 288);
        assert_eq!(check_history("1h", "2d").unwrap().2, 48);
    }

    #[test]
    fn bars_end_at_last_price() {
        let (u, _) = setup();
        let c = u.get(265598).unwrap();
        let end = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let b = bars(
            42,
            c,
            231.5,
            parse_bar("1h").unwrap(),
            parse_period("10h").unwrap(),
            end,
        );
        assert_eq!(b.len(), 10);
        assert_eq!(b.last().unwrap().c, 231.5);
        assert!(b.iter().all(|x| x.l <= x.o.min(x.c) && x.h >= x.o.max(x.c)));
    }
}
