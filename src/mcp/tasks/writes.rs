//! How a task tool that changes something runs: it plans calls of generated tools, and each
//! call takes the whole path of a write ([`IbkrServer::run`]: trading switch, kill switch,
//! account rules, trading limits, preview token, IBKR's questions, the audit log's intent and
//! result lines). A plan is made of lookups only, so a refused or failed plan has sent nothing.
//! Nothing here is retried: each planned call goes out once.
//!
//! Previews: a preview's tickets are remembered under the token it hands out, with the task
//! arguments they came from, so the order placed with the token is exactly the one previewed
//! (a price computed from last is not computed again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolResponse, CallToolResult};
use serde_json::{Map, Value, json};

use super::{Ctx, Run, all, id_text, table};
use crate::error::ToolError;
use crate::mcp::catalog::{self, ToolDef};
use crate::mcp::{Attempt, CallCtx, IbkrServer, args, orders, results};

/// How a plan's replies become the task's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Placed or modified orders: their ids and statuses.
    Order,
    /// An order preview: cost, margin, warnings, and the preview token.
    Preview,
    /// Cancellations, one row each.
    Cancel,
    /// Another change (a watchlist, an alert): what was done and the id IBKR gave.
    Done,
}

/// One call of a generated tool.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    /// The generated tool.
    pub tool: &'static str,
    /// Its arguments.
    pub args: Map<String, Value>,
    /// What it does, in words (for the human, the question text and the answer).
    pub words: String,
    /// Its row label in the answer (an order id).
    pub label: String,
}

/// What a write task will do.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub calls: Vec<Planned>,
    pub shape: Shape,
    pub words: String,
    /// The order a preview is for, when it previews a change.
    pub order_id: Option<String>,
    pub notes: Vec<String>,
}

impl Plan {
    pub(crate) fn one(
        shape: Shape,
        tool: &'static str,
        args: Map<String, Value>,
        words: String,
    ) -> Self {
        Self {
            calls: vec![Planned {
                tool,
                args,
                words: words.clone(),
                label: String::new(),
            }],
            shape,
            words,
            order_id: None,
            notes: Vec::new(),
        }
    }
}

/// A previewed order, under its token.
#[derive(Debug, Clone)]
pub(crate) struct Bound {
    /// The token.
    pub token: String,
    /// The task arguments it was previewed with (fingerprint).
    fingerprint: String,
    /// The preview's arguments: `accountId` and `body.orders`.
    pub args: Map<String, Value>,
    pub words: String,
    expires: Instant,
}

/// Previews by token, and plans waiting for a stateless client's human, by their arguments.
#[derive(Debug, Default)]
pub(crate) struct Bindings {
    previews: Mutex<HashMap<String, Bound>>,
    waiting: Mutex<HashMap<String, (Instant, Plan)>>,
}

/// A plan waits this long for the human's answer.
const WAITING_TTL: Duration = Duration::from_secs(15 * 60);

impl Bindings {
    fn bind(&self, b: Bound) {
        let mut m = self.previews.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, b| b.expires > Instant::now());
        m.insert(b.token.clone(), b);
    }

    fn preview(&self, token: &str) -> Option<Bound> {
        let m = self.previews.lock().unwrap_or_else(|e| e.into_inner());
        m.get(token).filter(|b| b.expires > Instant::now()).cloned()
    }

    fn park(&self, key: String, plan: Plan) {
        let mut m = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (at, _)| at.elapsed() < WAITING_TTL);
        m.insert(key, (Instant::now(), plan));
    }

    fn resume(&self, key: &str) -> Option<Plan> {
        let mut m = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(key)
            .filter(|(at, _)| at.elapsed() < WAITING_TTL)
            .map(|(_, p)| p)
    }

    /// Forgets every preview and waiting plan (the kill switch was thrown).
    pub(crate) fn clear(&self) {
        self.previews
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Ctx<'_> {
    fn require_preview(&self) -> bool {
        self.server.state.policy.limits().require_preview
    }

    /// The preview this call's `preview_token` names, when it previewed these very arguments.
    /// Previews required and no token: refused before any lookup.
    pub(super) fn previewed(&self) -> Result<Option<Bound>, ToolError> {
        if !self.require_preview() {
            return Ok(None);
        }
        let Some(token) = self.str_arg("preview_token") else {
            return Err(ToolError::PolicyRefused {
                rule: "preview",
                message: format!(
                    "this server requires a preview first: call preview_order with the same \
                     arguments, then call {} again with the preview_token it returns",
                    self.def.name
                ),
            });
        };
        match self.server.state.tasks.writes.preview(token) {
            Some(b) if b.fingerprint == super::trading::order_fingerprint(self) => Ok(Some(b)),
            Some(b) => Err(ToolError::PolicyRefused {
                rule: "preview",
                message: format!(
                    "that preview_token is for another order ({}); nothing was sent. Preview \
                     this order with preview_order, or call with exactly the previewed \
                     arguments",
                    b.words
                ),
            }),
            // Unknown here: the policy says whether it is unknown, used or expired.
            None => Ok(None),
        }
    }

    /// Hands this call's preview token on to the generated tool (when previews are required).
    pub(super) fn pass_token(&self, args: &mut Map<String, Value>) {
        if self.require_preview()
            && let Some(t) = self.str_arg("preview_token")
        {
            args.insert(crate::mcp::PREVIEW_TOKEN_ARG.into(), json!(t));
        }
    }
}

