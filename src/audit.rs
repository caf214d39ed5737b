//! The audit log: JSON lines about every attempt to use a tool that changes anything, whether it
//! was refused, failed or went through. Account ids are masked.
//!
//! An attempt that reaches the point of sending first writes an **intent** line (what is about
//! to be sent), flushed to disk (`fsync`); if that write fails, nothing is sent and the tool says
//! so. After the gateway answered (or the call failed), a **result** line with the same `id`
//! records the outcome. An attempt refused before sending has only its result line. A line is
//! written whole or not at all: a failed write is cut back to where the line started, so the
//! file never holds half a line. The server writes a `start` line when it starts with trading
//! allowed and refuses to start if it cannot. The file is only ever appended to.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

/// One line about a write attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// RFC 3339 time the attempt started.
    pub time: String,
    /// The attempt's id: its intent and result lines share it.
    pub id: String,
    /// `intent` (about to send) or `result`.
    pub phase: &'static str,
    /// Tool name (a task tool's call of a generated tool: `place_order/place_orders`).
    pub tool: String,
    /// operationId it maps to.
    pub operation: String,
    /// Arguments as received, account ids masked.
    pub arguments: Value,
    /// `sending` (intent), `sent` (reached the gateway) or `refused` (stopped before).
    pub decision: &'static str,
    /// Why it was refused, or why a sent call failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the gateway answered (status, whether it is an error, the body, masked and cut).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Milliseconds from the start of the attempt to its result.
    pub duration_ms: u64,
}

/// An append-only JSON Lines file, opened on first use.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: std::sync::Mutex<Option<std::fs::File>>,
}

impl AuditLog {
    /// A log at `path` (created, with its folder, on the first record).
    pub fn new(path: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            path,
            file: std::sync::Mutex::new(None),
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Appends `entry` and flushes it to disk.
    pub async fn record(self: &Arc<Self>, entry: Entry) -> Result<(), String> {
        let line = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
        self.append(line).await
    }

    /// Appends any JSON value as a line (events such as the kill switch).
    pub async fn record_value(self: &Arc<Self>, value: Value) -> Result<(), String> {
        let line = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
        self.append(line).await
    }

    async fn append(self: &Arc<Self>, line: Vec<u8>) -> Result<(), String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.write(line))
            .await
            .map_err(|e| format!("audit writer stopped: {e}"))?
    }

    /// Writes the `start` line now, synchronously: the server does not start with trading
    /// allowed when its audit log cannot be written.
    pub fn start(&self, settings: Value) -> Result<(), String> {
        let line = serde_json::to_vec(&serde_json::json!({
            "time": now(),
            "phase": "start",
            "version": env!("CARGO_PKG_VERSION"),
            "settings": settings,
        }))
        .map_err(|e| e.to_string())?;
        self.write(line)
    }

    fn open(&self, guard: &mut Option<std::fs::File>) -> Result<(), String> {
        if guard.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
            *guard = Some(f);
        }
        Ok(())
    }

    fn write(&self, mut line: Vec<u8>) -> Result<(), String> {
        line.push(b'\n');
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        self.open(&mut guard)?;
        let f = guard.as_mut().expect("opened above");
        // Where this line starts: a failed write is cut back to it (no half lines).
        let start = f.metadata().map(|m| m.len()).ok();
        match f.write_all(&line).and_then(|()| f.sync_data()) {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Some(len) = start
                    && f.metadata().is_ok_and(|m| m.len() > len)
                {
                    let _ = f.set_len(len).and_then(|()| f.sync_data());
                }
                // Open again next time: the handle may be in a bad state.
                *guard = None;
                Err(format!("cannot write {}: {e}", self.path.display()))
            }
        }
    }
}

