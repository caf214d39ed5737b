//! Orders: parsing and validating order requests, IBKR's question/reply flow, the order book
//! (every order ever accepted), fills against the simulated market, modify and cancel, and the
//! what-if preview.
//!
//! Marketable orders (MKT, MIDPRICE, or a limit crossing the quote) fill at once at the quote;
//! others rest as working orders and are checked after every market step. Stops trigger on the
//! last price; a trailing stop (TRAIL) first moves its stop with the last price, never back.
//! MOC and LOC rest until cancelled: the simulated market has no close. Bracket children
//! (`parentId` naming a sibling's `cOID`) wait as `PreSubmitted` until their parent fills, and
//! cancel each other (OCA) when one fills; so do the orders of one placement sent with
//! `isSingleGroup: true`. A combo (`conidex` `28812380;;;{conid}/{ratio},...`) is one order
//! priced per combo unit against its legs' natural bid/ask and filled as one execution per leg.
//! Rejections are HTTP 200 `{"error": ...}` like the live service; malformed requests are 400.
//!
//! Every change of an order (booked, triggered, filled, cancelled, modified) and every
//! execution is published, at the moment it happens, to the WebSocket feed (`ws::feed`).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde_json::{Value, json};

use crate::config::{QuestionPolicy, QuestionRules};
use crate::state::State;
use crate::state::accounts::{Execution, Side, commission, grouped};
use crate::universe::{Contract, Pricing, SecType, Universe};

/// Order types the simulator accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderType {
    Mkt,
    Lmt,
    Stp,
    StpLmt,
    Midprice,
    /// Trailing stop: a stop that follows the last price at a fixed distance.
    Trail,
    /// Market on close. The simulator has no closing auction, so it rests until cancelled.
    Moc,
    /// Limit on close; rests like MOC.
    Loc,
}

impl OrderType {
    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().replace(' ', "_").as_str() {
            "MKT" | "MARKET" => Some(Self::Mkt),
            "LMT" | "LIMIT" => Some(Self::Lmt),
            "STP" | "STOP" => Some(Self::Stp),
            "STOP_LIMIT" | "STP_LMT" | "STPLMT" => Some(Self::StpLmt),
            "MIDPRICE" => Some(Self::Midprice),
            "TRAIL" | "TRAILING_STOP" => Some(Self::Trail),
            "MOC" | "MARKETONCLOSE" | "MARKET_ON_CLOSE" => Some(Self::Moc),
            "LOC" | "LIMITONCLOSE" | "LIMIT_ON_CLOSE" => Some(Self::Loc),
            _ => None,
        }
    }

    /// `MARKET`, `LIMIT`... as in `origOrderType` and order status.
    pub(crate) fn upper_name(self) -> &'static str {
        match self {
            Self::Mkt => "MARKET",
            Self::Lmt => "LIMIT",
            Self::Stp => "STOP",
            Self::StpLmt => "STOP_LIMIT",
            Self::Midprice => "MIDPRICE",
            Self::Trail => "TRAIL",
            // The live service lists at-the-close orders as `MARKETONCLOSE` in both fields.
            Self::Moc => "MARKETONCLOSE",
            Self::Loc => "LIMITONCLOSE",
        }
    }

    /// `Market`, `Limit`... as in live orders' `orderType`.
    pub(crate) fn title_name(self) -> &'static str {
        match self {
            Self::Mkt => "Market",
            Self::Lmt => "Limit",
            Self::Stp => "Stop",
            Self::StpLmt => "Stop Limit",
            Self::Midprice => "Midprice",
            Self::Trail => "Trail",
            Self::Moc => "MARKETONCLOSE",
            Self::Loc => "LIMITONCLOSE",
        }
    }

    /// The words for the type in order descriptions (`Limit`, `MKT CLS`...).
    pub(crate) fn desc_name(self) -> &'static str {
        match self {
            // As in the live service's `Buy 45 APOG MKT CLS, Day`.
            Self::Moc => "MKT CLS",
            Self::Loc => "LMT CLS",
            other => other.title_name(),
        }
    }

    /// Orders that wait for a trigger on the last price (shown `PreSubmitted` until then).
    pub(crate) fn is_stop(self) -> bool {
        matches!(self, Self::Stp | Self::StpLmt | Self::Trail)
    }

    /// At-the-close orders (MOC, LOC).
    pub(crate) fn at_close(self) -> bool {
        matches!(self, Self::Moc | Self::Loc)
    }
}

/// How far a trailing stop stays from the last price.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Trailing {
    /// `trailingAmt`: price units, or percent when `percent` is set.
    pub amount: f64,
    /// `trailingType: "%"` (otherwise `"amt"`).
    pub percent: bool,
}

impl Trailing {
    /// The distance in price units at this reference price.
    pub(crate) fn offset(self, price: f64) -> f64 {
        if self.percent {
            price * self.amount / 100.0
        } else {
            self.amount
        }
    }

    /// `amt` or `%`, as the request spells it.
    pub(crate) fn type_name(self) -> &'static str {
        if self.percent { "%" } else { "amt" }
    }

    /// `5.00` or `1.5%`, for descriptions.
    pub(crate) fn text(self, decimals: usize) -> String {
        if self.percent {
            format!("{}%", self.amount)
        } else {
            format!("{:.decimals$}", self.amount)
        }
    }

    /// The stop `side` would have with the last price at `last`, before ratcheting.
    fn stop_at(self, side: Side, last: f64, tick: f64) -> f64 {
        let d = self.offset(last);
        let raw = if side == Side::Buy {
            last + d
        } else {
            last - d
        };
        crate::market::round_tick(raw, tick)
    }
}

/// Order status, as IBKR names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderStatus {
    PreSubmitted,
    Submitted,
    Filled,
    Cancelled,
}

impl OrderStatus {
    /// IBKR's spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::PreSubmitted => "PreSubmitted",
            Self::Submitted => "Submitted",
            Self::Filled => "Filled",
            Self::Cancelled => "Cancelled",
        }
    }

    /// Still working (can fill, be modified or cancelled).
    pub(crate) fn working(self) -> bool {
        matches!(self, Self::PreSubmitted | Self::Submitted)
    }
}

/// IBKR's spread-template conid for combos of USD legs (the part of `conidex` before `;;;`).
pub(crate) const USD_SPREAD_TEMPLATE: i64 = 28812380;

/// Most legs a combo may have.
const MAX_LEGS: usize = 6;

/// One leg of a combo: a contract and its signed ratio (negative legs are sold when the
/// combo is bought).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ComboLeg {
    pub conid: i64,
    pub ratio: i64,
}

/// A combo (spread) order's legs, from `conidex` `28812380;;;{conid}/{ratio},...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Combo {
    pub legs: Vec<ComboLeg>,
}

/// How one leg of a combo fills: contract, side, ratio size and price.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LegFill {
    pub conid: i64,
    pub side: Side,
    pub ratio: f64,
    pub price: f64,
}

impl Combo {
    /// Parses and checks a combo `conidex`; `Err` is the rejection text.
    fn parse(universe: &Universe, s: &str) -> Result<Self, String> {
        let malformed = || {
            format!(
                "Invalid combo conidex '{s}': expected {USD_SPREAD_TEMPLATE};;;{{conid}}/{{ratio}},{{conid}}/{{ratio}} with whole, non-zero ratios"
            )
        };
        let (template, legs_text) = s.trim().split_once(";;;").ok_or_else(malformed)?;
        let template: i64 = template.trim().parse().map_err(|_| malformed())?;
        let mut legs: Vec<ComboLeg> = Vec::new();
        for part in legs_text.split(',') {
            let (conid, ratio) = part.trim().split_once('/').ok_or_else(malformed)?;
            let conid: i64 = conid.trim().parse().map_err(|_| malformed())?;
            let ratio: i64 = ratio.trim().parse().map_err(|_| malformed())?;
            if ratio == 0 {
                return Err(malformed());
            }
            if legs.iter().any(|l| l.conid == conid) {
                return Err(format!(
                    "Combo leg {conid} appears more than once: each contract may be one leg only"
                ));
            }
            legs.push(ComboLeg { conid, ratio });
        }
        if !(2..=MAX_LEGS).contains(&legs.len()) {
            return Err(format!(
                "A combo needs 2 to {MAX_LEGS} legs; '{s}' has {}",
                legs.len()
            ));
        }
        for l in &legs {
            let c = universe
                .get(l.conid)
                .ok_or_else(|| format!("Combo leg {} was not found", l.conid))?;
            if !matches!(c.sec_type, SecType::Stk | SecType::Opt | SecType::Fut) {
                return Err(format!(
                    "Combo leg {} ({}) is a {} contract: combo legs must be stocks, options or futures",
                    l.conid,
                    c.description(),
                    c.sec_type.as_str()
                ));
            }
            if c.currency != "USD" {
                return Err(format!(
                    "Combo leg {} ({}) trades in {}: only USD combos (template {USD_SPREAD_TEMPLATE}) are supported",
                    l.conid,
                    c.description(),
                    c.currency
                ));
            }
        }
        if template != USD_SPREAD_TEMPLATE {
            return Err(format!(
                "Combo template conid {template} is not the spread template for USD legs: use {USD_SPREAD_TEMPLATE} before ';;;'"
            ));
        }
        Ok(Self { legs })
    }

    /// The canonical `conidex`: `28812380;;;265598/1,272093/-1`.
    pub(crate) fn conidex(&self) -> String {
        let legs: Vec<String> = self
            .legs
            .iter()
            .map(|l| format!("{}/{}", l.conid, l.ratio))
            .collect();
        format!("{USD_SPREAD_TEMPLATE};;;{}", legs.join(","))
    }

    /// `+1 AAPL FEB2027 230 C, -1 AAPL FEB2027 240 C`.
    pub(crate) fn legs_text(&self, universe: &Universe) -> String {
        let legs: Vec<String> = self
            .legs
            .iter()
            .map(|l| {
                let d = universe
                    .get(l.conid)
                    .map(Contract::description)
                    .unwrap_or_else(|| l.conid.to_string());
                format!("{:+} {d}", l.ratio)
            })
            .collect();
        legs.join(", ")
    }