/// A reply's text field as plain text, or null.
fn plain(v: Option<&Value>) -> Value {
    match v.and_then(Value::as_str).map(orders::plain_text) {
        Some(s) if !s.trim().is_empty() => json!(s.trim()),
        _ => Value::Null,
    }
}

/// `"1,006,576"` → 1006576; `"NA"` → null.
fn amount(v: Option<&Value>) -> Value {
    let s = v.and_then(Value::as_str).unwrap_or("").replace(',', "");
    s.split_whitespace()
        .next()
        .and_then(|x| x.parse::<f64>().ok())
        .map_or(Value::Null, |x| json!(x))
}

/// The generated tools an error may name, and the task tools to name instead.
const TASK_NAMES: &[(&str, &str)] = &[
    ("get_order_preview", "preview_order"),
    ("list_orders", "get_account_orders"),
    ("get_order_status", "get_account_orders"),
    ("place_orders", "place_order"),
    ("modify_iserver_order", "modify_order"),
    ("cancel_iserver_order", "cancel_order"),
];

/// A generated tool's error, told in the task toolset's names.
fn in_task_words(mut r: CallToolResult) -> CallToolResult {
    for c in &mut r.content {
        if let Some(t) = c.as_text() {
            let mut text = t.text.clone();
            for (generated, task) in TASK_NAMES {
                // Whole names only (`list_orders` is also the end of `get_list_orders`).
                text = replace_word(&text, generated, task);
            }
            text = replace_word(&text, "previewToken", "preview_token");
            *c = rmcp::model::ContentBlock::text(text);
        }
    }
    r
}

/// `text` with every whole-word `from` replaced by `to`.
fn replace_word(text: &str, from: &str, to: &str) -> String {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let before = rest[..i].chars().next_back();
        let after = rest[i + from.len()..].chars().next();
        out.push_str(&rest[..i]);
        if before.is_some_and(word) || after.is_some_and(word) {
            out.push_str(from);
        } else {
            out.push_str(to);
        }
        rest = &rest[i + from.len()..];
    }
    out.push_str(rest);
    out
}

/// An answer without its null fields (absent says "none" at no cost, and the output schema
/// stays one type per field).
fn drop_nulls(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|_, x| !x.is_null());
    }
    v
}

