//! The one place every request of the generated client passes through.
//!
//! progenitor is generated with `HooksMode::Expected` and the inner type [`Hooks`], so the
//! `ClientHooks` implementation below is compiled into every operation. It:
//! - removes the `api-version` header progenitor adds (a Dropshot convention the gateway does
//!   not know) and sends `{}` for a body-less POST/PUT/PATCH (some gateway endpoints reject an
//!   empty body with 411/400);
//! - asks the [`Gate`] (pacing, set by the session layer) whether the request may go, and
//!   refuses with a typed [`Refusal`] instead of sending it;
//! - opens one tracing span per operation (operation id, status, duration) and logs bodies only
//!   at TRACE, capped, never headers (the gateway's cookies stay out of logs);
//! - keeps the gateway's raw reply (status and body bytes) for the tool call that made the
//!   request (`capture_with_body`), so a reply that does not fit its generated type is still returned
//!   to the model as IBKR sent it;
//! - answers again from its [`ReplyCache`] for the few operations IBKR allows only rarely and
//!   whose reply is reference data (the scanner parameters, once per 15 minutes), without
//!   asking the gate or the gateway;
//! - sends a tool call's JSON body exactly as the caller wrote it (`capture_with_body`), after
//!   the generated builder has checked that it converts to the operation's body type: the typed
//!   round trip would drop empty lists and nulls and turn `1` into `1.0`.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use progenitor_client::{ClientHooks, ClientInfo, Error, OperationInfo};
use tracing::Instrument as _;

use super::generated::Client;

/// A decision to not send a request, made before it leaves the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A client-side rate limit would be exceeded.
    Paced {
        /// The limit, in words ("1 request per 5 s for GET /iserver/account/orders").
        limit: String,
        /// When a retry can succeed.
        retry_after: Duration,
    },
    /// The final URL is not the operation's own endpoint, or a path parameter holds something
    /// other than an id (a dot segment, a separator, an escape).
    UnsafePath {
        /// What is wrong, naming the parameter.
        detail: String,
    },
    /// No OAuth live session token could be obtained to sign the request (`--auth oauth1`).
    Auth {
        /// What IBKR answered, or what is wrong with the inputs.
        detail: String,
    },
    /// The [`Guard`] (the trading policy) refused the final request.
    Policy {
        /// The rule (`account`, `live_account`, `kill_switch`, ...).
        rule: &'static str,
        /// What happened and what to do.
        message: String,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Paced { limit, retry_after } => write!(
                f,
                "paced: {limit}; retry in {:.1} s",
                retry_after.as_secs_f64()
            ),
            Refusal::UnsafePath { detail } => write!(f, "unsafe request path: {detail}"),
            Refusal::Policy { rule, message } => write!(f, "refused ({rule}): {message}"),
            Refusal::Auth { detail } => write!(f, "not signed (OAuth): {detail}"),
        }
    }
}

/// A request about to leave the process, as the [`Guard`] sees it: the final URL's path
/// parameters (read back from the URL, after encoding and normalization) and the final body.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// operationId.
    pub operation_id: &'static str,
    /// Path parameters by template name, as they appear in the final URL.
    pub path_params: &'a [(String, String)],
    /// The JSON body that will be sent, if any.
    pub body: Option<&'a serde_json::Value>,
}

