//! The tool catalog: every tool this build can offer (from `OUT_DIR/tools.json`, written by
//! `build.rs` from `spec/tools.toml` and the repaired document), the toolsets, and the filter
//! that decides which tools a server exposes.
//!
//! Filter order, applied to the whole catalog:
//! 1. **read-only**: tools that change anything are removed unless trading is allowed; nothing
//!    later can bring them back;
//! 2. **toolsets**: only tools of the selected toolsets remain (`default`, `all` or a list);
//! 3. **include**: tools named with `--tools` are added back from other toolsets (still subject
//!    to step 1);
//! 4. **exclude**: tools named with `--exclude-tools` are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::Value;

pub use crate::spec::model::{ArgLocation, Method, ReplyKind, ToolArg, ToolDef, Unavailable};

/// A toolset: tools that belong together, selected as a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Toolset {
    /// Identifier used in `--toolsets`.
    pub id: &'static str,
    /// One line about it.
    pub description: &'static str,
    /// Whether `default` includes it.
    pub default: bool,
}

/// Every toolset, in the order they are documented.
pub const TOOLSETS: &[Toolset] = &[
    Toolset {
        id: super::tasks::TOOLSET,
        description: "What a trader asks, one call each: accounts, positions, orders, trades, quotes and history by symbol, options, futures, scans, performance, watchlists, alerts",
        default: true,
    },
    Toolset {
        id: super::tasks::LIVE_TOOLSET,
        description: "Waiting on IBKR's live stream (an order's next change, a price crossing a level), for clients that do not subscribe to the live resources",
        default: false,
    },
    Toolset {
        id: "session",
        description: "Gateway and brokerage session: auth status, keep-alive, re-authentication",
        default: false,
    },
    Toolset {
        id: "accounts",
        description: "Brokerage accounts, account summaries, P&L and allocation groups",
        default: false,
    },
    Toolset {
        id: "portfolio",
        description: "Portfolio accounts, positions, ledger, allocation and summary",
        default: false,
    },
    Toolset {
        id: "contracts",
        description: "Find contracts (conids) by symbol or name; contract details, rules, schedules",
        default: false,
    },
    Toolset {
        id: "market_data",
        description: "Snapshots (quotes) and historical bars",
        default: false,
    },
    Toolset {
        id: "orders",
        description: "Live orders, order status and trades; previews; placing, modifying and cancelling orders",
        default: false,
    },
    Toolset {
        id: "alerts",
        description: "Price and condition alerts",
        default: false,
    },
    Toolset {
        id: "watchlists",
        description: "Watchlists",
        default: false,
    },
    Toolset {
        id: "scanner",
        description: "Market scanners",
        default: false,
    },
    Toolset {
        id: "fyi",
        description: "FYI notifications and their settings",
        default: false,
    },
    Toolset {
        id: "portfolio_analyst",
        description: "Portfolio Analyst performance and transaction history",
        default: false,
    },
];

/// Every tool this build offers: the allowlist's, in its order, then the server's own
/// ([`server_tools`]).
pub fn all() -> &'static [ToolDef] {
    static TABLE: LazyLock<Vec<ToolDef>> = LazyLock::new(|| {
        let table: crate::spec::model::ToolTable =
            serde_json::from_str(include_str!(concat!(env!("OUT_DIR"), "/tools.json")))
                .expect("build.rs writes a valid tools.json");
        let mut tools = table.tools;
        tools.extend(server_tools());
        tools
    });
    &TABLE
}

/// The name of the session status tool.
pub const SESSION_STATUS_TOOL: &str = "get_session_status";

/// Tools the server answers itself, without a gateway operation (their `operation_id` is empty):
/// the session status and the task tools.
pub fn server_tools() -> Vec<ToolDef> {
    let mut tools = super::tasks::defs();
    tools.push(ToolDef {
        name: SESSION_STATUS_TOOL.into(),
        operation_id: String::new(),
        method: None,
        path: String::new(),
        toolset: super::tasks::TOOLSET.into(),
        read_only: true,
        destructive: false,
        idempotent: true,
        open_world: false,
        description: "Returns this server's view of the gateway session without calling IBKR: \
                      state (ready, not_authenticated, competing, logged_out, gateway_down), what \
                      it means and what to do, the login page, accounts loaded, suppressed \
                      question ids and recent transitions. Call it when tools report session \
                      problems."
            .into(),
        input_schema: serde_json::json!({
            "type": "object",
            "properties": {},
            "additionalProperties": false
        }),
        // Two shapes: the session manager's status, or a direct probe without one.
        output_schema: Some(serde_json::json!({
            "type": "object",
            "properties": {
                "state": { "type": "string" },
                "explanation": { "type": "string" },
                "ready": { "type": "boolean" },
                "accounts": { "type": "array", "items": { "type": "string" } },
                "login_url": { "type": "string" },
                "kill_switch": { "type": "object" },
            },
        })),
        args: Vec::new(),
        rust_method: String::new(),
        response_type: String::new(),
        reply: ReplyKind::Json,
    });
    tools
}

