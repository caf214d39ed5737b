//! The live-events socket against the simulator on loopback, with timings shrunk: the
//! watchdog (a socket that goes silent without closing is taken for dead and reopened) and a
//! gap followed by a REST re-sync.

use std::time::Duration;

use ibkr_mcp::ibkr::{ClientOptions, build_client};
use ibkr_mcp::live::{Live, LiveConfig, SocketState, Topic};
use ibkr_sim::{SimConfig, Tls, WsConfig};

async fn sim(ws: WsConfig) -> ibkr_sim::SimHandle {
    ibkr_sim::start(
        SimConfig::default().with_pacing(false).with_ws(ws),
        "127.0.0.1:0".parse().unwrap(),
        Tls::None,
    )
    .await
    .expect("simulator")
}

fn live_for(sim: &ibkr_sim::SimHandle, dead_after: Duration) -> std::sync::Arc<Live> {
    let base = sim.base_url();
    let client = build_client(&ClientOptions {
        base_url: base.clone(),
        ..ClientOptions::default()
    })
    .unwrap();
    let mut config = LiveConfig::for_base_url(&base, false).unwrap();
    config.dead_after = dead_after;
    config.tic_every = Duration::from_secs(3600);
    Live::new(
        config,
        client,
        None,
        None,
        tokio_util::sync::CancellationToken::new(),
    )
}

async fn until(live: &Live, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {what}: {:?}",
            live.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_silent_socket_is_taken_for_dead_and_reopened_with_a_resync() {
    // No heartbeat for an hour and no `tic` from us: after the greeting the socket is silent.
    let sim = sim(WsConfig {
        heartbeat: Duration::from_secs(3600),
        ready_delay: Duration::from_millis(50),
        market_clock: false,
        ..WsConfig::default()
    })
    .await;
    let live = live_for(&sim, Duration::from_millis(1500));
    let lease = live.subscribe(Topic::Orders).unwrap();
    until(&live, "ready and synced", || {
        lease
            .view()
            .is_some_and(|v| v.synced && v.socket == SocketState::Ready)
    })
    .await;
    let first = live.status();
    assert_eq!((first.connections, first.gaps), (1, 0));
    // Silence from IBKR, while this side keeps the socket task busy (a topic taken and dropped
    // every 200 ms, which IBKR answers with nothing): the watchdog still counts the silence,
    // drops the socket, and a new one re-syncs the topic.
    let churn = {
        let live = live.clone();
        tokio::spawn(async move {
            loop {
                let l = live.subscribe(Topic::Trades).unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                drop(l);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    until(&live, "a second connection", || {
        live.status().connections >= 2
    })
    .await;
    until(&live, "synced again", || {
        lease.view().is_some_and(|v| v.synced)
    })
    .await;
    churn.abort();
    let s = live.status();
    assert!(s.gaps >= 1, "{s:?}");
    assert!(s.resyncs >= 2, "{s:?}");
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("taken for dead")),
        "{s:?}"
    );
    assert_eq!(sim.control().ws_stats().connections_total, s.connections);
    // The lease gone, IBKR's subscription ends too.
    drop(lease);
    until(&live, "sor unsubscribed", || {
        !sim.control().ws_stats().active.contains_key("sor")
    })
    .await;
}

#[tokio::test]
async fn a_lost_brokerage_session_is_a_gap_and_its_return_resubscribes() {
    let sim = sim(WsConfig {
        heartbeat: Duration::from_millis(200),
        ready_delay: Duration::from_millis(50),
        update_interval: Duration::from_millis(50),
        market_clock: false,
        ..WsConfig::default()
    })
    .await;
    let live = live_for(&sim, Duration::from_secs(30));
    let lease = live.subscribe(Topic::Pnl).unwrap();
    until(&live, "synced", || lease.view().is_some_and(|v| v.synced)).await;
    // Another login takes the brokerage session: IBKR says so and ends the streams.
    sim.control().set_competing(true);
    until(&live, "gap", || live.status().gaps >= 1).await;
    assert!(!lease.view().unwrap().synced);
    assert_eq!(live.status().state, SocketState::WaitingForReady);
    // Back: subscribed again (the simulator counts a second subscribe) and re-synced.
    sim.control().set_competing(false);
    until(&live, "synced again", || {
        lease.view().is_some_and(|v| v.synced)
    })
    .await;
    let stats = sim.control().ws_stats();
    assert_eq!(stats.subscribes.get("spl"), Some(&2), "{stats:?}");
    assert_eq!(stats.connections_total, 1);
}
