//! Report writers: the per-stage console table and `summary-<ts>.json`.
//!
//! Writers take merged results and do no measuring. Percentiles come from
//! the merged HDR histograms (3 significant digits), never from sorted
//! samples.

use crate::engine::{RunResult, StageResult};
use crate::metrics::Hist;
use crate::plan::{self, Plan};
use crate::stage::{self, Load};
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::time::SystemTime;

/// The table's header line.
pub fn table_header() -> String {
    format!(
        "{:<14} {:>9} {:>10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10}  {}",
        "stage",
        "requests",
        "rps",
        "ok%",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "ttft p50",
        "ttft p95",
        "itl p50",
        "out tok/s",
        "errors"
    )
}

/// One table row for a finished stage.
pub fn table_row(result: &StageResult) -> String {
    let m = &result.metrics;
    let ms = |h: &Hist, p: f64| {
        h.percentile_ms(p)
            .map_or("-".to_string(), |v| format!("{v:.2}"))
    };
    let errors: Vec<String> = m
        .error_counts()
        .iter()
        .map(|(class, n)| format!("{}={n}", class.name()))
        .collect();
    let errors = if errors.is_empty() {
        "none".to_string()
    } else {
        errors.join(" ")
    };
    let mut label = result.stage.label();
    if result.stopped_early {
        label.push('*');
    }
    format!(
        "{:<14} {:>9} {:>10.1} {:>7.2} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10.1}  {}",
        label,
        m.requests,
        result.rps(),
        ok_pct(result),
        ms(&m.latency, 50.0),
        ms(&m.latency, 95.0),
        ms(&m.latency, 99.0),
        ms(&m.ttft, 50.0),
        ms(&m.ttft, 95.0),
        ms(&m.itl, 50.0),
        result.output_tokens_per_s(),
        errors
    )
}

fn ok_pct(result: &StageResult) -> f64 {
    let m = &result.metrics;
    if m.requests == 0 {
        0.0
    } else {
        100.0 * m.ok as f64 / m.requests as f64
    }
}

/// The run's header: what is being measured and how.
pub fn run_header(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "loadtest {}: {} {} model={} stream={} shards={} (CPUs {})",
        env!("CARGO_PKG_VERSION"),
        plan.protocol.name(),
        plan.target.url,
        plan.model,
        plan.stream,
        plan.cpus.len(),
        plan::format_cpus(&plan.cpus)
    );
    let stages: Vec<String> = plan.stages.iter().map(|s| s.label()).collect();
    let _ = write!(
        out,
        "stages {} (closed loop), warm-up {} per stage excluded; latency/TTFT/ITL percentiles from HDR histograms, 3 significant digits, of successful requests",
        stages.join(","),
        stage::format_duration(plan.warmup)
    );
    out
}

/// `YYYYMMDDTHHMMSSZ` in UTC (file names).
pub fn timestamp(at: SystemTime) -> String {
    let [y, mo, d, h, mi, se] = utc_fields(at);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{se:02}Z")
}

/// RFC 3339 in UTC.
pub fn rfc3339(at: SystemTime) -> String {
    let [y, mo, d, h, mi, se] = utc_fields(at);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}Z")
}

