//! From what the gateway answered to what the model sees.
//!
//! A successful call returns the gateway's JSON **as IBKR sent it** (not re-serialized from the
//! generated type, which would drop nulls and reformat numbers) as `structuredContent` (an object
//! as it is; an array as `{"items": [...]}`; a scalar as `{"value": ...}`), plus a text block with
//! the same JSON, compact. When the body does not fit the generated type (IBKR's document is
//! often wrong), the data is still returned, with a note naming the field; when it is larger
//! than the configured cap, the largest arrays are cut and a note says how many items are shown
//! and which arguments narrow the request. Failures become [`ToolError`]s.

use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Value, json};

use super::catalog::{ReplyKind, ToolDef};
use crate::error::{ToolError, ibkr_message};
use crate::ibkr::gateway::{self, Reply, TransportKind};

/// What results need to know about the server's settings.
#[derive(Debug, Clone)]
pub struct Context {
    /// Gateway base URL (for messages).
    pub gateway_url: String,
    /// Where a human logs in to the gateway.
    pub login_url: String,
    /// Request timeout (for messages).
    pub timeout: std::time::Duration,
    /// Largest text rendering, in bytes, before arrays are cut.
    pub max_result_bytes: usize,
    /// `--auth oauth1`: a 401 means IBKR refused the signature, not "log in at the gateway".
    pub oauth: bool,
}

/// The result of one generated call. `parsed` is the 2xx body as JSON when the caller has
/// already parsed it (so it is parsed once per call); `None` parses it here.
pub fn from_call(
    def: &ToolDef,
    outcome: Result<Reply, gateway::Error>,
    parsed: Option<Value>,
    ctx: &Context,
) -> CallToolResult {
    match classify(def, outcome, parsed, ctx) {
        Ok((value, notes)) => success(def, value, notes, ctx.max_result_bytes),
        Err(e) => failure(&e),
    }
}

/// An `isError` result for `e`.
pub fn failure(e: &ToolError) -> CallToolResult {
    let mut r = CallToolResult::error(vec![ContentBlock::text(e.message())]);
    r.structured_content = Some(e.structured());
    r
}

fn classify(
    def: &ToolDef,
    outcome: Result<Reply, gateway::Error>,
    parsed: Option<Value>,
    ctx: &Context,
) -> Result<(Value, Vec<String>), ToolError> {
    let write = !def.read_only;
    let reply = outcome.map_err(|e| call_error(def, e, ctx))?;
    if !reply.is_success() {
        return Err(status_error(reply.status, &reply.body, write, ctx));
    }
    let mut notes = Vec::new();
    let value = if reply.body.iter().all(u8::is_ascii_whitespace) {
        json!({ "status": reply.status })
    } else {
        let parsed = match parsed {
            Some(v) => Ok(v),
            None => serde_json::from_slice::<Value>(&reply.body),
        };
        match parsed {
            Ok(v) => v,
            Err(_) if def.reply != ReplyKind::Json => {
                json!({ "status": reply.status, "text": String::from_utf8_lossy(&reply.body) })
            }
            Err(e) => {
                return Err(ToolError::BadReply {
                    status: reply.status,
                    detail: format!("{e}; it starts {:?}", excerpt(&reply.body, 120)),
                    write,
                });
            }
        }
    };
    if let Some(Value::String(msg)) = value.get("error")
        && !msg.trim().is_empty()
    {
        return Err(ToolError::Rejected {
            status: reply.status,
            message: msg.clone(),
        });
    }
    if let Some(m) = &reply.mismatch {
        tracing::warn!(
            tool = %def.name,
            operation = %def.operation_id,
            mismatch = %m,
            "gateway reply does not fit the generated type; returned as sent"
        );
        notes.push(format!(
            "IBKR's reply does not match its documented shape ({m}); it is returned exactly as \
             IBKR sent it."
        ));
    }
    if let Some(age) = reply.cached {
        notes.push(format!(
            "Served from the server's cache: IBKR's reply from {} s ago. IBKR allows this request \
             only rarely and its content changes rarely, so repeats are answered from the cache \
             instead of asking IBKR again.",
            age.as_secs()
        ));
    }
    Ok((value, notes))
}

