//! Order endpoints: live orders, order status, trades, what-if, placement, question replies,
//! modify, cancel, question suppression and server-prompt replies. The logic lives in
//! `state::orders`; this module renders the live service's JSON shapes and applies the
//! drop-after-accept trap. Trailing stops show their moving stop in `auxPrice` (`stop_price` in
//! order status); combos show as one `BAG` order with their `conidex`.

use serde_json::{Value, json};

use super::{Reply, Req, err, ok};
use crate::state::accounts::{Execution, Side};
use crate::state::orders::{Order, OrderReply, OrderStatus, OrderType, fmt_qty, request_contract};
use crate::state::{Sim, State};
use crate::universe::{Contract, Universe};

fn finish(st: &mut State, rep: OrderReply) -> Reply {
    if rep.booked && st.faults.drop_after_accept {
        st.faults.drop_after_accept = false;
        return Reply::DropAfterAccept;
    }
    Reply::Json(rep.status, rep.body)
}

fn yymmdd(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%y%m%d%H%M%S").to_string())
        .unwrap_or_default()
}

fn tif_word(tif: &str) -> &str {
    if tif == "DAY" { "Day" } else { tif }
}

/// Time in force as listed: at-the-close orders show `CLOSE` (as the live service lists a
/// MOC placed with DAY).
fn tif_shown(o: &Order) -> &str {
    if o.req.order_type.at_close() {
        "CLOSE"
    } else {
        &o.req.tif
    }
}

fn fmt_price(c: &Contract, p: f64) -> String {
    format!("{p:.prec$}", prec = crate::market::tick_decimals(c.tick))
}

/// The `price` field: the limit, or the trigger of a plain stop (as the live service shows
/// STP orders). Trailing stops show their moving stop in `auxPrice` instead.
fn price_text(c: &Contract, o: &Order) -> String {
    let p = match o.req.order_type {
        OrderType::StpLmt
        | OrderType::Lmt
        | OrderType::Stp
        | OrderType::Midprice
        | OrderType::Loc => o.req.price,
        OrderType::Mkt | OrderType::Moc | OrderType::Trail => None,
    };
    p.map(|p| fmt_price(c, p)).unwrap_or_default()
}

/// The price part of a description: `225.30 (trail 5.00)` for trailing stops.
fn desc_price(c: &Contract, o: &Order) -> String {
    match (o.req.order_type, o.req.trailing) {
        (OrderType::Trail, Some(t)) => {
            let stop = o.stop.map(|s| format!("{} ", fmt_price(c, s)));
            format!(
                "{}(trail {})",
                stop.unwrap_or_default(),
                t.text(crate::market::tick_decimals(c.tick))
            )
        }
        _ => price_text(c, o),
    }
}

fn description(c: &Contract, o: &Order, with_contract: bool) -> String {
    let verb = match (o.status, o.req.side) {
        (OrderStatus::Filled, Side::Buy) => "Bought",
        (OrderStatus::Filled, Side::Sell) => "Sold",
        (_, Side::Buy) => "Buy",
        (_, Side::Sell) => "Sell",
    };
    let contract = if with_contract {
        format!(" {}", c.description())
    } else {
        String::new()
    };
    let price = desc_price(c, o);
    let price = if price.is_empty() {
        String::new()
    } else {
        format!(" {price}")
    };
    let prefix = if o.status == OrderStatus::Cancelled {
        "Cancelled: "
    } else {
        ""
    };
    format!(
        "{prefix}{verb} {}{contract} {}{price}, {}",
        fmt_qty(o.req.qty),
        o.req.order_type.desc_name(),
        tif_word(&o.req.tif)
    )
}

fn size_and_fills(o: &Order) -> String {
    if o.status == OrderStatus::Filled {
        fmt_qty(o.req.qty)
    } else {
        format!("{}/{}", fmt_qty(o.filled), fmt_qty(o.req.qty))
    }
}

