//! The task tools against the simulator (and, for IBKR's recorded reply shapes, an HTTP mock on
//! loopback): each answers its everyday request in one call with named numbers that agree with
//! the generated tools' raw answers, every structured result validates against the tool's own
//! output schema, and every tool refuses a bad or hostile argument with an actionable `isError`
//! without sending the request it was asked for.

mod common;

use std::time::Duration;

use common::{args, err_kind, objects, ok, sim_server, text_of};
use httpmock::prelude::*;
use ibkr_mcp::ibkr::session::State;
use ibkr_sim::{QuestionPolicy, SimConfig};
use serde_json::{Value, json};

const ALL: &[&str] = &["--toolsets", "all"];

fn quiet() -> SimConfig {
    SimConfig::default().with_pacing(false)
}

#[tokio::test]
async fn account_overview_agrees_with_the_portfolio_summary_and_pnl() {
    let s = sim_server(quiet(), ALL).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let r = s.server.call("get_account_summary", None).await.unwrap();
    let v = ok("get_account_summary", &r);
    let accounts = &objects(&v);
    assert_eq!(accounts.len(), 2, "{v}");
    for a in accounts {
        let id = a["account"].as_str().unwrap();
        let raw = s
            .server
            .call("get_portfolio_summary", args(json!({ "accountId": id })))
            .await
            .unwrap();
        let raw = raw.structured_content.unwrap();
        let nlv = raw["netliquidation"]["amount"].as_f64().unwrap();
        // Prices move between the two calls; the overview must be the same quantity.
        let got = a["net_liquidation"].as_f64().unwrap();
        assert!((got - nlv).abs() / nlv < 0.02, "{id}: {got} vs {nlv}");
        assert!(a["buying_power"].as_f64().unwrap() > 0.0);
        assert!(
            a["daily_pnl"].is_number() && a["unrealized_pnl"].is_number(),
            "{a}"
        );
    }
    // One account by id; the list of accounts is read once and reused.
    let lists = s.hits("GET /portfolio/accounts");
    let one = s
        .server
        .call("get_account_summary", args(json!({"account": "DU7654321"})))
        .await
        .unwrap();
    let one = ok("get_account_summary", &one);
    assert_eq!(objects(&one).len(), 1);
    assert_eq!(objects(&one)[0]["account"], "DU7654321");
    assert_eq!(s.hits("GET /portfolio/accounts"), lists);
}

#[tokio::test]
async fn positions_are_largest_first_with_futures_notional_apart() {
    let s = sim_server(quiet(), ALL).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let r = s.server.call("get_account_positions", None).await.unwrap();
    let v = ok("get_account_positions", &r);
    let rows = &objects(&v);
    assert_eq!(v["total"].as_u64().unwrap() as usize, rows.len());
    let size = |p: &Value| {
        p["notional"]
            .as_f64()
            .or(p["market_value"].as_f64())
            .unwrap()
            .abs()
    };
    assert!(rows.windows(2).all(|w| size(&w[0]) >= size(&w[1])), "{v}");
    let fut = rows
        .iter()
        .find(|p| p["asset_class"] == "FUT")
        .expect("the demo holds a future");
    let q = fut["quantity"].as_f64().unwrap();
    let px = fut["price"].as_f64().unwrap();
    assert_eq!(fut["notional"].as_f64().unwrap(), q * px * 50.0, "{fut}");
    assert_eq!(fut["market_value"], fut["unrealized_pnl"]);
    let stk = rows.iter().find(|p| p["symbol"] == "AAPL").unwrap();
    assert!(
        stk["quantity"].is_number() && stk["notional"].is_null(),
        "{stk}"
    );
    let two = s
        .server
        .call("get_account_positions", args(json!({"limit": 2})))
        .await
        .unwrap();
    assert_eq!(objects(&ok("get_account_positions", &two)).len(), 2);
    assert!(text_of(&two).contains("raise `limit`"), "{}", text_of(&two));
}

#[tokio::test]
async fn quotes_for_stocks_futures_and_options_in_one_call_as_numbers() {
    let s = sim_server(quiet(), ALL).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let expiry = {
        // The demo lists AAPL options for the next months; take one from the search.
        let r = s
            .server
            .call("search_contracts", args(json!({"query": "AAPL"})))
            .await
            .unwrap();
        let v = ok("search_contracts", &r);
        let found = objects(&v);
        assert_eq!(found[0]["conid"], 265598, "{v}");
        found[0]["option_months"][0].as_str().unwrap().to_string()
    };
    let strikes = s
        .server
        .call(
            "get_option_strikes",
            args(json!({"conid": "265598", "sectype": "OPT", "month": expiry})),
        )
        .await
        .unwrap();
    let strike = strikes.structured_content.unwrap()["call"][0]
        .as_f64()
        .unwrap();
    let info = s
        .server
        .call(
            "get_secdef_info",
            args(json!({"conid": "265598", "sectype": "OPT", "month": expiry,
                        "strike": strike.to_string(), "right": "C"})),
        )
        .await
        .unwrap();
    let info = info.structured_content.unwrap();
    let date = info["items"][0]["maturityDate"]
        .as_str()
        .unwrap()
        .to_string();
    let option = format!(
        "AAPL {}-{}-{} {strike} C",
        &date[..4],
        &date[4..6],
        &date[6..]
    );
    let future = s
        .server
        .call("search_contracts", args(json!({"query": "ES"})))
        .await
        .unwrap();
    let month = objects(&ok("search_contracts", &future))[0]["future_months"][0]
        .as_str()
        .unwrap()
        .to_string();
    let future = format!("ES {}{}", &month[..3], &month[3..]);

    let r = s
        .server
        .call(
            "get_price_snapshot",
            args(
                json!({"symbols": ["AAPL", "msft", "272093", &future, &option],
                        "fields": ["last", "bid", "ask", "change_pct", "iv", "delta"]}),
            ),
        )
        .await
        .unwrap();
    let v = ok("get_price_snapshot", &r);
    let quotes = &objects(&v);
    assert_eq!(quotes.len(), 5, "{v}");
    for q in quotes {
        assert!(q["last"].is_number() && q["bid"].is_number(), "{q}");
        assert_eq!(q["data_status"], "live", "{q}");
    }
    assert_eq!(
        quotes[1]["conid"], quotes[2]["conid"],
        "MSFT by symbol and by conid"
    );
    let opt = &quotes[4];
    assert!(opt["iv"].as_f64().unwrap() > 1.0, "IV in percent: {opt}");
    let delta = opt["delta"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&delta), "{opt}");
    assert!(
        quotes[0]["iv"].is_null(),
        "a stock has no IV: {}",
        quotes[0]
    );
    // The quote agrees with the simulator's price.
    let px = s.sim.control().price(265598).unwrap();
    assert!((quotes[0]["last"].as_f64().unwrap() - px).abs() / px < 0.01);

    // Symbols resolve once: asking again searches nothing.
    let searches = s.hits("GET /iserver/secdef/search") + s.hits("GET /iserver/secdef/info");
    let again = s
        .server
        .call(
            "get_price_snapshot",
            args(json!({"symbols": ["AAPL", &option]})),
        )
        .await
        .unwrap();
    ok("get_price_snapshot", &again);
    assert_eq!(
        s.hits("GET /iserver/secdef/search") + s.hits("GET /iserver/secdef/info"),
        searches
    );
}

