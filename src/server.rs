//! `ibkr-mcp serve`: builds the shared state from the configuration and runs a transport.

use std::sync::Arc;

use anyhow::Context as _;
use rmcp::ServiceExt as _;
use tokio_util::sync::CancellationToken;

use crate::config::{ServeConfig, Transport};
use crate::http::{self, HttpOptions};
use crate::ibkr::{ClientOptions, build_client, hooks::Hooks};
use crate::mcp::catalog::{self, Filter, Inventory};
use crate::mcp::{IbkrServer, ServerState, results};

/// Builds the state every handler shares: the gateway client, the tool inventory, settings.
pub fn build_state(cfg: &ServeConfig) -> anyhow::Result<ServerState> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let accept_invalid_certs = cfg.gateway_insecure_tls || cfg.gateway_is_loopback();
    let client = build_client(&ClientOptions {
        hooks: Hooks::new(),
        base_url: cfg.gateway_url.clone(),
        accept_invalid_certs,
        timeout: cfg.timeout(),
    })
    .context("cannot build the HTTP client for the gateway")?;
    let inventory = Inventory::new(
        catalog::all(),
        &Filter {
            allow_trading: cfg.allow_trading,
            toolsets: cfg.toolsets.clone(),
            include: cfg.tools.clone(),
            exclude: cfg.exclude_tools.clone(),
        },
    )
    .map_err(anyhow::Error::msg)?;
    Ok(ServerState {
        client,
        inventory,
        results: results::Context {
            gateway_url: cfg.gateway_url.clone(),
            login_url: cfg.login_url(),
            timeout: cfg.timeout(),
            max_result_bytes: cfg.max_result_bytes,
        },
        allow_trading: cfg.allow_trading,
    })
}

/// Runs the server until it is asked to stop.
pub async fn run(cfg: ServeConfig) -> anyhow::Result<()> {
    let state = Arc::new(build_state(&cfg)?);
    tracing::info!(
        transport = ?cfg.transport,
        gateway = %cfg.gateway_url,
        tools = state.inventory.len(),
        toolsets = %state.inventory.toolsets().join(","),
        allow_trading = cfg.allow_trading,
        "starting ibkr-mcp {}",
        env!("CARGO_PKG_VERSION")
    );
    match cfg.transport {
        Transport::Stdio => {
            let running = IbkrServer::new(state)
                .serve(rmcp::transport::stdio())
                .await
                .context("stdio transport failed to start")?;
            running.waiting().await.context("stdio transport")?;
        }
        Transport::Http => {
            let shutdown = CancellationToken::new();
            let app = http::app(
                state,
                &HttpOptions {
                    allowed_hosts: cfg.allowed_hosts.clone(),
                    shutdown: shutdown.clone(),
                },
            );
            let listener = tokio::net::TcpListener::bind(cfg.listen)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {} (--listen, IBKR_MCP_LISTEN)",
                        cfg.listen
                    )
                })?;
            tracing::info!(
                "MCP endpoint http://{}/mcp",
                listener.local_addr().unwrap_or(cfg.listen)
            );
            axum::serve(listener, app)
                .with_graceful_shutdown(http::shutdown_signal(shutdown))
                .await
                .context("HTTP server")?;
        }
    }
    Ok(())
}
