//! IBKR's order questions, answered safely.
//!
//! Placing or modifying an order may be answered with a question (a warning IBKR wants
//! confirmed) instead of the order: `[{"id": <reply id>, "message": [...], "messageIds": [...]}]`.
//! The order exists only once every question in the chain is confirmed with
//! `POST /iserver/reply/{id}`. This module runs that chain, bounded to a number of rounds:
//! - a question whose message ids are all in the auto-confirm policy is confirmed here;
//! - any other question goes to the human through MCP elicitation when the client supports
//!   it, and otherwise back to the model as an `isError` result carrying the question's text
//!   and reply id; only an explicit `reply_order_question` call for that id confirms it;
//! - reply ids are bound to the order they belong to: `reply_order_question` accepts only ids
//!   this server handed out for an order it sent, once;
//! - the order itself is never re-sent, and no reply is ever retried.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rmcp::RoleServer;
use rmcp::service::Peer;
use serde_json::{Value, json};

use crate::ibkr::Client;

/// How questions are answered.
#[derive(Debug, Clone, Default)]
pub struct OrderSettings {
    /// Message ids confirmed without asking.
    pub auto_confirm: Vec<String>,
    /// Most rounds per order.
    pub max_rounds: u32,
}

/// A question waiting for an explicit confirmation.
#[derive(Debug, Clone)]
pub struct Pending {
    /// What the order was, in words.
    pub order: String,
    /// The question's message ids.
    pub message_ids: Vec<String>,
    /// Rounds already used for this order.
    pub rounds: u32,
    /// When it was asked.
    pub asked: Instant,
}

/// Questions handed to the model, by reply id; shared by all sessions.
#[derive(Debug, Default)]
pub struct PendingQuestions(Mutex<HashMap<String, Pending>>);

/// Reply ids expire after this long (IBKR's own expire within minutes).
const PENDING_TTL: Duration = Duration::from_secs(15 * 60);

impl PendingQuestions {
    fn insert(&self, id: String, p: Pending) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, v| v.asked.elapsed() < PENDING_TTL);
        m.insert(id, p);
    }

    /// Keeps question `q` of `order` waiting for an explicit confirmation.
    fn park(&self, q: &Question, order: &str, rounds: u32) {
        self.insert(
            q.id.clone(),
            Pending {
                order: order.to_string(),
                message_ids: q.message_ids.clone(),
                rounds,
                asked: Instant::now(),
            },
        );
    }

    /// Forgets every waiting question (the kill switch was thrown: none may be confirmed later).
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Takes the pending question `id` (single use).
    pub fn take(&self, id: &str) -> Option<Pending> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(id).filter(|p| p.asked.elapsed() < PENDING_TTL)
    }

    /// Number of questions waiting.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One question from IBKR.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// Reply id.
    pub id: String,
    /// Text (lines joined).
    pub text: String,
    /// Message ids.
    pub message_ids: Vec<String>,
}

