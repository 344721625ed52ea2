//! `metrics-<id>.prom`: the run in the Prometheus text exposition format
//! (for a textfile collector or a Pushgateway). Counters per stage and
//! scenario (stage total as `scenario="all"`), rates as gauges, and
//! latency, TTFT and ITL as summaries with quantiles 0.5/0.9/0.95/0.99/
//! 0.999, in seconds.

use crate::results::{
    Hist, RunSummary, StageComparison, StageMetrics, StageSummary, Stats, Stop, DELTA_FIGURES,
};
use std::fmt::Write as _;

/// One metric family: name, type and help, in output order.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const fn family(name: &'static str, kind: &'static str, help: &'static str) -> Family {
    Family { name, kind, help }
}

const REQUESTS: usize = 0;
const OK: usize = 1;
const ERRORS: usize = 2;
const RESPONSES: usize = 3;
const PROMPT: usize = 4;
const COMPLETION: usize = 5;
const RPS: usize = 6;
const TOKENS: usize = 7;
const TARGET: usize = 8;
const ACHIEVED: usize = 9;
const DROPPED: usize = 10;
const RETRIED: usize = 11;
const MISSED: usize = 12;
const HANDSHAKES: usize = 13;
const RESUMED: usize = 14;
const DELTA: usize = 15;
/// The first summary family; `SUMMARIES` says which histogram each is.
const FIRST_SUMMARY: usize = 16;

const FAMILIES: [Family; 23] = [
    family(
        "loadtest_requests_total",
        "counter",
        "Requests started in the measured window and finished.",
    ),
    family(
        "loadtest_requests_ok_total",
        "counter",
        "Successful requests (2xx with content).",
    ),
    family(
        "loadtest_errors_total",
        "counter",
        "Failed requests by error class.",
    ),
    family(
        "loadtest_responses_total",
        "counter",
        "Responses by HTTP status code.",
    ),
    family(
        "loadtest_prompt_tokens_total",
        "counter",
        "Prompt tokens reported by the server.",
    ),
    family(
        "loadtest_completion_tokens_total",
        "counter",
        "Completion tokens reported by the server.",
    ),
    family(
        "loadtest_requests_per_second",
        "gauge",
        "Requests per second over the measured window.",
    ),
    family(
        "loadtest_output_tokens_per_second",
        "gauge",
        "Completion tokens per second over the measured window.",
    ),
    family(
        "loadtest_target_arrival_rate",
        "gauge",
        "Open loop: arrivals per second asked for.",
    ),
    family(
        "loadtest_achieved_arrival_rate",
        "gauge",
        "Open loop: arrivals sent per second in the measured window, by send time.",
    ),
    family(
        "loadtest_dropped_arrivals_total",
        "counter",
        "Open loop: arrivals not sent because max_inflight was reached.",
    ),
    family(
        "loadtest_stale_retries_total",
        "counter",
        "Requests sent again on a fresh connection because a reused one was found closed (the server may have received them twice).",
    ),
    family(
        "loadtest_missed_arrivals_total",
        "counter",
        "Open loop: arrivals due in the stage that the generator never sent before it ended.",
    ),
    family(
        "loadtest_tls_handshakes_total",
        "counter",
        "TLS handshakes on new connections (https targets), warm-up included.",
    ),
    family(
        "loadtest_tls_resumed_total",
        "counter",
        "Of those, sessions resumed rather than negotiated in full.",
    ),
    family(
        "loadtest_service_delta_seconds",
        "gauge",
        "Comparisons: a service's percentile minus the baseline's, in the same stage and window (figure: ttft_p50, ttft_p95, latency_p50, latency_p95).",
    ),
    family(
        "loadtest_latency_seconds",
        "summary",
        "Whole-request latency of successful requests, from the actual send.",
    ),
    family(
        "loadtest_ttft_seconds",
        "summary",
        "Time to first token of successful streamed requests, from the actual send.",
    ),
    family(
        "loadtest_itl_seconds",
        "summary",
        "Gaps between content events of successful streamed requests.",
    ),
    family(
        "loadtest_latency_corrected_seconds",
        "summary",
        "Open loop: latency from the intended send time.",
    ),
    family(
        "loadtest_ttft_corrected_seconds",
        "summary",
        "Open loop: TTFT from the intended send time.",
    ),
    family(
        "loadtest_scheduler_lag_seconds",
        "summary",
        "Open loop: actual minus intended start of arrivals.",
    ),
    family(
        "loadtest_tls_handshake_seconds",
        "summary",
        "TLS handshake of each new connection (https targets).",
    ),
];

type Pick = fn(&StageMetrics) -> &Hist;

/// The histogram behind each summary family, from `FIRST_SUMMARY` on.
const SUMMARIES: [Pick; 7] = [
    |m| &m.latency,
    |m| &m.ttft,
    |m| &m.itl,
    |m| &m.latency_corrected,
    |m| &m.ttft_corrected,
    |m| &m.sched_lag,
    |m| &m.tls,
];

const _: () = assert!(FIRST_SUMMARY + SUMMARIES.len() == FAMILIES.len());

/// Sample lines, gathered per family so each family is written once.
struct Exposition {
    lines: Vec<Vec<String>>,
}

impl Exposition {
    fn put(&mut self, family: usize, labels: &str, extra: &str, value: impl std::fmt::Display) {
        let name = FAMILIES[family].name;
        self.lines[family].push(format!("{name}{{{labels}{extra}}} {value}"));
    }

