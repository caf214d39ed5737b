//! The one way the server reaches IBKR: [`call`] for the server's own requests (named by the
//! compile-checked constants of [`ops`], declared in `spec/internal.toml`) and [`send`] for a
//! model's tool call. Both go through the generated tool table (the private `dispatch`
//! module, built from the allowlist), so no other module names a generated builder or type,
//! and a new IBKR document that drops or retypes an operation fails the call that needs it at
//! run time (naming the feature) instead of failing the build.
//!
//! Every call returns a [`Reply`] (whatever status the gateway answered, with the raw bytes) or
//! a typed [`Error`] (nothing usable came back). [`Reply::json`] is "the 2xx JSON, or why not".

mod dispatch;

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{Client, hooks};

/// An operation the server calls for itself (see `spec/internal.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    /// operationId in the repaired document.
    pub operation_id: &'static str,
    /// The feature that needs it, in words.
    pub feature: &'static str,
}

/// The operations the server calls for itself, generated from `spec/internal.toml`.
pub mod ops {
    use super::Op;
    include!(concat!(env!("OUT_DIR"), "/internal_ops.rs"));
}

/// What the gateway answered (any status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// operationId of the request.
    pub operation_id: &'static str,
    /// HTTP status.
    pub status: u16,
    /// The body exactly as received.
    pub body: Bytes,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// Time from sending to the end of the body.
    pub elapsed: Duration,
    /// Set when the reply came from the server's reply cache: how old it is.
    pub cached: Option<Duration>,
    /// Where a 2xx body departs from the document's type for it (the body is still here).
    pub mismatch: Option<String>,
}

impl Reply {
    /// A 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The 2xx body as JSON, or [`Error::Status`] / [`Error::BadJson`].
    pub fn json(&self) -> Result<Value, Error> {
        if !self.is_success() {
            return Err(Error::Status {
                status: self.status,
                message: crate::error::ibkr_message(&self.body),
                body: self.body.clone(),
            });
        }
        serde_json::from_slice(&self.body).map_err(|e| Error::BadJson {
            status: self.status,
            detail: e.to_string(),
        })
    }
}

/// How a request failed at the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection could be made.
    Connect,
    /// No answer within the request timeout.
    Timeout,
    /// The connection broke (or the body could not be read).
    Broken,
}

/// Why a call gave no usable reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The IBKR document of this build has no such operation.
    #[error("not available from the IBKR document of this build ({feature})")]
    Unavailable {
        /// operationId or tool name.
        operation: String,
        /// What cannot work without it.
        feature: String,
    },
    /// The arguments do not fit the operation's input schema.
    #[error("arguments refused: {}", .0.join("; "))]
    Arguments(Vec<String>),
    /// An argument does not convert to the generated client's type.
    #[error("`{field}`: {message}")]
    Argument {
        /// Dotted path of the field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The generated client could not build the request.
    #[error("{0}")]
    InvalidRequest(String),
    /// Refused before sending: pacing, an unsafe path, the trading policy.
    #[error("{0}")]
    Refused(hooks::Refusal),
    /// The request failed at the transport.
    #[error("{message}")]
    Transport {
        /// Connect, timeout or broken.
        kind: TransportKind,
        /// The innermost cause, without the URL.
        cause: String,
        /// The whole error as the client worded it.
        message: String,
        /// Whether the request was handed to the network (it may have reached IBKR).
        sent: bool,
    },
    /// The gateway answered a non-2xx status.
    #[error("the gateway answered HTTP {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// IBKR's message from the body.
        message: String,
        /// The body as received.
        body: Bytes,
    },
    /// A 2xx body that is not JSON.
    #[error("the reply is not JSON: {detail}")]
    BadJson {
        /// HTTP status.
        status: u16,
        /// The parser's complaint.
        detail: String,
    },
    /// The reply was JSON but not what the server needed.
    #[error("{0}")]
    Unexpected(String),
    /// A bug of ours.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The HTTP status, when the gateway answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } | Error::BadJson { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The gateway answered 401: the brokerage session is gone.
    pub fn unauthorized(&self) -> bool {
        self.status() == Some(401)
    }

    /// Refused by the client-side pacing: when a retry can succeed.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Refused(hooks::Refusal::Paced { retry_after, .. }) => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether the request was handed to the network (so it may have reached IBKR).
    pub fn reached_gateway(&self) -> bool {
        match self {
            Error::Transport { sent, .. } => *sent,
            Error::Status { .. } | Error::BadJson { .. } | Error::Unexpected(_) => true,
            _ => false,
        }
    }

    /// No reply at all (refused, transport, internal), as opposed to an answer the server could
    /// not use.
    fn no_reply(&self) -> bool {
        matches!(
            self,
            Error::Refused(_) | Error::Transport { .. } | Error::Internal(_)
        )
    }
}

/// A request the server made for itself that did not give the answer it needed: what it was
/// doing, and the typed error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError {
    /// What the server was asking for (`contract 265598`, `list_orders`); empty when the error
    /// says it all.
    pub what: String,
    /// Why it failed.
    pub error: Error,
}

impl LookupError {
    /// `error` while asking for `what`.
    pub fn new(what: impl Into<String>, error: Error) -> Self {
        Self {
            what: what.into(),
            error,
        }
    }
}

impl std::ops::Deref for LookupError {
    type Target = Error;
    fn deref(&self) -> &Error {
        &self.error
    }
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.what.is_empty() {
            write!(f, "{}: ", self.what)?;
        }
        match &self.error {
            e if e.no_reply() => write!(f, "no reply from the gateway ({})", self.short()),
            e => write!(f, "{e}"),
        }
    }
}

