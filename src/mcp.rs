//! The MCP server: [`IbkrServer`] implements rmcp's `ServerHandler` over the tool inventory.
//!
//! It owns what the model sees (tools, instructions) and the path of a tool call: look the tool
//! up, check the arguments against its schema, call the generated client (through the hooks
//! that capture the gateway's raw reply), and shape the result. It keeps no per-session state:
//! MCP 2026-07-28 clients are served statelessly, one handler per request, so everything lives
//! in the shared [`ServerState`].

pub mod args;
pub mod catalog;
pub mod halt;
pub mod orders;
pub mod quotes;
pub mod results;

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use tracing::Instrument as _;

use crate::error::ToolError;
use crate::ibkr::Client;
use crate::ibkr::gateway::{self, Reply};
use crate::{audit, policy};
use catalog::{Inventory, ToolDef};

/// Everything the handlers share.
#[derive(Debug)]
pub struct ServerState {
    /// The generated gateway client.
    pub client: Client,
    /// Exposed tools.
    pub inventory: Inventory,
    /// Settings results need.
    pub results: results::Context,
    /// Whether tools that change state may run.
    pub allow_trading: bool,
    /// Trading limits, preview tokens, the account book and the kill switch (also the
    /// request guard of the client).
    pub policy: Arc<policy::Policy>,
    /// Serving against the built-in simulator (`--demo`).
    pub demo: bool,
    /// The session manager (absent with `--session-keepalive false`).
    pub session: Option<std::sync::Arc<crate::ibkr::session::SessionManager>>,
    /// How order questions are answered.
    pub orders: orders::OrderSettings,
    /// How long the quote tool waits for a warming subscription.
    pub snapshot_wait: std::time::Duration,
    /// Questions waiting for an explicit confirmation.
    pub pending: orders::PendingQuestions,
    /// Calls waiting for a stateless client's human to answer.
    pub continuations: orders::Continuations,
    /// Ask the human (elicitation) before live orders.
    pub confirm_live_orders: bool,
    /// The user lets the brokerage session be taken over from a competing login.
    pub take_over_competing: bool,
    /// Where write attempts are recorded.
    pub audit: std::sync::Arc<audit::AuditLog>,
}

impl ServerState {
    /// Voids everything a write begun before now could still complete with: questions waiting
    /// for a reply, confirmations a stateless client would bring back, preview tokens (the kill
    /// switch was thrown).
    pub fn void_pending(&self) {
        self.pending.clear();
        self.continuations.clear();
        self.policy.clear_previews();
    }

    /// The `instructions` returned by `initialize`: the workflow, in terms of the exposed tools.
    pub fn instructions(&self) -> String {
        let has = |n: &str| self.inventory.get(n).is_some();
        let mut s = String::from(
            "Interactive Brokers through the Client Portal Gateway (the IBKR Web API).\n",
        );
        if self.demo {
            s.push_str(
                "DEMO MODE: the gateway is ibkr-mcp's built-in simulator: paper accounts and \
                 made-up prices; nothing reaches IBKR.\n",
            );
        }
        let mut step = 0;
        let mut line = |text: String| {
            step += 1;
            s.push_str(&format!("{step}. {text}\n"));
        };
        line(format!(
            "If a tool reports that the gateway is not authenticated, the user must log in at {} \
             (two-factor); {}",
            self.results.login_url,
            if has("get_auth_status") {
                "get_auth_status shows the session state."
            } else {
                "then retry."
            }
        ));
        if has("list_accounts") {
            line(
                "Call list_accounts first, once per session: it gives the account ids and \
                 IBKR requires it before order and some account tools work."
                    .into(),
            );
        }
        if has("search_contracts") {
            line(
                "Instruments are identified by conid. Find it with search_contracts (symbol or \
                 company name) before asking for market data, contract details or placing orders; \
                 never guess a conid."
                    .into(),
            );
        }
        if has("get_market_data_snapshot") {
            line(
                "Quotes: get_market_data_snapshot with conids and field codes (31 last, 84 bid, \
                 86 ask, 55 symbol, 7295 open, 70 high, 71 low, 87 volume). Values are strings."
                    .into(),
            );
        }
        if has("place_orders") {
            line(
                "Orders: preview with get_order_preview first, then place_orders. IBKR may answer \
                 with questions (warnings) that must be confirmed with reply_order_question \
                 before the order exists; check list_orders before re-sending anything."
                    .into(),
            );
        } else {
            line(
                "This server is read-only: it cannot place, modify or cancel orders or change \
                 settings (the user can allow it with --allow-trading)."
                    .into(),
            );
        }
        line(format!(
            "Large results are cut at {} bytes with a note saying how to narrow the request.",
            self.results.max_result_bytes
        ));
        s.push_str(&format!(
            "Toolsets enabled: {}.",
            self.inventory.toolsets().join(", ")
        ));
        s
    }
}

