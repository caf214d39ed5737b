//! The path of one tool call, in stages: validate the arguments → gate (trading switch, kill
//! switch, a take-over the human must allow) → ensure the session (before anything that talks to
//! the gateway, the policy's lookups included) → authorize (accounts, preview token, trading
//! policy, the waiting question, a human for live orders) → record the intent → send (recovering
//! a lapsed session once for reads) → shape (question chains, preview tokens, notes). The audit
//! result line is written by the caller ([`IbkrServer::call_with`]).
//!
//! What an operation adds to that path is a [`Behaviour`], looked up once by operation id; the
//! stages ask the behaviour instead of comparing operation ids.

use rmcp::ErrorData as McpError;
use rmcp::model::CallToolResponse;
use serde_json::{Map, Value};

use super::catalog::ToolDef;
use super::{
    Attempt, CallCtx, IbkrServer, PREVIEW_TOKEN_ARG, SNAPSHOT, TAKE_OVER_TOOL, UNSUBSCRIBE_ALL,
    orders, quotes, results,
};
use crate::error::ToolError;
use crate::ibkr::gateway::{self, Reply};
use crate::{audit, policy};

/// Gateway bodies in the audit log are cut to this many bytes.
const AUDIT_BODY_BYTES: usize = 2048;

/// What an operation adds to the common path of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Behaviour {
    /// Places or modifies orders: a preview token may be required, a live account may need the
    /// human, and IBKR may answer with questions.
    pub order: bool,
    /// Answers an order question: the id must be one this server is waiting on, and the answer
    /// may bring the next question.
    pub question_reply: bool,
    /// Previews orders: a successful preview issues a token (when previews are required).
    pub issues_preview_token: bool,
    /// The quote snapshot: availability fields are added and a warming subscription is asked
    /// again within `--snapshot-wait`.
    pub snapshot: bool,
    /// Drops every market data subscription: the warm-contract memory is cleared.
    pub unsubscribes_all: bool,
}

impl Behaviour {
    /// The behaviour of `operation_id` (nothing extra for most operations).
    pub fn of(operation_id: &str) -> Self {
        let mut b = Self::default();
        match operation_id {
            policy::PLACE_ORDERS | policy::MODIFY_ORDER => b.order = true,
            policy::REPLY_QUESTION => b.question_reply = true,
            policy::PREVIEW_ORDERS => b.issues_preview_token = true,
            SNAPSHOT => b.snapshot = true,
            UNSUBSCRIBE_ALL => b.unsubscribes_all = true,
            _ => {}
        }
        b
    }

    /// Whether IBKR's answer may be a question to run as a chain.
    fn asks_questions(self) -> bool {
        self.order || self.question_reply
    }
}

/// Why a call stops before its end.
enum Stop {
    /// Refused: an `isError` result, recorded as refused.
    Refused(ToolError),
    /// A complete answer of its own (waiting for a stateless client's human).
    Respond(Box<(Attempt, CallToolResponse)>),
    /// A protocol error.
    Protocol(McpError),
}

impl From<ToolError> for Stop {
    fn from(e: ToolError) -> Self {
        Stop::Refused(e)
    }
}

/// Validated arguments of a call.
struct Prepared {
    args: Map<String, Value>,
    preview_token: Option<String>,
}

/// What authorization hands to the later stages.
#[derive(Default)]
struct Authorized<'a> {
    /// The order slot held for the call (kept only if the request leaves).
    reservation: Option<policy::Reservation<'a>>,
    /// The question this call answers.
    chain_from: Option<orders::Pending>,
}

/// What the send stage brought back.
struct Sent {
    outcome: Result<Reply, gateway::Error>,
    /// The 2xx body of `outcome` as JSON, parsed once for every later use (`None` for any
    /// other outcome, or a body that is not JSON).
    parsed: Option<Value>,
    /// A lapsed session the call could not recover from.
    lapsed: Option<ToolError>,
    notes: Vec<String>,
}