/// Checks every outgoing request of the operations it covers, on the final path and body, and
/// learns from replies (the account list, say). Implemented by the trading policy.
pub trait Guard: Send + Sync + std::fmt::Debug {
    /// Whether requests of `operation_id` are checked (their body is parsed only then).
    fn covers(&self, operation_id: &str) -> bool;
    /// Lets the request go, or refuses it.
    fn check(&self, request: &Outgoing<'_>) -> Result<(), Refusal>;
    /// Whether 2xx replies of `operation_id` are passed to [`learn`](Self::learn).
    fn learns_from(&self, operation_id: &str) -> bool;
    /// Told about a 2xx reply of an operation it [`learns_from`](Self::learns_from).
    fn learn(&self, operation_id: &str, body: &[u8]);
}

/// The characters a path parameter may have in the final URL: ASCII letters, digits, `_`, `-`
/// and `.`, not starting with a dot. Anything else (a percent escape, a separator) is refused.
pub fn safe_segment(segment: &str) -> bool {
    !segment.is_empty()
        && !segment.starts_with('.')
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Matches a final URL path against `base` (the client's base path, e.g. `/v1/api`) followed by
/// the operation's path `template`; returns the path parameters by name. Every literal segment
/// must be the template's own and every parameter a [`safe_segment`].
pub fn match_path(path: &str, base: &str, template: &str) -> Result<Vec<(String, String)>, String> {
    let rest = path
        .strip_prefix(base.trim_end_matches('/'))
        .filter(|r| r.starts_with('/'))
        .ok_or_else(|| format!("`{path}` is outside the API base `{base}`"))?;
    let got: Vec<&str> = rest.split('/').skip(1).collect();
    let want: Vec<&str> = template.split('/').skip(1).collect();
    if got.len() != want.len() {
        return Err(format!("`{rest}` does not have the shape of `{template}`"));
    }
    let mut params = Vec::new();
    for (g, w) in got.iter().zip(&want) {
        match w.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            Some(name) => {
                if !safe_segment(g) {
                    return Err(format!(
                        "path parameter `{name}` is `{}`, which is not an id (only letters, \
                         digits, `_`, `-` and inner dots are allowed)",
                        excerpt_raw(g.as_bytes())
                    ));
                }
                params.push((name.to_string(), (*g).to_string()));
            }
            None if g == w => {}
            None => {
                return Err(format!("`{rest}` is not the endpoint `{template}`"));
            }
        }
    }
    Ok(params)
}

/// Decides, before each request, whether it may be sent now (waiting if it should).
pub trait Gate: Send + Sync + std::fmt::Debug {
    /// Waits until `operation_id` may be sent, or refuses it.
    fn admit<'a>(
        &'a self,
        operation_id: &'static str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>>;
    /// Told about every reply status (to back off after a 429, for instance).
    fn observe(&self, operation_id: &'static str, status: u16, retry_after: Option<Duration>);
}

/// The inner value of the generated [`Client`]: what the hooks need.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    gate: Option<Arc<dyn Gate>>,
    guard: Option<Arc<dyn Guard>>,
    retry: Option<Arc<Retry>>,
    cache: Option<Arc<ReplyCache>>,
    oauth: Option<Arc<super::oauth::OAuth>>,
    base_path: String,
}

/// Successful replies kept for a while and served again, for operations IBKR allows only
/// rarely and whose reply is reference data that does not change between calls. Only GET
/// requests, only 2xx replies; the key is the operation and the full URL.
#[derive(Debug, Default)]
pub struct ReplyCache {
    ttl: std::collections::HashMap<String, Duration>,
    entries: std::sync::Mutex<std::collections::HashMap<String, Stored>>,
}

#[derive(Debug, Clone)]
struct Stored {
    at: Instant,
    status: reqwest::StatusCode,
    content_type: Option<reqwest::header::HeaderValue>,
    body: Bytes,
}

/// `pre` lets a request past the gate only when its cached reply is fresh; `exec` then serves
/// an entry up to this much older, so an entry expiring between the two is still served
/// rather than sent unpaced.
const CACHE_GRACE: Duration = Duration::from_secs(60);

impl ReplyCache {
    /// A cache for the given operations, each with how long its reply is served again.
    pub fn new(ttl: impl IntoIterator<Item = (String, Duration)>) -> Self {
        Self {
            ttl: ttl.into_iter().collect(),
            entries: Default::default(),
        }
    }

    fn key(&self, operation_id: &str, request: &reqwest::Request) -> Option<String> {
        (request.method() == reqwest::Method::GET && self.ttl.contains_key(operation_id))
            .then(|| format!("{operation_id} {}", request.url()))
    }

    fn lookup(
        &self,
        operation_id: &str,
        request: &reqwest::Request,
        grace: Duration,
    ) -> Option<Stored> {
        let key = self.key(operation_id, request)?;
        let ttl = self.ttl[operation_id];
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let age = entries.get(&key)?.at.elapsed();
        if age >= ttl + CACHE_GRACE {
            entries.remove(&key);
        }
        (age < ttl + grace)
            .then(|| entries.get(&key).cloned())
            .flatten()
    }

    fn store(&self, key: String, stored: Stored) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(key, stored);
    }
}

/// Which operations may be retried, and how.
#[derive(Debug, Clone)]
pub struct Retry {
    /// operationIds that only read and can be repeated safely. Nothing that places, changes
    /// or cancels an order, or answers an order question, may ever be in this set.
    pub operations: std::collections::HashSet<String>,
    /// Attempts after the first.
    pub retries: u32,
    /// Pause before the first retry; each next one waits three times longer.
    pub backoff: Duration,
}

impl Hooks {
    /// Hooks that admit every request and never retry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks `gate` before each request (pacing).
    pub fn with_gate(mut self, gate: Arc<dyn Gate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Checks every request of the operations `guard` covers, on the final path and body.
    pub fn with_guard(mut self, guard: Arc<dyn Guard>) -> Self {
        self.guard = Some(guard);
        self
    }

    /// The path of the client's base URL (`/v1/api` on the gateway); every request's path
    /// must be this followed by its operation's template.
    pub fn with_base_path(mut self, base_path: impl Into<String>) -> Self {
        self.base_path = base_path.into();
        self
    }

    /// Retries the operations of `retry` on connection errors and 5xx answers.
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = Some(Arc::new(retry));
        self
    }

