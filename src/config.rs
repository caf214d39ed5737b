//! Configuration of `ibkr-mcp serve`: every flag has an `IBKR_MCP_*` environment variable, a
//! default and help text. [`ServeConfig::validate`] checks what clap cannot, once, at start.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// The log filter of `serve` when `IBKR_MCP_LOG` is not set.
pub const DEFAULT_LOG_FILTER: &str = "ibkr_mcp=info,rmcp=warn,tower_http=warn";

/// MCP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// Streamable HTTP on `--listen`, MCP at `/mcp`.
    Http,
    /// Standard input and output (logs go to standard error).
    Stdio,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for Docker and log collectors).
    Json,
}

/// How the server authenticates to IBKR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Through the Client Portal Gateway, where a human logs in (the default).
    Gateway,
    /// IBKR's first-party OAuth 1.0a, straight to api.ibkr.com: no gateway, no browser login.
    Oauth1,
}

/// `--auth oauth1` inputs (README "Headless: OAuth 1.0a"). Secrets come from the environment
/// or files and are never printed.
#[derive(Debug, Clone, Args)]
pub struct OAuthArgs {
    /// Consumer key, from IBKR's self-service OAuth page.
    #[arg(long, env = "IBKR_MCP_OAUTH_CONSUMER_KEY")]
    pub oauth_consumer_key: Option<String>,
    /// Access token, from IBKR's self-service OAuth page.
    #[arg(long, env = "IBKR_MCP_OAUTH_ACCESS_TOKEN", hide_env_values = true)]
    pub oauth_access_token: Option<Secret>,
    /// File holding the access token (instead of --oauth-access-token).
    #[arg(long, env = "IBKR_MCP_OAUTH_ACCESS_TOKEN_FILE")]
    pub oauth_access_token_file: Option<std::path::PathBuf>,
    /// Access token secret (base64), from IBKR's self-service OAuth page.
    #[arg(
        long,
        env = "IBKR_MCP_OAUTH_ACCESS_TOKEN_SECRET",
        hide_env_values = true
    )]
    pub oauth_access_token_secret: Option<Secret>,
    /// File holding the access token secret (instead of --oauth-access-token-secret).
    #[arg(long, env = "IBKR_MCP_OAUTH_ACCESS_TOKEN_SECRET_FILE")]
    pub oauth_access_token_secret_file: Option<std::path::PathBuf>,
    /// Private signature key (PEM file), whose public half was uploaded to IBKR.
    #[arg(long, env = "IBKR_MCP_OAUTH_SIGNATURE_KEY")]
    pub oauth_signature_key: Option<std::path::PathBuf>,
    /// Private encryption key (PEM file), whose public half was uploaded to IBKR.
    #[arg(long, env = "IBKR_MCP_OAUTH_ENCRYPTION_KEY")]
    pub oauth_encryption_key: Option<std::path::PathBuf>,
    /// Diffie-Hellman prime, hex (or give --oauth-dh-params).
    #[arg(long, env = "IBKR_MCP_OAUTH_DH_PRIME", hide_env_values = true)]
    pub oauth_dh_prime: Option<String>,
    /// `dhparam.pem`, the Diffie-Hellman parameters uploaded to IBKR (or give --oauth-dh-prime).
    #[arg(long, env = "IBKR_MCP_OAUTH_DH_PARAMS")]
    pub oauth_dh_params: Option<std::path::PathBuf>,
    /// Diffie-Hellman generator (default 2, or the one in --oauth-dh-params).
    #[arg(long, env = "IBKR_MCP_OAUTH_DH_GENERATOR")]
    pub oauth_dh_generator: Option<u32>,
    /// OAuth realm: `limited_poa` (`test_realm` only with IBKR's TESTCONS key).
    #[arg(long, env = "IBKR_MCP_OAUTH_REALM", default_value = "limited_poa")]
    pub oauth_realm: String,
}

