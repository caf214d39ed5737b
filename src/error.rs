//! What can go wrong in a tool call, told so the model (or its user) can act on it.
//!
//! Each [`ToolError`] becomes an `isError` tool result whose text says what happened and what to
//! do next, naming the setting to change where one is involved, and whose `structuredContent`
//! carries the same facts for programs (`{"error": {"kind": ..., ...}}`). Protocol errors are
//! kept for protocol faults (unknown tool, internal bugs); see `crate::mcp`.

use std::time::Duration;

use serde_json::{Value, json};

/// A tool call that did not produce the gateway's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolError {
    /// Arguments do not fit the tool's input schema; nothing was sent.
    InvalidArguments {
        /// Tool name.
        tool: String,
        /// One line per problem, each naming its field.
        problems: Vec<String>,
        /// The tool's arguments, briefly.
        usage: String,
    },
    /// What an argument names was looked up at IBKR and not found, or is ambiguous (a symbol,
    /// an account, an expiry); only lookups were sent.
    Unresolved {
        /// Tool name.
        tool: String,
        /// One line per argument, each naming its field and what to do.
        problems: Vec<String>,
        /// The tool's arguments, briefly.
        usage: String,
    },
    /// The tool changes state and this server only reads.
    TradingDisabled {
        /// Tool name.
        tool: String,
    },
    /// No connection could be made to the gateway.
    Unreachable {
        /// Gateway base URL.
        url: String,
        /// The connection error.
        detail: String,
    },
    /// The gateway did not answer in time.
    Timeout {
        /// Gateway base URL.
        url: String,
        /// The configured timeout.
        after: Duration,
        /// The request changes state and may have reached IBKR.
        write: bool,
    },
    /// The connection broke after the request was sent.
    ConnectionLost {
        /// The transport error.
        detail: String,
        /// The request changes state and may have reached IBKR.
        write: bool,
    },
    /// The gateway has no authenticated brokerage session (HTTP 401).
    NotAuthenticated {
        /// Where a human logs in.
        login_url: String,
        /// The gateway's own words, if any.
        detail: Option<String>,
    },
    /// `--auth oauth1`: no live session token could be obtained, or IBKR refused the signed
    /// request even with a fresh one (HTTP 401).
    OAuthRefused {
        /// What IBKR answered, or what is wrong with the inputs.
        detail: String,
        /// Whether the request was sent (a 401) or not (no token to sign it with).
        sent: bool,
    },
    /// IBKR refused the request (4xx, or HTTP 200 with an `error` member).
    Rejected {
        /// HTTP status.
        status: u16,
        /// IBKR's message.
        message: String,
    },
    /// The gateway's pacing limit was hit (HTTP 429).
    RateLimited {
        /// `Retry-After`, when the gateway sent one.
        retry_after: Option<Duration>,
    },
    /// Our client-side pacing refused to send the request now.
    Paced {
        /// The limit, in words.
        limit: String,
        /// When a retry can succeed.
        retry_after: Duration,
    },
    /// The gateway failed (5xx).
    GatewayFailed {
        /// HTTP status.
        status: u16,
        /// The gateway's message.
        message: String,
        /// The request changes state and may have been acted on.
        write: bool,
    },
    /// A success status whose body is not the JSON the operation returns.
    BadReply {
        /// HTTP status.
        status: u16,
        /// What the body looks like.
        detail: String,
        /// The request changes state and IBKR accepted it: it may have been carried out.
        write: bool,
    },
    /// A write was refused with 401 because the brokerage session had lapsed; the server
    /// re-opened the session but does not send writes twice.
    SessionLapsed {
        /// Tool name.
        tool: String,
    },
    /// This server's trading policy refused the call; nothing was sent.
    PolicyRefused {
        /// The rule that refused it.
        rule: &'static str,
        /// What happened and what to do.
        message: String,
    },
    /// The audit log cannot be written, so no write is sent.
    AuditUnavailable(String),
    /// Another session holds the brokerage session.
    Competing {
        /// Whether this server offers `init_brokerage_session` to take it over.
        can_take_over: bool,
    },
    /// IBKR asked a question about an order; it waits for an explicit confirmation.
    QuestionPending {
        /// The order, in words.
        order: String,
        /// The id to reply to.
        reply_id: String,
        /// IBKR's question.
        text: String,
        /// Its message ids.
        message_ids: Vec<String>,
    },
    /// The user declined IBKR's question; the order was dropped.
    Declined {
        /// The order, in words.
        order: String,
        /// The question.
        text: String,
    },
    /// The question/reply chain of an order failed.
    OrderChainFailed(String),
    /// Live events cannot serve this (off, a limit reached, the stream not ready); says why and
    /// what to use instead.
    LiveUnavailable(String),
    /// A task's failure passed on as the model would read it from that task.
    Relayed {
        /// The task's error kind.
        kind: String,
        /// Its text.
        message: String,
    },
    /// A bug or an impossible state on our side.
    Internal(String),
}

