//! `report-<id>.csv`: a header and one row per stage × scenario (and the
//! stage total as scenario `all`); with services, one per stage ×
//! scenario × service, then each service's total (scenario `all`) with its
//! deltas against the baseline.

use super::{errors_text, status_text};
use crate::results::{RunSummary, StageSummary, Stats};
use crate::stage::Load;

/// The columns, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "stage_index",
    "stage",
    "round",
    "kind",
    "users",
    "target_rate",
    "scenario",
    "service",
    "requests",
    "ok",
    "ok_pct",
    "error_rate",
    "rps",
    "achieved_rate",
    "dropped_arrivals",
    "missed_arrivals",
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
    "stale_retries",
    "tls_handshakes",
    "tls_resumed",
    "tls_p50_ms",
    "ttft_p50_delta_ms",
    "ttft_p95_delta_ms",
    "latency_p50_delta_ms",
    "latency_p95_delta_ms",
    "stopped",
];

/// The whole CSV file. A list of the columns' values, one line each, and
/// longer than 70 lines for that reason only.
pub fn csv(run: &RunSummary) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push('\n');
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    for stage in &run.stages {
        // Open-loop counts are empty in a closed-loop stage's rows.
        let open_only = |n: u64| {
            if stage.is_open() {
                n.to_string()
            } else {
                String::new()
            }
        };
        let (kind, users, rate) = match stage.load {
            Load::Closed { users } => ("closed", users.to_string(), String::new()),
            Load::Open { rate, .. } => ("open", String::new(), format!("{rate}")),
        };
        for stats in stage.rows() {
            let m = &stats.metrics;
            let total = std::ptr::eq(stats, &stage.total);
            let (scenario, service, deltas) = service_cells(run, stage, stats);
            let fields = [
                stage.index.to_string(),
                stage.label.clone(),
                stage.round.to_string(),
                kind.to_string(),
                users.clone(),
                rate.clone(),
                scenario,
                service,
                m.requests.to_string(),
                m.ok.to_string(),
                format!("{:.3}", stats.rates.ok_pct),
                format!("{:.6}", stats.rates.error_rate),
                format!("{:.3}", stats.rates.rps),
                if total {
                    num(stage.open_loop.map(|o| o.achieved_rate))
                } else {
                    String::new()
                },
                open_only(m.dropped_arrivals),
                open_only(m.missed_arrivals),
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
                format!("{:.3}", stats.rates.output_tokens_per_s),
                m.prompt_tokens.to_string(),
                m.completion_tokens.to_string(),
                status_text(m, ";"),
                errors_text(m, ";"),
                m.stale_retries.to_string(),
                m.tls_handshakes.to_string(),
                m.tls_resumed.to_string(),
                num(m.tls.percentile_ms(50.0)),
                deltas[0].clone(),
                deltas[1].clone(),
                deltas[2].clone(),
                deltas[3].clone(),
                match &run.stop {
                    Some(stop) if stage.stopped_early => stop.describe(),
                    _ => String::new(),
                },
            ];
            let line: Vec<String> = fields.iter().map(|f| field(f)).collect();
            out.push_str(&line.join(","));
            out.push('\n');
        }
    }
    out
}

/// A row's scenario and service, and (for a service's total) its deltas
/// against the baseline: a scenario run against a service is
/// (`chat`, `gw`), a service's total (`all`, `gw`), the stage total
/// (`all`, empty).
fn service_cells(
    run: &RunSummary,
    stage: &StageSummary,
    stats: &Stats,
) -> (String, String, [String; 4]) {
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    let mut deltas: [String; 4] = Default::default();
    if !stage.services.iter().any(|s| std::ptr::eq(s, stats)) {
        let service = stats.service.clone().unwrap_or_default();
        return (stats.name.clone(), service, deltas);
    }
    let row = run
        .comparison
        .as_ref()
        .and_then(|c| c.stages.iter().find(|c| c.index == stage.index))
        .and_then(|c| c.services.iter().find(|r| r.service == stats.name));
    if let Some(row) = row {
        deltas = row.deltas().map(num);
    }
    ("all".to_string(), stats.name.clone(), deltas)
}

/// Quotes a CSV field when it needs it (RFC 4180).
pub fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_matches_the_golden_file() {
        let (run, _) = super::super::fixture::fixed();
        let text = csv(&run);
        super::super::fixture::golden("report.csv", &text);
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
}