    /// A stand-in contract to describe the combo with: `BAG`, the legs' symbols (`AAPL`, or
    /// `AAPL/MSFT`), `AAPL Combo` as its description and the legs as its name. Prices are per
    /// combo unit with a cent tick; the multiplier is the legs' when they share one.
    pub(crate) fn contract(&self, universe: &Universe) -> Contract {
        let mut symbols: Vec<&str> = Vec::new();
        let mut mults: Vec<f64> = Vec::new();
        for l in &self.legs {
            if let Some(c) = universe.get(l.conid) {
                if !symbols.contains(&c.symbol.as_str()) {
                    symbols.push(&c.symbol);
                }
                mults.push(c.multiplier);
            }
        }
        let symbol = symbols.join("/");
        let multiplier = match mults.first() {
            Some(m) if mults.iter().all(|x| x == m) => *m,
            _ => 1.0,
        };
        Contract {
            conid: USD_SPREAD_TEMPLATE,
            symbol: symbol.clone(),
            local_symbol: format!("{symbol} Combo"),
            sec_type: SecType::Bag,
            name: self.legs_text(universe),
            listing_exchange: "SMART".into(),
            order_exchange: "SMART".into(),
            trading_class: "COMB".into(),
            currency: "USD".into(),
            kind: "BAG",
            sector: None,
            group: None,
            multiplier,
            tick: 0.01,
            underlying: None,
            expiry: None,
            strike: 0.0,
            right: None,
            // Never priced: the market prices the legs.
            pricing: Pricing::Walk {
                base: 0.0,
                vol: 0.0,
            },
            valid_exchanges: "SMART".into(),
            has_options: false,
        }
    }
}

/// The contract an order is for: the universe's, or a combo's stand-in.
pub(crate) fn request_contract<'a>(
    universe: &'a Universe,
    r: &OrderRequest,
) -> Option<Cow<'a, Contract>> {
    match &r.combo {
        Some(cb) => Some(Cow::Owned(cb.contract(universe))),
        None => universe.get(r.conid).map(Cow::Borrowed),
    }
}

/// A validated order request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrderRequest {
    pub account: String,
    pub conid: i64,
    pub side: Side,
    pub order_type: OrderType,
    pub qty: f64,
    pub price: Option<f64>,
    pub aux: Option<f64>,
    pub tif: String,
    pub coid: Option<String>,
    pub parent_coid: Option<String>,
    pub outside_rth: bool,
    /// Trailing distance of TRAIL orders.
    pub trailing: Option<Trailing>,
    /// `isSingleGroup`: the orders of one placement that set it form a one-cancels-all group.
    pub single_group: bool,
    /// The legs of a combo order (`conid` is then the spread template).
    pub combo: Option<Combo>,
}

impl OrderRequest {
    /// `conidex` as listed: the combo string, or the conid.
    pub(crate) fn conidex(&self) -> String {
        match &self.combo {
            Some(cb) => cb.conidex(),
            None => self.conid.to_string(),
        }
    }
}

/// An accepted order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Order {
    pub id: i64,
    pub req: OrderRequest,
    pub parent: Option<i64>,
    pub status: OrderStatus,
    pub filled: f64,
    pub avg_fill: f64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub triggered: bool,
    /// Current stop price of a trailing stop (moves with the market until triggered).
    pub stop: Option<f64>,
    pub request_id: u64,
    /// Question message ids the client confirmed before this order was booked.
    pub confirmed_questions: Vec<String>,
}

impl Order {
    /// Bracket child still waiting for its parent.
    fn waiting_for_parent(&self, book: &BTreeMap<i64, Order>) -> bool {
        self.parent
            .and_then(|p| book.get(&p))
            .is_some_and(|p| p.status != OrderStatus::Filled)
    }
}

/// What a confirmed question leads to.
#[derive(Debug, Clone)]
enum Action {
    Place(Vec<OrderRequest>),
    Modify { order_id: i64, req: OrderRequest },
}

/// A question waiting for `/iserver/reply/{id}`.
#[derive(Debug, Clone)]
struct Pending {
    action: Action,
    remaining: VecDeque<(String, String)>,
    asked: Vec<String>,
}

/// The order book and everything order-related.
#[derive(Debug)]
pub(crate) struct Orders {
    pub book: BTreeMap<i64, Order>,
    pub executions: Vec<Execution>,
    pending: HashMap<String, Pending>,
    next_id: i64,
    next_request: u64,
    coids: BTreeSet<(String, String)>,
    pub policy: QuestionPolicy,
    /// Questions asked so far (every id, in order).
    pub questions_asked: u64,
}

/// The reply to an order request: HTTP status, body, and whether an order was booked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrderReply {
    pub status: u16,
    pub body: Value,
    pub booked: bool,
}

impl OrderReply {
    fn ok(body: Value, booked: bool) -> Self {
        Self {
            status: 200,
            body,
            booked,
        }
    }

    /// HTTP 200 with `{"error": msg}`, as the live service rejects orders.
    pub(crate) fn reject(msg: impl Into<String>) -> Self {
        Self {
            status: 200,
            body: json!({ "error": msg.into() }),
            booked: false,
        }
    }

    /// A non-200 error with `{"error", "statusCode"}`.
    pub(crate) fn fail(status: u16, msg: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "error": msg.into(), "statusCode": status }),
            booked: false,
        }
    }
}

impl Orders {
    /// An empty book; order ids start from a seeded base.
    pub(crate) fn new(policy: QuestionPolicy, first_id: i64) -> Self {
        Self {
            book: BTreeMap::new(),
            executions: Vec::new(),
            pending: HashMap::new(),
            next_id: first_id,
            next_request: 1,
            coids: BTreeSet::new(),
            policy,
            questions_asked: 0,
        }
    }

    /// Forgets all unanswered questions (the brokerage session ended).
    pub(crate) fn clear_pending(&mut self) {
        self.pending.clear();
    }

    /// Number of unanswered questions.
    pub(crate) fn pending_count(&self) -> usize {
        self.pending.len()
    }

