//! The server's half of the OAuth protocol, without HTTP or locking: reading the
//! `Authorization` header, the checks in the order the module docs of `oauth` give, issuing
//! live session tokens, and the per-simulator state (current token, seen nonces, counters).
//! `gateway::oauth` feeds it the request's method, rebuilt URL, form fields and header.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use ibkr_oauth::{DhChallenge, LiveSessionToken, Prepend, live_session_token};
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{OAuthRefusal, OAuthRefusals, OAuthStats, SimOAuth};

type HmacSha256 = Hmac<Sha256>;

const METHOD_RSA: &str = "RSA-SHA256";
const METHOD_HMAC: &str = "HMAC-SHA256";

/// The simulator's clock at one instant, in the two units the protocol uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    /// Unix seconds (for `oauth_timestamp`).
    pub secs: u64,
    /// Unix milliseconds (for token expiry).
    pub ms: i64,
}

impl Now {
    /// The wall clock now.
    pub(crate) fn wall() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            secs: since.as_secs(),
            ms: i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// What the checks need to know about one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Incoming<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The URL the client signed, rebuilt (see the `oauth` module docs), query included.
    pub url: &'a str,
    /// Fields of an `application/x-www-form-urlencoded` body, decoded (empty otherwise).
    pub form: &'a [(String, String)],
    /// The raw `Authorization` header, if any.
    pub authorization: Option<&'a [u8]>,
}

/// The parameters of an `Authorization: OAuth ...` header, percent-decoded.
#[derive(Debug)]
struct OAuthHeader {
    params: Vec<(String, String)>,
}

