//! The HTTP side: MCP over streamable HTTP at `/mcp` (and `/mcp/`), `/healthz` (the process is
//! up) and `/readyz` (the gateway is reachable and its brokerage session authenticated).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::mcp::{IbkrServer, ServerState};

/// HTTP settings that are not the MCP server's.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Accepted `Host` header values.
    pub allowed_hosts: Vec<String>,
    /// Cancelled to shut down.
    pub shutdown: CancellationToken,
}

/// The router: MCP, health and readiness.
pub fn app(state: Arc<ServerState>, opts: &HttpOptions) -> Router {
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(opts.allowed_hosts.clone())
        .with_cancellation_token(opts.shutdown.child_token());
    let factory_state = state.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(IbkrServer::new(factory_state.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route_service("/mcp", mcp.clone())
        .route_service("/mcp/", mcp)
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn readyz(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    let readiness = crate::ibkr::probe(&state.client).await;
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(serde_json::to_value(&readiness).unwrap_or_default()),
    )
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM) or `token` is cancelled.
pub async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
        _ = token.cancelled() => {},
    }
    token.cancel();
}
