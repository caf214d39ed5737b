//! OAuth 1.0a mode: the simulator plays IBKR's side of first-party OAuth (`api.ibkr.com`
//! without a Client Portal Gateway) when [`SimConfig::oauth`](crate::SimConfig::oauth) is set.
//!
//! This module owns the configuration ([`SimOAuth`]: what IBKR knows about one consumer), the
//! counters tests read ([`OAuthStats`], [`OAuthRefusals`]), the refusals and their exact
//! bodies ([`OAuthRefusal`]), and a generator of consistent demo credentials ([`DemoOAuth`]).
//! The protocol checks live in `oauth::verify`; the HTTP glue (routing, the request log, the
//! session checks) lives in `gateway`. The cryptography is `ibkr_oauth`'s, used from the
//! server's side.
//!
//! # What changes in OAuth mode
//!
//! - `POST /v1/api/oauth/live_session_token` takes the RSA-SHA256 signed token request
//!   (prepend + base string, PKCS#1 v1.5), answers
//!   `{"diffie_hellman_response", "live_session_token_signature", "live_session_token_expiration"}`
//!   and makes the derived live session token (LST) the current one (a new one replaces the
//!   old). In gateway mode the path is a 404 like any unknown path.
//! - Every other `/v1/api` request needs an `Authorization: OAuth ...` header signed with
//!   HMAC-SHA256 keyed by the current LST. `/sim/*` stays unauthenticated.
//! - The SSO login is implied by a valid LST: every accepted signed request counts as logged
//!   in. There is no brokerage session at start, so `/iserver/*` (except `auth/status`,
//!   `auth/ssodh/init` and `reauthenticate`) answers `400 {"error":"Bad Request: no bridge","statusCode":400}`
//!   until `POST /iserver/auth/ssodh/init`, while `/portfolio/*`, `/tickle` and the rest work.
//!   The same 400 replaces the gateway's 401 whenever the brokerage session is gone (idle
//!   timeout, competing session, restart), because a 401 in OAuth mode means "get a new LST".
//!
//! # The signed URL
//!
//! The base string's URL is rebuilt from what arrived: the scheme of the listener (`http`,
//! or `https` with [`Tls::SelfSigned`](crate::Tls::SelfSigned)), the `Host` header as sent,
//! and the request target's path and query exactly as on the wire (still percent-encoded).
//! A client that signs the URL it sends (`http://127.0.0.1:PORT/v1/api/...`) therefore
//! matches, whether it names the host `127.0.0.1` or `localhost`. Query parameters are
//! percent-decoded and merged into the sorted parameter list (IBKR's documented rule; a client
//! that leaves them out is refused with `bad_signature`), as are the fields of an
//! `application/x-www-form-urlencoded` body; JSON bodies are not signed.
//!
//! # Refusals
//!
//! Every refusal is HTTP 401 with `{"error":"id: 3931, error: <message>","statusCode":401}`
//! (see [`OAuthRefusal::message`] for each message). Only `invalid consumer` is a string IBKR
//! is known to send; the others are this simulator's, in the same shape. The checks run in this
//! order, and the first failure is the one counted: header present ([`OAuthRefusal::MissingHeader`]),
//! well formed with every parameter and the right signature method
//! ([`OAuthRefusal::MalformedHeader`]), consumer key and realm
//! ([`OAuthRefusal::InvalidConsumer`]), access token ([`OAuthRefusal::InvalidToken`]),
//! timestamp within the allowed skew ([`OAuthRefusal::StaleTimestamp`]), a current LST
//! ([`OAuthRefusal::NoToken`], [`OAuthRefusal::ExpiredToken`]; not for the token request),
//! the signature ([`OAuthRefusal::BadSignature`]), the challenge
//! ([`OAuthRefusal::BadChallenge`], token request only), and last the nonce
//! ([`OAuthRefusal::NonceReused`]; nonces are remembered for the skew window and only once the
//! signature is good).

mod demo;
pub(crate) mod verify;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use ibkr_oauth::DhParams;
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::pkcs8::DecodePublicKey as _;
use rsa::traits::PublicKeyParts as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

pub use demo::DemoOAuth;

