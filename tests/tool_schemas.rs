//! Every allowlisted tool gets an input schema derived from the repaired document that strict
//! MCP clients accept: JSON Schema 2020-12, no `$ref`, no `nullable`, no type arrays, `required`
//! naming only existing properties, and path parameters required.

use ibkr_mcp::spec::{REPAIRED_SPEC, model, tool_schema};
use serde_json::Value;

fn allowlist() -> Vec<model::AllowEntry> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/tools.toml"))
        .expect("spec/tools.toml");
    model::parse_allowlist(&text).expect("tools.toml parses")
}

/// The first problem a strict client would have with `schema`, if any.
fn portability_problem(schema: &Value, at: &str) -> Option<String> {
    match schema {
        Value::Object(m) => {
            for key in ["$ref", "nullable", "discriminator", "example"] {
                if m.contains_key(key) && !at.ends_with("/properties") {
                    return Some(format!("`{key}` at {at}"));
                }
            }
            if m.get("type").is_some_and(Value::is_array) && !at.ends_with("/properties") {
                return Some(format!("type array at {at}"));
            }
            if let (Some(Value::Array(req)), Some(Value::Object(props))) =
                (m.get("required"), m.get("properties"))
                && let Some(missing) = req
                    .iter()
                    .filter_map(Value::as_str)
                    .find(|r| !props.contains_key(*r))
            {
                return Some(format!("required `{missing}` is not a property at {at}"));
            }
            m.iter().find_map(|(k, v)| {
                if k == "examples" || k == "enum" || k == "default" || k == "const" {
                    None
                } else {
                    portability_problem(v, &format!("{at}/{k}"))
                }
            })
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, v)| portability_problem(v, &format!("{at}/{i}"))),
        _ => None,
    }
}

#[test]
fn every_allowlisted_tool_input_schema_is_portable_json_schema_2020_12() {
    let doc: Value = serde_json::from_str(REPAIRED_SPEC).unwrap();
    let mut total = 0;
    let mut problems = Vec::new();
    for entry in allowlist() {
        let schema = match tool_schema::input_schema(&doc, &entry.operation) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{}: {e}", entry.name));
                continue;
            }
        };
        total += serde_json::to_string(&schema).unwrap().len();
        // MCP's default dialect (2020-12) without saying so: no `$schema` line in every tool.
        assert!(schema.get("$schema").is_none(), "{}", entry.name);
        assert_eq!(schema["type"], "object");
        if let Some(p) = portability_problem(&schema, "") {
            problems.push(format!("{}: {p}", entry.name));
        }
    }
    println!("95 input schemas, {total} bytes of JSON in all");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn place_orders_schema_requires_account_and_body_and_keeps_order_fields() {
    let doc: Value = serde_json::from_str(REPAIRED_SPEC).unwrap();
    let s = tool_schema::input_schema(&doc, "post_iserver_account_account_id_orders").unwrap();
    let required: Vec<&str> = s["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(required.contains(&"accountId"), "{required:?}");
    assert!(required.contains(&"body"), "{required:?}");
    let order = &s["properties"]["body"]["properties"]["orders"]["items"];
    for field in ["conid", "orderType", "side", "quantity"] {
        assert!(
            order["properties"].get(field).is_some(),
            "order field {field} missing: {order}"
        );
    }
    assert_eq!(s["additionalProperties"], Value::Bool(false));
}

#[test]
fn snapshot_schema_has_its_query_parameters_with_descriptions() {
    let doc: Value = serde_json::from_str(REPAIRED_SPEC).unwrap();
    let s = tool_schema::input_schema(&doc, "get_iserver_marketdata_snapshot").unwrap();
    assert!(s["properties"]["conids"].is_object(), "{s}");
    assert!(s["properties"]["fields"].is_object(), "{s}");
    assert!(s["properties"]["conids"]["description"].is_string(), "{s}");
}

#[test]
fn unknown_operation_is_an_error_not_a_panic() {
    let doc: Value = serde_json::from_str(REPAIRED_SPEC).unwrap();
    let err = tool_schema::input_schema(&doc, "no_such_operation").unwrap_err();
    assert!(err.contains("no_such_operation"), "{err}");
}

fn tool(name: &str) -> &'static ibkr_mcp::mcp::catalog::ToolDef {
    ibkr_mcp::mcp::catalog::all()
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("{name} in the catalog"))
}

fn required(name: &str) -> Vec<String> {
    tool(name).input_schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Issue 10, item 14: the schema traps a model fell into while using the server.
#[test]
fn schema_traps_found_by_using_the_server_are_gone() {
    // Required arguments that were optional, so calls without them reached the gateway.
    assert!(required("search_secdef").contains(&"symbol".to_string()));
    assert!(required("get_secdef_info").contains(&"conid".to_string()));
    // The order ticket says where a stop price goes, and which order types exist.
    let order = &tool("place_orders").input_schema["properties"]["body"]["properties"]["orders"]["items"]
        ["properties"];
    let desc = |k: &str| {
        order[k]["description"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(desc("price").contains("STP"), "{}", desc("price"));
    assert!(
        desc("auxPrice").contains("STOP_LIMIT") && desc("auxPrice").contains("Not used by STP"),
        "{}",
        desc("auxPrice")
    );
    for t in ["MKT", "LMT", "STP", "STOP_LIMIT", "TRAIL"] {
        assert!(desc("orderType").contains(t), "{t}: {}", desc("orderType"));
    }
    // Algo parameters are an open object, not one literal placeholder key.
    let sp = &order["strategyParameters"];
    assert!(sp.get("properties").is_none(), "{sp}");
    assert_ne!(sp["additionalProperties"], Value::Bool(false), "{sp}");
    // No argument named param0.
    for t in ibkr_mcp::mcp::catalog::all() {
        if let Some(props) = t.input_schema["properties"].as_object() {
            assert!(!props.contains_key("param0"), "{} has param0", t.name);
        }
    }
    // The quote tool no longer tells the model to call twice.
    let snap = &tool("get_market_data_snapshot").description;
    assert!(!snap.contains("call again"), "{snap}");
    // Derivative months have their format, so a wrong one is refused with the reason.
    for name in ["get_secdef_info", "get_option_strikes"] {
        let month = &tool(name).input_schema["properties"]["month"];
        let ok = |m: &str| jsonschema::is_valid(month, &Value::String(m.into()));
        assert!(
            ok("JAN27") && ok("mar27") && !ok("2027-01") && !ok("January"),
            "{name}: {month}"
        );
    }
}
