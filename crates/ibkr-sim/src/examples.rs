//! [`example_requests`]: one or more concrete requests for every operation the simulator
//! serves from `spec/tools.toml`, valid against a fresh simulator's seeded state and ordered so
//! that running them in sequence gives 2xx JSON answers.
//!
//! Some requests need an id from an earlier answer (a question's reply id, a new order's id,
//! a new alert's id). Such a request carries `{name}` placeholders in its path, query values or
//! body strings, and the earlier request names a [`Capture`] that fills `name` from its JSON
//! answer. [`ExampleRequest::resolve`] substitutes the placeholders and
//! [`ExampleRequest::capture`] records captures. Run them with pacing off
//! ([`crate::SimConfig::with_pacing`]), or with pacing on at no more than 8 requests per second
//! (each paced endpoint is called once, the snapshot twice).

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::universe::{month_param, option_expiries};

/// Stores `pointer` (RFC 6901 JSON pointer) of a request's JSON answer under `name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Capture {
    /// Placeholder name, used as `{name}` in later requests.
    pub name: String,
    /// JSON pointer into the answer, e.g. `/0/id`.
    pub pointer: String,
}

/// One concrete request.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleRequest {
    /// The operation id as in `spec/tools.toml`.
    pub operation_id: String,
    /// HTTP method (`GET`, `POST`, `PUT`, `DELETE`).
    pub method: String,
    /// Concrete path under `/v1/api` (may hold `{name}` placeholders).
    pub path: String,
    /// Query parameters.
    pub query: Vec<(String, String)>,
    /// JSON body.
    pub body: Option<Value>,
    /// Values to capture from the answer for later requests.
    pub captures: Vec<Capture>,
}

impl ExampleRequest {
    fn new(op: &str, method: &str, path: &str) -> Self {
        Self {
            operation_id: op.into(),
            method: method.into(),
            path: format!("/v1/api{path}"),
            query: Vec::new(),
            body: None,
            captures: Vec::new(),
        }
    }

    fn q(mut self, k: &str, v: &str) -> Self {
        self.query.push((k.into(), v.into()));
        self
    }

    fn body(mut self, b: Value) -> Self {
        self.body = Some(b);
        self
    }

    fn keep(mut self, name: &str, pointer: &str) -> Self {
        self.captures.push(Capture {
            name: name.into(),
            pointer: pointer.into(),
        });
        self
    }

    /// A copy with every `{name}` placeholder replaced from `vars` (unknown names stay).
    pub fn resolve(&self, vars: &HashMap<String, String>) -> ExampleRequest {
        fn sub(s: &str, vars: &HashMap<String, String>) -> String {
            let mut out = s.to_string();
            for (k, v) in vars {
                out = out.replace(&format!("{{{k}}}"), v);
            }
            out
        }
        fn sub_value(v: &Value, vars: &HashMap<String, String>) -> Value {
            match v {
                Value::String(s) => {
                    // A body string that is exactly one numeric placeholder becomes a number.
                    let replaced = sub(s, vars);
                    if s.starts_with('{')
                        && s.ends_with('}')
                        && replaced != *s
                        && let Ok(n) = replaced.parse::<i64>()
                    {
                        return json!(n);
                    }
                    Value::String(replaced)
                }
                Value::Array(a) => Value::Array(a.iter().map(|x| sub_value(x, vars)).collect()),
                Value::Object(o) => Value::Object(
                    o.iter()
                        .map(|(k, x)| (k.clone(), sub_value(x, vars)))
                        .collect(),
                ),
                other => other.clone(),
            }
        }
        ExampleRequest {
            operation_id: self.operation_id.clone(),
            method: self.method.clone(),
            path: sub(&self.path, vars),
            query: self
                .query
                .iter()
                .map(|(k, v)| (k.clone(), sub(v, vars)))
                .collect(),
            body: self.body.as_ref().map(|b| sub_value(b, vars)),
            captures: self.captures.clone(),
        }
    }

    /// Records this request's captures from its JSON `answer` into `vars`; returns the names
    /// that could not be found.
    pub fn capture(&self, answer: &Value, vars: &mut HashMap<String, String>) -> Vec<String> {
        let mut missing = Vec::new();
        for c in &self.captures {
            match answer.pointer(&c.pointer) {
                Some(Value::String(s)) => {
                    vars.insert(c.name.clone(), s.clone());
                }
                Some(Value::Number(n)) => {
                    vars.insert(c.name.clone(), n.to_string());
                }
                _ => missing.push(c.name.clone()),
            }
        }
        missing
    }
}

