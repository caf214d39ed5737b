//! Per-request freshness: the `oauth_timestamp` and `oauth_nonce` pair, and helpers that make
//! fresh ones.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::distr::{Alphanumeric, SampleString as _};

/// Length of the nonces made by [`generate_nonce`].
const NONCE_LEN: usize = 16;

/// The highest timestamp handed out so far, so that timestamps never go backwards.
static LAST_TIMESTAMP: AtomicU64 = AtomicU64::new(0);

/// The `oauth_timestamp` (Unix seconds) and `oauth_nonce` of one request. Build it with
/// [`Stamp::fresh`] in production and [`Stamp::new`] in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    timestamp: u64,
    nonce: String,
}

impl Stamp {
    /// A stamp with the given timestamp (Unix seconds) and nonce.
    pub fn new(timestamp: u64, nonce: impl Into<String>) -> Self {
        Self {
            timestamp,
            nonce: nonce.into(),
        }
    }

    /// A stamp for now: [`unix_timestamp`] and a new [`generate_nonce`].
    pub fn fresh() -> Self {
        Self::new(unix_timestamp(), generate_nonce())
    }

    /// Unix time in seconds.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// The nonce.
    pub fn nonce(&self) -> &str {
        &self.nonce
    }
}

/// A new nonce: 16 characters drawn uniformly from `A-Z a-z 0-9` with the thread-local
/// CSPRNG (about 95 bits).
pub fn generate_nonce() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), NONCE_LEN)
}

/// The current Unix time in whole seconds, never smaller than a value this function returned
/// before in the same process (IBKR wants timestamps that do not decrease; equal ones are
/// allowed).
pub fn unix_timestamp() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let previous = LAST_TIMESTAMP.fetch_max(now, Ordering::Relaxed);
    previous.max(now)
}
