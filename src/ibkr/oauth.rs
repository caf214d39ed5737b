//! Headless authentication (`--auth oauth1`): IBKR's first-party OAuth 1.0a, straight to
//! `api.ibkr.com`, with no Client Portal Gateway and no daily browser login.
//!
//! The cryptography is [`ibkr_oauth`]'s (tested against IBKR's published vectors); this module
//! owns the rest:
//! - [`Inputs::load`] reads the settings (files or environment), checks each one and says which
//!   one is wrong; secrets never reach a log line or a tool result.
//! - [`OAuth`] holds the live session token (LST). [`OAuth::token`] returns one that is good
//!   for at least [`REFRESH_BEFORE`] more, and obtains a new one when not (one request at a
//!   time across every MCP session: callers that arrive during a renewal wait for it).
//! - [`OAuth::sign`] signs one request (HMAC-SHA256 with the LST, fresh nonce and timestamp).
//!   The request hooks ([`super::hooks`]) call it for every request, after pacing, so the
//!   signature covers the final URL and is never reused on a retry.
//! - A 401 from IBKR on a request signed with the current token makes the hooks call
//!   [`OAuth::invalidate`]; the next request gets a new token. The session manager then
//!   re-opens the brokerage session (`ssodh/init`, `/iserver/accounts`) as it does for the
//!   gateway, and a read is asked again once (writes never are).
//! - [`OAuth::status`] is what `get_session_status`, `ibkr://session` and `/readyz` show:
//!   token age and expiry, tokens obtained, the last renewal error. Never the token itself.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ibkr_oauth as o;
use serde::Serialize;

/// IBKR's REST base URL for OAuth clients.
pub const DEFAULT_OAUTH_URL: &str = "https://api.ibkr.com/v1/api";

/// A token is renewed when less than this is left of its life (IBKR's last 24 h).
pub const REFRESH_BEFORE: Duration = Duration::from_secs(60 * 60);

/// The OAuth settings as given (paths and values, not yet read or checked).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The consumer key (IBKR's self-service page).
    pub consumer_key: Option<String>,
    /// The access token.
    pub access_token: Option<crate::config::Secret>,
    /// The access token, in a file.
    pub access_token_file: Option<PathBuf>,
    /// The access token secret (base64).
    pub access_token_secret: Option<crate::config::Secret>,
    /// The access token secret, in a file.
    pub access_token_secret_file: Option<PathBuf>,
    /// The private signature key (PEM file).
    pub signature_key: Option<PathBuf>,
    /// The private encryption key (PEM file).
    pub encryption_key: Option<PathBuf>,
    /// The Diffie-Hellman prime, hex.
    pub dh_prime: Option<String>,
    /// `dhparam.pem` (prime and generator).
    pub dh_params: Option<PathBuf>,
    /// The generator (default 2, or the one in `dhparam.pem`).
    pub dh_generator: Option<u32>,
    /// `limited_poa` (or `test_realm` for IBKR's demo consumer `TESTCONS`).
    pub realm: String,
}

/// The OAuth inputs, read and checked. Prints redacted.
pub struct Inputs {
    credentials: o::Credentials,
    prepend: o::Prepend,
    signing: o::SigningKey,
    dh: o::DhParams,
}

impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inputs")
            .field("consumer_key", &mask(self.credentials.consumer_key()))
            .field("realm", &self.credentials.realm())
            .finish_non_exhaustive()
    }
}

/// `ABC****XY`: enough to tell two keys apart, not enough to use one.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}****{tail}")
}

fn read_file(path: &Path, setting: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{setting}: cannot read {}: {e}. Give the path of the file you saved from IBKR's \
             self-service OAuth page (or generated with openssl).",
            path.display()
        )
    })
}

/// One value given directly or in a file, not both.
fn value_or_file(
    value: Option<&crate::config::Secret>,
    file: Option<&Path>,
    setting: &str,
    file_setting: &str,
) -> Result<String, String> {
    match (value, file) {
        (Some(_), Some(_)) => Err(format!(
            "{setting} and {file_setting} are both set; give the value one way only"
        )),
        (Some(v), None) => Ok(v.expose().trim().to_string()),
        (None, Some(path)) => Ok(read_file(path, file_setting)?.trim().to_string()),
        (None, None) => Err(format!("{setting} (or {file_setting}) is not set")),
    }
    .and_then(|v| {
        if v.is_empty() {
            Err(format!("{setting} is empty"))
        } else {
            Ok(v)
        }
    })
}

