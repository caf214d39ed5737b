//! Tool calls through the generated client (private to [`super`], the gateway).
//!
//! `build.rs` writes `OUT_DIR/tool_specs.rs`: one line per available tool, naming the
//! generated `Client` method, each argument's builder setter and Rust type, and the success
//! type. The `ibkr_tools!` macro below turns those lines into [`call_generated`], so every tool
//! calls its progenitor method and no tool has hand-written HTTP. A tool line that names a
//! method, setter or type the client does not have is a compile error.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::ibkr::Client;

/// Arguments of one call, taken out one by one as the builder is filled.
#[derive(Debug)]
pub struct Args(Map<String, Value>);

/// An argument that does not convert to the type the generated client wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError {
    /// Dotted path of the field (`body.orders[0].quantity`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Args {
    /// Wraps validated arguments.
    pub fn new(map: Map<String, Value>) -> Self {
        Self(map)
    }

    /// Removes argument `name` and converts it to `T`; `None` when absent or null.
    pub fn take<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, ArgError> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_path_to_error::deserialize(v).map(Some).map_err(|e| {
                let inner = e.path().to_string();
                ArgError {
                    field: if inner == "." || inner.is_empty() {
                        name.to_string()
                    } else if inner.starts_with('[') {
                        format!("{name}{inner}")
                    } else {
                        format!("{name}.{inner}")
                    },
                    message: e.into_inner().to_string(),
                }
            }),
        }
    }
}

/// What became of a generated call.
#[derive(Debug)]
pub enum Sent {
    /// The gateway answered with a documented success status. `mismatch` says where the body
    /// did not fit the generated type (the body itself is in the capture record).
    Answered {
        /// Where and how the reply departs from the generated type.
        mismatch: Option<String>,
    },
    /// The client or the gateway failed; the error says how.
    Failed(progenitor_client::Error<()>),
}

/// Explains where `body` departs from `T`, the operation's generated type.
pub fn describe_mismatch<T: DeserializeOwned>(body: &[u8], fallback: &serde_json::Error) -> String {
    let de = &mut serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." || path.is_empty() {
                inner.to_string()
            } else {
                format!("at `{path}`: {inner}")
            }
        }
        Ok(_) => fallback.to_string(),
    }
}

/// Turns a typed reply into [`Sent`].
pub fn finish_json<T: DeserializeOwned>(
    result: Result<progenitor_client::ResponseValue<T>, progenitor_client::Error<()>>,
) -> Sent {
    match result {
        Ok(_) => Sent::Answered { mismatch: None },
        Err(progenitor_client::Error::InvalidResponsePayload(bytes, e)) => Sent::Answered {
            mismatch: Some(describe_mismatch::<T>(&bytes, &e)),
        },
        Err(e) => Sent::Failed(e),
    }
}

/// Turns an untyped reply into [`Sent`].
pub fn finish_raw<T>(
    result: Result<progenitor_client::ResponseValue<T>, progenitor_client::Error<()>>,
) -> Sent {
    match result {
        Ok(_) => Sent::Answered { mismatch: None },
        Err(e) => Sent::Failed(e),
    }
}

macro_rules! ibkr_tools {
    (@finish json ($resp:ty), $result:expr) => { finish_json::<$resp>($result) };
    (@finish raw, $result:expr) => { finish_raw($result) };
    ($( $name:literal => $method:ident ( $( $arg:literal => $setter:ident : $ty:ty ),* $(,)? ) -> $kind:ident $( ( $resp:ty ) )? ; )*) => {
        /// Names of the tools [`call_generated`] knows.
        #[cfg(test)]
        pub const GENERATED_TOOLS: &[&str] = &[ $( $name ),* ];

        /// Calls tool `name`'s generated client method with `args`. `None` for a tool this
        /// build does not have; `Err` when an argument does not convert (nothing was sent).
        pub async fn call_generated(
            client: &Client,
            name: &str,
            args: &mut Args,
        ) -> Option<Result<Sent, ArgError>> {
            match name {
                $( $name => Some(async {
                    #[allow(unused_mut)]
                    let mut request = client.$method();
                    $( if let Some(v) = args.take::<$ty>($arg)? { request = request.$setter(v); } )*
                    Ok::<Sent, ArgError>(ibkr_tools!(@finish $kind $( ($resp) )?, request.send().await))
                }.await), )*
                _ => None,
            }
        }
    };
}

include!(concat!(env!("OUT_DIR"), "/tool_specs.rs"));

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Order {
        quantity: f64,
        side: String,
    }

    #[test]
    fn take_names_the_nested_field_that_does_not_convert() {
        let mut args = Args::new(
            json!({"body": {"orders": [{"quantity": "ten", "side": "BUY"}]}})
                .as_object()
                .unwrap()
                .clone(),
        );
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Body {
            orders: Vec<Order>,
        }
        let err = args.take::<Body>("body").unwrap_err();
        assert_eq!(err.field, "body.orders[0].quantity");
        assert!(err.message.contains("invalid type"), "{}", err.message);
    }

    #[test]
    fn take_treats_null_and_absent_alike() {
        let mut args = Args::new(json!({"a": null}).as_object().unwrap().clone());
        assert_eq!(args.take::<String>("a").unwrap(), None);
        assert_eq!(args.take::<String>("b").unwrap(), None);
    }

    #[test]
    fn mismatch_names_the_field() {
        let body = br#"{"quantity": 1, "side": 5}"#;
        let e = serde_json::from_slice::<Order>(body).unwrap_err();
        let m = describe_mismatch::<Order>(body, &e);
        assert!(m.starts_with("at `side`"), "{m}");
    }

    /// The tool table is built from the allowlist file at build time; this reads the file again
    /// and checks that each entry got a generated call (the pinned document has them all), that
    /// nothing else did, and that the catalog agrees.
    #[test]
    fn every_allowlisted_tool_has_a_generated_call_and_nothing_else_does() {
        let text = include_str!("../../../spec/tools.toml");
        let allow: Vec<String> = crate::spec::model::parse_allowlist(text)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(allow.len() > 90, "{}", allow.len());
        let generated: Vec<&str> = GENERATED_TOOLS.to_vec();
        assert_eq!(
            allow.iter().map(String::as_str).collect::<Vec<_>>(),
            generated,
            "allowlist order and content vs the generated calls"
        );
        assert!(crate::mcp::catalog::unavailable().is_empty());
        for def in crate::mcp::catalog::all()
            .iter()
            .filter(|t| !crate::mcp::catalog::is_server_tool(t))
        {
            assert!(GENERATED_TOOLS.contains(&def.name.as_str()), "{}", def.name);
        }
    }
}
