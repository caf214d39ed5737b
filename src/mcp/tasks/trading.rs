//! Orders by symbol: preview, place (single orders, brackets, exits for a held position,
//! combos), modify and cancel.
//!
//! Each tool turns what a trader says into IBKR order tickets and plans calls of the generated
//! order tools (`get_order_preview`, `place_orders`, `modify_iserver_order`,
//! `cancel_iserver_order`); the calls then take the whole path of a write (trading switch, kill
//! switch, account rules, limits, preview token, IBKR's questions, audit), so nothing here
//! decides whether an order may go. What is decided here is only the ticket:
//! - `STP` carries its trigger in `price`; `STP LMT` is IBKR's `STOP_LIMIT` with the limit in
//!   `price` and the trigger in `auxPrice`; `TRAIL` carries `trailingAmt` and `trailingType`;
//! - a percent offset from last is turned into a price once, at planning time, and a preview
//!   remembers the exact tickets it showed, so the order placed with its token is the order
//!   previewed, not one re-priced a minute later;
//! - a bracket's children name the parent's `cOID` in `parentId`; exit orders for a position
//!   (take profit and stop loss together) are one OCA group (`isSingleGroup`);
//! - a combo is IBKR's `conidex` form `28812380;;;{leg}/{ratio},...` (28812380: the USD spread
//!   template), priced net per combo.

use serde_json::{Map, Value, json};

use super::writes::{Plan, Planned, Shape};
use super::{Ctx, Run, Task, row, table_schema};
use crate::error::ToolError;
use crate::ibkr::gateway::ops;
use crate::ibkr::market::number;
use crate::mcp::quotes;

/// IBKR's spread template conid for combos in US dollars.
const USD_SPREAD: i64 = 28_812_380;
/// Most legs IBKR takes in a combo.
const MAX_LEGS: usize = 6;
/// Order statuses of orders that are still working.
const WORKING: &[&str] = &[
    "presubmitted",
    "submitted",
    "pendingsubmit",
    "apipending",
    "inactive",
];

/// The generated tools the order tasks plan.
pub(super) const PREVIEW_TOOL: &str = "get_order_preview";
const PLACE_TOOL: &str = "place_orders";
const MODIFY_TOOL: &str = "modify_iserver_order";
const CANCEL_TOOL: &str = "cancel_iserver_order";

/// The input properties of an order, shared by place_order and preview_order.
fn order_props() -> Vec<(&'static str, Value)> {
    // Positive prices are checked in code (`positive`): a bound per field costs every
    // conversation tokens.
    let price = json!({ "type": "number" });
    vec![
        ("account", json!({ "type": "string" })),
        (
            "symbol",
            json!({ "type": "string", "description": "AAPL, ES Mar27, AAPL 2027-01-15 200 C or a conid" }),
        ),
        (
            "legs",
            json!({ "type": "array", "minItems": 2, "maxItems": MAX_LEGS,
                "description": "USD combo legs; prices net",
                "items": { "type": "object", "required": ["symbol", "ratio"],
                    "additionalProperties": false, "properties": {
                        "symbol": { "type": "string" },
                        "ratio": { "type": "integer", "description": "< 0 sells the leg" } } } }),
        ),
        ("side", json!({ "enum": ["BUY", "SELL"] })),
        ("quantity", json!({ "type": "number" })),
        (
            "type",
            json!({ "enum": ["MKT", "LMT", "STP", "STP LMT", "TRAIL", "MOC", "LOC"] }),
        ),
        ("limit_price", json!({ "type": "number" })),
        ("stop_price", price.clone()),
        (
            "offset_pct",
            json!({ "type": "number", "description": "limit or stop as % from last: -1 = 1% below" }),
        ),
        ("trailing_amount", price.clone()),
        ("trailing_percent", price.clone()),
        ("tif", json!({ "enum": ["DAY", "GTC", "IOC", "OPG"] })),
        ("outside_rth", json!({ "type": "boolean" })),
        ("take_profit", price.clone()),
        ("stop_loss", price),
        ("preview_token", json!({ "type": "string" })),
    ]
}

fn props(list: &[(&str, Value)]) -> Value {
    Value::Object(
        list.iter()
            .map(|(n, v)| ((*n).to_string(), v.clone()))
            .collect(),
    )
}

fn order_output() -> Value {
    table_schema(&[("order", json!({ "type": "string" }))])
}