impl Inputs {
    /// Reads and checks every input; the error names each missing or malformed one.
    pub fn load(s: &Settings) -> Result<Self, String> {
        let mut problems: Vec<String> = Vec::new();
        let consumer_key = s
            .consumer_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty());
        if consumer_key.is_none() {
            problems.push("--oauth-consumer-key (IBKR_MCP_OAUTH_CONSUMER_KEY) is not set".into());
        }
        let access_token = value_or_file(
            s.access_token.as_ref(),
            s.access_token_file.as_deref(),
            "--oauth-access-token (IBKR_MCP_OAUTH_ACCESS_TOKEN)",
            "--oauth-access-token-file (IBKR_MCP_OAUTH_ACCESS_TOKEN_FILE)",
        )
        .map_err(|e| problems.push(e))
        .ok();
        let secret = value_or_file(
            s.access_token_secret.as_ref(),
            s.access_token_secret_file.as_deref(),
            "--oauth-access-token-secret (IBKR_MCP_OAUTH_ACCESS_TOKEN_SECRET)",
            "--oauth-access-token-secret-file (IBKR_MCP_OAUTH_ACCESS_TOKEN_SECRET_FILE)",
        )
        .map_err(|e| problems.push(e))
        .ok();
        fn pem(
            path: Option<&PathBuf>,
            setting: &str,
            problems: &mut Vec<String>,
        ) -> Option<String> {
            match path {
                None => {
                    problems.push(format!("{setting} is not set (the path of a PEM file)"));
                    None
                }
                Some(p) => read_file(p, setting).map_err(|e| problems.push(e)).ok(),
            }
        }
        let signing_pem = pem(
            s.signature_key.as_ref(),
            "--oauth-signature-key (IBKR_MCP_OAUTH_SIGNATURE_KEY)",
            &mut problems,
        );
        let encryption_pem = pem(
            s.encryption_key.as_ref(),
            "--oauth-encryption-key (IBKR_MCP_OAUTH_ENCRYPTION_KEY)",
            &mut problems,
        );
        let shown = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        };
        let signing = signing_pem.and_then(|p| {
            o::SigningKey::from_pem(&p)
                .map_err(|e| {
                    problems.push(format!(
                        "--oauth-signature-key (IBKR_MCP_OAUTH_SIGNATURE_KEY) {}: {e}",
                        shown(&s.signature_key)
                    ))
                })
                .ok()
        });
        let encryption = encryption_pem.and_then(|p| {
            o::EncryptionKey::from_pem(&p)
                .map_err(|e| {
                    problems.push(format!(
                        "--oauth-encryption-key (IBKR_MCP_OAUTH_ENCRYPTION_KEY) {}: {e}",
                        shown(&s.encryption_key)
                    ))
                })
                .ok()
        });
        let dh = match (&s.dh_prime, &s.dh_params) {
            (Some(_), Some(_)) => {
                problems.push(
                    "--oauth-dh-prime and --oauth-dh-params are both set; give the prime one \
                     way only"
                        .into(),
                );
                None
            }
            (Some(hex), None) => o::DhParams::from_hex(hex)
                .map_err(|e| {
                    problems.push(format!("--oauth-dh-prime (IBKR_MCP_OAUTH_DH_PRIME): {e}"))
                })
                .ok(),
            (None, Some(path)) => read_file(path, "--oauth-dh-params (IBKR_MCP_OAUTH_DH_PARAMS)")
                .and_then(|text| {
                    o::DhParams::from_pem(&text).map_err(|e| {
                        format!(
                            "--oauth-dh-params (IBKR_MCP_OAUTH_DH_PARAMS) {}: {e}",
                            path.display()
                        )
                    })
                })
                .map_err(|e| problems.push(e))
                .ok(),
            (None, None) => {
                problems.push(
                    "--oauth-dh-prime (IBKR_MCP_OAUTH_DH_PRIME, hex) or --oauth-dh-params \
                     (IBKR_MCP_OAUTH_DH_PARAMS, the dhparam.pem file) is not set"
                        .into(),
                );
                None
            }
        };
        let dh = match (dh, s.dh_generator) {
            (Some(dh), Some(g)) => dh
                .with_generator(g)
                .map_err(|e| {
                    problems.push(format!(
                        "--oauth-dh-generator (IBKR_MCP_OAUTH_DH_GENERATOR): {e}"
                    ))
                })
                .ok(),
            (dh, _) => dh,
        };
        let prepend = match (&secret, &encryption) {
            (Some(secret), Some(key)) => o::decrypt_prepend(secret, key)
                .map_err(|e| {
                    problems.push(format!(
                        "--oauth-access-token-secret (IBKR_MCP_OAUTH_ACCESS_TOKEN_SECRET): {e}"
                    ))
                })
                .ok(),
            _ => None,
        };
        let realm = s.realm.trim();
        if realm.is_empty() {
            problems.push(
                "--oauth-realm (IBKR_MCP_OAUTH_REALM) is empty; IBKR's is `limited_poa`".into(),
            );
        }
        match (consumer_key, access_token, prepend, signing, dh) {
            (Some(key), Some(token), Some(prepend), Some(signing), Some(dh))
                if problems.is_empty() =>
            {
                Ok(Self {
                    credentials: o::Credentials::new(key, token).with_realm(realm),
                    prepend,
                    signing,
                    dh,
                })
            }
            _ => Err(format!(
                "--auth oauth1 cannot start:\n  - {}\nREADME \"Headless: OAuth 1.0a\" says where each comes from.",
                problems.join("\n  - ")
            )),
        }
    }

    /// Inputs from values already in memory (the demo).
    pub fn from_parts(
        credentials: o::Credentials,
        prepend: o::Prepend,
        signing: o::SigningKey,
        dh: o::DhParams,
    ) -> Self {
        Self {
            credentials,
            prepend,
            signing,
            dh,
        }
    }
}

