//! The placeholder that secret-bearing types print under `{:?}`.

use std::fmt;

/// Prints `<redacted>` in place of a secret value.
pub(crate) struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
