//! A broad simulator scenario beyond the examples (fills of every asset class, questions,
//! 200-with-error rejections, unauthenticated session answers, all snapshot fields,
//! derivatives' contract data...): every answer must be 2xx JSON that validates against the
//! repaired document's schema for its operation and status and deserializes into the generated
//! type, as `sim_conformance` checks for the examples. (It lived in the simulator crate, where
//! the document is out of reach, and checked only "2xx and JSON" in CI.)

use std::time::Duration;

use ibkr_mcp::spec::REPAIRED_SPEC;
use ibkr_sim::{QuestionPolicy, SimHandle};
use serde_json::{Value, json};

mod common;

struct Recorder<'a> {
    sim: &'a SimHandle,
    client: reqwest::Client,
    lines: Vec<Value>,
}

impl Recorder<'_> {
    async fn call(&mut self, op: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{}", self.sim.base_url(), path);
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.client.request(m, url);
        if let Some(b) = &body {
            rb = rb.json(b);
        }
        let resp = rb.send().await.expect("request succeeds");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{op} {path}: not JSON: {text}"));
        assert!(
            (200..300).contains(&status),
            "{op} {method} {path} -> {status}: {v}"
        );
        self.lines.push(json!({ "operation_id": op, "method": method, "path": path, "status": status, "body": v }));
        v
    }

    /// Checks every recorded answer against the repaired document and the generated types.
    fn check_against_the_document(&self) {
        let doc: Value = serde_json::from_str(REPAIRED_SPEC).unwrap();
        let mut fit = common::DocumentFit::default();
        for line in &self.lines {
            let op = line["operation_id"].as_str().unwrap();
            let status = line["status"].as_u64().unwrap() as u16;
            let at = format!("{op} {} {}", line["method"], line["path"]);
            fit.check(&doc, op, status, &line["body"], &at);
        }
        println!(
            "broad scenario: {} answers, {} validate against the repaired document, \
             {} deserialize into generated types",
            self.lines.len(),
            fit.validated,
            fit.typed
        );
        assert!(fit.failures.is_empty(), "{}", fit.failures.join("\n"));
        assert!(
            fit.validated * 10 >= self.lines.len() * 9,
            "only {} of {} answers were checked against a schema",
            fit.validated,
            self.lines.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broad_scenario_answers_fit_the_repaired_document() {
    let sim = common::plain_sim().await;
    let mut r = Recorder {
        sim: &sim,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client builds"),
        lines: Vec::new(),
    };
    let acct = "DU1234567";
    let u = ibkr_sim::example_requests();
    let month = u
        .iter()
        .find(|e| e.operation_id == "get_iserver_secdef_strikes")
        .and_then(|e| {
            e.query
                .iter()
                .find(|(k, _)| k == "month")
                .map(|(_, v)| v.clone())
        })
        .unwrap();

    r.call("get_iserver_accounts", "GET", "/iserver/accounts", None)
        .await;
    // Contracts of every asset class.
    let info = r
        .call(
            "get_iserver_secdef_info",
            "GET",
            &format!("/iserver/secdef/info?conid=265598&sectype=OPT&month={month}"),
            None,
        )
        .await;
    let opt = info
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["right"] == "C")
        .unwrap()["conid"]
        .as_i64()
        .unwrap();
    let futs = r
        .call(
            "get_trsrv_futures",
            "GET",
            "/trsrv/futures?symbols=ES,ZZZ",
            None,
        )
        .await;
    let fut = futs["ES"][0]["conid"].as_i64().unwrap();
    let es_info = r
        .call(
            "get_iserver_secdef_search",
            "GET",
            "/iserver/secdef/search?symbol=ES",
            None,
        )
        .await;
    let es_month = es_info[0]["sections"][1]["months"]
        .as_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    r.call(
        "get_iserver_secdef_info",
        "GET",
        &format!("/iserver/secdef/info?conid=11004968&sectype=FUT&month={es_month}"),
        None,
    )
    .await;
    r.call(
        "get_iserver_secdef_info",
        "GET",
        "/iserver/secdef/info?conid=8314&sectype=STK",
        None,
    )
    .await;
    r.call(
        "get_iserver_secdef_search",
        "GET",
        "/iserver/secdef/search?symbol=EUR.USD",
        None,
    )
    .await;
    r.call(
        "get_iserver_secdef_search",
        "GET",
        "/iserver/secdef/search?symbol=SPX&secType=IND",
        None,
    )
    .await;
    r.call(
        "get_iserver_secdef_search",
        "GET",
        "/iserver/secdef/search?symbol=corp&name=true",
        None,
    )
    .await;
    r.call(
        "post_iserver_secdef_search",
        "POST",
        "/iserver/secdef/search",
        Some(json!({ "symbol": "T", "secType": "BOND" })),
    )
    .await;
    for conid in [opt, fut, 12087792, 416904] {
        r.call(
            "get_iserver_contract_conid_info",
            "GET",
            &format!("/iserver/contract/{conid}/info"),
            None,
        )
        .await;
        r.call(
            "get_iserver_contract_conid_info_and_rules",
            "GET",
            &format!("/iserver/contract/{conid}/info-and-rules"),
            None,
        )
        .await;
        r.call(
            "post_iserver_contract_rules",
            "POST",
            "/iserver/contract/rules",
            Some(json!({ "conid": conid, "isBuy": false })),
        )
        .await;
    }
    r.call(
        "get_trsrv_secdef",
        "GET",
        &format!("/trsrv/secdef?conids={opt},{fut},12087792,416904"),
        None,
    )
    .await;
    r.call(
        "get_trsrv_secdef_schedule",
        "GET",
        "/trsrv/secdef/schedule?assetClass=FUT&symbol=ES",
        None,
    )
    .await;
    r.call(
        "get_trsrv_all_conids",
        "GET",
        "/trsrv/all-conids?exchange=ARCA&assetClass=STK",
        None,
    )
    .await;
    r.call(
        "get_iserver_currency_pairs",
        "GET",
        "/iserver/currency/pairs?currency=EUR",
        None,
    )
    .await;
    r.call(
        "get_iserver_exchangerate",
        "GET",
        "/iserver/exchangerate?source=JPY&target=EUR",
        None,
    )
    .await;
    r.call(
        "get_iserver_contract_conid_algos",
        "GET",
        "/iserver/contract/756733/algos?algos=Vwap",
        None,
    )
    .await;
    // Every supported snapshot field on every asset class (pre-flight first).
    let fields = "31,55,58,70,71,73,74,75,76,77,78,79,80,82,83,84,85,86,87,88,6004,6008,6070,6457,6509,7051,7059,7094,7184,7219,7220,7221,7280,7281,7282,7289,7290,7291,7292,7293,7294,7295,7296,7308,7309,7310,7311,7633,7635,7682,7741,7762";
    let snap = format!(
        "/iserver/marketdata/snapshot?conids=265598,{opt},{fut},12087792,416904,756733&fields={fields}"
    );
    r.call("get_iserver_marketdata_snapshot", "GET", &snap, None)
        .await;
    let v = r
        .call("get_iserver_marketdata_snapshot", "GET", &snap, None)
        .await;
    assert_eq!(
        v[1]["7308"]
            .as_str()
            .map(|d| d.parse::<f64>().unwrap() > 0.0),
        Some(true),
        "call delta: {}",
        v[1]
    );
    assert!(
        v[0]["73"].is_string(),
        "position fields for the selected account"
    );
    for (conid, bar, period) in [
        (opt, "1h", "2d"),
        (fut, "1d", "1m"),
        (12087792, "30min", "1d"),
        (416904, "1w", "1y"),
    ] {
        r.call("get_iserver_marketdata_history", "GET", &format!("/iserver/marketdata/history?conid={conid}&bar={bar}&period={period}&outsideRth=true"), None).await;
        r.call(
            "get_hmds_history",
            "GET",
            &format!("/hmds/history?conid={conid}&bar={bar}&period={period}&barType=Last"),
            None,
        )
        .await;
    }
    r.call(
        "get_md_regsnapshot",
        "GET",
        &format!("/md/regsnapshot?conid={opt}"),
        None,
    )
    .await;
    // Orders: fills in every asset class, resting, cancelled, bracket children.
    sim.control().set_question_policy(QuestionPolicy::Never);
    let place = "/iserver/account/DU1234567/orders";
    for (conid, qty) in [
        (265598, 10),
        (opt, 2),
        (fut, 1),
        (12087792, 20_000),
        (756733, 3),
    ] {
        let v = r.call("post_iserver_account_account_id_orders", "POST", place, Some(json!({ "orders": [{ "conid": conid, "orderType": "MKT", "side": "BUY", "tif": "DAY", "quantity": qty }] }))).await;
        assert!(v[0]["order_id"].is_string(), "{v}");
    }
    let last = sim.control().price(272093).unwrap();
    let entry = ((last * 0.9) * 100.0).round() / 100.0;
    let v = r.call("post_iserver_account_account_id_orders", "POST", place, Some(json!({ "orders": [
        { "conid": 272093, "orderType": "LMT", "price": entry, "side": "BUY", "tif": "GTC", "quantity": 1, "cOID": "shape-parent" },
        { "conid": 272093, "orderType": "STOP_LIMIT", "price": ((entry * 0.95) * 100.0).round() / 100.0, "auxPrice": ((entry * 0.96) * 100.0).round() / 100.0, "side": "SELL", "tif": "GTC", "quantity": 1, "parentId": "shape-parent" },
    ] }))).await;
    let parent = v[0]["order_id"].as_str().unwrap().to_string();
    let v = r.call("post_iserver_account_account_id_orders", "POST", place, Some(json!({ "orders": [{ "conid": 8314, "orderType": "MIDPRICE", "side": "SELL", "tif": "IOC", "quantity": 5 }] }))).await;
    assert!(v[0]["order_id"].is_string());
    r.call(
        "delete_iserver_account_account_id_order_order_id",
        "DELETE",
        &format!("/iserver/account/{acct}/order/{parent}"),
        None,
    )
    .await;
    let v = r
        .call(
            "delete_iserver_account_account_id_order_order_id",
            "DELETE",
            &format!("/iserver/account/{acct}/order/{parent}"),
            None,
        )
        .await;
    assert!(
        v["error"].is_string(),
        "cancelling twice is a 200 error: {v}"
    );
    // Rejections come back as 200 {"error": ...}.
    let v = r.call("post_iserver_account_account_id_orders", "POST", place, Some(json!({ "orders": [{ "conid": 265598, "orderType": "TRAIL", "side": "BUY", "tif": "DAY", "quantity": 1 }] }))).await;
    assert!(v["error"].is_string());
    // Questions and their replies.
    sim.control().set_question_policy(QuestionPolicy::Chain {
        message_ids: vec!["o354".into(), "p6".into(), "o9999".into()],
    });
    let mut v = r.call("post_iserver_account_account_id_orders", "POST", place, Some(json!({ "orders": [{ "conid": 272093, "orderType": "LMT", "price": entry, "side": "BUY", "tif": "DAY", "quantity": 1 }] }))).await;
    while let Some(id) = v[0]["id"].as_str().map(str::to_string) {
        v = r
            .call(
                "post_iserver_reply_reply_id",
                "POST",
                &format!("/iserver/reply/{id}"),
                Some(json!({ "confirmed": true })),
            )
            .await;
    }
    let v = r.call("post_iserver_account_account_id_orders", "POST", place, Some(json!({ "orders": [{ "conid": 272093, "orderType": "LMT", "price": entry, "side": "BUY", "tif": "DAY", "quantity": 1 }] }))).await;
    let id = v[0]["id"].as_str().unwrap().to_string();
    let v = r
        .call(
            "post_iserver_reply_reply_id",
            "POST",
            &format!("/iserver/reply/{id}"),
            Some(json!({ "confirmed": false })),
        )
        .await;
    assert!(v["error"].is_string());
    let v = r.call("post_iserver_account_account_id_orders_whatif", "POST", "/iserver/account/DU1234567/orders/whatif", Some(json!({ "orders": [{ "conid": 265598, "orderType": "LMT", "price": 1.0, "side": "BUY", "tif": "DAY", "quantity": 900 }] }))).await;
    assert!(v["warn"].is_string(), "{v}");
    // Everything that reports orders, trades and portfolio after those fills.
    let orders = r
        .call(
            "get_iserver_account_orders",
            "GET",
            "/iserver/account/orders",
            None,
        )
        .await;
    for o in orders["orders"].as_array().unwrap() {
        r.call(
            "get_iserver_account_order_status_order_id",
            "GET",
            &format!("/iserver/account/order/status/{}", o["orderId"]),
            None,
        )
        .await;
    }
    let trades = r
        .call(
            "get_iserver_account_trades",
            "GET",
            "/iserver/account/trades?days=2",
            None,
        )
        .await;
    assert!(trades.as_array().unwrap().len() >= 5);
    r.call(
        "get_portfolio_account_id_positions_page_id",
        "GET",
        &format!("/portfolio/{acct}/positions/0"),
        None,
    )
    .await;
    for conid in [opt, fut] {
        r.call(
            "get_portfolio_account_id_position_conid",
            "GET",
            &format!("/portfolio/{acct}/position/{conid}"),
            None,
        )
        .await;
        r.call(
            "get_portfolio_positions_conid",
            "GET",
            &format!("/portfolio/positions/{conid}"),
            None,
        )
        .await;
    }
    for (op, path) in [
        (
            "get_portfolio_account_id_summary",
            format!("/portfolio/{acct}/summary"),
        ),
        (
            "get_portfolio_account_id_ledger",
            format!("/portfolio/{acct}/ledger"),
        ),
        (
            "get_portfolio_account_id_allocation",
            "/portfolio/DU7654321/allocation".to_string(),
        ),
        (
            "get_iserver_account_account_id_summary",
            format!("/iserver/account/{acct}/summary"),
        ),
        (
            "get_iserver_account_account_id_summary_available_funds",
            format!("/iserver/account/{acct}/summary/available_funds"),
        ),
        (
            "get_iserver_account_account_id_summary_balances",
            format!("/iserver/account/{acct}/summary/balances"),
        ),
        (
            "get_iserver_account_account_id_summary_margins",
            format!("/iserver/account/{acct}/summary/margins"),
        ),
        (
            "get_iserver_account_account_id_summary_market_value",
            format!("/iserver/account/{acct}/summary/market_value"),
        ),
        (
            "get_iserver_account_pnl_partitioned",
            "/iserver/account/pnl/partitioned".to_string(),
        ),
        (
            "get_iserver_account_search_search_pattern",
            "/iserver/account/search/XYZ".to_string(),
        ),
    ] {
        r.call(op, "GET", &path, None).await;
    }
    for period in ["1D", "7D", "MTD", "3M", "6M", "12M", "YTD"] {
        r.call(
            "post_pa_performance",
            "POST",
            "/pa/performance",
            Some(json!({ "acctIds": [acct, "DU7654321"], "period": period })),
        )
        .await;
    }
    r.call(
        "post_pa_allperiods",
        "POST",
        "/pa/allperiods",
        Some(json!({ "acctIds": [acct, "DU7654321"] })),
    )
    .await;
    r.call(
        "post_pa_transactions",
        "POST",
        "/pa/transactions",
        Some(json!({ "acctIds": [acct], "conids": [], "currency": "USD", "days": 90 })),
    )
    .await;
    // Alerts: a triggered one and the MTA alert by id.
    let v = r.call("post_iserver_account_account_id_alert", "POST", &format!("/iserver/account/{acct}/alert"), Some(json!({
        "alertName": "trigger now", "alertMessage": "low bar", "alertRepeatable": 1, "outsideRth": 1, "tif": "GTD", "expireTime": "20991231-12:00:00",
        "conditions": [{ "type": 1, "conidex": "265598@SMART", "operator": ">=", "triggerMethod": "0", "value": "1", "logicBind": "n" }] }))).await;
    let alert = v["order_id"].as_i64().unwrap();
    r.call(
        "get_iserver_account_account_id_alerts",
        "GET",
        &format!("/iserver/account/{acct}/alerts"),
        None,
    )
    .await;
    let v = r
        .call(
            "get_iserver_account_alert_alert_id",
            "GET",
            &format!("/iserver/account/alert/{alert}?type=Q"),
            None,
        )
        .await;
    assert_eq!(v["alert_triggered"], true, "{v}");
    let mta = r
        .call(
            "get_iserver_account_mta",
            "GET",
            "/iserver/account/mta",
            None,
        )
        .await;
    r.call(
        "get_iserver_account_alert_alert_id",
        "GET",
        &format!("/iserver/account/alert/{}?type=Q", mta["order_id"]),
        None,
    )
    .await;
    r.call(
        "post_iserver_account_account_id_alert_activate",
        "POST",
        &format!("/iserver/account/{acct}/alert/activate"),
        Some(json!({ "alertId": 0, "alertActive": 1 })),
    )
    .await;
    r.call(
        "delete_iserver_account_account_id_alert_alert_id",
        "DELETE",
        &format!("/iserver/account/{acct}/alert/0"),
        None,
    )
    .await;
    // Scanners of every type.
    for scan in [
        "TOP_PERC_GAIN",
        "TOP_PERC_LOSE",
        "MOST_ACTIVE",
        "HOT_BY_PRICE",
        "HIGH_VS_52W_HL",
    ] {
        r.call("post_iserver_scanner_run", "POST", "/iserver/scanner/run", Some(json!({ "instrument": "ETF.EQ.US", "type": scan, "location": "ETF.EQ.US.MAJOR", "filter": [] }))).await;
        r.call("post_hmds_scanner_run", "POST", "/hmds/scanner/run", Some(json!({ "instrument": "STK", "locations": "STK.NASDAQ", "scanCode": scan, "secType": "STK", "maxItems": 3 }))).await;
    }
    // FYI and watchlists variations.
    r.call(
        "get_fyi_notifications",
        "GET",
        "/fyi/notifications?max=2&include=OE,EA",
        None,
    )
    .await;
    r.call(
        "get_iserver_watchlist",
        "GET",
        "/iserver/watchlist?id=101",
        None,
    )
    .await;
    // Session answers while not authenticated and while competing.
    sim.control().set_competing(true);
    r.call(
        "post_iserver_auth_status",
        "POST",
        "/iserver/auth/status",
        None,
    )
    .await;
    r.call("post_tickle", "POST", "/tickle", None).await;
    r.call(
        "post_iserver_auth_ssodh_init",
        "POST",
        "/iserver/auth/ssodh/init",
        Some(json!({ "publish": true, "compete": false })),
    )
    .await;
    r.call(
        "get_iserver_reauthenticate",
        "GET",
        "/iserver/reauthenticate",
        None,
    )
    .await;
    sim.control().set_competing(false);
    sim.control().expire_session();
    r.call(
        "post_iserver_auth_status",
        "POST",
        "/iserver/auth/status",
        None,
    )
    .await;
    r.call("post_tickle", "POST", "/tickle", None).await;
    r.call(
        "get_iserver_reauthenticate",
        "GET",
        "/iserver/reauthenticate",
        None,
    )
    .await;
    r.call(
        "post_iserver_auth_status",
        "POST",
        "/iserver/auth/status",
        None,
    )
    .await;

    r.check_against_the_document();
    sim.shutdown().await;
}
