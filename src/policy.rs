//! The trading policy: what a tool that changes anything may do, decided before a request
//! leaves the process.
//!
//! Checks, in order, for every write tool: the account allowlist and the live-account opt-in
//! (any `accountId`/`acctId` in the arguments); then, for order placement and modification, the
//! orders-per-minute limit, and for each order the security type, the quantity and the notional
//! value (price × quantity × multiplier; a market order is valued at a fresh quote; an order
//! that cannot be valued is refused); then, when previews are required, the single-use token
//! from a preview of the identical order. Every refusal names the rule and the setting.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::ibkr::{Client, market};

/// Operation that places orders.
pub const PLACE_ORDERS: &str = "post_iserver_account_account_id_orders";
/// Operation that modifies an order.
pub const MODIFY_ORDER: &str = "post_iserver_account_account_id_order_order_id";
/// Operation that previews orders.
pub const PREVIEW_ORDERS: &str = "post_iserver_account_account_id_orders_whatif";

/// Policy settings (see `ServeConfig` for their meaning).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Orders on live accounts allowed.
    pub allow_live: bool,
    /// Account allowlist (empty: any).
    pub accounts: Vec<String>,
    /// Largest quantity per order.
    pub max_quantity: Option<f64>,
    /// Largest notional per order.
    pub max_notional: Option<f64>,
    /// Allowed security types (empty: any).
    pub sec_types: Vec<String>,
    /// Orders per minute.
    pub max_orders_per_minute: Option<u32>,
    /// Preview tokens required to place orders.
    pub require_preview: bool,
    /// How long a preview token is valid.
    pub preview_ttl: Duration,
}

/// Why the policy refused a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The rule (`account`, `live_account`, `quantity`, `notional`, `sec_type`, `rate`,
    /// `preview`).
    pub rule: &'static str,
    /// What happened and what to do.
    pub message: String,
}

fn refuse(rule: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        rule,
        message: message.into(),
    }
}

#[derive(Debug)]
struct Preview {
    fingerprint: String,
    expires: Instant,
}

/// The policy and its state (preview tokens, recent orders), shared by all sessions.
#[derive(Debug)]
pub struct Policy {
    limits: Limits,
    previews: Mutex<HashMap<String, Preview>>,
    recent: Mutex<VecDeque<Instant>>,
}

/// Whether an account id is a paper account.
pub fn is_paper(account: &str) -> bool {
    account.starts_with("DU")
}

