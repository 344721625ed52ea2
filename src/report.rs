//! Report writers: the per-stage console table (one row per scenario and
//! the stage total), the per-turn table, threshold verdicts and
//! `summary-<ts>.json`.
//!
//! Writers take merged results and do no measuring. Percentiles come from
//! the merged HDR histograms (3 significant digits), never from sorted
//! samples.

use crate::engine::{RunResult, StageResult};
use crate::metrics::{Hist, StageMetrics};
use crate::plan::{self, Content, Plan, Thresholds};
use crate::stage::{self, Load};
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::time::SystemTime;

/// The table's header line.
pub fn table_header() -> String {
    format!(
        "{:<14} {:<14} {:>9} {:>10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10}  {}",
        "stage",
        "scenario",
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

/// The statistics rows of a stage: each scenario's when there are several,
/// then the stage total as `all`.
fn stage_rows<'a>(plan: &'a Plan, stage: &'a StageResult) -> Vec<(&'a str, &'a StageMetrics)> {
    let mut rows: Vec<(&str, &StageMetrics)> = Vec::new();
    if stage.scenarios.len() > 1 {
        for (scenario, m) in plan.scenarios.iter().zip(&stage.scenarios) {
            rows.push((&scenario.name, m));
        }
    }
    rows.push(("all", &stage.metrics));
    rows
}

/// Table rows for a finished stage: one per scenario when there are
/// several, then the stage total (`all`).
pub fn table_rows(plan: &Plan, result: &StageResult) -> Vec<String> {
    let mut rows: Vec<String> = stage_rows(plan, result)
        .into_iter()
        .map(|(name, m)| table_row(result, name, m))
        .collect();
    if let Some(line) = open_loop_line(plan, result) {
        rows.push(line);
    }
    rows
}

/// The open-loop summary line of a stage: target vs achieved rate,
/// scheduler lag, dropped arrivals, and corrected next to uncorrected
/// percentiles.
pub fn open_loop_line(plan: &Plan, result: &StageResult) -> Option<String> {
    let target = result.target_rate()?;
    let achieved = result.achieved_rate().unwrap_or(0.0);
    let m = &result.metrics;
    let ms = |h: &Hist, p: f64| {
        h.percentile_ms(p)
            .map_or("-".to_string(), |v| format!("{v:.2}"))
    };
    let mut line = format!(
        "  open loop: target {target:.1}/s achieved {achieved:.1}/s ({:.2}%), scheduler lag p50 {} p99 {} max {} ms, dropped {} of {} arrivals (max_inflight {}, peak in flight {})",
        100.0 * achieved / target,
        ms(&m.sched_lag, 50.0),
        ms(&m.sched_lag, 99.0),
        m.sched_lag.max_ms().map_or("-".into(), |v| format!("{v:.2}")),
        m.dropped_arrivals,
        m.arrivals,
        plan.max_inflight,
        m.inflight_peak
    );
    let _ = write!(
        line,
        "\n  latency from intended send (corrected) p50 {} p99 {} p99.9 {} ms; from actual send p50 {} p99 {} p99.9 {} ms",
        ms(&m.latency_corrected, 50.0),
        ms(&m.latency_corrected, 99.0),
        ms(&m.latency_corrected, 99.9),
        ms(&m.latency, 50.0),
        ms(&m.latency, 99.0),
        ms(&m.latency, 99.9)
    );
    if m.ttft_corrected.count() > 0 {
        let _ = write!(
            line,
            "\n  ttft corrected p50 {} p99 {} ms; uncorrected p50 {} p99 {} ms",
            ms(&m.ttft_corrected, 50.0),
            ms(&m.ttft_corrected, 99.0),
            ms(&m.ttft, 50.0),
            ms(&m.ttft, 99.0)
        );
    }
    if let Some(reason) = open_loop_flag(result) {
        let _ = write!(line, "\n  FLAGGED: {reason}");
    }
    Some(line)
}

/// Why an open-loop stage did not deliver its load, if it did not: dropped
/// arrivals, or an achieved rate below 99 % of the target.
pub fn open_loop_flag(result: &StageResult) -> Option<String> {
    let target = result.target_rate()?;
    load_flag(
        target,
        result.achieved_rate().unwrap_or(0.0),
        result.metrics.dropped_arrivals,
    )
}

/// `open_loop_flag` on plain figures (also used on merged summaries).
pub fn load_flag(target: f64, achieved: f64, dropped: u64) -> Option<String> {
    let mut reasons = Vec::new();
    if dropped > 0 {
        reasons.push(format!(
            "{dropped} arrivals dropped at max_inflight (the target could not be offered)"
        ));
    }
    if achieved < 0.99 * target {
        reasons.push(format!(
            "achieved {achieved:.1}/s is {:.1}% of the {target:.1}/s target",
            100.0 * achieved / target
        ));
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// What the knee looks at in one open-loop stage.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenFigures {
    /// Stage label.
    pub label: String,
    /// Target arrivals per second.
    pub target: f64,
    /// Achieved arrivals per second.
    pub achieved: f64,
    /// Arrivals dropped at `max_inflight`.
    pub dropped: u64,
    /// Failed / all requests.
    pub error_rate: f64,
    /// Corrected latency p99, milliseconds.
    pub corrected_p99_ms: Option<f64>,
}

/// The knee of an open-loop sweep: the highest-rate stage that held its
/// target (achieved ≥ 99 %, nothing dropped, error rate within
/// `thresholds.error_rate` or 1 %, corrected p99 within `thresholds.p99_ms`
/// when set), and the first stage, in run order, that did not, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Knee {
    /// Label and target rate of the highest stage that held.
    pub highest_ok: Option<(String, f64)>,
    /// Label and reason of the first stage that broke.
    pub first_broken: Option<(String, String)>,
}

impl Knee {
    /// The summary's `knee` object.
    pub fn to_json(&self) -> Value {
        json!({
            "highest_ok": self.highest_ok.as_ref().map(|(label, rate)| json!({"stage": label, "rate": rate})),
            "first_broken": self.first_broken.as_ref().map(|(label, reason)| json!({"stage": label, "reason": reason})),
        })
    }
}

/// Computes the knee over a run's open-loop stages (`None` without any).
pub fn knee(plan: &Plan, run: &RunResult) -> Option<Knee> {
    let stages: Vec<OpenFigures> = run
        .stages
        .iter()
        .filter_map(|stage| {
            Some(OpenFigures {
                label: stage.stage.label(),
                target: stage.target_rate()?,
                achieved: stage.achieved_rate().unwrap_or(0.0),
                dropped: stage.metrics.dropped_arrivals,
                error_rate: error_rate(&stage.metrics),
                corrected_p99_ms: stage.metrics.latency_corrected.percentile_ms(99.0),
            })
        })
        .collect();
    knee_of(&plan.thresholds, &stages)
}

/// The knee over open-loop stages in run order (`None` when there are
/// none); shared by runs and merged summaries.
pub fn knee_of(t: &Thresholds, stages: &[OpenFigures]) -> Option<Knee> {
    if stages.is_empty() {
        return None;
    }
    let mut knee = Knee {
        highest_ok: None,
        first_broken: None,
    };
    for stage in stages {
        let mut reasons = Vec::new();
        if let Some(flag) = load_flag(stage.target, stage.achieved, stage.dropped) {
            reasons.push(flag);
        }
        let max_error = t.error_rate.unwrap_or(0.01);
        if stage.error_rate > max_error {
            reasons.push(format!("error rate {:.4} > {max_error}", stage.error_rate));
        }
        if let (Some(limit), Some(p99)) = (t.p99_ms, stage.corrected_p99_ms) {
            if p99 > limit {
                reasons.push(format!("corrected p99 {p99:.2} ms > {limit} ms"));
            }
        }
        if reasons.is_empty() {
            if knee
                .highest_ok
                .as_ref()
                .is_none_or(|(_, r)| stage.target > *r)
            {
                knee.highest_ok = Some((stage.label.clone(), stage.target));
            }
        } else if knee.first_broken.is_none() {
            knee.first_broken = Some((stage.label.clone(), reasons.join("; ")));
        }
    }
    Some(knee)
}

/// The knee as one line for the console.
pub fn knee_line(knee: &Knee) -> String {
    let held = match &knee.highest_ok {
        Some((label, _)) => format!("highest stage that held its rate: {label}"),
        None => "no open-loop stage held its rate".to_string(),
    };
    match &knee.first_broken {
        Some((label, reason)) => format!("knee: {held}; first to break: {label} ({reason})"),
        None => format!("knee: {held}; no stage broke (raise the rate to find the knee)"),
    }
}

fn table_row(result: &StageResult, name: &str, m: &StageMetrics) -> String {
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
        "{:<14} {:<14} {:>9} {:>10.1} {:>7.2} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10.1}  {}",
        label,
        name,
        m.requests,
        result.rps_of(m),
        ok_pct(m),
        ms(&m.latency, 50.0),
        ms(&m.latency, 95.0),
        ms(&m.latency, 99.0),
        ms(&m.ttft, 50.0),
        ms(&m.ttft, 95.0),
        ms(&m.itl, 50.0),
        result.output_tokens_per_s_of(m),
        errors
    )
}

