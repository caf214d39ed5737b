//! The generated IBKR Web API client and how we build it.
//!
//! `generated` is progenitor's output for the repaired document (see `build.rs`); nothing in it
//! is edited by hand. Its error responses are deliberately untyped: any non-2xx status comes
//! back as [`progenitor_client::Error::UnexpectedResponse`] with the whole response, so IBKR's
//! own error text is never lost.

use std::time::Duration;

pub mod gateway;
pub mod hooks;
pub mod market;
pub mod oauth;
pub mod pacing;
pub mod session;

/// progenitor's output. Lints are silenced here only: the code is generated and IBKR's prose
/// (doc comments) is not ours to fix.
#[allow(warnings, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/ibkr_api.rs"));
}

pub use gateway::{LookupError, ops};
pub use generated::Client;

/// One operation of the generated client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneratedOperation {
    /// operationId in the repaired document.
    pub operation_id: &'static str,
    /// Upper-case HTTP method.
    pub method: &'static str,
    /// Path template, relative to the base URL (`/v1/api` on the gateway).
    pub path: &'static str,
    /// Name of the [`Client`] method.
    pub rust_method: &'static str,
    /// Generated success type (`types::X`, `()` or `ByteStream`).
    pub response_type: &'static str,
}

/// The table of generated operations and typed decoding, written by `build.rs`.
pub mod operations {
    use super::GeneratedOperation;
    include!(concat!(env!("OUT_DIR"), "/operations.rs"));

    /// The path template of `operation_id`.
    pub fn template(operation_id: &str) -> Option<&'static str> {
        static BY_ID: std::sync::LazyLock<std::collections::HashMap<&'static str, &'static str>> =
            std::sync::LazyLock::new(|| {
                OPERATIONS
                    .iter()
                    .map(|op| (op.operation_id, op.path))
                    .collect()
            });
        BY_ID.get(operation_id).copied()
    }

    /// Looks an operation up by HTTP method and path template (parameter names ignored).
    pub fn find(method: &str, path: &str) -> Option<&'static GeneratedOperation> {
        let key = crate::spec::normalize_template(path);
        OPERATIONS.iter().find(|op| {
            op.method.eq_ignore_ascii_case(method)
                && crate::spec::normalize_template(op.path) == key
        })
    }
}

/// The gateway's default base URL: the Client Portal Gateway on this machine.
pub const DEFAULT_GATEWAY_URL: &str = "https://localhost:5000/v1/api";

/// Options for [`build_client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// What runs around every request (pacing, logging, raw-reply capture).
    pub hooks: hooks::Hooks,
    /// Base URL including the `/v1/api` prefix.
    pub base_url: String,
    /// Accept a self-signed certificate (the gateway's own).
    pub accept_invalid_certs: bool,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            hooks: hooks::Hooks::default(),
            base_url: DEFAULT_GATEWAY_URL.to_string(),
            accept_invalid_certs: false,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The `reqwest` client under the generated one (and the OAuth token requests): a user agent
/// naming us (IBKR's edge refuses requests without one), timeouts, and the gateway's self-signed
/// certificate accepted only when asked.
pub fn http_client(opts: &ClientOptions) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!(
            env!("CARGO_PKG_NAME"),
            "/",
            env!("CARGO_PKG_VERSION")
        ))
        .connect_timeout(Duration::from_secs(5).min(opts.timeout))
        .timeout(opts.timeout)
        .tls_danger_accept_invalid_certs(opts.accept_invalid_certs)
        .build()
}

/// Builds the generated client over our own `reqwest` client: cookie-less (the gateway holds
/// the session), a user agent naming us, timeouts, and the gateway's self-signed certificate
/// accepted only when asked.
pub fn build_client(opts: &ClientOptions) -> Result<Client, reqwest::Error> {
    let http = http_client(opts)?;
    let base = opts.base_url.trim_end_matches('/');
    let base_path = reqwest::Url::parse(base)
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default();
    Ok(Client::new_with_client(
        base,
        http,
        opts.hooks.clone().with_base_path(base_path),
    ))
}

