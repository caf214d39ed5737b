//! The MCP server: [`IbkrServer`] implements rmcp's `ServerHandler` over the tool inventory.
//!
//! It owns what the model sees (tools, instructions, the session resource) and the entry of a
//! tool call: look the tool up, run it through the stages of [`call`] (which reach IBKR only
//! through [`crate::ibkr::gateway`]), and write the audit result line. It keeps no per-session state:
//! MCP 2026-07-28 clients are served statelessly, one handler per request, so everything lives
//! in the shared [`ServerState`].

pub mod args;
pub mod call;
pub mod catalog;
pub mod halt;
pub mod live;
pub mod orders;
pub mod quotes;
pub mod results;
pub mod tasks;

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
    /// What the task tools remember: symbols resolved to conids, the login's accounts.
    pub tasks: tasks::Cache,
    /// Live events over IBKR's WebSocket (absent with `--live false`).
    pub live: Option<Arc<crate::live::Live>>,
    /// Least time between two notifications about one subscribed resource.
    pub coalesce: std::time::Duration,
}

impl ServerState {
    /// Voids everything a write begun before now could still complete with: questions waiting
    /// for a reply, confirmations a stateless client would bring back, preview tokens (the kill
    /// switch was thrown).
    pub fn void_pending(&self) {
        self.pending.clear();
        self.continuations.clear();
        self.policy.clear_previews();
        self.tasks.void_writes();
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
        if has("get_price_snapshot") {
            line(
                "Prefer the task tools (get_account_summary, get_account_positions, \
                 get_account_orders, get_account_trades, get_price_snapshot, get_price_history, \
                 search_contracts): they take symbols as a person writes them (AAPL, SPY@ARCA, ES \
                 Mar27, AAPL 2027-01-15 200 C) and answer with named numbers in one call."
                    .into(),
            );
        }
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
        if has("place_order") {
            line(
                "Orders by symbol: place_order (preview_order first to see cost, margin and \
                 IBKR's warnings), modify_order, cancel_order. IBKR's questions about an order \
                 go to the user, or come back with a reply id for reply_order_question; the \
                 order exists only once they are confirmed. Check get_account_orders before \
                 sending anything again."
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
        } else if !has("place_order") {
            line(
                "This server is read-only: it cannot place, modify or cancel orders or change \
                 settings (the user can allow it with --allow-trading)."
                    .into(),
            );
        }
        if self.live.is_some() {
            line(format!(
                "To follow orders, fills, P&L or a price as they change, subscribe to the \
                 resources ibkr://orders, ibkr://trades, ibkr://pnl or ibkr://quote/{{symbol}}{}.",
                if has("wait_for_order_update") {
                    "; or call wait_for_order_update / wait_for_price (at most 60 s each)"
                } else {
                    ""
                }
            ));
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
    /// This MCP session's resource subscriptions (2025-11-25 sessions; a 2026-07-28 client's
    /// live in its `subscriptions/listen` request).
    subs: live::Subscriptions,
}

impl IbkrServer {
    /// A handler over shared state.
    pub fn new(state: Arc<ServerState>) -> Self {
        Self {
            state,
            subs: live::Subscriptions::default(),
        }
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
        if tasks::is_write_task(def) {
            return Box::pin(self.write_task(def, arguments, human, resume)).await;
        }
        if catalog::is_server_tool(def) {
            return Ok(self.server_tool(def, arguments).await.into());
        }
        let span = tracing::info_span!("tool", tool = %def.name, toolset = %def.toolset);
        // Reads are not audited: only a write keeps a copy of its arguments for the log.
        let audit_args = if def.read_only {
            None
        } else {
            arguments.clone()
        };
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
        if let Some(live) = &self.state.live {
            v["live_events"] = serde_json::to_value(live.status()).unwrap_or_default();
        }
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
        let args = match args::prepare(def, arguments) {
            Ok(args) => args,
            Err(problems) => {
                return results::failure(&ToolError::InvalidArguments {
                    tool: def.name.clone(),
                    problems,
                    usage: results::usage(def),
                });
            }
        };
        match def.name.as_str() {
            catalog::SESSION_STATUS_TOOL => results::success(
                def,
                self.session_json().await,
                Vec::new(),
                self.state.results.max_result_bytes,
            ),
            _ if tasks::is_task(def) => Box::pin(self.task(def, args)).await,
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
            tool: ctx.tool_name(def),
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
                let mut args = arguments.clone().unwrap_or_default();
                // The confirmation was asked for the order without the server's own token.
                args.remove(PREVIEW_TOKEN_ARG);
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
                    Err(e) => orders::Outcome::Failed {
                        message: e.to_string(),
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

    fn session_error(&self, p: crate::ibkr::session::Problem) -> ToolError {
        use crate::ibkr::session::Problem;
        let login_url = self.state.results.login_url.clone();
        if self.state.results.oauth {
            match p {
                Problem::LoggedOut => {
                    return ToolError::OAuthRefused {
                        detail: self
                            .state
                            .session
                            .as_ref()
                            .and_then(|s| s.status().last_error)
                            .unwrap_or_else(|| "IBKR did not accept the OAuth credentials".into()),
                        sent: false,
                    };
                }
                // A 401 while opening it: IBKR refused the signature, not the session.
                Problem::NotAuthenticated(detail) if detail.contains("HTTP 401") => {
                    return ToolError::OAuthRefused {
                        detail: format!("the brokerage session could not be opened ({detail})"),
                        sent: false,
                    };
                }
                Problem::NotAuthenticated(detail) => {
                    return ToolError::Rejected {
                        status: 400,
                        message: format!(
                            "the brokerage session could not be opened ({detail}); this server \
                             keeps trying (ssodh/init, with backoff): call again in a minute, \
                             or read get_session_status"
                        ),
                    };
                }
                _ => {}
            }
        }
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

/// One tool call's identity in the audit log: its id, when it started.
#[derive(Debug)]
struct CallCtx {
    id: String,
    started: std::time::Instant,
    /// The task tool that planned this call (its preview token is the task's to hand out).
    via: Option<&'static str>,
    /// The order in words, as the task tool that planned it says it.
    words: Option<String>,
    /// A preview token issued during this call, for the task tool to hand out.
    preview_token: std::sync::Mutex<Option<String>>,
}

impl CallCtx {
    /// The tool as the audit log names it: a task tool's planned call as `task/generated`.
    fn tool_name(&self, def: &ToolDef) -> String {
        match self.via {
            Some(via) => format!("{via}/{}", def.name),
            None => def.name.clone(),
        }
    }

    fn new() -> Self {
        Self {
            id: uuid::Uuid::new_v4().simple().to_string(),
            started: std::time::Instant::now(),
            via: None,
            words: None,
            preview_token: std::sync::Mutex::new(None),
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
        let capabilities = if self.state.live.is_some() {
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .build()
        } else {
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build()
        };
        ServerConfig::new(capabilities)
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
        let json = |uri: &str, name: &str, title: &str, description: &str| {
            Resource::new(uri, name)
                .with_title(title)
                .with_description(description)
                .with_mime_type("application/json")
        };
        Ok(ListResourcesResult::with_all_items(vec![
            json(
                SESSION_RESOURCE,
                "session",
                "IBKR gateway session",
                "The gateway session as this server sees it: state, what it means, what to do.",
            ),
            json(
                live::ORDERS,
                "orders",
                "Orders",
                "Working and recent orders, and their status changes (subscribe: updates as IBKR \
                 reports them).",
            ),
            json(
                live::TRADES,
                "trades",
                "Executions today",
                "The day's fills (subscribe: each new fill).",
            ),
            json(
                live::PNL,
                "pnl",
                "P&L",
                "Daily and unrealized P&L, net liquidity per account (subscribe: changes).",
            ),
        ]))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourceTemplatesResult, McpError> {
        let template = |uri: &str, name: &str, title: &str, description: &str| {
            rmcp::model::ResourceTemplate::new(uri, name)
                .with_title(title)
                .with_description(description)
                .with_mime_type("application/json")
        };
        Ok(rmcp::model::ListResourceTemplatesResult::with_all_items(
            vec![
                template(
                    live::QUOTE_TEMPLATE,
                    "quote",
                    "Quote",
                    "One contract's quote: AAPL, SPY@ARCA, ES Mar27, AAPL 2027-01-15 200 C (URL-encode \
                 spaces), or a conid (subscribe: price changes).",
                ),
                template(
                    live::SUMMARY_TEMPLATE,
                    "account_summary",
                    "Account summary",
                    "One account's overview (subscribe: changes of its P&L).",
                ),
            ],
        ))
    }

    async fn subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if request.uri == SESSION_RESOURCE {
            return Err(McpError::invalid_params(
                format!(
                    "{SESSION_RESOURCE} cannot be subscribed to; read it, or call get_session_status"
                ),
                None,
            ));
        }
        self.subscribe_legacy(&request.uri, context.peer.clone())
            .await
            .map_err(|e| resource_error(&request.uri, &e))
    }

    async fn unsubscribe(
        &self,
        request: rmcp::model::UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.unsubscribe_legacy(&request.uri);
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &rmcp::model::SubscriptionFilter,
    ) -> Option<rmcp::model::SubscriptionFilter> {
        self.state.live.as_ref()?;
        let uris: Vec<String> = requested
            .resource_subscriptions
            .iter()
            .flatten()
            .filter(|u| live::parse(u).is_ok())
            .cloned()
            .collect();
        Some(
            rmcp::model::SubscriptionFilter::builder()
                .resource_subscriptions(uris)
                .build(),
        )
    }

    async fn listen(&self, context: rmcp::service::SubscriptionContext) -> Result<(), McpError> {
        self.listen_live(context).await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        if request.uri != SESSION_RESOURCE {
            let v = match live::parse(&request.uri) {
                Err(e) => {
                    return Err(McpError::resource_not_found(
                        format!("{e}; and {SESSION_RESOURCE}"),
                        None,
                    ));
                }
                Ok(_) => self
                    .read_live(&request.uri)
                    .await
                    .map_err(|e| resource_error(&request.uri, &e))?,
            };
            let text = serde_json::to_string(&v).unwrap_or_default();
            return Ok(ReadResourceResult::new(vec![
                ResourceContents::text(text, request.uri).with_mime_type("application/json"),
            ])
            .into());
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
        let call = self.call_with(&request.name, request.arguments, &human, resume);
        let call = async move {
            match live::Progress::of(&context) {
                Some(p) => live::PROGRESS.scope(p, call).await,
                None => call.await,
            }
        };
        // A bug must not leave the client waiting for an answer that never comes.
        match std::panic::AssertUnwindSafe(call).catch_unwind().await {
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

/// A live resource that cannot be read or streamed, as a protocol error that says why and what
/// to do. What the caller can fix (the symbol, the account) is said in the resource's terms.
fn resource_error(uri: &str, e: &ToolError) -> McpError {
    match e {
        ToolError::Unresolved { problems, .. } | ToolError::InvalidArguments { problems, .. } => {
            // `symbol`: … / `account`: … name the task's argument, which is the URI's part.
            let said: Vec<&str> = problems
                .iter()
                .map(
                    |p| match p.strip_prefix('`').and_then(|r| r.split_once("`: ")) {
                        Some((_, rest)) => rest,
                        None => p.as_str(),
                    },
                )
                .collect();
            McpError::invalid_params(format!("`{uri}`: {}", said.join("; ")), None)
        }
        ToolError::LiveUnavailable(_) => {
            McpError::invalid_request(format!("`{uri}`: {}", e.message()), None)
        }
        _ => McpError::internal_error(format!("`{uri}`: {}", e.message()), None),
    }
}
