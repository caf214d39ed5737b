//! OAuth 1.0a request signing as IBKR does it: the parameter set, the signature base string,
//! the RSA-SHA256 live session token request (with the prepend) and HMAC-SHA256 signing of
//! every other request, and the `Authorization` header.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use percent_encoding::percent_decode_str;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::dh::DhChallenge;
use crate::encoding::percent_encode;
use crate::error::{Error, Input, Result};
use crate::keys::{Prepend, SigningKey};
use crate::lst::LiveSessionToken;
use crate::redact::Redacted;
use crate::stamp::Stamp;

/// Base URL of IBKR's Web API when called with OAuth (no gateway).
pub const REST_BASE_URL: &str = "https://api.ibkr.com/v1/api";

/// Where the live session token is requested (`POST`).
pub const LIVE_SESSION_TOKEN_URL: &str = "https://api.ibkr.com/v1/api/oauth/live_session_token";

/// The realm for real consumer keys.
pub const REALM_LIMITED_POA: &str = "limited_poa";

/// The realm that goes with IBKR's demonstration consumer key `TESTCONS` only.
pub const REALM_TEST: &str = "test_realm";

const SIGNATURE_METHOD_RSA: &str = "RSA-SHA256";
const SIGNATURE_METHOD_HMAC: &str = "HMAC-SHA256";

type HmacSha256 = Hmac<Sha256>;

/// Who is calling: the consumer key, the access token and the realm. The access token is
/// redacted in `{:?}`.
#[derive(Clone)]
pub struct Credentials {
    consumer_key: String,
    access_token: Zeroizing<String>,
    realm: String,
}

impl Credentials {
    /// Credentials with realm [`REALM_LIMITED_POA`].
    pub fn new(consumer_key: impl Into<String>, access_token: impl Into<String>) -> Self {
        Self {
            consumer_key: consumer_key.into(),
            access_token: Zeroizing::new(access_token.into()),
            realm: REALM_LIMITED_POA.to_owned(),
        }
    }

    /// Replaces the realm (use [`REALM_TEST`] with `TESTCONS`).
    pub fn with_realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// The consumer key (`oauth_consumer_key`).
    pub fn consumer_key(&self) -> &str {
        &self.consumer_key
    }

    /// The access token (`oauth_token`; also the `oauth_token` query parameter of the
    /// WebSocket URL).
    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    /// The realm of the `Authorization` header.
    pub fn realm(&self) -> &str {
        &self.realm
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("consumer_key", &self.consumer_key)
            .field("access_token", &Redacted)
            .field("realm", &self.realm)
            .finish()
    }
}

/// The result of signing one request. Send [`SignedRequest::authorization`] as the
/// `Authorization` header (and any `User-Agent`; IBKR's edge refuses requests without one).
#[derive(Clone)]
pub struct SignedRequest {
    base_string: Zeroizing<String>,
    signature: String,
    authorization: String,
}

impl SignedRequest {
    /// The exact text that was signed. For the live session token request it starts with the
    /// prepend, which is secret.
    pub fn base_string(&self) -> &str {
        &self.base_string
    }

    /// The signature in standard base64, before percent-encoding.
    pub fn signature(&self) -> &str {
        &self.signature
    }

    /// The `Authorization` header value: `OAuth realm="...", oauth_consumer_key="...", ...`.
    pub fn authorization(&self) -> &str {
        &self.authorization
    }
}

impl fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedRequest")
            .field("base_string", &Redacted)
            .field("signature", &Redacted)
            .field("authorization", &Redacted)
            .finish()
    }
}

/// Builds an OAuth signature base string: `METHOD&enc(url)&enc(params)`.
///
/// - `METHOD` is upper-cased.
/// - The URL loses its `#fragment` and its `?query`; the query's `key=value` pairs are
///   percent-decoded (`%XX`; a `+` stays a `+`) and join `params`.
/// - All pairs are sorted byte-wise by key, then by value, and joined as `k=v` with `&`
///   without encoding each one; the joined text is then percent-encoded as a whole with
///   [`percent_encode`], as is the URL.
/// - `params` must not contain `realm` or `oauth_signature`.
///
/// The live session token request puts the prepend in front of this string; see
/// [`live_session_token_request`].
///
/// # Errors
/// [`Error::InvalidRequest`] for a method that is not a plain token, a URL that is not
/// `http://` or `https://`, or a query that does not decode to UTF-8.
pub fn signature_base_string(method: &str, url: &str, params: &[(&str, &str)]) -> Result<String> {
    let method = normalize_method(method)?;
    let (bare_url, query) = split_url(url)?;
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if let Some(query) = query {
        pairs.extend(query_pairs(url, query)?);
    }
    pairs.sort_unstable();
    let joined = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    Ok(format!(
        "{method}&{}&{}",
        percent_encode(bare_url),
        percent_encode(&joined)
    ))
}

/// Formats an `Authorization` header value: `OAuth realm="<realm>"`, then the parameters
/// sorted by key as `key="value"`, separated by `", "`. Every key and value is
/// percent-encoded once with [`percent_encode`]; for IBKR's parameters only the base64
/// `oauth_signature` changes (`+` `/` `=` become `%2B` `%2F` `%3D`), so pass the signature
/// in plain base64.
pub fn authorization_header(realm: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort_unstable();
    let mut header = format!("OAuth realm=\"{}\"", percent_encode(realm));
    for (key, value) in sorted {
        header.push_str(&format!(
            ", {}=\"{}\"",
            percent_encode(key),
            percent_encode(value)
        ));
    }
    header
}