    /// Signs every request with OAuth 1.0a (`--auth oauth1`): after pacing, so the signature
    /// covers the final URL; each retry is signed again (a nonce is never reused).
    pub fn with_oauth(mut self, oauth: Arc<super::oauth::OAuth>) -> Self {
        self.oauth = Some(oauth);
        self
    }

    /// Serves the replies of `cache`'s operations again while they are fresh.
    pub fn with_cache(mut self, cache: ReplyCache) -> Self {
        self.cache = Some(Arc::new(cache));
        self
    }

    /// The request guard: the final URL must be the operation's own endpoint with id-like path
    /// parameters, and the [`Guard`] must let the final path and body through.
    fn inspect(
        &self,
        request: &reqwest::Request,
        operation_id: &'static str,
    ) -> Result<(), Refusal> {
        let template =
            super::operations::template(operation_id).ok_or_else(|| Refusal::UnsafePath {
                detail: format!("`{operation_id}` is not an operation of this client"),
            })?;
        let params = match_path(request.url().path(), &self.base_path, template)
            .map_err(|detail| Refusal::UnsafePath { detail })?;
        let Some(guard) = self.guard.as_ref().filter(|g| g.covers(operation_id)) else {
            return Ok(());
        };
        let body = request
            .body()
            .and_then(reqwest::Body::as_bytes)
            .filter(|b| !b.is_empty())
            .map(serde_json::from_slice::<serde_json::Value>)
            .transpose()
            .map_err(|e| Refusal::Policy {
                rule: "body",
                message: format!("the request body is not JSON ({e}), so it cannot be checked"),
            })?;
        guard.check(&Outgoing {
            operation_id,
            path_params: &params,
            body: body.as_ref(),
        })
    }