#[tokio::test]
async fn history_is_rows_of_numbers_with_iso_times() {
    let s = sim_server(quiet(), ALL).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let r = s
        .server
        .call(
            "get_price_history",
            args(json!({"symbol": "AAPL", "period": "1m", "bar": "1d"})),
        )
        .await
        .unwrap();
    let v = ok("get_price_history", &r);
    assert_eq!(
        v["columns"],
        json!(["time", "open", "high", "low", "close", "volume"])
    );
    let bars = v["rows"].as_array().unwrap();
    assert!(
        (18..=31).contains(&bars.len()),
        "{} daily bars in a month",
        bars.len()
    );
    let mut last = None;
    for b in bars {
        let t = chrono::DateTime::parse_from_rfc3339(b[0].as_str().unwrap()).unwrap();
        assert!(last.is_none_or(|l| l < t), "oldest first");
        last = Some(t);
        let (o, h, l, c) = (
            b[1].as_f64().unwrap(),
            b[2].as_f64().unwrap(),
            b[3].as_f64().unwrap(),
            b[4].as_f64().unwrap(),
        );
        assert!(l <= o.min(c) && h >= o.max(c), "{b}");
    }
    let hourly = s
        .server
        .call(
            "get_price_history",
            args(json!({"symbol": "AAPL", "period": "1d", "bar": "1h"})),
        )
        .await
        .unwrap();
    assert_eq!(
        ok("get_price_history", &hourly)["rows"]
            .as_array()
            .unwrap()
            .len(),
        24
    );
}

#[tokio::test]
async fn open_orders_and_trades_after_orders_on_a_paper_account() {
    let s = sim_server(
        quiet().with_questions(QuestionPolicy::Never),
        &["--allow-trading", "--toolsets", "all"],
    )
    .await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let px = s.sim.control().price(265598).unwrap();
    for (order_type, price) in [("LMT", (px * 0.5 * 100.0).round() / 100.0), ("MKT", 0.0)] {
        let mut order = json!({"conid": 265598, "orderType": order_type, "side": "BUY",
                               "tif": "DAY", "quantity": 3});
        if order_type == "LMT" {
            order["price"] = json!(price);
        }
        let r = s
            .server
            .call(
                "place_orders",
                args(json!({"accountId": "DU1234567", "body": {"orders": [order]}})),
            )
            .await
            .unwrap();
        assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    }
    let r = s.server.call("get_account_orders", None).await.unwrap();
    let v = ok("get_account_orders", &r);
    let working = &objects(&v);
    assert_eq!(working.len(), 1, "only the limit order is working: {v}");
    let o = &working[0];
    assert_eq!(o["symbol"], "AAPL");
    assert_eq!(o["quantity"], 3.0);
    assert!(o["limit_price"].as_f64().unwrap() < px, "{o}");
    assert!(o["order_id"].as_str().is_some_and(|id| !id.is_empty()));

    // IBKR allows the order list once per 5 s: wait it out, so the next read is sent.
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let all = s
        .server
        .call("get_account_orders", args(json!({"status": "all"})))
        .await
        .unwrap();
    let all = ok("get_account_orders", &all);
    assert_eq!(objects(&all).len(), 2, "{all}");

    let t = s
        .server
        .call("get_account_trades", args(json!({"days": 1})))
        .await
        .unwrap();
    let t = ok("get_account_trades", &t);
    let fills = &objects(&t);
    assert_eq!(fills.len(), 1, "{t}");
    assert_eq!(fills[0]["side"], "BUY");
    assert_eq!(fills[0]["quantity"], 3.0);
    assert!(fills[0]["price"].as_f64().unwrap() > 0.0);
    chrono::DateTime::parse_from_rfc3339(fills[0]["time"].as_str().unwrap()).unwrap();
}