/// Every served operation with at least one request, in an order that works on a fresh
/// simulator (default config, pacing off).
pub fn example_requests() -> Vec<ExampleRequest> {
    let month = month_param(option_expiries(chrono::Utc::now().date_naive(), 3)[0]);
    let acct = "DU1234567";
    let e = ExampleRequest::new;
    let order = |price: f64, coid: &str| {
        json!({ "orders": [{ "acctId": acct, "conid": 265598, "secType": "265598:STK", "cOID": coid, "orderType": "LMT",
            "price": price, "side": "BUY", "tif": "DAY", "quantity": 1 }] })
    };
    vec![
        // Session
        e("post_iserver_auth_status", "POST", "/iserver/auth/status"),
        e("post_tickle", "POST", "/tickle"),
        e("get_sso_validate", "GET", "/sso/validate"),
        e("post_iserver_auth_ssodh_init", "POST", "/iserver/auth/ssodh/init").body(json!({ "publish": true, "compete": true })),
        e("get_iserver_reauthenticate", "GET", "/iserver/reauthenticate"),
        // Accounts
        e("get_iserver_accounts", "GET", "/iserver/accounts"),
        e("post_iserver_account", "POST", "/iserver/account").body(json!({ "acctId": acct })),
        e("get_iserver_account_search_search_pattern", "GET", "/iserver/account/search/DU12"),
        e("post_iserver_dynaccount", "POST", "/iserver/dynaccount").body(json!({ "acctId": acct })),
        e("get_iserver_account_pnl_partitioned", "GET", "/iserver/account/pnl/partitioned"),
        e("get_iserver_account_account_id_summary", "GET", &format!("/iserver/account/{acct}/summary")),
        e("get_iserver_account_account_id_summary_available_funds", "GET", &format!("/iserver/account/{acct}/summary/available_funds")),
        e("get_iserver_account_account_id_summary_balances", "GET", &format!("/iserver/account/{acct}/summary/balances")),
        e("get_iserver_account_account_id_summary_margins", "GET", &format!("/iserver/account/{acct}/summary/margins")),
        e("get_iserver_account_account_id_summary_market_value", "GET", &format!("/iserver/account/{acct}/summary/market_value")),
        e("get_iserver_account_allocation_accounts", "GET", "/iserver/account/allocation/accounts"),
        e("post_iserver_account_allocation_group", "POST", "/iserver/account/allocation/group")
            .body(json!({ "name": "Growth", "accounts": [{ "name": "DU1234567", "amount": 1 }, { "name": "DU7654321", "amount": 2 }], "default_method": "S" })),
        e("get_iserver_account_allocation_group", "GET", "/iserver/account/allocation/group"),
        e("post_iserver_account_allocation_group_single", "POST", "/iserver/account/allocation/group/single").body(json!({ "name": "Growth" })),
        e("put_iserver_account_allocation_group", "PUT", "/iserver/account/allocation/group")
            .body(json!({ "name": "Growth2", "prev_name": "Growth", "accounts": [{ "name": "DU1234567", "amount": 3 }], "default_method": "S" })),
        e("post_iserver_account_allocation_group_delete", "POST", "/iserver/account/allocation/group/delete").body(json!({ "name": "Growth2" })),
        e("get_iserver_account_allocation_presets", "GET", "/iserver/account/allocation/presets"),
        e("post_iserver_account_allocation_presets", "POST", "/iserver/account/allocation/presets")
            .body(json!({ "group_auto_close_positions": false, "default_method_for_all": "N", "profiles_auto_close_positions": false, "strict_credit_check": false, "group_proportional_allocation": false })),
        // Portfolio
        e("get_portfolio_accounts", "GET", "/portfolio/accounts"),
        e("get_portfolio_subaccounts", "GET", "/portfolio/subaccounts"),
        e("get_portfolio_account_id_meta", "GET", &format!("/portfolio/{acct}/meta")),
        e("get_portfolio_account_id_summary", "GET", &format!("/portfolio/{acct}/summary")),
        e("get_portfolio_account_id_ledger", "GET", &format!("/portfolio/{acct}/ledger")),
        e("get_portfolio_account_id_allocation", "GET", &format!("/portfolio/{acct}/allocation")),
        e("get_portfolio_account_id_positions_page_id", "GET", &format!("/portfolio/{acct}/positions/0")).q("sort", "position").q("direction", "d"),
        e("get_portfolio_account_id_position_conid", "GET", &format!("/portfolio/{acct}/position/265598")),
        e("get_portfolio_positions_conid", "GET", "/portfolio/positions/265598"),
        e("post_portfolio_account_id_positions_invalidate", "POST", &format!("/portfolio/{acct}/positions/invalidate")),
        e("post_pa_performance", "POST", "/pa/performance").body(json!({ "acctIds": [acct], "period": "1M" })),
        e("post_pa_allperiods", "POST", "/pa/allperiods").body(json!({ "acctIds": [acct] })),
        e("post_pa_transactions", "POST", "/pa/transactions").body(json!({ "acctIds": [acct], "conids": [265598], "currency": "USD", "days": 30 })),
        // Market data (the first snapshot is the pre-flight; the second has values)
        e("get_iserver_marketdata_snapshot", "GET", "/iserver/marketdata/snapshot").q("conids", "265598,756733").q("fields", "31,55,84,86,87,7295,7762"),
        e("get_iserver_marketdata_snapshot", "GET", "/iserver/marketdata/snapshot").q("conids", "265598,756733").q("fields", "31,55,84,86,87,7295,7762"),
        e("get_iserver_marketdata_history", "GET", "/iserver/marketdata/history").q("conid", "265598").q("period", "1d").q("bar", "1h"),
        e("get_hmds_history", "GET", "/hmds/history").q("conid", "265598").q("period", "1d").q("bar", "5min"),
        e("get_md_regsnapshot", "GET", "/md/regsnapshot").q("conid", "265598"),
        e("post_iserver_marketdata_unsubscribe", "POST", "/iserver/marketdata/unsubscribe").body(json!({ "conid": 756733 })),
        e("get_iserver_marketdata_unsubscribeall", "GET", "/iserver/marketdata/unsubscribeall"),
        // Contracts
        e("get_iserver_secdef_search", "GET", "/iserver/secdef/search").q("symbol", "AAPL"),
        e("post_iserver_secdef_search", "POST", "/iserver/secdef/search").body(json!({ "symbol": "apple", "name": true })),
        e("get_iserver_secdef_info", "GET", "/iserver/secdef/info").q("conid", "265598").q("sectype", "OPT").q("month", &month).q("strike", "230").q("right", "C"),
        e("get_iserver_secdef_strikes", "GET", "/iserver/secdef/strikes").q("conid", "265598").q("sectype", "OPT").q("month", &month),
        e("get_iserver_secdef_bond_filters", "GET", "/iserver/secdef/bond-filters").q("symbol", "BOND").q("issueId", "e1234567"),
        e("get_iserver_contract_conid_info", "GET", "/iserver/contract/265598/info"),
        e("get_iserver_contract_conid_info_and_rules", "GET", "/iserver/contract/265598/info-and-rules"),
        e("post_iserver_contract_rules", "POST", "/iserver/contract/rules").body(json!({ "conid": 265598, "isBuy": true })),
        e("get_iserver_contract_conid_algos", "GET", "/iserver/contract/265598/algos").q("addDescription", "1").q("addParams", "1"),
        e("get_trsrv_secdef", "GET", "/trsrv/secdef").q("conids", "265598,756733"),
        e("get_trsrv_stocks", "GET", "/trsrv/stocks").q("symbols", "AAPL,IBM"),
        e("get_trsrv_futures", "GET", "/trsrv/futures").q("symbols", "ES"),
        e("get_trsrv_secdef_schedule", "GET", "/trsrv/secdef/schedule").q("assetClass", "STK").q("symbol", "AAPL"),
        e("get_trsrv_all_conids", "GET", "/trsrv/all-conids").q("exchange", "NASDAQ"),
        e("get_iserver_currency_pairs", "GET", "/iserver/currency/pairs").q("currency", "USD"),
        e("get_iserver_exchangerate", "GET", "/iserver/exchangerate").q("source", "EUR").q("target", "USD"),
        // Orders: a limit far below the market asks o163; confirming books a resting order.
        e("post_iserver_account_account_id_orders_whatif", "POST", &format!("/iserver/account/{acct}/orders/whatif"))
            .body(json!({ "orders": [{ "conid": 265598, "orderType": "MKT", "side": "BUY", "tif": "DAY", "quantity": 10 }] })),
        e("post_iserver_account_account_id_orders", "POST", &format!("/iserver/account/{acct}/orders"))
            .body(order(150.0, "example-order-1"))
            .keep("replyId", "/0/id"),
        e("post_iserver_reply_reply_id", "POST", "/iserver/reply/{replyId}").body(json!({ "confirmed": true })).keep("orderId", "/0/order_id"),
        e("get_iserver_account_order_status_order_id", "GET", "/iserver/account/order/status/{orderId}"),
        e("get_iserver_account_orders", "GET", "/iserver/account/orders").q("filters", "submitted,pre_submitted,filled"),
        e("post_iserver_account_account_id_order_order_id", "POST", &format!("/iserver/account/{acct}/order/{{orderId}}"))
            .body(json!({ "conid": 265598, "orderType": "LMT", "price": 151.0, "side": "BUY", "tif": "DAY", "quantity": 2 }))
            .keep("modifyReplyId", "/0/id"),
        e("post_iserver_reply_reply_id", "POST", "/iserver/reply/{modifyReplyId}").body(json!({ "confirmed": true })),
        e("delete_iserver_account_account_id_order_order_id", "DELETE", &format!("/iserver/account/{acct}/order/{{orderId}}")),
        e("get_iserver_account_trades", "GET", "/iserver/account/trades").q("days", "1"),
        e("post_iserver_questions_suppress", "POST", "/iserver/questions/suppress").body(json!({ "messageIds": ["o163", "o403"] })),
        e("post_iserver_questions_suppress_reset", "POST", "/iserver/questions/suppress/reset"),
        e("post_iserver_notification", "POST", "/iserver/notification").body(json!({ "orderId": 1, "reqId": "1", "text": "Yes" })),
        // Alerts
        e("post_iserver_account_account_id_alert", "POST", &format!("/iserver/account/{acct}/alert"))
            .body(json!({ "alertName": "MSFT above 500", "alertMessage": "MSFT traded above 500", "alertRepeatable": 0,
                "outsideRth": 0, "tif": "GTC", "sendMessage": 0, "showPopup": 1,
                "conditions": [{ "type": 1, "conidex": "272093@SMART", "operator": ">=", "triggerMethod": "0", "value": "500", "logicBind": "n" }] }))
            .keep("alertId", "/order_id"),
        e("get_iserver_account_account_id_alerts", "GET", &format!("/iserver/account/{acct}/alerts")),
        e("get_iserver_account_alert_alert_id", "GET", "/iserver/account/alert/{alertId}").q("type", "Q"),
        e("post_iserver_account_account_id_alert_activate", "POST", &format!("/iserver/account/{acct}/alert/activate"))
            .body(json!({ "alertId": "{alertId}", "alertActive": 0 })),
        e("get_iserver_account_mta", "GET", "/iserver/account/mta"),
        e("delete_iserver_account_account_id_alert_alert_id", "DELETE", &format!("/iserver/account/{acct}/alert/{{alertId}}")),
        // Watchlists
        e("post_iserver_watchlist", "POST", "/iserver/watchlist")
            .body(json!({ "id": "900", "name": "Example list", "rows": [{ "C": 265598 }, { "H": "ETFs" }, { "C": 756733 }] })),
        e("get_iserver_watchlists", "GET", "/iserver/watchlists").q("SC", "USER_WATCHLIST"),
        e("get_iserver_watchlist", "GET", "/iserver/watchlist").q("id", "900"),
        e("delete_iserver_watchlist", "DELETE", "/iserver/watchlist").q("id", "900"),
        // Scanners
        e("get_iserver_scanner_params", "GET", "/iserver/scanner/params"),
        e("post_iserver_scanner_run", "POST", "/iserver/scanner/run")
            .body(json!({ "instrument": "STK", "type": "TOP_PERC_GAIN", "location": "STK.US.MAJOR", "filter": [{ "code": "priceAbove", "value": 10 }] })),
        e("get_hmds_scanner_params", "GET", "/hmds/scanner/params"),
        e("post_hmds_scanner_run", "POST", "/hmds/scanner/run")
            .body(json!({ "instrument": "STK", "locations": "STK.US.MAJOR", "scanCode": "MOST_ACTIVE", "secType": "STK", "maxItems": 10, "filters": [] })),
        // FYI
        e("get_fyi_unreadnumber", "GET", "/fyi/unreadnumber"),
        e("get_fyi_notifications", "GET", "/fyi/notifications").q("max", "10").keep("notificationId", "/0/ID"),
        e("put_fyi_notifications_notification_id", "PUT", "/fyi/notifications/{notificationId}"),
        e("get_fyi_settings", "GET", "/fyi/settings"),
        e("post_fyi_settings_typecode", "POST", "/fyi/settings/EA").body(json!({ "enabled": true })),
        e("get_fyi_disclaimer_typecode", "GET", "/fyi/disclaimer/EA"),
        e("put_fyi_disclaimer_typecode", "PUT", "/fyi/disclaimer/EA"),
        e("get_fyi_deliveryoptions", "GET", "/fyi/deliveryoptions"),
        e("put_fyi_deliveryoptions_email", "PUT", "/fyi/deliveryoptions/email").q("enabled", "true"),
        e("post_fyi_deliveryoptions_device", "POST", "/fyi/deliveryoptions/device")
            .body(json!({ "deviceName": "Example phone", "deviceId": "example-device-1", "uiName": "Example phone (Android)", "enabled": true })),
        e("delete_fyi_deliveryoptions_device_id", "DELETE", "/fyi/deliveryoptions/example-device-1"),
        // Last: logout ends the SSO login (everything answers 401 afterwards).
        e("post_logout", "POST", "/logout"),
    ]
}