/// The question in a placement/modify/reply answer, if it is one.
pub fn question_in(reply: &Value) -> Option<Question> {
    let first = match reply {
        Value::Array(a) => a.first()?,
        Value::Object(_) => reply,
        _ => return None,
    };
    let m = first.as_object()?;
    if m.contains_key("order_id") || m.contains_key("orderId") {
        return None;
    }
    let id = match m.get("id")? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let text = match m.get("message")? {
        Value::Array(lines) => lines
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    let text = plain_text(&text);
    let message_ids = crate::ibkr::market::string_list(m.get("messageIds"));
    Some(Question {
        id,
        text,
        message_ids,
    })
}

/// The orders of a call, in words, for the human and the model:
/// `BUY 10 AAPL (conid 265598) LMT 150.25 on DU****567`. `symbols` gives the symbol of each
/// conid the server could look up.
pub fn describe(
    args: &serde_json::Map<String, Value>,
    symbols: &std::collections::HashMap<i64, String>,
) -> String {
    let account = args
        .get("accountId")
        .and_then(Value::as_str)
        .map(crate::audit::mask_account)
        .unwrap_or_default();
    let orders: Vec<String> = crate::policy::orders_in(args)
        .iter()
        .map(|o| {
            let s = |k: &str| {
                o.get(k)
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .unwrap_or_default()
            };
            let conid = o
                .get("conid")
                .and_then(crate::ibkr::market::number)
                .map(|c| c as i64);
            let contract = match conid.and_then(|c| symbols.get(&c).map(|sym| (c, sym))) {
                Some((c, sym)) => format!("{sym} (conid {c})"),
                None => format!("conid {}", s("conid")),
            };
            let size = if o.contains_key("cashQty") && !o.contains_key("quantity") {
                format!("cash {}", s("cashQty"))
            } else {
                s("quantity")
            };
            let mut d = format!("{} {size} {contract} {}", s("side"), s("orderType"));
            if o.contains_key("price") {
                d.push_str(&format!(" {}", s("price")));
            }
            if o.contains_key("auxPrice") {
                d.push_str(&format!(" stop {}", s("auxPrice")));
            }
            // The ticket's own account, when it names one (an advisor's client account).
            if let Some(acct) = o.get("acctId").and_then(Value::as_str)
                && crate::audit::mask_account(acct) != account
            {
                d.push_str(&format!(
                    " for account {}",
                    crate::audit::mask_account(acct)
                ));
            }
            d
        })
        .collect();
    format!("{} on {account}", orders.join(", "))
}

/// IBKR's question text as plain text: its HTML (`<h4>`, `<b>`, `<br>`) turned into lines and
/// words, entities decoded, blank runs collapsed.
pub fn plain_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let starts_tag = rest[open + 1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!');
        if !starts_tag {
            out.push('<');
            rest = &rest[open + 1..];
            continue;
        }
        let Some(close) = rest[open..].find('>') else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let tag = rest[open + 1..open + close]
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if matches!(
            tag.as_str(),
            "br" | "p" | "div" | "li" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "tr"
        ) {
            out.push('\n');
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    let lines: Vec<String> = decoded
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("\n")
}

/// The human at the client, reachable through MCP elicitation when the client supports it:
/// on 2025-11-25 sessions by a server-to-client request, on 2026-07-28 (stateless) by an
/// `InputRequiredResult` the client answers by calling the tool again.
#[derive(Debug, Clone, Default)]
pub struct Human {
    peer: Option<Peer<RoleServer>>,
    stateless: bool,
}

/// What the human said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Confirmed.
    Yes,
    /// Declined or cancelled.
    No,
    /// The client cannot ask (no elicitation support), or did not answer.
    Unavailable,
    /// The client asks when it calls again (2026-07-28: return an `InputRequiredResult`).
    AskLater,
}

impl Human {
    /// The human behind a request, if its client declared elicitation.
    pub fn from_context(ctx: &rmcp::service::RequestContext<RoleServer>) -> Self {
        let elicits = ctx
            .client_capabilities()
            .is_some_and(|c| c.elicitation.is_some());
        if !elicits {
            return Self::default();
        }
        let stateless = ctx
            .protocol_version()
            .is_some_and(|v| v >= rmcp::model::ProtocolVersion::V_2026_07_28);
        Self {
            peer: (!stateless).then(|| ctx.peer.clone()),
            stateless,
        }
    }

    /// Whether the client can ask.
    pub fn can_ask(&self) -> bool {
        self.stateless || self.peer.is_some()
    }

    /// Asks the human to confirm `message` (or says to ask when the client calls again).
    pub async fn confirm(&self, message: &str) -> Answer {
        if self.stateless {
            return Answer::AskLater;
        }
        let Some(peer) = &self.peer else {
            return Answer::Unavailable;
        };
        let params = match confirm_request(message) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the elicitation request");
                return Answer::Unavailable;
            }
        };
        match peer
            .create_elicitation_with_timeout(params, Some(Duration::from_secs(300)))
            .await
        {
            Ok(r) => answer_of(r.action, r.content.as_ref()),
            Err(e) => {
                tracing::warn!(error = %e, "elicitation failed; falling back to an explicit confirm");
                Answer::Unavailable
            }
        }
    }
}

/// The elicitation form: one required yes/no field `confirm`.
pub fn confirm_request(
    message: &str,
) -> Result<rmcp::model::ElicitRequestParams, serde_json::Error> {
    serde_json::from_value(json!({
        "mode": "form",
        "message": message,
        "requestedSchema": {
            "type": "object",
            "properties": {
                "confirm": {
                    "type": "boolean",
                    "title": "Confirm",
                    "description": "Yes to go ahead, no to stop."
                }
            },
            "required": ["confirm"]
        }
    }))
}