/// Each task tool with a bad or hostile argument: an actionable `isError` (`invalid_arguments`
/// when the schema or the server refuses it before sending anything, `unresolved` when a lookup
/// at IBKR found nothing), and the request the tool was asked for is never sent.
#[tokio::test]
async fn bad_and_hostile_arguments_are_refused_and_nothing_is_sent() {
    let s = sim_server(quiet(), &["--allow-trading", "--toolsets", "all"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    const INVALID: &str = "invalid_arguments";
    const UNRESOLVED: &str = "unresolved";
    let cases: &[(&str, Value, &str, &str)] = &[
        (
            "get_account_summary",
            json!({"account": "DU1234567/../../logout"}),
            UNRESOLVED,
            "not an account of this login",
        ),
        (
            "get_account_summary",
            json!({"accountId": "DU1234567"}),
            INVALID,
            "unknown argument",
        ),
        (
            "get_account_positions",
            json!({"limit": 0}),
            INVALID,
            "limit",
        ),
        (
            "get_account_positions",
            json!({"account": "U0000000"}),
            UNRESOLVED,
            "its accounts are DU1234567, DU7654321",
        ),
        (
            "get_account_orders",
            json!({"status": "open; DROP"}),
            INVALID,
            "status",
        ),
        ("get_account_trades", json!({"days": 30}), INVALID, "days"),
        (
            "get_price_snapshot",
            json!({"symbols": []}),
            INVALID,
            "symbols",
        ),
        (
            "get_price_snapshot",
            json!({"symbols": ["../../logout"]}),
            UNRESOLVED,
            "is not a symbol",
        ),
        (
            "get_price_snapshot",
            json!({"symbols": ["ES A€1", "ÄAPL"]}),
            UNRESOLVED,
            "symbols[1]",
        ),
        (
            "get_price_snapshot",
            json!({"symbols": ["AAPL"], "fields": ["31"]}),
            INVALID,
            "fields",
        ),
        (
            "get_price_snapshot",
            json!({"symbols": ["NOSUCH"]}),
            UNRESOLVED,
            "no contract with symbol NOSUCH",
        ),
        (
            "get_price_history",
            json!({"symbol": "AAPL", "period": "1d", "bar": "1d; x"}),
            INVALID,
            "bar",
        ),
        (
            "get_price_history",
            json!({"symbol": "AAPL", "period": "1d", "bar": "1w"}),
            INVALID,
            "longer than the period",
        ),
        (
            "get_price_history",
            json!({"symbol": "ES Jan99", "period": "1d", "bar": "1h"}),
            UNRESOLVED,
            "no ES Jan99 future; listed: ES Dec",
        ),
        (
            "search_contracts",
            json!({"query": "AAPL?conid=1"}),
            INVALID,
            "letters, digits",
        ),
        ("search_contracts", json!({}), INVALID, "query"),
        (
            "get_option_parameters",
            json!({"symbol": "AAPL", "month": "13/27"}),
            INVALID,
            "month",
        ),
        (
            "get_option_parameters",
            json!({"symbol": "AAPL", "month": "JAN99"}),
            UNRESOLVED,
            "months listed",
        ),
        (
            "get_option_data",
            json!({"symbol": "AAPL", "strikes": 500}),
            INVALID,
            "strikes",
        ),
        (
            "get_option_data",
            json!({"symbol": "AAPL", "expiry": "tomorrow"}),
            INVALID,
            "not a date",
        ),
        (
            "get_option_data",
            json!({"symbol": "AAPL 2027-01-15 200 C"}),
            UNRESOLVED,
            "underlying",
        ),
        (
            "search_futures",
            json!({"symbol": "ES/../../logout"}),
            INVALID,
            "symbol",
        ),
        (
            "search_futures",
            json!({"symbol": "ZZZZ"}),
            UNRESOLVED,
            "no futures with symbol ZZZZ",
        ),
        (
            "get_pa_performance_all_periods",
            json!({"account": "../logout"}),
            UNRESOLVED,
            "not an account",
        ),
        (
            "get_watchlists",
            json!({"watchlist": "no such list"}),
            UNRESOLVED,
            "the login has",
        ),
        (
            "get_watchlists",
            json!({"watchlist": "x".repeat(100)}),
            INVALID,
            "watchlist",
        ),
        (
            "get_alerts",
            json!({"account": "DU1234567/../../logout"}),
            UNRESOLVED,
            "not an account",
        ),
        (
            "scan_market",
            json!({"scan": "TOP_PERC_GAIN"}),
            INVALID,
            "scan",
        ),
        (
            "scan_market",
            json!({"scan": "top_gainers", "limit": 1000}),
            INVALID,
            "limit",
        ),
        (
            "scan_market",
            json!({"scan": "top_gainers", "min_price": 50, "max_price": 10}),
            INVALID,
            "above `max_price`",
        ),
    ];
    let before = s.sim.control().counters().per_endpoint;
    for (tool, a, kind, says) in cases {
        let r = s.server.call(tool, args(a.clone())).await.unwrap();
        assert_eq!(err_kind(&r), *kind, "{tool} {a}: {}", text_of(&r));
        let text = text_of(&r);
        assert!(text.contains(says), "{tool} {a}: {text}");
        assert!(text.contains("Fix them and call again"), "{text}");
        if *kind == UNRESOLVED {
            assert!(text.contains("only lookups were made"), "{text}");
        } else {
            assert!(text.contains("nothing was sent to IBKR"), "{text}");
        }
    }
    let after = s.sim.control().counters().per_endpoint;
    // What the tools were asked for: none of it was requested, and never a logout.
    let answers = [
        "GET /portfolio/{accountId}/summary",
        "GET /iserver/account/pnl/partitioned",
        "GET /portfolio/{accountId}/positions/{pageId}",
        "GET /iserver/account/orders",
        "GET /iserver/account/trades",
        "GET /iserver/marketdata/snapshot",
        "GET /iserver/marketdata/history",
        "POST /pa/allperiods",
        "POST /iserver/scanner/run",
        "GET /iserver/account/{accountId}/alerts",
        "GET /iserver/watchlist",
        "POST /logout",
        "GET /logout",
    ];
    for endpoint in answers {
        assert_eq!(
            after.get(endpoint),
            before.get(endpoint),
            "{endpoint} was called"
        );
    }
    // Lookups only: the account list, searches, and the option and futures definitions.
    let lookups = [
        "GET /portfolio/accounts",
        "GET /iserver/secdef/search",
        "GET /iserver/secdef/info",
        "GET /iserver/secdef/strikes",
        "GET /iserver/contract/{conid}/info",
        "GET /iserver/watchlists",
        "POST /tickle",
        "POST /iserver/auth/status",
    ];
    for (endpoint, n) in &after {
        if !lookups.contains(&endpoint.as_str()) {
            assert_eq!(before.get(endpoint), Some(n), "{endpoint} was called");
        }
    }
}

/// IBKR's recorded replies (../shared/ibkr-samples) through the task tools: the shapes the live
/// service really sends become the named fields.
#[tokio::test]
async fn recorded_ibkr_replies_become_named_numbers() {
    let gateway = MockServer::start_async().await;
    let sample = |dir: &str| -> Value {
        let path = common::shared_dir().join("ibkr-samples").join(dir);
        let first = std::fs::read_dir(&path)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .min()
            .unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(first).unwrap()).unwrap();
        v["body"].clone()
    };
    let search = sample("GET_iserver_secdef_search");
    let history = sample("GET_iserver_marketdata_history");
    let trades = sample("GET_iserver_account_trades");
    gateway
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/iserver/secdef/search");
            then.status(200).json_body(search.clone());
        })
        .await;
    gateway
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/api/iserver/marketdata/history")
                .query_param("conid", "756733")
                .query_param("bar", "1d");
            then.status(200).json_body(history.clone());
        })
        .await;
    gateway
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/iserver/account/trades");
            then.status(200).json_body(trades.clone());
        })
        .await;
    let account = trades[0]["account"].as_str().unwrap().to_string();
    gateway
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/portfolio/accounts");
            then.status(200)
                .json_body(json!([{ "id": account, "accountId": account }]));
        })
        .await;
    let s = common::server(&format!("{}/v1/api", gateway.base_url()), &[]);
    // SPY is listed on ARCA and on MEXI: the one US listing is the one meant.
    let h = s
        .call(
            "get_price_history",
            args(json!({"symbol": "SPY", "period": "1m", "bar": "1d"})),
        )
        .await
        .unwrap();
    let h = ok("get_price_history", &h);
    assert_eq!(h["conid"], 756733);
    let raw = history["data"].as_array().unwrap();
    assert_eq!(h["rows"].as_array().unwrap().len(), raw.len());
    assert_eq!(h["rows"][0][4], raw[0]["c"]);
    assert_eq!(h["rows"][0][0], "2022-11-28T14:30:00Z");
    // The search shows both listings; named on MEXI, the other one is taken.
    let found = s
        .call("search_contracts", args(json!({"query": "SPY"})))
        .await
        .unwrap();
    let found = objects(&ok("search_contracts", &found));
    assert_eq!(found.len(), 2);
    let mexi = found.iter().find(|r| r["exchange"] == "MEXI").unwrap();
    let mexi_conid = mexi["conid"].as_i64().unwrap();
    assert_ne!(mexi_conid, 756733);
    let on_mexi = gateway
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/api/iserver/marketdata/history")
                .query_param("conid", mexi_conid.to_string());
            then.status(200).json_body(history.clone());
        })
        .await;
    let h = s
        .call(
            "get_price_history",
            args(json!({"symbol": "SPY@MEXI", "period": "1m", "bar": "1d"})),
        )
        .await
        .unwrap();
    assert_eq!(ok("get_price_history", &h)["conid"], mexi_conid);
    on_mexi.assert_calls_async(1).await;
    let t = s
        .call("get_account_trades", args(json!({"days": 7})))
        .await
        .unwrap();
    let t = ok("get_account_trades", &t);
    let first = &objects(&t)[0];
    assert_eq!(first["symbol"], trades[0]["symbol"]);
    assert!(
        first["price"].is_number() && first["commission"].is_number(),
        "{first}"
    );
}

