//! The trading policy: what a tool that changes anything may do, decided before a request
//! leaves the process.
//!
//! Two places apply it, with one set of rules:
//! - **the request guard** ([`Policy`] is the `ibkr::hooks::Guard`): every request of a write
//!   operation, tool or internal, is checked on its **final** URL and body, after encoding, just
//!   before it is sent: the kill switch, then the account allowlist and the live-account rule for
//!   every account id in the path and the body (order tickets, allocation-group members). What
//!   an argument says cannot change which account is checked, because the check reads the
//!   request itself;
//! - **[`Policy::check`]**, before a tool call sends anything: the same account rules on the
//!   arguments (so a refusal comes before any lookup or question to the human), then for order
//!   placement and modification the order's shape (`cashQty` with `quantity`, a `conidex`
//!   naming another contract), the orders-per-minute limit (a slot is reserved atomically and
//!   released when nothing was sent), and per order the security type, the quantity and the
//!   notional value: quantity × multiplier × the **worse** of the order's own price and the
//!   current marketable price (ask for a buy, bid for a sell), from a fresh quote; without a
//!   quote the order is refused.
//!
//! An account is paper only when the login said so: `/iserver/accounts` with `isPaper: true`
//! (every account and group of that login), or `/portfolio/accounts` with `type: "DEMO"`. The
//! [`AccountBook`] learns both from the gateway's replies as they pass the guard; any other id
//! (a live account, a group of live accounts, a made-up `DUMMY`) is live. Preview tokens bind a
//! preview to the identical order (place or modify). Every refusal names the rule and the
//! setting.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::halt::KillSwitch;
use crate::ibkr::hooks::{self, Outgoing};
use crate::ibkr::{Client, market};

/// Operation that places orders.
pub const PLACE_ORDERS: &str = "post_iserver_account_account_id_orders";
/// Operation that modifies an order.
pub const MODIFY_ORDER: &str = "post_iserver_account_account_id_order_order_id";
/// Operation that previews orders.
pub const PREVIEW_ORDERS: &str = "post_iserver_account_account_id_orders_whatif";
/// Operation that cancels an order.
pub const CANCEL_ORDER: &str = "delete_iserver_account_account_id_order_order_id";
/// Operation that answers order questions.
pub const REPLY_QUESTION: &str = "post_iserver_reply_reply_id";
/// The brokerage account list (and whether the login is a paper login).
pub const ISERVER_ACCOUNTS: &str = "get_iserver_accounts";
/// The portfolio account list (`type: "DEMO"` marks paper accounts).
pub const PORTFOLIO_ACCOUNTS: &str = "get_portfolio_accounts";

/// Operations that place or change orders: checked by the guard even when not a tool.
const ORDER_WRITES: &[&str] = &[PLACE_ORDERS, MODIFY_ORDER, REPLY_QUESTION];

/// Most orders in one placement: IBKR takes one order per request, or a bracket.
const MAX_ORDERS_PER_CALL: usize = 10;

/// Security types whose value depends on a multiplier the gateway must give.
fn is_derivative(sec_type: &str) -> bool {
    matches!(
        sec_type.to_ascii_uppercase().as_str(),
        "OPT" | "FOP" | "FUT" | "WAR" | "IOPT" | "BAG" | "CFD"
    )
}

/// Lookups made for one call, so repeated orders for a contract cost one request each.
#[derive(Debug, Default)]
struct Lookups {
    facts: HashMap<i64, market::ContractFacts>,
    prices: HashMap<(i64, bool), f64>,
}

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
    /// Preview tokens required to place or modify orders.
    pub require_preview: bool,
    /// How long a preview token is valid.
    pub preview_ttl: Duration,
}

/// Why the policy refused a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The rule (`account`, `live_account`, `kill_switch`, `order_shape`, `quantity`,
    /// `notional`, `sec_type`, `contract`, `rate`, `preview`).
    pub rule: &'static str,
    /// What happened and what to do.
    pub message: String,
    /// A lookup the rule needed was answered 401: the brokerage session is gone (the caller
    /// recovers the session and checks again).
    pub session_lost: bool,
}

fn refuse(rule: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        rule,
        message: message.into(),
        session_lost: false,
    }
}

fn lookup_refusal(rule: &'static str, e: &crate::ibkr::LookupError, what: &str) -> Refusal {
    Refusal {
        rule,
        message: format!("{what} ({e})"),
        session_lost: e.unauthorized(),
    }
}