fn ok_pct(m: &StageMetrics) -> f64 {
    if m.requests == 0 {
        0.0
    } else {
        100.0 * m.ok as f64 / m.requests as f64
    }
}

fn error_rate(m: &StageMetrics) -> f64 {
    if m.requests == 0 {
        0.0
    } else {
        m.errors_total() as f64 / m.requests as f64
    }
}

/// The run's header: what is being measured and how.
pub fn run_header(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "loadtest {}: {} scenario{}, shards={} (CPUs {}), cache_mode={}, seed={}",
        env!("CARGO_PKG_VERSION"),
        plan.scenarios.len(),
        if plan.scenarios.len() == 1 { "" } else { "s" },
        plan.cpus.len(),
        plan::format_cpus(&plan.cpus),
        plan.cache_mode.name(),
        plan.seed
    );
    let total: f64 = plan.scenarios.iter().map(|s| s.weight).sum();
    for s in &plan.scenarios {
        let turns = if s.turns.0 == s.turns.1 {
            s.turns.0.to_string()
        } else {
            format!("{}-{}", s.turns.0, s.turns.1)
        };
        let think = if s.think_time.0 == s.think_time.1 {
            stage::format_duration(s.think_time.0)
        } else {
            format!(
                "{}-{}",
                stage::format_duration(s.think_time.0),
                stage::format_duration(s.think_time.1)
            )
        };
        let _ = writeln!(
            out,
            "  {:<14} {:>5.1}%  {} {} model={} stream={} turns={} think={} content={} max_tokens={}",
            s.name,
            100.0 * s.weight / total,
            s.protocol.name(),
            plan.targets[s.target].url,
            s.model,
            s.stream,
            turns,
            think,
            content_label(&s.content),
            s.max_tokens
        );
    }
    let stages: Vec<String> = plan.stages.iter().map(|s| s.label()).collect();
    let _ = write!(
        out,
        "stages {} ({} loop), warm-up {} per stage excluded; latency/TTFT/ITL percentiles from HDR histograms, 3 significant digits, of successful requests",
        stages.join(","),
        loop_mode(plan),
        stage::format_duration(plan.warmup)
    );
    out
}

fn content_label(content: &Content) -> String {
    match content {
        Content::Pool(list) => format!("pool({})", list.len()),
        Content::Scripted(list) => format!("scripted({})", list.len()),
        Content::Sized(tokens) => format!("sized(~{tokens} tokens)"),
    }
}

/// Per-turn means of each multi-turn scenario over the whole run, to show
/// context (and so cost and latency) growing with the turn. Empty when no
/// scenario has more than one turn.
pub fn turn_table(plan: &Plan, run: &RunResult) -> String {
    let mut out = String::new();
    for (i, scenario) in plan.scenarios.iter().enumerate() {
        if scenario.single_turn() {
            continue;
        }
        let mut merged = StageMetrics::new();
        for stage in &run.stages {
            merged.merge(&stage.scenarios[i]);
        }
        let rows = merged.turn_rows();
        if rows.is_empty() {
            continue;
        }
        if out.is_empty() {
            let _ = writeln!(
                out,
                "{:<14} {:>5} {:>9} {:>7} {:>14} {:>12} {:>12}",
                "scenario", "turn", "requests", "ok%", "prompt tok avg", "latency avg", "ttft avg"
            );
        }
        for (turn, row) in rows {
            let turn = if turn == crate::limits::TURN_ROWS {
                format!("{turn}+")
            } else {
                turn.to_string()
            };
            let opt = |v: Option<f64>, digits: usize| {
                v.map_or("-".to_string(), |v| format!("{v:.digits$}"))
            };
            let _ = writeln!(
                out,
                "{:<14} {:>5} {:>9} {:>7.2} {:>14} {:>12} {:>12}",
                scenario.name,
                turn,
                row.requests,
                if row.requests == 0 {
                    0.0
                } else {
                    100.0 * row.ok as f64 / row.requests as f64
                },
                opt(row.mean_prompt_tokens(), 1),
                opt(row.mean_latency_ms(), 2),
                opt(row.mean_ttft_ms(), 2)
            );
        }
    }
    out
}

/// What thresholds are checked against, for one stage × scenario (or the
/// stage total).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    /// Requests measured.
    pub requests: u64,
    /// Failed / all requests.
    pub error_rate: f64,
    /// Requests per second.
    pub rps: f64,
    /// TTFT p95, milliseconds.
    pub ttft_p95_ms: Option<f64>,
    /// Latency p95, milliseconds.
    pub p95_ms: Option<f64>,
    /// Latency p99, milliseconds.
    pub p99_ms: Option<f64>,
}

/// Threshold failures of one stage × scenario (or stage total), as
/// readable reasons; empty when it passed. `min_rps` applies to the stage
/// total only, since a scenario's rate is its weight's share.
pub fn threshold_failures(
    t: &Thresholds,
    result: &StageResult,
    m: &StageMetrics,
    total: bool,
) -> Vec<String> {
    let figures = Figures {
        requests: m.requests,
        error_rate: error_rate(m),
        rps: result.rps_of(m),
        ttft_p95_ms: m.ttft.percentile_ms(95.0),
        p95_ms: m.latency.percentile_ms(95.0),
        p99_ms: m.latency.percentile_ms(99.0),
    };
    check_thresholds(t, &figures, total)
}

/// `threshold_failures` on plain figures (also used on merged summaries).
pub fn check_thresholds(t: &Thresholds, f: &Figures, total: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut over = |what: &str, value: Option<f64>, limit: Option<f64>| {
        if let (Some(v), Some(l)) = (value, limit) {
            if v > l {
                out.push(format!("{what} {v:.2} ms > {l} ms"));
            }
        }
    };
    over("ttft p95", f.ttft_p95_ms, t.ttft_p95_ms);
    over("p95", f.p95_ms, t.p95_ms);
    over("p99", f.p99_ms, t.p99_ms);
    if let Some(limit) = t.error_rate {
        if f.error_rate > limit {
            out.push(format!("error rate {:.4} > {limit}", f.error_rate));
        }
    }
    if let (true, Some(limit)) = (total, t.min_rps) {
        if f.rps < limit {
            out.push(format!("rps {:.1} < {limit}", f.rps));
        }
    }
    if f.requests == 0 && t.any() {
        out.push("no requests measured".to_string());
    }
    out
}