/// The text blocks of a generated result after its first (notes, answered questions).
fn notes_of(r: &CallToolResult) -> Vec<String> {
    r.content
        .iter()
        .skip(1)
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

/// The reply items of a generated result (`{"items": [...]}` or one object).
fn items(r: &CallToolResult) -> Vec<Value> {
    match &r.structured_content {
        Some(Value::Object(o)) => match o.get("items") {
            Some(Value::Array(a)) => a.clone(),
            _ => vec![Value::Object(o.clone())],
        },
        _ => Vec::new(),
    }
}

fn order_rows(r: &CallToolResult) -> Vec<Value> {
    items(r)
        .iter()
        .map(|i| {
            json!({
                "order_id": id_text(i.get("order_id").or_else(|| i.get("orderId"))),
                "status": i.get("order_status").cloned().unwrap_or(Value::Null),
                "message": match plain(i.get("text")) {
                    Value::Null => plain(i.get("warning_message")),
                    t => t,
                },
            })
        })
        .collect()
}

impl IbkrServer {
    /// Runs write task `def` (see the module docs). Refusals before any call are audited
    /// under the task's name; each planned call is audited under its generated tool.
    pub(in crate::mcp) async fn write_task(
        &self,
        def: &'static ToolDef,
        arguments: Option<rmcp::model::JsonObject>,
        human: &orders::Human,
        resume: Option<(String, Option<rmcp::model::InputResponses>)>,
    ) -> Result<CallToolResponse, McpError> {
        let cctx = CallCtx::new();
        match self.plan(def, arguments.clone(), resume.is_some()).await {
            Ok((args, plan)) => Box::pin(self.carry_out(def, &args, plan, human, resume)).await,
            Err(e) => Ok(self
                .audited(
                    def,
                    &arguments,
                    &cctx,
                    Attempt::refused(&e),
                    results::failure(&e).into(),
                )
                .await),
        }
    }

    /// Checks the arguments, the switches and the session, and plans the calls.
    async fn plan(
        &self,
        def: &'static ToolDef,
        arguments: Option<rmcp::model::JsonObject>,
        resuming: bool,
    ) -> Result<(Map<String, Value>, Plan), ToolError> {
        let args =
            args::prepare(def, arguments).map_err(|problems| ToolError::InvalidArguments {
                tool: def.name.clone(),
                problems,
                usage: results::usage(def),
            })?;
        if !self.state.allow_trading {
            return Err(ToolError::TradingDisabled {
                tool: def.name.clone(),
            });
        }
        self.check_halt()?;
        let Some(Run::Write { plan, .. }) =
            all().iter().find(|t| t.name == def.name).map(|t| t.run)
        else {
            return Err(ToolError::Internal(format!(
                "task tool `{}` has no plan",
                def.name
            )));
        };
        let key = crate::policy::fingerprint(&args);
        // A stateless client's answer goes on with the plan its human was shown.
        if resuming
            && let Some(p) = self
                .state
                .tasks
                .writes
                .resume(&format!("{}{key}", def.name))
        {
            return Ok((args, p));
        }
        self.task_session().await?;
        let ctx = Ctx {
            server: self,
            def,
            args: &args,
        };
        let plan = plan(&ctx).await?;
        Ok((args, plan))
    }

    /// Sends each planned call through the write path, and answers.
    async fn carry_out(
        &self,
        def: &'static ToolDef,
        args: &Map<String, Value>,
        plan: Plan,
        human: &orders::Human,
        resume: Option<(String, Option<rmcp::model::InputResponses>)>,
    ) -> Result<CallToolResponse, McpError> {
        let mut done: Vec<(Planned, CallToolResult)> = Vec::new();
        let mut token = None;
        for call in &plan.calls {
            let Some(tool) = catalog::all()
                .iter()
                .find(|t| t.name == call.tool && !catalog::is_server_tool(t))
            else {
                let e = ToolError::Internal(format!(
                    "`{}` needs the generated tool `{}`, which the IBKR document this server was \
                     built from does not provide",
                    def.name, call.tool
                ));
                return Ok(results::failure(&e).into());
            };
            if self.state.inventory.excludes(call.tool) {
                let e = ToolError::PolicyRefused {
                    rule: "excluded",
                    message: format!(
                        "`{}` would call `{}`, which this server's --exclude-tools removes; \
                         nothing was sent",
                        def.name, call.tool
                    ),
                };
                return Ok(results::failure(&e).into());
            }
            let mut cctx = CallCtx::new();
            cctx.via = Some(def.name.as_str());
            cctx.words = Some(call.words.clone());
            let call_args = Some(call.args.clone());
            let (attempt, response) = match &resume {
                // Only a one-call plan waits for a human; the calls of a longer one went out
                // already and must not go again.
                Some(_) if plan.calls.len() > 1 => {
                    let e = ToolError::PolicyRefused {
                        rule: "request_state",
                        message: "that confirmation belongs to no waiting call of this tool; \
                                  nothing was sent. Check get_account_orders, then call again \
                                  if needed."
                            .into(),
                    };
                    return Ok(results::failure(&e).into());
                }
                Some((handle, responses)) => {
                    self.resume(
                        tool,
                        call_args.clone(),
                        human,
                        handle,
                        responses.as_ref(),
                        &cctx,
                    )
                    .await?
                }
                _ => {
                    self.run(tool, call_args.clone(), human, false, &cctx)
                        .await?
                }
            };
            let response = self
                .audited(tool, &call_args, &cctx, attempt, response)
                .await;
            let CallToolResponse::Complete(result) = response else {
                // Waiting for a stateless client's human: the answer goes on with this plan.
                let key = format!("{}{}", def.name, crate::policy::fingerprint(args));
                self.state.tasks.writes.park(key, plan.clone());
                return Ok(response);
            };
            if let Some(t) = cctx
                .preview_token
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                token = Some((t, call.args.clone()));
            }
            done.push((call.clone(), result));
        }
        Ok(self.answer(def, args, plan, done, token).into())
    }

    /// The task's answer from its calls' results.
    fn answer(
        &self,
        def: &'static ToolDef,
        args: &Map<String, Value>,
        plan: Plan,
        done: Vec<(Planned, CallToolResult)>,
        token: Option<(String, Map<String, Value>)>,
    ) -> CallToolResult {
        let cap = self.state.results.max_result_bytes;
        let mut notes = plan.notes.clone();
        // One call that failed: its own error says what happened and what to do, in the
        // names of the tools this toolset serves.
        if let [(_, r)] = done.as_slice()
            && r.is_error == Some(true)
        {
            return in_task_words(r.clone());
        }
        // IBKR answers some refusals of alerts with HTTP 200 and `success: false`.
        if let [(_, r)] = done.as_slice()
            && let Some(reply) = items(r).first()
            && reply.get("success") == Some(&Value::Bool(false))
        {
            let why = plain(reply.get("text"));
            return results::failure(&ToolError::Rejected {
                status: 200,
                message: format!(
                    "IBKR did not do it ({}): {}",
                    plan.words,
                    why.as_str().unwrap_or("no reason given")
                ),
            });
        }
        for (_, r) in &done {
            notes.extend(notes_of(r));
        }
        let value =
            match plan.shape {
                Shape::Order => {
                    let rows: Vec<Value> = done.iter().flat_map(|(_, r)| order_rows(r)).collect();
                    let mut v = table(&["order_id", "status", "message"], &rows);
                    v["order"] = json!(plan.words);
                    v
                }
                Shape::Preview => {
                    let w = done
                        .first()
                        .and_then(|(_, r)| items(r).into_iter().next())
                        .unwrap_or(Value::Null);
                    let token =
                        token.map(|(t, preview_args)| {
                            let limits = self.state.policy.limits();
                            let ctx = Ctx {
                                server: self,
                                def,
                                args,
                            };
                            self.state.tasks.writes.bind(Bound {
                                token: t.clone(),
                                fingerprint: super::trading::order_fingerprint(&ctx),
                                args: preview_args,
                                words: plan.words.clone(),
                                expires: Instant::now() + limits.preview_ttl,
                            });
                            notes.push(format!(
                        "Pass preview_token to {} with exactly these arguments within {} s; \
                         it can be used once.",
                        if plan.order_id.is_some() { "modify_order" } else { "place_order" },
                        limits.preview_ttl.as_secs()
                    ));
                            t
                        });
                    let cost: Vec<String> = ["amount", "commission", "total"]
                        .iter()
                        .filter_map(|k| Some(format!("{k} {}", w["amount"].get(*k)?.as_str()?)))
                        .collect();
                    drop_nulls(json!({
                        "order": plan.words,
                        "cost": cost.join("; "),
                        "equity_after": amount(w["equity"].get("after")),
                        "initial_margin_after": amount(w["initial"].get("after")),
                        "maintenance_margin_after": amount(w["maintenance"].get("after")),
                        "warning": match plain(w.get("warn")) {
                            Value::Null => plain(w.get("error")),
                            t => t,
                        },
                        "preview_token": token,
                    }))
                }
                Shape::Cancel => {
                    if done.is_empty() {
                        notes.push(format!("Nothing to cancel: {}.", plan.words));
                    }
                    let rows: Vec<Value> = done
                        .iter()
                        .map(|(call, r)| {
                            let reply = items(r).into_iter().next().unwrap_or(Value::Null);
                            let result = if r.is_error == Some(true) {
                                r.content
                                    .first()
                                    .and_then(|c| c.as_text())
                                    .map(|t| t.text.clone())
                                    .unwrap_or_default()
                            } else {
                                reply
                                    .get("msg")
                                    .and_then(Value::as_str)
                                    .unwrap_or("cancel requested")
                                    .to_string()
                            };
                            json!({ "order_id": call.label, "result": result })
                        })
                        .collect();
                    table(&["order_id", "result"], &rows)
                }
                Shape::Done => {
                    let reply = done
                        .first()
                        .and_then(|(_, r)| items(r).into_iter().next())
                        .unwrap_or(Value::Null);
                    let id = id_text(reply.get("order_id"))
                        .or_else(|| id_text(reply.get("id")))
                        .or_else(|| id_text(reply.pointer("/data/deleted")));
                    drop_nulls(json!({ "done": plan.words, "id": id }))
                }
            };
        results::success(def, value, notes, cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_task_tools_by_whole_words() {
        assert_eq!(
            replace_word(
                "Check list_orders, not get_list_orders.",
                "list_orders",
                "get_account_orders"
            ),
            "Check get_account_orders, not get_list_orders."
        );
        assert_eq!(
            replace_word("`previewToken`", "previewToken", "preview_token"),
            "`preview_token`"
        );
    }

    #[test]
    fn preview_amounts_are_numbers_or_null() {
        assert_eq!(amount(Some(&json!("1,006,576"))), json!(1_006_576.0));
        assert_eq!(amount(Some(&json!("NA"))), Value::Null);
        assert_eq!(amount(Some(&json!("~ 51,001.39 USD"))), Value::Null);
        assert_eq!(amount(None), Value::Null);
    }
}
