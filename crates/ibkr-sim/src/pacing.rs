//! IBKR's pacing limits: a global 10 requests per second and the per-endpoint limits of the
//! facts file, read from the server crate's `spec/pacing.toml` (the same table the server's
//! client-side pacer reads), each as a sliding window keyed by rule and (method, path template). A request
//! over a limit gets 429 with a `Retry-After` header; only accepted requests count towards the
//! windows. The penalty box (10 minutes after repeated 429s) is not simulated.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The pacing table (`spec/pacing.toml` of the server crate): the one source of IBKR's limits
/// for this simulator and for the server's client-side pacer.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacingTable {
    /// Requests per second through the gateway, all endpoints together.
    pub global_per_second: usize,
    /// Per-endpoint windows.
    pub limit: Vec<PacingRule>,
}

/// One sliding window of [`PacingTable`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacingRule {
    /// HTTP method; `None` matches any.
    pub method: Option<String>,
    /// Path template under `/v1/api`; a trailing `*` makes it a prefix.
    pub path: String,
    /// Requests allowed in any window of `seconds`.
    pub count: usize,
    /// The window, in seconds.
    pub seconds: u64,
}

impl PacingRule {
    /// Whether a request for `method` on path template `template` counts towards this window.
    pub fn matches(&self, method: &str, template: &str) -> bool {
        let method_ok = self
            .method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method));
        let path_ok = match self.path.strip_suffix('*') {
            Some(prefix) => template.starts_with(prefix),
            None => template == self.path,
        };
        method_ok && path_ok
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

/// IBKR's pacing limits, parsed once from `spec/pacing.toml`.
pub fn pacing_table() -> &'static PacingTable {
    static TABLE: std::sync::LazyLock<PacingTable> = std::sync::LazyLock::new(|| {
        toml::from_str(include_str!("../../../spec/pacing.toml"))
            .unwrap_or_else(|e| panic!("spec/pacing.toml: {e}"))
    });
    &TABLE
}

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
    rules: &'static [PacingRule],
    global_per_second: usize,
    global: VecDeque<Instant>,
    windows: HashMap<(usize, String), VecDeque<Instant>>,
}

impl Pacer {
    /// A pacer, on or off.
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            rules: &pacing_table().limit,
            global_per_second: pacing_table().global_per_second,
            global: VecDeque::new(),
            windows: HashMap::new(),
        }
    }

    /// The global limit of direct (OAuth) access to api.ibkr.com: 50 requests per second per
    /// session, against the gateway's 10 (facts: IBKR's pacing page).
    pub(crate) const OAUTH_GLOBAL_PER_SECOND: usize = 50;

    /// The same pacer with another global limit (OAuth mode).
    pub(crate) fn with_global_per_second(mut self, per_second: usize) -> Self {
        self.global_per_second = per_second;
        self
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
            if r.matches(method, template) {
                hits.push((Some(i), r.window()));
            }
        }
        let key = format!("{} {}", method.to_ascii_uppercase(), template);
        let mut worst: Option<Paced> = None;
        for (rule, window) in &hits {
            let (limit, q) = match rule {
                None => (self.global_per_second, &mut self.global),
                Some(i) => (
                    self.rules[*i].count,
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
                    None => format!("{} requests per second (global)", self.global_per_second),
                    Some(i) => {
                        let r = &self.rules[*i];
                        format!("{} per {} s on {}", r.count, r.seconds, r.path)
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
