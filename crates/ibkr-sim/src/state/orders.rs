//! Orders: parsing and validating order requests, IBKR's question/reply flow, the order book
//! (every order ever accepted), fills against the simulated market, modify and cancel, and the
//! what-if preview.
//!
//! Marketable orders (MKT, MIDPRICE, or a limit crossing the quote) fill at once at the quote;
//! others rest as working orders and are checked after every market step. Stops trigger on the
//! last price. Bracket children (`parentId` naming a sibling's `cOID`) wait as `PreSubmitted`
//! until their parent fills, and cancel each other (OCA) when one fills. Rejections are HTTP 200
//! `{"error": ...}` like the live service; malformed requests are 400.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde_json::{Value, json};

use crate::config::{QuestionPolicy, QuestionRules};
use crate::state::State;
use crate::state::accounts::{Execution, Side, commission, grouped};
use crate::universe::{Contract, SecType, Universe};

/// Order types the simulator accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderType {
    Mkt,
    Lmt,
    Stp,
    StpLmt,
    Midprice,
}

impl OrderType {
    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().replace(' ', "_").as_str() {
            "MKT" | "MARKET" => Some(Self::Mkt),
            "LMT" | "LIMIT" => Some(Self::Lmt),
            "STP" | "STOP" => Some(Self::Stp),
            "STOP_LIMIT" | "STP_LMT" | "STPLMT" => Some(Self::StpLmt),
            "MIDPRICE" => Some(Self::Midprice),
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
        }
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
    let conid = obj
        .get("conid")
        .and_then(num)
        .or_else(|| {
            obj.get("conidex")
                .and_then(Value::as_str)
                .and_then(|s| s.split('@').next()?.parse().ok())
        })
        .ok_or("Missing conid")? as i64;
    let contract = universe
        .get(conid)
        .ok_or_else(|| format!("Contract {conid} was not found"))?;
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
    let price = obj.get("price").and_then(num);
    let aux = obj.get("auxPrice").and_then(num);
    match order_type {
        OrderType::Lmt | OrderType::Stp if !price.is_some_and(|p| p > 0.0) => {
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
    })
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
        let q = self.market.quote(universe, r.conid);
        match (r.order_type, r.price) {
            (OrderType::Lmt | OrderType::StpLmt | OrderType::Stp, Some(p)) => p,
            _ => q
                .map(|q| if r.side == Side::Buy { q.ask } else { q.bid })
                .unwrap_or(0.0),
        }
    }

    /// The questions (id, text) the policy asks for these orders, less suppressed ids.
    fn questions_for(
        &self,
        universe: &Universe,
        reqs: &[OrderRequest],
    ) -> VecDeque<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let first = reqs.first();
        let contract = first.and_then(|r| universe.get(r.conid));
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
            let Some(c) = universe.get(r.conid) else {
                continue;
            };
            let last = self.market.last(universe, r.conid).unwrap_or(0.0);
            let value = self.order_value(universe, r);
            let mut push = |id: &str| {
                if !out.iter().any(|(i, _)| i == id) {
                    out.push((id.to_string(), question_text(id, Some(c), Some(r), value)));
                }
            };
            if rules.no_market_data && !self.session.subscriptions.contains_key(&r.conid) {
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
            if rules.stop_order && matches!(r.order_type, OrderType::Stp | OrderType::StpLmt) {
                push("o10331");
            }
        }
        out
    }

    fn order_value(&self, universe: &Universe, r: &OrderRequest) -> f64 {
        let mult = universe.get(r.conid).map(|c| c.multiplier).unwrap_or(1.0);
        r.qty * self.reference_price(universe, r) * mult
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
            let status =
                if parent.is_some() || matches!(r.order_type, OrderType::Stp | OrderType::StpLmt) {
                    OrderStatus::PreSubmitted
                } else {
                    OrderStatus::Submitted
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
                    request_id,
                    confirmed_questions: asked.clone(),
                },
            );
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
        let Some(q) = self.market.quote(universe, o.req.conid) else {
            return;
        };
        let r = &o.req;
        let buy = r.side == Side::Buy;
        let touch = if buy { q.ask } else { q.bid };
        let crosses = |limit: f64| if buy { touch <= limit } else { touch >= limit };
        let mut triggered = o.triggered;
        let stop = match r.order_type {
            OrderType::Stp => r.price,
            OrderType::StpLmt => r.aux,
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
                let mid = crate::market::round_tick(
                    q.mid(),
                    universe.get(r.conid).map(|c| c.tick).unwrap_or(0.01),
                );
                match r.price {
                    Some(cap) if (buy && mid > cap) || (!buy && mid < cap) => None,
                    _ => Some(mid),
                }
            }
            OrderType::Lmt => r.price.filter(|l| crosses(*l)).map(|_| touch),
            OrderType::Stp => triggered.then_some(touch),
            OrderType::StpLmt => r.price.filter(|l| triggered && crosses(*l)).map(|_| touch),
        };
        let ioc = r.tif == "IOC";
        let o = self.orders.book.get_mut(&id).expect("order exists");
        if triggered && !o.triggered {
            o.triggered = true;
            o.status = OrderStatus::Submitted;
        }
        match fill_price {
            Some(p) => self.execute(universe, id, p),
            None if ioc => {
                o.status = OrderStatus::Cancelled;
                o.updated_ms = chrono::Utc::now().timestamp_millis();
            }
            None => {}
        }
    }

    fn execute(&mut self, universe: &Universe, id: i64, price: f64) {
        let now = chrono::Utc::now().timestamp_millis();
        let (req, remaining) = {
            let o = &self.orders.book[&id];
            (o.req.clone(), o.req.qty - o.filled)
        };
        let Some(contract) = universe.get(req.conid) else {
            return;
        };
        let fee = commission(contract, remaining, price);
        let Some(account) = self.accounts.get_mut(&req.account) else {
            return;
        };
        let after = account.apply_fill(contract, req.side, remaining, price, fee);
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
            order_id: id,
            account: req.account.clone(),
            conid: req.conid,
            side: req.side,
            qty: remaining,
            price,
            commission: fee,
            time_ms: now,
            order_ref: req.coid.clone(),
            exchange,
            position_after: after,
        });
        let o = self.orders.book.get_mut(&id).expect("order exists");
        o.avg_fill = if o.filled > 0.0 {
            (o.avg_fill * o.filled + price * remaining) / o.req.qty
        } else {
            price
        };
        o.filled = o.req.qty;
        o.status = OrderStatus::Filled;
        o.updated_ms = now;
        let parent = o.parent;
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
                && !matches!(child.req.order_type, OrderType::Stp | OrderType::StpLmt)
            {
                child.status = OrderStatus::Submitted;
            }
        }
        if let Some(p) = parent {
            for sib in self.orders.book.values_mut() {
                if sib.parent == Some(p) && sib.id != id && sib.status.working() {
                    sib.status = OrderStatus::Cancelled;
                    sib.updated_ms = now;
                }
            }
        }
        for c in children {
            self.try_fill(universe, c);
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
        obj.entry("side")
            .or_insert(json!(existing.req.side.as_str()));
        obj.entry("orderType")
            .or_insert(json!(existing.req.order_type.upper_name()));
        obj.entry("quantity").or_insert(json!(existing.req.qty));
        obj.entry("tif").or_insert(json!(existing.req.tif));
        if let Some(p) = existing.req.price {
            obj.entry("price").or_insert(json!(p));
        }
        if let Some(a) = existing.req.aux {
            obj.entry("auxPrice").or_insert(json!(a));
        }
        obj.remove("cOID");
        let mut req = match parse_one(universe, account, &merged) {
            Ok(r) => r,
            Err(e) => return OrderReply::reject(e),
        };
        if req.conid != existing.req.conid {
            return OrderReply::reject("The contract of an order cannot be modified");
        }
        req.coid = existing.req.coid.clone();
        req.parent_coid = existing.req.parent_coid.clone();
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
        o.req = req;
        o.updated_ms = chrono::Utc::now().timestamp_millis();
        let status = o.status.as_str();
        let reply = json!([{ "order_id": order_id.to_string(), "order_status": status, "encrypt_message": "1" }]);
        self.try_fill(universe, order_id);
        OrderReply::ok(reply, true)
    }

    /// `DELETE /iserver/account/{accountId}/order/{orderId}`.
    pub(crate) fn cancel_order(&mut self, account: &str, order_id: i64) -> OrderReply {
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
        o.status = OrderStatus::Cancelled;
        o.updated_ms = now;
        let conid = o.req.conid;
        for child in self.orders.book.values_mut() {
            if child.parent == Some(order_id) && child.status.working() {
                child.status = OrderStatus::Cancelled;
                child.updated_ms = now;
            }
        }
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
        let c = universe.get(r.conid).expect("validated conid");
        let price = self.reference_price(universe, r);
        let fee = commission(c, r.qty, price);
        let acct = &self.accounts[account];
        let before = acct.value(universe, &self.market);
        // The margin and equity impact assumes a fill at the current quote.
        let touch = self
            .market
            .quote(universe, r.conid)
            .map(|q| if r.side == Side::Buy { q.ask } else { q.bid })
            .unwrap_or(price);
        let mut sim = acct.clone();
        sim.apply_fill(c, r.side, r.qty, touch, fee);
        let after = sim.value(universe, &self.market);
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
        let amount = r.qty * price * c.multiplier;
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
            "position": {
                "current": fmt_qty(pos_before),
                "change": fmt_qty(r.side.sign() * r.qty),
                "after": fmt_qty(pos_before + r.side.sign() * r.qty),
            },
            "error": Value::Null,
        });
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
