//! The HTTP router in-process (`http::app` driven with `tower::ServiceExt::oneshot`, no socket):
//! routing, health, readiness, the bearer token and the Host/Origin checks, each with the
//! status and the words a client gets.

mod common;

use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode, header};
use ibkr_mcp::http::{HttpOptions, app};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const TOKEN: &str = "t0ken-for-the-router-test";

fn options(token: Option<&str>) -> HttpOptions {
    HttpOptions {
        allowed_hosts: vec!["localhost".into(), "127.0.0.1".into()],
        allowed_origins: vec!["https://app.example".into()],
        token: token.map(str::to_owned),
        max_request_bytes: 64 * 1024,
        client_timeout: Duration::from_secs(5),
        max_sessions: 4,
        session_idle_timeout: Duration::from_secs(60),
        shutdown: CancellationToken::new(),
    }
}

fn router(gateway_url: &str, token: Option<&str>) -> axum::Router {
    app(common::server_state(gateway_url, &[]), &options(token))
}

async fn send(router: axum::Router, req: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let resp = router.oneshot(req).await.expect("the router answers");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("a body");
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str) -> http::request::Builder {
    Request::get(path).header(header::HOST, "localhost:8080")
}

fn initialize() -> http::request::Builder {
    Request::post("/mcp")
        .header(header::HOST, "localhost:8080")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream")
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"router-test","version":"0"}}}"#;

/// A port nothing listens on.
fn dead_gateway() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/v1/api")
}

#[tokio::test]
async fn health_answers_without_the_gateway_and_without_the_token() {
    let r = router(&dead_gateway(), Some(TOKEN));
    let (status, _, body) = send(r, get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn readiness_probes_the_gateway_and_says_why_it_is_not_ready() {
    let (status, _, body) = send(
        router(&dead_gateway(), None),
        get("/readyz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["reachable"], false);
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .starts_with("gateway unreachable: "),
        "{v}"
    );

    let sim = common::plain_sim().await;
    let (status, _, body) = send(
        router(&sim.base_url(), None),
        get("/readyz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["ready"].clone(), v["authenticated"].clone()),
        (true.into(), true.into())
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_are_404_and_mcp_is_served_at_both_spellings() {
    let gw = dead_gateway();
    let (status, _, _) = send(
        router(&gw, None),
        get("/v1/api/iserver/accounts").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for path in ["/mcp", "/mcp/"] {
        let req = initialize().uri(path).body(Body::from(INIT)).unwrap();
        let (status, headers, body) = send(router(&gw, None), req).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(
            headers.contains_key("mcp-session-id"),
            "{path}: {headers:?}"
        );
        assert!(body.contains("\"serverInfo\""), "{path}: {body}");
    }
}

#[tokio::test]
async fn the_bearer_token_is_required_everywhere_but_health() {
    let gw = dead_gateway();
    for auth in [None, Some("Bearer wrong"), Some("Basic dXNlcjpwdw==")] {
        let mut req = initialize();
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let (status, headers, body) = send(
            router(&gw, Some(TOKEN)),
            req.body(Body::from(INIT)).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert!(body.contains("IBKR_MCP_AUTH_TOKEN"), "{body}");
    }
    let (status, _, _) = send(
        router(&gw, Some(TOKEN)),
        get("/readyz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "readiness is behind the token too"
    );
    let req = initialize()
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(INIT))
        .unwrap();
    let (status, _, body) = send(router(&gw, Some(TOKEN)), req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn foreign_hosts_and_origins_are_refused_with_the_setting_to_change() {
    let gw = dead_gateway();
    let req = Request::get("/healthz")
        .header(header::HOST, "attacker.example")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(router(&gw, None), req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.contains("attacker.example") && body.contains("--allowed-hosts"),
        "{body}"
    );

    let req = initialize()
        .header(header::ORIGIN, "https://attacker.example")
        .body(Body::from(INIT))
        .unwrap();
    let (status, _, body) = send(router(&gw, None), req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("--allowed-origins"), "{body}");

    for origin in ["https://app.example", "http://localhost:8080"] {
        let req = initialize()
            .header(header::ORIGIN, origin)
            .body(Body::from(INIT))
            .unwrap();
        let (status, _, body) = send(router(&gw, None), req).await;
        assert_eq!(status, StatusCode::OK, "{origin}: {body}");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_before_mcp_sees_it() {
    let pad = "x".repeat(70 * 1024);
    let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{pad}"}}}}"#);
    let req = initialize().body(Body::from(body)).unwrap();
    let (status, _, text) = send(router(&dead_gateway(), None), req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains("max-request-bytes"), "{text}");
}
