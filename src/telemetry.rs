//! Logging: `tracing` to standard error (standard output belongs to the stdio transport), text
//! or JSON lines, filtered by `IBKR_MCP_LOG`.
//!
//! Libraries that would print whole messages at `debug`/`trace` (rmcp logs every JSON-RPC
//! message with its tool results; hyper, reqwest and rustls log connection details) are capped
//! at `info` whatever the filter says, so account data and tokens never reach the logs. Our own
//! logs mask account ids and never print headers.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Crates whose debug output carries message bodies or connection secrets.
const CAPPED: &[&str] = &[
    "rmcp",
    "hyper",
    "hyper_util",
    "reqwest",
    "rustls",
    "h2",
    "tower_http",
    // The handshake's trace line holds the session cookie and, with OAuth, the access token.
    "tungstenite",
    "tokio_tungstenite",
];

/// The filter for `IBKR_MCP_LOG`: as given (or `info` when it does not parse), with the noisy
/// libraries capped at `info`.
pub fn filter(text: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_new(text).unwrap_or_else(|e| {
        eprintln!("IBKR_MCP_LOG `{text}` is not a valid filter ({e}); using `info`");
        EnvFilter::new("info")
    });
    for noisy in CAPPED {
        if let Ok(d) = format!("{noisy}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// Installs the global subscriber. Calling it again (tests) is harmless.
pub fn init(filter: &str, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(self::filter(filter))
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