/// Whether `s` looks like an IBKR account id (`DU1234567`, `U1234567`, `F1234567`, ...).
pub fn is_account_id(s: &str) -> bool {
    let digits = s.trim_start_matches(|c: char| c.is_ascii_uppercase());
    let prefix = s.len() - digits.len();
    (1..=3).contains(&prefix) && digits.len() >= 4 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Every account id in `s` masked, `DU1234567` → `DU****567` (enough to tell accounts apart,
/// not enough to use one), wherever it stands in the text ("account DU7654321 does not match");
/// everything else is left as it is.
pub fn mask_account(s: &str) -> String {
    fn word(w: &str, out: &mut String) {
        if is_account_id(w) {
            // An id is ASCII: letters, then digits.
            let digits = w.trim_start_matches(|c: char| c.is_ascii_uppercase());
            let keep = &digits[digits.len().saturating_sub(3)..];
            out.push_str(&w[..w.len() - digits.len()]);
            out.push_str(&"*".repeat(digits.len() - keep.len()));
            out.push_str(keep);
        } else {
            out.push_str(w);
        }
    }
    let mut out = String::with_capacity(s.len());
    let mut start = None;
    for (i, c) in s.char_indices() {
        match (c.is_ascii_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(b)) => {
                word(&s[b..i], &mut out);
                start = None;
                out.push(c);
            }
            (false, None) => out.push(c),
            (true, Some(_)) => {}
        }
    }
    if let Some(b) = start {
        word(&s[b..], &mut out);
    }
    out
}

/// Masks every account id in `v`: in string values and object keys, also inside text.
pub fn mask_accounts(v: &mut Value) {
    match v {
        Value::String(s) => *s = mask_account(s),
        Value::Array(a) => a.iter_mut().for_each(mask_accounts),
        Value::Object(m) => {
            let old = std::mem::take(m);
            let mut new = Map::new();
            for (k, mut x) in old {
                mask_accounts(&mut x);
                let k = mask_account(&k);
                new.insert(k, x);
            }
            *m = new;
        }
        _ => {}
    }
}

/// The current time, RFC 3339 in UTC.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn account_ids_are_recognised_and_masked_in_values_and_keys() {
        assert!(is_account_id("DU1234567") && is_account_id("U7654321") && is_account_id("F12345"));
        assert!(!is_account_id("AAPL") && !is_account_id("265598") && !is_account_id("DU12"));
        assert_eq!(mask_account("DU1234567"), "DU****567");
        // Inside text, and never a panic on other characters (an attacker's "x€yz").
        assert_eq!(
            mask_account("Order account DU7654321 does not match DU1234567."),
            "Order account DU****321 does not match DU****567."
        );
        assert_eq!(mask_account("x€yz"), "x€yz");
        assert_eq!(mask_account("€DU1234567€"), "€DU****567€");
        assert_eq!(mask_account("true"), "true");
        assert_eq!(mask_account("DUMMY"), "DUMMY");
        let mut v = json!({"accountId": "DU1234567", "DU7654321": {"x": ["U1234567", 5]}, "conid": "265598"});
        mask_accounts(&mut v);
        assert_eq!(
            v,
            json!({"accountId": "DU****567", "DU****321": {"x": ["U****567", 5]}, "conid": "265598"})
        );
    }

    #[tokio::test]
    async fn records_are_appended_one_line_each_and_on_disk_at_return() {
        let dir = std::env::temp_dir().join(format!("ibkr-mcp-audit-{}", std::process::id()));
        let path = dir.join("nested").join("audit.jsonl");
        let _ = std::fs::remove_file(&path);
        let log = AuditLog::new(path.clone());
        for i in 0..3 {
            log.record(Entry {
                time: now(),
                id: format!("t{i}"),
                phase: "result",
                tool: "place_orders".into(),
                operation: "op".into(),
                arguments: json!({"i": i}),
                decision: "refused",
                reason: Some("test".into()),
                result: None,
                duration_ms: 0,
            })
            .await
            .unwrap();
            let lines = std::fs::read_to_string(&path).unwrap().lines().count();
            assert_eq!(lines, i + 1);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