/// Every threshold verdict of a run: (stage label, scenario or `all`,
/// failures). Empty when the profile sets no thresholds.
pub fn threshold_verdicts(plan: &Plan, run: &RunResult) -> Vec<(String, String, Vec<String>)> {
    let t = &plan.thresholds;
    if !t.any() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for stage in &run.stages {
        if plan.scenarios.len() > 1 {
            for (scenario, m) in plan.scenarios.iter().zip(&stage.scenarios) {
                if m.requests == 0 && scenario.weight == 0.0 {
                    continue;
                }
                out.push((
                    stage.stage.label(),
                    scenario.name.clone(),
                    threshold_failures(t, stage, m, false),
                ));
            }
        }
        out.push((
            stage.stage.label(),
            "all".to_string(),
            threshold_failures(t, stage, &stage.metrics, true),
        ));
    }
    out
}

/// Columns of `report-<ts>.csv`, one row per stage × scenario (and the
/// stage total as scenario `all`).
pub const CSV_COLUMNS: &[&str] = &[
    "stage_index",
    "stage",
    "kind",
    "users",
    "target_rate",
    "scenario",
    "requests",
    "ok",
    "ok_pct",
    "error_rate",
    "rps",
    "achieved_rate",
    "dropped_arrivals",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_p999_ms",
    "latency_corrected_p50_ms",
    "latency_corrected_p99_ms",
    "sched_lag_p99_ms",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "ttft_p99_ms",
    "itl_p50_ms",
    "itl_p99_ms",
    "output_tokens_per_s",
    "prompt_tokens",
    "completion_tokens",
    "status_codes",
    "errors",
];

/// `report-<ts>.csv`: a header and one row per stage × scenario.
pub fn csv(plan: &Plan, run: &RunResult) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push('\n');
    for stage in &run.stages {
        for (name, m) in stage_rows(plan, stage) {
            let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
            let (kind, users, rate) = match stage.stage.load {
                Load::Closed { users } => ("closed", users.to_string(), String::new()),
                Load::Open { rate, .. } => ("open", String::new(), format!("{rate}")),
            };
            let total = name == "all";
            let statuses: Vec<String> = m
                .status_counts()
                .iter()
                .map(|(c, n)| format!("{c}={n}"))
                .collect();
            let errors: Vec<String> = m
                .error_counts()
                .iter()
                .map(|(c, n)| format!("{}={n}", c.name()))
                .collect();
            let fields = [
                stage.index.to_string(),
                stage.stage.label(),
                kind.to_string(),
                users,
                rate,
                name.to_string(),
                m.requests.to_string(),
                m.ok.to_string(),
                format!("{:.3}", ok_pct(m)),
                format!("{:.6}", error_rate(m)),
                format!("{:.3}", stage.rps_of(m)),
                if total {
                    num(stage.achieved_rate())
                } else {
                    String::new()
                },
                if stage.stage.is_open() {
                    m.dropped_arrivals.to_string()
                } else {
                    String::new()
                },
                num(m.latency.percentile_ms(50.0)),
                num(m.latency.percentile_ms(90.0)),
                num(m.latency.percentile_ms(95.0)),
                num(m.latency.percentile_ms(99.0)),
                num(m.latency.percentile_ms(99.9)),
                num(m.latency_corrected.percentile_ms(50.0)),
                num(m.latency_corrected.percentile_ms(99.0)),
                num(m.sched_lag.percentile_ms(99.0)),
                num(m.ttft.percentile_ms(50.0)),
                num(m.ttft.percentile_ms(95.0)),
                num(m.ttft.percentile_ms(99.0)),
                num(m.itl.percentile_ms(50.0)),
                num(m.itl.percentile_ms(99.0)),
                format!("{:.3}", stage.output_tokens_per_s_of(m)),
                m.prompt_tokens.to_string(),
                m.completion_tokens.to_string(),
                statuses.join(";"),
                errors.join(";"),
            ];
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&line.join(","));
            out.push('\n');
        }
    }
    out
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// `report-<ts>.txt`: everything a person reads after a run, in one file:
/// the run header, per stage × scenario statistics, the per-turn table,
/// generator health, thresholds and the knee.
pub fn text_report(plan: &Plan, run: &RunResult, health: &Health) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", run_header(plan));
    let _ = writeln!(out, "started {}", rfc3339(run.started_at));
    let ms = |h: &Hist, p: f64| {
        h.percentile_ms(p)
            .map_or("-".to_string(), |v| format!("{v:.2}"))
    };
    for stage in &run.stages {
        let _ = writeln!(
            out,
            "\n== stage {} {}{} (measured {:.1} s)",
            stage.index + 1,
            stage.stage.label(),
            if stage.stopped_early {
                ", stopped early"
            } else {
                ""
            },
            stage.measured.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "{:<14} {:>9} {:>10} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
            "scenario", "requests", "rps", "ok%", "p50", "p90", "p95", "p99", "p99.9", "ttft50", "ttft95",
            "ttft99", "itl50", "itl99", "out tok/s"
        );
        let rows = stage_rows(plan, stage);
        for (name, m) in &rows {
            let _ = writeln!(
                out,
                "{:<14} {:>9} {:>10.1} {:>7.2} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10.1}",
                name,
                m.requests,
                stage.rps_of(m),
                ok_pct(m),
                ms(&m.latency, 50.0),
                ms(&m.latency, 90.0),
                ms(&m.latency, 95.0),
                ms(&m.latency, 99.0),
                ms(&m.latency, 99.9),
                ms(&m.ttft, 50.0),
                ms(&m.ttft, 95.0),
                ms(&m.ttft, 99.0),
                ms(&m.itl, 50.0),
                ms(&m.itl, 99.0),
                stage.output_tokens_per_s_of(m)
            );
        }
        for (name, m) in &rows {
            let statuses: Vec<String> = m
                .status_counts()
                .iter()
                .map(|(c, n)| format!("{c}={n}"))
                .collect();
            let errors: Vec<String> = m
                .error_counts()
                .iter()
                .map(|(c, n)| format!("{}={n}", c.name()))
                .collect();
            let _ = writeln!(
                out,
                "  {name}: status {}; errors {}",
                if statuses.is_empty() {
                    "-".to_string()
                } else {
                    statuses.join(" ")
                },
                if errors.is_empty() {
                    "none".to_string()
                } else {
                    errors.join(" ")
                }
            );
        }
        if let Some(line) = open_loop_line(plan, stage) {
            let _ = writeln!(out, "{line}");
        }
    }
    let turns = turn_table(plan, run);
    if !turns.is_empty() {
        let _ = write!(
            out,
            "\n== per turn (all stages; prompt tokens from server usage)\n{turns}"
        );
    }
    let _ = writeln!(out, "\n== aggregate");
    let mut all = StageMetrics::new();
    for stage in &run.stages {
        all.merge(&stage.metrics);
    }
    let _ = writeln!(
        out,
        "turns {} (ok {}), conversations started {} completed {} failed {}, prompt tokens {} completion tokens {} (server usage; {} responses without usage, estimated {} / {})",
        all.requests,
        all.ok,
        all.conversations_started,
        all.conversations_completed,
        all.conversations_failed,
        all.prompt_tokens,
        all.completion_tokens,
        all.usage_missing,
        all.prompt_tokens_estimated,
        all.completion_tokens_estimated
    );
    let _ = writeln!(out, "\n== generator health");
    let invalid = generator_verdict(run, health);
    let _ = writeln!(
        out,
        "fd limit {}; peak connections {}; JSONL lines {} dropped {}; shard CPU busy max {:.0}%",
        health.fd_limit,
        run.stages
            .iter()
            .map(|s| s.metrics.connections_open.max(s.metrics.inflight_peak))
            .max()
            .unwrap_or(0),
        health.jsonl_lines,
        health.sink_dropped,
        run.stages
            .iter()
            .flat_map(|s| s.shard_busy())
            .fold(0.0f64, f64::max)
            * 100.0
    );
    let gen = all.error_count(crate::metrics::ErrorClass::GenPortExhaustion)
        + all.error_count(crate::metrics::ErrorClass::GenFdExhaustion);
    let _ = writeln!(out, "port/fd exhaustion errors {gen}");
    for stage in run.stages.iter().filter(|s| s.stage.is_open()) {
        let _ = writeln!(
            out,
            "stage {}: scheduler lag p50 {} p99 {} max {} ms",
            stage.stage.label(),
            ms(&stage.metrics.sched_lag, 50.0),
            ms(&stage.metrics.sched_lag, 99.0),
            stage
                .metrics
                .sched_lag
                .max_ms()
                .map_or("-".into(), |v| format!("{v:.2}"))
        );
    }
    let cautions = generator_cautions(plan, run, health);
    if invalid.is_empty() && cautions.is_empty() {
        let _ = writeln!(out, "verdict: valid (the generator was not the bottleneck)");
    } else if invalid.is_empty() {
        for caution in &cautions {
            let _ = writeln!(out, "verdict: valid, with caution: {caution}");
        }
    } else {
        for reason in &invalid {
            let _ = writeln!(out, "verdict: INVALID: {reason}");
        }
    }
    let verdicts = threshold_verdicts(plan, run);
    let _ = writeln!(out, "\n== thresholds");
    if verdicts.is_empty() {
        let _ = writeln!(out, "none set");
    } else {
        for (stage, scenario, failures) in &verdicts {
            let _ = writeln!(
                out,
                "{stage} {scenario}: {}",
                if failures.is_empty() {
                    "PASS".to_string()
                } else {
                    format!("FAIL ({})", failures.join("; "))
                }
            );
        }
        let failed = verdicts.iter().any(|v| !v.2.is_empty());
        let _ = writeln!(out, "overall: {}", if failed { "FAIL" } else { "PASS" });
    }
    if let Some(knee) = knee(plan, run) {
        let _ = writeln!(out, "\n== knee\n{}", knee_line(&knee));
    }
    out
}

