//! Tool arguments: checked against the tool's input schema before anything is sent.
//!
//! Order of work: unknown top-level arguments are named with the valid ones; scalar path, query
//! and header parameters are coerced where the wire form is the same (`265598` for a string
//! conid, `"5"` for an integer page) because they travel as text in the URL anyway; then the
//! arguments are validated against the tool's JSON Schema (the same schema `tools/list` shows),
//! and every problem is reported with the field's dotted path. Request bodies are never
//! coerced: what the model wrote is what IBKR receives.

use std::collections::BTreeMap;
use std::sync::{LazyLock, OnceLock};

use serde_json::{Map, Value};

use super::catalog::{ArgLocation, ToolDef};

/// Compiled validators, one per catalog tool, made on first use.
static VALIDATORS: LazyLock<
    BTreeMap<&'static str, OnceLock<Result<jsonschema::Validator, String>>>,
> = LazyLock::new(|| {
    super::catalog::all()
        .iter()
        .map(|t| (t.name.as_str(), OnceLock::new()))
        .collect()
});

fn validator(def: &'static ToolDef) -> Result<&'static jsonschema::Validator, String> {
    let cell = VALIDATORS
        .get(def.name.as_str())
        .ok_or_else(|| format!("no validator slot for `{}`", def.name))?;
    cell.get_or_init(|| {
        jsonschema::options()
            .should_validate_formats(false)
            .build(&def.input_schema)
            .map_err(|e| format!("input schema of `{}` does not compile: {e}", def.name))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Checks and normalizes `raw` for `def`. On failure, every problem found, each naming its field.
pub fn prepare(
    def: &'static ToolDef,
    raw: Option<Map<String, Value>>,
) -> Result<Map<String, Value>, Vec<String>> {
    let mut args = raw.unwrap_or_default();
    let props = def.input_schema["properties"].as_object();
    let mut problems = Vec::new();
    for key in args.keys() {
        if !props.is_some_and(|p| p.contains_key(key)) {
            problems.push(format!("`{key}`: unknown argument"));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    for arg in &def.args {
        if arg.location == ArgLocation::Body {
            continue;
        }
        if let (Some(v), Some(schema)) = (
            args.get_mut(&arg.name),
            props.and_then(|p| p.get(&arg.name)),
        ) {
            coerce_scalar(v, schema);
        }
    }
    let validator = validator(def).map_err(|e| vec![e])?;
    let instance = Value::Object(args);
    let problems: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| {
            let field = dotted(e.instance_path().as_str());
            let mut text = e.to_string();
            if let Some(allowed) = allowed_properties(&def.input_schema, e.schema_path().as_str()) {
                text.push_str(&format!(" (allowed: {allowed})"));
            }
            if field.is_empty() {
                text
            } else {
                format!("`{field}`: {text}")
            }
        })
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    match instance {
        Value::Object(m) => Ok(m),
        _ => unreachable!("built from a map"),
    }
}

/// `/body/orders/0/side` → `body.orders[0].side`.
pub fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{token}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&token);
        }
    }
    out
}

/// For an `additionalProperties` failure, the property names the object does accept.
fn allowed_properties(schema: &Value, schema_path: &str) -> Option<String> {
    let parent = schema_path.strip_suffix("/additionalProperties")?;
    let node = if parent.is_empty() {
        schema
    } else {
        schema.pointer(parent)?
    };
    let names: Vec<&str> = node
        .get("properties")?
        .as_object()?
        .keys()
        .map(String::as_str)
        .collect();
    Some(names.join(", "))
}

/// Turns a number or boolean into the string a string parameter wants, and a numeric or
/// boolean string into the number or boolean a typed parameter wants.
fn coerce_scalar(v: &mut Value, schema: &Value) {
    let ty = schema.get("type").and_then(Value::as_str);
    let coerced = match (ty, &*v) {
        (Some("string"), Value::Number(n)) => Some(Value::String(n.to_string())),
        (Some("string"), Value::Bool(b)) => Some(Value::String(b.to_string())),
        (Some("integer"), Value::String(s)) => s.trim().parse::<i64>().ok().map(Value::from),
        (Some("number"), Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        (Some("boolean"), Value::String(s)) => match s.trim() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    };
    if let Some(c) = coerced {
        *v = c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(name: &str) -> &'static ToolDef {
        super::super::catalog::all()
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} in catalog"))
    }

    fn obj(v: Value) -> Option<Map<String, Value>> {
        v.as_object().cloned()
    }

    #[test]
    fn dotted_paths_read_like_code() {
        assert_eq!(dotted("/body/orders/0/side"), "body.orders[0].side");
        assert_eq!(dotted(""), "");
        assert_eq!(dotted("/a~1b"), "a/b");
    }

    #[test]
    fn unknown_argument_is_named() {
        let e = prepare(
            def("get_market_data_snapshot"),
            obj(json!({"conids": "1", "fieldz": "31"})),
        )
        .unwrap_err();
        assert_eq!(e, vec!["`fieldz`: unknown argument".to_string()]);
    }

    #[test]
    fn missing_required_and_wrong_nested_type_are_all_reported() {
        let e = prepare(
            def("place_orders"),
            obj(json!({"body": {"orders": [{"conid": "AAPL", "side": "BUY", "orderType": "MKT", "quantity": 1}]}})),
        )
        .unwrap_err();
        let all = e.join("\n");
        assert!(all.contains("accountId"), "{all}");
        assert!(all.contains("`body.orders[0].conid`"), "{all}");
    }

    #[test]
    fn misspelt_order_field_is_rejected_with_the_allowed_names() {
        let e = prepare(
            def("place_orders"),
            obj(json!({"accountId": "DU1", "body": {"orders": [{"conid": 265598, "side": "BUY", "orderType": "MKT", "quantiy": 1}]}})),
        )
        .unwrap_err();
        let all = e.join("\n");
        assert!(all.contains("quantiy"), "{all}");
        assert!(
            all.contains("allowed:") && all.contains("quantity"),
            "{all}"
        );
    }

    #[test]
    fn scalar_parameters_are_coerced_but_bodies_are_not() {
        let ok = prepare(
            def("get_market_data_snapshot"),
            obj(json!({"conids": 265598})),
        )
        .unwrap();
        assert_eq!(ok["conids"], json!("265598"));
        let e = prepare(
            def("place_orders"),
            obj(json!({"accountId": "DU1", "body": {"orders": [{"conid": "265598", "side": "BUY", "orderType": "MKT", "quantity": 1}]}})),
        )
        .unwrap_err();
        assert!(e.join("\n").contains("body.orders[0].conid"), "{e:?}");
    }
}
