//! The streamable HTTP endpoint as clients meet it (issue 10, items 9 and 15): MCP sessions are
//! capped and closing one frees its place; a page's own origin is accepted while foreign ones
//! are refused; closing a session answers 204 (the Python SDK warns on 202); a body that is not
//! JSON gets HTTP 400 with a JSON-RPC parse error (it got 415).

mod common;

use std::time::Duration;

use httpmock::prelude::*;
use serde_json::{Value, json};

struct Served {
    base: String,
    http: reqwest::Client,
    shutdown: tokio_util::sync::CancellationToken,
    _gateway: MockServer,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn serve(max_sessions: usize) -> Served {
    let gateway = MockServer::start_async().await;
    gateway
        .mock_async(|when, then| {
            when.any_request();
            then.status(200).json_body(json!({}));
        })
        .await;
    let state = common::server_state(&format!("{}/v1/api", gateway.base_url()), &[]);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let app = ibkr_mcp::http::app(
        state,
        &ibkr_mcp::http::HttpOptions {
            allowed_hosts: vec!["127.0.0.1".into(), "localhost".into()],
            allowed_origins: vec!["https://allowed.example".into()],
            token: None,
            max_request_bytes: 64 * 1024,
            client_timeout: Duration::from_secs(5),
            max_sessions,
            session_idle_timeout: Duration::from_secs(60),
            shutdown: shutdown.clone(),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ibkr_mcp::http::serve(
        listener,
        app,
        shutdown.clone(),
        Duration::from_secs(5),
    ));
    Served {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        shutdown,
        _gateway: gateway,
    }
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

impl Served {
    fn post(&self, body: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/mcp", self.base))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string())
    }

    async fn initialize(&self) -> reqwest::Response {
        self.post(INIT).send().await.unwrap()
    }
}

#[tokio::test]
async fn mcp_sessions_are_capped_and_closing_one_frees_its_place() {
    let s = serve(3).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = s.initialize().await;
        assert_eq!(r.status(), 200);
        ids.push(r.headers()["mcp-session-id"].to_str().unwrap().to_string());
    }
    let over = s.initialize().await;
    assert_eq!(over.status(), 503);
    let body: Value = over.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("too many MCP sessions") && message.contains("IBKR_MCP_MAX_SESSIONS"),
        "{message}"
    );
    // Closing one answers 204 and frees its place.
    let closed = s
        .http
        .delete(format!("{}/mcp", s.base))
        .header("mcp-session-id", &ids[0])
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 204);
    let mut again = s.initialize().await;
    for _ in 0..50 {
        if again.status() == 200 {
            break;
        }
        // The session's worker ends just after the DELETE is answered.
        tokio::time::sleep(Duration::from_millis(50)).await;
        again = s.initialize().await;
    }
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn the_servers_own_origin_is_accepted_and_foreign_origins_are_not() {
    let s = serve(8).await;
    let own = s.base.clone(); // http://127.0.0.1:<port>
    let r = s.post(INIT).header("origin", &own).send().await.unwrap();
    assert_eq!(r.status(), 200, "{own}");
    let r = s
        .post(INIT)
        .header("origin", "https://allowed.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for foreign in [
        "http://evil.example",
        "http://127.0.0.1:1",
        "null",
        "http://localhost.evil.example",
    ] {
        let r = s.post(INIT).header("origin", foreign).send().await.unwrap();
        assert_eq!(r.status(), 403, "{foreign}");
    }
    // DNS rebinding: a foreign Host is refused whatever the Origin says.
    let r = s
        .post(INIT)
        .header("host", "evil.example")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn a_body_that_is_not_json_gets_400_with_a_jsonrpc_parse_error() {
    let s = serve(8).await;
    for body in ["{not json", "", "\u{1}\u{2}"] {
        let r = s.post(body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], -32700, "{v}");
        assert_eq!(v["id"], Value::Null);
    }
    // Well-formed JSON still reaches rmcp.
    assert_eq!(s.initialize().await.status(), 200);
}