/// Escapes a Prometheus label value.
fn prom_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `metrics-<ts>.prom`: the run in the Prometheus text exposition format
/// (for a textfile collector or a Pushgateway). Counters per stage and
/// scenario (stage total as `scenario="all"`), rates as gauges, and
/// latency, TTFT and ITL as summaries with quantiles 0.5/0.9/0.95/0.99/
/// 0.999, in seconds.
pub fn prometheus(plan: &Plan, run: &RunResult) -> String {
    struct Family {
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        lines: Vec<String>,
    }
    let mut families: Vec<Family> = Vec::new();
    let mut family = |name: &'static str, kind: &'static str, help: &'static str| -> usize {
        families.push(Family {
            name,
            kind,
            help,
            lines: Vec::new(),
        });
        families.len() - 1
    };
    let requests = family(
        "loadtest_requests_total",
        "counter",
        "Requests started in the measured window and finished.",
    );
    let ok = family(
        "loadtest_requests_ok_total",
        "counter",
        "Successful requests (2xx with content).",
    );
    let errors = family(
        "loadtest_errors_total",
        "counter",
        "Failed requests by error class.",
    );
    let responses = family(
        "loadtest_responses_total",
        "counter",
        "Responses by HTTP status code.",
    );
    let prompt = family(
        "loadtest_prompt_tokens_total",
        "counter",
        "Prompt tokens reported by the server.",
    );
    let completion = family(
        "loadtest_completion_tokens_total",
        "counter",
        "Completion tokens reported by the server.",
    );
    let rps = family(
        "loadtest_requests_per_second",
        "gauge",
        "Requests per second over the measured window.",
    );
    let tokens = family(
        "loadtest_output_tokens_per_second",
        "gauge",
        "Completion tokens per second over the measured window.",
    );
    let target = family(
        "loadtest_target_arrival_rate",
        "gauge",
        "Open loop: arrivals per second asked for.",
    );
    let achieved = family(
        "loadtest_achieved_arrival_rate",
        "gauge",
        "Open loop: conversations started per second.",
    );
    let dropped = family(
        "loadtest_dropped_arrivals_total",
        "counter",
        "Open loop: arrivals not sent because max_inflight was reached.",
    );
    type Pick = fn(&StageMetrics) -> &Hist;
    let summaries: Vec<(usize, Pick)> = vec![
        (
            family(
                "loadtest_latency_seconds",
                "summary",
                "Whole-request latency of successful requests, from the actual send.",
            ),
            |m| &m.latency,
        ),
        (
            family(
                "loadtest_ttft_seconds",
                "summary",
                "Time to first token of successful streamed requests, from the actual send.",
            ),
            |m| &m.ttft,
        ),
        (
            family(
                "loadtest_itl_seconds",
                "summary",
                "Gaps between content events of successful streamed requests.",
            ),
            |m| &m.itl,
        ),
        (
            family(
                "loadtest_latency_corrected_seconds",
                "summary",
                "Open loop: latency from the intended send time.",
            ),
            |m| &m.latency_corrected,
        ),
        (
            family(
                "loadtest_ttft_corrected_seconds",
                "summary",
                "Open loop: TTFT from the intended send time.",
            ),
            |m| &m.ttft_corrected,
        ),
        (
            family(
                "loadtest_scheduler_lag_seconds",
                "summary",
                "Open loop: actual minus intended start of arrivals.",
            ),
            |m| &m.sched_lag,
        ),
    ];
    for stage in &run.stages {
        for (name, m) in stage_rows(plan, stage) {
            let labels = format!(
                "stage=\"{}\",stage_index=\"{}\",scenario=\"{}\"",
                prom_label(&stage.stage.label()),
                stage.index,
                prom_label(name)
            );
            let put = |families: &mut Vec<Family>, f: usize, extra: &str, value: String| {
                let name = families[f].name;
                families[f]
                    .lines
                    .push(format!("{name}{{{labels}{extra}}} {value}"));
            };
            put(&mut families, requests, "", m.requests.to_string());
            put(&mut families, ok, "", m.ok.to_string());
            for (class, n) in m.error_counts() {
                put(
                    &mut families,
                    errors,
                    &format!(",class=\"{}\"", class.name()),
                    n.to_string(),
                );
            }
            for (code, n) in m.status_counts() {
                put(
                    &mut families,
                    responses,
                    &format!(",code=\"{code}\""),
                    n.to_string(),
                );
            }
            put(&mut families, prompt, "", m.prompt_tokens.to_string());
            put(
                &mut families,
                completion,
                "",
                m.completion_tokens.to_string(),
            );
            put(&mut families, rps, "", format!("{}", stage.rps_of(m)));
            put(
                &mut families,
                tokens,
                "",
                format!("{}", stage.output_tokens_per_s_of(m)),
            );
            if name == "all" {
                if let (Some(t), Some(a)) = (stage.target_rate(), stage.achieved_rate()) {
                    put(&mut families, target, "", format!("{t}"));
                    put(&mut families, achieved, "", format!("{a}"));
                }
            }
            if stage.stage.is_open() {
                put(&mut families, dropped, "", m.dropped_arrivals.to_string());
            }
            for (f, get) in &summaries {
                let h = get(m);
                let Some(inner) = h.get() else {
                    continue;
                };
                for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
                    let seconds = inner.value_at_quantile(q) as f64 / 1e6;
                    put(
                        &mut families,
                        *f,
                        &format!(",quantile=\"{q}\""),
                        format!("{seconds}"),
                    );
                }
                let base = families[*f].name;
                let sum = inner.mean() * inner.len() as f64 / 1e6;
                families[*f]
                    .lines
                    .push(format!("{base}_sum{{{labels}}} {sum}"));
                families[*f]
                    .lines
                    .push(format!("{base}_count{{{labels}}} {}", inner.len()));
            }
        }
    }
    let mut out = String::new();
    for f in &families {
        if f.lines.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for line in &f.lines {
            let _ = writeln!(out, "{line}");
        }
    }
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

