//! The socket task: connect, wait for the ready gate, subscribe, re-sync, read; on any failure
//! reconnect with backoff.
//!
//! Connecting: `POST /tickle` (through the one call surface, so paced and, in OAuth mode,
//! signed) gives the session id. The gateway takes it as the cookie `api={"session":"<id>"}`;
//! IBKR's OAuth edge as the plain cookie `api=<id>` with the access token as `?oauth_token=`.
//! Both get a `User-Agent`.
//!
//! IBKR drops subscriptions sent before the brokerage session is ready, so they are sent on the
//! first `sts` that says `authenticated: true`, and again after any `sts` that said it was not
//! (IBKR ends every subscription then). Each (re)subscription is followed by a REST read of the
//! topic's state: the stream only carries changes and never replays what was missed. The REST
//! reply is applied before the messages that arrived meanwhile, which are held in the socket.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use super::{Cmd, Live, SocketState, Source, Topic};
use crate::ibkr::gateway::{self, ops};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Socket = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// First wait between attempts; doubles up to [`super::LiveConfig::max_backoff`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Runs the socket for as long as the server runs.
pub(super) async fn run(live: Arc<Live>, mut commands: mpsc::UnboundedReceiver<Cmd>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if live.cancel.is_cancelled() {
            return;
        }
        // Lazy: no topic held, no socket (wait for one to be asked for).
        while live.topics().is_empty() {
            tokio::select! {
                cmd = commands.recv() => if cmd.is_none() { return },
                () = live.cancel.cancelled() => return,
            }
        }
        live.set_state(SocketState::Connecting);
        let outcome = match connect(&live).await {
            Ok((ws, session)) => {
                live.lock().connections += 1;
                live.set_state(SocketState::WaitingForReady);
                serve(&live, ws, &session, &mut commands, &mut backoff).await
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => return,
            Err(e) => {
                live.note_error(e);
                live.gap();
            }
        }
        live.set_state(SocketState::Reconnecting);
        // Some jitter, so that many servers do not come back at the same instant.
        let jitter = Duration::from_millis(u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 100);
        tokio::select! {
            () = tokio::time::sleep(backoff + jitter) => {}
            () = live.cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(live.config.max_backoff);
    }
}

/// The session id for the socket's cookie, from `/tickle`.
async fn session_id(live: &Live) -> Result<String, String> {
    let v = gateway::call_json(&live.client, "session id (/tickle)", ops::TICKLE, json!({}))
        .await
        .map_err(|e| format!("cannot get the session id for the socket: {e}"))?;
    let id = v
        .get("session")
        .and_then(Value::as_str)
        .ok_or("the gateway's /tickle reply has no session id for the socket")?;
    // It goes into a header: nothing but what a session id is made of.
    if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err("the gateway's /tickle session id is not an id; not using it".into());
    }
    Ok(id.to_string())
}

async fn connect(live: &Live) -> Result<(Socket, String), String> {
    let session = session_id(live).await?;
    let mut url = url::Url::parse(&live.config.ws_url).map_err(|e| e.to_string())?;
    let cookie = match &live.oauth {
        Some(o) => {
            url.query_pairs_mut()
                .append_pair("oauth_token", o.access_token());
            format!("api={session}")
        }
        None => format!("api={}", json!({ "session": session })),
    };
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("WebSocket request: {e}"))?;
    let h = request.headers_mut();
    h.insert(
        http::header::COOKIE,
        cookie.parse().map_err(|_| "bad cookie value")?,
    );
    h.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!(
            env!("CARGO_PKG_NAME"),
            "/",
            env!("CARGO_PKG_VERSION")
        )),
    );
    let host = url
        .host_str()
        .ok_or("WebSocket URL has no host")?
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let wait = live.config.connect_timeout;
    let where_ = format!("{}://{host}:{port}{}", url.scheme(), url.path());
    let tcp = tokio::time::timeout(wait, tokio::net::TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| format!("{where_}: no connection within {wait:?}"))?
        .map_err(|e| format!("{where_}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if url.scheme() == "wss" {
        let config = tls_config(live.config.accept_invalid_certs)?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("{where_}: {e}"))?;
        let tls = tokio::time::timeout(
            wait,
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .map_err(|_| format!("{where_}: TLS handshake took over {wait:?}"))?
        .map_err(|e| {
            format!(
                "{where_}: TLS: {e}{}",
                if live.config.accept_invalid_certs {
                    ""
                } else {
                    " (a gateway with its own self-signed certificate needs \
                     --gateway-insecure-tls)"
                }
            )
        })?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (ws, _) = tokio::time::timeout(wait, tokio_tungstenite::client_async(request, io))
        .await
        .map_err(|_| format!("{where_}: WebSocket handshake took over {wait:?}"))?
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => format!(
                "{where_}: IBKR refused the socket: HTTP {} {}",
                r.status(),
                r.body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
            ),
            other => format!("{where_}: {other}"),
        })?;
    tracing::info!(url = %where_, "live events socket open");
    Ok((ws, session))
}

