//! MCP sessions of the streamable HTTP transport, capped.
//!
//! rmcp's `LocalSessionManager` keeps every session until it is closed; sessions that end by
//! idling out stay in its table. [`CappedSessions`] wraps it: it counts the sessions whose
//! worker is alive (each session's transport carries a `Slot` that gives its place back when
//! the session ends, however it ends, and removes the session from the table), refuses a new
//! session beyond the cap, and sets the idle expiry. `crate::http` asks [`CappedSessions::full`]
//! first, to answer an `initialize` over the cap with a clear HTTP 503.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::Stream;
use rmcp::RoleServer;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::transport::common::server_side_http::{ServerSseMessage, SessionId};
use rmcp::transport::streamable_http_server::SessionManager;
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};

/// Why a session was not created.
#[derive(Debug, thiserror::Error)]
pub enum CapError {
    /// Too many sessions are alive.
    #[error(
        "too many MCP sessions ({0} alive, the limit set with --max-sessions / \
         IBKR_MCP_MAX_SESSIONS); close idle sessions or try again when they expire"
    )]
    Full(usize),
    /// The wrapped manager failed.
    #[error(transparent)]
    Inner(#[from] LocalSessionManagerError),
}

/// The session manager with a cap (see the module docs).
#[derive(Debug)]
pub struct CappedSessions {
    inner: Arc<LocalSessionManager>,
    live: Arc<AtomicUsize>,
    max: usize,
}

impl CappedSessions {
    /// At most `max` live sessions, each closed after `idle` without activity.
    pub fn new(max: usize, idle: Duration) -> Self {
        let mut inner = LocalSessionManager::default();
        inner.session_config.keep_alive = Some(idle);
        Self {
            inner: Arc::new(inner),
            live: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// Sessions alive now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Whether a new session would be refused.
    pub fn full(&self) -> bool {
        self.live() >= self.max
    }
}

/// A session's place under the cap, given back when its transport is dropped.
#[derive(Debug)]
struct Slot {
    live: Arc<AtomicUsize>,
    id: SessionId,
    manager: Arc<LocalSessionManager>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
        // A session that idled out is still in rmcp's table: take it out.
        let manager = self.manager.clone();
        let id = self.id.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                manager.sessions.write().await.remove(&id);
            });
        }
    }
}

/// A session's transport with its `Slot` (its place under the cap).
pub struct Counted<T> {
    inner: T,
    _slot: Slot,
}

impl<T: Transport<RoleServer>> Transport<RoleServer> for Counted<T> {
    type Error = T::Error;

    fn name() -> Cow<'static, str> {
        T::name()
    }

    fn send(
        &mut self,
        item: rmcp::service::TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    fn receive(
        &mut self,
    ) -> impl Future<Output = Option<rmcp::service::RxJsonRpcMessage<RoleServer>>> + Send {
        self.inner.receive()
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

impl SessionManager for CappedSessions {
    type Error = CapError;
    type Transport = Counted<<LocalSessionManager as SessionManager>::Transport>;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let before = self.live.fetch_add(1, Ordering::AcqRel);
        if before >= self.max {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return Err(CapError::Full(before));
        }
        match self.inner.create_session().await {
            Ok((id, transport)) => {
                let slot = Slot {
                    live: self.live.clone(),
                    id: id.clone(),
                    manager: self.inner.clone(),
                };
                Ok((
                    id,
                    Counted {
                        inner: transport,
                        _slot: slot,
                    },
                ))
            }
            Err(e) => {
                self.live.fetch_sub(1, Ordering::AcqRel);
                Err(e.into())
            }
        }
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        Ok(self.inner.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.create_stream(id, message).await?)
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.resume(id, last_event_id).await?)
    }
}