/// Yes only for an accepted form whose `confirm` is true.
pub fn answer_of(action: rmcp::model::ElicitationAction, content: Option<&Value>) -> Answer {
    match action {
        rmcp::model::ElicitationAction::Accept
            if content.and_then(|c| c.get("confirm")) == Some(&Value::Bool(true)) =>
        {
            Answer::Yes
        }
        _ => Answer::No,
    }
}

/// What a stateless (2026-07-28) client must answer before a call can go on.
#[derive(Debug, Clone)]
pub enum Continuation {
    /// An order question: its reply id, the order, rounds used, questions answered so far.
    Question {
        /// Tool the call was made with.
        tool: String,
        /// IBKR's reply id.
        reply_id: String,
        /// The order, in words.
        order: String,
        /// Rounds used.
        rounds: u32,
        /// Questions answered before.
        answered: Vec<Value>,
        /// The question's text.
        text: String,
    },
    /// A live order waiting for the human's confirmation before it is sent.
    LiveOrder {
        /// Tool.
        tool: String,
        /// Fingerprint of the arguments it was asked for.
        fingerprint: String,
    },
}

/// Continuations by opaque handle (the `requestState` the client echoes), single use.
#[derive(Debug, Default)]
pub struct Continuations(Mutex<HashMap<String, (Continuation, Instant)>>);

impl Continuations {
    /// Stores `c`; returns its handle.
    pub fn put(&self, c: Continuation) -> String {
        let handle = uuid::Uuid::new_v4().simple().to_string();
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (_, at)| at.elapsed() < PENDING_TTL);
        m.insert(handle.clone(), (c, Instant::now()));
        handle
    }

    /// Forgets every continuation (the kill switch was thrown).
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Takes the continuation of `handle`, if it exists and is fresh.
    pub fn take(&self, handle: &str) -> Option<Continuation> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(handle)
            .filter(|(_, at)| at.elapsed() < PENDING_TTL)
            .map(|(c, _)| c)
    }
}

/// The `InputRequiredResult` asking the human to confirm `message`, to resume with `handle`.
pub fn input_required(
    message: &str,
    handle: String,
) -> Result<rmcp::model::InputRequiredResult, String> {
    let params = confirm_request(message).map_err(|e| e.to_string())?;
    let request = rmcp::model::InputRequest::Elicitation(rmcp::model::ElicitRequest::new(params));
    let mut requests = rmcp::model::InputRequests::new();
    requests.insert(CONFIRM_KEY.to_string(), request);
    Ok(rmcp::model::InputRequiredResult::new(
        Some(requests),
        Some(handle),
    ))
}

/// The key of our one input request.
pub const CONFIRM_KEY: &str = "confirm";

/// The human's answer in a retried call's `inputResponses`.
pub fn answer_in(responses: Option<&rmcp::model::InputResponses>) -> Answer {
    let Some(r) = responses.and_then(|r| r.get(CONFIRM_KEY)) else {
        return Answer::No;
    };
    match serde_json::from_value::<rmcp::model::ElicitResult>(r.clone()) {
        Ok(e) => answer_of(e.action, e.content.as_ref()),
        Err(_) => Answer::No,
    }
}

/// How a question chain ended.
#[derive(Debug)]
pub enum Outcome {
    /// The final answer (an order confirmation, or a rejection) as the gateway sent it.
    Done {
        /// The gateway's JSON.
        reply: Value,
        /// Questions answered on the way, for the result and the audit log.
        answered: Vec<Value>,
    },
    /// A question waits for an explicit `reply_order_question` call.
    Waiting {
        /// The question.
        question: Question,
        /// Questions answered before it.
        answered: Vec<Value>,
    },
    /// The human declined; the order was abandoned.
    Declined {
        /// The question declined.
        question: Question,
        /// Questions answered before it.
        answered: Vec<Value>,
    },
    /// A stateless client must ask the human and call again (2026-07-28).
    AskLater {
        /// The question.
        question: Question,
        /// Questions answered before it.
        answered: Vec<Value>,
        /// Rounds used, including this one.
        rounds: u32,
    },
    /// The chain failed (transport error, non-2xx answer, too many rounds).
    Failed {
        /// What happened.
        message: String,
        /// Questions answered before it.
        answered: Vec<Value>,
    },
}

