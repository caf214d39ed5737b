//! Task tools: what a trader asks, answered in one call each.
//!
//! The generated tools mirror IBKR's endpoints; these take what a person says (a symbol, an
//! account, "a month of daily bars") and answer with named fields, numbers as JSON numbers and
//! times in ISO 8601 with the zone. They use the names of IBKR's own hosted MCP server where
//! the function matches (`get_account_summary`, `get_price_snapshot`, ...).
//!
//! Every gateway request they make is an operation of `spec/internal.toml`, sent through
//! [`crate::ibkr::gateway::call`] with the arguments checked against that operation's tool
//! schema and the client's path and pacing guards, exactly as a model's call of the generated
//! tool would be. So a task tool reaches nothing a generated tool could not, and an argument
//! cannot change which endpoint or account a request goes to: accounts are checked against
//! the login's own, symbols become conids through IBKR's search, and everything else is an
//! enumerated choice.

mod account;
mod derivatives;
mod lists;
mod market;
mod performance;
mod symbols;
mod trading;
mod waits;
mod writes;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rmcp::model::CallToolResult;
use serde_json::{Map, Value, json};

use super::IbkrServer;
use super::catalog::{ArgLocation, ReplyKind, ToolArg, ToolDef};
use super::results;
use crate::error::ToolError;
use crate::ibkr::LookupError;
use crate::live::id_text;

/// The toolset of the task tools.
pub const TOOLSET: &str = "tasks";
/// The toolset of the waiting tools (not in `default`: what every conversation pays for stays
/// within its budget; clients that subscribe to resources do not need them).
pub const LIVE_TOOLSET: &str = "live";

/// What the task tools remember between calls, shared by the server's sessions.
#[derive(Debug, Default)]
pub struct Cache {
    symbols: symbols::SymbolCache,
    accounts: account::AccountList,
    performance: performance::PaCache,
    writes: writes::Bindings,
}

impl Cache {
    /// Forgets every preview and every plan waiting for a human (the kill switch was thrown).
    pub fn void_writes(&self) {
        self.writes.clear();
    }

    /// Forgets what belongs to one login: its accounts and their performance.
    fn forget_login(&self) {
        self.accounts.clear();
        self.performance.clear();
    }
}

/// What a task tool answers: a JSON object and notes for the model.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    value: Value,
    notes: Vec<String>,
}

impl Answer {
    fn new(value: Value) -> Self {
        Self {
            value,
            notes: Vec::new(),
        }
    }
}

type TaskFuture<'a> = Pin<Box<dyn Future<Output = Result<Answer, ToolError>> + Send + 'a>>;
type PlanFuture<'a> = Pin<Box<dyn Future<Output = Result<writes::Plan, ToolError>> + Send + 'a>>;

/// What a task does.
#[derive(Clone, Copy)]
enum Run {
    /// Reads, and answers.
    Read(for<'a> fn(&'a Ctx<'a>) -> TaskFuture<'a>),
    /// Changes something: it plans calls of generated tools (after the lookups it needs), and
    /// each then takes the whole path of a write (trading switch, kill switch, policy, preview
    /// token, questions, audit). `destructive`: it cancels or deletes.
    Write {
        plan: for<'a> fn(&'a Ctx<'a>) -> PlanFuture<'a>,
        destructive: bool,
    },
}

/// A task tool's definition: its MCP face, and its handler.
struct Task {
    name: &'static str,
    description: &'static str,
    input: Value,
    output: Value,
    run: Run,
}

/// What a running task has: the server, its definition and its checked arguments.
pub(crate) struct Ctx<'a> {
    server: &'a IbkrServer,
    def: &'static ToolDef,
    args: &'a Map<String, Value>,
}

