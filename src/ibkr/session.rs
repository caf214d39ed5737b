//! The session manager: keeps the gateway's brokerage session alive and usable, in-process.
//!
//! State machine (one per server, shared by every MCP session):
//!
//! ```text
//!            tickle ok, authenticated                      connection error
//! Starting ───────────────────────────► Ready ◄────────┐  (any state) ──► GatewayDown
//!    │                                   │  ▲           │
//!    │ connected, not authenticated      │  │ ssodh/init│ succeeded
//!    └──────────────► NotAuthenticated ◄─┘  └───────────┘ (with backoff: 1, 2, 4 … 60 s)
//!   401 / not connected ──► LoggedOut   (a human must log in at the gateway's page)
//!   competing ──► Competing             (reported; taken over only with --take-over-competing
//!                                        or an explicit init_brokerage_session compete=true)
//! ```
//!
//! Every `--tickle-interval` (60 s) while ready, every few seconds otherwise, it sends
//! `POST /tickle` and reads the brokerage auth state from the reply. It never stops on an error:
//! the loop catches everything and a supervisor restarts it should it panic. Entering `Ready`
//! starts a new brokerage session: the configured question ids are suppressed, and
//! `/iserver/accounts` is called (IBKR requires it once per session before order and some
//! account endpoints). Each transition is logged. Tool calls that need the brokerage session
//! call [`SessionManager::ensure_ready`], which makes one recovery attempt when it is not ready.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::Client;
use super::gateway::{self, Error, ops};

/// Where the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not checked yet.
    Starting,
    /// The gateway does not answer.
    GatewayDown,
    /// The gateway answers but nobody is logged in (a human must log in at its page).
    LoggedOut,
    /// Logged in, but the brokerage session is not authenticated (ssodh/init needed).
    NotAuthenticated,
    /// Another session (TWS, mobile, another gateway) holds the brokerage session.
    Competing,
    /// Authenticated: every tool can work.
    Ready,
}

/// Session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Tickle period while ready.
    pub tickle_interval: Duration,
    /// Question message ids to suppress at the start of every brokerage session.
    pub suppress_question_ids: Vec<String>,
    /// Take a competing session over automatically (ssodh/init with compete=true).
    pub take_over_competing: bool,
    /// Where a human logs in.
    pub login_url: String,
    /// The gateway's base URL.
    pub gateway_url: String,
    /// Whether `init_brokerage_session` is offered to the model (explanations name it only
    /// then).
    pub can_take_over: bool,
    /// `--auth oauth1`: the token holder (its state is part of the status; a 401 means the
    /// token, not a human login).
    pub oauth: Option<Arc<super::oauth::OAuth>>,
}

/// One state change.
#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    /// When (RFC 3339).
    pub at: String,
    /// Previous state.
    pub from: State,
    /// New state.
    pub to: State,
    /// Why.
    pub reason: String,
}

/// What `get_session_status`, `ibkr://session` and `/readyz` show.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Current state.
    pub state: State,
    /// What the state means and what to do, in words.
    pub explanation: String,
    /// Since when (RFC 3339).
    pub since: String,
    /// Last tickle or probe (RFC 3339).
    pub last_check: Option<String>,
    /// Last error seen.
    pub last_error: Option<String>,
    /// Brokerage sessions opened since start.
    pub brokerage_sessions: u64,
    /// `/iserver/accounts` was called in this brokerage session.
    pub accounts_loaded: bool,
    /// Accounts it returned.
    pub accounts: Vec<String>,
    /// Question ids suppressed for this brokerage session.
    pub suppressed_question_ids: Vec<String>,
    /// The gateway's base URL.
    pub gateway_url: String,
    /// Where a human logs in.
    pub login_url: String,
    /// Recent transitions, newest last.
    pub transitions: VecDeque<Transition>,
    /// `--auth oauth1`: the live session token's state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<super::oauth::AuthStatus>,
}

