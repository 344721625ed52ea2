//! Working with finished summaries: `merge` (several generator hosts into
//! one run, exactly) and `compare` (a baseline against a new run, with
//! regressions flagged). No load is generated.
//!
//! Merging is exact because every summary carries its HDR histograms
//! (`histograms`, V2 compressed base64): counts add, histograms add bucket
//! by bucket, and percentiles are recomputed from the sums. Rates add too,
//! since the hosts ran the same stages at the same time.

use crate::metrics::Hist;
use crate::plan::Thresholds;
use crate::report::{
    check_thresholds, knee_of, load_flag, percentiles_json, Figures, OpenFigures, HISTOGRAMS,
};
use serde_json::{json, Map, Value};
use std::fmt::Write as _;

/// Counters that add up across hosts.
const SUMMED: &[&str] = &[
    "requests",
    "ok",
    "warmup_requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_prompt_tokens",
    "usage_missing",
    "prompt_tokens_estimated",
    "completion_tokens_estimated",
    "sse_events",
    "content_events",
    "content_bytes",
    "itl_gaps_dropped",
    "connects",
    "stale_retries",
    "arrivals",
    "dropped_arrivals",
    "rps",
    "output_tokens_per_s",
];

/// Maps of counts that add up key by key.
const SUMMED_MAPS: &[&str] = &["status_codes", "errors", "conversations"];

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// The stage labels and scenario names a summary describes.
fn shape(summary: &Value) -> (Vec<String>, Vec<String>) {
    let stages = summary["stages"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["label"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    let scenarios = summary["plan"]["scenarios"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    (stages, scenarios)
}

/// Merges the statistics object `other` into `into` (both as written by
/// the summary: counters, maps, histograms, percentile objects).
fn merge_stats(into: &mut Value, other: &Value) -> Result<(), String> {
    for key in SUMMED {
        let sum = match (&into[*key], &other[*key]) {
            (Value::Null, Value::Null) => continue,
            (a, b) if a.is_u64() && b.is_u64() => json!(u(a) + u(b)),
            (a, b) => json!(f(a) + f(b)),
        };
        into[*key] = sum;
    }
    for key in SUMMED_MAPS {
        let mut merged = into[*key].as_object().cloned().unwrap_or_default();
        for (k, v) in other[*key].as_object().into_iter().flatten() {
            let entry = merged.entry(k.clone()).or_insert(json!(0));
            *entry = json!(u(entry) + u(v));
        }
        into[*key] = Value::Object(merged);
    }
    into["retry_after_s_max"] = match (
        into["retry_after_s_max"].as_u64(),
        other["retry_after_s_max"].as_u64(),
    ) {
        (None, None) => Value::Null,
        (a, b) => json!(a.max(b)),
    };
    // Histograms add; percentile objects are recomputed from the sums.
    let mut merged_hists = Map::new();
    for (name, _) in HISTOGRAMS {
        let clamped = |v: &Value| u(&v[*name]["clamped"]);
        let load = |v: &Value| -> Result<Option<Hist>, String> {
            match v["histograms"][*name].as_str() {
                Some(text) => Hist::from_base64(text, clamped(v))
                    .map(Some)
                    .map_err(|e| format!("histograms.{name}: {e}")),
                None if u(&v[*name]["count"]) > 0 => Err(format!(
                    "{name}: has samples but no histogram (a summary from an older version?)"
                )),
                None => Ok(None),
            }
        };
        let mut hist = load(into)?.unwrap_or_default();
        if let Some(theirs) = load(other)? {
            hist.merge(&theirs);
        }
        into[*name] = percentiles_json(&hist);
        if let Some(encoded) = hist.to_base64() {
            merged_hists.insert(name.to_string(), json!(encoded));
        }
    }
    into["histograms"] = Value::Object(merged_hists);
    let requests = u(&into["requests"]);
    let ok = u(&into["ok"]);
    let errors: u64 = into["errors"]
        .as_object()
        .map_or(0, |m| m.values().map(u).sum());
    into["ok_pct"] = json!(if requests == 0 {
        0.0
    } else {
        100.0 * ok as f64 / requests as f64
    });
    into["error_rate"] = json!(if requests == 0 {
        0.0
    } else {
        errors as f64 / requests as f64
    });
    // Per-turn means, weighted by each host's successes.
    let mut turns: Vec<Value> = into["turns"].as_array().cloned().unwrap_or_default();
    for theirs in other["turns"].as_array().into_iter().flatten() {
        let turn = u(&theirs["turn"]);
        match turns.iter_mut().find(|t| u(&t["turn"]) == turn) {
            None => turns.push(theirs.clone()),
            Some(mine) => {
                let (a, b) = (u(&mine["ok"]) as f64, u(&theirs["ok"]) as f64);
                for key in ["prompt_tokens_mean", "latency_ms_mean", "ttft_ms_mean"] {
                    mine[key] = match (mine[key].as_f64(), theirs[key].as_f64()) {
                        (Some(x), Some(y)) if a + b > 0.0 => json!((x * a + y * b) / (a + b)),
                        (x, y) => json!(x.or(y)),
                    };
                }
                mine["requests"] = json!(u(&mine["requests"]) + u(&theirs["requests"]));
                mine["ok"] = json!(u(&mine["ok"]) + u(&theirs["ok"]));
            }
        }
    }
    turns.sort_by_key(|t| u(&t["turn"]));
    into["turns"] = Value::Array(turns);
    Ok(())
}

/// Checks that everything `merge` writes into is an object, so a damaged
/// or foreign file is an error, not a panic.
fn check_shape(summary: &Value) -> Result<(), String> {
    if summary["schema"] != json!(1) {
        return Err("not a loadtest summary (schema 1)".into());
    }
    let object_or_null = |v: &Value, at: &str| {
        if v.is_object() || v.is_null() {
            Ok(())
        } else {
            Err(format!("{at}: not an object"))
        }
    };
    object_or_null(&summary["generator_health"], "generator_health")?;
    let stages = summary["stages"].as_array().ok_or("stages: missing")?;
    for (i, stage) in stages.iter().enumerate() {
        if !stage.is_object() {
            return Err(format!("stages[{i}]: not an object"));
        }
        object_or_null(&stage["open_loop"], &format!("stages[{i}].open_loop"))?;
        let mut stats = vec![(format!("stages[{i}]"), stage)];
        for (j, scenario) in stage["scenarios"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if !scenario.is_object() {
                return Err(format!("stages[{i}].scenarios[{j}]: not an object"));
            }
            stats.push((format!("stages[{i}].scenarios[{j}]"), scenario));
        }
        for (at, v) in stats {
            for turn in v["turns"].as_array().into_iter().flatten() {
                if !turn.is_object() {
                    return Err(format!("{at}.turns: not a list of objects"));
                }
            }
        }
    }
    Ok(())
}

/// Merges summaries of the same run from several generator hosts. They
/// must describe the same stages and scenarios, in the same order.
pub fn merge(summaries: &[(String, Value)]) -> Result<Value, String> {
    let Some(((first_name, first), rest)) = summaries.split_first() else {
        return Err("nothing to merge".into());
    };
    for (name, summary) in summaries {
        check_shape(summary).map_err(|e| format!("{name}: {e}"))?;
    }
    let (stages, scenarios) = shape(first);
    let mut merged = first.clone();
    for (name, summary) in rest {
        let (their_stages, their_scenarios) = shape(summary);
        if their_stages != stages {
            return Err(format!(
                "{name}: stages {their_stages:?} do not line up with {first_name}'s {stages:?}"
            ));
        }
        if their_scenarios != scenarios {
            return Err(format!(
                "{name}: scenarios {their_scenarios:?} do not line up with {first_name}'s {scenarios:?}"
            ));
        }
        let theirs = summary["stages"].as_array().cloned().unwrap_or_default();
        let mine = merged["stages"].as_array_mut().ok_or("no stages")?;
        for (index, (stage, other)) in mine.iter_mut().zip(&theirs).enumerate() {
            merge_stats(stage, other).map_err(|e| format!("{name}: stages[{index}].{e}"))?;
            for (i, scenario) in stage["scenarios"]
                .as_array_mut()
                .into_iter()
                .flatten()
                .enumerate()
            {
                merge_stats(scenario, &other["scenarios"][i])
                    .map_err(|e| format!("{name}: stages[{index}].scenarios[{i}].{e}"))?;
            }
            stage["connections_open"] =
                json!(u(&stage["connections_open"]) + u(&other["connections_open"]));
            for key in ["shard_cpu_s", "shard_busy_pct"] {
                let mut list = stage[key].as_array().cloned().unwrap_or_default();
                list.extend(other[key].as_array().cloned().unwrap_or_default());
                stage[key] = Value::Array(list);
            }
            if stage["open_loop"].is_object() {
                let o = &other["open_loop"];
                let s = &mut stage["open_loop"];
                for key in ["target_rate", "achieved_rate"] {
                    s[key] = json!(f(&s[key]) + f(&o[key]));
                }
                for key in [
                    "arrivals",
                    "dropped_arrivals",
                    "max_inflight",
                    "inflight_peak",
                ] {
                    s[key] = json!(u(&s[key]) + u(&o[key]));
                }
                let target = f(&s["target_rate"]);
                s["achieved_pct"] = json!(if target > 0.0 {
                    100.0 * f(&s["achieved_rate"]) / target
                } else {
                    0.0
                });
                s["flagged"] = json!(load_flag(
                    target,
                    f(&s["achieved_rate"]),
                    u(&s["dropped_arrivals"])
                ));
            }
        }
        let health = &mut merged["generator_health"];
        let theirs = &summary["generator_health"];
        for key in ["sink_dropped", "jsonl_lines"] {
            health[key] = json!(u(&health[key]) + u(&theirs[key]));
        }
        let mut errors = health["generator_errors"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (k, v) in theirs["generator_errors"].as_object().into_iter().flatten() {
            let entry = errors.entry(k.clone()).or_insert(json!(0));
            *entry = json!(u(entry) + u(v));
        }
        health["generator_errors"] = Value::Object(errors);
        let mut reasons = health["invalid_reasons"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for r in theirs["invalid_reasons"].as_array().into_iter().flatten() {
            reasons.push(json!(format!("{name}: {}", r.as_str().unwrap_or(""))));
        }
        health["valid"] = json!(reasons.is_empty());
        health["invalid_reasons"] = Value::Array(reasons);
        let mut cautions = health["cautions"].as_array().cloned().unwrap_or_default();
        for c in theirs["cautions"].as_array().into_iter().flatten() {
            cautions.push(json!(format!("{name}: {}", c.as_str().unwrap_or(""))));
        }
        health["cautions"] = Value::Array(cautions);
        // Each host's own setting; hosts that differ leave it unknown.
        if health["local_port_range"] != theirs["local_port_range"] {
            health["local_port_range"] = Value::Null;
        }
        // Connections of all hosts together; the busiest shard of any.
        health["peak_connections"] =
            json!(u(&health["peak_connections"]) + u(&theirs["peak_connections"]));
        health["shard_busy_pct_max"] =
            json!(f(&health["shard_busy_pct_max"]).max(f(&theirs["shard_busy_pct_max"])));
    }
    let sources: Vec<Value> = summaries
        .iter()
        .map(|(name, s)| json!({"file": name, "run_id": s["run_id"]}))
        .collect();
    merged["merged_from"] = Value::Array(sources);
    merged["run_id"] = json!(format!("merged-{}", summaries.len()));
    evaluate_thresholds(&mut merged);
    Ok(merged)
}

/// The plan's thresholds, as the summary's `plan` lists them.
fn thresholds_of(summary: &Value) -> Thresholds {
    let t = &summary["plan"]["thresholds"];
    Thresholds {
        ttft_p95_ms: t["ttft_p95_ms"].as_f64(),
        p95_ms: t["p95_ms"].as_f64(),
        p99_ms: t["p99_ms"].as_f64(),
        error_rate: t["error_rate"].as_f64(),
        min_rps: t["min_rps"].as_f64(),
    }
}

/// Re-evaluates the plan's thresholds and the knee on (merged) statistics,
/// with the same rules as a single run.
fn evaluate_thresholds(summary: &mut Value) {
    let t = thresholds_of(summary);
    let mut verdicts = Vec::new();
    let mut open = Vec::new();
    for stage in summary["stages"].as_array().into_iter().flatten() {
        let label = stage["label"].as_str().unwrap_or("");
        if stage["open_loop"].is_object() {
            open.push(OpenFigures {
                label: label.to_string(),
                target: f(&stage["open_loop"]["target_rate"]),
                achieved: f(&stage["open_loop"]["achieved_rate"]),
                dropped: u(&stage["open_loop"]["dropped_arrivals"]),
                error_rate: f(&stage["error_rate"]),
                corrected_p99_ms: stage["latency_corrected_ms"]["p99"].as_f64(),
            });
        }
        if !t.any() {
            continue;
        }
        let mut rows: Vec<(&str, &Value, bool)> = Vec::new();
        let scenarios = stage["scenarios"].as_array().map_or(&[][..], Vec::as_slice);
        if scenarios.len() > 1 {
            for s in scenarios {
                rows.push((s["name"].as_str().unwrap_or(""), s, false));
            }
        }
        rows.push(("all", stage, true));
        for (name, stats, total) in rows {
            let figures = Figures {
                requests: u(&stats["requests"]),
                error_rate: f(&stats["error_rate"]),
                rps: f(&stats["rps"]),
                ttft_p95_ms: stats["ttft_ms"]["p95"].as_f64(),
                p95_ms: stats["latency_ms"]["p95"].as_f64(),
                p99_ms: stats["latency_ms"]["p99"].as_f64(),
            };
            let failures = check_thresholds(&t, &figures, total);
            verdicts.push(json!({"stage": label, "scenario": name, "pass": failures.is_empty(), "failures": failures}));
        }
    }
    summary["knee"] = knee_of(&t, &open).map_or(Value::Null, |k| k.to_json());
    summary["pass"] = json!(verdicts.iter().all(|v| v["pass"] == json!(true)));
    summary["thresholds"] = Value::Array(verdicts);
}

/// One compared figure.
struct Delta {
    stage: String,
    scenario: String,
    metric: &'static str,
    old: f64,
    new: f64,
    regression: bool,
}

/// Compares `new` against `old` per stage (matched by label) and scenario
/// (by name, plus `all`): throughput, latency and TTFT percentiles and the
/// error rate. A change for the worse by more than `regress_pct` percent is
/// a regression (for the error rate, also by at least 0.1 percentage
/// point, so 0.01 % → 0.02 % is not one). Returns the table and the number
/// of regressions.
pub fn compare(old: &Value, new: &Value, regress_pct: f64) -> Result<(String, usize), String> {
    let mut deltas = Vec::new();
    let old_stages = old["stages"].as_array().ok_or("old: no stages")?;
    let new_stages = new["stages"].as_array().ok_or("new: no stages")?;
    let mut matched = 0;
    for old_stage in old_stages {
        let label = old_stage["label"].as_str().unwrap_or("");
        let Some(new_stage) = new_stages.iter().find(|s| s["label"] == old_stage["label"]) else {
            continue;
        };
        matched += 1;
        let mut pairs: Vec<(String, &Value, &Value)> = vec![("all".into(), old_stage, new_stage)];
        for o in old_stage["scenarios"].as_array().into_iter().flatten() {
            let name = o["name"].as_str().unwrap_or("");
            if let Some(n) = new_stage["scenarios"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| n["name"] == o["name"])
            {
                if old_stage["scenarios"].as_array().map_or(0, Vec::len) > 1 {
                    pairs.push((name.to_string(), o, n));
                }
            }
        }
        for (scenario, o, n) in pairs {
            let mut add = |metric: &'static str,
                           old: Option<f64>,
                           new: Option<f64>,
                           higher_is_worse: bool| {
                let (Some(a), Some(b)) = (old, new) else {
                    return;
                };
                let worse = if higher_is_worse { b - a } else { a - b };
                let relative = if a.abs() > f64::EPSILON {
                    100.0 * worse / a.abs()
                } else if worse > 0.0 {
                    f64::INFINITY
                } else {
                    0.0
                };
                let mut regression = relative > regress_pct;
                if metric == "error_rate" {
                    regression &= worse >= 0.001;
                }
                deltas.push(Delta {
                    stage: label.to_string(),
                    scenario: scenario.clone(),
                    metric,
                    old: a,
                    new: b,
                    regression,
                });
            };
            add("rps", o["rps"].as_f64(), n["rps"].as_f64(), false);
            for (metric, object, p) in [
                ("latency_p50_ms", "latency_ms", "p50"),
                ("latency_p95_ms", "latency_ms", "p95"),
                ("latency_p99_ms", "latency_ms", "p99"),
                ("ttft_p50_ms", "ttft_ms", "p50"),
                ("ttft_p95_ms", "ttft_ms", "p95"),
                ("ttft_p99_ms", "ttft_ms", "p99"),
            ] {
                add(metric, o[object][p].as_f64(), n[object][p].as_f64(), true);
            }
            add(
                "error_rate",
                o["error_rate"].as_f64(),
                n["error_rate"].as_f64(),
                true,
            );
        }
    }
    if matched == 0 {
        return Err(
            "the two runs have no stage in common (stages are matched by label, e.g. 10:60s)"
                .into(),
        );
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<14} {:<15} {:>12} {:>12} {:>9}  verdict",
        "stage", "scenario", "metric", "old", "new", "change"
    );
    let mut regressions = 0;
    for d in &deltas {
        let change = if d.old.abs() > f64::EPSILON {
            format!("{:+.1}%", 100.0 * (d.new - d.old) / d.old.abs())
        } else {
            "-".to_string()
        };
        if d.regression {
            regressions += 1;
        }
        let _ = writeln!(
            out,
            "{:<14} {:<14} {:<15} {:>12.3} {:>12.3} {:>9}  {}",
            d.stage,
            d.scenario,
            d.metric,
            d.old,
            d.new,
            change,
            if d.regression { "REGRESSION" } else { "ok" }
        );
    }
    let _ = writeln!(
        out,
        "{regressions} regression(s) beyond {regress_pct}% in {} compared figures",
        deltas.len()
    );
    Ok((out, regressions))
}