    fn alloc_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Parses and validates one order object; `Err` is the rejection text.
fn parse_one(universe: &Universe, account: &str, o: &Value) -> Result<OrderRequest, String> {
    let obj = o.as_object().ok_or("Each order must be a JSON object")?;
    if let Some(acct) = obj.get("acctId").and_then(Value::as_str)
        && acct != account
    {
        return Err(format!(
            "Order account {acct} does not match the account in the path ({account})"
        ));
    }
    let combo = match obj.get("conidex").and_then(Value::as_str) {
        Some(s) if s.contains(";;;") => Some(Combo::parse(universe, s)?),
        _ => None,
    };
    let bag;
    let (conid, contract) = if let Some(cb) = &combo {
        bag = cb.contract(universe);
        (USD_SPREAD_TEMPLATE, &bag)
    } else {
        let conid = obj
            .get("conid")
            .and_then(num)
            .or_else(|| {
                obj.get("conidex")
                    .and_then(Value::as_str)
                    .and_then(|s| s.split('@').next()?.parse().ok())
            })
            .ok_or("Missing conid")? as i64;
        if conid == USD_SPREAD_TEMPLATE {
            return Err(format!(
                "Conid {USD_SPREAD_TEMPLATE} is the USD spread template: send a combo as conidex \"{USD_SPREAD_TEMPLATE};;;{{conid}}/{{ratio}},{{conid}}/{{ratio}}\""
            ));
        }
        let contract = universe
            .get(conid)
            .ok_or_else(|| format!("Contract {conid} was not found"))?;
        (conid, contract)
    };
    if !contract.tradable() {
        return Err(format!(
            "Contract {conid} ({}) is an index and cannot be traded",
            contract.symbol
        ));
    }
    let side = match obj
        .get("side")
        .and_then(Value::as_str)
        .map(|s| s.to_ascii_uppercase())
    {
        Some(s) if s == "BUY" => Side::Buy,
        Some(s) if s == "SELL" => Side::Sell,
        Some(s) => return Err(format!("Invalid side '{s}': use BUY or SELL")),
        None => return Err("Missing side".into()),
    };
    let ot = obj
        .get("orderType")
        .and_then(Value::as_str)
        .ok_or("Missing orderType")?;
    let order_type =
        OrderType::parse(ot).ok_or_else(|| format!("Order type '{ot}' is not supported"))?;
    if combo.is_some() && !matches!(order_type, OrderType::Mkt | OrderType::Lmt) {
        return Err(format!(
            "Order type '{ot}' is not supported for combo orders: use MKT or LMT"
        ));
    }
    if obj.get("cashQty").is_some() {
        return Err("Cash quantity orders are not supported".into());
    }
    let qty = obj
        .get("quantity")
        .and_then(num)
        .ok_or("Missing quantity")?;
    if qty.is_nan() || qty <= 0.0 {
        return Err(format!(
            "Invalid quantity {qty}: the quantity must be greater than 0"
        ));
    }
    if contract.sec_type != SecType::Cash && qty.fract() != 0.0 {
        return Err(format!(
            "The size, {qty}, must be a whole number for this contract"
        ));
    }
    // A market-on-close order has no price; one sent along is ignored like for MKT.
    let price = obj
        .get("price")
        .and_then(num)
        .filter(|_| order_type != OrderType::Moc);
    let aux = obj.get("auxPrice").and_then(num);
    match order_type {
        // A combo's net price may be zero or negative (a credit).
        OrderType::Lmt if combo.is_some() && !price.is_some_and(f64::is_finite) => {
            return Err(
                "A combo limit order needs a price: the net price per combo unit (negative for a credit)"
                    .into(),
            );
        }
        OrderType::Loc if !price.is_some_and(|p| p > 0.0) => {
            return Err("A limit-on-close (LOC) order needs a price greater than 0".into());
        }
        OrderType::Trail if price.is_some_and(|p| p.is_nan() || p <= 0.0) => {
            return Err(
                "The price of a TRAIL order is its initial stop price and must be greater than 0"
                    .into(),
            );
        }
        OrderType::Lmt | OrderType::Stp if combo.is_none() && !price.is_some_and(|p| p > 0.0) => {
            return Err(format!(
                "A {} order needs a price greater than 0",
                order_type.title_name()
            ));
        }
        OrderType::StpLmt if !price.is_some_and(|p| p > 0.0) || !aux.is_some_and(|p| p > 0.0) => {
            return Err(
                "A stop limit order needs price (limit) and auxPrice (stop) greater than 0".into(),
            );
        }
        _ => {}
    }
    if let Some(p) = price {
        let steps = p / contract.tick;
        if (steps - steps.round()).abs() > 1e-6 {
            return Err(format!(
                "The price {p} does not conform to the minimum price variation of {} for this contract",
                contract.tick
            ));
        }
    }
    let tif = obj
        .get("tif")
        .and_then(Value::as_str)
        .unwrap_or("DAY")
        .to_ascii_uppercase();
    if !["DAY", "GTC", "IOC", "OPG", "PAX"].contains(&tif.as_str()) {
        return Err(format!("Invalid time in force '{tif}'"));
    }
    if order_type.at_close() && tif != "DAY" {
        // The live service's wording, after the order text; the second sentence is ours.
        return Err(format!(
            "\"{} {} {}\"\nInvalid time-in-force for at-the-closing order. MOC and LOC orders need tif DAY (got {tif}).",
            side.as_str(),
            fmt_qty(qty),
            contract.order_text()
        ));
    }
    let trailing = if order_type == OrderType::Trail {
        Some(parse_trailing(obj)?)
    } else {
        None
    };
    let coid = obj.get("cOID").and_then(Value::as_str).map(str::to_string);
    let parent_coid = obj.get("parentId").and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    Ok(OrderRequest {
        account: account.to_string(),
        conid,
        side,
        order_type,
        qty,
        price,
        aux,
        tif,
        coid,
        parent_coid,
        outside_rth: obj
            .get("outsideRTH")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        trailing,
        single_group: obj
            .get("isSingleGroup")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        combo,
    })
}

/// `trailingAmt` and `trailingType` of a TRAIL order.
fn parse_trailing(obj: &serde_json::Map<String, Value>) -> Result<Trailing, String> {
    let amount = obj
        .get("trailingAmt")
        .and_then(num)
        .filter(|a| *a > 0.0)
        .ok_or("A trailing stop (TRAIL) order needs trailingAmt greater than 0")?;
    let percent = match obj
        .get("trailingType")
        .and_then(Value::as_str)
        .map(str::trim)
    {
        Some(t) if t.eq_ignore_ascii_case("amt") => false,
        Some("%") => true,
        other => {
            return Err(format!(
                "Invalid trailingType '{}': use \"amt\" (price units) or \"%\" (percent of the last price)",
                other.unwrap_or("")
            ));
        }
    };
    if percent && amount >= 100.0 {
        return Err(format!(
            "A trailing percent of {amount} is too large: it must be below 100"
        ));
    }
    Ok(Trailing { amount, percent })
}

/// `BUY 10 AAPL NASDAQ.NMS @ 150.00` (or `@ MKT`), the order text used in questions.
fn order_text(c: &Contract, r: &OrderRequest) -> String {
    let px = match (r.order_type, r.price) {
        (OrderType::Mkt, _) | (_, None) => "MKT".to_string(),
        (_, Some(p)) => format!("{p:.prec$}", prec = crate::market::tick_decimals(c.tick)),
    };
    format!(
        "{} {} {} @ {}",
        r.side.as_str(),
        fmt_qty(r.qty),
        c.order_text(),
        px
    )
}

/// `10` for whole quantities, `0.5` otherwise.
pub(crate) fn fmt_qty(q: f64) -> String {
    if q.fract() == 0.0 {
        format!("{q:.0}")
    } else {
        format!("{q}")
    }
}

/// The text of a question, in the form IBKR uses (our own phrasing for the long ones).
pub(crate) fn question_text(
    id: &str,
    c: Option<&Contract>,
    r: Option<&OrderRequest>,
    value: f64,
) -> String {
    let order = match (c, r) {
        (Some(c), Some(r)) => order_text(c, r),
        _ => "this order".into(),
    };
    let ccy = c.map(|c| c.currency.as_str()).unwrap_or("USD");
    let sure = "\nAre you sure you want to submit this order?";
    match id {
        "o163" => format!("The following order \"{order}\" price exceeds \nthe Percentage constraint of 3%.{sure}"),
        "o354" => format!(
            "You are about to submit an order without market data for this instrument. Orders sent without market data can execute at unexpected prices.{sure}"
        ),
        "o383" => format!("The following order \"{order}\" size exceeds the Size Limit of 500.{sure}"),
        "o403" | "o0" => format!("This order will most likely trigger and fill immediately.{sure}"),
        "o451" => format!(
            "The following order \"{order}\" value estimate of {} {ccy} exceeds \nthe Total Value Limit of 100,000 {ccy}.{sure}",
            grouped(value)
        ),
        "o10331" => format!(
            "You are about to submit a stop order. Check which stop order types exist and what risk each one carries.{sure}"
        ),
        "o10153" => "<h4>Confirm Mandatory Cap Price</h4>To keep trading consistent with a fair and orderly market, IB may cap the price of this order. A capped order that would otherwise be marketable may not execute.".into(),
        "o10138" => "The following order size modification exceeds the size modification limit.".into(),
        "o10151" => format!("Market orders can execute far from the last price when the market moves fast.{sure}"),
        "o10152" => format!("A stop order becomes a market order once it is triggered and may fill far from the stop price.{sure}"),
        "o10164" => "Cash quantity details are provided on a best efforts basis only; check the order size before you submit.".into(),
        "o2137" => format!("The following order \"{order}\" crosses an order of yours on the other side.{sure}"),
        "p6" => "This order will be distributed over multiple accounts. Review the allocation settings before you submit orders.".into(),
        other => format!("Order warning {other} for \"{order}\".{sure}"),
    }
}

impl State {
    fn reference_price(&self, universe: &Universe, r: &OrderRequest) -> f64 {
        if let Some(cb) = &r.combo {
            return match (r.order_type, r.price) {
                (OrderType::Lmt, Some(p)) => p,
                _ => self
                    .combo_fills(universe, cb, r.side)
                    .map(|(net, _)| net)
                    .unwrap_or(0.0),
            };
        }
        let q = self.market.quote(universe, r.conid);
        match (r.order_type, r.price) {
            (OrderType::Lmt | OrderType::StpLmt | OrderType::Stp | OrderType::Loc, Some(p)) => p,
            (OrderType::Trail, _) => self.initial_trail_stop(universe, r).unwrap_or(0.0),
            _ => q
                .map(|q| if r.side == Side::Buy { q.ask } else { q.bid })
                .unwrap_or(0.0),
        }
    }

    /// How a combo bought (or sold) now would fill, leg by leg at the legs' quotes, and its
    /// net price per combo unit. Buying a combo buys its positive legs at the ask and sells
    /// its negative legs at the bid, so the net is the combo's natural ask; selling mirrors
    /// it and gives the natural bid.
    pub(crate) fn combo_fills(
        &self,
        universe: &Universe,
        combo: &Combo,
        side: Side,
    ) -> Option<(f64, Vec<LegFill>)> {
        let mut net = 0.0;
        let mut fills = Vec::new();
        for l in &combo.legs {
            let q = self.market.quote(universe, l.conid)?;
            let leg_side = if (l.ratio > 0) == (side == Side::Buy) {
                Side::Buy
            } else {
                Side::Sell
            };
            let price = if leg_side == Side::Buy { q.ask } else { q.bid };
            net += l.ratio as f64 * price;
            fills.push(LegFill {
                conid: l.conid,
                side: leg_side,
                ratio: l.ratio.unsigned_abs() as f64,
                price,
            });
        }
        Some(((net * 1e6).round() / 1e6, fills))
    }

    /// The stop a new trailing stop starts with: its `price`, or the last price less (for a
    /// sell) or plus (for a buy) the trailing distance.
    fn initial_trail_stop(&self, universe: &Universe, r: &OrderRequest) -> Option<f64> {
        if r.price.is_some() {
            return r.price;
        }
        let t = r.trailing?;
        let tick = universe.get(r.conid)?.tick;
        let last = self.market.last(universe, r.conid)?;
        Some(t.stop_at(r.side, last, tick))
    }

    /// The questions (id, text) the policy asks for these orders, less suppressed ids.
    fn questions_for(
        &self,
        universe: &Universe,
        reqs: &[OrderRequest],
    ) -> VecDeque<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let first = reqs.first();
        let contract = first.and_then(|r| request_contract(universe, r));
        let contract = contract.as_deref();
        match &self.orders.policy {
            QuestionPolicy::Never => {}
            QuestionPolicy::Chain { message_ids } => {
                let value = first.map(|r| self.order_value(universe, r)).unwrap_or(0.0);
                for id in message_ids {
                    out.push((id.clone(), question_text(id, contract, first, value)));
                }
            }
            QuestionPolicy::Rules(rules) => out = self.rule_questions(universe, rules, reqs),
        }
        out.into_iter()
            .filter(|(id, _)| !self.session.suppressed.contains(id))
            .collect()
    }

