//! Configuration of `ibkr-mcp serve`: every flag has an `IBKR_MCP_*` environment variable, a
//! default and help text. [`ServeConfig::validate`] checks what clap cannot, once, at start.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

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

    /// Base URL of the Client Portal Gateway's REST API, including `/v1/api`.
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

    /// Toolsets to expose, comma-separated: `default`, `all`, or ids (session, accounts,
    /// portfolio, contracts, market_data, orders, alerts, watchlists, scanner, fyi,
    /// portfolio_analyst).
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

    /// Log format.
    #[arg(long, env = "IBKR_MCP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(
        long,
        env = "IBKR_MCP_LOG",
        default_value = "ibkr_mcp=info,rmcp=warn,tower_http=warn"
    )]
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
        Ok(())
    }

    /// Per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout)
    }

    /// Whether the gateway is on this machine (its self-signed certificate is then accepted).
    pub fn gateway_is_loopback(&self) -> bool {
        is_loopback_url(&self.gateway_url)
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
    fn bad_gateway_url_names_the_setting() {
        let c = parse(&["--gateway-url", "ftp://x"]);
        assert!(c.validate().unwrap_err().contains("IBKR_MCP_GATEWAY_URL"));
    }
}