/// The 2048-bit MODP prime of RFC 3526 (group 14), lower-case hex. Its generator is 2. A public
/// constant, used by [`DemoOAuth`] as the Diffie-Hellman prime.
pub const RFC3526_GROUP14_PRIME_HEX: &str = concat!(
    "ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74",
    "020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f1437",
    "4fe1356d6d51c245e485b576625e7ec6f44c42e9a637ed6b0bff5cb6f406b7ed",
    "ee386bfb5a899fa5ae9f24117c4b1fe649286651ece45b3dc2007cb8a163bf05",
    "98da48361c55d39a69163fa8fd24cf5f83655d23dca3ad961c62f356208552bb",
    "9ed529077096966d670c354e4abc9804f1746c08ca18217c32905e462e36ce3b",
    "e39e772c180e86039b2783a2ec07a28fb5c55df06f4c52c9de2bcbf695581718",
    "3995497cea956ae515d2261898fa051015728e5a8aacaa68ffffffffffffffff",
);

/// The token request's path, relative to `/v1/api`.
pub const LIVE_SESSION_TOKEN_PATH: &str = "/oauth/live_session_token";

/// The `id` in every refusal body (`"id: 3931, error: ..."`), taken from an `invalid consumer`
/// answer IBKR gave a user. IBKR's own ids vary between answers (39687 was seen too).
pub const REFUSAL_ID: u32 = 3931;

/// Why OAuth material could not be set up or loaded. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A value is empty or otherwise unusable.
    #[error("the {what} is unusable: {detail}")]
    Invalid {
        /// Which value.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A PEM text is not the RSA key it should be.
    #[error("the {what} is not a usable RSA key: {detail}")]
    Key {
        /// Which key.
        what: &'static str,
        /// What the parser reported.
        detail: String,
    },
    /// An RSA operation (key generation, encryption, encoding) failed.
    #[error("RSA {operation} failed: {detail}")]
    Rsa {
        /// What was being done.
        operation: &'static str,
        /// What the `rsa` crate reported.
        detail: String,
    },
    /// `ibkr_oauth` refused an input (DH parameters, the access token secret).
    #[error(transparent)]
    OAuth(#[from] ibkr_oauth::Error),
    /// Reading or writing a credentials directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What IBKR's side knows about one OAuth consumer: the consumer key, the access token and
/// its secret, the realm, the user's public signature key and Diffie-Hellman group, plus the
/// simulator's policy (token lifetime, allowed clock skew). Build it with [`SimOAuth::new`] or
/// [`DemoOAuth::sim_oauth`]; the access token and the secret print redacted under `{:?}`.
#[derive(Clone)]
pub struct SimOAuth {
    consumer_key: String,
    access_token: Zeroizing<String>,
    realm: String,
    prepend: Zeroizing<Vec<u8>>,
    signature_public_key_pem: String,
    signature_public_key: rsa::PublicKey,
    dh: DhParams,
    lst_lifetime: Duration,
    clock_skew: Duration,
}

impl SimOAuth {
    /// How long a live session token lives unless changed: 24 hours, as at IBKR.
    pub const DEFAULT_LST_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

    /// How far `oauth_timestamp` may be from the simulator's clock unless changed: 5 minutes.
    pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

    /// A consumer with realm `limited_poa`, the default lifetime and skew.
    ///
    /// - `access_token_secret` is the secret's plaintext (the bytes the client gets by
    ///   decrypting the access token secret; their hex is the "prepend").
    /// - `signature_public_key_pem` is the user's public signature key: `BEGIN PUBLIC KEY`
    ///   (SPKI) or `BEGIN RSA PUBLIC KEY` (PKCS#1).
    /// - `dh` is the Diffie-Hellman group the user uploaded (prime and generator).
    ///
    /// # Errors
    /// [`SetupError::Invalid`] for an empty consumer key, access token or secret;
    /// [`SetupError::Key`] for a public key that does not parse.
    pub fn new(
        consumer_key: impl Into<String>,
        access_token: impl Into<String>,
        access_token_secret: &[u8],
        signature_public_key_pem: &str,
        dh: DhParams,
    ) -> Result<Self, SetupError> {
        let consumer_key = consumer_key.into();
        let access_token = Zeroizing::new(access_token.into());
        for (what, empty) in [
            ("consumer key", consumer_key.trim().is_empty()),
            ("access token", access_token.trim().is_empty()),
            ("access token secret", access_token_secret.is_empty()),
        ] {
            if empty {
                return Err(SetupError::Invalid {
                    what,
                    detail: "it is empty".to_owned(),
                });
            }
        }
        let signature_public_key = parse_public_key(signature_public_key_pem)?;
        Ok(Self {
            consumer_key,
            access_token,
            realm: ibkr_oauth::REALM_LIMITED_POA.to_owned(),
            prepend: Zeroizing::new(access_token_secret.to_vec()),
            signature_public_key_pem: signature_public_key_pem.to_owned(),
            signature_public_key,
            dh,
            lst_lifetime: Self::DEFAULT_LST_LIFETIME,
            clock_skew: Self::DEFAULT_CLOCK_SKEW,
        })
    }

    /// Replaces the realm (`limited_poa` for real consumers, `test_realm` for IBKR's
    /// `TESTCONS`). Requests with another realm are refused as `invalid consumer`.
    pub fn with_realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// Replaces the lifetime of the live session tokens issued from now on.
    pub fn with_lst_lifetime(mut self, lifetime: Duration) -> Self {
        self.lst_lifetime = lifetime;
        self
    }

    /// Replaces the allowed distance between `oauth_timestamp` and the simulator's clock (also
    /// how long nonces are remembered).
    pub fn with_clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }

    /// The consumer key (`oauth_consumer_key`).
    pub fn consumer_key(&self) -> &str {
        &self.consumer_key
    }

    /// The access token (`oauth_token`).
    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    /// The realm the `Authorization` header must carry.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The user's public signature key as given (PEM).
    pub fn signature_public_key_pem(&self) -> &str {
        &self.signature_public_key_pem
    }

    /// The Diffie-Hellman group.
    pub fn dh(&self) -> &DhParams {
        &self.dh
    }

    /// The lifetime of issued live session tokens.
    pub fn lst_lifetime(&self) -> Duration {
        self.lst_lifetime
    }

    /// The allowed clock skew for `oauth_timestamp`.
    pub fn clock_skew(&self) -> Duration {
        self.clock_skew
    }

    /// The access token secret's plaintext (the prepend's bytes).
    pub(crate) fn prepend(&self) -> &[u8] {
        &self.prepend
    }

    /// Checks an RSASSA-PKCS1-v1_5 SHA-256 signature with the user's public signature key.
    pub(crate) fn verify_rsa_sha256(&self, message: &[u8], signature: &[u8]) -> bool {
        self.signature_public_key
            .pkcs1v15_verify::<sha2::Sha256>(message, signature)
            .is_ok()
    }
}

impl fmt::Debug for SimOAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimOAuth")
            .field("consumer_key", &self.consumer_key)
            .field("access_token", &"<redacted>")
            .field("realm", &self.realm)
            .field("access_token_secret", &"<redacted>")
            .field(
                "signature_public_key_bits",
                &(self.signature_public_key.size() * 8),
            )
            .field("dh", &self.dh)
            .field("lst_lifetime", &self.lst_lifetime)
            .field("clock_skew", &self.clock_skew)
            .finish()
    }
}