/// Why a reply to a question brought no usable answer. Its text is what the model is told; the
/// reply is never sent twice.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReplyError {
    /// Nothing left this server (refused, invalid arguments, unavailable).
    #[error("the reply to question {id} was not sent ({error}); the order is not confirmed")]
    NotSent {
        id: String,
        error: crate::ibkr::gateway::Error,
    },
    /// It left, and no answer came back.
    #[error(
        "the reply to question {id} got no answer ({why}). It may have reached IBKR and \
         confirmed the order: it was NOT retried. Check list_orders before doing anything else"
    )]
    NoAnswer { id: String, why: String },
    /// IBKR answered with an error status.
    #[error("the reply to question {id} was answered HTTP {status}: {message}")]
    Status {
        id: String,
        status: u16,
        message: String,
    },
    /// IBKR accepted it, and its answer is not JSON.
    #[error(
        "IBKR accepted the reply to question {id} (HTTP {status}) but its answer cannot be read \
         ({error}). The order may have been placed: it was NOT retried. Check list_orders \
         before doing anything else"
    )]
    Unreadable {
        id: String,
        status: u16,
        error: serde_json::Error,
    },
}

/// Answers one question with `confirmed`; returns the gateway's next answer.
pub(super) async fn reply(client: &Client, id: &str, confirmed: bool) -> Result<Value, ReplyError> {
    use crate::ibkr::gateway::{self, Error, ops};
    let args = json!({ "replyId": id, "body": { "confirmed": confirmed } });
    let id = id.to_string();
    let r = match gateway::call(client, ops::REPLY_QUESTION, args).await {
        Ok(r) => r,
        Err(error) if !error.reached_gateway() => return Err(ReplyError::NotSent { id, error }),
        Err(e) => {
            let why = match e {
                Error::Transport { cause, .. } => cause,
                other => other.to_string(),
            };
            return Err(ReplyError::NoAnswer { id, why });
        }
    };
    if !r.is_success() {
        return Err(ReplyError::Status {
            id,
            status: r.status,
            message: crate::error::ibkr_message(&r.body),
        });
    }
    serde_json::from_slice(&r.body).map_err(|error| ReplyError::Unreadable {
        id,
        status: r.status,
        error,
    })
}

/// What the human is shown for a question.
pub fn question_message(order: &str, text: &str) -> String {
    format!("IBKR asks about the order {order}:\n\n{text}\n\nConfirm to submit it.")
}