/// Why a tool cannot run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No connection to the gateway.
    GatewayDown(String),
    /// Nobody logged in.
    LoggedOut,
    /// The brokerage session could not be opened.
    NotAuthenticated(String),
    /// Another session holds the brokerage session.
    Competing,
}

/// The session manager (see the module docs).
#[derive(Debug)]
pub struct SessionManager {
    client: Client,
    config: SessionConfig,
    status: Mutex<Status>,
    since: Mutex<Instant>,
    next_init: Mutex<(Instant, Duration)>,
    wake: tokio::sync::Notify,
    recovering: tokio::sync::Mutex<()>,
    warm: Mutex<HashSet<String>>,
    checked: Mutex<Option<Instant>>,
}

fn explanation(state: State, config: &SessionConfig) -> String {
    let login_url = &config.login_url;
    match state {
        State::Starting => "checking the gateway".into(),
        State::GatewayDown => "the gateway does not answer; check that it runs (IBKR_MCP_GATEWAY_URL)".into(),
        State::LoggedOut if config.oauth.is_some() => {
            "IBKR does not accept this server's OAuth credentials (see last_error and auth); no \
             human login is involved: check the OAuth settings, or wait until IBKR activates a \
             new consumer key"
                .into()
        }
        State::LoggedOut => format!("nobody is logged in: a human must log in at {login_url}"),
        State::NotAuthenticated => {
            "logged in, but the brokerage session is not authenticated; the server is opening one (ssodh/init)".into()
        }
        State::Competing if config.can_take_over => {
            "another session (TWS, the mobile app, another gateway) holds the brokerage session; \
             take it over with init_brokerage_session compete=true only if the user agrees"
                .into()
        }
        State::Competing => {
            "another session (TWS, the mobile app, another gateway) holds the brokerage session; \
             the user can log out of it, or restart this server with --take-over-competing"
                .into()
        }
        State::Ready => "authenticated: all tools can work".into(),
    }
}

/// Whether a tool on `path` needs the brokerage session.
pub fn needs_brokerage_session(path: &str) -> bool {
    path.starts_with("/iserver/")
        && !matches!(
            path,
            "/iserver/auth/status" | "/iserver/auth/ssodh/init" | "/iserver/reauthenticate"
        )
}

/// Whether a tool on `path` needs `/iserver/accounts` to have been called in this session.
pub fn needs_accounts(path: &str) -> bool {
    needs_brokerage_session(path) && path != "/iserver/accounts"
}

struct Flags {
    authenticated: bool,
    connected: bool,
    competing: bool,
}

fn flags(v: &Value) -> Flags {
    let f = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    Flags {
        authenticated: f("authenticated"),
        connected: f("connected"),
        competing: f("competing"),
    }
}

enum Probe {
    Down(String),
    Unauthorized,
    /// No OAuth token could be obtained to sign the probe.
    AuthFailed(String),
    Flags(Flags),
    Odd(String),
}

impl SessionManager {
    /// A manager over `client` (not running until [`spawn`](Self::spawn)).
    pub fn new(client: Client, config: SessionConfig) -> Arc<Self> {
        let status = Status {
            state: State::Starting,
            explanation: explanation(State::Starting, &config),
            since: crate::audit::now(),
            last_check: None,
            last_error: None,
            brokerage_sessions: 0,
            accounts_loaded: false,
            accounts: Vec::new(),
            suppressed_question_ids: Vec::new(),
            gateway_url: config.gateway_url.clone(),
            login_url: config.login_url.clone(),
            transitions: VecDeque::new(),
            auth: None,
        };
        Arc::new(Self {
            client,
            config,
            status: Mutex::new(status),
            since: Mutex::new(Instant::now()),
            next_init: Mutex::new((Instant::now(), Duration::from_secs(1))),
            wake: tokio::sync::Notify::new(),
            recovering: tokio::sync::Mutex::new(()),
            warm: Mutex::new(HashSet::new()),
            checked: Mutex::new(None),
        })
    }