/// `GET /iserver/accounts`: the login's accounts (IBKR wants it called once per brokerage
/// session before orders). The trading policy learns the paper accounts from the reply.
pub async fn fetch_accounts(client: &Client) -> Result<serde_json::Value, LookupError> {
    gateway::call_json(
        client,
        "list_accounts",
        ops::ACCOUNTS,
        serde_json::json!({}),
    )
    .await
}

/// `GET /portfolio/accounts`: the portfolio accounts (`type: "DEMO"` marks paper accounts).
pub async fn fetch_portfolio_accounts(client: &Client) -> Result<serde_json::Value, LookupError> {
    gateway::call_json(
        client,
        "list_portfolio_accounts",
        ops::PORTFOLIO_ACCOUNTS,
        serde_json::json!({}),
    )
    .await
}

/// `GET /iserver/account/orders?accountId=…`: the live orders of one account (of the selected
/// account when the document has no `accountId` parameter).
pub async fn fetch_live_orders(
    client: &Client,
    account: &str,
) -> Result<serde_json::Value, LookupError> {
    let def = crate::mcp::catalog::all()
        .iter()
        .find(|t| t.operation_id == ops::LIVE_ORDERS.operation_id);
    let args = if def.is_some_and(|d| d.args.iter().any(|a| a.name == "accountId")) {
        serde_json::json!({ "accountId": account })
    } else {
        serde_json::json!({})
    };
    gateway::call_json(client, "list_orders", ops::LIVE_ORDERS, args).await
}

/// `GET /iserver/account/order/status/{order}`: one order as the gateway has it.
pub async fn fetch_order_status(
    client: &Client,
    order: &str,
) -> Result<serde_json::Value, LookupError> {
    gateway::call_json(
        client,
        "get_order_status",
        ops::ORDER_STATUS,
        serde_json::json!({ "orderId": order }),
    )
    .await
}

/// `DELETE /iserver/account/{account}/order/{order}`: asks IBKR to cancel one order (sent
/// once, never retried).
pub async fn cancel_order(
    client: &Client,
    account: &str,
    order: &str,
) -> Result<serde_json::Value, LookupError> {
    gateway::call_json(
        client,
        "cancel_order",
        ops::CANCEL_ORDER,
        serde_json::json!({ "accountId": account, "orderId": order }),
    )
    .await
}

/// What `/readyz` reports: whether the gateway answers and its brokerage session is usable.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    /// Reachable and authenticated.
    pub ready: bool,
    /// The gateway answered.
    pub reachable: bool,
    /// `authenticated` of the auth status.
    pub authenticated: bool,
    /// `connected` of the auth status.
    pub connected: bool,
    /// `competing` of the auth status.
    pub competing: bool,
    /// Why it is not ready, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Asks the gateway for its auth status (`POST /iserver/auth/status`) and reads the flags from
/// the raw reply, whatever shape it has.
pub async fn probe(client: &Client) -> Readiness {
    let mut r = Readiness::default();
    let reply = match gateway::call(client, ops::AUTH_STATUS, serde_json::json!({})).await {
        Ok(reply) => reply,
        Err(e) => {
            r.reason = Some(format!("gateway unreachable: {e}"));
            return r;
        }
    };
    r.reachable = true;
    if reply.status == 401 {
        r.reason = Some("not logged in (HTTP 401): log in at the gateway's page".into());
        return r;
    }
    if !reply.is_success() {
        r.reason = Some(format!("gateway answered HTTP {}", reply.status));
        return r;
    }
    let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
    let flag = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    };
    r.authenticated = flag("authenticated");
    r.connected = flag("connected");
    r.competing = flag("competing");
    r.ready = r.authenticated && !r.competing;
    if !r.ready {
        r.reason = Some(
            if r.competing {
                "another session (TWS, mobile, another gateway) holds the brokerage session"
            } else if r.connected {
                "logged in, but the brokerage session is not authenticated (ssodh/init needed)"
            } else {
                "not logged in: log in at the gateway's page"
            }
            .into(),
        );
    }
    r
}