/// One order as `/iserver/account/orders` lists it.
pub(crate) fn live_order_json(universe: &Universe, o: &Order) -> Value {
    let Some(c) = request_contract(universe, &o.req) else {
        return json!({ "orderId": o.id });
    };
    let c = c.as_ref();
    let mut v = json!({
        "acct": o.req.account,
        "conidex": o.req.conidex(),
        "conid": o.req.conid,
        "account": o.req.account,
        "orderId": o.id,
        "cashCcy": c.currency,
        "sizeAndFills": size_and_fills(o),
        "orderDesc": description(c, o, false),
        "description1": c.description(),
        "ticker": c.symbol,
        "secType": c.sec_type.as_str(),
        "listingExchange": c.order_exchange,
        "remainingQuantity": if o.status == OrderStatus::Cancelled { 0.0 } else { o.req.qty - o.filled },
        "filledQuantity": o.filled,
        "totalSize": o.req.qty,
        "companyName": c.name,
        "status": o.status.as_str(),
        "order_ccp_status": o.status.as_str(),
        "origOrderType": o.req.order_type.upper_name(),
        "supportsTaxOpt": "1",
        "lastExecutionTime": yymmdd(o.updated_ms),
        "orderType": o.req.order_type.title_name(),
        "bgColor": "#FFFFFF",
        "fgColor": "#000000",
        "isEventTrading": "0",
        "price": price_text(c, o),
        "timeInForce": tif_shown(o),
        "lastExecutionTime_r": o.updated_ms,
        "side": o.req.side.as_str(),
        "outsideRTH": o.req.outside_rth,
    });
    if let Some(aux) = o.req.aux {
        v["auxPrice"] = json!(fmt_price(c, aux));
    }
    if let Some(t) = o.req.trailing {
        if let Some(stop) = o.stop {
            v["auxPrice"] = json!(fmt_price(c, stop));
        }
        v["trailingAmount"] = json!(t.amount);
        v["trailingType"] = json!(t.type_name());
    }
    if o.status == OrderStatus::Filled {
        v["avgPrice"] = json!(format!(
            "{:.prec$}",
            o.avg_fill,
            prec = crate::market::tick_decimals(c.tick)
        ));
    }
    if let Some(coid) = &o.req.coid {
        v["order_ref"] = json!(coid);
    }
    if let Some(p) = o.parent {
        v["parentId"] = json!(p);
    }
    if o.req.combo.is_some() {
        // The legs, readable (`+1 AAPL FEB2027 230 C, -1 AAPL FEB2027 240 C`).
        v["description2"] = json!(c.name);
    }
    if o.req.single_group {
        v["isSingleGroup"] = json!(true);
        v["ocaGroup"] = json!(oca_group(o));
    }
    v
}

/// Name of the one-cancels-all group of an `isSingleGroup` placement.
fn oca_group(o: &Order) -> String {
    format!("oca-{}", o.request_id)
}

fn filter_name(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::PreSubmitted => "pre_submitted",
        OrderStatus::Submitted => "submitted",
        OrderStatus::Filled => "filled",
        OrderStatus::Cancelled => "cancelled",
    }
}

/// `GET /iserver/account/orders` (`filters`, `accountId`; defaults to the selected account).
pub(crate) fn live_orders(sim: &Sim, r: &Req) -> Reply {
    let st = sim.lock();
    let account = r
        .q("accountId")
        .map(str::to_string)
        .unwrap_or_else(|| st.session.selected_account.clone());
    let filters: Vec<String> = r
        .q("filters")
        .map(|f| {
            f.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty() && s != "sort_by_time")
                .collect()
        })
        .unwrap_or_default();
    let mut orders: Vec<&Order> = st
        .orders
        .book
        .values()
        .filter(|o| o.req.account == account)
        .filter(|o| filters.is_empty() || filters.iter().any(|f| f == filter_name(o.status)))
        .collect();
    orders.sort_by_key(|o| std::cmp::Reverse((o.updated_ms, o.id)));
    let items: Vec<Value> = orders
        .into_iter()
        .map(|o| live_order_json(&sim.universe, o))
        .collect();
    ok(json!({ "orders": items, "snapshot": true }))
}