    fn row(&mut self, stage: &StageSummary, stats: &Stats) {
        let m = &stats.metrics;
        let mut labels = format!(
            "stage=\"{}\",stage_index=\"{}\"",
            label(&stage.label),
            stage.index,
        );
        // With services, every sample names one: a scenario run against a
        // service, a service's total (`scenario="all"`), or all services.
        let service_total = stage.services.iter().any(|s| std::ptr::eq(s, stats));
        let (scenario, service) = match (&stats.service, service_total) {
            (_, true) => ("all", Some(stats.name.as_str())),
            (Some(service), false) => (stats.name.as_str(), Some(service.as_str())),
            (None, false) if !stage.services.is_empty() => (stats.name.as_str(), Some("all")),
            (None, false) => (stats.name.as_str(), None),
        };
        let _ = write!(labels, ",scenario=\"{}\"", label(scenario));
        if let Some(service) = service {
            let _ = write!(labels, ",service=\"{}\"", label(service));
        }
        self.put(REQUESTS, &labels, "", m.requests);
        self.put(OK, &labels, "", m.ok);
        for (class, n) in m.error_counts() {
            self.put(ERRORS, &labels, &format!(",class=\"{}\"", class.name()), n);
        }
        for (code, n) in m.status_counts() {
            self.put(RESPONSES, &labels, &format!(",code=\"{code}\""), n);
        }
        self.put(PROMPT, &labels, "", m.prompt_tokens);
        self.put(COMPLETION, &labels, "", m.completion_tokens);
        self.put(RPS, &labels, "", stats.rates.rps);
        self.put(TOKENS, &labels, "", stats.rates.output_tokens_per_s);
        if std::ptr::eq(stats, &stage.total) {
            if let Some(open) = stage.open_loop {
                self.put(TARGET, &labels, "", open.target_rate);
                self.put(ACHIEVED, &labels, "", open.achieved_rate);
            }
        }
        if stage.is_open() {
            self.put(DROPPED, &labels, "", m.dropped_arrivals);
            self.put(MISSED, &labels, "", m.missed_arrivals);
        }
        self.put(RETRIED, &labels, "", m.stale_retries);
        if m.tls_handshakes > 0 {
            self.put(HANDSHAKES, &labels, "", m.tls_handshakes);
            self.put(RESUMED, &labels, "", m.tls_resumed);
        }
        for (i, pick) in SUMMARIES.iter().enumerate() {
            self.summary(FIRST_SUMMARY + i, &labels, pick(m));
        }
    }

    fn deltas(&mut self, compared: &StageComparison) {
        for row in &compared.services {
            let labels = format!(
                "stage=\"{}\",stage_index=\"{}\",service=\"{}\"",
                label(&compared.stage),
                compared.index,
                label(&row.service)
            );
            for (figure, delta) in DELTA_FIGURES.iter().zip(row.deltas()) {
                if let Some(ms) = delta {
                    let figure = format!(",figure=\"{figure}\"");
                    self.put(DELTA, &labels, &figure, ms / 1000.0);
                }
            }
        }
    }

    fn summary(&mut self, family: usize, labels: &str, hist: &Hist) {
        let Some(inner) = hist.get() else {
            return;
        };
        for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
            let seconds = inner.value_at_quantile(q) as f64 / 1e6;
            self.put(family, labels, &format!(",quantile=\"{q}\""), seconds);
        }
        let base = FAMILIES[family].name;
        let sum = inner.mean() * inner.len() as f64 / 1e6;
        self.lines[family].push(format!("{base}_sum{{{labels}}} {sum}"));
        self.lines[family].push(format!("{base}_count{{{labels}}} {}", inner.len()));
    }
}

/// Escapes a Prometheus label value.
pub(super) fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition.
pub fn prometheus(run: &RunSummary) -> String {
    let mut exposition = Exposition {
        lines: FAMILIES.iter().map(|_| Vec::new()).collect(),
    };
    for stage in &run.stages {
        for stats in stage.rows() {
            exposition.row(stage, stats);
        }
    }
    for compared in run.comparison.iter().flat_map(|c| &c.stages) {
        exposition.deltas(compared);
    }
    let mut out = String::new();
    if let Some(Stop::Interrupted { signal, abandoned }) = &run.stop {
        let _ = writeln!(
            out,
            "# HELP loadtest_run_stopped The run was stopped by a signal before its last stage ended (1); what was measured is below.\n# TYPE loadtest_run_stopped gauge\nloadtest_run_stopped{{signal=\"{}\"}} 1",
            signal.name()
        );
        let _ = writeln!(
            out,
            "# HELP loadtest_abandoned_requests Requests in flight given up on when the run was stopped, counted nowhere else.\n# TYPE loadtest_abandoned_requests gauge\nloadtest_abandoned_requests {abandoned}"
        );
    }
    for (family, lines) in FAMILIES.iter().zip(&exposition.lines) {
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_run_says_so() {
        let (mut run, _) = super::super::fixture::fixed();
        run.stop = Some(Stop::Interrupted {
            signal: crate::results::Signal::Term,
            abandoned: 3,
        });
        run.stages[1].stopped_early = true;
        let text = prometheus(&run);
        assert!(
            text.contains("loadtest_run_stopped{signal=\"SIGTERM\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("loadtest_abandoned_requests 3\n"), "{text}");
        let csv = super::super::csv::csv(&run);
        let last = csv.lines().last().unwrap();
        assert!(
            last.ends_with(",\"stopped by SIGTERM; 3 requests in flight abandoned, not counted\""),
            "{last}"
        );
        let first_stage = csv.lines().nth(1).unwrap();
        assert!(first_stage.ends_with(','), "{first_stage}");
    }

    #[test]
    fn prometheus_matches_the_golden_file() {
        let (run, _) = super::super::fixture::fixed();
        let text = prometheus(&run);
        super::super::fixture::golden("metrics.prom", &text);
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
}
