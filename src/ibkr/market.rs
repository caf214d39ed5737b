//! Facts about contracts and prices that the server itself needs (trading limits, quotes),
//! read through the generated client and from the gateway's raw replies, whatever shape they
//! have.

use std::time::Duration;

use serde_json::{Map, Value};

use super::Client;
use super::gateway::{self, Error, LookupError, ops};

/// What the trading limits need to know about a contract.
#[derive(Debug, Clone, PartialEq)]
pub struct ContractFacts {
    /// conid.
    pub conid: i64,
    /// Security type (`STK`, `OPT`, `FUT`, `CASH`, ...), if the gateway says.
    pub sec_type: Option<String>,
    /// Contract multiplier, when the gateway gives a positive one.
    pub multiplier: Option<f64>,
    /// Trading currency, if the gateway says.
    pub currency: Option<String>,
    /// Symbol, if the gateway says.
    pub symbol: Option<String>,
}

/// A number the gateway may send as a number or a string (`"100"`, `"C189.10"`, `"1,234"`).
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let t: String = s
                .trim()
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .chars()
                .filter(|c| *c != ',')
                .collect();
            t.parse::<f64>().ok().filter(|x| x.is_finite())
        }
        _ => None,
    }
}

/// A price or strike as IBKR writes it in a request: `200`, `192.5`, never `200.0` or an
/// exponent.
pub fn plain_number(x: f64) -> String {
    let s = format!("{:.8}", x);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// The strings of a JSON array (`["o163", "o451"]`); empty for anything else.
pub fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /iserver/contract/{conid}/info`, read for its type, multiplier and currency.
pub async fn contract_facts(client: &Client, conid: i64) -> Result<ContractFacts, LookupError> {
    let v = gateway::call_json(
        client,
        format!("contract {conid}"),
        ops::CONTRACT_INFO,
        serde_json::json!({ "conid": conid.to_string() }),
    )
    .await?;
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Ok(ContractFacts {
        conid,
        sec_type: text("instrument_type").or_else(|| text("secType")),
        multiplier: v.get("multiplier").and_then(number).filter(|m| *m > 0.0),
        currency: text("currency"),
        symbol: text("symbol"),
    })
}

/// One snapshot request: the entry for each conid, as the gateway sent it.
pub async fn snapshot_once(
    client: &Client,
    conids: &str,
    fields: &str,
) -> Result<Vec<Map<String, Value>>, LookupError> {
    let v = gateway::call_json(
        client,
        "snapshot",
        ops::SNAPSHOT,
        serde_json::json!({ "conids": conids, "fields": fields }),
    )
    .await?;
    match v {
        Value::Array(items) => Ok(items
            .into_iter()
            .filter_map(|i| match i {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .collect()),
        other => Err(LookupError::new(
            "snapshot",
            Error::Unexpected(format!(
                "unexpected reply {}",
                crate::error::ibkr_message(other.to_string().as_bytes())
            )),
        )),
    }
}

/// The price to value an order at: ask for a buy, bid for a sell, else the last price. Asks
/// again while the gateway is still warming the subscription (its first answer for a contract
/// carries no values).
pub async fn price_for(client: &Client, conid: i64, buy: bool) -> Result<f64, LookupError> {
    let mut wait = Duration::from_millis(200);
    for _ in 0..6 {
        let entries = snapshot_once(client, &conid.to_string(), "31,84,86").await?;
        if let Some(e) = entries.first() {
            let pick = |k: &str| e.get(k).and_then(number).filter(|p| *p > 0.0);
            let side = if buy { pick("86") } else { pick("84") };
            if let Some(p) = side.or_else(|| pick("31")) {
                return Ok(p);
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(1));
    }
    Err(LookupError::new(
        "",
        Error::Unexpected(format!(
            "no market price for conid {conid} (no market data subscription, or the market is \
             closed)"
        )),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_come_as_numbers_or_decorated_strings() {
        assert_eq!(number(&json!(5)), Some(5.0));
        assert_eq!(number(&json!("100")), Some(100.0));
        assert_eq!(number(&json!("C189.10")), Some(189.10));
        assert_eq!(number(&json!("1,234.5")), Some(1234.5));
        assert_eq!(number(&json!("")), None);
        assert_eq!(number(&json!(null)), None);
        assert_eq!(plain_number(200.0), "200");
        assert_eq!(plain_number(192.5), "192.5");
        assert_eq!(plain_number(0.05), "0.05");
    }
}
