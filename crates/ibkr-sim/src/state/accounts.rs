//! Accounts and portfolio: the two paper accounts, their cash ledger per currency, positions
//! (average cost, realized P&L), executions, and the valuation that every summary endpoint
//! formats (net liquidation, margins, available funds...).
//!
//! Fills arrive from `orders`; prices come from `market`. Margin is a simple documented model:
//! initial 25 % of long and 30 % of short stock value, 20 % of short option underlying value,
//! 6 % of futures notional; maintenance is 85 % of initial. Base currency is USD.

use std::collections::BTreeMap;

use crate::market::Market;
use crate::universe::{
    Contract, SecType, Universe, future_expiries, option_conid, option_expiries,
};

/// The simulated accounts (both paper, `DU…`).
pub(crate) const ACCOUNT_IDS: [&str; 2] = ["DU1234567", "DU7654321"];

/// Buy or sell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Buy,
    Sell,
}

impl Side {
    /// `BUY` / `SELL`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }

    /// +1 for buys, -1 for sells.
    pub(crate) fn sign(self) -> f64 {
        match self {
            Side::Buy => 1.0,
            Side::Sell => -1.0,
        }
    }
}

/// A position in one contract.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Position {
    pub conid: i64,
    pub qty: f64,
    /// Average price per unit (not multiplied).
    pub avg_price: f64,
    pub realized: f64,
}

/// One execution (fill).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Execution {
    pub exec_id: String,
    pub order_id: i64,
    pub account: String,
    pub conid: i64,
    pub side: Side,
    pub qty: f64,
    pub price: f64,
    pub commission: f64,
    pub time_ms: i64,
    pub order_ref: Option<String>,
    pub exchange: String,
    pub position_after: f64,
}

/// One account.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub id: String,
    pub title: String,
    pub opened_ms: i64,
    pub cash: BTreeMap<String, f64>,
    pub positions: BTreeMap<i64, Position>,
    pub realized_today: f64,
    pub prev_nav: f64,
    pub interest_mtd: f64,
}

/// Values of one currency segment.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CcyValues {
    pub cash: f64,
    pub stock: f64,
    pub options: f64,
    pub futures_upnl: f64,
    pub upnl: f64,
    pub realized: f64,
    pub fx_to_base: f64,
}

/// Everything the summary endpoints show, in the base currency (USD).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Valuation {
    pub cash: f64,
    pub stock: f64,
    pub options: f64,
    pub futures_upnl: f64,
    pub futures_notional: f64,
    pub long_stock: f64,
    pub short_stock: f64,
    pub nlv: f64,
    pub elv: f64,
    pub gross: f64,
    pub init: f64,
    pub maint: f64,
    pub available: f64,
    pub excess: f64,
    pub buying_power: f64,
    pub upnl: f64,
    pub realized: f64,
    pub daily_pnl: f64,
    pub by_ccy: BTreeMap<String, CcyValues>,
    pub by_class: BTreeMap<String, f64>,
    pub long_by_sector: BTreeMap<String, f64>,
    pub short_by_sector: BTreeMap<String, f64>,
    pub long_by_group: BTreeMap<String, f64>,
    pub short_by_group: BTreeMap<String, f64>,
    pub short_by_class: BTreeMap<String, f64>,
}

/// Commission for a fill, in the contract's currency (USD for FX).
pub(crate) fn commission(contract: &Contract, qty: f64, price: f64) -> f64 {
    let c: f64 = match contract.sec_type {
        SecType::Stk => (0.005 * qty).max(1.0).min(0.01 * qty * price),
        SecType::Opt => (0.65 * qty).max(1.0),
        SecType::Fut => 2.25 * qty,
        SecType::Cash => 2.0,
        // Combos are charged per leg.
        SecType::Ind | SecType::Bag => 0.0,
    };
    (c.max(0.0) * 100.0).round() / 100.0
}

impl Account {
    fn seeded(
        id: &str,
        title: &str,
        opened_ms: i64,
        cash: &[(&str, f64)],
        positions: &[(i64, f64, f64)],
    ) -> Self {
        Self {
            id: id.into(),
            title: title.into(),
            opened_ms,
            cash: cash.iter().map(|(c, v)| ((*c).to_string(), *v)).collect(),
            positions: positions
                .iter()
                .map(|(conid, qty, avg)| {
                    (
                        *conid,
                        Position {
                            conid: *conid,
                            qty: *qty,
                            avg_price: *avg,
                            realized: 0.0,
                        },
                    )
                })
                .collect(),
            realized_today: 0.0,
            prev_nav: 0.0,
            interest_mtd: 0.0,
        }
    }