#[tokio::test]
async fn an_ambiguous_symbol_lists_its_candidates() {
    let gateway = MockServer::start_async().await;
    gateway
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/iserver/secdef/search");
            then.status(200).json_body(json!([
                {"conid": "1001", "symbol": "XYZ", "companyName": "XYZ ONE", "description": "NYSE",
                 "sections": [{"secType": "STK"}]},
                {"conid": "1002", "symbol": "XYZ", "companyName": "XYZ TWO", "description": "NASDAQ",
                 "sections": [{"secType": "STK"}]}
            ]));
        })
        .await;
    let snapshot = gateway
        .mock_async(|when, then| {
            when.method(GET).path("/v1/api/iserver/marketdata/snapshot");
            then.status(200)
                .json_body(json!([{"conid": 1002, "31": "10.5", "6509": "DPB"}]));
        })
        .await;
    let s = common::server(&format!("{}/v1/api", gateway.base_url()), &[]);
    let r = s
        .call("get_price_snapshot", args(json!({"symbols": ["XYZ"]})))
        .await
        .unwrap();
    assert_eq!(err_kind(&r), "unresolved");
    let text = text_of(&r);
    assert!(
        text.contains("XYZ matches 2 listings")
            && text.contains("XYZ@NYSE (XYZ ONE STK, conid 1001)")
            && text.contains("XYZ@NASDAQ"),
        "{text}"
    );
    snapshot.assert_calls_async(0).await;
    let r = s
        .call(
            "get_price_snapshot",
            args(json!({"symbols": ["XYZ@NASDAQ"]})),
        )
        .await
        .unwrap();
    let v = ok("get_price_snapshot", &r);
    let q = &objects(&v)[0];
    assert_eq!(q["conid"], 1002);
    assert_eq!(q["last"], 10.5);
    assert_eq!(q["data_status"], "delayed");
}