    /// A snapshot of the status.
    pub fn status(&self) -> Status {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        status.auth = self.config.oauth.as_ref().map(|o| o.status());
        status
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).state
    }

    /// Runs the keep-alive loop until `cancel`, restarting it should it ever panic.
    pub fn spawn(self: &Arc<Self>, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            while !cancel.is_cancelled() {
                let runner = this.clone();
                let token = cancel.clone();
                let result = tokio::spawn(async move { runner.run(token).await }).await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "session manager stopped unexpectedly; restarting it");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        })
    }

    async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            self.tick().await;
            let pause = if self.state() == State::Ready {
                self.config.tickle_interval
            } else {
                self.config.tickle_interval.min(Duration::from_secs(2))
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.wake.notified() => {}
                () = cancel.cancelled() => return,
            }
        }
    }

    /// Asks the loop to check now (a tool saw a 401, say).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn set(&self, state: State, reason: impl Into<String>) {
        let reason = reason.into();
        *self.checked.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.last_check = Some(crate::audit::now());
        if s.state == state {
            return;
        }
        tracing::info!(from = ?s.state, to = ?state, %reason, "gateway session state changed");
        let t = Transition {
            at: crate::audit::now(),
            from: s.state,
            to: state,
            reason,
        };
        s.transitions.push_back(t);
        while s.transitions.len() > 20 {
            s.transitions.pop_front();
        }
        // Whatever the brokerage session held (the account list call, suppressed questions,
        // market-data subscriptions) ends with it, and a new one starts empty.
        if state == State::Ready {
            s.brokerage_sessions += 1;
        }
        s.accounts_loaded = false;
        s.accounts.clear();
        s.suppressed_question_ids.clear();
        self.warm.lock().unwrap_or_else(|p| p.into_inner()).clear();
        s.state = state;
        s.explanation = explanation(state, &self.config);
        s.since = crate::audit::now();
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn note_error(&self, e: impl Into<String>) {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_error = Some(e.into());
    }

    async fn probe(&self, tickle: bool) -> Probe {
        let probe = self.probe_once(tickle).await;
        // With OAuth a 401 means the token, which the request hooks have just dropped: the
        // second probe is signed with a new one.
        if matches!(probe, Probe::Unauthorized) && self.config.oauth.is_some() {
            return self.probe_once(tickle).await;
        }
        probe
    }

    async fn probe_once(&self, tickle: bool) -> Probe {
        let op = if tickle {
            ops::TICKLE
        } else {
            ops::AUTH_STATUS
        };
        let reply = match gateway::call(&self.client, op, serde_json::json!({})).await {
            Ok(reply) => reply,
            Err(e @ Error::Transport { .. }) => return Probe::Down(e.to_string()),
            Err(Error::Refused(super::hooks::Refusal::Auth { detail })) => {
                return Probe::AuthFailed(detail);
            }
            Err(e) => return Probe::Odd(e.to_string()),
        };
        if reply.status == 401 {
            return Probe::Unauthorized;
        }
        let v = match reply.json() {
            Ok(v) => v,
            Err(Error::Status {
                status, message, ..
            }) => {
                return Probe::Odd(format!("HTTP {status}: {message}"));
            }
            Err(e) => return Probe::Odd(e.to_string()),
        };
        let auth = if tickle {
            v.pointer("/iserver/authStatus").cloned()
        } else {
            Some(v)
        };
        match auth {
            Some(a) if a.is_object() => Probe::Flags(flags(&a)),
            _ => Probe::Odd("the reply carries no auth status".into()),
        }
    }

    /// One keep-alive round.
    async fn tick(&self) {
        let mut probe = self.probe(true).await;
        if let Probe::Odd(_) = probe {
            // The tickle answered without an auth status: ask directly.
            probe = self.probe(false).await;
        }
        self.apply(probe, true).await;
    }

    /// Moves the state machine on a probe; opens a brokerage session when it can.
    async fn apply(&self, probe: Probe, may_init: bool) {
        match probe {
            Probe::Down(e) => {
                self.note_error(e.clone());
                self.set(State::GatewayDown, e);
            }
            Probe::Unauthorized => self.set(State::LoggedOut, "the gateway answered 401"),
            Probe::AuthFailed(e) => {
                self.note_error(e.clone());
                self.set(State::LoggedOut, e);
            }
            Probe::Odd(e) => {
                self.note_error(e.clone());
                tracing::debug!(error = %e, "session check inconclusive");
            }
            Probe::Flags(f) if f.authenticated => {
                let was = self.state();
                self.set(State::Ready, "the brokerage session is authenticated");
                if was != State::Ready {
                    self.on_new_session().await;
                }
            }
            Probe::Flags(f) if f.competing && !self.config.take_over_competing => {
                self.set(
                    State::Competing,
                    "another session holds the brokerage session",
                );
            }
            Probe::Flags(f) if f.connected || f.competing => {
                self.set(
                    State::NotAuthenticated,
                    "connected, brokerage session not authenticated",
                );
                if may_init {
                    self.try_init(f.competing).await;
                }
            }
            Probe::Flags(_) => self.set(State::LoggedOut, "the gateway is not connected to IBKR"),
        }
    }

    /// `ssodh/init` with backoff; then checks again.
    async fn try_init(&self, compete: bool) {
        {
            let next = self.next_init.lock().unwrap_or_else(|p| p.into_inner());
            if Instant::now() < next.0 {
                return;
            }
        }
        let body = serde_json::json!({ "body": { "publish": true, "compete": compete } });
        let failure = match gateway::call(&self.client, ops::SSODH_INIT, body).await {
            Ok(reply) if reply.is_success() => None,
            Ok(reply) => Some(format!(
                "HTTP {}: {}",
                reply.status,
                crate::error::ibkr_message(&reply.body)
            )),
            Err(e) => Some(format!("no reply ({e})")),
        };
        {
            let mut next = self.next_init.lock().unwrap_or_else(|p| p.into_inner());
            if failure.is_none() {
                *next = (Instant::now(), Duration::from_secs(1));
            } else {
                next.1 = (next.1 * 2).min(Duration::from_secs(60));
                *next = (Instant::now() + next.1, next.1);
            }
        }
        if let Some(why) = failure {
            self.note_error(format!("ssodh/init failed: {why}"));
            tracing::warn!(%why, "could not open a brokerage session (ssodh/init)");
            return;
        }
        // The gateway takes a moment to report the new session.
        for wait in [100u64, 300, 600, 1000] {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            if let Probe::Flags(f) = self.probe(false).await
                && f.authenticated
            {
                self.set(State::Ready, "brokerage session opened (ssodh/init)");
                self.on_new_session().await;
                return;
            }
        }
    }

    async fn on_new_session(&self) {
        if !self.config.suppress_question_ids.is_empty() {
            let body =
                serde_json::json!({ "body": { "messageIds": self.config.suppress_question_ids } });
            match gateway::call(&self.client, ops::SUPPRESS_QUESTIONS, body).await {
                Ok(r) if r.is_success() => {
                    self.status
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .suppressed_question_ids = self.config.suppress_question_ids.clone();
                    tracing::info!(ids = ?self.config.suppress_question_ids, "order questions suppressed for this session");
                }
                other => {
                    let why = match other {
                        Ok(r) => format!("HTTP {}", r.status),
                        Err(e) => format!("no reply ({e})"),
                    };
                    self.note_error(format!("suppressing question ids failed: {why}"));
                    tracing::warn!(%why, "could not suppress order questions");
                }
            }
        }
        self.load_accounts().await;
    }

    async fn load_accounts(&self) -> bool {
        match super::fetch_accounts(&self.client).await {
            Ok(v) => {
                let accounts = super::market::string_list(v.get("accounts"));
                let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
                s.accounts_loaded = true;
                s.accounts = accounts;
                true
            }
            Err(e) => {
                self.note_error(format!("/iserver/accounts failed: {e}"));
                false
            }
        }
    }

    /// Checks the gateway now when the last check is older than `age` (so the status a model
    /// reads is never minutes old).
    pub async fn refresh_if_older_than(&self, age: Duration) {
        let stale = || {
            self.checked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none_or(|t| t.elapsed() > age)
        };
        if !stale() {
            return;
        }
        let _one_at_a_time = self.recovering.lock().await;
        if stale() {
            self.tick().await;
        }
    }

    /// A tool could not connect to the gateway: say so now rather than at the next tickle.
    pub fn saw_unreachable(&self, detail: &str) {
        self.note_error(detail.to_string());
        self.set(
            State::GatewayDown,
            format!("a request could not connect: {detail}"),
        );
        self.wake();
    }

    /// Before a tool that needs the brokerage session: fine when ready; otherwise one recovery
    /// attempt (probe, ssodh/init if logged in), then the reason it cannot run.
    pub async fn ensure_ready(&self, need_accounts: bool) -> Result<(), Problem> {
        let ready = |s: &Status| s.state == State::Ready && (!need_accounts || s.accounts_loaded);
        if ready(&self.status()) {
            return Ok(());
        }
        let _one_at_a_time = self.recovering.lock().await;
        if ready(&self.status()) {
            return Ok(());
        }
        if self.state() != State::Ready {
            let probe = self.probe(false).await;
            // Allow an immediate ssodh/init here: this is the call's one recovery attempt.
            *self.next_init.lock().unwrap_or_else(|p| p.into_inner()) =
                (Instant::now(), Duration::from_secs(1));
            self.apply(probe, true).await;
        }
        let status = self.status();
        match status.state {
            State::Ready => {
                if need_accounts && !status.accounts_loaded && !self.load_accounts().await {
                    return Err(Problem::NotAuthenticated(
                        status
                            .last_error
                            .unwrap_or_else(|| "/iserver/accounts failed".into()),
                    ));
                }
                Ok(())
            }
            State::GatewayDown => Err(Problem::GatewayDown(
                status.last_error.unwrap_or_else(|| "no connection".into()),
            )),
            State::LoggedOut | State::Starting => Err(Problem::LoggedOut),
            State::Competing => Err(Problem::Competing),
            State::NotAuthenticated => {
                Err(Problem::NotAuthenticated(status.last_error.unwrap_or_else(
                    || "the brokerage session did not open".into(),
                )))
            }
        }
    }

    /// A tool got HTTP 401: the session is gone; check now.
    pub fn saw_unauthorized(&self) {
        let state = self.state();
        if state == State::Ready {
            self.set(State::NotAuthenticated, "a request was answered 401");
        }
        self.wake();
    }

    /// Whether snapshots for `conid` already returned values in this brokerage session.
    pub fn is_warm(&self, conid: &str) -> bool {
        self.warm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(conid)
    }

    /// Records that `conid` returned values.
    pub fn mark_warm(&self, conid: &str) {
        self.warm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(conid.to_string());
    }

    /// Forgets warm contracts (market data was unsubscribed).
    pub fn forget_warm(&self, conid: Option<&str>) {
        let mut w = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        match conid {
            Some(c) => {
                w.remove(c);
            }
            None => w.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokerage_session_is_needed_by_iserver_tools_only() {
        assert!(needs_brokerage_session("/iserver/account/orders"));
        assert!(needs_brokerage_session("/iserver/accounts"));
        assert!(!needs_accounts("/iserver/accounts"));
        assert!(needs_accounts("/iserver/account/{accountId}/orders"));
        assert!(!needs_brokerage_session("/iserver/auth/status"));
        assert!(!needs_brokerage_session("/iserver/auth/ssodh/init"));
        assert!(!needs_brokerage_session("/portfolio/accounts"));
        assert!(!needs_brokerage_session("/tickle"));
    }
}