/// Parses an RSA public key from PEM (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`).
fn parse_public_key(pem_text: &str) -> Result<rsa::PublicKey, SetupError> {
    let what = "signature public key";
    let key_error = |detail: String| SetupError::Key { what, detail };
    let start = pem_text
        .find("-----BEGIN ")
        .ok_or_else(|| key_error("no `-----BEGIN` line; give the PEM text".to_owned()))?;
    let block = pem_text[start..].trim_end();
    if block.starts_with("-----BEGIN PUBLIC KEY-----") {
        rsa::PublicKey::from_public_key_pem(block).map_err(|e| key_error(e.to_string()))
    } else if block.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        rsa::PublicKey::from_pkcs1_pem(block).map_err(|e| key_error(e.to_string()))
    } else {
        Err(key_error(
            "expected `BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY` (the public half, which is \
             what IBKR gets)"
                .to_owned(),
        ))
    }
}

/// One reason the simulator refuses an OAuth request. Every refusal is HTTP 401 with
/// [`OAuthRefusal::body`]; [`OAuthRefusal::reason`] names its counter in [`OAuthRefusals`]
/// and the request log's outcome (`oauth:<reason>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OAuthRefusal {
    /// No `Authorization` header.
    MissingHeader,
    /// The header is not `OAuth k="v", ...`, lacks a parameter, names another signature method
    /// than the endpoint takes, or has a timestamp or signature that is not a number or base64.
    MalformedHeader,
    /// Wrong consumer key, or wrong (or no) realm.
    InvalidConsumer,
    /// Unknown access token.
    InvalidToken,
    /// `oauth_timestamp` is further from the simulator's clock than the allowed skew.
    StaleTimestamp,
    /// A signed request before any live session token was issued.
    NoToken,
    /// The current live session token has expired (or was expired through the control API).
    ExpiredToken,
    /// The signature does not verify (RSA for the token request, HMAC otherwise).
    BadSignature,
    /// A nonce seen before within the skew window.
    NonceReused,
    /// The token request's `diffie_hellman_challenge` is not hex or not in `1 < A < p - 1`.
    BadChallenge,
}