impl Policy {
    /// A policy with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            previews: Mutex::new(HashMap::new()),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Checks a write call with its (validated) arguments. `client` is used to look contracts
    /// and prices up when a limit needs them.
    pub async fn check(
        &self,
        operation_id: &str,
        args: &Map<String, Value>,
        client: &Client,
    ) -> Result<(), Refusal> {
        for account in accounts_in(args) {
            if !self.limits.accounts.is_empty() && !self.limits.accounts.contains(&account) {
                return Err(refuse(
                    "account",
                    format!(
                        "account {} is not one this server may act on (allowed: {}). The user \
                         sets the list with --trading-accounts (IBKR_MCP_TRADING_ACCOUNTS).",
                        crate::audit::mask_account(&account),
                        self.limits
                            .accounts
                            .iter()
                            .map(|a| crate::audit::mask_account(a))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if !is_paper(&account) && !self.limits.allow_live {
                return Err(refuse(
                    "live_account",
                    format!(
                        "account {} is a live (real-money) account and this server only acts on \
                         paper accounts (ids starting with DU). The user can allow live accounts \
                         with --allow-live-trading (IBKR_MCP_ALLOW_LIVE_TRADING).",
                        crate::audit::mask_account(&account)
                    ),
                ));
            }
        }
        if operation_id != PLACE_ORDERS && operation_id != MODIFY_ORDER {
            return Ok(());
        }
        let orders = orders_in(args);
        if let Some(max) = self.limits.max_orders_per_minute {
            let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            let window = Duration::from_secs(60);
            let live: Vec<&Instant> = recent.iter().filter(|t| t.elapsed() < window).collect();
            if live.len() + orders.len().max(1) > max as usize {
                let wait = live
                    .first()
                    .map_or(window, |t| window.saturating_sub(t.elapsed()));
                return Err(refuse(
                    "rate",
                    format!(
                        "this server allows {max} orders per minute and {} were sent in the last \
                         minute; try again in {} s. The user sets the limit with \
                         --max-orders-per-minute (IBKR_MCP_MAX_ORDERS_PER_MINUTE).",
                        live.len(),
                        wait.as_secs() + 1
                    ),
                ));
            }
        }
        for order in &orders {
            self.check_order(order, client).await?;
        }
        Ok(())
    }

    async fn check_order(
        &self,
        order: &Map<String, Value>,
        client: &Client,
    ) -> Result<(), Refusal> {
        let conid = conid_of(order);
        let quantity = order.get("quantity").and_then(market::number);
        if let (Some(max), Some(q)) = (self.limits.max_quantity, quantity)
            && q.abs() > max
        {
            return Err(refuse(
                "quantity",
                format!(
                    "the order's quantity {q} is above this server's limit of {max} per order. \
                     The user sets it with --max-order-quantity (IBKR_MCP_MAX_ORDER_QUANTITY)."
                ),
            ));
        }
        let needs_contract =
            !self.limits.sec_types.is_empty() || self.limits.max_notional.is_some();
        if !needs_contract {
            return Ok(());
        }
        let conid = conid.ok_or_else(|| {
            refuse(
                "contract",
                "the order has no conid, so this server cannot check its trading limits; give \
                 the conid (find it with search_contracts)",
            )
        })?;
        let facts = market::contract_facts(client, conid).await.map_err(|e| {
            refuse(
                "contract",
                format!("cannot check the trading limits because the contract lookup failed: {e}"),
            )
        })?;
        if !self.limits.sec_types.is_empty() {
            let t = facts.sec_type.clone().unwrap_or_default();
            if !self
                .limits
                .sec_types
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&t))
            {
                return Err(refuse(
                    "sec_type",
                    format!(
                        "orders for {} contracts ({}) are not allowed here (allowed: {}). The user \
                         sets the list with --allowed-sec-types (IBKR_MCP_ALLOWED_SEC_TYPES).",
                        if t.is_empty() {
                            "unknown-type"
                        } else {
                            t.as_str()
                        },
                        facts.symbol.as_deref().unwrap_or("conid"),
                        self.limits.sec_types.join(", ")
                    ),
                ));
            }
        }
        if let Some(max) = self.limits.max_notional {
            let ccy = facts.currency.clone().unwrap_or_default();
            let notional = if let Some(cash) = order.get("cashQty").and_then(market::number) {
                cash.abs()
            } else {
                let q = quantity.ok_or_else(|| {
                    refuse("notional", "the order has no quantity to value it by")
                })?;
                let order_type = order
                    .get("orderType")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_ascii_uppercase();
                let stated = ["price", "auxPrice"]
                    .iter()
                    .find_map(|k| order.get(*k).and_then(market::number))
                    .filter(|p| *p > 0.0);
                let price = match stated {
                    Some(p) if !order_type.starts_with("MKT") && order_type != "MOC" => p,
                    _ => {
                        let buy = order
                            .get("side")
                            .and_then(Value::as_str)
                            .is_some_and(|s| s.eq_ignore_ascii_case("BUY"));
                        market::price_for(client, conid, buy).await.map_err(|e| {
                            refuse(
                                "notional",
                                format!(
                                    "cannot value this market order to check the notional \
                                     limit ({e}); use a limit order with a price"
                                ),
                            )
                        })?
                    }
                };
                (q * price * facts.multiplier).abs()
            };
            if notional > max {
                return Err(refuse(
                    "notional",
                    format!(
                        "the order is worth {notional:.2} {ccy}, above this server's limit of \
                         {max} per order. The user sets it with --max-order-notional \
                         (IBKR_MCP_MAX_ORDER_NOTIONAL)."
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Counts orders that were sent, for the per-minute limit.
    pub fn record_sent(&self, args: &Map<String, Value>) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        recent.retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        for _ in 0..orders_in(args).len().max(1) {
            recent.push_back(now);
        }
    }

    /// A token for a successful preview of exactly these arguments.
    pub fn issue_preview_token(&self, args: &Map<String, Value>) -> String {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut previews = self.previews.lock().unwrap_or_else(|p| p.into_inner());
        previews.retain(|_, p| p.expires > Instant::now());
        previews.insert(
            token.clone(),
            Preview {
                fingerprint: fingerprint(args),
                expires: Instant::now() + self.limits.preview_ttl,
            },
        );
        token
    }

    /// Uses up `token` for these arguments (without the token itself).
    pub fn redeem_preview_token(
        &self,
        token: Option<&str>,
        args: &Map<String, Value>,
    ) -> Result<(), Refusal> {
        let Some(token) = token else {
            return Err(refuse(
                "preview",
                "this server requires a preview first: call get_order_preview with the same \
                 accountId and body, then pass the previewToken it returns to place_orders",
            ));
        };
        let mut previews = self.previews.lock().unwrap_or_else(|p| p.into_inner());
        let Some(p) = previews.remove(token) else {
            return Err(refuse(
                "preview",
                "that previewToken is unknown or was already used: preview the order again with \
                 get_order_preview",
            ));
        };
        if p.expires <= Instant::now() {
            return Err(refuse(
                "preview",
                format!(
                    "that previewToken expired (tokens are valid {} s): preview the order again",
                    self.limits.preview_ttl.as_secs()
                ),
            ));
        }
        if p.fingerprint != fingerprint(args) {
            return Err(refuse(
                "preview",
                "the order differs from the one that was previewed with that token; preview \
                 exactly the order you want to place (the token is now used up)",
            ));
        }
        Ok(())
    }
}

/// Every account id in the arguments: `accountId`/`acctId` at the top level and in the body and
/// its orders.
pub fn accounts_in(args: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    let mut take = |m: &Map<String, Value>| {
        for k in ["accountId", "acctId"] {
            if let Some(Value::String(s)) = m.get(k)
                && !s.is_empty()
                && !out.contains(s)
            {
                out.push(s.clone());
            }
        }
    };
    take(args);
    if let Some(Value::Object(body)) = args.get("body") {
        take(body);
        for o in body
            .get("orders")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Value::Object(o) = o {
                take(o);
            }
        }
    }
    out
}

/// The orders of a place (`body.orders`) or modify (`body`) call.
pub fn orders_in(args: &Map<String, Value>) -> Vec<Map<String, Value>> {
    match args.get("body") {
        Some(Value::Object(body)) => match body.get("orders") {
            Some(Value::Array(list)) => {
                list.iter().filter_map(|o| o.as_object().cloned()).collect()
            }
            _ => vec![body.clone()],
        },
        _ => Vec::new(),
    }
}

fn conid_of(order: &Map<String, Value>) -> Option<i64> {
    if let Some(c) = order.get("conid").and_then(market::number) {
        return Some(c as i64);
    }
    order
        .get("conidex")
        .and_then(Value::as_str)
        .and_then(|s| s.split(['@', ':']).next())
        .and_then(|s| s.trim().parse().ok())
}

/// The same string for equal arguments whatever their key order or number spelling.
pub fn fingerprint(args: &Map<String, Value>) -> String {
    fn canon(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), canon(&m[k])))
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(canon).collect()),
            Value::Number(n) => n
                .as_f64()
                .and_then(serde_json::Number::from_f64)
                .map_or_else(|| v.clone(), Value::Number),
            other => other.clone(),
        }
    }
    canon(&Value::Object(args.clone())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn accounts_are_found_in_path_body_and_orders() {
        let a = obj(
            json!({"accountId": "DU1", "body": {"acctId": "U2", "orders": [{"acctId": "DU3"}, {"acctId": "DU1"}]}}),
        );
        assert_eq!(accounts_in(&a), vec!["DU1", "U2", "DU3"]);
    }

    #[test]
    fn fingerprint_ignores_key_order_and_number_spelling() {
        let a = obj(json!({"accountId": "DU1", "body": {"orders": [{"quantity": 1, "conid": 5}]}}));
        let b =
            obj(json!({"body": {"orders": [{"conid": 5.0, "quantity": 1.0}]}, "accountId": "DU1"}));
        let c = obj(json!({"body": {"orders": [{"conid": 5, "quantity": 2}]}, "accountId": "DU1"}));
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }

    #[test]
    fn preview_tokens_are_single_use_bound_to_the_order_and_expire() {
        let p = Policy::new(Limits {
            require_preview: true,
            preview_ttl: Duration::from_millis(200),
            ..Limits::default()
        });
        let order =
            obj(json!({"accountId": "DU1", "body": {"orders": [{"conid": 5, "quantity": 1}]}}));
        let other =
            obj(json!({"accountId": "DU1", "body": {"orders": [{"conid": 5, "quantity": 9}]}}));
        assert_eq!(
            p.redeem_preview_token(None, &order).unwrap_err().rule,
            "preview"
        );
        let t = p.issue_preview_token(&order);
        p.redeem_preview_token(Some(&t), &order).unwrap();
        assert!(
            p.redeem_preview_token(Some(&t), &order).is_err(),
            "single use"
        );
        let t = p.issue_preview_token(&order);
        assert!(
            p.redeem_preview_token(Some(&t), &other)
                .unwrap_err()
                .message
                .contains("differs")
        );
        let t = p.issue_preview_token(&order);
        std::thread::sleep(Duration::from_millis(250));
        assert!(
            p.redeem_preview_token(Some(&t), &order)
                .unwrap_err()
                .message
                .contains("expired")
        );
    }
}
