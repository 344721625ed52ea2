//! The profile's `stages`: a stage string like `"1:10s,@100:60s"`, or a
//! list of stage objects, each checked with the JSON path in its error.

use super::hint;
use crate::stage::{self, Stage};
use serde_json::{Map, Value};
use std::time::Duration;

/// `"1:10s,100:60s"` or `[{"concurrency": 1, "duration": "10s"}, ...]`.
pub(super) fn stages_value(value: &Value) -> Result<Vec<Stage>, String> {
    let list = match value {
        Value::String(text) => return stage::parse_stages(text).map_err(|e| format!("stages: {e}")),
        Value::Array(list) => list,
        _ => {
            return Err(
                "stages: must be a string like \"1:10s,100:60s\" or a list of {\"concurrency\", \"duration\"}"
                    .into(),
            )
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            let at = format!("stages[{i}]");
            let Value::Object(map) = entry else {
                return Err(format!(
                    "{at}: must be an object like {{\"concurrency\": 10, \"duration\": \"30s\"}}"
                ));
            };
            stage_object(&at, map)
        })
        .collect()
}

/// One stage object: closed loop (`concurrency` or `users`) or open loop
/// (`rate`, optionally `arrival`), and a `duration`.
fn stage_object(at: &str, map: &Map<String, Value>) -> Result<Stage, String> {
    let known = ["concurrency", "users", "rate", "arrival", "duration"];
    if let Some(key) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("{at}.{key}: unknown field{}", hint(key, &known)));
    }
    let duration = match map.get("duration") {
        Some(Value::String(text)) => {
            stage::parse_duration(text).map_err(|e| format!("{at}.duration: {e}"))?
        }
        Some(_) => return Err(format!("{at}.duration: must be a string like \"60s\"")),
        None => return Err(format!("{at}.duration: missing")),
    };
    match (users(at, map)?, map.get("rate")) {
        (Some(users), None) => {
            if map.contains_key("arrival") {
                return Err(format!(
                    "{at}.arrival: only open-loop (rate) stages have arrivals"
                ));
            }
            stage::closed_stage(users, duration).map_err(|e| format!("{at}: {e}"))
        }
        (None, Some(rate)) => open(at, rate, map.get("arrival"), duration),
        (Some(_), Some(_)) => Err(format!(
            "{at}: give concurrency (closed loop) or rate (open loop), not both"
        )),
        (None, None) => Err(format!(
            "{at}: missing concurrency (closed loop) or rate (open loop)"
        )),
    }
}

/// The closed-loop users, from `concurrency` or `users`.
fn users(at: &str, map: &Map<String, Value>) -> Result<Option<u64>, String> {
    let whole = |key: &str, v: &Value| {
        v.as_u64()
            .map(Some)
            .ok_or(format!("{at}.{key}: must be a whole number"))
    };
    match (map.get("concurrency"), map.get("users")) {
        (Some(v), None) => whole("concurrency", v),
        (None, Some(v)) => whole("users", v),
        (Some(_), Some(_)) => Err(format!("{at}: give concurrency or users, not both")),
        (None, None) => Ok(None),
    }
}

/// An open-loop stage from its `rate` and `arrival`.
fn open(
    at: &str,
    rate: &Value,
    arrival: Option<&Value>,
    duration: Duration,
) -> Result<Stage, String> {
    let rate = match rate {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(text) => stage::parse_rate(text).map_err(|e| format!("{at}.rate: {e}"))?,
        _ => {
            return Err(format!(
                "{at}.rate: must be a number of requests per second"
            ))
        }
    };
    let poisson = match arrival.map(|v| v.as_str()) {
        None | Some(Some("constant")) => false,
        Some(Some("poisson")) => true,
        Some(Some(other)) => {
            return Err(format!(
                "{at}.arrival: unknown arrival process `{other}`{} (known: constant, poisson)",
                hint(other, &["constant", "poisson"])
            ))
        }
        Some(None) => return Err(format!("{at}.arrival: must be \"constant\" or \"poisson\"")),
    };
    stage::open_stage(rate, poisson, duration).map_err(|e| format!("{at}: {e}"))
}