pub(super) fn tasks() -> Vec<Task> {
    let mut preview_props = order_props();
    preview_props.retain(|(n, _)| *n != "preview_token");
    preview_props.push((
        "order_id",
        json!({ "type": "string", "description": "preview a change of this order" }),
    ));
    let change: Vec<(&str, Value)> = order_props()
        .into_iter()
        .filter(|(n, _)| {
            [
                "account",
                "quantity",
                "limit_price",
                "stop_price",
                "trailing_amount",
                "trailing_percent",
                "tif",
                "outside_rth",
                "preview_token",
            ]
            .contains(n)
        })
        .chain([("order_id", json!({ "type": "string" }))])
        .collect();
    vec![
        Task {
            name: "place_order",
            description: "Places an order by symbol. type: MKT, LMT (limit_price), STP \
                          (stop_price), STP LMT (both), TRAIL (trailing_amount or \
                          trailing_percent), MOC, LOC; offset_pct prices LMT/STP from last. \
                          take_profit/stop_loss with type: a bracket; without type: exits for a \
                          held position (OCA; side and quantity from it). tif: DAY by default.",
            input: json!({ "type": "object", "properties": props(&order_props()) }),
            output: order_output(),
            run: Run::Write {
                plan: |c| Box::pin(place(c)),
                destructive: false,
            },
        },
        Task {
            name: "preview_order",
            description: "place_order's (or, with order_id, modify_order's) cost, margin and \
                          IBKR's warnings, without sending; preview_token when previews are \
                          required.",
            input: json!({ "type": "object", "properties": props(&preview_props) }),
            output: row(&[
                ("order", json!({ "type": "string" })),
                ("cost", json!({ "type": "string" })),
                // Absent when IBKR gives no value ("NA"), no warning, or no token.
                ("equity_after", json!({ "type": "number" })),
                ("initial_margin_after", json!({ "type": "number" })),
                ("maintenance_margin_after", json!({ "type": "number" })),
                ("warning", json!({ "type": "string" })),
                ("preview_token", json!({ "type": "string" })),
            ]),
            run: Run::Write {
                plan: |c| Box::pin(preview(c)),
                destructive: false,
            },
        },
        Task {
            name: "modify_order",
            description: "Changes a working order: order_id and only what changes.",
            input: json!({ "type": "object", "required": ["order_id"],
                "properties": props(&change) }),
            output: order_output(),
            run: Run::Write {
                plan: |c| Box::pin(modify(c)),
                destructive: true,
            },
        },
        Task {
            name: "cancel_order",
            description: "Cancels a working order (order_id), or every working order of the \
                          account (all: true).",
            input: json!({ "type": "object", "properties": {
                "order_id": { "type": "string" },
                "all": { "type": "boolean" },
                "account": { "type": "string" },
            } }),
            output: table_schema(&[]),
            run: Run::Write {
                plan: |c| Box::pin(cancel(c)),
                destructive: true,
            },
        },
    ]
}

/// An order id as the model gave it: digits only (it goes into a path).
fn order_id(c: &Ctx<'_>) -> Result<Option<String>, ToolError> {
    match c.str_arg("order_id").map(str::trim) {
        None => Ok(None),
        Some(id) if !id.is_empty() && id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(id.to_string()))
        }
        Some(id) => Err(c.invalid(format!(
            "`order_id`: {id:?} is not an order id (digits, as get_account_orders lists them)"
        ))),
    }
}

fn f(c: &Ctx<'_>, name: &str) -> Option<f64> {
    c.args.get(name).and_then(Value::as_f64)
}

/// `x` rounded to `decimals`, without binary noise.
fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

fn fmt(x: f64) -> String {
    crate::ibkr::market::plain_number(x)
}

/// What an order is placed on: one contract, or a combo.
struct Instrument {
    /// `conid` or `conidex` for the ticket.
    key: (&'static str, Value),
    /// In words.
    label: String,
    /// The single contract's conid and type (None for a combo).
    single: Option<(i64, String)>,
}

async fn instrument(c: &Ctx<'_>) -> Result<Instrument, ToolError> {
    let legs = c.args.get("legs").and_then(Value::as_array);
    match (c.str_arg("symbol"), legs) {
        (Some(_), Some(_)) => Err(c.invalid("give `symbol` or `legs`, not both")),
        (None, None) => Err(c.invalid(
            "`symbol` is required (AAPL, ES Mar27, AAPL 2027-01-15 200 C, or a conid), or `legs` \
             for a combo",
        )),
        (Some(s), None) => {
            let r = c.resolve("symbol", s).await?;
            // A bare conid says nothing to the person confirming: name the contract.
            let label = if s.trim().bytes().all(|b| b.is_ascii_digit()) {
                format!("{} ({} conid {})", r.label, r.sec_type, r.conid)
            } else {
                r.label.clone()
            };
            Ok(Instrument {
                key: ("conid", json!(r.conid)),
                label,
                single: Some((r.conid, r.sec_type)),
            })
        }
        (None, Some(legs)) => {
            let mut parts = Vec::new();
            let mut words = Vec::new();
            let mut seen = Vec::new();
            for (i, leg) in legs.iter().enumerate() {
                let symbol = leg.get("symbol").and_then(Value::as_str).unwrap_or("");
                let ratio = leg.get("ratio").and_then(Value::as_i64).unwrap_or(0);
                if ratio == 0 {
                    return Err(c.invalid(format!("`legs[{i}].ratio`: must not be 0")));
                }
                let r = c.resolve(&format!("legs[{i}].symbol"), symbol).await?;
                if seen.contains(&r.conid) {
                    return Err(c.invalid(format!(
                        "`legs[{i}]`: {} is already a leg; give each contract once",
                        r.label
                    )));
                }
                seen.push(r.conid);
                parts.push(format!("{}/{ratio}", r.conid));
                words.push(format!("{} {:+}", r.label, ratio));
            }
            Ok(Instrument {
                key: (
                    "conidex",
                    json!(format!("{USD_SPREAD};;;{}", parts.join(","))),
                ),
                label: format!("combo [{}]", words.join(", ")),
                single: None,
            })
        }
    }
}

/// The last price of `conid`, for `field` (a percent offset, exit checks). A last that is
/// really the prior close (`C189.10`) or a halted value (`H...`) is refused: an order priced
/// from it would be priced from yesterday.
async fn last_price(c: &Ctx<'_>, conid: i64, label: &str, field: &str) -> Result<f64, ToolError> {
    let (entries, _) = c
        .warm_snapshot(&[conid.to_string()], &["31", quotes::AVAILABILITY])
        .await?;
    let raw = entries.first().and_then(|e| e.get("31"));
    if let Some(Value::String(t)) = raw
        && t.starts_with(['C', 'H'])
    {
        return Err(c.unresolved(format!(
            "`{field}`: IBKR's last price for {label} is {t} (a prior close or a halted value), \
             not a trade of this session; give explicit prices"
        )));
    }
    raw.and_then(super::market::field_number)
        .filter(|p| *p > 0.0)
        .ok_or_else(|| {
            c.unresolved(format!(
                "`{field}`: IBKR has no last price for {label} yet; give explicit prices \
                 instead, or ask again in a few seconds"
            ))
        })
}

/// `account`'s working orders as IBKR lists them, and whether the list had finished loading
/// (`snapshot`).
async fn working_listed(c: &Ctx<'_>, account: &str) -> Result<(Vec<Value>, bool), ToolError> {
    let v = c
        .fetch_patiently(
            "open orders",
            ops::LIVE_ORDERS,
            json!({ "accountId": account }),
        )
        .await?;
    let loaded = v.get("snapshot") != Some(&Value::Bool(false));
    // `{"orders": [...], "snapshot": ...}`, or (as some gateways answer) the bare array.
    let listed = v.get("orders").or(Some(&v)).and_then(Value::as_array);
    let working = listed
        .into_iter()
        .flatten()
        .filter(|o| {
            let acct = o
                .get("acct")
                .or_else(|| o.get("account"))
                .and_then(Value::as_str);
            acct.is_none_or(|a| a == account)
        })
        .filter(|o| {
            let status = o.get("status").and_then(Value::as_str).unwrap_or("");
            WORKING.contains(&status.to_ascii_lowercase().as_str())
        })
        .cloned()
        .collect();
    Ok((working, loaded))
}

/// Ids of `account`'s working orders on `conid` on `side`.
async fn working_orders(
    c: &Ctx<'_>,
    account: &str,
    conid: i64,
    side: &str,
) -> Result<Vec<String>, ToolError> {
    let (working, _) = working_listed(c, account).await?;
    Ok(working
        .iter()
        .filter(|o| o.get("conid").and_then(number) == Some(conid as f64))
        .filter(|o| {
            o.get("side")
                .and_then(Value::as_str)
                .is_some_and(|s| s.eq_ignore_ascii_case(side))
        })
        .filter_map(|o| super::id_text(o.get("orderId")))
        .collect())
}

fn opposite(side: &str) -> &'static str {
    if side == "BUY" { "SELL" } else { "BUY" }
}