/// Signs the live session token request (`POST`, normally to [`LIVE_SESSION_TOKEN_URL`]).
///
/// The parameters are `oauth_consumer_key`, `oauth_token`, `oauth_signature_method`
/// (`RSA-SHA256`), `oauth_timestamp`, `oauth_nonce` and `diffie_hellman_challenge`. The base
/// string is the prepend's hex followed directly (no `&`) by the ordinary base string, and is
/// signed with RSASSA-PKCS1-v1_5 over SHA-256. The request body is empty.
///
/// # Errors
/// [`Error::InvalidRequest`] for a bad URL, [`Error::Sign`] if RSA signing fails.
pub fn live_session_token_request(
    credentials: &Credentials,
    url: &str,
    challenge: &DhChallenge,
    prepend: &Prepend,
    signing_key: &SigningKey,
    stamp: &Stamp,
) -> Result<SignedRequest> {
    let timestamp = stamp.timestamp().to_string();
    let mut params = vec![
        ("diffie_hellman_challenge", challenge.challenge_hex()),
        ("oauth_consumer_key", credentials.consumer_key()),
        ("oauth_nonce", stamp.nonce()),
        ("oauth_signature_method", SIGNATURE_METHOD_RSA),
        ("oauth_timestamp", timestamp.as_str()),
        ("oauth_token", credentials.access_token()),
    ];
    let plain = signature_base_string("POST", url, &params)?;
    let base_string = Zeroizing::new(format!("{}{plain}", prepend.as_hex()));
    let signature = signing_key.sign_base64(&base_string)?;
    params.push(("oauth_signature", signature.as_str()));
    let authorization = authorization_header(credentials.realm(), &params);
    Ok(SignedRequest {
        base_string,
        signature,
        authorization,
    })
}

/// Signs any request after the live session token with HMAC-SHA256 keyed by the token's
/// bytes.
///
/// `url` may carry a query; its parameters are signed (IBKR's documented rule). `form_params`
/// are the fields of an `application/x-www-form-urlencoded` body, unencoded; pass `&[]` for
/// an empty or JSON body (JSON is not signed). The header carries only the OAuth parameters.
///
/// # Errors
/// [`Error::InvalidRequest`] for a bad method or URL.
pub fn sign_request(
    credentials: &Credentials,
    lst: &LiveSessionToken,
    method: &str,
    url: &str,
    form_params: &[(&str, &str)],
    stamp: &Stamp,
) -> Result<SignedRequest> {
    let timestamp = stamp.timestamp().to_string();
    let mut oauth = vec![
        ("oauth_consumer_key", credentials.consumer_key()),
        ("oauth_nonce", stamp.nonce()),
        ("oauth_signature_method", SIGNATURE_METHOD_HMAC),
        ("oauth_timestamp", timestamp.as_str()),
        ("oauth_token", credentials.access_token()),
    ];
    let mut all = oauth.clone();
    all.extend_from_slice(form_params);
    let base_string = Zeroizing::new(signature_base_string(method, url, &all)?);
    let mut mac = HmacSha256::new_from_slice(lst.as_bytes()).expect("HMAC accepts any key length");
    mac.update(base_string.as_bytes());
    let signature = STANDARD.encode(mac.finalize().into_bytes());
    oauth.push(("oauth_signature", signature.as_str()));
    let authorization = authorization_header(credentials.realm(), &oauth);
    Ok(SignedRequest {
        base_string,
        signature,
        authorization,
    })
}

fn normalize_method(method: &str) -> Result<String> {
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(Error::InvalidRequest {
            input: Input::RequestMethod,
            value: method.to_owned(),
            detail: "an HTTP method is letters only, such as GET or POST",
        });
    }
    Ok(method.to_ascii_uppercase())
}

/// Splits off the fragment and the query. Returns the URL without them and the raw query.
fn split_url(url: &str) -> Result<(&str, Option<&str>)> {
    let without_fragment = url.split_once('#').map_or(url, |(before, _)| before);
    let (bare, query) = match without_fragment.split_once('?') {
        Some((bare, query)) => (bare, Some(query)),
        None => (without_fragment, None),
    };
    let lower = bare.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(authority_and_path) if !authority_and_path.is_empty() => Ok((bare, query)),
        _ => Err(Error::InvalidRequest {
            input: Input::RequestUrl,
            value: url.to_owned(),
            detail: "expected an absolute http:// or https:// URL",
        }),
    }
}

fn query_pairs(url: &str, query: &str) -> Result<Vec<(String, String)>> {
    let decode = |text: &str| {
        percent_decode_str(text)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| Error::InvalidRequest {
                input: Input::RequestUrl,
                value: url.to_owned(),
                detail: "the query does not percent-decode to UTF-8",
            })
    };
    query
        .split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (key, value) = segment.split_once('=').unwrap_or((segment, ""));
            Ok((decode(key)?, decode(value)?))
        })
        .collect()
}