impl OAuthArgs {
    /// The settings for [`crate::ibkr::oauth::Inputs::load`].
    pub fn settings(&self) -> crate::ibkr::oauth::Settings {
        crate::ibkr::oauth::Settings {
            consumer_key: self.oauth_consumer_key.clone(),
            access_token: self.oauth_access_token.clone(),
            access_token_file: self.oauth_access_token_file.clone(),
            access_token_secret: self.oauth_access_token_secret.clone(),
            access_token_secret_file: self.oauth_access_token_secret_file.clone(),
            signature_key: self.oauth_signature_key.clone(),
            encryption_key: self.oauth_encryption_key.clone(),
            dh_prime: self.oauth_dh_prime.clone(),
            dh_params: self.oauth_dh_params.clone(),
            dh_generator: self.oauth_dh_generator,
            realm: self.oauth_realm.clone(),
        }
    }
}

/// `ibkr-mcp serve` settings.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address for the streamable HTTP transport. Off-loopback addresses need care: see the
    /// README's safety model.
    #[arg(long, env = "IBKR_MCP_LISTEN", default_value = "127.0.0.1:5002")]
    pub listen: SocketAddr,

    /// MCP transport.
    #[arg(long, env = "IBKR_MCP_TRANSPORT", value_enum, default_value_t = Transport::Http)]
    pub transport: Transport,

    /// How to authenticate to IBKR: `gateway` (the Client Portal Gateway, where a human logs
    /// in) or `oauth1` (IBKR's OAuth 1.0a, straight to api.ibkr.com; needs the --oauth-*
    /// settings).
    #[arg(long = "auth", env = "IBKR_MCP_AUTH", value_enum, default_value_t = AuthMode::Gateway)]
    pub auth_mode: AuthMode,

    /// OAuth 1.0a inputs (with `--auth oauth1`).
    #[command(flatten)]
    pub oauth: OAuthArgs,

    /// Base URL of the Client Portal Gateway's REST API, including `/v1/api`. With
    /// `--auth oauth1` the default is IBKR's own, `https://api.ibkr.com/v1/api`.
    #[arg(
        long,
        env = "IBKR_MCP_GATEWAY_URL",
        default_value = crate::ibkr::DEFAULT_GATEWAY_URL
    )]
    pub gateway_url: String,

    /// Accept a self-signed gateway certificate even when the gateway is not on this machine
    /// (it is always accepted for a loopback gateway, whose certificate is self-signed).
    #[arg(long, env = "IBKR_MCP_GATEWAY_INSECURE_TLS", default_value_t = false)]
    pub gateway_insecure_tls: bool,

    /// Where a human logs in to the gateway (shown in "not authenticated" errors). Default: the
    /// gateway URL's origin. Set it when the server reaches the gateway under another name than
    /// the user's browser does (Docker).
    #[arg(long, env = "IBKR_MCP_GATEWAY_LOGIN_URL")]
    pub gateway_login_url: Option<String>,

    /// Seconds to wait for the gateway to answer one request.
    #[arg(long, env = "IBKR_MCP_REQUEST_TIMEOUT", default_value_t = 30)]
    pub request_timeout: u64,

    /// Toolsets to expose, comma-separated: `default` (the task tools), `all`, or ids (tasks,
    /// session, accounts, portfolio, contracts, market_data, orders, alerts, watchlists,
    /// scanner, fyi, portfolio_analyst).
    #[arg(
        long,
        env = "IBKR_MCP_TOOLSETS",
        value_delimiter = ',',
        default_value = "default"
    )]
    pub toolsets: Vec<String>,

    /// Extra tools to expose by name, comma-separated, from toolsets not selected.
    #[arg(long, env = "IBKR_MCP_TOOLS", value_delimiter = ',')]
    pub tools: Vec<String>,

    /// Tools to hide by name, comma-separated (applied last).
    #[arg(long, env = "IBKR_MCP_EXCLUDE_TOOLS", value_delimiter = ',')]
    pub exclude_tools: Vec<String>,

    /// Expose and allow tools that change anything: orders, alerts, watchlists, allocation
    /// groups, settings, logout. Off by default: the server only reads.
    #[arg(long, env = "IBKR_MCP_ALLOW_TRADING", default_value_t = false)]
    pub allow_trading: bool,

    /// Largest tool result (compact JSON bytes) before arrays are cut, with a note.
    #[arg(long, env = "IBKR_MCP_MAX_RESULT_BYTES", default_value_t = 64_000)]
    pub max_result_bytes: usize,

    /// Host names (or host:port) accepted in the `Host` header of HTTP requests, comma-separated
    /// (protection against DNS rebinding). Add the service name behind Docker or a proxy.
    #[arg(
        long,
        env = "IBKR_MCP_ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,::1"
    )]
    pub allowed_hosts: Vec<String>,

    /// Also allow orders on live (non-paper) accounts. An account is paper only when the login
    /// says so (`/iserver/accounts` isPaper, or type DEMO in `/portfolio/accounts`); every other
    /// id is treated as live. Needs --allow-trading.
    #[arg(long, env = "IBKR_MCP_ALLOW_LIVE_TRADING", default_value_t = false)]
    pub allow_live_trading: bool,

    /// Accounts that write tools may act on, comma-separated (empty: any paper account, and
    /// live accounts too with --allow-live-trading).
    #[arg(long, env = "IBKR_MCP_TRADING_ACCOUNTS", value_delimiter = ',')]
    pub trading_accounts: Vec<String>,

    /// Largest quantity of one order (shares, contracts or units).
    #[arg(long, env = "IBKR_MCP_MAX_ORDER_QUANTITY")]
    pub max_order_quantity: Option<f64>,

    /// Largest notional value of one order (price × quantity × multiplier, in the contract's
    /// currency; market orders are valued at a fresh quote). Orders that cannot be valued are
    /// refused.
    #[arg(long, env = "IBKR_MCP_MAX_ORDER_NOTIONAL")]
    pub max_order_notional: Option<f64>,

    /// Security types orders may be for, comma-separated (e.g. STK,OPT,FUT,CASH; empty: any).
    #[arg(long, env = "IBKR_MCP_ALLOWED_SEC_TYPES", value_delimiter = ',')]
    pub allowed_sec_types: Vec<String>,

    /// Most orders placed or modified per minute, across all clients.
    #[arg(long, env = "IBKR_MCP_MAX_ORDERS_PER_MINUTE")]
    pub max_orders_per_minute: Option<u32>,

    /// Ask the human to confirm every order for a live account, when the MCP client supports
    /// elicitation.
    #[arg(long, env = "IBKR_MCP_CONFIRM_LIVE_ORDERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub confirm_live_orders: bool,

    /// Require a preview first: place_orders then needs the `previewToken` that
    /// get_order_preview returned for exactly the same order (single use).
    #[arg(long, env = "IBKR_MCP_REQUIRE_PREVIEW", default_value_t = false)]
    pub require_preview: bool,

    /// Seconds a preview token stays valid.
    #[arg(long, env = "IBKR_MCP_PREVIEW_TTL", default_value_t = 120)]
    pub preview_ttl: u64,

    /// Append-only JSON Lines record of every write attempt (an intent line before anything is
    /// sent, then the policy decision and gateway result; masked account ids). Default:
    /// $XDG_STATE_HOME/ibkr-mcp/audit.jsonl, else ~/.local/state/ibkr-mcp/audit.jsonl. With
    /// --allow-trading the server does not start when it cannot write there.
    #[arg(long, env = "IBKR_MCP_AUDIT_LOG")]
    pub audit_log: Option<std::path::PathBuf>,

    /// The kill switch file: while it exists, every tool that changes anything is refused and
    /// no order, modification or question reply leaves the server. `ibkr-mcp halt` creates it
    /// (with --cancel-orders, the server also cancels working orders), `ibkr-mcp resume`
    /// removes it; no tool can. Default: $XDG_STATE_HOME/ibkr-mcp/HALT, else
    /// ~/.local/state/ibkr-mcp/HALT.
    #[arg(long, env = "IBKR_MCP_KILL_SWITCH_FILE")]
    pub kill_switch_file: Option<std::path::PathBuf>,

    /// Serve the tools that suppress IBKR's order questions for the session (and reset that).
    /// Off: a model cannot switch off the warnings a person confirms; the user can still
    /// suppress chosen ids at start with --suppress-question-ids.
    #[arg(
        long,
        env = "IBKR_MCP_ALLOW_QUESTION_SUPPRESSION",
        default_value_t = false
    )]
    pub allow_question_suppression: bool,

    /// Bearer token MCP clients must send (`Authorization: Bearer ...`), at least 32
    /// characters. Required to listen on a non-loopback address.
    #[arg(long, env = "IBKR_MCP_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<Secret>,

    /// Listen on a non-loopback address without a token. Anyone who can reach the port can
    /// then use every exposed tool; a warning is logged at every start.
    #[arg(long, env = "IBKR_MCP_INSECURE_NO_AUTH", default_value_t = false)]
    pub insecure_no_auth: bool,

    /// Browser origins allowed to call the MCP endpoint, comma-separated (e.g.
    /// http://localhost:6274 for the Inspector's web UI). Requests with any other `Origin`
    /// header are refused; requests without one (non-browser clients) pass.
    #[arg(long, env = "IBKR_MCP_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Largest HTTP request body, in bytes.
    #[arg(long, env = "IBKR_MCP_MAX_REQUEST_BYTES", default_value_t = 1_048_576)]
    pub max_request_bytes: usize,

    /// Seconds a client has to send a request's headers, and then its body.
    #[arg(long, env = "IBKR_MCP_CLIENT_TIMEOUT", default_value_t = 30)]
    pub client_timeout: u64,

    /// Most MCP sessions (streamable HTTP, protocol versions before 2026-07-28) alive at once;
    /// an `initialize` beyond it is refused with HTTP 503 until sessions close or expire.
    #[arg(long, env = "IBKR_MCP_MAX_SESSIONS", default_value_t = 64)]
    pub max_sessions: usize,

    /// Seconds an MCP session may stay idle before it is closed (its client then starts a new
    /// one).
    #[arg(long, env = "IBKR_MCP_SESSION_IDLE_TIMEOUT", default_value_t = 120)]
    pub session_idle_timeout: u64,

    /// Keep the gateway session alive and usable: tickle, open the brokerage session when it
    /// lapses (ssodh/init), check it before tools that need it. Turn off only when something
    /// else manages the session.
    #[arg(long, env = "IBKR_MCP_SESSION_KEEPALIVE", default_value_t = true, action = clap::ArgAction::Set)]
    pub session_keepalive: bool,

    /// Seconds between tickles while the session is ready (IBKR times sessions out after about
    /// 6 minutes without requests).
    #[arg(long, env = "IBKR_MCP_TICKLE_INTERVAL", default_value_t = 60)]
    pub tickle_interval: u64,

    /// Take the brokerage session over from a competing session (TWS, the mobile app, another
    /// gateway) automatically. Off: a competing session is reported, not fought over.
    #[arg(long, env = "IBKR_MCP_TAKE_OVER_COMPETING", default_value_t = false)]
    pub take_over_competing: bool,

    /// Order-question message ids to suppress at the start of every brokerage session
    /// (`/iserver/questions/suppress`), comma-separated, e.g. o163,o354.
    #[arg(long, env = "IBKR_MCP_SUPPRESS_QUESTION_IDS", value_delimiter = ',')]
    pub suppress_question_ids: Vec<String>,

    /// Order-question message ids this server confirms by itself, comma-separated. Any other
    /// question goes to the human (elicitation) or back to the model for an explicit confirm.
    #[arg(
        long,
        env = "IBKR_MCP_AUTO_CONFIRM_QUESTION_IDS",
        value_delimiter = ','
    )]
    pub auto_confirm_question_ids: Vec<String>,

    /// Most question/reply rounds for one order before giving up.
    #[arg(long, env = "IBKR_MCP_MAX_QUESTION_ROUNDS", default_value_t = 8)]
    pub max_question_rounds: u32,

    /// Pace requests to IBKR's documented rate limits on this side (recommended: IBKR answers
    /// violations with 429 and may block the IP).
    #[arg(long, env = "IBKR_MCP_PACING", default_value_t = true, action = clap::ArgAction::Set)]
    pub pacing: bool,

    /// Seconds a request may wait for its turn under the rate limits before it is refused
    /// with the time to retry.
    #[arg(long, env = "IBKR_MCP_PACING_MAX_WAIT", default_value_t = 5)]
    pub pacing_max_wait: u64,

    /// Retries of read-only requests after a connection error or a 5xx answer (never of
    /// anything that places, changes or cancels an order).
    #[arg(long, env = "IBKR_MCP_READ_RETRIES", default_value_t = 2)]
    pub read_retries: u32,

    /// Seconds the quote tool keeps asking while the gateway warms up a market data
    /// subscription (its first answer for a contract carries no values).
    #[arg(long, env = "IBKR_MCP_SNAPSHOT_WAIT", default_value_t = 5)]
    pub snapshot_wait: u64,

    /// Live events over IBKR's WebSocket: subscriptions to ibkr://orders, ibkr://trades,
    /// ibkr://pnl, ibkr://account/{id}/summary and ibkr://quote/{symbol}, and the waiting tools
    /// (wait_for_order_update, wait_for_price). Off: resources are read over REST only.
    #[arg(long, env = "IBKR_MCP_LIVE", default_value_t = true, action = clap::ArgAction::Set)]
    pub live: bool,

    /// Milliseconds between two notifications about one subscribed resource: changes in
    /// between are folded into the next one (reading the resource gives the latest state).
    #[arg(long, env = "IBKR_MCP_LIVE_COALESCE_MS", default_value_t = 250)]
    pub live_coalesce_ms: u64,

    /// Most quotes streamed at once, however many clients subscribe to each; keep it within
    /// the account's market data lines. A subscription beyond it is refused with the reason.
    #[arg(long, env = "IBKR_MCP_LIVE_MAX_QUOTES", default_value_t = 50)]
    pub live_max_quotes: usize,

    /// Demo mode: start the built-in gateway simulator (seeded paper accounts, moving prices,
    /// IBKR's order questions) in this process and serve against it instead of a real gateway.
    /// Needs no IBKR account; --gateway-url is ignored.
    #[arg(long, env = "IBKR_MCP_DEMO", default_value_t = false)]
    pub demo: bool,

    /// Seed of the demo simulator (same seed and requests, same prices).
    #[arg(long, env = "IBKR_MCP_DEMO_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Log format.
    #[arg(long, env = "IBKR_MCP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "IBKR_MCP_LOG", default_value = DEFAULT_LOG_FILTER)]
    pub log: String,
}