/// Quantities and prices that must be positive (a combo's limit may be negative).
fn positive(c: &Ctx<'_>) -> Result<(), ToolError> {
    for name in [
        "quantity",
        "stop_price",
        "trailing_amount",
        "trailing_percent",
        "take_profit",
        "stop_loss",
    ] {
        if let Some(x) = f(c, name)
            && x <= 0.0
        {
            return Err(c.invalid(format!("`{name}` must be greater than 0")));
        }
    }
    Ok(())
}

/// The orders of a place_order or preview_order call: (account, tickets, words).
async fn tickets(c: &Ctx<'_>) -> Result<(String, Vec<Value>, String), ToolError> {
    positive(c)?;
    let account = c.one_account("for this order").await?;
    let inst = instrument(c).await?;
    let tif = c.str_arg("tif").unwrap_or("DAY").to_string();
    let kind = c.str_arg("type");
    let tp = f(c, "take_profit");
    let sl = f(c, "stop_loss");
    let exits = kind.is_none() && (tp.is_some() || sl.is_some());
    let mut side = c.str_arg("side").map(str::to_string);
    let mut quantity = f(c, "quantity");
    if exits {
        for entry in [
            "limit_price",
            "stop_price",
            "offset_pct",
            "trailing_amount",
            "trailing_percent",
        ] {
            if c.args.contains_key(entry) {
                return Err(c.invalid(format!(
                    "`{entry}` prices an entry order: give `type` too (a bracket), or leave it \
                     out for exit orders (take_profit and stop_loss alone)"
                )));
            }
        }
        let Some((conid, _)) = &inst.single else {
            return Err(c.invalid(
                "exit orders (take_profit/stop_loss without type) are for a held position in \
                 one contract; for a combo give type",
            ));
        };
        let conid = *conid;
        // Exits close what is held, no more, and never stack on exits already working.
        let held = position(c, &account, conid).await?.ok_or_else(|| {
            c.unresolved(format!(
                "account {account} holds no {}: exit orders (take_profit/stop_loss without \
                 type) close a position; to open one give type (a bracket)",
                inst.label
            ))
        })?;
        let close = if held > 0.0 { "SELL" } else { "BUY" };
        match side.as_deref() {
            Some(s) if s != close => {
                return Err(c.invalid(format!(
                    "`side`: the position in {} is {}; {s} would add to it, not exit it (use \
                     {close})",
                    inst.label,
                    fmt(held)
                )));
            }
            _ => side = Some(close.into()),
        }
        let q = quantity.unwrap_or(held.abs());
        if q > held.abs() {
            return Err(c.invalid(format!(
                "`quantity`: {} is more than the {} held in {}; exits close at most the position",
                fmt(q),
                fmt(held.abs()),
                inst.label
            )));
        }
        quantity = Some(q);
        let working = working_orders(c, &account, conid, close).await?;
        if !working.is_empty() {
            return Err(c.invalid(format!(
                "there are working {close} orders for {} already (order ids {}); exits would \
                 stack on them. Cancel them first (cancel_order) or change them (modify_order)",
                inst.label,
                working.join(", ")
            )));
        }
        // The take profit on the profit side of the market, the stop on the loss side.
        let last = last_price(c, conid, &inst.label, "take_profit/stop_loss").await?;
        let up = close == "SELL";
        let (profit, loss) = if up {
            ("above", "below")
        } else {
            ("below", "above")
        };
        if tp.is_some_and(|t| (t > last) != up) {
            return Err(c.invalid(format!(
                "`take_profit` must be {profit} the last price {} for a {close} exit (it would \
                 fill at once)",
                fmt(last)
            )));
        }
        if sl.is_some_and(|x| (x < last) != up) {
            return Err(c.invalid(format!(
                "`stop_loss` must be {loss} the last price {} for a {close} exit (it would \
                 trigger at once)",
                fmt(last)
            )));
        }
    }
    let side = side.ok_or_else(|| c.invalid("`side` is required: BUY or SELL"))?;
    let quantity = quantity.ok_or_else(|| c.invalid("`quantity` is required"))?;
    let decimals = match &inst.single {
        Some((_, t)) if t == "STK" || t == "OPT" => 2,
        _ => 4,
    };
    let mut base = Map::new();
    base.insert("acctId".into(), json!(account));
    base.insert(inst.key.0.into(), inst.key.1.clone());
    base.insert("quantity".into(), json!(quantity));
    base.insert("tif".into(), json!(tif));
    if let Some(rth) = c.args.get("outside_rth").and_then(Value::as_bool) {
        base.insert("outsideRTH".into(), json!(rth));
    }
    let mut orders = Vec::new();
    let mut words = Vec::new();
    let label = &inst.label;
    if exits {
        let exit_side = side.as_str();
        let both = tp.is_some() && sl.is_some();
        for (p, t, name) in [(tp, "LMT", "take profit"), (sl, "STP", "stop loss")] {
            let Some(p) = p else { continue };
            orders.push(exit_ticket(&base, exit_side, t, p));
            words.push(format!(
                "{name} {exit_side} {} {label} {t} {}",
                fmt(quantity),
                fmt(p)
            ));
        }
        if both {
            for o in &mut orders {
                o.insert("isSingleGroup".into(), json!(true));
            }
            words.push("one cancels the other".into());
        }
        words.push(tif.clone());
    } else {
        let kind = match kind {
            Some(k) => k,
            None if f(c, "limit_price").is_some() => "LMT",
            None => {
                return Err(c.invalid(
                    "`type` is required: MKT, LMT, STP, STP LMT, TRAIL, MOC or LOC (or give \
                     take_profit/stop_loss alone to exit a held position)",
                ));
            }
        };
        let mut entry = base.clone();
        entry.insert("side".into(), json!(side));
        let entry_price = entry_prices(c, kind, &inst, &mut entry, decimals).await?;
        let mut w = format!("{side} {} {label} {kind}", fmt(quantity));
        for (k, name) in [("price", ""), ("auxPrice", " stop")] {
            if let Some(p) = entry.get(k).and_then(Value::as_f64) {
                w.push_str(&format!("{name} {}", fmt(p)));
            }
        }
        if let Some(t) = entry.get("trailingAmt").and_then(Value::as_f64) {
            let unit = if entry.get("trailingType") == Some(&json!("%")) {
                "%"
            } else {
                ""
            };
            w.push_str(&format!(" trailing {}{unit}", fmt(t)));
        }
        w.push_str(&format!(" {tif}"));
        words.push(w);
        if tp.is_some() || sl.is_some() {
            check_bracket(c, &side, entry_price, tp, sl)?;
            let coid = format!("mcp-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            entry.insert("cOID".into(), json!(coid));
            orders.push(entry);
            let exit_side = opposite(&side);
            for (p, t, name) in [(tp, "LMT", "take profit"), (sl, "STP", "stop loss")] {
                let Some(p) = p else { continue };
                let mut o = exit_ticket(&base, exit_side, t, p);
                o.insert("parentId".into(), json!(coid));
                orders.push(o);
                words.push(format!("{name} {exit_side} {t} {}", fmt(p)));
            }
        } else {
            orders.push(entry);
        }
    }
    let words = format!(
        "{} on {}",
        words.join("; "),
        crate::audit::mask_account(&account)
    );
    Ok((
        account,
        orders.into_iter().map(Value::Object).collect(),
        words,
    ))
}

/// An exit ticket: `kind` (LMT for a take profit, STP for a stop loss) at `price` on `side`.
fn exit_ticket(
    base: &Map<String, Value>,
    side: &str,
    kind: &str,
    price: f64,
) -> Map<String, Value> {
    let mut o = base.clone();
    o.insert("side".into(), json!(side));
    o.insert("orderType".into(), json!(kind));
    o.insert("price".into(), json!(price));
    o
}

/// The prices of the entry order of type `kind`; returns its limit or stop price (for the
/// bracket check).
async fn entry_prices(
    c: &Ctx<'_>,
    kind: &str,
    inst: &Instrument,
    o: &mut Map<String, Value>,
    decimals: i32,
) -> Result<Option<f64>, ToolError> {
    let limit = f(c, "limit_price");
    let stop = f(c, "stop_price");
    let offset = f(c, "offset_pct");
    let trail = (f(c, "trailing_amount"), f(c, "trailing_percent"));
    let uses_offset = matches!(kind, "LMT" | "STP");
    if offset.is_some() && !uses_offset {
        return Err(c.invalid(format!(
            "`offset_pct` prices a LMT or STP order, not {kind}; give the prices"
        )));
    }
    if trail != (None, None) && kind != "TRAIL" {
        return Err(c.invalid(format!(
            "trailing_amount/trailing_percent belong to type TRAIL, not {kind}"
        )));
    }
    if let Some(l) = limit
        && l <= 0.0
        && inst.single.is_some()
    {
        return Err(
            c.invalid("`limit_price` must be greater than 0 (only a combo can be negative)")
        );
    }
    let from_offset = match offset {
        Some(pct) => {
            let Some((conid, sec_type)) = &inst.single else {
                return Err(
                    c.invalid("`offset_pct` needs one contract; price a combo with limit_price")
                );
            };
            if limit.is_some() || stop.is_some() {
                return Err(c.invalid("give offset_pct or a price, not both"));
            }
            if sec_type != "STK" && sec_type != "OPT" {
                return Err(c.invalid(format!(
                    "`offset_pct` prices stocks and options; a {sec_type} has its own tick size: \
                     give limit_price or stop_price"
                )));
            }
            if !(-50.0..=50.0).contains(&pct) {
                return Err(c.invalid("`offset_pct` must be between -50 and 50"));
            }
            let last = last_price(c, *conid, &inst.label, "offset_pct").await?;
            // Only a computed price is rounded (to cents, or 1/10,000 below a dollar and for
            // other contracts); a price the user gives goes as given.
            let raw = last * (1.0 + pct / 100.0);
            let p = round_to(raw, if raw < 1.0 { 4 } else { decimals });
            if p <= 0.0 {
                return Err(c.invalid("`offset_pct` gives no positive price"));
            }
            Some(p)
        }
        None => None,
    };
    let need = |v: Option<f64>, name: &str| {
        v.ok_or_else(|| c.invalid(format!("type {kind} needs `{name}`")))
    };
    let no = |v: Option<f64>, name: &str| match v {
        Some(_) => Err(c.invalid(format!("type {kind} takes no `{name}`"))),
        None => Ok(()),
    };
    let order_type = match kind {
        "MKT" | "MOC" => {
            no(limit, "limit_price")?;
            no(stop, "stop_price")?;
            kind
        }
        "LMT" | "LOC" => {
            no(stop, "stop_price")?;
            let p = need(limit.or(from_offset), "limit_price")?;
            o.insert("price".into(), json!(p));
            kind
        }
        "STP" => {
            no(limit, "limit_price")?;
            let p = need(stop.or(from_offset), "stop_price")?;
            o.insert("price".into(), json!(p));
            kind
        }
        "STP LMT" => {
            o.insert("price".into(), json!(need(limit, "limit_price")?));
            o.insert("auxPrice".into(), json!(need(stop, "stop_price")?));
            "STOP_LIMIT"
        }
        "TRAIL" => {
            no(limit, "limit_price")?;
            let (amount, unit) = match trail {
                (Some(a), None) => (a, "amt"),
                (None, Some(p)) => (p, "%"),
                _ => {
                    return Err(c.invalid(
                        "type TRAIL needs one of trailing_amount (price units) or \
                         trailing_percent",
                    ));
                }
            };
            o.insert("trailingAmt".into(), json!(amount));
            o.insert("trailingType".into(), json!(unit));
            if let Some(s) = stop {
                o.insert("price".into(), json!(s));
            }
            "TRAIL"
        }
        other => return Err(c.invalid(format!("`type`: {other:?} is not an order type"))),
    };
    if matches!(kind, "MOC" | "LOC") && o.get("tif") != Some(&json!("DAY")) {
        return Err(c.invalid(format!(
            "type {kind} is a DAY order; leave tif out or give DAY"
        )));
    }
    o.insert("orderType".into(), json!(order_type));
    Ok(o.get("price")
        .and_then(Value::as_f64)
        .filter(|_| kind != "TRAIL"))
}

/// A bracket's exits must be on the right sides of each other and of the entry.
fn check_bracket(
    c: &Ctx<'_>,
    side: &str,
    entry: Option<f64>,
    tp: Option<f64>,
    sl: Option<f64>,
) -> Result<(), ToolError> {
    let buy = side == "BUY";
    let above = |a: f64, b: f64| if buy { a > b } else { a < b };
    let (hi, lo) = if buy {
        ("above", "below")
    } else {
        ("below", "above")
    };
    if let (Some(t), Some(s)) = (tp, sl)
        && !above(t, s)
    {
        return Err(c.invalid(format!(
            "for a {side} bracket take_profit must be {hi} stop_loss"
        )));
    }
    if let Some(e) = entry {
        if tp.is_some_and(|t| !above(t, e)) {
            return Err(c.invalid(format!(
                "for a {side} bracket take_profit must be {hi} the entry price {}",
                fmt(e)
            )));
        }
        if sl.is_some_and(|s| !above(e, s)) {
            return Err(c.invalid(format!(
                "for a {side} bracket stop_loss must be {lo} the entry price {}",
                fmt(e)
            )));
        }
    }
    Ok(())
}

/// The size of `account`'s position in `conid` (signed), if it has one.
async fn position(c: &Ctx<'_>, account: &str, conid: i64) -> Result<Option<f64>, ToolError> {
    for page in 0..10 {
        let v = c
            .fetch(
                format!("positions of {account}"),
                ops::POSITIONS,
                json!({ "accountId": account, "pageId": page.to_string() }),
            )
            .await?;
        let items = v.as_array().cloned().unwrap_or_default();
        if let Some(p) = items
            .iter()
            .find(|p| p.get("conid").and_then(number) == Some(conid as f64))
            .and_then(|p| p.get("position").and_then(number))
            .filter(|p| *p != 0.0)
        {
            return Ok(Some(p));
        }
        if items.len() < 100 {
            break;
        }
    }
    Ok(None)
}

/// The task arguments that identify an order (everything but the preview token).
pub(super) fn order_fingerprint(c: &Ctx<'_>) -> String {
    let mut a = c.args.clone();
    a.remove("preview_token");
    crate::policy::fingerprint(&a)
}

async fn place(c: &Ctx<'_>) -> Result<Plan, ToolError> {
    if let Some(b) = c.previewed()? {
        let mut args = b.args.clone();
        args.insert(crate::mcp::PREVIEW_TOKEN_ARG.into(), json!(b.token));
        return Ok(Plan::one(Shape::Order, PLACE_TOOL, args, b.words));
    }
    let (account, orders, words) = tickets(c).await?;
    let mut args = Map::new();
    args.insert("accountId".into(), json!(account));
    args.insert("body".into(), json!({ "orders": orders }));
    c.pass_token(&mut args);
    Ok(Plan::one(Shape::Order, PLACE_TOOL, args, words))
}

async fn preview(c: &Ctx<'_>) -> Result<Plan, ToolError> {
    let (account, orders, words, order_id) = match order_id(c)? {
        Some(id) => {
            for new_order in [
                "symbol",
                "legs",
                "side",
                "type",
                "offset_pct",
                "take_profit",
                "stop_loss",
            ] {
                if c.args.contains_key(new_order) {
                    return Err(c.invalid(format!(
                        "`{new_order}` describes a new order; with order_id give only what \
                         changes (quantity, limit_price, stop_price, trailing_amount, \
                         trailing_percent, tif, outside_rth)"
                    )));
                }
            }
            let (account, body, words) = changed_order(c, &id).await?;
            (account, vec![body], words, Some(id))
        }
        None => {
            let (a, o, w) = tickets(c).await?;
            (a, o, w, None)
        }
    };
    let mut args = Map::new();
    args.insert("accountId".into(), json!(account));
    args.insert("body".into(), json!({ "orders": orders }));
    let mut plan = Plan::one(Shape::Preview, PREVIEW_TOOL, args, words);
    plan.order_id = order_id;
    Ok(plan)
}

async fn modify(c: &Ctx<'_>) -> Result<Plan, ToolError> {
    let id = order_id(c)?.ok_or_else(|| c.invalid("`order_id` is required"))?;
    let (account, body, words) = match c.previewed()? {
        Some(b) => {
            let body = b.args["body"]["orders"][0].clone();
            let account = b.args["accountId"].as_str().unwrap_or_default().to_string();
            (account, body, b.words)
        }
        None => changed_order(c, &id).await?,
    };
    let mut args = Map::new();
    args.insert("accountId".into(), json!(account));
    args.insert("orderId".into(), json!(id));
    args.insert("body".into(), body);
    c.pass_token(&mut args);
    Ok(Plan::one(Shape::Order, MODIFY_TOOL, args, words))
}

/// IBKR's status of order `id`. IBKR answers an unknown id with HTTP 503 `Order N is not
/// found`: that is the model's to fix, not a gateway failure.
async fn order_status(c: &Ctx<'_>, id: &str) -> Result<Value, ToolError> {
    match c
        .fetch(
            format!("order {id}"),
            ops::ORDER_STATUS,
            json!({ "orderId": id }),
        )
        .await
    {
        Err(ToolError::GatewayFailed { message, .. }) if message.contains("not found") => Err(c
            .unresolved(format!(
                "`order_id`: IBKR knows no order {id}; get_account_orders lists the working ones"
            ))),
        other => other,
    }
}

/// A `limit_price` argument that is not positive, for a single contract.
fn limit_arg_bad(c: &Ctx<'_>, combo: bool) -> bool {
    !combo && f(c, "limit_price").is_some_and(|l| l <= 0.0)
}

/// IBKR's order type names (`LIMIT`, `Stop Limit`, `TRAIL`) as ticket order types.
fn ticket_type(status_type: &str) -> Option<&'static str> {
    Some(
        match status_type
            .to_ascii_uppercase()
            .replace([' ', '_'], "")
            .as_str()
        {
            "LIMIT" | "LMT" => "LMT",
            "MARKET" | "MKT" => "MKT",
            "STOP" | "STP" => "STP",
            "STOPLIMIT" | "STPLMT" => "STOP_LIMIT",
            "TRAIL" | "TRAILINGSTOP" => "TRAIL",
            "MOC" | "MARKETONCLOSE" => "MOC",
            "LOC" | "LIMITONCLOSE" => "LOC",
            _ => return None,
        },
    )
}