impl OAuthRefusal {
    /// Every refusal, in the order the checks run.
    pub const ALL: [Self; 10] = [
        Self::MissingHeader,
        Self::MalformedHeader,
        Self::InvalidConsumer,
        Self::InvalidToken,
        Self::StaleTimestamp,
        Self::NoToken,
        Self::ExpiredToken,
        Self::BadSignature,
        Self::BadChallenge,
        Self::NonceReused,
    ];

    /// The counter name: `missing_header`, `malformed_header`, `invalid_consumer`,
    /// `invalid_token`, `stale_timestamp`, `no_token`, `expired_token`, `bad_signature`,
    /// `nonce_reused` or `bad_challenge`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingHeader => "missing_header",
            Self::MalformedHeader => "malformed_header",
            Self::InvalidConsumer => "invalid_consumer",
            Self::InvalidToken => "invalid_token",
            Self::StaleTimestamp => "stale_timestamp",
            Self::NoToken => "no_token",
            Self::ExpiredToken => "expired_token",
            Self::BadSignature => "bad_signature",
            Self::NonceReused => "nonce_reused",
            Self::BadChallenge => "bad_challenge",
        }
    }

    /// The text after `error: ` in the body: `missing authorization header`,
    /// `invalid authorization header`, `invalid consumer`, `invalid token`,
    /// `invalid timestamp`, `no live session token`, `live session token expired`,
    /// `invalid signature`, `nonce already used` or `invalid diffie_hellman_challenge`.
    pub fn message(self) -> &'static str {
        match self {
            Self::MissingHeader => "missing authorization header",
            Self::MalformedHeader => "invalid authorization header",
            Self::InvalidConsumer => "invalid consumer",
            Self::InvalidToken => "invalid token",
            Self::StaleTimestamp => "invalid timestamp",
            Self::NoToken => "no live session token",
            Self::ExpiredToken => "live session token expired",
            Self::BadSignature => "invalid signature",
            Self::NonceReused => "nonce already used",
            Self::BadChallenge => "invalid diffie_hellman_challenge",
        }
    }

    /// The HTTP status: always 401.
    pub fn status(self) -> u16 {
        401
    }

    /// The JSON body: `{"error":"id: 3931, error: <message>","statusCode":401}`.
    pub fn body(self) -> Value {
        json!({
            "error": format!("id: {REFUSAL_ID}, error: {}", self.message()),
            "statusCode": self.status(),
        })
    }
}

/// Refusals counted by reason (see [`OAuthRefusal::reason`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OAuthRefusals {
    /// No `Authorization` header.
    pub missing_header: u64,
    /// Unparseable header, missing parameter or wrong signature method.
    pub malformed_header: u64,
    /// Wrong consumer key or realm.
    pub invalid_consumer: u64,
    /// Unknown access token.
    pub invalid_token: u64,
    /// Timestamp outside the allowed skew.
    pub stale_timestamp: u64,
    /// Signed request before any token was issued.
    pub no_token: u64,
    /// The current token has expired.
    pub expired_token: u64,
    /// The signature does not verify.
    pub bad_signature: u64,
    /// A nonce seen before.
    pub nonce_reused: u64,
    /// An unusable `diffie_hellman_challenge`.
    pub bad_challenge: u64,
}

impl OAuthRefusals {
    /// The count for one reason.
    pub fn get(&self, refusal: OAuthRefusal) -> u64 {
        *self.slot(refusal)
    }

    /// All refusals together.
    pub fn total(&self) -> u64 {
        OAuthRefusal::ALL.iter().map(|r| self.get(*r)).sum()
    }

    pub(crate) fn bump(&mut self, refusal: OAuthRefusal) {
        *self.slot_mut(refusal) += 1;
    }