impl ServeConfig {
    /// Checks settings clap cannot check, with messages that name the setting.
    pub fn validate(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.gateway_url).map_err(|e| {
            format!(
                "--gateway-url (IBKR_MCP_GATEWAY_URL) `{}` is not a URL: {e}",
                self.gateway_url
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "--gateway-url (IBKR_MCP_GATEWAY_URL) must be http or https, not `{}`",
                url.scheme()
            ));
        }
        if let Some(login) = &self.gateway_login_url {
            reqwest::Url::parse(login).map_err(|e| {
                format!("--gateway-login-url (IBKR_MCP_GATEWAY_LOGIN_URL) `{login}`: {e}")
            })?;
        }
        if self.request_timeout == 0 {
            return Err("--request-timeout (IBKR_MCP_REQUEST_TIMEOUT) must be at least 1".into());
        }
        if self.max_result_bytes < 1024 {
            return Err(
                "--max-result-bytes (IBKR_MCP_MAX_RESULT_BYTES) must be at least 1024".into(),
            );
        }
        if let Some(t) = &self.auth_token
            && t.expose().chars().count() < 32
        {
            return Err(
                "IBKR_MCP_AUTH_TOKEN (--auth-token) must be at least 32 characters; generate \
                 one with e.g. `openssl rand -hex 32`"
                    .into(),
            );
        }
        if self.transport == Transport::Http
            && !self.listen.ip().is_loopback()
            && self.auth_token.is_none()
            && !self.insecure_no_auth
        {
            return Err(format!(
                "refusing to listen on {} without a token: anyone who can reach that address \
                 could use this server. Set IBKR_MCP_AUTH_TOKEN (at least 32 characters) and send \
                 it as `Authorization: Bearer <token>`, or listen on 127.0.0.1, or accept the risk \
                 with --insecure-no-auth (IBKR_MCP_INSECURE_NO_AUTH=true)",
                self.listen
            ));
        }
        if self.allow_live_trading && !self.allow_trading {
            return Err(
                "--allow-live-trading (IBKR_MCP_ALLOW_LIVE_TRADING) needs --allow-trading \
                 (IBKR_MCP_ALLOW_TRADING) as well"
                    .into(),
            );
        }
        for (name, v) in [
            (
                "--max-order-quantity (IBKR_MCP_MAX_ORDER_QUANTITY)",
                self.max_order_quantity,
            ),
            (
                "--max-order-notional (IBKR_MCP_MAX_ORDER_NOTIONAL)",
                self.max_order_notional,
            ),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return Err(format!("{name} must be a positive number"));
            }
        }
        if self.max_orders_per_minute == Some(0) {
            return Err(
                "--max-orders-per-minute (IBKR_MCP_MAX_ORDERS_PER_MINUTE) must be at \
                        least 1 (use the read-only default to allow none)"
                    .into(),
            );
        }
        if self.max_sessions == 0 || self.session_idle_timeout == 0 {
            return Err(
                "--max-sessions (IBKR_MCP_MAX_SESSIONS) and --session-idle-timeout \
                 (IBKR_MCP_SESSION_IDLE_TIMEOUT) must be at least 1"
                    .into(),
            );
        }
        if self.allow_question_suppression && !self.allow_trading {
            return Err(
                "--allow-question-suppression (IBKR_MCP_ALLOW_QUESTION_SUPPRESSION) needs \
                 --allow-trading (IBKR_MCP_ALLOW_TRADING) as well"
                    .into(),
            );
        }
        if self.client_timeout == 0 || self.max_request_bytes < 1024 {
            return Err(
                "--client-timeout must be at least 1 s and --max-request-bytes at least \
                        1024"
                    .into(),
            );
        }
        Ok(())
    }

    /// Where the audit log is written.
    pub fn audit_path(&self) -> std::path::PathBuf {
        match &self.audit_log {
            Some(p) => p.clone(),
            None => state_file("audit.jsonl"),
        }
    }

    /// Where the kill switch file is.
    pub fn kill_switch_path(&self) -> std::path::PathBuf {
        kill_switch_path(self.kill_switch_file.as_deref())
    }

    /// Per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout)
    }

    /// Whether the gateway is on this machine (its self-signed certificate is then accepted).
    pub fn gateway_is_loopback(&self) -> bool {
        is_loopback_url(&self.gateway_url)
    }

    /// The settings with defaults that depend on others filled in: with `--auth oauth1` and
    /// no --gateway-url, IBKR's own API URL.
    pub fn resolved(&self) -> Self {
        let mut cfg = self.clone();
        if cfg.auth_mode == AuthMode::Oauth1 && cfg.gateway_url == crate::ibkr::DEFAULT_GATEWAY_URL
        {
            cfg.gateway_url = crate::ibkr::oauth::DEFAULT_OAUTH_URL.to_string();
        }
        cfg
    }

    /// The gateway's login page.
    pub fn login_url(&self) -> String {
        if let Some(u) = &self.gateway_login_url {
            return u.clone();
        }
        match reqwest::Url::parse(&self.gateway_url) {
            Ok(u) => format!("{}/", u.origin().ascii_serialization()),
            Err(_) => self.gateway_url.clone(),
        }
    }
}