    /// The two seeded paper accounts.
    pub(crate) fn seed(universe: &Universe) -> Vec<Account> {
        let es = future_expiries(universe.today, 1)[0];
        let call_expiry = option_expiries(universe.today, 2)[1];
        let aapl_call = option_conid("AAPL", call_expiry, 240.0, 'C');
        let mut a = Account::seeded(
            ACCOUNT_IDS[0],
            "Demo Trader",
            1_672_531_200_000,
            &[("USD", 94_350.25), ("EUR", 8_000.0)],
            &[
                (265598, 100.0, 221.40),
                (272093, 40.0, 405.10),
                (756733, 25.0, 561.20),
                (crate::universe::future_conid(es), 1.0, 5_790.0),
                (aapl_call, 2.0, 6.10),
            ],
        );
        a.interest_mtd = 212.37;
        let mut b = Account::seeded(
            ACCOUNT_IDS[1],
            "Demo Trader",
            1_704_067_200_000,
            &[("USD", 310_000.0)],
            &[
                (8314, 60.0, 228.75),
                (320227571, 30.0, 488.00),
                (76792991, -15.0, 262.30),
            ],
        );
        b.interest_mtd = 655.02;
        vec![a, b]
    }

    /// Applies a fill: position, average price, realized P&L and cash.
    pub(crate) fn apply_fill(
        &mut self,
        contract: &Contract,
        side: Side,
        qty: f64,
        price: f64,
        fee: f64,
    ) -> f64 {
        let ccy = contract.currency.clone();
        if contract.sec_type == SecType::Cash {
            let signed = side.sign() * qty;
            *self.cash.entry(contract.symbol.clone()).or_insert(0.0) += signed;
            *self.cash.entry(ccy.clone()).or_insert(0.0) -= signed * price;
            *self.cash.entry("USD".into()).or_insert(0.0) -= fee;
            return 0.0;
        }
        let mult = contract.multiplier;
        let signed = side.sign() * qty;
        let pos = self.positions.entry(contract.conid).or_insert(Position {
            conid: contract.conid,
            qty: 0.0,
            avg_price: price,
            realized: 0.0,
        });
        let mut realized = 0.0;
        if pos.qty == 0.0 || pos.qty.signum() == signed.signum() {
            let total = pos.qty + signed;
            pos.avg_price = (pos.qty * pos.avg_price + signed * price) / total;
            pos.qty = total;
        } else {
            let closing = signed.abs().min(pos.qty.abs());
            realized = (price - pos.avg_price) * closing * pos.qty.signum() * mult;
            let remaining = pos.qty + signed;
            if remaining != 0.0 && remaining.signum() != pos.qty.signum() {
                pos.avg_price = price;
            }
            pos.qty = remaining;
        }
        pos.realized += realized;
        self.realized_today += realized;
        let cash = self.cash.entry(ccy).or_insert(0.0);
        if contract.sec_type == SecType::Fut {
            *cash += realized - fee;
        } else {
            *cash -= signed * price * mult + fee;
        }
        if pos.qty.abs() < 1e-9 {
            pos.qty = 0.0;
        }
        let after = pos.qty;
        if after == 0.0 {
            self.positions.remove(&contract.conid);
        }
        after
    }

