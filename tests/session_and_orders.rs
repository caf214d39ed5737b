//! The session manager, order questions, the snapshot pre-flight, pacing and retries, against
//! the gateway simulator with its fault knobs. Timing is never asserted tightly: these run on
//! shared 2-core machines; states are polled with generous limits.

mod common;

use std::time::Duration;

use common::{args, sim_server, text_of};
use ibkr_mcp::ibkr::session::State;
use ibkr_sim::{Faults, QuestionPolicy, SimConfig};
use serde_json::{Value, json};

const PLACE: &str = "POST /iserver/account/{accountId}/orders";
const REPLY: &str = "POST /iserver/reply/{replyId}";
const ORDERS: &str = "GET /iserver/account/orders";

fn quiet() -> SimConfig {
    // No pacing in the simulator unless a test is about pacing: our own pacing still runs.
    SimConfig::default().with_pacing(false)
}

fn trading(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec!["--allow-trading", "--toolsets", "all"];
    v.extend_from_slice(extra);
    v
}

fn limit_order() -> Value {
    json!({"accountId": "DU1234567", "body": {"orders": [
        {"conid": 265598, "orderType": "LMT", "price": 100.0, "side": "BUY", "tif": "DAY", "quantity": 1}
    ]}})
}

fn kind(r: &rmcp::model::CallToolResult) -> String {
    r.structured_content
        .as_ref()
        .and_then(|s| s["error"]["kind"].as_str())
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn brokerage_session_timeout_is_recovered_by_the_keepalive_and_tools_keep_working() {
    let s = sim_server(quiet(), &["--tickle-interval", "1"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let before = s.session().status().brokerage_sessions;
    s.sim.control().expire_session();
    // Within one tickle interval (1 s here; generous limit for slow machines) the manager sees
    // the lapsed session and opens a new one without any tool call.
    let start = std::time::Instant::now();
    while s.session().status().brokerage_sessions == before {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:#?}",
            s.session().status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let status = s.session().status();
    assert!(
        status.accounts_loaded,
        "accounts are loaded once per brokerage session"
    );
    assert!(
        status
            .transitions
            .iter()
            .any(|t| t.to == State::NotAuthenticated),
        "{:#?}",
        status.transitions
    );
    let r = s.server.call("list_orders", None).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
}

#[tokio::test]
async fn a_tool_call_recovers_a_lapsed_session_itself() {
    // A long tickle interval: only the call's own recovery attempt can help.
    let s = sim_server(quiet(), &["--tickle-interval", "3600"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    s.sim.control().expire_session();
    s.session().saw_unauthorized(); // as a tool that got 401 would
    let r = s
        .server
        .call(
            "get_brokerage_account_summary",
            args(json!({"accountId": "DU1234567"})),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    assert!(s.hits("POST /iserver/auth/ssodh/init") >= 1);
}

#[tokio::test]
async fn gateway_restart_is_survived_and_recovered() {
    let s = sim_server(quiet(), &["--tickle-interval", "1", "--read-retries", "0"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    s.sim.control().restart(Duration::from_secs(3)).await;
    s.wait_for(State::GatewayDown, Duration::from_secs(20))
        .await;
    // While it is down, tools say so and name the setting.
    let r = s.server.call("list_orders", None).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(
        text_of(&r).contains("IBKR_MCP_GATEWAY_URL"),
        "{}",
        text_of(&r)
    );
    s.wait_for(State::Ready, Duration::from_secs(30)).await;
    let r = s.server.call("list_orders", None).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    let t = &s.session().status().transitions;
    assert!(t.iter().any(|x| x.to == State::GatewayDown) && t.back().unwrap().to == State::Ready);
}

#[tokio::test]
async fn competing_session_is_reported_not_fought_over() {
    let s = sim_server(quiet(), &["--tickle-interval", "1"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    s.sim.control().set_competing(true);
    s.wait_for(State::Competing, Duration::from_secs(20)).await;
    let inits = s.hits("POST /iserver/auth/ssodh/init");
    let r = s.server.call("list_orders", None).await.unwrap();
    assert_eq!(kind(&r), "competing_session", "{}", text_of(&r));
    // A read-only server does not offer init_brokerage_session: the advice is the user's.
    let text = text_of(&r);
    assert!(
        text.contains("--take-over-competing") && !text.contains("init_brokerage_session"),
        "{text}"
    );
    let status = s.server.call("get_session_status", None).await.unwrap();
    let explanation = status.structured_content.unwrap()["explanation"].to_string();
    assert!(
        !explanation.contains("init_brokerage_session"),
        "{explanation}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.session().state(), State::Competing);
    assert_eq!(
        s.hits("POST /iserver/auth/ssodh/init"),
        inits,
        "no automatic take-over"
    );
    assert!(s.sim.control().state().session.competing);
}

#[tokio::test]
async fn chain_of_auto_confirmable_questions_places_the_order_exactly_once() {
    let s = sim_server(
        quiet().with_questions(QuestionPolicy::Chain {
            message_ids: vec!["o163".into(), "o451".into(), "o10153".into()],
        }),
        &trading(&["--auto-confirm-question-ids", "o163,o451,o10153"]),
    )
    .await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let r = s
        .server
        .call("place_orders", args(limit_order()))
        .await
        .unwrap();
    let text = text_of(&r);
    assert_eq!(r.is_error, Some(false), "{text}");
    assert!(
        text.contains("o10153") && text.contains("confirmed by policy"),
        "{text}"
    );
    let placed = r.structured_content.unwrap();
    assert!(placed["items"][0]["order_id"].is_string(), "{placed}");
    assert_eq!(s.sim.control().state().orders.len(), 1);
    assert_eq!(s.hits(PLACE), 1, "the order is sent once");
    assert_eq!(s.hits(REPLY), 3, "one reply per question");
}

#[tokio::test]
async fn unknown_question_waits_for_an_explicit_confirm_of_that_reply_id() {
    let s = sim_server(
        quiet().with_questions(QuestionPolicy::Chain {
            message_ids: vec!["o163".into(), "o383".into()],
        }),
        &trading(&["--auto-confirm-question-ids", "o163"]),
    )
    .await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let r = s
        .server
        .call("place_orders", args(limit_order()))
        .await
        .unwrap();
    let text = text_of(&r);
    assert_eq!(kind(&r), "order_question", "{text}");
    assert!(
        text.contains("o383") && text.contains("NOT placed"),
        "{text}"
    );
    let reply_id = r.structured_content.unwrap()["error"]["question"]["reply_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        s.sim.control().state().orders.is_empty(),
        "nothing placed yet"
    );
    assert_eq!(
        s.hits(REPLY),
        1,
        "only the auto-confirmable question was answered"
    );

    // A reply id the server did not hand out is refused without a request.
    let made_up = s
        .server
        .call(
            "reply_order_question",
            args(json!({"replyId": "f00-made-up", "body": {"confirmed": true}})),
        )
        .await
        .unwrap();
    assert_eq!(kind(&made_up), "policy_refused", "{}", text_of(&made_up));
    assert_eq!(s.hits(REPLY), 1);

    let ok = s
        .server
        .call(
            "reply_order_question",
            args(json!({"replyId": reply_id, "body": {"confirmed": true}})),
        )
        .await
        .unwrap();
    assert_eq!(ok.is_error, Some(false), "{}", text_of(&ok));
    assert_eq!(s.sim.control().state().orders.len(), 1);
    assert_eq!(s.hits(PLACE), 1, "the order itself is never re-sent");
    // The same id cannot be used twice.
    let again = s
        .server
        .call(
            "reply_order_question",
            args(json!({"replyId": reply_id, "body": {"confirmed": true}})),
        )
        .await
        .unwrap();
    assert_eq!(kind(&again), "policy_refused");
}

#[tokio::test]
async fn connection_dropped_after_the_gateway_accepted_an_order_leaves_exactly_one_order() {
    let s = sim_server(quiet().with_questions(QuestionPolicy::Never), &trading(&[])).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    s.sim.control().arm_drop_after_accept();
    let r = s
        .server
        .call("place_orders", args(limit_order()))
        .await
        .unwrap();
    let text = text_of(&r);
    assert_eq!(r.is_error, Some(true), "{text}");
    assert_eq!(kind(&r), "connection_lost", "{text}");
    assert!(
        text.contains("NOT retried") && text.contains("list_orders"),
        "{text}"
    );
    assert_eq!(s.hits(PLACE), 1, "never re-sent");
    assert_eq!(
        s.sim.control().state().orders.len(),
        1,
        "exactly one order in the book"
    );
}

#[tokio::test]
async fn burst_of_100_calls_to_a_paced_endpoint_sends_no_429_to_the_gateway() {
    // The simulator enforces IBKR's limits (1 request per 5 s on live orders).
    let s = sim_server(SimConfig::default(), &["--pacing-max-wait", "2"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let calls = (0..100).map(|_| s.server.call("list_orders", None));
    let results = futures::future::join_all(calls).await;
    let ok = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_error == Some(false))
        .count();
    let paced = results
        .iter()
        .filter(|r| kind(r.as_ref().unwrap()) == "paced")
        .count();
    assert_eq!(
        ok + paced,
        100,
        "every call either went through or was paced"
    );
    assert!(ok >= 1);
    let sample = results
        .iter()
        .find(|r| kind(r.as_ref().unwrap()) == "paced")
        .unwrap();
    let text = text_of(sample.as_ref().unwrap());
    assert!(
        text.contains("1 request per 5 s") && text.contains("Try again in"),
        "{text}"
    );
    assert_eq!(
        s.sim.control().counters().paced,
        0,
        "zero 429s reached the simulator"
    );
    assert!(s.hits(ORDERS) <= 2, "{}", s.hits(ORDERS));
}

#[tokio::test]
async fn first_quote_for_a_new_contract_returns_prices_in_one_call() {
    let s = sim_server(quiet(), &[]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let r = s
        .server
        .call(
            "get_market_data_snapshot",
            args(json!({"conids": "265598,8314", "fields": "31,84,86"})),
        )
        .await
        .unwrap();
    let text = text_of(&r);
    assert_eq!(r.is_error, Some(false), "{text}");
    let items = r.structured_content.unwrap()["items"]
        .as_array()
        .unwrap()
        .clone();
    for conid in [265598, 8314] {
        let e = items.iter().find(|e| e["conid"] == conid).unwrap();
        assert!(e["31"].is_string() && e["84"].is_string(), "{conid}: {e}");
    }
    assert!(
        s.hits("GET /iserver/marketdata/snapshot") >= 2,
        "the pre-flight was handled here"
    );
    assert!(s.session().is_warm("265598"));
}

#[tokio::test]
async fn reads_are_retried_on_5xx_and_writes_never_are() {
    let s = sim_server(
        quiet().with_questions(QuestionPolicy::Never),
        &trading(&["--read-retries", "2"]),
    )
    .await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    s.sim.control().set_faults(Faults {
        error_rate: 1.0,
        only_prefixes: vec![
            "/portfolio".into(),
            "/iserver/account/DU1234567/order".into(),
        ],
        ..Faults::default()
    });
    let r = s
        .server
        .call(
            "get_portfolio_ledger",
            args(json!({"accountId": "DU1234567"})),
        )
        .await
        .unwrap();
    assert_eq!(kind(&r), "gateway_error", "{}", text_of(&r));
    assert_eq!(
        s.hits("GET /portfolio/{accountId}/ledger"),
        3,
        "a read: first try plus two retries"
    );
    let c = s
        .server
        .call(
            "cancel_iserver_order",
            args(json!({"accountId": "DU1234567", "orderId": "123"})),
        )
        .await
        .unwrap();
    assert_eq!(c.is_error, Some(true));
    assert!(text_of(&c).contains("NOT retried"), "{}", text_of(&c));
    assert_eq!(
        s.hits("DELETE /iserver/account/{accountId}/order/{orderId}"),
        1,
        "a write: once"
    );
}

#[tokio::test]
async fn session_status_tool_and_resource_show_the_state_machine() {
    let s = sim_server(quiet(), &["--suppress-question-ids", "o354,o10331"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    // Suppression and accounts happen as the brokerage session starts.
    let start = std::time::Instant::now();
    while !s.session().status().accounts_loaded {
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = s.server.call("get_session_status", None).await.unwrap();
    let v = r.structured_content.unwrap();
    assert_eq!(v["state"], "ready");
    assert_eq!(v["suppressed_question_ids"], json!(["o354", "o10331"]));
    assert_eq!(v["accounts"], json!(["DU1234567", "DU7654321"]));
    assert!(s.hits("POST /iserver/questions/suppress") >= 1);
    assert_eq!(
        s.hits("GET /iserver/accounts"),
        1,
        "once per brokerage session"
    );
}

#[tokio::test]
async fn scanner_parameters_are_fetched_once_and_repeats_answered_from_the_cache() {
    // IBKR allows GET /iserver/scanner/params once per 15 minutes, and the simulator enforces
    // that: without the cache the second look would be refused for up to 15 minutes.
    let s = sim_server(SimConfig::default(), &["--toolsets", "all"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    let first = s.server.call("get_scanner_params", None).await.unwrap();
    assert_eq!(first.is_error, Some(false), "{}", text_of(&first));
    assert!(!text_of(&first).contains("server's cache"));
    let second = s.server.call("get_scanner_params", None).await.unwrap();
    assert_eq!(second.is_error, Some(false), "{}", text_of(&second));
    assert_eq!(first.structured_content, second.structured_content);
    let text = text_of(&second);
    assert!(
        text.contains("Note: Served from the server's cache: IBKR's reply from ")
            && text.contains(" s ago."),
        "{text}"
    );
    assert_eq!(s.hits("GET /iserver/scanner/params"), 1);
    assert_eq!(s.sim.control().counters().paced, 0);
    // The cache is for that reference document only: other reads are asked each time.
    for _ in 0..2 {
        let r = s
            .server
            .call("get_contract_info", args(json!({"conid": "265598"})))
            .await
            .unwrap();
        assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
        assert!(!text_of(&r).contains("server's cache"));
    }
    assert_eq!(s.hits("GET /iserver/contract/{conid}/info"), 2);
}

/// Issue 10, item 12: the brokerage session lapsed (here: the simulator expired it) while this
/// server still thinks it ready. The first read answers anyway: the 401 makes the server re-open
/// the session and ask once more, and says so.
#[tokio::test]
async fn the_first_read_after_a_lapsed_session_answers_instead_of_asking_for_a_login() {
    let s = sim_server(quiet(), &["--tickle-interval", "3600"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    s.sim.control().expire_session();
    let r = s
        .server
        .call(
            "get_brokerage_account_summary",
            args(json!({"accountId": "DU1234567"})),
        )
        .await
        .unwrap();
    let text = text_of(&r);
    assert_eq!(r.is_error, Some(false), "{text}");
    assert!(text.contains("re-opened"), "{text}");
    assert!(!text.contains("log in"), "{text}");
    assert!(s.hits("POST /iserver/auth/ssodh/init") >= 1);
}

/// Item 12: an order refused with 401 because the session lapsed is not sent again; the result
/// says it was not carried out and the session is open again, and the next call places it once.
#[tokio::test]
async fn an_order_refused_by_a_lapsed_session_is_not_resent_and_says_so() {
    let s = sim_server(
        quiet().with_questions(QuestionPolicy::Never),
        &trading(&["--tickle-interval", "3600"]),
    )
    .await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    s.sim.control().expire_session();
    let r = s
        .server
        .call("place_orders", args(limit_order()))
        .await
        .unwrap();
    assert_eq!(kind(&r), "session_lapsed", "{}", text_of(&r));
    assert!(text_of(&r).contains("NOT carried out"), "{}", text_of(&r));
    assert_eq!(s.hits(PLACE), 1, "sent once, refused with 401, not resent");
    assert!(s.sim.control().state().orders.is_empty());
    s.wait_for(State::Ready, Duration::from_secs(5)).await;
    let ok = s
        .server
        .call("place_orders", args(limit_order()))
        .await
        .unwrap();
    assert_eq!(ok.is_error, Some(false), "{}", text_of(&ok));
    assert_eq!(s.sim.control().state().orders.len(), 1);
}

/// Item 12 (and issue 11's done-when): with --max-order-notional the policy looks the contract
/// and a price up first; a lapsed session makes those lookups 401, the server recovers the
/// session and checks again, and the order is placed exactly once.
#[tokio::test]
async fn the_policys_lookups_recover_a_lapsed_session_and_the_order_is_placed_once() {
    let s = sim_server(
        quiet().with_questions(QuestionPolicy::Never),
        &trading(&[
            "--tickle-interval",
            "3600",
            "--max-order-notional",
            "100000",
        ]),
    )
    .await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    s.sim.control().expire_session();
    let r = s
        .server
        .call("place_orders", args(limit_order()))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    assert_eq!(s.hits(PLACE), 1);
    assert_eq!(s.sim.control().state().orders.len(), 1);
}

/// Item 13: the status is checked again when it is stale, so it never says `ready` while the
/// gateway is down, and what the old brokerage session held is not reported as loaded.
#[tokio::test]
async fn session_status_is_current_while_the_gateway_is_down() {
    let s = sim_server(
        quiet(),
        &["--tickle-interval", "3600", "--read-retries", "0"],
    )
    .await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    assert!(s.session().status().accounts_loaded);
    let control = s.sim.control();
    tokio::spawn(async move { control.restart(Duration::from_secs(10)).await });
    // More than the status's freshness limit passes without a tickle; the gateway is down.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let r = s.server.call("get_session_status", None).await.unwrap();
    let sc = r.structured_content.unwrap();
    assert_eq!(sc["state"], "gateway_down", "{sc}");
    assert_eq!(sc["accounts_loaded"], false, "{sc}");
}

/// Item 13: in demo mode the login page the model is told about exists and logs the simulator
/// in (it was a 404).
#[tokio::test]
async fn the_demo_login_page_exists_and_logs_the_simulator_in() {
    use clap::Parser as _;
    let ibkr_mcp::cli::Command::Serve(cfg) =
        ibkr_mcp::cli::Cli::try_parse_from(["ibkr-mcp", "serve", "--demo"])
            .unwrap()
            .command
    else {
        unreachable!()
    };
    let (cfg, sim, oauth) = ibkr_mcp::server::start_demo(*cfg).await.unwrap();
    assert!(oauth.is_none(), "the default demo is gateway mode");
    let login = cfg.login_url();
    sim.control().logout();
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let page = http.get(&login).send().await.unwrap();
    assert_eq!(page.status(), 200, "{login}");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Nobody is logged in") && html.contains("<form"),
        "{html}"
    );
    let done = http.post(format!("{login}/login")).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("Logged in"));
    assert!(sim.control().state().session.authenticated);
}

/// Item 8: bursts and long runs through the pacer never draw a 429 from a gateway that counts
/// in sliding windows (before: 40 sequential calls drew three).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_through_the_pacer_draw_no_429() {
    let s = sim_server(SimConfig::default(), &["--pacing-max-wait", "30"]).await;
    s.wait_for(State::Ready, Duration::from_secs(20)).await;
    for _ in 0..40 {
        let r = s
            .server
            .call("get_contract_info", args(json!({"conid": "265598"})))
            .await
            .unwrap();
        assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    }
    let server = std::sync::Arc::new(s.server.clone());
    let burst: Vec<_> = (0..30)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(async move {
                let (tool, a) = if i % 2 == 0 {
                    ("get_contract_info", json!({"conid": "8314"}))
                } else {
                    (
                        "get_market_data_snapshot",
                        json!({"conids": "265598", "fields": "31"}),
                    )
                };
                server.call(tool, args(a)).await.unwrap()
            })
        })
        .collect();
    for b in burst {
        let r = b.await.unwrap();
        assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    }
    let counters = s.sim.control().counters();
    assert!(counters.total >= 70, "{counters:?}");
    assert_eq!(
        counters.paced, 0,
        "the simulator answered 429: {counters:?}"
    );
}