/// A working order with the changes asked for: (account, ticket, words).
async fn changed_order(c: &Ctx<'_>, id: &str) -> Result<(String, Value, String), ToolError> {
    positive(c)?;
    let accounts = c.accounts().await?;
    let s = order_status(c, id).await?;
    let account = s.get("account").and_then(Value::as_str).unwrap_or("");
    if s.get("error").is_some() || account.is_empty() {
        return Err(c.unresolved(format!(
            "`order_id`: IBKR knows no order {id} ({}); get_account_orders lists the working ones",
            crate::error::ibkr_message(s.to_string().as_bytes())
        )));
    }
    if !accounts.iter().any(|a| a == account) {
        return Err(c.unresolved(format!(
            "`order_id`: order {id} is not on {}",
            accounts.join(", ")
        )));
    }
    let status = s.get("order_status").and_then(Value::as_str).unwrap_or("");
    if !WORKING.contains(&status.to_ascii_lowercase().as_str()) {
        return Err(c.unresolved(format!(
            "`order_id`: order {id} is {status}; only working orders can be changed"
        )));
    }
    let kind = s
        .get("order_type")
        .and_then(Value::as_str)
        .and_then(ticket_type)
        .ok_or_else(|| {
            c.unresolved(format!(
                "order {id} has an order type this tool cannot change ({}); use the orders \
                 toolset's modify_iserver_order",
                s.get("order_type").cloned().unwrap_or(Value::Null)
            ))
        })?;
    // Everything the ticket carries over must be there: a guess (a side, a size of 0, no
    // price) would change the order instead of keeping it.
    let missing = |what: &str| {
        c.unresolved(format!(
            "IBKR's status of order {id} does not say its {what}, so the order cannot be \
             re-sent safely; change it with the orders toolset's modify_iserver_order, or \
             cancel it and place a new one"
        ))
    };
    let side = match s
        .get("side")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_uppercase()
        .as_str()
    {
        "B" | "BUY" | "BOT" => "BUY",
        "S" | "SELL" | "SLD" => "SELL",
        _ => return Err(missing("side")),
    };
    let g = |k: &str| s.get(k).and_then(number);
    let mut o = Map::new();
    match s.get("conidex").and_then(Value::as_str) {
        Some(x) if x.contains(";;;") => o.insert("conidex".into(), json!(x)),
        _ => {
            let conid = g("conid")
                .filter(|c| *c > 0.0)
                .ok_or_else(|| missing("contract"))?;
            o.insert("conid".into(), json!(conid as i64))
        }
    };
    let combo = o.contains_key("conidex");
    o.insert("acctId".into(), json!(account));
    o.insert("side".into(), json!(side));
    o.insert("orderType".into(), json!(kind));
    let quantity = f(c, "quantity")
        .or(g("total_size"))
        .filter(|q| *q > 0.0)
        .ok_or_else(|| missing("quantity"))?;
    o.insert("quantity".into(), json!(quantity));
    if limit_arg_bad(c, combo) {
        return Err(
            c.invalid("`limit_price` must be greater than 0 (only a combo can be negative)")
        );
    }
    let tif = c
        .str_arg("tif")
        .map(str::to_string)
        .or_else(|| {
            s.get("tif")
                .and_then(Value::as_str)
                .map(str::to_ascii_uppercase)
        })
        // At-the-close orders show as CLOSE and are placed as DAY.
        .map(|t| if t == "CLOSE" { "DAY".into() } else { t })
        .unwrap_or_else(|| "DAY".into());
    o.insert("tif".into(), json!(tif));
    if let Some(rth) = c
        .args
        .get("outside_rth")
        .or_else(|| s.get("outside_rth"))
        .and_then(Value::as_bool)
    {
        o.insert("outsideRTH".into(), json!(rth));
    }
    let limit = f(c, "limit_price");
    let stop = f(c, "stop_price");
    let old_limit = g("limit_price");
    let old_stop = g("stop_price").or(g("aux_price"));
    let mut changes = Vec::new();
    match kind {
        "LMT" | "LOC" => {
            let p = limit.or(old_limit).ok_or_else(|| missing("limit price"))?;
            o.insert("price".into(), json!(p));
        }
        // A stop's trigger is its `price`; the gateway may report it as either field.
        "STP" => {
            let p = stop
                .or(old_stop)
                .or(old_limit)
                .ok_or_else(|| missing("stop price"))?;
            o.insert("price".into(), json!(p));
        }
        "STOP_LIMIT" => {
            let p = limit.or(old_limit).ok_or_else(|| missing("limit price"))?;
            o.insert("price".into(), json!(p));
            let aux = stop.or(old_stop).ok_or_else(|| {
                c.unresolved(format!(
                    "IBKR does not report order {id}'s stop price; give stop_price"
                ))
            })?;
            o.insert("auxPrice".into(), json!(aux));
        }
        "TRAIL" => {
            match (f(c, "trailing_amount"), f(c, "trailing_percent")) {
                (Some(a), None) => {
                    o.insert("trailingAmt".into(), json!(a));
                    o.insert("trailingType".into(), json!("amt"));
                }
                (None, Some(p)) => {
                    o.insert("trailingAmt".into(), json!(p));
                    o.insert("trailingType".into(), json!("%"));
                }
                (None, None) => {
                    let amt = g("trailing_amount").or(g("trailingAmt")).ok_or_else(|| {
                        c.unresolved(format!(
                            "IBKR does not report order {id}'s trailing amount; give \
                             trailing_amount or trailing_percent"
                        ))
                    })?;
                    o.insert("trailingAmt".into(), json!(amt));
                    let unit = s
                        .get("trailing_type")
                        .or_else(|| s.get("trailingType"))
                        .and_then(Value::as_str)
                        .unwrap_or("amt");
                    o.insert("trailingType".into(), json!(unit));
                }
                _ => return Err(c.invalid("give trailing_amount or trailing_percent, not both")),
            }
            if let Some(p) = stop {
                o.insert("price".into(), json!(p));
            }
        }
        _ => {}
    }
    for (name, given) in [
        ("quantity", f(c, "quantity").is_some()),
        ("limit_price", limit.is_some()),
        ("stop_price", stop.is_some()),
        (
            "trailing",
            f(c, "trailing_amount")
                .or(f(c, "trailing_percent"))
                .is_some(),
        ),
        ("tif", c.str_arg("tif").is_some()),
        ("outside_rth", c.args.contains_key("outside_rth")),
    ] {
        if given {
            changes.push(name);
        }
    }
    if changes.is_empty() {
        return Err(c.invalid(
            "nothing to change: give quantity, limit_price, stop_price, trailing_amount, \
             trailing_percent, tif or outside_rth",
        ));
    }
    if (limit.is_some() && !matches!(kind, "LMT" | "LOC" | "STOP_LIMIT"))
        || (stop.is_some() && !matches!(kind, "STP" | "STOP_LIMIT" | "TRAIL"))
    {
        return Err(c.invalid(format!(
            "order {id} is {kind}: limit_price applies to LMT, LOC and STP LMT orders, \
             stop_price to STP, STP LMT and TRAIL"
        )));
    }
    let what = s
        .get("order_description_with_contract")
        .and_then(Value::as_str)
        .unwrap_or("the order");
    let mut words = format!("order {id} ({what}): {side} {} {kind}", fmt(quantity));
    if let Some(p) = o.get("price").and_then(Value::as_f64) {
        words.push_str(&format!(" {}", fmt(p)));
    }
    if let Some(p) = o.get("auxPrice").and_then(Value::as_f64) {
        words.push_str(&format!(" stop {}", fmt(p)));
    }
    words.push_str(&format!(
        " {tif} on {} (changed: {})",
        crate::audit::mask_account(account),
        changes.join(", ")
    ));
    Ok((account.to_string(), Value::Object(o), words))
}