/// Statistics of one scenario (or the stage total) in one stage.
fn stats_json(result: &StageResult, m: &StageMetrics) -> Value {
    let mut status = Map::new();
    for (code, n) in m.status_counts() {
        status.insert(code.to_string(), json!(n));
    }
    let mut errors = Map::new();
    for (class, n) in m.error_counts() {
        errors.insert(class.name().to_string(), json!(n));
    }
    let turns: Vec<Value> = m
        .turn_rows()
        .into_iter()
        .map(|(turn, row)| {
            json!({
                "turn": turn,
                "and_later": turn == crate::limits::TURN_ROWS,
                "requests": row.requests,
                "ok": row.ok,
                "prompt_tokens_mean": row.mean_prompt_tokens(),
                "latency_ms_mean": row.mean_latency_ms(),
                "ttft_ms_mean": row.mean_ttft_ms(),
            })
        })
        .collect();
    json!({
        "requests": m.requests,
        "ok": m.ok,
        "ok_pct": ok_pct(m),
        "error_rate": error_rate(m),
        "rps": result.rps_of(m),
        "warmup_requests": m.warmup_requests,
        "latency_ms": percentiles(&m.latency),
        "ttft_ms": percentiles(&m.ttft),
        "ttfb_ms": percentiles(&m.ttfb),
        "itl_ms": percentiles(&m.itl),
        "connect_ms": percentiles(&m.connect),
        "latency_corrected_ms": percentiles(&m.latency_corrected),
        "ttft_corrected_ms": percentiles(&m.ttft_corrected),
        "sched_lag_ms": percentiles(&m.sched_lag),
        "arrivals": m.arrivals,
        "dropped_arrivals": m.dropped_arrivals,
        "prompt_tokens": m.prompt_tokens,
        "completion_tokens": m.completion_tokens,
        "cached_prompt_tokens": m.cached_tokens,
        "output_tokens_per_s": result.output_tokens_per_s_of(m),
        "tokens_source": "server",
        "usage_missing": m.usage_missing,
        "prompt_tokens_estimated": m.prompt_tokens_estimated,
        "completion_tokens_estimated": m.completion_tokens_estimated,
        "conversations": {
            "started": m.conversations_started,
            "completed": m.conversations_completed,
            "failed": m.conversations_failed,
            "cut_by_stage_end": m.conversations_cut,
            "context_limit": m.context_limit,
        },
        "turns": turns,
        "sse_events": m.sse_events,
        "content_events": m.content_events,
        "content_bytes": m.content_bytes,
        "itl_gaps_dropped": m.itl_gaps_dropped,
        "status_codes": status,
        "errors": errors,
        "retry_after_s_max": m.retry_after_s_max,
        "connects": m.connects,
        "stale_retries": m.stale_retries,
        "histograms": histograms_json(m),
    })
}

/// Every non-empty histogram of `m` as HdrHistogram V2 compressed base64,
/// in microseconds, so summaries can be merged exactly.
fn histograms_json(m: &StageMetrics) -> Value {
    let mut out = Map::new();
    for (name, h) in HISTOGRAMS.iter().map(|(name, get)| (name, get(m))) {
        if let Some(encoded) = h.to_base64() {
            out.insert(name.to_string(), json!(encoded));
        }
    }
    Value::Object(out)
}

/// The histograms a summary carries: name in `histograms`, the key of its
/// percentile object, and where it lives in `StageMetrics`.
#[allow(clippy::type_complexity)]
pub const HISTOGRAMS: &[(&str, fn(&StageMetrics) -> &Hist)] = &[
    ("latency_ms", |m| &m.latency),
    ("ttft_ms", |m| &m.ttft),
    ("ttfb_ms", |m| &m.ttfb),
    ("itl_ms", |m| &m.itl),
    ("connect_ms", |m| &m.connect),
    ("latency_corrected_ms", |m| &m.latency_corrected),
    ("ttft_corrected_ms", |m| &m.ttft_corrected),
    ("sched_lag_ms", |m| &m.sched_lag),
];

/// A histogram's percentile object (as in the summary).
pub fn percentiles_json(h: &Hist) -> Value {
    percentiles(h)
}

/// One stage as JSON: the stage total's statistics at the top level, and
/// each scenario's under `scenarios`.
pub fn stage_json(plan: &Plan, result: &StageResult) -> Value {
    let load = match result.stage.load {
        Load::Closed { users } => json!({"kind": "closed", "users": users}),
        Load::Open { rate, poisson } => json!({
            "kind": "open",
            "rate": rate,
            "arrival": if poisson { "poisson" } else { "constant" },
        }),
    };
    let open_loop = result.target_rate().map(|target| {
        let m = &result.metrics;
        json!({
            "target_rate": target,
            "achieved_rate": result.achieved_rate(),
            "achieved_pct": result.achieved_rate().map(|a| 100.0 * a / target),
            "arrivals": m.arrivals,
            "dropped_arrivals": m.dropped_arrivals,
            "max_inflight": plan.max_inflight,
            "inflight_peak": m.inflight_peak,
            "flagged": open_loop_flag(result),
        })
    });
    let mut out = json!({
        "index": result.index,
        "label": result.stage.label(),
        "load": load,
        "duration_s": result.stage.duration.as_secs_f64(),
        "measured_s": result.measured.as_secs_f64(),
        "elapsed_s": result.elapsed.as_secs_f64(),
        "stopped_early": result.stopped_early,
        "open_loop": open_loop,
        "connections_open": result.metrics.connections_open,
        "shard_cpu_s": result.shard_cpu_s,
        "shard_busy_pct": result.shard_busy().iter().map(|b| b * 100.0).collect::<Vec<_>>(),
        "time_series": result.series,
    });
    if let (Value::Object(map), Value::Object(stats)) =
        (&mut out, stats_json(result, &result.metrics))
    {
        map.extend(stats);
    }
    let scenarios: Vec<Value> = plan
        .scenarios
        .iter()
        .zip(&result.scenarios)
        .map(|(scenario, m)| {
            let mut v = json!({"name": scenario.name});
            if let (Value::Object(map), Value::Object(stats)) = (&mut v, stats_json(result, m)) {
                map.extend(stats);
            }
            v
        })
        .collect();
    if let Value::Object(map) = &mut out {
        map.insert("scenarios".into(), Value::Array(scenarios));
    }
    out
}

