//! The live session token (LST): derivation from `K` and the prepend, its base64 form, and the
//! check against IBKR's `live_session_token_signature`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha1::Sha1;
use zeroize::Zeroizing;

use crate::dh::SharedSecret;
use crate::encoding::{hex_bytes, hex_lower};
use crate::error::{Error, Input, Result};
use crate::keys::Prepend;
use crate::redact::Redacted;

type HmacSha1 = Hmac<Sha1>;

/// Length of an LST: one SHA-1 output.
const LST_BYTES: usize = 20;

/// The live session token: 20 bytes, valid for about 24 hours, the HMAC-SHA256 key of every
/// request after the token request. It is usually kept as base64
/// ([`LiveSessionToken::to_base64`]); signing always uses the decoded bytes.
#[derive(Clone)]
pub struct LiveSessionToken {
    bytes: Zeroizing<Vec<u8>>,
}

impl LiveSessionToken {
    /// Reads a token kept as base64 (28 characters).
    ///
    /// # Errors
    /// [`Error::NotBase64`] or [`Error::OutOfRange`] (not 20 bytes) naming
    /// [`Input::LiveSessionToken`].
    pub fn from_base64(lst_b64: &str) -> Result<Self> {
        let bytes =
            Zeroizing::new(
                STANDARD
                    .decode(lst_b64.trim())
                    .map_err(|e| Error::NotBase64 {
                        input: Input::LiveSessionToken,
                        detail: e.to_string(),
                    })?,
            );
        if bytes.len() != LST_BYTES {
            return Err(Error::OutOfRange {
                input: Input::LiveSessionToken,
                detail: format!("it decodes to {} bytes, not {LST_BYTES}", bytes.len()),
            });
        }
        Ok(Self { bytes })
    }

    /// The token in standard, padded base64. This is the secret itself; keep it out of logs.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes.as_slice())
    }

    /// The raw 20 bytes (the HMAC-SHA256 key for request signing).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The value IBKR sends as `live_session_token_signature` for this token:
    /// `HMAC-SHA1(key = token bytes, data = UTF-8 consumer key)` in lower-case hex. Useful for
    /// a test double of IBKR's endpoint.
    pub fn signature_hex(&self, consumer_key: &str) -> String {
        let mut mac = self.mac();
        mac.update(consumer_key.as_bytes());
        hex_lower(&mac.finalize().into_bytes())
    }

    /// Checks IBKR's `live_session_token_signature` (hex, either case) in constant time.
    /// Returns `false` for a mismatch or for text that is not hex.
    pub fn validate(&self, consumer_key: &str, lst_signature_hex: &str) -> bool {
        let Ok(expected) = hex_bytes(lst_signature_hex.trim(), Input::LiveSessionToken) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(consumer_key.as_bytes());
        mac.verify_slice(&expected).is_ok()
    }

    fn mac(&self) -> HmacSha1 {
        // HMAC takes keys of any length.
        HmacSha1::new_from_slice(&self.bytes).expect("HMAC accepts any key length")
    }
}

impl fmt::Debug for LiveSessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LiveSessionToken").field(&Redacted).finish()
    }
}

/// Derives the live session token: `HMAC-SHA1(key = K bytes, data = prepend bytes)`.
pub fn live_session_token(k: &SharedSecret, prepend: &Prepend) -> LiveSessionToken {
    let mut mac = HmacSha1::new_from_slice(k.as_bytes()).expect("HMAC accepts any key length");
    mac.update(prepend.as_bytes());
    LiveSessionToken {
        bytes: Zeroizing::new(mac.finalize().into_bytes().to_vec()),
    }
}

/// Checks a freshly derived token against IBKR's `live_session_token_signature`; see
/// [`LiveSessionToken::validate`]. `false` means the token is wrong (usually the prepend, the
/// DH prime, or the sign byte of `K`) and IBKR will refuse requests signed with it.
pub fn validate_lst(lst: &LiveSessionToken, consumer_key: &str, lst_signature_hex: &str) -> bool {
    lst.validate(consumer_key, lst_signature_hex)
}
