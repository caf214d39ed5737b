//! Orders over real HTTP: the question/reply chain (placed exactly once), suppression, the
//! rule-based questions, fills and their effect on positions and cash, resting orders that fill
//! when the price crosses, modify and cancel, rejections, what-if, brackets and FX.

mod common;

use ibkr_sim::{QuestionPolicy, SimHandle};
use serde_json::{Value, json};

const ACCT: &str = "DU1234567";
const ACCT2: &str = "DU7654321";

async fn ready(policy: QuestionPolicy) -> SimHandle {
    let sim = common::start(common::unpaced().with_questions(policy)).await;
    assert_eq!(common::get(&sim, "/iserver/accounts").await.0, 200);
    sim
}

async fn place(sim: &SimHandle, acct: &str, order: Value) -> (u16, Value) {
    common::post(
        sim,
        &format!("/iserver/account/{acct}/orders"),
        json!({ "orders": [order] }),
    )
    .await
}

fn limit(conid: i64, side: &str, qty: f64, price: f64) -> Value {
    json!({ "conid": conid, "orderType": "LMT", "price": price, "side": side, "tif": "DAY", "quantity": qty })
}

fn market(conid: i64, side: &str, qty: f64) -> Value {
    json!({ "conid": conid, "orderType": "MKT", "side": side, "tif": "DAY", "quantity": qty })
}