/// The MCP handler: cheap to clone, one per session or request.
#[derive(Debug, Clone)]
pub struct IbkrServer {
    state: Arc<ServerState>,
}

impl IbkrServer {
    /// A handler over shared state.
    pub fn new(state: Arc<ServerState>) -> Self {
        Self { state }
    }

    /// The tools this server lists.
    pub fn tools(&self) -> Vec<Tool> {
        self.state.inventory.mcp_tools()
    }

    /// Runs one tool call without a human to ask (see [`call_with`](Self::call_with)).
    pub async fn call(
        &self,
        name: &str,
        arguments: Option<rmcp::model::JsonObject>,
    ) -> Result<rmcp::model::CallToolResult, McpError> {
        match self
            .call_with(name, arguments, &orders::Human::default(), None)
            .await?
        {
            CallToolResponse::Complete(r) => Ok(r),
            _ => Err(McpError::internal_error(
                "a call without a human to ask asked for input",
                None,
            )),
        }
    }

    /// Runs one tool call to its result. Unknown tools are protocol errors; everything else,
    /// including gateway failures and policy refusals, is a tool result. Every attempt to use a
    /// tool that changes anything is recorded in the audit log: an intent line before anything
    /// is sent (nothing is sent if it cannot be written) and a result line before the result is
    /// returned. `human` is asked (elicitation) where a person must decide.
    /// `resume` carries a stateless client's answer (`requestState`, `inputResponses`) to an
    /// earlier `InputRequiredResult`.
    pub async fn call_with(
        &self,
        name: &str,
        arguments: Option<rmcp::model::JsonObject>,
        human: &orders::Human,
        resume: Option<(String, Option<rmcp::model::InputResponses>)>,
    ) -> Result<CallToolResponse, McpError> {
        let state = &self.state;
        let ctx = CallCtx::new();
        let def = match state.inventory.get(name) {
            Some(def) => def,
            None => {
                let known = catalog::all().iter().find(|t| t.name == name);
                if let Some(def) = known
                    && let Some(e) = state.inventory.hidden_refusal(name)
                {
                    let attempt = Attempt::refused(&e);
                    return Ok(self
                        .audited(def, &arguments, &ctx, attempt, results::failure(&e).into())
                        .await);
                }
                let hint = known
                    .map(|t| {
                        format!(
                            " (it is in toolset `{}`, which this server does not enable: \
                             --toolsets / IBKR_MCP_TOOLSETS)",
                            t.toolset
                        )
                    })
                    .unwrap_or_default();
                return Err(McpError::invalid_params(
                    format!("unknown tool `{name}`{hint}"),
                    None,
                ));
            }
        };
        if catalog::is_server_tool(def) {
            return Ok(self.server_tool(def, arguments).await.into());
        }
        let span = tracing::info_span!("tool", tool = %def.name, toolset = %def.toolset);
        let audit_args = arguments.clone();
        let (attempt, result) = match resume {
            // Boxed: these futures are large (every tool's generated call), and deep typed
            // deserialization needs the stack.
            Some((handle, responses)) => {
                Box::pin(self.resume(def, arguments, human, &handle, responses.as_ref(), &ctx))
                    .instrument(span.clone())
                    .await?
            }
            None => {
                Box::pin(self.run(def, arguments, human, false, &ctx))
                    .instrument(span.clone())
                    .await?
            }
        };
        if def.read_only {
            return Ok(result);
        }
        Ok(self
            .audited(def, &audit_args, &ctx, attempt, result)
            .instrument(span)
            .await)
    }