    fn slot(&self, refusal: OAuthRefusal) -> &u64 {
        match refusal {
            OAuthRefusal::MissingHeader => &self.missing_header,
            OAuthRefusal::MalformedHeader => &self.malformed_header,
            OAuthRefusal::InvalidConsumer => &self.invalid_consumer,
            OAuthRefusal::InvalidToken => &self.invalid_token,
            OAuthRefusal::StaleTimestamp => &self.stale_timestamp,
            OAuthRefusal::NoToken => &self.no_token,
            OAuthRefusal::ExpiredToken => &self.expired_token,
            OAuthRefusal::BadSignature => &self.bad_signature,
            OAuthRefusal::NonceReused => &self.nonce_reused,
            OAuthRefusal::BadChallenge => &self.bad_challenge,
        }
    }

    fn slot_mut(&mut self, refusal: OAuthRefusal) -> &mut u64 {
        match refusal {
            OAuthRefusal::MissingHeader => &mut self.missing_header,
            OAuthRefusal::MalformedHeader => &mut self.malformed_header,
            OAuthRefusal::InvalidConsumer => &mut self.invalid_consumer,
            OAuthRefusal::InvalidToken => &mut self.invalid_token,
            OAuthRefusal::StaleTimestamp => &mut self.stale_timestamp,
            OAuthRefusal::NoToken => &mut self.no_token,
            OAuthRefusal::ExpiredToken => &mut self.expired_token,
            OAuthRefusal::BadSignature => &mut self.bad_signature,
            OAuthRefusal::NonceReused => &mut self.nonce_reused,
            OAuthRefusal::BadChallenge => &mut self.bad_challenge,
        }
    }
}

/// OAuth counters since start, as `SimControl::oauth_stats` and `GET /sim/oauth/stats` report
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OAuthStats {
    /// Live session tokens issued (successful token requests).
    pub tokens_issued: u64,
    /// HMAC-signed requests accepted (the token requests are not counted here).
    pub accepted: u64,
    /// Refusals by reason, token requests and signed requests together.
    pub refused: OAuthRefusals,
    /// All refusals.
    pub refused_total: u64,
    /// When the current token was issued (ms since the epoch), if there is one.
    pub token_issued_ms: Option<i64>,
    /// When the current token expires or expired (ms since the epoch), if there is one.
    pub token_expires_ms: Option<i64>,
    /// Whether the current token has expired (`false` when there is none).
    pub token_expired: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group14_prime_has_the_rfc_3526_shape() {
        let dh = DhParams::from_hex(RFC3526_GROUP14_PRIME_HEX).unwrap();
        assert_eq!(dh.prime_bits(), 2048);
        assert_eq!(dh.generator_hex(), "2");
        assert_eq!(dh.prime_hex(), RFC3526_GROUP14_PRIME_HEX);
        // RFC 3526: the top and bottom 64 bits are all ones.
        assert!(RFC3526_GROUP14_PRIME_HEX.starts_with(&"f".repeat(16)));
        assert!(RFC3526_GROUP14_PRIME_HEX.ends_with(&"f".repeat(16)));
        assert_eq!(RFC3526_GROUP14_PRIME_HEX.len(), 512);
    }

    #[test]
    fn refusal_bodies_have_ibkrs_shape() {
        assert_eq!(
            OAuthRefusal::InvalidConsumer.body(),
            json!({ "error": "id: 3931, error: invalid consumer", "statusCode": 401 })
        );
        let mut reasons: Vec<&str> = OAuthRefusal::ALL.iter().map(|r| r.reason()).collect();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), OAuthRefusal::ALL.len());
    }

    #[test]
    fn refusal_counters_serialize_every_reason_by_name() {
        let mut counts = OAuthRefusals::default();
        for (i, r) in OAuthRefusal::ALL.iter().enumerate() {
            for _ in 0..=i {
                counts.bump(*r);
            }
        }
        let v = serde_json::to_value(&counts).unwrap();
        assert_eq!(v.as_object().unwrap().len(), OAuthRefusal::ALL.len());
        for (i, r) in OAuthRefusal::ALL.iter().enumerate() {
            assert_eq!(v[r.reason()], json!(i as u64 + 1), "{}", r.reason());
            assert_eq!(counts.get(*r), i as u64 + 1);
        }
        assert_eq!(counts.total(), (1..=10).sum::<u64>());
    }

    #[test]
    fn public_key_parser_names_the_wrong_kind() {
        let err = parse_public_key("-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----")
            .unwrap_err();
        assert!(err.to_string().contains("BEGIN PUBLIC KEY"), "{err}");
        let err = parse_public_key("not pem").unwrap_err();
        assert!(err.to_string().contains("BEGIN"), "{err}");
    }
}