/// Year, month, day, hour, minute, second in UTC.
fn utc_fields(at: SystemTime) -> [i64; 6] {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = (secs % 86_400) as i64;
    [
        y,
        i64::from(mo),
        i64::from(d),
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
    ]
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn percentiles(h: &Hist) -> Value {
    if h.count() == 0 {
        return Value::Null;
    }
    let p = |q: f64| h.percentile_ms(q);
    json!({
        "count": h.count(),
        "min": h.min_ms(),
        "mean": h.mean_ms(),
        "p50": p(50.0),
        "p90": p(90.0),
        "p95": p(95.0),
        "p99": p(99.0),
        "p99_9": p(99.9),
        "max": h.max_ms(),
        "clamped": h.clamped,
    })
}

/// One stage as JSON.
pub fn stage_json(result: &StageResult) -> Value {
    let m = &result.metrics;
    let load = match result.stage.load {
        Load::Closed { users } => json!({"kind": "closed", "users": users}),
    };
    let mut status = Map::new();
    for (code, n) in m.status_counts() {
        status.insert(code.to_string(), json!(n));
    }
    let mut errors = Map::new();
    for (class, n) in m.error_counts() {
        errors.insert(class.name().to_string(), json!(n));
    }
    let error_rate = if m.requests == 0 {
        0.0
    } else {
        m.errors_total() as f64 / m.requests as f64
    };
    json!({
        "index": result.index,
        "label": result.stage.label(),
        "load": load,
        "duration_s": result.stage.duration.as_secs_f64(),
        "measured_s": result.measured.as_secs_f64(),
        "elapsed_s": result.elapsed.as_secs_f64(),
        "stopped_early": result.stopped_early,
        "requests": m.requests,
        "ok": m.ok,
        "ok_pct": ok_pct(result),
        "error_rate": error_rate,
        "rps": result.rps(),
        "warmup_requests": m.warmup_requests,
        "latency_ms": percentiles(&m.latency),
        "ttft_ms": percentiles(&m.ttft),
        "ttfb_ms": percentiles(&m.ttfb),
        "itl_ms": percentiles(&m.itl),
        "connect_ms": percentiles(&m.connect),
        "prompt_tokens": m.prompt_tokens,
        "completion_tokens": m.completion_tokens,
        "output_tokens_per_s": result.output_tokens_per_s(),
        "tokens_source": "server",
        "usage_missing": m.usage_missing,
        "sse_events": m.sse_events,
        "content_events": m.content_events,
        "content_bytes": m.content_bytes,
        "itl_gaps_dropped": m.itl_gaps_dropped,
        "status_codes": status,
        "errors": errors,
        "retry_after_s_max": m.retry_after_s_max,
        "connects": m.connects,
        "stale_retries": m.stale_retries,
        "connections_open": m.connections_open,
        "shard_cpu_s": result.shard_cpu_s,
        "shard_busy_pct": result.shard_busy().iter().map(|b| b * 100.0).collect::<Vec<_>>(),
    })
}

/// The whole summary document.
pub fn summary_json(plan: &Plan, run: &RunResult, fd_limit: u64, run_id: &str) -> Value {
    json!({
        "schema": 1,
        "tool": "loadtest",
        "version": env!("CARGO_PKG_VERSION"),
        "run_id": run_id,
        "generated": rfc3339(SystemTime::now()),
        "started": rfc3339(run.started_at),
        "target": plan.target.url,
        "protocol": plan.protocol.name(),
        "model": plan.model,
        "stream": plan.stream,
        "max_tokens": plan.max_tokens,
        "warmup_s": plan.warmup.as_secs_f64(),
        "loop_mode": "closed",
        "histogram": {"unit": "us", "significant_digits": crate::limits::HISTOGRAM_SIGFIG, "max_ms": crate::limits::HISTOGRAM_US_MAX / 1000},
        "shards": plan.cpus.len(),
        "cpus": plan.cpus,
        "stages": run.stages.iter().map(stage_json).collect::<Vec<_>>(),
        "generator_health": {
            "fd_limit": fd_limit,
            "aborted": run.aborted,
            "generator_errors": generator_errors(run),
        },
    })
}

fn generator_errors(run: &RunResult) -> Value {
    let mut out = Map::new();
    for stage in &run.stages {
        for (class, n) in stage.metrics.error_counts() {
            if class.is_generator_side() {
                let entry = out.entry(class.name().to_string()).or_insert(json!(0));
                *entry = json!(entry.as_u64().unwrap_or(0) + n);
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_305_600 + 3661);
        assert_eq!(timestamp(t), "20261122T010101Z");
        assert_eq!(rfc3339(t), "2026-11-22T01:01:01Z");
        assert_eq!(timestamp(SystemTime::UNIX_EPOCH), "19700101T000000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