    /// The session status as JSON: the manager's view (checked again when it is more than a
    /// few seconds old), or a direct probe without one; plus the kill switch and what the
    /// policy knows about the login's accounts.
    pub async fn session_json(&self) -> serde_json::Value {
        let mut v = match &self.state.session {
            Some(s) => {
                s.refresh_if_older_than(STATUS_MAX_AGE).await;
                serde_json::to_value(s.status()).unwrap_or_default()
            }
            None => {
                let probe = crate::ibkr::probe(&self.state.client).await;
                let mut v = serde_json::to_value(probe).unwrap_or_default();
                v["session_manager"] = serde_json::Value::String(
                    "off (--session-keepalive false): nothing keeps this session alive".into(),
                );
                v
            }
        };
        let policy = &self.state.policy;
        if let Some(k) = policy.kill_switch() {
            v["kill_switch"] = match k.engaged() {
                Some(h) => serde_json::json!({
                    "engaged": true, "since": h.since, "reason": h.reason,
                    "cancel_orders": h.cancel_orders,
                    "meaning": "every tool that changes anything is refused; only the user can lift it (ibkr-mcp resume)",
                }),
                None => serde_json::json!({ "engaged": false }),
            };
        }
        if self.state.allow_trading {
            let (paper, live) = policy.book().summary();
            let mask = |l: Vec<String>| -> Vec<String> {
                l.iter().map(|a| crate::audit::mask_account(a)).collect()
            };
            v["trading_accounts"] = serde_json::json!({
                "paper": mask(paper),
                "live": mask(live),
                "live_allowed": policy.limits().allow_live,
            });
        }
        v
    }

    async fn server_tool(
        &self,
        def: &'static ToolDef,
        arguments: Option<rmcp::model::JsonObject>,
    ) -> rmcp::model::CallToolResult {
        if let Err(problems) = args::prepare(def, arguments) {
            return results::failure(&ToolError::InvalidArguments {
                tool: def.name.clone(),
                problems,
                usage: results::usage(def),
            });
        }
        match def.name.as_str() {
            catalog::SESSION_STATUS_TOOL => results::success(
                def,
                self.session_json().await,
                Vec::new(),
                self.state.results.max_result_bytes,
            ),
            other => results::failure(&ToolError::Internal(format!(
                "server tool `{other}` has no handler"
            ))),
        }
    }

    /// Records the result of a write attempt; if that fails after the call went out, the
    /// result says so.
    async fn audited(
        &self,
        def: &ToolDef,
        arguments: &Option<rmcp::model::JsonObject>,
        ctx: &CallCtx,
        attempt: Attempt,
        mut result: CallToolResponse,
    ) -> CallToolResponse {
        let mut masked = serde_json::Value::Object(arguments.clone().unwrap_or_default());
        audit::mask_accounts(&mut masked);
        let entry = audit::Entry {
            time: audit::now(),
            id: ctx.id.clone(),
            phase: "result",
            tool: def.name.clone(),
            operation: def.operation_id.clone(),
            arguments: masked,
            decision: attempt.decision,
            reason: attempt.reason,
            result: attempt.result,
            duration_ms: ctx.started.elapsed().as_millis() as u64,
        };
        if let Err(e) = self.state.audit.record(entry).await {
            tracing::error!(error = %e, tool = %def.name, "audit log write failed");
            if let CallToolResponse::Complete(r) = &mut result {
                r.content.push(rmcp::model::ContentBlock::text(format!(
                    "Warning: the outcome of this call could not be recorded in the audit log \
                     ({e}); its intent was recorded before it was sent."
                )));
            }
        }
        result
    }

