//! Listener, TLS and connection handling: [`start`] binds, generates the self-signed
//! certificate when asked, and spawns the accept loop; every accepted connection is served by
//! hyper's HTTP/1.1 connection driver under its own cancellation token, so a handler can close
//! its connection without writing a response (dropped-connection faults, drop-after-accept).
//!
//! Connections support HTTP upgrades (the WebSocket); an upgraded socket outlives its HTTP
//! connection task but still ends with the connection's token.
//!
//! A restart (control API) closes the listening socket, cancels every open connection, ends the
//! brokerage session, waits, and binds the same address again; the SSO login survives.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::{SimConfig, Tls};
use crate::control::SimControl;
use crate::state::{RestartCmd, Sim};

/// Per-connection handle put into every request's extensions: cancelling it closes the TCP
/// connection at once, without a response.
#[derive(Debug, Clone)]
pub(crate) struct ConnCtl(pub CancellationToken);

/// How a request arrived, put into every request's extensions before routing: the scheme of
/// the listener and the request target as on the wire (nested routers only see the path
/// below their prefix). OAuth mode rebuilds the signed URL from it and the `Host` header.
#[derive(Debug, Clone)]
pub(crate) struct Wire {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The request target (path and query) as received.
    pub target: hyper::Uri,
}

/// A running simulator. Dropping the handle stops it too (without waiting); call
/// [`SimHandle::shutdown`] to wait until every connection is closed.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    scheme: &'static str,
    control: SimControl,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
    certificate_pem: Option<String>,
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl SimHandle {
    /// The bound address (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL of the gateway API, e.g. `https://127.0.0.1:5000/v1/api`.
    pub fn base_url(&self) -> String {
        format!("{}://{}/v1/api", self.scheme, self.addr)
    }

    /// Base URL of the control API, e.g. `https://127.0.0.1:5000/sim`.
    pub fn control_url(&self) -> String {
        format!("{}://{}/sim", self.scheme, self.addr)
    }

    /// In-process control of the simulator (cheap to clone).
    pub fn control(&self) -> SimControl {
        self.control.clone()
    }

    /// PEM of the self-signed certificate (`None` for plain HTTP), for clients that want to
    /// trust it instead of disabling certificate checks.
    pub fn certificate_pem(&self) -> Option<&str> {
        self.certificate_pem.as_deref()
    }

    /// Stops accepting, closes every connection and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Starts a simulator on `listen` (port 0 picks a free port) and returns at once.
pub async fn start(config: SimConfig, listen: SocketAddr, tls: Tls) -> io::Result<SimHandle> {
    let listener = bind(listen)?;
    let addr = listener.local_addr()?;
    let (acceptor, certificate_pem) = match tls {
        Tls::None => (None, None),
        Tls::SelfSigned => {
            let (a, pem) = tls_acceptor()?;
            (Some(a), Some(pem))
        }
    };
    let (restart_tx, restart_rx) = mpsc::unbounded_channel();
    let sim = Arc::new(Sim::new(&config, restart_tx));
    let app = crate::app(sim.clone());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_loop(
        listener,
        addr,
        acceptor,
        app,
        restart_rx,
        shutdown.clone(),
        sim.clone(),
    ));
    tracing::info!(%addr, tls = certificate_pem.is_some(), "ibkr-sim listening");
    Ok(SimHandle {
        addr,
        scheme: if certificate_pem.is_some() {
            "https"
        } else {
            "http"
        },
        control: SimControl::new(sim),
        shutdown,
        task: Some(task),
        certificate_pem,
    })
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn tls_acceptor() -> io::Result<(TlsAcceptor, String)> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let certified = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .map_err(io::Error::other)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(cfg)), certified.cert.pem()))
}

enum Event {
    Shutdown,
    Restart(RestartCmd),
    Accepted(io::Result<(TcpStream, SocketAddr)>),
}

async fn serve_loop(
    listener: TcpListener,
    addr: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    mut restart_rx: mpsc::UnboundedReceiver<RestartCmd>,
    shutdown: CancellationToken,
    sim: Arc<Sim>,
) {
    let mut listener = Some(listener);
    let mut conns = CancellationToken::new();
    loop {
        let event = match listener.as_ref() {
            Some(l) => tokio::select! {
                _ = shutdown.cancelled() => Event::Shutdown,
                cmd = restart_rx.recv() => match cmd {
                    Some(c) => Event::Restart(c),
                    None => Event::Shutdown,
                },
                accepted = l.accept() => Event::Accepted(accepted),
            },
            None => Event::Shutdown,
        };
        match event {
            Event::Shutdown => {
                conns.cancel();
                return;
            }
            Event::Accepted(Ok((stream, _peer))) => {
                let token = conns.child_token();
                tokio::spawn(serve_conn(stream, acceptor.clone(), app.clone(), token));
            }
            Event::Accepted(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Event::Restart(cmd) => {
                drop(listener.take());
                conns.cancel();
                conns = CancellationToken::new();
                {
                    let mut st = sim.lock();
                    st.lose_brokerage();
                    st.restarts += 1;
                }
                tracing::info!(
                    down_for_ms = cmd.down_for.as_millis() as u64,
                    "simulated gateway restart"
                );
                if let Some(done) = cmd.done {
                    let _ = done.send(());
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(cmd.down_for) => {}
                }
                // Restarts queued while down are merged into this one.
                while restart_rx.try_recv().is_ok() {}
                loop {
                    match bind(addr) {
                        Ok(l) => {
                            listener = Some(l);
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "rebinding after restart failed; retrying");
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn serve_conn(
    stream: TcpStream,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    token: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    match acceptor {
        Some(acceptor) => {
            let tls = tokio::select! {
                r = acceptor.accept(stream) => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                },
                _ = token.cancelled() => return,
            };
            serve_io(TokioIo::new(tls), app, token, "https").await;
        }
        None => serve_io(TokioIo::new(stream), app, token, "http").await,
    }
}

async fn serve_io<I>(io: I, app: Router, token: CancellationToken, scheme: &'static str)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let ctl = ConnCtl(token.clone());
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ctl.clone());
        let target = req.uri().clone();
        req.extensions_mut().insert(Wire { scheme, target });
        app.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        // Dropping the connection future closes the socket without writing anything more.
        _ = token.cancelled() => {}
    }
}
