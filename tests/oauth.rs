//! `--auth oauth1` against the simulator in OAuth mode, in process: the settings path (files
//! written as a user would keep them), a read refused with 401 sent once more with a new live
//! session token, an order refused with 401 never sent again by itself, and the demo's
//! generated keys. The independent check of the cryptography (Python `cryptography`) and the
//! Python-SDK workflow are in tests/python/test_oauth.py.

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use common::{args, sim_server, text_of};
use ibkr_mcp::ibkr::session::State;
use ibkr_sim::SimConfig;
use ibkr_sim::oauth::DemoOAuth;
use serde_json::json;

const PLACE: &str = "/iserver/account/{accountId}/orders";

/// One generated credential set for every test here (key generation takes a second).
static DEMO: LazyLock<DemoOAuth> = LazyLock::new(|| DemoOAuth::generate().expect("demo keys"));

/// A fresh directory under the system's temp folder, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ibkr-mcp-oauth-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The credentials written to a fresh directory, and the `serve` flags that read them.
fn settings(demo: &DemoOAuth) -> (TempDir, Vec<String>) {
    let dir = TempDir::new();
    demo.write_to_dir(dir.path()).unwrap();
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let flags = vec![
        "--auth".into(),
        "oauth1".into(),
        "--oauth-consumer-key".into(),
        demo.consumer_key().to_string(),
        "--oauth-access-token-file".into(),
        p("access_token"),
        "--oauth-access-token-secret-file".into(),
        p("access_token_secret"),
        "--oauth-signature-key".into(),
        p("private_signature.pem"),
        "--oauth-encryption-key".into(),
        p("private_encryption.pem"),
        "--oauth-dh-params".into(),
        p("dhparam.pem"),
    ];
    (dir, flags)
}

fn quiet() -> SimConfig {
    SimConfig::default()
        .with_pacing(false)
        .with_questions(ibkr_sim::QuestionPolicy::Never)
        .with_oauth(DEMO.sim_oauth())
}

#[tokio::test]
async fn an_expired_token_costs_a_read_nothing_and_an_order_one_refusal_never_a_resend() {
    let (_dir, flags) = settings(&DEMO);
    let mut extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    extra.extend(["--allow-trading", "--tickle-interval", "3600"]);
    let s = sim_server(quiet(), &extra).await;
    s.wait_for(State::Ready, Duration::from_secs(30)).await;
    let auth = s.session().status().auth.expect("OAuth status");
    assert_eq!((auth.mode, auth.tokens_obtained), ("oauth1", 1));

    // A read after IBKR ended the token: refused once, sent again with a new token, answered.
    assert!(s.sim.control().oauth_expire());
    // (A read IBKR allows once per 5 s, such as /portfolio/accounts, could not be sent again
    // at once: its error says when to call again. The snapshot allows 10 per second.)
    let r = s
        .server
        .call("get_price_snapshot", args(json!({"symbols": ["AAPL"]})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    assert!(!text_of(&r).contains("lapsed"), "{}", text_of(&r));
    let stats = s.sim.control().oauth_stats().unwrap();
    assert_eq!(stats.tokens_issued, 2, "{stats:?}");
    assert_eq!(stats.refused.expired_token, 1, "{stats:?}");

    // An order after IBKR ended the token: refused, not carried out, and not sent again.
    assert!(s.sim.control().oauth_expire());
    let order = json!({"accountId": "DU1234567", "body": {"orders": [
        {"conid": 265598, "orderType": "LMT", "price": 100.0, "side": "BUY", "tif": "DAY", "quantity": 1}
    ]}});
    let r = s
        .server
        .call("place_orders", args(order.clone()))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true), "{}", text_of(&r));
    let text = text_of(&r);
    assert_eq!(
        r.structured_content.as_ref().unwrap()["error"]["kind"],
        "oauth_refused",
        "{text}"
    );
    assert!(
        text.contains("nothing was carried out") && text.contains("never sent again"),
        "{text}"
    );
    let posts: Vec<_> = s
        .sim
        .control()
        .requests()
        .into_iter()
        .filter(|e| e.method == "POST" && e.template.as_deref() == Some(PLACE))
        .collect();
    assert_eq!(posts.len(), 1, "one order request, no resend: {posts:#?}");
    assert_eq!(posts[0].outcome, "oauth:expired_token");
    assert!(s.sim.control().state().orders.is_empty());

    // Calling again, as the error says, places it once (the token is renewed first).
    let r = s.server.call("place_orders", args(order)).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    assert_eq!(s.sim.control().state().orders.len(), 1);
    let auth = s.session().status().auth.unwrap();
    assert_eq!((auth.tokens_obtained, auth.tokens_rejected), (3, 2));
    assert!(auth.last_refresh_error.is_none());
}