/// Which accounts the login has, and which of them are paper accounts, learned from the
/// gateway's own replies.
#[derive(Debug, Default)]
pub struct AccountBook(RwLock<Book>);

#[derive(Debug, Default)]
struct Book {
    /// `/iserver/accounts` answered at least once.
    loaded: bool,
    /// What the login said about itself (`isPaper`), if it did.
    login_paper: Option<bool>,
    /// Ids (accounts and groups) of the login.
    known: BTreeSet<String>,
    /// Ids known to be paper.
    paper: BTreeSet<String>,
}

impl AccountBook {
    /// Learns from a `/iserver/accounts` reply: its `accounts` list, and `isPaper` for them all.
    pub fn learn_iserver(&self, reply: &Value) {
        let ids = market::string_list(reply.get("accounts"));
        let login_paper = reply.get("isPaper").and_then(Value::as_bool);
        let mut b = self.0.write().unwrap_or_else(|p| p.into_inner());
        b.loaded = true;
        b.login_paper = login_paper;
        b.known.extend(ids.iter().cloned());
        match login_paper {
            Some(true) => b.paper.extend(ids),
            Some(false) => {
                for id in &ids {
                    b.paper.remove(id);
                }
            }
            None => {}
        }
    }

    /// Learns from a `/portfolio/accounts` reply: `type: "DEMO"` entries are paper accounts.
    pub fn learn_portfolio(&self, reply: &Value) {
        let mut b = self.0.write().unwrap_or_else(|p| p.into_inner());
        for entry in reply.as_array().into_iter().flatten() {
            let Some(id) = ["accountId", "id"]
                .iter()
                .find_map(|k| entry.get(*k).and_then(Value::as_str))
            else {
                continue;
            };
            b.known.insert(id.to_string());
            if entry.get("type").and_then(Value::as_str) == Some("DEMO") {
                b.paper.insert(id.to_string());
            } else if b.login_paper != Some(true) {
                b.paper.remove(id);
            }
        }
    }

    /// Whether `id` is a paper account (or a group of a paper login).
    pub fn is_paper(&self, id: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .paper
            .contains(id)
    }

    /// Whether `/iserver/accounts` has been read.
    pub fn is_loaded(&self) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).loaded
    }

    /// Whether the login did not say if it is a paper login (then `/portfolio/accounts` tells).
    pub fn needs_portfolio(&self) -> bool {
        let b = self.0.read().unwrap_or_else(|p| p.into_inner());
        b.loaded && b.login_paper.is_none()
    }

    /// The paper and live ids known, for the session status.
    pub fn summary(&self) -> (Vec<String>, Vec<String>) {
        let b = self.0.read().unwrap_or_else(|p| p.into_inner());
        let paper = b.paper.iter().cloned().collect();
        let live = b.known.difference(&b.paper).cloned().collect();
        (paper, live)
    }
}

#[derive(Debug)]
struct Preview {
    key: String,
    expires: Instant,
}

/// The policy and its state (preview tokens, recent orders, the account book), shared by all
/// sessions and by the request guard.
#[derive(Debug)]
pub struct Policy {
    limits: Limits,
    previews: Mutex<HashMap<String, Preview>>,
    recent: Mutex<VecDeque<(Instant, u64)>>,
    next_slot: AtomicU64,
    book: AccountBook,
    halt: Option<KillSwitch>,
    writes: BTreeSet<String>,
}

/// Order slots taken from the per-minute limit; given back when dropped unless
/// [`kept`](Reservation::keep) (the orders reached IBKR).
#[derive(Debug)]
pub struct Reservation<'a> {
    policy: &'a Policy,
    id: u64,
    kept: bool,
}

impl Reservation<'_> {
    /// The orders went out: the slots stay used for a minute.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            let mut recent = self.policy.recent.lock().unwrap_or_else(|p| p.into_inner());
            recent.retain(|(_, id)| *id != self.id);
        }
    }
}