/// One live session token.
pub struct Token {
    lst: o::LiveSessionToken,
    obtained: Instant,
    obtained_at: SystemTime,
    expires_at: SystemTime,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("obtained_at", &rfc3339(self.obtained_at))
            .field("expires_at", &rfc3339(self.expires_at))
            .finish_non_exhaustive()
    }
}

impl Token {
    /// When it was obtained (monotonic).
    pub fn obtained(&self) -> Instant {
        self.obtained
    }
}

/// What the status shows about OAuth.
#[derive(Debug, Clone, Serialize, Default)]
pub struct AuthStatus {
    /// `oauth1`.
    pub mode: &'static str,
    /// The consumer key, masked.
    pub consumer_key: String,
    /// The realm.
    pub realm: String,
    /// Whether a token is held now.
    pub token: bool,
    /// When the current token was obtained (RFC 3339).
    pub token_obtained_at: Option<String>,
    /// Its age in seconds.
    pub token_age_seconds: Option<u64>,
    /// When it expires (RFC 3339), by IBKR's word.
    pub token_expires_at: Option<String>,
    /// Tokens obtained since start.
    pub tokens_obtained: u64,
    /// Tokens dropped because IBKR answered 401 to a request signed with them.
    pub tokens_rejected: u64,
    /// The last failed attempt to obtain a token: when and why.
    pub last_refresh_error: Option<String>,
    /// When that was (RFC 3339).
    pub last_refresh_error_at: Option<String>,
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[derive(Debug, Default)]
struct Counters {
    obtained: u64,
    rejected: u64,
    last_error: Option<(String, SystemTime)>,
}

/// The OAuth client: the live session token and request signing (see the module docs).
pub struct OAuth {
    inputs: Inputs,
    base_url: String,
    lst_url: String,
    http: reqwest::Client,
    current: Mutex<Option<Arc<Token>>>,
    renewing: tokio::sync::Mutex<()>,
    counters: Mutex<Counters>,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth")
            .field("inputs", &self.inputs)
            .field("lst_url", &self.lst_url)
            .finish_non_exhaustive()
    }
}

/// The live session token reply.
#[derive(serde::Deserialize)]
struct LstReply {
    diffie_hellman_response: String,
    live_session_token_signature: String,
    live_session_token_expiration: Option<serde_json::Value>,
}

impl OAuth {
    /// A client for `base_url` (IBKR's `/v1/api`), using `http` for the token requests.
    pub fn new(inputs: Inputs, base_url: &str, http: reqwest::Client) -> Arc<Self> {
        Arc::new(Self {
            inputs,
            base_url: base_url.trim_end_matches('/').to_string(),
            lst_url: format!(
                "{}/oauth/live_session_token",
                base_url.trim_end_matches('/')
            ),
            http,
            current: Mutex::new(None),
            renewing: tokio::sync::Mutex::new(()),
            counters: Mutex::new(Counters::default()),
        })
    }

    /// The access token: the WebSocket sends it as its `oauth_token` query parameter (the one
    /// request IBKR does not want signed). Never logged.
    pub fn access_token(&self) -> &str {
        self.inputs.credentials.access_token()
    }

    fn held(&self) -> Option<Arc<Token>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn fresh(&self) -> Option<Arc<Token>> {
        self.held()
            .filter(|t| SystemTime::now() + REFRESH_BEFORE < t.expires_at)
    }

