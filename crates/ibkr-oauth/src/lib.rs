//! The cryptographic core of IBKR's first-party ("self-service") OAuth 1.0a, which lets a
//! client call `https://api.ibkr.com/v1/api` directly, without the Client Portal Gateway.
//!
//! This crate does no I/O. It turns the user's OAuth inputs into the strings that go on the
//! wire and checks what comes back; the server owns the HTTP calls, the JSON, caching and
//! refresh timing. Every function that needs a timestamp, a nonce or a random number has a
//! variant that takes it as an argument, so the whole flow is testable against IBKR's
//! published example values.
//!
//! # Inputs
//!
//! From IBKR's self-service OAuth page the user has a consumer key, an access token and an
//! access token secret. From their own machine they have two RSA private keys (one to sign,
//! one to decrypt) and the Diffie-Hellman parameters they uploaded. Load them with
//! [`SigningKey::from_pem`], [`EncryptionKey::from_pem`], [`DhParams::from_pem`] or
//! [`DhParams::from_hex`], and [`Credentials::new`].
//!
//! # The flow
//!
//! 1. **Prepend.** The access token secret is RSA ciphertext (PKCS#1 v1.5) addressed to the
//!    user's encryption key. [`decrypt_prepend`] recovers the plaintext; its lower-case hex is
//!    the "prepend" and its raw bytes feed the token derivation ([`Prepend`]).
//! 2. **Challenge.** [`DhChallenge::generate`] picks a secret exponent `a` and computes
//!    `A = g^a mod p`; `A` in unpadded lower-case hex is the `diffie_hellman_challenge`.
//! 3. **Token request.** [`live_session_token_request`] builds the OAuth parameter set for
//!    `POST /oauth/live_session_token`, the signature base string with the prepend glued to its
//!    front, the RSA-SHA256 (PKCS#1 v1.5) signature with the signing key, and the
//!    `Authorization` header.
//! 4. **Token.** IBKR answers with `B` (`diffie_hellman_response`). [`DhChallenge::k_bytes`]
//!    computes `K = B^a mod p` and serialises it the way Java's `BigInteger.toByteArray()`
//!    does, with a leading zero byte whenever the top bit would otherwise be set.
//!    [`live_session_token`] then derives the live session token (LST) as
//!    `HMAC-SHA1(key = K bytes, data = prepend bytes)`.
//! 5. **Check.** IBKR also sends `live_session_token_signature`; [`validate_lst`] checks it
//!    against `HMAC-SHA1(key = LST, data = consumer key)`. A mismatch means the token is wrong
//!    and every later request would be refused.
//! 6. **Every other request.** [`sign_request`] signs with HMAC-SHA256 keyed by the LST bytes.
//!    Query parameters and `application/x-www-form-urlencoded` body fields join the sorted
//!    parameter list; JSON bodies are not signed.
//!
//! # Base strings and headers
//!
//! A base string is `METHOD&enc(url without query)&enc(k1=v1&k2=v2...)`, where the pairs are
//! sorted byte-wise by key and are joined raw, and the whole joined string is percent-encoded
//! in one pass ([`percent_encode`]). `realm` never enters the base string. The
//! `Authorization` header is `OAuth realm="..."` followed by the parameters in sorted order,
//! each value percent-encoded once (which changes only the base64 signature in practice).
//!
//! # Secrets
//!
//! Every type that holds key material, a token, the prepend, the DH secret or the LST prints
//! as a redacted placeholder under `{:?}`, and byte buffers are zeroed when dropped. Accessors
//! that return the secret (for example [`LiveSessionToken::to_base64`]) exist because the
//! caller must put the value somewhere; keep their output out of logs.
//!
//! # Example
//!
//! ```no_run
//! # fn demo() -> ibkr_oauth::Result<()> {
//! use ibkr_oauth::*;
//!
//! let signing = SigningKey::from_pem(&std::fs::read_to_string("private_signature.pem").unwrap())?;
//! let encryption = EncryptionKey::from_pem(&std::fs::read_to_string("private_encryption.pem").unwrap())?;
//! let dh = DhParams::from_pem(&std::fs::read_to_string("dhparam.pem").unwrap())?;
//! let creds = Credentials::new("MYCONSKEY", "0123456789abcdef0123");
//!
//! let prepend = decrypt_prepend("<access token secret, base64>", &encryption)?;
//! let challenge = DhChallenge::generate(&dh);
//! let request = live_session_token_request(
//!     &creds, LIVE_SESSION_TOKEN_URL, &challenge, &prepend, &signing, &Stamp::fresh(),
//! )?;
//! // POST it with `Authorization: {request.authorization()}` and read the JSON reply, then:
//! let k = challenge.k_bytes("<diffie_hellman_response>")?;
//! let lst = live_session_token(&k, &prepend);
//! assert!(validate_lst(&lst, creds.consumer_key(), "<live_session_token_signature>"));
//!
//! let signed = sign_request(
//!     &creds, &lst, "GET", "https://api.ibkr.com/v1/api/portfolio/accounts", &[], &Stamp::fresh(),
//! )?;
//! println!("Authorization: {}", signed.authorization());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod dh;
mod encoding;
mod error;
mod keys;
mod lst;
mod redact;
mod signing;
mod stamp;

#[cfg(test)]
mod tests;

pub use dh::{DhChallenge, DhParams, SharedSecret};
pub use encoding::percent_encode;
pub use error::{Error, Input, Result};
pub use keys::{EncryptionKey, Prepend, SigningKey, decrypt_prepend};
pub use lst::{LiveSessionToken, live_session_token, validate_lst};
pub use signing::{
    Credentials, LIVE_SESSION_TOKEN_URL, REALM_LIMITED_POA, REALM_TEST, REST_BASE_URL,
    SignedRequest, authorization_header, live_session_token_request, sign_request,
    signature_base_string,
};
pub use stamp::{Stamp, generate_nonce, unix_timestamp};
