//! The gateway's two-level session: the SSO login (a human logged in through the gateway's
//! web page) and the brokerage session on top of it (`authenticated`), with idle timeout,
//! competing sessions and everything scoped to one brokerage session (market-data
//! subscriptions, suppressed questions, whether `/iserver/accounts` was called).
//!
//! Pending order questions are also scoped to the brokerage session but live in `orders`;
//! `State::lose_brokerage` clears both.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::rng::Rng;

/// The session state.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The human SSO login (`connected`). Survives restarts; only `/logout` or the control API
    /// ends it.
    pub logged_in: bool,
    /// The brokerage session (`authenticated`).
    pub brokerage: bool,
    /// Another session took the brokerage session over.
    pub competing: bool,
    /// `/iserver/accounts` was called in this brokerage session.
    pub accounts_queried: bool,
    /// Question message ids suppressed in this brokerage session.
    pub suppressed: BTreeSet<String>,
    /// Conids with a market-data subscription (pre-flight done) in this brokerage session,
    /// with the server id (`q0`, `q1`...) given when the subscription started.
    pub subscriptions: BTreeMap<i64, String>,
    /// Next server id number.
    pub next_server_id: u64,
    /// Last request that reached the session layer.
    pub last_activity: Instant,
    /// Idle time after which the brokerage session is lost.
    pub idle_timeout: Duration,
    /// SSO session id shown by `/tickle`.
    pub sso_session: String,
    /// Brokerage session id shown by `/iserver/accounts`.
    pub brokerage_session: String,
    /// When the SSO login happened (ms since the epoch).
    pub login_ms: i64,
    /// Account selected with `/iserver/account`.
    pub selected_account: String,
    /// Number of brokerage sessions opened so far.
    pub generation: u64,
    /// Times the brokerage session was lost to idleness.
    pub idle_expiries: u64,
}

impl Session {
    /// A session as configured at start.
    pub(crate) fn new(
        logged_in: bool,
        authenticated: bool,
        idle_timeout: Duration,
        rng: &mut Rng,
        account: &str,
    ) -> Self {
        let mut s = Self {
            logged_in,
            brokerage: false,
            competing: false,
            accounts_queried: false,
            suppressed: BTreeSet::new(),
            subscriptions: BTreeMap::new(),
            next_server_id: 0,
            last_activity: Instant::now(),
            idle_timeout,
            sso_session: hex_id(rng, 32),
            brokerage_session: String::new(),
            login_ms: chrono::Utc::now().timestamp_millis(),
            selected_account: account.to_string(),
            generation: 0,
            idle_expiries: 0,
        };
        if logged_in && authenticated {
            s.open_brokerage(rng);
        }
        s
    }

    /// Opens a new brokerage session (everything session-scoped starts empty).
    pub(crate) fn open_brokerage(&mut self, rng: &mut Rng) {
        self.brokerage = true;
        self.competing = false;
        self.accounts_queried = false;
        self.suppressed.clear();
        self.subscriptions.clear();
        self.next_server_id = 0;
        self.generation += 1;
        self.brokerage_session = format!("{:08x}.{:08x}", rng.next_u64() as u32, self.generation);
        self.last_activity = Instant::now();
    }

    /// Loses the brokerage session (timeout, restart, logout, competing takeover).
    pub(crate) fn lose_brokerage(&mut self) {
        self.brokerage = false;
        self.accounts_queried = false;
        self.suppressed.clear();
        self.subscriptions.clear();
    }

    /// Applies the idle timeout as of `now`; returns `true` when it just expired.
    pub(crate) fn expire_if_idle(&mut self, now: Instant) -> bool {
        if self.brokerage && now.saturating_duration_since(self.last_activity) >= self.idle_timeout
        {
            self.lose_brokerage();
            self.idle_expiries += 1;
            return true;
        }
        false
    }

    /// `authenticated` as the gateway reports it.
    pub(crate) fn authenticated(&self) -> bool {
        self.logged_in && self.brokerage && !self.competing
    }

    /// Whether `/iserver/*` endpoints that need a brokerage session may run.
    pub(crate) fn iserver_ready(&self) -> bool {
        self.authenticated()
    }
}

/// A lowercase hex id of `len` characters.
pub(crate) fn hex_id(rng: &mut Rng, len: usize) -> String {
    let mut s = String::with_capacity(len);
    while s.len() < len {
        s.push_str(&format!("{:016x}", rng.next_u64()));
    }
    s.truncate(len);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_idle_expiry_loses_brokerage_only() {
        let mut rng = Rng::new(1);
        let mut s = Session::new(true, true, Duration::from_millis(10), &mut rng, "DU1234567");
        s.subscriptions.insert(1, "q0".into());
        assert!(s.authenticated());
        let later = s.last_activity + Duration::from_millis(20);
        assert!(s.expire_if_idle(later));
        assert!(!s.authenticated());
        assert!(s.logged_in);
        assert!(s.subscriptions.is_empty());
    }

    #[test]
    fn session_competing_is_not_authenticated() {
        let mut rng = Rng::new(1);
        let mut s = Session::new(true, true, Duration::from_secs(60), &mut rng, "DU1234567");
        s.competing = true;
        assert!(!s.iserver_ready());
    }
}