/// Runs the question chain that starts with `first` (the answer to a placement, modification
/// or reply) for the order described by `order`.
pub async fn run_chain(
    client: &Client,
    settings: &OrderSettings,
    pending: &PendingQuestions,
    human: &Human,
    order: &str,
    first: Value,
    rounds_used: u32,
) -> Outcome {
    let mut answer = first;
    let mut answered = Vec::new();
    let mut rounds = rounds_used;
    loop {
        let Some(q) = question_in(&answer) else {
            return Outcome::Done {
                reply: answer,
                answered,
            };
        };
        if rounds >= settings.max_rounds {
            pending.park(&q, order, rounds);
            return Outcome::Failed {
                message: format!(
                    "IBKR asked {rounds} questions about this order, the most this server answers \
                     by itself (--max-question-rounds). The last one (reply id {}) is still open: \
                     {}",
                    q.id, q.text
                ),
                answered,
            };
        }
        rounds += 1;
        let auto = !q.message_ids.is_empty()
            && q.message_ids
                .iter()
                .all(|id| settings.auto_confirm.contains(id));
        let confirmed = if auto {
            tracing::info!(reply_id = %q.id, ids = ?q.message_ids, "auto-confirming an order question");
            answered.push(json!({"reply_id": q.id, "message_ids": q.message_ids, "text": q.text, "answer": "confirmed by policy"}));
            true
        } else {
            match human.confirm(&question_message(order, &q.text)).await {
                Answer::Yes => {
                    answered.push(json!({"reply_id": q.id, "message_ids": q.message_ids, "text": q.text, "answer": "confirmed by the user"}));
                    true
                }
                Answer::No => {
                    // Tell IBKR the answer is no, so the order is dropped; never retried.
                    let _ = reply(client, &q.id, false).await;
                    return Outcome::Declined {
                        question: q,
                        answered,
                    };
                }
                Answer::AskLater => {
                    return Outcome::AskLater {
                        question: q,
                        answered,
                        rounds,
                    };
                }
                Answer::Unavailable => {
                    pending.park(&q, order, rounds);
                    return Outcome::Waiting {
                        question: q,
                        answered,
                    };
                }
            }
        };
        answer = match reply(client, &q.id, confirmed).await {
            Ok(a) => a,
            Err(e) => {
                return Outcome::Failed {
                    message: e.to_string(),
                    answered,
                };
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_errors_tell_the_model_what_happened_and_what_to_do() {
        let id = || "q-1".to_string();
        let not_sent = ReplyError::NotSent {
            id: id(),
            error: crate::ibkr::gateway::Error::Internal("boom".into()),
        };
        assert_eq!(
            not_sent.to_string(),
            format!(
                "the reply to question q-1 was not sent ({}); the order is not confirmed",
                crate::ibkr::gateway::Error::Internal("boom".into())
            )
        );
        let no_answer = ReplyError::NoAnswer {
            id: id(),
            why: "timed out".into(),
        };
        assert_eq!(
            no_answer.to_string(),
            "the reply to question q-1 got no answer (timed out). It may have reached IBKR and \
             confirmed the order: it was NOT retried. Check list_orders before doing anything else"
        );
        let status = ReplyError::Status {
            id: id(),
            status: 500,
            message: "oops".into(),
        };
        assert_eq!(
            status.to_string(),
            "the reply to question q-1 was answered HTTP 500: oops"
        );
        let unreadable = ReplyError::Unreadable {
            id: id(),
            status: 200,
            error: serde_json::from_str::<Value>("<html>").unwrap_err(),
        };
        let text = unreadable.to_string();
        assert!(
            text.starts_with(
                "IBKR accepted the reply to question q-1 (HTTP 200) but its answer cannot be read ("
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "). The order may have been placed: it was NOT retried. Check list_orders before \
                 doing anything else"
            ),
            "{text}"
        );
    }

    #[test]
    fn questions_are_told_apart_from_confirmations() {
        let q = json!([{"id": "abc", "message": ["line 1", "line 2"], "isSuppressed": false, "messageIds": ["o163"]}]);
        assert_eq!(
            question_in(&q),
            Some(Question {
                id: "abc".into(),
                text: "line 1\nline 2".into(),
                message_ids: vec!["o163".into()]
            })
        );
        assert_eq!(
            question_in(&json!([{"order_id": "1", "order_status": "Submitted"}])),
            None
        );
        assert_eq!(question_in(&json!({"error": "no"})), None);
        assert_eq!(question_in(&json!([])), None);
    }

    #[test]
    fn question_text_reaches_the_human_without_html() {
        let html = "<h4>Confirm Mandatory Cap Price</h4>To avoid trading at a price that is \
                    <b>not</b> consistent &amp; fair.<br/>Are you sure?";
        assert_eq!(
            plain_text(html),
            "Confirm Mandatory Cap Price\nTo avoid trading at a price that is not consistent & \
             fair.\nAre you sure?"
        );
        let q = json!([{"id": "r", "message": [html], "messageIds": ["o10153"]}]);
        let text = question_in(&q).unwrap().text;
        assert!(!text.contains('<') && !text.contains("&amp;"), "{text}");
        assert_eq!(plain_text("a < b and c > d"), "a < b and c > d");
    }

    #[test]
    fn orders_are_described_by_symbol_when_known() {
        let args = json!({"accountId": "DU1234567", "body": {"orders": [
            {"conid": 265598, "side": "BUY", "quantity": 10, "orderType": "LMT", "price": 150.25},
            {"conid": 8314, "side": "SELL", "quantity": 1, "orderType": "STOP_LIMIT", "price": 9, "auxPrice": 10}
        ]}});
        let symbols = std::collections::HashMap::from([(265598, "AAPL".to_string())]);
        assert_eq!(
            describe(args.as_object().unwrap(), &symbols),
            "BUY 10 AAPL (conid 265598) LMT 150.25, SELL 1 conid 8314 STOP_LIMIT 9 stop 10 on \
             DU****567"
        );
        let advisor = json!({"accountId": "F1234567", "body": {"orders": [
            {"acctId": "U7654321", "conid": 8314, "side": "BUY", "quantity": 500, "orderType": "MKT"}
        ]}});
        assert_eq!(
            describe(advisor.as_object().unwrap(), &symbols),
            "BUY 500 conid 8314 MKT for account U****321 on F****567"
        );
    }

    #[test]
    fn pending_questions_are_single_use() {
        let p = PendingQuestions::default();
        p.insert(
            "r1".into(),
            Pending {
                order: "o".into(),
                message_ids: vec![],
                rounds: 1,
                asked: Instant::now(),
            },
        );
        assert!(p.take("r1").is_some());
        assert!(p.take("r1").is_none());
        assert!(p.take("never").is_none());
    }
}
