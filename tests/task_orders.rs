//! The task tools that change something, against the simulator: orders by symbol (limit,
//! offset from last, trailing, bracket, exits for a held position, a two-leg option combo),
//! previews and their tokens, modify, cancel one and cancel all, watchlists and price alerts.
//! Each answer is checked against the tool's output schema and against what the simulator's
//! order book and lists then hold; each bad or hostile argument is an actionable `isError`
//! that sends nothing.

mod common;

use std::time::Duration;

use common::{args, err_kind, objects, ok, sim_server, text_of};
use ibkr_mcp::ibkr::session::State;
use ibkr_sim::{QuestionPolicy, SimConfig};
use serde_json::{Value, json};

const ACCOUNT: &str = "DU1234567";
const PLACE: &str = "POST /iserver/account/{accountId}/orders";
const MODIFY: &str = "POST /iserver/account/{accountId}/order/{orderId}";
const CANCEL: &str = "DELETE /iserver/account/{accountId}/order/{orderId}";
const WHATIF: &str = "POST /iserver/account/{accountId}/orders/whatif";

fn trading(questions: bool) -> SimConfig {
    let c = SimConfig::default().with_pacing(false);
    if questions {
        // One question about every order (IBKR's price-cap warning).
        c.with_questions(QuestionPolicy::Chain {
            message_ids: vec!["o163".into()],
        })
    } else {
        c.with_questions(QuestionPolicy::Never)
    }
}

/// Working orders as the task tool lists them (IBKR allows the list once per 5 s: the caller
/// waits between reads).
async fn working(s: &common::SimServer) -> Vec<Value> {
    let r = s
        .server
        .call("get_account_orders", args(json!({"account": ACCOUNT})))
        .await
        .unwrap();
    objects(&ok("get_account_orders", &r))
}