impl Policy {
    /// A policy with `limits` over the write operations `writes` (the ones the request guard
    /// checks), with an optional kill switch.
    pub fn new(
        limits: Limits,
        writes: impl IntoIterator<Item = String>,
        halt: Option<KillSwitch>,
    ) -> Self {
        Self {
            limits,
            previews: Mutex::new(HashMap::new()),
            recent: Mutex::new(VecDeque::new()),
            next_slot: AtomicU64::new(1),
            book: AccountBook::default(),
            halt,
            writes: writes.into_iter().collect(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// What the policy knows about the login's accounts.
    pub fn book(&self) -> &AccountBook {
        &self.book
    }

    /// The kill switch, if configured.
    pub fn kill_switch(&self) -> Option<&KillSwitch> {
        self.halt.as_ref()
    }

    /// Refuses when the kill switch is thrown.
    pub fn check_halt(&self) -> Result<(), Refusal> {
        match self.halt.as_ref().and_then(|k| k.engaged().map(|h| (k, h))) {
            Some((k, h)) => Err(refuse("kill_switch", k.refusal(&h))),
            None => Ok(()),
        }
    }

    /// Whether `account` is a paper account of this login.
    pub fn is_paper(&self, account: &str) -> bool {
        self.book.is_paper(account)
    }

    /// The account allowlist and the live-account rule for each of `accounts`.
    pub fn check_accounts(&self, accounts: &[String]) -> Result<(), Refusal> {
        for account in accounts {
            if !self.limits.accounts.is_empty() && !self.limits.accounts.contains(account) {
                return Err(refuse(
                    "account",
                    format!(
                        "account {} is not one this server may act on (allowed: {}). The user \
                         sets the list with --trading-accounts (IBKR_MCP_TRADING_ACCOUNTS).",
                        crate::audit::mask_account(account),
                        self.limits
                            .accounts
                            .iter()
                            .map(|a| crate::audit::mask_account(a))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if !self.limits.allow_live && !self.is_paper(account) {
                return Err(refuse(
                    "live_account",
                    format!(
                        "account {} is not a paper account of this login (the gateway lists \
                         paper accounts in /iserver/accounts and /portfolio/accounts), so it is \
                         treated as a live (real-money) account, and this server only acts on \
                         paper accounts. The user can allow live accounts with \
                         --allow-live-trading (IBKR_MCP_ALLOW_LIVE_TRADING).",
                        crate::audit::mask_account(account)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The order checks of a placement or modification, with its (validated) arguments,
    /// before anything is sent (its accounts are [`check_accounts`](Self::check_accounts)'
    /// business, before this, and the request guard's). `client` is used to look contracts and
    /// prices up when a limit needs them. The returned reservation holds the orders' slots of
    /// the per-minute limit.
    pub async fn check(
        &self,
        operation_id: &str,
        args: &Map<String, Value>,
        client: &Client,
    ) -> Result<Option<Reservation<'_>>, Refusal> {
        if operation_id != PLACE_ORDERS && operation_id != MODIFY_ORDER {
            return Ok(None);
        }
        let orders = orders_in(args);
        if orders.len() > MAX_ORDERS_PER_CALL {
            return Err(refuse(
                "order_shape",
                format!(
                    "{} orders in one call; IBKR takes one order per request, or a bracket (a \
                     parent and its children), so this server accepts at most \
                     {MAX_ORDERS_PER_CALL}",
                    orders.len()
                ),
            ));
        }
        let limited = self.needs_contract();
        for order in &orders {
            check_shape(order, limited)?;
            // A combo's legs trade quantity × their ratio: the largest leg is what counts.
            let quantity = order
                .get("quantity")
                .and_then(market::number)
                .map(|q| q * combo_ratio(order));
            self.check_quantity(quantity)?;
        }
        let existing = if operation_id == MODIFY_ORDER {
            self.working_order(args, client, limited).await?
        } else {
            None
        };
        let reservation = self.reserve(orders.len().max(1))?;
        let mut looked_up = Lookups::default();
        for order in &orders {
            self.check_order(order, existing.as_ref(), client, &mut looked_up)
                .await?;
        }
        Ok(reservation)
    }

    /// The order a modification changes, as the gateway reports it. A modification may leave
    /// fields out (the gateway keeps their old values), so the limits look at the order as it
    /// will be; it must stay on its account and its contract.
    async fn working_order(
        &self,
        args: &Map<String, Value>,
        client: &Client,
        needed: bool,
    ) -> Result<Option<Map<String, Value>>, Refusal> {
        let order_id = args.get("orderId").and_then(Value::as_str).unwrap_or("");
        let status = match crate::ibkr::fetch_order_status(client, order_id).await {
            Ok(Value::Object(m)) if !m.contains_key("error") => m,
            Ok(other) if needed => {
                return Err(refuse(
                    "contract",
                    format!(
                        "cannot read order {order_id} to check the modification against the \
                         trading limits ({}); check it with get_order_status",
                        crate::error::ibkr_message(other.to_string().as_bytes())
                    ),
                ));
            }
            Err(e) if needed => {
                return Err(lookup_refusal(
                    "contract",
                    &e,
                    "cannot read the order being modified to check the trading limits",
                ));
            }
            _ => return Ok(None),
        };
        if let (Some(owner), Some(path)) = (
            status.get("account").and_then(Value::as_str),
            args.get("accountId").and_then(Value::as_str),
        ) && !owner.is_empty()
            && owner != path
        {
            return Err(refuse(
                "account",
                format!(
                    "order {order_id} belongs to account {}, not {}: a modification stays on its \
                     order's account",
                    crate::audit::mask_account(owner),
                    crate::audit::mask_account(path)
                ),
            ));
        }
        Ok(Some(status))
    }

    /// Takes `n` slots of the per-minute limit, atomically, or refuses.
    fn reserve(&self, n: usize) -> Result<Option<Reservation<'_>>, Refusal> {
        let Some(max) = self.limits.max_orders_per_minute else {
            return Ok(None);
        };
        let window = Duration::from_secs(60);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= window)
        {
            recent.pop_front();
        }
        if recent.len() + n > max as usize {
            let wait = recent.front().map_or(window, |(t, _)| {
                window.saturating_sub(now.duration_since(*t))
            });
            return Err(refuse(
                "rate",
                format!(
                    "this server allows {max} orders per minute and {} were sent or are being \
                     sent in the last minute; try again in {} s. The user sets the limit with \
                     --max-orders-per-minute (IBKR_MCP_MAX_ORDERS_PER_MINUTE).",
                    recent.len(),
                    wait.as_secs() + 1
                ),
            ));
        }
        let id = self.next_slot.fetch_add(1, Ordering::Relaxed);
        recent.extend(std::iter::repeat_n((now, id), n));
        Ok(Some(Reservation {
            policy: self,
            id,
            kept: false,
        }))
    }

    async fn check_order(
        &self,
        order: &Map<String, Value>,
        existing: Option<&Map<String, Value>>,
        client: &Client,
        looked_up: &mut Lookups,
    ) -> Result<(), Refusal> {
        // A modification that leaves the quantity out keeps the order's.
        let quantity = order.get("quantity").and_then(market::number).or_else(|| {
            existing.and_then(|e| {
                ["total_size", "size"]
                    .iter()
                    .find_map(|k| e.get(*k).and_then(market::number))
            })
        });
        if let (Some(e), Some(new)) = (existing, conid_of(order)) {
            let old = e.get("conid").and_then(market::number).map(|c| c as i64);
            if old.is_some_and(|old| old != new) {
                return Err(refuse(
                    "order_shape",
                    format!(
                        "a modification cannot move an order to another contract (conid {} to \
                         {new}); cancel it and place a new order",
                        old.unwrap_or_default()
                    ),
                ));
            }
        }
        self.check_quantity(quantity)?;
        if !self.needs_contract() {
            return Ok(());
        }
        let conid = conid_of(order).ok_or_else(|| {
            refuse(
                "contract",
                "the order has no conid, so this server cannot check its trading limits; give \
                 the conid (find it with search_contracts)",
            )
        })?;
        let facts = match looked_up.facts.get(&conid) {
            Some(f) => f.clone(),
            None => {
                let f = market::contract_facts(client, conid).await.map_err(|e| {
                    lookup_refusal(
                        "contract",
                        &e,
                        "cannot check the trading limits because the contract lookup failed",
                    )
                })?;
                looked_up.facts.insert(conid, f.clone());
                f
            }
        };
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
            let (notional, basis) = if let Some(cash) =
                order.get("cashQty").and_then(market::number)
            {
                (cash.abs(), "its cash quantity".to_string())
            } else {
                let q = quantity.ok_or_else(|| {
                    refuse("notional", "the order has no quantity to value it by")
                })?;
                let Some(multiplier) = facts.multiplier.or_else(|| {
                    (!facts.sec_type.as_deref().is_some_and(is_derivative)).then_some(1.0)
                }) else {
                    return Err(refuse(
                        "notional",
                        format!(
                            "the gateway gives no multiplier for this {} contract, so its value \
                             cannot be checked against the notional limit; it is refused",
                            facts.sec_type.as_deref().unwrap_or("derivative")
                        ),
                    ));
                };
                let buy = order
                    .get("side")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.eq_ignore_ascii_case("BUY"));
                let market_price = match looked_up.prices.get(&(conid, buy)) {
                    Some(p) => *p,
                    None => {
                        let p = market::price_for(client, conid, buy).await.map_err(|e| {
                            lookup_refusal(
                                "notional",
                                &e,
                                "cannot value the order against the notional limit without a \
                                 current price, so it is refused",
                            )
                        })?;
                        looked_up.prices.insert((conid, buy), p);
                        p
                    }
                };
                // The order's own prices; for a modification that leaves one out, the working
                // order's (the gateway keeps it).
                let own = ["price", "auxPrice"]
                    .iter()
                    .filter_map(|k| order.get(*k).and_then(market::number));
                let kept = existing
                    .filter(|_| !(order.contains_key("price") && order.contains_key("auxPrice")))
                    .into_iter()
                    .flat_map(|e| {
                        ["limit_price", "stop_price", "price", "aux_price"]
                            .iter()
                            .filter_map(|k| e.get(*k).and_then(market::number))
                            .collect::<Vec<_>>()
                    });
                let stated = own.chain(kept).filter(|p| *p > 0.0).fold(0.0_f64, f64::max);
                let unit = market_price.max(stated);
                (
                    (q * unit * multiplier).abs(),
                    format!(
                        "{q} × {unit} (the worse of its own price and the market's {market_price}) \
                         × multiplier {multiplier}"
                    ),
                )
            };
            if notional > max {
                return Err(refuse(
                    "notional",
                    format!(
                        "the order is worth {notional:.2} {ccy} ({basis}), above this server's \
                         limit of {max} per order. The user sets it with --max-order-notional \
                         (IBKR_MCP_MAX_ORDER_NOTIONAL)."
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether a limit needs the contract (its security type, or a price to value it at).
    fn needs_contract(&self) -> bool {
        !self.limits.sec_types.is_empty() || self.limits.max_notional.is_some()
    }

    fn check_quantity(&self, quantity: Option<f64>) -> Result<(), Refusal> {
        match (self.limits.max_quantity, quantity) {
            (Some(max), Some(q)) if q.abs() > max => Err(refuse(
                "quantity",
                format!(
                    "the order's quantity {q} is above this server's limit of {max} per order. \
                     The user sets it with --max-order-quantity (IBKR_MCP_MAX_ORDER_QUANTITY)."
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Forgets every preview token (the kill switch was thrown).
    pub fn clear_previews(&self) {
        self.previews
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// A token for a successful preview of these orders on this account.
    pub fn issue_preview_token(&self, operation_id: &str, args: &Map<String, Value>) -> String {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut previews = self.previews.lock().unwrap_or_else(|p| p.into_inner());
        previews.retain(|_, p| p.expires > Instant::now());
        previews.insert(
            token.clone(),
            Preview {
                key: order_key(operation_id, args),
                expires: Instant::now() + self.limits.preview_ttl,
            },
        );
        token
    }

    /// Uses up `token` for the orders of a place or modify call (without the token itself).
    pub fn redeem_preview_token(
        &self,
        token: Option<&str>,
        operation_id: &str,
        args: &Map<String, Value>,
    ) -> Result<(), Refusal> {
        self.preview_token(token, operation_id, args, true)
    }

    /// Checks `token` as [`redeem_preview_token`](Self::redeem_preview_token) does, but leaves
    /// a matching token unused: a call that must wait for the human (a live order) checks it
    /// first and uses it up once the human has said yes. A token presented with another order
    /// is used up either way (no probing a token with one order after another).
    pub fn check_preview_token(
        &self,
        token: Option<&str>,
        operation_id: &str,
        args: &Map<String, Value>,
    ) -> Result<(), Refusal> {
        self.preview_token(token, operation_id, args, false)
    }

    fn preview_token(
        &self,
        token: Option<&str>,
        operation_id: &str,
        args: &Map<String, Value>,
        consume: bool,
    ) -> Result<(), Refusal> {
        let Some(token) = token else {
            return Err(refuse(
                "preview",
                "this server requires a preview first: call get_order_preview with the same \
                 accountId and the order (as body.orders), then pass the previewToken it returns",
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
        if p.key != order_key(operation_id, args) {
            return Err(refuse(
                "preview",
                "the order differs from the one that was previewed with that token; preview \
                 exactly the order you want to send (the token is now used up)",
            ));
        }
        if !consume {
            previews.insert(token.to_string(), p);
        }
        Ok(())
    }
}

impl hooks::Guard for Policy {
    fn covers(&self, operation_id: &str) -> bool {
        self.writes.contains(operation_id) || ORDER_WRITES.contains(&operation_id)
    }

    fn check(&self, request: &Outgoing<'_>) -> Result<(), hooks::Refusal> {
        let to_hooks = |r: Refusal| hooks::Refusal::Policy {
            rule: r.rule,
            message: r.message,
        };
        // Cancelling stays possible (the kill switch itself cancels working orders).
        if request.operation_id != CANCEL_ORDER {
            self.check_halt().map_err(to_hooks)?;
        }
        self.check_accounts(&accounts_in_request(request.path_params, request.body))
            .map_err(to_hooks)
    }

    fn learns_from(&self, operation_id: &str) -> bool {
        operation_id == ISERVER_ACCOUNTS || operation_id == PORTFOLIO_ACCOUNTS
    }

    fn learn(&self, operation_id: &str, body: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        if operation_id == ISERVER_ACCOUNTS {
            self.book.learn_iserver(&v);
        } else {
            self.book.learn_portfolio(&v);
        }
    }
}

/// The largest |ratio| of a combo's legs (`28812380;;;265598/1,272093/-2` → 2); 1 for a
/// single contract or a leg list that does not parse (the gateway refuses those).
fn combo_ratio(order: &Map<String, Value>) -> f64 {
    order
        .get("conidex")
        .and_then(Value::as_str)
        .and_then(|x| x.split_once(";;;"))
        .map(|(_, legs)| {
            legs.split(',')
                .filter_map(|leg| leg.split_once('/')?.1.trim().parse::<f64>().ok())
                .map(f64::abs)
                .fold(1.0, f64::max)
        })
        .unwrap_or(1.0)
}

/// The order-ticket shapes that would make the limits check something else than what IBKR
/// executes: both `cashQty` and `quantity`, or a `conidex` whose contract is not `conid`.
fn check_shape(order: &Map<String, Value>, limited: bool) -> Result<(), Refusal> {
    let conidex = order.get("conidex").and_then(Value::as_str).unwrap_or("");
    if limited && conidex.contains(';') {
        return Err(refuse(
            "order_shape",
            "a combination order (legs in its conidex) cannot be checked against this server's \
             security-type and notional limits, so it is refused while they are set",
        ));
    }
    if order.get("cashQty").is_some_and(|v| !v.is_null())
        && order.get("quantity").is_some_and(|v| !v.is_null())
    {
        return Err(refuse(
            "order_shape",
            "the order has both cashQty and quantity; give one of them (quantity in shares or \
             contracts, or cashQty as an amount of cash)",
        ));
    }
    let conid = order
        .get("conid")
        .and_then(market::number)
        .map(|c| c as i64);
    let from_conidex = order.get("conidex").and_then(Value::as_str).map(|s| {
        s.split(['@', ':', ';'])
            .next()
            .unwrap_or("")
            .trim()
            .parse::<i64>()
    });
    match (conid, from_conidex) {
        (None, None) => Err(refuse(
            "order_shape",
            "the order names no contract: give conid (or conidex for a combo)",
        )),
        (_, Some(Err(_))) => Err(refuse(
            "order_shape",
            "the order's conidex does not start with a conid (`<conid>` or `<conid>@<exchange>`); \
             give conid instead",
        )),
        (Some(a), Some(Ok(b))) if a != b => Err(refuse(
            "order_shape",
            format!("the order names two contracts: conid {a} and conidex {b}; give one of them"),
        )),
        _ => Ok(()),
    }
}

fn push_account(out: &mut Vec<String>, s: &str) {
    if !s.is_empty() && !out.iter().any(|a| a == s) {
        out.push(s.to_string());
    }
}

/// Every account id in a request body: `acctId`/`accountId` at any depth (order tickets),
/// `acctIds` lists, and the members of an allocation group (`accounts`: names or objects with
/// `name`).
fn accounts_in_body(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("acctId" | "accountId", Value::String(s)) => push_account(out, s),
                    ("acctIds" | "accounts", Value::Array(list)) => {
                        for item in list {
                            match item {
                                Value::String(s) => push_account(out, s),
                                Value::Object(o) => {
                                    if let Some(Value::String(s)) = o.get("name") {
                                        push_account(out, s);
                                    }
                                    accounts_in_body(item, out);
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => accounts_in_body(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| accounts_in_body(x, out)),
        _ => {}
    }
}

/// Every account id of a final request: the `accountId` path parameter, then the body's.
pub fn accounts_in_request(path_params: &[(String, String)], body: Option<&Value>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in path_params {
        if name == "accountId" || name == "acctId" {
            push_account(&mut out, value);
        }
    }
    if let Some(b) = body {
        accounts_in_body(b, &mut out);
    }
    out
}

/// Every account id in a tool call's arguments (top-level `accountId`/`acctId`, and the body's).
pub fn accounts_in(args: &Map<String, Value>) -> Vec<String> {
    let params: Vec<(String, String)> = ["accountId", "acctId"]
        .iter()
        .filter_map(|k| match args.get(*k) {
            Some(Value::String(s)) => Some((k.to_string(), s.clone())),
            _ => None,
        })
        .collect();
    accounts_in_request(&params, args.get("body"))
}

/// The orders of a place or preview (`body.orders`) or modify (`body`) call.
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
        .and_then(|s| s.split(['@', ':', ';']).next())
        .and_then(|s| s.trim().parse().ok())
}

/// What a preview token is bound to: the account and the orders, whether they are previewed,
/// placed or sent as a modification.
fn order_key(_operation_id: &str, args: &Map<String, Value>) -> String {
    let mut key = Map::new();
    key.insert(
        "accountId".into(),
        args.get("accountId").cloned().unwrap_or(Value::Null),
    );
    key.insert(
        "orders".into(),
        Value::Array(orders_in(args).into_iter().map(Value::Object).collect()),
    );
    fingerprint(&key)
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
    fn accounts_are_found_in_path_body_orders_and_groups() {
        let a = obj(
            json!({"accountId": "DU1", "body": {"acctId": "U2", "orders": [{"acctId": "DU3"}, {"acctId": "DU1"}]}}),
        );
        assert_eq!(accounts_in(&a), vec!["DU1", "U2", "DU3"]);
        let group = json!({"name": "G", "accounts": [{"name": "U9", "amount": 1}, "U8"], "default_method": "N"});
        assert_eq!(accounts_in_request(&[], Some(&group)), vec!["U9", "U8"]);
    }

    #[test]
    fn paper_is_what_the_login_says_not_the_id_prefix() {
        let p = Policy::new(Limits::default(), Vec::new(), None);
        assert!(!p.is_paper("DU1234567"), "unknown ids are live");
        p.book()
            .learn_iserver(&json!({"accounts": ["DU1234567", "GROUP1"], "isPaper": true}));
        assert!(p.is_paper("DU1234567") && p.is_paper("GROUP1"));
        assert!(!p.is_paper("DUMMY") && !p.is_paper("DU_GROUP"));
        let live = Policy::new(Limits::default(), Vec::new(), None);
        live.book()
            .learn_iserver(&json!({"accounts": ["DU_GROUP", "U1"], "isPaper": false}));
        assert!(!live.is_paper("DU_GROUP"));
        assert_eq!(
            live.check_accounts(&["DU_GROUP".into()]).unwrap_err().rule,
            "live_account"
        );
        let old = Policy::new(Limits::default(), Vec::new(), None);
        old.book()
            .learn_iserver(&json!({"accounts": ["DU1", "U2"]}));
        assert!(old.book().needs_portfolio());
        old.book().learn_portfolio(
            &json!([{"accountId": "DU1", "type": "DEMO"}, {"accountId": "U2", "type": "INDIVIDUAL"}]),
        );
        assert!(old.is_paper("DU1") && !old.is_paper("U2"));
    }

    #[test]
    fn order_shapes_that_hide_the_real_order_are_refused() {
        let both = obj(json!({"conid": 5, "quantity": 1, "cashQty": 100}));
        assert_eq!(check_shape(&both, false).unwrap_err().rule, "order_shape");
        let two = obj(json!({"conid": 5, "conidex": "6@SMART", "quantity": 1}));
        assert!(
            check_shape(&two, false)
                .unwrap_err()
                .message
                .contains("two contracts")
        );
        let same = obj(json!({"conid": 5, "conidex": "5@SMART", "quantity": 1}));
        check_shape(&same, false).unwrap();
        check_shape(&obj(json!({"conidex": "5", "quantity": 1})), false).unwrap();
        let neither = obj(json!({"quantity": 1, "side": "BUY"}));
        assert_eq!(
            check_shape(&neither, false).unwrap_err().rule,
            "order_shape"
        );
        assert_eq!(
            combo_ratio(&obj(json!({"conidex": "28812380;;;1/1,2/-500"}))),
            500.0
        );
        assert_eq!(combo_ratio(&obj(json!({"conid": 5}))), 1.0);
        let bad = obj(json!({"conidex": "x;;;y", "quantity": 1}));
        assert!(check_shape(&bad, false).is_err());
        let combo = obj(json!({"conid": 28812380, "conidex": "28812380;;;265598/100,272093/-100"}));
        check_shape(&combo, false).unwrap();
        assert!(
            check_shape(&combo, true)
                .unwrap_err()
                .message
                .contains("combination")
        );
    }

    #[test]
    fn reservations_are_atomic_and_given_back_when_not_kept() {
        let p = Policy::new(
            Limits {
                max_orders_per_minute: Some(2),
                ..Limits::default()
            },
            Vec::new(),
            None,
        );
        let a = p.reserve(1).unwrap().unwrap();
        let b = p.reserve(1).unwrap().unwrap();
        assert_eq!(p.reserve(1).unwrap_err().rule, "rate");
        drop(b); // nothing was sent
        let c = p.reserve(1).unwrap().unwrap();
        a.keep();
        c.keep();
        assert_eq!(p.reserve(1).unwrap_err().rule, "rate");
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
        let p = Policy::new(
            Limits {
                require_preview: true,
                preview_ttl: Duration::from_millis(200),
                ..Limits::default()
            },
            Vec::new(),
            None,
        );
        let order =
            obj(json!({"accountId": "DU1", "body": {"orders": [{"conid": 5, "quantity": 1}]}}));
        let other =
            obj(json!({"accountId": "DU1", "body": {"orders": [{"conid": 5, "quantity": 9}]}}));
        assert_eq!(
            p.redeem_preview_token(None, PLACE_ORDERS, &order)
                .unwrap_err()
                .rule,
            "preview"
        );
        let t = p.issue_preview_token(PREVIEW_ORDERS, &order);
        p.redeem_preview_token(Some(&t), PLACE_ORDERS, &order)
            .unwrap();
        assert!(
            p.redeem_preview_token(Some(&t), PLACE_ORDERS, &order)
                .is_err(),
            "single use"
        );
        let t = p.issue_preview_token(PREVIEW_ORDERS, &order);
        assert!(
            p.redeem_preview_token(Some(&t), PLACE_ORDERS, &other)
                .unwrap_err()
                .message
                .contains("differs")
        );
        // A check leaves a matching token for the redemption after the human's yes; a check
        // with another order uses it up.
        let t = p.issue_preview_token(PREVIEW_ORDERS, &order);
        p.check_preview_token(Some(&t), PLACE_ORDERS, &order)
            .unwrap();
        p.check_preview_token(Some(&t), PLACE_ORDERS, &order)
            .unwrap();
        p.redeem_preview_token(Some(&t), PLACE_ORDERS, &order)
            .unwrap();
        assert!(
            p.check_preview_token(Some(&t), PLACE_ORDERS, &order)
                .is_err()
        );
        let t = p.issue_preview_token(PREVIEW_ORDERS, &order);
        assert!(
            p.check_preview_token(Some(&t), PLACE_ORDERS, &other)
                .is_err()
        );
        assert!(
            p.redeem_preview_token(Some(&t), PLACE_ORDERS, &order)
                .is_err()
        );
        // A modification to the previewed order redeems the same token.
        let modify =
            obj(json!({"accountId": "DU1", "orderId": "7", "body": {"conid": 5, "quantity": 1}}));
        let t = p.issue_preview_token(PREVIEW_ORDERS, &order);
        p.redeem_preview_token(Some(&t), MODIFY_ORDER, &modify)
            .unwrap();
        let t = p.issue_preview_token(PREVIEW_ORDERS, &order);
        std::thread::sleep(Duration::from_millis(250));
        assert!(
            p.redeem_preview_token(Some(&t), PLACE_ORDERS, &order)
                .unwrap_err()
                .message
                .contains("expired")
        );
    }
}