    /// A token good for at least [`REFRESH_BEFORE`]; obtains one when needed, one request at a
    /// time. The error says what IBKR answered and what to check.
    pub async fn token(&self) -> Result<Arc<Token>, String> {
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let _one_at_a_time = self.renewing.lock().await;
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        match self.obtain().await {
            Ok(t) => {
                let t = Arc::new(t);
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(t.clone());
                let renewal = {
                    let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
                    c.obtained += 1;
                    c.last_error = None;
                    c.obtained > 1
                };
                tracing::info!(expires_at = %rfc3339(t.expires_at), "obtained an IBKR live session token (OAuth)");
                if renewal {
                    // Still under the renewal lock: nobody signs with the new token before the
                    // brokerage session is open again.
                    self.reopen(&t).await;
                }
                Ok(t)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not obtain an IBKR live session token (OAuth)");
                self.counters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .last_error = Some((e.clone(), SystemTime::now()));
                Err(e)
            }
        }
    }

    /// After a renewed token, what IBKR's clients do (facts §1.10): open the brokerage session
    /// again (`ssodh/init`, publish and compete) and read the account list, so that the
    /// `/iserver` request that follows does not meet "no bridge". Best effort: a failure is
    /// logged, and the session manager's next check opens the session as usual. The first
    /// token needs none of this; the session manager opens the session at start.
    async fn reopen(&self, token: &Token) {
        let steps = [
            (
                reqwest::Method::POST,
                "/iserver/auth/ssodh/init",
                Some(serde_json::json!({ "publish": true, "compete": true })),
            ),
            (reqwest::Method::GET, "/iserver/accounts", None),
        ];
        for (method, path, body) in steps {
            let mut builder = self
                .http
                .request(method, format!("{}{path}", self.base_url));
            if let Some(body) = &body {
                builder = builder.json(body);
            }
            let outcome = match builder.build() {
                Ok(mut request) => match self.sign(token, &mut request) {
                    Ok(()) => self
                        .http
                        .execute(request)
                        .await
                        .map(|r| r.status().as_u16())
                        .map_err(|e| e.without_url().to_string()),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e.without_url().to_string()),
            };
            match outcome {
                Ok(status) if status < 300 => {
                    tracing::debug!(path, status, "after a new live session token");
                }
                Ok(status) => {
                    tracing::warn!(path, status, "after a new live session token: IBKR refused");
                    return;
                }
                Err(e) => {
                    tracing::warn!(path, error = %e, "after a new live session token: no reply");
                    return;
                }
            }
        }
    }

