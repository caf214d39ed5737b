//! The MCP tool allowlist (`spec/tools.toml`) against the generated client: one tool per trading
//! operation, names that show the read/write split, sane annotations, and every endpoint a user
//! of the reference Python server expects that exists in the pinned document.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ibkr_mcp::ibkr::operations::{self, OPERATIONS};
use ibkr_mcp::spec::normalize_template;
use serde::Deserialize;

const EXPECTED_TOOLS: usize = 95;

const TOOLSETS: &[&str] = &[
    "session",
    "accounts",
    "portfolio",
    "market_data",
    "contracts",
    "orders",
    "alerts",
    "watchlists",
    "scanner",
    "fyi",
    "portfolio_analyst",
];

const READ_PREFIXES: &[&str] = &["get_", "list_", "search_"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Allowlist {
    tool: Vec<Tool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tool {
    name: String,
    operation: String,
    toolset: String,
    read_only: bool,
    destructive: bool,
    idempotent: bool,
    description: Option<String>,
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Names of the tools for which `pred` holds.
fn tools_where(pred: impl Fn(&Tool) -> bool) -> Vec<String> {
    load_tools()
        .into_iter()
        .filter(|t| pred(t))
        .map(|t| t.name)
        .collect()
}

fn load_tools() -> Vec<Tool> {
    let path = manifest_dir().join("spec").join("tools.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let list: Allowlist =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{} is invalid: {e}", path.display()));
    list.tool
}

/// Paths of the pinned document that are not trading operations (gateway admin, OAuth, web
/// sockets).
fn is_trading_path(path: &str) -> bool {
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    !(under("/gw/api/v1")
        || under("/oauth")
        || under("/oauth2")
        || under("/acesws")
        || path == "/ws")
}

fn trading_operations() -> BTreeSet<&'static str> {
    OPERATIONS
        .iter()
        .filter(|op| is_trading_path(op.path))
        .map(|op| op.operation_id)
        .collect()
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn seed_path() -> PathBuf {
    manifest_dir()
        .join("..")
        .join("shared")
        .join("seed-endpoints.md")
}

/// `- METHOD /path` lines of the seed list.
fn seed_endpoints() -> Vec<(String, String)> {
    let path = seed_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("seed endpoint list {} is missing: {e}", path.display()));
    let endpoints: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("- ")?;
            let (method, path) = rest.split_once(' ')?;
            let path = path.trim();
            (method.chars().all(|c| c.is_ascii_uppercase()) && path.starts_with('/'))
                .then(|| (method.to_string(), path.to_string()))
        })
        .collect();
    assert!(
        !endpoints.is_empty(),
        "no `- METHOD /path` lines found in {}",
        path.display()
    );
    endpoints
}

#[test]
fn allowlist_count_is_one_tool_per_trading_operation() {
    let tools = load_tools();
    assert_eq!(
        tools.len(),
        EXPECTED_TOOLS,
        "spec/tools.toml must have one [[tool]] per trading operation ({EXPECTED_TOOLS}), found {}",
        tools.len()
    );
}

#[test]
fn allowlist_names_are_unique_and_valid() {
    let tools = load_tools();
    let invalid: Vec<&str> = tools
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| !valid_name(n))
        .collect();
    assert!(
        invalid.is_empty(),
        "tool names must match ^[a-z][a-z0-9_]{{0,63}}$: {invalid:?}"
    );
    let mut seen = BTreeMap::new();
    let mut duplicates = Vec::new();
    for t in &tools {
        if let Some(first) = seen.insert(t.name.as_str(), t.operation.as_str()) {
            duplicates.push(format!("{} ({first} and {})", t.name, t.operation));
        }
    }
    assert!(
        duplicates.is_empty(),
        "duplicate tool names: {duplicates:?}"
    );
}

#[test]
fn allowlist_operations_exist_in_generated_client() {
    let generated: BTreeSet<&str> = OPERATIONS.iter().map(|op| op.operation_id).collect();
    let tools = load_tools();
    let unknown: Vec<&str> = tools
        .iter()
        .map(|t| t.operation.as_str())
        .filter(|op| !generated.contains(op))
        .collect();
    assert!(
        unknown.is_empty(),
        "allowlisted operations the generated client does not have: {unknown:?}"
    );
}

#[test]
fn allowlist_operations_equal_generated_trading_operations() {
    let tools = load_tools();
    let mut listed = BTreeSet::new();
    let mut twice = Vec::new();
    for t in &tools {
        if !listed.insert(t.operation.as_str()) {
            twice.push(t.operation.as_str());
        }
    }
    assert!(
        twice.is_empty(),
        "operations listed by more than one tool: {twice:?}"
    );
    let trading = trading_operations();
    let missing: Vec<&&str> = trading.difference(&listed).collect();
    let extra: Vec<&&str> = listed.difference(&trading).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "spec/tools.toml must list exactly the generated trading operations;\n\
         missing (add a [[tool]]): {missing:?}\n\
         not trading operations (remove): {extra:?}"
    );
}