    /// Values the account at current prices.
    pub(crate) fn value(&self, universe: &Universe, market: &Market) -> Valuation {
        let mut v = Valuation::default();
        let fx = |ccy: &str| market.fx_rate(universe, ccy, "USD").unwrap_or(1.0);
        for (ccy, amount) in &self.cash {
            let e = v.by_ccy.entry(ccy.clone()).or_default();
            e.cash += amount;
            e.fx_to_base = fx(ccy);
            v.cash += amount * fx(ccy);
        }
        for p in self.positions.values() {
            let Some(c) = universe.get(p.conid) else {
                continue;
            };
            let price = market.last(universe, p.conid).unwrap_or(p.avg_price);
            let rate = fx(&c.currency);
            let mv = p.qty * price * c.multiplier;
            let upnl = (price - p.avg_price) * p.qty * c.multiplier;
            let e = v.by_ccy.entry(c.currency.clone()).or_default();
            e.fx_to_base = rate;
            e.upnl += upnl;
            e.realized += p.realized;
            v.upnl += upnl * rate;
            let class = c.sec_type.as_str().to_string();
            let sector = c.sector.clone().unwrap_or_else(|| "Others".into());
            let group = c.group.clone().unwrap_or_else(|| "Others".into());
            match c.sec_type {
                SecType::Fut => {
                    e.futures_upnl += upnl;
                    v.futures_upnl += upnl * rate;
                    v.futures_notional += mv.abs() * rate;
                }
                SecType::Opt => {
                    e.options += mv;
                    v.options += mv * rate;
                    if p.qty < 0.0 {
                        let und = c
                            .underlying
                            .and_then(|u| market.last(universe, u))
                            .unwrap_or(c.strike);
                        v.init += 0.20 * und * p.qty.abs() * c.multiplier * rate;
                    }
                }
                _ => {
                    e.stock += mv;
                    v.stock += mv * rate;
                    if p.qty >= 0.0 {
                        v.long_stock += mv * rate;
                    } else {
                        v.short_stock += mv.abs() * rate;
                    }
                }
            }
            if c.sec_type != SecType::Fut {
                v.gross += mv.abs() * rate;
                if mv >= 0.0 {
                    *v.by_class.entry(class).or_default() += mv * rate;
                    *v.long_by_sector.entry(sector).or_default() += mv * rate;
                    *v.long_by_group.entry(group).or_default() += mv * rate;
                } else {
                    *v.short_by_class.entry(class).or_default() += mv * rate;
                    *v.short_by_sector.entry(sector).or_default() += mv * rate;
                    *v.short_by_group.entry(group).or_default() += mv * rate;
                }
            }
        }
        *v.by_class.entry("CASH".into()).or_default() += v.cash.max(0.0);
        v.realized = self.realized_today;
        v.nlv = v.cash + v.stock + v.options + v.futures_upnl;
        v.elv = v.nlv - v.options.max(0.0);
        v.init += 0.25 * v.long_stock + 0.30 * v.short_stock + 0.06 * v.futures_notional;
        v.maint = v.init * 0.85;
        v.available = v.elv - v.init;
        v.excess = v.elv - v.maint;
        v.buying_power = (v.available * 4.0).max(0.0);
        v.daily_pnl = if self.prev_nav > 0.0 {
            v.nlv - self.prev_nav
        } else {
            0.0
        };
        v
    }
}

/// Rounds to cents.
pub(crate) fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `1,234,567` (rounded to a whole number, thousands separators).
pub(crate) fn grouped(x: f64) -> String {
    let neg = x < 0.0;
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if neg && out != "0" {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn setup() -> (Universe, Market, Vec<Account>) {
        let u = Universe::new(NaiveDate::from_ymd_opt(2026, 12, 2).unwrap());
        let m = Market::new(&u, 42);
        let a = Account::seed(&u);
        (u, m, a)
    }

    #[test]
    fn grouped_inserts_thousands_separators() {
        assert_eq!(grouped(1_234_567.4), "1,234,567");
        assert_eq!(grouped(-1_000.0), "-1,000");
        assert_eq!(grouped(12.0), "12");
    }

    #[test]
    fn apply_fill_buy_then_sell_realizes_pnl_and_moves_cash() {
        let (u, _, mut accts) = setup();
        let a = &mut accts[1];
        let ibm = u.get(8314).unwrap();
        let cash0 = a.cash["USD"];
        a.apply_fill(ibm, Side::Buy, 40.0, 230.0, 1.0);
        let p = &a.positions[&8314];
        assert_eq!(p.qty, 100.0);
        assert!((p.avg_price - (60.0 * 228.75 + 40.0 * 230.0) / 100.0).abs() < 1e-9);
        assert!((a.cash["USD"] - (cash0 - 40.0 * 230.0 - 1.0)).abs() < 1e-6);
        let after = a.apply_fill(ibm, Side::Sell, 100.0, 240.0, 1.0);
        assert_eq!(after, 0.0);
        assert!(!a.positions.contains_key(&8314));
        assert!(a.realized_today > 0.0);
    }

    #[test]
    fn valuation_nlv_is_cash_plus_positions() {
        let (u, m, accts) = setup();
        let v = accts[1].value(&u, &m);
        assert!((v.nlv - (v.cash + v.stock + v.options + v.futures_upnl)).abs() < 1e-6);
        assert!(v.short_stock > 0.0);
        assert!(v.init > 0.0 && v.maint < v.init);
    }
}