#[tokio::test]
async fn an_option_chain_slice_around_the_money_in_one_call() {
    let s = sim_server(quiet(), ALL).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let p = s
        .server
        .call("get_option_parameters", args(json!({"symbol": "AAPL"})))
        .await
        .unwrap();
    let p = ok("get_option_parameters", &p);
    let months = p["months"].as_array().unwrap();
    assert!(!months.is_empty(), "{p}");
    assert_eq!(p["month"], months[0]);
    let expiry = p["expiries"][0].as_str().unwrap().to_string();
    let strikes: Vec<f64> = p["strikes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert!(strikes.windows(2).all(|w| w[0] < w[1]), "{p}");

    let px = s.sim.control().price(265598).unwrap();
    let r = s
        .server
        .call(
            "get_option_data",
            args(json!({"symbol": "AAPL", "expiry": expiry, "strikes": 4})),
        )
        .await
        .unwrap();
    let v = ok("get_option_data", &r);
    assert_eq!(v["expiry"], expiry.as_str());
    let cols: Vec<&str> = v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let col = |name: &str| cols.iter().position(|c| *c == name).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "4 strikes, calls and puts: {v}");
    let chosen: Vec<f64> = rows
        .iter()
        .map(|r| r[col("strike")].as_f64().unwrap())
        .collect();
    // The four strikes nearest the price, none farther than any left out.
    let farthest = chosen.iter().map(|k| (k - px).abs()).fold(0.0, f64::max);
    let outside = strikes
        .iter()
        .filter(|k| !chosen.contains(k))
        .map(|k| (k - px).abs())
        .fold(f64::INFINITY, f64::min);
    assert!(farthest <= outside, "{chosen:?} around {px}");
    for r in rows {
        let delta = r[col("delta")].as_f64().unwrap();
        match r[col("right")].as_str().unwrap() {
            "C" => assert!((0.0..=1.0).contains(&delta), "{r}"),
            _ => assert!((-1.0..=0.0).contains(&delta), "{r}"),
        }
        assert!(r[col("iv")].as_f64().unwrap() > 1.0, "IV in percent: {r}");
        assert!(r[col("bid")].as_f64().unwrap() <= r[col("ask")].as_f64().unwrap());
    }
    // The conids are the options the generated tools name.
    let conid = rows[0][col("conid")].as_i64().unwrap();
    let q = s
        .server
        .call(
            "get_price_snapshot",
            args(json!({"symbols": [format!("AAPL {expiry} {} C", chosen[0])]})),
        )
        .await
        .unwrap();
    assert_eq!(objects(&ok("get_price_snapshot", &q))[0]["conid"], conid);

    let puts = s
        .server
        .call(
            "get_option_data",
            args(json!({"symbol": "AAPL", "right": "P", "strikes": 1})),
        )
        .await
        .unwrap();
    let puts = ok("get_option_data", &puts);
    assert_eq!(puts["rows"].as_array().unwrap().len(), 1);
    assert_eq!(puts["rows"][0][1], "P");

    let wrong = s
        .server
        .call(
            "get_option_data",
            args(json!({"symbol": "AAPL", "expiry": "2020-01-17"})),
        )
        .await
        .unwrap();
    assert_eq!(err_kind(&wrong), "unresolved");
    assert!(
        text_of(&wrong).contains("months listed:"),
        "{}",
        text_of(&wrong)
    );
    let none = s
        .server
        .call("get_option_parameters", args(json!({"symbol": "KO"})))
        .await
        .unwrap();
    assert!(
        text_of(&none).contains("no options on KO"),
        "{}",
        text_of(&none)
    );
}

#[tokio::test]
async fn futures_performance_and_scans_answer_in_one_call() {
    let s = sim_server(quiet(), ALL).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let f = s
        .server
        .call("search_futures", args(json!({"symbol": "es"})))
        .await
        .unwrap();
    let f = ok("search_futures", &f);
    let futs = &objects(&f);
    assert!(futs.len() >= 2, "{f}");
    assert!(
        futs.windows(2)
            .all(|w| w[0]["expiry"].as_str() < w[1]["expiry"].as_str())
    );
    // The name it gives is one the other tools accept, for the same contract.
    let q = s
        .server
        .call(
            "get_price_snapshot",
            args(json!({"symbols": [futs[1]["name"]]})),
        )
        .await
        .unwrap();
    assert_eq!(
        objects(&ok("get_price_snapshot", &q))[0]["conid"],
        futs[1]["conid"]
    );

    let p = s
        .server
        .call("get_pa_performance_all_periods", None)
        .await
        .unwrap();
    let p = ok("get_pa_performance_all_periods", &p);
    let periods = objects(&p);
    let accounts: std::collections::BTreeSet<&str> = periods
        .iter()
        .map(|r| r["account"].as_str().unwrap())
        .collect();
    assert_eq!(accounts.len(), 2);
    let mtd = periods
        .iter()
        .find(|x| x["period"] == "MTD")
        .unwrap()
        .clone();
    let (start, end) = (
        mtd["start_nav"].as_f64().unwrap(),
        mtd["end_nav"].as_f64().unwrap(),
    );
    let pct = mtd["return_pct"].as_f64().unwrap();
    // With no deposits in the demo, the time-weighted return is the NAV change.
    assert!(((end / start - 1.0) * 100.0 - pct).abs() < 0.01, "{mtd}");
    let fetched = s.hits("POST /pa/allperiods");
    let again = s
        .server
        .call(
            "get_pa_performance_all_periods",
            args(json!({"account": "DU7654321", "period": "ytd"})),
        )
        .await
        .unwrap();
    let again = ok("get_pa_performance_all_periods", &again);
    let again = objects(&again);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["period"], "YTD");
    assert_eq!(again[0]["account"], "DU7654321");
    let bad = s
        .server
        .call(
            "get_pa_performance_all_periods",
            args(json!({"period": "10Y"})),
        )
        .await
        .unwrap();
    assert_eq!(err_kind(&bad), "unresolved");
    assert!(
        text_of(&bad).contains("it has 1D, 7D, MTD"),
        "{}",
        text_of(&bad)
    );
    assert_eq!(
        s.hits("POST /pa/allperiods"),
        fetched,
        "follow-ups come from the one fetch"
    );

    let g = s
        .server
        .call(
            "scan_market",
            args(json!({"scan": "top_gainers", "limit": 5})),
        )
        .await
        .unwrap();
    let g = ok("scan_market", &g);
    let rows = &objects(&g);
    assert_eq!(rows.len(), 5);
    let values: Vec<f64> = rows.iter().map(|r| r["value"].as_f64().unwrap()).collect();
    assert!(values.windows(2).all(|w| w[0] >= w[1]), "{g}");
    // The gainer's value is its change in percent, as its quote says.
    let top = rows[0]["symbol"].as_str().unwrap();
    let q = s
        .server
        .call(
            "get_price_snapshot",
            args(json!({"symbols": [top], "fields": ["change_pct"]})),
        )
        .await
        .unwrap();
    let chg = objects(&ok("get_price_snapshot", &q))[0]["change_pct"]
        .as_f64()
        .unwrap();
    assert!((chg - values[0]).abs() < 0.2, "{chg} vs {}", values[0]);
    let bad = s
        .server
        .call(
            "scan_market",
            args(json!({"scan": "top_gainers", "min_price": 50, "max_price": 10})),
        )
        .await
        .unwrap();
    assert_eq!(err_kind(&bad), "invalid_arguments");
    assert_eq!(
        s.hits("POST /iserver/scanner/run"),
        1,
        "the refused scan was not run"
    );
}