/// `GET /iserver/account/order/status/{orderId}`.
pub(crate) fn status(sim: &Sim, r: &Req) -> Reply {
    let Ok(id) = r.param("orderId").parse::<i64>() else {
        return err(400, "Bad Request: orderId must be a number");
    };
    let st = sim.lock();
    let Some(o) = st.orders.book.get(&id) else {
        return err(503, format!("Order {id} is not found"));
    };
    let Some(c) = request_contract(&sim.universe, &o.req) else {
        return err(503, format!("Order {id} is not found"));
    };
    let c = c.as_ref();
    let status_desc = match o.status {
        OrderStatus::Filled => "Order Filled",
        OrderStatus::Cancelled => "Order Cancelled",
        _ => "Order Submitted",
    };
    let mut v = json!({
        "sub_type": Value::Null,
        "request_id": o.request_id.to_string(),
        "server_id": "0",
        "order_id": o.id,
        "conidex": o.req.conidex(),
        "conid": o.req.conid,
        "symbol": c.symbol,
        "side": if o.req.side == Side::Buy { "B" } else { "S" },
        "contract_description_1": c.description(),
        "listing_exchange": c.order_exchange,
        "option_acct": "c",
        "company_name": c.name,
        "size": format!("{:.1}", o.req.qty - o.filled),
        "total_size": format!("{:.1}", o.req.qty),
        "currency": c.currency,
        "account": o.req.account,
        "order_type": o.req.order_type.upper_name(),
        "cum_fill": format!("{:.1}", o.filled),
        "order_status": o.status.as_str(),
        "order_ccp_status": "0",
        "order_status_description": status_desc,
        "tif": tif_shown(o),
        "fg_color": "#000000",
        "bg_color": "#FFFFFF",
        "order_not_editable": !o.status.working(),
        "editable_fields": "",
        "cannot_cancel_order": !o.status.working(),
        "deactivate_order": false,
        "sec_type": c.sec_type.as_str(),
        "available_chart_periods": "#R|1",
        "order_description": description(c, o, false),
        "order_description_with_contract": description(c, o, true),
        "alert_active": 1,
        "child_order_type": "0",
        "order_clearing_account": o.req.account,
        "size_and_fills": size_and_fills(o),
        "exit_strategy_display_price": price_text(c, o),
        "exit_strategy_chart_description": description(c, o, false),
        "exit_strategy_tool_availability": "1",
        "allowed_duplicate_opposite": true,
        "order_time": yymmdd(o.created_ms),
        "outside_rth": o.req.outside_rth,
        "use_price_mgmt_algo": false,
        "clearing_id": "IB",
        "clearing_name": "IB",
    });
    if let Some(p) = o.req.price.filter(|_| o.req.order_type != OrderType::Trail) {
        v["limit_price"] = json!(fmt_price(c, p));
    }
    let stop = match o.req.order_type {
        OrderType::Stp => o.req.price,
        OrderType::StpLmt => o.req.aux,
        OrderType::Trail => o.stop,
        _ => None,
    };
    if let Some(s) = stop {
        v["stop_price"] = json!(fmt_price(c, s));
    }
    if let Some(t) = o.req.trailing {
        v["trailing_amount"] = json!(t.amount);
        v["trailing_type"] = json!(t.type_name());
    }
    if o.req.combo.is_some() {
        v["contract_description_2"] = json!(c.name);
    }
    if o.req.single_group {
        v["oca_group"] = json!(oca_group(o));
    }
    if o.status == OrderStatus::Filled {
        v["average_price"] = json!(format!(
            "{:.prec$}",
            o.avg_fill,
            prec = crate::market::tick_decimals(c.tick)
        ));
    }
    ok(v)
}

/// One execution as `/iserver/account/trades` lists it (`None` for an unknown contract).
pub(crate) fn trade_json(universe: &Universe, e: &Execution) -> Option<Value> {
    let c = universe.get(e.conid)?;
    let prec = crate::market::tick_decimals(if c.sec_type == crate::universe::SecType::Opt {
        0.01
    } else {
        c.tick
    });
    let when = chrono::DateTime::from_timestamp_millis(e.time_ms)?;
    let mut v = json!({
        "execution_id": e.exec_id,
        "symbol": c.symbol,
        "supports_tax_opt": "1",
        "side": if e.side == Side::Buy { "B" } else { "S" },
        "order_description": format!("{} {} @ {:.prec$} on {}", if e.side == Side::Buy { "Bot" } else { "Sld" }, fmt_qty(e.qty), e.price, e.exchange),
        "trade_time": when.format("%Y%m%d-%H:%M:%S").to_string(),
        "trade_time_r": e.time_ms,
        "size": e.qty,
        "price": format!("{:.prec$}", e.price),
        "exchange": e.exchange,
        "commission": format!("{:.2}", e.commission),
        "net_amount": crate::state::accounts::cents(e.qty * e.price * c.multiplier),
        "account": e.account,
        "accountCode": e.account,
        "company_name": c.name,
        "contract_description_1": c.description(),
        "sec_type": c.sec_type.as_str(),
        "listing_exchange": c.listing_exchange,
        "conid": e.conid,
        "conidEx": e.conid.to_string(),
        "clearing_id": "IB",
        "clearing_name": "IB",
        "liquidation_trade": "0",
        "is_event_trading": "0",
        "position": fmt_qty(e.position_after),
        "order_id": e.order_id,
    });
    if let Some(r) = &e.order_ref {
        v["order_ref"] = json!(r);
    }
    Some(v)
}