/// The result for a JSON answer the server obtained itself (after a question chain, say):
/// IBKR's `{"error": ...}` is a rejection, anything else is returned as sent.
pub fn from_value(
    def: &ToolDef,
    status: u16,
    value: Value,
    notes: Vec<String>,
    cap: usize,
) -> CallToolResult {
    if let Some(Value::String(msg)) = value.get("error")
        && !msg.trim().is_empty()
    {
        let mut r = failure(&ToolError::Rejected {
            status,
            message: msg.clone(),
        });
        r.content.extend(
            notes
                .into_iter()
                .map(|n| ContentBlock::text(format!("Note: {n}"))),
        );
        return r;
    }
    success(def, value, notes, cap)
}

/// The error for a call that brought back no reply.
pub(crate) fn call_error(def: &ToolDef, e: gateway::Error, ctx: &Context) -> ToolError {
    use crate::ibkr::hooks::Refusal;
    use gateway::Error as E;
    let write = !def.read_only;
    let invalid = |problems: Vec<String>| ToolError::InvalidArguments {
        tool: def.name.clone(),
        problems,
        usage: usage(def),
    };
    match e {
        E::Argument { field, message } => invalid(vec![format!("`{field}`: {message}")]),
        E::Arguments(problems) => invalid(problems),
        E::InvalidRequest(m) => invalid(vec![m]),
        E::Refused(Refusal::Paced { limit, retry_after }) => {
            ToolError::Paced { limit, retry_after }
        }
        E::Refused(Refusal::UnsafePath { detail }) => invalid(vec![detail]),
        E::Refused(Refusal::Policy { rule, message }) => ToolError::PolicyRefused { rule, message },
        E::Refused(Refusal::Auth { detail }) => ToolError::OAuthRefused {
            detail,
            sent: false,
        },
        E::Transport {
            kind: TransportKind::Timeout,
            ..
        } => ToolError::Timeout {
            url: ctx.gateway_url.clone(),
            after: ctx.timeout,
            write,
        },
        E::Transport {
            kind: TransportKind::Connect,
            cause,
            ..
        } => ToolError::Unreachable {
            url: ctx.gateway_url.clone(),
            detail: cause,
        },
        E::Transport { cause, .. } => ToolError::ConnectionLost {
            detail: cause,
            write,
        },
        E::Status { status, body, .. } => status_error(status, &body, write, ctx),
        E::BadJson { status, detail } => ToolError::BadReply {
            status,
            detail,
            write,
        },
        E::Unavailable { operation, .. } => {
            ToolError::Internal(format!("tool `{operation}` has no generated call"))
        }
        E::Unexpected(m) | E::Internal(m) => ToolError::Internal(m),
    }
}

/// Maps a non-2xx gateway status to an error.
pub fn status_error(status: u16, body: &[u8], write: bool, ctx: &Context) -> ToolError {
    match status {
        401 if ctx.oauth => ToolError::OAuthRefused {
            detail: ibkr_message(body),
            sent: true,
        },
        401 => ToolError::NotAuthenticated {
            login_url: ctx.login_url.clone(),
            detail: Some(ibkr_message(body)).filter(|m| m != "(no message)"),
        },
        429 => ToolError::RateLimited { retry_after: None },
        500..=599 => ToolError::GatewayFailed {
            status,
            message: ibkr_message(body),
            write,
        },
        _ => ToolError::Rejected {
            status,
            message: ibkr_message(body),
        },
    }
}

fn excerpt(body: &[u8], n: usize) -> String {
    let s = String::from_utf8_lossy(body);
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.into_owned(),
    }
}