async fn cancel(c: &Ctx<'_>) -> Result<Plan, ToolError> {
    let all = c.args.get("all").and_then(Value::as_bool).unwrap_or(false);
    let accounts = c.accounts().await?;
    match (order_id(c)?, all) {
        (Some(_), true) => Err(c.invalid("give order_id or all: true, not both")),
        (None, false) => Err(c.invalid(
            "give order_id (get_account_orders lists them), or all: true to cancel every \
             working order of the account",
        )),
        (Some(id), false) => {
            let s = order_status(c, &id).await?;
            let account = s
                .get("account")
                .and_then(Value::as_str)
                .filter(|a| accounts.iter().any(|x| x == a))
                .ok_or_else(|| {
                    c.unresolved(format!(
                        "`order_id`: no order {id} on {} ({}); get_account_orders lists the \
                         working ones",
                        accounts.join(", "),
                        crate::error::ibkr_message(s.to_string().as_bytes())
                    ))
                })?;
            let what = s
                .get("order_description_with_contract")
                .and_then(Value::as_str)
                .unwrap_or("");
            let mut args = Map::new();
            args.insert("accountId".into(), json!(account));
            args.insert("orderId".into(), json!(id));
            let words = format!("cancel order {id} {what}");
            let mut plan = Plan::one(Shape::Cancel, CANCEL_TOOL, args, words);
            plan.calls[0].label = id;
            Ok(plan)
        }
        (None, true) => {
            let account = c.one_account("whose orders to cancel").await?;
            let (working, loaded) = working_listed(c, &account).await?;
            let mut calls = Vec::new();
            for o in &working {
                let Some(id) = super::id_text(o.get("orderId")) else {
                    continue;
                };
                let mut args = Map::new();
                args.insert("accountId".into(), json!(account));
                args.insert("orderId".into(), json!(id));
                let what = o
                    .get("orderDesc")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                calls.push(Planned {
                    tool: CANCEL_TOOL,
                    args,
                    words: format!("cancel order {id} {what}"),
                    label: id,
                });
            }
            let mut plan = Plan {
                calls,
                shape: Shape::Cancel,
                words: format!(
                    "cancel every working order on {}",
                    crate::audit::mask_account(&account)
                ),
                order_id: None,
                notes: Vec::new(),
            };
            if !loaded {
                if plan.calls.is_empty() {
                    // An empty list that is still loading is not "nothing to cancel".
                    return Err(c.unresolved(
                        "IBKR's order list is still loading (snapshot false), so no working \
                         order could be seen and nothing was cancelled: call cancel_order \
                         again in 5 seconds",
                    ));
                }
                plan.notes.push(
                    "IBKR's order list was still loading (snapshot false): call \
                     get_account_orders in 5 s to check nothing is left."
                        .into(),
                );
            }
            Ok(plan)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_types_of_the_status_reply_map_to_ticket_types() {
        assert_eq!(ticket_type("LIMIT"), Some("LMT"));
        assert_eq!(ticket_type("Stop Limit"), Some("STOP_LIMIT"));
        assert_eq!(ticket_type("STOP_LIMIT"), Some("STOP_LIMIT"));
        assert_eq!(ticket_type("TRAIL"), Some("TRAIL"));
        assert_eq!(ticket_type("MIDPRICE"), None);
    }

    #[test]
    fn prices_are_rounded_to_their_decimals() {
        assert_eq!(round_to(187.12345, 2), 187.12);
        assert_eq!(round_to(0.1 + 0.2, 4), 0.3);
    }
}
