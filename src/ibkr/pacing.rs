//! Client-side pacing: IBKR's documented rate limits, enforced before a request leaves the
//! process, shared by every MCP session (one [`Pacer`] per server).
//!
//! Limits (gateway facts, in `spec/pacing.toml`, the table the simulator reads too): 10
//! requests/s overall, and per endpoint: snapshot 10/s; history
//! 10/s and 50/min; scanner params 1 per 15 min; scanner run 1/s; live orders, trades,
//! partitioned P&L, portfolio accounts and subaccounts 1 per 5 s; Portfolio Analyst reports 1
//! per 15 min; FYI endpoints 1/s; tickle 1/s; SSO validation 1/min.
//!
//! Each limit is a **sliding window**: a request is admitted only if fewer than `count`
//! requests were admitted in the last `period`, so the limit holds over *every* window of that
//! length, as the gateway counts (a token bucket would let a burst plus its refill through in
//! one period). Each window is kept 10 % longer than IBKR's (at least 50 ms), so timing jitter
//! between us and the gateway never turns an admitted request into a 429. A request is admitted
//! by all its windows (global and per endpoint) at once, under one lock, so concurrent callers
//! can never overbook one window while waiting on another.
//!
//! A request waits for its turn up to a cap; if its turn is further away it is refused with
//! the limit and the time to retry, never blocked for minutes. A 429 from the gateway stops
//! every request until its `Retry-After` (or an escalating default) has passed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::hooks::{Gate, Refusal};

/// One window: at most `count` admissions in any `period`.
#[derive(Debug)]
struct Window {
    description: String,
    count: usize,
    period: Duration,
    admitted: VecDeque<Instant>,
}

impl Window {
    /// How long until one more request fits (zero: now).
    fn wait(&mut self, now: Instant) -> Duration {
        while self
            .admitted
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.period)
        {
            self.admitted.pop_front();
        }
        if self.admitted.len() < self.count {
            return Duration::ZERO;
        }
        let oldest = self.admitted[self.admitted.len() - self.count];
        (oldest + self.period).saturating_duration_since(now)
    }
}

/// One documented limit: `count` requests per `period`.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Requests allowed per period.
    pub count: u32,
    /// The period.
    pub period: Duration,
}

#[cfg(test)]
const fn per(count: u32, secs: u64) -> Limit {
    Limit {
        count,
        period: Duration::from_secs(secs),
    }
}

/// IBKR's documented per-endpoint limits, by operationId: the windows of the shared pacing
/// table (`spec/pacing.toml`, which the simulator reads too) that match each generated
/// operation's method and path.
pub fn documented_limits() -> Vec<(&'static str, Vec<Limit>)> {
    let table = ibkr_sim::pacing_table();
    super::operations::OPERATIONS
        .iter()
        .filter_map(|op| {
            let limits: Vec<Limit> = table
                .limit
                .iter()
                .filter(|r| r.matches(op.method, op.path))
                .map(|r| Limit {
                    count: u32::try_from(r.count).unwrap_or(u32::MAX),
                    period: r.window(),
                })
                .collect();
            (!limits.is_empty()).then_some((op.operation_id, limits))
        })
        .collect()
}

/// Operations whose successful replies the server serves again instead of asking IBKR, each for
/// as long as its documented limit spaces two requests: reference data that IBKR allows to be
/// requested only rarely. The scanner parameters (scan types, instruments, filters, locations;
/// a large document that changes rarely) may be requested once per 15 minutes; without the
/// cache every second look at them would be refused for up to 15 minutes.
pub fn cached_replies() -> Vec<(String, Duration)> {
    const REFERENCE_DATA: &[&str] = &["get_iserver_scanner_params"];
    documented_limits()
        .into_iter()
        .filter(|(op, _)| REFERENCE_DATA.contains(op))
        .filter_map(|(op, limits)| {
            let spacing = limits.iter().map(|l| l.period / l.count.max(1)).max()?;
            Some((op.to_string(), spacing))
        })
        .collect()
}

/// The global limit through the gateway (from the shared pacing table).
pub fn global() -> Limit {
    Limit {
        count: u32::try_from(ibkr_sim::pacing_table().global_per_second).unwrap_or(u32::MAX),
        period: Duration::from_secs(1),
    }
}

