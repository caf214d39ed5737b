//! The request log and counters read by tests through the control API: every `/v1/api`
//! request with its outcome, per-endpoint counts and the number of 429s, dropped connections,
//! 5xx faults and garbage bodies served.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Most entries kept; older ones are forgotten (counts are kept).
const MAX_ENTRIES: usize = 20_000;

/// One logged `/v1/api` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestLogEntry {
    /// Sequence number since start (never reset).
    pub seq: u64,
    /// Arrival time, ms since the Unix epoch.
    pub at_ms: i64,
    /// HTTP method.
    pub method: String,
    /// Path relative to `/v1/api` (e.g. `/iserver/accounts`).
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Route template relative to `/v1/api` (e.g. `/iserver/account/{accountId}/orders`), or
    /// `None` for unknown paths.
    pub template: Option<String>,
    /// HTTP status sent; 0 when the connection was dropped without a response.
    pub status: u16,
    /// `ok`, `paced`, `fault_5xx`, `dropped`, `garbage`, `dropped_after_accept`, `unauthorized`;
    /// in OAuth mode also `no_bridge` (400 before `ssodh/init`) and `oauth:<reason>` for a
    /// refused signature (see [`crate::oauth::OAuthRefusal::reason`]).
    pub outcome: String,
}

/// Counters since start or since the last clear.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Requests seen, by `METHOD /template` (or `METHOD /path` for unknown paths).
    pub per_endpoint: BTreeMap<String, u64>,
    /// 429 answers served.
    pub paced: u64,
    /// Connections closed without a response (fault or drop-after-accept).
    pub dropped: u64,
    /// 5xx fault answers.
    pub server_errors: u64,
    /// Garbage bodies served.
    pub garbage: u64,
    /// Total requests logged.
    pub total: u64,
}

/// Log plus counters.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    pub entries: VecDeque<RequestLogEntry>,
    pub counters: Counters,
    next_seq: u64,
}

impl RequestLog {
    /// Records a request and returns its sequence number.
    pub(crate) fn record(&mut self, mut e: RequestLogEntry) -> u64 {
        self.next_seq += 1;
        e.seq = self.next_seq;
        let key = format!("{} {}", e.method, e.template.as_deref().unwrap_or(&e.path));
        *self.counters.per_endpoint.entry(key).or_default() += 1;
        self.counters.total += 1;
        match e.outcome.as_str() {
            "paced" => self.counters.paced += 1,
            "dropped" | "dropped_after_accept" => self.counters.dropped += 1,
            "fault_5xx" => self.counters.server_errors += 1,
            "garbage" => self.counters.garbage += 1,
            _ => {}
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back(e);
        self.next_seq
    }

    /// Updates the status and outcome of an entry once the response is known.
    pub(crate) fn finish(&mut self, seq: u64, status: u16, outcome: &str) {
        if let Some(e) = self.entries.iter_mut().rev().find(|e| e.seq == seq) {
            let old = std::mem::replace(&mut e.outcome, outcome.to_string());
            e.status = status;
            if old != outcome {
                match outcome {
                    "paced" => self.counters.paced += 1,
                    "dropped" | "dropped_after_accept" => self.counters.dropped += 1,
                    "fault_5xx" => self.counters.server_errors += 1,
                    "garbage" => self.counters.garbage += 1,
                    _ => {}
                }
            }
        }
    }

    /// Forgets entries and counters (sequence numbers keep growing).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.counters = Counters::default();
    }
}
