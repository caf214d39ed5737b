//! The mutations of the pinned document that `spec_mutations.rs` builds against and
//! `spec_diff.rs` compares with the pinned one: defect kinds the patches have never seen, and
//! interface changes a new IBKR document could bring (operations, arguments, reply fields).

// Each of the two tests reads only some of the fields.
#![allow(dead_code)]

use ibkr_spec::diff::Kind;
use serde_json::{Value, json};

/// A mutation: what it does to the document and the operations (by the pinned ids) it touches.
pub struct Mutation {
    /// What it does, in words.
    pub name: &'static str,
    /// The operations it touches (by the pinned ids).
    pub touches: Vec<&'static str>,
    /// The change.
    pub apply: fn(&mut Value),
    /// Words the report must contain (what was lost, and why).
    pub report_says: Vec<&'static str>,
    /// The kinds of change `spec diff` must find between the pinned document and this one,
    /// exactly (a defect the repair fixes is no change at all).
    pub diff_kinds: Vec<Kind>,
}

/// The operation at `path` and `method`, which the pinned document has.
pub fn op_mut<'a>(doc: &'a mut Value, path: &str, method: &str) -> &'a mut Value {
    doc["paths"]
        .get_mut(path)
        .and_then(|p| p.get_mut(method))
        .unwrap_or_else(|| panic!("{method} {path} is in the pinned document"))
}