/// The resolved plan as JSON (`loadtest validate` and the summary).
/// Secret header values are masked.
pub fn plan_json(plan: &Plan) -> Value {
    let total: f64 = plan.scenarios.iter().map(|s| s.weight).sum();
    let scenarios: Vec<Value> = plan
        .scenarios
        .iter()
        .map(|s| {
            let mut headers = Map::new();
            for (name, value) in &s.headers {
                headers.insert(name.clone(), json!(mask_secret(name, value)));
            }
            let content = match &s.content {
                Content::Pool(list) => json!({"mode": "pool", "prompts": list.len()}),
                Content::Scripted(list) => json!({"mode": "scripted", "script": list.len()}),
                Content::Sized(tokens) => json!({"mode": "sized", "approx_input_tokens": tokens}),
            };
            json!({
                "name": s.name,
                "weight": s.weight,
                "share_pct": 100.0 * s.weight / total,
                "protocol": s.protocol.name(),
                "target": plan.targets[s.target].url,
                "path": plan.targets[s.target].path,
                "address": plan.targets[s.target].addr.to_string(),
                "model": s.model,
                "system_chars": s.system.as_ref().map(|t| t.chars().count()),
                "max_tokens": s.max_tokens,
                "stream": s.stream,
                "auth": s.auth.name(),
                "headers": headers,
                "timeout_s": s.timeout.as_secs_f64(),
                "turns": {"min": s.turns.0, "max": s.turns.1},
                "think_time_s": {"min": s.think_time.0.as_secs_f64(), "max": s.think_time.1.as_secs_f64()},
                "content": content,
            })
        })
        .collect();
    let t = &plan.thresholds;
    json!({
        "scenarios": scenarios,
        "stages": plan.stages.iter().map(|s| s.label()).collect::<Vec<_>>(),
        "max_inflight": plan.max_inflight,
        "warmup_s": plan.warmup.as_secs_f64(),
        "connect_timeout_s": plan.connect_timeout.as_secs_f64(),
        "cache_mode": plan.cache_mode.name(),
        "shared_prefix_tokens": plan.shared_prefix.as_ref().map(|_| plan.shared_prefix_tokens),
        "correlation": {
            "uuid_in_prompt": plan.uuid_in_prompt && plan.cache_mode != crate::plan::CacheMode::Natural,
            "header": plan.correlation_header,
        },
        "thresholds": {
            "ttft_p95_ms": t.ttft_p95_ms,
            "p95_ms": t.p95_ms,
            "p99_ms": t.p99_ms,
            "error_rate": t.error_rate,
            "min_rps": t.min_rps,
        },
        "keep_alive": plan.keep_alive,
        "insecure": plan.insecure,
        "capture_error_body": plan.capture_error_body,
        "seed": plan.seed,
        "shards": plan.cpus.len(),
        "cpus": plan.cpus,
    })
}

/// Hides API keys: the value of an auth-looking header keeps its scheme
/// and last four characters; the `REPLACE_WITH_VK` placeholder is shown.
pub fn mask_secret(name: &str, value: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let secret = lower == "authorization"
        || lower.contains("api-key")
        || lower.contains("apikey")
        || lower.contains("token")
        || lower.contains("secret");
    if !secret || value.contains("REPLACE_WITH_VK") {
        return value.to_string();
    }
    let (scheme, key) = match value.split_once(' ') {
        Some((scheme, key)) => (format!("{scheme} "), key),
        None => (String::new(), value),
    };
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if key.chars().count() <= 8 {
        format!("{scheme}***")
    } else {
        format!("{scheme}***{tail}")
    }
}

/// `closed`, `open` or `mixed`.
fn loop_mode(plan: &Plan) -> &'static str {
    let open = plan.stages.iter().filter(|s| s.is_open()).count();
    match open {
        0 => "closed",
        n if n == plan.stages.len() => "open",
        _ => "mixed",
    }
}

/// What the run learned about the generator itself.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// The open-files limit after raising it.
    pub fd_limit: u64,
    /// JSONL records dropped because a shard's queue was full.
    pub sink_dropped: u64,
    /// JSONL lines written.
    pub jsonl_lines: u64,
    /// The JSONL file, when one was written.
    pub results_file: Option<String>,
    /// `net.ipv4.ip_local_port_range`, when known.
    pub local_port_range: Option<(u32, u32)>,
}

/// Why the run measured the generator rather than the target, if it did:
/// generator-side errors (port or file-descriptor exhaustion, panics),
/// dropped JSONL records, or open-loop arrivals starting more than
/// `limits::SCHED_LAG_INVALID` late at p99. Empty when the run is valid.
pub fn generator_verdict(run: &RunResult, health: &Health) -> Vec<String> {
    let mut reasons = Vec::new();
    for (class, n) in generator_errors(run)
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
    {
        reasons.push(format!("{n} {class} errors on the generator"));
    }
    if health.sink_dropped > 0 {
        reasons.push(format!(
            "{} per-turn records dropped because the JSONL writer fell behind",
            health.sink_dropped
        ));
    }
    let limit_ms = crate::limits::SCHED_LAG_INVALID.as_secs_f64() * 1000.0;
    for stage in &run.stages {
        if let Some(p99) = stage.metrics.sched_lag.percentile_ms(99.0) {
            if p99 > limit_ms {
                reasons.push(format!(
                    "stage {}: scheduler lag p99 {p99:.1} ms > {limit_ms:.0} ms (the generator could not keep pace)",
                    stage.stage.label()
                ));
            }
        }
    }
    reasons
}

/// What leaves a valid run's numbers usable with care:
/// - open-loop stages whose scheduler lag p99 passed
///   `limits::SCHED_LAG_CAUTION` without reaching
///   `limits::SCHED_LAG_INVALID`;
/// - stages that held more connections per target address than half the
///   local port range. Linux looks for a free source port in one half of
///   the range (one parity) before the other, so once that half is taken
///   by connections to one address every connect scans it: measured on
///   Linux 6.18, connects to one address went from ~20 µs to ~0.8 ms each
///   between 14,000 and 16,000 open (range 32768–60999), and stayed at
///   ~20 µs to 18,000 with the range widened (`benches/README.md`). That
///   time lands in `connect_ms` and the corrected latency as if the target
///   were slow to accept;
/// - stages in which a shard was busier than `limits::SHARD_BUSY_CAUTION`.
pub fn generator_cautions(plan: &Plan, run: &RunResult, health: &Health) -> Vec<String> {
    let caution_ms = crate::limits::SCHED_LAG_CAUTION.as_secs_f64() * 1000.0;
    let invalid_ms = crate::limits::SCHED_LAG_INVALID.as_secs_f64() * 1000.0;
    let mut cautions: Vec<String> = run
        .stages
        .iter()
        .filter_map(|stage| {
            let p99 = stage.metrics.sched_lag.percentile_ms(99.0)?;
            (p99 > caution_ms && p99 <= invalid_ms).then(|| {
                format!(
                    "stage {}: scheduler lag p99 {p99:.1} ms > {caution_ms:.0} ms (arrivals went out late in bursts; the corrected percentiles include that lateness, the uncorrected ones do not)",
                    stage.stage.label()
                )
            })
        })
        .collect();
    let busy_limit = crate::limits::SHARD_BUSY_CAUTION;
    for stage in &run.stages {
        let busiest = stage
            .shard_busy()
            .into_iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((shard, busy)) = busiest.filter(|&(_, busy)| busy > busy_limit) {
            cautions.push(format!(
                "stage {}: generator shard {shard} was {:.0}% busy (over {:.0}%), so the generator may have been the bottleneck: its own queueing is in the latencies and it may have capped the rate (give it more CPUs with --cpus, or more hosts and `loadtest merge`)",
                stage.stage.label(),
                busy * 100.0,
                busy_limit * 100.0
            ));
        }
    }
    if let Some((low, high)) = health.local_port_range {
        let mut addresses: Vec<_> = plan.targets.iter().map(|t| t.addr).collect();
        addresses.sort();
        addresses.dedup();
        let half = half_port_range((low, high));
        for stage in &run.stages {
            let peak = stage.metrics.connections_open;
            if peak > half * addresses.len().max(1) as u64 {
                cautions.push(format!(
                    "stage {}: {peak} connections open to {} target address(es), more than half the local port range {low}-{high} each; past that point each new connect scans the taken ports for a free one, so connect_ms (and the corrected latency) may include generator time (widen net.ipv4.ip_local_port_range, see tuning/README.md)",
                    stage.stage.label(),
                    addresses.len()
                ));
            }
        }
    }
    cautions
}

/// Half the ports of a local port range `(low, high)`: past this many
/// connections to one address, Linux connects get slow (see
/// `generator_cautions`).
pub fn half_port_range((low, high): (u32, u32)) -> u64 {
    u64::from(high.saturating_sub(low) + 1) / 2
}