#[tokio::test]
async fn the_demo_runs_oauth_with_generated_keys() {
    use clap::Parser as _;
    let ibkr_mcp::cli::Command::Serve(cfg) = ibkr_mcp::cli::Cli::try_parse_from([
        "ibkr-mcp",
        "serve",
        "--demo",
        "--auth",
        "oauth1",
        "--audit-log",
        std::env::temp_dir()
            .join(format!("ibkr-mcp-oauth-demo-{}.jsonl", std::process::id()))
            .to_str()
            .unwrap(),
    ])
    .unwrap()
    .command
    else {
        unreachable!()
    };
    let (cfg, sim, inputs) = ibkr_mcp::server::start_demo(*cfg).await.unwrap();
    assert!(inputs.is_some(), "the demo made OAuth inputs");
    let state = std::sync::Arc::new(ibkr_mcp::server::build_state_with(&cfg, inputs).unwrap());
    let cancel = tokio_util::sync::CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let session = state.session.clone().expect("session manager");
    session.spawn(cancel);
    let server = ibkr_mcp::mcp::IbkrServer::new(state);
    let start = std::time::Instant::now();
    while session.state() != State::Ready {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:#?}",
            session.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = server
        .call("get_account_summary", args(json!({})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    let stats = sim
        .control()
        .oauth_stats()
        .expect("the demo simulator speaks OAuth");
    assert_eq!(stats.tokens_issued, 1);
    assert!(stats.accepted > 0 && stats.refused_total == 0, "{stats:?}");
}

#[test]
fn a_missing_or_malformed_setting_is_named_before_anything_starts() {
    let dir = TempDir::new();
    let bad = dir.path().join("signature.pem");
    std::fs::write(
        &bad,
        "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let (_creds, flags) = settings(&DEMO);
    let mut argv: Vec<String> = vec!["ibkr-mcp".into(), "serve".into()];
    argv.extend(flags);
    let at = argv
        .iter()
        .position(|a| a == "--oauth-signature-key")
        .unwrap();
    argv[at + 1] = bad.to_string_lossy().into_owned();
    let at = argv.iter().position(|a| a == "--oauth-dh-params").unwrap();
    argv.splice(at..at + 2, ["--oauth-dh-prime".into(), "12xz".into()]);
    use clap::Parser as _;
    let ibkr_mcp::cli::Command::Serve(cfg) =
        ibkr_mcp::cli::Cli::try_parse_from(argv).unwrap().command
    else {
        unreachable!()
    };
    let e = ibkr_mcp::server::build_state(&cfg).unwrap_err().to_string();
    assert!(
        e.contains("IBKR_MCP_OAUTH_SIGNATURE_KEY") && e.contains("signature.pem"),
        "{e}"
    );
    assert!(
        e.contains("IBKR_MCP_OAUTH_DH_PRIME") && e.contains("not hex"),
        "{e}"
    );
    for secret in [DEMO.access_token(), DEMO.access_token_secret()] {
        assert!(!e.contains(secret), "no secret in the error: {e}");
    }
}