    /// The questions `rules` ask for these orders (suppression not applied).
    fn rule_questions(
        &self,
        universe: &Universe,
        rules: &QuestionRules,
        reqs: &[OrderRequest],
    ) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for r in reqs {
            let Some(c) = request_contract(universe, r) else {
                continue;
            };
            // A combo's net price can be near zero or negative: no percentage check for it.
            let last = match r.combo {
                Some(_) => 0.0,
                None => self.market.last(universe, r.conid).unwrap_or(0.0),
            };
            let value = self.order_value(universe, r);
            let mut push = |id: &str| {
                if !out.iter().any(|(i, _)| i == id) {
                    out.push((id.to_string(), question_text(id, Some(&c), Some(r), value)));
                }
            };
            let subscribed = |conid: &i64| self.session.subscriptions.contains_key(conid);
            let has_data = match &r.combo {
                Some(cb) => cb.legs.iter().all(|l| subscribed(&l.conid)),
                None => subscribed(&r.conid),
            };
            if rules.no_market_data && !has_data {
                push("o354");
            }
            if rules.market_order && r.order_type == OrderType::Mkt {
                push("o403");
            }
            if let (Some(pct), Some(p)) = (rules.price_percent, r.price)
                && matches!(r.order_type, OrderType::Lmt | OrderType::StpLmt)
                && last > 0.0
                && ((p - last) / last).abs() * 100.0 > pct
            {
                push("o163");
            }
            if rules.size_limit.is_some_and(|l| r.qty > l) {
                push("o383");
            }
            if rules.value_limit.is_some_and(|l| value > l) {
                push("o451");
            }
            if rules.stop_order && r.order_type.is_stop() {
                push("o10331");
            }
        }
        out
    }

    fn order_value(&self, universe: &Universe, r: &OrderRequest) -> f64 {
        let mult = request_contract(universe, r)
            .map(|c| c.multiplier)
            .unwrap_or(1.0);
        (r.qty * self.reference_price(universe, r) * mult).abs()
    }

    fn parse_batch(
        &self,
        universe: &Universe,
        account: &str,
        body: Option<&Value>,
    ) -> Result<Vec<OrderRequest>, OrderReply> {
        let orders = body
            .and_then(|b| b.get("orders"))
            .and_then(Value::as_array)
            .ok_or_else(|| {
                OrderReply::fail(400, "Bad Request: the body must be {\"orders\": [...]}")
            })?;
        if orders.is_empty() {
            return Err(OrderReply::fail(
                400,
                "Bad Request: no orders in the request",
            ));
        }
        let mut reqs = Vec::new();
        for o in orders {
            let r = parse_one(universe, account, o).map_err(OrderReply::reject)?;
            reqs.push(r);
        }
        let mut seen = BTreeSet::new();
        for r in &reqs {
            if let Some(coid) = &r.coid
                && (!seen.insert(coid.clone())
                    || self
                        .orders
                        .coids
                        .contains(&(account.to_string(), coid.clone())))
            {
                return Err(OrderReply::reject(format!(
                    "Order rejected: the client order id (cOID) '{coid}' was already used for another order"
                )));
            }
        }
        for r in &reqs {
            if let Some(p) = &r.parent_coid
                && !reqs.iter().any(|o| o.coid.as_deref() == Some(p.as_str()))
            {
                return Err(OrderReply::reject(format!(
                    "Parent order '{p}' is not part of this request"
                )));
            }
        }
        Ok(reqs)
    }

    fn ask_or_run(
        &mut self,
        universe: &Universe,
        action: Action,
        mut questions: VecDeque<(String, String)>,
        asked: Vec<String>,
    ) -> OrderReply {
        questions.retain(|(id, _)| !self.session.suppressed.contains(id));
        match questions.pop_front() {
            Some((id, text)) => {
                let reply_id = self.rng.uuid();
                self.orders.questions_asked += 1;
                let body = json!([{
                    "id": reply_id,
                    "message": [text],
                    "isSuppressed": false,
                    "messageIds": [id.clone()],
                }]);
                let mut asked = asked;
                asked.push(id);
                self.orders.pending.insert(
                    reply_id,
                    Pending {
                        action,
                        remaining: questions,
                        asked,
                    },
                );
                OrderReply::ok(body, false)
            }
            None => match action {
                Action::Place(reqs) => self.book(universe, reqs, asked),
                Action::Modify { order_id, req } => self.apply_modify(universe, order_id, req),
            },
        }
    }

    /// `POST /iserver/account/{accountId}/orders`.
    pub(crate) fn place_orders(
        &mut self,
        universe: &Universe,
        account: &str,
        body: Option<&Value>,
    ) -> OrderReply {
        if !self.accounts.contains_key(account) {
            return OrderReply::fail(400, format!("Bad Request: account {account} not found"));
        }
        if !self.session.accounts_queried {
            return OrderReply::fail(400, "Please query /accounts first");
        }
        let reqs = match self.parse_batch(universe, account, body) {
            Ok(r) => r,
            Err(e) => return e,
        };
        let questions = self.questions_for(universe, &reqs);
        self.ask_or_run(universe, Action::Place(reqs), questions, Vec::new())
    }

    /// `POST /iserver/reply/{replyId}`.
    pub(crate) fn answer_reply(
        &mut self,
        universe: &Universe,
        reply_id: &str,
        body: Option<&Value>,
    ) -> OrderReply {
        let Some(confirmed) = body
            .and_then(|b| b.get("confirmed"))
            .and_then(Value::as_bool)
        else {
            return OrderReply::fail(
                400,
                "Bad Request: the body must be {\"confirmed\": true|false}",
            );
        };
        let Some(p) = self.orders.pending.remove(reply_id) else {
            return OrderReply::fail(
                400,
                format!("Bad Request: reply id {reply_id} is not valid or was already answered"),
            );
        };
        if !confirmed {
            return OrderReply::reject("The order was not confirmed and has not been submitted");
        }
        // A cOID may have been taken while the question waited.
        if let Action::Place(reqs) = &p.action {
            for r in reqs {
                if let Some(coid) = &r.coid
                    && self
                        .orders
                        .coids
                        .contains(&(r.account.clone(), coid.clone()))
                {
                    return OrderReply::reject(format!(
                        "Order rejected: the client order id (cOID) '{coid}' was already used for another order"
                    ));
                }
            }
        }
        self.ask_or_run(universe, p.action, p.remaining, p.asked)
    }

    fn book(
        &mut self,
        universe: &Universe,
        reqs: Vec<OrderRequest>,
        asked: Vec<String>,
    ) -> OrderReply {
        let now = chrono::Utc::now().timestamp_millis();
        let request_id = self.orders.next_request;
        self.orders.next_request += 1;
        let mut by_coid: HashMap<String, i64> = HashMap::new();
        let mut ids = Vec::new();
        for r in reqs {
            let id = self.orders.alloc_id();
            if let Some(c) = &r.coid {
                by_coid.insert(c.clone(), id);
                self.orders.coids.insert((r.account.clone(), c.clone()));
            }
            let parent = r.parent_coid.as_ref().and_then(|p| by_coid.get(p)).copied();
            let status = if parent.is_some() || r.order_type.is_stop() {
                OrderStatus::PreSubmitted
            } else {
                OrderStatus::Submitted
            };
            let stop = if r.order_type == OrderType::Trail {
                self.initial_trail_stop(universe, &r)
            } else {
                None
            };
            self.orders.book.insert(
                id,
                Order {
                    id,
                    req: r,
                    parent,
                    status,
                    filled: 0.0,
                    avg_fill: 0.0,
                    created_ms: now,
                    updated_ms: now,
                    triggered: false,
                    stop,
                    request_id,
                    confirmed_questions: asked.clone(),
                },
            );
            self.publish_order(universe, id);
            ids.push(id);
        }
        let replies: Vec<Value> = ids
            .iter()
            .map(|id| {
                let o = &self.orders.book[id];
                let mut v = json!({ "order_id": id.to_string(), "order_status": o.status.as_str(), "encrypt_message": "1" });
                if let Some(c) = &o.req.coid {
                    v["local_order_id"] = json!(c);
                }
                v
            })
            .collect();
        for id in &ids {
            self.try_fill(universe, *id);
        }
        OrderReply::ok(Value::Array(replies), true)
    }

    /// Fills a working order if the market allows it now; IOC orders that cannot fill are
    /// cancelled.
    pub(crate) fn try_fill(&mut self, universe: &Universe, id: i64) {
        let Some(o) = self.orders.book.get(&id) else {
            return;
        };
        if !o.status.working() || o.waiting_for_parent(&self.orders.book) {
            return;
        }
        if let Some(cb) = &o.req.combo {
            let r = &o.req;
            let Some((net, legs)) = self.combo_fills(universe, cb, r.side) else {
                return;
            };
            let fills = match (r.order_type, r.price) {
                (OrderType::Mkt, _) => true,
                (OrderType::Lmt, Some(l)) if r.side == Side::Buy => l >= net - 1e-9,
                (OrderType::Lmt, Some(l)) => l <= net + 1e-9,
                _ => false,
            };
            if fills {
                self.execute_combo(universe, id, net, &legs);
            } else if r.tif == "IOC" {
                let o = self.orders.book.get_mut(&id).expect("order exists");
                o.status = OrderStatus::Cancelled;
                o.updated_ms = chrono::Utc::now().timestamp_millis();
                self.publish_order(universe, id);
            }
            return;
        }
        let Some(q) = self.market.quote(universe, o.req.conid) else {
            return;
        };
        let r = &o.req;
        let buy = r.side == Side::Buy;
        let touch = if buy { q.ask } else { q.bid };
        let crosses = |limit: f64| if buy { touch <= limit } else { touch >= limit };
        let mut triggered = o.triggered;
        let tick = universe.get(r.conid).map(|c| c.tick).unwrap_or(0.01);
        // A trailing stop first follows the market (only ever tightening), then triggers on
        // the new stop like a plain stop.
        let mut trail_stop = o.stop;
        if let Some(t) = r.trailing
            && !triggered
        {
            let here = t.stop_at(r.side, q.last, tick);
            trail_stop = Some(match trail_stop {
                Some(s) if buy => s.min(here),
                Some(s) => s.max(here),
                None => here,
            });
        }
        let stop = match r.order_type {
            OrderType::Stp => r.price,
            OrderType::StpLmt => r.aux,
            OrderType::Trail => trail_stop,
            _ => None,
        };
        if let Some(s) = stop
            && !triggered
        {
            triggered = if buy { q.last >= s } else { q.last <= s };
        }
        let fill_price = match r.order_type {
            OrderType::Mkt => Some(touch),
            OrderType::Midprice => {
                let mid = crate::market::round_tick(q.mid(), tick);
                match r.price {
                    Some(cap) if (buy && mid > cap) || (!buy && mid < cap) => None,
                    _ => Some(mid),
                }
            }
            OrderType::Lmt => r.price.filter(|l| crosses(*l)).map(|_| touch),
            OrderType::Stp | OrderType::Trail => triggered.then_some(touch),
            OrderType::StpLmt => r.price.filter(|l| triggered && crosses(*l)).map(|_| touch),
            // No closing auction: at-the-close orders rest until cancelled.
            OrderType::Moc | OrderType::Loc => None,
        };
        let ioc = r.tif == "IOC";
        let o = self.orders.book.get_mut(&id).expect("order exists");
        o.stop = trail_stop;
        let mut activated = false;
        if triggered && !o.triggered {
            o.triggered = true;
            activated = o.status != OrderStatus::Submitted;
            o.status = OrderStatus::Submitted;
        }
        match fill_price {
            Some(p) => {
                if activated {
                    self.publish_order(universe, id);
                }
                self.execute(universe, id, p);
            }
            None if ioc => {
                o.status = OrderStatus::Cancelled;
                o.updated_ms = chrono::Utc::now().timestamp_millis();
                self.publish_order(universe, id);
            }
            None if activated => self.publish_order(universe, id),
            None => {}
        }
    }

    /// Fills what is left of order `id` at `price`.
    fn execute(&mut self, universe: &Universe, id: i64, price: f64) {
        let (req, remaining) = {
            let o = &self.orders.book[&id];
            (o.req.clone(), o.req.qty - o.filled)
        };
        let Some(contract) = universe.get(req.conid) else {
            return;
        };
        if !self.book_execution(universe, contract, id, &req, req.side, remaining, price) {
            return;
        }
        self.mark_filled(universe, id, price, remaining);
    }

    /// Fills what is left of combo order `id`: one execution per leg, the order at `net`.
    fn execute_combo(&mut self, universe: &Universe, id: i64, net: f64, legs: &[LegFill]) {
        let (req, remaining) = {
            let o = &self.orders.book[&id];
            (o.req.clone(), o.req.qty - o.filled)
        };
        for l in legs {
            let Some(contract) = universe.get(l.conid) else {
                return;
            };
            if !self.book_execution(
                universe,
                contract,
                id,
                &req,
                l.side,
                remaining * l.ratio,
                l.price,
            ) {
                return;
            }
        }
        self.mark_filled(universe, id, net, remaining);
    }

    /// Applies one fill to the account and records its execution; `false` when the account is
    /// unknown.
    #[allow(clippy::too_many_arguments)]
    fn book_execution(
        &mut self,
        universe: &Universe,
        contract: &Contract,
        order_id: i64,
        req: &OrderRequest,
        side: Side,
        qty: f64,
        price: f64,
    ) -> bool {
        let now = chrono::Utc::now().timestamp_millis();
        let fee = commission(contract, qty, price);
        let Some(account) = self.accounts.get_mut(&req.account) else {
            return false;
        };
        let after = account.apply_fill(contract, side, qty, price, fee);
        let exec_id = format!(
            "{:08x}.{:08x}.01.01",
            self.rng.next_u64() as u32,
            (now / 1000) as u32
        );
        let exchange = match contract.sec_type {
            SecType::Stk => {
                ["ISLAND", "ARCA", "NYSE", "IEX", "BATS"][self.rng.below(5) as usize].to_string()
            }
            _ => contract.listing_exchange.clone(),
        };
        self.orders.executions.push(Execution {
            exec_id,
            order_id,
            account: req.account.clone(),
            conid: contract.conid,
            side,
            qty,
            price,
            commission: fee,
            time_ms: now,
            order_ref: req.coid.clone(),
            exchange,
            position_after: after,
        });
        self.publish_last_execution(universe);
        true
    }

    /// Marks order `id` filled (its last `qty` at `price`), then lets its bracket children
    /// work and cancels what one-cancels-all ties to it: bracket siblings and the other
    /// members of its `isSingleGroup` placement.
    fn mark_filled(&mut self, universe: &Universe, id: i64, price: f64, qty: f64) {
        let now = chrono::Utc::now().timestamp_millis();
        let o = self.orders.book.get_mut(&id).expect("order exists");
        o.avg_fill = if o.filled > 0.0 {
            (o.avg_fill * o.filled + price * qty) / o.req.qty
        } else {
            price
        };
        o.filled = o.req.qty;
        o.status = OrderStatus::Filled;
        o.updated_ms = now;
        let parent = o.parent;
        let oca = o
            .req
            .single_group
            .then_some((o.req.account.clone(), o.request_id));
        self.publish_order(universe, id);
        // Children of this order become active; siblings of a filled child are cancelled (OCA).
        let children: Vec<i64> = self
            .orders
            .book
            .values()
            .filter(|c| c.parent == Some(id))
            .map(|c| c.id)
            .collect();
        for c in &children {
            if let Some(child) = self.orders.book.get_mut(c)
                && child.status == OrderStatus::PreSubmitted
                && !child.req.order_type.is_stop()
            {
                child.status = OrderStatus::Submitted;
                self.publish_order(universe, *c);
            }
        }
        let mut cancel: Vec<i64> = Vec::new();
        for other in self.orders.book.values() {
            if other.id == id || !other.status.working() {
                continue;
            }
            let sibling = parent.is_some() && other.parent == parent;
            let same_group = oca.as_ref().is_some_and(|(acct, rid)| {
                other.req.single_group && other.request_id == *rid && other.req.account == *acct
            });
            if sibling || same_group {
                cancel.push(other.id);
            }
        }
        for c in cancel {
            self.cancel_in_book(universe, c, now);
        }
        for c in children {
            self.try_fill(universe, c);
        }
    }

    /// Cancels a working order and its working bracket children.
    fn cancel_in_book(&mut self, universe: &Universe, order_id: i64, now: i64) {
        let mut cancelled = Vec::new();
        for o in self.orders.book.values_mut() {
            if (o.id == order_id || o.parent == Some(order_id)) && o.status.working() {
                o.status = OrderStatus::Cancelled;
                o.updated_ms = now;
                cancelled.push(o.id);
            }
        }
        for id in cancelled {
            self.publish_order(universe, id);
        }
    }

    /// Checks every working order against the current market (after each market step).
    pub(crate) fn process_working(&mut self, universe: &Universe) {
        let ids: Vec<i64> = self
            .orders
            .book
            .values()
            .filter(|o| o.status.working())
            .map(|o| o.id)
            .collect();
        for id in ids {
            self.try_fill(universe, id);
        }
    }

    /// `POST /iserver/account/{accountId}/order/{orderId}`.
    pub(crate) fn modify_order(
        &mut self,
        universe: &Universe,
        account: &str,
        order_id: i64,
        body: Option<&Value>,
    ) -> OrderReply {
        if !self.session.accounts_queried {
            return OrderReply::fail(400, "Please query /accounts first");
        }
        let Some(existing) = self
            .orders
            .book
            .get(&order_id)
            .filter(|o| o.req.account == account)
            .cloned()
        else {
            return OrderReply::fail(400, format!("OrderID {order_id} doesn't exist"));
        };
        if !existing.status.working() {
            return OrderReply::reject(format!(
                "Order {order_id} cannot be modified: it is {}",
                existing.status.as_str().to_ascii_lowercase()
            ));
        }
        let Some(body) = body.filter(|b| b.is_object()) else {
            return OrderReply::fail(400, "Bad Request: the body must be the modified order");
        };
        let mut merged = body.clone();
        let obj = merged.as_object_mut().expect("object");
        obj.entry("conid").or_insert(json!(existing.req.conid));
        if existing.req.combo.is_some() {
            obj.entry("conidex")
                .or_insert(json!(existing.req.conidex()));
        }
        obj.entry("side")
            .or_insert(json!(existing.req.side.as_str()));
        obj.entry("orderType")
            .or_insert(json!(existing.req.order_type.upper_name()));
        obj.entry("quantity").or_insert(json!(existing.req.qty));
        obj.entry("tif").or_insert(json!(existing.req.tif));
        // A trailing stop's price is only its starting stop: a modification without one keeps
        // the stop where the market has moved it.
        if let Some(p) = existing.req.price
            && existing.req.order_type != OrderType::Trail
        {
            obj.entry("price").or_insert(json!(p));
        }
        if let Some(a) = existing.req.aux {
            obj.entry("auxPrice").or_insert(json!(a));
        }
        if let Some(t) = existing.req.trailing {
            obj.entry("trailingAmt").or_insert(json!(t.amount));
            obj.entry("trailingType").or_insert(json!(t.type_name()));
        }
        obj.remove("cOID");
        let mut req = match parse_one(universe, account, &merged) {
            Ok(r) => r,
            Err(e) => return OrderReply::reject(e),
        };
        if req.conid != existing.req.conid || req.combo != existing.req.combo {
            return OrderReply::reject("The contract of an order cannot be modified");
        }
        req.coid = existing.req.coid.clone();
        req.parent_coid = existing.req.parent_coid.clone();
        // Group membership belongs to the placement, not to the modification.
        req.single_group = existing.req.single_group;
        let questions = self.questions_for(universe, std::slice::from_ref(&req));
        self.ask_or_run(
            universe,
            Action::Modify { order_id, req },
            questions,
            Vec::new(),
        )
    }

    fn apply_modify(
        &mut self,
        universe: &Universe,
        order_id: i64,
        req: OrderRequest,
    ) -> OrderReply {
        let Some(o) = self.orders.book.get_mut(&order_id) else {
            return OrderReply::fail(400, format!("OrderID {order_id} doesn't exist"));
        };
        if !o.status.working() {
            return OrderReply::reject(format!(
                "Order {order_id} cannot be modified: it is no longer working"
            ));
        }
        // A trailing stop moves to a new explicit price, starts afresh from the last price
        // when its trail changed, and otherwise keeps its current stop.
        let same_trail = o.req.order_type == OrderType::Trail && o.req.trailing == req.trailing;
        let kept = o.stop.filter(|_| same_trail && req.price.is_none());
        let stop = match req.order_type {
            OrderType::Trail => kept.or_else(|| self.initial_trail_stop(universe, &req)),
            _ => None,
        };
        let o = self.orders.book.get_mut(&order_id).expect("order exists");
        o.stop = stop;
        o.req = req;
        o.updated_ms = chrono::Utc::now().timestamp_millis();
        let status = o.status.as_str();
        let reply = json!([{ "order_id": order_id.to_string(), "order_status": status, "encrypt_message": "1" }]);
        self.publish_order(universe, order_id);
        self.try_fill(universe, order_id);
        OrderReply::ok(reply, true)
    }

    /// `DELETE /iserver/account/{accountId}/order/{orderId}`.
    pub(crate) fn cancel_order(
        &mut self,
        universe: &Universe,
        account: &str,
        order_id: i64,
    ) -> OrderReply {
        let now = chrono::Utc::now().timestamp_millis();
        let Some(o) = self
            .orders
            .book
            .get_mut(&order_id)
            .filter(|o| o.req.account == account)
        else {
            return OrderReply::fail(400, format!("OrderID {order_id} doesn't exist"));
        };
        match o.status {
            OrderStatus::Filled => {
                return OrderReply::reject(format!(
                    "Order {order_id} is already filled and cannot be cancelled"
                ));
            }
            OrderStatus::Cancelled => {
                return OrderReply::reject(format!("Order {order_id} is already cancelled"));
            }
            _ => {}
        }
        let conid = o.req.conid;
        self.cancel_in_book(universe, order_id, now);
        OrderReply::ok(
            json!({ "msg": "Request was submitted", "order_id": order_id, "conid": conid, "account": account }),
            false,
        )
    }

    /// `POST /iserver/account/{accountId}/orders/whatif`: previews the first order, places
    /// nothing.
    pub(crate) fn whatif(
        &mut self,
        universe: &Universe,
        account: &str,
        body: Option<&Value>,
    ) -> OrderReply {
        if !self.accounts.contains_key(account) {
            return OrderReply::fail(400, format!("Bad Request: account {account} not found"));
        }
        if !self.session.accounts_queried {
            return OrderReply::fail(400, "Please query /accounts first");
        }
        let reqs = match self.parse_batch(universe, account, body) {
            Ok(r) => r,
            Err(e) => return e,
        };
        let r = &reqs[0];
        let acct = &self.accounts[account];
        let before = acct.value(universe, &self.market);
        let mut sim = acct.clone();
        let price = self.reference_price(universe, r);
        let (amount, fee, ccy, unit, position, legs) = if let Some(cb) = &r.combo {
            // A combo is previewed leg by leg: each leg fills at its side of its quote.
            let Some((_, fills)) = self.combo_fills(universe, cb, r.side) else {
                return OrderReply::reject("There is no market data for the legs of this combo");
            };
            let mut fee = 0.0;
            let mut natural = 0.0;
            let mut legs = Vec::new();
            let mut positions: [Vec<String>; 3] = Default::default();
            let mut mults = Vec::new();
            for (l, f) in cb.legs.iter().zip(&fills) {
                let c = universe.get(l.conid).expect("validated leg");
                let qty = r.qty * f.ratio;
                let leg_fee = commission(c, qty, f.price);
                fee += leg_fee;
                natural += l.ratio as f64 * f.price * c.multiplier;
                mults.push(c.multiplier);
                sim.apply_fill(c, f.side, qty, f.price, leg_fee);
                let held = acct.positions.get(&l.conid).map(|p| p.qty).unwrap_or(0.0);
                let change = f.side.sign() * qty;
                let d = c.description();
                positions[0].push(format!("{d}: {}", fmt_qty(held)));
                positions[1].push(format!("{d}: {}", fmt_qty(change)));
                positions[2].push(format!("{d}: {}", fmt_qty(held + change)));
                legs.push(json!({
                    "conid": l.conid,
                    "description": d,
                    "ratio": l.ratio,
                    "side": f.side.as_str(),
                    "quantity": qty,
                    "price": f.price,
                    "commission": format!("{leg_fee:.2}"),
                    "position": { "current": fmt_qty(held), "change": fmt_qty(change), "after": fmt_qty(held + change) },
                }));
            }
            // With one multiplier across the legs the net price scales the order; otherwise
            // the legs' natural prices do.
            let amount = match mults.first() {
                Some(m) if mults.iter().all(|x| x == m) => r.qty * price * m,
                _ => r.qty * natural,
            };
            let [cur, chg, aft] = positions.map(|p| p.join("; "));
            let position = json!({ "current": cur, "change": chg, "after": aft });
            (
                amount,
                fee,
                "USD",
                "Combos".to_string(),
                position,
                Some(legs),
            )
        } else {
            let c = universe.get(r.conid).expect("validated conid");
            let fee = commission(c, r.qty, price);
            // The margin and equity impact assumes a fill at the current quote.
            let touch = self
                .market
                .quote(universe, r.conid)
                .map(|q| if r.side == Side::Buy { q.ask } else { q.bid })
                .unwrap_or(price);
            sim.apply_fill(c, r.side, r.qty, touch, fee);
            let pos_before = acct.positions.get(&r.conid).map(|p| p.qty).unwrap_or(0.0);
            let unit = match c.sec_type {
                SecType::Stk => "Shares",
                SecType::Cash => c.symbol.as_str(),
                _ => "Contracts",
            };
            let ccy = if c.sec_type == SecType::Cash {
                "USD"
            } else {
                c.currency.as_str()
            };
            let position = json!({
                "current": fmt_qty(pos_before),
                "change": fmt_qty(r.side.sign() * r.qty),
                "after": fmt_qty(pos_before + r.side.sign() * r.qty),
            });
            let amount = r.qty * price * c.multiplier;
            (amount, fee, ccy, unit.to_string(), position, None)
        };
        let after = sim.value(universe, &self.market);
        let triple = |cur: f64, aft: f64| json!({ "current": grouped(cur), "change": grouped(aft - cur), "after": grouped(aft) });
        let mut v = json!({
            "amount": {
                "amount": format!("{} {ccy} ({} {unit})", grouped(amount), fmt_qty(r.qty)),
                "commission": format!("{fee:.2} {ccy}"),
                "total": format!("{} {ccy}", grouped(amount + fee)),
            },
            "equity": triple(before.elv, after.elv),
            "initial": triple(before.init, after.init),
            "maintenance": triple(before.maint, after.maint),
            "position": position,
            "error": Value::Null,
        });
        if let Some(legs) = legs {
            v["legs"] = Value::Array(legs);
        }
        let rules = match &self.orders.policy {
            QuestionPolicy::Rules(rules) => rules.clone(),
            _ => QuestionRules::default(),
        };
        let warnings: Vec<String> = self
            .rule_questions(universe, &rules, &reqs)
            .into_iter()
            .filter(|(id, _)| id == "o163" || id == "o451" || id == "o383")
            .map(|(_, t)| t.replace("\nAre you sure you want to submit this order?", ""))
            .collect();
        if !warnings.is_empty() {
            v["warn"] = json!(warnings.join("\n"));
        }
        if after.available < 0.0 {
            v["error"] = json!(format!(
                "The order would leave available funds of {} USD, below zero.",
                grouped(after.available)
            ));
        }
        OrderReply::ok(v, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use crate::universe::{option_conid, option_expiries};
    use chrono::NaiveDate;

    const ACCT: &str = "DU1234567";
    const AAPL: i64 = 265598;

    /// A fixed-date universe and a state that answers no questions and may take orders.
    fn setup() -> (Universe, State) {
        let u = Universe::new(NaiveDate::from_ymd_opt(2026, 12, 2).unwrap());
        let mut st = State::new(
            &SimConfig::default().with_questions(QuestionPolicy::Never),
            &u,
        );
        st.session.accounts_queried = true;
        (u, st)
    }

    /// Sets the last price and lets working orders react, as the control API does.
    fn move_to(st: &mut State, u: &Universe, conid: i64, price: f64) {
        assert!(st.market.set_price(conid, price));
        st.process_working(u);
    }

    /// Places `orders` in one request; the booked ids, or the rejection text.
    fn place(st: &mut State, u: &Universe, orders: Value) -> Result<Vec<i64>, String> {
        let rep = st.place_orders(u, ACCT, Some(&json!({ "orders": orders })));
        assert_eq!(rep.status, 200, "{}", rep.body);
        if let Some(e) = rep.body.get("error").and_then(Value::as_str) {
            return Err(e.to_string());
        }
        Ok(rep
            .body
            .as_array()
            .expect("confirmation array")
            .iter()
            .map(|o| o["order_id"].as_str().unwrap().parse().unwrap())
            .collect())
    }

    fn place_one(st: &mut State, u: &Universe, order: Value) -> Result<i64, String> {
        place(st, u, json!([order])).map(|ids| ids[0])
    }

    fn status(st: &State, id: i64) -> OrderStatus {
        st.orders.book[&id].status
    }

    fn position(st: &State, conid: i64) -> f64 {
        st.accounts[ACCT]
            .positions
            .get(&conid)
            .map(|p| p.qty)
            .unwrap_or(0.0)
    }

    fn trail(side: &str, amount: f64, kind: &str) -> Value {
        json!({ "conid": AAPL, "orderType": "TRAIL", "side": side, "quantity": 10, "tif": "GTC",
                "trailingAmt": amount, "trailingType": kind })
    }

    #[test]
    fn sell_trailing_stop_ratchets_up_then_triggers_and_fills() {
        let (u, mut st) = setup();
        move_to(&mut st, &u, AAPL, 230.0);
        let id = place_one(&mut st, &u, trail("SELL", 5.0, "amt")).unwrap();
        assert_eq!(status(&st, id), OrderStatus::PreSubmitted);
        assert_eq!(st.orders.book[&id].stop, Some(225.0));
        move_to(&mut st, &u, AAPL, 240.0);
        assert_eq!(st.orders.book[&id].stop, Some(235.0));
        // A fall that stays above the stop leaves it where it was.
        move_to(&mut st, &u, AAPL, 237.0);
        assert_eq!(st.orders.book[&id].stop, Some(235.0));
        assert_eq!(status(&st, id), OrderStatus::PreSubmitted);
        move_to(&mut st, &u, AAPL, 234.9);
        let o = &st.orders.book[&id];
        assert_eq!(o.status, OrderStatus::Filled);
        let bid = st.market.quote(&u, AAPL).unwrap().bid;
        assert_eq!(o.avg_fill, bid, "fills as a market order at the bid");
        assert_eq!(position(&st, AAPL), 90.0);
    }

    #[test]
    fn buy_trailing_stop_in_percent_follows_the_price_down() {
        let (u, mut st) = setup();
        move_to(&mut st, &u, AAPL, 230.0);
        let id = place_one(&mut st, &u, trail("BUY", 2.0, "%")).unwrap();
        assert_eq!(st.orders.book[&id].stop, Some(234.6));
        move_to(&mut st, &u, AAPL, 220.0);
        assert_eq!(st.orders.book[&id].stop, Some(224.4));
        move_to(&mut st, &u, AAPL, 223.0);
        assert_eq!(st.orders.book[&id].stop, Some(224.4), "never loosens");
        move_to(&mut st, &u, AAPL, 224.5);
        assert_eq!(status(&st, id), OrderStatus::Filled);
        assert_eq!(position(&st, AAPL), 110.0);
    }

    #[test]
    fn trailing_stop_price_is_the_initial_stop_and_modify_can_retrail() {
        let (u, mut st) = setup();
        move_to(&mut st, &u, AAPL, 230.0);
        let mut o = trail("SELL", 5.0, "amt");
        o["price"] = json!(228.0);
        let id = place_one(&mut st, &u, o).unwrap();
        assert_eq!(st.orders.book[&id].stop, Some(228.0));
        // A new trail starts again from the last price; the quantity alone keeps the stop.
        let rep = st.modify_order(&u, ACCT, id, Some(&json!({ "trailingAmt": 1.0 })));
        assert_eq!(rep.status, 200, "{}", rep.body);
        assert_eq!(st.orders.book[&id].stop, Some(229.0));
        let rep = st.modify_order(&u, ACCT, id, Some(&json!({ "quantity": 4 })));
        assert_eq!(rep.status, 200, "{}", rep.body);
        let o = &st.orders.book[&id];
        assert_eq!((o.stop, o.req.qty), (Some(229.0), 4.0));
        assert_eq!(o.req.trailing.map(|t| t.amount), Some(1.0));
        move_to(&mut st, &u, AAPL, 228.9);
        assert_eq!(status(&st, id), OrderStatus::Filled);
        assert_eq!(position(&st, AAPL), 96.0);
    }

    #[test]
    fn trailing_stops_without_a_valid_trail_are_rejected() {
        let (u, mut st) = setup();
        let no_amount = json!({ "conid": AAPL, "orderType": "TRAIL", "side": "SELL", "quantity": 1, "trailingType": "amt" });
        let cases = [
            (no_amount, "needs trailingAmt greater than 0"),
            (
                trail("SELL", 0.0, "amt"),
                "needs trailingAmt greater than 0",
            ),
            (trail("SELL", -1.0, "%"), "needs trailingAmt greater than 0"),
            (trail("SELL", 1.0, "pct"), "Invalid trailingType 'pct'"),
            (trail("SELL", 100.0, "%"), "must be below 100"),
        ];
        for (order, text) in cases {
            let e = place_one(&mut st, &u, order.clone()).unwrap_err();
            assert!(e.contains(text), "{order} -> {e}");
        }
        let mut missing_type = trail("SELL", 1.0, "amt");
        missing_type.as_object_mut().unwrap().remove("trailingType");
        let e = place_one(&mut st, &u, missing_type).unwrap_err();
        assert!(e.contains("Invalid trailingType ''"), "{e}");
        assert!(st.orders.book.is_empty());
    }

    #[test]
    fn at_the_close_orders_rest_until_cancelled_and_need_day() {
        let (u, mut st) = setup();
        let moc = place_one(
            &mut st,
            &u,
            json!({ "conid": AAPL, "orderType": "MOC", "side": "BUY", "quantity": 5, "tif": "DAY", "price": 1.0 }),
        )
        .unwrap();
        let loc = place_one(
            &mut st,
            &u,
            json!({ "conid": AAPL, "orderType": "LOC", "side": "SELL", "quantity": 5, "tif": "DAY", "price": 1.0 }),
        )
        .unwrap();
        for _ in 0..50 {
            st.step_market(&u);
        }
        assert_eq!(status(&st, moc), OrderStatus::Submitted);
        assert_eq!(
            status(&st, loc),
            OrderStatus::Submitted,
            "a marketable LOC waits for the close too"
        );
        assert_eq!(st.orders.book[&moc].req.price, None, "MOC carries no price");
        assert!(st.orders.executions.is_empty());
        let rep = st.modify_order(&u, ACCT, loc, Some(&json!({ "price": 2.5 })));
        assert_eq!(rep.status, 200, "{}", rep.body);
        assert_eq!(st.orders.book[&loc].req.price, Some(2.5));
        assert_eq!(st.orders.book[&loc].req.order_type, OrderType::Loc);
        assert_eq!(st.cancel_order(&u, ACCT, moc).status, 200);
        assert_eq!(status(&st, moc), OrderStatus::Cancelled);
        let e = place_one(
            &mut st,
            &u,
            json!({ "conid": AAPL, "orderType": "MOC", "side": "BUY", "quantity": 5, "tif": "GTC" }),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "\"BUY 5 AAPL NASDAQ.NMS\"\nInvalid time-in-force for at-the-closing order. MOC and LOC orders need tif DAY (got GTC)."
        );
        let e = place_one(
            &mut st,
            &u,
            json!({ "conid": AAPL, "orderType": "LOC", "side": "BUY", "quantity": 5, "tif": "DAY" }),
        )
        .unwrap_err();
        assert!(e.contains("needs a price"), "{e}");
    }

    #[test]
    fn single_group_orders_cancel_each_other_when_one_fills() {
        let (u, mut st) = setup();
        move_to(&mut st, &u, AAPL, 230.0);
        let ids = place(
            &mut st,
            &u,
            json!([
                { "conid": AAPL, "orderType": "LMT", "price": 235.0, "side": "SELL", "quantity": 10, "tif": "GTC", "isSingleGroup": true },
                { "conid": AAPL, "orderType": "STP", "price": 225.0, "side": "SELL", "quantity": 10, "tif": "GTC", "isSingleGroup": true },
            ]),
        )
        .unwrap();
        // Another placement, not in the group, with the same price.
        let other = place_one(
            &mut st,
            &u,
            json!({ "conid": AAPL, "orderType": "LMT", "price": 235.0, "side": "SELL", "quantity": 1, "tif": "GTC" }),
        )
        .unwrap();
        assert_eq!(status(&st, ids[0]), OrderStatus::Submitted);
        assert_eq!(status(&st, ids[1]), OrderStatus::PreSubmitted);
        move_to(&mut st, &u, AAPL, 236.0);
        assert_eq!(status(&st, ids[0]), OrderStatus::Filled);
        assert_eq!(status(&st, ids[1]), OrderStatus::Cancelled);
        assert_eq!(status(&st, other), OrderStatus::Filled);
        assert_eq!(position(&st, AAPL), 89.0);
    }

    #[test]
    fn a_group_member_that_fills_at_once_cancels_the_rest_at_placement() {
        let (u, mut st) = setup();
        move_to(&mut st, &u, AAPL, 230.0);
        let ids = place(
            &mut st,
            &u,
            json!([
                { "conid": AAPL, "orderType": "LMT", "price": 231.0, "side": "BUY", "quantity": 1, "isSingleGroup": true },
                { "conid": AAPL, "orderType": "LMT", "price": 220.0, "side": "BUY", "quantity": 1, "isSingleGroup": true },
            ]),
        )
        .unwrap();
        assert_eq!(status(&st, ids[0]), OrderStatus::Filled);
        assert_eq!(status(&st, ids[1]), OrderStatus::Cancelled);
        // Without the flag, orders of one placement are independent.
        let ids = place(
            &mut st,
            &u,
            json!([
                { "conid": AAPL, "orderType": "LMT", "price": 231.0, "side": "BUY", "quantity": 1 },
                { "conid": AAPL, "orderType": "LMT", "price": 220.0, "side": "BUY", "quantity": 1 },
            ]),
        )
        .unwrap();
        assert_eq!(status(&st, ids[0]), OrderStatus::Filled);
        assert_eq!(status(&st, ids[1]), OrderStatus::Submitted);
    }

    #[test]
    fn bracket_parent_fill_activates_children_and_the_stop_cancels_the_target() {
        let (u, mut st) = setup();
        move_to(&mut st, &u, AAPL, 230.0);
        let ids = place(
            &mut st,
            &u,
            json!([
                { "conid": AAPL, "orderType": "LMT", "price": 229.0, "side": "BUY", "quantity": 10, "tif": "GTC", "cOID": "entry" },
                { "conid": AAPL, "orderType": "LMT", "price": 240.0, "side": "SELL", "quantity": 10, "tif": "GTC", "cOID": "target", "parentId": "entry" },
                { "conid": AAPL, "orderType": "STP", "price": 220.0, "side": "SELL", "quantity": 10, "tif": "GTC", "cOID": "stop", "parentId": "entry" },
            ]),
        )
        .unwrap();
        let [entry, target, stop] = [ids[0], ids[1], ids[2]];
        assert_eq!(status(&st, entry), OrderStatus::Submitted);
        assert_eq!(status(&st, target), OrderStatus::PreSubmitted);
        assert_eq!(status(&st, stop), OrderStatus::PreSubmitted);
        // A price under the stop does nothing while the parent is unfilled.
        st.market.set_price(AAPL, 219.0);
        st.try_fill(&u, stop);
        assert_eq!(status(&st, stop), OrderStatus::PreSubmitted);
        move_to(&mut st, &u, AAPL, 228.9);
        assert_eq!(status(&st, entry), OrderStatus::Filled);
        assert_eq!(status(&st, target), OrderStatus::Submitted);
        // The stop leg works too but, like every stop, shows PreSubmitted until it triggers.
        assert_eq!(status(&st, stop), OrderStatus::PreSubmitted);
        assert_eq!(position(&st, AAPL), 110.0);
        move_to(&mut st, &u, AAPL, 219.5);
        assert_eq!(status(&st, stop), OrderStatus::Filled);
        assert_eq!(status(&st, target), OrderStatus::Cancelled);
        assert_eq!(position(&st, AAPL), 100.0);
    }

    /// The conidex of a call spread on AAPL's `n`th expiry: +1 `long` call, -1 `short` call.
    fn call_spread(u: &Universe, n: usize, long: f64, short: f64) -> (String, i64, i64) {
        let e = option_expiries(u.today, 3)[n];
        let (a, b) = (
            option_conid("AAPL", e, long, 'C'),
            option_conid("AAPL", e, short, 'C'),
        );
        (format!("28812380;;;{a}/1,{b}/-1"), a, b)
    }

    fn combo(conidex: &str, side: &str, order_type: &str, price: Option<f64>, qty: f64) -> Value {
        let mut o = json!({ "conidex": conidex, "orderType": order_type, "side": side, "quantity": qty, "tif": "DAY" });
        if let Some(p) = price {
            o["price"] = json!(p);
        }
        o
    }

    #[test]
    fn combo_natural_prices_come_from_the_legs_quotes() {
        let (u, mut st) = setup();
        move_to(&mut st, &u, AAPL, 230.0);
        let (conidex, a, b) = call_spread(&u, 0, 230.0, 240.0);
        let cb = Combo::parse(&u, &conidex).unwrap();
        let (qa, qb) = (
            st.market.quote(&u, a).unwrap(),
            st.market.quote(&u, b).unwrap(),
        );
        let (ask, buy_legs) = st.combo_fills(&u, &cb, Side::Buy).unwrap();
        let (bid, sell_legs) = st.combo_fills(&u, &cb, Side::Sell).unwrap();
        assert!((ask - (qa.ask - qb.bid)).abs() < 1e-9);
        assert!((bid - (qa.bid - qb.ask)).abs() < 1e-9);
        assert!(ask > bid && bid > 0.0);
        assert_eq!(
            buy_legs.iter().map(|l| l.side).collect::<Vec<_>>(),
            [Side::Buy, Side::Sell]
        );
        assert_eq!(
            sell_legs.iter().map(|l| l.side).collect::<Vec<_>>(),
            [Side::Sell, Side::Buy]
        );
        assert_eq!(cb.conidex(), conidex);
        let c = cb.contract(&u);
        assert_eq!((c.sec_type.as_str(), c.symbol.as_str()), ("BAG", "AAPL"));
        assert_eq!(c.multiplier, 100.0);
    }

    #[test]
    fn combo_market_order_books_one_execution_per_leg() {
        let (u, mut st) = setup();
        move_to(&mut st, &u, AAPL, 230.0);
        // The account holds two of the 240 calls of the second expiry: the short leg closes them.
        let (conidex, a, b) = call_spread(&u, 1, 230.0, 240.0);
        assert_eq!(position(&st, b), 2.0);
        let cash0 = st.accounts[ACCT].cash["USD"];
        let (qa, qb) = (
            st.market.quote(&u, a).unwrap(),
            st.market.quote(&u, b).unwrap(),
        );
        let id = place_one(&mut st, &u, combo(&conidex, "BUY", "MKT", None, 2.0)).unwrap();
        let o = &st.orders.book[&id];
        assert_eq!(o.status, OrderStatus::Filled);
        assert_eq!(o.req.conid, USD_SPREAD_TEMPLATE);
        assert!((o.avg_fill - (qa.ask - qb.bid)).abs() < 1e-9);
        let ex: Vec<_> = st
            .orders
            .executions
            .iter()
            .filter(|e| e.order_id == id)
            .collect();
        assert_eq!(ex.len(), 2);
        assert_eq!(
            (ex[0].conid, ex[0].side, ex[0].qty, ex[0].price),
            (a, Side::Buy, 2.0, qa.ask)
        );
        assert_eq!(
            (ex[1].conid, ex[1].side, ex[1].qty, ex[1].price),
            (b, Side::Sell, 2.0, qb.bid)
        );
        assert_eq!(position(&st, a), 2.0);
        assert_eq!(position(&st, b), 0.0);
        let fees: f64 = ex.iter().map(|e| e.commission).sum();
        let expected = cash0 - 200.0 * qa.ask + 200.0 * qb.bid - fees;
        assert!((st.accounts[ACCT].cash["USD"] - expected).abs() < 1e-6);
    }

    #[test]
    fn combo_limit_rests_until_the_market_reaches_it() {
        let (u, mut st) = setup();
        move_to(&mut st, &u, AAPL, 230.0);
        let (conidex, a, b) = call_spread(&u, 0, 230.0, 240.0);
        let cb = Combo::parse(&u, &conidex).unwrap();
        let bid = st.combo_fills(&u, &cb, Side::Sell).unwrap().0;
        let limit = ((bid + 0.5) * 100.0).round() / 100.0;
        let id = place_one(
            &mut st,
            &u,
            combo(&conidex, "SELL", "LMT", Some(limit), 1.0),
        )
        .unwrap();
        assert_eq!(status(&st, id), OrderStatus::Submitted);
        // Deep in the money the spread is worth close to its width.
        move_to(&mut st, &u, AAPL, 260.0);
        let o = &st.orders.book[&id];
        assert_eq!(o.status, OrderStatus::Filled);
        assert!(o.avg_fill >= limit);
        assert_eq!((position(&st, a), position(&st, b)), (-1.0, 1.0));
        // A buy below the natural ask rests; raising its price to the ask fills it.
        let ask = st.combo_fills(&u, &cb, Side::Buy).unwrap().0;
        let low = ((ask - 1.0) * 100.0).round() / 100.0;
        let id = place_one(&mut st, &u, combo(&conidex, "BUY", "LMT", Some(low), 1.0)).unwrap();
        assert_eq!(status(&st, id), OrderStatus::Submitted);
        let high = ((ask + 0.05) * 100.0).round() / 100.0;
        let rep = st.modify_order(&u, ACCT, id, Some(&json!({ "price": high })));
        assert_eq!(rep.status, 200, "{}", rep.body);
        assert_eq!(status(&st, id), OrderStatus::Filled);
        assert!((st.orders.book[&id].avg_fill - ask).abs() < 1e-9);
        assert_eq!((position(&st, a), position(&st, b)), (0.0, 0.0));
    }

    #[test]
    fn combo_orders_can_be_credits_and_cancelled() {
        let (u, mut st) = setup();
        move_to(&mut st, &u, AAPL, 230.0);
        let (conidex, _, _) = call_spread(&u, 0, 230.0, 240.0);
        // Selling the spread for a credit far above its value rests.
        let id = place_one(&mut st, &u, combo(&conidex, "SELL", "LMT", Some(9.5), 1.0)).unwrap();
        let rep = st.modify_order(
            &u,
            ACCT,
            id,
            Some(&json!({ "price": -0.25, "side": "BUY" })),
        );
        assert_eq!(rep.status, 200, "{}", rep.body);
        let o = &st.orders.book[&id];
        assert_eq!((o.req.price, o.req.side), (Some(-0.25), Side::Buy));
        assert_eq!(o.status, OrderStatus::Submitted);
        let rep = st.modify_order(
            &u,
            ACCT,
            id,
            Some(&json!({ "conidex": "28812380;;;265598/1,272093/-1" })),
        );
        assert!(
            rep.body["error"]
                .as_str()
                .unwrap()
                .contains("cannot be modified")
        );
        let rep = st.cancel_order(&u, ACCT, id);
        assert_eq!(rep.body["conid"], USD_SPREAD_TEMPLATE);
        assert_eq!(status(&st, id), OrderStatus::Cancelled);
    }

    #[test]
    fn malformed_or_unsupported_combos_are_rejected() {
        let (u, mut st) = setup();
        let e0 = option_expiries(u.today, 3)[0];
        let c230 = option_conid("AAPL", e0, 230.0, 'C');
        let seven: Vec<String> = [200.0, 205.0, 210.0, 215.0, 220.0, 225.0, 230.0]
            .iter()
            .map(|k| format!("{}/1", option_conid("AAPL", e0, *k, 'C')))
            .collect();
        let cases = [
            (format!("28812380;;;{c230}/1"), "2 to 6 legs"),
            (format!("28812380;;;{}", seven.join(",")), "2 to 6 legs"),
            (format!("28812380;;;{c230}/1,{c230}/-1"), "more than once"),
            (
                format!("28812380;;;{c230}/1,999999/-1"),
                "Combo leg 999999 was not found",
            ),
            (
                format!("28812380;;;{c230}/0,265598/1"),
                "Invalid combo conidex",
            ),
            (
                format!("28812380;;;{c230}:1,265598/1"),
                "Invalid combo conidex",
            ),
            (
                "abc;;;265598/1,272093/-1".to_string(),
                "Invalid combo conidex",
            ),
            ("28812380;;;".to_string(), "Invalid combo conidex"),
            ("28812381;;;265598/1,272093/-1".to_string(), "use 28812380"),
            (
                "28812380;;;265598/1,12087792/-1".to_string(),
                "combo legs must be stocks",
            ),
            (
                "28812380;;;265598/1,416904/-1".to_string(),
                "combo legs must be stocks",
            ),
        ];
        for (conidex, text) in cases {
            let e = place_one(&mut st, &u, combo(&conidex, "BUY", "MKT", None, 1.0)).unwrap_err();
            assert!(e.contains(text), "{conidex} -> {e}");
        }
        let ok = "28812380;;;265598/1,272093/-1";
        let e = place_one(&mut st, &u, combo(ok, "BUY", "STP", Some(1.0), 1.0)).unwrap_err();
        assert!(e.contains("use MKT or LMT"), "{e}");
        let e = place_one(&mut st, &u, combo(ok, "BUY", "LMT", None, 1.0)).unwrap_err();
        assert!(e.contains("net price per combo unit"), "{e}");
        let e = place_one(&mut st, &u, combo(ok, "BUY", "MKT", None, 1.5)).unwrap_err();
        assert!(e.contains("whole number"), "{e}");
        let e = place_one(
            &mut st,
            &u,
            json!({ "conid": 28812380, "orderType": "MKT", "side": "BUY", "quantity": 1 }),
        )
        .unwrap_err();
        assert!(e.contains("spread template"), "{e}");
        assert!(st.orders.book.is_empty());
    }

    #[test]
    fn combo_whatif_sums_the_legs_and_places_nothing() {
        let (u, mut st) = setup();
        move_to(&mut st, &u, AAPL, 230.0);
        let (conidex, _, _) = call_spread(&u, 0, 230.0, 240.0);
        let cb = Combo::parse(&u, &conidex).unwrap();
        let ask = st.combo_fills(&u, &cb, Side::Buy).unwrap().0;
        let rep = st.whatif(
            &u,
            ACCT,
            Some(&json!({ "orders": [combo(&conidex, "BUY", "MKT", None, 2.0)] })),
        );
        assert_eq!(rep.status, 200, "{}", rep.body);
        let v = rep.body;
        // Two option legs of 2 contracts each: 1.30 USD apiece.
        assert_eq!(v["amount"]["commission"], "2.60 USD");
        assert_eq!(
            v["amount"]["amount"],
            format!("{} USD (2 Combos)", grouped(2.0 * ask * 100.0))
        );
        assert_eq!(v["legs"].as_array().unwrap().len(), 2);
        assert_eq!(v["legs"][1]["side"], "SELL");
        assert_eq!(v["legs"][1]["position"]["change"], "-2");
        assert!(v["position"]["after"].as_str().unwrap().contains("AAPL"));
        assert!(st.orders.book.is_empty() && st.orders.executions.is_empty());
    }
}