impl Ctx<'_> {
    fn client(&self) -> &crate::ibkr::Client {
        &self.server.state.client
    }

    fn str_arg(&self, name: &str) -> Option<&str> {
        self.args.get(name).and_then(Value::as_str)
    }

    /// Internal operation `op` with `args`: its 2xx JSON, or the error the model sees (`what`
    /// names the request in it).
    async fn fetch(
        &self,
        what: impl Into<String>,
        op: crate::ibkr::gateway::Op,
        args: Value,
    ) -> Result<Value, ToolError> {
        crate::ibkr::gateway::call_json(self.client(), what, op, args)
            .await
            .map_err(|e| self.lookup(e))
    }

    /// [`fetch`](Self::fetch), waiting once (up to 6 s) when this server's pacing guard held
    /// the request back: it was not sent, so asking again is not a retry. For lookups a task
    /// cannot answer without (a write's check of the working orders).
    async fn fetch_patiently(
        &self,
        what: &str,
        op: crate::ibkr::gateway::Op,
        args: Value,
    ) -> Result<Value, ToolError> {
        match self.fetch(what, op, args.clone()).await {
            Err(ToolError::Paced { retry_after, .. }) if retry_after <= Duration::from_secs(6) => {
                tokio::time::sleep(retry_after).await;
                self.fetch(what, op, args).await
            }
            other => other,
        }
    }

    /// An integer argument bounded by its schema: `default` when absent.
    fn count_arg(&self, name: &str, default: u64, max: u64) -> usize {
        self.args
            .get(name)
            .and_then(Value::as_u64)
            .unwrap_or(default)
            .clamp(1, max) as usize
    }

    /// A request the task made failed: the error the model sees.
    fn lookup(&self, e: LookupError) -> ToolError {
        let what = e.what.clone();
        match results::call_error(self.def, e.error, &self.server.state.results) {
            ToolError::Rejected { status, message } if !what.is_empty() => ToolError::Rejected {
                status,
                message: format!("{what}: {message}"),
            },
            ToolError::InvalidArguments { problems, .. } => ToolError::Internal(format!(
                "{what}: the server built a request IBKR's document refuses ({})",
                problems.join("; ")
            )),
            other => other,
        }
    }

    /// An argument the model can fix, found wrong after looking it up at IBKR.
    fn unresolved(&self, problem: impl Into<String>) -> ToolError {
        ToolError::Unresolved {
            tool: self.def.name.clone(),
            problems: vec![problem.into()],
            usage: results::usage(self.def),
        }
    }

    /// An argument the model can fix, found wrong before anything was sent.
    fn invalid(&self, problem: impl Into<String>) -> ToolError {
        ToolError::InvalidArguments {
            tool: self.def.name.clone(),
            problems: vec![problem.into()],
            usage: results::usage(self.def),
        }
    }
}

fn tasks() -> Vec<Task> {
    let mut t = account::tasks();
    t.extend(market::tasks());
    t.extend(derivatives::tasks());
    t.extend(performance::tasks());
    t.extend(lists::tasks());
    t.extend(trading::tasks());
    t.extend(waits::tasks());
    t
}

/// The task tools' definitions, for the catalog.
pub fn defs() -> Vec<ToolDef> {
    all().iter().map(to_def).collect()
}

fn to_def(t: &Task) -> ToolDef {
    let required: Vec<&str> = t.input["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let args = t.input["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, _)| ToolArg {
            name: name.clone(),
            // Nothing of a task's arguments is coerced: they are the server's own, not a URL's.
            location: ArgLocation::Body,
            required: required.contains(&name.as_str()),
            setter: String::new(),
            rust_type: String::new(),
        })
        .collect();
    let mut input = t.input.clone();
    if input.get("additionalProperties").is_none() {
        input["additionalProperties"] = json!(false);
    }
    let (read_only, destructive) = match t.run {
        Run::Read(_) => (true, false),
        Run::Write { destructive, .. } => (false, destructive),
    };
    ToolDef {
        name: t.name.into(),
        operation_id: String::new(),
        method: None,
        path: String::new(),
        toolset: if waits::NAMES.contains(&t.name) {
            LIVE_TOOLSET
        } else {
            TOOLSET
        }
        .into(),
        read_only,
        destructive,
        idempotent: read_only,
        open_world: true,
        description: t.description.into(),
        input_schema: input,
        output_schema: Some(t.output.clone()),
        args,
        rust_method: String::new(),
        response_type: String::new(),
        reply: ReplyKind::Json,
    }
}