/// The README's configuration table (Markdown): every `serve` flag with its variable, default
/// and help text, as clap knows them.
pub fn markdown_table() -> String {
    use clap::CommandFactory as _;
    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        serve: ServeConfig,
    }
    let cmd = Wrapper::command();
    let mut s =
        String::from("| flag | environment variable | default | meaning |\n|---|---|---|---|\n");
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" {
            continue;
        }
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        let default = if defaults.is_empty() {
            "—".to_string()
        } else {
            format!("`{}`", defaults.join(","))
        };
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(|h| h.to_string().replace('\n', " ").replace('|', "\\|"))
            .unwrap_or_default();
        s.push_str(&format!("| `--{long}` | {env} | {default} | {help} |\n"));
    }
    s
}

/// `name` in this server's state folder: $XDG_STATE_HOME/ibkr-mcp, else
/// ~/.local/state/ibkr-mcp, else the working folder (as `ibkr-mcp-<name>`).
pub fn state_file(name: &str) -> std::path::PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state"))
        });
    match state {
        Some(dir) => dir.join("ibkr-mcp").join(name),
        None => std::path::PathBuf::from(format!("ibkr-mcp-{name}")),
    }
}

/// The kill switch file: `explicit`, else `HALT` in the state folder.
pub fn kill_switch_path(explicit: Option<&std::path::Path>) -> std::path::PathBuf {
    explicit.map_or_else(|| state_file("HALT"), std::path::Path::to_path_buf)
}