impl LookupError {
    /// The error without the client's wording around a transport failure.
    fn short(&self) -> String {
        match &self.error {
            Error::Transport { cause, .. } => cause.clone(),
            e => e.to_string(),
        }
    }
}

/// Calls internal operation `op` with `args` checked and converted against the input schema
/// of the tool that has the same operation, as a model's arguments would be.
pub async fn call(client: &Client, op: Op, args: Value) -> Result<Reply, Error> {
    let def = crate::mcp::catalog::all()
        .iter()
        .find(|t| t.operation_id == op.operation_id)
        .ok_or_else(|| Error::Unavailable {
            operation: op.operation_id.to_string(),
            feature: op.feature.to_string(),
        })?;
    let args = match args {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => {
            return Err(Error::Internal(format!(
                "arguments for {} must be an object, not {other}",
                op.operation_id
            )));
        }
    };
    let args = crate::mcp::args::prepare(def, Some(args)).map_err(Error::Arguments)?;
    send(client, &def.name, &args).await
}

/// [`call`], then [`Reply::json`]; errors say what was asked for.
pub async fn call_json(
    client: &Client,
    what: impl Into<String>,
    op: Op,
    args: Value,
) -> Result<Value, LookupError> {
    let what = what.into();
    match call(client, op, args).await {
        Ok(reply) => reply.json().map_err(|e| LookupError::new(what, e)),
        Err(e) => Err(LookupError::new(what, e)),
    }
}

/// Sends tool `tool`'s generated call with `args` as given (already checked by the caller);
/// a `body` argument goes out verbatim, not re-serialized from the generated type.
pub async fn send(client: &Client, tool: &str, args: &Map<String, Value>) -> Result<Reply, Error> {
    let body = args
        .get("body")
        .map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default()));
    let mut call_args = dispatch::Args::new(args.clone());
    let (sent, record) = hooks::capture_with_body(
        body,
        Box::pin(dispatch::call_generated(client, tool, &mut call_args)),
    )
    .await;
    let Some(sent) = sent else {
        return Err(Error::Unavailable {
            operation: tool.to_string(),
            feature: format!("the tool {tool}"),
        });
    };
    outcome(sent, record)
}

/// What a generated call and its capture record come to.
fn outcome(
    sent: Result<dispatch::Sent, dispatch::ArgError>,
    record: hooks::CallRecord,
) -> Result<Reply, Error> {
    use progenitor_client::Error as E;
    let sent = sent.map_err(|a| Error::Argument {
        field: a.field,
        message: a.message,
    })?;
    let mismatch = match sent {
        dispatch::Sent::Answered { mismatch } => mismatch,
        dispatch::Sent::Failed(e) => match e {
            E::Custom(text) => {
                return Err(match record.refusal {
                    Some(r) => Error::Refused(r),
                    None => Error::Internal(text),
                });
            }
            E::CommunicationError(ref err)
            | E::ResponseBodyError(ref err)
            | E::InvalidUpgrade(ref err) => {
                let kind = if err.is_timeout() {
                    TransportKind::Timeout
                } else if err.is_connect() {
                    TransportKind::Connect
                } else {
                    TransportKind::Broken
                };
                return Err(Error::Transport {
                    kind,
                    cause: crate::error::root_cause(err),
                    message: e.to_string(),
                    sent: record.sent > 0,
                });
            }
            E::InvalidRequest(m) => return Err(Error::InvalidRequest(m)),
            // A non-2xx status, or an undocumented success status: the reply is in the record.
            E::UnexpectedResponse(_) | E::ErrorResponse(_) => None,
            E::InvalidResponsePayload(_, err) => Some(err.to_string()),
        },
    };
    let mut reply = record
        .reply
        .ok_or_else(|| Error::Internal("the gateway's reply was not captured".into()))?;
    reply.mismatch = mismatch;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &'static str) -> Reply {
        Reply {
            operation_id: "x",
            status,
            body: Bytes::from_static(body.as_bytes()),
            content_type: None,
            elapsed: Duration::ZERO,
            cached: None,
            mismatch: None,
        }
    }

    #[test]
    fn json_is_the_2xx_body_or_a_typed_error() {
        assert_eq!(reply(200, r#"{"a":1}"#).json().unwrap()["a"], 1);
        let e = reply(401, r#"{"error":"not authenticated"}"#)
            .json()
            .unwrap_err();
        assert!(e.unauthorized());
        assert_eq!(
            e.to_string(),
            "the gateway answered HTTP 401: not authenticated"
        );
        let e = reply(200, "<html>").json().unwrap_err();
        assert!(matches!(e, Error::BadJson { status: 200, .. }), "{e:?}");
        assert!(e.reached_gateway());
    }

    #[test]
    fn lookup_errors_say_what_was_asked_and_why() {
        let paced = LookupError::new(
            "list_orders",
            Error::Refused(hooks::Refusal::Paced {
                limit: "1/5s".into(),
                retry_after: Duration::from_secs(3),
            }),
        );
        assert!(
            paced
                .to_string()
                .starts_with("list_orders: no reply from the gateway ("),
            "{paced}"
        );
        assert_eq!(paced.retry_after(), Some(Duration::from_secs(3)));
        assert!(!paced.reached_gateway());
        let down = LookupError::new(
            "contract 1",
            Error::Transport {
                kind: TransportKind::Connect,
                cause: "Connection refused".into(),
                message: "error sending request for url (http://x/acct/U1)".into(),
                sent: true,
            },
        );
        assert_eq!(
            down.to_string(),
            "contract 1: no reply from the gateway (Connection refused)"
        );
        let bare = LookupError::new("", Error::Unexpected("no market price".into()));
        assert_eq!(bare.to_string(), "no market price");
    }
}
