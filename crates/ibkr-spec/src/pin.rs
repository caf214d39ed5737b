//! The pinned document: `spec/ibkr-openapi.lock`, the one file that says which IBKR document the
//! project builds from. The build, the `spec` commands, the scripts and the tests all read it;
//! moving the pin is an edit of that file alone.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::Deserialize;

/// The lock file's text, as compiled in.
pub const LOCK_TEXT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../spec/ibkr-openapi.lock"
));

/// The pin: which document version, and the sha256 of its exact bytes.
#[derive(Debug, Clone, Deserialize)]
pub struct Pin {
    /// `info.version` of the pinned document.
    pub version: String,
    /// Lower-case hex sha256 of the pinned document's bytes.
    pub sha256: String,
    /// Other published versions seen, by version, with their sha256.
    #[serde(default)]
    pub known: BTreeMap<String, String>,
}

impl Pin {
    /// Parses a lock file's text; the error names what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let pin: Pin = toml::from_str(text).map_err(|e| format!("spec/ibkr-openapi.lock: {e}"))?;
        if pin.version.trim().is_empty() {
            return Err("spec/ibkr-openapi.lock: `version` is empty".into());
        }
        let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(&pin.sha256) {
            return Err(format!(
                "spec/ibkr-openapi.lock: `sha256` must be 64 hex digits, not `{}`",
                pin.sha256
            ));
        }
        Ok(pin)
    }
}

/// The pin compiled into this build.
///
/// # Panics
/// When the committed lock file is malformed: a defect of the repository, caught by the first
/// build and by this crate's tests, never by a user's input.
pub fn pinned() -> &'static Pin {
    static PIN: LazyLock<Pin> =
        LazyLock::new(|| Pin::parse(LOCK_TEXT).unwrap_or_else(|e| panic!("{e}")));
    &PIN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_lock_parses_and_lists_its_own_version_as_known() {
        let pin = pinned();
        assert_eq!(pin.known.get(&pin.version), Some(&pin.sha256));
    }

    #[test]
    fn a_malformed_lock_is_refused_with_the_field_named() {
        let e = Pin::parse("version = \"2.20.0\"\nsha256 = \"abc\"\n").unwrap_err();
        assert!(e.contains("`sha256` must be 64 hex digits"), "{e}");
        let e = Pin::parse("sha256 = \"x\"\n").unwrap_err();
        assert!(e.contains("version"), "{e}");
    }
}
