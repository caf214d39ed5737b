//! The MCP server: [`IbkrServer`] implements rmcp's `ServerHandler` over the tool inventory.
//!
//! It owns what the model sees (tools, instructions) and the path of a tool call: look the tool
//! up, check the arguments against its schema, call the generated client (through the hooks
//! that capture the gateway's raw reply), and shape the result. It keeps no per-session state:
//! MCP 2026-07-28 clients are served statelessly, one handler per request, so everything lives
//! in the shared [`ServerState`].

pub mod args;
pub mod catalog;
pub mod dispatch;
pub mod results;

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use tracing::Instrument as _;

use crate::error::ToolError;
use crate::ibkr::{Client, hooks};
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
    /// Trading limits and preview tokens.
    pub policy: policy::Policy,
    /// Serving against the built-in simulator (`--demo`).
    pub demo: bool,
    /// Where write attempts are recorded.
    pub audit: std::sync::Arc<audit::AuditLog>,
}

impl ServerState {
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

    /// Runs one tool call to its result. Unknown tools are protocol errors; everything else,
    /// including gateway failures and policy refusals, is a tool result. Every attempt to use a
    /// tool that changes anything is recorded in the audit log before the result is returned.
    pub async fn call(
        &self,
        name: &str,
        arguments: Option<rmcp::model::JsonObject>,
    ) -> Result<rmcp::model::CallToolResult, McpError> {
        let state = &self.state;
        let started = std::time::Instant::now();
        let time = audit::now();
        let def = match state.inventory.get(name) {
            Some(def) => def,
            None => {
                let known = catalog::all().iter().find(|t| t.name == name);
                if state.inventory.is_hidden_write(name)
                    && let Some(def) = known
                {
                    let e = ToolError::TradingDisabled {
                        tool: name.to_string(),
                    };
                    let attempt = Attempt::refused(&e);
                    return Ok(self
                        .audited(
                            def,
                            &arguments,
                            time,
                            started,
                            attempt,
                            results::failure(&e),
                        )
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
        let span = tracing::info_span!("tool", tool = %def.name, toolset = %def.toolset);
        let audit_args = arguments.clone();
        let (attempt, result) = self.run(def, arguments).instrument(span.clone()).await?;
        if def.read_only {
            return Ok(result);
        }
        Ok(self
            .audited(def, &audit_args, time, started, attempt, result)
            .instrument(span)
            .await)
    }

    /// Records a write attempt; if that fails after the call went out, the result says so.
    async fn audited(
        &self,
        def: &ToolDef,
        arguments: &Option<rmcp::model::JsonObject>,
        time: String,
        started: std::time::Instant,
        attempt: Attempt,
        mut result: rmcp::model::CallToolResult,
    ) -> rmcp::model::CallToolResult {
        let mut masked = serde_json::Value::Object(arguments.clone().unwrap_or_default());
        audit::mask_accounts(&mut masked);
        let entry = audit::Entry {
            time,
            tool: def.name.clone(),
            operation: def.operation_id.clone(),
            arguments: masked,
            decision: attempt.decision,
            reason: attempt.reason,
            result: attempt.result,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        if let Err(e) = self.state.audit.record(entry).await {
            tracing::error!(error = %e, tool = %def.name, "audit log write failed");
            result.content.push(rmcp::model::ContentBlock::text(format!(
                "Warning: this call could not be recorded in the audit log ({e})."
            )));
        }
        result
    }

    /// Validates, checks the policy, sends, shapes. Returns what the audit log records.
    async fn run(
        &self,
        def: &'static ToolDef,
        arguments: Option<rmcp::model::JsonObject>,
    ) -> Result<(Attempt, rmcp::model::CallToolResult), McpError> {
        let state = &self.state;
        let refused = |e: ToolError| Ok((Attempt::refused(&e), results::failure(&e)));
        let mut arguments = arguments.unwrap_or_default();
        let preview_token =
            if def.operation_id == policy::PLACE_ORDERS && state.policy.limits().require_preview {
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
        let args = match args::prepare(def, Some(arguments)) {
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
        if !def.read_only {
            if !state.allow_trading {
                return refused(ToolError::TradingDisabled {
                    tool: def.name.clone(),
                });
            }
            if let Err(r) = state
                .policy
                .check(&def.operation_id, &args, &state.client)
                .await
            {
                tracing::info!(rule = r.rule, "refused by the trading policy");
                return refused(ToolError::PolicyRefused {
                    rule: r.rule,
                    message: r.message,
                });
            }
            if def.operation_id == policy::PLACE_ORDERS
                && state.policy.limits().require_preview
                && let Err(r) = state
                    .policy
                    .redeem_preview_token(preview_token.as_deref(), &args)
            {
                return refused(ToolError::PolicyRefused {
                    rule: r.rule,
                    message: r.message,
                });
            }
            if let Err(e) = state.audit.ensure_open().await {
                return refused(ToolError::AuditUnavailable(e));
            }
        }
        let mut logged = serde_json::Value::Object(args.clone());
        audit::mask_accounts(&mut logged);
        tracing::debug!(arguments = %logged, "calling");
        let body = args
            .get("body")
            .map(|b| bytes::Bytes::from(serde_json::to_vec(b).unwrap_or_default()));
        let mut call_args = dispatch::Args::new(args.clone());
        let (sent, record) = hooks::capture_with_body(
            body,
            dispatch::call_generated(&state.client, &def.name, &mut call_args),
        )
        .await;
        let sent = sent.ok_or_else(|| {
            McpError::internal_error(format!("tool `{}` has no generated call", def.name), None)
        })?;
        let reached_gateway = record.sent > 0;
        if reached_gateway
            && (def.operation_id == policy::PLACE_ORDERS
                || def.operation_id == policy::MODIFY_ORDER)
        {
            state.policy.record_sent(&args);
        }
        let reply_summary = record.reply.as_ref().map(|r| {
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
        let mut result = results::from_call(def, sent, record, &state.results);
        let is_error = result.is_error.unwrap_or(false);
        if def.operation_id == policy::PREVIEW_ORDERS
            && !is_error
            && state.policy.limits().require_preview
        {
            let token = state.policy.issue_preview_token(&args);
            result.content.push(rmcp::model::ContentBlock::text(format!(
                "Note: previewToken {token} — pass it as `{PREVIEW_TOKEN_ARG}` to place_orders \
                 with exactly this accountId and body, within {} s (single use).",
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
                serde_json::json!({ "status": status, "is_error": is_error, "body": body })
            }),
        };
        Ok((attempt, result))
    }
}

/// The extra argument of place_orders when previews are required.
pub const PREVIEW_TOKEN_ARG: &str = "previewToken";

/// Gateway bodies in the audit log are cut to this many bytes.
const AUDIT_BODY_BYTES: usize = 2048;

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
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
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

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        self.call(&request.name, request.arguments)
            .await
            .map(Into::into)
    }
}
