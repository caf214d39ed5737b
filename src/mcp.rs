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
use catalog::Inventory;

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
}

impl ServerState {
    /// The `instructions` returned by `initialize`: the workflow, in terms of the exposed tools.
    pub fn instructions(&self) -> String {
        let has = |n: &str| self.inventory.get(n).is_some();
        let mut s = String::from(
            "Interactive Brokers through the Client Portal Gateway (the IBKR Web API).\n",
        );
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

    /// Runs one tool call to its result. Unknown tools are protocol errors; everything else,
    /// including gateway failures, is a tool result.
    pub async fn call(
        &self,
        name: &str,
        arguments: Option<rmcp::model::JsonObject>,
    ) -> Result<rmcp::model::CallToolResult, McpError> {
        let state = &self.state;
        let Some(def) = state.inventory.get(name) else {
            if state.inventory.is_hidden_write(name) {
                return Ok(results::failure(&ToolError::TradingDisabled {
                    tool: name.to_string(),
                }));
            }
            let hint = catalog::all()
                .iter()
                .find(|t| t.name == name)
                .map(|t| {
                    format!(
                        " (it is in toolset `{}`, which this server does not enable: --toolsets / \
                         IBKR_MCP_TOOLSETS)",
                        t.toolset
                    )
                })
                .unwrap_or_default();
            return Err(McpError::invalid_params(
                format!("unknown tool `{name}`{hint}"),
                None,
            ));
        };
        let span = tracing::info_span!("tool", tool = %def.name, toolset = %def.toolset);
        async move {
            let args = match args::prepare(def, arguments) {
                Ok(a) => a,
                Err(problems) => {
                    tracing::info!(problems = problems.len(), "invalid arguments");
                    return Ok(results::failure(&ToolError::InvalidArguments {
                        tool: def.name.clone(),
                        problems,
                        usage: results::usage(def),
                    }));
                }
            };
            tracing::debug!(arguments = %serde_json::Value::Object(args.clone()), "calling");
            let body = args
                .get("body")
                .map(|b| bytes::Bytes::from(serde_json::to_vec(b).unwrap_or_default()));
            let mut args = dispatch::Args::new(args);
            let (sent, record) = hooks::capture_with_body(
                body,
                dispatch::call_generated(&state.client, &def.name, &mut args),
            )
            .await;
            let sent = sent.ok_or_else(|| {
                McpError::internal_error(format!("tool `{}` has no generated call", def.name), None)
            })?;
            let result = results::from_call(def, sent, record, &state.results);
            tracing::info!(
                is_error = result.is_error.unwrap_or(false),
                "tool call done"
            );
            Ok(result)
        }
        .instrument(span)
        .await
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