impl Sent {
    fn reached_gateway(&self) -> bool {
        match &self.outcome {
            Ok(_) => true,
            Err(e) => e.reached_gateway(),
        }
    }
}

/// Takes the preview-token argument out of `arguments` (it is ours, not IBKR's).
fn take_preview_token(
    def: &ToolDef,
    arguments: &mut Map<String, Value>,
) -> Result<Option<String>, ToolError> {
    match arguments.remove(PREVIEW_TOKEN_ARG) {
        Some(Value::String(t)) => Ok(Some(t)),
        Some(_) => Err(ToolError::InvalidArguments {
            tool: def.name.clone(),
            problems: vec![format!("`{PREVIEW_TOKEN_ARG}`: must be a string")],
            usage: results::usage(def),
        }),
        None => Ok(None),
    }
}

/// The gateway's answer for the audit log: status and body (`parsed` when the caller has it),
/// account ids masked, cut to [`AUDIT_BODY_BYTES`].
fn reply_summary(reply: &Reply, parsed: Option<&Value>) -> (u16, String) {
    let mut body = match parsed {
        Some(v) => v.clone(),
        None => serde_json::from_slice::<Value>(&reply.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&reply.body).into_owned())),
    };
    audit::mask_accounts(&mut body);
    let mut text = body.to_string();
    if text.len() > AUDIT_BODY_BYTES {
        let cut = (0..=AUDIT_BODY_BYTES)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    (reply.status, text)
}

impl IbkrServer {
    /// Runs one call through the stages (see the module docs). Returns what the audit log
    /// records and the response.
    pub(super) async fn run(
        &self,
        def: &'static ToolDef,
        arguments: Option<rmcp::model::JsonObject>,
        human: &orders::Human,
        live_confirmed: bool,
        ctx: &CallCtx,
    ) -> Result<(Attempt, CallToolResponse), McpError> {
        let b = Behaviour::of(&def.operation_id);
        let staged = async {
            let mut call = self.validate(def, b, arguments)?;
            if !def.read_only {
                self.gate(def, &call.args, human).await?;
            }
            self.ensure_session(def).await?;
            let auth = if def.read_only {
                Authorized::default()
            } else {
                let auth = self
                    .authorize(def, b, &call, human, live_confirmed, ctx)
                    .await?;
                self.intent(def, &call.args, ctx).await?;
                auth
            };
            if b.snapshot {
                quotes::with_availability(&mut call.args);
            }
            let sent = self.send_stage(def, b, &call.args).await;
            self.shape(def, b, &call.args, auth, sent, human, ctx).await
        };
        match staged.await {
            Ok(done) => Ok(done),
            Err(Stop::Refused(e)) => Ok((Attempt::refused(&e), results::failure(&e).into())),
            Err(Stop::Respond(done)) => Ok(*done),
            Err(Stop::Protocol(e)) => Err(e),
        }
    }

    /// Validate: our own arguments out, then the tool's input schema.
    fn validate(
        &self,
        def: &'static ToolDef,
        b: Behaviour,
        arguments: Option<rmcp::model::JsonObject>,
    ) -> Result<Prepared, Stop> {
        let mut arguments = arguments.unwrap_or_default();
        let preview_token = if b.order && self.state.policy.limits().require_preview {
            take_preview_token(def, &mut arguments)?
        } else {
            None
        };
        let args = args_or_refusal(def, arguments)?;
        Ok(Prepared {
            args,
            preview_token,
        })
    }

    /// Gate (writes): the trading switch, the kill switch, a take-over only the human allows.
    /// Nothing here talks to the gateway.
    async fn gate(
        &self,
        def: &'static ToolDef,
        args: &Map<String, Value>,
        human: &orders::Human,
    ) -> Result<(), Stop> {
        if !self.state.allow_trading {
            return Err(ToolError::TradingDisabled {
                tool: def.name.clone(),
            }
            .into());
        }
        self.check_halt()?;
        self.confirm_take_over(def, args, human).await?;
        Ok(())
    }