/// Every mutation, in the order they are applied to the combined document.
pub fn mutations() -> Vec<Mutation> {
    vec![
        Mutation {
            name: "nulls where strings are expected (summary, a tag in a list, a server url)",
            touches: vec![],
            apply: |d| {
                let op = op_mut(d, "/iserver/accounts", "get");
                op["summary"] = Value::Null;
                op["tags"] = json!([null, "Account"]);
                d["servers"] = json!([{ "url": null }, { "url": "https://localhost:5000/v1/api" }]);
            },
            report_says: vec!["null-values", "/paths/~1iserver~1accounts/get/summary"],
            diff_kinds: vec![],
        },
        Mutation {
            name: "nulls where objects are expected (a parameter in a list, a response in a map, a property schema)",
            touches: vec![],
            apply: |d| {
                let op = op_mut(d, "/iserver/account/orders", "get");
                if let Some(list) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                    list.push(Value::Null);
                }
                op["responses"]["299"] = Value::Null;
                let schemas = d["components"]["schemas"].as_object_mut().unwrap();
                let (name, _) = schemas
                    .iter()
                    .find(|(_, s)| s.get("properties").is_some_and(Value::is_object))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .unwrap();
                schemas[&name]["properties"]["injectedNull"] = Value::Null;
                d["components"]["responses"] = json!({ "Nothing": null });
            },
            report_says: vec!["null-values", "injectedNull"],
            diff_kinds: vec![],
        },
        Mutation {
            name: "an operation removed",
            touches: vec!["get_iserver_account_orders"],
            apply: |d| {
                d["paths"]["/iserver/account/orders"]
                    .as_object_mut()
                    .unwrap()
                    .remove("get");
            },
            report_says: vec!["list_orders", "get_iserver_account_orders"],
            diff_kinds: vec![Kind::OperationRemoved],
        },
        Mutation {
            name: "a path parameter retyped string -> integer, a query parameter integer -> array",
            touches: vec![
                "get_iserver_contract_conid_info",
                "get_iserver_marketdata_history",
            ],
            apply: |d| {
                let op = op_mut(d, "/iserver/contract/{conid}/info", "get");
                for p in op["parameters"].as_array_mut().into_iter().flatten() {
                    if p["name"] == "conid" {
                        p["schema"] = json!({ "type": "integer", "format": "int64" });
                    }
                }
                let op = op_mut(d, "/iserver/marketdata/history", "get");
                for p in op["parameters"].as_array_mut().into_iter().flatten() {
                    if p["name"] == "conid" {
                        p["schema"] = json!({ "type": "array", "items": { "type": "string" } });
                    }
                }
            },
            report_says: vec![],
            diff_kinds: vec![Kind::ArgumentType],
        },
        Mutation {
            name: "a parameter retyped to an object in the path",
            touches: vec!["get_iserver_contract_conid_info"],
            apply: |d| {
                let op = op_mut(d, "/iserver/contract/{conid}/info", "get");
                for p in op["parameters"].as_array_mut().into_iter().flatten() {
                    if p["name"] == "conid" {
                        p["schema"] = json!({ "type": "object", "properties": { "a": { "type": "string" } } });
                    }
                }
            },
            report_says: vec![],
            diff_kinds: vec![Kind::ArgumentType],
        },
        Mutation {
            name: "a component schema renamed (its $refs left dangling)",
            touches: vec![],
            apply: |d| {
                let schemas = d["components"]["schemas"].as_object_mut().unwrap();
                let name = schemas
                    .keys()
                    .find(|k| k.as_str() == "iserver.accounts" || k.contains("ccount"))
                    .cloned()
                    .unwrap();
                let v = schemas.remove(&name).unwrap();
                schemas.insert(format!("{name}Renamed"), v);
            },
            report_says: vec!["dangling-refs"],
            diff_kinds: vec![Kind::ArgumentRemoved, Kind::ArgumentType],
        },
        Mutation {
            name: "an unknown content type on a request body and on a response",
            touches: vec!["post_iserver_account_account_id_orders_whatif"],
            apply: |d| {
                let op = op_mut(d, "/iserver/account/{accountId}/orders/whatif", "post");
                let content = op["requestBody"]["content"].as_object_mut().unwrap();
                let v = content.remove("application/json").unwrap();
                content.insert("application/vnd.ibkr.order+cbor".into(), v);
                let op = op_mut(d, "/iserver/accounts", "get");
                let content = op["responses"]["200"]["content"].as_object_mut().unwrap();
                let v = content.remove("application/json").unwrap();
                content.insert("application/x-ibkr-stream".into(), v);
            },
            report_says: vec!["application/vnd.ibkr.order+cbor"],
            diff_kinds: vec![Kind::RequestContent, Kind::ReplyContent],
        },
        Mutation {
            name: "an operationId duplicated and one missing",
            touches: vec!["get_iserver_account_trades", "get_portfolio_accounts"],
            apply: |d| {
                let op = op_mut(d, "/iserver/account/trades", "get");
                op["operationId"] = json!("getPortfolioAccounts");
                let op = op_mut(d, "/portfolio/accounts", "get");
                op["operationId"] = json!("getPortfolioAccounts");
                op_mut(d, "/iserver/accounts", "get")
                    .as_object_mut()
                    .unwrap()
                    .remove("operationId");
            },
            report_says: vec!["operation-ids", "duplicate operationId"],
            diff_kinds: vec![],
        },
        Mutation {
            name: "an operation added",
            touches: vec![],
            apply: |d| {
                d["paths"]["/iserver/account/{accountId}/orders/audit"] = json!({ "get": {
                    "operationId": "getOrderAudit",
                    "parameters": [{ "name": "accountId", "in": "path", "required": true,
                                     "schema": { "type": "string" } }],
                    "responses": { "200": { "description": "audit", "content": { "application/json": {
                        "schema": { "type": "object", "properties": {
                            "entries": { "type": "array", "items": { "type": "string" } } } } } } } }
                } });
            },
            report_says: vec![],
            diff_kinds: vec![Kind::OperationAdded],
        },
        Mutation {
            name: "arguments changed: one added, one made optional, one made required, one removed",
            touches: vec![],
            apply: |d| {
                let op = op_mut(d, "/iserver/exchangerate", "get");
                let params = op["parameters"].as_array_mut().unwrap();
                for p in params.iter_mut() {
                    if p["name"] == "source" {
                        p["required"] = json!(false);
                    }
                }
                params.push(json!({ "name": "asOf", "in": "query",
                                    "schema": { "type": "string", "format": "date" } }));
                let op = op_mut(d, "/iserver/account/trades", "get");
                for p in op["parameters"].as_array_mut().into_iter().flatten() {
                    if p["name"] == "days" {
                        p["required"] = json!(true);
                    }
                }
                let op = op_mut(d, "/iserver/currency/pairs", "get");
                op["parameters"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|p| p["name"] != "currency");
            },
            report_says: vec![],
            diff_kinds: vec![
                Kind::ArgumentAdded,
                Kind::ArgumentOptional,
                Kind::ArgumentRequired,
                Kind::ArgumentRemoved,
            ],
        },
        Mutation {
            name: "reply fields changed: one added, one removed, one retyped",
            touches: vec![],
            apply: |d| {
                let fields = d["components"]["schemas"]["tradesResponse"]["items"]["properties"]
                    .as_object_mut()
                    .unwrap();
                fields.remove("order_description");
                fields.insert("venue".into(), json!({ "type": "string" }));
                fields["execution_id"] = json!({ "type": "integer", "format": "int64" });
            },
            report_says: vec![],
            diff_kinds: vec![
                Kind::ReplyFieldAdded,
                Kind::ReplyFieldRemoved,
                Kind::ReplyFieldType,
            ],
        },
    ]
}