/// What to say about a write whose outcome is unknown.
const WRITE_UNKNOWN: &str = "The request changes state and may have reached IBKR: it was NOT \
     retried. Check the current state (for orders: list_orders) before trying again.";

impl ToolError {
    /// A short, stable identifier for programs.
    pub fn kind(&self) -> &'static str {
        match self {
            ToolError::InvalidArguments { .. } => "invalid_arguments",
            ToolError::Unresolved { .. } => "unresolved",
            ToolError::TradingDisabled { .. } => "trading_disabled",
            ToolError::Unreachable { .. } => "gateway_unreachable",
            ToolError::Timeout { .. } => "timeout",
            ToolError::ConnectionLost { .. } => "connection_lost",
            ToolError::NotAuthenticated { .. } => "not_authenticated",
            ToolError::OAuthRefused { .. } => "oauth_refused",
            ToolError::Rejected { .. } => "rejected",
            ToolError::RateLimited { .. } => "rate_limited",
            ToolError::Paced { .. } => "paced",
            ToolError::GatewayFailed { .. } => "gateway_error",
            ToolError::BadReply { .. } => "bad_reply",
            ToolError::PolicyRefused { .. } => "policy_refused",
            ToolError::AuditUnavailable(_) => "audit_unavailable",
            ToolError::SessionLapsed { .. } => "session_lapsed",
            ToolError::Competing { .. } => "competing_session",
            ToolError::QuestionPending { .. } => "order_question",
            ToolError::Declined { .. } => "declined",
            ToolError::OrderChainFailed(_) => "order_chain_failed",
            ToolError::LiveUnavailable(_) => "live_unavailable",
            ToolError::Relayed { .. } => "relayed",
            ToolError::Internal(_) => "internal",
        }
    }

    /// The text the model reads.
    pub fn message(&self) -> String {
        match self {
            ToolError::InvalidArguments {
                tool,
                problems,
                usage,
            } => {
                let mut s = format!("Invalid arguments for `{tool}`; nothing was sent to IBKR.\n");
                for p in problems {
                    s.push_str("- ");
                    s.push_str(p);
                    s.push('\n');
                }
                s.push_str(&format!("Fix them and call again. Arguments: {usage}"));
                s
            }
            ToolError::Unresolved {
                tool,
                problems,
                usage,
            } => {
                let mut s = format!(
                    "`{tool}` could not find what its arguments name at IBKR (only lookups were \
                     made; nothing was changed).\n"
                );
                for p in problems {
                    s.push_str("- ");
                    s.push_str(p);
                    s.push('\n');
                }
                s.push_str(&format!("Fix them and call again. Arguments: {usage}"));
                s
            }
            ToolError::TradingDisabled { tool } => format!(
                "`{tool}` changes your account and this server is read-only. The user can allow \
                 it by restarting the server with --allow-trading (IBKR_MCP_ALLOW_TRADING=true); \
                 nothing was sent to IBKR."
            ),
            ToolError::Unreachable { url, detail } => format!(
                "Cannot reach the IBKR Client Portal Gateway at {url} ({detail}). Check that the \
                 gateway is running, or point this server at it with --gateway-url \
                 (IBKR_MCP_GATEWAY_URL). Nothing was sent to IBKR."
            ),
            ToolError::Timeout { url, after, write } => {
                let mut s = format!(
                    "The gateway at {url} did not answer within {} s (--request-timeout, \
                     IBKR_MCP_REQUEST_TIMEOUT).",
                    after.as_secs_f64()
                );
                if *write {
                    s.push(' ');
                    s.push_str(WRITE_UNKNOWN);
                } else {
                    s.push_str(" Try again; if it keeps happening, check the gateway.");
                }
                s
            }
            ToolError::ConnectionLost { detail, write } => {
                let mut s =
                    format!("The connection to the gateway broke before it answered ({detail}).");
                if *write {
                    s.push(' ');
                    s.push_str(WRITE_UNKNOWN);
                } else {
                    s.push_str(" Try again.");
                }
                s
            }
            ToolError::NotAuthenticated { login_url, detail } => {
                let mut s = String::from(
                    "The IBKR gateway has no authenticated brokerage session (HTTP 401)",
                );
                if let Some(d) = detail.as_deref().filter(|d| !d.is_empty()) {
                    s.push_str(&format!(": {d}"));
                }
                s.push_str(&format!(
                    ". Ask the user to log in at {login_url} (the gateway's login page, with \
                     two-factor authentication), then call get_auth_status to confirm and retry."
                ));
                s
            }
            ToolError::OAuthRefused { detail, sent } => {
                if *sent {
                    format!(
                        "IBKR refused this server's OAuth 1.0a signature (HTTP 401), so nothing \
                         was carried out: {detail}. The live session token has been dropped and \
                         a new one is obtained for the next call (a read was already sent once \
                         more with a new token; an order is never sent again by itself). \
                         Calling the tool again is safe; if IBKR refuses again, the user must \
                         check the OAuth settings (consumer key, access token and secret, the \
                         two private keys, the Diffie-Hellman prime) against IBKR's \
                         self-service OAuth page. get_session_status shows the token's state \
                         and the last error."
                    )
                } else {
                    format!(
                        "Not sent: IBKR does not accept this server's OAuth 1.0a credentials \
                         now (no live session token, or every request signed with it refused), \
                         so this call did not reach IBKR: {detail}. No browser login is \
                         involved in this mode, and calling again will not help until it is \
                         fixed: the user must check the OAuth settings (consumer key, access \
                         token and secret, the two private keys, the Diffie-Hellman prime) on \
                         IBKR's self-service OAuth page, or wait until IBKR activates a new \
                         consumer key. get_session_status shows the token's state and the last \
                         error."
                    )
                }
            }
            ToolError::Rejected { status, message } => {
                format!("IBKR rejected the request (HTTP {status}): {message}")
            }
            ToolError::RateLimited { retry_after } => {
                let wait = retry_after.map_or_else(
                    || "a few seconds".to_string(),
                    |d| format!("{} s", d.as_secs_f64().ceil()),
                );
                format!(
                    "IBKR's rate limit was hit (HTTP 429). Wait {wait} before calling again; \
                     repeated violations can put this IP in IBKR's penalty box for 10 minutes."
                )
            }
            ToolError::Paced { limit, retry_after } => format!(
                "Not sent: IBKR allows {limit}, and calling now would exceed it. Try again in {:.1} s.",
                retry_after.as_secs_f64()
            ),
            ToolError::GatewayFailed {
                status,
                message,
                write,
            } => {
                let mut s = format!("The gateway failed (HTTP {status}): {message}.");
                if *write {
                    s.push(' ');
                    s.push_str(WRITE_UNKNOWN);
                } else {
                    s.push_str(
                        " This is usually transient (the gateway restarting, or IBKR's backend \
                         unavailable); try again in a few seconds.",
                    );
                }
                s
            }
            ToolError::BadReply {
                status,
                detail,
                write: true,
            } => format!(
                "The gateway answered HTTP {status}, but its reply cannot be read ({detail}). \
                 The request may have reached IBKR and been carried out: it was NOT retried. \
                 Check the current state (for orders: list_orders) before doing anything else; \
                 do not send it again blindly."
            ),
            ToolError::BadReply { status, detail, .. } => format!(
                "The gateway answered HTTP {status} but the body is not the JSON this operation \
                 returns ({detail}). This happens while the gateway restarts; try again shortly."
            ),
            ToolError::SessionLapsed { tool } => format!(
                "IBKR refused this request with HTTP 401 because the brokerage session had \
                 lapsed (it times out when idle, and another login or a gateway restart ends it), \
                 so it was NOT carried out. This server has re-opened the session; call `{tool}` \
                 again if it is still wanted."
            ),
            ToolError::PolicyRefused { message, .. } => format!(
                "Refused by this server's trading policy; nothing was sent to IBKR: {message}"
            ),
            ToolError::AuditUnavailable(m) => format!(
                "Not sent: every write is recorded in the audit log first, and it cannot be \
                 written ({m}). The user can point it elsewhere with --audit-log \
                 (IBKR_MCP_AUDIT_LOG)."
            ),
            ToolError::Competing { can_take_over } => {
                let mut s = String::from(
                    "Another session (TWS, the IBKR mobile app, or another gateway) holds the \
                     brokerage session, so this one cannot trade or read iserver data now. ",
                );
                if *can_take_over {
                    s.push_str(
                        "Ask the user whether to take it over; only if they agree, call \
                         init_brokerage_session with body {\"compete\": true, \"publish\": true} \
                         (that disconnects the other session).",
                    );
                } else {
                    s.push_str(
                        "Tell the user: they can log out of the other session (TWS, the mobile \
                         app), or let this server take it over by restarting it with \
                         --take-over-competing (IBKR_MCP_TAKE_OVER_COMPETING=true). This server \
                         then recovers by itself; call the tool again afterwards.",
                    );
                }
                s
            }
            ToolError::QuestionPending {
                order,
                reply_id,
                text,
                message_ids,
            } => format!(
                "IBKR has a question about the order {order} (message ids: {}), and the order is \
                 NOT placed until it is confirmed:\n\n{text}\n\nShow the question to the user. \
                 Only if they agree, call reply_order_question with replyId \"{reply_id}\" and \
                 body {{\"confirmed\": true}}; to drop the order, confirmed false. The reply id \
                 can be used once, for 15 minutes. Do not place the order again.",
                if message_ids.is_empty() {
                    "none".to_string()
                } else {
                    message_ids.join(", ")
                }
            ),
            ToolError::Declined { order, text } => format!(
                "The user declined IBKR's question about the order {order}, so it was dropped \
                 (not placed): {text}"
            ),
            ToolError::OrderChainFailed(m) => format!("The order's question chain stopped: {m}"),
            ToolError::LiveUnavailable(m) => format!("Live events: {m}"),
            ToolError::Relayed { message, .. } => message.clone(),
            ToolError::Internal(m) => format!("Internal error in ibkr-mcp: {m}"),
        }
    }

    /// The same facts as `structuredContent`.
    pub fn structured(&self) -> Value {
        let mut e = json!({ "kind": self.kind(), "message": self.message() });
        let extra = match self {
            ToolError::Rejected { status, .. }
            | ToolError::GatewayFailed { status, .. }
            | ToolError::BadReply { status, .. } => json!({ "status": status }),
            ToolError::NotAuthenticated { login_url, .. } => {
                json!({ "status": 401, "login_url": login_url })
            }
            ToolError::OAuthRefused { sent: true, .. } => json!({ "status": 401 }),
            ToolError::RateLimited { retry_after } => json!({
                "status": 429,
                "retry_after_seconds": retry_after.map(|d| d.as_secs_f64()),
            }),
            ToolError::Paced { retry_after, .. } => {
                json!({ "retry_after_seconds": retry_after.as_secs_f64() })
            }
            ToolError::InvalidArguments { problems, .. }
            | ToolError::Unresolved { problems, .. } => {
                json!({ "problems": problems })
            }
            ToolError::PolicyRefused { rule, .. } => json!({ "rule": rule }),
            ToolError::QuestionPending {
                reply_id,
                text,
                message_ids,
                ..
            } => {
                json!({ "question": { "reply_id": reply_id, "text": text, "message_ids": message_ids } })
            }
            _ => json!({}),
        };
        if let (Value::Object(e), Value::Object(x)) = (&mut e, extra) {
            e.extend(x);
        }
        json!({ "error": e })
    }
}