    /// Authorize (writes, after the session): accounts, the preview token (before the policy's
    /// lookups: an unpreviewed order costs no request), the trading policy, the question being
    /// answered, a human for live orders.
    async fn authorize(
        &self,
        def: &'static ToolDef,
        b: Behaviour,
        call: &Prepared,
        human: &orders::Human,
        live_confirmed: bool,
        ctx: &CallCtx,
    ) -> Result<Authorized<'_>, Stop> {
        let state = &self.state;
        let args = &call.args;
        let op = def.operation_id.as_str();
        let refused = |r: policy::Refusal| {
            Stop::Refused(ToolError::PolicyRefused {
                rule: r.rule,
                message: r.message,
            })
        };
        self.ensure_account_book(args).await;
        state
            .policy
            .check_accounts(&policy::accounts_in(args))
            .map_err(refused)?;
        // Checked now (an unpreviewed order costs no lookup), used up only after the human
        // has confirmed a live order: a stateless client's second call brings it again.
        let preview = b.order && state.policy.limits().require_preview;
        if preview {
            state
                .policy
                .check_preview_token(call.preview_token.as_deref(), op, args)
                .map_err(refused)?;
        }
        let mut auth = Authorized {
            reservation: self.check_policy(def, args).await?,
            chain_from: None,
        };
        if b.question_reply {
            let id = args.get("replyId").and_then(|v| v.as_str()).unwrap_or("");
            auth.chain_from = Some(state.pending.take(id).ok_or_else(|| {
                Stop::Refused(ToolError::PolicyRefused {
                    rule: "reply_id",
                    message: format!(
                        "reply id `{id}` is not a question this server is waiting on (each id \
                         comes from an order placed through this server, can be answered once, \
                         and expires after 15 minutes). Check list_orders; if the order is not \
                         there, place it again to get a fresh question."
                    ),
                })
            })?);
        }
        if b.order && !live_confirmed {
            self.confirm_live(def, args, human, ctx).await?;
        }
        if preview {
            state
                .policy
                .redeem_preview_token(call.preview_token.as_deref(), op, args)
                .map_err(refused)?;
        }
        Ok(auth)
    }

    /// A human for an order to a live account (when `--confirm-live-orders` and the client can
    /// ask).
    async fn confirm_live(
        &self,
        def: &'static ToolDef,
        args: &Map<String, Value>,
        human: &orders::Human,
        ctx: &CallCtx,
    ) -> Result<(), Stop> {
        let state = &self.state;
        let live = policy::accounts_in(args)
            .iter()
            .any(|a| !state.policy.is_paper(a));
        if !state.confirm_live_orders || !live || !human.can_ask() {
            return Ok(());
        }
        let what = match &ctx.words {
            Some(w) => w.clone(),
            None => self.describe_order(args).await,
        };
        let message = format!("Send this order to a LIVE (real-money) account?\n\n{what}");
        match human.confirm(&message).await {
            orders::Answer::Yes => Ok(()),
            orders::Answer::AskLater => {
                let handle = state.continuations.put(orders::Continuation::LiveOrder {
                    tool: def.name.clone(),
                    fingerprint: policy::fingerprint(args),
                });
                let ask = orders::input_required(&message, handle)
                    .map_err(|e| Stop::Protocol(McpError::internal_error(e, None)))?;
                Err(Stop::Respond(Box::new((
                    Attempt {
                        decision: "refused",
                        reason: Some("waiting for the user to confirm a live order".into()),
                        result: None,
                    },
                    ask.into(),
                ))))
            }
            _ => Err(ToolError::PolicyRefused {
                rule: "human",
                message: format!("the user did not confirm the live order {what}"),
            }
            .into()),
        }
    }

    /// Send: the generated call (a lapsed session recovered once for reads), the snapshot
    /// warm-up, and what the answer tells the session manager.
    async fn send_stage(
        &self,
        def: &'static ToolDef,
        b: Behaviour,
        args: &Map<String, Value>,
    ) -> Sent {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let mut logged = Value::Object(args.clone());
            audit::mask_accounts(&mut logged);
            tracing::debug!(arguments = %logged, "calling");
        }
        let mut notes = Vec::new();
        let (mut outcome, lapsed) = self.send_recovering(def, args, &mut notes).await;
        // The 2xx body is parsed here, once, for the question check, the audit summary and the
        // result; the snapshot warm-up has already parsed its final answer.
        let parsed = if b.snapshot {
            self.warm_up(def, args, &mut outcome, &mut notes).await
        } else {
            outcome.as_ref().ok().and_then(|r| r.json().ok())
        };
        if let Some(session) = &self.state.session {
            if let Err(gateway::Error::Transport {
                kind: gateway::TransportKind::Connect,
                cause,
                ..
            }) = &outcome
            {
                session.saw_unreachable(cause);
            }
            if b.unsubscribes_all {
                session.forget_warm(None);
            }
        }
        Sent {
            outcome,
            parsed,
            lapsed,
            notes,
        }
    }

    /// Shape: the question chain, the result, the preview token, and the audit record.
    // Each stage's output comes in as its own argument, so what shape depends on stays visible.
    #[allow(clippy::too_many_arguments)]
    async fn shape(
        &self,
        def: &'static ToolDef,
        b: Behaviour,
        args: &Map<String, Value>,
        auth: Authorized<'_>,
        sent: Sent,
        human: &orders::Human,
        ctx: &CallCtx,
    ) -> Result<(Attempt, CallToolResponse), Stop> {
        let state = &self.state;
        let reached_gateway = sent.reached_gateway();
        if let Some(r) = auth.reservation
            && reached_gateway
        {
            r.keep();
        }
        let decision = if reached_gateway { "sent" } else { "refused" };
        let parsed = sent.parsed;
        // Only writes are audited: a read pays nothing for the summary.
        let summary = if def.read_only {
            None
        } else {
            sent.outcome
                .as_ref()
                .ok()
                .map(|r| reply_summary(r, parsed.as_ref()))
        };
        let question = parsed
            .as_ref()
            .filter(|v| b.asks_questions() && orders::question_in(v).is_some())
            .cloned();
        let mut answered = Vec::new();
        let mut response: CallToolResponse = if let Some(e) = &sent.lapsed {
            results::failure(e).into()
        } else if let Some(first) = question {
            let (order, rounds) = match &auth.chain_from {
                Some(p) => (p.order.clone(), p.rounds),
                None => match &ctx.words {
                    Some(w) => (w.clone(), 0),
                    None => (self.describe_order(args).await, 0),
                },
            };
            let outcome = orders::run_chain(
                &state.client,
                &state.orders,
                &state.pending,
                human,
                &order,
                first,
                rounds,
            )
            .await;
            let (r, a) = self
                .chain_response(def, &order, outcome, sent.notes.clone())
                .map_err(Stop::Protocol)?;
            answered = a;
            r
        } else {
            let mut r = results::from_call(def, sent.outcome, parsed, &state.results);
            r.content.extend(
                sent.notes
                    .iter()
                    .map(|n| rmcp::model::ContentBlock::text(format!("Note: {n}"))),
            );
            r.into()
        };
        let CallToolResponse::Complete(result) = &mut response else {
            let attempt = Attempt {
                decision,
                reason: Some("IBKR asked a question; waiting for the user".into()),
                result: summary.map(|(status, body)| {
                    serde_json::json!({ "status": status, "body": body, "questions": answered })
                }),
            };
            return Ok((attempt, response));
        };
        let is_error = result.is_error.unwrap_or(false);
        if b.issues_preview_token && !is_error && state.policy.limits().require_preview {
            let token = state.policy.issue_preview_token(&def.operation_id, args);
            if ctx.via.is_some() {
                // The task tool hands it out, with its own words.
                *ctx.preview_token.lock().unwrap_or_else(|e| e.into_inner()) = Some(token);
            } else {
                result.content.push(rmcp::model::ContentBlock::text(format!(
                "Note: previewToken {token} — pass it as `{PREVIEW_TOKEN_ARG}` to place_orders \
                 (or modify_iserver_order) with exactly this accountId and order, within {} s (single \
                 use).",
                state.policy.limits().preview_ttl.as_secs()
            )));
            }
        }
        tracing::info!(is_error, "tool call done");
        let error_text = is_error.then(|| {
            result
                .content
                .first()
                .and_then(|c| c.as_text())
                .map(|t| t.text.clone())
                .unwrap_or_default()
        });
        let attempt = Attempt {
            decision,
            reason: error_text,
            result: summary.map(|(status, body)| {
                let mut v =
                    serde_json::json!({ "status": status, "is_error": is_error, "body": body });
                if !answered.is_empty() {
                    v["questions"] = Value::Array(answered);
                }
                v
            }),
        };
        Ok((attempt, response))
    }

    /// Writes the intent line of a write attempt, just before it is sent.
    pub(super) async fn intent(
        &self,
        def: &ToolDef,
        args: &serde_json::Map<String, serde_json::Value>,
        ctx: &CallCtx,
    ) -> Result<(), ToolError> {
        let mut masked = serde_json::Value::Object(args.clone());
        audit::mask_accounts(&mut masked);
        self.state
            .audit
            .record(audit::Entry {
                time: audit::now(),
                id: ctx.id.clone(),
                phase: "intent",
                tool: ctx.tool_name(def),
                operation: def.operation_id.clone(),
                arguments: masked,
                decision: "sending",
                reason: None,
                result: None,
                duration_ms: ctx.started.elapsed().as_millis() as u64,
            })
            .await
            .map_err(ToolError::AuditUnavailable)
    }

    /// The kill switch: refused while it is thrown, and then nothing begun before it (a
    /// waiting question, a live-order confirmation, a preview token) may complete later.
    pub(super) fn check_halt(&self) -> Result<(), ToolError> {
        let state = &self.state;
        state.policy.check_halt().map_err(|r| {
            state.void_pending();
            ToolError::PolicyRefused {
                rule: r.rule,
                message: r.message,
            }
        })
    }

    /// Taking the brokerage session over from another login (TWS, the mobile app) disconnects
    /// it: the human decides, through elicitation, unless the user set --take-over-competing.
    async fn confirm_take_over(
        &self,
        def: &ToolDef,
        args: &serde_json::Map<String, serde_json::Value>,
        human: &orders::Human,
    ) -> Result<(), ToolError> {
        let compete = args
            .get("body")
            .and_then(|b| b.get("compete"))
            .and_then(serde_json::Value::as_bool)
            == Some(true);
        if def.name != TAKE_OVER_TOOL || !compete || self.state.take_over_competing {
            return Ok(());
        }
        let refused = |why: &str| ToolError::PolicyRefused {
            rule: "take_over",
            message: format!(
                "{why}: taking the brokerage session over disconnects the user's other session \
                 (TWS, the mobile app). Ask the user to confirm it in their client, or to \
                 restart this server with --take-over-competing \
                 (IBKR_MCP_TAKE_OVER_COMPETING=true)."
            ),
        };
        match human
            .confirm(
                "Take the IBKR brokerage session over from your other session (TWS, the mobile app \
             or another gateway)? That session will be disconnected.",
            )
            .await
        {
            orders::Answer::Yes => Ok(()),
            orders::Answer::No => Err(refused("the user did not confirm the take-over")),
            orders::Answer::AskLater => Err(refused(
                "this server asks for this confirmation only through elicitation requests, which \
                 2026-07-28 clients do not take",
            )),
            orders::Answer::Unavailable => Err(refused("this client cannot ask the user")),
        }
    }

    /// Makes sure the account book knows the login's accounts before a write that names some.
    async fn ensure_account_book(&self, args: &serde_json::Map<String, serde_json::Value>) {
        let policy = &self.state.policy;
        if policy::accounts_in(args).is_empty() {
            return;
        }
        if !policy.book().is_loaded() {
            // Learned by the policy as the reply passes the request guard.
            if let Err(e) = crate::ibkr::fetch_accounts(&self.state.client).await {
                tracing::info!(error = %e, "cannot read the account list");
            }
        }
        if policy.book().needs_portfolio()
            && let Err(e) = crate::ibkr::fetch_portfolio_accounts(&self.state.client).await
        {
            tracing::info!(error = %e, "cannot read the portfolio account list");
        }
    }

    /// The session a tool needs, with one recovery attempt (see `SessionManager::ensure_ready`).
    async fn ensure_session(&self, def: &ToolDef) -> Result<(), ToolError> {
        let Some(session) = &self.state.session else {
            return Ok(());
        };
        if !crate::ibkr::session::needs_brokerage_session(&def.path) {
            return Ok(());
        }
        session
            .ensure_ready(crate::ibkr::session::needs_accounts(&def.path))
            .await
            .map_err(|p| self.session_error(p))
    }

    /// The trading policy's checks; when one of its lookups finds the brokerage session gone,
    /// the session is recovered and the checks run once more.
    async fn check_policy(
        &self,
        def: &ToolDef,
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<policy::Reservation<'_>>, ToolError> {
        let state = &self.state;
        let op = def.operation_id.as_str();
        let refusal = match state.policy.check(op, args, &state.client).await {
            Ok(r) => return Ok(r),
            Err(r) => r,
        };
        let refused = |r: policy::Refusal| {
            tracing::info!(rule = r.rule, "refused by the trading policy");
            ToolError::PolicyRefused {
                rule: r.rule,
                message: r.message,
            }
        };
        let Some(session) = state.session.as_ref().filter(|_| refusal.session_lost) else {
            return Err(refused(refusal));
        };
        session.saw_unauthorized();
        session
            .ensure_ready(true)
            .await
            .map_err(|p| self.session_error(p))?;
        state
            .policy
            .check(op, args, &state.client)
            .await
            .map_err(refused)
    }

    /// The response for the end of a question chain, and the questions answered on the way.
    pub(super) fn chain_response(
        &self,
        def: &'static ToolDef,
        order: &str,
        outcome: orders::Outcome,
        mut notes: Vec<String>,
    ) -> Result<(CallToolResponse, Vec<serde_json::Value>), McpError> {
        let state = &self.state;
        Ok(match outcome {
            orders::Outcome::Done { reply, answered } => {
                notes.extend(answered.iter().map(|q| {
                    format!(
                        "IBKR asked ({}): {} — {}",
                        q["message_ids"],
                        q["text"].as_str().unwrap_or(""),
                        q["answer"].as_str().unwrap_or("")
                    )
                }));
                (
                    results::from_value(def, 200, reply, notes, state.results.max_result_bytes)
                        .into(),
                    answered,
                )
            }
            orders::Outcome::Waiting { question, answered } => (
                results::failure(&ToolError::QuestionPending {
                    order: order.to_string(),
                    reply_id: question.id,
                    text: question.text,
                    message_ids: question.message_ids,
                })
                .into(),
                answered,
            ),
            orders::Outcome::AskLater {
                question,
                answered,
                rounds,
            } => {
                let message = orders::question_message(order, &question.text);
                let handle = state.continuations.put(orders::Continuation::Question {
                    tool: def.name.clone(),
                    reply_id: question.id,
                    order: order.to_string(),
                    rounds,
                    answered: answered.clone(),
                    text: question.text,
                });
                let ask = orders::input_required(&message, handle)
                    .map_err(|e| McpError::internal_error(e, None))?;
                (ask.into(), answered)
            }
            orders::Outcome::Declined { question, answered } => (
                results::failure(&ToolError::Declined {
                    order: order.to_string(),
                    text: question.text,
                })
                .into(),
                answered,
            ),
            orders::Outcome::Failed { message, answered } => (
                results::failure(&ToolError::OrderChainFailed(message)).into(),
                answered,
            ),
        })
    }

    /// One generated call with the caller's body sent verbatim.
    async fn send(
        &self,
        def: &'static ToolDef,
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Reply, gateway::Error> {
        gateway::send(&self.state.client, &def.name, args).await
    }

    /// [`send`](Self::send); after a 401 (the brokerage session lapsed: timeout, a competing
    /// login, a gateway restart) the session is recovered and a read is sent once more. A write
    /// is never sent again: IBKR refused it with the 401, and the error says so. The error is
    /// returned separately when the call cannot succeed.
    async fn send_recovering(
        &self,
        def: &'static ToolDef,
        args: &serde_json::Map<String, serde_json::Value>,
        notes: &mut Vec<String>,
    ) -> (Result<Reply, gateway::Error>, Option<ToolError>) {
        let outcome = self.send(def, args).await;
        let unauthorized = outcome.as_ref().is_ok_and(|r| r.status == 401);
        let Some(session) = self.state.session.as_ref().filter(|_| unauthorized) else {
            return (outcome, None);
        };
        session.saw_unauthorized();
        let need_accounts = crate::ibkr::session::needs_accounts(&def.path);
        match session.ensure_ready(need_accounts).await {
            Ok(()) if def.read_only => {
                notes.push(if self.state.results.oauth {
                    "IBKR refused the OAuth signature (401); this server obtained a new live \
                     session token, checked the brokerage session and asked again."
                        .into()
                } else {
                    "The brokerage session had lapsed (IBKR answered 401); this server re-opened \
                     it and asked again."
                        .into()
                });
                (self.send(def, args).await, None)
            }
            Ok(()) if self.state.results.oauth => {
                let detail = outcome.as_ref().map_or_else(
                    |_| "(no message)".to_string(),
                    |r| crate::error::ibkr_message(&r.body),
                );
                (
                    outcome,
                    Some(ToolError::OAuthRefused { detail, sent: true }),
                )
            }
            Ok(()) => (
                outcome,
                Some(ToolError::SessionLapsed {
                    tool: def.name.clone(),
                }),
            ),
            Err(p) => (outcome, Some(self.session_error(p))),
        }
    }

    /// The orders of a call in words, with each contract's symbol when the gateway gives it.
    async fn describe_order(&self, args: &serde_json::Map<String, serde_json::Value>) -> String {
        let mut symbols = std::collections::HashMap::new();
        for order in policy::orders_in(args) {
            let Some(conid) = order.get("conid").and_then(crate::ibkr::market::number) else {
                continue;
            };
            let conid = conid as i64;
            if let std::collections::hash_map::Entry::Vacant(v) = symbols.entry(conid)
                && let Ok(facts) =
                    crate::ibkr::market::contract_facts(&self.state.client, conid).await
                && let Some(symbol) = facts.symbol
            {
                v.insert(symbol);
            }
        }
        orders::describe(args, &symbols)
    }

    /// Asks again while requested contracts have no values yet, within `--snapshot-wait`.
    /// Returns the final `outcome`'s 2xx body as JSON (`None` when it has none).
    async fn warm_up(
        &self,
        def: &'static ToolDef,
        args: &serde_json::Map<String, serde_json::Value>,
        outcome: &mut Result<Reply, gateway::Error>,
        notes: &mut Vec<String>,
    ) -> Option<Value> {
        let fields = quotes::requested(args);
        let asked = quotes::conids(args);
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(150);
        loop {
            let reply = outcome.as_ref().ok().and_then(|r| r.json().ok())?;
            let cold = quotes::cold(&reply, &asked, &fields);
            if let Some(session) = &self.state.session {
                for c in asked.iter().filter(|c| !cold.contains(c)) {
                    session.mark_warm(c);
                }
            }
            if cold.is_empty() {
                notes.extend(quotes::availability_notes(&reply));
                return Some(reply);
            }
            if started.elapsed() + pause > self.state.snapshot_wait {
                notes.extend(quotes::availability_notes(&reply));
                notes.push(format!(
                    "No market values yet for conid {} after {:.1} s: the gateway is still starting \
                     the market data subscription, or there is no market data permission for it. \
                     Ask again in a few seconds.",
                    cold.join(", "),
                    started.elapsed().as_secs_f64()
                ));
                return Some(reply);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(1));
            *outcome = self.send(def, args).await;
            if !outcome.as_ref().is_ok_and(Reply::is_success) {
                return None;
            }
        }
    }
}