fn question_ids(v: &Value) -> Vec<String> {
    v[0]["messageIds"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn question_chain_is_asked_in_order_and_books_exactly_one_order() {
    let chain = vec!["o163".to_string(), "o451".to_string(), "o10153".to_string()];
    let sim = ready(QuestionPolicy::Chain {
        message_ids: chain.clone(),
    })
    .await;
    let (s, mut v) = place(&sim, ACCT, limit(265598, "BUY", 1.0, 100.0)).await;
    assert_eq!(s, 200);
    let mut asked = Vec::new();
    let mut used_ids = Vec::new();
    while let Some(id) = v[0]["id"].as_str().map(str::to_string) {
        assert_eq!(v[0]["isSuppressed"], false);
        assert!(v[0]["message"][0].as_str().is_some_and(|m| !m.is_empty()));
        asked.extend(question_ids(&v));
        assert!(
            sim.control().state().orders.is_empty(),
            "nothing is booked before the last confirmation"
        );
        used_ids.push(id.clone());
        let (s, next) = common::post(
            &sim,
            &format!("/iserver/reply/{id}"),
            json!({ "confirmed": true }),
        )
        .await;
        assert_eq!(s, 200, "{next}");
        v = next;
    }
    assert_eq!(asked, chain);
    assert!(v[0]["order_id"].is_string(), "{v}");
    assert!(v[0]["message"][0].is_null());
    let state = sim.control().state();
    assert_eq!(state.orders.len(), 1);
    assert_eq!(state.orders[0].confirmed_questions, chain);
    assert_eq!(state.session.pending_questions, 0);
    // Reply ids are single-use; unknown ids are errors.
    let (s, v) = common::post(
        &sim,
        &format!("/iserver/reply/{}", used_ids[0]),
        json!({ "confirmed": true }),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = common::post(
        &sim,
        "/iserver/reply/00000000-0000-4000-8000-000000000000",
        json!({ "confirmed": true }),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(sim.control().state().orders.len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn declining_a_question_abandons_the_order() {
    let sim = ready(QuestionPolicy::Chain {
        message_ids: vec!["o163".into(), "o451".into()],
    })
    .await;
    let (_, v) = place(&sim, ACCT, limit(265598, "BUY", 1.0, 100.0)).await;
    let id = v[0]["id"].as_str().unwrap().to_string();
    let (s, v) = common::post(
        &sim,
        &format!("/iserver/reply/{id}"),
        json!({ "confirmed": false }),
    )
    .await;
    assert_eq!(s, 200);
    assert!(v["error"].is_string(), "{v}");
    let st = sim.control().state();
    assert!(st.orders.is_empty());
    assert_eq!(st.session.pending_questions, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn rules_ask_the_documented_questions() {
    let sim = ready(QuestionPolicy::default()).await;
    let cases = [
        (market(8314, "BUY", 1.0), vec!["o403"]),
        (limit(8314, "BUY", 1.0, 100.0), vec!["o163"]),
        (limit(4391, "BUY", 600.0, 1.0), vec!["o163", "o383"]),
        (limit(756733, "SELL", 400.0, 5_000.0), vec!["o163", "o451"]),
    ];
    for (order, expected) in cases {
        let mut v = place(&sim, ACCT, order.clone()).await.1;
        let mut asked = Vec::new();
        while let Some(id) = v[0]["id"].as_str().map(str::to_string) {
            asked.extend(question_ids(&v));
            v = common::post(
                &sim,
                &format!("/iserver/reply/{id}"),
                json!({ "confirmed": true }),
            )
            .await
            .1;
        }
        assert_eq!(asked, expected, "{order}");
        assert!(
            v[0]["order_id"].is_string(),
            "confirming every question books the order: {v}"
        );
    }
    // A small limit order near the market asks nothing.
    let last = sim.control().price(8314).unwrap();
    let (_, v) = place(
        &sim,
        ACCT,
        limit(8314, "BUY", 1.0, (last * 0.99 * 100.0).round() / 100.0),
    )
    .await;
    assert!(v[0]["order_id"].is_string(), "{v}");
    let (_, v) = place(&sim, ACCT, json!({ "conid": 8314, "orderType": "STP", "price": (last * 1.01 * 100.0).round() / 100.0, "side": "BUY", "tif": "DAY", "quantity": 1 })).await;
    assert_eq!(question_ids(&v), ["o10331"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn suppressed_questions_are_skipped_until_reset() {
    let sim = ready(QuestionPolicy::default()).await;
    let (s, v) = common::post(
        &sim,
        "/iserver/questions/suppress",
        json!({ "messageIds": ["o163"] }),
    )
    .await;
    assert_eq!((s, v), (200, json!({ "status": "submitted" })));
    let (_, v) = place(&sim, ACCT, limit(265598, "BUY", 1.0, 100.0)).await;
    assert!(
        v[0]["order_id"].is_string(),
        "suppressed o163 is not asked: {v}"
    );
    let (s, v) = common::post(&sim, "/iserver/questions/suppress/reset", json!({})).await;
    assert_eq!((s, v), (200, json!({ "status": "submitted" })));
    let (_, v) = place(&sim, ACCT, limit(265598, "BUY", 1.0, 100.0)).await;
    assert_eq!(question_ids(&v), ["o163"]);
    let (s, _) = common::post(
        &sim,
        "/iserver/questions/suppress",
        json!({ "messageIds": [] }),
    )
    .await;
    assert_eq!(s, 500, "an empty list fails like the live service");
    sim.shutdown().await;
}

#[tokio::test]
async fn market_order_fills_and_updates_position_cash_and_trades() {
    let sim = ready(QuestionPolicy::Never).await;
    let before = sim.control().state();
    let cash0 = before.accounts.iter().find(|a| a.id == ACCT2).unwrap().cash["USD"];
    let (s, v) = place(&sim, ACCT2, json!({ "conid": 8314, "orderType": "MKT", "side": "BUY", "tif": "DAY", "quantity": 10, "cOID": "fill-1" })).await;
    assert_eq!(s, 200);
    assert_eq!(v[0]["local_order_id"], "fill-1");
    let id = v[0]["order_id"].as_str().unwrap().to_string();
    let after = sim.control().state();
    let acct = after.accounts.iter().find(|a| a.id == ACCT2).unwrap();
    let ibm = acct.positions.iter().find(|p| p.conid == 8314).unwrap();
    assert_eq!(ibm.quantity, 70.0);
    let exec = &after.executions[0];
    assert_eq!((exec.quantity, exec.side.as_str()), (10.0, "BUY"));
    let expected = cash0 - 10.0 * exec.price - exec.commission;
    assert!(
        (acct.cash["USD"] - expected).abs() < 1e-6,
        "cash {} expected {expected}",
        acct.cash["USD"]
    );
    let (_, status) = common::get(&sim, &format!("/iserver/account/order/status/{id}")).await;
    assert_eq!(status["order_status"], "Filled");
    let (_, trades) =
        common::get(&sim, &format!("/iserver/account/trades?accountId={ACCT2}")).await;
    assert_eq!(trades.as_array().unwrap().len(), 1);
    assert_eq!(trades[0]["side"], "B");
    assert_eq!(trades[0]["order_ref"], "fill-1");
    let (_, pos) = common::get(&sim, &format!("/portfolio/{ACCT2}/position/8314")).await;
    assert_eq!(pos[0]["position"], 70.0);
    let (_, ledger) = common::get(&sim, &format!("/portfolio/{ACCT2}/ledger")).await;
    assert!(
        (ledger["USD"]["cashbalance"].as_f64().unwrap() - (expected * 100.0).round() / 100.0).abs()
            < 0.01
    );
    // A filled order cannot be cancelled.
    let (s, v) = common::delete(&sim, &format!("/iserver/account/{ACCT2}/order/{id}")).await;
    assert_eq!(s, 200);
    assert!(v["error"].as_str().unwrap().contains("filled"), "{v}");
    // Selling more than held goes short, and realizes P&L on the closed part.
    place(&sim, ACCT2, market(8314, "SELL", 80.0)).await;
    let st = sim.control().state();
    let ibm = st
        .accounts
        .iter()
        .find(|a| a.id == ACCT2)
        .unwrap()
        .positions
        .iter()
        .find(|p| p.conid == 8314)
        .unwrap()
        .clone();
    assert_eq!(ibm.quantity, -10.0);
    assert!(ibm.realized_pnl != 0.0);
    sim.shutdown().await;
}

#[tokio::test]
async fn resting_limit_fills_when_the_price_crosses() {
    let sim = ready(QuestionPolicy::Never).await;
    let last = sim.control().price(265598).unwrap();
    let limit_px = ((last * 0.95) * 100.0).round() / 100.0;
    let (_, v) = place(&sim, ACCT, limit(265598, "BUY", 5.0, limit_px)).await;
    let id: i64 = v[0]["order_id"].as_str().unwrap().parse().unwrap();
    let (_, orders) = common::get(&sim, "/iserver/account/orders?filters=submitted").await;
    assert!(
        orders["orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["orderId"] == id),
        "{orders}"
    );
    assert!(sim.control().set_price(265598, limit_px - 1.0));
    let st = sim.control().state();
    let o = st.orders.iter().find(|o| o.order_id == id).unwrap();
    assert_eq!(o.status, "Filled");
    assert!(o.avg_fill_price <= limit_px);
    let aapl = st
        .accounts
        .iter()
        .find(|a| a.id == ACCT)
        .unwrap()
        .positions
        .iter()
        .find(|p| p.conid == 265598)
        .unwrap()
        .quantity;
    assert_eq!(aapl, 105.0);
    let (_, filled) = common::get(&sim, "/iserver/account/orders?filters=filled").await;
    assert_eq!(filled["orders"][0]["status"], "Filled");
    sim.shutdown().await;
}

#[tokio::test]
async fn modify_and_cancel_a_working_order() {
    let sim = ready(QuestionPolicy::Never).await;
    let last = sim.control().price(272093).unwrap();
    let px = ((last * 0.9) * 100.0).round() / 100.0;
    let (_, v) = place(&sim, ACCT, limit(272093, "BUY", 3.0, px)).await;
    let id = v[0]["order_id"].as_str().unwrap().to_string();
    let new_px = px - 1.0;
    let (s, v) = common::post(
        &sim,
        &format!("/iserver/account/{ACCT}/order/{id}"),
        limit(272093, "BUY", 4.0, new_px),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v[0]["order_id"], id.as_str());
    let (_, st) = common::get(&sim, &format!("/iserver/account/order/status/{id}")).await;
    assert_eq!(st["total_size"], "4.0");
    assert_eq!(st["limit_price"], format!("{new_px:.2}"));
    let (s, v) = common::delete(&sim, &format!("/iserver/account/{ACCT}/order/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(v["msg"], "Request was submitted");
    assert_eq!(v["order_id"], id.parse::<i64>().unwrap());
    assert_eq!(v["conid"], 272093);
    assert_eq!(sim.control().state().orders[0].status, "Cancelled");
    let (s, v) = common::delete(&sim, &format!("/iserver/account/{ACCT}/order/{id}")).await;
    assert_eq!(s, 200);
    assert!(v["error"].is_string());
    let (s, _) = common::post(
        &sim,
        &format!("/iserver/account/{ACCT}/order/{id}"),
        limit(272093, "BUY", 4.0, new_px),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        common::delete(&sim, &format!("/iserver/account/{ACCT}/order/123"))
            .await
            .0,
        400
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn modify_asks_questions_too() {
    let sim = ready(QuestionPolicy::default()).await;
    let last = sim.control().price(272093).unwrap();
    let px = ((last * 0.99) * 100.0).round() / 100.0;
    let (_, v) = place(&sim, ACCT, limit(272093, "BUY", 1.0, px)).await;
    let id = v[0]["order_id"]
        .as_str()
        .expect("near-market limit asks nothing")
        .to_string();
    let (_, v) = common::post(
        &sim,
        &format!("/iserver/account/{ACCT}/order/{id}"),
        limit(272093, "BUY", 1.0, 10.0),
    )
    .await;
    assert_eq!(question_ids(&v), ["o163"]);
    let reply = v[0]["id"].as_str().unwrap().to_string();
    let (_, v) = common::post(
        &sim,
        &format!("/iserver/reply/{reply}"),
        json!({ "confirmed": true }),
    )
    .await;
    assert_eq!(v[0]["order_id"], id.as_str());
    assert_eq!(sim.control().state().orders[0].price, Some(10.0));
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_orders_are_rejected_with_200_error() {
    let sim = ready(QuestionPolicy::Never).await;
    let bad = [
        json!({ "conid": 265598, "orderType": "LMT", "price": 100.0, "side": "HOLD", "tif": "DAY", "quantity": 1 }),
        json!({ "conid": 999_999_999, "orderType": "MKT", "side": "BUY", "tif": "DAY", "quantity": 1 }),
        json!({ "conid": 265598, "orderType": "MKT", "side": "BUY", "tif": "DAY", "quantity": 0 }),
        json!({ "conid": 265598, "orderType": "LMT", "side": "BUY", "tif": "DAY", "quantity": 1 }),
        json!({ "conid": 265598, "orderType": "LMT", "price": 100.001, "side": "BUY", "tif": "DAY", "quantity": 1 }),
        json!({ "conid": 416904, "orderType": "MKT", "side": "BUY", "tif": "DAY", "quantity": 1 }),
    ];
    for order in bad {
        let (s, v) = place(&sim, ACCT, order.clone()).await;
        assert_eq!(s, 200, "{order}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{order} -> {v}"
        );
    }
    let (s, _) = common::post(
        &sim,
        &format!("/iserver/account/{ACCT}/orders"),
        json!({ "order": [] }),
    )
    .await;
    assert_eq!(s, 400);
    assert!(sim.control().state().orders.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn duplicate_client_order_id_is_rejected() {
    let sim = ready(QuestionPolicy::Never).await;
    let mut o = limit(265598, "BUY", 1.0, 100.0);
    o["cOID"] = json!("dup-1");
    let (_, v) = place(&sim, ACCT, o.clone()).await;
    assert!(v[0]["order_id"].is_string());
    let (s, v) = place(&sim, ACCT, o).await;
    assert_eq!(s, 200);
    assert!(v["error"].as_str().unwrap().contains("dup-1"), "{v}");
    assert_eq!(sim.control().state().orders.len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn whatif_previews_without_placing() {
    let sim = ready(QuestionPolicy::default()).await;
    let (s, v) = common::post(
        &sim,
        &format!("/iserver/account/{ACCT}/orders/whatif"),
        json!({ "orders": [market(265598, "BUY", 10.0)] }),
    )
    .await;
    assert_eq!(s, 200);
    for k in ["amount", "equity", "initial", "maintenance", "position"] {
        assert!(v[k].is_object(), "{k}: {v}");
    }
    assert_eq!(v["position"]["after"], "110");
    assert!(v["amount"]["commission"].as_str().unwrap().ends_with("USD"));
    assert!(v["error"].is_null());
    let st = sim.control().state();
    assert!(st.orders.is_empty() && st.executions.is_empty());
    assert_eq!(st.session.pending_questions, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn bracket_children_wait_for_the_parent_then_cancel_each_other() {
    let sim = ready(QuestionPolicy::Never).await;
    let last = sim.control().price(756733).unwrap();
    let entry = ((last * 0.98) * 100.0).round() / 100.0;
    let orders = json!({ "orders": [
        { "conid": 756733, "orderType": "LMT", "price": entry, "side": "BUY", "tif": "GTC", "quantity": 2, "cOID": "parent-1" },
        { "conid": 756733, "orderType": "LMT", "price": ((entry * 1.10) * 100.0).round() / 100.0, "side": "SELL", "tif": "GTC", "quantity": 2, "cOID": "tp-1", "parentId": "parent-1" },
        { "conid": 756733, "orderType": "STP", "price": ((entry * 0.90) * 100.0).round() / 100.0, "side": "SELL", "tif": "GTC", "quantity": 2, "cOID": "sl-1", "parentId": "parent-1" },
    ] });
    let (s, v) = common::post(&sim, &format!("/iserver/account/{ACCT}/orders"), orders).await;
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(v[1]["order_status"], "PreSubmitted");
    sim.control().set_price(756733, entry - 0.5);
    let st = sim.control().state();
    let by = |c: &str| {
        st.orders
            .iter()
            .find(|o| o.coid.as_deref() == Some(c))
            .unwrap()
            .status
            .clone()
    };
    assert_eq!(by("parent-1"), "Filled");
    assert_eq!(by("tp-1"), "Submitted");
    sim.control().set_price(756733, entry * 1.2);
    let st = sim.control().state();
    let by = |c: &str| {
        st.orders
            .iter()
            .find(|o| o.coid.as_deref() == Some(c))
            .unwrap()
            .status
            .clone()
    };
    assert_eq!(by("tp-1"), "Filled");
    assert_eq!(by("sl-1"), "Cancelled");
    sim.shutdown().await;
}

#[tokio::test]
async fn fx_order_converts_cash_between_currencies() {
    let sim = ready(QuestionPolicy::Never).await;
    let eur0 = sim.control().state().accounts[0].cash["EUR"];
    let (_, v) = place(&sim, ACCT, market(12087792, "BUY", 10_000.0)).await;
    assert!(v[0]["order_id"].is_string(), "{v}");
    let st = sim.control().state();
    let a = &st.accounts[0];
    assert_eq!(a.cash["EUR"], eur0 + 10_000.0);
    assert!(
        a.positions.iter().all(|p| p.conid != 12087792),
        "FX trades change cash, not positions"
    );
    sim.shutdown().await;
}

async fn live_order(sim: &SimHandle, id: &str) -> Value {
    let (_, orders) = common::get(sim, "/iserver/account/orders").await;
    orders["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["orderId"].as_i64() == id.parse().ok())
        .cloned()
        .unwrap_or_else(|| panic!("order {id} in {orders}"))
}

#[tokio::test]
async fn trailing_stop_and_at_close_orders_show_their_type_and_stop() {
    let sim = ready(QuestionPolicy::Never).await;
    sim.control().set_price(265598, 230.0);
    let (s, v) = place(&sim, ACCT, json!({ "conid": 265598, "orderType": "TRAIL", "side": "SELL", "quantity": 10, "tif": "GTC", "trailingAmt": 5, "trailingType": "amt" })).await;
    assert_eq!(s, 200);
    assert_eq!(v[0]["order_status"], "PreSubmitted", "{v}");
    let trail = v[0]["order_id"].as_str().unwrap().to_string();
    let o = live_order(&sim, &trail).await;
    let stop = sim.control().state().orders[0].stop_price.unwrap();
    assert_eq!(o["orderType"], "Trail");
    assert_eq!(o["origOrderType"], "TRAIL");
    assert_eq!(o["status"], "PreSubmitted");
    assert_eq!(o["price"], "");
    assert_eq!(o["auxPrice"], format!("{stop:.2}"));
    assert_eq!(o["trailingAmount"], 5.0);
    assert_eq!(o["trailingType"], "amt");
    assert_eq!(
        o["orderDesc"],
        format!("Sell 10 Trail {stop:.2} (trail 5.00), GTC")
    );
    // The stop follows the price up.
    sim.control().set_price(265598, 250.0);
    let stop = sim.control().state().orders[0].stop_price.unwrap();
    assert!(stop > 240.0, "{stop}");
    let (_, st) = common::get(&sim, &format!("/iserver/account/order/status/{trail}")).await;
    assert_eq!(st["order_type"], "TRAIL");
    let shown: f64 = st["stop_price"].as_str().unwrap().parse().unwrap();
    assert!(shown >= stop, "the stop only ever rises: {st}");
    assert_eq!(st["trailing_amount"], 5.0);
    assert_eq!(st["trailing_type"], "amt");
    assert!(st.get("limit_price").is_none(), "{st}");

    let (_, v) = place(
        &sim,
        ACCT,
        json!({ "conid": 265598, "orderType": "MOC", "side": "BUY", "quantity": 5, "tif": "DAY" }),
    )
    .await;
    assert_eq!(v[0]["order_status"], "Submitted", "{v}");
    let moc = v[0]["order_id"].as_str().unwrap().to_string();
    let o = live_order(&sim, &moc).await;
    assert_eq!(o["orderType"], "MARKETONCLOSE");
    assert_eq!(o["origOrderType"], "MARKETONCLOSE");
    assert_eq!(o["timeInForce"], "CLOSE");
    assert_eq!(o["orderDesc"], "Buy 5 MKT CLS, Day");
    let (_, v) = place(&sim, ACCT, json!({ "conid": 265598, "orderType": "LOC", "price": 200.0, "side": "BUY", "quantity": 5, "tif": "DAY" })).await;
    let loc = v[0]["order_id"].as_str().unwrap().to_string();
    let (_, st) = common::get(&sim, &format!("/iserver/account/order/status/{loc}")).await;
    assert_eq!(
        (&st["order_type"], &st["limit_price"], &st["tif"]),
        (&json!("LIMITONCLOSE"), &json!("200.00"), &json!("CLOSE"))
    );
    assert_eq!(st["order_description"], "Buy 5 LMT CLS 200.00, Day");
    let (s, v) = place(&sim, ACCT, json!({ "conid": 265598, "orderType": "LOC", "price": 200.0, "side": "BUY", "quantity": 5, "tif": "GTC" })).await;
    assert_eq!(s, 200);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("Invalid time-in-force for at-the-closing order"),
        "{v}"
    );
    let (s, _) = common::delete(&sim, &format!("/iserver/account/{ACCT}/order/{moc}")).await;
    assert_eq!(s, 200);
    assert_eq!(live_order(&sim, &moc).await["status"], "Cancelled");
    sim.shutdown().await;
}

#[tokio::test]
async fn single_group_orders_are_listed_with_their_group() {
    let sim = ready(QuestionPolicy::Never).await;
    let last = sim.control().price(272093).unwrap();
    let below = ((last * 0.9) * 100.0).round() / 100.0;
    let above = ((last * 1.1) * 100.0).round() / 100.0;
    let (_, v) = common::post(
        &sim,
        &format!("/iserver/account/{ACCT}/orders"),
        json!({ "orders": [
            { "conid": 272093, "orderType": "LMT", "price": below, "side": "BUY", "quantity": 1, "tif": "GTC", "isSingleGroup": true },
            { "conid": 272093, "orderType": "LMT", "price": above, "side": "SELL", "quantity": 1, "tif": "GTC", "isSingleGroup": true },
        ] }),
    )
    .await;
    let ids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap().to_string())
        .collect();
    let (a, b) = (
        live_order(&sim, &ids[0]).await,
        live_order(&sim, &ids[1]).await,
    );
    assert_eq!(a["isSingleGroup"], true);
    assert_eq!(a["ocaGroup"], b["ocaGroup"]);
    sim.control().set_price(272093, below - 1.0);
    let st = sim.control().state();
    let by_id = |id: &str| {
        st.orders
            .iter()
            .find(|o| o.order_id.to_string() == id)
            .unwrap()
            .status
            .clone()
    };
    assert_eq!(
        (by_id(&ids[0]), by_id(&ids[1])),
        ("Filled".into(), "Cancelled".into())
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn combo_orders_show_as_one_bag_and_fill_leg_by_leg() {
    let sim = ready(QuestionPolicy::Never).await;
    sim.control().set_price(265598, 230.0);
    sim.control().set_price(272093, 420.0);
    let conidex = "28812380;;;265598/1,272093/-1";
    // Buying AAPL against MSFT costs about -190 per unit: a limit of -300 rests.
    let order = json!({ "conidex": conidex, "orderType": "LMT", "price": -300.0, "side": "BUY", "quantity": 2, "tif": "DAY" });
    let (s, v) = common::post(
        &sim,
        &format!("/iserver/account/{ACCT}/orders/whatif"),
        json!({ "orders": [order.clone()] }),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["legs"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["amount"]["commission"], "2.00 USD", "{v}");
    let (_, v) = place(&sim, ACCT, order).await;
    assert_eq!(v[0]["order_status"], "Submitted", "{v}");
    let id = v[0]["order_id"].as_str().unwrap().to_string();
    let o = live_order(&sim, &id).await;
    assert_eq!(o["secType"], "BAG");
    assert_eq!(o["conid"], 28812380);
    assert_eq!(o["conidex"], conidex);
    assert_eq!(o["ticker"], "AAPL/MSFT");
    assert_eq!(o["description1"], "AAPL/MSFT Combo");
    assert_eq!(o["description2"], "+1 AAPL, -1 MSFT");
    assert_eq!(o["price"], "-300.00");
    assert_eq!(o["status"], "Submitted");
    let (_, st) = common::get(&sim, &format!("/iserver/account/order/status/{id}")).await;
    assert_eq!(st["sec_type"], "BAG");
    assert_eq!(st["conidex"], conidex);
    assert_eq!(st["symbol"], "AAPL/MSFT");
    assert_eq!(st["limit_price"], "-300.00");
    assert_eq!(
        st["order_description_with_contract"],
        "Buy 2 AAPL/MSFT Combo Limit -300.00, Day"
    );
    let (s, v) = common::delete(&sim, &format!("/iserver/account/{ACCT}/order/{id}")).await;
    assert_eq!((s, &v["conid"]), (200, &json!(28812380)));
    // A market combo fills at once: one trade per leg, positions per leg.
    let (_, v) = place(&sim, ACCT, json!({ "conidex": conidex, "orderType": "MKT", "side": "BUY", "quantity": 2, "tif": "DAY" })).await;
    let id: i64 = v[0]["order_id"].as_str().unwrap().parse().unwrap();
    let (_, trades) = common::get(&sim, &format!("/iserver/account/trades?accountId={ACCT}")).await;
    let mut legs: Vec<(i64, String, f64)> = trades
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["order_id"] == id)
        .map(|t| {
            (
                t["conid"].as_i64().unwrap(),
                t["side"].as_str().unwrap().to_string(),
                t["size"].as_f64().unwrap(),
            )
        })
        .collect();
    legs.sort_by_key(|l| l.0);
    assert_eq!(legs, [(265598, "B".into(), 2.0), (272093, "S".into(), 2.0)]);
    let st = sim.control().state();
    let held = |conid: i64| {
        st.accounts[0]
            .positions
            .iter()
            .find(|p| p.conid == conid)
            .map(|p| p.quantity)
    };
    assert_eq!((held(265598), held(272093)), (Some(102.0), Some(38.0)));
    let o = st.orders.iter().find(|o| o.order_id == id).unwrap();
    assert_eq!((o.status.as_str(), o.conidex.as_str()), ("Filled", conidex));
    sim.shutdown().await;
}
