//! IBKR's pacing limits: a global 10 requests per second and the per-endpoint limits of the
//! facts file, each as a sliding window keyed by rule and (method, path template). A request
//! over a limit gets 429 with a `Retry-After` header; only accepted requests count towards the
//! windows. The penalty box (10 minutes after repeated 429s) is not simulated.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// One pacing rule.
#[derive(Debug, Clone)]
struct Rule {
    /// `None` matches any method.
    method: Option<&'static str>,
    /// A path template (relative to `/v1/api`); a trailing `*` makes it a prefix.
    pattern: &'static str,
    limit: usize,
    window: Duration,
}

const fn rule(
    method: Option<&'static str>,
    pattern: &'static str,
    limit: usize,
    window_ms: u64,
) -> Rule {
    Rule {
        method,
        pattern,
        limit,
        window: Duration::from_millis(window_ms),
    }
}

const MIN: u64 = 60_000;

fn rules() -> Vec<Rule> {
    vec![
        rule(Some("GET"), "/iserver/marketdata/snapshot", 10, 1_000),
        rule(Some("GET"), "/iserver/marketdata/history", 10, 1_000),
        rule(Some("GET"), "/iserver/marketdata/history", 50, MIN),
        rule(Some("GET"), "/iserver/scanner/params", 1, 15 * MIN),
        rule(Some("POST"), "/iserver/scanner/run", 1, 1_000),
        rule(Some("GET"), "/iserver/account/orders", 1, 5_000),
        rule(Some("GET"), "/iserver/account/trades", 1, 5_000),
        rule(Some("GET"), "/iserver/account/pnl/partitioned", 1, 5_000),
        rule(Some("GET"), "/portfolio/accounts", 1, 5_000),
        rule(Some("GET"), "/portfolio/subaccounts", 1, 5_000),
        rule(Some("POST"), "/pa/performance", 1, 15 * MIN),
        rule(Some("POST"), "/pa/summary", 1, 15 * MIN),
        rule(Some("POST"), "/pa/transactions", 1, 15 * MIN),
        rule(None, "/fyi/*", 1, 1_000),
        rule(Some("GET"), "/tickle", 1, 1_000),
        rule(Some("POST"), "/tickle", 1, 1_000),
        rule(Some("GET"), "/sso/validate", 1, MIN),
    ]
}

/// Global limit: requests per second through the gateway.
pub(crate) const GLOBAL_PER_SECOND: usize = 10;

/// A rejected request: how long to wait and which limit it hit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Paced {
    pub retry_after: Duration,
    pub limit: String,
}

/// Sliding windows for the global and per-endpoint limits.
#[derive(Debug)]
pub(crate) struct Pacer {
    pub enabled: bool,
    rules: Vec<Rule>,
    global: VecDeque<Instant>,
    windows: HashMap<(usize, String), VecDeque<Instant>>,
}

impl Pacer {
    /// A pacer, on or off.
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            rules: rules(),
            global: VecDeque::new(),
            windows: HashMap::new(),
        }
    }

    /// Forgets every window (control API "reset pacing").
    pub(crate) fn reset(&mut self) {
        self.global.clear();
        self.windows.clear();
    }

    /// Admits or rejects a request for `method` + `template` at `now`; admitted requests are
    /// counted.
    pub(crate) fn admit(
        &mut self,
        method: &str,
        template: &str,
        now: Instant,
    ) -> Result<(), Paced> {
        if !self.enabled {
            return Ok(());
        }
        let mut hits: Vec<(Option<usize>, Duration)> = vec![(None, Duration::from_secs(1))];
        for (i, r) in self.rules.iter().enumerate() {
            let method_ok = r.method.is_none_or(|m| m.eq_ignore_ascii_case(method));
            let path_ok = match r.pattern.strip_suffix('*') {
                Some(prefix) => template.starts_with(prefix),
                None => template == r.pattern,
            };
            if method_ok && path_ok {
                hits.push((Some(i), r.window));
            }
        }
        let key = format!("{} {}", method.to_ascii_uppercase(), template);
        let mut worst: Option<Paced> = None;
        for (rule, window) in &hits {
            let (limit, q) = match rule {
                None => (GLOBAL_PER_SECOND, &mut self.global),
                Some(i) => (
                    self.rules[*i].limit,
                    self.windows.entry((*i, key.clone())).or_default(),
                ),
            };
            while q
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= *window)
            {
                q.pop_front();
            }
            if q.len() >= limit {
                let oldest = *q.front().expect("non-empty window");
                let wait = *window - now.saturating_duration_since(oldest);
                let label = match rule {
                    None => format!("{GLOBAL_PER_SECOND} requests per second (global)"),
                    Some(i) => {
                        let r = &self.rules[*i];
                        format!(
                            "{} per {} s on {}",
                            r.limit,
                            r.window.as_secs_f64(),
                            r.pattern
                        )
                    }
                };
                if worst.as_ref().is_none_or(|w| wait > w.retry_after) {
                    worst = Some(Paced {
                        retry_after: wait,
                        limit: label,
                    });
                }
            }
        }
        if let Some(p) = worst {
            return Err(p);
        }
        for (rule, _) in &hits {
            match rule {
                None => self.global.push_back(now),
                Some(i) => self
                    .windows
                    .entry((*i, key.clone()))
                    .or_default()
                    .push_back(now),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_global_limit_rejects_eleventh_request_in_a_second() {
        let mut p = Pacer::new(true);
        let t = Instant::now();
        for _ in 0..10 {
            assert!(p.admit("GET", "/iserver/accounts", t).is_ok());
        }
        let err = p.admit("GET", "/iserver/accounts", t).unwrap_err();
        assert!(err.retry_after <= Duration::from_secs(1));
        assert!(
            p.admit("GET", "/iserver/accounts", t + Duration::from_millis(1_001))
                .is_ok()
        );
    }

    #[test]
    fn pacer_per_endpoint_limit_is_per_template() {
        let mut p = Pacer::new(true);
        let t = Instant::now();
        assert!(p.admit("GET", "/iserver/account/orders", t).is_ok());
        let err = p
            .admit("GET", "/iserver/account/orders", t + Duration::from_secs(1))
            .unwrap_err();
        assert!(err.retry_after > Duration::from_secs(3));
        assert!(
            p.admit("GET", "/iserver/account/trades", t + Duration::from_secs(1))
                .is_ok()
        );
    }

    #[test]
    fn pacer_fyi_prefix_rule_and_disabled_switch() {
        let mut p = Pacer::new(true);
        let t = Instant::now();
        assert!(p.admit("PUT", "/fyi/disclaimer/{typecode}", t).is_ok());
        assert!(p.admit("PUT", "/fyi/disclaimer/{typecode}", t).is_err());
        p.enabled = false;
        assert!(p.admit("PUT", "/fyi/disclaimer/{typecode}", t).is_ok());
    }
}
