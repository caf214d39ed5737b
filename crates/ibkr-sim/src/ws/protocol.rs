//! The message grammar: parsing what clients send (`TOPIC+target+...+{json}`, `tic`,
//! `{"session":...}`) and the fixed server messages (login, accounts, auth status, heartbeat,
//! `tic` reply, errors). Pure functions, no state.

use serde_json::{Value, json};

/// One message from a client.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ClientMsg {
    /// `tic`: the client's keep-alive ping.
    Tic,
    /// `{"session":"<id>"}`: the in-band session for sockets opened without a cookie.
    Session(String),
    /// A three-letter topic (`smd`, `umd`, `sor`, ...) with its `+`-separated targets and its
    /// JSON arguments (`{}` when absent or a bare trailing `+`).
    Topic {
        /// The three letters, lowercase as sent.
        name: String,
        /// Targets between the topic and the JSON (conids, accounts).
        targets: Vec<String>,
        /// The JSON arguments.
        args: Value,
    },
    /// Anything else.
    Unknown(String),
}

impl ClientMsg {
    /// Whether the message subscribes (`s…`) or unsubscribes (`u…`) and so waits for the
    /// ready gate.
    pub(crate) fn is_gated(&self) -> bool {
        matches!(self, ClientMsg::Topic { name, .. } if name.starts_with('s') || name.starts_with('u'))
    }
}

/// Parses one client message.
pub(crate) fn parse(text: &str) -> ClientMsg {
    let text = text.trim();
    if text == "tic" {
        return ClientMsg::Tic;
    }
    if text.starts_with('{') {
        return match serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.get("session").and_then(Value::as_str).map(str::to_string))
        {
            Some(s) => ClientMsg::Session(s),
            None => ClientMsg::Unknown(text.to_string()),
        };
    }
    let Some(name) = text
        .get(..3)
        .filter(|n| n.chars().all(|c| c.is_ascii_lowercase()))
    else {
        return ClientMsg::Unknown(text.to_string());
    };
    let rest = &text[3..];
    if !rest.is_empty() && !rest.starts_with('+') {
        return ClientMsg::Unknown(text.to_string());
    }
    let rest = rest.strip_prefix('+').unwrap_or(rest);
    let (target_part, json_part) = match rest.find('{') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let targets: Vec<String> = target_part
        .split('+')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let args = if json_part.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str::<Value>(json_part) {
            Ok(v) if v.is_object() => v,
            _ => return ClientMsg::Unknown(text.to_string()),
        }
    };
    ClientMsg::Topic {
        name: name.to_string(),
        targets,
        args,
    }
}

/// The session id in a gateway-mode `api` cookie value, `{"session":"<id>"}`.
pub(crate) fn session_of(cookie: &str) -> Option<String> {
    serde_json::from_str::<Value>(cookie)
        .ok()?
        .get("session")?
        .as_str()
        .map(str::to_string)
}

/// The login frame that opens every greeting.
pub(crate) fn system_login(user: &str) -> Value {
    json!({ "topic": "system", "success": user, "isFT": false, "isPaper": true })
}

/// A heartbeat.
pub(crate) fn heartbeat(now_ms: i64) -> Value {
    json!({ "topic": "system", "hb": now_ms })
}

/// The reply to `tic`.
pub(crate) fn tic_reply(session: &str, now_ms: i64) -> Value {
    json!({ "topic": "tic", "alive": true, "id": session, "lastAccessed": now_ms })
}

/// The prompt of a socket opened without a session cookie.
pub(crate) fn waiting_for_session() -> Value {
    json!({ "message": "waiting for session" })
}

/// An error message (`code` 1, as seen for unknown topics).
pub(crate) fn error(text: impl Into<String>) -> Value {
    json!({ "error": text.into(), "code": 1 })
}

/// The `sts` frame for an `/iserver/auth/status` body.
pub(crate) fn sts(auth: &Value, user: &str) -> Value {
    let server = auth.get("serverInfo").cloned().unwrap_or(Value::Null);
    json!({
        "topic": "sts",
        "args": {
            "authenticated": auth["authenticated"],
            "competing": auth["competing"],
            "connected": auth["connected"],
            "established": auth.get("established").cloned().unwrap_or(json!(false)),
            "message": auth.get("message").cloned().unwrap_or(json!("")),
            "fail": auth.get("fail").cloned().unwrap_or(json!("")),
            "serverName": server.get("serverName").cloned().unwrap_or(Value::Null),
            "serverVersion": server.get("serverVersion").cloned().unwrap_or(Value::Null),
            "username": user,
        }
    })
}

/// The `act` frame: the accounts, their properties and the selected one.
pub(crate) fn act(accounts: &[String], selected: &str, session_id: &str) -> Value {
    let props: serde_json::Map<String, Value> = accounts
        .iter()
        .map(|a| {
            (
                a.clone(),
                json!({ "supportsCashQty": true, "supportsFractions": false }),
            )
        })
        .collect();
    let aliases: serde_json::Map<String, Value> =
        accounts.iter().map(|a| (a.clone(), json!(a))).collect();
    json!({
        "topic": "act",
        "args": {
            "accounts": accounts,
            "acctProps": props,
            "aliases": aliases,
            "allowFeatures": { "allowCrypto": false, "allowFA": false, "allowOptions": true },
            "chartPeriods": {},
            "groups": [],
            "profiles": [],
            "selectedAccount": selected,
            "serverInfo": { "serverName": "SimGw1", "serverVersion": "Build 10.40.0s, simulated ibkr-sim gateway" },
            "sessionId": session_id,
            "isFT": false,
            "isPaper": true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, targets: &[&str], args: Value) -> ClientMsg {
        ClientMsg::Topic {
            name: name.into(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            args,
        }
    }

    #[test]
    fn parse_reads_targets_and_json() {
        assert_eq!(
            parse(r#"smd+265598+{"fields":["31","84"]}"#),
            topic("smd", &["265598"], json!({ "fields": ["31", "84"] }))
        );
        assert_eq!(
            parse("smd+265598@SMART+{}"),
            topic("smd", &["265598@SMART"], json!({}))
        );
        assert_eq!(parse("sor+{}"), topic("sor", &[], json!({})));
        assert_eq!(parse("utr"), topic("utr", &[], json!({})));
        assert_eq!(parse("umd+8314+"), topic("umd", &["8314"], json!({})));
        assert_eq!(
            parse("sbd+DU1+265598+SMART"),
            topic("sbd", &["DU1", "265598", "SMART"], json!({}))
        );
    }

    #[test]
    fn parse_knows_tic_session_and_garbage() {
        assert_eq!(parse("tic"), ClientMsg::Tic);
        assert_eq!(
            parse(r#"{"session":"abc"}"#),
            ClientMsg::Session("abc".into())
        );
        for bad in ["hello", "smd+1+{not json", "SMD+1+{}", "smdx", "{}", ""] {
            assert!(matches!(parse(bad), ClientMsg::Unknown(_)), "{bad}");
        }
    }

    #[test]
    fn gated_messages_are_the_subscribe_and_unsubscribe_ones() {
        assert!(parse("sor+{}").is_gated());
        assert!(parse("umd+1+{}").is_gated());
        assert!(!parse("tic").is_gated());
        assert!(!parse("xyz+{}").is_gated());
    }

    #[test]
    fn session_cookie_is_the_json_form_only() {
        assert_eq!(session_of(r#"{"session":"ab12"}"#).as_deref(), Some("ab12"));
        assert_eq!(session_of("ab12"), None);
    }
}
