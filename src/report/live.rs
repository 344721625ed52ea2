//! The live Prometheus exposition (`run --metrics-listen`): what the run
//! has done so far, from the coordinator's merged seconds, never from the
//! shards' hot path. Counters cover the whole run (warm-up included, so
//! they only grow); the latency and TTFT summaries cover the current
//! stage so far; each finished stage adds its measured totals, the same
//! numbers as its summary.

use super::prometheus::label as escape;
use crate::results::{Hist, SeriesPoint, StageSummary};
use std::fmt::Write as _;

/// What the run has done so far.
#[derive(Debug, Default, Clone)]
pub struct Live {
    requests: u64,
    errors: u64,
    in_flight: u64,
    /// The running stage: index, label, open-loop target rate.
    stage: Option<(usize, String, Option<f64>)>,
    /// The running stage's successful latencies and TTFTs so far.
    latency: Hist,
    ttft: Hist,
    /// Finished stages: index, label, measured requests, errors.
    finished: Vec<(usize, String, u64, u64)>,
}

impl Live {
    /// A stage started.
    pub fn stage_started(&mut self, index: usize, label: &str, target_rate: Option<f64>) {
        self.stage = Some((index, label.to_string(), target_rate));
        self.latency = Hist::new();
        self.ttft = Hist::new();
    }

    /// A second of the running stage ended on every shard.
    pub fn second(&mut self, point: &SeriesPoint) {
        self.requests += point.window.requests;
        self.errors += point.window.errors;
        self.in_flight = point.in_flight;
        self.latency.merge(&point.window.latency.unpack());
        self.ttft.merge(&point.window.ttft.unpack());
    }

    /// A stage finished and was merged.
    pub fn stage_finished(&mut self, stage: &StageSummary) {
        let m = &stage.total.metrics;
        self.finished.push((
            stage.index,
            stage.label.clone(),
            m.requests,
            m.errors_total(),
        ));
        self.in_flight = 0;
    }

    /// The Prometheus text exposition.
    pub fn exposition(&self) -> String {
        let mut out = String::new();
        family(
            &mut out,
            "loadtest_live_requests_total",
            "counter",
            "Requests finished so far in the run, warm-up included.",
        );
        let _ = writeln!(out, "loadtest_live_requests_total {}", self.requests);
        family(
            &mut out,
            "loadtest_live_errors_total",
            "counter",
            "Of those, failed.",
        );
        let _ = writeln!(out, "loadtest_live_errors_total {}", self.errors);
        family(
            &mut out,
            "loadtest_live_in_flight",
            "gauge",
            "Requests in flight at the end of the last second.",
        );
        let _ = writeln!(out, "loadtest_live_in_flight {}", self.in_flight);
        self.running_stage(&mut out);
        self.finished_stages(&mut out);
        out
    }

    /// The running stage: which, its target, its percentiles so far.
    fn running_stage(&self, out: &mut String) {
        let Some((index, label, target)) = &self.stage else {
            return;
        };
        let labels = format!("stage=\"{}\",stage_index=\"{index}\"", escape(label));
        family(
            out,
            "loadtest_live_stage",
            "gauge",
            "The stage running (1) or last run.",
        );
        let _ = writeln!(out, "loadtest_live_stage{{{labels}}} 1");
        if let Some(rate) = target {
            family(
                out,
                "loadtest_live_target_arrival_rate",
                "gauge",
                "Open loop: arrivals per second asked for.",
            );
            let _ = writeln!(out, "loadtest_live_target_arrival_rate{{{labels}}} {rate}");
        }
        summary(
            out,
            "loadtest_live_latency_seconds",
            "Latency of successful requests in the stage so far.",
            &labels,
            &self.latency,
        );
        summary(
            out,
            "loadtest_live_ttft_seconds",
            "Time to first token in the stage so far.",
            &labels,
            &self.ttft,
        );
    }

    /// Each finished stage's measured totals.
    fn finished_stages(&self, out: &mut String) {
        if self.finished.is_empty() {
            return;
        }
        family(
            out,
            "loadtest_stage_requests",
            "gauge",
            "A finished stage's requests in its measured window (as its summary).",
        );
        for (index, label, requests, _) in &self.finished {
            let _ = writeln!(
                out,
                "loadtest_stage_requests{{stage=\"{}\",stage_index=\"{index}\"}} {requests}",
                escape(label)
            );
        }
        family(out, "loadtest_stage_errors", "gauge", "Of those, failed.");
        for (index, label, _, errors) in &self.finished {
            let _ = writeln!(
                out,
                "loadtest_stage_errors{{stage=\"{}\",stage_index=\"{index}\"}} {errors}",
                escape(label)
            );
        }
    }
}

/// A family's HELP and TYPE lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A summary family from a histogram (nothing but the declaration while
/// it is empty).
fn summary(out: &mut String, name: &str, help: &str, labels: &str, hist: &Hist) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
    let Some(inner) = hist.get() else {
        return;
    };
    for q in [0.5, 0.9, 0.99] {
        let seconds = inner.value_at_quantile(q) as f64 / 1e6;
        let _ = writeln!(out, "{name}{{{labels},quantile=\"{q}\"}} {seconds}");
    }
    let sum = inner.mean() * inner.len() as f64 / 1e6;
    let _ = writeln!(
        out,
        "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {}",
        inner.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{SecondWindow, Window};

    #[test]
    fn counters_grow_and_finished_stages_carry_their_totals() {
        let (run, _) = super::super::fixture::fixed();
        let mut live = Live::default();
        live.stage_started(0, "4:10s", None);
        let mut window = Window {
            requests: 3,
            errors: 1,
            ..Window::default()
        };
        window.latency.record_us(2_000);
        let point = SeriesPoint {
            second: 1,
            unix_s: 0,
            warmup: false,
            in_flight: 2,
            window: SecondWindow::pack(&window),
        };
        live.second(&point);
        let first = live.exposition();
        assert!(
            first.contains("loadtest_live_requests_total 3\n"),
            "{first}"
        );
        assert!(first.contains("loadtest_live_latency_seconds{stage=\"4:10s\",stage_index=\"0\",quantile=\"0.5\"} 0.002"), "{first}");
        live.second(&point);
        live.stage_finished(&run.stages[0]);
        let second = live.exposition();
        assert!(second.contains("loadtest_live_requests_total 6\n"));
        let requests = run.stages[0].total.metrics.requests;
        assert!(
            second.contains(&format!(
                "loadtest_stage_requests{{stage=\"4:10s\",stage_index=\"0\"}} {requests}\n"
            )),
            "{second}"
        );
        // Every sample line belongs to a declared family.
        let declared: Vec<&str> = second
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for line in second.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = name.trim_end_matches("_sum").trim_end_matches("_count");
            assert!(
                declared.contains(&name) || declared.contains(&base),
                "{line}"
            );
        }
    }
}
