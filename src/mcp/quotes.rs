//! The snapshot pre-flight, handled so the model gets prices in one call.
//!
//! The gateway's first snapshot request for a contract starts a market data subscription and
//! answers without values; values appear on later requests. The quote tool therefore asks
//! again (the same generated call, paced like any other) until every requested contract has
//! values or `--snapshot-wait` runs out, remembers which contracts are warm in this brokerage
//! session, and says when data is delayed or still missing.

use serde_json::{Map, Value};

/// Field codes that describe the reply rather than the market.
const META_FIELDS: &[&str] = &["6119", "6508", "6509"];

/// Field `6509`: market data availability (`R` real time, `D` delayed, `Z` frozen, `Y` frozen
/// delayed, `N` not subscribed; sometimes followed by more letters).
pub const AVAILABILITY: &str = "6509";

/// The field codes requested (`fields` argument), if any.
pub fn requested(args: &Map<String, Value>) -> Vec<String> {
    args.get("fields")
        .and_then(Value::as_str)
        .map(|f| {
            f.split(',')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Adds `6509` to the requested fields so the answer says whether data is live or delayed.
pub fn with_availability(args: &mut Map<String, Value>) {
    let mut fields = requested(args);
    if !fields.is_empty() && !fields.iter().any(|f| f == AVAILABILITY) {
        fields.push(AVAILABILITY.into());
        args.insert("fields".into(), Value::String(fields.join(",")));
    }
}

/// The conid of a snapshot entry, as text.
pub fn conid_of(entry: &Map<String, Value>) -> Option<String> {
    match entry.get("conid")? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Whether a snapshot entry carries market values (any requested field, or any field code
/// besides the descriptive ones when none were named).
pub fn has_values(entry: &Map<String, Value>, fields: &[String]) -> bool {
    entry.iter().any(|(k, v)| {
        let is_code = k.bytes().all(|b| b.is_ascii_digit());
        let wanted = if fields.is_empty() {
            is_code && !META_FIELDS.contains(&k.as_str())
        } else {
            fields.iter().any(|f| f == k) && !META_FIELDS.contains(&k.as_str())
        };
        wanted && !v.is_null() && v != &Value::String(String::new())
    })
}

/// Conids asked for (`conids` argument).
pub fn conids(args: &Map<String, Value>) -> Vec<String> {
    args.get("conids")
        .and_then(Value::as_str)
        .map(|c| {
            c.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The conids in `reply` (an array of entries) that still lack values.
pub fn cold(reply: &Value, asked: &[String], fields: &[String]) -> Vec<String> {
    let entries: Vec<&Map<String, Value>> = reply
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .collect();
    asked
        .iter()
        .filter(|c| {
            !entries
                .iter()
                .any(|e| conid_of(e).as_deref() == Some(c.as_str()) && has_values(e, fields))
        })
        .cloned()
        .collect()
}

/// Notes about availability: delayed, frozen or unsubscribed data, per conid.
pub fn availability_notes(reply: &Value) -> Vec<String> {
    let mut notes = Vec::new();
    for e in reply
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        let Some(code) = e.get(AVAILABILITY).and_then(Value::as_str) else {
            continue;
        };
        let conid = conid_of(e).unwrap_or_default();
        let what = match code.chars().next() {
            Some('D') => "delayed (typically 15 minutes; no real-time subscription)",
            Some('Z') => "frozen (the last values before the market closed)",
            Some('Y') => "frozen and delayed",
            Some('N') => "not available (no market data subscription for this contract)",
            _ => continue,
        };
        notes.push(format!(
            "conid {conid}: market data is {what} (field 6509 = {code})."
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn preflight_entries_have_no_values() {
        let fields = vec!["31".to_string(), "84".to_string()];
        assert!(!has_values(
            &m(json!({"conid": 1, "conidEx": "1", "_updated": 5, "server_id": "q0", "6119": "q0"})),
            &fields
        ));
        assert!(has_values(&m(json!({"conid": 1, "31": "189.1"})), &fields));
        assert!(!has_values(&m(json!({"conid": 1, "6509": "RpB"})), &fields));
        assert!(has_values(&m(json!({"conid": 1, "86": "1"})), &[]));
    }

    #[test]
    fn cold_conids_are_those_without_values() {
        let reply = json!([{"conid": 1, "31": "2"}, {"conid": 2}]);
        let asked = vec!["1".to_string(), "2".to_string(), "3".to_string()];
        assert_eq!(cold(&reply, &asked, &["31".into()]), vec!["2", "3"]);
    }

    #[test]
    fn availability_is_requested_and_explained() {
        let mut a = m(json!({"conids": "1", "fields": "31,84"}));
        with_availability(&mut a);
        assert_eq!(a["fields"], "31,84,6509");
        let notes =
            availability_notes(&json!([{"conid": 1, "6509": "DPB"}, {"conid": 2, "6509": "RpB"}]));
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("conid 1") && notes[0].contains("delayed"));
    }
}