/// The whole summary document.
pub fn summary_json(plan: &Plan, run: &RunResult, health: &Health, run_id: &str) -> Value {
    let verdicts: Vec<Value> = threshold_verdicts(plan, run)
        .into_iter()
        .map(|(stage, scenario, failures)| {
            json!({"stage": stage, "scenario": scenario, "pass": failures.is_empty(), "failures": failures})
        })
        .collect();
    let pass = verdicts.iter().all(|v| v["pass"] == json!(true));
    json!({
        "schema": 1,
        "tool": "loadtest",
        "version": env!("CARGO_PKG_VERSION"),
        "run_id": run_id,
        "generated": rfc3339(SystemTime::now()),
        "started": rfc3339(run.started_at),
        "loop_mode": loop_mode(plan),
        "plan": plan_json(plan),
        "histogram": {"unit": "us", "significant_digits": crate::limits::HISTOGRAM_SIGFIG, "max_ms": crate::limits::HISTOGRAM_US_MAX / 1000},
        "stages": run.stages.iter().map(|s| stage_json(plan, s)).collect::<Vec<_>>(),
        "thresholds": verdicts,
        "pass": pass,
        "knee": knee(plan, run).map(|k| k.to_json()),
        "generator_health": {
            "fd_limit": health.fd_limit,
            "aborted": run.aborted,
            "generator_errors": generator_errors(run),
            "sink_dropped": health.sink_dropped,
            "jsonl_lines": health.jsonl_lines,
            "results_file": health.results_file,
            "local_port_range": health.local_port_range.map(|(low, high)| json!([low, high])),
            "peak_connections": run.stages.iter().map(|s| s.metrics.connections_open.max(s.metrics.inflight_peak)).max(),
            "shard_busy_pct_max": run.stages.iter().flat_map(|s| s.shard_busy()).fold(0.0f64, f64::max) * 100.0,
            "invalid_reasons": generator_verdict(run, health),
            "valid": generator_verdict(run, health).is_empty(),
            "cautions": generator_cautions(plan, run, health),
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
    use crate::metrics::{ErrorClass, StageMetrics};
    use std::time::Duration;

    fn open_stage(index: usize, rate: f64, started: u64, dropped: u64, errors: u64) -> StageResult {
        let mut m = StageMetrics::new();
        m.conversations_started = started;
        m.requests = started;
        m.arrivals = started + dropped;
        m.dropped_arrivals = dropped;
        for _ in 0..errors {
            m.count_error(ErrorClass::Http5xx);
        }
        for _ in 0..started {
            m.latency_corrected.record_us(2_000);
        }
        StageResult {
            index,
            stage: crate::stage::open_stage(rate, false, Duration::from_secs(10)).unwrap(),
            metrics: m.clone(),
            scenarios: vec![m],
            measured: Duration::from_secs(10),
            elapsed: Duration::from_secs(10),
            shard_cpu_s: vec![1.0],
            stopped_early: false,
            series: Vec::new(),
        }
    }

    /// A fixed run: a closed stage of two scenarios and an open stage, with
    /// known latencies, statuses and errors.
    fn fixed_run() -> (Plan, RunResult) {
        let profile = crate::config::parse(
            r#"{"defaults":{"target":"http://127.0.0.1:1","model":"m"},"stages":"4:10s,@100:10s",
                "warmup":"1s","seed":7,"thresholds":{"p99_ms":50,"error_rate":0.02},
                "scenarios":[{"name":"chat","weight":3,"turns":2,"stream":true},{"name":"lookup,\"x\"","weight":1}]}"#,
        )
        .unwrap();
        let plan = crate::plan::build(&profile, &Default::default(), vec![0]).unwrap();
        let mut stages = Vec::new();
        for (index, stage) in plan.stages.iter().enumerate() {
            let mut scenarios = vec![StageMetrics::new(), StageMetrics::new()];
            for (i, m) in scenarios.iter_mut().enumerate() {
                for k in 0..100u64 {
                    m.requests += 1;
                    m.count_status(200);
                    m.ok += 1;
                    m.latency.record_us(1_000 * (k + 1) + 500 * i as u64);
                    if i == 0 {
                        m.ttft.record_us(200 * (k + 1));
                        m.itl.record_us(20 + k);
                    }
                    m.turn_row(k % 2).requests += 1;
                    m.turn_row(k % 2).ok += 1;
                    m.turn_row(k % 2).prompt_samples += 1;
                    m.turn_row(k % 2).prompt_tokens += 100 + 300 * (k % 2);
                    m.turn_row(k % 2).latency_us += 1_000 * (k + 1);
                    if stage.is_open() {
                        m.latency_corrected.record_us(1_200 * (k + 1));
                        m.sched_lag.record_us(50 + k);
                    }
                }
                m.requests += 3;
                m.count_status(503);
                m.count_error(ErrorClass::Http5xx);
                m.count_status(503);
                m.count_error(ErrorClass::Http5xx);
                m.count_error(ErrorClass::Timeout);
                m.prompt_tokens = 25_000;
                m.completion_tokens = 6_400;
                m.conversations_started = 52;
                if stage.is_open() {
                    m.arrivals = 52;
                }
            }
            let mut total = StageMetrics::new();
            for m in &scenarios {
                total.merge(m);
            }
            total.connections_open = 4;
            stages.push(StageResult {
                index,
                stage: *stage,
                metrics: total,
                scenarios,
                measured: Duration::from_secs(9),
                elapsed: Duration::from_secs(10),
                shard_cpu_s: vec![2.5],
                stopped_early: false,
                series: Vec::new(),
            });
        }
        let run = RunResult {
            stages,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_305_600),
            aborted: None,
        };
        (plan, run)
    }

    /// Compares with `tests/golden/NAME`; `UPDATE_GOLDEN=1` rewrites it.
    fn golden(name: &str, actual: &str) {
        let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            expected == actual,
            "{name} differs from {path} (UPDATE_GOLDEN=1 rewrites it):\n{actual}"
        );
    }

    #[test]
    fn csv_matches_the_golden_file() {
        let (plan, run) = fixed_run();
        let text = csv(&plan, &run);
        golden("report.csv", &text);
        // Every row has every column, even with a comma and a quote in a name.
        for line in text.lines().skip(1) {
            let mut fields = 0;
            let mut quoted = false;
            for c in line.chars() {
                match c {
                    '"' => quoted = !quoted,
                    ',' if !quoted => fields += 1,
                    _ => {}
                }
            }
            assert_eq!(fields + 1, CSV_COLUMNS.len(), "{line}");
        }
    }

    #[test]
    fn text_report_matches_the_golden_file() {
        let (plan, run) = fixed_run();
        let health = Health {
            fd_limit: 20_000,
            sink_dropped: 0,
            jsonl_lines: 618,
            results_file: None,
            local_port_range: Some((32768, 60999)),
        };
        let text = text_report(&plan, &run, &health)
            // The target's port is fixed, but not the run header's version.
            .replace(env!("CARGO_PKG_VERSION"), "VERSION");
        golden("report.txt", &text);
        assert!(text.contains("overall: FAIL"));
        // Timeouts and 503s are the target's errors, not the generator's.
        assert!(text.contains("verdict: valid"));
    }

    #[test]
    fn summary_matches_the_golden_file() {
        let (plan, run) = fixed_run();
        let health = Health {
            fd_limit: 20_000,
            sink_dropped: 0,
            jsonl_lines: 618,
            results_file: Some("runs/results-19700101T000000Z.jsonl".into()),
            local_port_range: Some((32768, 60999)),
        };
        let mut summary = summary_json(&plan, &run, &health, "fixed");
        // The only fields that change from run to run of the same data.
        summary["generated"] = json!("GENERATED");
        summary["version"] = json!("VERSION");
        let mut text = serde_json::to_string_pretty(&summary).unwrap();
        text.push('\n');
        golden("summary.json", &text);
        // Keys are lowercase snake_case all the way down (the predecessor
        // shipped capitalised percentile keys by accident).
        fn check_keys(v: &Value, at: &str) {
            match v {
                Value::Object(map) => {
                    for (k, v) in map {
                        let under_counts = at.ends_with("status_codes")
                            || at.ends_with("errors")
                            || at.ends_with("headers");
                        assert!(
                            under_counts
                                || k.chars().all(|c| c.is_ascii_lowercase()
                                    || c.is_ascii_digit()
                                    || c == '_'),
                            "{at}.{k}"
                        );
                        check_keys(v, &format!("{at}.{k}"));
                    }
                }
                Value::Array(list) => list.iter().for_each(|v| check_keys(v, at)),
                _ => {}
            }
        }
        check_keys(&summary, "");
    }

    #[test]
    fn prometheus_matches_the_golden_file() {
        let (plan, run) = fixed_run();
        let text = prometheus(&plan, &run);
        golden("metrics.prom", &text);
        // Label values are escaped; every sample line names a declared family.
        assert!(text.contains(r#"scenario="lookup,\"x\"""#), "{text}");
        let declared: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split('{').next().unwrap();
            let family = name.trim_end_matches("_sum").trim_end_matches("_count");
            assert!(
                declared.contains(&family) || declared.contains(&name),
                "{line}"
            );
        }
    }

    #[test]
    fn knee_is_the_highest_stage_that_held() {
        let profile = crate::config::parse(
            r#"{"defaults":{"target":"http://127.0.0.1:1"},"stages":"@1:1s","thresholds":{"p99_ms":5}}"#,
        )
        .unwrap();
        let plan = crate::plan::build(&profile, &Default::default(), vec![0]).unwrap();
        let run = |stages: Vec<StageResult>| RunResult {
            stages,
            started_at: SystemTime::UNIX_EPOCH,
            aborted: None,
        };
        // 1k/s held, 2k/s held (99.5 %), 4k/s fell short, 8k/s dropped.
        let sweep = run(vec![
            open_stage(0, 1000.0, 10_000, 0, 0),
            open_stage(1, 2000.0, 19_900, 0, 0),
            open_stage(2, 4000.0, 30_000, 0, 0),
            open_stage(3, 8000.0, 40_000, 5_000, 0),
        ]);
        let knee = knee(&plan, &sweep).unwrap();
        assert_eq!(knee.highest_ok, Some(("@2000:10s".to_string(), 2000.0)));
        let (label, reason) = knee.first_broken.clone().unwrap();
        assert_eq!(label, "@4000:10s");
        assert!(reason.contains("75.0% of the 4000.0/s target"), "{reason}");
        assert!(knee_line(&knee).contains("first to break: @4000:10s"));
        // Errors above 1 % (no error_rate threshold set) break a stage too.
        let errors = run(vec![open_stage(0, 1000.0, 10_000, 0, 200)]);
        let knee = super::knee(&plan, &errors).unwrap();
        assert!(knee.first_broken.unwrap().1.contains("error rate"));
        // Closed-loop runs have no knee.
        assert!(super::knee(&plan, &run(Vec::new())).is_none());
    }

    /// A run of one stage.
    fn run_of(stage: StageResult) -> RunResult {
        RunResult {
            stages: vec![stage],
            started_at: SystemTime::UNIX_EPOCH,
            aborted: None,
        }
    }

    #[test]
    fn scheduler_lag_is_fine_then_a_caution_then_invalid() {
        let (plan, _) = fixed_run();
        let health = Health::default();
        // 1,000 arrivals; the slowest `late` of them `lag_us` late, the
        // rest 100 µs: 20 late ones put the p99 among them, 5 do not.
        let run_with = |late: u64, lag_us: u64| {
            let mut stage = open_stage(0, 100.0, 1_000, 0, 0);
            for k in 0..1_000 {
                let lag = if k < late { lag_us } else { 100 };
                stage.metrics.sched_lag.record_us(lag);
            }
            run_of(stage)
        };
        let fine = run_with(5, 30_000);
        assert!(generator_cautions(&plan, &fine, &health).is_empty());
        assert!(generator_verdict(&fine, &health).is_empty());
        assert!(text_report(&plan, &fine, &health).contains("verdict: valid (the generator"));

        let late = run_with(20, 3_000);
        let cautions = generator_cautions(&plan, &late, &health);
        assert_eq!(cautions.len(), 1, "{cautions:?}");
        assert!(
            cautions[0].contains("scheduler lag p99 3.0 ms > 1 ms"),
            "{}",
            cautions[0]
        );
        assert!(generator_verdict(&late, &health).is_empty());
        let text = text_report(&plan, &late, &health);
        assert!(
            text.contains("verdict: valid, with caution: stage @100:10s"),
            "{text}"
        );
        let summary = summary_json(&plan, &late, &health, "r");
        assert_eq!(summary["generator_health"]["valid"], true);
        assert_eq!(
            summary["generator_health"]["cautions"]
                .as_array()
                .unwrap()
                .len(),
            1
        );

        // Past the invalid limit it is no longer a caution but a verdict.
        let saturated = run_with(20, 60_000);
        assert!(generator_cautions(&plan, &saturated, &health).is_empty());
        assert_eq!(generator_verdict(&saturated, &health).len(), 1);
        assert!(text_report(&plan, &saturated, &health).contains("verdict: INVALID"));
    }

    #[test]
    fn a_saturated_shard_is_a_caution() {
        let (plan, _) = fixed_run();
        let health = Health::default();
        let run_with = |cpu: Vec<f64>| {
            let mut stage = open_stage(0, 100.0, 1_000, 0, 0);
            // The stage ran 10 s of wall time.
            stage.shard_cpu_s = cpu;
            run_of(stage)
        };
        assert!(generator_cautions(&plan, &run_with(vec![9.0, 5.0]), &health).is_empty());
        let busy = run_with(vec![5.0, 9.6]);
        let cautions = generator_cautions(&plan, &busy, &health);
        assert_eq!(cautions.len(), 1, "{cautions:?}");
        assert!(
            cautions[0].starts_with("stage @100:10s: generator shard 1 was 96% busy"),
            "{}",
            cautions[0]
        );
        // A caution, not a verdict: the run stays valid.
        assert!(generator_verdict(&busy, &health).is_empty());
        assert!(text_report(&plan, &busy, &health).contains("verdict: valid, with caution"));
    }

    #[test]
    fn connections_past_half_the_port_range_are_a_caution() {
        let (plan, _) = fixed_run();
        let run_with = |connections: u64| {
            let mut stage = open_stage(0, 100.0, 1_000, 0, 0);
            stage.metrics.connections_open = connections;
            run_of(stage)
        };
        let health = Health {
            local_port_range: Some((32768, 60999)),
            ..Health::default()
        };
        // Half of the 28,232 ports is 14,116.
        assert!(generator_cautions(&plan, &run_with(14_116), &health).is_empty());
        let many = run_with(14_117);
        let cautions = generator_cautions(&plan, &many, &health);
        assert_eq!(cautions.len(), 1, "{cautions:?}");
        assert!(
            cautions[0].contains("14117 connections open to 1 target address(es)")
                && cautions[0].contains("32768-60999"),
            "{}",
            cautions[0]
        );
        assert!(generator_verdict(&many, &health).is_empty());
        assert!(text_report(&plan, &many, &health).contains("verdict: valid, with caution"));
        let summary = summary_json(&plan, &many, &health, "r");
        assert_eq!(
            summary["generator_health"]["local_port_range"],
            json!([32768, 60999])
        );
        // A wider range, or one that could not be read: no caution.
        let wide = Health {
            local_port_range: Some((1024, 65535)),
            ..Health::default()
        };
        assert!(generator_cautions(&plan, &many, &wide).is_empty());
        assert!(generator_cautions(&plan, &many, &Health::default()).is_empty());
    }

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
