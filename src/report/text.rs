//! `report-<id>.txt`: everything a person reads after a run, in one file:
//! the run header, per stage × scenario statistics, the per-turn table,
//! generator health, thresholds and the knee.

use super::console::{open_loop_line, run_header};
use super::{errors_text, ms, pct, scenario_across_stages, status_text};
use crate::results::{from_unix_ms, rfc3339, RunSummary, StageMetrics, StageSummary};
use crate::verdict::{knee_line, Verdict};
use std::fmt::Write as _;

/// The whole text report.
pub fn text_report(run: &RunSummary, verdict: &Verdict) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", run_header(&run.plan));
    let _ = writeln!(
        out,
        "started {}",
        rfc3339(from_unix_ms(run.started_unix_ms))
    );
    if let Some(stop) = &run.stop {
        let _ = writeln!(out, "RUN ENDED EARLY: {}", stop.describe());
    }
    if !run.merged_from.is_empty() {
        let _ = writeln!(
            out,
            "merged from {} hosts: {}",
            run.hosts.len(),
            run.merged_from.join(", ")
        );
    }
    let width = run.plan.label_width();
    for stage in &run.stages {
        stage_section(&mut out, stage, width, run.plan.max_inflight);
        let compared = run
            .comparison
            .as_ref()
            .and_then(|c| c.stages.get(stage.index));
        if let Some(compared) = compared {
            let _ = write!(out, "{}", super::comparison::stage_table(compared));
        }
    }
    if let Some(comparison) = &run.comparison {
        let overall = super::comparison::overall_tables(comparison);
        if !overall.is_empty() {
            let _ = write!(
                out,
                "\n== services over all {} rounds\n{overall}",
                comparison.rounds
            );
        }
    }
    let turns = turn_table(run);
    if !turns.is_empty() {
        let _ = write!(
            out,
            "\n== per turn (all stages; prompt tokens from server usage)\n{turns}"
        );
    }
    aggregate_section(&mut out, &run.all_stages());
    health_section(&mut out, run, verdict);
    thresholds_section(&mut out, verdict);
    if !verdict.fairness.is_empty() {
        let _ = writeln!(out, "\n== comparison fairness");
        for flag in &verdict.fairness {
            let _ = writeln!(out, "UNFAIR: {flag}");
        }
    }
    if let Some(knee) = &verdict.knee {
        let _ = writeln!(out, "\n== knee\n{}", knee_line(knee));
    }
    out
}

fn stage_section(out: &mut String, stage: &StageSummary, width: usize, max_inflight: u64) {
    let _ = writeln!(
        out,
        "\n== stage {} {}{} (measured {:.1} s)",
        stage.index + 1,
        stage.label,
        if stage.stopped_early {
            ", stopped early"
        } else {
            ""
        },
        stage.measured_s
    );
    let _ = writeln!(
        out,
        "{:<width$} {:>9} {:>10} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "scenario", "requests", "rps", "ok%", "p50", "p90", "p95", "p99", "p99.9", "ttft50", "ttft95",
        "ttft99", "itl50", "itl99", "out tok/s"
    );
    let rows = stage.rows();
    for stats in &rows {
        let m = &stats.metrics;
        let _ = writeln!(
            out,
            "{:<width$} {:>9} {:>10.1} {:>7.2} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10.1}",
            stats.label(),
            m.requests,
            stats.rates.rps,
            stats.rates.ok_pct,
            pct(&m.latency, 50.0),
            pct(&m.latency, 90.0),
            pct(&m.latency, 95.0),
            pct(&m.latency, 99.0),
            pct(&m.latency, 99.9),
            pct(&m.ttft, 50.0),
            pct(&m.ttft, 95.0),
            pct(&m.ttft, 99.0),
            pct(&m.itl, 50.0),
            pct(&m.itl, 99.0),
            stats.rates.output_tokens_per_s
        );
    }
    for stats in &rows {
        let statuses = status_text(&stats.metrics, " ");
        let errors = errors_text(&stats.metrics, " ");
        let _ = write!(
            out,
            "  {}: status {}; errors {}",
            stats.label(),
            if statuses.is_empty() { "-" } else { &statuses },
            if errors.is_empty() { "none" } else { &errors }
        );
        let retried = stats.metrics.stale_retries;
        if retried > 0 {
            let _ = write!(
                out,
                "; retried {retried} (sent again on a fresh connection: the server may have received them twice)"
            );
        }
        let _ = writeln!(out);
    }
    if let Some(line) = open_loop_line(stage, max_inflight) {
        let _ = writeln!(out, "{line}");
    }
    if let Some(line) = address_line(stage) {
        let _ = writeln!(out, "{line}");
    }
}