/// The tool's input schema applied to `arguments`.
fn args_or_refusal(
    def: &'static ToolDef,
    arguments: Map<String, Value>,
) -> Result<Map<String, Value>, ToolError> {
    super::args::prepare(def, Some(arguments)).map_err(|problems| {
        tracing::info!(problems = problems.len(), "invalid arguments");
        ToolError::InvalidArguments {
            tool: def.name.clone(),
            problems,
            usage: results::usage(def),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    #[test]
    fn behaviours_are_looked_up_by_operation_and_most_operations_have_none() {
        let place = Behaviour::of(policy::PLACE_ORDERS);
        assert!(place.order && place.asks_questions() && !place.snapshot);
        assert_eq!(Behaviour::of(policy::MODIFY_ORDER), place);
        let reply = Behaviour::of(policy::REPLY_QUESTION);
        assert!(reply.question_reply && reply.asks_questions() && !reply.order);
        assert!(Behaviour::of(policy::PREVIEW_ORDERS).issues_preview_token);
        assert!(Behaviour::of(SNAPSHOT).snapshot);
        assert!(Behaviour::of(UNSUBSCRIBE_ALL).unsubscribes_all);
        let with_behaviour = super::super::catalog::all()
            .iter()
            .filter(|t| Behaviour::of(&t.operation_id) != Behaviour::default())
            .count();
        assert_eq!(
            with_behaviour, 6,
            "each behaviour's operation is a tool of this build"
        );
        assert_eq!(Behaviour::of("get_iserver_accounts"), Behaviour::default());
    }

    #[test]
    fn the_preview_token_is_taken_out_of_the_arguments_and_must_be_text() {
        let def = super::super::catalog::all()
            .iter()
            .find(|t| t.operation_id == policy::PLACE_ORDERS)
            .unwrap();
        let mut a = json!({"accountId": "DU1", "previewToken": "abc"})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(
            take_preview_token(def, &mut a).unwrap().as_deref(),
            Some("abc")
        );
        assert!(!a.contains_key(PREVIEW_TOKEN_ARG));
        assert_eq!(take_preview_token(def, &mut a).unwrap(), None);
        a.insert(PREVIEW_TOKEN_ARG.into(), json!(5));
        let e = take_preview_token(def, &mut a).unwrap_err();
        assert!(e.message().contains("must be a string"), "{}", e.message());
    }

    #[test]
    fn the_audit_summary_masks_accounts_and_cuts_on_a_character_boundary() {
        let long = "é".repeat(AUDIT_BODY_BYTES);
        let reply = Reply {
            operation_id: "x",
            status: 200,
            body: Bytes::from(json!({"acctId": "U1234567", "text": long}).to_string()),
            content_type: None,
            elapsed: std::time::Duration::ZERO,
            cached: None,
            mismatch: None,
        };
        let (status, text) = reply_summary(&reply, None);
        assert_eq!(status, 200);
        assert!(!text.contains("U1234567"), "{}", &text[..60]);
        assert!(text.ends_with('…'));
        assert!(text.len() <= AUDIT_BODY_BYTES + '…'.len_utf8());
        // The value the call path already parsed gives the same summary, and is not masked in
        // place (the result still shows the account).
        let parsed: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(reply_summary(&reply, Some(&parsed)), (status, text));
        assert_eq!(parsed["acctId"], "U1234567");
    }
}