impl OAuthHeader {
    /// Reads `OAuth k="v", k2="v2"` (scheme case-insensitive, quotes optional, any spacing
    /// around the commas). Duplicate keys are refused.
    fn parse(raw: Option<&[u8]>) -> Result<Self, OAuthRefusal> {
        let raw = raw.ok_or(OAuthRefusal::MissingHeader)?;
        let malformed = OAuthRefusal::MalformedHeader;
        let text = std::str::from_utf8(raw).map_err(|_| malformed)?.trim();
        let (scheme, rest) = text.split_once(char::is_whitespace).ok_or(malformed)?;
        if !scheme.eq_ignore_ascii_case("OAuth") {
            return Err(malformed);
        }
        let decode = |s: &str| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| malformed)
        };
        let mut params: Vec<(String, String)> = Vec::new();
        for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or(malformed)?;
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            let key = decode(key.trim())?;
            if key.is_empty() || params.iter().any(|(k, _)| *k == key) {
                return Err(malformed);
            }
            params.push((key, decode(value)?));
        }
        Ok(Self { params })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn require(&self, key: &str) -> Result<&str, OAuthRefusal> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .ok_or(OAuthRefusal::MalformedHeader)
    }

    /// The signed parameters: everything but `realm` and `oauth_signature`.
    fn signed(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params
            .iter()
            .filter(|(k, _)| k != "realm" && k != "oauth_signature")
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// What survives the checks that need no key material.
struct Checked {
    timestamp: u64,
    nonce: String,
    signature: Vec<u8>,
}

/// The checks shared by both kinds of request, in order: parameters and signature method,
/// consumer key and realm, access token, timestamp.
fn check_common(
    cfg: &SimOAuth,
    header: &OAuthHeader,
    signature_method: &str,
    extra_required: &[&str],
    now: Now,
) -> Result<Checked, OAuthRefusal> {
    let consumer_key = header.require("oauth_consumer_key")?;
    let token = header.require("oauth_token")?;
    let timestamp = header.require("oauth_timestamp")?;
    let nonce = header.require("oauth_nonce")?;
    let signature = header.require("oauth_signature")?;
    for key in extra_required {
        header.require(key)?;
    }
    if header.require("oauth_signature_method")? != signature_method {
        return Err(OAuthRefusal::MalformedHeader);
    }
    let timestamp: u64 = if timestamp.bytes().all(|b| b.is_ascii_digit()) {
        timestamp
            .parse()
            .map_err(|_| OAuthRefusal::MalformedHeader)?
    } else {
        return Err(OAuthRefusal::MalformedHeader);
    };
    let signature = STANDARD
        .decode(signature)
        .map_err(|_| OAuthRefusal::MalformedHeader)?;
    if consumer_key != cfg.consumer_key() || header.get("realm") != Some(cfg.realm()) {
        return Err(OAuthRefusal::InvalidConsumer);
    }
    if token != cfg.access_token() {
        return Err(OAuthRefusal::InvalidToken);
    }
    if now.secs.abs_diff(timestamp) > cfg.clock_skew().as_secs() {
        return Err(OAuthRefusal::StaleTimestamp);
    }
    Ok(Checked {
        timestamp,
        nonce: nonce.to_owned(),
        signature,
    })
}

/// The plain base string (`METHOD&url&params`) over the header's signed parameters and the
/// form fields; the URL's query joins the parameters inside `ibkr_oauth`.
fn base_string(header: &OAuthHeader, req: &Incoming<'_>) -> Result<String, OAuthRefusal> {
    let mut params: Vec<(&str, &str)> = header.signed().collect();
    params.extend(req.form.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    ibkr_oauth::signature_base_string(req.method, req.url, &params)
        .map_err(|_| OAuthRefusal::MalformedHeader)
}

/// A live session token the simulator issued.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    lst: LiveSessionToken,
    issued_ms: i64,
    expires_ms: i64,
}

/// OAuth state that changes while the simulator runs.
#[derive(Debug, Default)]
pub(crate) struct OAuthState {
    current: Option<Issued>,
    /// Nonces seen, with their `oauth_timestamp`.
    nonces: HashMap<String, u64>,
    last_prune_secs: u64,
    tokens_issued: u64,
    accepted: u64,
    refused: OAuthRefusals,
}

impl OAuthState {
    /// The counters and the current token's times, as of `now`.
    pub(crate) fn stats(&self, now: Now) -> OAuthStats {
        OAuthStats {
            tokens_issued: self.tokens_issued,
            accepted: self.accepted,
            refused: self.refused.clone(),
            refused_total: self.refused.total(),
            token_issued_ms: self.current.as_ref().map(|t| t.issued_ms),
            token_expires_ms: self.current.as_ref().map(|t| t.expires_ms),
            token_expired: self
                .current
                .as_ref()
                .is_some_and(|t| now.ms >= t.expires_ms),
        }
    }

    /// Makes the current token expire at `now`; `false` when there is none.
    pub(crate) fn expire_now(&mut self, now: Now) -> bool {
        match self.current.as_mut() {
            Some(t) => {
                t.expires_ms = t.expires_ms.min(now.ms);
                true
            }
            None => false,
        }
    }

    /// Whether a live session token is current at `now` (the WebSocket's admission):
    /// `NoToken` before the first one, `ExpiredToken` after it expired.
    pub(crate) fn token_valid(&self, now: Now) -> Result<(), OAuthRefusal> {
        match &self.current {
            None => Err(OAuthRefusal::NoToken),
            Some(t) if now.ms >= t.expires_ms => Err(OAuthRefusal::ExpiredToken),
            Some(_) => Ok(()),
        }
    }

    /// Counts a refusal.
    pub(crate) fn refuse(&mut self, refusal: OAuthRefusal) {
        self.refused.bump(refusal);
    }

    /// Checks an HMAC-SHA256 signed request against the current token; on success counts it
    /// as accepted and remembers its nonce. The caller counts refusals ([`Self::refuse`]).
    pub(crate) fn check_signed_request(
        &mut self,
        cfg: &SimOAuth,
        req: &Incoming<'_>,
        now: Now,
    ) -> Result<(), OAuthRefusal> {
        let header = OAuthHeader::parse(req.authorization)?;
        let checked = check_common(cfg, &header, METHOD_HMAC, &[], now)?;
        let token = self.current.as_ref().ok_or(OAuthRefusal::NoToken)?;
        if now.ms >= token.expires_ms {
            return Err(OAuthRefusal::ExpiredToken);
        }
        let base = Zeroizing::new(base_string(&header, req)?);
        let mut mac = HmacSha256::new_from_slice(token.lst.as_bytes())
            .map_err(|_| OAuthRefusal::BadSignature)?;
        mac.update(base.as_bytes());
        mac.verify_slice(&checked.signature)
            .map_err(|_| OAuthRefusal::BadSignature)?;
        self.use_nonce(&checked.nonce, checked.timestamp, cfg, now)?;
        self.accepted += 1;
        Ok(())
    }

    /// The last step of a token request (under the lock): the nonce, then the new token
    /// replaces the old one.
    pub(crate) fn finish_token_request(
        &mut self,
        cfg: &SimOAuth,
        request: &TokenRequest,
        issued: Issued,
        now: Now,
    ) -> Result<(), OAuthRefusal> {
        self.use_nonce(&request.nonce, request.timestamp, cfg, now)?;
        self.current = Some(issued);
        self.tokens_issued += 1;
        Ok(())
    }

    /// Refuses a nonce seen within the skew window, else remembers it. Nonces whose timestamp
    /// has left the window are forgotten (a replay of them is refused as stale).
    fn use_nonce(
        &mut self,
        nonce: &str,
        timestamp: u64,
        cfg: &SimOAuth,
        now: Now,
    ) -> Result<(), OAuthRefusal> {
        let skew = cfg.clock_skew().as_secs();
        if self.last_prune_secs != now.secs {
            self.last_prune_secs = now.secs;
            self.nonces
                .retain(|_, ts| ts.saturating_add(skew) >= now.secs);
        }
        if self.nonces.contains_key(nonce) {
            return Err(OAuthRefusal::NonceReused);
        }
        self.nonces.insert(nonce.to_owned(), timestamp);
        Ok(())
    }
}

/// A token request that passed the checks that need no RSA or Diffie-Hellman work.
pub(crate) struct TokenRequest {
    nonce: String,
    timestamp: u64,
    challenge_hex: String,
    /// Prepend + base string: secret.
    signed_text: Zeroizing<String>,
    signature: Vec<u8>,
}

/// Reads a token request (`POST /oauth/live_session_token`): header, common checks and the
/// text that should have been signed. Cheap; no lock needed.
pub(crate) fn read_token_request(
    cfg: &SimOAuth,
    req: &Incoming<'_>,
    now: Now,
) -> Result<TokenRequest, OAuthRefusal> {
    let header = OAuthHeader::parse(req.authorization)?;
    let checked = check_common(cfg, &header, METHOD_RSA, &["diffie_hellman_challenge"], now)?;
    let base = Zeroizing::new(base_string(&header, req)?);
    let prepend = Prepend::from_bytes(cfg.prepend());
    Ok(TokenRequest {
        nonce: checked.nonce,
        timestamp: checked.timestamp,
        challenge_hex: header.require("diffie_hellman_challenge")?.to_owned(),
        signed_text: Zeroizing::new(format!("{}{}", prepend.as_hex(), base.as_str())),
        signature: checked.signature,
    })
}

/// Verifies the RSA signature and does the server's Diffie-Hellman half: a fresh 256-bit
/// exponent `b`, `B = g^b mod p`, `K = A^b mod p` (Java byte form), and
/// `LST = HMAC-SHA1(K, prepend bytes)`. Returns the token and the JSON answer. CPU-bound (one
/// RSA verification and two 2048-bit exponentiations); run it off the async threads.
pub(crate) fn answer_token_request(
    cfg: &SimOAuth,
    request: &TokenRequest,
    now: Now,
) -> Result<(Issued, Value), OAuthRefusal> {
    if !cfg.verify_rsa_sha256(request.signed_text.as_bytes(), &request.signature) {
        return Err(OAuthRefusal::BadSignature);
    }
    // Diffie-Hellman is symmetric: the server's exchange is a client "challenge" with its own
    // exponent, finished with the client's A.
    let server = DhChallenge::generate(cfg.dh());
    let k = server
        .k_bytes(&request.challenge_hex)
        .map_err(|_| OAuthRefusal::BadChallenge)?;
    let lst = live_session_token(&k, &Prepend::from_bytes(cfg.prepend()));
    let lifetime_ms = i64::try_from(cfg.lst_lifetime().as_millis()).unwrap_or(i64::MAX);
    let expires_ms = now.ms.saturating_add(lifetime_ms);
    let answer = json!({
        "diffie_hellman_response": server.challenge_hex(),
        "live_session_token_signature": lst.signature_hex(cfg.consumer_key()),
        "live_session_token_expiration": expires_ms,
    });
    Ok((
        Issued {
            lst,
            issued_ms: now.ms,
            expires_ms,
        },
        answer,
    ))
}

/// Decodes an `application/x-www-form-urlencoded` body (`+` is a space, `%XX` a byte).
/// Fields that do not decode to UTF-8 are kept as they are.
pub(crate) fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let spaced = s.replace('+', " ");
        percent_decode_str(&spaced)
            .decode_utf8()
            .map(|c| c.into_owned())
            .unwrap_or(spaced)
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OAuthHeader, OAuthRefusal> {
        OAuthHeader::parse(Some(text.as_bytes()))
    }

    #[test]
    fn header_parse_accepts_both_orders_and_spacings() {
        let a = parse(
            r#"OAuth realm="limited_poa", oauth_consumer_key="K", oauth_signature="ab%2Bc%3D""#,
        )
        .unwrap();
        assert_eq!(a.get("realm"), Some("limited_poa"));
        assert_eq!(a.get("oauth_signature"), Some("ab+c="));
        let b = parse(r#"oauth oauth_signature="x",oauth_consumer_key=K,realm="r""#).unwrap();
        assert_eq!(b.get("oauth_consumer_key"), Some("K"));
        assert_eq!(b.get("realm"), Some("r"));
        let signed: Vec<_> = b.signed().collect();
        assert_eq!(signed, vec![("oauth_consumer_key", "K")]);
    }

    #[test]
    fn header_parse_refuses_what_is_not_an_oauth_header() {
        assert_eq!(
            OAuthHeader::parse(None).unwrap_err(),
            OAuthRefusal::MissingHeader
        );
        for bad in [
            "",
            "Bearer abc",
            "OAuth",
            r#"OAuth realm"x""#,
            r#"OAuth a="1", a="2""#,
            r#"OAuth ="1""#,
            "OAuth a=%FF",
        ] {
            assert_eq!(
                parse(bad).unwrap_err(),
                OAuthRefusal::MalformedHeader,
                "{bad:?}"
            );
        }
        // Control: a well-formed header with the same pieces parses.
        assert!(parse(r#"OAuth a="1", b="2""#).is_ok());
    }

    #[test]
    fn form_fields_decode_plus_and_percent() {
        assert_eq!(
            form_fields(b"a=1+2&b=%2Fx&c&&d="),
            vec![
                ("a".to_owned(), "1 2".to_owned()),
                ("b".to_owned(), "/x".to_owned()),
                ("c".to_owned(), String::new()),
                ("d".to_owned(), String::new()),
            ]
        );
    }
}
