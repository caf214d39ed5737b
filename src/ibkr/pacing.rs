//! Client-side pacing: IBKR's documented rate limits, enforced before a request leaves the
//! process, shared by every MCP session (one [`Pacer`] per server).
//!
//! Limits (gateway facts): 10 requests/s overall, and per endpoint: snapshot 10/s; history
//! 10/s and 50/min; scanner params 1 per 15 min; scanner run 1/s; live orders, trades,
//! partitioned P&L, portfolio accounts and subaccounts 1 per 5 s; Portfolio Analyst reports 1
//! per 15 min; FYI endpoints 1/s; tickle 1/s; SSO validation 1/min. Each period is taken 10 %
//! longer (at least 50 ms) than IBKR's, so timing jitter between us and the gateway never
//! turns an admitted request into a 429.
//!
//! A request waits for its turn up to a cap; if its turn is further away it is refused with
//! the limit and the time to retry, never blocked for minutes. A 429 from the gateway stops
//! every request until its `Retry-After` (or an escalating default) has passed.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{Quota, RateLimiter};

use super::hooks::{Gate, Refusal};

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    DefaultClock,
    governor::middleware::NoOpMiddleware<<DefaultClock as governor::clock::Clock>::Instant>,
>;

struct Bucket {
    description: String,
    limiter: Limiter,
}

/// One documented limit: `count` requests per `period`.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Requests allowed per period.
    pub count: u32,
    /// The period.
    pub period: Duration,
}

const fn per(count: u32, secs: u64) -> Limit {
    Limit {
        count,
        period: Duration::from_secs(secs),
    }
}

/// IBKR's documented per-endpoint limits, by operationId.
pub fn documented_limits() -> Vec<(&'static str, Vec<Limit>)> {
    let fyi = [
        "get_fyi_notifications",
        "get_fyi_unreadnumber",
        "put_fyi_notifications_notification_id",
        "get_fyi_settings",
        "post_fyi_settings_typecode",
        "get_fyi_disclaimer_typecode",
        "put_fyi_disclaimer_typecode",
        "get_fyi_deliveryoptions",
        "put_fyi_deliveryoptions_email",
        "post_fyi_deliveryoptions_device",
        "delete_fyi_deliveryoptions_device_id",
    ];
    let mut v = vec![
        ("get_iserver_marketdata_snapshot", vec![per(10, 1)]),
        (
            "get_iserver_marketdata_history",
            vec![per(10, 1), per(50, 60)],
        ),
        ("get_iserver_scanner_params", vec![per(1, 900)]),
        ("post_iserver_scanner_run", vec![per(1, 1)]),
        ("get_iserver_account_orders", vec![per(1, 5)]),
        ("get_iserver_account_trades", vec![per(1, 5)]),
        ("get_iserver_account_pnl_partitioned", vec![per(1, 5)]),
        ("get_portfolio_accounts", vec![per(1, 5)]),
        ("get_portfolio_subaccounts", vec![per(1, 5)]),
        ("post_pa_performance", vec![per(1, 900)]),
        ("post_pa_transactions", vec![per(1, 900)]),
        ("post_tickle", vec![per(1, 1)]),
        ("get_sso_validate", vec![per(1, 60)]),
    ];
    v.extend(fyi.iter().map(|op| (*op, vec![per(1, 1)])));
    v
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

/// The global limit through the gateway.
pub const GLOBAL: Limit = per(10, 1);

fn bucket(what: String, limit: Limit) -> Bucket {
    // 10 % longer, at least 50 ms, per replenished request.
    let base = limit.period / limit.count.max(1);
    let slack = (base / 10).max(Duration::from_millis(50));
    let quota = Quota::with_period(base + slack)
        .expect("non-zero period")
        .allow_burst(NonZeroU32::new(limit.count.max(1)).expect("non-zero"));
    let description = format!(
        "{} request{} per {} for {what}",
        limit.count,
        if limit.count == 1 { "" } else { "s" },
        human(limit.period)
    );
    Bucket {
        description,
        limiter: RateLimiter::direct(quota),
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
    global: Bucket,
    endpoints: HashMap<&'static str, Vec<Bucket>>,
    max_wait: Duration,
    blocked: Mutex<Block>,
}

#[derive(Default)]
struct Block {
    until: Option<Instant>,
    strikes: u32,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer")
            .field("endpoints", &self.endpoints.len())
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

impl Pacer {
    /// IBKR's documented limits; a request waits at most `max_wait` for its turn.
    pub fn new(max_wait: Duration) -> Self {
        Self::with_limits(GLOBAL, documented_limits(), max_wait)
    }

    /// Custom limits (tests).
    pub fn with_limits(
        global: Limit,
        endpoints: Vec<(&'static str, Vec<Limit>)>,
        max_wait: Duration,
    ) -> Self {
        Self {
            global: bucket("all requests through the gateway".into(), global),
            endpoints: endpoints
                .into_iter()
                .map(|(op, limits)| {
                    (
                        op,
                        limits
                            .into_iter()
                            .map(|l| bucket(format!("`{op}`"), l))
                            .collect(),
                    )
                })
                .collect(),
            max_wait,
            blocked: Mutex::new(Block::default()),
        }
    }

    async fn take(&self, b: &Bucket, deadline: Instant) -> Result<(), Refusal> {
        loop {
            match b.limiter.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    let now = Instant::now();
                    if now + wait > deadline {
                        return Err(Refusal::Paced {
                            limit: b.description.clone(),
                            retry_after: wait,
                        });
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn admit_op(&self, operation_id: &'static str) -> Result<(), Refusal> {
        let deadline = Instant::now() + self.max_wait;
        let blocked_until = self.blocked.lock().unwrap_or_else(|p| p.into_inner()).until;
        if let Some(until) = blocked_until {
            let now = Instant::now();
            if until > now {
                if until > deadline {
                    return Err(Refusal::Paced {
                        limit: "no requests while IBKR's rate-limit penalty (HTTP 429) lasts"
                            .into(),
                        retry_after: until - now,
                    });
                }
                tokio::time::sleep(until - now).await;
            }
        }
        if let Some(buckets) = self.endpoints.get(operation_id) {
            for b in buckets {
                self.take(b, deadline).await?;
            }
        }
        self.take(&self.global, deadline).await
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
        let mut b = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
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
            Ok(()) => panic!("a request whose turn is beyond the cap must be refused"),
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
            Ok(()) => panic!("paused"),
        }
    }

    #[test]
    fn documented_limits_read_like_the_facts() {
        let b = bucket("`get_iserver_account_orders`".into(), per(1, 5));
        assert_eq!(
            b.description,
            "1 request per 5 s for `get_iserver_account_orders`"
        );
        assert_eq!(
            bucket("x".into(), per(1, 900)).description,
            "1 request per 15 min for x"
        );
    }
}