/// `ibkr-mcp halt` and `ibkr-mcp resume`: where the kill switch file is.
#[derive(Debug, Clone, Args)]
pub struct KillSwitchArgs {
    /// The kill switch file of the server to stop (the same setting as `serve`).
    #[arg(long, env = "IBKR_MCP_KILL_SWITCH_FILE")]
    pub kill_switch_file: Option<std::path::PathBuf>,
}

/// A secret setting: never printed (`Debug` shows `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// `ibkr-mcp sim` settings: a simulated gateway on its own.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Address to listen on (the real gateway's default port is 5000).
    #[arg(long, env = "IBKR_MCP_SIM_LISTEN", default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,

    /// Serve plain HTTP instead of HTTPS with a self-signed certificate (like the real gateway).
    #[arg(long, env = "IBKR_MCP_SIM_PLAIN_HTTP", default_value_t = false)]
    pub plain_http: bool,

    /// Seed for prices and ids.
    #[arg(long, env = "IBKR_MCP_SIM_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Answer 429 when IBKR's documented rate limits are exceeded.
    #[arg(long, env = "IBKR_MCP_SIM_PACING", default_value_t = true, action = clap::ArgAction::Set)]
    pub pacing: bool,

    /// Seconds without requests before the brokerage session times out.
    #[arg(long, env = "IBKR_MCP_SIM_IDLE_TIMEOUT", default_value_t = 360)]
    pub idle_timeout: u64,

    /// Milliseconds between two market steps while something is streamed over the WebSocket
    /// (each step moves every price, so each streamed quote sends an update); IBKR's own pace
    /// is about 500.
    #[arg(long, env = "IBKR_MCP_SIM_WS_UPDATE_MS", default_value_t = 500)]
    pub ws_update_ms: u64,

    /// Play IBKR's OAuth 1.0a host (api.ibkr.com) instead of the gateway, accepting the
    /// credentials in this directory; a new set (consumer key, access token and secret, RSA
    /// keys, DH parameters) is generated there when it has none. `serve --auth oauth1` reads
    /// the same files.
    #[arg(long, env = "IBKR_MCP_SIM_OAUTH_DIR")]
    pub oauth_dir: Option<std::path::PathBuf>,

    /// Lifetime in seconds of the live session tokens the simulator issues (with --oauth-dir).
    #[arg(
        long,
        env = "IBKR_MCP_SIM_OAUTH_TOKEN_LIFETIME",
        default_value_t = 86_400
    )]
    pub oauth_token_lifetime: u64,

    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "IBKR_MCP_LOG", default_value = "ibkr_sim=info")]
    pub log: String,
}

