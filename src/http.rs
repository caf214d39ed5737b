//! The HTTP side: MCP over streamable HTTP at `/mcp` (and `/mcp/`), `/healthz` (the process is
//! up) and `/readyz` (the gateway is reachable and its brokerage session authenticated).
//!
//! Every request first passes `guard`: the `Host` header must be an allowed host (DNS
//! rebinding protection), an `Origin` header, if present, an allowed origin or the server's own
//! (`http://` + the allowed `Host`), and, when a token is configured, `Authorization: Bearer
//! <token>` must match it (compared in constant time; `/healthz` is exempt so container health
//! checks need no secret). Request bodies are read whole, up to a size limit and within a time
//! limit, and [`serve`] gives clients a time limit for sending headers, so a slow or oversized
//! client cannot tie the server up. A body that is not JSON gets HTTP 400 with a JSON-RPC parse
//! error; an `initialize` beyond `--max-sessions` live sessions gets HTTP 503 with a JSON-RPC
//! error saying so ([`sessions`]); closing a session (`DELETE /mcp`) answers 204.

pub mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::mcp::{IbkrServer, ServerState};

/// HTTP settings that are not the MCP server's.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Accepted `Host` header values (`name` matches any port; `name:port` only that port).
    pub allowed_hosts: Vec<String>,
    /// Accepted `Origin` header values.
    pub allowed_origins: Vec<String>,
    /// Bearer token clients must present, if any.
    pub token: Option<String>,
    /// Largest request body.
    pub max_request_bytes: usize,
    /// Time a client has to send a request body.
    pub client_timeout: Duration,
    /// Most MCP sessions alive at once.
    pub max_sessions: usize,
    /// Idle time after which an MCP session is closed.
    pub session_idle_timeout: Duration,
    /// Cancelled to shut down.
    pub shutdown: CancellationToken,
}

#[derive(Debug)]
struct Guard {
    hosts: Vec<String>,
    origins: Vec<String>,
    token: Option<String>,
    max_body: usize,
    body_timeout: Duration,
    sessions: Arc<sessions::CappedSessions>,
}

/// The router: MCP, health and readiness, behind the guard.
pub fn app(state: Arc<ServerState>, opts: &HttpOptions) -> Router {
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(opts.allowed_hosts.clone())
        .with_max_request_body_bytes(opts.max_request_bytes)
        .with_cancellation_token(opts.shutdown.child_token());
    let factory_state = state.clone();
    let sessions = Arc::new(sessions::CappedSessions::new(
        opts.max_sessions,
        opts.session_idle_timeout,
    ));
    let mcp = StreamableHttpService::new(
        move || Ok(IbkrServer::new(factory_state.clone())),
        sessions.clone(),
        config,
    );
    let guard = Arc::new(Guard {
        hosts: opts.allowed_hosts.clone(),
        origins: opts.allowed_origins.clone(),
        token: opts.token.clone(),
        max_body: opts.max_request_bytes,
        body_timeout: opts.client_timeout,
        sessions,
    });
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route_service("/mcp", mcp.clone())
        .route_service("/mcp/", mcp)
        .with_state(state)
        .layer(middleware::from_fn_with_state(guard.clone(), bounded_body))
        .layer(middleware::from_fn_with_state(guard, self::guard))
}