/// Whether `def` is a task tool (one that composes gateway calls).
pub fn is_task(def: &ToolDef) -> bool {
    def.operation_id.is_empty() && all().iter().any(|t| t.name == def.name)
}

/// Whether `def` is a task tool that changes something.
pub fn is_write_task(def: &ToolDef) -> bool {
    def.operation_id.is_empty()
        && all()
            .iter()
            .any(|t| t.name == def.name && matches!(t.run, Run::Write { .. }))
}

/// Generated tools the task toolset serves beside its own: answering an order question that
/// the client could not put to its user.
pub const COMPANIONS: &[&str] = &["reply_order_question"];

/// Every task, built once.
fn all() -> &'static [Task] {
    static ALL: std::sync::LazyLock<Vec<Task>> = std::sync::LazyLock::new(tasks);
    &ALL
}

impl IbkrServer {
    /// Runs task tool `def` with arguments already checked against its input schema. A
    /// brokerage session that lapsed under it is re-opened and the task run once more (task
    /// tools only read).
    pub(super) async fn task(
        &self,
        def: &'static ToolDef,
        args: Map<String, Value>,
    ) -> CallToolResult {
        let Some(Run::Read(run)) = all().iter().find(|t| t.name == def.name).map(|t| t.run) else {
            return results::failure(&ToolError::Internal(format!(
                "task tool `{}` has no handler",
                def.name
            )));
        };
        let ctx = Ctx {
            server: self,
            def,
            args: &args,
        };
        let mut outcome = match self.task_session().await {
            Ok(()) => run(&ctx).await,
            Err(e) => Err(e),
        };
        if let (
            Err(ToolError::NotAuthenticated { .. } | ToolError::OAuthRefused { sent: true, .. }),
            Some(session),
        ) = (&outcome, &self.state.session)
        {
            session.saw_unauthorized();
            // A new brokerage session: the account list is read again (IBKR wants it read
            // before other /portfolio requests, and the login may be another one).
            self.state.tasks.forget_login();
            outcome = match session.ensure_ready(true).await {
                Ok(()) => run(&ctx).await.map(|mut a| {
                    a.notes.push(
                        "The brokerage session had lapsed (IBKR answered 401); this server \
                         re-opened it and asked again."
                            .into(),
                    );
                    a
                }),
                Err(p) => Err(self.session_error(p)),
            };
        }
        match outcome {
            Ok(a) => results::success(def, a.value, a.notes, self.state.results.max_result_bytes),
            Err(e) => results::failure(&e),
        }
    }

    /// Resolves a symbol as the task tools do (for the live resources).
    pub(crate) async fn resolve_symbol(&self, input: &str) -> Result<symbols::Resolved, ToolError> {
        let def = super::catalog::all()
            .iter()
            .find(|d| d.name == "get_price_snapshot")
            .ok_or_else(|| ToolError::Internal("get_price_snapshot is missing".into()))?;
        let args = Map::new();
        let ctx = Ctx {
            server: self,
            def,
            args: &args,
        };
        self.task_session().await?;
        ctx.resolve("symbol", input).await
    }

    /// Task tools use the brokerage session and the login's accounts.
    async fn task_session(&self) -> Result<(), ToolError> {
        match &self.state.session {
            Some(session) => session
                .ensure_ready(true)
                .await
                .map_err(|p| self.session_error(p)),
            None => Ok(()),
        }
    }
}