/// `GET /iserver/account/trades` (`days` up to 7, default 1; `accountId` filters).
pub(crate) fn trades(sim: &Sim, r: &Req) -> Reply {
    let days = r
        .q("days")
        .and_then(|d| d.parse::<i64>().ok())
        .unwrap_or(1)
        .clamp(1, 7);
    let since = chrono::Utc::now().timestamp_millis() - days * 86_400_000;
    let st = sim.lock();
    let account = r.q("accountId");
    let items: Vec<Value> = st
        .orders
        .executions
        .iter()
        .rev()
        .filter(|e| e.time_ms >= since && account.is_none_or(|a| a == e.account))
        .filter_map(|e| trade_json(&sim.universe, e))
        .collect();
    ok(Value::Array(items))
}

/// `POST /iserver/account/{accountId}/orders/whatif`.
pub(crate) fn whatif(sim: &Sim, r: &Req) -> Reply {
    let mut st = sim.lock();
    let rep = st.whatif(&sim.universe, r.param("accountId"), r.body.as_ref());
    Reply::Json(rep.status, rep.body)
}

/// `POST /iserver/account/{accountId}/orders`.
pub(crate) fn place(sim: &Sim, r: &Req) -> Reply {
    let mut st = sim.lock();
    let rep = st.place_orders(&sim.universe, r.param("accountId"), r.body.as_ref());
    finish(&mut st, rep)
}

/// `POST /iserver/reply/{replyId}`.
pub(crate) fn reply(sim: &Sim, r: &Req) -> Reply {
    let mut st = sim.lock();
    let rep = st.answer_reply(&sim.universe, r.param("replyId"), r.body.as_ref());
    finish(&mut st, rep)
}

/// `POST /iserver/account/{accountId}/order/{orderId}`.
pub(crate) fn modify(sim: &Sim, r: &Req) -> Reply {
    let Ok(id) = r.param("orderId").parse::<i64>() else {
        return err(400, "Bad Request: orderId must be a number");
    };
    let mut st = sim.lock();
    let rep = st.modify_order(&sim.universe, r.param("accountId"), id, r.body.as_ref());
    finish(&mut st, rep)
}

/// `DELETE /iserver/account/{accountId}/order/{orderId}`.
pub(crate) fn cancel(sim: &Sim, r: &Req) -> Reply {
    let Ok(id) = r.param("orderId").parse::<i64>() else {
        return err(400, "Bad Request: orderId must be a number");
    };
    let rep = sim
        .lock()
        .cancel_order(&sim.universe, r.param("accountId"), id);
    Reply::Json(rep.status, rep.body)
}

/// `POST /iserver/questions/suppress`.
pub(crate) fn suppress(sim: &Sim, r: &Req) -> Reply {
    let ids: Vec<String> = r
        .field("messageIds")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        return err(500, "Internal Server Error: messageIds must not be empty");
    }
    sim.lock().session.suppressed.extend(ids);
    ok(json!({ "status": "submitted" }))
}

/// `POST /iserver/questions/suppress/reset`.
pub(crate) fn suppress_reset(sim: &Sim, _r: &Req) -> Reply {
    sim.lock().session.suppressed.clear();
    ok(json!({ "status": "submitted" }))
}

/// `POST /iserver/notification`: answers a server prompt; the live service replies with a bare
/// JSON string.
pub(crate) fn notification(_sim: &Sim, r: &Req) -> Reply {
    if r.field("orderId").is_none() || r.field("reqId").is_none() {
        return err(400, "Bad Request: orderId, reqId and text are required");
    }
    ok(json!("Request was submitted"))
}