/// Whether the server answers `def` itself.
pub fn is_server_tool(def: &ToolDef) -> bool {
    def.operation_id.is_empty()
}

/// Allowlisted tools the document this binary was built from cannot provide.
pub fn unavailable() -> Vec<Unavailable> {
    let table: crate::spec::model::ToolTable =
        serde_json::from_str(include_str!(concat!(env!("OUT_DIR"), "/tools.json")))
            .expect("build.rs writes a valid tools.json");
    table.unavailable
}

/// Operations that switch IBKR's order questions off or back on for the session. They remove
/// (or restore) the human's checkpoint, so they are served only when the user allows it.
pub const QUESTION_SUPPRESSION: &[&str] = &[
    "post_iserver_questions_suppress",
    "post_iserver_questions_suppress_reset",
];

/// Which tools to expose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Expose tools that change anything (orders, alerts, watchlists, settings, logout).
    pub allow_trading: bool,
    /// Expose the tools that suppress order questions (and reset that), with trading.
    pub allow_question_suppression: bool,
    /// Toolset ids, or `default` / `all`.
    pub toolsets: Vec<String>,
    /// Tools added by name.
    pub include: Vec<String>,
    /// Tools removed by name.
    pub exclude: Vec<String>,
}

impl Default for Filter {
    fn default() -> Self {
        Self {
            allow_trading: false,
            allow_question_suppression: false,
            toolsets: vec!["default".into()],
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

/// The tools a server exposes, ready for `tools/list`.
#[derive(Debug, Clone)]
pub struct Inventory {
    tools: Vec<(&'static ToolDef, Arc<Tool>)>,
    by_name: BTreeMap<&'static str, usize>,
    toolsets: Vec<&'static str>,
    hidden_writes: BTreeSet<&'static str>,
    hidden_suppression: BTreeSet<&'static str>,
    excluded: BTreeSet<String>,
}

impl Inventory {
    /// Applies `filter` (in the documented order) to `catalog`. Unknown toolset or tool names
    /// are errors that name the valid ones.
    pub fn new(catalog: &'static [ToolDef], filter: &Filter) -> Result<Self, String> {
        let known: BTreeSet<&str> = catalog.iter().map(|t| t.name.as_str()).collect();
        for name in filter.include.iter().chain(&filter.exclude) {
            if !known.contains(name.as_str()) {
                return Err(format!(
                    "unknown tool `{name}` in --tools/--exclude-tools (IBKR_MCP_TOOLS / \
                     IBKR_MCP_EXCLUDE_TOOLS); `ibkr-mcp tools` lists every tool"
                ));
            }
        }
        let selected = selected_toolsets(&filter.toolsets)?;
        let mut hidden_writes = BTreeSet::new();
        let mut hidden_suppression = BTreeSet::new();
        let tools: Vec<(&'static ToolDef, Arc<Tool>)> = catalog
            .iter()
            .filter(|t| {
                // 1. read-only (and the human's checkpoint)
                if !t.read_only && !filter.allow_trading {
                    hidden_writes.insert(t.name.as_str());
                    return false;
                }
                if QUESTION_SUPPRESSION.contains(&t.operation_id.as_str())
                    && !filter.allow_question_suppression
                {
                    hidden_suppression.insert(t.name.as_str());
                    return false;
                }
                true
            })
            .filter(|t| {
                // 2. toolsets, 3. include
                selected.contains(t.toolset.as_str())
                    || filter.include.contains(&t.name)
                    || (selected.contains(super::tasks::TOOLSET)
                        && super::tasks::COMPANIONS.contains(&t.name.as_str()))
            })
            // 4. exclude
            .filter(|t| !filter.exclude.contains(&t.name))
            .map(|t| (t, Arc::new(to_mcp_tool(t))))
            .collect();
        let by_name = tools
            .iter()
            .enumerate()
            .map(|(i, (t, _))| (t.name.as_str(), i))
            .collect();
        Ok(Self {
            tools,
            by_name,
            toolsets: selected.into_iter().collect(),
            hidden_writes,
            hidden_suppression,
            excluded: filter.exclude.iter().cloned().collect(),
        })
    }

    /// Adds a required string argument to an exposed tool's input schema (arguments the server
    /// itself consumes, such as place_orders' preview token).
    pub fn add_argument(&mut self, tool: &str, name: &str, description: &str) {
        let Some(&i) = self.by_name.get(tool) else {
            return;
        };
        let mut t = (*self.tools[i].1).clone();
        let mut schema = (*t.input_schema).clone();
        if let Some(Value::Object(props)) = schema.get_mut("properties") {
            props.insert(
                name.to_string(),
                serde_json::json!({ "type": "string", "description": description }),
            );
        }
        match schema.get_mut("required") {
            Some(Value::Array(req)) => req.push(Value::String(name.to_string())),
            _ => {
                schema.insert("required".into(), serde_json::json!([name]));
            }
        }
        t.input_schema = Arc::new(schema);
        self.tools[i].1 = Arc::new(t);
    }

    /// Whether the user removed tool `name` with `--exclude-tools` (a task tool does not call
    /// a generated tool the user removed).
    pub fn excludes(&self, name: &str) -> bool {
        self.excluded.contains(name)
    }

    /// The exposed tools as MCP sees them.
    pub fn mcp_tools(&self) -> Vec<Tool> {
        self.tools.iter().map(|(_, t)| (**t).clone()).collect()
    }

    /// An exposed tool by name.
    pub fn get(&self, name: &str) -> Option<&'static ToolDef> {
        self.by_name.get(name).map(|&i| self.tools[i].0)
    }

    /// The MCP form of an exposed tool.
    pub fn get_mcp(&self, name: &str) -> Option<Tool> {
        self.by_name.get(name).map(|&i| (*self.tools[i].1).clone())
    }

    /// Why a known tool that changes anything is not served, as the refusal a call gets.
    pub fn hidden_refusal(&self, name: &str) -> Option<crate::error::ToolError> {
        if self.hidden_writes.contains(name) {
            return Some(crate::error::ToolError::TradingDisabled {
                tool: name.to_string(),
            });
        }
        self.hidden_suppression
            .contains(name)
            .then(|| crate::error::ToolError::PolicyRefused {
                rule: "question_suppression",
                message: format!(
                    "`{name}` would switch IBKR's order questions (the warnings a person \
                     confirms) on or off for the whole session, and this server does not let a \
                     model do that. The user can allow it with --allow-question-suppression \
                     (IBKR_MCP_ALLOW_QUESTION_SUPPRESSION), or suppress chosen ids at start with \
                     --suppress-question-ids."
                ),
            })
    }

    /// Number of exposed tools.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// Whether no tool is exposed.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// The selected toolsets.
    pub fn toolsets(&self) -> &[&'static str] {
        &self.toolsets
    }

    /// Exposed tool definitions.
    pub fn defs(&self) -> impl Iterator<Item = &'static ToolDef> + '_ {
        self.tools.iter().map(|(d, _)| *d)
    }
}

fn selected_toolsets(list: &[String]) -> Result<BTreeSet<&'static str>, String> {
    let mut out = BTreeSet::new();
    for raw in list {
        let id = raw.trim();
        match id {
            "" => {}
            "all" => out.extend(TOOLSETS.iter().map(|t| t.id)),
            "default" => out.extend(TOOLSETS.iter().filter(|t| t.default).map(|t| t.id)),
            _ => match TOOLSETS.iter().find(|t| t.id == id) {
                Some(t) => {
                    out.insert(t.id);
                }
                None => {
                    let valid: Vec<&str> = TOOLSETS.iter().map(|t| t.id).collect();
                    return Err(format!(
                        "unknown toolset `{id}` in --toolsets (IBKR_MCP_TOOLSETS); valid: default, \
                         all, {}",
                        valid.join(", ")
                    ));
                }
            },
        }
    }
    Ok(out)
}

/// The MCP `Tool` for a definition: name, description, input and output schemas, annotations.
pub fn to_mcp_tool(def: &ToolDef) -> Tool {
    let input: JsonObject = match &def.input_schema {
        Value::Object(m) => m.clone(),
        _ => JsonObject::new(),
    };
    let mut tool = Tool::new(def.name.clone(), def.description.clone(), Arc::new(input))
        .with_annotations(annotations(def));
    if let Some(Value::Object(out)) = &def.output_schema {
        tool = tool.with_raw_output_schema(Arc::new(out.clone()));
    }
    tool
}

/// The tool's hints, only where they differ from MCP's defaults (not read-only, destructive,
/// not idempotent, open world): what a client assumes without them is then what is true, and
/// every conversation pays for fewer tokens. Destructive and idempotent mean something only
/// for a tool that is not read-only.
fn annotations(def: &ToolDef) -> ToolAnnotations {
    let mut a = ToolAnnotations::new();
    if def.read_only {
        a = a.read_only(true);
    } else {
        if !def.destructive {
            a = a.destructive(false);
        }
        if def.idempotent {
            a = a.idempotent(true);
        }
    }
    if !def.open_world {
        a = a.open_world(false);
    }
    a
}

/// `read-only`, `write` or `destructive`.
pub fn access(def: &ToolDef) -> &'static str {
    if def.read_only {
        "read-only"
    } else if def.destructive {
        "destructive"
    } else {
        "write"
    }
}

/// The README's tools table (Markdown), grouped by toolset in documentation order.
pub fn markdown_table(tools: &[ToolDef]) -> String {
    let mut s = String::from(
        "| toolset | tool | access | IBKR endpoint | what it does |\n|---|---|---|---|---|\n",
    );
    for set in TOOLSETS {
        for t in tools.iter().filter(|t| t.toolset == set.id) {
            s.push_str(&format!(
                "| {}{} | `{}` | {} | {} | {} |\n",
                set.id,
                if set.default { " (default)" } else { "" },
                t.name,
                access(t),
                if super::tasks::is_task(t) {
                    "(composes IBKR requests)".to_string()
                } else if is_server_tool(t) {
                    "(answered by this server)".to_string()
                } else {
                    format!("`{} {}`", t.method.map_or("", Method::as_str), t.path)
                },
                t.description.replace('|', "\\|")
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(inv: &Inventory) -> BTreeSet<String> {
        inv.defs().map(|d| d.name.clone()).collect()
    }

    #[test]
    fn default_filter_exposes_only_read_only_tools_of_default_toolsets() {
        let inv = Inventory::new(all(), &Filter::default()).unwrap();
        assert!(!inv.is_empty());
        for d in inv.defs() {
            assert!(d.read_only, "{} is a write", d.name);
            assert!(
                TOOLSETS.iter().any(|t| t.id == d.toolset && t.default),
                "{} is not in a default toolset",
                d.name
            );
        }
        assert_eq!(
            inv.hidden_refusal("place_orders").unwrap().kind(),
            "trading_disabled"
        );
        assert!(inv.get("place_orders").is_none());
    }

    #[test]
    fn read_only_wins_over_include() {
        let filter = Filter {
            include: vec!["place_orders".into(), "list_alerts".into()],
            ..Filter::default()
        };
        let inv = Inventory::new(all(), &filter).unwrap();
        assert!(inv.get("place_orders").is_none());
        assert!(inv.get("list_alerts").is_some());
    }

    #[test]
    fn exclude_wins_over_toolsets_and_include() {
        let filter = Filter {
            allow_trading: true,
            allow_question_suppression: true,
            toolsets: vec!["all".into()],
            include: vec!["cancel_iserver_order".into()],
            exclude: vec!["cancel_iserver_order".into()],
        };
        let inv = Inventory::new(all(), &filter).unwrap();
        assert_eq!(inv.len(), all().len() - 1);
        assert!(!names(&inv).contains("cancel_iserver_order"));
    }

    #[test]
    fn question_suppression_needs_its_own_switch() {
        let trading = Filter {
            allow_trading: true,
            toolsets: vec!["all".into()],
            ..Filter::default()
        };
        let inv = Inventory::new(all(), &trading).unwrap();
        for name in [
            "suppress_order_questions",
            "reset_order_question_suppression",
        ] {
            assert!(inv.get(name).is_none(), "{name} served without the switch");
            assert_eq!(inv.hidden_refusal(name).unwrap().kind(), "policy_refused");
        }
        assert!(inv.get("place_orders").is_some());
        let allowed = Filter {
            allow_question_suppression: true,
            ..trading
        };
        let inv = Inventory::new(all(), &allowed).unwrap();
        assert!(inv.get("suppress_order_questions").is_some());
    }

    #[test]
    fn unknown_toolset_or_tool_is_an_error_naming_valid_ones() {
        let e = Inventory::new(
            all(),
            &Filter {
                toolsets: vec!["ordres".into()],
                ..Filter::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("ordres") && e.contains("market_data"), "{e}");
        let e = Inventory::new(
            all(),
            &Filter {
                exclude: vec!["nope".into()],
                ..Filter::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("`nope`"), "{e}");
    }

    #[test]
    fn every_catalog_toolset_is_known() {
        for d in all() {
            assert!(
                TOOLSETS.iter().any(|t| t.id == d.toolset),
                "{} has unknown toolset {}",
                d.name,
                d.toolset
            );
        }
    }
}