    /// IBKR answered 401 to a request sent at `sent`: the token it was signed with is no
    /// longer good. Dropped only when it is still the current one (a renewal since then has
    /// already replaced it).
    pub fn invalidate(&self, sent: Instant) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|t| t.obtained <= sent) {
            *current = None;
            self.counters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .rejected += 1;
            tracing::info!(
                "IBKR answered 401: the live session token is dropped and will be renewed"
            );
        }
    }

    async fn obtain(&self) -> Result<Token, String> {
        let inputs = &self.inputs;
        let challenge = o::DhChallenge::generate(&inputs.dh);
        let request = o::live_session_token_request(
            &inputs.credentials,
            &self.lst_url,
            &challenge,
            &inputs.prepend,
            &inputs.signing,
            &o::Stamp::fresh(),
        )
        .map_err(|e| format!("cannot build the live session token request: {e}"))?;
        let mut authorization = reqwest::header::HeaderValue::from_str(request.authorization())
            .map_err(|e| format!("the Authorization header is not valid: {e}"))?;
        authorization.set_sensitive(true);
        let reply = self
            .http
            .post(&self.lst_url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header(reqwest::header::CONTENT_LENGTH, 0)
            .send()
            .await
            .map_err(|e| format!("no reply from {} ({})", self.lst_url, e.without_url()))?;
        let status = reply.status();
        let body = reply
            .bytes()
            .await
            .map_err(|e| format!("the token reply broke off ({e})"))?;
        if !status.is_success() {
            let said = crate::error::ibkr_message(&body);
            let hint = match status.as_u16() {
                401 => {
                    "IBKR did not accept the consumer key, access token, realm or signature key \
                     (a consumer key can take days to be activated after registration, and \
                     `test_realm` is only for IBKR's TESTCONS key)"
                }
                403 => "IBKR refused access (a proxy or firewall may be in the way)",
                410 => "IBKR says the session is gone; a new token is requested on the next call",
                429 => "IBKR's rate limit: wait a minute",
                _ => "IBKR's service may be unavailable; the next call tries again",
            };
            return Err(format!(
                "IBKR refused the live session token request (HTTP {}): {said}. {hint}",
                status.as_u16()
            ));
        }
        let reply: LstReply = serde_json::from_slice(&body).map_err(|e| {
            format!("the live session token reply is not the JSON IBKR sends ({e})")
        })?;
        let k = challenge
            .k_bytes(&reply.diffie_hellman_response)
            .map_err(|e| format!("IBKR's diffie_hellman_response is not usable: {e}"))?;
        let lst = o::live_session_token(&k, &inputs.prepend);
        if !o::validate_lst(
            &lst,
            inputs.credentials.consumer_key(),
            &reply.live_session_token_signature,
        ) {
            return Err(
                "the live session token does not validate against IBKR's signature: the \
                 access token secret, the encryption key or the Diffie-Hellman prime do not \
                 belong to this consumer key and access token"
                    .into(),
            );
        }
        let now = SystemTime::now();
        let expires_at = reply
            .live_session_token_expiration
            .as_ref()
            .and_then(serde_json::Value::as_u64)
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
            .filter(|t| *t > now)
            // IBKR documents 24 hours.
            .unwrap_or(now + Duration::from_secs(24 * 60 * 60));
        Ok(Token {
            lst,
            obtained: Instant::now(),
            obtained_at: now,
            expires_at,
        })
    }

    /// Signs `request` with `token`: the `Authorization` header, marked sensitive.
    pub fn sign(&self, token: &Token, request: &mut reqwest::Request) -> Result<(), String> {
        let signed = o::sign_request(
            &self.inputs.credentials,
            &token.lst,
            request.method().as_str(),
            request.url().as_str(),
            &[],
            &o::Stamp::fresh(),
        )
        .map_err(|e| format!("cannot sign the request: {e}"))?;
        let mut value = reqwest::header::HeaderValue::from_str(signed.authorization())
            .map_err(|e| format!("the Authorization header is not valid: {e}"))?;
        value.set_sensitive(true);
        request
            .headers_mut()
            .insert(reqwest::header::AUTHORIZATION, value);
        Ok(())
    }

    /// What the status shows.
    pub fn status(&self) -> AuthStatus {
        let held = self.held();
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        AuthStatus {
            mode: "oauth1",
            consumer_key: mask(self.inputs.credentials.consumer_key()),
            realm: self.inputs.credentials.realm().to_string(),
            token: held.is_some(),
            token_obtained_at: held.as_ref().map(|t| rfc3339(t.obtained_at)),
            token_age_seconds: held.as_ref().map(|t| t.obtained.elapsed().as_secs()),
            token_expires_at: held.as_ref().map(|t| rfc3339(t.expires_at)),
            tokens_obtained: c.obtained,
            tokens_rejected: c.rejected,
            last_refresh_error: c.last_error.as_ref().map(|(e, _)| e.clone()),
            last_refresh_error_at: c.last_error.as_ref().map(|(_, t)| rfc3339(*t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_secrets_out() {
        assert_eq!(mask("ABCDEFGHI"), "ABC****HI");
        assert_eq!(mask("short"), "*****");
    }

    #[test]
    fn missing_inputs_are_named_all_at_once() {
        let e = Inputs::load(&Settings {
            realm: "limited_poa".into(),
            ..Settings::default()
        })
        .unwrap_err();
        for setting in [
            "IBKR_MCP_OAUTH_CONSUMER_KEY",
            "IBKR_MCP_OAUTH_ACCESS_TOKEN",
            "IBKR_MCP_OAUTH_ACCESS_TOKEN_SECRET",
            "IBKR_MCP_OAUTH_SIGNATURE_KEY",
            "IBKR_MCP_OAUTH_ENCRYPTION_KEY",
            "IBKR_MCP_OAUTH_DH_PRIME",
        ] {
            assert!(e.contains(setting), "{setting} in {e}");
        }
    }

    #[test]
    fn malformed_inputs_say_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("ibkr-mcp-oauth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("key.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let e = Inputs::load(&Settings {
            consumer_key: Some("TESTCONS".into()),
            access_token: Some("abc".parse().unwrap()),
            access_token_secret: Some("c2VjcmV0".parse().unwrap()),
            signature_key: Some(not_pem.clone()),
            encryption_key: Some(dir.join("missing.pem")),
            dh_prime: Some("not hex".into()),
            realm: "limited_poa".into(),
            ..Settings::default()
        })
        .unwrap_err();
        assert!(e.contains("IBKR_MCP_OAUTH_SIGNATURE_KEY"), "{e}");
        assert!(e.contains("missing.pem"), "{e}");
        assert!(e.contains("IBKR_MCP_OAUTH_DH_PRIME"), "{e}");
        assert!(!e.contains("c2VjcmV0"), "the secret is not echoed: {e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
