//! The kill switch: the human's way to stop every tool that changes anything, at once, without
//! the model being able to undo it.
//!
//! It is a file (`--kill-switch-file`, by default `HALT` beside the audit log). While it exists
//! the server refuses every write tool before anything is sent, and the request guard refuses
//! any order, modification or question reply that would still leave the process (an order
//! question being answered when the switch was thrown, say). `ibkr-mcp halt [--cancel-orders]`
//! writes it; `ibkr-mcp resume` removes it. No tool can do either, so a model (or a prompt
//! injection in data it read) cannot lift it; it also survives restarts of the server. With
//! `--cancel-orders`, the running server cancels the working orders of the accounts it may act
//! on, once, and records each cancellation in the audit log. The file is read on every write
//! attempt (a `stat` while it is absent), so the switch takes effect on the next call.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What `ibkr-mcp halt` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    /// When it was thrown (RFC 3339).
    pub since: String,
    /// Why, in the user's words.
    #[serde(default)]
    pub reason: String,
    /// Cancel working orders as well.
    #[serde(default)]
    pub cancel_orders: bool,
    /// Identifies this halt (the running server cancels orders once per halt).
    #[serde(default)]
    pub id: String,
}

/// The kill switch file.
#[derive(Debug, Clone)]
pub struct KillSwitch {
    path: PathBuf,
}

impl KillSwitch {
    /// The switch at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The halt in force, if any. A file that exists but cannot be read still halts (fail
    /// closed): only its removal lifts the switch.
    pub fn engaged(&self) -> Option<Halt> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| Halt {
                since: String::new(),
                reason: format!(
                    "the kill switch file {} exists (its content is not ibkr-mcp's)",
                    self.path.display()
                ),
                cancel_orders: false,
                id: String::new(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(Halt {
                since: String::new(),
                reason: format!(
                    "the kill switch file {} cannot be read ({e})",
                    self.path.display()
                ),
                cancel_orders: false,
                id: String::new(),
            }),
        }
    }

    /// Throws the switch (replacing an earlier halt).
    pub fn engage(&self, reason: &str, cancel_orders: bool) -> std::io::Result<Halt> {
        let halt = Halt {
            since: crate::audit::now(),
            reason: reason.to_string(),
            cancel_orders,
            id: uuid::Uuid::new_v4().simple().to_string(),
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        // Written beside and renamed, so a reader never sees half a file.
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&halt)?)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(halt)
    }

    /// Lifts the switch; `false` when it was not thrown.
    pub fn release(&self) -> std::io::Result<bool> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The refusal text for a write while `halt` is in force.
    pub fn refusal(&self, halt: &Halt) -> String {
        let mut s = String::from(
            "the user has stopped every order and account change with the kill switch",
        );
        if !halt.since.is_empty() {
            s.push_str(&format!(" (since {})", halt.since));
        }
        if !halt.reason.is_empty() {
            s.push_str(&format!(": {}", halt.reason));
        }
        s.push_str(
            ". Do not try to work around it; tell the user. Only the user can lift it (ibkr-mcp \
             resume). Reading still works.",
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engage_then_release_and_unreadable_files_still_halt() {
        let dir = std::env::temp_dir().join(format!("ibkr-mcp-halt-{}", std::process::id()));
        let ks = KillSwitch::new(dir.join("nested").join("HALT"));
        assert_eq!(ks.engaged(), None);
        let h = ks.engage("market is crazy", true).unwrap();
        assert_eq!(ks.engaged(), Some(h.clone()));
        assert!(ks.refusal(&h).contains("market is crazy"));
        assert!(ks.release().unwrap());
        assert!(!ks.release().unwrap());
        assert_eq!(ks.engaged(), None);
        std::fs::write(ks.path(), b"stop!").unwrap();
        let h = ks.engaged().expect("any file halts");
        assert!(h.reason.contains("exists"), "{h:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