/// The innermost error: "Connection refused (os error 111)" rather than reqwest's layers (whose
/// outer text names the URL).
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// IBKR's own message from an error body: `error`, `message` or `msg` of a JSON object, else
/// the text itself; at most 500 characters.
pub fn ibkr_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => ["error", "message", "msg", "text"]
            .iter()
            .find_map(|k| match m.get(*k) {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
                Some(v @ Value::Object(_)) => Some(v.to_string()),
                _ => None,
            })
            .unwrap_or_else(|| Value::Object(m).to_string()),
        Ok(v) => v.to_string(),
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    };
    let text = if text.is_empty() {
        "(no message)".to_string()
    } else {
        text
    };
    match text.char_indices().nth(500) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibkr_message_prefers_error_member_then_text() {
        assert_eq!(ibkr_message(br#"{"error":"bad conid"}"#), "bad conid");
        assert_eq!(ibkr_message(br#"{"message":"m","x":1}"#), "m");
        assert_eq!(ibkr_message(b"plain words\n"), "plain words");
        assert_eq!(ibkr_message(b""), "(no message)");
        assert_eq!(ibkr_message(br#"{"a":1}"#), r#"{"a":1}"#);
        let long = "x".repeat(900);
        assert_eq!(ibkr_message(long.as_bytes()).chars().count(), 501);
    }

    #[test]
    fn write_failures_say_not_retried_and_what_to_check() {
        let m = ToolError::Timeout {
            url: "https://gw".into(),
            after: Duration::from_secs(30),
            write: true,
        }
        .message();
        assert!(
            m.contains("NOT retried") && m.contains("list_orders"),
            "{m}"
        );
        let r = ToolError::Timeout {
            url: "https://gw".into(),
            after: Duration::from_secs(30),
            write: false,
        }
        .message();
        assert!(!r.contains("NOT retried"), "{r}");
    }

    #[test]
    fn not_authenticated_names_the_login_page() {
        let e = ToolError::NotAuthenticated {
            login_url: "https://localhost:5000/".into(),
            detail: None,
        };
        assert!(e.message().contains("https://localhost:5000/"));
        assert_eq!(e.structured()["error"]["kind"], "not_authenticated");
        assert_eq!(e.structured()["error"]["status"], 401);
    }
}