fn cent(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[tokio::test]
async fn limit_offset_modify_and_cancel_by_symbol() {
    let s = sim_server(trading(false), &["--allow-trading"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let last = s.sim.control().price(265598).unwrap();

    // A preview first: IBKR's cost and margin, and no token (previews are not required).
    let r = s
        .server
        .call(
            "preview_order",
            args(
                json!({"account": ACCOUNT, "symbol": "AAPL", "side": "BUY", "quantity": 5,
                        "type": "LMT", "offset_pct": -3}),
            ),
        )
        .await
        .unwrap();
    let p = ok("preview_order", &r);
    assert!(p["cost"].as_str().unwrap().contains("commission"), "{p}");
    assert!(p.get("preview_token").is_none(), "{p}");
    assert!(p["equity_after"].as_f64().is_some_and(|e| e > 0.0), "{p}");

    // A limit 3 % below last, priced by the server from the last price.
    let r = s
        .server
        .call(
            "place_order",
            args(
                json!({"account": ACCOUNT, "symbol": "AAPL", "side": "BUY", "quantity": 5,
                        "type": "LMT", "offset_pct": -3}),
            ),
        )
        .await
        .unwrap();
    let v = ok("place_order", &r);
    let placed = objects(&v);
    assert_eq!(placed.len(), 1, "{v}");
    let id = placed[0]["order_id"].as_str().unwrap().to_string();
    assert!(
        v["order"].as_str().unwrap().starts_with("BUY 5 AAPL LMT"),
        "{v}"
    );
    let listed = working(&s).await;
    let o = listed
        .iter()
        .find(|o| o["order_id"] == id.as_str())
        .unwrap();
    let limit = o["limit_price"].as_f64().unwrap();
    // The quote moves between the server's look and the check here; the limit is the server's
    // 97 % of a last price within a few ticks of this one.
    assert!(
        (limit - cent(last * 0.97)).abs() <= last * 0.01,
        "{o} vs last {last}"
    );
    assert_eq!(o["quantity"], 5.0);

    // Modify: a new limit and quantity; everything else stays.
    let r = s
        .server
        .call(
            "modify_order",
            args(json!({"order_id": id, "limit_price": cent(last * 0.9), "quantity": 7})),
        )
        .await
        .unwrap();
    let v = ok("modify_order", &r);
    assert!(
        v["order"]
            .as_str()
            .unwrap()
            .contains("changed: quantity, limit_price"),
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let listed = working(&s).await;
    let o = listed
        .iter()
        .find(|o| o["order_id"] == id.as_str())
        .unwrap();
    assert_eq!(o["quantity"], 7.0, "{o}");
    assert_eq!(o["limit_price"].as_f64().unwrap(), cent(last * 0.9), "{o}");
    assert_eq!(o["side"], "BUY");

    // Cancel it by id.
    let r = s
        .server
        .call("cancel_order", args(json!({"order_id": id})))
        .await
        .unwrap();
    let v = ok("cancel_order", &r);
    assert_eq!(objects(&v)[0]["order_id"], id.as_str(), "{v}");
    tokio::time::sleep(Duration::from_millis(5200)).await;
    assert!(
        !working(&s)
            .await
            .iter()
            .any(|o| o["order_id"] == id.as_str()),
        "cancelled"
    );
}

#[tokio::test]
async fn a_bracket_a_protective_exit_and_cancel_all() {
    let s = sim_server(trading(false), &["--allow-trading"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let last = s.sim.control().price(265598).unwrap();
    // A bracket whose entry rests: the children wait for it.
    let entry = cent(last * 0.8);
    let r = s
        .server
        .call(
            "place_order",
            args(
                json!({"account": ACCOUNT, "symbol": "AAPL", "side": "BUY", "quantity": 2,
                        "type": "LMT", "limit_price": entry,
                        "take_profit": cent(last * 0.95), "stop_loss": cent(last * 0.7)}),
            ),
        )
        .await
        .unwrap();
    let v = ok("place_order", &r);
    assert_eq!(objects(&v).len(), 3, "parent and two children: {v}");
    let words = v["order"].as_str().unwrap();
    assert!(
        words.contains("take profit SELL LMT") && words.contains("stop loss SELL STP"),
        "{v}"
    );
    let listed = working(&s).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    let parent = listed.iter().find(|o| o["parent_id"].is_null()).unwrap();
    let children: Vec<&Value> = listed
        .iter()
        .filter(|o| !o["parent_id"].is_null())
        .collect();
    assert_eq!(children.len(), 2, "{listed:?}");
    for c in &children {
        assert_eq!(c["parent_id"], parent["order_id"], "{c}");
        assert_eq!(c["side"], "SELL");
    }

    // A position, then exits for it without side or quantity: both sell the whole position,
    // one cancelling the other.
    let r = s
        .server
        .call(
            "place_order",
            args(
                json!({"account": ACCOUNT, "symbol": "MSFT", "side": "BUY", "quantity": 4,
                        "type": "MKT"}),
            ),
        )
        .await
        .unwrap();
    ok("place_order", &r);
    let held = s
        .server
        .call("get_account_positions", args(json!({"account": ACCOUNT})))
        .await
        .unwrap();
    let held = objects(&ok("get_account_positions", &held));
    let qty = held.iter().find(|p| p["symbol"] == "MSFT").unwrap()["quantity"]
        .as_f64()
        .unwrap();
    let msft = held.iter().find(|p| p["symbol"] == "MSFT").unwrap()["price"]
        .as_f64()
        .unwrap();
    let r = s
        .server
        .call(
            "place_order",
            args(json!({"account": ACCOUNT, "symbol": "MSFT",
                        "take_profit": cent(msft * 1.2), "stop_loss": cent(msft * 0.8)})),
        )
        .await
        .unwrap();
    let v = ok("place_order", &r);
    let words = v["order"].as_str().unwrap();
    assert!(
        words.contains(&format!("take profit SELL {qty} MSFT")),
        "{v}"
    );
    assert!(words.contains("one cancels the other"), "{v}");
    let book = s.sim.control().state().orders;
    let exits: Vec<_> = book.iter().rev().take(2).collect();
    assert!(
        exits
            .iter()
            .all(|o| o.single_group && o.side == "SELL" && o.quantity == qty),
        "{exits:?}"
    );
    let types: Vec<&str> = exits.iter().map(|o| o.order_type.as_str()).collect();
    assert!(
        types.contains(&"LIMIT") && types.contains(&"STOP"),
        "{types:?}"
    );
    // Refused before anything is sent: exits on the wrong side, for more than is held, stacked
    // on the exits already working, or priced on the wrong side of the market.
    let before = s.hits(PLACE);
    for (a, says) in [
        (
            json!({"quantity": qty + 1.0, "stop_loss": cent(msft * 0.7)}),
            "more than the",
        ),
        (
            json!({"stop_loss": cent(msft * 0.7)}),
            "would stack on them",
        ),
    ] {
        let mut a = a;
        a["account"] = json!(ACCOUNT);
        a["symbol"] = json!("MSFT");
        let r = s.server.call("place_order", args(a)).await.unwrap();
        assert_eq!(err_kind(&r), "invalid_arguments", "{}", text_of(&r));
        assert!(text_of(&r).contains(says), "{}", text_of(&r));
    }
    let r = s
        .server
        .call(
            "place_order",
            args(json!({"account": ACCOUNT, "symbol": "MSFT", "side": "BUY",
                        "stop_loss": cent(msft * 0.8)})),
        )
        .await
        .unwrap();
    assert_eq!(err_kind(&r), "invalid_arguments");
    assert!(text_of(&r).contains("would add to it"), "{}", text_of(&r));
    assert_eq!(s.hits(PLACE), before);

    let r = s
        .server
        .call(
            "place_order",
            args(
                json!({"account": ACCOUNT, "symbol": "KO", "side": "BUY", "quantity": 3,
                        "type": "MKT"}),
            ),
        )
        .await
        .unwrap();
    ok("place_order", &r);
    let ko = s.sim.control().price(8894).unwrap();
    let r = s
        .server
        .call(
            "place_order",
            args(json!({"account": ACCOUNT, "symbol": "KO", "take_profit": cent(ko * 0.5)})),
        )
        .await
        .unwrap();
    assert_eq!(err_kind(&r), "invalid_arguments", "{}", text_of(&r));
    assert!(
        text_of(&r).contains("must be above the last price"),
        "{}",
        text_of(&r)
    );
    assert_eq!(
        s.hits(PLACE),
        before + 1,
        "only the KO market order went out"
    );

    // Cancel all: every working order of the account, one cancellation each.
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let n = working(&s).await.len();
    assert_eq!(n, 5, "bracket (3) and exits (2)");
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let before = s.hits(CANCEL);
    let r = s
        .server
        .call(
            "cancel_order",
            args(json!({"all": true, "account": ACCOUNT})),
        )
        .await
        .unwrap();
    let v = ok("cancel_order", &r);
    assert_eq!(objects(&v).len(), n, "{v}");
    assert_eq!(s.hits(CANCEL) - before, n as u64);
    tokio::time::sleep(Duration::from_millis(5200)).await;
    assert!(working(&s).await.is_empty());
}

#[tokio::test]
async fn trailing_stops_and_option_combos_reach_the_book() {
    let s = sim_server(trading(false), &["--allow-trading"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let r = s
        .server
        .call(
            "place_order",
            args(
                json!({"account": ACCOUNT, "symbol": "AAPL", "side": "SELL", "quantity": 1,
                        "type": "TRAIL", "trailing_percent": 5, "tif": "GTC"}),
            ),
        )
        .await
        .unwrap();
    let v = ok("place_order", &r);
    assert!(v["order"].as_str().unwrap().contains("trailing 5%"), "{v}");

    // A call spread: buy the lower strike, sell the higher, in one combo order.
    let p = s
        .server
        .call("get_option_parameters", args(json!({"symbol": "AAPL"})))
        .await
        .unwrap();
    let p = ok("get_option_parameters", &p);
    let expiry = p["expiries"][0].as_str().unwrap().to_string();
    let last = s.sim.control().price(265598).unwrap();
    let strikes: Vec<f64> = p["strikes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .filter(|k| *k >= last)
        .take(2)
        .collect();
    let leg = |k: f64| format!("AAPL {expiry} {k} C");
    let r = s
        .server
        .call(
            "place_order",
            args(
                json!({"account": ACCOUNT, "side": "BUY", "quantity": 1, "type": "LMT",
                        "limit_price": 0.05,
                        "legs": [{"symbol": leg(strikes[0]), "ratio": 1},
                                 {"symbol": leg(strikes[1]), "ratio": -1}]}),
            ),
        )
        .await
        .unwrap();
    let v = ok("place_order", &r);
    assert!(
        v["order"].as_str().unwrap().starts_with("BUY 1 combo ["),
        "{v}"
    );
    // IBKR's combo form reached the book: the spread template, then each leg and its ratio.
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let raw = s
        .server
        .call("list_orders", args(json!({"accountId": ACCOUNT})))
        .await
        .unwrap();
    assert_eq!(raw.is_error, Some(false), "{}", text_of(&raw));
    let raw = raw.structured_content.unwrap();
    let combo = raw["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| {
            o["conidex"]
                .as_str()
                .is_some_and(|x| x.starts_with("28812380;;;"))
        })
        .unwrap_or_else(|| panic!("no combo in {raw}"));
    let conidex = combo["conidex"].as_str().unwrap();
    assert!(
        conidex.ends_with("/-1") && conidex.contains("/1,"),
        "{combo}"
    );
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let listed = working(&s).await;
    assert_eq!(
        listed.len(),
        2,
        "trailing stop and the resting spread: {listed:?}"
    );
}

#[tokio::test]
async fn previews_bind_the_order_that_is_placed() {
    let s = sim_server(trading(false), &["--allow-trading", "--require-preview"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let order = json!({"account": ACCOUNT, "symbol": "AAPL", "side": "BUY", "quantity": 1,
                       "type": "LMT", "offset_pct": -5});
    // No preview: refused before any lookup or order.
    let before = (s.hits(PLACE), s.hits(WHATIF));
    let r = s
        .server
        .call("place_order", args(order.clone()))
        .await
        .unwrap();
    assert_eq!(err_kind(&r), "policy_refused");
    assert!(
        text_of(&r).contains("call preview_order with the same arguments"),
        "{}",
        text_of(&r)
    );
    assert_eq!((s.hits(PLACE), s.hits(WHATIF)), before);

    let r = s
        .server
        .call("preview_order", args(order.clone()))
        .await
        .unwrap();
    let p = ok("preview_order", &r);
    let token = p["preview_token"].as_str().unwrap().to_string();
    assert!(p["cost"].as_str().unwrap().contains("commission"), "{p}");
    assert!(
        p["order"].as_str().unwrap().starts_with("BUY 1 AAPL LMT"),
        "{p}"
    );
    assert_eq!(s.hits(PLACE), before.0, "a preview places nothing");

    // The token with other arguments: refused, nothing sent.
    let mut other = order.clone();
    other["quantity"] = json!(2);
    other["preview_token"] = json!(token);
    let r = s.server.call("place_order", args(other)).await.unwrap();
    assert_eq!(err_kind(&r), "policy_refused");
    assert!(text_of(&r).contains("another order"), "{}", text_of(&r));
    assert_eq!(s.hits(PLACE), before.0);

    // The market moves 10 %; the same arguments place the previewed tickets (priced from the
    // last price the preview saw, not re-priced), once.
    let last = s.sim.control().price(265598).unwrap();
    assert!(s.sim.control().set_price(265598, cent(last * 1.1)));
    let mut same = order.clone();
    same["preview_token"] = json!(token);
    let r = s
        .server
        .call("place_order", args(same.clone()))
        .await
        .unwrap();
    let v = ok("place_order", &r);
    assert_eq!(
        v["order"], p["order"],
        "the order placed is the one previewed"
    );
    assert_eq!(s.hits(PLACE), before.0 + 1);
    let r = s.server.call("place_order", args(same)).await.unwrap();
    assert_eq!(err_kind(&r), "policy_refused", "a token is single use");
    assert_eq!(s.hits(PLACE), before.0 + 1);
    let id = objects(&v)[0]["order_id"].as_str().unwrap().to_string();

    // A change is previewed the same way, and only the previewed change goes out.
    let change = json!({"order_id": id, "quantity": 3});
    let r = s
        .server
        .call("modify_order", args(change.clone()))
        .await
        .unwrap();
    assert_eq!(err_kind(&r), "policy_refused");
    assert_eq!(s.hits(MODIFY), 0);
    let r = s
        .server
        .call("preview_order", args(change.clone()))
        .await
        .unwrap();
    let p = ok("preview_order", &r);
    assert!(
        p["order"].as_str().unwrap().contains("changed: quantity"),
        "{p}"
    );
    let mut with_token = change.clone();
    with_token["preview_token"] = p["preview_token"].clone();
    let r = s
        .server
        .call("modify_order", args(with_token))
        .await
        .unwrap();
    ok("modify_order", &r);
    assert_eq!(s.hits(MODIFY), 1);

    // The audit log names the task tool and the generated call it made.
    let log = std::fs::read_to_string(s.state.audit.path()).unwrap();
    assert!(
        log.contains("\"tool\":\"place_order/place_orders\""),
        "{log}"
    );
    assert!(
        log.contains("\"tool\":\"modify_order/modify_iserver_order\""),
        "{log}"
    );
}

#[tokio::test]
async fn questions_go_to_the_model_with_the_companion_reply_tool() {
    let s = sim_server(trading(true), &["--allow-trading", "--toolsets", "default"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let names: Vec<String> = s
        .server
        .tools()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(
        names.contains(&"reply_order_question".to_string()),
        "{names:?}"
    );
    assert!(!names.contains(&"place_orders".to_string()), "{names:?}");
    let r = s
        .server
        .call(
            "place_order",
            args(
                json!({"account": ACCOUNT, "symbol": "AAPL", "side": "BUY", "quantity": 1,
                        "type": "MKT"}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(err_kind(&r), "order_question", "{}", text_of(&r));
    assert!(
        text_of(&r).contains("BUY 1 AAPL MKT DAY on DU"),
        "{}",
        text_of(&r)
    );
    let reply_id = r.structured_content.as_ref().unwrap()["error"]["question"]["reply_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text_of(&r).contains("reply_order_question"));
    let reply = s
        .server
        .call(
            "reply_order_question",
            args(json!({"replyId": reply_id, "body": {"confirmed": true}})),
        )
        .await
        .unwrap();
    assert_eq!(reply.is_error, Some(false), "{}", text_of(&reply));
    let trades = s
        .server
        .call("get_account_trades", args(json!({"days": 1})))
        .await
        .unwrap();
    let trades = objects(&ok("get_account_trades", &trades));
    assert_eq!(trades.len(), 1, "the market order filled once: {trades:?}");
}

#[tokio::test]
async fn watchlists_and_alerts_are_created_edited_and_deleted() {
    let s = sim_server(trading(false), &["--allow-trading"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let r = s
        .server
        .call(
            "create_watchlist",
            args(json!({"name": "Tech", "symbols": ["AAPL", "MSFT"]})),
        )
        .await
        .unwrap();
    let v = ok("create_watchlist", &r);
    let id = v["id"].as_str().unwrap().to_string();
    assert!(id.bytes().all(|b| b.is_ascii_digit()), "{v}");
    let r = s
        .server
        .call(
            "edit_watchlist",
            args(json!({"watchlist": "Tech", "add": ["SPY"], "remove": ["MSFT"], "name": "Tech+"})),
        )
        .await
        .unwrap();
    ok("edit_watchlist", &r);
    let r = s
        .server
        .call("get_watchlists", args(json!({"watchlist": id})))
        .await
        .unwrap();
    let lists = objects(&ok("get_watchlists", &r));
    assert_eq!(lists[0]["name"], "Tech+");
    assert_eq!(lists[0]["symbols"], json!(["AAPL", "SPY"]), "{lists:?}");
    // A second list with the same name is refused before anything is written.
    let r = s
        .server
        .call(
            "create_watchlist",
            args(json!({"name": "tech+", "symbols": ["AAPL"]})),
        )
        .await
        .unwrap();
    assert_eq!(err_kind(&r), "invalid_arguments");
    let r = s
        .server
        .call("delete_watchlist", args(json!({"watchlist": "Tech+"})))
        .await
        .unwrap();
    ok("delete_watchlist", &r);

    let r = s
        .server
        .call(
            "create_alert",
            args(json!({"symbol": "AAPL", "above": 1000, "account": ACCOUNT})),
        )
        .await
        .unwrap();
    let v = ok("create_alert", &r);
    let alert = v["id"].as_str().unwrap().to_string();
    let r = s
        .server
        .call(
            "activate_alert",
            args(json!({"alert_id": alert, "active": false, "account": ACCOUNT})),
        )
        .await
        .unwrap();
    ok("activate_alert", &r);
    let r = s
        .server
        .call("get_alerts", args(json!({"account": ACCOUNT})))
        .await
        .unwrap();
    let alerts = objects(&ok("get_alerts", &r));
    let a = alerts
        .iter()
        .find(|a| a["alert_id"] == alert.as_str())
        .unwrap();
    assert_eq!(a["name"], "AAPL >= 1000");
    assert_eq!(a["active"], false);
    let r = s
        .server
        .call(
            "delete_alert",
            args(json!({"alert_id": alert, "account": ACCOUNT})),
        )
        .await
        .unwrap();
    ok("delete_alert", &r);
    let r = s
        .server
        .call("get_alerts", args(json!({"account": ACCOUNT})))
        .await
        .unwrap();
    assert!(
        objects(&ok("get_alerts", &r))
            .iter()
            .all(|a| a["alert_id"] != alert.as_str())
    );
}

/// Every write task with a bad or hostile argument: an actionable `isError`, and no write
/// request leaves.
#[tokio::test]
async fn bad_and_hostile_arguments_send_nothing() {
    let s = sim_server(trading(false), &["--allow-trading"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let writes = [
        PLACE,
        MODIFY,
        CANCEL,
        WHATIF,
        "POST /iserver/watchlist",
        "DELETE /iserver/watchlist",
        "POST /iserver/account/{accountId}/alert",
        "POST /iserver/account/{accountId}/alert/activate",
        "DELETE /iserver/account/{accountId}/alert/{alertId}",
        "POST /logout",
    ];
    let sent = |s: &common::SimServer| writes.iter().map(|w| s.hits(w)).sum::<u64>();
    let before = sent(&s);
    let base = json!({"account": ACCOUNT, "symbol": "AAPL", "side": "BUY", "quantity": 1});
    let with = |extra: Value| {
        let mut o = base.clone();
        o.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        o
    };
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "place_order",
            with(json!({"type": "LMT"})),
            "invalid_arguments",
            "needs `limit_price`",
        ),
        (
            "place_order",
            with(json!({"type": "MKT", "limit_price": 10})),
            "invalid_arguments",
            "takes no `limit_price`",
        ),
        (
            "place_order",
            with(json!({"type": "LMT", "limit_price": -1})),
            "invalid_arguments",
            "greater than 0",
        ),
        (
            "place_order",
            with(json!({"type": "MKT", "quantity": 0})),
            "invalid_arguments",
            "greater than 0",
        ),
        (
            "place_order",
            with(json!({"type": "MOC", "tif": "GTC"})),
            "invalid_arguments",
            "DAY order",
        ),
        (
            "place_order",
            with(json!({"type": "TRAIL"})),
            "invalid_arguments",
            "trailing_amount",
        ),
        (
            "place_order",
            with(json!({"type": "STP LMT", "limit_price": 10})),
            "invalid_arguments",
            "needs `stop_price`",
        ),
        (
            "place_order",
            with(json!({"type": "LMT", "limit_price": 100, "take_profit": 90})),
            "invalid_arguments",
            "take_profit must be above",
        ),
        (
            "place_order",
            with(json!({"type": "LMT", "limit_price": 100, "stop_loss": 110})),
            "invalid_arguments",
            "stop_loss must be below",
        ),
        (
            "place_order",
            with(json!({"type": "LMT", "offset_pct": -90})),
            "invalid_arguments",
            "between -50 and 50",
        ),
        (
            "place_order",
            with(json!({"type": "MKT", "account": "DU1/../../logout"})),
            "unresolved",
            "not an account of this login",
        ),
        (
            "place_order",
            with(json!({"type": "MKT", "account": "DU9999999"})),
            "unresolved",
            "not an account of this login",
        ),
        (
            "place_order",
            with(json!({"type": "MKT", "symbol": "AAPL/../../logout"})),
            "unresolved",
            "symbol",
        ),
        (
            "place_order",
            with(json!({"type": "MKT", "side": "HOLD"})),
            "invalid_arguments",
            "side",
        ),
        (
            "place_order",
            with(json!({"type": "MKT", "orderType": "MKT"})),
            "invalid_arguments",
            "orderType",
        ),
        (
            "place_order",
            json!({"side": "BUY", "quantity": 1, "type": "MKT", "symbol": "AAPL"}),
            "invalid_arguments",
            "2 accounts",
        ),
        (
            "place_order",
            json!({"account": ACCOUNT, "side": "BUY", "quantity": 1, "type": "MKT",
            "legs": [{"symbol": "AAPL", "ratio": 1}]}),
            "invalid_arguments",
            "legs",
        ),
        (
            "place_order",
            json!({"account": ACCOUNT, "side": "BUY", "quantity": 1, "type": "MKT",
            "legs": [{"symbol": "AAPL", "ratio": 1}, {"symbol": "AAPL", "ratio": -1}]}),
            "invalid_arguments",
            "already a leg",
        ),
        (
            "preview_order",
            json!({"order_id": "1/../../../logout", "limit_price": 1}),
            "invalid_arguments",
            "not an order id",
        ),
        (
            "modify_order",
            json!({"order_id": "99999999"}),
            "unresolved",
            "order",
        ),
        (
            "modify_order",
            json!({"order_id": "../logout", "quantity": 1}),
            "invalid_arguments",
            "not an order id",
        ),
        ("cancel_order", json!({}), "invalid_arguments", "order_id"),
        (
            "cancel_order",
            json!({"order_id": "1", "all": true}),
            "invalid_arguments",
            "not both",
        ),
        (
            "cancel_order",
            json!({"order_id": "-1"}),
            "invalid_arguments",
            "not an order id",
        ),
        (
            "cancel_order",
            json!({"all": true}),
            "invalid_arguments",
            "2 accounts",
        ),
        (
            "create_watchlist",
            json!({"name": "X", "symbols": []}),
            "invalid_arguments",
            "symbols",
        ),
        (
            "create_watchlist",
            json!({"name": "X", "symbols": ["NOPE_NOT_A_SYMBOL"]}),
            "unresolved",
            "symbols[0]",
        ),
        (
            "edit_watchlist",
            json!({"watchlist": "nope"}),
            "unresolved",
            "no watchlist",
        ),
        (
            "delete_watchlist",
            json!({"watchlist": "1/../../logout"}),
            "unresolved",
            "no watchlist",
        ),
        (
            "create_alert",
            json!({"symbol": "AAPL", "above": 1, "below": 2, "account": ACCOUNT}),
            "invalid_arguments",
            "one of `above` or `below`",
        ),
        (
            "activate_alert",
            json!({"alert_id": "0", "active": true, "account": ACCOUNT}),
            "invalid_arguments",
            "not an alert id",
        ),
        (
            "delete_alert",
            json!({"alert_id": "1/../../logout", "account": ACCOUNT}),
            "invalid_arguments",
            "not an alert id",
        ),
    ];
    let mut failures = Vec::new();
    for (tool, a, kind, says) in &cases {
        let r = s.server.call(tool, args(a.clone())).await.unwrap();
        let got = if r.is_error == Some(true) {
            err_kind(&r)
        } else {
            "success".into()
        };
        let text = text_of(&r);
        if got != *kind || !text.contains(says) {
            failures.push(format!("{tool} {a}: {got}: {text}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(sent(&s), before, "no write request left");
}

#[tokio::test]
async fn without_trading_the_write_tasks_are_hidden_and_refused() {
    let s = sim_server(trading(false), &["--toolsets", "default"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let names: Vec<String> = s
        .server
        .tools()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    for w in [
        "place_order",
        "cancel_order",
        "create_watchlist",
        "reply_order_question",
    ] {
        assert!(
            !names.contains(&w.to_string()),
            "{w} listed without --allow-trading"
        );
    }
    let r = s
        .server
        .call(
            "place_order",
            args(
                json!({"account": ACCOUNT, "symbol": "AAPL", "side": "BUY", "quantity": 1,
                        "type": "MKT"}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(err_kind(&r), "trading_disabled");
    assert_eq!(s.hits(PLACE), 0);
}