/// What the everyday read requests cost a model with the default tools: calls and o200k tokens
/// of the results, reported in `target/task-tools-cost.txt` and held to a budget (the issue's
/// target is 14 calls and 3,100 tokens for nine requests; these are six of them, the other
/// three being orders, alerts and watchlists).
/// The nine everyday requests, as a model would make them with the default tools and
/// trading allowed: what each costs in calls and result tokens (o200k), written to
/// `target/task-tools-cost.txt`. Targets: at most 14 calls and 3,100 tokens for all nine.
#[tokio::test]
async fn everyday_requests_cost_few_calls_and_tokens() {
    let s = sim_server(
        quiet().with_questions(QuestionPolicy::Never),
        &["--toolsets", "default", "--allow-trading"],
    )
    .await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let bpe = tiktoken_rs::o200k_base().unwrap();
    let mut report = String::new();
    let mut total = 0;
    let mut calls = 0;
    let mut call = async |what: &str, tool: &str, a: Value| -> Value {
        let r = s.server.call(tool, args(a)).await.unwrap();
        let v = ok(tool, &r);
        let tokens = bpe.encode_with_special_tokens(&text_of(&r)).len();
        total += tokens;
        calls += 1;
        report.push_str(&format!("{what}: {tool} -> {tokens} o200k tokens\n"));
        v
    };
    let acct = "DU1234567";
    // 1. What is my portfolio worth, and what are my biggest positions?
    call("portfolio worth", "get_account_summary", json!({})).await;
    call(
        "biggest positions",
        "get_account_positions",
        json!({"limit": 5}),
    )
    .await;
    // 2. Quote three symbols.
    let quotes = call(
        "quote three symbols",
        "get_price_snapshot",
        json!({"symbols": ["AAPL", "MSFT", "SPY"]}),
    )
    .await;
    let msft = objects(&quotes)[1]["last"].as_f64().unwrap();
    // 3. An option chain around the money.
    let chain = call(
        "option chain around the money",
        "get_option_data",
        json!({"symbol": "AAPL", "strikes": 4}),
    )
    .await;
    let calls_at: Vec<String> = objects(&chain)
        .iter()
        .filter(|r| r["right"] == "C")
        .map(|r| r["conid"].to_string())
        .collect();
    // 4. A month of daily bars.
    call(
        "a month of daily bars",
        "get_price_history",
        json!({"symbol": "AAPL", "period": "1m", "bar": "1d"}),
    )
    .await;
    // 5. Buy with a limit below last ...
    let placed = call(
        "buy with a limit 2% below last",
        "place_order",
        json!({"account": acct, "symbol": "AAPL", "side": "BUY", "quantity": 10,
               "type": "LMT", "offset_pct": -2}),
    )
    .await;
    let limit_id = objects(&placed)[0]["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    // 6. A bracket, and a two-leg option spread.
    let cents = |x: f64| (x * 100.0).round() / 100.0;
    call(
        "a bracket order",
        "place_order",
        json!({"account": acct, "symbol": "MSFT", "side": "BUY", "quantity": 5, "type": "LMT",
               "limit_price": cents(msft * 0.97), "take_profit": cents(msft * 1.05),
               "stop_loss": cents(msft * 0.92)}),
    )
    .await;
    call(
        "a call spread",
        "place_order",
        json!({"account": acct, "side": "BUY", "quantity": 1, "type": "LMT", "limit_price": 0.05,
               "legs": [{"symbol": calls_at[1], "ratio": 1}, {"symbol": calls_at[2], "ratio": -1}]}),
    )
    .await;
    // ... list, cancel.
    let open = call(
        "list open orders",
        "get_account_orders",
        json!({"account": acct}),
    )
    .await;
    assert_eq!(
        objects(&open).len(),
        5,
        "limit, bracket (3) and spread: {open}"
    );
    call("cancel", "cancel_order", json!({"order_id": limit_id})).await;
    // 7. A price alert and a watchlist.
    call(
        "a price alert",
        "create_alert",
        json!({"symbol": "AAPL", "above": 1000, "account": acct}),
    )
    .await;
    call(
        "a watchlist",
        "create_watchlist",
        json!({"name": "Core", "symbols": ["AAPL", "MSFT", "SPY"]}),
    )
    .await;
    // 8. Top % gainers.
    call(
        "top % gainers",
        "scan_market",
        json!({"scan": "top_gainers", "limit": 5}),
    )
    .await;
    // 9. This month's performance.
    call(
        "this month's performance",
        "get_pa_performance_all_periods",
        json!({"period": "MTD"}),
    )
    .await;
    report.push_str(&format!("total: {calls} calls, {total} o200k tokens\n"));
    println!("{report}");
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).unwrap();
    std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/task-tools-cost.txt"),
        &report,
    )
    .unwrap();
    assert!(calls <= 14, "{report}");
    assert!(total <= 3_100, "{report}");
}