fn tls_config(accept_invalid_certs: bool) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    if accept_invalid_certs {
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth())
    } else {
        let verifier = rustls_platform_verifier::Verifier::new(provider)
            .map_err(|e| format!("the system's certificate store: {e}"))?;
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth())
    }
}

/// `--gateway-insecure-tls`: the gateway's self-signed certificate, like the REST client. The
/// handshake's signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One open socket until it fails (`Err`, reconnect) or the server stops (`Ok`).
async fn serve(
    live: &Arc<Live>,
    ws: Socket,
    session: &str,
    commands: &mut mpsc::UnboundedReceiver<Cmd>,
    backoff: &mut Duration,
) -> Result<(), String> {
    let (mut sink, mut stream) = ws.split();
    let mut ready = false;
    // The watchdog: any frame from IBKR (its heartbeat comes every 10 s) moves it on.
    let mut heard = tokio::time::Instant::now();
    let opened = tokio::time::Instant::now();
    let mut ready_since: Option<tokio::time::Instant> = None;
    let mut woke_session = false;
    let mut tic = tokio::time::interval(live.config.tic_every);
    tic.tick().await;
    let mut renew = tokio::time::interval(Duration::from_secs(15));
    // Topics whose REST re-sync failed (IBKR paces some reads to one per 5 s): asked again
    // until it succeeds, or a read of the resource does it (`Live::offer_rest`).
    let mut pending: std::collections::BTreeSet<Topic> = std::collections::BTreeSet::new();
    let mut retry = tokio::time::interval(RESYNC_RETRY);
    retry.tick().await;
    let dead_after = live.config.dead_after;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(heard + dead_after) => {
                return Err(format!(
                    "nothing from IBKR for {} s (its heartbeat comes every 10 s): the socket is taken for dead",
                    dead_after.as_secs()
                ));
            }
            next = stream.next() => {
                let msg = match next {
                    None => return Err("IBKR closed the socket".into()),
                    Some(Err(e)) => return Err(format!("socket error: {e}")),
                    Some(Ok(m)) => m,
                };
                heard = tokio::time::Instant::now();
                let text = match msg {
                    Message::Text(t) => t.to_string(),
                    Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                    Message::Close(f) => return Err(format!(
                        "IBKR closed the socket{}",
                        f.map(|f| format!(": {} {}", f.code, f.reason)).unwrap_or_default()
                    )),
                    _ => continue,
                };
                live.lock().messages += 1;
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    tracing::debug!(len = text.len(), "live events: a message that is not JSON");
                    continue;
                };
                match status_change(&v) {
                    Some(true) if !ready => {
                        ready = true;
                        ready_since = Some(tokio::time::Instant::now());
                        live.set_state(SocketState::Ready);
                        pending.clear();
                        for topic in live.topics() {
                            if !start(live, &mut sink, topic).await? {
                                pending.insert(topic);
                            }
                        }
                    }
                    Some(false) if ready => {
                        // IBKR ended every subscription with the brokerage session.
                        ready = false;
                        ready_since = None;
                        live.note_error("IBKR says the brokerage session is not authenticated: streams paused until it is back");
                        live.gap();
                        live.set_state(SocketState::WaitingForReady);
                        if let Some(s) = &live.session {
                            s.wake();
                        }
                    }
                    _ if v.get("message").and_then(Value::as_str) == Some("waiting for session") => {
                        // The socket was opened without the cookie reaching IBKR: say it in band.
                        send(&mut sink, json!({ "session": session }).to_string()).await?;
                    }
                    _ => route(live, &v),
                }
            }
            cmd = commands.recv() => match cmd {
                None => return Ok(()),
                // (Not when the ready gate just subscribed it with everything else.)
                Some(Cmd::Subscribe(topic)) if ready && live.needs_start(topic) => {
                    if !start(live, &mut sink, topic).await? {
                        pending.insert(topic);
                    }
                }
                Some(Cmd::Unsubscribe(topic)) if ready && !live.held(topic) => {
                    send(&mut sink, topic.unsubscribe_message()).await?;
                }
                Some(_) => {}
            },
            _ = tic.tick() => {
                send(&mut sink, "tic".into()).await?;
                // Not ready a while after opening: the brokerage session is not there; the
                // session manager is the one to open it.
                if !ready && !woke_session && opened.elapsed() >= Duration::from_secs(20) {
                    woke_session = true;
                    if let Some(s) = &live.session {
                        s.wake();
                    }
                }
                // A socket that stayed ready a minute earns a fresh backoff; one that IBKR
                // closes right after each ready does not reconnect in a tight loop.
                if ready_since.is_some_and(|t| t.elapsed() >= Duration::from_secs(60)) {
                    *backoff = FIRST_BACKOFF;
                }
            }
            _ = retry.tick(), if ready && !pending.is_empty() => {
                let due: Vec<Topic> = std::mem::take(&mut pending).into_iter().collect();
                for topic in due {
                    if live.needs_resync(topic) && !resync(live, topic).await {
                        pending.insert(topic);
                    }
                }
            },
            _ = renew.tick() => if ready {
                for topic in live.due_for_renewal() {
                    send(&mut sink, topic.subscribe_message()).await?;
                    live.mark_sent(topic);
                }
            },
            () = live.cancel.cancelled() => {
                let _ = sink.send(Message::Close(None)).await;
                return Ok(());
            }
        }
    }
}