    fn retries_for(&self, operation_id: &str) -> u32 {
        self.retry
            .as_ref()
            .filter(|r| r.operations.contains(operation_id))
            .map_or(0, |r| r.retries)
    }
}

/// What happened inside a [`capture_with_body`] scope.
#[derive(Debug, Default)]
pub(super) struct CallRecord {
    /// The JSON body to send instead of the typed one (see [`capture_with_body`]).
    pub body: Option<Bytes>,
    /// The last reply received.
    pub reply: Option<super::gateway::Reply>,
    /// A refusal made before sending.
    pub refusal: Option<Refusal>,
    /// Number of requests that were handed to the network.
    pub sent: u32,
}

tokio::task_local! {
    static RECORD: RefCell<CallRecord>;
}

/// Runs `fut` (which makes gateway requests through the generated client) and returns its
/// output with a record of what the gateway answered; every request with a body sends `body`
/// (JSON) in place of the body the generated client serialized from its typed value. Outside a
/// scope nothing is recorded. Only [`super::gateway`] calls it.
pub(super) async fn capture_with_body<F: Future>(
    body: Option<Bytes>,
    fut: F,
) -> (F::Output, CallRecord) {
    let record = CallRecord {
        body,
        ..CallRecord::default()
    };
    RECORD
        .scope(RefCell::new(record), async move {
            let out = fut.await;
            let record = RECORD.with(|r| std::mem::take(&mut *r.borrow_mut()));
            (out, record)
        })
        .await
}

fn record(f: impl FnOnce(&mut CallRecord)) {
    let _ = RECORD.try_with(|r| f(&mut r.borrow_mut()));
}

/// Bodies in TRACE logs are cut to this many bytes.
const LOGGED_BODY_BYTES: usize = 1024;

/// A body for TRACE logs: account ids masked when it is JSON, cut to [`LOGGED_BODY_BYTES`].
fn excerpt(body: &[u8]) -> String {
    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(body) {
        crate::audit::mask_accounts(&mut v);
        let text = v.to_string();
        return excerpt_raw(text.as_bytes());
    }
    excerpt_raw(body)
}

fn excerpt_raw(body: &[u8]) -> String {
    let cut = body.len().min(LOGGED_BODY_BYTES);
    let mut s = String::from_utf8_lossy(&body[..cut]).into_owned();
    if cut < body.len() {
        s.push('…');
    }
    s
}

/// A transport error for the log: the innermost cause and the URL without its query, account
/// ids masked.
fn masked_error(e: &reqwest::Error) -> String {
    let cause = crate::error::root_cause(e);
    match e.url() {
        Some(u) => crate::audit::mask_account(&format!(
            "{cause} ({}{})",
            u.origin().ascii_serialization(),
            u.path()
        )),
        None => cause,
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

impl ClientHooks<Hooks> for Client {
    async fn pre<E>(
        &self,
        request: &mut reqwest::Request,
        info: &OperationInfo,
    ) -> Result<(), Error<E>> {
        request.headers_mut().remove("api-version");
        let method = request.method().clone();
        if (method == reqwest::Method::POST
            || method == reqwest::Method::PUT
            || method == reqwest::Method::PATCH)
            && request.body().is_none()
        {
            *request.body_mut() = Some(reqwest::Body::from("{}"));
            request.headers_mut().insert(
                reqwest::header::CONTENT_TYPE,
                reqwest::header::HeaderValue::from_static("application/json"),
            );
        }
        let verbatim = RECORD.try_with(|r| r.borrow().body.clone()).ok().flatten();
        if let Some(body) = &verbatim {
            *request.body_mut() = Some(reqwest::Body::from(body.clone()));
            request.headers_mut().insert(
                reqwest::header::CONTENT_TYPE,
                reqwest::header::HeaderValue::from_static("application/json"),
            );
        }
        if let Err(refusal) = self.inner().inspect(request, info.operation_id) {
            tracing::warn!(operation = info.operation_id, %refusal, "request refused before sending");
            let text = refusal.to_string();
            record(|r| r.refusal = Some(refusal));
            return Err(Error::Custom(text));
        }
        if let Some(cache) = &self.inner().cache
            && cache
                .lookup(info.operation_id, request, Duration::ZERO)
                .is_some()
        {
            // `exec` answers from the cache; nothing reaches the gateway, so nothing to pace.
            return Ok(());
        }
        if let Some(gate) = &self.inner().gate
            && let Err(refusal) = gate.admit(info.operation_id).await
        {
            let text = refusal.to_string();
            record(|r| r.refusal = Some(refusal));
            return Err(Error::Custom(text));
        }
        if let Some(oauth) = &self.inner().oauth {
            let signed = match oauth.token().await {
                Ok(token) => oauth.sign(&token, request),
                Err(e) => Err(e),
            };
            if let Err(detail) = signed {
                let refusal = Refusal::Auth { detail };
                let text = refusal.to_string();
                record(|r| r.refusal = Some(refusal));
                return Err(Error::Custom(text));
            }
        }
        Ok(())
    }

    async fn exec(
        &self,
        request: reqwest::Request,
        info: &OperationInfo,
    ) -> reqwest::Result<reqwest::Response> {
        let operation_id = info.operation_id;
        let span = tracing::info_span!(
            "ibkr",
            operation = operation_id,
            status = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        let started = Instant::now();
        let method = request.method().clone();
        let cache = self.inner().cache.as_ref();
        if let Some(hit) = cache.and_then(|c| c.lookup(operation_id, &request, CACHE_GRACE)) {
            let age = hit.at.elapsed();
            tracing::debug!(parent: &span, %method, age_s = age.as_secs(), "answered from the reply cache");
            let mut headers = reqwest::header::HeaderMap::new();
            if let Some(ct) = hit.content_type {
                headers.insert(reqwest::header::CONTENT_TYPE, ct);
            }
            let reply = Reply {
                status: hit.status,
                version: http::Version::HTTP_11,
                headers,
                body: hit.body,
            };
            return Ok(reply.deliver(operation_id, Duration::ZERO, Some(age)));
        }
        let cache_key = cache.and_then(|c| c.key(operation_id, &request));
        if tracing::enabled!(tracing::Level::TRACE)
            && let Some(body) = request.body().and_then(reqwest::Body::as_bytes)
        {
            tracing::trace!(parent: &span, body = %excerpt(body), "request body");
        }
        let retries = self.inner().retries_for(operation_id);
        let mut request = request;
        let mut attempt = 0u32;
        // OAuth: a read refused with 401 is sent once more, signed with a new token.
        let mut resigned = false;
        let result = loop {
            let resign_left = self.inner().oauth.is_some() && retries > 0 && !resigned;
            let spare = if attempt < retries || resign_left {
                request.try_clone()
            } else {
                None
            };
            record(|r| r.sent += 1);
            let sent = Instant::now();
            let result = async {
                let response = self.client().execute(request).await?;
                let status = response.status();
                let version = response.version();
                let headers = response.headers().clone();
                let body = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, version, headers, body))
            }
            .instrument(span.clone())
            .await;
            let refused = match (&self.inner().oauth, &result) {
                (Some(oauth), Ok((status, ..))) if *status == reqwest::StatusCode::UNAUTHORIZED => {
                    oauth.invalidate(sent);
                    !resigned
                }
                _ => false,
            };
            let transient = match &result {
                Ok((status, ..)) => status.is_server_error(),
                Err(e) => !e.is_timeout(),
            };
            let Some(mut next) = spare.filter(|_| (transient && attempt < retries) || refused)
            else {
                break result;
            };
            if refused {
                // Only reads get here (`spare` is only made for them): an order refused with
                // 401 was not carried out and is never sent again by itself.
                resigned = true;
                tracing::info!(parent: &span, "IBKR refused the OAuth signature (401); sending this read once more with a new live session token");
            } else {
                attempt += 1;
                let pause = self
                    .inner()
                    .retry
                    .as_ref()
                    .map_or(Duration::ZERO, |r| r.backoff * 3u32.pow(attempt - 1));
                tracing::info!(parent: &span, attempt, pause_ms = pause.as_millis() as u64, "transient failure of a read; retrying");
                tokio::time::sleep(pause).await;
            }
            if let Some(gate) = &self.inner().gate
                && gate.admit(operation_id).await.is_err()
            {
                break result;
            }
            if let Some(oauth) = &self.inner().oauth {
                let signed = match oauth.token().await {
                    Ok(token) => oauth.sign(&token, &mut next),
                    Err(e) => Err(e),
                };
                if let Err(e) = signed {
                    tracing::warn!(parent: &span, error = %e, "cannot sign the retry; not retrying");
                    break result;
                }
            }
            request = next;
        };
        let elapsed = started.elapsed();
        span.record("duration_ms", elapsed.as_millis() as u64);
        let (status, version, headers, body) = match result {
            Ok(parts) => parts,
            Err(e) => {
                // reqwest's text names the URL, which can hold an account id: log it masked.
                tracing::warn!(parent: &span, %method, error = %masked_error(&e), "gateway request failed");
                return Err(e);
            }
        };
        span.record("status", status.as_u16());
        tracing::debug!(parent: &span, %method, "gateway replied");
        if tracing::enabled!(tracing::Level::TRACE) {
            tracing::trace!(parent: &span, body = %excerpt(&body), "reply body");
        }
        if let Some(gate) = &self.inner().gate {
            gate.observe(operation_id, status.as_u16(), retry_after(&headers));
        }
        if let Some(guard) = &self.inner().guard
            && status.is_success()
            && guard.learns_from(operation_id)
        {
            guard.learn(operation_id, &body);
        }
        if let (Some(cache), Some(key)) = (cache, cache_key)
            && status.is_success()
        {
            cache.store(
                key,
                Stored {
                    at: Instant::now(),
                    status,
                    content_type: headers.get(reqwest::header::CONTENT_TYPE).cloned(),
                    body: body.clone(),
                },
            );
        }
        let reply = Reply {
            status,
            version,
            headers,
            body,
        };
        Ok(reply.deliver(operation_id, elapsed, None))
    }
}

/// A reply, from the gateway or the cache, on its way back to the generated client.
struct Reply {
    status: reqwest::StatusCode,
    version: http::Version,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

impl Reply {
    /// Records the reply for the tool call ([`capture_with_body`]) and rebuilds it as a response.
    fn deliver(
        self,
        operation_id: &'static str,
        elapsed: Duration,
        cached: Option<Duration>,
    ) -> reqwest::Response {
        record(|r| {
            r.reply = Some(super::gateway::Reply {
                operation_id,
                status: self.status.as_u16(),
                body: self.body.clone(),
                content_type: self
                    .headers
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                elapsed,
                cached,
                mismatch: None,
            })
        });
        let mut rebuilt = http::Response::new(self.body);
        *rebuilt.status_mut() = self.status;
        *rebuilt.version_mut() = self.version;
        *rebuilt.headers_mut() = self.headers;
        reqwest::Response::from(rebuilt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_ignores_dates_and_garbage() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "-3".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    fn get(url: &str) -> reqwest::Request {
        reqwest::Request::new(reqwest::Method::GET, url.parse().unwrap())
    }

    fn stored(body: &'static str) -> Stored {
        Stored {
            at: Instant::now(),
            status: reqwest::StatusCode::OK,
            content_type: None,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn reply_cache_keys_only_gets_of_its_operations_by_full_url() {
        let cache = ReplyCache::new([("params".to_string(), Duration::from_secs(900))]);
        let a = get("http://gw/v1/api/iserver/scanner/params");
        let key = cache.key("params", &a).unwrap();
        assert!(cache.key("other", &a).is_none());
        let post = reqwest::Request::new(reqwest::Method::POST, a.url().clone());
        assert!(cache.key("params", &post).is_none());
        cache.store(key, stored("{}"));
        assert_eq!(
            cache.lookup("params", &a, Duration::ZERO).unwrap().body,
            "{}"
        );
        let b = get("http://gw/v1/api/iserver/scanner/params?x=1");
        assert!(cache.lookup("params", &b, Duration::ZERO).is_none());
    }

    #[test]
    fn an_expired_entry_is_not_fresh_but_still_served_within_the_grace() {
        // pre() asks without grace (a miss means the gate is asked), exec() with the grace, so
        // a request that passed pre() on a hit is never sent unpaced.
        let cache = ReplyCache::new([("params".to_string(), Duration::ZERO)]);
        let a = get("http://gw/x");
        cache.store(cache.key("params", &a).unwrap(), stored("[]"));
        assert!(cache.lookup("params", &a, Duration::ZERO).is_none());
        assert!(cache.lookup("params", &a, CACHE_GRACE).is_some());
    }

    #[test]
    fn excerpt_cuts_long_bodies() {
        let long = vec![b'a'; 5000];
        let e = excerpt(&long);
        assert_eq!(
            excerpt(br#"{"acctId":"DU1234567"}"#),
            r#"{"acctId":"DU****567"}"#
        );
        assert_eq!(e.chars().count(), LOGGED_BODY_BYTES + 1);
        assert!(e.ends_with('…'));
        assert_eq!(excerpt(b"{}"), "{}");
    }
}