/// Whether `url`'s host is `localhost` or a loopback address.
pub fn is_loopback_url(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        c: ServeConfig,
    }

    fn parse(args: &[&str]) -> ServeConfig {
        let mut v = vec!["t"];
        v.extend_from_slice(args);
        T::try_parse_from(v).expect("parses").c
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = parse(&[]);
        assert_eq!(c.listen.to_string(), "127.0.0.1:5002");
        assert_eq!(c.gateway_url, "https://localhost:5000/v1/api");
        assert_eq!(c.toolsets, vec!["default"]);
        assert!(!c.allow_trading);
        assert_eq!(c.login_url(), "https://localhost:5000/");
        assert!(c.gateway_is_loopback());
        c.validate().unwrap();
    }

    #[test]
    fn lists_split_on_commas() {
        let c = parse(&["--toolsets", "orders,alerts", "--exclude-tools", "a,b"]);
        assert_eq!(c.toolsets, vec!["orders", "alerts"]);
        assert_eq!(c.exclude_tools, vec!["a", "b"]);
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback_url("https://127.0.0.1:5000/v1/api"));
        assert!(is_loopback_url("https://[::1]:5000/v1/api"));
        assert!(is_loopback_url("https://LOCALHOST:5000"));
        assert!(!is_loopback_url("https://gateway:5000/v1/api"));
        assert!(!is_loopback_url("https://10.0.0.2/v1/api"));
    }

    #[test]
    fn off_loopback_without_a_token_refuses_to_start() {
        let c = parse(&["--listen", "0.0.0.0:5002"]);
        let e = c.validate().unwrap_err();
        assert!(
            e.contains("IBKR_MCP_AUTH_TOKEN") && e.contains("--insecure-no-auth"),
            "{e}"
        );
        parse(&["--listen", "0.0.0.0:5002", "--insecure-no-auth"])
            .validate()
            .unwrap();
        let short = parse(&["--listen", "0.0.0.0:5002", "--auth-token", "short"]);
        assert!(short.validate().unwrap_err().contains("at least 32"));
        let ok = parse(&["--listen", "0.0.0.0:5002", "--auth-token", &"x".repeat(32)]);
        ok.validate().unwrap();
        assert!(
            !format!("{ok:?}").contains(&"x".repeat(32)),
            "the token is never printed"
        );
    }

    #[test]
    fn live_trading_needs_trading_and_limits_must_be_positive() {
        assert!(parse(&["--allow-live-trading"]).validate().is_err());
        parse(&["--allow-live-trading", "--allow-trading"])
            .validate()
            .unwrap();
        assert!(parse(&["--max-order-notional=-5"]).validate().is_err());
        assert!(parse(&["--max-orders-per-minute", "0"]).validate().is_err());
    }

    #[test]
    fn bad_gateway_url_names_the_setting() {
        let c = parse(&["--gateway-url", "ftp://x"]);
        assert!(c.validate().unwrap_err().contains("IBKR_MCP_GATEWAY_URL"));
    }
}