    /// Writes the intent line of a write attempt, just before it is sent.
    async fn intent(
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
                tool: def.name.clone(),
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
    fn check_halt(&self) -> Result<(), ToolError> {
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

    /// Validates, authorizes (trading switch, kill switch, policy, preview token, human),
    /// ensures the session, records the intent, sends (recovering a lapsed session once), runs
    /// order questions and the snapshot pre-flight, shapes. Returns what the audit log records.
    async fn run(
        &self,
        def: &'static ToolDef,
        arguments: Option<rmcp::model::JsonObject>,
        human: &orders::Human,
        live_confirmed: bool,
        ctx: &CallCtx,
    ) -> Result<(Attempt, CallToolResponse), McpError> {
        let state = &self.state;
        let refused = |e: ToolError| Ok((Attempt::refused(&e), results::failure(&e).into()));
        let op = def.operation_id.as_str();
        let is_order = op == policy::PLACE_ORDERS || op == policy::MODIFY_ORDER;
        let mut arguments = arguments.unwrap_or_default();
        let preview_token = if is_order && state.policy.limits().require_preview {
            match arguments.remove(PREVIEW_TOKEN_ARG) {
                Some(serde_json::Value::String(t)) => Some(t),
                Some(_) => {
                    return refused(ToolError::InvalidArguments {
                        tool: def.name.clone(),
                        problems: vec![format!("`{PREVIEW_TOKEN_ARG}`: must be a string")],
                        usage: results::usage(def),
                    });
                }
                None => None,
            }
        } else {
            None
        };
        let mut args = match args::prepare(def, Some(arguments)) {
            Ok(a) => a,
            Err(problems) => {
                tracing::info!(problems = problems.len(), "invalid arguments");
                return refused(ToolError::InvalidArguments {
                    tool: def.name.clone(),
                    problems,
                    usage: results::usage(def),
                });
            }
        };
        let mut chain_from: Option<orders::Pending> = None;
        let mut reservation = None;
        if !def.read_only {
            if !state.allow_trading {
                return refused(ToolError::TradingDisabled {
                    tool: def.name.clone(),
                });
            }
            if let Err(e) = self.check_halt() {
                return refused(e);
            }
            if let Err(e) = self.confirm_take_over(def, &args, human).await {
                return refused(e);
            }
        }
        // The session comes before anything that talks to the gateway, the policy's lookups
        // included.
        if let Err(e) = self.ensure_session(def).await {
            return refused(e);
        }
        if !def.read_only {
            self.ensure_account_book(&args).await;
            if let Err(r) = state.policy.check_accounts(&policy::accounts_in(&args)) {
                return refused(ToolError::PolicyRefused {
                    rule: r.rule,
                    message: r.message,
                });
            }
            // The token before the policy's lookups: an unpreviewed order costs no request.
            if is_order
                && state.policy.limits().require_preview
                && let Err(r) =
                    state
                        .policy
                        .redeem_preview_token(preview_token.as_deref(), op, &args)
            {
                return refused(ToolError::PolicyRefused {
                    rule: r.rule,
                    message: r.message,
                });
            }
            reservation = match self.check_policy(def, &args).await {
                Ok(r) => r,
                Err(e) => return refused(e),
            };
            if op == policy::REPLY_QUESTION {
                let id = args.get("replyId").and_then(|v| v.as_str()).unwrap_or("");
                match state.pending.take(id) {
                    Some(p) => chain_from = Some(p),
                    None => {
                        return refused(ToolError::PolicyRefused {
                            rule: "reply_id",
                            message: format!(
                                "reply id `{id}` is not a question this server is waiting on (each \
                                 id comes from an order placed through this server, can be \
                                 answered once, and expires after 15 minutes). Check list_orders; \
                                 if the order is not there, place it again to get a fresh question."
                            ),
                        });
                    }
                }
            }
            if is_order
                && !live_confirmed
                && state.confirm_live_orders
                && policy::accounts_in(&args)
                    .iter()
                    .any(|a| !state.policy.is_paper(a))
                && human.can_ask()
            {
                let what = self.describe_order(&args).await;
                let message = format!("Send this order to a LIVE (real-money) account?\n\n{what}");
                match human.confirm(&message).await {
                    orders::Answer::Yes => {}
                    orders::Answer::AskLater => {
                        let handle = state.continuations.put(orders::Continuation::LiveOrder {
                            tool: def.name.clone(),
                            fingerprint: policy::fingerprint(&args),
                        });
                        let ask = orders::input_required(&message, handle)
                            .map_err(|e| McpError::internal_error(e, None))?;
                        return Ok((
                            Attempt {
                                decision: "refused",
                                reason: Some("waiting for the user to confirm a live order".into()),
                                result: None,
                            },
                            ask.into(),
                        ));
                    }
                    _ => {
                        return refused(ToolError::PolicyRefused {
                            rule: "human",
                            message: format!("the user did not confirm the live order {what}"),
                        });
                    }
                }
            }
            if let Err(e) = self.intent(def, &args, ctx).await {
                return refused(e);
            }
        }
        let is_snapshot = op == SNAPSHOT;
        if is_snapshot {
            quotes::with_availability(&mut args);
        }
        let mut logged = serde_json::Value::Object(args.clone());
        audit::mask_accounts(&mut logged);
        tracing::debug!(arguments = %logged, "calling");

        let mut notes = Vec::new();
        let (mut outcome, lapsed) = self.send_recovering(def, &args, &mut notes).await;
        if is_snapshot {
            self.warm_up(def, &args, &mut outcome, &mut notes).await;
        }
        let reached_gateway = match &outcome {
            Ok(_) => true,
            Err(e) => e.reached_gateway(),
        };
        if let Some(r) = reservation.take()
            && reached_gateway
        {
            r.keep();
        }
        if let (
            Some(session),
            Err(gateway::Error::Transport {
                kind: gateway::TransportKind::Connect,
                cause,
                ..
            }),
        ) = (&state.session, &outcome)
        {
            session.saw_unreachable(cause);
        }
        if op == UNSUBSCRIBE_ALL
            && let Some(session) = &state.session
        {
            session.forget_warm(None);
        }
        let reply_summary = outcome.as_ref().ok().map(|r| {
            let mut body =
                serde_json::from_slice::<serde_json::Value>(&r.body).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&r.body).into_owned())
                });
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
            (r.status, text)
        });

        // An order answered with a question: run the chain.
        let question_reply = (is_order || op == policy::REPLY_QUESTION)
            .then_some(outcome.as_ref().ok())
            .flatten()
            .and_then(|r| r.json().ok())
            .filter(|v| orders::question_in(v).is_some());
        let mut answered = Vec::new();
        let mut response: CallToolResponse = if let Some(e) = lapsed {
            results::failure(&e).into()
        } else if let Some(first) = question_reply {
            let (order, rounds) = match &chain_from {
                Some(p) => (p.order.clone(), p.rounds),
                None => (self.describe_order(&args).await, 0),
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
            let (r, a) = self.chain_response(def, &order, outcome, notes.clone())?;
            answered = a;
            r
        } else {
            let mut r = results::from_call(def, outcome, &state.results);
            r.content.extend(
                notes
                    .iter()
                    .map(|n| rmcp::model::ContentBlock::text(format!("Note: {n}"))),
            );
            r.into()
        };
        let CallToolResponse::Complete(result) = &mut response else {
            let attempt = Attempt {
                decision: if reached_gateway { "sent" } else { "refused" },
                reason: Some("IBKR asked a question; waiting for the user".into()),
                result: reply_summary.map(|(status, body)| {
                    serde_json::json!({ "status": status, "body": body, "questions": answered })
                }),
            };
            return Ok((attempt, response));
        };
        let is_error = result.is_error.unwrap_or(false);
        if op == policy::PREVIEW_ORDERS && !is_error && state.policy.limits().require_preview {
            let token = state.policy.issue_preview_token(op, &args);
            result.content.push(rmcp::model::ContentBlock::text(format!(
                "Note: previewToken {token} — pass it as `{PREVIEW_TOKEN_ARG}` to place_orders \
                 (or modify_order) with exactly this accountId and order, within {} s (single \
                 use).",
                state.policy.limits().preview_ttl.as_secs()
            )));
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
            decision: if reached_gateway { "sent" } else { "refused" },
            reason: error_text,
            result: reply_summary.map(|(status, body)| {
                let mut v =
                    serde_json::json!({ "status": status, "is_error": is_error, "body": body });
                if !answered.is_empty() {
                    v["questions"] = serde_json::Value::Array(answered.clone());
                }
                v
            }),
        };
        Ok((attempt, response))
    }

    /// The response for the end of a question chain, and the questions answered on the way.
    fn chain_response(
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

    /// Goes on with a call a stateless client repeated with the human's answer.
    async fn resume(
        &self,
        def: &'static ToolDef,
        arguments: Option<rmcp::model::JsonObject>,
        human: &orders::Human,
        handle: &str,
        responses: Option<&rmcp::model::InputResponses>,
        ctx: &CallCtx,
    ) -> Result<(Attempt, CallToolResponse), McpError> {
        let state = &self.state;
        let expired = |why: &str| {
            let e = ToolError::PolicyRefused {
                rule: "request_state",
                message: format!(
                    "{why}; nothing was sent. Check list_orders, then call the tool again if \
                     needed."
                ),
            };
            Ok((Attempt::refused(&e), results::failure(&e).into()))
        };
        match state.continuations.take(handle) {
            Some(orders::Continuation::LiveOrder { tool, fingerprint }) if tool == def.name => {
                let args = arguments.clone().unwrap_or_default();
                if orders::answer_in(responses) != orders::Answer::Yes {
                    return expired("the user did not confirm the live order");
                }
                if policy::fingerprint(&args) != fingerprint {
                    return expired("the order differs from the one the user confirmed");
                }
                Box::pin(self.run(def, arguments, human, true, ctx)).await
            }
            Some(orders::Continuation::Question {
                tool,
                reply_id,
                order,
                rounds,
                answered,
                text,
            }) if tool == def.name => {
                let yes = orders::answer_in(responses) == orders::Answer::Yes;
                if let Err(e) = self.check_halt() {
                    return Ok((Attempt::refused(&e), results::failure(&e).into()));
                }
                let mut intent = arguments.clone().unwrap_or_default();
                intent.insert("replyId".into(), reply_id.clone().into());
                intent.insert("confirmed".into(), yes.into());
                if let Err(e) = self.intent(def, &intent, ctx).await {
                    return Ok((Attempt::refused(&e), results::failure(&e).into()));
                }
                let mut answered = answered;
                answered.push(serde_json::json!({
                    "reply_id": reply_id, "text": text,
                    "answer": if yes { "confirmed by the user" } else { "declined by the user" }
                }));
                let outcome = match orders::reply(&state.client, &reply_id, yes).await {
                    Err(message) => orders::Outcome::Failed {
                        message,
                        answered: answered.clone(),
                    },
                    Ok(_) if !yes => orders::Outcome::Declined {
                        question: orders::Question {
                            id: reply_id.clone(),
                            text,
                            message_ids: Vec::new(),
                        },
                        answered: answered.clone(),
                    },
                    Ok(answer) => match orders::run_chain(
                        &state.client,
                        &state.orders,
                        &state.pending,
                        human,
                        &order,
                        answer,
                        rounds,
                    )
                    .await
                    {
                        orders::Outcome::Done { reply, answered: a } => orders::Outcome::Done {
                            reply,
                            answered: [answered.clone(), a].concat(),
                        },
                        other => other,
                    },
                };
                let (response, all) = self.chain_response(def, &order, outcome, Vec::new())?;
                let is_error = matches!(
                    &response,
                    CallToolResponse::Complete(r) if r.is_error == Some(true)
                );
                Ok((
                    Attempt {
                        decision: "sent",
                        reason: is_error
                            .then(|| "the order's question chain did not complete".into()),
                        result: Some(serde_json::json!({ "questions": all })),
                    },
                    response,
                ))
            }
            _ => expired("that confirmation is unknown, expired or already used"),
        }
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
                notes.push(
                    "The brokerage session had lapsed (IBKR answered 401); this server re-opened \
                     it and asked again."
                        .into(),
                );
                (self.send(def, args).await, None)
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
    async fn warm_up(
        &self,
        def: &'static ToolDef,
        args: &serde_json::Map<String, serde_json::Value>,
        outcome: &mut Result<Reply, gateway::Error>,
        notes: &mut Vec<String>,
    ) {
        let fields = quotes::requested(args);
        let asked = quotes::conids(args);
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(150);
        loop {
            let Some(reply) = outcome.as_ref().ok().and_then(|r| r.json().ok()) else {
                return;
            };
            let cold = quotes::cold(&reply, &asked, &fields);
            if let Some(session) = &self.state.session {
                for c in asked.iter().filter(|c| !cold.contains(c)) {
                    session.mark_warm(c);
                }
            }
            if cold.is_empty() {
                notes.extend(quotes::availability_notes(&reply));
                return;
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
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(1));
            *outcome = self.send(def, args).await;
            if !outcome.as_ref().is_ok_and(Reply::is_success) {
                return;
            }
        }
    }

    fn session_error(&self, p: crate::ibkr::session::Problem) -> ToolError {
        use crate::ibkr::session::Problem;
        let login_url = self.state.results.login_url.clone();
        match p {
            Problem::GatewayDown(detail) => ToolError::Unreachable {
                url: self.state.results.gateway_url.clone(),
                detail,
            },
            Problem::LoggedOut => ToolError::NotAuthenticated {
                login_url,
                detail: Some("nobody is logged in to the gateway".into()),
            },
            Problem::NotAuthenticated(detail) => ToolError::NotAuthenticated {
                login_url,
                detail: Some(format!(
                    "the gateway is logged in but the brokerage session could not be opened ({detail})"
                )),
            },
            Problem::Competing => ToolError::Competing {
                can_take_over: self.state.inventory.get(TAKE_OVER_TOOL).is_some(),
            },
        }
    }
}

/// The session resource's URI.
pub const SESSION_RESOURCE: &str = "ibkr://session";

/// The tool that opens (or takes over) the brokerage session.
pub const TAKE_OVER_TOOL: &str = "init_brokerage_session";
/// `get_session_status` checks the gateway again when its last look is older than this.
const STATUS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(5);
/// Operation of the quote tool.
pub const SNAPSHOT: &str = "get_iserver_marketdata_snapshot";
/// Operation that drops every market data subscription.
pub const UNSUBSCRIBE_ALL: &str = "get_iserver_marketdata_unsubscribeall";

/// The extra argument of place_orders when previews are required.
pub const PREVIEW_TOKEN_ARG: &str = "previewToken";

/// Gateway bodies in the audit log are cut to this many bytes.
const AUDIT_BODY_BYTES: usize = 2048;

/// One tool call's identity in the audit log: its id, when it started.
#[derive(Debug)]
struct CallCtx {
    id: String,
    started: std::time::Instant,
}

impl CallCtx {
    fn new() -> Self {
        Self {
            id: uuid::Uuid::new_v4().simple().to_string(),
            started: std::time::Instant::now(),
        }
    }
}

/// What the audit log records about one attempt.
#[derive(Debug)]
struct Attempt {
    decision: &'static str,
    reason: Option<String>,
    result: Option<serde_json::Value>,
}

impl Attempt {
    fn refused(e: &ToolError) -> Self {
        Self {
            decision: "refused",
            reason: Some(e.message()),
            result: None,
        }
    }
}

impl ServerHandler for IbkrServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(
            Implementation::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
                .with_title("Interactive Brokers (IBKR Web API)"),
        )
        .with_instructions(self.state.instructions())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(
            self.state.inventory.mcp_tools(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.state.inventory.get_mcp(name)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(SESSION_RESOURCE, "session")
                .with_title("IBKR gateway session")
                .with_description(
                    "The gateway session as this server sees it: state, what it means, what to do.",
                )
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        if request.uri != SESSION_RESOURCE {
            return Err(McpError::resource_not_found(
                format!(
                    "unknown resource `{}`; this server has {SESSION_RESOURCE}",
                    request.uri
                ),
                None,
            ));
        }
        let text = serde_json::to_string_pretty(&self.session_json().await).unwrap_or_default();
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(text, SESSION_RESOURCE).with_mime_type("application/json"),
        ])
        .into())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        use futures::FutureExt as _;
        let human = orders::Human::from_context(&context);
        let resume = request
            .request_state
            .clone()
            .map(|state| (state, request.input_responses.clone()));
        let name = request.name.clone();
        // A bug must not leave the client waiting for an answer that never comes.
        match std::panic::AssertUnwindSafe(self.call_with(
            &request.name,
            request.arguments,
            &human,
            resume,
        ))
        .catch_unwind()
        .await
        {
            Ok(response) => response,
            Err(_) => {
                tracing::error!(tool = %name, "tool call panicked");
                Err(McpError::internal_error(
                    format!(
                        "internal error in ibkr-mcp while running `{name}`; if it changes \
                         anything, check the current state (for orders: list_orders) before \
                         trying again"
                    ),
                    None,
                ))
            }
        }
    }
}