/// `Some(authenticated)` for an `sts` message that says.
fn status_change(v: &Value) -> Option<bool> {
    if v.get("topic").and_then(Value::as_str) != Some("sts") {
        return None;
    }
    let args = v.get("args")?;
    let auth = args.get("authenticated").and_then(Value::as_bool);
    let competing = args.get("competing").and_then(Value::as_bool);
    // `{"competing": true}` alone also means the session was taken.
    match (auth, competing) {
        (_, Some(true)) | (Some(false), _) => Some(false),
        (Some(true), _) => Some(true),
        (None, _) => None,
    }
}

async fn send(
    sink: &mut futures::stream::SplitSink<Socket, Message>,
    text: String,
) -> Result<(), String> {
    sink.send(Message::text(text))
        .await
        .map_err(|e| format!("cannot write to the socket: {e}"))
}

/// Subscribes `topic`, then reads its state over REST (quotes need none: their stream starts
/// with a full message). `Ok(false)`: subscribed, but the re-sync is still to do.
async fn start(
    live: &Arc<Live>,
    sink: &mut futures::stream::SplitSink<Socket, Message>,
    topic: Topic,
) -> Result<bool, String> {
    send(sink, topic.subscribe_message()).await?;
    live.mark_sent(topic);
    Ok(resync(live, topic).await)
}

/// Time between two attempts at a failed re-sync.
const RESYNC_RETRY: Duration = Duration::from_secs(3);