#[test]
fn allowlist_name_prefix_matches_read_only_flag() {
    let wrong: Vec<String> = load_tools()
        .iter()
        .filter(|t| READ_PREFIXES.iter().any(|p| t.name.starts_with(p)) != t.read_only)
        .map(|t| format!("{} (read_only = {})", t.name, t.read_only))
        .collect();
    assert!(
        wrong.is_empty(),
        "read-only tools must start with get_/list_/search_ and write tools must not: {wrong:?}"
    );
}

#[test]
fn allowlist_destructive_tool_is_not_read_only() {
    let wrong = tools_where(|t| t.destructive && t.read_only);
    assert!(
        wrong.is_empty(),
        "destructive tools cannot be read-only: {wrong:?}"
    );
}

#[test]
fn allowlist_read_only_tool_is_idempotent() {
    let wrong = tools_where(|t| t.read_only && !t.idempotent);
    assert!(
        wrong.is_empty(),
        "a read-only tool can be repeated safely, so it must be idempotent: {wrong:?}"
    );
}

#[test]
fn allowlist_toolset_is_known() {
    let wrong: Vec<String> = load_tools()
        .iter()
        .filter(|t| !TOOLSETS.contains(&t.toolset.as_str()))
        .map(|t| format!("{} ({})", t.name, t.toolset))
        .collect();
    assert!(
        wrong.is_empty(),
        "unknown toolsets (allowed: {TOOLSETS:?}): {wrong:?}"
    );
}

#[test]
fn open_world_is_true_exactly_for_the_tools_that_reach_ibkr() {
    let mut gateway_tools = 0;
    for def in ibkr_mcp::mcp::catalog::all() {
        let tool = ibkr_mcp::mcp::catalog::to_mcp_tool(def);
        // Absent means MCP's default: open world.
        let hint = tool
            .annotations
            .as_ref()
            .and_then(|a| a.open_world_hint)
            .unwrap_or(true);
        let generated = !ibkr_mcp::mcp::catalog::is_server_tool(def);
        let reaches_ibkr = generated || ibkr_mcp::mcp::tasks::is_task(def);
        assert_eq!(hint, reaches_ibkr, "{}", def.name);
        gateway_tools += usize::from(generated);
    }
    assert_eq!(gateway_tools, load_tools().len());
    assert!(
        ibkr_mcp::mcp::catalog::all().len() > gateway_tools,
        "a server tool is listed"
    );
}

#[test]
fn allowlist_description_when_present_is_not_empty() {
    let wrong = tools_where(|t| {
        t.description
            .as_deref()
            .is_some_and(|d| d.trim().is_empty())
    });
    assert!(
        wrong.is_empty(),
        "omit description instead of leaving it empty: {wrong:?}"
    );
}

#[test]
fn seed_endpoints_in_document_are_covered_by_tools() {
    let listed: BTreeSet<String> = load_tools().into_iter().map(|t| t.operation).collect();
    let mut absent = Vec::new();
    let mut uncovered = Vec::new();
    let seed = seed_endpoints();
    for (method, path) in &seed {
        let (method, path) = (method.as_str(), path.as_str());
        // The older server sometimes used another method for the same endpoint (GET /tickle,
        // POST in the document): the path decides, the method only when it matches.
        let found = operations::find(method, path).or_else(|| {
            ["GET", "POST", "PUT", "DELETE", "PATCH"]
                .iter()
                .find_map(|m| operations::find(m, path))
        });
        match found {
            None => absent.push(format!("{method} {path}")),
            Some(op) if !listed.contains(op.operation_id) => uncovered.push(format!(
                "{method} {path} ({}, normalized {})",
                op.operation_id,
                normalize_template(path)
            )),
            Some(_) => {}
        }
    }
    println!(
        "seed endpoints not in the pinned document ({}):",
        absent.len()
    );
    for e in &absent {
        println!("  {e}");
    }
    assert!(
        uncovered.is_empty(),
        "seed endpoints that exist in the document but have no tool: {uncovered:?}"
    );
    // Most of the list must be found, or a change of path normalization (or of the list's
    // format) would make every endpoint "absent" and this test pass on nothing.
    let found = seed.len() - absent.len();
    assert!(
        found * 3 >= seed.len() * 2,
        "only {found} of {} seed endpoints were found in the pinned document: {absent:?}",
        seed.len()
    );
}