/// Requests per target address, when there was more than one address.
fn address_line(stage: &StageSummary) -> Option<String> {
    if stage.requests_by_address.len() < 2 {
        return None;
    }
    let spread: Vec<String> = stage
        .requests_by_address
        .iter()
        .map(|(address, n)| format!("{address} {n}"))
        .collect();
    Some(format!("  requests by address: {}", spread.join(", ")))
}

fn aggregate_section(out: &mut String, all: &StageMetrics) {
    let _ = writeln!(out, "\n== aggregate");
    if all.tls_handshakes > 0 {
        let ms = |q: f64| {
            all.tls
                .percentile_ms(q)
                .map_or("-".into(), |v| format!("{v:.2}"))
        };
        let _ = writeln!(
            out,
            "TLS handshakes {} ({} resumed), handshake p50 {} ms p99 {} ms (warm-up included; connect_ms is the TCP connect alone)",
            all.tls_handshakes,
            all.tls_resumed,
            ms(50.0),
            ms(99.0)
        );
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
    if all.reasoning_tokens > 0 || all.reasoning_events > 0 || all.sequence_gaps > 0 {
        let _ = writeln!(
            out,
            "reasoning tokens {} (of the completion tokens), reasoning events {}, time to first reasoning p50 {} ms; stream sequence gaps {}",
            all.reasoning_tokens,
            all.reasoning_events,
            pct(&all.ttfr, 50.0),
            all.sequence_gaps
        );
    }
}

fn health_section(out: &mut String, run: &RunSummary, verdict: &Verdict) {
    let _ = writeln!(out, "\n== generator health");
    let sum = |f: fn(&crate::results::Host) -> u64| run.hosts.iter().map(f).sum::<u64>();
    let fd_limits: Vec<String> = run.hosts.iter().map(|h| h.fd_limit.to_string()).collect();
    let _ = writeln!(
        out,
        "fd limit {}; peak connections {}; JSONL lines {} dropped {}; shard CPU busy max {:.0}%",
        fd_limits.join("/"),
        peak_connections(run),
        sum(|h| h.jsonl_lines),
        sum(|h| h.sink_dropped),
        shard_busy_pct_max(run)
    );
    let all = run.all_stages();
    let generator: u64 = all
        .error_counts()
        .iter()
        .filter(|(c, _)| c.is_generator_side())
        .map(|(_, n)| n)
        .sum();
    let _ = writeln!(out, "port/fd exhaustion errors {generator}");
    for stage in &run.stages {
        let max = |v: &[f64]| v.iter().copied().reduce(f64::max);
        let wait = match (
            max(&stage.shard_wait_per_run_ms),
            max(&stage.shard_wait_pct),
        ) {
            (Some(per_run), Some(share)) => {
                format!("{per_run:.3} ms per wake-up ({share:.1}% of the stage)")
            }
            _ => "unknown".into(),
        };
        let _ = writeln!(
            out,
            "stage {}: shard CPU busy max {:.0}%, waiting for a CPU max {wait}, hypervisor steal {}",
            stage.label,
            max(&stage.shard_busy_pct).unwrap_or(0.0),
            stage.steal_pct.map_or("unknown".into(), |s| format!("{s:.1}%"))
        );
    }
    for stage in run.stages.iter().filter(|s| s.is_open()) {
        let lag = &stage.total.metrics.sched_lag;
        let _ = writeln!(
            out,
            "stage {}: scheduler lag p50 {} p99 {} max {} ms",
            stage.label,
            pct(lag, 50.0),
            pct(lag, 99.0),
            ms(lag.max_ms())
        );
    }
    let g = &verdict.generator;
    if g.valid && g.cautions.is_empty() {
        let _ = writeln!(out, "verdict: valid (the generator was not the bottleneck)");
    }
    for caution in &g.cautions {
        let _ = writeln!(out, "verdict: valid, with caution: {caution}");
    }
    for reason in &g.invalid_reasons {
        let _ = writeln!(out, "verdict: INVALID: {reason}");
    }
}

fn thresholds_section(out: &mut String, verdict: &Verdict) {
    let _ = writeln!(out, "\n== thresholds");
    for failure in &verdict.no_success {
        let _ = writeln!(out, "FAIL: {failure}");
    }
    if verdict.thresholds.is_empty() {
        let _ = writeln!(out, "none set");
        return;
    }
    for check in &verdict.thresholds {
        let _ = writeln!(
            out,
            "{} {}: {}",
            check.stage,
            check.scenario,
            if check.pass {
                "PASS".to_string()
            } else {
                format!("FAIL ({})", check.failures.join("; "))
            }
        );
    }
    let _ = writeln!(
        out,
        "overall: {}",
        if verdict.pass { "PASS" } else { "FAIL" }
    );
}

/// Most connections (or open-loop conversations) open at once in any
/// stage, over all hosts.
pub fn peak_connections(run: &RunSummary) -> u64 {
    run.stages
        .iter()
        .map(|s| {
            let open: u64 = s.connections_open.iter().sum();
            open.max(s.total.metrics.inflight_peak)
        })
        .max()
        .unwrap_or(0)
}

/// The busiest shard of any stage, percent.
pub fn shard_busy_pct_max(run: &RunSummary) -> f64 {
    run.stages
        .iter()
        .flat_map(|s| s.shard_busy_pct.iter().copied())
        .fold(0.0, f64::max)
}

/// Per-turn means of each multi-turn scenario over the whole run, to show
/// context (and so cost and latency) growing with the turn. Empty when no
/// scenario has more than one turn.
pub fn turn_table(run: &RunSummary) -> String {
    let mut out = String::new();
    let width = run.plan.label_width();
    for (i, scenario) in run.plan.scenarios.iter().enumerate() {
        if scenario.turns.max == 1 {
            continue;
        }
        let rows = scenario_across_stages(run, i).turn_rows();
        if rows.is_empty() {
            continue;
        }
        if out.is_empty() {
            let _ = writeln!(
                out,
                "{:<width$} {:>5} {:>9} {:>7} {:>14} {:>12} {:>12}",
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
            let ok_pct = if row.requests == 0 {
                0.0
            } else {
                100.0 * row.ok as f64 / row.requests as f64
            };
            let _ = writeln!(
                out,
                "{:<width$} {:>5} {:>9} {:>7.2} {:>14} {:>12} {:>12}",
                scenario.label(),
                turn,
                row.requests,
                ok_pct,
                opt(row.mean_prompt_tokens(), 1),
                opt(row.mean_latency_ms(), 2),
                opt(row.mean_ttft_ms(), 2)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_report_matches_the_golden_file() {
        let (run, verdict) = super::super::fixture::fixed();
        let text = text_report(&run, &verdict).replace(env!("CARGO_PKG_VERSION"), "VERSION");
        super::super::fixture::golden("report.txt", &text);
        assert!(text.contains("overall: FAIL"));
        // Timeouts and 503s are the target's errors, not the generator's.
        assert!(text.contains("verdict: valid"));
        assert!(!text.contains("retried"));
    }

    #[test]
    fn retries_are_shown_where_errors_are() {
        let (mut run, verdict) = super::super::fixture::fixed();
        run.stages[0].total.metrics.stale_retries = 3;
        let text = text_report(&run, &verdict);
        assert!(
            text.contains(
                "  all: status 200=200 503=4; errors timeout=2 http_5xx=4; retried 3 (sent again"
            ),
            "{text}"
        );
        let columns = super::super::console::Columns::of(&run.plan);
        let rows = columns.rows(&run.stages[0], 1).join("\n");
        assert!(rows.contains("http_5xx=4 (retried 3)"), "{rows}");
        let csv = super::super::csv::csv(&run);
        let row: Vec<&str> = csv.lines().nth(3).unwrap().split(',').collect();
        let column = super::super::csv::CSV_COLUMNS
            .iter()
            .position(|&c| c == "stale_retries")
            .unwrap();
        assert_eq!(row[column], "3", "{csv}");
        let prom = super::super::prometheus::prometheus(&run);
        assert!(prom.contains("loadtest_stale_retries_total{stage=\"4:10s\",stage_index=\"0\",scenario=\"all\"} 3"), "{prom}");
    }
}
