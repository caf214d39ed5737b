//! The simulator's shared mutable state ([`State`]) behind one mutex, and [`Sim`], which holds
//! it together with the immutable contract universe and the seed.
//!
//! Submodules own the parts: `session` (SSO and brokerage session), `accounts` (cash,
//! positions, valuation), `orders` (order book, questions, fills) and `misc` (alerts,
//! watchlists, FYI, allocation groups). The mutex is never held across an `.await`.

pub(crate) mod accounts;
pub(crate) mod misc;
pub(crate) mod orders;
pub(crate) mod session;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::config::SimConfig;
use crate::faults::FaultState;
use crate::log::RequestLog;
use crate::market::Market;
use crate::oauth::SimOAuth;
use crate::oauth::verify::OAuthState;
use crate::pacing::Pacer;
use crate::rng::Rng;
use crate::universe::Universe;
use crate::ws::{Feed, Hub};
use accounts::{ACCOUNT_IDS, Account};
use misc::{Alerts, Allocation, Fyi, Row, Watchlist};
use orders::Orders;
use session::Session;

/// Everything that changes while the simulator runs.
#[derive(Debug)]
pub(crate) struct State {
    pub market: Market,
    pub session: Session,
    pub accounts: BTreeMap<String, Account>,
    pub orders: Orders,
    pub alerts: Alerts,
    pub watchlists: BTreeMap<String, Watchlist>,
    pub fyi: Fyi,
    pub allocation: Allocation,
    pub pacer: Pacer,
    pub faults: FaultState,
    pub log: RequestLog,
    pub oauth: OAuthState,
    pub rng: Rng,
    pub snapshot_preflight: bool,
    pub restarts: u64,
    pub watchlist_mid: u64,
    /// Order and execution events for the WebSocket.
    pub ws_feed: Feed,
}

impl State {
    /// The seeded start state for `config`.
    pub(crate) fn new(config: &SimConfig, universe: &Universe) -> Self {
        let mut rng = Rng::derived(config.seed, 0x1D5);
        let now = chrono::Utc::now().timestamp_millis();
        let market = Market::new(universe, config.seed);
        let mut accounts: BTreeMap<String, Account> = Account::seed(universe)
            .into_iter()
            .map(|a| (a.id.clone(), a))
            .collect();
        for a in accounts.values_mut() {
            let v = a.value(universe, &market);
            a.prev_nav = accounts::cents(v.nlv * 0.9985);
        }
        // In OAuth mode a valid live session token stands for the SSO login, and the client
        // opens the brokerage session itself (`ssodh/init`).
        let (logged_in, authenticated) = if config.oauth.is_some() {
            (true, false)
        } else {
            (config.logged_in, config.authenticated)
        };
        let session = Session::new(
            logged_in,
            authenticated,
            config.idle_timeout,
            &mut rng,
            ACCOUNT_IDS[0],
        );
        let first_order_id = 1_840_000_000 + (rng.below(50_000) as i64) * 10;
        let mut watchlists = BTreeMap::new();
        for (id, name, rows) in [
            (
                "101",
                "Tech Leaders",
                vec![
                    Row::Contract(265598),
                    Row::Contract(272093),
                    Row::Header("Chips".into()),
                    Row::Contract(4815747),
                ],
            ),
            (
                "102",
                "Index ETFs",
                vec![
                    Row::Contract(756733),
                    Row::Contract(320227571),
                    Row::Contract(136155102),
                ],
            ),
        ] {
            watchlists.insert(
                id.to_string(),
                Watchlist {
                    id: id.into(),
                    name: name.into(),
                    modified_ms: now - 86_400_000,
                    rows,
                },
            );
        }
        Self {
            market,
            session,
            accounts,
            orders: Orders::new(config.questions.clone(), first_order_id),
            alerts: Alerts::seed(&ACCOUNT_IDS, now),
            watchlists,
            fyi: Fyi::seed(now),
            allocation: Allocation::seed(&ACCOUNT_IDS),
            pacer: if config.oauth.is_some() {
                Pacer::new(config.pacing).with_global_per_second(Pacer::OAUTH_GLOBAL_PER_SECOND)
            } else {
                Pacer::new(config.pacing)
            },
            faults: FaultState::new(config.faults.clone(), config.seed),
            log: RequestLog::default(),
            oauth: OAuthState::default(),
            rng,
            snapshot_preflight: config.snapshot_preflight,
            restarts: 0,
            watchlist_mid: 0,
            ws_feed: Feed::default(),
        }
    }

    /// Ends the brokerage session and everything scoped to it.
    pub(crate) fn lose_brokerage(&mut self) {
        self.session.lose_brokerage();
        self.orders.clear_pending();
    }

    /// Opens a new brokerage session.
    pub(crate) fn open_brokerage(&mut self) {
        self.orders.clear_pending();
        self.session.open_brokerage(&mut self.rng);
    }

    /// Advances the market one step, then fills working orders and triggers alerts.
    pub(crate) fn step_market(&mut self, universe: &Universe) {
        self.market.step();
        self.process_working(universe);
        for a in self
            .alerts
            .items
            .values_mut()
            .filter(|a| a.active && !a.mta)
        {
            let met = a.conditions.iter().filter(|c| c.ctype == 1).any(|c| {
                let conid: i64 = c
                    .conidex
                    .split('@')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let target: f64 = c.value.parse().unwrap_or(f64::NAN);
                let last = self.market.last(universe, conid).unwrap_or(f64::NAN);
                match c.operator.as_str() {
                    ">=" => last >= target,
                    "<=" => last <= target,
                    ">" => last > target,
                    "<" => last < target,
                    _ => false,
                }
            });
            if met && !a.triggered {
                a.triggered = true;
                if !a.repeatable {
                    a.active = false;
                }
            }
        }
    }
}

/// A request to take the listener down for a while.
#[derive(Debug)]
pub(crate) struct RestartCmd {
    pub down_for: Duration,
    pub done: Option<oneshot::Sender<()>>,
}

/// Shared simulator: universe, seed, OAuth configuration, state and the restart channel.
#[derive(Debug)]
pub(crate) struct Sim {
    pub universe: Universe,
    pub seed: u64,
    /// `Some` in OAuth mode (immutable; the changing OAuth state is `State::oauth`).
    pub oauth: Option<SimOAuth>,
    state: Mutex<State>,
    /// The WebSocket side: its configuration, counters and cut token, behind locks of their
    /// own (the counters' lock is never held while the state lock is taken).
    pub hub: Hub,
    pub restart_tx: mpsc::UnboundedSender<RestartCmd>,
}

impl Sim {
    /// A simulator for `config`; `restart_tx` reaches the server loop.
    pub(crate) fn new(config: &SimConfig, restart_tx: mpsc::UnboundedSender<RestartCmd>) -> Self {
        let universe = Universe::new(chrono::Utc::now().date_naive());
        let state = State::new(config, &universe);
        let hub = Hub::new(config.ws.clone(), state.ws_feed.clone());
        Self {
            universe,
            seed: config.seed,
            oauth: config.oauth.clone(),
            state: Mutex::new(state),
            hub,
            restart_tx,
        }
    }

    /// Locks the state (a poisoned lock is taken over: the state is still consistent enough for
    /// a simulator).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
