//! Performance by period from Portfolio Analyst: one fetch for every account, kept for a
//! while, so follow-up questions (another period, another account) cost nothing and never hit
//! Portfolio Analyst's rate limit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Answer, Ctx, Run, Task, table, table_schema};
use crate::error::ToolError;
use crate::ibkr::gateway::ops;
use crate::ibkr::market::number;

/// How long one Portfolio Analyst answer is reused. It is computed overnight by IBKR, and its
/// reports are limited to one request per 15 minutes.
const TTL: Duration = Duration::from_secs(15 * 60);

/// The last `/pa/allperiods` answer and which accounts it covers.
#[derive(Debug, Default)]
pub(super) struct PaCache(Mutex<Option<(Instant, Vec<String>, Value)>>);

impl PaCache {
    pub(super) fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

pub(super) fn tasks() -> Vec<Task> {
    vec![Task {
        name: "get_pa_performance_all_periods",
        description: "Time-weighted return of every account (or one) for each period \
                      Portfolio Analyst computes (1D, 7D, MTD, 1M, YTD, 1Y) or one, as a table: \
                      account, period, start, end, start_nav, end_nav, return_pct. Updated \
                      overnight; one fetch serves 15 minutes.",
        input: json!({ "type": "object", "properties": {
            "account": { "type": "string", "description": "One account id; default: every account" },
            "period": { "type": "string", "pattern": "^[0-9A-Za-z]{2,4}$", "description": "e.g. MTD, 1M, YTD" },
        } }),
        output: table_schema(&[]),
        run: Run::Read(|c| Box::pin(performance(c))),
    }]
}

async fn performance(c: &Ctx<'_>) -> Result<Answer, ToolError> {
    let wanted = c.accounts().await?;
    // Every account of the login is fetched, so any follow-up is answered from one fetch.
    let all = c
        .server
        .state
        .tasks
        .accounts
        .get()
        .unwrap_or_else(|| wanted.clone());
    let cache = &c.server.state.tasks.performance;
    let cached = {
        let g = cache.0.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref()
            .filter(|(at, ids, _)| at.elapsed() < TTL && wanted.iter().all(|a| ids.contains(a)))
            .map(|(at, _, v)| (at.elapsed(), v.clone()))
    };
    let mut notes = Vec::new();
    let reply = match cached {
        Some((age, v)) => {
            notes.push(format!(
                "From the Portfolio Analyst answer fetched {} s ago (reused for 15 minutes).",
                age.as_secs()
            ));
            v
        }
        None => {
            let v = c
                .fetch(
                    "Portfolio Analyst performance",
                    ops::PA_ALL_PERIODS,
                    json!({ "body": { "acctIds": all } }),
                )
                .await?;
            *cache.0.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((Instant::now(), all.clone(), v.clone()));
            v
        }
    };
    let period = c.str_arg("period").map(str::to_ascii_uppercase);
    let mut rows = Vec::new();
    for a in &wanted {
        let Some(acct) = reply.get(a.as_str()) else {
            notes.push(format!("Portfolio Analyst has no data for {a} yet."));
            continue;
        };
        let listed: Vec<String> = acct
            .get("periods")
            .and_then(Value::as_array)
            .map(|p| {
                p.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_else(|| {
                acct.as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, v)| v.get("cps").is_some())
                    .map(|(k, _)| k.clone())
                    .collect()
            });
        let chosen: Vec<&String> = match &period {
            Some(p) => listed.iter().filter(|x| *x == p).collect(),
            None => listed.iter().collect(),
        };
        if let Some(p) = &period
            && chosen.is_empty()
        {
            return Err(c.unresolved(format!(
                "`period`: Portfolio Analyst has no {p} period; it has {}",
                listed.join(", ")
            )));
        }
        rows.extend(chosen.into_iter().filter_map(|p| {
            let mut r = period_row(p, acct.get(p.as_str())?);
            r["account"] = json!(a);
            Some(r)
        }));
    }
    Ok(Answer {
        value: table(
            &[
                "account",
                "period",
                "start",
                "end",
                "start_nav",
                "end_nav",
                "return_pct",
            ],
            &rows,
        ),
        notes,
    })
}

/// One period of an account: dates, NAV at both ends, cumulative return in percent.
fn period_row(name: &str, v: &Value) -> Value {
    let dates = v.get("dates").and_then(Value::as_array);
    let navs = v.get("nav").and_then(Value::as_array);
    let cps = v.get("cps").and_then(Value::as_array);
    let date = |d: Option<&Value>| {
        d.and_then(Value::as_str)
            .and_then(|s| chrono::NaiveDate::parse_from_str(s, "%Y%m%d").ok())
            .map(|d| d.format("%Y-%m-%d").to_string())
    };
    let start = v.get("startNAV");
    let n = |x: Option<f64>| x.map_or(Value::Null, |x| json!(super::round(x)));
    json!({
        "period": name,
        "start": date(start.and_then(|s| s.get("date"))),
        "end": date(dates.and_then(|d| d.last())),
        "start_nav": n(start.and_then(|s| s.get("val")).and_then(number)),
        "end_nav": n(navs.and_then(|d| d.last()).and_then(number)),
        "return_pct": n(cps.and_then(|d| d.last()).and_then(number).map(|x| (x * 1e5).round() / 1e3)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_reads_its_ends_and_cumulative_return() {
        let v = json!({
            "freq": "D", "startNAV": {"date": "20260331", "val": 1004944.09},
            "dates": ["20260401", "20260402"], "nav": [1005037.01, 1005175.2687299999],
            "cps": [9.246e-05, 0.00023004],
        });
        let r = period_row("MTD", &v);
        assert_eq!(r["start"], "2026-03-31");
        assert_eq!(r["end"], "2026-04-02");
        assert_eq!(r["end_nav"], 1005175.26873);
        assert_eq!(r["return_pct"], 0.023);
    }
}