/// The tool's arguments in one line: `name (required)` or `name`, body last.
pub fn usage(def: &ToolDef) -> String {
    if def.args.is_empty() {
        return "none".into();
    }
    def.args
        .iter()
        .map(|a| {
            if a.required {
                format!("{} (required)", a.name)
            } else {
                a.name.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Wraps a reply as `structuredContent` (always an object).
pub fn structured(value: Value) -> Value {
    match value {
        Value::Object(_) => value,
        Value::Array(_) => json!({ "items": value }),
        other => json!({ "value": other }),
    }
}

/// A successful result: the reply (cut to the cap if needed) plus notes.
pub fn success(def: &ToolDef, value: Value, mut notes: Vec<String>, cap: usize) -> CallToolResult {
    let mut content = structured(value);
    if let Some(cut) = fit(&mut content, cap) {
        let optional: Vec<&str> = def
            .args
            .iter()
            .filter(|a| !a.required)
            .map(|a| a.name.as_str())
            .collect();
        let narrow = if optional.is_empty() {
            "ask for less at a time (one account, one contract)".to_string()
        } else {
            format!("narrow the request with {}", optional.join(", "))
        };
        notes.push(format!(
            "Result cut to fit {cap} bytes: {cut}. To see the rest, {narrow}; the limit is \
             --max-result-bytes (IBKR_MCP_MAX_RESULT_BYTES)."
        ));
    }
    let mut blocks = vec![ContentBlock::text(content.to_string())];
    blocks.extend(
        notes
            .into_iter()
            .map(|n| ContentBlock::text(format!("Note: {n}"))),
    );
    let mut r = CallToolResult::success(blocks);
    r.structured_content = Some(content);
    r
}

/// Cuts the largest arrays in `value` until its compact JSON fits `cap` bytes. Returns what was
/// cut, in words, or `None` when it already fits.
pub fn fit(value: &mut Value, cap: usize) -> Option<String> {
    let mut size = len(value);
    if size <= cap {
        return None;
    }
    let mut said = Vec::new();
    loop {
        let mut arrays = Vec::new();
        collect_arrays(value, String::new(), &mut arrays);
        arrays.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
        let Some((ptr, _)) = arrays.into_iter().find(|(p, _)| {
            value
                .pointer(p)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        }) else {
            break;
        };
        let arr = value
            .pointer_mut(&ptr)
            .and_then(Value::as_array_mut)
            .expect("found above");
        let total = arr.len();
        let whole = len_arr(arr);
        let others = size - whole;
        // Keep the longest prefix that fits (2 bytes of brackets, commas between items).
        let mut keep = 0;
        let mut used = 2;
        for item in arr.iter() {
            let add = len(item) + usize::from(keep > 0);
            if others + used + add > cap {
                break;
            }
            used += add;
            keep += 1;
        }
        arr.truncate(keep);
        let name = if ptr.is_empty() {
            "the result".to_string()
        } else {
            format!("`{}`", super::args::dotted(&ptr))
        };
        said.push(format!("{name} shows {keep} of {total} items"));
        size = len(value);
        if size <= cap {
            return Some(said.join("; "));
        }
    }
    // No array left to cut: keep a text prefix of the whole.
    let text = value.to_string();
    let cut = text
        .char_indices()
        .take_while(|(i, _)| *i < cap.saturating_sub(64))
        .last()
        .map_or(0, |(i, c)| i + c.len_utf8());
    *value = json!({ "truncated_json": &text[..cut] });
    said.push(format!("only the first {cut} bytes of the JSON are shown"));
    Some(said.join("; "))
}

fn len(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(0, |b| b.len())
}

fn len_arr(a: &[Value]) -> usize {
    2 + a.iter().map(len).sum::<usize>() + a.len().saturating_sub(1)
}

fn collect_arrays(v: &Value, ptr: String, out: &mut Vec<(String, usize)>) {
    match v {
        Value::Array(a) => {
            out.push((ptr.clone(), len_arr(a)));
            for (i, x) in a.iter().enumerate() {
                collect_arrays(x, format!("{ptr}/{i}"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                collect_arrays(
                    x,
                    format!("{ptr}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_and_scalars_are_wrapped_objects_kept() {
        assert_eq!(structured(json!([1])), json!({"items": [1]}));
        assert_eq!(structured(json!(3)), json!({"value": 3}));
        assert_eq!(structured(json!({"a": 1})), json!({"a": 1}));
    }

    #[test]
    fn fit_cuts_the_largest_array_and_says_how_much_is_shown() {
        let mut v = json!({
            "small": [1, 2],
            "orders": (0..200).map(|i| json!({"id": i, "text": "x".repeat(20)})).collect::<Vec<_>>(),
        });
        let said = fit(&mut v, 2000).expect("cut");
        assert!(len(&v) <= 2000, "{}", len(&v));
        let kept = v["orders"].as_array().unwrap().len();
        assert!(kept > 0 && kept < 200);
        assert_eq!(v["small"], json!([1, 2]));
        assert!(
            said.contains(&format!("`orders` shows {kept} of 200 items")),
            "{said}"
        );
    }

    #[test]
    fn fit_leaves_small_values_alone_and_falls_back_to_a_prefix() {
        let mut v = json!({"a": 1});
        assert_eq!(fit(&mut v, 100), None);
        let mut big = json!({"blob": "y".repeat(5000)});
        let said = fit(&mut big, 1000).unwrap();
        assert!(len(&big) <= 1000);
        assert!(said.contains("first"), "{said}");
    }
}