/// A session that lapsed under a task (IBKR answers 401) is re-opened and the task answered on
/// the same call; gateway faults become errors that say what happened.
#[tokio::test]
async fn a_lapsed_session_is_reopened_and_faults_are_actionable() {
    let s = sim_server(quiet(), &["--tickle-interval", "3600"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    s.sim.control().expire_session();
    let r = s.server.call("get_account_summary", None).await.unwrap();
    let v = ok("get_account_summary", &r);
    assert_eq!(objects(&v).len(), 2);
    assert!(text_of(&r).contains("re-opened"), "{}", text_of(&r));
    assert!(s.hits("POST /iserver/auth/ssodh/init") >= 1);

    s.sim.control().set_faults(ibkr_sim::Faults {
        error_rate: 1.0,
        only_prefixes: vec!["/iserver/marketdata".into()],
        ..ibkr_sim::Faults::default()
    });
    let r = s
        .server
        .call("get_price_snapshot", args(json!({"symbols": ["AAPL"]})))
        .await
        .unwrap();
    assert_eq!(err_kind(&r), "gateway_error", "{}", text_of(&r));
    s.sim.control().set_faults(ibkr_sim::Faults {
        garbage_rate: 1.0,
        only_prefixes: vec!["/iserver/secdef/search".into()],
        ..ibkr_sim::Faults::default()
    });
    let r = s
        .server
        .call("search_contracts", args(json!({"query": "IBM"})))
        .await
        .unwrap();
    assert_eq!(err_kind(&r), "bad_reply", "{}", text_of(&r));
    s.sim.control().set_faults(ibkr_sim::Faults::default());

    // Many sessions at once: every call is answered (pacing makes them wait, not fail).
    let symbols = ["AAPL", "MSFT", "SPY", "QQQ", "IBM", "NFLX", "GOOGL", "JPM"];
    let calls = symbols.iter().map(|sym| {
        let server = s.server.clone();
        async move {
            server
                .call(
                    "get_price_snapshot",
                    args(json!({"symbols": [sym, "AAPL"]})),
                )
                .await
                .unwrap()
        }
    });
    for r in futures::future::join_all(calls).await {
        let v = ok("get_price_snapshot", &r);
        assert_eq!(objects(&v).len(), 2);
    }
}

/// Every recorded reply of IBKR (../shared/ibkr-samples) for the requests the task tools make,
/// served by a mock gateway: each becomes a result that fits the tool's output schema, with
/// the values where IBKR put them.
#[tokio::test]
async fn every_recorded_ibkr_reply_fits_the_task_tools() {
    let recorded = |dir: &str| -> Vec<(String, String, Value)> {
        let path = common::shared_dir().join("ibkr-samples").join(dir);
        let mut files: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|f| {
                let v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                (
                    name,
                    v["path"].as_str().unwrap().to_string(),
                    v["body"].clone(),
                )
            })
            .collect()
    };
    let account_of = |path: &str| path.split('/').nth(2).unwrap().to_string();
    async fn with_accounts(gateway: &MockServer, ids: &[String]) {
        let list: Vec<Value> = ids
            .iter()
            .map(|a| json!({"id": a, "accountId": a}))
            .collect();
        gateway
            .mock_async(|when, then| {
                when.method(GET).path("/v1/api/portfolio/accounts");
                then.status(200).json_body(Value::Array(list));
            })
            .await;
    }
    let mut checked = 0;

    for (name, path, body) in recorded("GET_portfolio_accountId_positions_pageId") {
        let Some(items) = body.as_array().filter(|a| !a.is_empty()) else {
            continue;
        };
        let gateway = MockServer::start_async().await;
        let account = account_of(&path);
        with_accounts(&gateway, std::slice::from_ref(&account)).await;
        gateway
            .mock_async(|when, then| {
                when.method(GET).path(format!("/v1/api{path}"));
                then.status(200).json_body(body.clone());
            })
            .await;
        let s = common::server(&format!("{}/v1/api", gateway.base_url()), &[]);
        let r = s.call("get_account_positions", None).await.unwrap();
        let rows = objects(&ok("get_account_positions", &r));
        let held = items
            .iter()
            .filter(|p| p["position"].as_f64() != Some(0.0))
            .count();
        assert_eq!(rows.len(), held, "{name}");
        for row in &rows {
            let raw = items.iter().find(|p| p["conid"] == row["conid"]).unwrap();
            assert_eq!(row["quantity"].as_f64(), raw["position"].as_f64(), "{name}");
            assert_eq!(row["symbol"], raw["contractDesc"], "{name}");
        }
        checked += 1;
    }

    for (name, _, body) in recorded("GET_iserver_account_orders") {
        let orders: Vec<Value> = body
            .get("orders")
            .or(Some(&body))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut accounts: Vec<String> = orders
            .iter()
            .filter_map(|o| o.get("acct").or(o.get("account")).and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        accounts.sort();
        accounts.dedup();
        if accounts.is_empty() {
            accounts.push("DU1".into());
        }
        let gateway = MockServer::start_async().await;
        with_accounts(&gateway, &accounts).await;
        gateway
            .mock_async(|when, then| {
                when.method(GET).path("/v1/api/iserver/account/orders");
                then.status(200).json_body(body.clone());
            })
            .await;
        let s = common::server(&format!("{}/v1/api", gateway.base_url()), &[]);
        let r = s
            .call("get_account_orders", args(json!({"status": "all"})))
            .await
            .unwrap();
        let rows = objects(&ok("get_account_orders", &r));
        assert_eq!(rows.len(), orders.len(), "{name}");
        for (row, raw) in rows.iter().zip(&orders) {
            assert_eq!(
                row["order_id"],
                raw["orderId"].to_string().trim_matches('"'),
                "{name}"
            );
            assert!(row["quantity"].is_number(), "{name}: {row}");
            assert!(row["status"].is_string(), "{name}: {row}");
        }
        if orders.is_empty() && body.get("snapshot") == Some(&json!(false)) {
            assert!(text_of(&r).contains("call again in 5 seconds"), "{name}");
        }
        checked += 1;
    }

    for (name, _, body) in recorded("POST_iserver_scanner_run") {
        let gateway = MockServer::start_async().await;
        gateway
            .mock_async(|when, then| {
                when.method(POST).path("/v1/api/iserver/scanner/run");
                then.status(200).json_body(body.clone());
            })
            .await;
        let s = common::server(&format!("{}/v1/api", gateway.base_url()), &[]);
        let r = s
            .call(
                "scan_market",
                args(json!({"scan": "top_gainers", "limit": 50})),
            )
            .await
            .unwrap();
        let rows = objects(&ok("scan_market", &r));
        let raw = body["contracts"].as_array().unwrap();
        assert_eq!(rows.len(), raw.len().min(50), "{name}");
        for (row, raw) in rows.iter().zip(raw) {
            assert_eq!(row["symbol"], raw["symbol"], "{name}");
            assert_eq!(row["conid"], raw["con_id"], "{name}");
            if let Some(data) = raw.get("scan_data").and_then(Value::as_str) {
                assert!(row["value"].is_number(), "{name}: {data} -> {row}");
            }
        }
        checked += 1;
    }

    for (name, path, body) in recorded("GET_portfolio_accountId_summary") {
        let gateway = MockServer::start_async().await;
        let account = account_of(&path);
        with_accounts(&gateway, std::slice::from_ref(&account)).await;
        gateway
            .mock_async(|when, then| {
                when.method(GET).path(format!("/v1/api{path}"));
                then.status(200).json_body(body.clone());
            })
            .await;
        // IBKR's first P&L answer of a session, recorded: empty.
        let pnl = recorded("GET_iserver_account_pnl_partitioned")
            .into_iter()
            .find(|(_, _, b)| b["upnl"].as_object().is_some_and(|m| m.is_empty()))
            .unwrap()
            .2;
        gateway
            .mock_async(|when, then| {
                when.method(GET)
                    .path("/v1/api/iserver/account/pnl/partitioned");
                then.status(200).json_body(pnl.clone());
            })
            .await;
        let s = common::server(&format!("{}/v1/api", gateway.base_url()), &[]);
        let r = s.call("get_account_summary", None).await.unwrap();
        let rows = objects(&ok("get_account_summary", &r));
        assert_eq!(rows.len(), 1, "{name}");
        assert_eq!(
            rows[0]["net_liquidation"].as_f64(),
            body["netliquidation"]["amount"].as_f64(),
            "{name}"
        );
        assert_eq!(
            rows[0]["cash"].as_f64(),
            body["totalcashvalue"]["amount"].as_f64()
        );
        assert!(
            text_of(&r).contains("has not loaded the P&L"),
            "{}",
            text_of(&r)
        );
        checked += 1;
    }

    for (name, _, body) in recorded("POST_pa_allperiods") {
        let account = body["included"][0].as_str().unwrap().to_string();
        let gateway = MockServer::start_async().await;
        with_accounts(&gateway, std::slice::from_ref(&account)).await;
        gateway
            .mock_async(|when, then| {
                when.method(POST).path("/v1/api/pa/allperiods");
                then.status(200).json_body(body.clone());
            })
            .await;
        let s = common::server(&format!("{}/v1/api", gateway.base_url()), &[]);
        let r = s
            .call(
                "get_pa_performance_all_periods",
                args(json!({"period": "MTD"})),
            )
            .await
            .unwrap();
        let rows = objects(&ok("get_pa_performance_all_periods", &r));
        let raw = &body[account.as_str()]["MTD"];
        let cps = raw["cps"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_f64()
            .unwrap();
        assert_eq!(rows.len(), 1, "{name}");
        assert!((rows[0]["return_pct"].as_f64().unwrap() - cps * 100.0).abs() < 0.001);
        assert_eq!(
            rows[0]["end_nav"].as_f64().unwrap().round(),
            raw["nav"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()
                .as_f64()
                .unwrap()
                .round()
        );
        checked += 1;
    }
    assert!(checked >= 18, "{checked} recorded replies checked");
}

#[tokio::test]
async fn watchlists_and_alerts_agree_with_the_generated_tools() {
    let s = sim_server(quiet(), ALL).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let w = s.server.call("get_watchlists", None).await.unwrap();
    let lists = objects(&ok("get_watchlists", &w));
    assert!(!lists.is_empty());
    for l in &lists {
        let raw = s
            .server
            .call("get_watchlist", args(json!({"id": l["id"]})))
            .await
            .unwrap();
        let raw = raw.structured_content.unwrap();
        let conids: Vec<i64> = raw["instruments"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["conid"].as_i64())
            .collect();
        let got: Vec<i64> = l["conids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_i64().unwrap())
            .collect();
        assert_eq!(got, conids, "{l}");
        assert_eq!(l["symbols"].as_array().unwrap().len(), conids.len());
    }
    let by_name = s
        .server
        .call(
            "get_watchlists",
            args(json!({"watchlist": lists[0]["name"].as_str().unwrap().to_lowercase()})),
        )
        .await
        .unwrap();
    assert_eq!(objects(&ok("get_watchlists", &by_name)).len(), 1);

    let a = s.server.call("get_alerts", None).await.unwrap();
    let alerts = objects(&ok("get_alerts", &a));
    let mut raw_count = 0;
    for account in ["DU1234567", "DU7654321"] {
        let raw = s
            .server
            .call("list_alerts", args(json!({"accountId": account})))
            .await
            .unwrap();
        raw_count += raw.structured_content.unwrap()["items"]
            .as_array()
            .map_or(0, Vec::len);
    }
    assert!(raw_count > 0);
    assert_eq!(alerts.len(), raw_count);
    assert!(
        alerts
            .iter()
            .all(|r| r["active"].is_boolean() && r["alert_id"].is_string()),
        "{alerts:?}"
    );
}