/// Milliseconds since the epoch as ISO 8601 in UTC (`2026-12-03T14:30:00Z`).
fn iso_ms(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// A number the gateway sent as a number or text, as a JSON number (or null).
pub(crate) fn num(v: Option<&Value>) -> Value {
    v.and_then(crate::ibkr::market::number)
        .map_or(Value::Null, |x| json!(round(x)))
}

/// Rounds away binary noise (`0.1 + 0.2`) without losing a price's ticks.
fn round(x: f64) -> f64 {
    (x * 1e8).round() / 1e8
}

/// Text or null.
pub(crate) fn text(v: Option<&Value>) -> Value {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Value::String(s.trim().to_string()),
        Some(Value::Number(n)) => Value::String(n.to_string()),
        _ => Value::Null,
    }
}

/// Rows of named values as a table: the column names once, then each row's values in that
/// order. A model reads it as easily as objects, for a fraction of the tokens.
fn table(columns: &[&str], rows: &[Value]) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            Value::Array(
                columns
                    .iter()
                    .map(|c| r.get(*c).cloned().unwrap_or(Value::Null))
                    .collect(),
            )
        })
        .collect();
    json!({ "columns": columns, "rows": rows })
}

/// The output schema of a [`table`], with `extra` properties beside it.
fn table_schema(extra: &[(&str, Value)]) -> Value {
    let mut props = extra.to_vec();
    props.push((
        "columns",
        json!({ "type": "array", "items": { "type": "string" } }),
    ));
    props.push((
        "rows",
        json!({ "type": "array", "items": { "type": "array" } }),
    ));
    object(&props)
}

/// An output schema: an object with `props`, each listed in `required`.
fn object(props: &[(&str, Value)]) -> Value {
    let mut o = row(props);
    let names: Vec<&str> = props.iter().map(|(n, _)| *n).collect();
    o["required"] = json!(names);
    o
}

/// The schema of a result row: an object with `props` (always present in what the server
/// sends; not listed as required, to keep what every conversation pays for small).
fn row(props: &[(&str, Value)]) -> Value {
    let props: Map<String, Value> = props
        .iter()
        .map(|(n, s)| ((*n).to_string(), s.clone()))
        .collect();
    json!({ "type": "object", "properties": props })
}

/// A quote from a stream's fields, shaped like a row of get_price_snapshot.
pub(crate) fn quote_row(label: &str, conid: i64, fields: &Map<String, Value>) -> Value {
    market::quote_row(label, conid, Some(fields), market::DEFAULT_FIELDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_tool_has_a_closed_input_and_a_real_output_schema() {
        let defs = defs();
        assert!(defs.len() >= 7, "{} task tools", defs.len());
        for d in &defs {
            assert_eq!(d.input_schema["additionalProperties"], false, "{}", d.name);
            let out = d.output_schema.as_ref().unwrap();
            assert!(
                out["properties"].as_object().is_some_and(|p| !p.is_empty()),
                "{} output schema has no properties",
                d.name
            );
            jsonschema::validator_for(&d.input_schema).unwrap();
            jsonschema::validator_for(out).unwrap();
            // One `type` per field: clients that map schemas onto a single-type dialect
            // (the Inspector's strict mode warns) would drop a `["number", "null"]`.
            fn single_types(v: &Value, at: &str) {
                match v {
                    Value::Object(m) => {
                        assert!(!m.get("type").is_some_and(Value::is_array), "{at}");
                        for (k, x) in m {
                            single_types(x, &format!("{at}.{k}"));
                        }
                    }
                    Value::Array(a) => a.iter().for_each(|x| single_types(x, at)),
                    _ => {}
                }
            }
            single_types(&d.input_schema, &d.name);
            single_types(out, &d.name);
        }
    }

    #[test]
    fn times_are_iso_with_the_zone_and_numbers_are_numbers() {
        assert_eq!(
            iso_ms(1_669_645_800_000).as_deref(),
            Some("2022-11-28T14:30:00Z")
        );
        assert_eq!(num(Some(&json!("C189.10"))), json!(189.1));
        assert_eq!(num(Some(&json!(""))), Value::Null);
        assert_eq!(num(None), Value::Null);
        assert_eq!(text(Some(&json!(" AAPL "))), json!("AAPL"));
    }
}