fn window(what: String, limit: Limit) -> Window {
    // 10 % longer, at least 50 ms.
    let slack = (limit.period / 10).max(Duration::from_millis(50));
    let description = format!(
        "{} request{} per {} for {what}",
        limit.count,
        if limit.count == 1 { "" } else { "s" },
        human(limit.period)
    );
    Window {
        description,
        count: limit.count.max(1) as usize,
        period: limit.period + slack,
        admitted: VecDeque::new(),
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        1 => "second".into(),
        60 => "minute".into(),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Rate limits shared by every request of one server.
pub struct Pacer {
    state: Mutex<Windows>,
    max_wait: Duration,
}

struct Windows {
    global: Window,
    endpoints: HashMap<&'static str, Vec<Window>>,
    blocked: Block,
}

#[derive(Default)]
struct Block {
    until: Option<Instant>,
    strikes: u32,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer")
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl Pacer {
    /// IBKR's documented limits; a request waits at most `max_wait` for its turn.
    pub fn new(max_wait: Duration) -> Self {
        Self::with_limits(global(), documented_limits(), max_wait)
    }

    /// Custom limits (tests).
    pub fn with_limits(
        global: Limit,
        endpoints: Vec<(&'static str, Vec<Limit>)>,
        max_wait: Duration,
    ) -> Self {
        Self {
            state: Mutex::new(Windows {
                global: window("all requests through the gateway".into(), global),
                endpoints: endpoints
                    .into_iter()
                    .map(|(op, limits)| {
                        (
                            op,
                            limits
                                .into_iter()
                                .map(|l| window(format!("`{op}`"), l))
                                .collect(),
                        )
                    })
                    .collect(),
                blocked: Block::default(),
            }),
            max_wait,
        }
    }

    /// Admits now (recording the request in every window it counts in), or says how long to
    /// wait and which limit is the reason.
    fn try_admit(&self, operation_id: &str, now: Instant) -> Result<(), (Duration, String)> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = st.blocked.until.filter(|u| *u > now) {
            return Err((
                until - now,
                "no requests while IBKR's rate-limit penalty (HTTP 429) lasts".into(),
            ));
        }
        let Windows {
            global, endpoints, ..
        } = &mut *st;
        let mut worst: Option<(Duration, &str)> = None;
        for w in endpoints
            .get_mut(operation_id)
            .into_iter()
            .flatten()
            .chain(std::iter::once(&mut *global))
        {
            let wait = w.wait(now);
            if !wait.is_zero() && worst.is_none_or(|(d, _)| wait > d) {
                worst = Some((wait, w.description.as_str()));
            }
        }
        if let Some((wait, why)) = worst {
            return Err((wait, why.to_string()));
        }
        for w in endpoints
            .get_mut(operation_id)
            .into_iter()
            .flatten()
            .chain(std::iter::once(&mut *global))
        {
            w.admitted.push_back(now);
        }
        Ok(())
    }

    async fn admit_op(&self, operation_id: &'static str) -> Result<(), Refusal> {
        let deadline = Instant::now() + self.max_wait;
        loop {
            let now = Instant::now();
            match self.try_admit(operation_id, now) {
                Ok(()) => return Ok(()),
                Err((wait, limit)) => {
                    if now + wait > deadline {
                        return Err(Refusal::Paced {
                            limit,
                            retry_after: wait,
                        });
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

impl Gate for Pacer {
    fn admit<'a>(
        &'a self,
        operation_id: &'static str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Refusal>> + Send + 'a>> {
        Box::pin(self.admit_op(operation_id))
    }

    fn observe(&self, operation_id: &'static str, status: u16, retry_after: Option<Duration>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let b = &mut st.blocked;
        if status == 429 {
            b.strikes += 1;
            // Without Retry-After: 10 s, doubling on repeats, at most IBKR's 10-minute penalty box.
            let fallback = Duration::from_secs(10) * 2u32.saturating_pow(b.strikes - 1);
            let pause = retry_after
                .unwrap_or(fallback)
                .min(Duration::from_secs(600));
            b.until = Some(Instant::now() + pause);
            tracing::warn!(
                operation = operation_id,
                pause_s = pause.as_secs_f64(),
                "gateway answered 429: pausing every request"
            );
        } else if (200..300).contains(&status) {
            b.strikes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cached_replies_last_as_long_as_the_documented_spacing() {
        assert_eq!(
            cached_replies(),
            vec![(
                "get_iserver_scanner_params".to_string(),
                Duration::from_secs(900)
            )]
        );
    }

    use super::*;

    #[tokio::test]
    async fn requests_wait_within_the_cap_and_are_refused_beyond_it() {
        let slow = || {
            vec![(
                "slow",
                vec![Limit {
                    count: 1,
                    period: Duration::from_millis(300),
                }],
            )]
        };
        let patient = Pacer::with_limits(per(100, 1), slow(), Duration::from_secs(5));
        let start = Instant::now();
        patient.admit_op("slow").await.unwrap();
        patient.admit_op("slow").await.unwrap(); // waited for its turn
        assert!(start.elapsed() >= Duration::from_millis(300));

        let hasty = Pacer::with_limits(per(100, 1), slow(), Duration::from_millis(100));
        hasty.admit_op("slow").await.unwrap();
        match hasty.admit_op("slow").await {
            Err(Refusal::Paced { limit, retry_after }) => {
                assert!(limit.contains("`slow`"), "{limit}");
                assert!(retry_after > Duration::from_millis(100), "{retry_after:?}");
            }
            other => panic!("a request whose turn is beyond the cap must be refused: {other:?}"),
        }
        // Other endpoints are unaffected.
        hasty.admit_op("other").await.unwrap();
    }

    #[tokio::test]
    async fn a_429_pauses_everything_for_retry_after() {
        let p = Pacer::with_limits(per(100, 1), vec![], Duration::from_millis(100));
        p.observe("x", 429, Some(Duration::from_secs(30)));
        match p.admit_op("y").await {
            Err(Refusal::Paced { limit, retry_after }) => {
                assert!(limit.contains("429"), "{limit}");
                assert!(retry_after > Duration::from_secs(29));
            }
            other => panic!("paused: {other:?}"),
        }
    }

    #[test]
    fn the_shared_table_gives_each_operation_its_windows_and_every_rule_is_used() {
        let limits: std::collections::HashMap<_, _> = documented_limits().into_iter().collect();
        let of = |op: &str| {
            limits.get(op).map(|l| {
                l.iter()
                    .map(|l| (l.count, l.period.as_secs()))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(of("get_iserver_account_orders"), Some(vec![(1, 5)]));
        assert_eq!(
            of("get_iserver_marketdata_history"),
            Some(vec![(10, 1), (50, 60)])
        );
        assert_eq!(of("post_pa_transactions"), Some(vec![(1, 900)]));
        assert_eq!(of("post_tickle"), Some(vec![(1, 1)]));
        assert_eq!(of("get_fyi_unreadnumber"), Some(vec![(1, 1)]));
        assert_eq!(of("get_iserver_accounts"), None);
        assert_eq!((global().count, global().period.as_secs()), (10, 1));
        // Every window applies to some operation, except the one the facts list for an
        // endpoint the pinned document lacks (kept for documents that have it).
        let unused: Vec<String> = ibkr_sim::pacing_table()
            .limit
            .iter()
            .filter(|rule| {
                !super::super::operations::OPERATIONS
                    .iter()
                    .any(|op| rule.matches(op.method, op.path))
            })
            .map(|r| format!("{} {}", r.method.as_deref().unwrap_or("*"), r.path))
            .collect();
        assert_eq!(unused, vec!["POST /pa/summary"]);
    }

    #[test]
    fn documented_limits_read_like_the_facts() {
        let b = window("`get_iserver_account_orders`".into(), per(1, 5));
        assert_eq!(
            b.description,
            "1 request per 5 s for `get_iserver_account_orders`"
        );
        assert_eq!(
            window("x".into(), per(1, 900)).description,
            "1 request per 15 min for x"
        );
    }

    /// The defect of a token bucket: a burst plus its refill within one period. Here no window
    /// of the documented length holds more than the limit, globally or per endpoint.
    #[tokio::test]
    async fn limits_hold_over_every_sliding_window() {
        let p = Pacer::with_limits(
            per(10, 1),
            vec![("snap", vec![per(4, 1)])],
            Duration::from_secs(30),
        );
        let mut all = Vec::new();
        let mut snaps = Vec::new();
        for i in 0..30 {
            let op = if i % 2 == 0 { "snap" } else { "other" };
            p.admit_op(op).await.unwrap();
            all.push(Instant::now());
            if op == "snap" {
                snaps.push(Instant::now());
            }
        }
        let most_in_a_second = |times: &[Instant]| {
            times
                .iter()
                .map(|t| {
                    times
                        .iter()
                        .filter(|u| **u >= *t && u.duration_since(*t) < Duration::from_secs(1))
                        .count()
                })
                .max()
                .unwrap_or(0)
        };
        assert!(most_in_a_second(&all) <= 10, "{}", most_in_a_second(&all));
        assert!(
            most_in_a_second(&snaps) <= 4,
            "{}",
            most_in_a_second(&snaps)
        );
    }
}