/// The REST read that gives `topic`'s state (none for quotes), and what it is called.
pub(crate) fn rest_read(topic: Topic) -> Option<(&'static str, gateway::Op, Value)> {
    match topic {
        Topic::Orders => Some(("orders", ops::LIVE_ORDERS, json!({}))),
        Topic::Trades => Some(("trades", ops::TRADES, json!({ "days": "1" }))),
        Topic::Pnl => Some(("P&L", ops::PNL, json!({}))),
        Topic::Quote(_) => None,
    }
}

/// The part of a REST reply that is the topic's payload.
pub(crate) fn rest_payload(topic: Topic, v: Value) -> Value {
    match topic {
        Topic::Orders => v.get("orders").cloned().unwrap_or(v),
        Topic::Pnl => v.get("upnl").cloned().unwrap_or(v),
        _ => v,
    }
}

/// Reads `topic`'s state over REST and applies it; whether that worked.
async fn resync(live: &Live, topic: Topic) -> bool {
    let Some((what, op, args)) = rest_read(topic) else {
        return true;
    };
    let mut attempt = gateway::call_json(&live.client, what, op, args.clone()).await;
    // Held back by our own pacing (not sent): wait and ask once more.
    if let Err(e) = &attempt
        && let Some(wait) = e.error.retry_after()
        && wait <= Duration::from_secs(10)
    {
        tokio::time::sleep(wait).await;
        attempt = gateway::call_json(&live.client, what, op, args).await;
    }
    match attempt {
        Ok(v) => {
            live.apply(topic, &rest_payload(topic, v), Source::Rest, true);
            true
        }
        Err(e) => {
            live.note_error(format!(
                "re-sync of {what} over REST failed ({e}); trying again in {} s",
                RESYNC_RETRY.as_secs()
            ));
            false
        }
    }
}

/// Applies a data message to its topic.
fn route(live: &Live, v: &Value) {
    let topic = v.get("topic").and_then(Value::as_str).unwrap_or_default();
    match topic {
        "system" => {
            if v.get("hb").is_some() {
                live.lock().last_heartbeat = Some(crate::audit::now());
            }
        }
        "sor" => {
            if let Some(args) = v.get("args") {
                // Events on an unsynced book still apply: the re-sync that follows wins.
                live.apply(Topic::Orders, args, Source::Stream, false);
            }
        }
        "str" => {
            if let Some(args) = v.get("args") {
                live.apply(Topic::Trades, args, Source::Stream, false);
            }
        }
        "spl" => {
            if let Some(args) = v.get("args") {
                live.apply(Topic::Pnl, args, Source::Stream, false);
            }
        }
        t if t.starts_with("smd+") => {
            let conid = t[4..].split('@').next().and_then(|c| c.parse::<i64>().ok());
            if let Some(conid) = conid {
                let mut fields = v.clone();
                if let Some(o) = fields.as_object_mut() {
                    o.remove("topic");
                }
                live.apply(Topic::Quote(conid), &fields, Source::Stream, true);
            }
        }
        _ => {
            if let Some(e) = v.get("error").and_then(Value::as_str) {
                // `smd+<conid>: unknown contract` names its topic; others are the socket's.
                let quote = e
                    .strip_prefix("smd+")
                    .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|c| c.parse::<i64>().ok());
                match quote {
                    Some(c) => live.topic_error(Topic::Quote(c), e.to_string()),
                    None => live.note_error(format!("IBKR: {e}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_authenticated_uncontested_sts_opens_the_gate() {
        let sts = |a: Value| json!({"topic": "sts", "args": a});
        assert_eq!(
            status_change(&sts(json!({"authenticated": true}))),
            Some(true)
        );
        assert_eq!(
            status_change(&sts(json!({"authenticated": true, "competing": true}))),
            Some(false)
        );
        assert_eq!(
            status_change(&sts(json!({"authenticated": false}))),
            Some(false)
        );
        assert_eq!(status_change(&sts(json!({"connected": true}))), None);
        assert_eq!(status_change(&sts(json!({"competing": true}))), Some(false));
        assert_eq!(status_change(&json!({"topic": "system", "hb": 1})), None);
    }
}