fn refusal(status: StatusCode, message: String) -> Response {
    let mut r = (status, Json(json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// Host, Origin and bearer-token checks for every request.
async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !host_allowed(&g.hosts, host) {
        tracing::warn!(host, "request refused: Host not allowed");
        return refusal(
            StatusCode::FORBIDDEN,
            format!(
                "Host `{host}` is not allowed; add it to --allowed-hosts (IBKR_MCP_ALLOWED_HOSTS)"
            ),
        );
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        // The server's own origin (a page it serves, or a client that sends it) is same-origin:
        // the Host check above already stops DNS rebinding.
        let own = ["http://", "https://"]
            .iter()
            .any(|scheme| origin.eq_ignore_ascii_case(&format!("{scheme}{host}")));
        if !own && !g.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            tracing::warn!(origin, "request refused: Origin not allowed");
            return refusal(
                StatusCode::FORBIDDEN,
                format!(
                    "Origin `{origin}` is not allowed; add it to --allowed-origins \
                     (IBKR_MCP_ALLOWED_ORIGINS)"
                ),
            );
        }
    }
    if let Some(token) = &g.token
        && req.uri().path() != "/healthz"
        && !bearer_matches(req.headers(), token)
    {
        tracing::warn!(
            path = req.uri().path(),
            "request refused: missing or wrong bearer token"
        );
        return refusal(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token: send `Authorization: Bearer <IBKR_MCP_AUTH_TOKEN>`"
                .into(),
        );
    }
    next.run(req).await
}

/// Reads the request body whole, within the size and time limits.
async fn bounded_body(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > g.max_body) {
        return refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body over {} bytes (--max-request-bytes)",
                g.max_body
            ),
        );
    }
    let (parts, body) = req.into_parts();
    let bytes =
        match tokio::time::timeout(g.body_timeout, axum::body::to_bytes(body, g.max_body)).await {
            Err(_) => {
                return refusal(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "request body not received within {} s (--client-timeout)",
                        g.body_timeout.as_secs()
                    ),
                );
            }
            Ok(Err(_)) => {
                return refusal(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "request body over {} bytes, or broken (--max-request-bytes)",
                        g.max_body
                    ),
                );
            }
            Ok(Ok(b)) => b,
        };
    let is_mcp = matches!(parts.uri.path(), "/mcp" | "/mcp/");
    if is_mcp && parts.method == axum::http::Method::POST {
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Err(e) => {
                return jsonrpc_error(
                    StatusCode::BAD_REQUEST,
                    -32700,
                    format!("Parse error: the request body is not JSON ({e})"),
                );
            }
            Ok(v)
                if v.get("method").and_then(serde_json::Value::as_str) == Some("initialize")
                    && parts.headers.get("mcp-session-id").is_none()
                    && g.sessions.full() =>
            {
                tracing::warn!(
                    live = g.sessions.live(),
                    "initialize refused: too many MCP sessions"
                );
                return jsonrpc_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    -32000,
                    format!(
                        "too many MCP sessions ({} alive, the limit set with --max-sessions / \
                         IBKR_MCP_MAX_SESSIONS); close idle sessions or try again when they \
                         expire",
                        g.sessions.live()
                    ),
                );
            }
            Ok(_) => {}
        }
    }
    let is_delete = parts.method == axum::http::Method::DELETE;
    let mut response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    // rmcp answers a closed session with 202; clients expect 200 or 204.
    if is_mcp && is_delete && response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::NO_CONTENT;
        *response.body_mut() = Body::empty();
    }
    response
}

/// A JSON-RPC error with no id (the request could not be read), with an HTTP status.
fn jsonrpc_error(status: StatusCode, code: i64, message: String) -> Response {
    (
        status,
        Json(
            json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": message } }),
        ),
    )
        .into_response()
}

/// Whether a `Host` header value is allowed.
pub fn host_allowed(allowed: &[String], host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    allowed.iter().any(|a| {
        let a = a.trim().trim_start_matches('[').replace("]:", ":");
        let a = a.trim_end_matches(']');
        a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(name)
    })
}

fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    else {
        return false;
    };
    given.trim().as_bytes().ct_eq(token.as_bytes()).into()
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// Ready when the session manager's state is `ready` (or, without a manager, when a direct
/// probe finds the brokerage session authenticated).
async fn readyz(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    let (ready, body) = match &state.session {
        Some(s) => {
            let status = s.status();
            let ready = status.state == crate::ibkr::session::State::Ready;
            let mut v = serde_json::to_value(&status).unwrap_or_default();
            v["ready"] = serde_json::Value::Bool(ready);
            (ready, v)
        }
        None => {
            let readiness = crate::ibkr::probe(&state.client).await;
            (
                readiness.ready,
                serde_json::to_value(&readiness).unwrap_or_default(),
            )
        }
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// Serves `app` on `listener` until `shutdown` is cancelled, giving each client `header_timeout`
/// to send a request's headers, then finishing the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
    header_timeout: Duration,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Replies are written in several small pieces (headers, then SSE events): without
        // TCP_NODELAY, Nagle's algorithm and delayed ACKs add ~40 ms to every call.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("connections still open after 10 s; stopping anyway");
        }
    }
    Ok(())
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM) or `token` is cancelled,
/// and cancels `token`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_with_or_without_port() {
        let allowed: Vec<String> = ["localhost", "127.0.0.1", "::1", "mcp.internal:8443"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(host_allowed(&allowed, "localhost:5002"));
        assert!(host_allowed(&allowed, "127.0.0.1"));
        assert!(host_allowed(&allowed, "[::1]:5002"));
        assert!(host_allowed(&allowed, "mcp.internal:8443"));
        assert!(!host_allowed(&allowed, "mcp.internal:9999"));
        assert!(!host_allowed(&allowed, "evil.example"));
        assert!(!host_allowed(&allowed, "localhost.evil.example:5002"));
        assert!(!host_allowed(&allowed, ""));
    }

    #[test]
    fn bearer_token_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(!bearer_matches(&h, "secret"));
        h.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        assert!(bearer_matches(&h, "secret"));
        h.insert(header::AUTHORIZATION, "Bearer secre".parse().unwrap());
        assert!(!bearer_matches(&h, "secret"));
        h.insert(header::AUTHORIZATION, "Basic secret".parse().unwrap());
        assert!(!bearer_matches(&h, "secret"));
    }
}
