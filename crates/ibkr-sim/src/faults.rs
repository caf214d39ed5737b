//! Fault injection decisions: latency per path, 5xx, dropped connections and garbage bodies,
//! drawn from a generator seeded by the simulator seed, plus the one-shot "drop after accept"
//! trap for orders. The server and gateway layers act on these decisions; this module only
//! decides.

use std::time::Duration;

use crate::config::Faults;
use crate::rng::Rng;

/// What to do with one request, decided before it is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Before {
    /// Handle it.
    Proceed,
    /// Answer with this 5xx status instead.
    ServerError(u16),
    /// Close the connection without a response.
    Drop,
}

/// Fault state.
#[derive(Debug)]
pub(crate) struct FaultState {
    pub config: Faults,
    rng: Rng,
    /// Drop the connection after the next order placement (or reply, or modify) that books an
    /// order.
    pub drop_after_accept: bool,
}

impl FaultState {
    /// Fault state for `config`, drawing from `seed`.
    pub(crate) fn new(config: Faults, seed: u64) -> Self {
        Self {
            config,
            rng: Rng::derived(seed, 0xFA17),
            drop_after_accept: false,
        }
    }

    fn applies(&self, path: &str) -> bool {
        self.config.only_prefixes.is_empty()
            || self
                .config
                .only_prefixes
                .iter()
                .any(|p| path.starts_with(p.as_str()))
    }

    /// Added latency for `path` (relative to `/v1/api`).
    pub(crate) fn latency(&self, path: &str) -> Duration {
        let by_prefix = self
            .config
            .latency_by_prefix
            .iter()
            .filter(|(p, _)| path.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, ms)| *ms);
        Duration::from_millis(by_prefix.unwrap_or(self.config.latency_ms))
    }

    /// Decides what happens to a request for `path` before it is handled.
    pub(crate) fn before(&mut self, path: &str) -> Before {
        if !self.applies(path) {
            return Before::Proceed;
        }
        if self.rng.chance(self.config.drop_rate) {
            return Before::Drop;
        }
        if self.rng.chance(self.config.error_rate) {
            return Before::ServerError(if self.rng.below(2) == 0 { 500 } else { 503 });
        }
        Before::Proceed
    }

    /// Decides whether a handled response's body is replaced by garbage; returns the garbage.
    pub(crate) fn garbage(&mut self, path: &str, body: &[u8]) -> Option<Vec<u8>> {
        if !self.applies(path) || !self.rng.chance(self.config.garbage_rate) {
            return None;
        }
        if self.rng.below(2) == 0 && body.len() > 2 {
            Some(body[..body.len() / 2].to_vec())
        } else {
            Some(b"<html><body><h1>Gateway error</h1><p>upstream sent an invalid response</p></body></html>".to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_rate_one_always_fires_and_zero_never() {
        let mut f = FaultState::new(
            Faults {
                error_rate: 1.0,
                ..Faults::default()
            },
            1,
        );
        assert!(matches!(
            f.before("/iserver/accounts"),
            Before::ServerError(_)
        ));
        let mut g = FaultState::new(Faults::default(), 1);
        assert_eq!(g.before("/iserver/accounts"), Before::Proceed);
    }

    #[test]
    fn faults_only_prefixes_limit_where_they_apply() {
        let cfg = Faults {
            drop_rate: 1.0,
            only_prefixes: vec!["/iserver/marketdata".into()],
            ..Faults::default()
        };
        let mut f = FaultState::new(cfg, 1);
        assert_eq!(f.before("/portfolio/accounts"), Before::Proceed);
        assert_eq!(f.before("/iserver/marketdata/snapshot"), Before::Drop);
    }

    #[test]
    fn faults_latency_longest_prefix_wins() {
        let cfg = Faults {
            latency_ms: 5,
            latency_by_prefix: vec![("/iserver".into(), 10), ("/iserver/marketdata".into(), 20)],
            ..Faults::default()
        };
        let f = FaultState::new(cfg, 1);
        assert_eq!(
            f.latency("/iserver/marketdata/snapshot"),
            Duration::from_millis(20)
        );
        assert_eq!(f.latency("/iserver/accounts"), Duration::from_millis(10));
        assert_eq!(f.latency("/portfolio/accounts"), Duration::from_millis(5));
    }

    #[test]
    fn faults_garbage_is_not_json() {
        let mut f = FaultState::new(
            Faults {
                garbage_rate: 1.0,
                ..Faults::default()
            },
            3,
        );
        for _ in 0..10 {
            let g = f.garbage("/x", br#"{"a":[1,2,3]}"#).unwrap();
            assert!(serde_json::from_slice::<serde_json::Value>(&g).is_err());
        }
    }
}
